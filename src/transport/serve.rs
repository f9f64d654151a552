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
use super::{udp, ws};
use crate::config::{ClientAuth, SipConfig, TlsConfig, WsConfig, WsListener};

/// A socket that could not be bound: the config key that names it, the address and the OS
/// error. The OS error is part of the message and deliberately not a `source()`, so that a
/// printer of the error chain says it once.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {key} {addr}: {error}")]
pub struct BindError {
    /// The config key (`sip.udp`, `sip.tcp`, `tls.listeners`, `ws.listeners`, `http.listen`).
    pub key: &'static str,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// Every SIP socket, bound and not yet served.
pub struct Bound {
    pub udp: Vec<Arc<udp::Listener>>,
    tcp: Vec<TcpListener>,
    tls: Vec<(TcpListener, ClientAuth)>,
    /// `[[ws.listeners]]`, bound by [`Bound::bind_ws`] and served by [`Bound::serve_ws`].
    ws: Vec<(TcpListener, WsListener)>,
}

/// The addresses a [`Bound`] set listens on (with the ports the kernel chose for port 0).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// WS and WSS listeners, in the order of `ws.listeners`.
    pub ws: Vec<SocketAddr>,
}

impl Addresses {
    /// Every local address, UDP first (Route headers naming one of them are ours).
    pub fn all(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .chain(&self.tcp)
            .chain(&self.tls)
            .chain(&self.ws)
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
            let socket = udp::bind(addr, sip.udp_recv_buffer_bytes).map_err(|error| BindError {
                key: "sip.udp",
                addr,
                error,
            })?;
            udp.push(Arc::new(socket));
        }
        let mut tcp = Vec::new();
        for &addr in &sip.tcp {
            tcp.push(listen("sip.tcp", addr).await?);
        }
        let mut secure = Vec::new();
        for l in tls.iter().flat_map(|t| &t.listeners) {
            secure.push((listen("tls.listeners", l.addr).await?, l.client_auth));
        }
        Ok(Bound {
            udp,
            tcp,
            tls: secure,
            ws: Vec::new(),
        })
    }

    /// Binds the `[[ws.listeners]]` (SIP over WebSocket) too.
    pub async fn bind_ws(&mut self, ws: Option<&WsConfig>) -> Result<(), BindError> {
        for l in ws.iter().flat_map(|w| &w.listeners) {
            self.ws
                .push((listen("ws.listeners", l.addr).await?, l.clone()));
        }
        Ok(())
    }

    /// Spawns the accept loop of every WS and WSS listener (WSS with `tls`, the `[tls]`
    /// material; a WSS listener without it is not served, which config validation rules out).
    pub fn serve_ws(
        &mut self,
        config: Option<&WsConfig>,
        ctx: &StreamContext,
        tls: Option<&tls::TlsState>,
        tracker: &TaskTracker,
    ) {
        let Some(config) = config else { return };
        let mut ws_ctx = ctx.clone();
        ws_ctx.limits.max_connections = config.max_connections;
        ws_ctx.limits.idle_timeout = config.idle_timeout;
        for (listener, l) in self.ws.drain(..) {
            let state = match (l.tls, tls) {
                (false, _) => None,
                (true, Some(state)) => Some(state.clone()),
                (true, None) => continue,
            };
            let serving = ws::WsServing::new(config, l.origins.clone(), state);
            tracker.spawn(ws::accept_loop(
                listener,
                serving,
                ws_ctx.clone(),
                tracker.clone(),
            ));
        }
    }

    pub fn addresses(&self) -> Addresses {
        let bound = |listeners: &mut dyn Iterator<Item = &TcpListener>| {
            listeners.filter_map(|l| l.local_addr().ok()).collect()
        };
        Addresses {
            udp: self.udp.iter().map(|s| s.local_addr()).collect(),
            tcp: bound(&mut self.tcp.iter()),
            tls: bound(&mut self.tls.iter().map(|(l, _)| l)),
            ws: bound(&mut self.ws.iter().map(|(l, _)| l)),
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

/// Binds a TCP listener for the config key `key` (an IPv6 one IPv6-only, see `tcp::bind`).
pub async fn listen(key: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    tcp::bind(addr).map_err(|error| BindError { key, addr, error })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpStream, UdpSocket};
    use std::time::Duration;

    use bytes::Bytes;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::transport::tcp::StreamLimits;
    use crate::transport::{Flows, Handler, Reply, Source};

    /// Sends every message back where it came from.
    struct Echo;

    impl Handler for Echo {
        fn on_message(&self, data: Bytes, src: &Source) -> Reply {
            Reply {
                bytes: Some(data),
                to: Some(src.peer),
                close: false,
            }
        }
    }

    const MESSAGE: &[u8] = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n";

    fn context(shutdown: &CancellationToken, halt: &CancellationToken) -> StreamContext {
        let sip = Config::dev().sip;
        StreamContext {
            handler: Arc::new(Echo),
            flows: Flows::default(),
            limits: StreamLimits {
                max_connections: 8,
                idle_timeout: Duration::from_secs(60),
                header_timeout: Duration::from_secs(10),
                write_timeout: tcp::WRITE_TIMEOUT,
                framing: sip.limits(),
            },
            metrics: Metrics::new(),
            shutdown: shutdown.clone(),
            halt: halt.clone(),
        }
    }

    fn udp_echo(socket: &UdpSocket, to: SocketAddr) -> bool {
        socket.send_to(MESSAGE, to).unwrap();
        let mut buf = [0u8; 256];
        matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == MESSAGE)
    }

    fn tcp_echo(stream: &mut TcpStream) -> bool {
        stream.write_all(MESSAGE).unwrap();
        let mut buf = vec![0u8; MESSAGE.len()];
        stream.read_exact(&mut buf).is_ok() && buf == MESSAGE
    }

    /// A second bind of a taken port names the config key and the address, and says the OS
    /// error once (it is not also the error's `source`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_taken_port_is_reported_with_key_and_address() {
        let mut sip = Config::dev().sip;
        sip.udp = vec![];
        sip.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        let first = Bound::bind(&sip, None).await.unwrap();
        let taken = first.addresses().tcp[0];
        sip.tcp = vec![taken];
        let Err(e) = Bound::bind(&sip, None).await else {
            panic!("bound {taken} twice");
        };
        assert_eq!((e.key, e.addr), ("sip.tcp", taken));
        assert!(
            e.to_string()
                .starts_with(&format!("cannot bind sip.tcp {taken}: ")),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_none(), "{e:?}");
    }

    /// `shutdown` stops accepting but UDP and open connections are still served (a drain);
    /// `halt` stops the rest, and every task ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_accepting_and_halt_stops_reading() {
        let mut sip = Config::dev().sip;
        sip.udp = vec!["127.0.0.1:0".parse().unwrap()];
        sip.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        let bound = Bound::bind(&sip, None).await.unwrap();
        let addrs = bound.addresses();
        assert_eq!(addrs.all().len(), 2);
        let (udp_addr, tcp_addr) = (addrs.udp[0], addrs.tcp[0]);
        assert_ne!(udp_addr.port(), 0);
        let (shutdown, halt, tracker) = (
            CancellationToken::new(),
            CancellationToken::new(),
            TaskTracker::new(),
        );
        bound.serve(2, context(&shutdown, &halt), None, &tracker);

        let check = tokio::task::spawn_blocking(move || {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut open = TcpStream::connect(tcp_addr).unwrap();
            open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(udp_echo(&udp, udp_addr), "udp served");
            assert!(tcp_echo(&mut open), "tcp served");
            (udp, open)
        });
        let (udp, mut open) = check.await.unwrap();

        shutdown.cancel();
        let drained = tokio::task::spawn_blocking(move || {
            // The accept loop drops its listener; wait (bounded) until connecting fails.
            let refused = (0..250).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                TcpStream::connect(tcp_addr).is_err()
            });
            assert!(refused, "still accepting after shutdown");
            assert!(udp_echo(&udp, udp_addr), "udp still read during the drain");
            assert!(
                tcp_echo(&mut open),
                "open connection still served during the drain"
            );
            (udp, open)
        });
        let (udp, mut open) = drained.await.unwrap();

        halt.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("every task ends after halt");
        let stopped = tokio::task::spawn_blocking(move || {
            udp.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 16];
            let closed = matches!(open.read(&mut buf), Ok(0) | Err(_));
            (udp_echo(&udp, udp_addr), closed)
        });
        let (udp_answered, tcp_closed) = stopped.await.unwrap();
        assert!(!udp_answered, "udp still answered after halt");
        assert!(tcp_closed, "the connection is closed after halt");
    }
}
