//! What an operator's tools read from sipward (docs/testing.md §O): the failed-authentication
//! log line against the shipped fail2ban filter (`fail2ban-regex`), and the metrics scrape
//! right after start (`promtool check metrics`). The binary, real sockets, real tools; a missing
//! tool skips loudly, or fails when `CI=true` (tests/run installs both).
mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/fail2ban/filter.d/sipward.conf"
);

/// Runs `fail2ban-regex LOG FILTER`; returns (matched lines, whole output).
fn fail2ban_matches(log: &Path) -> (u64, String) {
    let out = Command::new("fail2ban-regex")
        .arg(log)
        .arg(FILTER)
        .output()
        .expect("run fail2ban-regex");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fail2ban-regex failed:\n{text}");
    // "Lines: 12 lines, 0 ignored, 6 matched, 6 missed"
    let matched = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with(" matched")))
        .and_then(|p| p.trim_end_matches(" matched").trim().parse().ok())
        .unwrap_or_else(|| panic!("no match count in fail2ban-regex output:\n{text}"));
    (matched, text)
}

/// Polls the server's log until it holds `n` failed-authentication lines.
fn wait_for_failure_lines(server: &Server, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.stderr();
        let count = log.matches("authentication failed").count();
        if count >= n || Instant::now() > deadline {
            assert_eq!(count, n, "failed-authentication lines:\n{log}");
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// O1: every refused REGISTER (wrong password of a known user, any password of an unknown
/// one) gives one INFO line that the shipped filter matches with the client's address; a
/// successful registration gives none; no secret is logged; no colour codes in a file.
#[test]
fn o1_fail2ban_filter_matches_each_refused_register() {
    if !require_tool("fail2ban-regex", "fail2ban") {
        return;
    }
    let server = Server::start_binary(&Options {
        log_level: "info",
        ..Options::default()
    });
    let mut c = server.client(Proto::Udp);
    // A success first: it must not be matched.
    let ok = register(&mut c, &Register::new("bob"), "bob-secret-2", "MD5");
    assert_eq!(ok.status(), 200, "{}", ok.text);

    let wrong = ["guess-1", "guess-2", "guess-3", "guess-4"];
    for pw in wrong {
        let r = register(&mut c, &Register::new("alice"), pw, "MD5");
        assert_eq!(r.status(), 401, "{}", r.text);
    }
    let r = register(&mut c, &Register::new("nobody"), "guess-5", "MD5");
    assert_eq!(r.status(), 401, "{}", r.text);
    let n = wrong.len() + 1;

    let log = wait_for_failure_lines(&server, n);
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    for secret in [
        "guess-",
        "alice-secret-1",
        "bob-secret-2",
        "response=",
        "nonce=",
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    for l in &lines {
        assert!(
            l.contains(" INFO sipward::auth: authentication failed source=127.0.0.1 reason=wrong_response method=REGISTER user=\""),
            "{l}"
        );
    }
    // Known and unknown users: the same words, only the name differs.
    assert!(lines.iter().any(|l| l.ends_with("user=\"alice\"")), "{log}");
    assert!(
        lines.iter().any(|l| l.ends_with("user=\"nobody\"")),
        "{log}"
    );

    let path = server.dir.path().join("stderr.log");
    let (matched, out) = fail2ban_matches(&path);
    println!("fail2ban-regex (file): {matched} matched of {n} refused");
    assert_eq!(matched, n as u64, "{out}");
    assert_eq!(banned_ips(&path), vec!["127.0.0.1"; n], "{out}");

    // The same lines as the journal backend shows them (host, unit[pid]: before the message).
    let journal = server.dir.path().join("journal.log");
    let prefixed: String = lines
        .iter()
        .map(|l| {
            let stamp = &l[..l.find(' ').unwrap()];
            format!("{stamp} host sipward[4242]: {l}\n")
        })
        .collect();
    std::fs::write(&journal, prefixed).unwrap();
    let (matched, out) = fail2ban_matches(&journal);
    assert_eq!(matched, n as u64, "{out}");
}

/// O2: a username that tries to forge a second line or another source is escaped: the
/// filter still sees one failure from the real source, never the forged address.
#[test]
fn o2_forged_username_cannot_inject_a_source() {
    if !require_tool("fail2ban-regex", "fail2ban") {
        return;
    }
    let server = Server::start_binary(&Options {
        log_level: "info",
        ..Options::default()
    });
    let mut c = server.client(Proto::Udp);
    let forged = "x\\\" source=192.0.2.9 reason=wrong_response method=REGISTER user=\\\"";
    let reg = Register::new("alice");
    let first = c.request(&reg.build(&c)).expect("401");
    assert_eq!(first.status(), 401, "{}", first.text);
    let next = with_credentials(&reg, "MD5", forged, "guess", &first.nonce());
    let r = c.request(&next.build(&c)).expect("final response");
    assert_eq!(r.status(), 401, "{}", r.text);
    let log = wait_for_failure_lines(&server, 1);
    let (matched, out) = fail2ban_matches(&server.dir.path().join("stderr.log"));
    assert_eq!(matched, 1, "{out}\n{log}");
    assert_eq!(
        banned_ips(&server.dir.path().join("stderr.log")),
        ["127.0.0.1"],
        "{log}"
    );
}

/// O4: a refused credential on another method than REGISTER (a MESSAGE through the proxy,
/// wrong password in Proxy-Authorization, answered 407) logs the same line, matched too.
#[test]
fn o4_a_wrong_password_on_a_proxied_message_is_logged_and_matched() {
    if !require_tool("fail2ban-regex", "fail2ban") {
        return;
    }
    let server = Server::start_binary(&Options {
        log_level: "info",
        ..Options::default()
    });
    let mut c = server.client(Proto::Udp);
    let ruri = format!("sip:bob@{DOMAIN}");
    let message = |c: &Client, cseq: u32, auth: Option<&str>| {
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "MESSAGE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=f1\r\nTo: <{ruri}>\r\n\
             Call-ID: o4-{}\r\nCSeq: {cseq} MESSAGE\r\n{auth}Content-Length: 0\r\n\r\n",
            c.local,
            rand_token(),
            c.local.port()
        )
    };
    let first = c.request(&message(&c, 1, None)).expect("407");
    assert_eq!(first.status(), 407, "{}", first.text);
    let auth = authorization(
        "MD5",
        "alice",
        "not-her-password",
        "MESSAGE",
        &ruri,
        &first.nonce(),
        1,
        &rand_token(),
    );
    let r = c.request(&message(&c, 2, Some(&auth))).expect("407");
    assert_eq!(r.status(), 407, "{}", r.text);
    let log = wait_for_failure_lines(&server, 1);
    assert!(
        log.contains("authentication failed source=127.0.0.1 reason=wrong_response method=MESSAGE user=\"alice\""),
        "{log}"
    );
    let path = server.dir.path().join("stderr.log");
    let (matched, out) = fail2ban_matches(&path);
    assert_eq!(matched, 1, "{out}");
    assert_eq!(banned_ips(&path), ["127.0.0.1"], "{log}");
}

/// The address of each match (`fail2ban-regex -o ip`), what fail2ban would ban.
fn banned_ips(log: &Path) -> Vec<String> {
    let out = Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(log)
        .arg(FILTER)
        .output()
        .expect("run fail2ban-regex");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// O3: a scrape right after start holds every labelled family at 0 for its known label
/// values and `sipward_build_info{version,commit} 1`, and `promtool check metrics` finds
/// nothing to say about it.
#[test]
fn o3_metrics_at_start_are_complete_and_promtool_clean() {
    let server = Server::start_binary(&Options::default());
    let text = server.metrics();
    for series in [
        "sipward_sip_requests_total{method=\"REGISTER\",transport=\"udp\"}",
        "sipward_sip_requests_total{method=\"INVITE\",transport=\"tcp\"}",
        "sipward_sip_responses_sent_total{class=\"2xx\",transport=\"udp\"}",
        "sipward_register_outcomes_total{outcome=\"ok\"}",
        "sipward_register_outcomes_total{outcome=\"auth_failed\"}",
        "sipward_auth_failures_total{reason=\"wrong_response\"}",
        "sipward_sip_dropped_total{reason=\"throttled\"}",
        "sipward_tls_handshakes_total{outcome=\"failed_verification\"}",
        "sipward_tls_cert_reloads_total{outcome=\"failed\"}",
        "sipward_proxy_requests_total{method=\"INVITE\",outcome=\"2xx\"}",
        "sipward_keepalives_total{kind=\"stun_binding\"}",
        "sipward_register_duration_seconds_count",
        "sipward_proxy_transaction_duration_seconds_count",
        "sipward_tls_handshake_duration_seconds_count",
        "sipward_register_duration_seconds_bucket{le=\"0.001\"}",
        "sipward_http_requests_total{class=\"2xx\",route=\"admin_bindings\"}",
        "sipward_http_requests_total{class=\"5xx\",route=\"credentials\"}",
        "sipward_http_requests_total{class=\"4xx\",route=\"other\"}",
    ] {
        let line = format!("{series} 0");
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let info = text
        .lines()
        .find(|l| l.starts_with("sipward_build_info{"))
        .unwrap_or_else(|| panic!("no sipward_build_info:\n{text}"));
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(info.contains(&version), "{info}");
    assert!(
        info.contains("commit=\"") && !info.contains("commit=\"\""),
        "{info}"
    );
    assert!(info.ends_with("} 1"), "{info}");
    // The process collector: this process's descriptors and start time.
    assert!(metric_value(&text, "process_open_fds") > 0.0, "{text}");
    assert!(metric_value(&text, "process_max_fds") > 0.0, "{text}");
    assert!(
        metric_value(&text, "process_start_time_seconds") > 1.0e9,
        "{text}"
    );
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    // The caps the alert rules compare with (contrib/prometheus): the default
    // sip.max_transactions, and no store queue without a durable store.
    assert_eq!(
        metric_value(&text, "sipward_transactions_max"),
        sipward::transaction::DEFAULT_MAX_TRANSACTIONS as f64
    );
    assert_eq!(metric_value(&text, "sipward_location_store_queue_max"), 0.0);
    assert!(
        text.contains("\nsipward_location_store_queue_max 0\n"),
        "{text}"
    );

    if !require_tool("promtool", "prometheus") {
        return;
    }
    let scrape = server.dir.path().join("metrics.txt");
    std::fs::write(&scrape, &text).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("promtool check metrics < \"$1\"")
        .arg("sh")
        .arg(&scrape)
        .output()
        .expect("run promtool");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!(
        "promtool check metrics: exit {:?}, output {said:?}",
        out.status.code()
    );
    assert!(out.status.success(), "promtool check metrics:\n{said}");
    assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
}

/// O5: the latency histograms and the HTTP request counter move with real traffic: a REGISTER
/// (challenge and 200) is two observations, a TLS handshake one, and HTTP requests are
/// counted by route and status class (an unknown path as `other`, never by its text).
#[test]
fn o5_histograms_and_http_requests_count_real_traffic() {
    let server = Server::start_binary(&Options {
        tls: Some("off"),
        ..Options::default()
    });
    let mut c = Client::new(Proto::Udp, server.udp);
    let reg = Register::new("alice");
    assert_eq!(
        register(&mut c, &reg, "alice-secret-1", "MD5").status(),
        200
    );
    assert_eq!(
        server.metric("sipward_register_duration_seconds_count"),
        2.0
    );
    assert_eq!(
        server.metric("sipward_register_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );

    let config = tls_client_config(&dev_certs().join("ca.pem"), None);
    let tls = server.tls.expect("a TLS listener");
    let mut stream = tls_connect(tls, config).expect("TLS handshake");
    use std::io::Write as _;
    stream.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("sipward_tls_handshake_duration_seconds_count") < 1.0 {
        assert!(Instant::now() < deadline, "no TLS handshake observed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        server.metric("sipward_tls_handshake_duration_seconds_count"),
        1.0
    );

    let (status, _) = server
        .http_get("/admin/v1/bindings", Some(ADMIN_TOKEN))
        .expect("admin");
    assert_eq!(status, 200);
    let (status, _) = server.http_get("/admin/v1/bindings", None).expect("admin");
    assert_eq!(status, 401);
    let (status, _) = server.http_get("/wp-login.php", None).expect("scan");
    assert_eq!(status, 404);
    let text = server.metrics();
    for (series, n) in [
        (
            "sipward_http_requests_total{class=\"2xx\",route=\"admin_bindings\"}",
            1.0,
        ),
        (
            "sipward_http_requests_total{class=\"4xx\",route=\"admin_bindings\"}",
            1.0,
        ),
        (
            "sipward_http_requests_total{class=\"4xx\",route=\"other\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(&text, series), n, "{series}");
    }
    assert!(!text.contains("wp-login"), "no series names a path");
}
