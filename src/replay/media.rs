//! The media of a capture through the relay and the recorder (SPEC R-1
//! with M-1/M-2): each RTP/RTCP datagram of the capture goes to the relay
//! port of the leg that sent it, at its capture time, through the same
//! [`RelayCore`] as a running node's relay thread, and recorded calls are
//! written by the same [`Recordings`] into the replay's recordings
//! directory. No sockets: what the relay would send is only counted.
//!
//! Which leg a datagram belongs to comes from the SDP each side sent in
//! the capture (the media phase reports it as `Update` commands with the
//! addresses as they came, before siptrack rewrote them): a datagram from
//! an address a leg announced for RTP (or RTCP) goes to siptrack's RTP
//! (or RTCP) port facing that leg. Datagrams from anywhere else — the
//! recorded siptrack's own relayed copies, another call's media — are
//! not fed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::media::anchor::Command;
use crate::media::metrics::MediaMetrics;
use crate::media::relay::{RelayEvent, RelayStats, SessionId, StreamPorts};
use crate::media::relay_core::RelayCore;
use crate::media::writer::{Job, Outcome, Recordings};

/// Where a datagram from an announced address goes: siptrack's port
/// facing the leg that announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    session: SessionId,
    port: u16,
}

/// Announced media addresses → the relay port their datagrams go to.
/// Pure: fed with the media phase's commands.
#[derive(Debug, Default)]
pub struct Endpoints {
    streams: HashMap<SessionId, Vec<StreamPorts>>,
    by_source: HashMap<SocketAddr, Target>,
}

impl Endpoints {
    /// Learns from one command of the media phase.
    pub fn command(&mut self, cmd: &Command) {
        match cmd {
            Command::Open {
                session, streams, ..
            } => self
                .streams
                .entry(*session)
                .or_default()
                .extend_from_slice(streams),
            Command::Update {
                session,
                stream,
                leg,
                sdp,
            } => {
                let Some(ports) = self.streams.get(session).and_then(|s| s.get(*stream)) else {
                    return;
                };
                let pair = ports.facing(*leg);
                let rtcp = if sdp.rtcp_mux { None } else { sdp.rtcp };
                for (addr, port) in [(sdp.rtp, pair.rtp), (rtcp, pair.rtcp)] {
                    // A hold's c=0.0.0.0 names nobody.
                    if let Some(a) = addr.filter(|a| !a.ip().is_unspecified()) {
                        // The latest offer wins: a phone reuses its media
                        // port from one call to the next.
                        self.by_source.insert(
                            a,
                            Target {
                                session: *session,
                                port,
                            },
                        );
                    }
                }
            }
            Command::Close { session } => {
                self.streams.remove(session);
                self.by_source.retain(|_, t| t.session != *session);
            }
            Command::Answered { .. } | Command::Record { .. } | Command::LeftAlone { .. } => {}
        }
    }

    /// The session and relay port a datagram from `src` arrives on, if a
    /// leg of an open session announced `src`.
    pub fn target(&self, src: SocketAddr) -> Option<(SessionId, u16)> {
        self.by_source.get(&src).map(|t| (t.session, t.port))
    }
}

/// A finished recording as the output shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavFile {
    /// The file's name in the recordings directory.
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the whole file: the same capture gives the same WAV.
    pub sha256: String,
}

/// Datagrams fed to the relay and left out, for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    pub fed: u64,
    /// From no address a leg of an open call announced.
    pub unmatched: u64,
}

pub struct ReplayMedia {
    core: RelayCore,
    recordings: Recordings,
    endpoints: Endpoints,
    files: HashMap<String, WavFile>,
    /// Sessions the capture showed at least one datagram of.
    heard: HashSet<SessionId>,
    pub fed: Fed,
}

impl ReplayMedia {
    /// Recordings go to `dir`; `timeout_ms` is `media.rtp_timeout_seconds` in ms.
    pub fn new(dir: PathBuf, timeout_ms: u64) -> ReplayMedia {
        ReplayMedia {
            core: RelayCore::new(timeout_ms),
            recordings: Recordings::new(dir, Arc::new(MediaMetrics::default())).replacing(),
            endpoints: Endpoints::default(),
            files: HashMap::new(),
            heard: HashSet::new(),
            fed: Fed::default(),
        }
    }

