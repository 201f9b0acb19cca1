//! siptrack: a SIP call-tracking proxy with CRM hooks.

pub mod calls;
pub mod clock;
pub mod config;
pub mod crm;
pub mod decimal;
pub mod hex;
pub mod http;
pub mod leads;
pub mod log_lines;
pub mod log_text;
pub mod media;
pub mod memory;
pub mod node;
pub mod phone;
pub mod proxy;
pub mod recording;
pub mod replay;
pub mod rewrite;
pub mod server;
pub mod sip;
pub mod sip_trace;
pub mod store;
pub mod tracking;
pub mod transport;
pub mod ui;

/// The throwaway PostgreSQL of the tests (also used by tests/common).
#[cfg(test)]
#[path = "../tests/common/pg.rs"]
pub(crate) mod test_pg;
