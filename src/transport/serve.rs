//! Serving the SIP transports: binding every configured socket, then the receive threads of
//! each UDP socket and the accept loop of each TCP and TLS listener, every one tracked.
//!
//! Two tokens stop them, in order: `shutdown` (drain begins) stops the accept loops and
//! abandons TLS handshakes; `halt` (drain ended) stops the UDP receive threads and closes
//! the open stream connections, which until then carry responses, ACKs and CANCELs for the
//! transactions in flight.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::tcp::{self, StreamContext};
use super::tls::{self, HandshakeLimits, TlsState};
use super::udp;
use crate::config::{ClientAuth, SipConfig, TlsConfig};

/// A socket that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {what} {addr}: {source}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Every SIP socket, bound and not yet served.
pub struct Bound {
    pub udp: Vec<Arc<udp::Listener>>,
    tcp: Vec<TcpListener>,
    tls: Vec<(TcpListener, ClientAuth)>,
}

/// The addresses a [`Bound`] set listens on (with the ports the kernel chose for port 0).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl Addresses {
    /// Every local address, UDP first (Route headers naming one of them are ours).
    pub fn all(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .chain(&self.tcp)
            .chain(&self.tls)
            .copied()
            .collect()
    }
}

/// What the TLS listeners serve with.
pub struct TlsServing {
    pub state: TlsState,
    pub handshakes: HandshakeLimits,
    /// Open connections per TLS listener (handshaking or established).
    pub max_connections: usize,
}

impl Bound {
    /// Binds the UDP sockets (with `SO_RCVBUF`/`SO_SNDBUF` of `sip.udp_recv_buffer_bytes`),
    /// the TCP listeners and the TLS listeners.
    pub async fn bind(sip: &SipConfig, tls: Option<&TlsConfig>) -> Result<Bound, BindError> {
        let mut udp = Vec::new();
        for &addr in &sip.udp {
            let socket =
                udp::bind(addr, sip.udp_recv_buffer_bytes).map_err(|source| BindError {
                    what: "udp",
                    addr,
                    source,
                })?;
            udp.push(Arc::new(socket));
        }
        let mut tcp = Vec::new();
        for &addr in &sip.tcp {
            tcp.push(listen("tcp", addr).await?);
        }
        let mut secure = Vec::new();
        for l in tls.iter().flat_map(|t| &t.listeners) {
            secure.push((listen("tls", l.addr).await?, l.client_auth));
        }
        Ok(Bound {
            udp,
            tcp,
            tls: secure,
        })
    }

    pub fn addresses(&self) -> Addresses {
        let bound = |listeners: &mut dyn Iterator<Item = &TcpListener>| {
            listeners.filter_map(|l| l.local_addr().ok()).collect()
        };
        Addresses {
            udp: self.udp.iter().map(|s| s.local_addr()).collect(),
            tcp: bound(&mut self.tcp.iter()),
            tls: bound(&mut self.tls.iter().map(|(l, _)| l)),
        }
    }

    /// Spawns `udp_workers` receive threads per UDP socket and the accept loop of every TCP
    /// and TLS listener (TLS only with `tls`), all on `tracker`.
    pub fn serve(
        self,
        udp_workers: usize,
        ctx: StreamContext,
        tls: Option<TlsServing>,
        tracker: &TaskTracker,
    ) {
        for socket in &self.udp {
            for _ in 0..udp_workers {
                let (socket, handler, halt) =
                    (socket.clone(), ctx.handler.clone(), ctx.halt.clone());
                // A blocking thread per loop (see udp.rs), inside the runtime's context so
                // that the handler may use it.
                tracker.spawn_blocking(move || udp::receive_loop(socket, handler, halt));
            }
        }
        for listener in self.tcp {
            tracker.spawn(tcp::accept_loop(listener, ctx.clone(), tracker.clone()));
        }
        let Some(tls) = tls else { return };
        let mut tls_ctx = ctx;
        tls_ctx.limits.max_connections = tls.max_connections;
        for (listener, mode) in self.tls {
            tracker.spawn(tls::accept_loop(
                listener,
                mode,
                tls.state.clone(),
                tls.handshakes.clone(),
                tls_ctx.clone(),
                tracker.clone(),
            ));
        }
    }
}

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}
