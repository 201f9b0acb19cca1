//! Media for the end-to-end tests: G.711 tones, a test-side RTP endpoint,
//! a conductor that starts and stops its streams as SIPp's calls come and
//! go, a WAV reader with a Goertzel filter, and SDP `c=`/`m=` extraction.
//!
//! Why a test-side RTP endpoint: SIPp 3.6.1's `rtp_stream` sends every
//! call from one socket and reads nothing back, so per-call ports, what
//! arrived and from where cannot be had from it. SIPp signals; these
//! endpoints carry the media. The encoders here are written from ITU-T
//! G.711 apart from `src/media/g711.rs`, so a bug there cannot hide by
//! being on both sides of a test. Everything binds to 127.0.0.0/8.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// 8 kHz narrowband: 160 samples per 20 ms packet.
pub const RATE: u32 = 8000;
pub const PTIME: Duration = Duration::from_millis(20);
pub const SAMPLES_PER_PACKET: usize = 160;

// ---------------------------------------------------------------------------
// G.711
// ---------------------------------------------------------------------------

/// 16-bit linear PCM → µ-law (G.711, bias 0x84, clipped at 32635).
pub fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let mag = s.abs().min(CLIP) + BIAS;
    let mut exp = 7;
    while exp > 0 && mag & (0x4000 >> (7 - exp)) == 0 {
        exp -= 1;
    }
    let mant = (mag >> (exp + 3)) & 0x0F;
    !(sign | (exp << 4) | mant) as u8
}

/// µ-law → 16-bit linear PCM.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let exp = i32::from((u >> 4) & 0x07);
    let mant = i32::from(u & 0x0F);
    let mag = (((mant << 3) + 0x84) << exp) - 0x84;
    if u & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

/// 16-bit linear PCM → A-law (G.711: 13-bit magnitude, even bits inverted).
pub fn alaw(sample: i16) -> u8 {
    let s = i32::from(sample) >> 3; // 13 bits
    let (sign, mag) = if s >= 0 { (0x80, s) } else { (0, -s - 1) };
    let mag = mag.min(0xFFF);
    let code = if mag < 32 {
        mag >> 1
    } else {
        let mut exp = 1;
        while mag >> (exp + 4) > 1 {
            exp += 1;
        }
        (exp << 4) | ((mag >> exp) & 0x0F)
    };
    ((sign | code) ^ 0x55) as u8
}

/// A-law → 16-bit linear PCM.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exp = i32::from((a >> 4) & 0x07);
    let mant = i32::from(a & 0x0F);
    let mag = if exp == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (exp - 1)
    };
    if a & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    pub fn encode(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw(s),
            Codec::Pcma => alaw(s),
        }
    }

    pub fn decode(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(b),
            Codec::Pcma => alaw_to_linear(b),
        }
    }
}

/// A sine of `freq` Hz sampled at 8 kHz with `amplitude` peak, phase
/// continuous over the whole stream (sample n is the same whichever
/// packet carries it).
#[derive(Clone, Copy, Debug)]
pub struct Tone {
    pub freq: f64,
    pub amplitude: f64,
    pub codec: Codec,
}

impl Tone {
    pub fn new(freq: f64, codec: Codec) -> Tone {
        Tone {
            freq,
            amplitude: 8000.0,
            codec,
        }
    }

    /// `n` encoded samples starting at sample index `first`.
    pub fn payload(&self, first: u64, n: usize) -> Vec<u8> {
        (0..n as u64)
            .map(|i| {
                let t = (first + i) as f64 / f64::from(RATE);
                let s = self.amplitude * (2.0 * std::f64::consts::PI * self.freq * t).sin();
                self.codec.encode(s.round() as i16)
            })
            .collect()
    }
}

/// One RTP packet (version 2, no CSRC, no extension).
pub fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(pt | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

// ---------------------------------------------------------------------------
// RTP endpoint
// ---------------------------------------------------------------------------

/// Which packets of a stream are not sent (network loss on the way in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    None,
    /// Packets n = k-1, 2k-1, … are skipped: `EveryNth(20)` is 5 %.
    EveryNth(u32),
}

