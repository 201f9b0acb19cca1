//! siptrack: a SIP call-tracking proxy with CRM hooks.

pub mod sip;
