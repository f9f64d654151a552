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

    fn find(&self, q: &Query<'_>, dummy: &DummyHa1s) -> Found<&'static str> {
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

/// Where and when a request comes from: its source, `now` and the Unix seconds.
#[derive(Clone, Copy)]
struct At {
    from: SocketAddr,
    now: Instant,
    unix: u64,
}

impl At {
    /// From `source(1)`, now, at [`UNIX0`].
    fn start() -> At {
        At {
            from: source(1),
            now: Instant::now(),
            unix: UNIX0,
        }
    }

    /// The same source, `secs` later on both clocks.
    fn later(self, secs: u64) -> At {
        At {
            now: self.now + Duration::from_secs(secs),
            unix: self.unix + secs,
            ..self
        }
    }

    /// The same moment, from `source(n)`.
    fn source(self, n: u8) -> At {
        At {
            from: source(n),
            ..self
        }
    }
}

/// One request: `headers` are the Authorization values (none: no credentials).
fn run(a: &Authenticator, users: &Users, headers: &[&str], at: At) -> Decision<&'static str> {
    let parsed = headers.iter().map(|h| Credentials::parse(h));
    let req = DigestRequest {
        offered: Offered::select(parsed, REALM),
        realm: REALM,
        method: "REGISTER",
        request_uri: RURI,
        call_id: "call-1",
        source: at.from,
        expected_aor: None,
    };
    a.authenticate(&req, users, at.now, at.unix)
}

/// `user` answers `nonce` with `password` (`None`: a garbage response), nc 1.
fn answer(
    a: &Authenticator,
    users: &Users,
    user: &str,
    password: Option<&str>,
    nonce: &str,
    at: At,
) -> Decision<&'static str> {
    run(a, users, &[&header(user, password, nonce, RURI, 1)], at)
}

/// A fresh challenge at `at`, answered at once by `user` with `password`.
fn attempt(
    a: &Authenticator,
    users: &Users,
    user: &str,
    password: Option<&str>,
    at: At,
) -> Decision<&'static str> {
    let nonce = challenge(a, users, at);
    answer(a, users, user, password, &nonce, at)
}

/// The nonce of a fresh challenge at `at`.
fn challenge(a: &Authenticator, users: &Users, at: At) -> String {
    match run(a, users, &[], at) {
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
    let at = At::start();
    let old = challenge(&a, &users, at);
    let later = at.later(LIFETIME + 2);

    // A5: the right password on an expired nonce: stale=true with every algorithm, a fresh
    // nonce, and the retry with it succeeds.
    let resp = answer(&a, &users, "alice", Some("alice-pw"), &old, later);
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
    match answer(&a, &users, "alice", Some("alice-pw"), &c.nonce, later) {
        Decision::Authenticated(id) => assert_eq!(&*id.aor, "sip:alice@example.test"),
        other => panic!("retry with the fresh nonce: {other:?}"),
    }
    assert_eq!(users.finds.get(), 1);

    // E3: garbage credentials on an expired nonce, known and unknown users: the same stale
    // challenge, and still no lookup.
    let users = Users::default();
    let mut seen = Vec::new();
    for user in ["alice", "bob", "ghost", "u4821"] {
        let nonce = challenge(&a, &users, at);
        let d = answer(&a, &users, user, None, &nonce, later);
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
    let at = At::start();
    for user in ["alice", "ghost"] {
        let d = answer(&a, &users, user, Some("alice-pw"), "bm90LW91cnM", at);
        assert_eq!(
            shape(&d),
            (false, Some(Failure::InvalidNonce), realm_algorithms())
        );
    }
    // A nonce bound to another source is not ours for this one.
    let nonce = challenge(&a, &users, at.source(2));
    let d = answer(&a, &users, "alice", Some("alice-pw"), &nonce, at);
    assert_eq!(shape(&d).1, Some(Failure::InvalidNonce));
    assert_eq!(users.finds.get(), 0);
}

#[test]
fn replay_is_refused_after_verification_only() {
    let a = authenticator(false);
    let users = Users::default();
    let at = At::start();
    let nonce = challenge(&a, &users, at);
    let good = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&good], at),
        Decision::Authenticated(_)
    ));
    // The same nc again: verified (a lookup), then refused as a replay, answered stale=true.
    let d = run(&a, &users, &[&good], at);
    assert_eq!(shape(&d), (true, Some(Failure::Replay), realm_algorithms()));
    assert_eq!(users.finds.get(), 2);
    // A wrong response with the replayed nc never reaches the replay table.
    let d = answer(&a, &users, "alice", Some("guess"), &nonce, at);
    assert_eq!(
        shape(&d),
        (false, Some(Failure::WrongResponse), realm_algorithms())
    );
    // A higher nc on the same nonce is fine.
    let next = header("alice", Some("alice-pw"), &nonce, RURI, 2);
    assert!(matches!(
        run(&a, &users, &[&next], at),
        Decision::Authenticated(_)
    ));
}

