//! A test-side RTP endpoint: sends a G.711 µ-law tone as 20 ms RTP packets
//! to an address (the one siptrack put in the SDP it forwarded) and keeps
//! what comes back, with its source, for checks. Plus the Goertzel filter
//! the checks use and SDP reading for the address.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use siptrack::media::g711;

/// Datagrams received: (source, bytes).
type Inbox = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// One RTP endpoint bound on 127.0.0.1.
pub struct RtpEndpoint {
    socket: Arc<UdpSocket>,
    received: Inbox,
    stop: Arc<std::sync::atomic::AtomicBool>,
    receiver: Option<JoinHandle<()>>,
}

impl RtpEndpoint {
    pub fn bind(port: u16) -> RtpEndpoint {
        Self::bind_on("127.0.0.1", port)
    }

    /// As [`RtpEndpoint::bind`], on another loopback address (a stranger).
    pub fn bind_on(ip: &str, port: u16) -> RtpEndpoint {
        let socket = UdpSocket::bind((ip, port)).expect("bind the RTP endpoint");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let socket = Arc::new(socket);
        let received: Inbox = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, r, st) = (socket.clone(), received.clone(), stop.clone());
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if let Ok(mut v) = r.lock() {
                        v.push((from, buf[..n].to_vec()));
                    }
                }
            }
        });
        RtpEndpoint {
            socket,
            received,
            stop,
            receiver: Some(receiver),
        }
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends `packets` 20 ms µ-law packets of a `freq` Hz tone to `to`,
    /// paced in real time, from a thread; returns when it finished (the
    /// handle) with the instants of the first and last send.
    pub fn send_tone(
        &self,
        to: SocketAddr,
        freq: f64,
        packets: u32,
        ssrc: u32,
    ) -> JoinHandle<(Instant, Instant)> {
        let socket = self.socket.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = start;
            for i in 0..packets {
                let due = start + Duration::from_millis(20 * u64::from(i));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut p = vec![0x80, 0];
                p.extend_from_slice(&(i as u16).to_be_bytes());
                p.extend_from_slice(&(i * 160).to_be_bytes());
                p.extend_from_slice(&ssrc.to_be_bytes());
                for k in 0..160 {
                    let t = f64::from(i * 160 + k) / 8000.0;
                    let v = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
                    p.push(g711::encode_ulaw(v));
                }
                let _ = socket.send_to(&p, to);
                last = Instant::now();
            }
            (start, last)
        })
    }

    /// Sends one datagram (e.g. from a stranger's socket in another test).
    pub fn send_raw(&self, to: SocketAddr, data: &[u8]) {
        let _ = self.socket.send_to(data, to);
    }

    /// What arrived so far: (source, datagram).
    pub fn received(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The µ-law payloads that arrived, decoded, in arrival order.
    pub fn received_pcm(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for (_, p) in self.received() {
            if p.len() > 12 && p[1] & 0x7f == 0 {
                let mut s = Vec::new();
                g711::decode_ulaw(&p[12..], &mut s);
                out.extend(s.into_iter().map(f64::from));
            }
        }
        out
    }
}

impl Drop for RtpEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }
}

/// Goertzel power of `freq` Hz in 8 kHz samples.
pub fn goertzel(x: &[f64], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Where an SDP body says its first stream receives (`c=` and `m=` port).
pub fn sdp_media_addr(body: &str) -> Option<SocketAddr> {
    let ip = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim();
    let port = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split(' ')
        .next()?;
    format!("{ip}:{port}").parse().ok()
}

/// The UDP ports process `pid` has bound (from /proc: its socket inodes
/// matched against /proc/net/udp and udp6).
pub fn udp_ports_of(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let s = l.to_string_lossy().into_owned();
                    s.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            if inodes.iter().any(|i| i == inode) {
                if let Some(port) = local
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports.sort_unstable();
    ports
}
