//! Revocation is linearisable with binding creation (issue 12, item 1): REGISTERs with a
//! device credential race a `DELETE /v1/sip/devices/{id}` (and an admin user revoke) on the
//! in-process server; after the revoke's response no binding made with that credential
//! exists, and none appears afterwards.
//!
//! Each trial runs several REGISTER loops (a new Call-ID per REGISTER, so each one is a new
//! binding decision) with one device's credential while the device is deleted; the loops go
//! on for a while after the DELETE answered, then the bindings are read back. Before the fix
//! the revoke removed bindings by the Call-IDs the device had *already reported* registering
//! with, so a REGISTER verified just before the revoke stored a binding afterwards (seen in
//! about 1 trial in 10).

mod common;
mod token;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use token::*;

const TRIALS: usize = 40;
const LOOPS: usize = 3;
/// The loops go on with the revoked credential: keep the failure limiters out of the way.
const AUTH: &str = "max_failures_per_source = 1000000\nmax_failures_per_user = 1000000";
/// One credential per trial for one user.
const TOKEN_API: &str = "rate_per_user_per_minute = 1000\nrate_per_source_per_minute = 1000";

/// Registers `contact` as `user` with `cred` over its own UDP socket, a new Call-ID each
/// time, until `stop`; counts 200s.
fn register_loop(
    server: std::net::SocketAddr,
    user: String,
    cred: Credential,
    contact: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
) {
    let mut c = Client::new(Proto::Udp, server);
    while !stop.load(Ordering::Relaxed) {
        let mut reg = Register::new(&user);
        reg.call_id = rand_token();
        reg.contact = Some(contact.clone());
        let Some(first) = c.request(&reg.build(&c)) else {
            continue;
        };
        let Some(nonce) = first.nonce_for("MD5") else {
            continue;
        };
        let next = with_credentials(&reg, "MD5", &cred.username, &cred.password, &nonce);
        if c.request(&next.build(&c))
            .is_some_and(|r| r.status() == 200)
        {
            ok.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts one loop per contact, waits for a few successes, runs `revoke`, lets the loops go
/// on for a moment, stops them; returns how many REGISTERs succeeded in all.
fn race(
    s: &TokenServer,
    user: &str,
    cred: &Credential,
    contacts: &[String],
    revoke: impl FnOnce() -> HttpResponse,
) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = contacts
        .iter()
        .map(|contact| {
            let (stop, ok, cred, contact, user) = (
                stop.clone(),
                ok.clone(),
                cred.clone(),
                contact.clone(),
                user.to_owned(),
            );
            let server = s.server.udp;
            std::thread::spawn(move || register_loop(server, user, cred, contact, stop, ok))
        })
        .collect();
    let started = Instant::now();
    while ok.load(Ordering::Relaxed) < LOOPS && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = revoke();
    assert_eq!(r.status, 200, "revoke: {}", r.body);
    // Keep racing after the answer: a REGISTER verified before the revoke must not land now.
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().expect("register loop");
    }
    ok.load(Ordering::Relaxed)
}

/// The bindings of `user` whose contact is one of `contacts`.
fn leaked(s: &TokenServer, user: &str, contacts: &[String]) -> Vec<String> {
    s.bindings_of(user)
        .iter()
        .filter_map(|b| b["contact"].as_str().map(str::to_owned))
        .filter(|c| contacts.iter().any(|mine| mine.contains(c.as_str())))
        .collect()
}

/// A server whose limits stay out of the race's way (see [`AUTH`], [`TOKEN_API`]).
fn racing_server(idp: &Idp) -> TokenServer {
    TokenServer::start(
        idp,
        &Setup {
            auth: AUTH,
            token_api: TOKEN_API,
            ..Setup::default()
        },
    )
}

#[test]
fn a_device_delete_racing_registers_leaves_no_binding() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = racing_server(&idp);
    let token = idp.token_for("alice");
    let mut successes = 0;
    for trial in 0..TRIALS {
        let device = format!("racer-{trial}");
        let cred = s.credential(&token, &device);
        let contacts: Vec<String> = (0..LOOPS)
            .map(|n| format!("<sip:alice@127.0.0.1:{}>", 20000 + trial * 10 + n))
            .collect();
        successes += race(&s, "alice", &cred, &contacts, || {
            s.http(
                "DELETE",
                &format!("/v1/sip/devices/{device}"),
                Some(&token),
                "",
            )
        });
        let left = leaked(&s, "alice", &contacts);
        assert!(
            left.is_empty(),
            "trial {trial}: bindings of the deleted device survived: {left:?}"
        );
    }
    assert!(
        successes >= TRIALS * LOOPS,
        "the loops registered only {successes} times"
    );
    assert_eq!(s.metric("sipward_bindings"), 0.0);
}

#[test]
fn an_admin_user_revoke_racing_registers_leaves_no_binding() {
    if !idp_available() {
        return;
    }
    let idp = Idp::start();
    let s = racing_server(&idp);
    for trial in 0..TRIALS / 4 {
        // One user per trial: a revoked user's tokens from before the revoke stay refused.
        let user = format!("racer{trial}");
        let token = idp.token_for(&user);
        let cred = s.credential(&token, "softphone");
        let contacts: Vec<String> = (0..LOOPS)
            .map(|n| format!("<sip:{user}@127.0.0.1:{}>", 30000 + trial * 10 + n))
            .collect();
        race(&s, &user, &cred, &contacts, || {
            http(
                s.server.http,
                "POST",
                &format!("/admin/v1/users/{user}@{DOMAIN}/revoke"),
                &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                "",
            )
        });
        let left = leaked(&s, &user, &contacts);
        assert!(
            left.is_empty(),
            "trial {trial}: bindings of the revoked user survived: {left:?}"
        );
    }
    assert_eq!(s.metric("sipward_bindings"), 0.0);
}
