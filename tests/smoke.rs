//! The harness works: the real binary registers alice over UDP and TCP.
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
