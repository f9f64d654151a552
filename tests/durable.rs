//! Durable registrations (issue 16) on the real binary with `registrar.persistence =
//! "sqlite"`: bindings survive `kill -9` and SIGTERM with their remaining expiry, a UDP phone
//! is called at once after the restart, and under a continuous REGISTER load a `kill -9` at a
//! random moment loses no binding whose 200 OK was received.
//!
//! The crash loop runs `SIPWARD_CRASH_ITERATIONS` times (default 3); `benches/crash-loop.sh`
//! runs it 20 times on a release build and prints the figures.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PERSIST: &str = "persistence = \"sqlite\"";

/// Accounts `prefix00`.., each with its own password.
fn accounts(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}{i:03}"), format!("{prefix}-secret-{i:03}")))
        .collect()
}

fn start(accounts: &[(String, String)], registrar: &str) -> Server {
    let refs: Vec<(&str, &str)> = accounts
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .chain([("alice", "alice-secret-1")])
        .collect();
    Server::start_binary(&Options {
        accounts: &refs,
        algorithms: &["MD5"],
        registrar,
        log_level: "info",
        ..Options::default()
    })
}

/// The same binary and config again, on the same ports; its log goes to a new folder (kept
/// in the returned pair), the store stays beside the config.
fn restart(old: &Server) -> (Server, Duration) {
    let started = Instant::now();
    let server = Server::start_with_file(
        old.config_path.clone(),
        tempfile::tempdir().unwrap(),
        old.udp.port(),
        old.http.port(),
        None,
    );
    (server, started.elapsed())
}

fn kill_9(server: &mut Server) {
    let status = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.is_alive() {
        assert!(Instant::now() < deadline, "sipward survived kill -9");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// AoR → (contact, expires, cseq) of every binding, from the admin API.
fn bindings(server: &Server) -> HashMap<String, Vec<(String, u64, u64)>> {
    let list: serde_json::Value = serde_json::from_str(&server.admin_bindings()).unwrap();
    let mut out = HashMap::new();
    for entry in list.as_array().expect("a JSON array") {
        let aor = entry["aor"].as_str().unwrap().to_owned();
        let bs = entry["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["contact"].as_str().unwrap().to_owned(),
                    b["expires"].as_u64().unwrap(),
                    b["cseq"].as_u64().unwrap(),
                )
            })
            .collect();
        out.insert(aor, bs);
    }
    out
}

fn aor(user: &str) -> String {
    format!("sip:{user}@{DOMAIN}")
}

