//! The open-files limit (issue 18) on the real binary started under `ulimit -n 256` (soft and
//! hard), with the default `sip.tcp_max_connections = 10000`: the start reports the limit and
//! a WARN naming the key and the lowered cap; 300 idle TCP connections fill the lowered cap
//! (the rest wait in the backlog) and `/healthz` and `/metrics` still answer; the log holds
//! no flood of accept failures. Under a soft limit of 256 with a higher hard limit, the
//! limit is raised and nothing is capped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_sipward");

struct Limited {
    child: Child,
    log: PathBuf,
    sip: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `ulimit` run first (`-n 256`, or `-Sn 256`); returns once
/// `/healthz` answers.
fn start_under(ulimit: &str) -> Limited {
    let dir = tempfile::tempdir().unwrap();
    let (sip, http) = (free_port(), free_port());
    let opts = Options {
        log_level: "info",
        ..Options::default()
    };
    let config = config_on_ports(&opts, dir.path(), sip, http, free_port());
    let log = dir.path().join("stderr.log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit {ulimit} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(BIN)
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn sh");
    let s = Limited {
        child,
        log,
        sip: SocketAddr::from(([127, 0, 0, 1], sip)),
        http: SocketAddr::from(([127, 0, 0, 1], http)),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(s.http, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "not healthy:\n{}", read(&s.log));
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// (status, body); status 0 when no answer came.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

#[test]
fn under_256_descriptors_the_tcp_cap_is_lowered_and_health_still_answers() {
    let s = start_under("-n 256");
    let log = read(&s.log);
    assert!(log.contains("open files limit"), "{log}");
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("open-files limit"))
        .unwrap_or_else(|| panic!("no WARN about the limit:\n{log}"));
    assert!(warn.contains("sip.tcp_max_connections"), "{warn}");
    assert!(warn.contains("limit=256"), "{warn}");
    assert!(warn.contains("tcp_max_connections=144"), "{warn}");

    // More idle connections than the lowered cap: the cap fills, the rest wait.
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(c) = TcpStream::connect_timeout(&s.sip, Duration::from_secs(2)) {
            held.push(c);
        }
    }
    assert!(held.len() >= 200, "{} connections", held.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, metrics) = get(s.http, "/metrics");
        assert_eq!(status, 200, "metrics at the limit");
        if metric_value(&metrics, "sipward_tcp_connections") >= 144.0 {
            assert_eq!(metric_value(&metrics, "sipward_tcp_connections"), 144.0);
            assert_eq!(metric_value(&metrics, "process_max_fds"), 256.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cap never filled:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // At the connection cap, the health endpoint answers (several probes in a row).
    for _ in 0..20 {
        assert_eq!(get(s.http, "/healthz"), (200, "ok\n".to_owned()));
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = read(&s.log);
    let failures = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(failures <= 1, "{failures} accept failure lines:\n{log}");
    let (_, metrics) = get(s.http, "/metrics");
    assert_eq!(
        metric_value(&metrics, "sipward_sip_accept_failures_total"),
        0.0
    );
    drop(held);
}

#[test]
fn a_low_soft_limit_is_raised_to_the_hard_limit() {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("ulimit -Hn");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let s = start_under("-Sn 256");
    let log = read(&s.log);
    let line = log
        .lines()
        .find(|l| l.contains("open files limit"))
        .unwrap_or_else(|| panic!("no limit line:\n{log}"));
    assert!(line.contains("raised_from=256"), "{line}");
    if hard != "unlimited" {
        assert!(line.contains(&format!("soft={hard}")), "{line}");
    }
    let needed = 10_000 + 1024 + 64;
    if hard.parse::<u64>().is_ok_and(|h| h >= needed) {
        assert!(!log.contains("open-files limit is below"), "{log}");
    }
    let (_, metrics) = get(s.http, "/metrics");
    assert!(
        metric_value(&metrics, "process_max_fds") > 256.0,
        "{metrics}"
    );
}
