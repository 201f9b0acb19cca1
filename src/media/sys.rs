//! The few Linux system calls std does not offer: epoll (one wait over
//! every media socket), an eventfd to wake the relay thread for commands,
//! and recvmmsg / sendmmsg (several datagrams of one socket in one call),
//! which both the relay thread and the SIP loop (`server.rs`) batch with.
//! Every `unsafe` block of the media and SIP socket code is here, each
//! with its reason.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// An epoll instance; each registered descriptor carries a `u64` token.
pub struct Poller {
    fd: RawFd,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: no pointers; the returned descriptor is owned by Poller.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller { fd })
    }

    /// Level-triggered readability of `fd`, reported with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        let r = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; a descriptor not registered gives ENOENT, ignored.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms` and fills `tokens` with the ready ones.
    pub fn wait(&self, tokens: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        const MAX: usize = 256;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        // SAFETY: `evs` holds MAX entries, the kernel writes at most MAX.
        let n = unsafe { libc::epoll_wait(self.fd, evs.as_mut_ptr(), MAX as i32, timeout_ms) };
        tokens.clear();
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        tokens.extend(evs[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// An eventfd: `wake` from any thread makes the poller return.
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: no pointers; the descriptor is owned by Waker.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`; a full counter (EAGAIN) still wakes.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into `v`.
        unsafe { libc::read(self.fd, (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Largest datagram kept; RTP over UDP stays far below (a longer one is
/// cut by the receive, and the relay drops it: [`RecvBatch::is_cut`]).
pub const DATAGRAM: usize = 2048;

/// Buffers for one `recvmmsg` of up to `n` datagrams, set up once: the
/// headers point into the buffers' heap storage, which never moves (the
/// vectors are never resized), so a receive allocates nothing.
pub struct RecvBatch {
    /// `n` slots of `size` bytes, one allocation. Zeroed by the allocator
    /// (fresh pages): a slot's pages become resident only once a datagram
    /// that long lands in it, so 64 KiB slots for SIP cost little memory.
    bufs: Vec<u8>,
    size: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    got: usize,
}

impl RecvBatch {
    /// `n` datagrams of up to [`DATAGRAM`] bytes (media).
    pub fn new(n: usize) -> RecvBatch {
        RecvBatch::with_size(n, DATAGRAM)
    }

    /// `n` datagrams of up to `size` bytes each; a longer one is cut to
    /// `size`.
    pub fn with_size(n: usize, size: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0; n * size],
            size,
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            names: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            got: 0,
        };
        for slot in b.bufs.chunks_exact_mut(size) {
            b.iovs.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: size,
            });
        }
        for i in 0..n {
            // SAFETY: msghdr is plain old data; fields set below.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            b.hdrs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
        b
    }

    /// How many datagrams one receive takes at most.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives what is queued on `fd` (non-blocking), up to the batch
    /// size; 0 when nothing was.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        match self.try_recv(fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        }
    }

    /// As [`RecvBatch::recv`], but an empty queue is `WouldBlock`: what
    /// tokio's `try_io` needs to see to clear the socket's readiness.
    pub fn try_recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.got = 0;
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_len = 0;
        }
        // SAFETY: every pointer in `hdrs` points into the heap storage of
        // `bufs`, `names` and `iovs`, which lives as long as `self` and is
        // never reallocated; the kernel writes at most `hdrs.len()`
        // headers, each within the lengths they give.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.got = r as usize;
        Ok(self.got)
    }

    /// Datagram `i` of the last `recv` and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.got {
            return None;
        }
        let h = self.hdrs.get(i)?;
        let src = to_socket_addr(self.names.get(i)?, h.msg_hdr.msg_namelen)?;
        let len = (h.msg_len as usize).min(self.size);
        let start = i * self.size;
        Some((self.bufs.get(start..start + len)?, src))
    }
}

impl RecvBatch {
    /// Whether datagram `i` of the last `recv` was longer than a slot (the
    /// kernel's `MSG_TRUNC`): what `get` gives is only its start.
    pub fn is_cut(&self, i: usize) -> bool {
        i < self.got
            && self
                .hdrs
                .get(i)
                .is_some_and(|h| h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }
}

/// Headers for `sendmmsg`, kept between calls so a send allocates nothing
/// once the batch sizes have been seen.
#[derive(Default)]
pub struct SendBatch {
    names: Vec<socket2::SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

/// What one [`SendBatch::send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    pub syscalls: usize,
}

impl SendBatch {
    /// Sends `msgs` on `fd` in their order, as many per `sendmmsg` as the
    /// kernel takes. A datagram the kernel refuses (`EAGAIN` with the send
    /// buffer full, `EMSGSIZE`, an address it cannot reach) is handed to
    /// `failed` with its index and skipped; the ones after it are still
    /// sent, as one `sendto` each would have done. Never blocks.
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        fd: RawFd,
        msgs: &[(B, SocketAddr)],
        mut failed: impl FnMut(usize, io::Error),
    ) -> Sent {
        self.names.clear();
        self.iovs.clear();
        self.hdrs.clear();
        self.names
            .extend(msgs.iter().map(|(_, to)| socket2::SockAddr::from(*to)));
        for (data, _) in msgs {
            let data = data.as_ref();
            self.iovs.push(libc::iovec {
                // The kernel only reads through it (a send).
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        // Pointers are taken after both vectors are complete: neither
        // moves again until the next call.
        for (name, iov) in self.names.iter().zip(self.iovs.iter_mut()) {
            // SAFETY: msghdr is plain old data; fields set below.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = name.as_ptr() as *mut libc::c_void;
            h.msg_namelen = name.len();
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
        let mut done = Sent::default();
        let mut at = 0;
        while at < self.hdrs.len() {
            let rest = &mut self.hdrs[at..];
            // SAFETY: every header points into `names` and `iovs` (alive
            // and unmoved until this method returns) and through them into
            // `msgs`, borrowed for the call; the kernel reads at most
            // `rest.len()` headers and writes only their `msg_len`.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    rest.as_mut_ptr(),
                    // The kernel takes at most UIO_MAXIOV (1024) per call
                    // and says how many it took.
                    rest.len().min(1024) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            done.syscalls += 1;
            if r > 0 {
                at += r as usize;
                done.datagrams += r as usize;
                continue;
            }
            let e = if r < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::new(io::ErrorKind::WriteZero, "sendmmsg sent nothing")
            };
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The kernel stops at the first datagram it refuses and
            // reports that one: skip it, go on with the rest.
            failed(at, e);
            at += 1;
        }
        done
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn recvmmsg_takes_what_is_queued_with_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut batch = RecvBatch::new(4);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("empty"), 0);
        for i in 0..6u8 {
            tx.send_to(&[i; 10], rx.local_addr().expect("addr"))
                .expect("send");
        }
        let poller = Poller::new().expect("epoll");
        poller.add(rx.as_raw_fd(), 42).expect("add");
        let mut ready = Vec::new();
        poller.wait(&mut ready, 1000).expect("wait");
        assert_eq!(ready, [42]);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("batch"), 4);
        let (data, src) = batch.get(3).expect("fourth");
        assert_eq!(
            (data, src),
            (&[3u8; 10][..], tx.local_addr().expect("addr"))
        );
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("rest"), 2);
        let waker = Waker::new().expect("eventfd");
        poller.add(waker.as_raw_fd(), 7).expect("add");
        waker.wake();
        poller.wait(&mut ready, 1000).expect("wait");
        assert_eq!(ready, [7]);
        waker.clear();
        poller.wait(&mut ready, 0).expect("wait");
        assert!(ready.is_empty());
    }

    #[test]
    fn sendmmsg_keeps_order_and_skips_what_the_kernel_refuses() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let to = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port_zero: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let v6: SocketAddr = "[::1]:5060".parse().expect("addr");
        let mut msgs: Vec<(Vec<u8>, SocketAddr)> = (0..40u8).map(|i| (vec![i; 100], to)).collect();
        // Port 0 (EINVAL), an IPv6 address on an IPv4 socket
        // (EAFNOSUPPORT), a datagram over 64 KiB (EMSGSIZE), the last one
        // refused too: each reported, the others still sent.
        msgs[3].1 = port_zero;
        msgs[17].1 = v6;
        msgs[18].0 = vec![18; 70_000];
        msgs[39].1 = port_zero;
        let mut batch = SendBatch::default();
        let mut failed = Vec::new();
        let sent = batch.send(tx.as_raw_fd(), &msgs, |i, e| {
            failed.push((i, e.raw_os_error()))
        });
        assert_eq!(
            failed,
            [
                (3, Some(libc::EINVAL)),
                (17, Some(libc::EAFNOSUPPORT)),
                (18, Some(libc::EMSGSIZE)),
                (39, Some(libc::EINVAL))
            ]
        );
        assert_eq!(sent.datagrams, 36);
        // Four refusals each end a call; the runs between them are one
        // call each (0-2, 4-16, 19-38).
        assert_eq!(sent.syscalls, 7);
        let mut buf = [0u8; 200];
        for i in (0..40u8).filter(|i| ![3, 17, 18, 39].contains(i)) {
            let (n, from) = rx.recv_from(&mut buf).expect("datagram");
            assert_eq!(
                (&buf[..n], from),
                (&[i; 100][..], tx.local_addr().expect("addr"))
            );
        }
        // The headers are reused: a second, shorter batch.
        let sent = batch.send(tx.as_raw_fd(), &msgs[..2], |_, e| panic!("{e}"));
        assert_eq!(
            sent,
            Sent {
                datagrams: 2,
                syscalls: 1
            }
        );
    }

    /// A datagram longer than its slot is known to be cut (trial,
    /// 2026-12-02: RTP datagrams over 2 KiB were relayed cut to 2048
    /// bytes, uncounted).
    #[test]
    fn a_datagram_longer_than_its_slot_is_known_to_be_cut() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut batch = RecvBatch::new(4);
        for n in [100, DATAGRAM, DATAGRAM + 1, 9000] {
            tx.send_to(&vec![7u8; n], to).expect("send");
        }
        let mut cut = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while cut.len() < 4 && std::time::Instant::now() < deadline {
            let n = batch.recv(rx.as_raw_fd()).expect("recv");
            cut.extend((0..n).map(|i| batch.is_cut(i)));
        }
        assert_eq!(cut, [false, false, true, true]);
        assert!(!batch.is_cut(4), "past the batch");
    }

    #[test]
    fn a_receive_batch_of_large_slots_keeps_each_datagram_whole() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut batch = RecvBatch::with_size(8, 65536);
        let err = batch.try_recv(rx.as_raw_fd()).expect_err("nothing queued");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let sizes = [10usize, 5000, 65000, 1];
        for (i, &n) in sizes.iter().enumerate() {
            tx.send_to(&vec![i as u8; n], to).expect("send");
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < sizes.len() && std::time::Instant::now() < deadline {
            let n = batch.recv(rx.as_raw_fd()).expect("recv");
            got.extend((0..n).filter_map(|i| batch.get(i)).map(|(d, _)| d.to_vec()));
        }
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        assert_eq!(got, want);
        assert!(batch.get(sizes.len()).is_none());
    }
}
