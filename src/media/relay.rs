//! The RTP relay as pure state: which session owns a local port, where a
//! packet that arrived on it goes, whether the recorder should see it, and
//! which calls have gone silent. No sockets and no clock: the driver
//! (`relay_io.rs`) passes in each datagram with the port it came in on, its
//! source and the time, and does what comes back; `siptrack replay` can
//! feed the same table from a capture.
//!
//! Each anchored stream has two port pairs: one the caller talks to, one
//! the callee talks to. A packet from the caller on its pair leaves from
//! the callee's pair toward the callee (and back the same way), so each
//! side only ever sees siptrack's address. Each leg latches its real
//! source from its first packet ([`Latch`]); packets from anyone else are
//! dropped and counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::latch::{Activity, Latch, Verdict};
use super::ports::PortPair;
use super::rtp::{demux, Kind};
use super::timeline::Side;

/// One call's relay session (the media phase numbers them).
pub type SessionId = u64;

/// siptrack's ports for one `m=` stream: the pair the caller sends to, and
/// the pair the callee sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPorts {
    pub caller: PortPair,
    pub callee: PortPair,
}

impl StreamPorts {
    /// The pair facing `leg`.
    pub fn facing(&self, leg: Side) -> PortPair {
        match leg {
            Side::Caller => self.caller,
            Side::Callee => self.callee,
        }
    }
}

