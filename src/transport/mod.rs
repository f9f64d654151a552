//! Transports: UDP receive loops, TCP connections with framing and deadlines, and the flow
//! table that remembers each open connection so later messages can go back over it.
//!
//! | file | owns |
//! | --- | --- |
//! | `udp.rs` | blocking receive threads sharing one socket per address, large buffers, no task or epoll round trip per datagram |
//! | `tcp.rs` | accept with a connection limit taken before accept; per-connection task with idle and header deadlines |
//! | `tls.rs` | TLS listeners: handshake slots and deadline, certificate material and its reload, SNI, the mTLS identity of a connection |
//! | `local.rs` | our address on a wildcard socket: where a datagram arrived (packet information), replies from it, the route's source address, the interface addresses |
//! | `advertise.rs` | `Advertised`: the name each listener writes for itself (its `advertise`, else the real local address) |
//! | `serve.rs` | binding every SIP socket, spawning the receive threads and accept loops, the two stop tokens of a drain |
//! | `ws.rs` | SIP over WebSocket (RFC 7118): WS and WSS listeners, the upgrade (the `sip` subprotocol, the Origin allowlist, a deadline), message size and idle limits, pings; each connection a flow |
//! | `keepalive.rs` | RFC 5626 keep-alives on a UDP port, as pure functions: CRLF datagrams, STUN Binding requests and their success response (RFC 5389) |
//!
//! It hands `(bytes, Source)` to a `Handler` (implemented by `dispatch`) and sends back what
//! the handler returns, at once or later through a [`Responder`]. It must not interpret SIP
//! beyond framing.

pub mod advertise;
pub mod keepalive;
pub mod local;
pub mod serve;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

/// Re-exported from `sip`, where it lives below metrics and the registrar.
pub use crate::sip::{FlowId, Transport};

/// Where a message came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection, for stream transports.
    pub flow: Option<FlowId>,
    /// The verified client certificate's identity, on a TLS connection that presented one.
    pub identity: Option<Arc<tls::PeerIdentity>>,
}

/// What to do after handling one message.
#[derive(Debug, Default)]
pub struct Reply {
    /// Bytes to send: over UDP to `to`, over a stream on the same connection.
    pub bytes: Option<Bytes>,
    /// UDP destination (RFC 3261 §18.2.2 / RFC 3581); ignored on streams.
    pub to: Option<SocketAddr>,
    /// Close the stream after sending (framing can no longer be trusted).
    pub close: bool,
}

impl Reply {
    pub fn none() -> Reply {
        Reply::default()
    }
}

/// The seam between the network and the application (compare hickory's `handle_request`).
///
/// The transports call [`Handler::handle`]. A handler answers at once by returning the
/// `Reply` (the fast path: on UDP the receive thread sends it, with no allocation or
/// reference count for the seam), or it answers later: it turns the [`Later`] into a
/// [`Responder`], moves that to another task or thread, returns `Reply::none()`, and calls
/// [`Responder::send`] once when the answer is ready.
pub trait Handler: Send + Sync + 'static {
    /// Answers one message at once.
    fn on_message(&self, data: Bytes, src: &Source) -> Reply;
    /// Answers one message at once or, through `later`, afterwards. The default answers at
    /// once with [`Handler::on_message`].
    fn handle(&self, data: Bytes, src: &Source, later: Later<'_>) -> Reply {
        let _ = later;
        self.on_message(data, src)
    }
    /// A stream could not be framed (`error`); `head` is the complete header section the
    /// fault was found in, if one arrived. The reply, if any, is written and then the
    /// connection is closed whatever `Reply::close` says.
    fn on_framing_error(
        &self,
        _error: crate::sip::ParseError,
        _head: Option<Bytes>,
        _src: &Source,
    ) -> Reply {
        Reply::none()
    }
    /// A stream connection closed.
    fn on_flow_closed(&self, _flow: FlowId) {}
}

/// The way back to the sender of the message being handled, borrowed from the transport for
/// the length of [`Handler::handle`]. Costs nothing unless made into a [`Responder`].
#[derive(Debug)]
pub struct Later<'a> {
    way: LaterWay<'a>,
}

