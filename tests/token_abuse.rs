//! docs/testing.md §6, J1–J16 and J20, against the in-process server and the real OpenID provider in
//! `tests/idp`. Forged tokens are signed by the tests with keys the IdP does not publish;
//! tokens with bad claims but a valid signature are signed by the IdP's own key through its
//! test-only `/test/sign`. Every token fault must get the same 401 body and issue nothing.
//!
//! Timing is printed, never asserted (a shared, noisy machine).

mod common;
mod token;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;
use token::*;

const BODY: &str = r#"{"device_id":"laptop"}"#;

/// One case: label and token.
type Case = (String, String);

/// Sends each case to the exchange and checks the generic 401; returns (label, status, body,
/// WWW-Authenticate, elapsed) for the J20 comparison.
fn expect_invalid(s: &TokenServer, cases: &[Case]) -> Vec<(String, u16, String, String, Duration)> {
    let issued = s.metric("sipward_devices_issued_total");
    let mut out = Vec::new();
    for (label, token) in cases {
        let started = Instant::now();
        let r = s.http("POST", "/v1/sip/credentials", Some(token), BODY);
        let took = started.elapsed();
        assert_eq!(r.status, 401, "{label}: {} {}", r.status, r.body);
        assert_eq!(r.body, INVALID_TOKEN_BODY, "{label}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{label}");
        out.push((
            label.clone(),
            r.status,
            r.body.clone(),
            r.header("www-authenticate").unwrap_or("").to_string(),
            took,
        ));
    }
    assert_eq!(
        s.metric("sipward_devices_issued_total"),
        issued,
        "no credential issued"
    );
    out
}

fn setup<'a>() -> Setup<'a> {
    Setup {
        token_api: "failures_per_source_per_minute = 100000\nrate_per_user_per_minute = 100000",
        issuer: "tenant_claim = \"tid\"\ntenants = [\"tenant-a\"]",
        ..Setup::default()
    }
}

fn good_claims(idp: &Idp) -> Value {
    let mut c = idp.claims("alice");
    c["tid"] = json!("tenant-a");
    c
}

/// A token the IdP signs with `claims` changed by `f`.
fn idp_signed(idp: &Idp, alg: &str, f: impl FnOnce(&mut Value, &mut Value)) -> String {
    let mut header = idp.header(alg);
    let mut claims = good_claims(idp);
    f(&mut header, &mut claims);
    idp.sign(&header, &claims)
}

