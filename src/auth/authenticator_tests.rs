//! The authenticator's order on a virtual clock: `now` and the Unix seconds are parameters,
//! nothing sleeps. A counting lookup shows which steps run before any user lookup.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::*;
use crate::auth::{LimiterConfig, NonceConfig, NonceKeys, ReplayConfig};

const REALM: &str = "example.test";
const RURI: &str = "sip:example.test";
const UNIX0: u64 = 1_800_000_000;
const LIFETIME: u64 = 10;
const SOURCE_LIMIT: u32 = 6;
const USER_LIMIT: u32 = 3;

/// Static-account-like users: `alice` (password "alice-pw"), `hugo` (a human account,
/// "hugo-pw"); anyone else is unknown and gets a dummy. Counts every lookup and candidate.
#[derive(Default)]
struct Users {
    finds: Cell<usize>,
    candidates: Cell<usize>,
}

impl CredentialLookup for Users {
    type Credential = &'static str;

    fn find<'s>(&'s self, q: &Query<'_>, dummy: &DummyHa1s) -> Found<'s, &'static str> {
        self.finds.set(self.finds.get() + 1);
        self.candidates.set(self.candidates.get() + 1);
        let known = match q.username {
            "alice" => Some(("alice-pw", "sip:alice@example.test", false)),
            "hugo" => Some(("hugo-pw", "sip:hugo@example.test", true)),
            _ => None,
        };
        let candidate = match known {
            Some((pw, aor, human)) => Candidate {
                ha1: Ha1::from_password(q.algorithm, q.username, q.realm, pw),
                identity: Some(Identity {
                    aor: aor.into(),
                    sso_user: human,
                    expires_cap: None,
                    credential: "static",
                }),
            },
            None => Candidate {
                ha1: *dummy.get(q.algorithm),
                identity: None,
            },
        };
        Found {
            candidates: vec![candidate],
            algorithms: None,
        }
    }
}

fn authenticator(sso_enforced: bool) -> Authenticator {
    let nonces = NonceIssuer::new(
        NonceKeys::from_bytes(&[(1, [7; 32])]).expect("one key"),
        NonceConfig {
            lifetime: Duration::from_secs(LIFETIME),
            ..NonceConfig::default()
        },
    );
    let replay = ReplayTable::new(ReplayConfig { capacity: 64 }, &nonces);
    Authenticator::new(AuthenticatorParts {
        nonces,
        bind_nonce_to_source: true,
        replay,
        source_limiter: FailureLimiter::new(LimiterConfig {
            max_failures: SOURCE_LIMIT,
            ..LimiterConfig::per_source()
        }),
        user_limiter: FailureLimiter::new(LimiterConfig {
            max_failures: USER_LIMIT,
            ..LimiterConfig::per_username()
        }),
        trusted: TrustedPairs::new(Duration::from_secs(3600), 16),
        realms: vec![(
            REALM.to_owned(),
            RealmPolicy {
                algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
                sso_enforced,
            },
        )],
    })
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// An MD5 `Authorization` value; `password` `None` sends a garbage response.
fn header(user: &str, password: Option<&str>, nonce: &str, uri: &str, nc: u32) -> String {
    let nc = format!("{nc:08x}");
    let response = match password {
        Some(pw) => {
            let ha1 = md5_hex(&format!("{user}:{REALM}:{pw}"));
            let ha2 = md5_hex(&format!("REGISTER:{uri}"));
            md5_hex(&format!("{ha1}:{nonce}:{nc}:cn:auth:{ha2}"))
        }
        None => "0123456789abcdef0123456789abcdef".to_owned(),
    };
    format!(
        "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"cn\", qop=auth, nc={nc}"
    )
}

fn source(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 5060))
}

/// One request: `headers` are the Authorization values (none: no credentials).
fn run(
    a: &Authenticator,
    users: &Users,
    headers: &[&str],
    from: SocketAddr,
    now: Instant,
    unix: u64,
) -> Decision<&'static str> {
    let parsed = headers.iter().map(|h| Credentials::parse(h));
    let req = DigestRequest {
        offered: Offered::select(parsed, REALM),
        realm: REALM,
        method: "REGISTER",
        request_uri: RURI,
        call_id: "call-1",
        source: from,
        expected_aor: None,
    };
    a.authenticate(&req, users, now, unix)
}