/// Registers `user` from `c` with its own address as Contact (plus `params`), for `expires`
/// seconds.
fn register_phone(c: &mut Client, user: &str, password: &str, expires: u32, params: &str) {
    let mut reg = Register::new(user);
    let transport = match c.proto {
        Proto::Udp => "",
        _ => ";transport=tcp",
    };
    reg.contact = Some(format!("<sip:{user}@{}{transport}>{params}", c.local));
    if !params.is_empty() {
        reg.extra.push("Supported: outbound, path".into());
    }
    reg.expires = Some(expires.to_string());
    let r = register(c, &reg, password, "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
}

/// alice's INVITE to `to` through the 407 challenge, from a UDP client (returned, for the
/// answers).
fn call(server: &Server, to: &str) -> Client {
    let mut c = server.client(Proto::Udp);
    let call_id = format!("call-{to}-{}", rand_token());
    let invite = |c: &Client, cseq: u32, extra: &str| {
        format!(
            "INVITE sip:{to}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=a1\r\nTo: <sip:{to}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{}>\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            c.local,
            rand_token(),
            c.local
        )
    };
    let first = c.request(&invite(&c, 1, "")).expect("407");
    assert_eq!(first.status(), 407, "{}", first.text);
    let pa = authorization(
        "MD5",
        "alice",
        "alice-secret-1",
        "INVITE",
        &format!("sip:{to}@{DOMAIN}"),
        &first.nonce(),
        1,
        &rand_token(),
    );
    c.send_raw(invite(&c, 2, &format!("Proxy-Authorization: {pa}\r\n")).as_bytes());
    c
}

/// Acceptance: 50 phones (25 over UDP, 25 over TCP), `kill -9`, restart with the same config:
/// all 50 bindings are back with their remaining expiry, and a call to a UDP phone reaches it
/// at once (before any refresh).
#[test]
fn fifty_phones_survive_kill_9_with_their_remaining_expiry() {
    let phones = accounts("p", 50);
    let mut server = start(&phones, PERSIST);
    let mut clients = Vec::new();
    for (i, (user, pw)) in phones.iter().enumerate() {
        let proto = if i < 25 { Proto::Udp } else { Proto::Tcp };
        let mut c = server.client(proto);
        // The last phone is an RFC 5626 outbound client: its binding names its flow.
        let outbound = (i == 49).then_some(
            ";+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000049>\";reg-id=1",
        );
        register_phone(&mut c, user, pw, 600, outbound.unwrap_or(""));
        clients.push(c);
    }
    let before = bindings(&server);
    assert_eq!(before.len(), 50);
    let registered = Instant::now();

    kill_9(&mut server);
    let (restarted, took) = restart(&server);
    let after = bindings(&restarted);
    let elapsed = registered.elapsed().as_secs() + 1;
    for (user, _) in &phones {
        let got = after
            .get(&aor(user))
            .unwrap_or_else(|| panic!("{user}'s binding lost: {after:?}"));
        let want = &before[&aor(user)];
        assert_eq!(got.len(), 1, "{user}: {got:?}");
        assert_eq!(got[0].0, want[0].0, "{user}: the same contact");
        assert_eq!(got[0].2, want[0].2, "{user}: the same CSeq");
        assert!(
            got[0].1 <= want[0].1 && got[0].1 + elapsed >= want[0].1,
            "{user}: the remaining expiry ({} s before, {} s after, {elapsed} s between)",
            want[0].1,
            got[0].1
        );
    }
    assert!(
        restarted.stderr().contains("location store loaded"),
        "{}",
        restarted.stderr()
    );
    eprintln!("restart with 50 bindings: healthy after {took:?}");

    // The first UDP phone is called at once, on the address it registered from.
    let _caller = call(&restarted, "p000");
    let invite = clients[0]
        .recv(Duration::from_secs(5))
        .expect("the INVITE reaches the UDP phone");
    assert!(
        invite.text.starts_with("INVITE sip:p000@"),
        "{}",
        invite.text
    );

    // A TCP binding's connection died with the process: it is kept until its expiry but
    // routes only once the phone is back over a new connection. Until then a plain contact
    // gets 480 and an outbound one (RFC 5626) 430 Flow Failed.
    assert_eq!(call_status(&restarted, "p025"), 480);
    assert_eq!(call_status(&restarted, "p049"), 430);
    let mut again = restarted.client(Proto::Tcp);
    register_phone(&mut again, "p025", &phones[25].1, 600, "");
    let _caller = call(&restarted, "p025");
    let invite = again
        .recv(Duration::from_secs(5))
        .expect("the INVITE reaches the TCP phone over its new connection");
    assert!(
        invite.text.starts_with("INVITE sip:p025@"),
        "{}",
        invite.text
    );
}

/// The final status alice gets calling `to` (after the 407 round).
fn call_status(server: &Server, to: &str) -> u16 {
    let mut c = call(server, to);
    loop {
        let r = c.recv(Duration::from_secs(5)).expect("a final response");
        if r.status() >= 200 {
            return r.status();
        }
    }
}

/// Acceptance: SIGTERM loses no binding; the writer drains before the process exits.
#[test]
fn sigterm_loses_no_binding() {
    let phones = accounts("s", 10);
    let mut server = start(&phones, PERSIST);
    for (user, pw) in &phones {
        let mut c = server.client(Proto::Udp);
        register_phone(&mut c, user, pw, 300, "");
    }
    // The store's metrics: its size, the writer's queue, batch sizes and commit latency.
    let metrics = server.metrics();
    for series in [
        "sipward_location_store_batch_size_count",
        "sipward_location_store_commit_seconds_count",
        "sipward_location_store_bytes",
    ] {
        assert!(
            metric_value(&metrics, series) >= 1.0,
            "{series}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("sipward_location_store_queue_depth "),
        "{metrics}"
    );
    assert_eq!(server.terminate(), Some(0), "{}", server.stderr());
    assert!(
        server
            .stderr()
            .contains("location store: every change written"),
        "{}",
        server.stderr()
    );
    let (restarted, _) = restart(&server);
    let after = bindings(&restarted);
    for (user, _) in &phones {
        assert!(after.contains_key(&aor(user)), "{user} lost: {after:?}");
    }
    // The store is sound and a backup of it is too (`sipward store check|backup`).
    let bin = env!("CARGO_BIN_EXE_sipward");
    let check = Command::new(bin)
        .args(["store", "check", "--config"])
        .arg(&server.config_path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        out.contains("ok, schema version 1, ") && out.contains("(10 live)"),
        "{out}"
    );
    let copy = server.dir.path().join("backup.db");
    let backup = Command::new(bin)
        .args(["store", "backup", "--config"])
        .arg(&server.config_path)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert_eq!(live_rows(&copy), 10, "the backup holds every binding");
}

/// Live bindings in the store file at `path`, as `sipward store check` counts them (on a
/// config that names that file).
fn live_rows(path: &std::path::Path) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[registrar]\nstore_path = \"{}\"\n\n[[domains]]\nname = \"{DOMAIN}\"\n",
            path.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipward"))
        .args(["store", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text.split(", ")
        .find_map(|part| part.strip_suffix(" live)"))
        .and_then(|p| p.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no live count in {text:?}"))
}

/// A load generator: `accounts` phones over one UDP socket, each re-registering its one
/// contact with a rising CSeq as soon as its previous REGISTER was answered (one in flight per
/// phone, so its Digest nonce count rises in order). Records the highest CSeq acknowledged
/// with 200 per AoR.
struct Generator {
    socket: UdpSocket,
    server: SocketAddr,
    phones: Vec<Phone>,
}

struct Phone {
    user: String,
    password: String,
    call_id: String,
    cseq: u32,
    nonce: String,
    nc: u32,
    /// The CSeq of the REGISTER in flight, if any, and when it was sent.
    in_flight: Option<u32>,
    sent_at: Instant,
    acked: u32,
}

/// Answers by status, for the figures.
type Statuses = std::collections::BTreeMap<u16, u64>;

impl Generator {
    fn new(server: SocketAddr, accounts: &[(String, String)]) -> Generator {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let phones = accounts
            .iter()
            .map(|(u, p)| Phone {
                user: u.clone(),
                password: p.clone(),
                call_id: format!("load-{u}-{}", rand_token()),
                cseq: 0,
                nonce: String::new(),
                nc: 0,
                in_flight: None,
                sent_at: Instant::now(),
                acked: 0,
            })
            .collect();
        Generator {
            socket,
            server,
            phones,
        }
    }

    fn send(&mut self, i: usize) {
        let local = self.socket.local_addr().unwrap();
        let p = &mut self.phones[i];
        p.cseq += 1;
        let auth = if p.nonce.is_empty() {
            String::new()
        } else {
            p.nc += 1;
            let a = authorization(
                "MD5",
                &p.user,
                &p.password,
                "REGISTER",
                &format!("sip:{DOMAIN}"),
                &p.nonce,
                p.nc,
                &rand_token(),
            );
            format!("Authorization: {a}\r\n")
        };
        let msg = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{u}@{DOMAIN}>;tag={i}\r\nTo: <sip:{u}@{DOMAIN}>\r\n\
             Call-ID: {}\r\nCSeq: {} REGISTER\r\nContact: <sip:{u}@127.0.0.1:5999;line={i}>\r\n\
             Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n",
            rand_token(),
            p.call_id,
            p.cseq,
            u = p.user,
        );
        p.in_flight = Some(p.cseq);
        p.sent_at = Instant::now();
        let _ = self.socket.send_to(msg.as_bytes(), self.server);
    }

    /// Runs until `stop` passes or the server stops answering (killed); returns how many
    /// REGISTERs got 200 and the time from the start to the last one.
    fn run(&mut self, stop: Instant) -> (u64, Duration, Statuses) {
        let started = Instant::now();
        let mut statuses = Statuses::new();
        let mut last_ok = started;
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, p) in self.phones.iter().enumerate() {
            index.insert(p.call_id.clone(), i);
        }
        for i in 0..self.phones.len() {
            self.send(i);
        }
        let mut oks = 0;
        let mut buf = vec![0u8; 65535];
        let mut silent_since = Instant::now();
        let mut last_scan = Instant::now();
        while Instant::now() < stop {
            if last_scan.elapsed() > Duration::from_millis(100) {
                // An answer lost (the socket's buffer overflowed): the phone tries again.
                last_scan = Instant::now();
                for i in 0..self.phones.len() {
                    if self.phones[i].sent_at.elapsed() > Duration::from_millis(500) {
                        self.send(i);
                    }
                }
            }
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => {
                    if silent_since.elapsed() > Duration::from_secs(1) {
                        break; // the server is gone
                    }
                    // Lost or unanswered: send the next REGISTER for those in flight.
                    for i in 0..self.phones.len() {
                        self.send(i);
                    }
                    continue;
                }
            };
            silent_since = Instant::now();
            let r = Resp {
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            };
            let Some(&i) = r.header("Call-ID").and_then(|c| index.get(&c)) else {
                continue;
            };
            let cseq: u32 = r
                .header("CSeq")
                .and_then(|c| c.split_whitespace().next().and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            let p = &mut self.phones[i];
            if p.in_flight != Some(cseq) {
                continue; // an answer to an abandoned request
            }
            p.in_flight = None;
            *statuses.entry(r.status()).or_default() += 1;
            match r.status() {
                200 => {
                    p.acked = p.acked.max(cseq);
                    oks += 1;
                    last_ok = Instant::now();
                }
                401 => {
                    p.nonce = r.nonce();
                    p.nc = 0;
                }
                _ => {}
            }
            self.send(i);
        }
        (oks, last_ok - started, statuses)
    }
}

/// Acceptance: under continuous load, `kill -9` at a random moment; after the restart every
/// AoR holds its binding with at least the CSeq of its last 200 OK (0 acknowledged changes
/// lost). Repeated `SIPWARD_CRASH_ITERATIONS` times (default 3) against one store file.
#[test]
fn kill_9_under_load_loses_no_acknowledged_registration() {
    let iterations: usize = std::env::var("SIPWARD_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let phones = accounts("l", 200);
    // Every server is kept (dead ones too): the first one's folder holds the config and the
    // store that every restart uses.
    let mut servers = vec![start(&phones, PERSIST)];
    let mut total_lost = 0;
    for round in 0..iterations {
        let server = servers.last_mut().unwrap();
        let mut generator = Generator::new(server.udp, &phones);
        let run_for = Duration::from_millis(800 + u64::from(rand::random::<u16>() % 1200));
        let pid = server.pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(run_for);
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        });
        let (oks, ran, statuses) = generator.run(Instant::now() + Duration::from_secs(60));
        killer.join().unwrap();
        kill_9(server);
        let (restarted, took) = restart(&servers[0]);
        let after = bindings(&restarted);
        let mut lost = 0;
        let mut checked = 0;
        for p in generator.phones.iter().filter(|p| p.acked > 0) {
            checked += 1;
            let held = after
                .get(&aor(&p.user))
                .and_then(|bs| bs.iter().map(|b| b.2).max());
            if held.is_none_or(|cseq| cseq < u64::from(p.acked)) {
                lost += 1;
                eprintln!("{}: acknowledged CSeq {}, held {held:?}", p.user, p.acked);
            }
        }
        eprintln!(
            "crash round {round}: {oks} REGISTERs acknowledged in {ran:.2?} ({:.0}/s), {checked} AoRs checked, {lost} lost; restart healthy after {took:?}; answers {statuses:?}",
            oks as f64 / ran.as_secs_f64().max(0.001)
        );
        assert!(oks > 0, "the generator got answers before the kill");
        total_lost += lost;
        servers.push(restarted);
    }
    assert_eq!(total_lost, 0, "acknowledged registrations lost");
}