#[test]
fn j1_to_j13_and_j20_every_forged_or_broken_token_gets_the_same_401() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    // Control: a good token signed by the IdP's key passes (then is revoked from the count).
    let control = idp_signed(&idp, "ES256", |_, _| {});
    let r = s.exchange(&control, "control");
    assert_eq!(r.status, 201, "control token: {}", r.body);
    let issued_before = s.metric("sipward_devices_issued_total");
    assert_eq!(issued_before, 1.0);
    let s_check = |s: &TokenServer| s.metric("sipward_devices_issued_total");

    let mut cases: Vec<Case> = Vec::new();
    let claims = good_claims(&idp);
    let es_kid = idp.kid("ES256");
    let rs_kid = idp.kid("RS256");

    // J1: alg none in every spelling, empty signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "typ": "at+jwt"}).to_string();
        cases.push((
            format!("J1 alg {alg}"),
            format!("{}.{}.", b64(h), b64(claims.to_string())),
        ));
    }
    // J2: the right alg, signature removed or cut short.
    let valid = idp_signed(&idp, "ES256", |_, _| {});
    let (input, sig) = valid.rsplit_once('.').unwrap();
    cases.push(("J2 signature removed".into(), format!("{input}.")));
    cases.push((
        "J2 signature cut short".into(),
        format!("{input}.{}", &sig[..sig.len() - 10]),
    ));
    cases.push(("J2 signature of another token".into(), {
        let other = idp_signed(&idp, "ES256", |_, c| c["sub"] = json!("bob"));
        format!("{input}.{}", other.rsplit_once('.').unwrap().1)
    }));
    // J3: HS256 with the IdP's RSA public key (PEM, DER, JWK) as the HMAC secret.
    let keys = idp.keys();
    let rsa = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "RS256")
        .unwrap()
        .clone();
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        rsa["der_b64"].as_str().unwrap(),
    )
    .unwrap();
    let hs_header = json!({"alg": "HS256", "typ": "at+jwt", "kid": rs_kid});
    for (form, secret) in [
        ("PEM", rsa["pem"].as_str().unwrap().as_bytes().to_vec()),
        ("DER", der),
        ("JWK", rsa["jwk"].to_string().into_bytes()),
    ] {
        cases.push((
            format!("J3 HS256 keyed with the RSA {form}"),
            hs256(&hs_header, &claims, &secret),
        ));
    }
    // J4: ECDSA psychic signature r = s = 0.
    let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": es_kid});
    cases.push((
        "J4 ES256 r=0 s=0".into(),
        raw_token(&h.to_string(), &claims.to_string(), &[0u8; 64]),
    ));
    // J5: an embedded jwk with the attacker's key, with and without a kid.
    let attacker = ForgedKey::new("attacker-key");
    let h = json!({"alg": "ES256", "typ": "at+jwt", "jwk": attacker.jwk()});
    cases.push(("J5 embedded jwk, no kid".into(), attacker.sign(&h, &claims)));
    let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": es_kid, "jwk": attacker.jwk()});
    cases.push((
        "J5 embedded jwk, IdP kid".into(),
        attacker.sign(&h, &claims),
    ));
    // J7: kid injection (the kid is only a map key).
    for (label, kid) in [
        ("path traversal", "../../../../dev/null"),
        ("/dev/null", "/dev/null"),
        ("SQL", "' OR '1'='1"),
        ("shell", "$(sleep 10)"),
        ("NUL", "a\u{0}b"),
        ("CRLF", "a\r\nb"),
    ] {
        let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
        cases.push((format!("J7 kid {label}"), attacker.sign(&h, &claims)));
    }
    let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": ""});
    cases.push(("J7 empty kid".into(), attacker.sign(&h, &claims)));
    let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k".repeat(10_000)});
    cases.push(("J7 10 KB kid".into(), attacker.sign(&h, &claims)));
    // J8: time claims, validly signed by the IdP.
    let t = now();
    cases.push((
        "J8 exp in the past".into(),
        idp_signed(&idp, "ES256", |_, c| c["exp"] = json!(t - 3600)),
    ));
    cases.push((
        "J8 exp missing".into(),
        idp_signed(&idp, "ES256", |_, c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    ));
    cases.push((
        "J8 nbf in the future".into(),
        idp_signed(&idp, "ES256", |_, c| c["nbf"] = json!(t + 3600)),
    ));
    cases.push((
        "J8 iat in the future".into(),
        idp_signed(&idp, "ES256", |_, c| c["iat"] = json!(t + 3600)),
    ));
    cases.push((
        "J8 iat missing".into(),
        idp_signed(&idp, "ES256", |_, c| {
            c.as_object_mut().unwrap().remove("iat");
        }),
    ));
    cases.push((
        "J8 sub missing".into(),
        idp_signed(&idp, "ES256", |_, c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
    ));
    // J9: issuer variants.
    let iss = idp.issuer.clone();
    for (label, value) in [
        ("wrong", "https://evil.example".to_string()),
        ("trailing slash", format!("{iss}/")),
        ("other case", iss.to_uppercase()),
    ] {
        cases.push((
            format!("J9 iss {label}"),
            idp_signed(&idp, "ES256", |_, c| c["iss"] = json!(value)),
        ));
    }
    // J10: audience.
    cases.push((
        "J10 aud missing".into(),
        idp_signed(&idp, "ES256", |_, c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
    ));
    cases.push((
        "J10 aud wrong".into(),
        idp_signed(&idp, "ES256", |_, c| c["aud"] = json!("urn:other")),
    ));
    cases.push((
        "J10 aud array without us".into(),
        idp_signed(&idp, "ES256", |_, c| {
            c["aud"] = json!(["other", format!("{AUDIENCE}-typo")])
        }),
    ));
    // J11: a token from another tenant's IdP (another issuer), same sub.
    let other_idp = Idp::start();
    cases.push((
        "J11 another IdP, same sub".into(),
        other_idp.token_for("alice"),
    ));
    // J12: ID token, wrong typ, another client, refresh token.
    cases.push((
        "J12 id_token (typ JWT, aud client, nonce)".into(),
        idp_signed(&idp, "RS256", |h, c| {
            h["typ"] = json!("JWT");
            c["aud"] = json!("softphone");
            c["nonce"] = json!("n-0S6_WzA2Mj");
        }),
    ));
    cases.push((
        "J12 id_token with our typ".into(),
        idp_signed(&idp, "ES256", |_, c| {
            c["nonce"] = json!("n-0S6_WzA2Mj");
        }),
    ));
    cases.push((
        "J12 typ JWT".into(),
        idp_signed(&idp, "ES256", |h, _| h["typ"] = json!("JWT")),
    ));
    cases.push((
        "J12 typ missing".into(),
        idp_signed(&idp, "ES256", |h, _| {
            h.as_object_mut().unwrap().remove("typ");
        }),
    ));
    cases.push((
        "J12 another client (real IdP token)".into(),
        idp.mint(
            "alice",
            &Mint {
                client_id: Some("other-app"),
                ..Mint::default()
            },
        ),
    ));
    cases.push((
        "J12 refresh token (opaque)".into(),
        "Jx6cVc7kL0mBxq3QZ2r8vUeP9yT4wHsNaDfGiKoLpM1".into(),
    ));
    // J13: malformed shapes (the header-size case is below).
    let good = idp_signed(&idp, "ES256", |_, _| {});
    let mut parts = good.split('.');
    let (gh, gp, gs) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    cases.push((
        "J13 9 KB token".into(),
        format!("{gh}.{gp}{}.{gs}", "A".repeat(9 * 1024)),
    ));
    cases.push((
        "J13 duplicate alg".into(),
        raw_token(
            &format!(r#"{{"alg":"ES256","alg":"none","typ":"at+jwt","kid":"{es_kid}"}}"#),
            &claims.to_string(),
            &[1u8; 64],
        ),
    ));
    cases.push((
        "J13 duplicate claim".into(),
        raw_token(
            &format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{es_kid}"}}"#),
            &format!(r#"{{"sub":"alice","sub":"admin","iss":"{iss}"}}"#),
            &[1u8; 64],
        ),
    ));
    cases.push((
        "J13 deep nesting".into(),
        raw_token(
            r#"{"alg":"ES256"}"#,
            &format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
            &[1u8; 64],
        ),
    ));
    cases.push(("J13 padding".into(), format!("{gh}=.{gp}.{gs}")));
    cases.push((
        "J13 +/ alphabet".into(),
        format!(
            "{}.{gp}.{gs}",
            gh.replace('-', "+").replace('_', "/") + "+/"
        ),
    ));
    cases.push(("J13 JWE, 5 parts".into(), format!("{gh}.{gp}.{gs}.a.b")));
    cases.push(("J13 two parts".into(), format!("{gh}.{gp}")));
    cases.push((
        "J13 crit".into(),
        idp_signed(&idp, "ES256", |h, _| h["crit"] = json!(["exp"])),
    ));

    let rejections_before = s.metric("sipward_token_rejections_total{reason=\"signature\"}");
    let results = expect_invalid(&s, &cases);
    assert_eq!(
        s_check(&s),
        issued_before,
        "no credential issued by any case"
    );
    // Malformed shapes were refused before any signature check.
    assert!(s.metric("sipward_token_rejections_total{reason=\"malformed\"}") >= 10.0);
    assert!(s.metric("sipward_token_rejections_total{reason=\"signature\"}") > rejections_before);

    // J13: a header section over token_api.max_header_bytes (16 KiB) is refused by the HTTP
    // layer (431) before any token code runs; nothing is issued.
    let huge = format!("{gh}.{gp}{}.{gs}", "A".repeat(100 * 1024));
    let r = s.http("POST", "/v1/sip/credentials", Some(&huge), BODY);
    assert_eq!(r.status, 431, "100 KB token");
    assert_eq!(s_check(&s), issued_before);

    // J20: status, body and WWW-Authenticate identical across every case; timing printed.
    let first = &results[0];
    for r in &results {
        assert_eq!(
            (r.1, &r.2, &r.3),
            (first.1, &first.2, &first.3),
            "{} differs",
            r.0
        );
    }
    let mut by_time: Vec<_> = results.iter().map(|r| (r.4, r.0.as_str())).collect();
    by_time.sort();
    eprintln!(
        "J20: {} cases, one answer: {} {} [{}]; fastest {:.1?} ({}), median {:.1?}, slowest {:.1?} ({})",
        results.len(),
        first.1,
        first.2,
        first.3,
        by_time[0].0,
        by_time[0].1,
        by_time[by_time.len() / 2].0,
        by_time[by_time.len() - 1].0,
        by_time[by_time.len() - 1].1
    );
    for r in results.iter().filter(|r| r.0.starts_with("J7")) {
        eprintln!("J7 timing: {} {:.1?}", r.0, r.4);
    }

    // J11 (tenant): a real token of this issuer for a tenant not on the allowlist gets the
    // contract's 403 access_denied (docs/token-api.md "Errors"), not a credential.
    let r = s.exchange(
        &idp.mint(
            "alice",
            &Mint {
                tid: Some("tenant-b"),
                ..Mint::default()
            },
        ),
        "x",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"error":"access_denied"}"#)
    );
    // Scope missing: 403 insufficient_scope.
    let r = s.exchange(
        &idp_signed(&idp, "ES256", |_, c| c["scope"] = json!("openid profile")),
        "x",
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.body, r#"{"error":"insufficient_scope"}"#);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    assert_eq!(s_check(&s), issued_before);
    // And the real IdP's own RS256 token for tenant-a still works.
    let rs = idp.mint(
        "alice",
        &Mint {
            alg: Some("RS256"),
            tid: Some("tenant-a"),
            ..Mint::default()
        },
    );
    assert_eq!(s.exchange(&rs, "rs").status, 201);
}

#[test]
fn j6_jku_and_x5u_are_never_fetched() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    let listener = CountingListener::start();
    let attacker = ForgedKey::new("attacker-kid");
    let claims = good_claims(&idp);
    let url = format!("http://{}/jwks.json", listener.addr);
    let mut cases = Vec::new();
    for (field, value) in [
        ("jku", url.clone()),
        ("x5u", url.clone()),
        ("jku", "file:///etc/passwd".into()),
        ("jku", "http://169.254.169.254/latest/meta-data/".into()),
        (
            "x5u",
            format!("http://127.0.0.1:{}/cert.pem", listener.addr.port()),
        ),
    ] {
        for kid in [attacker.kid.clone(), idp.kid("ES256")] {
            let mut h = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
            h[field] = json!(value);
            cases.push((
                format!("J6 {field} {value} kid {kid}"),
                attacker.sign(&h, &claims),
            ));
        }
    }
    expect_invalid(&s, &cases);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        listener.connections(),
        0,
        "sipward fetched a URL from a token header"
    );
}

#[test]
fn j14_random_kids_cause_at_most_one_jwks_refetch_per_cool_down() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    // Warm: the background refresher has loaded the keys.
    let (loaded, _) = s.server.wait_metric(
        "sipward_jwks_fetches_total{result=\"ok\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    assert!(loaded >= 1.0);
    let fetches_before = idp.jwks_requests();
    let attacker = ForgedKey::new("x");
    let claims = good_claims(&idp);
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..1000 {
        let h =
            json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("random-{n}-{}", rand_token())});
        let r = s.http(
            "POST",
            "/v1/sip/credentials",
            Some(&attacker.sign(&h, &claims)),
            BODY,
        );
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    let refetches = s.metric("sipward_jwks_unknown_kid_refetches_total");
    let fetched = idp.jwks_requests() - fetches_before;
    eprintln!(
        "J14: 1000 random kids in {:.1?}: statuses {statuses:?}; on-demand refetches {refetches}; JWKS requests at the IdP {fetched}",
        started.elapsed()
    );
    assert!(
        statuses.keys().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        refetches <= 1.0,
        "{refetches} refetches within one 60 s cool-down"
    );
    assert!(fetched <= 1, "the IdP saw {fetched} JWKS requests");
    assert_eq!(s.metric("sipward_devices_issued_total"), 0.0);
}

/// J15, warm half (the cold half is its own test, so the two wait in parallel).
#[test]
fn j15_idp_down_slow_or_junk_warm_cache_keeps_working() {
    let Some((idp, s)) = idp_and_server(&Setup {
        token_api: "failures_per_source_per_minute = 100000\nrate_per_user_per_minute = 100000\n\
                    rate_per_device_per_minute = 100000\nfetch_timeout_secs = 2\njwks_refetch_cooldown_secs = 1",
        ..Setup::default()
    }) else {
        return;
    };
    let token = idp.token_for("alice");
    assert_eq!(s.exchange(&token, "warm").status, 201);
    for mode in ["down", "slow", "junk"] {
        idp.jwks_mode(mode);
        // An unknown kid forces a refetch, which fails; the cached keys stay.
        std::thread::sleep(Duration::from_millis(1100));
        let attacker = ForgedKey::new("y");
        let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("unknown-{mode}")});
        let started = Instant::now();
        let r = s.http(
            "POST",
            "/v1/sip/credentials",
            Some(&attacker.sign(&h, &idp.claims("alice"))),
            BODY,
        );
        eprintln!(
            "J15 warm, JWKS {mode}: unknown kid answered {} in {:.1?}",
            r.status,
            started.elapsed()
        );
        assert_eq!(r.status, 401, "{mode}");
        let r = s.exchange(&token, "warm");
        assert_eq!(r.status, 200, "JWKS {mode}, warm cache: {}", r.body);
    }
    assert!(s.metric("sipward_jwks_fetches_total{result=\"error\"}") >= 3.0);
    idp.jwks_mode("ok");
}

