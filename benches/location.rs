//! Location service costs with 100 000 AoRs in the table: refreshing a binding (the steady
//! state of re-registration), adding and removing an AoR, looking one up, and purging expired
//! bindings; and the memory one binding costs (RSS growth over 100 000 bindings, printed once).
//!
//! Run with `cargo bench --bench location`. Under `cargo test --all-targets` Criterion runs each
//! function once, on 1000 AoRs.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sipward::registrar::{Aor, ContactInput, Location, RegisterInput, RegistrarPolicy, Transport};

fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn population() -> usize {
    if benching() {
        100_000
    } else {
        1_000
    }
}

/// What the side-by-side benchmark's phones register over UDP: contact
/// `sip:u<N>@<ip>:<port>;transport=udp`, a generator-style Call-ID, no User-Agent.
struct Phone {
    aor: Aor,
    contact: String,
    call_id: String,
}

fn phone(n: usize) -> Phone {
    Phone {
        aor: Aor::parse(&format!("sip:u{}@bench.test", 100_000 + n)).expect("a SIP AoR"),
        contact: format!(
            "sip:u{}@10.{}.{}.{}:5060",
            100_000 + n,
            n >> 16 & 255,
            n >> 8 & 255,
            n & 255
        ),
        call_id: format!("{n:016x}-reg@10.0.0.1"),
    }
}

fn register(loc: &Location, p: &Phone, cseq: u32, expires: u64, now: Instant) {
    let contacts = [ContactInput {
        uri: &p.contact,
        uri_key: &p.contact,
        params: "",
        expires: None,
        q: None,
        instance: None,
        reg_id: None,
    }];
    let input = RegisterInput {
        aor: &p.aor,
        call_id: &p.call_id,
        cseq,
        star: false,
        contacts: &contacts,
        expires_header: Some(expires),
        path: &[],
        path_supported: false,
        source: SocketAddr::from(([10, 0, 0, 1], 5060)),
        transport: Transport::Udp,
        flow: None,
        user_agent: None,
        max_expires_cap: None,
        credential: None,
    };
    loc.register(&input, now).expect("register");
}

/// A location with every phone registered once. Each registration gets its own AoR
/// allocation, as a REGISTER parsed off the wire does (the table then keeps that one).
fn filled(phones: &[Phone], expires: u64, now: Instant) -> Location {
    let loc = Location::new(RegistrarPolicy {
        min_expires: 1,
        ..RegistrarPolicy::default()
    });
    for p in phones {
        let fresh = Phone {
            aor: Aor::parse(p.aor.as_str()).expect("a SIP AoR"),
            contact: p.contact.clone(),
            call_id: p.call_id.clone(),
        };
        register(&loc, &fresh, 1, expires, now);
    }
    loc
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn bench_location(c: &mut Criterion) {
    let n = population();
    let now = Instant::now();
    // The phones exist before the first reading, so the growth is the location's alone.
    let phones: Vec<Phone> = (0..n).map(phone).collect();
    let before = rss_bytes();
    let loc = filled(&phones, 3600, now);
    let after = rss_bytes();
    eprintln!(
        "location: {n} AoRs with one binding each: RSS grew {:.0} bytes per binding (AoR entry, binding, expiry index)",
        (after as f64 - before as f64) / n as f64
    );
    assert_eq!(loc.binding_count(), n);

    let mut group = c.benchmark_group(format!("location_{n}_aors"));
    let mut i = 0usize;
    let mut cseq = 2u32;
    group.bench_function("refresh", |b| {
        b.iter(|| {
            i += 1;
            if i == n {
                i = 0;
                cseq += 1;
            }
            register(&loc, &phones[i], cseq, 3600, now);
        })
    });
    let mut j = 0usize;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            j = (j + 7919) % n;
            black_box(loc.lookup(&phones[j].aor, now))
        })
    });
    let extra = phone(n + 1);
    let mut k = 0u32;
    group.bench_function("add_then_remove_aor", |b| {
        b.iter(|| {
            k += 1;
            register(&loc, &extra, k, 3600, now);
            loc.remove_aor(&extra.aor)
        })
    });
    group.finish();

    // Expiry: purge 10 000 due bindings from a table that also holds `n` live ones.
    let due = n / 10;
    let mut group = c.benchmark_group(format!("location_{n}_aors"));
    group.sample_size(10);
    group.bench_function(format!("purge_{due}_expired"), |b| {
        b.iter_batched(
            || {
                let short: Vec<Phone> = (n + 10..n + 10 + due).map(phone).collect();
                for p in &short {
                    register(&loc, p, 1, 1, now);
                }
                short
            },
            |short| {
                let purged = loc.purge(now + Duration::from_secs(2));
                assert_eq!(purged, short.len());
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_location);
criterion_main!(benches);
