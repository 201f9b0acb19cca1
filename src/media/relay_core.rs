//! What the relay does with the node's commands, each datagram and the
//! passing time, without sockets or a clock: the [`Relay`] table plus which
//! sessions are being recorded, and the recording jobs that follow. Two
//! drivers run it: `relay_io.rs` (media sockets, epoll, the writer thread)
//! and `siptrack replay` (datagrams from a capture at the capture's times,
//! recordings written in line), so a live call and its replay follow the
//! same rules.

use std::collections::HashSet;
use std::net::SocketAddr;

use bytes::Bytes;

use super::anchor::Command;
use super::relay::{Handled, Relay, RelayEvent, RelayStats, SessionId, StreamPorts};
use super::writer::Job;

/// What a command asks of the driver besides the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Ports of new streams: their sockets start being read.
    pub opened: Vec<u16>,
    /// Ports of a closed session: their sockets go.
    pub closed: Vec<u16>,
    /// A recording starts or finishes.
    pub job: Option<Job>,
}

pub struct RelayCore {
    relay: Relay,
    /// Sessions whose recording has started.
    recording: HashSet<SessionId>,
}

impl RelayCore {
    /// `timeout_ms`: `media.rtp_timeout_seconds` in ms (0 = never).
    pub fn new(timeout_ms: u64) -> RelayCore {
        RelayCore {
            relay: Relay::new(timeout_ms),
            recording: HashSet::new(),
        }
    }

    pub fn stats(&self) -> &RelayStats {
        &self.relay.stats
    }

    /// Sessions relayed now.
    pub fn sessions(&self) -> usize {
        self.relay.sessions()
    }

    /// The ports of one stream of a session.
    pub fn stream_ports(&self, session: SessionId, stream: usize) -> Option<StreamPorts> {
        self.relay.stream_ports(session, stream)
    }

    /// When the next RTP timeout is due, if any call can time out.
    pub fn next_timeout(&self) -> Option<u64> {
        self.relay.next_timeout()
    }

    pub fn command(&mut self, cmd: Command, now: u64) -> Applied {
        let mut out = Applied::default();
        match cmd {
            Command::Open {
                session,
                streams,
                recorded,
                peers,
            } => {
                for s in &streams {
                    out.opened
                        .extend([s.caller.rtp, s.caller.rtcp, s.callee.rtp, s.callee.rtcp]);
                }
                self.relay
                    .add_streams(session, &streams, recorded, peers, now);
            }
            Command::Update {
                session,
                stream,
                leg,
                sdp,
            } => self.relay.update(session, stream, leg, sdp, now),
            Command::Answered { session } => self.relay.answered(session, now),
            Command::Record {
                session,
                call_id,
                payloads,
            } => {
                if self.recording.insert(session) {
                    out.job = Some(Job::Start {
                        session,
                        call_id: Bytes::clone(&call_id),
                        payloads,
                        at_ms: now,
                    });
                }
            }
            Command::LeftAlone { session } => {
                self.relay.leave_alone(session);
                if self.recording.remove(&session) {
                    out.job = Some(Job::Finish {
                        session,
                        at_ms: Some(now),
                    });
                }
            }
            Command::Close { session } => {
                if let Some(closed) = self.relay.close(session) {
                    out.closed = closed.ports;
                }
                if self.recording.remove(&session) {
                    out.job = Some(Job::Finish {
                        session,
                        at_ms: Some(now),
                    });
                }
            }
        }
        out
    }

    /// One datagram that arrived on `port` from `src` at `now`: where to
    /// send it, and which recording hears it (only a session whose
    /// recording started).
    pub fn packet(&mut self, port: u16, src: SocketAddr, data: &[u8], now: u64) -> Handled {
        let mut h = self.relay.on_packet(port, src, data, now);
        h.record = h.record.filter(|(s, _)| self.recording.contains(s));
        h
    }

    /// Checks the RTP timeouts at `now`; returns what the node must hear
    /// (timeouts, latched sources), in order.
    pub fn tick(&mut self, now: u64) -> Vec<RelayEvent> {
        self.relay.on_tick(now);
        self.take_events()
    }

    /// Events of the packets and commands since the last call.
    pub fn take_events(&mut self) -> Vec<RelayEvent> {
        self.relay.take_events().collect()
    }