/// J15, cold half.
#[test]
fn j15_idp_down_or_slow_cold_cache_gives_503() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let token = idp.token_for("alice");
    // Cold: a new sipward while the JWKS is down or slow answers 503 with Retry-After, not 401
    // and not a hang.
    for mode in ["down", "slow"] {
        idp.jwks_mode(mode);
        let cold = TokenServer::start(
            &idp,
            &Setup {
                token_api: "fetch_timeout_secs = 2\njwks_refetch_cooldown_secs = 1",
                ..Setup::default()
            },
        );
        std::thread::sleep(Duration::from_millis(1100));
        let started = Instant::now();
        let r = cold.exchange(&token, "cold");
        eprintln!(
            "J15 cold, JWKS {mode}: {} in {:.1?}",
            r.status,
            started.elapsed()
        );
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.body, r#"{"error":"temporarily_unavailable"}"#);
        let ready = cold.http("GET", "/readyz", None, "");
        assert_eq!(ready.status, 503);
    }
    idp.jwks_mode("ok");
}

#[test]
fn j16_key_rotation_new_kid_after_one_refetch_old_kid_fails_once_dropped() {
    let Some((idp, s)) = idp_and_server(&Setup {
        token_api: "jwks_refetch_cooldown_secs = 1\nrate_per_device_per_minute = 1000",
        ..Setup::default()
    }) else {
        return;
    };
    let old = idp.token_for("alice");
    let old_kid = idp.kid("ES256");
    assert_eq!(s.exchange(&old, "phone").status, 201);
    let refetches = s.metric("sipward_jwks_unknown_kid_refetches_total");

    // The IdP adds a key and signs with it: one refetch, then the new kid works.
    idp.rotate("add");
    let new = idp.token_for("alice");
    let new_kid = idp.kid("ES256");
    assert_ne!(new_kid, old_kid);
    let r = s.exchange(&new, "phone");
    assert_eq!(r.status, 200, "new kid: {}", r.body);
    assert_eq!(
        s.metric("sipward_jwks_unknown_kid_refetches_total") - refetches,
        1.0,
        "exactly one refetch for the new kid"
    );
    let r = s.exchange(&new, "phone");
    assert_eq!(r.status, 200);
    assert_eq!(
        s.metric("sipward_jwks_unknown_kid_refetches_total") - refetches,
        1.0
    );
    // The old kid still verifies while published.
    assert_eq!(s.exchange(&old, "phone").status, 200);

    // The IdP drops the old key. Once sipward refreshes (here: the next refetch after the
    // cool-down, forced by an unknown kid), the old kid fails.
    // Unknown kids are sent until one of them gets the refetch (the first one after the
    // cool-down; polled rather than slept, so a loaded machine cannot make it early).
    idp.rotate("drop");
    let attacker = ForgedKey::new("z");
    let before_drop = s.metric("sipward_jwks_unknown_kid_refetches_total");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while s.metric("sipward_jwks_unknown_kid_refetches_total") == before_drop {
        assert!(
            std::time::Instant::now() < deadline,
            "no refetch for an unknown kid within 15 s of the cool-down"
        );
        n += 1;
        let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("not-published-{n}")});
        let r = s.http(
            "POST",
            "/v1/sip/credentials",
            Some(&attacker.sign(&h, &idp.claims("alice"))),
            BODY,
        );
        assert_eq!(r.status, 401);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.exchange(&old, "phone");
    assert_eq!(r.status, 401, "old kid after the drop: {}", r.body);
    assert_eq!(r.body, INVALID_TOKEN_BODY);
    assert_eq!(s.exchange(&new, "phone").status, 200);
}

