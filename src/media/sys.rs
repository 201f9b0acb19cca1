//! The few Linux system calls the relay thread needs that std does not
//! offer: epoll (one wait over every media socket), an eventfd to wake it
//! for commands, and recvmmsg (several datagrams of one socket in one call).
//! Every `unsafe` block of the media code is here, each with its reason.

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

/// Largest datagram kept; RTP over UDP stays far below (a longer one is cut).
pub const DATAGRAM: usize = 2048;

/// Buffers for one `recvmmsg` of up to `n` datagrams, set up once: the
/// headers point into the buffers' heap storage, which never moves (the
/// vectors are never resized), so a receive allocates nothing.
pub struct RecvBatch {
    bufs: Vec<[u8; DATAGRAM]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    got: usize,
}

impl RecvBatch {
    pub fn new(n: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![[0; DATAGRAM]; n],
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            names: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            got: 0,
        };
        for buf in &mut b.bufs {
            b.iovs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: DATAGRAM,
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

    /// Receives what is queued on `fd` (non-blocking), up to the batch
    /// size; 0 when nothing was.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
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
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
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
        let len = (h.msg_len as usize).min(DATAGRAM);
        Some((&self.bufs.get(i)?[..len], src))
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
}
