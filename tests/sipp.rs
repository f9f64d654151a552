//! SIPp against the real binary: 1000 users from an injection file register with
//! REGISTER → 401 → REGISTER with MD5 Digest → 200 (scenario `tests/sipp/reg-digest.xml`,
//! adapted from `the Kamailio benchmark peer's reg-digest.xml`), over UDP and over TCP, with 0
//! failed calls. The bindings then show in the `sipward_bindings` gauge and expire on time.
//!
//! SIPp 3.6 (Debian sip-tester) only does MD5 Digest, so MD5 is the first algorithm offered.
//! When `sipp` is missing the tests are skipped loudly, or fail when `CI=true`.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USERS: usize = 1000;
const RATE: u32 = 250;
/// Expires asked for by the scenario. SIPp sends all 1000 in about 4 s, well inside it, so
/// the gauge must show all of them at once.
const EXPIRES: u64 = 12;
/// registrar.purge_interval_secs (the default).
const PURGE_SECS: u64 = 1;
const SLACK: Duration = Duration::from_secs(3);

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/reg-digest.xml")
}

fn accounts() -> Vec<(String, String)> {
    (0..USERS)
        .map(|n| (format!("u{}", 1000 + n), format!("pw-{}-sipp", 1000 + n)))
        .collect()
}

/// The SIPp injection file: `user;[authentication username=… password=…];expires`.
fn write_injection(dir: &Path, accounts: &[(String, String)]) -> PathBuf {
    let mut csv = String::from("SEQUENTIAL\n");
    for (u, p) in accounts {
        csv.push_str(&format!(
            "{u};[authentication username={u} password={p}];{EXPIRES}\n"
        ));
    }
    let path = dir.join("users.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

struct SippRun {
    exit: Option<i32>,
    successful: u64,
    failed: u64,
    elapsed: Duration,
    stats_tail: String,
    stderr: String,
}

/// The value of a column in the last row of a SIPp `-stf` statistics CSV.
fn stat(header: &str, row: &str, column: &str) -> Option<u64> {
    let i = header.split(';').position(|c| c == column)?;
    row.split(';').nth(i)?.trim().parse().ok()
}

fn run_sipp(server: &Server, transport: &str, work: &Path, injection: &Path) -> SippRun {
    let stats = work.join(format!("stats-{transport}.csv"));
    let port = free_port();
    let started = Instant::now();
    let out = Command::new("sipp")
        .current_dir(work)
        .arg("-sf")
        .arg(scenario())
        .arg("-inf")
        .arg(injection)
        .args(["-t", transport])
        .args(["-m", &USERS.to_string(), "-r", &RATE.to_string()])
        .args(["-l", "500"])
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        // SIPp's Digest uri defaults to "sip:<remote ip>:<port>"; make it the Request-URI,
        // which sipward requires (a different uri gets 400 Digest URI Mismatch).
        .args(["-auth_uri", DOMAIN])
        .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
        .args(["-recv_timeout", "10s"])
        .args(["-trace_stat", "-fd", "1"])
        .arg("-stf")
        .arg(&stats)
        .arg(server.udp.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run sipp");
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&stats).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or("").to_string();
    let last = lines.next_back().unwrap_or("").to_string();
    SippRun {
        exit: out.status.code(),
        successful: stat(&header, &last, "SuccessfulCall(C)").unwrap_or(0),
        failed: stat(&header, &last, "FailedCall(C)").unwrap_or(u64::MAX),
        elapsed,
        stats_tail: format!("{header}\n{last}"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `transport` is SIPp's `-t` mode; `label` the transport sipward records.
fn register_1000(transport: &str, label: &str) {
    if !require_tool("sipp", "sip-tester") {
        return;
    }
    let owned = accounts();
    let borrowed: Vec<(&str, &str)> = owned
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    // TCP bindings would vanish when SIPp closes its connection at exit
    // (remove_bindings_on_close); keep them so that their expiry can be observed.
    let registrar = format!(
        "min_expires = 1\ndefault_expires = {EXPIRES}\npurge_interval_secs = {PURGE_SECS}\n\
         remove_bindings_on_close = false"
    );
    let mut server = Server::start_binary(&Options {
        accounts: &borrowed,
        algorithms: &["MD5", "SHA-256"],
        registrar: &registrar,
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    let injection = write_injection(work.path(), &owned);

    let t0 = Instant::now();
    let run = run_sipp(&server, transport, work.path(), &injection);
    let sipp_done = Instant::now();
    let rate = run.successful as f64 / run.elapsed.as_secs_f64();
    eprintln!(
        "sipp -t {transport}: exit {:?}, {} successful, {} failed, {:.1?} ({rate:.0} registrations/s)",
        run.exit, run.successful, run.failed, run.elapsed
    );
    assert_eq!(
        (run.exit, run.successful, run.failed),
        (Some(0), USERS as u64, 0),
        "sipp -t {transport}: statistics\n{}\nstderr:\n{}\nsipward stderr:\n{}",
        run.stats_tail,
        run.stderr,
        server.stderr()
    );
    assert!(server.is_alive());
    assert!(
        run.elapsed < Duration::from_secs(EXPIRES - 2),
        "the SIPp run took {:.1?}, too close to Expires {EXPIRES} s to see all bindings at once",
        run.elapsed
    );

    // Every user has its binding at once (all were sent well within EXPIRES).
    let ok = server.metric("sipward_register_outcomes_total{outcome=\"ok\"}");
    assert_eq!(ok, USERS as f64, "register outcomes ok");
    let (bindings, _) = server.wait_metric("sipward_bindings", Duration::from_secs(2), |v| {
        v == USERS as f64
    });
    assert_eq!(
        bindings,
        USERS as f64,
        "sipward_bindings after the run (t+{:.1?})",
        t0.elapsed()
    );
    assert_eq!(server.metric("sipward_aors"), USERS as f64);
    let dump = server.admin_bindings();
    assert!(
        dump.contains("\"aor\":\"sip:u1000@example.test\""),
        "{dump:.300}"
    );
    assert!(
        dump.contains(&format!("\"transport\":\"{label}\"")),
        "{dump:.300}"
    );

    // They expire on time: none before the first could (t0 + EXPIRES, less a second of
    // rounding), all by the last one's expiry plus one purge interval and some slack.
    let earliest = t0 + Duration::from_secs(EXPIRES) - Duration::from_secs(1);
    let latest = sipp_done + Duration::from_secs(EXPIRES + PURGE_SECS) + SLACK;
    let (left, _) = server.wait_metric(
        "sipward_bindings",
        latest.saturating_duration_since(Instant::now()),
        |v| v == 0.0,
    );
    let gone = Instant::now();
    assert_eq!(left, 0.0, "bindings left at t+{:.1?}", t0.elapsed());
    assert!(
        gone >= earliest,
        "bindings gone at t+{:.1?}, before Expires {EXPIRES} s",
        gone - t0
    );
    eprintln!(
        "sipp -t {transport}: all {USERS} bindings gone {:.1?} after the SIPp run ended ({:.1?} after it started; Expires {EXPIRES} s)",
        gone - sipp_done,
        gone - t0
    );
    assert_eq!(server.metric("sipward_aors"), 0.0);
    assert!(server.is_alive());
}

#[test]
fn sipp_registers_1000_users_over_udp() {
    register_1000("u1", "udp");
}

#[test]
fn sipp_registers_1000_users_over_tcp() {
    register_1000("t1", "tcp");
}