#[test]
fn j16_old_kid_fails_once_the_cache_ttl_has_passed() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    // Keys are cached for 2 s (the IdP sends no max-age; the clamp's minimum applies).
    let s = TokenServer::start(
        &idp,
        &Setup {
            token_api: "jwks_min_cache_secs = 2\njwks_max_cache_secs = 2\nrate_per_device_per_minute = 1000",
            ..Setup::default()
        },
    );
    let old = idp.token_for("alice");
    assert_eq!(s.exchange(&old, "phone").status, 201);
    idp.rotate("add");
    idp.rotate("drop");
    let ok_fetches = |s: &TokenServer| s.metric("sipward_jwks_fetches_total{result=\"ok\"}");
    let before = ok_fetches(&s);
    // Two refreshes after the drop, so at least one fetch started after it.
    let (after, took) = s.server.wait_metric(
        "sipward_jwks_fetches_total{result=\"ok\"}",
        Duration::from_secs(15),
        |v| v >= before + 2.0,
    );
    assert!(
        after >= before + 2.0,
        "no background JWKS refresh within 15 s"
    );
    eprintln!("J16: two background refreshes came within {took:.1?} after the drop");
    let r = s.exchange(&old, "phone");
    assert_eq!(r.status, 401, "old kid after the cache TTL: {}", r.body);
    assert_eq!(s.exchange(&idp.token_for("alice"), "phone").status, 200);
}

