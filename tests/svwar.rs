//! SIPVicious `svwar` (0.3.x) against the real binary with extensions 100, 200 and 555 (and
//! alice) provisioned: `-m REGISTER` and `-m INVITE` over `-e100-999` report no extension
//! (docs/testing.md E6).
//!
//! How svwar decides (svwar.py): it first sends the method for a random extension and keeps the
//! first line of the reply as the "bad user" fingerprint. Without `--force` it gives up at once
//! when that reply is 401/403/407 ("authentication request for an unknown extension"). With
//! `--force` it goes on and reports every extension whose first line differs; an extension
//! whose reply equals a 401/403/407 fingerprint is an "unknown response" and ends the scan.
//! So against a server that answers everyone alike, the forced scan compares the first
//! extension (100, provisioned) and stops; the runs with `-e200` and `-e555` compare the other
//! provisioned extensions. A scan that found something prints a table of extensions.
//!
//! To show that the output parsing would catch a finding, the same scan runs against a
//! deliberately leaky responder (404 for unknown users, 401 for 100/200/555), which svwar must
//! report. When `svwar` is missing the tests are skipped loudly, or fail when `CI=true`.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROVISIONED: &[&str] = &["100", "200", "555"];

struct Scan {
    args: String,
    found: BTreeSet<String>,
    found_nothing: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs svwar against `target` on loopback, bounded in time: `--maximumtime` stops it after
/// 5 s without a reply and the process is killed after 60 s regardless.
fn svwar(target: SocketAddr, extra: &[&str]) -> Scan {
    let local = free_port();
    let mut args: Vec<String> = vec![
        "-p".into(),
        target.port().to_string(),
        "-P".into(),
        local.to_string(),
        "-b".into(),
        "127.0.0.1".into(),
        "-x".into(),
        "127.0.0.1".into(),
        "-t".into(),
        "0.002".into(),
        "--maximumtime=5".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(target.ip().to_string());
    let started = Instant::now();
    let mut child = Command::new("svwar")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn svwar");
    let deadline = started + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("svwar {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Scan {
        args: args.join(" "),
        found: parse_table(&stdout),
        found_nothing: stderr.contains("found nothing"),
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// Extensions in svwar's result table (`| 100 | reqauth |` rows under an `Extension` header).
fn parse_table(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(str::trim)
                .collect();
            (cells.len() == 2 && cells[0] != "Extension").then(|| cells[0].to_string())
        })
        .collect()
}

fn assert_reports_nothing(scan: &Scan) {
    assert!(
        scan.found.is_empty() && scan.found_nothing && !scan.stdout.contains("Extension"),
        "svwar {} reported extensions {:?}\nstdout:\n{}\nstderr:\n{}",
        scan.args,
        scan.found,
        scan.stdout,
        scan.stderr
    );
}

#[test]
fn svwar_finds_no_extension_with_register_or_invite() {
    if !require_tool("svwar", "sipvicious") {
        return;
    }
    let accounts: &[Account<'_>] = &[
        ("100", "pw-100-not-guessable"),
        ("200", "pw-200-not-guessable"),
        ("555", "pw-555-not-guessable"),
        ("alice", "alice-secret-1"),
    ];
    let mut server = Server::start_binary(&Options {
        accounts,
        ..Options::default()
    });
    let domain_arg = format!("--domain={DOMAIN}");
    let mut runs: Vec<Vec<&str>> = Vec::new();
    for method in ["REGISTER", "INVITE"] {
        // Without --domain the URIs use 127.0.0.1 (our only domain's local address); with it,
        // REGISTER goes through the full registrar path to the Digest challenge.
        for domain in [None, Some(domain_arg.as_str())] {
            let base = |e: &'static str, force: bool| {
                let mut v = vec!["-m", method, e];
                if force {
                    v.push("--force");
                }
                v.extend(domain);
                v
            };
            runs.push(base("-e100-999", false));
            runs.push(base("-e100-999", true));
            runs.push(base("-e200", true));
            runs.push(base("-e555", true));
        }
    }
    let started = Instant::now();
    let target = server.udp;
    let scans: Vec<Scan> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|args| s.spawn(move || svwar(target, args)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for scan in &scans {
        eprintln!(
            "svwar {}: found {:?} in {:.1?}",
            scan.args, scan.found, scan.elapsed
        );
        assert_reports_nothing(scan);
    }
    let m = server.metrics();
    let registers = metric_value(
        &m,
        "sipward_sip_requests_total{method=\"REGISTER\",transport=\"udp\"}",
    );
    let invites = metric_value(
        &m,
        "sipward_sip_requests_total{method=\"INVITE\",transport=\"udp\"}",
    );
    eprintln!(
        "{} svwar runs in {:.1?}; sipward saw {registers} REGISTER and {invites} INVITE",
        scans.len(),
        started.elapsed()
    );
    // Each forced run compared at least the random probe and one provisioned extension.
    assert!(registers >= 12.0 && invites >= 12.0, "{m}");
    assert_eq!(server.admin_bindings(), "[]", "a scan created a binding");
    assert!(server.is_alive());
}

/// A leaky registrar: 404 for unknown users, 401 for the provisioned ones. svwar must report
/// exactly those, which shows that `parse_table` and `assert_reports_nothing` would catch a
/// server that leaks.
#[test]
fn svwar_output_parsing_catches_a_leaky_target() {
    if !require_tool("svwar", "sipvicious") {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let target = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let responder = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65535];
        while !stop2.load(Ordering::Relaxed) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut lines = req.split("\r\n");
            let Some(first) = lines.next() else { continue };
            if first.starts_with("ACK ") || first.starts_with("SIP/") {
                continue;
            }
            let copied: Vec<&str> = lines
                .take_while(|l| !l.is_empty())
                .filter(|l| {
                    let name = l
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    matches!(name.as_str(), "via" | "from" | "to" | "call-id" | "cseq")
                })
                .collect();
            let to = copied
                .iter()
                .find(|l| l.to_ascii_lowercase().starts_with("to:"))
                .copied()
                .unwrap_or("");
            let known = PROVISIONED
                .iter()
                .any(|u| to.contains(&format!("sip:{u}@")));
            let status = if known {
                "401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"leaky\", nonce=\"n\""
            } else {
                "404 Not Found"
            };
            let resp = format!(
                "SIP/2.0 {status}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                copied.join("\r\n")
            );
            let _ = sock.send_to(resp.as_bytes(), peer);
        }
    });
    let want: BTreeSet<String> = PROVISIONED.iter().map(|s| s.to_string()).collect();
    for method in ["REGISTER", "INVITE"] {
        let scan = svwar(target, &["-m", method, "-e100-999"]);
        eprintln!(
            "svwar {} (leaky target): found {:?} in {:.1?}",
            scan.args, scan.found, scan.elapsed
        );
        assert_eq!(
            scan.found, want,
            "{}\nstdout:\n{}\nstderr:\n{}",
            scan.args, scan.stdout, scan.stderr
        );
        assert!(!scan.found_nothing);
    }
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
}
