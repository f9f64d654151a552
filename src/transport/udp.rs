//! UDP: one socket per configured address with a large receive buffer, read by several
//! receive loops at once (one per core by default), each a blocking thread that handles its
//! datagram inline. No task is spawned per datagram and no async readiness machinery sits on
//! the path: a loop sleeps in `recvfrom` and answers with `sendto`, as a dedicated UDP worker
//! in other SIP servers does. A read timeout lets each loop notice shutdown.
//!
//! It must not block on anything but its own socket: the handler is synchronous and in-memory.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Handler, Source, Transport};

/// Largest datagram we read (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// How often an idle receive loop checks for shutdown.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Binds a UDP socket with SO_RCVBUF/SO_SNDBUF of `buffer_bytes` (the kernel may clamp).
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// One receive loop on a blocking thread; run several on the same socket. Resolves when
/// `shutdown` is cancelled and the datagram in hand, if any, has been answered.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let worker = tokio::task::spawn_blocking(move || blocking_loop(&socket, &*handler, &shutdown));
    if let Err(e) = worker.await {
        tracing::error!(error = %e, "udp receive loop ended abnormally");
    }
}

fn blocking_loop(socket: &UdpSocket, handler: &dyn Handler, shutdown: &CancellationToken) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "udp socket has no local address");
            return;
        }
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shutdown.is_cancelled() {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        let data = Bytes::copy_from_slice(&buf[..n]);
        let src = Source {
            transport: Transport::Udp,
            peer,
            local,
            flow: None,
            identity: None,
        };
        let reply = handler.on_message(data, &src);
        if let (Some(bytes), Some(to)) = (reply.bytes, reply.to) {
            if let Err(e) = socket.send_to(&bytes, to) {
                tracing::debug!(error = %e, %to, "udp send failed");
            }
        }
    }
}
