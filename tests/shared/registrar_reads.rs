//! What a registrar reads from a REGISTER, through sipward's typed views. Shared by
//! `benches/parse.rs` (timed against rsip reading the same fields) and `tests/sip_alloc.rs`
//! (allocations counted), so both measure the same work.

use sipward::sip::{Contact, Credentials, HeaderName, Message};

/// Everything a registrar reads, folded into a number so nothing is optimised away.
/// `with_aor` also builds the To AoR (`Uri::aor`, one `String`).
pub(crate) fn read_registrar_view(msg: &Message, with_aor: bool) -> usize {
    let mut acc = 0;
    let via = msg.top_via().expect("via");
    acc += via.branch().map_or(0, str::len);
    let from = msg.from().expect("from");
    let to = msg.to().expect("to");
    acc += from.tag().map_or(0, str::len) + to.tag().map_or(0, str::len);
    acc += from.uri.user.map_or(0, str::len) + from.uri.host_raw.len();
    if with_aor {
        acc += to.uri.aor().map_or(0, |a| a.len());
    }
    acc += msg.call_id().expect("call-id").len();
    let cseq = msg.cseq().expect("cseq");
    acc += cseq.seq as usize + cseq.method.len();
    for c in msg.contacts() {
        if let Contact::Addr(c) = c.expect("contact") {
            acc += c.addr.uri.host_raw.len();
            acc += c.expires().expect("contact expires").unwrap_or(0) as usize;
            acc += c.instance().map_or(0, str::len);
            acc += c.reg_id().expect("reg-id").unwrap_or(0) as usize;
        }
    }
    acc += msg.expires().expect("expires").unwrap_or(0) as usize;
    for cred in msg.credentials(HeaderName::Authorization) {
        if let Credentials::Digest(d) = cred.expect("credentials") {
            for v in [
                d.username,
                d.realm,
                d.nonce,
                d.uri,
                d.response,
                d.algorithm,
                d.cnonce,
                d.qop,
            ] {
                acc += v.map_or(0, str::len);
            }
            acc += d.nc.unwrap_or(0) as usize;
        }
    }
    acc
}