/// Issue 12 item 5 (RFC 6750 §3.1): more than one Authorization header is a malformed
/// request, whatever the order of a valid and a forged token.
#[test]
fn two_authorization_headers_get_400_whatever_their_order() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    let valid = format!(
        "Bearer {}",
        idp.mint(
            "alice",
            &Mint {
                tid: Some("tenant-a"),
                ..Mint::default()
            }
        )
    );
    let attacker = ForgedKey::new("attacker");
    let forged = format!(
        "Bearer {}",
        attacker.sign(
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": idp.kid("ES256")}),
            &good_claims(&idp)
        )
    );
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let cases = [
        ("POST", "/v1/sip/credentials", &valid, &forged),
        ("POST", "/v1/sip/credentials", &forged, &valid),
        ("GET", "/v1/sip/devices", &valid, &forged),
        ("GET", "/v1/sip/devices", &forged, &valid),
        ("DELETE", "/v1/sip/devices/laptop", &valid, &forged),
        (
            "POST",
            "/admin/v1/users/alice@example.test/revoke",
            &admin,
            &forged,
        ),
        (
            "POST",
            "/admin/v1/users/alice@example.test/revoke",
            &forged,
            &admin,
        ),
        ("GET", "/admin/v1/bindings", &admin, &forged),
        ("GET", "/admin/v1/bindings", &forged, &admin),
        // The operator's routes of issue 18 share the admin check.
        ("GET", "/admin/v1/devices", &admin, &forged),
        ("DELETE", "/admin/v1/devices/d-nobody", &forged, &admin),
        ("GET", "/admin/v1/status", &admin, &forged),
    ];
    for (method, path, first, second) in cases {
        let r = http(
            s.server.http,
            method,
            path,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", first.as_str()),
                ("Authorization", second.as_str()),
            ],
            BODY,
        );
        let order = if first == &valid || first == &admin {
            "valid first"
        } else {
            "forged first"
        };
        assert_eq!(r.status, 400, "{method} {path} {order}: {}", r.body);
        assert_eq!(
            r.body, r#"{"error":"invalid_request"}"#,
            "{method} {path} {order}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    assert_eq!(s.metric("sipward_devices_issued_total"), 0.0);
    // One header still works.
    let r = http(
        s.server.http,
        "POST",
        "/v1/sip/credentials",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", valid.as_str()),
        ],
        BODY,
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Issue 12 item 6 (docs/token-api.md step 2): `kid` is required unless the JWKS holds exactly
/// one key, even when only one of several keys fits the token's `alg`.
#[test]
fn a_token_without_kid_is_refused_unless_the_jwks_has_exactly_one_key() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    // The IdP publishes an ES256 and an RS256 key: each alg has exactly one fitting key.
    let no_kid = |alg: &str| {
        let mut claims = good_claims(&idp);
        claims["jti"] = json!(format!("no-kid-{alg}"));
        idp.sign(&json!({"alg": alg, "typ": "at+jwt"}), &claims)
    };
    let cases = vec![
        ("RS256 without kid, two keys".to_string(), no_kid("RS256")),
        ("ES256 without kid, two keys".to_string(), no_kid("ES256")),
    ];
    expect_invalid(&s, &cases);
    assert!(s.metric("sipward_token_rejections_total{reason=\"key_mismatch\"}") >= 2.0);

    // A JWKS of exactly one key: no kid needed.
    idp.jwks_mode("single");
    let single = TokenServer::start(&idp, &setup());
    let r = single.exchange(&no_kid("ES256"), "laptop");
    assert_eq!(r.status, 201, "one published key, no kid: {}", r.body);
    idp.jwks_mode("ok");
}

