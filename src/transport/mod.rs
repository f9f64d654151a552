//! Transports: UDP receive loops, TCP connections with framing and deadlines, and the flow
//! table that remembers each open connection so later messages can go back over it.
//!
//! | file | owns |
//! | --- | --- |
//! | `udp.rs` | receive loops sharing one socket per address, large buffers, no task per datagram |
//! | `tcp.rs` | accept with a connection limit taken before accept; per-connection task with idle and header deadlines |
//! | `tls.rs` | TLS listeners: handshake slots and deadline, certificate material and its reload, SNI, the mTLS identity of a connection |
//!
//! It hands `(bytes, Source)` to a `Handler` and sends back what the handler returns. It
//! must not interpret SIP beyond framing; dispatch lives in `app`.

pub mod tcp;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

/// The transport a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Identifies one TCP/TLS connection for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

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
pub trait Handler: Send + Sync + 'static {
    fn on_message(&self, data: Bytes, src: &Source) -> Reply;
    /// A stream connection closed.
    fn on_flow_closed(&self, _flow: FlowId) {}
}

/// Open stream connections by id, each with a bounded queue of bytes to write.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    inner: Arc<FlowsInner>,
}

#[derive(Debug, Default)]
struct FlowsInner {
    next: AtomicU64,
    senders: DashMap<FlowId, mpsc::Sender<Bytes>>,
}

/// Bytes queued per connection before `send` fails (the peer is not reading).
pub const FLOW_QUEUE: usize = 64;

impl Flows {
    pub(crate) fn open(&self) -> (FlowId, mpsc::Receiver<Bytes>) {
        let id = FlowId(self.inner.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        self.inner.senders.insert(id, tx);
        (id, rx)
    }

    pub(crate) fn close(&self, id: FlowId) {
        self.inner.senders.remove(&id);
    }

    /// Queue bytes on a connection; false if it is gone or its queue is full.
    pub fn send(&self, id: FlowId, bytes: Bytes) -> bool {
        match self.inner.senders.get(&id) {
            Some(tx) => tx.try_send(bytes).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.senders.is_empty()
    }
}
