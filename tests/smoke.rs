//! The harness works: the in-process server registers alice over UDP and TCP, its logs are
//! captured like the binary's stderr, and `terminate` drains it.
mod common;
use common::*;

#[test]
fn register_over_udp_and_tcp_with_md5_and_sha256() {
    let server = Server::start(&Options::default());
    for proto in [Proto::Udp, Proto::Tcp] {
        for alg in ["MD5", "SHA-256"] {
            let mut c = server.client(proto);
            let r = register(&mut c, &Register::new("alice"), "alice-secret-1", alg);
            assert_eq!(r.status(), 200, "{proto:?} {alg}: {}", r.text);
            assert!(
                r.header("Contact").unwrap().contains("expires="),
                "{}",
                r.text
            );
            assert!(r.header("Date").is_some());
        }
    }
    assert!(server.metric("sipward_register_outcomes_total{outcome=\"ok\"}") >= 4.0);
}

/// The in-process server logs at the config's level into `stderr()`, with the addresses it
/// bound (kernel-chosen), and `terminate` ends it: Some(0), its thread gone, its port closed.
#[test]
fn in_process_server_logs_its_addresses_and_terminates_cleanly() {
    let mut server = Server::start(&Options {
        log_level: "info",
        ..Options::default()
    });
    assert_ne!(server.udp.port(), 0);
    assert_ne!(server.tcp.port(), 0);
    assert!(server.is_alive());
    let log = server.stderr();
    for addr in [server.udp, server.tcp] {
        assert!(
            log.lines()
                .any(|l| l.contains("INFO") && l.contains(&addr.to_string())),
            "{addr} is not in an info line of the log:\n{log}"
        );
    }
    assert_eq!(server.terminate(), Some(0), "{}", server.stderr());
    assert!(!server.is_alive());
    assert!(
        std::net::TcpStream::connect(server.tcp).is_err(),
        "the TCP listener is still open"
    );
}
