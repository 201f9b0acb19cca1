//! Leads: every tracked call and form becomes one; the decision of what it
//! becomes (deal, task, comment, nothing) is a pure function in
//! [`dedup`].

pub mod dedup;
pub mod journal;
pub mod log;
pub mod pipeline;
