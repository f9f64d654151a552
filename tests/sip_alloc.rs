//! Heap allocations of a full parse of a realistic REGISTER plus every view a registrar
//! reads: at most one (the header index), plus one `String` per `aor()` asked for.
//!
//! Why valgrind and not a counting `#[global_allocator]`: a `GlobalAlloc` impl needs
//! `unsafe impl`, and the package's `[lints] unsafe_code = "forbid"` cannot be relaxed by an
//! `#![allow]` in one file (E0453), nor per target. So the test re-runs its own binary under
//! `valgrind` (memcheck's "total heap usage" line) twice, with 0 and with `ITERS` iterations
//! of the workload, and divides the difference: the test harness's own allocations are the
//! same in both runs and cancel out. Without valgrind on PATH the test says so and passes.

use std::hint::black_box;
use std::io::Write as _;
use std::process::Command;

use bytes::Bytes;
use sipward::sip::{Contact, Limits, Message};

#[path = "shared/registrar_reads.rs"]
mod registrar_reads;
use registrar_reads::read_registrar_view;

/// The REGISTER of `benches/parse.rs`.
const REGISTER: &[u8] = include_bytes!("data/softphone-register.sip");

/// Set in the child: how many workload iterations `alloc_probe_child` runs.
const ITERS_ENV: &str = "SIPWARD_ALLOC_PROBE_ITERS";
/// Set in the child: also build the To AoR (`Uri::aor`, one `String`) each iteration.
const AOR_ENV: &str = "SIPWARD_ALLOC_PROBE_AOR";
const ITERS: u64 = 200;

/// Parse, run the server's header checks, and read what the registrar reads (the benchmark's
/// reads plus the ones dispatch adds: rport, Max-Forwards, q, Supported, User-Agent).
fn parse_and_read(bytes: &Bytes, limits: &Limits, with_aor: bool) -> usize {
    let msg = Message::parse(bytes.clone(), limits).expect("parse");
    msg.check_core_headers().expect("core headers");
    let via = msg.top_via().expect("via");
    let mut acc = via.host.len() + via.rport().map_or(0, |p| p.map_or(1, usize::from));
    acc += msg.max_forwards().expect("max-forwards").unwrap_or(0) as usize;
    for c in msg.contacts() {
        if let Contact::Addr(c) = c.expect("contact") {
            acc += c.q().expect("q").unwrap_or(0) as usize;
        }
    }
    acc += usize::from(msg.supports("outbound")) + msg.user_agent().map_or(0, str::len);
    acc + read_registrar_view(&msg, with_aor)
}

/// The workload, run only when the parent test starts this binary under valgrind.
#[test]
fn alloc_probe_child() {
    let Some(iters) = std::env::var(ITERS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let with_aor = std::env::var_os(AOR_ENV).is_some();
    let bytes = Bytes::from_static(REGISTER);
    let limits = Limits::default();
    for _ in 0..iters {
        black_box(parse_and_read(black_box(&bytes), &limits, with_aor));
    }
}

/// Total heap allocations of the child probe with `iters` iterations, per valgrind.
fn allocations(iters: u64, with_aor: bool) -> u64 {
    let exe = std::env::current_exe().expect("test binary path");
    let log = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=memcheck")
        .arg("--leak-check=no")
        .arg(format!("--log-file={}", log.path().display()))
        .arg(exe)
        .args(["--exact", "alloc_probe_child", "--test-threads=1", "-q"])
        .env(ITERS_ENV, iters.to_string());
    if with_aor {
        cmd.env(AOR_ENV, "1");
    } else {
        cmd.env_remove(AOR_ENV);
    }
    let out = cmd.output().expect("run valgrind");
    assert!(out.status.success(), "child failed: {out:?}");
    let text = std::fs::read_to_string(log.path()).expect("valgrind log");
    // "==123== total heap usage: 1,234 allocs, 1,230 frees, 98,765 bytes allocated"
    let line = text
        .lines()
        .find(|l| l.contains("total heap usage:"))
        .unwrap_or_else(|| panic!("no heap summary in valgrind log:\n{text}"));
    let n = line
        .split("total heap usage:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("alloc count");
    n.replace(',', "").parse().expect("alloc count is a number")
}

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Allocations per iteration, rounded to nearest (one-time lazy initialisation in the
/// first iteration rounds away); `None` without valgrind.
fn per_iteration(with_aor: bool) -> Option<u64> {
    if !valgrind_available() {
        // Required evidence for the message layer: CI (which installs valgrind through
        // tests/run) must never pass without it.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "valgrind is required under CI=true (tests/run installs it)"
        );
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "SKIPPED: valgrind not on PATH: allocation count NOT checked"
        );
        return None;
    }
    let base = allocations(0, with_aor);
    let loaded = allocations(ITERS, with_aor);
    let extra = loaded.saturating_sub(base);
    eprintln!("{extra} allocations over {ITERS} iterations (aor: {with_aor})");
    Some((extra + ITERS / 2) / ITERS)
}

#[test]
fn register_parse_and_views_allocate_only_the_header_index() {
    if let Some(n) = per_iteration(false) {
        assert!(
            n <= 1,
            "{n} heap allocations per parse-and-read, want at most 1"
        );
    }
}

#[test]
fn each_aor_is_one_more_allocation() {
    if let Some(n) = per_iteration(true) {
        assert!(
            n <= 2,
            "{n} heap allocations per parse-and-read with aor(), want at most 2"
        );
    }
}
