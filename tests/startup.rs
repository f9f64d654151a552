//! Start-up that fails loudly (issue 15): every socket is bound before anything is served,
//! and a listener that cannot be bound ends the real binary with exit code 1 and one line
//! on stderr naming the config key, the address and the OS error, once.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_on_ports, free_port, Options};

/// The listener a test takes before sipward starts.
#[derive(Clone, Copy, Debug)]
enum Taken {
    Udp,
    Tcp,
    Tls,
    Http,
}

/// Runs the binary with every listener on loopback (UDP, TCP, TLS, HTTP) while another socket
/// holds the one `taken` names; returns (exit code, stderr, the taken address, time to exit).
fn start_with_taken(taken: Taken) -> (Option<i32>, String, SocketAddr, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (sip, http, tls) = (free_port(), free_port(), free_port());
    let opts = Options {
        tls: Some("optional"),
        ..Options::default()
    };
    let config = config_on_ports(&opts, dir.path(), sip, http, tls);
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (addr, _holder): (SocketAddr, Box<dyn std::any::Any>) = match taken {
        Taken::Udp => (at(sip), Box::new(UdpSocket::bind(at(sip)).unwrap())),
        Taken::Tcp => (at(sip), Box::new(TcpListener::bind(at(sip)).unwrap())),
        Taken::Tls => (at(tls), Box::new(TcpListener::bind(at(tls)).unwrap())),
        Taken::Http => (at(http), Box::new(TcpListener::bind(at(http)).unwrap())),
    };
    let stderr_path = dir.path().join("stderr.log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipward"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn sipward");
    // Bounded wait: a half-started process (the bug of issue 15) never exits.
    let deadline = started + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (code, stderr, addr, elapsed)
}

fn assert_fails_loudly(taken: Taken, key: &str) {
    let (code, stderr, addr, elapsed) = start_with_taken(taken);
    eprintln!("{taken:?} taken: exit {code:?} after {elapsed:?}; stderr: {stderr:?}");
    assert_eq!(code, Some(1), "{taken:?}: exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{taken:?}: one line on stderr, got:\n{stderr}"
    );
    let line = lines[0];
    assert!(
        line.contains(&format!("{key} {addr}")),
        "{taken:?}: the line names {key} and {addr}: {line}"
    );
    assert_eq!(
        line.matches("os error 98").count(),
        1,
        "{taken:?}: the OS error said once: {line}"
    );
    assert_eq!(
        line.matches("Address already in use").count(),
        1,
        "{taken:?}: the OS error said once: {line}"
    );
}

#[test]
fn a_taken_udp_port_ends_start_up_with_one_line_and_exit_1() {
    assert_fails_loudly(Taken::Udp, "sip.udp");
}

#[test]
fn a_taken_tcp_port_ends_start_up_with_one_line_and_exit_1() {
    assert_fails_loudly(Taken::Tcp, "sip.tcp");
}

#[test]
fn a_taken_tls_port_ends_start_up_with_one_line_and_exit_1() {
    assert_fails_loudly(Taken::Tls, "tls.listeners");
}

/// The case of issue 15 problem 5: the HTTP listener is bound last, after UDP, TCP and TLS
/// bound fine; the process used to hang half-started with its UDP threads in `recvfrom`.
#[test]
fn a_taken_http_port_ends_start_up_with_one_line_and_exit_1() {
    assert_fails_loudly(Taken::Http, "http.listen");
}
