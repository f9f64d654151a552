//! The first challenge (issue 15 item "First-challenge algorithms"): a domain's `algorithms`
//! order is the order of its challenges on the wire, so `["MD5", "SHA-256"]` offers MD5 first
//! to clients that give up on a first SHA-256 challenge; an account's own `algorithms` list
//! never shows in a challenge, so known and unknown users get the same ones (E1–E3).

mod common;

use common::{config_on_ports, with_credentials, Client, Options, Proto, Register, Resp, Server};

/// The challenges of a 401 with the nonce taken out: what may not differ between users.
fn challenges(r: &Resp) -> Vec<String> {
    assert_eq!(r.status(), 401, "{}", r.text);
    r.headers("WWW-Authenticate")
        .iter()
        .map(|v| v.replace(&common::param(v, "nonce").expect("nonce"), "N"))
        .collect()
}

/// `example.test` offers MD5 first; alice answers every algorithm of the domain, carol
/// (password `carol-secret-3`) only MD5 (`accounts[].algorithms = ["MD5"]`).
fn md5_first_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        algorithms: &["MD5", "SHA-256"],
        ..Options::default()
    };
    let path = config_on_ports(&opts, dir.path(), 0, 0, 0);
    let pw = dir.path().join("carol.pw");
    std::fs::write(&pw, "carol-secret-3").unwrap();
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!(
        "\n[[accounts]]\nusername = \"carol\"\ndomain = \"example.test\"\nkind = \"device\"\n\
         password_file = \"{}\"\nalgorithms = [\"MD5\"]\n",
        pw.display()
    ));
    std::fs::write(&path, config).unwrap();
    Server::in_process(path, dir)
}

#[test]
fn a_domain_listing_md5_first_challenges_with_md5_first_on_the_wire() {
    let server = md5_first_server();
    for proto in [Proto::Udp, Proto::Tcp] {
        let mut c = server.client(proto);
        let first = c.request(&Register::new("alice").build(&c)).expect("401");
        let values = first.headers("WWW-Authenticate");
        assert_eq!(values.len(), 2, "{}", first.text);
        assert!(values[0].contains("algorithm=MD5"), "{proto:?}: {values:?}");
        assert!(
            values[1].contains("algorithm=SHA-256"),
            "{proto:?}: {values:?}"
        );
        // Raw order in the message, not only in the helper's reading of it.
        let md5 = first.text.find("algorithm=MD5").unwrap();
        let sha = first.text.find("algorithm=SHA-256").unwrap();
        assert!(md5 < sha, "{}", first.text);
    }
    // The order changes nothing else: SHA-256 still works, and so does MD5.
    let mut c = server.client(Proto::Udp);
    let reg = Register::new("alice");
    let first = c.request(&reg.build(&c)).unwrap();
    let nonce = first.nonce_for("SHA-256").unwrap();
    let ok = c
        .request(&with_credentials(&reg, "SHA-256", "alice", "alice-secret-1", &nonce).build(&c))
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text);
    let reg = Register::new("carol");
    let ok = common::register(&mut c, &reg, "carol-secret-3", "MD5");
    assert_eq!(ok.status(), 200, "{}", ok.text);
}

/// E1/E2 with per-account lists: without credentials, and after a wrong password, alice
/// (the domain's algorithms), carol (MD5 only) and a user that does not exist all get the
/// same challenges in the same order; carol's own list shows nowhere.
#[test]
fn known_and_unknown_users_get_identical_challenges_whatever_their_own_algorithms() {
    let server = md5_first_server();
    let mut c = server.client(Proto::Udp);
    let users = ["alice", "carol", "ghost-7f2"];
    let mut first = Vec::new();
    let mut after_wrong = Vec::new();
    for user in users {
        let reg = Register::new(user);
        let challenge = c.request(&reg.build(&c)).expect("401");
        first.push(challenges(&challenge));
        let wrong = with_credentials(&reg, "MD5", user, "not-the-password", &challenge.nonce());
        let refused = c
            .request(&wrong.build(&c))
            .expect("401 after a wrong password");
        after_wrong.push(challenges(&refused));
    }
    eprintln!("{first:?}\n{after_wrong:?}");
    for list in first.iter().chain(&after_wrong) {
        assert_eq!(
            list, &first[0],
            "every user, every time: {first:?} {after_wrong:?}"
        );
    }
    assert_eq!(first[0].len(), 2);
    assert!(first[0][0].contains("algorithm=MD5") && first[0][1].contains("algorithm=SHA-256"));
}

/// carol answers only MD5: her right password with SHA-256 fails like a wrong one (a fresh
/// 401 offering the domain's list), MD5 gets 200.
#[test]
fn an_account_limited_to_md5_verifies_with_md5_only() {
    let server = md5_first_server();
    let mut c = Client::new(Proto::Udp, server.udp);
    let reg = Register::new("carol");
    let first = c.request(&reg.build(&c)).unwrap();
    let nonce = first.nonce_for("SHA-256").unwrap();
    let sha = with_credentials(&reg, "SHA-256", "carol", "carol-secret-3", &nonce);
    let refused = c.request(&sha.build(&c)).unwrap();
    assert_eq!(challenges(&refused), challenges(&first), "{}", refused.text);
    let ok = common::register(&mut c, &Register::new("carol"), "carol-secret-3", "MD5");
    assert_eq!(ok.status(), 200, "{}", ok.text);
}
