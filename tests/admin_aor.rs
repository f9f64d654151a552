//! The admin `GET /admin/v1/bindings?aor=` lookup parses its AoR with the SIP layer's one
//! `Aor` type, so every spelling of an address finds the bindings the registrar stored under
//! it: scheme and host in any case, with or without `sip:`, a port or parameters, escapes.
//! The user part stays case-sensitive (RFC 3261 §19.1.4), as the registrar keeps it.

mod common;
use common::*;

fn listed_aors(server: &Server, aor: &str) -> Vec<String> {
    let (status, body) = server
        .http_get(&format!("/admin/v1/bindings?aor={aor}"), Some(ADMIN_TOKEN))
        .expect("admin request");
    assert_eq!(status, 200, "{aor}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("admin JSON");
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| e["aor"].as_str().expect("aor").to_owned())
        .collect()
}

#[test]
fn every_spelling_of_an_aor_finds_what_the_registrar_stored() {
    let server = Server::start(&Options {
        accounts: &[("Alice", "alice-secret-1")],
        ..Options::default()
    });
    let mut c = Client::new(Proto::Udp, server.udp);
    let reg = Register::new("Alice");
    let r = register(&mut c, &reg, "alice-secret-1", "SHA-256");
    assert_eq!(r.status(), 200, "{}", r.text);

    let stored = "sip:Alice@example.test";
    for spelling in [
        "sip:Alice@example.test",
        "sip:Alice@Example.test",
        "SIP:Alice@EXAMPLE.TEST",
        "Alice@Example.Test",
        "sip:Alice@example.test:5060;transport=udp",
        "sip:%41lice@example.test",
    ] {
        assert_eq!(listed_aors(&server, spelling), [stored], "{spelling}");
    }
    // Another user part is another AoR.
    assert!(listed_aors(&server, "sip:alice@example.test").is_empty());
    // Text that is no SIP AoR is refused.
    let (status, _) = server
        .http_get("/admin/v1/bindings?aor=tel:+12025550123", Some(ADMIN_TOKEN))
        .expect("admin request");
    assert_eq!(status, 400);
}