/// Issue 12 item 7: entries that cannot verify an allowed signature do not count towards the
/// key cap, and a JWKS without a usable key never replaces working keys.
#[test]
fn a_jwks_padded_with_unusable_entries_keeps_the_real_keys() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    // 100 entries that parse as keys (alg RS512, a 64-bit RSA modulus, a P-256 key labelled
    // ES384) ahead of the real ones; the cap is the default 32.
    idp.jwks_mode("padded");
    let s = TokenServer::start(
        &idp,
        &Setup {
            token_api: "jwks_refetch_cooldown_secs = 1\nrate_per_device_per_minute = 1000",
            ..Setup::default()
        },
    );
    let token = idp.token_for("alice");
    let r = s.exchange(&token, "phone");
    assert_eq!(
        r.status, 201,
        "real keys behind 100 unusable entries: {}",
        r.body
    );
    let rs = idp.mint(
        "alice",
        &Mint {
            alg: Some("RS256"),
            ..Mint::default()
        },
    );
    assert_eq!(s.exchange(&rs, "phone").status, 200);

    // Now the IdP publishes only unusable entries; a refetch (forced by an unknown kid after
    // the cool-down) must keep the working keys.
    idp.jwks_mode("unusable");
    let fetches = idp.jwks_requests();
    std::thread::sleep(Duration::from_millis(1100));
    let attacker = ForgedKey::new("x");
    let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": "not-published"});
    let r = s.http(
        "POST",
        "/v1/sip/credentials",
        Some(&attacker.sign(&h, &idp.claims("alice"))),
        BODY,
    );
    assert_eq!(r.status, 401);
    assert!(idp.jwks_requests() > fetches, "the refetch happened");
    let r = s.exchange(&token, "phone");
    assert_eq!(r.status, 200, "working keys kept: {}", r.body);
    idp.jwks_mode("ok");
}

