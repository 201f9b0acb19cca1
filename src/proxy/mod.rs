//! The transaction-stateful proxy of RFC 3261 section 16, without I/O.
//!
//! [`Proxy`] is a function of (event, now) → outputs: a received message or
//! the passing of time goes in; messages to send come out. The UDP/TCP
//! runtime and `siptrack replay` both drive this same core, which is what
//! makes it testable on a virtual clock.

mod core;
pub mod guard;
pub mod handoff;
pub mod hooks;
mod linger;
pub mod route;
mod timers;
mod transaction;

use std::net::SocketAddr;

use bytes::Bytes;

pub use self::core::{Proxy, ProxySettings, Stats};
pub use hooks::{CallCtx, Chain, DefaultRouter, FollowingPhase, NextHop, ProxyPhases};

/// Milliseconds on the proxy's clock (monotonic, or virtual in replay).
pub type Millis = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The token used in Via and `transport=` parameters.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

/// The other end of a message: transport and socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `data` to `to`; over TCP, on the connection to that address
    /// (opening one if none exists).
    Send { to: Peer, data: Bytes },
}