    /// One command of the media phase at `now`; returns the recordings it ended.
    pub fn command(&mut self, cmd: Command, now: u64) -> Vec<Outcome> {
        self.endpoints.command(&cmd);
        let applied = self.core.command(cmd, now);
        applied.job.and_then(|j| self.job(j)).into_iter().collect()
    }

    /// One UDP datagram of the capture that is not SIP.
    pub fn datagram(&mut self, src: SocketAddr, data: &[u8], now: u64) {
        let Some((session, port)) = self.endpoints.target(src) else {
            self.fed.unmatched += 1;
            return;
        };
        self.fed.fed += 1;
        self.heard.insert(session);
        let h = self.core.packet(port, src, data, now);
        if let Some((session, side)) = h.record {
            let job = Job::Packet {
                session,
                side,
                data: data.to_vec(),
                at_ms: now,
            };
            // A packet never ends a recording.
            let _ = self.recordings.job(job);
        }
    }

    /// When the next RTP timeout is due.
    pub fn next_timeout(&self) -> Option<u64> {
        self.core.next_timeout()
    }

    /// Timeouts due at `now` and sources latched since the last call.
    /// A call the capture shows no media of never times out: a capture
    /// taken on the SIP port only, or from where the media did not pass,
    /// says nothing about whether it was silent.
    pub fn events(&mut self, now: u64) -> Vec<RelayEvent> {
        let mut events = self.core.tick(now);
        events.retain(|e| match e {
            RelayEvent::TimedOut { session } => self.heard.contains(session),
            RelayEvent::Latched { .. } => true,
        });
        events
    }

    /// The replay ended: recordings still open are finished.
    pub fn finish_all(&mut self) -> Vec<Outcome> {
        let jobs = self.core.finish_all();
        let mut done: Vec<Outcome> = jobs.into_iter().filter_map(|j| self.job(j)).collect();
        for o in self.recordings.finish_all() {
            self.note(&o);
            done.push(o);
        }
        done
    }

    pub fn stats(&self) -> &RelayStats {
        self.core.stats()
    }

    /// The WAV of a recorded call.
    pub fn file_of(&self, call_id: &str) -> Option<&WavFile> {
        self.files.get(call_id)
    }

    fn job(&mut self, job: Job) -> Option<Outcome> {
        let o = self.recordings.job(job)?;
        self.note(&o);
        Some(o)
    }

    fn note(&mut self, o: &Outcome) {
        if o.result.is_err() {
            return;
        }
        if let Some(f) = wav_file(&o.file) {
            self.files
                .insert(String::from_utf8_lossy(&o.call_id).into_owned(), f);
        }
    }
}

