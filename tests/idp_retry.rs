//! The IdP retry on the real binary (issue 15 problem 6): with the token API on and its IdP
//! unreachable (a local listener that accepts each connection and closes it at once), the
//! refresher backs off (1 s, 2 s, 4 s, … with jitter) and logs one WARN naming the URL,
//! where it used to send about 10 requests a second and log two WARN lines every 200 ms.
//! The 30 s figure of the issue is shown on a virtual clock by the unit tests in
//! `src/oidc/retry.rs` and `src/oidc/issuer.rs`; this test watches the binary for 8 s.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config_on_ports, free_port, Options, Server};

#[test]
fn an_unreachable_idp_gets_a_few_requests_and_one_warn() {
    let idp = TcpListener::bind("127.0.0.1:0").unwrap();
    idp.set_nonblocking(true).unwrap();
    let idp_addr = idp.local_addr().unwrap();
    let (connections, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let counter = {
        let (connections, stop) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match idp.accept() {
                    // Closed at once: the request fails.
                    Ok((conn, _)) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let (sip, http) = (free_port(), free_port());
    let opts = Options {
        domain: "sso = \"enable\"\nissuers = [\"corp\"]",
        log_level: "info",
        ..Options::default()
    };
    let path = config_on_ports(&opts, dir.path(), sip, http, 0);
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!(
        "\n[token_api]\nstore_path = \":memory:\"\n\n[[issuers]]\nname = \"corp\"\n\
         issuer = \"http://{idp_addr}\"\naudience = \"urn:sipward:api\"\nalgorithms = [\"ES256\"]\n\
         client_ids = [\"softphone\"]\nlogin_client_id = \"softphone\"\n"
    ));
    std::fs::write(&path, config).unwrap();
    let started = Instant::now();
    let server = Server::start_with_file(path, dir, sip, http, None);

    // Watch for 8 s: attempts at about 0, 1, 3 and 7 s (jitter moves each by a fifth).
    let watch = Duration::from_secs(8);
    while started.elapsed() < watch {
        std::thread::sleep(Duration::from_millis(100));
    }
    let attempts = connections.load(Ordering::SeqCst);
    let log = server.stderr();
    stop.store(true, Ordering::SeqCst);
    counter.join().unwrap();
    let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "{attempts} requests in {:?}; WARN lines: {warns:#?}",
        started.elapsed()
    );
    assert!(
        (1..=5).contains(&attempts),
        "{attempts} requests in 8 s\n{log}"
    );
    assert_eq!(warns.len(), 1, "one WARN:\n{log}");
    let url = format!("http://{idp_addr}/.well-known/openid-configuration");
    assert!(
        warns[0].contains("identity provider unreachable"),
        "{}",
        warns[0]
    );
    assert!(
        warns[0].contains(&url),
        "the WARN names the URL: {}",
        warns[0]
    );
    assert!(log.len() < 8 * 1024, "a quiet log: {} bytes", log.len());
    let up = server.metric("sipward_oidc_issuer_up{issuer=\"corp\"}");
    assert_eq!(up, 0.0, "{}", server.metrics());
    let (status, _) = server.http_get("/readyz", None).unwrap();
    assert_eq!(status, 503, "not ready without the issuer's keys");
}
