//! The SIP ladder's memory (issue 17): the messages siptrack saw and sent,
//! kept per Call-ID for `ui.sip_trace_minutes` after a call's last
//! message, so the console can show a call as sngrep would. Bounded three
//! ways: messages and bytes per call (later ones are counted, not kept),
//! and bytes in total (the calls seen longest ago go first). Pure state
//! over times the caller passes in; the SIP loop records, the console
//! reads.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Messages kept per call; more are counted as dropped.
pub const MAX_MESSAGES_PER_CALL: usize = 100;
/// Bytes kept per call.
pub const MAX_BYTES_PER_CALL: usize = 64 * 1024;
/// Of a call's messages, those received from one source IP kept at most:
/// a stranger who sends a live call's Call-ID (refused, 481) cannot fill
/// its ladder and push out the call's own messages (trial, 2026-12-02:
/// 150 refused BYEs left 81 of theirs and cut the real BYE and 200). A
/// call's trunk or PBX sends far fewer.
pub const MAX_FROM_ONE_SOURCE: usize = MAX_MESSAGES_PER_CALL * 3 / 10;
/// Sources a call's received messages are kept from; a call has two.
const MAX_SOURCES_PER_CALL: usize = 6;
/// What a kept message costs besides its bytes (its entry, the peer text,
/// a call's map and queue entries): counted against the bounds, so a
/// flood of tiny messages with new Call-IDs is bounded as big ones are.
const OVERHEAD_PER_MESSAGE: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by siptrack from `peer`.
    In,
    /// Sent by siptrack to `peer`.
    Out,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    /// Unix ms.
    pub at: u64,
    pub dir: Direction,
    /// `udp 127.0.0.1:5060`.
    pub peer: String,
    /// A received message's source IP (its share of a call's ladder is
    /// bounded: [`MAX_FROM_ONE_SOURCE`]); None for what siptrack sent.
    pub from_ip: Option<std::net::IpAddr>,
    pub data: Bytes,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallTrace {
    pub messages: Vec<Traced>,
    /// Messages past the per-call bounds: not kept.
    pub dropped: u64,
    bytes: usize,
    last_at: u64,
    /// Received messages kept, per source IP.
    from: Vec<(std::net::IpAddr, usize)>,
}

impl CallTrace {
    /// Whether a received message from `ip` may be kept, counting it.
    fn admit(&mut self, ip: std::net::IpAddr) -> bool {
        let sources = self.from.len();
        match self.from.iter_mut().find(|(a, _)| *a == ip) {
            Some((_, n)) if *n >= MAX_FROM_ONE_SOURCE => false,
            Some((_, n)) => {
                *n += 1;
                true
            }
            None if sources >= MAX_SOURCES_PER_CALL => false,
            None => {
                self.from.push((ip, 1));
                true
            }
        }
    }
}

pub struct SipTraces {
    keep_ms: u64,
    max_total_bytes: usize,
    calls: HashMap<Bytes, CallTrace>,
    /// Call-IDs in the order first seen: the oldest go first when the
    /// total is full.
    order: VecDeque<Bytes>,
    total_bytes: usize,
    /// Peers whose messages may start a call's ladder (`sip.trusted_sources`):
    /// anyone else's join only a call already kept. Untrusted traffic with
    /// a new Call-ID each time pushed the ladders of relayed calls out of
    /// the total (trial, 2026-12-02: 573 refused OPTIONS in 6 s wiped a
    /// call's ladder, the evidence of an attack on it). None: anyone.
    opened_by: Option<Vec<ipnet::IpNet>>,
}

impl SipTraces {
    pub fn new(keep_ms: u64, max_total_bytes: usize) -> SipTraces {
        SipTraces {
            keep_ms,
            max_total_bytes,
            calls: HashMap::new(),
            order: VecDeque::new(),
            total_bytes: 0,
            opened_by: None,
        }
    }

    /// Only messages from or to `trusted` start a call's ladder.
    pub fn opened_by(mut self, trusted: Vec<ipnet::IpNet>) -> SipTraces {
        self.opened_by = Some(trusted);
        self
    }