/// label, status, method, path, extra headers, body.
type RefusalCase<'a> = (
    &'a str,
    u16,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    &'a str,
);

/// Issue 12 item 8: the HTTP layer's own refusals (head too large, NUL or obs-fold in a
/// header, body too large, method not allowed) carry `no-store` and a JSON error.
#[test]
fn http_layer_refusals_carry_no_store_and_a_json_error() {
    let Some((_idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    let huge = "a".repeat(100 * 1024);
    let big_body = format!("{{\"device_id\":\"{}\"}}", "x".repeat(10_000));
    let cases: Vec<RefusalCase<'_>> = vec![
        (
            "100 KB header",
            431,
            "POST",
            "/v1/sip/credentials",
            vec![("X-Filler", huge.as_str())],
            BODY,
        ),
        (
            "NUL in a header",
            400,
            "POST",
            "/v1/sip/credentials",
            vec![("X-Bad", "a\0b")],
            BODY,
        ),
        (
            "obs-fold",
            400,
            "POST",
            "/v1/sip/credentials",
            vec![("X-Folded", "a\r\n b")],
            BODY,
        ),
        (
            "body too large",
            413,
            "POST",
            "/v1/sip/credentials",
            vec![("Authorization", "Bearer x")],
            big_body.as_str(),
        ),
        (
            "method not allowed",
            405,
            "GET",
            "/v1/sip/credentials",
            vec![],
            "",
        ),
    ];
    for (label, status, method, path, headers, body) in cases {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend(headers);
        let r = http(s.server.http, method, path, &all, body);
        assert_eq!(r.status, status, "{label}: {:?}", r);
        assert_eq!(
            r.header("cache-control"),
            Some("no-store"),
            "{label}: {r:?}"
        );
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{label}: {r:?}"
        );
        let v = r.json();
        assert!(
            ["invalid_request", "server_error"].contains(&v["error"].as_str().unwrap_or("")),
            "{label}: {}",
            r.body
        );
    }
    // The server still answers afterwards.
    assert_eq!(s.http("GET", "/healthz", None, "").status, 200);
}

