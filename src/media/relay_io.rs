//! The relay's I/O: a thread of its own (never the SIP thread) that owns
//! every media socket and drives the pure [`Relay`] table. The node
//! commands it over a channel ([`RelayHandle`]); it reports back through a
//! callback (timeouts, latching, recording outcomes).
//!
//! One `epoll_wait` covers every socket; a ready socket is drained with
//! `recvmmsg`, up to [`BATCH`] datagrams per system call. That pays when
//! the thread falls behind (several packets queued per socket: one call
//! instead of one each) and costs nothing otherwise: `cargo bench --bench
//! media_relay` relays 16 queued packets in 80 µs with one recvmmsg
//! against 92 µs with 16 recv_from (both with 16 send_to and the
//! sender's sends; 2026-11-29, loaded 2-core machine). Sends stay one
//! `send_to` each: every received packet leaves on a different socket
//! (the other leg's), and `sendmmsg` batches only datagrams of one socket,
//! so at 50 packets/s per leg a wake-up would almost never have two to
//! batch.
//!
//! Sockets are bound on the SIP thread by [`BindingPorts`] when the media
//! phase takes a pair, so the SDP never names a port siptrack could not
//! bind; the relay thread picks them up when the session opens.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::anchor::{Command, PortSource};
use super::metrics::MediaMetrics;
use super::ports::{PortAllocator, PortError, PortPair};
use super::relay::{RelayEvent, SessionId};
use super::relay_core::RelayCore;
use super::sys::{Poller, RecvBatch, Waker};
use super::timeline::Side;
use super::writer::{Outcome, WriterHandle};
use crate::proxy::Millis;

/// Datagrams taken from one socket per system call.
pub const BATCH: usize = 16;
/// A freed pair rests this long before another call gets it, so late
/// packets of an ended call are not latched by the next one.
pub const QUARANTINE_MS: u64 = 5_000;
/// How often timeouts are checked and counters published.
const TICK: Duration = Duration::from_millis(250);
const WAKE: u64 = u64::MAX;

/// Sockets bound for pairs handed out but not yet picked up by the relay.
type Bound = Arc<Mutex<HashMap<u16, UdpSocket>>>;

/// What the relay reports to the node.
#[derive(Debug)]
pub enum MediaReport {
    TimedOut {
        session: SessionId,
    },
    Latched {
        session: SessionId,
        leg: Side,
        from: SocketAddr,
    },
    Recording(Outcome),
}

/// EMFILE or ENFILE: no socket can be opened whatever the port.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The [`PortSource`] of a running node: a pair counts as free only once
/// both its sockets are bound (another program may hold a port of the
/// range; that pair is skipped).
pub struct BindingPorts {
    alloc: PortAllocator,
    ip: IpAddr,
    bound: Bound,
}

