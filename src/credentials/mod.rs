//! Credentials the registrar verifies against: static accounts from config, each with HA1
//! values per Digest algorithm (computed once at start from a password file, or given as HA1
//! in config), and per-device credentials from the token API (`device`: derived passwords and
//! the index of active device records).
//!
//! [`Directory`] puts both behind [`crate::auth::CredentialLookup`], the seam through which the
//! authenticator finds a username's HA1s.
//!
//! It holds no plaintext password after start. It must not decide policy (which AoR an
//! identity may bind): dispatch does.

pub mod device;

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::{Algorithm, Candidate, CredentialLookup, DummyHa1s, Found, Ha1, Identity, Query};
use crate::config::{AccountKind, AccountSecret, Config, DigestAlgorithmName};
use device::{DeviceEntry, DeviceIndex, DEVICE_PREFIX};

/// Maps a configured algorithm name to the digest implementation.
pub fn algorithm(name: DigestAlgorithmName) -> Algorithm {
    match name {
        DigestAlgorithmName::Md5 => Algorithm::Md5,
        DigestAlgorithmName::Sha256 => Algorithm::Sha256,
        DigestAlgorithmName::Sha512_256 => Algorithm::Sha512_256,
    }
}

/// One account, ready for verification.
#[derive(Debug)]
pub struct Account {
    pub username: Box<str>,
    pub domain: Box<str>,
    pub kind: AccountKind,
    /// The algorithms this account answers with (it verifies with no other); a challenge
    /// offers the domain's list whatever this one says.
    pub algorithms: Vec<Algorithm>,
    /// The AoR this identity may bind: `sip:username@domain`.
    pub aor: Arc<str>,
    ha1: [Option<Ha1>; 3],
}

impl Account {
    pub fn ha1(&self, alg: Algorithm) -> Option<&Ha1> {
        self.ha1[slot(alg)].as_ref()
    }
}

fn slot(alg: Algorithm) -> usize {
    match alg {
        Algorithm::Md5 => 0,
        Algorithm::Sha256 => 1,
        Algorithm::Sha512_256 => 2,
    }
}

/// Accounts by domain, then username: two lookups, no allocation per request.
#[derive(Debug, Default)]
pub struct StaticAccounts {
    by_domain: HashMap<Box<str>, HashMap<Box<str>, Account>>,
}

impl StaticAccounts {
    /// Builds HA1s for every account. Config validation already checked hex lengths, so a
    /// failure here is reported with the account name and skipped (never a panic).
    pub fn from_config(config: &Config) -> StaticAccounts {
        let mut by_domain: HashMap<Box<str>, HashMap<Box<str>, Account>> = HashMap::new();
        for a in &config.accounts {
            let algorithms: Vec<Algorithm> = a.algorithms.iter().map(|n| algorithm(*n)).collect();
            let mut ha1: [Option<Ha1>; 3] = [None, None, None];
            for name in DigestAlgorithmName::ALL {
                let alg = algorithm(name);
                let value = match &a.secret {
                    AccountSecret::Password(pw) => match std::str::from_utf8(pw.expose()) {
                        Ok(pw) => Some(Ha1::from_password(alg, &a.username, &a.domain, pw)),
                        Err(_) => None,
                    },
                    AccountSecret::Ha1 { .. } => a.secret.ha1(name).and_then(|hex| match Ha1::from_hex(alg, hex) {
                        Ok(h) => Some(h),
                        Err(e) => {
                            tracing::error!(account = %a.username, domain = %a.domain, error = %e, "unusable HA1");
                            None
                        }
                    }),
                };
                ha1[slot(alg)] = value;
            }
            let account = Account {
                aor: format!("sip:{}@{}", a.username, a.domain).into(),
                username: a.username.as_str().into(),
                domain: a.domain.as_str().into(),
                kind: a.kind,
                algorithms,
                ha1,
            };
            by_domain
                .entry(a.domain.as_str().into())
                .or_default()
                .insert(a.username.as_str().into(), account);
        }
        StaticAccounts { by_domain }
    }

    pub fn lookup(&self, username: &str, domain: &str) -> Option<&Account> {
        self.by_domain.get(domain)?.get(username)
    }

    pub fn exists_aor(&self, user: &str, domain: &str) -> bool {
        self.lookup(user, domain).is_some()
    }

