//! Symmetric latching and the RTP timeout, as pure state.
//!
//! Phones behind NAT send from an address their SDP does not name, so each
//! leg's real source is learned from its first packet and media for that
//! leg is sent back there (symmetric RTP, RFC 4961). After that, packets
//! from any other source are dropped and counted: a stranger who guesses
//! the port cannot inject audio or steal the stream. A re-offer that moves
//! the far end (new `c=`/port) starts learning again; a hold (`c=0.0.0.0`)
//! does not. One [`Latch`] per leg and socket (RTP, and RTCP unless muxed).
//!
//! A packet from exactly the address:port the SDP names takes the latch
//! back: that is the leg itself. Not when that address is private and the
//! latch holds another host (a NAT's public address, the usual phone).
//!
//! Only a packet from the leg's own host may be learned from: the IP its
//! SDP names, or the IP its SIP comes from (a NAT's public address keeps
//! the IP and changes the port). Learning from anyone let a stranger who
//! sprayed the relay's ports before a leg's first packet (or its first
//! RTCP, seconds into the call) take the leg over: hear the call, inject
//! audio, and aim the call's media at a third address (trials,
//! 2026-12-02: 515 packets out for one in, to an address nobody named).

use std::net::{IpAddr, SocketAddr};

/// Addresses behind a NAT: RFC 1918, shared (RFC 6598), link-local, and
/// IPv6 unique-local and link-local.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First packet: its source is now this leg's address. Relay it.
    Learned,
    /// From the learned source. Relay it.
    Accept,
    /// From anyone else. Drop it.
    Drop,
}

#[derive(Clone, Debug, Default)]
pub struct Latch {
    /// Where the leg's SDP says it receives.
    advertised: Option<SocketAddr>,
    /// The IP the leg's SIP messages come from.
    peer: Option<IpAddr>,
    learned: Option<SocketAddr>,
    on_hold: bool,
    dropped: u64,
}

impl Latch {
    /// A leg whose SDP names `advertised` (None when it named none usable).
    pub fn new(advertised: Option<SocketAddr>) -> Latch {
        let mut l = Latch::default();
        l.reoffer(advertised);
        l
    }

    /// The leg's signalling peer: packets from its IP may be learned.
    pub fn set_peer(&mut self, peer: Option<IpAddr>) {
        self.peer = peer;
    }

    /// Whether a first packet from `src` may become the leg's source: it
    /// comes from the host the SDP names or the host the leg's SIP comes
    /// from. A leg that names neither (replay tests) learns from anyone.
    fn may_learn(&self, src: SocketAddr) -> bool {
        match (self.advertised, self.peer) {
            (None, None) => true,
            (advertised, peer) => {
                advertised.is_some_and(|a| a.ip() == src.ip()) || peer == Some(src.ip())
            }
        }
    }

    /// Judges a packet from `src` on this leg's socket.
    pub fn on_packet(&mut self, src: SocketAddr) -> Verdict {
        match self.learned {
            None if self.may_learn(src) => {
                self.learned = Some(src);
                Verdict::Learned
            }
            None => {
                self.dropped += 1;
                Verdict::Drop
            }
            Some(a) if a == src => Verdict::Accept,
            // The address the leg's SDP names, exactly: the leg itself,
            // whoever got in first from its host on another port (trials,
            // 2026-12-02: a stranger on the PBX's host latched before the
            // PBX's first packet, heard the caller and locked the PBX out).
            // Not when the SDP names a private address and the latch holds
            // another host: that is a NAT's public address, and a packet
            // from the private one comes from someone else's network. A
            // public SDP address whose host is not the latch's (media on
            // another host than the SIP, whose host got in first) is the
            // leg (second trial that day: the stranger kept the stream).
            Some(a)
                if self.advertised == Some(src)
                    && (a.ip() == src.ip() || !is_private(src.ip())) =>
            {
                self.learned = Some(src);
                Verdict::Learned
            }
            Some(_) => {
                self.dropped += 1;
                Verdict::Drop
            }
        }
    }

    /// The address in a new offer or answer from this leg. An unspecified
    /// IP (`0.0.0.0`, `::`) is a hold: nothing is sent there and what was
    /// learned stays. Any other change of address or port means the far
    /// end moved: learn again. Returns whether learning starts over.
    pub fn reoffer(&mut self, advertised: Option<SocketAddr>) -> bool {
        if advertised.is_some_and(|a| a.ip().is_unspecified()) {
            self.on_hold = true;
            return false;
        }
        self.on_hold = false;
        if advertised == self.advertised {
            return false;
        }
        self.advertised = advertised;
        let relearn = self.learned.is_some();
        self.learned = None;
        relearn
    }

