//! Digest authentication costs, one operation at a time: verifying a response per algorithm
//! (MD5, SHA-256, SHA-512-256, qop=auth), minting and checking a stateless nonce (HMAC-SHA-256),
//! and the nonce-count replay check on the default table (2^20 slots) holding 100 000 nonces.
//!
//! Run with `cargo bench --bench auth`. Under `cargo test --all-targets` Criterion runs each
//! function once, on a 1000-entry table.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};
use sipward::auth::{
    verify, Algorithm, DigestCredentials, Ha1, NonceConfig, NonceIssuer, NonceKeys, NonceStatus,
    ReplayConfig, ReplayTable, Verdict,
};

const REALM: &str = "bench.test";
const URI: &str = "sip:bench.test";
const NONCE: &str = "AAAAAGVlcm4AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const CNONCE: &str = "0a4f113b";
const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
const NOW: u64 = 1_795_000_000;

fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Lower-case hex of H(data), computed independently of the code under test.
fn h(algorithm: Algorithm, data: &str) -> String {
    match algorithm {
        Algorithm::Md5 => hex::encode(Md5::digest(data)),
        Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
        Algorithm::Sha512_256 => hex::encode(Sha512_256::digest(data)),
    }
}

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest_verify");
    for (name, algorithm) in [
        ("MD5", Algorithm::Md5),
        ("SHA-256", Algorithm::Sha256),
        ("SHA-512-256", Algorithm::Sha512_256),
    ] {
        let ha1_hex = h(algorithm, &format!("u100042:{REALM}:pw100042"));
        let ha2 = h(algorithm, &format!("REGISTER:{URI}"));
        let response = h(
            algorithm,
            &format!("{ha1_hex}:{NONCE}:00000001:{CNONCE}:auth:{ha2}"),
        );
        let ha1 = Ha1::from_password(algorithm, "u100042", REALM, "pw100042");
        let creds = DigestCredentials {
            username: "u100042",
            realm: REALM,
            nonce: NONCE,
            uri: URI,
            response: &response,
            algorithm: Some(name),
            cnonce: Some(CNONCE),
            qop: Some("auth"),
            nc: Some(1),
            nc_raw: Some("00000001"),
            opaque: None,
            userhash: false,
        };
        assert_eq!(verify(&creds, "REGISTER", &ha1), Verdict::Accepted);
        group.bench_function(name, |b| {
            b.iter(|| verify(black_box(&creds), black_box("REGISTER"), black_box(&ha1)))
        });
    }
    group.finish();
}

fn bench_nonce(c: &mut Criterion) {
    let issuer = NonceIssuer::new(NonceKeys::random(), NonceConfig::default());
    let nonce = issuer.mint(REALM, Some(SOURCE), NOW);
    assert!(matches!(
        issuer.check(&nonce, REALM, Some(SOURCE), NOW + 1),
        NonceStatus::Valid { .. }
    ));
    let mut group = c.benchmark_group("nonce");
    group.bench_function("mint", |b| {
        b.iter(|| issuer.mint(black_box(REALM), black_box(Some(SOURCE)), black_box(NOW)))
    });
    group.bench_function("check", |b| {
        b.iter(|| {
            issuer.check(
                black_box(&nonce),
                black_box(REALM),
                black_box(Some(SOURCE)),
                black_box(NOW + 1),
            )
        })
    });
    group.finish();
}

fn bench_replay(c: &mut Criterion) {
    let entries: usize = if benching() { 100_000 } else { 1_000 };
    let issuer = NonceIssuer::new(NonceKeys::random(), NonceConfig::default());
    let table = ReplayTable::new(ReplayConfig::default(), &issuer);
    let nonces: Vec<String> = (0..entries)
        .map(|_| issuer.mint(REALM, None, NOW))
        .collect();
    for n in &nonces {
        table
            .check_and_record(n, 1, "call-id@bench", Some(SOURCE))
            .expect("first use");
    }
    let mut group = c.benchmark_group("replay");
    // A re-registration reusing its nonce: the next nc of an existing entry.
    let mut i = 0usize;
    let mut nc = 1u32;
    group.bench_function(format!("next_nc_of_{entries}"), |b| {
        b.iter(|| {
            i += 1;
            if i == entries {
                i = 0;
                nc += 1;
            }
            table.check_and_record(black_box(&nonces[i]), nc + 1, "call-id@bench", Some(SOURCE))
        })
    });
    // A first use of a fresh nonce, which takes over the slot of an older one.
    group.bench_function("first_use", |b| {
        b.iter_batched(
            || issuer.mint(REALM, None, NOW),
            |nonce| table.check_and_record(black_box(&nonce), 1, "call-id@bench", Some(SOURCE)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_verify, bench_nonce, bench_replay);
criterion_main!(benches);
