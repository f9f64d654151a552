//! Credentials the registrar verifies against: static accounts from config, each with HA1
//! values per Digest algorithm (computed once at start from a password file, or given as HA1
//! in config), and per-device credentials from the token API (`device`: derived passwords and
//! the index of active device records).
//!
//! It holds no plaintext password after start. It must not decide policy (which AoR an
//! identity may bind): dispatch does.

pub mod device;

use std::collections::HashMap;

use crate::auth::{Algorithm, Ha1};
use crate::config::{AccountKind, AccountSecret, Config, DigestAlgorithmName};

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
    /// The algorithms challenged for this account, in order.
    pub algorithms: Vec<Algorithm>,
    /// The AoR this identity may bind: `sip:username@domain`.
    pub aor: Box<str>,
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
}
