//! Registrations on Redis (issue 17) with the real binary and a real `redis-server` started
//! by each test on its own free loopback port (killed with its process group at the end):
//! one round trip per REGISTER, per-binding expiry in Redis, restore after `kill -9`, and
//! Redis unreachable → 503 with Retry-After (never a false 200) and `/readyz` 503.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::redis_server::Redis;
use common::*;

fn registrar(redis_url: &str, node: &str, retries: u32) -> String {
    format!(
        "persistence = \"redis\"\n\n[redis]\nurls = [\"{redis_url}\"]\nnode = \"{node}\"\n\
         retries = {retries}\nresponse_timeout_ms = 500\nconnect_timeout_ms = 500"
    )
}

fn accounts(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("r{i:03}"), format!("r-secret-{i:03}")))
        .collect()
}

fn start(accounts: &[(String, String)], registrar: &str) -> Server {
    let refs: Vec<(&str, &str)> = accounts
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    Server::start_binary(&Options {
        accounts: &refs,
        algorithms: &["MD5"],
        registrar,
        log_level: "info",
        ..Options::default()
    })
}

/// A REGISTER of `user` from `c` with its own address as Contact; the final response.
fn register_from(c: &mut Client, user: &str, password: &str, expires: u32) -> Resp {
    let mut reg = Register::new(user);
    reg.contact = Some(format!("<sip:{user}@{}>", c.local));
    reg.expires = Some(expires.to_string());
    register(c, &reg, password, "MD5")
}