#[derive(Debug)]
enum LaterWay<'a> {
    /// The socket, and our address the message arrived on (the answer leaves from it).
    Udp(&'a Arc<udp::Listener>, SocketAddr),
    Flow(&'a Flows, FlowId),
}

impl<'a> Later<'a> {
    pub(crate) fn udp(listener: &'a Arc<udp::Listener>, local: SocketAddr) -> Later<'a> {
        Later {
            way: LaterWay::Udp(listener, local),
        }
    }

    pub(crate) fn flow(flows: &'a Flows, id: FlowId) -> Later<'a> {
        Later {
            way: LaterWay::Flow(flows, id),
        }
    }

    /// An owned handle that answers this message later, from any task or thread.
    pub fn responder(self) -> Responder {
        Responder {
            way: match self.way {
                LaterWay::Udp(listener, local) => ResponderWay::Udp(listener.clone(), local),
                LaterWay::Flow(flows, id) => ResponderWay::Flow(flows.clone(), id),
            },
        }
    }
}

/// Answers one message after [`Handler::handle`] has returned (compare hickory's
/// `ResponseHandle`). `send` consumes it, so it answers at most once; dropping it answers
/// nothing. It holds the UDP socket (shared with the receive threads) or the connection's id
/// in the flow table, never the connection itself: a connection that closes meanwhile makes
/// `send` return false, and a held responder keeps nothing open.
#[derive(Debug)]
pub struct Responder {
    way: ResponderWay,
}

#[derive(Debug)]
enum ResponderWay {
    Udp(Arc<udp::Listener>, SocketAddr),
    Flow(Flows, FlowId),
}

impl Responder {
    /// Sends `reply` as if [`Handler::handle`] had returned it: over UDP to `reply.to`; on a
    /// stream queued on the same connection (which is closed after the write if
    /// `reply.close`). Never waits: false if nothing could be handed over (no bytes or no
    /// UDP destination, a full socket buffer or connection queue, a closed connection).
    pub fn send(self, reply: Reply) -> bool {
        match self.way {
            ResponderWay::Udp(listener, local) => match (reply.bytes, reply.to) {
                (Some(bytes), Some(to)) => listener.send_nowait_from(&bytes, to, local.ip()),
                _ => false,
            },
            ResponderWay::Flow(flows, id) => match reply.bytes {
                Some(bytes) => flows.write(
                    id,
                    FlowWrite {
                        bytes,
                        close: reply.close,
                    },
                ),
                None if reply.close => flows.write(
                    id,
                    FlowWrite {
                        bytes: Bytes::new(),
                        close: true,
                    },
                ),
                None => false,
            },
        }
    }
}

/// Open stream connections by id, each with a bounded queue of bytes to write, its addresses
/// and transport, and an index by peer address (for in-dialog requests to a contact that is
/// reachable only over the connection it registered on).
#[derive(Debug, Clone, Default)]
pub struct Flows {
    inner: Arc<FlowsInner>,
}

#[derive(Debug, Default)]
struct FlowsInner {
    next: AtomicU64,
    entries: DashMap<FlowId, FlowEntry>,
    by_peer: DashMap<SocketAddr, FlowId>,
}

#[derive(Debug)]
struct FlowEntry {
    tx: mpsc::Sender<FlowWrite>,
    info: FlowInfo,
}

/// One entry of a connection's write queue.
#[derive(Debug)]
pub(crate) struct FlowWrite {
    pub(crate) bytes: Bytes,
    /// Close the connection after writing (a deferred answer to a framing fault).
    pub(crate) close: bool,
}

/// Where a connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub transport: Transport,
    /// Our listener's address.
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// Messages queued per connection before `send` fails at once (the peer is not reading).
pub const FLOW_QUEUE: usize = 64;

impl Flows {
    pub(crate) fn open(&self, info: FlowInfo) -> (FlowId, mpsc::Receiver<FlowWrite>) {
        let id = FlowId(self.inner.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        self.inner.entries.insert(id, FlowEntry { tx, info });
        self.inner.by_peer.insert(info.peer, id);
        (id, rx)
    }

    pub(crate) fn close(&self, id: FlowId) {
        if let Some((_, entry)) = self.inner.entries.remove(&id) {
            self.inner
                .by_peer
                .remove_if(&entry.info.peer, |_, current| *current == id);
        }
    }

    /// Queue bytes on a connection; false if it is gone or its queue is full.
    pub fn send(&self, id: FlowId, bytes: Bytes) -> bool {
        self.write(
            id,
            FlowWrite {
                bytes,
                close: false,
            },
        )
    }

    fn write(&self, id: FlowId, write: FlowWrite) -> bool {
        match self.inner.entries.get(&id) {
            Some(entry) => entry.tx.try_send(write).is_ok(),
            None => false,
        }
    }

    /// The connection's transport and addresses, while it is open.
    pub fn info(&self, id: FlowId) -> Option<FlowInfo> {
        self.inner.entries.get(&id).map(|e| e.info)
    }

    /// The open connection whose peer is `peer`, if any.
    pub fn by_peer(&self, peer: SocketAddr) -> Option<FlowId> {
        self.inner.by_peer.get(&peer).map(|id| *id)
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }
}

/// Where the proxy sends a message: a UDP address, or an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A request to a UDP address, from the first UDP listener of its family (the kernel's
    /// route picks the source address on a wildcard socket).
    Udp(SocketAddr),
    /// Responses to a UDP request that arrived on our address `local`: sent from the listener
    /// that received it, and from `local` itself on a wildcard socket (RFC 3581 §4).
    UdpReply {
        to: SocketAddr,
        local: SocketAddr,
    },
    Flow(FlowId),
}

/// Non-blocking sends for the proxy: UDP datagrams from our listening sockets (so replies
/// come back to them), and bytes queued on open connections. Never waits: a full socket
/// buffer or connection queue drops the message, as UDP would (transactions retransmit).
#[derive(Debug, Clone)]
pub struct Outbound {
    udp: Vec<Arc<udp::Listener>>,
    flows: Flows,
    advertised: advertise::Advertised,
}

impl Outbound {
    pub fn new(udp: Vec<Arc<udp::Listener>>, flows: Flows) -> Outbound {
        Outbound {
            udp,
            flows,
            advertised: advertise::Advertised::default(),
        }
    }

    /// The listeners' advertised names, for [`Outbound::local_for`] and
    /// [`Outbound::sent_by`].
    pub fn with_advertised(mut self, advertised: advertise::Advertised) -> Outbound {
        self.advertised = advertised;
        self
    }

    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    fn udp_for(&self, dest: SocketAddr) -> Option<&udp::Listener> {
        self.udp
            .iter()
            .find(|s| s.local_addr().is_ipv4() == dest.is_ipv4())
            .map(|s| s.as_ref())
    }

    /// The UDP listener that receives on our address `local` (its own, or a wildcard one of
    /// the same family and port).
    fn udp_at(&self, local: SocketAddr) -> Option<&udp::Listener> {
        let bound = |s: &&Arc<udp::Listener>| s.local_addr() == local;
        let wildcard = |s: &&Arc<udp::Listener>| {
            let a = s.local_addr();
            a.ip().is_unspecified() && a.port() == local.port() && a.is_ipv4() == local.is_ipv4()
        };
        let found = self.udp.iter().find(bound);
        found
            .or_else(|| self.udp.iter().find(wildcard))
            .map(|s| s.as_ref())
    }

    /// What a message over `transport` with the real local address `local` names us with
    /// in Via and Record-Route (see [`advertise::Advertised::sent_by`]).
    pub fn sent_by(&self, transport: Transport, local: SocketAddr) -> crate::sip::HostPort {
        self.advertised.sent_by(transport, local)
    }

    /// The name a message to `target` leaves under, and its transport (for Via and
    /// Record-Route): the listener's advertised name, else the real local address. A UDP
    /// socket on a wildcard address asks the kernel's route lookup which address a
    /// datagram to the destination leaves from (a socket call per branch, only for a
    /// wildcard listener without `advertise`; None when that lookup fails, so no wildcard
    /// address is ever written).
    pub fn local_for(&self, target: Target) -> Option<(Transport, crate::sip::HostPort)> {
        let (transport, local) = match target {
            Target::Udp(dest) => {
                let local = self.udp_for(dest)?.local_addr();
                let real = match local.ip().is_unspecified() {
                    true if self.advertised.configured(Transport::Udp, local).is_none() => {
                        // No route to the destination: the branch is not sent rather
                        // than sent naming the wildcard address.
                        SocketAddr::new(local::source_for(dest)?, local.port())
                    }
                    _ => local,
                };
                (Transport::Udp, real)
            }
            Target::UdpReply { local, .. } => (Transport::Udp, local),
            Target::Flow(id) => self.flows.info(id).map(|i| (i.transport, i.local))?,
        };
        Some((transport, self.advertised.sent_by(transport, local)))
    }

    /// Sends `bytes`; false if it could not be handed to the kernel or the connection.
    pub fn send(&self, target: Target, bytes: Bytes) -> bool {
        match target {
            Target::Udp(dest) => self
                .udp_for(dest)
                .is_some_and(|s| s.send_nowait(&bytes, dest)),
            Target::UdpReply { to, local } => match self.udp_at(local) {
                Some(s) => s.send_nowait_from(&bytes, to, local.ip()),
                None => self.udp_for(to).is_some_and(|s| s.send_nowait(&bytes, to)),
            },
            Target::Flow(id) => self.flows.send(id, bytes),
        }
    }
}
