//! The responder: builds every SIP response dispatch sends (our To-tag, received/rport,
//! extra headers, Server) and counts it; it also holds the metrics handle dispatch counts with.
//!
//! It must not decide statuses: callers pass them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;

use super::Dispatcher;
use crate::metrics::Metrics;
use crate::sip::{Message, ResponseBuilder, ViaReceived};
use crate::transport::Source;

/// A response produced by the core, with its status for the transaction layer and metrics.
pub(crate) struct Response {
    pub status: u16,
    pub bytes: Bytes,
    /// Sent without keeping transaction state (RFC 3261 §8.2.7): a challenge to a REGISTER
    /// that carried no credentials. A retransmission of it is challenged afresh, which costs
    /// less than holding the transaction and its response for 64*T1.
    pub stateless: bool,
    /// A REGISTER's 200 that may leave only once its change is durable: dispatch holds it
    /// until this completes (see `Dispatcher::answer_when_durable`).
    pub durable: Option<crate::registrar::Ack>,
}

/// Builds and counts responses.
pub struct Responder {
    pub metrics: Metrics,
    server_header: Option<String>,
    /// Keyed hasher for To-tags, so they are stable across retransmissions but unguessable.
    tag_hasher: RandomState,
}

impl Responder {
    pub fn new(metrics: Metrics, server_header: Option<String>) -> Responder {
        Responder {
            metrics,
            server_header,
            tag_hasher: RandomState::new(),
        }
    }

    /// A To-tag stable for one request (retransmissions get the same) and unguessable.
    fn to_tag(&self, msg: &Message) -> String {
        let mut h = self.tag_hasher.build_hasher();
        h.write(msg.call_id().unwrap_or("").as_bytes());
        h.write(msg.from_tag().unwrap_or("").as_bytes());
        h.write_u32(msg.cseq().map(|c| c.seq).unwrap_or(0));
        format!("{:016x}", h.finish())
    }
}

impl Dispatcher {
    /// Builds a response with our To-tag, received/rport, extra headers and Server, and
    /// counts it.
    pub(crate) fn respond(
        &self,
        msg: &Message,
        src: &Source,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let r = &self.inner.responder;
        let tag = r.to_tag(msg);
        let mut b = ResponseBuilder::new(msg, status, reason)
            .received(ViaReceived { addr: src.peer })
            .server(r.server_header.as_deref());
        if status > 100 {
            b = b.to_tag(&tag);
        }
        for (n, v) in extra {
            b = b.header(n, v);
        }
        r.metrics.response(status, src.transport);
        Response {
            status,
            bytes: b.build(),
            stateless: false,
            durable: None,
        }
    }
}