/// What one leg's latest SDP says about one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegSdp {
    /// Where it receives RTP (`c=` and `m=` port); `None` for a rejected stream.
    pub rtp: Option<SocketAddr>,
    /// Where it receives RTCP (`a=rtcp`, else the RTP port + 1).
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux`: RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// `sendonly`, `inactive` or `c=0.0.0.0`: silence is expected.
    pub hold: bool,
}

#[derive(Clone, Debug, Default)]
struct Leg {
    rtp: Latch,
    rtcp: Latch,
    mux: bool,
    hold: bool,
}

#[derive(Clone, Debug)]
struct Stream {
    ports: StreamPorts,
    legs: [Leg; 2],
}

#[derive(Clone, Debug)]
struct Session {
    streams: Vec<Stream>,
    /// Which stream the recorder hears (the first audio stream).
    recorded: Option<usize>,
    answered: bool,
    timed_out: bool,
    /// The call's media went around siptrack (a later SDP it could not
    /// anchor): silence here is no sign of a dead call, so it never
    /// times out (trial, 2026-12-02: a re-INVITE adding a BFCP stream
    /// got a talking call hung up after `rtp_timeout_seconds`).
    left_alone: bool,
    activity: Activity,
    relayed: u64,
    dropped_other_source: u64,
}

impl Session {
    /// Whether the RTP timeout watches this session now.
    fn times_out(&self) -> bool {
        self.answered && !self.timed_out && !self.left_alone
    }
}

#[derive(Clone, Copy, Debug)]
struct PortRef {
    session: SessionId,
    stream: usize,
    /// The leg that sends to this port.
    leg: Side,
    is_rtcp_port: bool,
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub relayed: u64,
    /// From a source other than the one the leg latched.
    pub dropped_other_source: u64,
    /// The other leg's address is not known yet, or it holds with `c=0.0.0.0`.
    pub dropped_no_destination: u64,
    /// On a port no session owns (late packets of an ended call).
    pub dropped_unknown_port: u64,
}

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// Send it from this local port to this address.
    pub send: Option<(u16, SocketAddr)>,
    /// Hand it to this session's recorder as this side's audio.
    pub record: Option<(SessionId, Side)>,
}

/// News for the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// A leg's real source, learned from its first packet.
    Latched {
        session: SessionId,
        leg: Side,
        from: SocketAddr,
    },
    /// No packet either way for the RTP timeout: the call should end.
    TimedOut { session: SessionId },
}

/// What a closed session leaves: the ports to unbind and its counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    pub ports: Vec<u16>,
    pub relayed: u64,
    pub dropped_other_source: u64,
}

pub struct Relay {
    ports: HashMap<u16, PortRef>,
    sessions: HashMap<SessionId, Session>,
    timeout_ms: u64,
    events: Vec<RelayEvent>,
    pub stats: RelayStats,
}

fn other(leg: Side) -> Side {
    match leg {
        Side::Caller => Side::Callee,
        Side::Callee => Side::Caller,
    }
}

impl Relay {
    /// `timeout_ms`: an answered call silent both ways this long times out
    /// (0 = never).
    pub fn new(timeout_ms: u64) -> Relay {
        Relay {
            ports: HashMap::new(),
            sessions: HashMap::new(),
            timeout_ms,
            events: Vec::new(),
            stats: RelayStats::default(),
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// siptrack's ports for one stream of a session.
    pub fn stream_ports(&self, id: SessionId, stream: usize) -> Option<StreamPorts> {
        Some(self.sessions.get(&id)?.streams.get(stream)?.ports)
    }

    /// When [`Relay::on_tick`] would next report a timeout if no packet
    /// came: lets a driver on a virtual clock (replay) wake exactly then.
    pub fn next_timeout(&self) -> Option<u64> {
        self.sessions
            .values()
            .filter(|s| s.times_out())
            .filter_map(|s| s.activity.deadline(self.timeout_ms))
            .min()
    }

    /// Adds streams to a session (creating it at `now`). `recorded` names
    /// the stream the recorder hears, when the first call sets it; `peers`
    /// are the caller's and the callee's signalling IPs, whose hosts each
    /// leg may learn its source from ([`Latch`]).
    pub fn add_streams(
        &mut self,
        id: SessionId,
        streams: &[StreamPorts],
        recorded: Option<usize>,
        peers: [Option<IpAddr>; 2],
        now: u64,
    ) {
        let s = self.sessions.entry(id).or_insert_with(|| Session {
            streams: Vec::new(),
            recorded: None,
            answered: false,
            timed_out: false,
            left_alone: false,
            activity: Activity::new(now),
            relayed: 0,
            dropped_other_source: 0,
        });
        if s.recorded.is_none() {
            s.recorded = recorded;
        }
        for p in streams {
            let stream = s.streams.len();
            for leg in [Side::Caller, Side::Callee] {
                let pair = p.facing(leg);
                for (port, is_rtcp_port) in [(pair.rtp, false), (pair.rtcp, true)] {
                    self.ports.insert(
                        port,
                        PortRef {
                            session: id,
                            stream,
                            leg,
                            is_rtcp_port,
                        },
                    );
                }
            }
            let mut legs: [Leg; 2] = Default::default();
            for (leg, peer) in legs.iter_mut().zip(peers) {
                leg.rtp.set_peer(peer);
                leg.rtcp.set_peer(peer);
            }
            s.streams.push(Stream { ports: *p, legs });
        }
    }

    /// A new offer or answer from `leg` for stream `stream`.
    pub fn update(&mut self, id: SessionId, stream: usize, leg: Side, sdp: LegSdp, now: u64) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(st) = s.streams.get_mut(stream) else {
            return;
        };
        let l = &mut st.legs[leg as usize];
        l.rtp.reoffer(sdp.rtp);
        l.rtcp.reoffer(if sdp.rtcp_mux { None } else { sdp.rtcp });
        l.mux = sdp.rtcp_mux;
        l.hold = sdp.hold;
        let hold = s.streams.iter().any(|st| st.legs.iter().any(|l| l.hold));
        s.activity.set_hold(hold, now);
    }

    /// The call was answered: from now on silence counts toward the timeout.
    pub fn answered(&mut self, id: SessionId, now: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.answered {
                s.answered = true;
                s.activity.on_packet(now);
            }
        }
    }

    /// The call's media no longer goes through siptrack: its silence here
    /// ends nothing (see `Session::left_alone`).
    pub fn leave_alone(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.left_alone = true;
        }
    }

    /// One datagram that arrived on `local_port` from `src`.
    pub fn on_packet(
        &mut self,
        local_port: u16,
        src: SocketAddr,
        data: &[u8],
        now: u64,
    ) -> Handled {
        let Some(&p) = self.ports.get(&local_port) else {
            self.stats.dropped_unknown_port += 1;
            return Handled::default();
        };
        let Some(s) = self.sessions.get_mut(&p.session) else {
            self.stats.dropped_unknown_port += 1;
            return Handled::default();
        };
        let recorded = s.recorded == Some(p.stream);
        let Some(st) = s.streams.get_mut(p.stream) else {
            self.stats.dropped_unknown_port += 1;
            return Handled::default();
        };
        let me = &mut st.legs[p.leg as usize];
        let is_rtcp = p.is_rtcp_port || (me.mux && demux(data) == Kind::Rtcp);
        // A muxed leg sends RTCP from its RTP source: one latch for both.
        let latch = if p.is_rtcp_port {
            &mut me.rtcp
        } else {
            &mut me.rtp
        };
        match latch.on_packet(src) {
            Verdict::Drop => {
                s.dropped_other_source += 1;
                self.stats.dropped_other_source += 1;
                return Handled::default();
            }
            Verdict::Learned => self.events.push(RelayEvent::Latched {
                session: p.session,
                leg: p.leg,
                from: src,
            }),
            Verdict::Accept => {}
        }
        s.activity.on_packet(now);
        let to = other(p.leg);
        let out_pair = st.ports.facing(to);
        let them = &st.legs[to as usize];
        let send = if is_rtcp && !them.mux {
            them.rtcp.destination().map(|a| (out_pair.rtcp, a))
        } else {
            them.rtp.destination().map(|a| (out_pair.rtp, a))
        };
        match send {
            Some(_) => {
                s.relayed += 1;
                self.stats.relayed += 1;
            }
            None => self.stats.dropped_no_destination += 1,
        }
        // The recorder hears what siptrack received, relayed or not.
        let record =
            (recorded && !is_rtcp && demux(data) == Kind::Rtp).then_some((p.session, p.leg));
        Handled { send, record }
    }

    /// Sessions answered and silent both ways for the timeout, each
    /// reported once (as events).
    pub fn on_tick(&mut self, now: u64) {
        for (id, s) in &mut self.sessions {
            if s.times_out() && s.activity.timed_out(now, self.timeout_ms) {
                s.timed_out = true;
                self.events.push(RelayEvent::TimedOut { session: *id });
            }
        }
    }

    pub fn take_events(&mut self) -> std::vec::Drain<'_, RelayEvent> {
        self.events.drain(..)
    }

    /// Ends a session: its ports stop being relayed.
    pub fn close(&mut self, id: SessionId) -> Option<Closed> {
        let s = self.sessions.remove(&id)?;
        let mut ports = Vec::with_capacity(s.streams.len() * 4);
        for st in &s.streams {
            for pair in [st.ports.caller, st.ports.callee] {
                for port in [pair.rtp, pair.rtcp] {
                    if self.ports.get(&port).is_some_and(|r| r.session == id) {
                        self.ports.remove(&port);
                    }
                    ports.push(port);
                }
            }
        }
        Some(Closed {
            ports,
            relayed: s.relayed,
            dropped_other_source: s.dropped_other_source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const RTP: [u8; 12] = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    const RTCP_RR: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0, 7];

    fn ports() -> StreamPorts {
        StreamPorts {
            caller: PortPair {
                rtp: 30000,
                rtcp: 30001,
            },
            callee: PortPair {
                rtp: 30002,
                rtcp: 30003,
            },
        }
    }

    fn sdp(rtp: &str, mux: bool, hold: bool) -> LegSdp {
        let rtp = a(rtp);
        LegSdp {
            rtp: Some(rtp),
            rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
            rtcp_mux: mux,
            hold,
        }
    }

    enum Ev {
        /// Packet on local port from source: expected (out port, destination), recorded side.
        Pkt(
            u16,
            &'static str,
            &'static [u8],
            Option<(u16, &'static str)>,
            Option<Side>,
        ),
        Sdp(Side, LegSdp),
        Answer,
        Tick(bool),
        At(u64),
    }

    #[test]
    fn relay_table() {
        use Ev::*;
        use Side::*;
        let caller = || sdp("10.0.0.1:4000", false, false);
        let callee = || sdp("10.0.0.2:5000", false, false);
        // (name, events, relayed, dropped other source, dropped no destination)
        type Row = (&'static str, Vec<Ev>, u64, u64, u64);
        let rows: Vec<Row> = vec![
            (
                "both ways once both SDPs are known; learned sources win over SDP",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Pkt(30000, "198.51.100.1:6000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                    Pkt(30002, "10.0.0.2:5000", &RTP, Some((30000, "198.51.100.1:6000")), Some(Callee)),
                    Pkt(30001, "198.51.100.1:6001", &RTCP_RR, Some((30003, "10.0.0.2:5001")), None),
                    Pkt(30003, "10.0.0.2:5001", &RTCP_RR, Some((30001, "198.51.100.1:6001")), None),
                ],
                4,
                0,
                0,
            ),
            (
                "a stranger on a latched port is dropped and counted",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Pkt(30000, "10.0.0.1:4000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                    Pkt(30000, "203.0.113.9:4000", &RTP, None, None),
                    Pkt(30000, "10.0.0.1:4000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                ],
                2,
                1,
                0,
            ),
            (
                "a stranger before a leg's first packet is not learned: no bleed, no reflection",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Pkt(30002, "203.0.113.9:4000", &RTP, None, None),
                    Pkt(30003, "203.0.113.9:4001", &RTCP_RR, None, None),
                    Pkt(30000, "198.51.100.1:6000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                    Pkt(30001, "198.51.100.1:6001", &RTCP_RR, Some((30003, "10.0.0.2:5001")), None),
                    Pkt(30002, "10.0.0.2:5000", &RTP, Some((30000, "198.51.100.1:6000")), Some(Callee)),
                ],
                3,
                2,
                0,
            ),
            (
                "early: the callee's address is not known yet; still recorded",
                vec![
                    Sdp(Caller, caller()),
                    Pkt(30000, "10.0.0.1:4000", &RTP, None, Some(Caller)),
                    Sdp(Callee, callee()),
                    Pkt(30000, "10.0.0.1:4000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                ],
                1,
                0,
                1,
            ),
            (
                "rtcp-mux: RTCP on the RTP port goes to the other leg's RTCP port when it does not mux",
                vec![
                    Sdp(Caller, sdp("10.0.0.1:4000", true, false)),
                    Sdp(Callee, callee()),
                    Pkt(30000, "10.0.0.1:4000", &RTCP_RR, Some((30003, "10.0.0.2:5001")), None),
                    Pkt(30003, "10.0.0.2:5001", &RTCP_RR, Some((30000, "10.0.0.1:4000")), None),
                ],
                2,
                0,
                0,
            ),
            (
                "hold with c=0.0.0.0: nothing is sent to the holder; resume sends again",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Pkt(30002, "10.0.0.2:5000", &RTP, Some((30000, "10.0.0.1:4000")), Some(Callee)),
                    Sdp(Caller, sdp("0.0.0.0:4000", false, true)),
                    Pkt(30002, "10.0.0.2:5000", &RTP, None, Some(Callee)),
                    Sdp(Caller, caller()),
                    Pkt(30002, "10.0.0.2:5000", &RTP, Some((30000, "10.0.0.1:4000")), Some(Callee)),
                ],
                2,
                0,
                1,
            ),
            (
                "a re-offer that moves the far end: learned again, the old source dropped",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Pkt(30002, "10.0.0.2:5000", &RTP, Some((30000, "10.0.0.1:4000")), Some(Callee)),
                    Sdp(Callee, sdp("10.0.0.3:7000", false, false)),
                    Pkt(30000, "10.0.0.1:4000", &RTP, Some((30002, "10.0.0.3:7000")), Some(Caller)),
                    Pkt(30002, "10.0.0.3:7000", &RTP, Some((30000, "10.0.0.1:4000")), Some(Callee)),
                    Pkt(30002, "10.0.0.2:5000", &RTP, None, None),
                ],
                3,
                1,
                0,
            ),
            (
                "an SSRC change is relayed like any packet (the recorder rebases)",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Pkt(30000, "10.0.0.1:4000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                    Pkt(30000, "10.0.0.1:4000", &[0x80, 0, 0, 2, 0, 0, 1, 64, 0, 0, 0, 8], Some((30002, "10.0.0.2:5000")), Some(Caller)),
                ],
                2,
                0,
                0,
            ),
            (
                "unknown port",
                vec![Pkt(40000, "10.0.0.1:4000", &RTP, None, None)],
                0,
                0,
                0,
            ),
            (
                "timeout: only once answered, only after 60 s of silence both ways, reported once",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    At(100_000),
                    Tick(false),
                    Answer,
                    At(150_000),
                    Pkt(30000, "10.0.0.1:4000", &RTP, Some((30002, "10.0.0.2:5000")), Some(Caller)),
                    At(209_999),
                    Tick(false),
                    At(210_000),
                    Tick(true),
                    At(300_000),
                    Tick(false),
                ],
                1,
                0,
                0,
            ),
            (
                "no timeout while on hold (sendonly)",
                vec![
                    Sdp(Caller, caller()),
                    Sdp(Callee, callee()),
                    Answer,
                    Sdp(Caller, sdp("10.0.0.1:4000", false, true)),
                    At(500_000),
                    Tick(false),
                    Sdp(Caller, caller()),
                    At(559_999),
                    Tick(false),
                    At(560_000),
                    Tick(true),
                ],
                0,
                0,
                0,
            ),
        ];
        // The caller's SIP comes from its NAT's public address.
        let peers = [
            Some(a("198.51.100.1:5060").ip()),
            Some(a("10.0.0.2:5060").ip()),
        ];
        for (name, events, relayed, other, no_dest) in rows {
            let mut r = Relay::new(60_000);
            r.add_streams(7, &[ports()], Some(0), peers, 0);
            let mut now = 0;
            for (i, e) in events.into_iter().enumerate() {
                match e {
                    Pkt(port, src, data, want, rec) => {
                        let h = r.on_packet(port, a(src), data, now);
                        assert_eq!(h.send, want.map(|(p, d)| (p, a(d))), "{name} #{i}");
                        assert_eq!(h.record, rec.map(|s| (7, s)), "{name} #{i}");
                    }
                    Sdp(leg, s) => r.update(7, 0, leg, s, now),
                    Answer => r.answered(7, now),
                    Tick(want) => {
                        r.on_tick(now);
                        let timed_out = r
                            .take_events()
                            .any(|e| e == RelayEvent::TimedOut { session: 7 });
                        assert_eq!(timed_out, want, "{name} #{i}");
                    }
                    At(t) => now = t,
                }
            }
            assert_eq!(r.stats.relayed, relayed, "{name}: relayed");
            assert_eq!(r.stats.dropped_other_source, other, "{name}: other source");
            assert_eq!(
                r.stats.dropped_no_destination, no_dest,
                "{name}: no destination"
            );
        }
    }

    #[test]
    fn latching_is_reported_and_close_frees_every_port() {
        let mut r = Relay::new(0);
        r.add_streams(1, &[ports()], Some(0), [None, None], 0);
        r.on_packet(30000, a("198.51.100.1:6000"), &RTP, 5);
        let ev: Vec<_> = r.take_events().collect();
        assert_eq!(
            ev,
            [RelayEvent::Latched {
                session: 1,
                leg: Side::Caller,
                from: a("198.51.100.1:6000")
            }]
        );
        let closed = r.close(1).expect("session");
        let mut p = closed.ports.clone();
        p.sort_unstable();
        assert_eq!(p, [30000, 30001, 30002, 30003]);
        assert_eq!(r.sessions(), 0);
        assert_eq!(
            r.on_packet(30000, a("198.51.100.1:6000"), &RTP, 6),
            Handled::default()
        );
        assert_eq!(r.stats.dropped_unknown_port, 1);
        assert!(r.close(1).is_none());
        // A second stream is added later (a re-offer with video): not recorded.
        r.add_streams(2, &[ports()], Some(0), [None, None], 0);
        let more = StreamPorts {
            caller: PortPair {
                rtp: 30010,
                rtcp: 30011,
            },
            callee: PortPair {
                rtp: 30012,
                rtcp: 30013,
            },
        };
        r.add_streams(2, &[more], None, [None, None], 0);
        r.update(2, 1, Side::Callee, sdp("10.0.0.2:5010", false, false), 0);
        let h = r.on_packet(30010, a("10.0.0.1:4010"), &RTP, 1);
        assert_eq!(h.send, Some((30012, a("10.0.0.2:5010"))));
        assert_eq!(h.record, None);
    }
}