/// The nonce of a fresh challenge for `from` at `unix`.
fn challenge(a: &Authenticator, users: &Users, from: SocketAddr, t: Instant, unix: u64) -> String {
    match run(a, users, &[], from, t, unix) {
        Decision::Challenge(c) => {
            assert_eq!(c.failure, None, "no credentials: nothing counted");
            assert!(!c.stale);
            c.nonce
        }
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// What the client sees of a challenge (the nonce aside) and the reason metrics see.
fn shape(d: &Decision<&'static str>) -> (bool, Option<Failure>, Vec<Algorithm>) {
    match d {
        Decision::Challenge(c) => (c.stale, c.failure, c.algorithms.clone()),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn realm_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Sha256, Algorithm::Md5]
}

// A5 and E3 (moved here from the end-to-end suite, which waited 11.5 s for a nonce to expire).
#[test]
fn a05_e03_expired_nonce_is_stale_for_known_and_unknown_users_before_any_lookup() {
    let a = authenticator(false);
    let users = Users::default();
    let t0 = Instant::now();
    let from = source(1);
    let old = challenge(&a, &users, from, t0, UNIX0);
    let later = UNIX0 + LIFETIME + 2;
    let t1 = t0 + Duration::from_secs(LIFETIME + 2);

    // A5: the right password on an expired nonce: stale=true with every algorithm, a fresh
    // nonce, and the retry with it succeeds.
    let resp = run(
        &a,
        &users,
        &[&header("alice", Some("alice-pw"), &old, RURI, 1)],
        from,
        t1,
        later,
    );
    assert_eq!(
        shape(&resp),
        (true, Some(Failure::StaleNonce), realm_algorithms())
    );
    let Decision::Challenge(c) = resp else {
        unreachable!()
    };
    assert_ne!(c.nonce, old);
    let values = c.header_values(REALM);
    assert_eq!(values.len(), 2);
    assert!(
        values.iter().all(|h| h.ends_with(", stale=true")),
        "{values:?}"
    );
    assert_eq!(
        users.finds.get(),
        0,
        "a stale nonce is answered before any user lookup"
    );
    match run(
        &a,
        &users,
        &[&header("alice", Some("alice-pw"), &c.nonce, RURI, 1)],
        from,
        t1,
        later,
    ) {
        Decision::Authenticated(id) => assert_eq!(&*id.aor, "sip:alice@example.test"),
        other => panic!("retry with the fresh nonce: {other:?}"),
    }
    assert_eq!(users.finds.get(), 1);

    // E3: garbage credentials on an expired nonce, known and unknown users: the same stale
    // challenge, and still no lookup.
    let users = Users::default();
    let mut seen = Vec::new();
    for user in ["alice", "bob", "ghost", "u4821"] {
        let nonce = challenge(&a, &users, from, t0, UNIX0);
        let d = run(
            &a,
            &users,
            &[&header(user, None, &nonce, RURI, 1)],
            from,
            t1,
            later,
        );
        seen.push(shape(&d));
    }
    assert!(
        seen.iter()
            .all(|s| *s == (true, Some(Failure::StaleNonce), realm_algorithms())),
        "{seen:?}"
    );
    assert_eq!(users.finds.get(), 0);
}

#[test]
fn a_nonce_we_never_issued_is_refused_before_any_lookup() {
    let a = authenticator(false);
    let users = Users::default();
    let t = Instant::now();
    for user in ["alice", "ghost"] {
        let d = run(
            &a,
            &users,
            &[&header(user, Some("alice-pw"), "bm90LW91cnM", RURI, 1)],
            source(1),
            t,
            UNIX0,
        );
        assert_eq!(
            shape(&d),
            (false, Some(Failure::InvalidNonce), realm_algorithms())
        );
    }
    // A nonce bound to another source is not ours for this one.
    let nonce = challenge(&a, &users, source(2), t, UNIX0);
    let d = run(
        &a,
        &users,
        &[&header("alice", Some("alice-pw"), &nonce, RURI, 1)],
        source(1),
        t,
        UNIX0,
    );
    assert_eq!(shape(&d).1, Some(Failure::InvalidNonce));
    assert_eq!(users.finds.get(), 0);
}

#[test]
fn replay_is_refused_after_verification_only() {
    let a = authenticator(false);
    let users = Users::default();
    let t = Instant::now();
    let from = source(1);
    let nonce = challenge(&a, &users, from, t, UNIX0);
    let good = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&good], from, t, UNIX0),
        Decision::Authenticated(_)
    ));
    // The same nc again: verified (a lookup), then refused as a replay, answered stale=true.
    let d = run(&a, &users, &[&good], from, t, UNIX0);
    assert_eq!(shape(&d), (true, Some(Failure::Replay), realm_algorithms()));
    assert_eq!(users.finds.get(), 2);
    // A wrong response with the replayed nc never reaches the replay table.
    let wrong = header("alice", Some("guess"), &nonce, RURI, 1);
    let d = run(&a, &users, &[&wrong], from, t, UNIX0);
    assert_eq!(
        shape(&d),
        (false, Some(Failure::WrongResponse), realm_algorithms())
    );
    // A higher nc on the same nonce is fine.
    let next = header("alice", Some("alice-pw"), &nonce, RURI, 2);
    assert!(matches!(
        run(&a, &users, &[&next], from, t, UNIX0),
        Decision::Authenticated(_)
    ));
}

