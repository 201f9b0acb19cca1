//! Sockets: UDP listeners and TCP connections, feeding the proxy core.

pub mod limits;
pub mod queue;
pub mod tcp;
pub mod udp;