impl Loss {
    pub fn skips(self, n: u64) -> bool {
        match self {
            Loss::None => false,
            Loss::EveryNth(k) => k > 0 && (n + 1).is_multiple_of(u64::from(k)),
        }
    }
}

/// What a stream looks like on the wire.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    pub tone: Tone,
    pub ssrc: u32,
    pub seq0: u16,
    pub ts0: u32,
    pub loss: Loss,
}

impl StreamSpec {
    pub fn new(tone: Tone) -> StreamSpec {
        StreamSpec {
            tone,
            ssrc: fastrand_u32(),
            seq0: fastrand_u32() as u16,
            ts0: fastrand_u32(),
            loss: Loss::None,
        }
    }

    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }
}

fn fastrand_u32() -> u32 {
    (super::random_u64() >> 17) as u32
}

/// Packets that arrived from one source with one SSRC.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub packets: u64,
    /// Sequence numbers seen (to tell which packets were lost).
    pub seqs: BTreeSet<u16>,
    pub bytes: u64,
    pub payload_types: BTreeSet<u8>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// What the sender did so far.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// Packets put on the wire.
    pub packets: u64,
    /// Packets left out by the loss pattern.
    pub skipped: u64,
    /// Packet slots that passed while not sending (hold).
    pub paused: u64,
    /// Packet slots that carried a key press (RFC 4733) instead of audio.
    pub dtmf_slots: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Sequence numbers of the packets put on the wire.
    pub seqs: Vec<u16>,
    /// Where the packets went, in order of change.
    pub destinations: Vec<SocketAddr>,
}

impl Sent {
    /// Audio time the packets put on the wire carry.
    pub fn audio(&self) -> Duration {
        PTIME * self.packets as u32
    }

    /// From the first packet sent to the end of the last one.
    pub fn span(&self) -> Duration {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b - a + PTIME,
            _ => Duration::ZERO,
        }
    }
}

#[derive(Debug, Default)]
struct Control {
    dest: Option<SocketAddr>,
    sending: bool,
    stopped: bool,
    started: bool,
    /// A key press to send next: (RFC 4733 event, packets it lasts).
    press: Option<(u8, u32)>,
}

/// RFC 4733 telephone-event payload type the scenarios offer.
pub const TELEPHONE_EVENT: u8 = 101;

/// RFC 4733 event code of a key: `0`–`9` 0–9, `*` 10, `#` 11, `A`–`D` 12–15.
pub fn event_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        _ => None,
    }
}

/// An RFC 4733 payload: event, end bit, volume 10, duration in samples.
pub fn telephone_event(event: u8, end: bool, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [event, if end { 0x80 } else { 0 } | 10, d[0], d[1]]
}

/// A UDP socket on loopback that sends one tone stream in 20 ms packets
/// (to a destination that may change, paused while held) and receives and
/// counts whatever arrives, by source and SSRC.
pub struct RtpEndpoint {
    sock: Arc<UdpSocket>,
    spec: StreamSpec,
    control: Arc<Mutex<Control>>,
    sent: Arc<Mutex<Sent>>,
    received: Arc<Mutex<BTreeMap<(SocketAddr, u32), Flow>>>,
    down: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An even port (RTP) whose odd neighbour (RTCP) is free too.
pub fn even_port() -> u16 {
    loop {
        let p = super::free_ports(2);
        if p.is_multiple_of(2) {
            return p;
        }
    }
}

impl RtpEndpoint {
    /// Bound on 127.0.0.1 at an even port.
    pub fn bind(spec: StreamSpec) -> RtpEndpoint {
        let port = even_port();
        Self::bind_at(SocketAddr::from(([127, 0, 0, 1], port)), spec)
    }

    /// Bound on `ip` at a port the OS picks (a third party somewhere else).
    pub fn bind_ip(ip: Ipv4Addr, spec: StreamSpec) -> RtpEndpoint {
        Self::bind_at(SocketAddr::from((ip, 0)), spec)
    }