    pub fn len(&self) -> usize {
        self.by_domain.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every credential the registrar and proxy verify against: the static accounts and, when the
/// token API is on, the device index.
pub struct Directory {
    accounts: StaticAccounts,
    devices: Option<DeviceIndex>,
}

/// The token API device credential a request verified with: re-checked under the AoR lock
/// (`registrar::Credential`) and reported after a successful REGISTER.
#[derive(Debug, Clone)]
pub struct DeviceCredential {
    pub entry: Arc<DeviceEntry>,
    pub generation: u32,
}

impl Directory {
    pub fn new(accounts: StaticAccounts, devices: Option<DeviceIndex>) -> Directory {
        Directory { accounts, devices }
    }

    /// The device index; `None` when the token API is off.
    pub fn devices(&self) -> Option<&DeviceIndex> {
        self.devices.as_ref()
    }

    /// Whether `user@domain` (AoR `aor`) exists: a static account or the AoR of an active
    /// token API device.
    pub fn user_exists(&self, user: &str, domain: &str, aor: &str) -> bool {
        self.accounts.exists_aor(user, domain)
            || self.devices.as_ref().is_some_and(|d| d.has_aor(aor))
    }

    fn find_device(
        devices: &DeviceIndex,
        q: &Query<'_>,
        dummy: &DummyHa1s,
    ) -> Found<Option<DeviceCredential>> {
        // docs/token-api.md "The registrar's check for a device credential": the record (or a
        // dummy) is checked against realm and AoR, then both generations are verified, so an
        // unknown, revoked or expired username takes the same path.
        let found = devices.candidates(
            q.username,
            q.realm,
            q.expected_aor,
            q.algorithm,
            q.now_unix,
            dummy,
        );
        let candidates = found
            .ha1
            .into_iter()
            .zip(found.generations)
            .map(|(ha1, generation)| Candidate {
                ha1,
                identity: match (generation, &found.entry) {
                    (Some((generation, expires_at)), Some(entry)) => Some(Identity {
                        aor: entry.aor.clone(),
                        sso_user: false,
                        expires_cap: Some(expires_at.saturating_sub(q.now_unix).max(1)),
                        credential: Some(DeviceCredential {
                            entry: entry.clone(),
                            generation,
                        }),
                    }),
                    _ => None,
                },
            })
            .collect();
        Found { candidates }
    }
}

impl CredentialLookup for Directory {
    type Credential = Option<DeviceCredential>;

    /// A username with the device prefix is a token API device (two candidates: current and
    /// previous generation); any other a static account (one candidate).
    fn find(&self, q: &Query<'_>, dummy: &DummyHa1s) -> Found<Self::Credential> {
        if let Some(devices) = self
            .devices
            .as_ref()
            .filter(|_| q.username.starts_with(DEVICE_PREFIX))
        {
            return Directory::find_device(devices, q, dummy);
        }
        let account = self.accounts.lookup(q.username, q.realm);
        let usable = account
            .filter(|a| a.algorithms.contains(&q.algorithm))
            .and_then(|a| a.ha1(q.algorithm).map(|ha1| (a, *ha1)));
        let candidate = match usable {
            Some((a, ha1)) => Candidate {
                ha1,
                identity: Some(Identity {
                    aor: a.aor.clone(),
                    sso_user: a.kind == AccountKind::Human,
                    expires_cap: None,
                    credential: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_profile_accounts_verify_with_their_published_passwords() {
        let accounts = StaticAccounts::from_config(&Config::dev());
        let alice = accounts.lookup("alice", "example.test").expect("alice");
        for alg in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256] {
            let expected = Ha1::from_password(alg, "alice", "example.test", "alice-dev-secret");
            assert_eq!(
                format!("{:?}", alice.ha1(alg).unwrap()),
                format!("{expected:?}")
            );
        }
        assert_eq!(&*alice.aor, "sip:alice@example.test");
        assert!(accounts.lookup("mallory", "example.test").is_none());
        assert!(accounts.lookup("alice", "other.test").is_none());
    }

    fn query<'a>(username: &'a str, expected_aor: Option<&'a str>) -> Query<'a> {
        Query {
            username,
            realm: "example.test",
            algorithm: Algorithm::Sha256,
            expected_aor,
            now_unix: 1000,
        }
    }

    fn shape<C>(found: &Found<C>) -> Vec<bool> {
        found
            .candidates
            .iter()
            .map(|c| c.identity.is_some())
            .collect()
    }

    /// The lookup gives an unknown user as many candidates as a known one of its kind: one
    /// for a static account, two for a device (current and previous generation).
    #[test]
    fn directory_gives_unknown_users_as_many_candidates_as_known_ones() {
        use crate::config::Secret;
        use crate::store::{DeviceRecord, Generation};
        let keys = device::CredentialKeys::new(Some(vec![("k".into(), Secret::new(vec![3; 32]))]));
        let (devices, _events) = DeviceIndex::new(keys);
        let generation = |gen| Generation {
            gen,
            kid: "k".into(),
            expires_at: 1100,
        };
        devices.upsert(
            &DeviceRecord {
                username: "d-known".into(),
                device_id: "phone".into(),
                iss: "https://idp".into(),
                sub: "s".into(),
                aor: "sip:alice@example.test".into(),
                realm: "example.test".into(),
                current: generation(2),
                previous: Some(generation(1)),
                created: 900,
                revoked: None,
                last_register: None,
                name: None,
                platform: None,
            },
            1000,
        );
        let dir = Directory::new(StaticAccounts::from_config(&Config::dev()), Some(devices));
        let dummy = DummyHa1s::new();

        let alice = dir.find(&query("alice", None), &dummy);
        assert_eq!(shape(&alice), [true]);
        let id = alice.candidates[0].identity.as_ref().expect("alice");
        assert_eq!((&*id.aor, id.expires_cap), ("sip:alice@example.test", None));
        let ghost = dir.find(&query("ghost", None), &dummy);
        assert_eq!(shape(&ghost), [false]);

        let aor = Some("sip:alice@example.test");
        let known = dir.find(&query("d-known", aor), &dummy);
        assert_eq!(shape(&known), [true, true]);
        let id = known.candidates[0].identity.as_ref().expect("device");
        assert_eq!(id.expires_cap, Some(100));
        assert_eq!(id.credential.as_ref().map(|d| d.generation), Some(2));
        // Unknown, or known but for another AoR: two dummies, like the real thing.
        assert_eq!(
            shape(&dir.find(&query("d-ghost", aor), &dummy)),
            [false, false]
        );
        let other = Some("sip:bob@example.test");
        assert_eq!(
            shape(&dir.find(&query("d-known", other), &dummy)),
            [false, false]
        );
        assert!(dir.user_exists("nobody", "example.test", "sip:alice@example.test"));
        assert!(!dir.user_exists("nobody", "example.test", "sip:nobody@example.test"));
    }
}
