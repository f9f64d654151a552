//! End to end in a real browser (issue 21): headless Debian `chromium`, driven by npm
//! `playwright-core` (tests/browser/driver.mjs, pinned by its package-lock.json), opens the web
//! phone that the sipward binary serves under `/phone/`, enters `example.test`, signs in as
//! alice at the test IdP (tests/idp, its interactive page) through the pop-up with
//! Authorization Code + PKCE, obtains a device credential and registers over WSS (TLS with the
//! TEST-ONLY certificates, which the browser context is told to accept) with
//! JsSIP. Then SIPp as bob over UDP calls alice: the page shows the call and answers it, and
//! INVITE/200/ACK/BYE go through sipward (its proxied counters); the browser calls bob (a SIPp
//! callee registered over UDP) and hangs up; the page renews its credential at `refresh_after`
//! (a 60 s TTL) and registers again with it; sign-out in the page removes the binding (admin
//! bindings API, polled for at most a second). Screenshots of each step go to a folder under
//! the system temp folder, printed by the test.
//!
//! Needs `chromium`, `sipp`, Node, `npm ci` in tests/idp, tests/browser and web (plus
//! `npm run build --prefix web` for the JsSIP bundle); `tests/run` installs them all. Without
//! them the test says SKIPPED loudly, and fails under `CI=true`.

mod common;
mod token;

