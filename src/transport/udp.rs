//! UDP listeners. Sockets get a large receive buffer: a burst of INVITEs
//! must queue in the kernel rather than be dropped while the core works.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::media::sys::{RecvBatch, SendBatch};

/// A SIP UDP socket as the SIP loop polls it: registered for reading
/// only. Its datagrams leave through `sendmmsg` without waiting (a full
/// send buffer is counted, see [`UdpStats`]), so it never waits to write;
/// registered for writing too, as `tokio::net::UdpSocket` is, every send
/// on loopback raised an EPOLLOUT edge that woke the loop's `epoll_wait`
/// once more per pass for nothing (perf trace at 200 cps: 2.2
/// `epoll_wait` per `recvmmsg`).
pub type SipSocket = AsyncFd<std::net::UdpSocket>;

/// Binds a UDP socket with `SO_RCVBUF` set to `recv_buffer` bytes (0: the
/// system default).
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<SipSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if recv_buffer > 0 {
        // The kernel caps this at net.core.rmem_max; a smaller buffer is
        // not an error, so it is only reported.
        if let Err(e) = socket.set_recv_buffer_size(recv_buffer) {
            tracing::warn!(%addr, error = %e, "could not set the UDP receive buffer");
        }
    }
    socket.set_send_buffer_size(recv_buffer.max(1 << 20)).ok();
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket = std::net::UdpSocket::from(socket);
    // SAFETY: the std socket owns its descriptor, which stays open for as
    // long as the `AsyncFd` holds the socket; nothing takes it out or
    // swaps it (no `get_mut` or `into_inner` here), so `as_raw_fd` always
    // answers the descriptor registered.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Datagrams taken per `recvmmsg`: a burst costs one system call per 32
/// instead of one each, and one pass of the SIP loop (its timers, its one
/// flush of what the messages produced) still follows within about 32
/// messages' work, so no reply waits behind a long batch.
pub const RECV_BATCH: usize = 32;
/// A UDP datagram's largest payload fits one slot: nothing is cut, and the
/// core judges `sip.max_message_bytes` as before.
const SLOT: usize = 65536;

/// Counters of the SIP UDP sockets (`/metrics`): datagrams and the system
/// calls that moved them (the batching at work), and the sends the kernel
/// refused, by reason. Read live.
#[derive(Debug, Default)]
pub struct UdpStats {
    pub received: AtomicU64,
    pub recv_calls: AtomicU64,
    pub recv_errors: AtomicU64,
    pub sent: AtomicU64,
    pub send_calls: AtomicU64,
    /// `EAGAIN`: the socket's send buffer is full.
    pub send_full: AtomicU64,
    /// `EMSGSIZE`: larger than a datagram can be.
    pub send_too_large: AtomicU64,
    /// Anything else (an address the kernel cannot send to).
    pub send_other: AtomicU64,
}

impl UdpStats {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# TYPE siptrack_sip_udp_datagrams_total counter\n\
             siptrack_sip_udp_datagrams_total{{dir=\"in\"}} {}\n\
             siptrack_sip_udp_datagrams_total{{dir=\"out\"}} {}\n\
             # TYPE siptrack_sip_udp_syscalls_total counter\n\
             siptrack_sip_udp_syscalls_total{{call=\"recvmmsg\"}} {}\n\
             siptrack_sip_udp_syscalls_total{{call=\"sendmmsg\"}} {}\n\
             # TYPE siptrack_sip_udp_recv_errors_total counter\n\
             siptrack_sip_udp_recv_errors_total {}\n\
             # TYPE siptrack_sip_udp_send_errors_total counter\n\
             siptrack_sip_udp_send_errors_total{{reason=\"buffer_full\"}} {}\n\
             siptrack_sip_udp_send_errors_total{{reason=\"too_large\"}} {}\n\
             siptrack_sip_udp_send_errors_total{{reason=\"other\"}} {}\n",
            n(&self.received),
            n(&self.sent),
            n(&self.recv_calls),
            n(&self.send_calls),
            n(&self.recv_errors),
            n(&self.send_full),
            n(&self.send_too_large),
            n(&self.send_other),
        )
    }

