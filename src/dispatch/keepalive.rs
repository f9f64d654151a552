//! RFC 5626 keep-alives on a SIP UDP port, before SIP parsing: a datagram of CRLFs is counted
//! and needs no answer; a STUN Binding request is answered with the source address
//! (`transport::keepalive`), unless the source is over its failure limit (the limit that
//! also silences answers to malformed SIP). Other STUN is dropped and counted.
//!
//! The answer goes to the datagram's source, never elsewhere: at most 44 bytes for a request
//! of at least 20, with nothing of the request echoed but its transaction id, so it reflects
//! less than the 401 a REGISTER without credentials gets from the same port.

use std::time::Instant;

use bytes::Bytes;

use super::{is_unroutable, Dispatcher};
use crate::metrics::{DropReason, KeepAliveKind};
use crate::transport::keepalive::{self, KeepAlive};
use crate::transport::{Reply, Source, Transport};

impl Dispatcher {
    /// The reply to a keep-alive datagram, or `None` when `data` is not one (it goes to the
    /// SIP parser). Only for UDP: on a stream, CRLFs belong to the framer.
    pub(super) fn keepalive(&self, data: &Bytes, src: &Source) -> Option<Reply> {
        if src.transport != Transport::Udp {
            return None;
        }
        let metrics = &self.inner.responder.metrics;
        match keepalive::classify(data)? {
            KeepAlive::Crlf => metrics.keepalive(KeepAliveKind::Crlf),
            KeepAlive::BindingIndication => metrics.keepalive(KeepAliveKind::StunIndication),
            KeepAlive::OtherStun(fault) => {
                tracing::debug!(peer = %src.peer, ?fault, "STUN message not answered");
                metrics.dropped(DropReason::Stun);
            }
            KeepAlive::BindingRequest { transaction } => {
                let peer = src.peer;
                if self.inner.auth.source_blocked(peer.ip(), Instant::now()) {
                    metrics.dropped(DropReason::Throttled);
                    return Some(Reply::none());
                }
                metrics.keepalive(KeepAliveKind::StunBinding);
                if is_unroutable(peer.ip()) {
                    return Some(Reply::none());
                }
                let response = keepalive::binding_success(&transaction, peer);
                return Some(Reply {
                    bytes: Some(Bytes::from(response)),
                    to: Some(peer),
                    close: false,
                });
            }
        }
        Some(Reply::none())
    }
}
