//! UDP: one socket per configured address with a large receive buffer, read by several
//! receive loops at once (one per core by default), each handling its datagram inline.
//! No task is spawned and, in the steady state, nothing is allocated per datagram: each loop
//! reuses one buffer that the parsed message borrows from.
//!
//! It must not block: the handler is synchronous and in-memory.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Handler, Source, Transport};

/// Largest datagram we read (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// Binds a UDP socket with SO_RCVBUF/SO_SNDBUF of `buffer_bytes` (the kernel may clamp).
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// One receive loop; run several on the same socket.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "udp socket has no local address");
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM);
    loop {
        buf.clear();
        buf.reserve(MAX_DATAGRAM);
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_buf_from(&mut buf) => r,
        };
        let (n, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        let data = buf.split().freeze();
        let src = Source {
            transport: Transport::Udp,
            peer,
            local,
            flow: None,
            identity: None,
        };
        let reply = handler.on_message(data, &src);
        if let (Some(bytes), Some(to)) = (reply.bytes, reply.to) {
            if let Err(e) = socket.send_to(&bytes, to).await {
                tracing::debug!(error = %e, %to, "udp send failed");
            }
        }
    }
}
