//! Sockets: UDP listeners and TCP connections, feeding the proxy core.

pub mod tcp;
pub mod udp;