#[test]
fn an_unknown_user_takes_the_same_path_as_a_known_one() {
    let a = authenticator(false);
    let t = Instant::now();
    let mut paths = Vec::new();
    for (n, user) in ["alice", "ghost"].into_iter().enumerate() {
        let users = Users::default();
        let from = source(10 + n as u8);
        let mut decisions = Vec::new();
        for _ in 0..USER_LIMIT {
            let nonce = challenge(&a, &users, from, t, UNIX0);
            let d = run(
                &a,
                &users,
                &[&header(user, Some("guess"), &nonce, RURI, 1)],
                from,
                t,
                UNIX0,
            );
            decisions.push(shape(&d));
        }
        // Both are now over the per-username limit, after the same number of failures.
        let nonce = challenge(&a, &users, from, t, UNIX0);
        let d = run(
            &a,
            &users,
            &[&header(user, Some("guess"), &nonce, RURI, 1)],
            from,
            t,
            UNIX0,
        );
        assert!(matches!(d, Decision::Throttled), "{user}: {d:?}");
        paths.push((decisions, users.finds.get(), users.candidates.get()));
    }
    assert_eq!(paths[0], paths[1]);
    let (decisions, finds, candidates) = &paths[0];
    assert!(decisions
        .iter()
        .all(|d| *d == (false, Some(Failure::WrongResponse), realm_algorithms())));
    assert_eq!(
        (*finds, *candidates),
        (USER_LIMIT as usize, USER_LIMIT as usize)
    );
}