/// A media socket on `addr`; on the IPv6 wildcard one that takes IPv4
/// too (whatever `net.ipv6.bindv6only` says), so a call can have a leg
/// on each family.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    if addr.ip() != IpAddr::from([0u16; 8]) {
        return UdpSocket::bind(addr);
    }
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_only_v6(false)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Where a packet for `to` is sent from a socket bound on `bind_ip`: an
/// IPv4 address as IPv4-mapped on a (dual-stack) IPv6 socket.
fn wire_address(to: SocketAddr, bind_ip: IpAddr) -> SocketAddr {
    match (to, bind_ip) {
        (SocketAddr::V4(v4), IpAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

/// A packet's source as the SDP and the signalling name it: an IPv4 peer
/// of a dual-stack socket comes as IPv4-mapped.
fn canonical(src: SocketAddr) -> SocketAddr {
    SocketAddr::new(src.ip().to_canonical(), src.port())
}

/// How many pairs one call tries before it goes unrecorded. Pairs held
/// by other programs go to the back of the queue, so each call passes
/// over them once; 8 (until a trial, 2026-12-02) left calls unrecorded
/// whenever 8 held pairs came in a row while hundreds were free. A bind
/// costs a few µs, so the worst case stays far below a millisecond.
const TRIES_PER_CALL: usize = 64;

impl PortSource for BindingPorts {
    fn take(&mut self, now: Millis) -> Result<PortPair, PortError> {
        let mut skipped = Vec::new();
        let mut result = Err(PortError::Exhausted);
        for _ in 0..TRIES_PER_CALL {
            let Ok(p) = self.alloc.allocate(now) else {
                break;
            };
            let bind = |port| {
                let s = bind_udp(SocketAddr::new(self.ip, port))?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            };
            match (bind(p.rtp), bind(p.rtcp)) {
                (Ok(a), Ok(b)) => {
                    if let Ok(mut m) = self.bound.lock() {
                        m.insert(p.rtp, a);
                        m.insert(p.rtcp, b);
                    }
                    result = Ok(p);
                    break;
                }
                (a, b) => {
                    let e = a.err().or(b.err());
                    skipped.push(p);
                    if e.as_ref().is_some_and(out_of_descriptors) {
                        result = Err(PortError::NoDescriptors);
                        break;
                    }
                    result = Err(PortError::HeldElsewhere);
                    tracing::debug!(port = p.rtp, error = ?e, "media port pair busy; skipped");
                }
            }
        }
        // Those of the range that came free while the whole range is taken
        // by this node's own calls read "no free media ports".
        if result == Err(PortError::HeldElsewhere) && skipped.len() < TRIES_PER_CALL {
            result = Err(PortError::Exhausted);
        }
        for p in skipped {
            self.alloc.release(p, now);
        }
        result
    }

    fn give_back(&mut self, pair: PortPair, now: Millis) {
        // Sockets of a session never opened are closed here; the relay
        // closes those it picked up.
        if let Ok(mut m) = self.bound.lock() {
            m.remove(&pair.rtp);
            m.remove(&pair.rtcp);
        }
        self.alloc.release(pair, now);
    }
}

/// The node's end of the relay.
pub struct RelayHandle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

impl RelayHandle {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            self.waker.wake();
        }
    }
}

impl Drop for RelayHandle {
    /// The thread may sleep without a timeout (no sessions): wake it so it
    /// sees the node gone and finishes its recordings now.
    fn drop(&mut self) {
        self.waker.wake();
    }
}

/// How long the relay thread may sleep in `epoll_wait`, in ms (-1: until
/// woken). While sessions are open their timeouts need the tick; after
/// any change the counters wait for the next tick to be published. With
/// neither there is nothing to do until a packet or a command comes (both
/// wake the thread), so an idle relay does not wake 4 times a second.
/// Rounded up, so a sleep never ends just short of the tick and spins.
fn wait_ms(sessions: usize, unpublished: bool, until_tick: Duration) -> i32 {
    if sessions == 0 && !unpublished {
        return -1;
    }
    until_tick.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
}

/// What `start` needs.
pub struct RelayConfig {
    pub bind_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub timeout_ms: u64,
}

/// Starts the relay thread. Returns the port source for the media phase
/// and the handle for commands.
pub fn start(
    cfg: &RelayConfig,
    writer: WriterHandle,
    metrics: Arc<MediaMetrics>,
    report: impl Fn(MediaReport) + Send + 'static,
) -> anyhow::Result<(BindingPorts, RelayHandle)> {
    let alloc = PortAllocator::new(cfg.port_min, cfg.port_max, QUARANTINE_MS)?;
    let bound: Bound = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let poller = Poller::new()?;
    let waker = Arc::new(Waker::new()?);
    poller.add(waker.as_raw_fd(), WAKE)?;
    let mut thread = RelayThread {
        bind_ip: cfg.bind_ip,
        core: RelayCore::new(cfg.timeout_ms),
        sockets: HashMap::new(),
        bound: bound.clone(),
        poller,
        waker: waker.clone(),
        writer,
        metrics,
        epoch: Instant::now(),
    };
    std::thread::Builder::new()
        .name("media-relay".into())
        .spawn(move || thread.run(rx, report))?;
    Ok((
        BindingPorts {
            alloc,
            ip: cfg.bind_ip,
            bound,
        },
        RelayHandle { tx, waker },
    ))
}

struct RelayThread {
    /// What the media sockets are bound on (see [`wire_address`]).
    bind_ip: IpAddr,
    core: RelayCore,
    sockets: HashMap<u16, UdpSocket>,
    bound: Bound,
    poller: Poller,
    waker: Arc<Waker>,
    writer: WriterHandle,
    metrics: Arc<MediaMetrics>,
    epoch: Instant,
}

impl RelayThread {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn run(&mut self, rx: Receiver<Command>, report: impl Fn(MediaReport)) {
        let mut ready = Vec::with_capacity(256);
        let mut batch = RecvBatch::new(BATCH);
        let mut next_tick = Instant::now() + TICK;
        // Something changed since the counters were last published.
        let mut unpublished = true;
        loop {
            let until_tick = next_tick.saturating_duration_since(Instant::now());
            let wait = wait_ms(self.core.sessions(), unpublished, until_tick);
            if let Err(e) = self.poller.wait(&mut ready, wait) {
                tracing::error!(error = %e, "media relay: epoll_wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            for &token in &ready {
                if token == WAKE {
                    self.waker.clear();
                    continue;
                }
                unpublished = true;
                self.drain(token as u16, &mut batch);
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => {
                        unpublished = true;
                        self.command(cmd)
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // The node stopped: finish every recording.
                        for job in self.core.finish_all() {
                            self.writer.control(job);
                        }
                        return;
                    }
                }
            }
            let mut events = self.core.take_events();
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                let now = self.now_ms();
                events.extend(self.core.tick(now));
                self.publish();
                unpublished = false;
            }
            for ev in events {
                report(match ev {
                    RelayEvent::TimedOut { session } => MediaReport::TimedOut { session },
                    RelayEvent::Latched { session, leg, from } => {
                        MediaReport::Latched { session, leg, from }
                    }
                });
            }
        }
    }

    fn drain(&mut self, port: u16, batch: &mut RecvBatch) {
        let Some(fd) = self.sockets.get(&port).map(|s| s.as_raw_fd()) else {
            return;
        };
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) => {
                // ICMP port unreachable from a peer shows up here; the
                // socket stays usable.
                tracing::trace!(port, error = %e, "media recv");
                return;
            }
        };
        let now = self.now_ms();
        for i in 0..n {
            let Some((data, src)) = batch.get(i) else {
                continue;
            };
            if batch.is_cut(i) {
                // Longer than any RTP this relay carries: relaying its
                // first 2 KiB would hand the far side a broken packet.
                self.metrics.dropped_oversized.fetch_add(1, Relaxed);
                continue;
            }
            let h = self.core.packet(port, canonical(src), data, now);
            if let Some((out, to)) = h.send {
                if let Some(s) = self.sockets.get(&out) {
                    if let Err(e) = s.send_to(data, wire_address(to, self.bind_ip)) {
                        // The packet is lost to the far side (a peer's
                        // address this host cannot reach, a full socket
                        // buffer): counted, the call goes on.
                        self.metrics.send_errors.fetch_add(1, Relaxed);
                        tracing::debug!(%to, error = %e, "media send failed");
                    }
                }
            }
            if let Some((session, side)) = h.record {
                self.writer.packet(session, side, data, now);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now_ms();
        let applied = self.core.command(cmd, now);
        for port in applied.opened {
            let sock = self.bound.lock().ok().and_then(|mut m| m.remove(&port));
            if let Some(sock) = sock {
                if let Err(e) = self.poller.add(sock.as_raw_fd(), u64::from(port)) {
                    tracing::warn!(port, error = %e, "media socket not polled");
                }
                self.sockets.insert(port, sock);
            }
        }
        for port in applied.closed {
            if let Some(sock) = self.sockets.remove(&port) {
                self.poller.remove(sock.as_raw_fd());
            }
        }
        if let Some(job) = applied.job {
            self.writer.control(job);
        }
    }

    fn publish(&self) {
        let s = self.core.stats();
        let m = &self.metrics;
        m.relayed_packets.store(s.relayed, Relaxed);
        m.dropped_other_source
            .store(s.dropped_other_source, Relaxed);
        m.dropped_no_destination
            .store(s.dropped_no_destination, Relaxed);
        m.dropped_unknown_port
            .store(s.dropped_unknown_port, Relaxed);
        m.active_sessions
            .store(self.core.sessions() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    //! The relay thread on real loopback sockets.

    use super::*;

    /// Pairs another program holds are passed over, however many come
    /// in a row within the tries of one call (trial, 2026-12-02: eight
    /// held pairs at the start of the range left a call unrecorded).
    #[test]
    fn pairs_held_by_other_programs_are_passed_over() {
        const FIRST: u16 = 27_100;
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let held: Vec<UdpSocket> = (FIRST..FIRST + 40)
            .map(|port| {
                UdpSocket::bind(SocketAddr::new(ip, port))
                    .unwrap_or_else(|e| panic!("test port {port} in use: {e}"))
            })
            .collect();
        let mut ports = BindingPorts {
            alloc: PortAllocator::new(FIRST, FIRST + 59, QUARANTINE_MS).expect("range"),
            ip,
            bound: Arc::default(),
        };
        let p = ports.take(1).expect("a free pair beyond the 20 held");
        assert!(p.rtp >= FIRST + 40, "{p:?}");
        // The rest of the range taken by this node's calls: no free ports.
        let mut taken = vec![p];
        while let Ok(p) = ports.take(1) {
            taken.push(p);
        }
        assert_eq!(taken.len(), 10);
        assert_eq!(ports.take(1), Err(PortError::Exhausted));
        drop(held);
    }

    #[test]
    fn only_emfile_and_enfile_are_out_of_descriptors() {
        for (errno, out) in [
            (libc::EMFILE, true),
            (libc::ENFILE, true),
            (libc::EADDRINUSE, false),
            (libc::EACCES, false),
        ] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(out_of_descriptors(&e), out, "{e}");
        }
    }
    use crate::media::relay::{LegSdp, StreamPorts};

    /// A send the kernel refuses (an IPv6 far end for sockets bound on
    /// IPv4: nothing leaves the host) is counted on /metrics and the
    /// relay goes on relaying.
    /// A running relay on `bind_ip` with eight ports from `first` (moved
    /// by the process id, so parallel runs rarely meet; a busy pair is
    /// skipped anyway), and two pairs taken: (caller's, callee's).
    struct TestRelay {
        relay: RelayHandle,
        metrics: Arc<MediaMetrics>,
        pairs: (PortPair, PortPair),
        _dir: tempfile::TempDir,
    }

    fn test_relay(bind_ip: IpAddr, first: u16) -> TestRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(MediaMetrics::default());
        let writer = super::super::writer::spawn(dir.path().into(), metrics.clone(), |_| {})
            .expect("writer");
        let base = first + (std::process::id() % 500) as u16 * 8;
        let cfg = RelayConfig {
            bind_ip,
            port_min: base,
            port_max: base + 7,
            timeout_ms: 0,
        };
        let (mut ports, relay) = start(&cfg, writer, metrics.clone(), |_| {}).expect("relay");
        let pairs = (ports.take(0).expect("pair"), ports.take(0).expect("pair"));
        TestRelay {
            relay,
            metrics,
            pairs,
            _dir: dir,
        }
    }

    /// A leg's SDP: RTP at `rtp`, RTCP muxed.
    fn muxed_leg(rtp: SocketAddr) -> LegSdp {
        LegSdp {
            rtp: Some(rtp),
            rtcp: None,
            rtcp_mux: true,
            hold: false,
        }
    }

    #[test]
    fn failed_sends_are_counted() {
        let TestRelay {
            relay,
            metrics,
            pairs: (caller_pair, callee_pair),
            _dir,
        } = test_relay(IpAddr::from([127, 0, 0, 1]), 42_000);
        let streams = StreamPorts {
            caller: caller_pair,
            callee: callee_pair,
        };
        let caller = UdpSocket::bind("127.0.0.1:0").expect("caller socket");
        let here = caller.local_addr().expect("addr");
        relay.send(Command::Open {
            session: 1,
            streams: vec![streams],
            recorded: None,
            peers: [None, None],
        });
        relay.send(Command::Update {
            session: 1,
            stream: 0,
            leg: Side::Caller,
            sdp: muxed_leg(here),
        });
        relay.send(Command::Update {
            session: 1,
            stream: 0,
            leg: Side::Callee,
            sdp: muxed_leg("[::1]:40000".parse().expect("v6")),
        });
        let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        let to = SocketAddr::from(([127, 0, 0, 1], caller_pair.rtp));
        // One packet at a time, each waited for: the commands above reach
        // the relay thread on their own time, and a packet that comes
        // before the callee's address is dropped without a send (seen
        // once in CI: 2 errors for 3 packets). Such a packet is sent again.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sent = 0;
        while metrics.send_errors.load(Relaxed) < 3 && Instant::now() < deadline && sent < 20 {
            let before = metrics.send_errors.load(Relaxed);
            caller.send_to(&rtp, to).expect("send to the relay");
            sent += 1;
            let counted = Instant::now() + Duration::from_millis(300);
            while metrics.send_errors.load(Relaxed) == before && Instant::now() < counted {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(metrics.send_errors.load(Relaxed), 3);
        assert!(metrics
            .render()
            .contains("siptrack_media_send_errors_total 3\n"));
    }

    /// Sockets on the IPv6 wildcard relay between an IPv6 caller and an
    /// IPv4 callee, both ways (trial, 2026-12-03: an IPv6 caller got no
    /// audio, every packet toward it failed to send from IPv4 sockets).
    #[test]
    fn a_dual_stack_relay_joins_an_ipv6_and_an_ipv4_leg() {
        let Ok(caller) = UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here: nothing to test");
            return;
        };
        let TestRelay {
            relay,
            metrics,
            pairs: (caller_pair, callee_pair),
            _dir,
        } = test_relay(IpAddr::from([0u16; 8]), 46_000);
        let callee = UdpSocket::bind("127.0.0.1:0").expect("callee socket");
        for s in [&caller, &callee] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
        }
        relay.send(Command::Open {
            session: 1,
            streams: vec![StreamPorts {
                caller: caller_pair,
                callee: callee_pair,
            }],
            recorded: None,
            peers: [
                Some("::1".parse().expect("ip")),
                Some(IpAddr::from([127, 0, 0, 1])),
            ],
        });
        for (side, s) in [(Side::Caller, &caller), (Side::Callee, &callee)] {
            relay.send(Command::Update {
                session: 1,
                stream: 0,
                leg: side,
                sdp: muxed_leg(s.local_addr().expect("addr")),
            });
        }
        let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        let to_caller_side: SocketAddr = format!("[::1]:{}", caller_pair.rtp).parse().expect("a");
        let to_callee_side = SocketAddr::from(([127, 0, 0, 1], callee_pair.rtp));
        // (who sends, where to, who must hear it); each tried until heard,
        // since the commands reach the relay thread on their own time.
        for (from, to, hears) in [
            (&caller, to_caller_side, &callee),
            (&callee, to_callee_side, &caller),
        ] {
            let mut heard = false;
            for _ in 0..20 {
                from.send_to(&rtp, to).expect("send to the relay");
                let mut buf = [0u8; 64];
                if let Ok((n, _)) = hears.recv_from(&mut buf) {
                    assert_eq!(&buf[..n], &rtp[..]);
                    heard = true;
                    break;
                }
            }
            assert!(
                heard,
                "nothing relayed from {:?} via {to}",
                from.local_addr()
            );
        }
        assert_eq!(metrics.send_errors.load(Relaxed), 0);
    }
}

#[cfg(test)]
mod wait_tests {
    //! When the relay thread wakes.

    use super::*;

    #[test]
    fn an_idle_relay_sleeps_until_woken() {
        let ms = Duration::from_millis;
        // (open sessions, counters unpublished, time to the tick, epoll timeout)
        for (sessions, unpublished, until_tick, want) in [
            (0, false, ms(250), -1),                 // idle: no timer at all
            (0, true, ms(250), 250),                 // a session just closed: publish 0
            (3, false, ms(250), 250),                // calls: their timeouts need the tick
            (3, false, Duration::from_micros(1), 1), // rounded up, not a 0 ms spin
            (3, true, Duration::ZERO, 0),            // the tick is due
            (1, false, Duration::from_micros(249_001), 250),
        ] {
            assert_eq!(
                wait_ms(sessions, unpublished, until_tick),
                want,
                "{sessions} sessions, unpublished {unpublished}, {until_tick:?}"
            );
        }
    }
}