    pub fn bind_at(addr: SocketAddr, spec: StreamSpec) -> RtpEndpoint {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind RTP {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let ep = RtpEndpoint {
            sock: Arc::new(sock),
            spec,
            control: Arc::default(),
            sent: Arc::default(),
            received: Arc::default(),
            down: Arc::default(),
            threads: Mutex::default(),
        };
        let (sock, received, down) = (ep.sock.clone(), ep.received.clone(), ep.down.clone());
        let rx = std::thread::spawn(move || receive(&sock, &received, &down));
        lock(&ep.threads).push(rx);
        ep
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("local address")
    }

    pub fn port(&self) -> u16 {
        self.local().port()
    }

    pub fn spec(&self) -> StreamSpec {
        self.spec
    }

    /// Sends to `dest` from now on (starts the stream on first use).
    pub fn send_to(&self, dest: SocketAddr) {
        let start = {
            let mut c = lock(&self.control);
            if c.stopped {
                return;
            }
            c.dest = Some(dest);
            c.sending = true;
            !std::mem::replace(&mut c.started, true)
        };
        if start {
            let (sock, spec, control, sent, down) = (
                self.sock.clone(),
                self.spec,
                self.control.clone(),
                self.sent.clone(),
                self.down.clone(),
            );
            let tx = std::thread::spawn(move || send(&sock, spec, &control, &sent, &down));
            lock(&self.threads).push(tx);
        }
    }

    /// Presses `digit` for `packets` × 20 ms: from the next slot on, the
    /// stream carries RFC 4733 events instead of audio (the last one with
    /// the end bit, sent three times), then audio again.
    pub fn press(&self, digit: char, packets: u32) {
        let code = event_code(digit).unwrap_or_else(|| panic!("not a key: {digit:?}"));
        lock(&self.control).press = Some((code, packets.max(1)));
    }

    /// Stops sending for now (held); the timestamps run on.
    pub fn pause(&self) {
        lock(&self.control).sending = false;
    }

    /// Ends the stream for good (the call ended).
    pub fn stop(&self) {
        let mut c = lock(&self.control);
        c.stopped = true;
        c.sending = false;
    }

    pub fn sent(&self) -> Sent {
        lock(&self.sent).clone()
    }

    /// Everything received so far, by (source, SSRC).
    pub fn received(&self) -> BTreeMap<(SocketAddr, u32), Flow> {
        lock(&self.received).clone()
    }

    /// Packets received from anywhere.
    pub fn received_packets(&self) -> u64 {
        lock(&self.received).values().map(|f| f.packets).sum()
    }

    /// Packets received carrying `ssrc`, from any source.
    pub fn received_ssrc(&self, ssrc: u32) -> u64 {
        lock(&self.received)
            .iter()
            .filter(|((_, s), _)| *s == ssrc)
            .map(|(_, f)| f.packets)
            .sum()
    }

    /// Of the packets `from` sent, the positions (0 = first) of those
    /// that did not arrive here.
    pub fn missing_from(&self, from: &RtpEndpoint) -> Vec<usize> {
        let got: BTreeSet<u16> = lock(&self.received)
            .iter()
            .filter(|((_, s), _)| *s == from.spec.ssrc)
            .flat_map(|(_, f)| f.seqs.iter().copied())
            .collect();
        lock(&from.sent)
            .seqs
            .iter()
            .enumerate()
            .filter(|(_, s)| !got.contains(s))
            .map(|(i, _)| i)
            .collect()
    }

    /// Sources packets came from.
    pub fn sources(&self) -> BTreeSet<SocketAddr> {
        lock(&self.received).keys().map(|(a, _)| *a).collect()
    }

    /// Sends `n` packets of this endpoint's tone to `dest` at once, 20 ms
    /// apart, outside any stream (an intruder's packets).
    pub fn burst(&self, dest: SocketAddr, n: u32) {
        let s = self.spec;
        for i in 0..n {
            let payload = s.tone.payload(u64::from(i) * 160, SAMPLES_PER_PACKET);
            let p = rtp_packet(
                s.tone.codec.payload_type(),
                i == 0,
                s.seq0.wrapping_add(i as u16),
                s.ts0.wrapping_add(i * 160),
                s.ssrc,
                &payload,
            );
            let _ = self.sock.send_to(&p, dest);
            std::thread::sleep(PTIME);
        }
    }
}

impl Drop for RtpEndpoint {
    fn drop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }
}

fn receive(
    sock: &UdpSocket,
    received: &Mutex<BTreeMap<(SocketAddr, u32), Flow>>,
    down: &AtomicBool,
) {
    let mut buf = [0u8; 2048];
    while !down.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let now = Instant::now();
        let pkt = &buf[..n];
        // Anything that is not RTP version 2 counts under SSRC 0.
        let (pt, seq, ssrc) = if n >= 12 && pkt[0] >> 6 == 2 {
            (
                pkt[1] & 0x7F,
                u16::from_be_bytes([pkt[2], pkt[3]]),
                u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            )
        } else {
            (255, 0, 0)
        };
        let mut r = lock(received);
        let f = r.entry((from, ssrc)).or_default();
        f.packets += 1;
        f.seqs.insert(seq);
        f.bytes += n as u64;
        f.payload_types.insert(pt);
        f.first.get_or_insert(now);
        f.last = Some(now);
    }
}

