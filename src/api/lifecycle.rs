//! The state the identity lifecycle (issue 20, docs/lifecycle.md) adds to the token API: the
//! `[[scim]]` providers with their directories, and the set of deprovisioned users every
//! Bearer route refuses. Kept apart from `scim.rs` (the routes) so that `token.rs` can hold it
//! without naming the routes.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::config::{AdminToken, Config, UserMatch};
use crate::scim::Directory;

/// One IdP's SCIM provider.
pub struct Provider {
    pub issuer_name: String,
    /// The issuer's `iss` (the user key of `external_id` matching).
    pub iss: String,
    /// The issuer's domains (for `user_name` matching).
    pub domains: Vec<String>,
    pub user_match: UserMatch,
    token: AdminToken,
    /// Held only while one operation decides; never across an `.await`.
    pub directory: Mutex<Directory>,
}

/// The providers, built from `[[scim]]`.
pub fn providers(config: &Config) -> Vec<Provider> {
    config
        .scim
        .iter()
        .filter_map(|s| {
            let issuer = config.issuers.iter().find(|i| i.name == s.issuer)?;
            Some(Provider {
                issuer_name: issuer.name.clone(),
                iss: issuer.issuer.clone(),
                domains: issuer.domains.clone(),
                user_match: s.user_match,
                token: s.token.clone(),
                directory: Mutex::new(Directory::new(s.max_users, s.max_groups)),
            })
        })
        .collect()
}

/// Users refused new credentials because their IdP deprovisioned them: by AoR
/// (`user_name` matching) and by the hash of `(iss, sub)` (`external_id` matching). Checked by
/// every Bearer route after the token is validated (`token::user_of`).
#[derive(Default)]
pub struct Deprovisioned {
    aors: Mutex<HashSet<String>>,
    subjects: Mutex<HashSet<[u8; 32]>>,
}

impl Deprovisioned {
    pub fn refuses(&self, user_key: &[u8; 32], aor: &str) -> bool {
        let by_aor = self.aors.lock().is_ok_and(|s| s.contains(aor));
        by_aor || self.subjects.lock().is_ok_and(|s| s.contains(user_key))
    }

    /// Whether the set changed.
    pub(super) fn set_aor(&self, aor: &str, blocked: bool) -> bool {
        self.aors.lock().is_ok_and(|mut s| match blocked {
            true => s.insert(aor.to_owned()),
            false => s.remove(aor),
        })
    }

    /// Whether the set changed.
    pub(super) fn set_subject(&self, key: [u8; 32], blocked: bool) -> bool {
        self.subjects.lock().is_ok_and(|mut s| match blocked {
            true => s.insert(key),
            false => s.remove(&key),
        })
    }
}

impl Provider {
    /// Whether `presented` is this provider's token (constant time over SHA-256).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.token.matches(presented)
    }
}

/// The request id of an audit line: the client's `X-Request-Id` when it is short and plain
/// (at most 64 of `[A-Za-z0-9._-]`), else a fresh random one.
pub fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(|| hex::encode(rand::random::<[u8; 8]>()), str::to_owned)
}
