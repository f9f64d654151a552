//! Issue 17, the token API on several nodes: the device store and its revocations shared on
//! Redis (`registrar.persistence = "redis"`). Two `sipward` binaries on 127.0.0.2 and
//! 127.0.0.3, one real `redis-server` on a free loopback port, the real test IdP (`tests/idp`)
//! and one credential key file shared by both nodes.

mod common;
mod token;

use std::time::{Duration, Instant};

use common::redis_server::Redis;
use common::*;
use token::*;

/// A token API node on `ip` (SIP UDP and TCP there; HTTP on 127.0.0.1), its keys from
/// `keys_dir` (shared by the nodes: the device passwords derive from them).
fn node(idp: &Idp, redis: &Redis, ip: &str, name: &str, keys_dir: &std::path::Path) -> TokenServer {
    let registrar = format!(
        "persistence = \"redis\"\n\n[redis]\nurls = [\"redis://127.0.0.1:{}\"]\nnode = \"{name}\"\n\
         retries = 3\nresponse_timeout_ms = 500\nconnect_timeout_ms = 500",
        redis.port
    );
    let setup = Setup {
        registrar: &registrar,
        durable: Some(keys_dir),
        ..Setup::default()
    };
    let port = free_port();
    let ports = Ports {
        udp: port,
        tcp: port,
        http: free_port(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(&idp.issuer, &setup, dir.path(), ports).replace(
        &format!("\"127.0.0.1:{port}\""),
        &format!("\"{ip}:{port}\""),
    );
    let path = dir.path().join("sipward.toml");
    std::fs::write(&path, &config).unwrap();
    let mut server = Server::start_with_file(path, dir, port, ports.http, None);
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    (server.udp, server.tcp) = (addr, addr);
    TokenServer { server, config }
}

/// Two token API nodes (A on 127.0.0.2, B on 127.0.0.3) on one Redis with the test IdP and one
/// credential key directory; `None` where the IdP cannot run (skipped only outside CI).
struct Nodes {
    redis: Redis,
    idp: Idp,
    _keys: tempfile::TempDir,
    a: TokenServer,
    b: TokenServer,
}

fn two_nodes() -> Option<Nodes> {
    if !idp_available() {
        return None;
    }
    let redis = Redis::start();
    let idp = Idp::start();
    let keys = tempfile::tempdir().unwrap();
    let a = node(&idp, &redis, "127.0.0.2", "a", keys.path());
    let b = node(&idp, &redis, "127.0.0.3", "b", keys.path());
    Some(Nodes {
        redis,
        idp,
        _keys: keys,
        a,
        b,
    })
}

/// A UDP phone that registers alice at `node` with the device credential `laptop` (200
/// asserted); the phone and its REGISTER, for refreshes.
fn register_alice(node: &TokenServer, laptop: &Credential) -> (Client, Register) {
    let mut phone = Client::new(Proto::Udp, node.server.udp);
    let mut reg = Register::new("alice");
    reg.contact = Some(format!("<sip:alice@{}>", phone.local));
    let r = register_with(&mut phone, &reg, laptop, "MD5", None);
    assert_eq!(
        r.status(),
        200,
        "a device of alice at {}: {}",
        node.server.udp,
        r.text
    );
    (phone, reg)
}

/// The binding keys of alice's AoR in Redis.
fn alice_keys(redis: &Redis) -> Vec<String> {
    redis
        .cli(&["--scan", "--pattern", "sipward:{*alice*}:b:*"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Acceptance: a device created at node A registers at node B; after DELETE of the device at
/// A, B refuses its credential at once (the first REGISTER after the DELETE's answer), and
/// its bindings are gone everywhere: the one made at A, the one made at B, and both keys in
/// Redis.
#[test]
fn a_device_revoked_at_one_node_is_refused_and_unbound_at_the_other() {
    let Some(Nodes {
        redis,
        idp,
        _keys,
        a,
        b,
    }) = two_nodes()
    else {
        return;
    };
    let token = idp.token_for("alice");

    // Created at A; B has never seen it.
    let laptop = a.credential(&token, "laptop");
    let (mut at_b, mut reg_b) = register_alice(&b, &laptop);
    let mut at_a = Client::new(Proto::Udp, a.server.udp);
    let mut reg_a = Register::new("alice");
    reg_a.contact = Some(format!("<sip:alice@{}>", at_a.local));
    let r = register_with(&mut at_a, &reg_a, &laptop, "MD5", None);
    assert_eq!(r.status(), 200, "{}", r.text);
    // Each node's admin view holds its own binding and the other node's (read from Redis).
    assert_eq!(a.bindings_of("alice").len(), 2);
    assert_eq!(b.bindings_of("alice").len(), 2);
    assert_eq!(alice_keys(&redis).len(), 2, "one binding key per node");
    // The device list at B comes from the shared store.
    let r = b.http("GET", "/v1/sip/devices", Some(&token), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("laptop"), "{}", r.body);

    let r = a.http("DELETE", "/v1/sip/devices/laptop", Some(&token), "");
    assert_eq!(r.status, 200, "{}", r.body);
    // At once: the very next REGISTER at B is refused (B reads the record on every lookup).
    reg_b.cseq += 2;
    let r = register_with(&mut at_b, &reg_b, &laptop, "MD5", None);
    assert_eq!(
        r.status(),
        401,
        "a credential revoked at A, at B: {}",
        r.text
    );
    reg_a.cseq += 2;
    let r = register_with(&mut at_a, &reg_a, &laptop, "MD5", None);
    assert_eq!(r.status(), 401, "{}", r.text);

    // Bindings gone everywhere. A removed its own before answering; B removes the one made
    // at B when the revoke's publish reaches it (a bounded wait, not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.bindings_of("alice").is_empty()
        && b.bindings_of("alice").is_empty()
        && alice_keys(&redis).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "B still holds {:?}, Redis {:?}\n{}",
            b.bindings_of("alice"),
            alice_keys(&redis),
            b.server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A call to alice finds nobody at either node's view (B asks Redis for A's bindings).
    let r = b.http("GET", "/v1/sip/devices", Some(&token), "");
    assert!(!r.body.contains("laptop"), "{}", r.body);
    // A new device for alice at B works at A: the store is one.
    let phone = b.credential(&token, "phone");
    reg_a.cseq += 2;
    let r = register_with(&mut at_a, &reg_a, &phone, "MD5", None);
    assert_eq!(r.status(), 200, "{}", r.text);
}

fn request(device: &str, username: &str, now: u64) -> sipward::store::IssueRequest {
    sipward::store::IssueRequest {
        iss: "https://idp.test".into(),
        sub: "alice-sub".into(),
        device_id: device.into(),
        aor: "sip:alice@example.test".into(),
        realm: "example.test".into(),
        new_username: username.into(),
        kid: "k1".into(),
        expires_at: now + 100,
        name: Some("Laptop".into()),
        platform: None,
        now,
        max_devices: 2,
    }
}

/// The `DeviceStore` contract on a real Redis, as `store/sqlite.rs`'s unit tests check it on
/// SQLite: issue, renew (the old generation kept as previous), the device cap, an AoR held by
/// one subject until its admin revoke, record_register ending the previous generation, and
/// the revokes.
#[test]
fn the_redis_device_store_keeps_the_store_contract() {
    use sipward::store::{DeviceStore, IssueOutcome, IssueRequest, RedisSettings, RedisStore};
    let redis = Redis::start();
    let store = RedisStore::connect(RedisSettings {
        urls: vec![format!("redis://127.0.0.1:{}", redis.port)],
        cluster: false,
        username: None,
        password: None,
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let IssueOutcome::Created(first) = store.issue(&request("a", "d-one", 1000)).unwrap() else {
        panic!("created")
    };
    assert_eq!(first.current.gen, 1);
    assert_eq!(first.name.as_deref(), Some("Laptop"));
    assert_eq!(first.platform, None);
    let IssueOutcome::Renewed(renewed) = store.issue(&request("a", "d-other", 1010)).unwrap()
    else {
        panic!("renewed")
    };
    assert_eq!(renewed.username, "d-one");
    assert_eq!(renewed.current.gen, 2);
    assert_eq!(renewed.previous.as_ref().map(|p| p.gen), Some(1));
    assert_eq!(store.device("d-one").unwrap(), Some(renewed.clone()));
    assert!(matches!(
        store.issue(&request("b", "d-two", 1020)).unwrap(),
        IssueOutcome::Created(_)
    ));
    assert_eq!(
        store.issue(&request("c", "d-three", 1030)).unwrap(),
        IssueOutcome::DeviceLimitReached
    );
    let other = IssueRequest {
        sub: "another-sub".into(),
        ..request("x", "d-four", 1030)
    };
    assert_eq!(store.issue(&other).unwrap(), IssueOutcome::AorTaken);
    store.record_register("d-one", 2, 1040).unwrap();
    let active = store.load_active(1040).unwrap();
    assert_eq!(active.len(), 2);
    let one = active.iter().find(|r| r.username == "d-one").unwrap();
    assert_eq!(one.previous, None);
    assert_eq!(one.last_register, Some(1040));
    let revoked = store
        .revoke_device("https://idp.test", "alice-sub", "a", 1050)
        .unwrap();
    assert_eq!(revoked.map(|r| r.username), Some("d-one".into()));
    assert_eq!(store.device("d-one").unwrap().unwrap().revoked, Some(1050));
    assert_eq!(
        store
            .revoke_device("https://idp.test", "alice-sub", "a", 1051)
            .unwrap(),
        None,
        "revoked once"
    );
    let listed = store.user_devices("https://idp.test", "alice-sub").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].username, "d-two");
    let all = store.revoke_aor("sip:alice@example.test", 1060).unwrap();
    assert_eq!(all.len(), 1);
    assert!(store.load_active(1060).unwrap().is_empty());
    assert_eq!(
        store.aor_revoked_before("sip:alice@example.test").unwrap(),
        Some(1060)
    );
    // The AoR moves to another subject only after its admin revoke.
    assert!(matches!(
        store.issue(&other).unwrap(),
        IssueOutcome::Created(_)
    ));
    assert_eq!(store.device("d-nobody").unwrap(), None);
    store.ping().unwrap();
}

/// Acceptance ("its bindings are gone everywhere"), with the node that made a binding down:
/// a device registers at B, B is killed (`kill -9`), and the DELETE at A removes B's binding
/// from Redis before it answers, so no node routes to the revoked device while B is away (and
/// B, loading its own bindings from Redis at its restart, finds none of the device's).
#[test]
fn a_revoke_removes_the_bindings_a_stopped_node_made() {
    let Some(Nodes {
        redis,
        idp,
        _keys,
        a,
        mut b,
    }) = two_nodes()
    else {
        return;
    };
    let token = idp.token_for("alice");
    let laptop = a.credential(&token, "laptop");
    let _phone = register_alice(&b, &laptop);
    assert_eq!(alice_keys(&redis).len(), 1, "B's binding is in Redis");
    assert_eq!(a.bindings_of("alice").len(), 1, "A sees B's binding");

    let status = std::process::Command::new("kill")
        .args(["-KILL", &b.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.server.is_alive() {
        assert!(Instant::now() < deadline, "sipward survived kill -9");
        std::thread::sleep(Duration::from_millis(10));
    }

    let r = a.http("DELETE", "/v1/sip/devices/laptop", Some(&token), "");
    assert_eq!(r.status, 200, "{}", r.body);
    // At once, with B down: nothing left in Redis, nothing in A's view. (Who removed B's
    // binding, the DELETE or A's own subscriber hearing the revoke first, is not fixed, so the
    // answer's count is not asserted.)
    assert!(alice_keys(&redis).is_empty(), "{:?}", alice_keys(&redis));
    assert!(
        a.bindings_of("alice").is_empty(),
        "{:?}",
        a.bindings_of("alice")
    );
}
