//! siptrack: a SIP call-tracking proxy with CRM hooks.

pub mod config;
pub mod proxy;
pub mod server;
pub mod sip;
pub mod transport;