    /// Where media for this leg goes: the learned source, else what its SDP
    /// said; nothing while it holds with `c=0.0.0.0`.
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.on_hold {
            return None;
        }
        self.learned.or(self.advertised)
    }

    /// Packets dropped for coming from the wrong source.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The RTP timeout of one call (SPEC M-1 `media.rtp_timeout_seconds`):
/// time since the last packet in either direction. While the call is on
/// hold silence is expected, so the clock stops and restarts at resume.
/// The longest a call on hold may be silent both ways.
pub const HOLD_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    last_ms: u64,
    on_hold: bool,
}

impl Activity {
    /// Media starts being expected at `now_ms` (the call's answer).
    pub fn new(now_ms: u64) -> Activity {
        Activity {
            last_ms: now_ms,
            on_hold: false,
        }
    }

    /// Any accepted packet, either way.
    pub fn on_packet(&mut self, now_ms: u64) {
        self.last_ms = self.last_ms.max(now_ms);
    }

    pub fn set_hold(&mut self, on_hold: bool, now_ms: u64) {
        if self.on_hold && !on_hold {
            self.last_ms = self.last_ms.max(now_ms);
        }
        self.on_hold = on_hold;
    }

    /// Whether the call has been silent both ways for `timeout_ms`, or
    /// on hold for [`HOLD_TIMEOUT_MS`] (0 disables the check).
    pub fn timed_out(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.limit(timeout_ms)
            .is_some_and(|l| now_ms.saturating_sub(self.last_ms) >= l)
    }

    /// When [`Activity::timed_out`] turns true if nothing comes; `None`
    /// with the check disabled.
    pub fn deadline(&self, timeout_ms: u64) -> Option<u64> {
        self.limit(timeout_ms)
            .map(|l| self.last_ms.saturating_add(l))
    }

