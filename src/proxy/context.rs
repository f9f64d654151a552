//! One response context (RFC 3261 §16): the forwarded request, its branches with their
//! client transactions, the best final so far and the INVITE server transaction; and the
//! requests a proxy builds on a branch itself (hop-by-hop ACK, CANCEL). Plain data and pure
//! functions; [`super::core`] drives them.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Inbound;
use crate::sip::{HeaderName, HostPort, Message, Uri};
use crate::transaction::client::ClientTransaction;
use crate::transaction::invite_server::InviteServer;
use crate::transaction::TransactionKey;
use crate::transport::{Target, Transport};

/// A response context is dropped this long after it was created, whatever its state.
pub(super) const CONTEXT_HARD_LIMIT: Duration = Duration::from_secs(300);

pub(super) struct Context {
    pub(super) request: Message,
    pub(super) inbound: Inbound,
    pub(super) server_key: TransactionKey,
    pub(super) invite: bool,
    pub(super) branches: Vec<BranchState>,
    /// Best final non-2xx so far, our Via already removed.
    pub(super) best: Option<(u16, Bytes)>,
    pub(super) final_sent: bool,
    pub(super) cancelled: bool,
    pub(super) created: Instant,
    /// The INVITE server transaction (Timers G, H, I, L) and the final it retransmits.
    pub(super) server: Option<InviteServer>,
    pub(super) final_bytes: Option<Bytes>,
    /// This context's entry in the core's deadline index, `(deadline, generation)`, so it can
    /// be moved when an input changes the next deadline.
    pub(super) scheduled: Option<(Instant, u64)>,
}

pub(super) struct BranchState {
    pub(super) id: String,
    pub(super) target: Target,
    pub(super) request: Bytes,
    pub(super) request_uri: String,
    pub(super) via: String,
    pub(super) route: Vec<String>,
    pub(super) txn: ClientTransaction,
    pub(super) provisional: bool,
    pub(super) cancel_when_provisional: bool,
    pub(super) cancel: Option<(ClientTransaction, Bytes)>,
}

impl Context {
    pub(super) fn method_label(&self) -> &'static str {
        crate::metrics::method_label(self.request.method())
    }

    /// The final is sent and no transaction has a timer left: the context can go.
    pub(super) fn is_done(&self) -> bool {
        self.final_sent
            && self
                .branches
                .iter()
                .all(|b| b.txn.next_deadline().is_none())
            && self
                .server
                .as_ref()
                .is_none_or(|s| s.next_deadline().is_none())
    }

    /// The earliest timer of any of its transactions, and the hard limit.
    pub(super) fn next_deadline(&self) -> Instant {
        let hard = self
            .created
            .checked_add(CONTEXT_HARD_LIMIT)
            .unwrap_or(self.created);
        self.branches
            .iter()
            .flat_map(|b| {
                let cancel = b.cancel.as_ref().and_then(|(t, _)| t.next_deadline());
                b.txn.next_deadline().into_iter().chain(cancel)
            })
            .chain(self.server.as_ref().and_then(|s| s.next_deadline()))
            .fold(hard, Instant::min)
    }
}

/// Limits for re-reading messages we built ourselves.
pub(super) fn generous_limits() -> crate::sip::Limits {
    crate::sip::Limits {
        max_header_bytes: 1 << 20,
        max_body_bytes: 1 << 20,
        max_headers: 4096,
    }
}

/// `<sip:token@host:port;transport=x;lr>` for our name `local`.
pub(super) fn rr_uri(token: &str, local: &HostPort, transport: Transport) -> String {
    let transport = match transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Ws => ";transport=ws",
        Transport::Wss => ";transport=wss",
    };
    format!("<sip:{token}@{local}{transport};lr>")
}

/// §16.7 step 6: 6xx beats everything; otherwise the lowest class, 3xx before 4xx before 5xx.
pub(super) fn better(status: u16, current: Option<u16>) -> bool {
    let rank = |s: u16| match s / 100 {
        6 => 0,
        3 => 1,
        4 => 2,
        5 => 3,
        _ => 4,
    };
    match current {
        None => true,
        Some(c) => rank(status) < rank(c),
    }
}

pub(super) fn class_label(status: u16) -> &'static str {
    match status / 100 {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "6xx",
    }
}

/// The hop-by-hop ACK for a non-2xx final on branch `b` (RFC 3261 §17.1.1.3): To from the
/// response.
pub(super) fn build_ack(request: &Message, b: &BranchState, response: &Message) -> Bytes {
    let to = response.value(HeaderName::To).unwrap_or("");
    branch_request("ACK", request, b, to)
}

/// The CANCEL for branch `b` (RFC 3261 §9.1): To as in the INVITE.
pub(super) fn build_cancel(request: &Message, b: &BranchState) -> Bytes {
    let to = request.value(HeaderName::To).unwrap_or("");
    branch_request("CANCEL", request, b, to)
}

/// A request on branch `b` that reuses the INVITE's Request-URI (as sent), top Via, Route
/// set, From, Call-ID and CSeq number.
fn branch_request(method: &str, request: &Message, b: &BranchState, to: &str) -> Bytes {
    let mut out = format!("{method} {} SIP/2.0\r\nVia: {}\r\n", b.request_uri, b.via);
    for r in &b.route {
        out.push_str("Route: ");
        out.push_str(r);
        out.push_str("\r\n");
    }
    let from = request.value(HeaderName::From).unwrap_or("");
    let call_id = request.call_id().unwrap_or("");
    let seq = request.cseq().map(|c| c.seq).unwrap_or(0);
    out.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    ));
    Bytes::from(out)
}

/// A URI that becomes a Request-URI (a binding's Contact, a strict router's last Route) in
/// the form a Request-URI may take: no URI headers, no `method` parameter (RFC 3261
/// §19.1.1). `None` if it does not parse (nothing is sent to it).
pub(super) fn as_request_uri(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    Uri::parse(raw).ok().map(|u| u.request_uri_form())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_response_order_follows_section_16_7() {
        assert!(better(486, None));
        assert!(better(302, Some(486)), "3xx before 4xx");
        assert!(better(404, Some(503)), "4xx before 5xx");
        assert!(better(603, Some(302)), "6xx before anything");
        assert!(!better(480, Some(486)), "first of a class stays");
        assert!(!better(500, Some(603)));
    }
}