#[test]
fn an_unknown_user_takes_the_same_path_as_a_known_one() {
    let a = authenticator(false);
    let start = At::start();
    let mut paths = Vec::new();
    for (n, user) in ["alice", "ghost"].into_iter().enumerate() {
        let users = Users::default();
        let at = start.source(10 + n as u8);
        let mut decisions = Vec::new();
        for _ in 0..USER_LIMIT {
            let d = attempt(&a, &users, user, Some("guess"), at);
            decisions.push(shape(&d));
        }
        // Both are now over the per-username limit, after the same number of failures.
        let d = attempt(&a, &users, user, Some("guess"), at);
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
    // Every request comes from the one NAT address.
    let nat = At::start();
    // alice's phone works behind the NAT address.
    let nonce = challenge(&a, &users, nat);
    let good = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&good], nat),
        Decision::Authenticated(_)
    ));
    // A guesser behind the same address fails as many users as the source allows.
    for n in 0..SOURCE_LIMIT {
        let d = attempt(&a, &users, &format!("user{n}"), Some("guess"), nat);
        assert_eq!(shape(&d).1, Some(Failure::WrongResponse));
    }
    let finds = users.finds.get();
    // Now the source is blocked: throttled before the nonce or any lookup.
    let nonce = challenge(&a, &users, nat);
    let d = answer(&a, &users, "mallory", Some("guess"), &nonce, nat);
    assert!(matches!(d, Decision::Throttled), "{d:?}");
    let d = answer(&a, &users, "mallory", None, "bm90LW91cnM", nat);
    assert!(matches!(d, Decision::Throttled), "{d:?}");
    assert_eq!(users.finds.get(), finds);
    // The trusted pair still authenticates; a request without credentials is still challenged.
    let good = header("alice", Some("alice-pw"), &nonce, RURI, 1);
    assert!(matches!(
        run(&a, &users, &[&good], nat),
        Decision::Authenticated(_)
    ));
    // One window later the source may try again.
    let d = attempt(&a, &users, "mallory", Some("guess"), nat.later(61));
    assert_eq!(shape(&d).1, Some(Failure::WrongResponse));
}

#[test]
fn order_of_the_checks_before_the_nonce() {
    let a = authenticator(false);
    let users = Users::default();
    let at = At::start();
    let stale = challenge(&a, &users, at);
    // The nonce has expired by the Unix clock; the monotonic one stays.
    let later = At {
        unix: UNIX0 + LIFETIME + 2,
        ..at
    };
    // Two credentials for the realm, or one that does not parse: 400 whatever else is wrong.
    let one = header("alice", Some("alice-pw"), &stale, RURI, 1);
    let d = run(&a, &users, &[&one, &one], later);
    assert!(
        matches!(d, Decision::BadRequest(BadRequest::Credentials)),
        "{d:?}"
    );
    let d = run(
        &a,
        &users,
        &["Digest username=\"alice\", realm=\"example.test\""],
        later,
    );
    assert!(
        matches!(d, Decision::BadRequest(BadRequest::Credentials)),
        "{d:?}"
    );
    // Another realm's credentials are not ours: a plain challenge.
    let other = one.replace("realm=\"example.test\"", "realm=\"other.test\"");
    assert_eq!(shape(&run(&a, &users, &[&other], later)).1, None);
    // An algorithm the realm does not allow, before the URI and the nonce.
    let sess = one.replace("algorithm=MD5", "algorithm=SHA-512-256");
    let d = run(&a, &users, &[&sess], later);
    assert_eq!(
        shape(&d),
        (false, Some(Failure::Algorithm), realm_algorithms())
    );
    // A Digest uri naming another resource: 400 before the (stale) nonce is looked at.
    let elsewhere = header("alice", Some("alice-pw"), &stale, "sip:other.test", 1);
    let d = run(&a, &users, &[&elsewhere], later);
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
    let at = At::start();
    let nonce = challenge(&a, &users, at);
    assert_eq!(
        shape(&answer(&a, &users, "hugo", Some("guess"), &nonce, at)).1,
        Some(Failure::WrongResponse)
    );
    assert!(matches!(
        answer(&a, &users, "hugo", Some("hugo-pw"), &nonce, at),
        Decision::SsoRequired
    ));
    // A non-human account in the same realm is not affected.
    assert!(matches!(
        attempt(&a, &users, "alice", Some("alice-pw"), at),
        Decision::Authenticated(_)
    ));
}
