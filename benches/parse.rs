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

#[path = "../tests/shared/rsip_reads.rs"]
mod rsip_reads;
use rsip_reads::{read_rsip, without_instance};

/// A REGISTER as a softphone sends it after a 401 (Zoiper-like header order).
const REGISTER: &[u8] = include_bytes!("../tests/data/softphone-register.sip");

fn bench_parse(c: &mut Criterion) {
    let full = Bytes::from_static(REGISTER);
    let subset = without_instance(REGISTER);
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