    /// [`SipTraces::record`] for a message from or to `peer`: one of a
    /// call not kept yet only when `peer` may start a ladder.
    pub fn record_from(&mut self, call_id: &[u8], m: Traced, peer: std::net::IpAddr) {
        let ip = peer.to_canonical();
        let opens = self
            .opened_by
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)));
        if opens || self.calls.contains_key(call_id) {
            self.record(call_id, m);
        }
    }

    /// Keeps one message of call `call_id` (unless its call is over its
    /// bounds).
    pub fn record(&mut self, call_id: &[u8], mut m: Traced) {
        let len = m.data.len() + OVERHEAD_PER_MESSAGE;
        if len > self.max_total_bytes {
            return;
        }
        let key = Bytes::copy_from_slice(call_id);
        if !self.calls.contains_key(&key) {
            self.order.push_back(key.clone());
        }
        let call = self.calls.entry(key).or_default();
        call.last_at = call.last_at.max(m.at);
        if call.messages.len() >= MAX_MESSAGES_PER_CALL
            || call.bytes + len > MAX_BYTES_PER_CALL
            || m.from_ip.is_some_and(|ip| !call.admit(ip))
        {
            call.dropped += 1;
            return;
        }
        call.bytes += len;
        // Its own bytes: a message cut from a TCP read buffer shares the
        // whole buffer, and kept it (trial, 2026-12-02: 170-byte OPTIONS
        // holding 8 KiB each, 3.4 MB/s of RSS from one connection while
        // the count said 18 kB/s).
        m.data = Bytes::copy_from_slice(&m.data);
        call.messages.push(m);
        self.total_bytes += len;
        while self.total_bytes > self.max_total_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.calls.remove(&oldest) {
                self.total_bytes -= gone.bytes;
            }
        }
    }

    /// Forgets calls whose last message is older than the keep time.
    pub fn expire(&mut self, now: u64) {
        let keep = self.keep_ms;
        let mut freed = 0;
        self.calls.retain(|_, c| {
            let live = now.saturating_sub(c.last_at) <= keep;
            if !live {
                freed += c.bytes;
            }
            live
        });
        self.total_bytes -= freed;
        let calls = &self.calls;
        self.order.retain(|k| calls.contains_key(k));
    }

    pub fn call(&self, call_id: &[u8]) -> Option<&CallTrace> {
        self.calls.get(call_id)
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    pub fn calls(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(at: u64, size: usize) -> Traced {
        Traced {
            at,
            // Sent by siptrack: only the per-call bounds apply.
            dir: Direction::Out,
            peer: "udp 127.0.0.1:5060".into(),
            from_ip: None,
            data: Bytes::from(vec![b'x'; size]),
        }
    }

    #[test]
    fn per_call_bounds_count_what_is_not_kept() {
        let mut t = SipTraces::new(60_000, 10 << 20);
        for i in 0..MAX_MESSAGES_PER_CALL as u64 + 3 {
            t.record(b"a", msg(i, 10));
        }
        let a = t.call(b"a").expect("kept");
        assert_eq!(a.messages.len(), MAX_MESSAGES_PER_CALL);
        assert_eq!(a.dropped, 3);
        let oh = OVERHEAD_PER_MESSAGE;
        t.record(b"b", msg(0, MAX_BYTES_PER_CALL - 2 * oh - 5));
        t.record(b"b", msg(1, 10));
        t.record(b"b", msg(2, 5));
        let b = t.call(b"b").expect("kept");
        assert_eq!(
            (b.messages.len(), b.dropped),
            (2, 1),
            "the 10 bytes did not fit, the 5 did"
        );
        assert_eq!(
            t.total_bytes(),
            MAX_MESSAGES_PER_CALL * (10 + oh) + MAX_BYTES_PER_CALL
        );
    }

    #[test]
    fn the_total_bound_drops_the_oldest_calls() {
        // Sizes with their overhead: 4000, 4000, 1000, 3000.
        let sized = |at, n: usize| msg(at, n - OVERHEAD_PER_MESSAGE);
        let mut t = SipTraces::new(60_000, 10_000);
        t.record(b"a", sized(0, 4000));
        t.record(b"b", sized(1, 4000));
        t.record(b"a", sized(2, 1000));
        t.record(b"c", sized(3, 3000));
        assert!(t.call(b"a").is_none(), "first seen, first gone");
        assert_eq!(t.calls(), 2);
        assert_eq!(t.total_bytes(), 7000);
        t.record(b"huge", msg(4, 20_000));
        assert!(
            t.call(b"huge").is_none(),
            "larger than everything: not kept"
        );
        assert_eq!(t.calls(), 2);
    }

    /// One source cannot fill a call's ladder: its messages past its share
    /// are counted, and the call's own (another source, and what
    /// siptrack sent) are still kept.
    #[test]
    fn one_source_keeps_at_most_its_share_of_a_call() {
        let mut t = SipTraces::new(60_000, 10 << 20);
        let from = |ip: &str, at| Traced {
            dir: Direction::In,
            peer: format!("udp {ip}:5060"),
            from_ip: ip.parse().ok(),
            ..msg(at, 10)
        };
        for i in 0..150 {
            t.record(b"a", from("192.0.2.66", i));
        }
        t.record(b"a", from("127.0.0.1", 200));
        t.record(
            b"a",
            Traced {
                dir: Direction::Out,
                ..from("127.0.0.1", 201)
            },
        );
        let a = t.call(b"a").expect("kept");
        assert_eq!(a.messages.len(), MAX_FROM_ONE_SOURCE + 2);
        assert_eq!(a.dropped, 150 - MAX_FROM_ONE_SOURCE as u64);
        // Many sources: each new one past the few a call has is not kept.
        for k in 0..10 {
            t.record(b"b", from(&format!("192.0.2.{k}"), k));
        }
        assert_eq!(t.call(b"b").map(|b| b.messages.len()), Some(6));
    }

    /// A kept message holds its own bytes, not the buffer it was cut
    /// from (a TCP read buffer); tiny messages count their overhead.
    #[test]
    fn a_kept_message_holds_only_its_own_bytes() {
        let read_buffer = Bytes::from(vec![b'x'; 8192]);
        let mut t = SipTraces::new(60_000, 1 << 20);
        let mut m = msg(0, 0);
        m.data = read_buffer.slice(100..270);
        t.record(b"a", m);
        let kept = &t.call(b"a").expect("kept").messages[0].data;
        assert_eq!(kept.len(), 170);
        let inside = read_buffer.as_ptr_range();
        assert!(!inside.contains(&kept.as_ptr()), "shares the read buffer");
        assert_eq!(t.total_bytes(), 170 + OVERHEAD_PER_MESSAGE);
    }

    #[test]
    fn calls_expire_after_their_last_message() {
        let mut t = SipTraces::new(1000, 1 << 20);
        t.record(b"a", msg(0, 10));
        t.record(b"b", msg(0, 10));
        t.record(b"b", msg(900, 10));
        t.expire(1000);
        assert_eq!(t.calls(), 2);
        t.expire(1001);
        assert!(t.call(b"a").is_none());
        assert!(t.call(b"b").is_some());
        assert_eq!(t.total_bytes(), 2 * (10 + OVERHEAD_PER_MESSAGE));
        t.expire(1901);
        assert_eq!((t.calls(), t.total_bytes()), (0, 0));
        t.record(b"c", msg(2000, 10));
        assert_eq!(t.calls(), 1, "the order queue forgot the expired ones too");
    }

    /// Untrusted traffic joins only calls already kept, so a flood of new
    /// Call-IDs cannot push a relayed call's ladder out.
    #[test]
    fn only_trusted_peers_start_a_ladder() {
        let mut t =
            SipTraces::new(60_000, 4_000).opened_by(vec!["127.0.0.2/32".parse().expect("net")]);
        let msg = |at: u64| Traced {
            at,
            dir: Direction::In,
            peer: "udp x".into(),
            from_ip: None,
            data: Bytes::from(vec![b'x'; 200]),
        };
        let trunk: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
        let pbx: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
        t.record_from(b"call@x", msg(1), trunk);
        t.record_from(b"call@x", msg(2), pbx);
        for i in 0..100 {
            t.record_from(format!("flood-{i}").as_bytes(), msg(3), pbx);
        }
        assert_eq!(t.calls(), 1);
        assert_eq!(t.call(b"call@x").map(|c| c.messages.len()), Some(2));
    }
}
