//! Parse-and-read cost of one realistic softphone REGISTER (with Digest credentials):
//! `sipward::sip` against `rsip` 0.4, both reading what a registrar reads (top Via branch,
//! From/To AoR and tags, Call-ID, CSeq, each Contact with its expires, Expires and the
//! Authorization parameters).
//!
//! Run with `cargo bench --bench parse`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sipward::sip::{Limits, Message};

#[path = "../tests/shared/registrar_reads.rs"]
mod registrar_reads;
use registrar_reads::read_registrar_view;

/// A REGISTER as a softphone sends it after a 401 (Zoiper-like header order).
const REGISTER: &[u8] = include_bytes!("../tests/data/softphone-register.sip");

/// The same reads through rsip's typed headers.
fn read_rsip(msg: &rsip::SipMessage) -> usize {
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

/// rsip 0.4 cannot read the Contact above: its typed Contact fails with "failed to tokenize
/// params" on `+sip.instance="<urn:uuid:…>"` (a quoted value holding `<>`). So rsip is timed
/// on the closest message it reads, the same REGISTER without `+sip.instance`, and sipward
/// is timed on both.
fn without_instance() -> Bytes {
    let text = std::str::from_utf8(REGISTER).expect("ASCII");
    let start = text.find(";+sip.instance=").expect("instance param");
    let end = start + text[start..].find(";reg-id").expect("reg-id after it");
    Bytes::from(format!("{}{}", &text[..start], &text[end..]))
}

fn bench_parse(c: &mut Criterion) {
    let full = Bytes::from_static(REGISTER);
    let subset = without_instance();
    let limits = Limits::default();
    // Both parsers must read the messages they are timed on, and rsip must still fail on
    // the full one (else this bench should time rsip on it instead).
    for bytes in [&full, &subset] {
        let msg = Message::parse(bytes.clone(), &limits).expect("sipward parses");
        msg.check_core_headers().expect("core headers");
        assert!(read_registrar_view(&msg, true) > 0);
    }
    let rsip_full = rsip::SipMessage::try_from(&full[..]).expect("rsip parses the message");
    assert!(
        rsip::prelude::HeadersExt::contact_headers(&rsip_full)
            .iter()
            .any(|c| rsip::prelude::ToTypedHeader::typed(*c).is_err()),
        "rsip now reads +sip.instance: time it on the full REGISTER"
    );
    let rsip_subset = rsip::SipMessage::try_from(&subset[..]).expect("rsip parses");
    assert!(read_rsip(&rsip_subset) > 0);

    let mut g = c.benchmark_group("register_parse_and_read");
    g.bench_function("sipward/full", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(full.clone()), &limits).expect("parse");
            black_box(read_registrar_view(&msg, true))
        })
    });
    g.bench_function("sipward/without_instance", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(subset.clone()), &limits).expect("parse");
            black_box(read_registrar_view(&msg, true))
        })
    });
    g.bench_function("rsip/without_instance", |b| {
        b.iter(|| {
            let msg = rsip::SipMessage::try_from(black_box(&subset[..])).expect("parse");
            black_box(read_rsip(&msg))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