fn wav_file(path: &Path) -> Option<WavFile> {
    let bytes = std::fs::read(path).ok()?;
    let sha256 = crate::hex::hex(&Sha256::digest(&bytes));
    Some(WavFile {
        name: path.file_name()?.to_string_lossy().into_owned(),
        bytes: bytes.len() as u64,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ports::PortPair;
    use crate::media::relay::LegSdp;
    use crate::media::timeline::Side;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn ports(base: u16) -> StreamPorts {
        StreamPorts {
            caller: PortPair {
                rtp: base,
                rtcp: base + 1,
            },
            callee: PortPair {
                rtp: base + 2,
                rtcp: base + 3,
            },
        }
    }

    fn update(session: SessionId, leg: Side, rtp: &str, rtcp: Option<&str>, mux: bool) -> Command {
        Command::Update {
            session,
            stream: 0,
            leg,
            sdp: LegSdp {
                rtp: Some(a(rtp)),
                rtcp: rtcp.map(a),
                rtcp_mux: mux,
                hold: false,
            },
        }
    }

    #[test]
    fn datagrams_go_to_the_port_facing_the_leg_that_announced_their_source() {
        use Side::*;
        let open = |session, base| Command::Open {
            session,
            streams: vec![ports(base)],
            recorded: Some(0),
            peers: [None, None],
        };
        // (name, commands, source, port it arrives on)
        let rows: Vec<(&str, Vec<Command>, &str, Option<u16>)> = vec![
            (
                "caller's RTP",
                vec![
                    open(1, 30000),
                    update(1, Caller, "10.0.0.1:4000", Some("10.0.0.1:4001"), false),
                ],
                "10.0.0.1:4000",
                Some(30000),
            ),
            (
                "caller's RTCP",
                vec![
                    open(1, 30000),
                    update(1, Caller, "10.0.0.1:4000", Some("10.0.0.1:4001"), false),
                ],
                "10.0.0.1:4001",
                Some(30001),
            ),
            (
                "callee's RTP",
                vec![
                    open(1, 30000),
                    update(1, Callee, "10.0.0.2:5000", Some("10.0.0.2:5001"), false),
                ],
                "10.0.0.2:5000",
                Some(30002),
            ),
            (
                "rtcp-mux: no separate RTCP source",
                vec![
                    open(1, 30000),
                    update(1, Callee, "10.0.0.2:5000", Some("10.0.0.2:5000"), true),
                ],
                "10.0.0.2:5000",
                Some(30002),
            ),
            (
                "a source nobody announced (the recorded relay's own copies)",
                vec![
                    open(1, 30000),
                    update(1, Caller, "10.0.0.1:4000", None, false),
                ],
                "127.0.0.1:30002",
                None,
            ),
            (
                "hold with c=0.0.0.0 names nobody",
                vec![
                    open(1, 30000),
                    update(1, Caller, "0.0.0.0:4000", None, false),
                ],
                "0.0.0.0:4000",
                None,
            ),
            (
                "the next call reusing the port takes it over",
                vec![
                    open(1, 30000),
                    update(1, Caller, "10.0.0.1:4000", None, false),
                    open(2, 30004),
                    update(2, Caller, "10.0.0.1:4000", None, false),
                ],
                "10.0.0.1:4000",
                Some(30004),
            ),
            (
                "a closed session's sources go",
                vec![
                    open(1, 30000),
                    update(1, Caller, "10.0.0.1:4000", None, false),
                    Command::Close { session: 1 },
                ],
                "10.0.0.1:4000",
                None,
            ),
            (
                "an update for a stream never opened",
                vec![update(9, Caller, "10.0.0.1:4000", None, false)],
                "10.0.0.1:4000",
                None,
            ),
        ];
        for (name, cmds, src, want) in rows {
            let mut e = Endpoints::default();
            for c in &cmds {
                e.command(c);
            }
            assert_eq!(e.target(a(src)).map(|(_, port)| port), want, "{name}");
        }
    }

    /// The RTP timeout ends only calls whose media the capture shows: a
    /// call without a datagram in the capture may have had media the
    /// capture did not see.
    #[test]
    fn only_calls_heard_in_the_capture_time_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = ReplayMedia::new(dir.path().into(), 1_000);
        for (session, base, caller) in [(1, 30000, "10.0.0.1:4000"), (2, 30004, "10.0.0.3:4000")] {
            m.command(
                Command::Open {
                    session,
                    streams: vec![ports(base)],
                    recorded: Some(0),
                    peers: [None, None],
                },
                0,
            );
            m.command(update(session, Side::Caller, caller, None, false), 0);
            m.command(Command::Answered { session }, 0);
        }
        let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        m.datagram(a("10.0.0.1:4000"), &rtp, 100);
        m.datagram(a("192.0.2.99:4000"), &rtp, 100);
        assert_eq!(
            m.fed,
            Fed {
                fed: 1,
                unmatched: 1
            }
        );
        assert_eq!(
            m.next_timeout(),
            Some(1_000),
            "session 2, silent since its answer"
        );
        let timeouts = |m: &mut ReplayMedia, now| -> Vec<SessionId> {
            m.events(now)
                .into_iter()
                .filter_map(|e| match e {
                    RelayEvent::TimedOut { session } => Some(session),
                    RelayEvent::Latched { .. } => None,
                })
                .collect()
        };
        assert_eq!(timeouts(&mut m, 1_000), Vec::<SessionId>::new());
        assert_eq!(timeouts(&mut m, 1_100), [1]);
        assert_eq!(m.next_timeout(), None);
    }
}
