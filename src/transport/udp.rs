//! UDP listeners. Sockets get a large receive buffer: a burst of INVITEs
//! must queue in the kernel rather than be dropped while the core works.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use tokio::net::UdpSocket;

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