    fn count_send_error(&self, e: &io::Error) {
        let c = match e.raw_os_error() {
            Some(libc::EAGAIN) => &self.send_full,
            Some(libc::EMSGSIZE) => &self.send_too_large,
            _ => &self.send_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Bound {
    ipv4: bool,
    socket: Arc<SipSocket>,
    /// Datagrams of this pass waiting for the socket, in the core's order.
    queue: Vec<(Bytes, SocketAddr)>,
}

/// The SIP loop's UDP sockets, batched: `recvmmsg` takes what a socket
/// has queued (up to [`RECV_BATCH`]), and the datagrams one pass of the
/// loop produced leave per socket in `sendmmsg` calls, in the core's order
/// (so in order per destination). The kernel's refusals are counted and
/// logged at most once a second; they never stop or block the loop.
pub struct UdpIo {
    sockets: Vec<Bound>,
    recv: RecvBatch,
    /// Which socket the last batch came from: the next poll starts after
    /// it, so a busy socket does not starve the others.
    last: usize,
    send: SendBatch,
    stats: Arc<UdpStats>,
    log: RateLimited,
}

impl UdpIo {
    pub fn new(sockets: Vec<(SocketAddr, Arc<SipSocket>)>, stats: Arc<UdpStats>) -> UdpIo {
        UdpIo {
            sockets: sockets
                .into_iter()
                .map(|(local, socket)| Bound {
                    ipv4: local.is_ipv4(),
                    socket,
                    queue: Vec::new(),
                })
                .collect(),
            recv: RecvBatch::with_size(RECV_BATCH, SLOT),
            last: 0,
            send: SendBatch::default(),
            stats,
            log: RateLimited::default(),
        }
    }

    /// Waits until a socket has datagrams and takes them (one
    /// `recvmmsg`): how many, to read with [`UdpIo::received`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let n = self.sockets.len();
        for k in 1..=n {
            let i = (self.last + k) % n;
            let socket = &self.sockets[i].socket;
            let (recv, stats) = (&mut self.recv, &self.stats);
            loop {
                let mut ready = match socket.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(ready)) => ready,
                };
                stats.recv_calls.fetch_add(1, Ordering::Relaxed);
                let got = match recv.try_recv(socket.as_raw_fd()) {
                    Ok(got) => got,
                    // Readiness cleared: polling again registers the
                    // waker (or finds a datagram that came meanwhile).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        continue;
                    }
                    Err(e) => {
                        stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                        self.last = i;
                        return Poll::Ready(Err(e));
                    }
                };
                if got < recv.capacity() {
                    // Fewer than asked: the queue ran dry. Clearing the
                    // readiness now spares the `recvmmsg` that would only
                    // find it empty; a datagram arriving since raises a
                    // new epoll edge, which tokio does not let this clear.
                    ready.clear_ready();
                }
                if got > 0 {
                    self.last = i;
                    stats.received.fetch_add(got as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(got));
                }
            }
        }
        Poll::Pending
    }

    /// Datagram `i` of the last receive and its source.
    pub fn received(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        self.recv.get(i)
    }

    /// Queues a datagram for [`UdpIo::flush`], on the socket of its
    /// address family (else the first).
    pub fn queue(&mut self, to: SocketAddr, data: Bytes) {
        let i = self
            .sockets
            .iter()
            .position(|b| b.ipv4 == to.is_ipv4())
            .unwrap_or(0);
        if let Some(b) = self.sockets.get_mut(i) {
            b.queue.push((data, to));
        }
    }

    /// Sends what was queued, per socket, in order.
    pub fn flush(&mut self) {
        for b in &mut self.sockets {
            if b.queue.is_empty() {
                continue;
            }
            let (stats, log) = (&self.stats, &mut self.log);
            let queue = &b.queue;
            let sent = self
                .send
                .send(b.socket.as_raw_fd(), queue, |i, e: io::Error| {
                    stats.count_send_error(&e);
                    if let Some(suppressed) = log.allow(Instant::now()) {
                        let to = queue.get(i).map(|(_, to)| *to);
                        tracing::warn!(
                            to = ?to,
                            error = %e,
                            refused_since_last_report = suppressed,
                            "UDP send refused by the kernel (counted in siptrack_sip_udp_send_errors_total)"
                        );
                    }
                });
            stats
                .sent
                .fetch_add(sent.datagrams as u64, Ordering::Relaxed);
            stats
                .send_calls
                .fetch_add(sent.syscalls as u64, Ordering::Relaxed);
            b.queue.clear();
        }
    }
}