/// Issue 12 item 9, `azp`: every client-naming claim present must name an allowed client;
/// `client_id` naming ours does not cover an `azp` naming another client.
#[test]
fn azp_naming_another_client_is_refused_even_with_our_client_id() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    let cases = vec![
        (
            "client_id ours, azp another".to_string(),
            idp_signed(&idp, "ES256", |_, c| c["azp"] = json!("other-app")),
        ),
        (
            "client_id another, azp ours".to_string(),
            idp_signed(&idp, "ES256", |_, c| {
                c["client_id"] = json!("other-app");
                c["azp"] = json!("softphone");
            }),
        ),
    ];
    expect_invalid(&s, &cases);
    let both_ours = idp_signed(&idp, "ES256", |_, c| c["azp"] = json!("softphone"));
    assert_eq!(s.exchange(&both_ours, "laptop").status, 201);
    let azp_only = idp_signed(&idp, "ES256", |_, c| {
        c.as_object_mut().unwrap().remove("client_id");
        c["azp"] = json!("softphone");
    });
    assert_eq!(s.exchange(&azp_only, "laptop").status, 200);
}

/// The P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// n - s for a 32-byte big-endian s < n.
fn p256_negate(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// Issue 12 item 9, ECDSA malleability: (r, n - s) verifies whenever (r, s) does. Decision:
/// accepted (RFC 7518 does not ask for low-S, common signers emit high-S half of the time,
/// and the claims are the same; sipward never identifies a token by its bytes).
#[test]
fn a_high_s_es256_signature_is_accepted_as_the_same_token() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    let token = idp_signed(&idp, "ES256", |_, _| {});
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    assert_eq!(sig.len(), 64);
    let mut other = sig[..32].to_vec();
    other.extend(p256_negate(&sig[32..]));
    let twin = format!("{input}.{}", b64(&other));
    assert_ne!(twin, token);
    let first = s.exchange(&token, "laptop");
    assert_eq!(first.status, 201, "{}", first.body);
    let second = s.exchange(&twin, "laptop");
    assert_eq!(
        second.status, 200,
        "the other S renews the same device: {}",
        second.body
    );
    assert_eq!(
        first.json()["sip"]["username"],
        second.json()["sip"]["username"]
    );
}

/// Issue 12 item 9, the device namespace: an IdP username that looks like a device username
/// (`d-…`, any case) cannot become an AoR user.
#[test]
fn a_username_in_the_device_namespace_is_refused() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    for user in ["d-abcdefghijklmnop", "D-Abc", "d-"] {
        let token = idp_signed(&idp, "ES256", |_, c| c["preferred_username"] = json!(user));
        let r = s.exchange(&token, "laptop");
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, r#"{"error":"access_denied"}"#),
            "{user}"
        );
    }
    assert!(s.metric("sipward_token_rejections_total{reason=\"username\"}") >= 3.0);
    assert_eq!(s.metric("sipward_devices_issued_total"), 0.0);
    let token = idp_signed(&idp, "ES256", |_, c| {
        c["preferred_username"] = json!("dave-d")
    });
    assert_eq!(s.exchange(&token, "laptop").status, 201);
}

/// Issue 12 item 9, one AoR per subject: a username stays with the subject (`iss`, `sub`)
/// that holds devices for it; another subject with the same username is refused until an
/// admin revokes the user, which frees the name for the subject the IdP names next.
#[test]
fn a_username_moves_to_another_subject_only_after_an_admin_revoke() {
    let Some((idp, s)) = idp_and_server(&setup()) else {
        return;
    };
    let as_sub = |sub: &str, iat: u64| {
        let mut c = good_claims(&idp);
        c["sub"] = json!(sub);
        c["preferred_username"] = json!("carol");
        c["iat"] = json!(iat);
        idp.sign(&idp.header("ES256"), &c)
    };
    let first = s.credential(&as_sub("carol-1", now()), "laptop");
    assert_eq!(first.aor, "sip:carol@example.test");
    let r = s.exchange(&as_sub("carol-2", now()), "desk");
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"error":"access_denied"}"#),
        "another subject with carol's username"
    );
    assert_eq!(
        s.metric("sipward_token_rejections_total{reason=\"username_taken\"}"),
        1.0
    );
    // The first subject keeps renewing.
    assert_eq!(s.exchange(&as_sub("carol-1", now()), "laptop").status, 200);

    let r = s.http(
        "POST",
        "/admin/v1/users/carol@example.test/revoke",
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let revoked_by = now();
    while now() <= revoked_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Tokens issued after the revoke (and its leeway): the new subject takes the name, and
    // from then on the old one is refused.
    let r = s.exchange(&as_sub("carol-2", now() + 60), "desk");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.exchange(&as_sub("carol-1", now() + 60), "laptop");
    assert_eq!(r.status, 403, "{}", r.body);
}