#[test]
fn throttle_spares_trusted_pairs_and_challenges_requests_without_credentials() {
    let a = authenticator(false);
    let users = Users::default();
    let t0 = Instant::now();
    let nat = source(1);
    // alice's phone works behind the NAT address.
    let nonce = challenge(&a, &users, nat, t0, UNIX0);
    let good = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&good], nat, t0, UNIX0),
        Decision::Authenticated(_)
    ));
    // A guesser behind the same address fails as many users as the source allows.
    for n in 0..SOURCE_LIMIT {
        let user = format!("user{n}");
        let nonce = challenge(&a, &users, nat, t0, UNIX0);
        let d = run(
            &a,
            &users,
            &[&header(&user, Some("guess"), &nonce, RURI, 1)],
            nat,
            t0,
            UNIX0,
        );
        assert_eq!(shape(&d).1, Some(Failure::WrongResponse));
    }
    let finds = users.finds.get();
    // Now the source is blocked: throttled before the nonce or any lookup.
    let nonce = challenge(&a, &users, nat, t0, UNIX0);
    let d = run(
        &a,
        &users,
        &[&header("mallory", Some("guess"), &nonce, RURI, 1)],
        nat,
        t0,
        UNIX0,
    );
    assert!(matches!(d, Decision::Throttled), "{d:?}");
    let d = run(
        &a,
        &users,
        &[&header("mallory", None, "bm90LW91cnM", RURI, 1)],
        nat,
        t0,
        UNIX0,
    );
    assert!(matches!(d, Decision::Throttled), "{d:?}");
    assert_eq!(users.finds.get(), finds);
    // The trusted pair still authenticates; a request without credentials is still challenged.
    let good = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&good], nat, t0, UNIX0),
        Decision::Authenticated(_)
    ));
    // One window later the source may try again.
    let t1 = t0 + Duration::from_secs(61);
    let unix1 = UNIX0 + 61;
    let nonce = challenge(&a, &users, nat, t1, unix1);
    let d = run(
        &a,
        &users,
        &[&header("mallory", Some("guess"), &nonce, RURI, 1)],
        nat,
        t1,
        unix1,
    );
    assert_eq!(shape(&d).1, Some(Failure::WrongResponse));
}

#[test]
fn order_of_the_checks_before_the_nonce() {
    let a = authenticator(false);
    let users = Users::default();
    let t = Instant::now();
    let from = source(1);
    let stale = challenge(&a, &users, from, t, UNIX0);
    let later = UNIX0 + LIFETIME + 2;
    // Two credentials for the realm, or one that does not parse: 400 whatever else is wrong.
    let one = header("alice", Some("alice-pw"), &stale, RURI, 1);
    let d = run(&a, &users, &[&one, &one], from, t, later);
    assert!(
        matches!(d, Decision::BadRequest(BadRequest::Credentials)),
        "{d:?}"
    );
    let d = run(
        &a,
        &users,
        &["Digest username=\"alice\", realm=\"example.test\""],
        from,
        t,
        later,
    );
    assert!(
        matches!(d, Decision::BadRequest(BadRequest::Credentials)),
        "{d:?}"
    );
    // Another realm's credentials are not ours: a plain challenge.
    let other = one.replace("realm=\"example.test\"", "realm=\"other.test\"");
    assert_eq!(shape(&run(&a, &users, &[&other], from, t, later)).1, None);
    // An algorithm the realm does not allow, before the URI and the nonce.
    let sess = one.replace("algorithm=MD5", "algorithm=SHA-512-256");
    let d = run(&a, &users, &[&sess], from, t, later);
    assert_eq!(
        shape(&d),
        (false, Some(Failure::Algorithm), realm_algorithms())
    );
    // A Digest uri naming another resource: 400 before the (stale) nonce is looked at.
    let elsewhere = header("alice", Some("alice-pw"), &stale, "sip:other.test", 1);
    let d = run(&a, &users, &[&elsewhere], from, t, later);
    assert!(
        matches!(d, Decision::BadRequest(BadRequest::DigestUriMismatch)),
        "{d:?}"
    );
    assert_eq!(users.finds.get(), 0);
}

#[test]
fn sso_is_required_only_after_a_human_account_verified() {
    let a = authenticator(true);
    let users = Users::default();
    let t = Instant::now();
    let from = source(1);
    let nonce = challenge(&a, &users, from, t, UNIX0);
    let wrong = header("hugo", Some("guess"), &nonce, RURI, 1);
    assert_eq!(
        shape(&run(&a, &users, &[&wrong], from, t, UNIX0)).1,
        Some(Failure::WrongResponse)
    );
    let right = header("hugo", Some("hugo-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&right], from, t, UNIX0),
        Decision::SsoRequired
    ));
    // A non-human account in the same realm is not affected.
    let nonce = challenge(&a, &users, from, t, UNIX0);
    let alice = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&alice], from, t, UNIX0),
        Decision::Authenticated(_)
    ));
}