    /// How long silence may last: on hold the holder may be quiet (no
    /// music on hold), so the limit is an hour rather than the RTP
    /// timeout, as rtpengine's silent timeout; without one a dead call
    /// on hold lasted `max_call_seconds` (4 h) with a WAV of silence
    /// (trial, 2026-12-03).
    fn limit(&self, timeout_ms: u64) -> Option<u64> {
        match (timeout_ms, self.on_hold) {
            (0, _) => None,
            (t, true) => Some(t.max(HOLD_TIMEOUT_MS)),
            (t, false) => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    enum Ev {
        Pkt(&'static str, Verdict),
        Offer(&'static str, bool),
        Dest(Option<&'static str>),
    }

    /// Media on another host than the leg's SIP: a stranger on the SIP
    /// host got in first; the SDP's own (public) address takes it back.
    /// Behind a NAT (a private SDP address) it would not: see the table.
    #[test]
    fn the_sdps_public_address_takes_the_latch_back_from_the_sip_host() {
        let mut l = Latch::new(Some(a("203.0.113.9:40010")));
        l.set_peer(Some("198.51.100.7".parse().expect("ip")));
        assert_eq!(l.on_packet(a("198.51.100.7:5555")), Verdict::Learned);
        assert_eq!(l.on_packet(a("203.0.113.9:40010")), Verdict::Learned);
        assert_eq!(l.destination(), Some(a("203.0.113.9:40010")));
        assert_eq!(l.on_packet(a("198.51.100.7:5555")), Verdict::Drop);
        assert_eq!(l.on_packet(a("203.0.113.9:40010")), Verdict::Accept);
    }

    #[test]
    fn private_addresses_are_those_behind_nats() {
        for (ip, private) in [
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.32.0.1", false),
            ("192.168.1.5", true),
            ("100.64.0.1", true),
            ("100.128.0.1", false),
            ("169.254.1.1", true),
            ("127.0.0.9", false),
            ("203.0.113.9", false),
            ("fd00::1", true),
            ("fe80::1", true),
            ("2001:db8::1", false),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(is_private(ip), private, "{ip}");
        }
    }

    #[test]
    fn latch_table() {
        use Ev::*;
        use Verdict::*;
        let rows: [(&str, Vec<Ev>, u64); 7] = [
            (
                "NAT: learns the real source, sends there, drops a stranger",
                vec![
                    Dest(Some("10.0.0.5:4000")),
                    Pkt("198.51.100.7:61000", Learned),
                    Dest(Some("198.51.100.7:61000")),
                    Pkt("198.51.100.7:61000", Accept),
                    Pkt("203.0.113.66:4000", Drop),
                    Pkt("10.0.0.5:4000", Drop),
                    Pkt("198.51.100.7:61000", Accept),
                ],
                2,
            ),
            (
                "re-offer with the same address keeps what was learned",
                vec![
                    Pkt("198.51.100.7:61000", Learned),
                    Offer("10.0.0.5:4000", false),
                    Pkt("198.51.100.7:61000", Accept),
                ],
                0,
            ),
            (
                "re-offer that moves the far end: learn again",
                vec![
                    Pkt("198.51.100.7:61000", Learned),
                    Offer("10.0.0.9:5000", true),
                    Dest(Some("10.0.0.9:5000")),
                    Pkt("10.0.0.9:5002", Learned),
                    Pkt("198.51.100.7:61000", Drop),
                ],
                1,
            ),
            (
                "hold with c=0.0.0.0 sends nothing, resume keeps the latch",
                vec![
                    Pkt("198.51.100.7:61000", Learned),
                    Offer("0.0.0.0:4000", false),
                    Dest(None),
                    Offer("10.0.0.5:4000", false),
                    Dest(Some("198.51.100.7:61000")),
                    Pkt("198.51.100.7:61000", Accept),
                ],
                0,
            ),
            (
                "a stranger first: not learned, the leg's host still is",
                vec![
                    Pkt("203.0.113.66:4000", Drop),
                    Dest(Some("10.0.0.5:4000")),
                    Pkt("198.51.100.7:40000", Learned),
                    Pkt("203.0.113.66:4000", Drop),
                ],
                2,
            ),
            (
                "the SDP's host on another port first, then the SDP's own address: it wins",
                vec![
                    Pkt("10.0.0.5:4002", Learned),
                    Pkt("10.0.0.5:4000", Learned),
                    Dest(Some("10.0.0.5:4000")),
                    Pkt("10.0.0.5:4002", Drop),
                    Pkt("10.0.0.5:4000", Accept),
                ],
                1,
            ),
            (
                "IPv6 leg",
                vec![
                    Pkt("[2001:db8::7]:5004", Learned),
                    Pkt("[2001:db8::8]:5004", Drop),
                    Pkt("[2001:db8::7]:5006", Drop),
                ],
                2,
            ),
        ];
        for (name, events, dropped) in rows {
            let mut l = Latch::new(Some(a("10.0.0.5:4000")));
            // The leg's SIP came from its NAT's public address.
            l.set_peer(Some(if name == "IPv6 leg" {
                "2001:db8::7".parse().expect("ip")
            } else {
                "198.51.100.7".parse().expect("ip")
            }));
            for (i, e) in events.iter().enumerate() {
                match e {
                    Pkt(src, want) => assert_eq!(l.on_packet(a(src)), *want, "{name} #{i}"),
                    Offer(addr, relearn) => {
                        assert_eq!(l.reoffer(Some(a(addr))), *relearn, "{name} #{i}")
                    }
                    Dest(want) => assert_eq!(l.destination(), want.map(a), "{name} #{i}"),
                }
            }
            assert_eq!(l.dropped(), dropped, "{name}");
        }
        assert_eq!(Latch::new(None).destination(), None);
    }

    #[test]
    fn timeout_table() {
        // (name, packets at, hold changes (at, on), check at, timed out?)
        type Row = (
            &'static str,
            &'static [u64],
            &'static [(u64, bool)],
            u64,
            bool,
        );
        let rows: [Row; 9] = [
            ("no media at all since the answer", &[], &[], 60_000, true),
            ("just under", &[], &[], 59_999, false),
            (
                "last packet restarts the clock",
                &[30_000],
                &[],
                60_000,
                false,
            ),
            (
                "silent 60 s after the last packet",
                &[30_000],
                &[],
                90_000,
                true,
            ),
            (
                "on hold: no RTP timeout",
                &[1_000],
                &[(2_000, true)],
                500_000,
                false,
            ),
            (
                "on hold and silent both ways just under an hour",
                &[1_000],
                &[(2_000, true)],
                1_000 + HOLD_TIMEOUT_MS - 1,
                false,
            ),
            (
                "on hold and silent both ways an hour: a dead call",
                &[1_000],
                &[(2_000, true)],
                1_000 + HOLD_TIMEOUT_MS,
                true,
            ),
            (
                "resumed: clock restarts at resume",
                &[1_000],
                &[(2_000, true), (400_000, false)],
                459_999,
                false,
            ),
            (
                "resumed and silent",
                &[1_000],
                &[(2_000, true), (400_000, false)],
                460_000,
                true,
            ),
        ];
        for (name, packets, holds, at, want) in rows {
            let mut act = Activity::new(0);
            let mut events: Vec<(u64, Option<bool>)> = packets.iter().map(|&t| (t, None)).collect();
            events.extend(holds.iter().map(|&(t, h)| (t, Some(h))));
            events.sort_by_key(|e| e.0);
            for (t, hold) in events {
                match hold {
                    Some(h) => act.set_hold(h, t),
                    None => act.on_packet(t),
                }
            }
            assert_eq!(act.timed_out(at, 60_000), want, "{name}");
        }
        assert!(!Activity::new(0).timed_out(u64::MAX, 0), "0 disables");
    }
}