use common::*;
use token::*;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const BOB_PW: &str = "bob-secret-2";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Everything this test needs beyond Rust; missing parts fail under `CI=true`.
fn prerequisites() -> bool {
    let mut ok = require_tool("chromium", "chromium") && require_tool("sipp", "sip-tester");
    ok = ok && idp_available();
    let needed = [
        "tests/browser/node_modules/playwright-core",
        "web/vendor/jssip.min.js",
    ];
    for p in needed {
        if !repo(p).exists() {
            let msg = format!(
                "{p} is missing: run `npm ci --prefix tests/browser`, `npm ci --prefix web` and `npm run build --prefix web` (tests/run does)"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n**** SKIPPED: {msg}; this test did not run ****\n");
            ok = false;
        }
    }
    ok
}

/// The browser driver: one command per line, one answer line each.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start(shots: &Path) -> Browser {
        let mut child = Command::new("node")
            .arg(repo("tests/browser/driver.mjs"))
            .env("SHOTS_DIR", shots)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node tests/browser/driver.mjs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs `cmd`; its "ok …" answer, or a panic with the driver's error and sipward's log.
    fn run(&mut self, cmd: &str, server: &Server) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("driver answer");
        let line = line.trim_end().to_owned();
        assert!(
            line.starts_with("ok "),
            "browser: {cmd}: {line:?}\nsipward's log:\n{}",
            server.stderr()
        );
        line
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SIPp process running `scenario` once from `port`.
struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sipp {
    fn spawn(server: SocketAddr, scenario: &str, port: u16, fields: &str, extra: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("fields.csv");
        std::fs::write(&csv, format!("SEQUENTIAL\n{fields}\n")).unwrap();
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .arg("-sf")
            .arg(repo(&format!("tests/sipp/{scenario}")))
            .arg("-inf")
            .arg(&csv)
            .args(["-t", "u1", "-m", "1", "-l", "1"])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-nostdin", "-timeout", "90s", "-timeout_error"])
            .args(["-trace_msg", "-trace_err"])
            .args(extra)
            .arg(server.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipp");
        Sipp { child, dir }
    }

    fn expect_success(mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "sipp exited with {status}\n{}",
                    self.logs()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sipp did not finish\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sipp's log\n{}", self.logs());
        }
    }
}

fn auth(user: &str, pw: &str) -> String {
    format!("[authentication username={user} password={pw}]")
}

/// The bindings of `user@example.test` in the admin API.
fn bindings(server: &Server, user: &str) -> Vec<serde_json::Value> {
    let (status, body) = server
        .http_get(
            &format!("/admin/v1/bindings?aor={user}@{DOMAIN}"),
            Some(ADMIN_TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .and_then(|aors| aors.first())
        .and_then(|aor| aor["bindings"].as_array().cloned())
        .unwrap_or_default()
}

fn proxied(server: &Server, method: &str, outcome: &str) -> f64 {
    server.metric(&format!(
        "sipward_proxy_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}}"
    ))
}

/// SIP requests sipward received over `transport`.
fn received(server: &Server, method: &str, transport: &str) -> f64 {
    server.metric(&format!(
        "sipward_sip_requests_total{{method=\"{method}\",transport=\"{transport}\"}}"
    ))
}

#[test]
fn web_phone_signs_in_registers_over_websocket_and_calls_a_udp_phone() {
    if !prerequisites() {
        return;
    }
    let http_port = free_port();
    let ws_port = free_port();
    let origin = format!("http://127.0.0.1:{http_port}");
    let redirect = format!("{origin}/phone/callback.html");
    let idp = Idp::start_with(&[("IDP_WEB_PHONE_REDIRECTS", &redirect)]);

    // The token API server (tests/token's config) with the web phone and a WS listener.
    let sip_port = free_port();
    let ports = token::Ports {
        udp: sip_port,
        tcp: sip_port,
        http: http_port,
    };
    let dir = tempfile::tempdir().unwrap();
    // JsSIP 3.10 computes MD5 Digest only, and answers the last challenge of a 401: the web
    // phone's domain offers MD5 (web/README.md).
    // The shortest credential TTL (60 s), so the page renews at refresh_after (45 s) within the
    // test.
    let setup = Setup {
        token_api: "credential_ttl_secs = 60",
        algorithms: &["MD5"],
        accounts: &[("bob", BOB_PW, "device")],
        ..Setup::default()
    };
    let config = config_text(&idp.issuer, &setup, dir.path(), ports)
        .replacen(
            "[http]\n",
            &format!(
                "[http]\nserve_web_phone = true\nweb_phone_dir = \"{}\"\n",
                repo("web").display()
            ),
            1,
        )
        .replacen("[log]\nlevel = \"info\"", "[log]\nlevel = \"debug\"", 1)
        + &format!(
            "\n[tls]\ncert_file = \"{certs}/server.pem\"\nkey_file = \"{certs}/server.key\"\n\n\
             [[tls.listeners]]\naddr = \"127.0.0.1:{tls_port}\"\nclient_auth = \"off\"\n\n\
             [[ws.listeners]]\naddr = \"127.0.0.1:{ws_port}\"\ntls = true\norigins = [\"{origin}\"]\n",
            certs = dev_certs().display(),
            tls_port = free_port(),
        );
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, &config).unwrap();
    let server = Server::start_with_file(path, dir, sip_port, http_port, None);
    // The IdP's endpoints come from discovery, which readiness waits for.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .http_get("/readyz", None)
        .map(|(s, _)| s)
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "not ready: {}", server.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }

    let shots = std::env::temp_dir().join(format!("sipward-browser-{}", rand_token()));
    std::fs::create_dir_all(&shots).unwrap();
    eprintln!("browser screenshots: {}", shots.display());
    let mut browser = Browser::start(&shots);

    // Sign in and register over WSS (the TEST-ONLY certificate; the driver's browser context
    // ignores certificate errors, as it has no way to trust the test CA).
    browser.run(
        &format!("open {origin}/phone/?debug=1 {DOMAIN} alice"),
        &server,
    );
    let alice = bindings(&server, "alice");
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert_eq!(alice[0]["transport"], "wss", "{alice:?}");

    // bob (SIPp, UDP) calls alice's browser; the page answers; bob hangs up.
    let uac = Sipp::spawn(
        server.udp,
        "uac-call-webrtc.xml",
        free_port(),
        &format!("bob;alice;{}", auth("bob", BOB_PW)),
        &["-auth_uri", "alice@example.test"],
    );
    let answered = browser.run("answer", &server);
    assert!(answered.contains("bob@"), "{answered}");
    uac.expect_success(Duration::from_secs(60));
    // INVITE and BYE proxied with a 2xx; the 200's ACK came in over UDP (bob's) too.
    assert_eq!(
        proxied(&server, "INVITE", "2xx"),
        1.0,
        "{}",
        server.metrics()
    );
    assert_eq!(proxied(&server, "BYE", "2xx"), 1.0, "{}", server.metrics());
    assert!(
        received(&server, "ACK", "udp") >= 2.0,
        "{}",
        server.metrics()
    );

    // The browser calls bob (SIPp callee registered over UDP from its port) and hangs up.
    let bob_port = free_port();
    Sipp::spawn(
        server.udp,
        "reg-digest.xml",
        bob_port,
        &format!("bob;{};300", auth("bob", BOB_PW)),
        &["-auth_uri", DOMAIN],
    )
    .expect_success(Duration::from_secs(20));
    let uas = Sipp::spawn(server.udp, "uas-answer-webrtc.xml", bob_port, "bob", &[]);
    std::thread::sleep(Duration::from_millis(300));
    browser.run("call bob", &server);
    uas.expect_success(Duration::from_secs(30));
    assert_eq!(
        proxied(&server, "INVITE", "2xx"),
        2.0,
        "{}",
        server.metrics()
    );
    assert_eq!(proxied(&server, "BYE", "2xx"), 2.0, "{}", server.metrics());
    assert!(
        received(&server, "ACK", "wss") >= 1.0,
        "{}",
        server.metrics()
    );

    // Renewal before refresh_after: the same device, a new password, registered again (the
    // binding's CSeq moves on: JsSIP sent a new REGISTER, answered with the new password).
    let cseq = |b: &[serde_json::Value]| b.first().and_then(|b| b["cseq"].as_u64());
    let before = cseq(&bindings(&server, "alice")).expect("alice's binding");
    browser.run("renewed", &server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cseq(&bindings(&server, "alice")).unwrap_or(0) <= before {
        assert!(
            Instant::now() < deadline,
            "no REGISTER after the renewal: {:?}",
            bindings(&server, "alice")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        server.metric("sipward_token_exchanges_total{outcome=\"renewed\"}"),
        1.0,
        "{}",
        server.metrics()
    );
    let alice = bindings(&server, "alice");
    assert_eq!(
        alice.len(),
        1,
        "still one binding after the renewal: {alice:?}"
    );

    // Sign out: the device is deleted, and with it the binding.
    browser.run("signout", &server);
    let signed_out = Instant::now();
    while !bindings(&server, "alice").is_empty() {
        assert!(
            signed_out.elapsed() < Duration::from_secs(1),
            "binding still there a second after sign-out: {:?}",
            bindings(&server, "alice")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "binding gone {} ms after the page said signed out",
        signed_out.elapsed().as_millis()
    );
    let shots_taken = std::fs::read_dir(&shots).unwrap().count();
    assert!(
        shots_taken >= 11,
        "{shots_taken} screenshots in {}",
        shots.display()
    );
}
