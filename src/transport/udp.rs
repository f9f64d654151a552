//! UDP: one socket per configured address with large buffers, read by several receive
//! threads at once (one per core by default), each handling its datagram inline and sending
//! the reply itself.
//!
//! The receive loops are plain OS threads blocked in `recvfrom`, not tokio tasks: a datagram
//! then costs one `recvfrom` and one `sendto`, with no epoll round trip and no wake-up of
//! another runtime worker (benches/RESULTS.md measured those at about a sixth of the server's
//! CPU per registration). The kernel wakes one blocked reader per datagram. The socket is in
//! blocking mode, so every send made from elsewhere (the proxy, timers on the runtime) passes
//! `MSG_DONTWAIT` and never waits: a full send buffer drops the datagram, as the network
//! could, and the transaction layer retransmits.
//!
//! It must not block on anything but the socket: the handler is synchronous and in-memory;
//! one that must wait for something answers later through a `Responder`, which sends with
//! `MSG_DONTWAIT` from wherever it runs.
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) reads with `recvmsg` and the
//! packet information option (`local.rs`), so each message's `Source::local` is the address it
//! really arrived on, and the reply leaves from that address.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socket2::SockRef;
use tokio_util::sync::CancellationToken;

use super::{Handler, Later, Source, Transport};

/// Largest datagram we read (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// How often a receive thread that sees no traffic checks its stop token.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// A bound UDP listening socket and its local address (looked up once).
#[derive(Debug)]
pub struct Listener {
    socket: UdpSocket,
    local: SocketAddr,
    /// Bound to a wildcard address: read where each datagram arrived (`local.rs`).
    wildcard: bool,
}

impl Listener {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram without waiting; false if the kernel did not take it.
    pub fn send_nowait(&self, bytes: &[u8], to: SocketAddr) -> bool {
        SockRef::from(&self.socket)
            .send_to_with_flags(bytes, &to.into(), libc::MSG_DONTWAIT)
            .is_ok()
    }

    /// Like [`Listener::send_nowait`], from our address `from` when the socket is on a
    /// wildcard address (a reply leaves from the address its request arrived on).
    pub fn send_nowait_from(&self, bytes: &[u8], to: SocketAddr, from: std::net::IpAddr) -> bool {
        if !self.wildcard || from.is_unspecified() {
            return self.send_nowait(bytes, to);
        }
        let from = super::local::Arrival::at(from);
        super::local::send_from(&self.socket, bytes, to, from, true).is_ok()
    }
}

/// Binds a blocking UDP socket with SO_RCVBUF/SO_SNDBUF of `buffer_bytes` (the kernel may
/// clamp).
pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> io::Result<Listener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
    let socket: UdpSocket = socket.into();
    let local = socket.local_addr()?;
    let wildcard = local.ip().is_unspecified();
    if wildcard {
        super::local::report_arrival(&socket, local.is_ipv6())?;
    }
    Ok(Listener {
        socket,
        local,
        wildcard,
    })
}

/// One receive loop, run on its own thread until `halt`; run several on the same socket.
/// It keeps reading during a drain: responses, ACKs and CANCELs for transactions in flight
/// arrive here, and the handler refuses new requests.
pub fn receive_loop(listener: Arc<Listener>, handler: Arc<dyn Handler>, halt: CancellationToken) {
    let local = listener.local;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut control = super::local::control_buffer();
    while !halt.is_cancelled() {
        let received = if listener.wildcard {
            super::local::recv_with_arrival(&listener.socket, &mut buf, &mut control)
        } else {
            listener
                .socket
                .recv_from(&mut buf)
                .map(|(n, p)| (n, p, None))
        };
        let (n, peer, arrival) = match received {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
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
        let src = Source {
            transport: Transport::Udp,
            peer,
            local: arrival.map_or(local, |a| SocketAddr::new(a.ip, local.port())),
            flow: None,
            identity: None,
        };
        let reply = handler.handle(
            Bytes::copy_from_slice(&buf[..n]),
            &src,
            Later::udp(&listener, src.local),
        );
        if let (Some(bytes), Some(to)) = (reply.bytes, reply.to) {
            let sent = match arrival {
                Some(from) => super::local::send_from(&listener.socket, &bytes, to, from, false),
                None => listener.socket.send_to(&bytes, to),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, %to, "udp send failed");
            }
        }
    }
}