/// Packet slot n is due at start + n × 20 ms; its timestamp is
/// ts0 + 160 n whether or not it is sent (so a pause reads as silence of
/// the right length), and its sequence number counts every packet the
/// sender meant to send (a skipped one is lost on the way, not unsent).
fn send(
    sock: &UdpSocket,
    spec: StreamSpec,
    control: &Mutex<Control>,
    sent: &Mutex<Sent>,
    down: &AtomicBool,
) {
    let start = Instant::now();
    let mut seq = spec.seq0;
    let mut first = true;
    // A key press in progress: (event, packets, sent so far, timestamp).
    let mut pressing: Option<(u8, u32, u32, u32)> = None;
    for n in 0u64.. {
        let due = start + PTIME * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if down.load(Ordering::Relaxed) {
            return;
        }
        let (dest, sending, stopped, press) = {
            let mut c = lock(control);
            let press = if c.sending && pressing.is_none() {
                c.press.take()
            } else {
                None
            };
            (c.dest, c.sending, c.stopped, press)
        };
        if stopped {
            return;
        }
        let Some(dest) = dest.filter(|_| sending) else {
            lock(sent).paused += 1;
            continue;
        };
        if let Some((event, packets)) = press {
            // The event's timestamp is its first slot's, for all its packets.
            pressing = Some((event, packets, 0, spec.ts0.wrapping_add((n * 160) as u32)));
        }
        if let Some((event, packets, done, ts)) = pressing {
            let done = done + 1;
            let end = done == packets;
            let payload = telephone_event(event, end, (done * 160) as u16);
            for _ in 0..if end { 3 } else { 1 } {
                let p = rtp_packet(TELEPHONE_EVENT, done == 1, seq, ts, spec.ssrc, &payload);
                seq = seq.wrapping_add(1);
                let _ = sock.send_to(&p, dest);
            }
            lock(sent).dtmf_slots += 1;
            pressing = (!end).then_some((event, packets, done, ts));
            continue;
        }
        let this_seq = seq;
        seq = seq.wrapping_add(1);
        if spec.loss.skips(n) {
            lock(sent).skipped += 1;
            continue;
        }
        let payload = spec.tone.payload(n * 160, SAMPLES_PER_PACKET);
        let ts = spec.ts0.wrapping_add((n * 160) as u32);
        let p = rtp_packet(
            spec.tone.codec.payload_type(),
            first,
            this_seq,
            ts,
            spec.ssrc,
            &payload,
        );
        first = false;
        if sock.send_to(&p, dest).is_ok() {
            let now = Instant::now();
            let mut s = lock(sent);
            s.packets += 1;
            s.seqs.push(this_seq);
            s.first.get_or_insert(now);
            s.last = Some(now);
            if s.destinations.last() != Some(&dest) {
                s.destinations.push(dest);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Conductor: SIPp's log lines drive the endpoints
// ---------------------------------------------------------------------------

/// A line the media scenarios log (`-trace_logs`), see tests/sipp/uac_record.xml and the other scenarios of tests/e2e_recording.rs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The far side's SDP: where to send, and its direction attribute.
    Far {
        own_port: u16,
        ip: IpAddr,
        port: u16,
        direction: String,
    },
    /// The call ended.
    Bye { own_port: u16 },
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let mut w = line.split_whitespace();
        match w.next()? {
            "rtp" => Some(Event::Far {
                own_port: w.next()?.parse().ok()?,
                ip: w.next()?.parse().ok()?,
                port: w.next()?.parse().ok()?,
                direction: w.next().unwrap_or("sendrecv").to_string(),
            }),
            "bye" => Some(Event::Bye {
                own_port: w.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }

    pub fn own_port(&self) -> u16 {
        match self {
            Event::Far { own_port, .. } | Event::Bye { own_port } => *own_port,
        }
    }
}

/// Whether an endpoint sends toward a far side that offered or answered
/// `direction` at `ip`: not when the far side only sends (`sendonly`: we
/// are held) or does nothing (`inactive`), nor to `0.0.0.0` (RFC 2543 hold).
pub fn sends_toward(ip: IpAddr, direction: &str) -> bool {
    !ip.is_unspecified() && !matches!(direction, "sendonly" | "inactive")
}

/// Tails SIPp log files and applies each line to the endpoint bound at
/// its port: starts, redirects, pauses and stops streams as calls come up,
/// are held, resumed and hung up. Keeps every event with its time.
pub struct Conductor {
    down: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
}

impl Conductor {
    pub fn start(logs: Vec<PathBuf>, endpoints: Vec<Arc<RtpEndpoint>>) -> Conductor {
        let down = Arc::new(AtomicBool::new(false));
        let events: Arc<Mutex<Vec<(Instant, Event)>>> = Arc::default();
        let by_port: HashMap<u16, Arc<RtpEndpoint>> =
            endpoints.into_iter().map(|e| (e.port(), e)).collect();
        let (d, ev) = (down.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            let mut read: Vec<usize> = vec![0; logs.len()];
            while !d.load(Ordering::Relaxed) {
                for (i, log) in logs.iter().enumerate() {
                    let Ok(text) = fs::read_to_string(log) else {
                        continue;
                    };
                    // Whole lines only: SIPp may be mid-write.
                    let Some(end) = text.rfind('\n').map(|e| e + 1) else {
                        continue;
                    };
                    if end <= read[i] {
                        continue;
                    }
                    for line in text[read[i]..end].lines() {
                        let Some(e) = Event::parse(line) else {
                            continue;
                        };
                        if let Some(ep) = by_port.get(&e.own_port()) {
                            match &e {
                                Event::Far {
                                    ip,
                                    port,
                                    direction,
                                    ..
                                } => {
                                    if sends_toward(*ip, direction) {
                                        ep.send_to(SocketAddr::new(*ip, *port));
                                    } else {
                                        ep.pause();
                                    }
                                }
                                Event::Bye { .. } => ep.stop(),
                            }
                        }
                        lock(&ev).push((Instant::now(), e));
                    }
                    read[i] = end;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Conductor {
            down,
            thread: Some(thread),
            events,
        }
    }

    pub fn events(&self) -> Vec<(Instant, Event)> {
        lock(&self.events).clone()
    }

    /// Waits until `pred` holds for the events seen so far, at most `limit`.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&[(Instant, Event)]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if pred(&lock(&self.events)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Conductor {
    fn drop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A SIPp `-inf` file giving each call its own RTP port ([field0]).
pub fn inf_file(dir: &Path, name: &str, ports: &[u16]) -> PathBuf {
    let p = dir.join(name);
    let body: String = ports.iter().map(|p| format!("{p}\n")).collect();
    fs::write(&p, format!("SEQUENTIAL\n{body}")).expect("write -inf file");
    p
}

// ---------------------------------------------------------------------------
// WAV and Goertzel
// ---------------------------------------------------------------------------

/// A PCM WAV file as read back, one sample vector per channel.
#[derive(Clone, Debug)]
pub struct Wav {
    pub channels: u16,
    pub rate: u32,
    pub bits: u16,
    pub samples: Vec<Vec<i16>>,
    /// RIFF and data sizes agree with the bytes there: the file says it is
    /// finished and is not lying about it.
    pub complete: bool,
    /// The header's sizes are filled in (not the 0 of an unfinished file).
    pub claims_complete: bool,
}

impl Wav {
    pub fn seconds(&self) -> f64 {
        self.samples.first().map_or(0.0, |c| c.len() as f64) / f64::from(self.rate)
    }

    pub fn channel(&self, i: usize) -> &[i16] {
        &self.samples[i]
    }

    /// The header claims sizes the file does not hold: a corrupt file
    /// passing for a finished one.
    pub fn lies(&self) -> bool {
        self.claims_complete && !self.complete
    }
}

fn le16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Parses a 16-bit PCM RIFF/WAVE file (any chunk order). A data chunk
/// whose size field is 0 or larger than the file is read to the file's
/// end and the file reported not complete.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, String> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("not RIFF/WAVE".into());
    }
    let riff = le32(bytes, 4).ok_or("short")? as usize;
    let mut riff_ok = riff + 8 == bytes.len();
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut i = 12;
    while let (Some(id), Some(size)) = (bytes.get(i..i + 4), le32(bytes, i + 4)) {
        let size = size as usize;
        let body = i + 8;
        if id == b"fmt " {
            fmt = Some((
                le16(bytes, body).ok_or("fmt")?,
                le16(bytes, body + 2).ok_or("fmt")?,
                le32(bytes, body + 4).ok_or("fmt")?,
                le16(bytes, body + 14).ok_or("fmt")?,
            ));
        } else if id == b"data" {
            let (format, channels, rate, bits) = fmt.ok_or("data before fmt")?;
            if format != 1 || bits != 16 || channels == 0 {
                return Err(format!(
                    "format {format}, {bits} bits, {channels} channels: not 16-bit PCM"
                ));
            }
            let claims_complete = riff != 0 && size != 0;
            let avail = bytes.len() - body;
            let data_ok = size == avail && size > 0;
            riff_ok &= data_ok;
            let take = if data_ok { size } else { avail };
            let frame = 2 * usize::from(channels);
            let mut samples = vec![Vec::with_capacity(take / frame); usize::from(channels)];
            for f in bytes[body..body + take / frame * frame].chunks_exact(frame) {
                for (c, s) in f.chunks_exact(2).enumerate() {
                    samples[c].push(i16::from_le_bytes([s[0], s[1]]));
                }
            }
            return Ok(Wav {
                channels,
                rate,
                bits,
                samples,
                complete: riff_ok,
                claims_complete,
            });
        }
        i = body + size + (size & 1);
    }
    Err("no data chunk".into())
}

pub fn read_wav_file(path: &Path) -> Result<Wav, String> {
    let b = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    read_wav(&b).map_err(|e| format!("{}: {e}", path.display()))
}

/// Goertzel power of `freq` in `x` (8 kHz).
pub fn goertzel(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency in `x` from 100 to 3900 Hz, to 1 Hz: a 20 Hz
/// scan, then 1 Hz around the best. None for silence.
pub fn dominant(x: &[i16]) -> Option<f64> {
    if x.iter().all(|&s| s.unsigned_abs() < 64) {
        return None;
    }
    let best = |lo: u32, hi: u32, step: u32| {
        (lo..=hi)
            .step_by(step as usize)
            .map(f64::from)
            .max_by(|a, b| goertzel(x, *a).total_cmp(&goertzel(x, *b)))
    };
    let coarse = best(100, 3900, 20)? as u32;
    best(coarse.saturating_sub(20).max(100), coarse + 20, 1)
}

/// 2.5 ms windows (20 samples: more than one period of any tone used here).
const WINDOW: usize = 20;

/// Which windows of `x` hold sound: RMS above a quarter of the tone's
/// (a `amplitude` sine has RMS amplitude/√2).
fn audible_windows(x: &[i16], amplitude: f64) -> Vec<bool> {
    let threshold = amplitude / std::f64::consts::SQRT_2 / 4.0;
    x.chunks(WINDOW)
        .map(|w| {
            let e: f64 = w.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (e / w.len() as f64).sqrt() > threshold
        })
        .collect()
}

/// How long `x` carries sound of about `amplitude`.
pub fn audible_seconds(x: &[i16], amplitude: f64) -> f64 {
    let n = audible_windows(x, amplitude).iter().filter(|a| **a).count();
    (n * WINDOW) as f64 / f64::from(RATE)
}

/// First and last audible moment of `x` (seconds from its start).
pub fn audible_span(x: &[i16], amplitude: f64) -> Option<(f64, f64)> {
    let w = audible_windows(x, amplitude);
    let first = w.iter().position(|a| *a)?;
    let last = w.iter().rposition(|a| *a)?;
    let t = |i: usize| (i * WINDOW) as f64 / f64::from(RATE);
    Some((t(first), t(last + 1)))
}

/// The longest run of silence (no window audible) inside the audible
/// span of `x`, in seconds.
pub fn longest_gap(x: &[i16], amplitude: f64) -> f64 {
    let w = audible_windows(x, amplitude);
    let (Some(a), Some(b)) = (w.iter().position(|v| *v), w.iter().rposition(|v| *v)) else {
        return 0.0;
    };
    let mut best = 0;
    let mut run = 0;
    for v in &w[a..=b] {
        if *v {
            run = 0;
        } else {
            run += 1;
            best = best.max(run);
        }
    }
    (best * WINDOW) as f64 / f64::from(RATE)
}

/// Per channel: the dominant frequency and how long it is audible.
#[derive(Clone, Debug)]
pub struct ChannelReport {
    pub dominant_hz: Option<f64>,
    pub audible_s: f64,
    pub span_s: Option<(f64, f64)>,
    pub longest_gap_s: f64,
}

pub fn report(x: &[i16], amplitude: f64) -> ChannelReport {
    ChannelReport {
        dominant_hz: dominant(x),
        audible_s: audible_seconds(x, amplitude),
        span_s: audible_span(x, amplitude),
        longest_gap_s: longest_gap(x, amplitude),
    }
}

/// Every `*.wav` under `dir`, at any depth, sorted.
pub fn wav_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "wav") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// SDP
// ---------------------------------------------------------------------------

/// The audio stream of an SDP body, as a test needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpAudio {
    /// The media-level `c=` if present, else the session's.
    pub ip: IpAddr,
    pub port: u16,
    pub payload_types: Vec<u8>,
    /// `sendrecv` unless an `a=` line says otherwise.
    pub direction: String,
    pub rtcp: Option<u16>,
}

impl SdpAudio {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// The body of a SIP message text (after the first empty line).
pub fn body_of(message: &str) -> &str {
    let m = message;
    m.find("\r\n\r\n")
        .map(|i| &m[i + 4..])
        .or_else(|| m.find("\n\n").map(|i| &m[i + 2..]))
        .unwrap_or("")
}

/// `c=` and the first `m=audio` of an SDP body (or of a whole SIP message).
pub fn sdp_audio(text: &str) -> Option<SdpAudio> {
    let body = if text.starts_with("v=") {
        text
    } else {
        body_of(text)
    };
    let mut session_ip: Option<IpAddr> = None;
    let mut media: Option<SdpAudio> = None;
    let mut in_audio = false;
    for line in body.lines().map(str::trim_end) {
        if let Some(c) = line.strip_prefix("c=") {
            let ip: Option<IpAddr> = c.split_whitespace().nth(2).and_then(|a| a.parse().ok());
            if media.is_none() {
                session_ip = ip;
            } else if let (Some(m), true, Some(ip)) = (media.as_mut(), in_audio, ip) {
                m.ip = ip;
            }
        } else if let Some(m) = line.strip_prefix("m=") {
            if media.is_some() {
                in_audio = false;
                continue;
            }
            let mut w = m.split_whitespace();
            if w.next() != Some("audio") {
                continue;
            }
            let port = w.next()?.parse().ok()?;
            let _proto = w.next();
            media = Some(SdpAudio {
                ip: session_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port,
                payload_types: w.filter_map(|p| p.parse().ok()).collect(),
                direction: "sendrecv".into(),
                rtcp: None,
            });
            in_audio = true;
        } else if let (Some(a), Some(m)) = (line.strip_prefix("a="), media.as_mut()) {
            if !in_audio {
                continue;
            }
            if matches!(a, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                m.direction = a.to_string();
            } else if let Some(r) = a.strip_prefix("rtcp:") {
                m.rtcp = r.split_whitespace().next().and_then(|p| p.parse().ok());
            }
        }
    }
    media
}