/// At most one log line a second for a recurring event; the events in
/// between are counted and named in the next line.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// Some(events suppressed since the last line) when this one may be
    /// logged.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_line_a_second_naming_what_was_left_out() {
        let t0 = Instant::now();
        let mut r = RateLimited::default();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(r.allow(at(0)), Some(0));
        assert_eq!(r.allow(at(1)), None);
        assert_eq!(r.allow(at(999)), None);
        assert_eq!(r.allow(at(1000)), Some(2));
        assert_eq!(r.allow(at(5000)), Some(0));
    }

    /// The events the socket `fd` is registered for in this process's
    /// epoll instances (`/proc/self/fdinfo` of each), when it is.
    fn epoll_events_of(fd: std::os::fd::RawFd) -> Option<u32> {
        let fd = fd.to_string();
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if link.to_string_lossy() != "anon_inode:[eventpoll]" {
                continue;
            }
            let info = entry.file_name();
            let path = format!("/proc/self/fdinfo/{}", info.to_string_lossy());
            let Ok(info) = std::fs::read_to_string(path) else {
                continue;
            };
            // "tfd:        9 events:  8000201d data: ..."
            for line in info.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["tfd:", tfd, "events:", events, ..] = words[..] {
                    if tfd == fd {
                        return u32::from_str_radix(events, 16).ok();
                    }
                }
            }
        }
        None
    }

    /// The SIP socket is registered for reading only: registered for
    /// writing too (as `tokio::net::UdpSocket` registers), each send on
    /// loopback woke the loop's `epoll_wait` once more for nothing. It
    /// still receives and sends.
    #[test]
    fn sip_sockets_are_polled_for_reading_only_and_still_carry_both_ways() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let socket = bind("127.0.0.1:0".parse().expect("addr"), 0).expect("bind");
            let events = epoll_events_of(socket.as_raw_fd()).expect("in an epoll set");
            assert_ne!(events & libc::EPOLLIN as u32, 0, "{events:x}");
            assert_eq!(events & libc::EPOLLOUT as u32, 0, "{events:x}");

            let addr = socket.get_ref().local_addr().expect("local addr");
            let stats = Arc::new(UdpStats::default());
            let mut io = UdpIo::new(vec![(addr, Arc::new(socket))], stats.clone());
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
            peer.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            peer.send_to(b"OPTIONS", addr).expect("send");
            let got = tokio::time::timeout(
                Duration::from_secs(5),
                std::future::poll_fn(|cx| io.poll_recv(cx)),
            )
            .await
            .expect("a datagram within 5 s")
            .expect("received");
            assert_eq!(got, 1);
            assert_eq!(io.received(0).map(|(d, _)| d), Some(&b"OPTIONS"[..]));

            let peer_addr = peer.local_addr().expect("peer addr");
            io.queue(peer_addr, Bytes::from_static(b"SIP/2.0 200 OK"));
            io.flush();
            let mut buf = [0u8; 64];
            let (n, from) = peer.recv_from(&mut buf).expect("the answer");
            assert_eq!((&buf[..n], from), (&b"SIP/2.0 200 OK"[..], addr));
            assert_eq!(stats.sent.load(Ordering::Relaxed), 1);
        });
    }
}
