//! Who may make the proxy send what (issue 12): pure rules over addresses,
//! tags and the clock the core passes in.
//!
//! - a message that continues a transaction must come from where that
//!   transaction's other messages come from ([`same_origin`]);
//! - replies to requests the proxy refuses are rate-limited per source IP
//!   ([`ReplyLimiter`]), because a UDP source is trivially spoofed and a
//!   reply is then a reflection toward a victim.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{Millis, Peer, Transport};

/// Whether `got` is the same origin as `expected`: same transport and IP,
/// and over UDP the same port. Over TCP a peer may open a new connection
/// from another port (a CANCEL on a fresh connection), so the port is not
/// compared there.
pub fn same_origin(expected: Peer, got: Peer) -> bool {
    expected.transport == got.transport
        && expected.addr.ip() == got.addr.ip()
        && (got.transport == Transport::Tcp || expected.addr.port() == got.addr.port())
}

/// Replies one source IP may draw per second from refusals.
pub const REPLIES_PER_SECOND: u32 = 10;
/// Source IPs tracked at once; beyond this, refusals go unanswered until
/// old entries expire (a spoofed flood from many addresses gets silence).
pub const MAX_SOURCES: usize = 10_000;

/// A fixed one-second window per source IP.
#[derive(Default)]
pub struct ReplyLimiter {
    sources: HashMap<IpAddr, (Millis, u32)>,
}

impl ReplyLimiter {
    /// Whether a reply to `ip` may be sent at `now` (and counts it).
    /// Gives back the map's peak capacity once most sources are gone.
    pub fn shrink(&mut self) {
        if self.sources.len() * 4 < self.sources.capacity() {
            self.sources.shrink_to_fit();
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now: Millis) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.sources
                .retain(|_, (start, _)| now < start.saturating_add(1_000));
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (start, n) = self.sources.entry(ip).or_insert((now, 0));
        if now >= start.saturating_add(1_000) {
            *start = now;
            *n = 0;
        }
        *n += 1;
        *n <= REPLIES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: Transport, a: &str) -> Peer {
        Peer {
            transport: t,
            addr: a.parse().expect("test address"),
        }
    }

    #[test]
    fn origin_table() {
        use Transport::*;
        for (expected, got, same) in [
            (p(Udp, "10.0.0.1:5060"), p(Udp, "10.0.0.1:5060"), true),
            (p(Udp, "10.0.0.1:5060"), p(Udp, "10.0.0.1:5061"), false),
            (p(Udp, "10.0.0.1:5060"), p(Udp, "10.0.0.2:5060"), false),
            (p(Udp, "10.0.0.1:5060"), p(Tcp, "10.0.0.1:5060"), false),
            (p(Tcp, "10.0.0.1:40000"), p(Tcp, "10.0.0.1:40001"), true),
            (p(Tcp, "10.0.0.1:40000"), p(Tcp, "10.0.0.2:40000"), false),
        ] {
            assert_eq!(same_origin(expected, got), same, "{expected:?} {got:?}");
        }
    }

    #[test]
    fn limiter_allows_a_burst_per_second_per_source() {
        let mut l = ReplyLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let n = (0..100).filter(|_| l.allow(a, 0)).count();
        assert_eq!(n, REPLIES_PER_SECOND as usize);
        assert!(l.allow(b, 999), "another source has its own budget");
        assert!(!l.allow(a, 999));
        assert!(l.allow(a, 1_000), "a new window");
    }

    #[test]
    fn limiter_table_is_bounded() {
        let mut l = ReplyLimiter::default();
        for i in 0..MAX_SOURCES as u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), 0));
        }
        assert!(!l.allow("192.0.2.1".parse().expect("ip"), 500));
        assert!(l.allow("192.0.2.1".parse().expect("ip"), 1_000));
        assert!(l.sources.len() <= MAX_SOURCES);
    }
}
