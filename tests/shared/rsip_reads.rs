//! The registrar reads of `registrar_reads.rs`, through rsip 0.4's typed headers, and the
//! closest message rsip can read. Shared by `benches/parse.rs` (criterion, wall time) and
//! `examples/parse_instructions.rs` (instruction counts under callgrind), so both time
//! the same work.

use bytes::Bytes;

/// The same reads as `read_registrar_view`, through rsip's typed headers.
pub(crate) fn read_rsip(msg: &rsip::SipMessage) -> usize {
    use rsip::prelude::*;
    let mut acc = 0;
    let via = msg.via_header().expect("via").typed().expect("typed via");
    acc += via.branch().map_or(0, |b| b.to_string().len());
    let from = msg
        .from_header()
        .expect("from")
        .typed()
        .expect("typed from");
    let to = msg.to_header().expect("to").typed().expect("typed to");
    acc += from.tag().map_or(0, |t| t.value().len()) + to.tag().map_or(0, |t| t.value().len());
    acc += from.uri.user().map_or(0, str::len) + from.uri.host().to_string().len();
    acc += to.uri.user().map_or(0, str::len) + to.uri.host().to_string().len();
    acc += msg.call_id_header().expect("call-id").value().len();
    let cseq = msg
        .cseq_header()
        .expect("cseq")
        .typed()
        .expect("typed cseq");
    acc += cseq.seq as usize + cseq.method.to_string().len();
    for c in msg.contact_headers() {
        let c = c.typed().expect("typed contact");
        acc += c.uri.host().to_string().len();
        acc += c.expires().map_or(0, |e| e.seconds().unwrap_or(0) as usize);
    }
    acc += msg
        .expires_header()
        .map_or(0, |e| e.seconds().unwrap_or(0) as usize);
    if let Some(auth) = msg.authorization_header() {
        let a = auth.typed().expect("typed authorization");
        acc += a.username.len() + a.realm.len() + a.nonce.len() + a.response.len();
        acc += a.uri.to_string().len() + a.opaque.map_or(0, |o| o.len());
        acc += a.algorithm.map_or(0, |_| 1) + a.qop.map_or(0, |_| 1);
    }
    acc
}

/// rsip 0.4 cannot read the softphone Contact: its typed Contact fails with "failed to
/// tokenize params" on `+sip.instance="<urn:uuid:…>"` (a quoted value holding `<>`). So
/// rsip is timed on the closest message it reads, the same REGISTER without
/// `+sip.instance`, and sipward is timed on both.
pub(crate) fn without_instance(register: &[u8]) -> Bytes {
    let text = std::str::from_utf8(register).expect("ASCII");
    let start = text.find(";+sip.instance=").expect("instance param");
    let end = start + text[start..].find(";reg-id").expect("reg-id after it");
    Bytes::from(format!("{}{}", &text[..start], &text[end..]))
}