/// AoR → contacts, from the admin API.
fn contacts(server: &Server) -> HashMap<String, Vec<String>> {
    let list: serde_json::Value = serde_json::from_str(&server.admin_bindings()).unwrap();
    let mut out = HashMap::new();
    for entry in list.as_array().expect("a JSON array") {
        let aor = entry["aor"].as_str().unwrap().to_owned();
        let cs = entry["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["contact"].as_str().unwrap().to_owned())
            .collect();
        out.insert(aor, cs);
    }
    out
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

/// Acceptance: 20 phones register against Redis; each REGISTER cost at most one round trip;
/// each binding is a key with its own expiry (PTTL within the granted 60 s); `kill -9` and a
/// restart with the same config bring all 20 back from Redis.
#[test]
fn bindings_live_in_redis_with_their_expiry_and_survive_kill_9() {
    let redis = Redis::start();
    let accounts = accounts(20);
    let mut server = start(&accounts, &registrar(&redis.url(), "a", 3));
    let mut phones = Vec::new();
    for (user, password) in &accounts {
        let mut c = server.client(Proto::Udp);
        let r = register_from(&mut c, user, password, 60);
        assert_eq!(r.status(), 200, "{}", r.text);
        phones.push(c);
    }
    let round_trips = server.metric("sipward_redis_round_trips_total");
    let registers = accounts.len() as f64;
    assert!(
        (1.0..=registers).contains(&round_trips),
        "round trips {round_trips} for {registers} REGISTERs"
    );
    assert_eq!(server.metric("sipward_redis_errors_total"), 0.0);

    let keys = redis.cli(&["--scan", "--pattern", "sipward:{*}:b:a:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), accounts.len(), "{keys:?}");
    for key in &keys {
        let pttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        assert!((1..=60_000).contains(&pttl), "{key}: PTTL {pttl}");
    }
    let index = format!("sipward:{{sip:r000@{DOMAIN}}}:i");
    assert_eq!(redis.cli(&["ZCARD", &index]), "1");

    let before = contacts(&server);
    assert_eq!(before.len(), accounts.len());
    kill_9(&mut server);
    let restarted = Server::start_with_file(
        server.config_path.clone(),
        tempfile::tempdir().unwrap(),
        server.udp.port(),
        server.http.port(),
        None,
    );
    assert_eq!(contacts(&restarted), before, "{}", restarted.stderr());

    // A refresh after the restart updates the same key (no new binding, no duplicate).
    let r = register_from(&mut phones[0], &accounts[0].0, &accounts[0].1, 60);
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(redis.cli(&["ZCARD", &index]), "1");
    // Unregistering removes the key at once.
    let r = register_from(&mut phones[1], &accounts[1].0, &accounts[1].1, 0);
    assert_eq!(r.status(), 200, "{}", r.text);
    let left = redis.cli(&["--scan", "--pattern", "sipward:{*}:b:a:*"]);
    assert_eq!(left.lines().count(), accounts.len() - 1);
}

/// Acceptance: Redis unreachable → a REGISTER is answered 503 with Retry-After (never 200),
/// `/readyz` says 503 naming the store; once Redis is back, REGISTERs succeed again and
/// `/readyz` is 200.
#[test]
fn redis_down_gives_503_with_retry_after_and_not_ready() {
    let mut redis = Redis::start();
    let port = redis.port;
    let accounts = accounts(2);
    let server = start(&accounts, &registrar(&redis.url(), "a", 1));
    let (user, password) = &accounts[0];
    let mut c = server.client(Proto::Udp);
    assert_eq!(register_from(&mut c, user, password, 60).status(), 200);
    assert_eq!(server.http_get("/readyz", None).unwrap().0, 200);

    redis.kill();
    let r = register_from(&mut c, user, password, 60);
    assert_eq!(r.status(), 503, "{}", r.text);
    assert_eq!(r.header("Retry-After").as_deref(), Some("5"), "{}", r.text);
    let (status, body) = server.http_get("/readyz", None).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("location store"), "{body}");
    // The first round trip to fail is the nonce claim's (before any write is tried).
    let errors = server.metric("sipward_redis_errors_total")
        + server.metric("sipward_redis_auth_errors_total");
    assert!(errors >= 1.0, "{errors}");

    let redis = Redis::start_on(port);
    let r = register_from(&mut c, user, password, 60);
    assert_eq!(r.status(), 200, "{}", r.text);
    assert_eq!(server.http_get("/readyz", None).unwrap().0, 200);
    let keys = redis.cli(&["--scan", "--pattern", "sipward:{*}:b:a:*"]);
    assert_eq!(
        keys.lines().count(),
        1,
        "the refresh after the outage is in Redis"
    );
}

/// A node on `ip` (SIP UDP and TCP; HTTP stays on 127.0.0.1) with Redis at `redis_url`,
/// named `node` in the keys.
fn node(ip: &str, redis_url: &str, name: &str, accounts: &[(String, String)]) -> Server {
    node_with(ip, redis_url, name, accounts, "")
}

/// [`node`] with extra TOML for the [auth] table.
fn node_with(
    ip: &str,
    redis_url: &str,
    name: &str,
    accounts: &[(String, String)],
    auth: &str,
) -> Server {
    node_on(ip, free_port(), redis_url, name, accounts, auth, "")
}

/// [`node_with`] on SIP port `sip`, with `redis_extra` appended to the [redis] table.
fn node_on(
    ip: &str,
    sip: u16,
    redis_url: &str,
    name: &str,
    accounts: &[(String, String)],
    auth: &str,
    redis_extra: &str,
) -> Server {
    let refs: Vec<(&str, &str)> = accounts
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .chain([("alice", "alice-secret-1")])
        .collect();
    let registrar = format!("{}\n{redis_extra}", registrar(redis_url, name, 3));
    let opts = Options {
        accounts: &refs,
        algorithms: &["MD5"],
        registrar: &registrar,
        auth,
        log_level: "info",
        ..Options::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let path = config_on_ports(&opts, dir.path(), sip, http, free_port());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(&format!("\"127.0.0.1:{sip}\""), &format!("\"{ip}:{sip}\""));
    std::fs::write(&path, text).unwrap();
    let mut server = Server::start_with_file(path, dir, sip, http, None);
    let addr: std::net::SocketAddr = format!("{ip}:{sip}").parse().unwrap();
    (server.udp, server.tcp) = (addr, addr);
    server
}

/// alice's INVITE to `to` through `server`'s 407 challenge, from a UDP client (returned).
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

fn expect_invite(phone: &mut Client, user: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = phone
            .recv(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("{what}: no INVITE reached the phone"));
        if got.text.starts_with("INVITE ") {
            assert!(
                got.text.starts_with(&format!("INVITE sip:{user}@")),
                "{}",
                got.text
            );
            return;
        }
    }
}

/// Acceptance (two nodes on 127.0.0.2 and 127.0.0.3, one Redis): a UDP phone registered at A
/// is called from B; the same phone registering alternately at A and B gets 200 each time
/// and is routed once; after `kill -9` of A, B still routes to A's UDP phone at once.
#[test]
fn two_nodes_share_udp_bindings_and_survive_kill_9_of_one() {
    let redis = Redis::start();
    let accounts = accounts(2);
    let mut a = node("127.0.0.2", &redis.url(), "a", &accounts);
    let b = node("127.0.0.3", &redis.url(), "b", &accounts);
    let (user, password) = &accounts[0];

    // The phone's port comes from free_port (below the ephemeral range), so rebinding it to
    // talk to the other node cannot lose it to another test's socket.
    let local: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut phone = Client::udp_on(local, a.udp);
    let r = register_from(&mut phone, user, password, 300);
    assert_eq!(r.status(), 200, "{}", r.text);
    assert!(contacts(&b).is_empty(), "B holds no binding of its own");
    let _caller = call(&b, user);
    expect_invite(&mut phone, user, "a call at B to a phone registered at A");

    // Alternating REGISTERs from the phone's address (a fresh challenge from each node):
    // 200 at both.
    drop(phone);
    for server in [&b, &a, &b] {
        let mut c = Client::udp_on(local, server.udp);
        let r = register_from(&mut c, user, password, 300);
        assert_eq!(r.status(), 200, "{}", r.text);
    }
    let mut phone = Client::udp_on(local, b.udp);

    let other = &accounts[1];
    let mut only_at_a = Client::new(Proto::Udp, a.udp);
    let r = register_from(&mut only_at_a, &other.0, &other.1, 300);
    assert_eq!(r.status(), 200, "{}", r.text);

    kill_9(&mut a);
    // A phone only A knew is reached from B at once.
    let _caller = call(&b, &other.0);
    expect_invite(
        &mut only_at_a,
        &other.0,
        "a call at B to A's phone after kill -9 of A",
    );
    // The alternating phone: A's binding and B's own have one contact; it is reached.
    let _caller = call(&b, user);
    expect_invite(&mut phone, user, "a call at B after kill -9 of A");
}

fn cluster_ok(node: &Redis) -> bool {
    node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
}

/// Every binding key of node `name` in the cluster, from every live master.
fn cluster_keys(nodes: &[Redis], name: &str) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for n in nodes {
        if n.cli(&["ROLE"]).starts_with("master") {
            let found = n.cli(&["--scan", "--pattern", &format!("sipward:{{*}}:b:{name}:*")]);
            keys.extend(found.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
    }
    keys
}

/// Acceptance: a 3-master, 3-replica Redis Cluster made by the test (`redis-cli --cluster
/// create --cluster-replicas 1`); 30 phones register (every 200 OK recorded); `kill -9` of
/// one master; after the failover (a replica promoted) REGISTERs work again (503 with
/// Retry-After while the slots of the dead master have no owner, never a false 200), and
/// every acknowledged binding is still in the cluster.
#[test]
fn cluster_failover_keeps_every_acknowledged_binding() {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let mut nodes: Vec<Redis> = ports
        .iter()
        .map(|p| Redis::start_cluster_node(*p))
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(cluster_ok) {
        assert!(Instant::now() < deadline, "the cluster did not become ok");
        std::thread::sleep(Duration::from_millis(100));
    }

    let urls: Vec<String> = addrs.iter().map(|a| format!("\"redis://{a}\"")).collect();
    let registrar = format!(
        "persistence = \"redis\"\n\n[redis]\nurls = [{}]\ncluster = true\nnode = \"c\"\n\
         retries = 2\nresponse_timeout_ms = 500\nconnect_timeout_ms = 500",
        urls.join(", ")
    );
    let accounts = accounts(30);
    let server = start(&accounts, &registrar);
    let mut phones = Vec::new();
    let mut acknowledged = std::collections::BTreeSet::new();
    for (user, password) in &accounts {
        let mut c = server.client(Proto::Udp);
        let r = register_from(&mut c, user, password, 600);
        assert_eq!(r.status(), 200, "{}", r.text);
        acknowledged.insert(user.clone());
        phones.push(c);
    }
    let before = cluster_keys(&nodes, "c");
    assert_eq!(before.len(), acknowledged.len(), "{before:?}");
    // Replication is asynchronous: wait until every replica has caught up with its master's
    // offset as of now (the window an acknowledged write can be lost in is documented in
    // README "Running several nodes"; a refresh writes the whole binding again).
    let offsets: HashMap<u16, u64> = nodes
        .iter()
        .filter_map(|n| {
            let role = n.cli(&["ROLE"]);
            let mut lines = role.lines();
            (lines.next() == Some("master")).then(|| {
                (
                    n.port,
                    lines.next().and_then(|o| o.parse().ok()).unwrap_or(0),
                )
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        loop {
            let role = n.cli(&["ROLE"]);
            let lines: Vec<&str> = role.lines().collect();
            if lines.first() != Some(&"slave") {
                break;
            }
            let master: u16 = lines.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
            let offset: u64 = lines.get(4).and_then(|o| o.parse().ok()).unwrap_or(0);
            if offset >= offsets.get(&master).copied().unwrap_or(u64::MAX) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not catch up",
                n.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Kill the master that holds the first phone's binding.
    let slot_owner = nodes
        .iter()
        .position(|n| {
            n.cli(&["ROLE"]).starts_with("master")
                && n.cli(&["EXISTS", before.iter().next().unwrap()]) == "1"
        })
        .expect("a master holds the first binding");
    nodes[slot_owner].kill();
    let survivor = (slot_owner + 1) % nodes.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster_ok(&nodes[survivor])
        || nodes[survivor]
            .cli(&["CLUSTER", "NODES"])
            .matches("master")
            .count()
            < 4
    {
        assert!(Instant::now() < deadline, "no failover");
        std::thread::sleep(Duration::from_millis(100));
    }

    // What the promoted replica holds, before any refresh could write a binding again.
    let promoted = cluster_keys(&nodes, "c");
    let missing: Vec<&String> = before.difference(&promoted).collect();
    assert!(
        missing.is_empty(),
        "acknowledged bindings lost in the failover: {missing:?}"
    );

    // Every phone refreshes; while the client learns the new topology a REGISTER may get
    // 503 (with Retry-After), then 200.
    let mut refused = 0;
    for ((user, password), c) in accounts.iter().zip(&mut phones) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = register_from(c, user, password, 600);
            match r.status() {
                200 => break,
                503 => {
                    assert!(r.header("Retry-After").is_some(), "{}", r.text);
                    refused += 1;
                    assert!(
                        Instant::now() < deadline,
                        "{user}: still 503 after the failover"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => panic!("{user}: {other}\n{}", r.text),
            }
        }
    }
    assert_eq!(
        cluster_keys(&nodes, "c"),
        before,
        "the refreshes updated the same keys"
    );
    eprintln!("cluster failover: {refused} REGISTERs answered 503 while the slots moved");
}

/// Acceptance: with one nonce secret on both nodes (so B verifies A's nonces), a REGISTER
/// whose credentials answered A's nonce, replayed at B with the same `nc`, is refused (401
/// with `stale=true`: the nodes share every use of a nonce in Redis); the phone's next use of
/// the same nonce at B, with `nc` 2, is accepted there (A's nonce verified, its count checked
/// at B), and that message replayed at A is refused in turn, although A's own table only knew
/// `nc` 1.
#[test]
fn a_nonce_from_one_node_replayed_at_the_other_is_refused() {
    let redis = Redis::start();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("nonce.secret");
    write_secret(
        &secret_file,
        "a-shared-nonce-secret-of-at-least-thirty-two-bytes",
    );
    let auth = format!("nonce_secret_file = \"{}\"", secret_file.display());
    let accounts = accounts(1);
    let a = node_with("127.0.0.2", &redis.url(), "a", &accounts, &auth);
    let b = node_with("127.0.0.3", &redis.url(), "b", &accounts, &auth);
    let (user, password) = &accounts[0];

    let mut phone = a.client(Proto::Udp);
    let mut reg = Register::new(user);
    reg.contact = Some(format!("<sip:{user}@{}>", phone.local));
    reg.expires = Some("300".into());
    let challenge = phone.request(&reg.build(&phone)).expect("401");
    assert_eq!(challenge.status(), 401, "{}", challenge.text);
    let nonce = challenge.nonce();
    let answered = with_credentials(&reg, "MD5", user, password, &nonce);
    let message = answered.build(&phone);
    let r = phone.request(&message).expect("200");
    assert_eq!(r.status(), 200, "{}", r.text);

    // The same message (same nonce, same nc) at B.
    let mut at_b = Client::new(Proto::Udp, b.udp);
    let replayed = at_b.request(&message).expect("an answer from B");
    assert_eq!(replayed.status(), 401, "{}", replayed.text);
    assert!(
        replayed.text.to_ascii_lowercase().contains("stale=true"),
        "{}",
        replayed.text
    );

    // The phone's next REGISTER on A's nonce, nc 2, goes to B: verified there.
    let next_use = |from: &Register, nc: u32| {
        let mut next = from.clone();
        next.cseq += 1;
        next.authorization = vec![authorization(
            "MD5",
            user,
            password,
            "REGISTER",
            &reg.ruri,
            &nonce,
            nc,
            &rand_token(),
        )];
        next
    };
    let second = next_use(&answered, 2);
    let second_message = second.build(&at_b);
    let r = at_b.request(&second_message).expect("an answer from B");
    assert_eq!(r.status(), 200, "A's nonce with nc 2 at B: {}", r.text);

    // That message at A: A's own table saw nc 1 only, the shared record saw 2.
    let mut at_a = Client::new(Proto::Udp, a.udp);
    let replayed = at_a.request(&second_message).expect("an answer from A");
    assert_eq!(replayed.status(), 401, "{}", replayed.text);
    assert!(
        replayed.text.to_ascii_lowercase().contains("stale=true"),
        "{}",
        replayed.text
    );
    // A higher count at A: accepted.
    let third = next_use(&second, 3);
    let r = at_a.request(&third.build(&at_a)).expect("an answer from A");
    assert_eq!(r.status(), 200, "nc 3 at A: {}", r.text);
    let claims = b.metric("sipward_redis_auth_round_trips_total");
    assert!(claims >= 1.0, "B claimed in Redis: {claims}");
}

/// Acceptance: the per-username failure limit counts the failures of every node. With a limit
/// of 4, two wrong passwords at A and two at B block the username at both (neither node saw
/// 4 itself): the right password from a fresh address then gets no answer at either node.
#[test]
fn failures_at_both_nodes_count_against_one_limit() {
    let redis = Redis::start();
    let auth = "max_failures_per_user = 4\nmax_failures_per_source = 1000";
    let accounts = accounts(1);
    let a = node_with("127.0.0.2", &redis.url(), "a", &accounts, auth);
    let b = node_with("127.0.0.3", &redis.url(), "b", &accounts, auth);
    let (user, password) = &accounts[0];

    for node in [&a, &b, &a, &b] {
        let mut guesser = node.client(Proto::Udp);
        let r = register_from(&mut guesser, user, "a-wrong-password", 300);
        assert_eq!(r.status(), 401, "{}", r.text);
    }
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.stderr().contains("username blocked") {
            assert!(
                Instant::now() < deadline,
                "no block announced\n{}",
                node.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let local: std::net::SocketAddr = format!("127.0.0.{}:{}", 20 + i, free_port())
            .parse()
            .unwrap();
        let mut phone = Client::udp_on(local, node.udp);
        let mut reg = Register::new(user);
        reg.contact = Some(format!("<sip:{user}@{}>", phone.local));
        let challenge = phone.request(&reg.build(&phone)).expect("a challenge");
        assert_eq!(challenge.status(), 401, "{}", challenge.text);
        let answered = with_credentials(&reg, "MD5", user, password, &challenge.nonce());
        let r = phone.request(&answered.build(&phone));
        assert!(r.is_none(), "the blocked username was answered: {r:?}");
    }
}

/// Acceptance: a TCP phone registered at node A is reached by a call placed at node B. B
/// reads A's binding from Redis, sees it is bound to a connection at A and routes the INVITE
/// to A's address from `redis.peers` with a Route naming the binding; A takes the hop from a
/// configured peer without a challenge and sends it down the phone's connection. The same
/// Route from an address that is not a peer is challenged like any request.
#[test]
fn a_tcp_phone_at_one_node_is_reached_from_the_other_through_its_node() {
    let redis = Redis::start();
    let accounts = accounts(1);
    let (pa, pb) = (free_port(), free_port());
    let peers = format!("peers = {{ a = \"127.0.0.2:{pa}\", b = \"127.0.0.3:{pb}\" }}");
    let a = node_on("127.0.0.2", pa, &redis.url(), "a", &accounts, "", &peers);
    let b = node_on("127.0.0.3", pb, &redis.url(), "b", &accounts, "", &peers);
    let (user, password) = &accounts[0];

    let mut phone = Client::new(Proto::Tcp, a.tcp);
    let mut reg = Register::new(user);
    reg.contact = Some(format!("<sip:{user}@{};transport=tcp>", phone.local));
    reg.expires = Some("300".into());
    let r = register(&mut phone, &reg, password, "MD5");
    assert_eq!(r.status(), 200, "{}", r.text);
    assert!(contacts(&b).is_empty(), "B holds no binding of its own");

    let _caller = call(&b, user);
    let deadline = Instant::now() + Duration::from_secs(5);
    let invite = loop {
        let got = phone
            .recv(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("no INVITE reached the TCP phone at A\n{}", a.stderr()));
        if got.text.starts_with("INVITE ") {
            break got;
        }
    };
    // Both nodes are on the path: B's and A's Record-Route, and two Vias of ours.
    let text = &invite.text;
    assert!(text.contains("127.0.0.2"), "A record-routes: {text}");
    assert!(text.contains("127.0.0.3"), "B record-routes: {text}");
    assert!(
        !text.contains("sipward-binding"),
        "A consumed its Route: {text}"
    );

    // From a non-peer address the binding Route buys nothing: a challenge.
    let mut stranger = Client::new(Proto::Udp, a.udp);
    let invite = format!(
        "INVITE sip:{user}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\n\
         Route: <sip:127.0.0.2:{pa};lr;sipward-binding=1>\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=s1\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: stranger-{}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{}>\r\nContent-Length: 0\r\n\r\n",
        stranger.local,
        rand_token(),
        rand_token(),
        stranger.local
    );
    let r = stranger.request(&invite).expect("an answer");
    assert_eq!(r.status(), 407, "{}", r.text);
}
