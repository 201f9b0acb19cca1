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
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::media::sys::{RecvBatch, SendBatch};

/// Binds a UDP socket with `SO_RCVBUF` set to `recv_buffer` bytes (0: the
/// system default).
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
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
    UdpSocket::from_std(socket.into())
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
    socket: Arc<UdpSocket>,
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
    pub fn new(sockets: Vec<(SocketAddr, Arc<UdpSocket>)>, stats: Arc<UdpStats>) -> UdpIo {
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
            loop {
                match socket.poll_recv_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                let (recv, stats) = (&mut self.recv, &self.stats);
                let fd = socket.as_raw_fd();
                let mut got = 0;
                let r = socket.try_io(Interest::READABLE, || {
                    stats.recv_calls.fetch_add(1, Ordering::Relaxed);
                    got = recv.try_recv(fd)?;
                    if got < recv.capacity() {
                        // Fewer than asked: the queue ran dry. Saying so
                        // clears tokio's readiness now, sparing the
                        // `recvmmsg` that would only find it empty; a
                        // datagram arriving since raises a new epoll edge,
                        // which tokio does not let this clear.
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(())
                });
                if got > 0 {
                    self.last = i;
                    stats.received.fetch_add(got as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(got));
                }
                match r {
                    // Readiness cleared: polling again registers the waker
                    // (or finds a datagram that came meanwhile).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                        self.last = i;
                        return Poll::Ready(Err(e));
                    }
                    Ok(()) => continue,
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
}