    /// The relay stops: every recording still running is finished.
    pub fn finish_all(&mut self) -> Vec<Job> {
        let mut sessions: Vec<SessionId> = self.recording.drain().collect();
        sessions.sort_unstable();
        sessions
            .into_iter()
            .map(|session| Job::Finish {
                session,
                at_ms: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ports::PortPair;
    use crate::media::recorder::Payloads;
    use crate::media::relay::LegSdp;
    use crate::media::timeline::Side;

    const RTP: [u8; 12] = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn leg(rtp: &str) -> LegSdp {
        let rtp = a(rtp);
        LegSdp {
            rtp: Some(rtp),
            rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
            rtcp_mux: false,
            hold: false,
        }
    }

    const PORTS: StreamPorts = StreamPorts {
        caller: PortPair {
            rtp: 30000,
            rtcp: 30001,
        },
        callee: PortPair {
            rtp: 30002,
            rtcp: 30003,
        },
    };

    /// Session 4 open, both legs' SDP known.
    fn opened() -> (RelayCore, Applied) {
        let mut c = RelayCore::new(60_000);
        let open = c.command(
            Command::Open {
                session: 4,
                streams: vec![PORTS],
                recorded: Some(0),
                peers: [None, None],
            },
            0,
        );
        for (side, addr) in [
            (Side::Caller, "10.0.0.1:4000"),
            (Side::Callee, "10.0.0.2:5000"),
        ] {
            c.command(
                Command::Update {
                    session: 4,
                    stream: 0,
                    leg: side,
                    sdp: leg(addr),
                },
                0,
            );
        }
        (c, open)
    }

    fn record() -> Command {
        Command::Record {
            session: 4,
            call_id: Bytes::from_static(b"c@x"),
            payloads: Payloads::default(),
        }
    }

    /// Media that left siptrack mid-call (`Command::LeftAlone`): the
    /// recording is finished then, later packets are not recorded, and
    /// the silence that follows never times the call out.
    #[test]
    fn a_session_left_alone_never_times_out_and_stops_recording() {
        let (mut c, _) = opened();
        c.command(record(), 10);
        c.command(Command::Answered { session: 4 }, 10);
        assert_eq!(c.next_timeout(), Some(60_010));
        let left = c.command(Command::LeftAlone { session: 4 }, 2_000);
        assert_eq!(
            left.job,
            Some(Job::Finish {
                session: 4,
                at_ms: Some(2_000)
            })
        );
        assert_eq!(c.next_timeout(), None);
        assert_eq!(c.tick(3_600_000), []);
        let h = c.packet(30000, a("10.0.0.1:4000"), &RTP, 3_600_001);
        assert_eq!(h.record, None, "the recording ended");
        let close = c.command(Command::Close { session: 4 }, 3_600_002);
        assert_eq!(close.closed.len(), 4);
        assert_eq!(close.job, None, "finished once");
    }

    /// The commands of one recorded call, as a driver sees them: ports to
    /// open, recording jobs, packets recorded only once the recording
    /// started, ports to close and the recording finished.
    #[test]
    fn commands_packets_and_recording_jobs() {
        let ports = PORTS;
        let (mut c, open) = opened();
        assert_eq!(open.opened, [30000, 30001, 30002, 30003]);
        assert_eq!(c.stream_ports(4, 0), Some(ports));
        // Early media before the recording starts: relayed, not recorded.
        let h = c.packet(30000, a("10.0.0.1:4000"), &RTP, 10);
        assert_eq!(h.send, Some((30002, a("10.0.0.2:5000"))));
        assert_eq!(h.record, None);
        let rec = c.command(record(), 20);
        assert_eq!(
            rec.job,
            Some(Job::Start {
                session: 4,
                call_id: Bytes::from_static(b"c@x"),
                payloads: Payloads::default(),
                at_ms: 20
            })
        );
        c.command(Command::Answered { session: 4 }, 20);
        assert_eq!(c.next_timeout(), Some(60_020));
        let h = c.packet(30002, a("10.0.0.2:5000"), &RTP, 30);
        assert_eq!(h.record, Some((4, Side::Callee)));
        assert_eq!(c.next_timeout(), Some(60_030));
        c.take_events();
        assert_eq!(c.tick(60_029), []);
        assert_eq!(c.tick(60_030), [RelayEvent::TimedOut { session: 4 }]);
        assert_eq!(c.next_timeout(), None, "reported once");
        let close = c.command(Command::Close { session: 4 }, 70_000);
        assert_eq!(close.closed.len(), 4);
        assert_eq!(
            close.job,
            Some(Job::Finish {
                session: 4,
                at_ms: Some(70_000)
            })
        );
        assert_eq!(c.sessions(), 0);
        assert!(c.finish_all().is_empty());
    }
}
