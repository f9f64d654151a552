//! `[[domains]]` and `[[accounts]]` validated: domain names, challenge algorithms, SSO and
//! client-certificate policy per domain; usernames, kinds, secrets (a password file or HA1
//! values, never quoted in a message) and the algorithms each account answers.

use std::collections::HashMap;
use std::path::Path;

use super::problems::{OneOf, Problems};
use super::raw;
use super::secret::{self, Secret};
use super::token_api::Sso;
use super::{Account, AccountSecret, ClientCertPolicy, DigestAlgorithmName, Domain};

const MAX_USERNAME_BYTES: usize = 256;
const MAX_DOMAIN_NAME_BYTES: usize = 253;

pub(super) fn domains(problems: &mut Problems, raw: Vec<raw::RawDomain>) -> Vec<Domain> {
    if raw.is_empty() {
        problems.push("domains", "at least one [[domains]] entry is required");
    }
    let mut domains: Vec<Domain> = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let key = format!("domains[{index}]");
        let name = raw.name.to_ascii_lowercase();
        let algorithms = algorithm_list(problems, &format!("{key}.algorithms"), &raw.algorithms);
        let sso = problems.one_of(format!("{key}.sso"), &raw.sso, Sso::Off);
        let registrar = if raw.registrar.is_empty() {
            format!("sip:{name}")
        } else if !raw.registrar.starts_with("sip:") && !raw.registrar.starts_with("sips:") {
            problems.push(
                format!("{key}.registrar"),
                format!("{:?} is not a sip: or sips: URI", raw.registrar),
            );
            String::new()
        } else {
            raw.registrar.clone()
        };
        if raw.algorithms.is_empty() {
            problems.push(
                format!("{key}.algorithms"),
                "must list at least one algorithm",
            );
        }
        if !is_domain_name(&name) {
            problems.push(
                format!("{key}.name"),
                format!("{:?} is not a valid domain name", raw.name),
            );
        } else if let Some(first) = seen.get(&name) {
            problems.push(
                format!("{key}.name"),
                format!("{name:?} is already configured by domains[{first}]"),
            );
        } else {
            seen.insert(name.clone(), index);
            let client_cert = problems.one_of(
                format!("{key}.client_cert"),
                &raw.client_cert,
                ClientCertPolicy::Sufficient,
            );
            domains.push(Domain {
                name,
                algorithms,
                client_cert,
                sso,
                issuers: raw.issuers,
                registrar,
            });
        }
    }
    domains
}

/// Hostname syntax: dot-separated labels of letters, digits and `-`, no empty label. IPv4
/// literals pass too.
fn is_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DOMAIN_NAME_BYTES
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The algorithms named; unknown and repeated names are problems.
fn algorithm_list(
    problems: &mut Problems,
    key: &str,
    raw: &[OneOf<DigestAlgorithmName>],
) -> Vec<DigestAlgorithmName> {
    let mut algorithms = Vec::with_capacity(raw.len());
    for (index, name) in raw.iter().enumerate() {
        match problems.known(format!("{key}[{index}]"), name) {
            Some(algorithm) if algorithms.contains(&algorithm) => {
                problems.push(
                    format!("{key}[{index}]"),
                    format!("{:?} is listed twice", name.text),
                );
            }
            Some(algorithm) => algorithms.push(algorithm),
            None => {}
        }
    }
    algorithms
}

pub(super) fn accounts(
    problems: &mut Problems,
    raw: Vec<raw::RawAccount>,
    domains: &[Domain],
    base_dir: &Path,
) -> Vec<Account> {
    let mut accounts = Vec::with_capacity(raw.len());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let key = format!("accounts[{index}]");
        let username_ok = check_username(problems, &key, &raw.username);
        let domain_name = raw.domain.to_ascii_lowercase();
        let domain = domains.iter().find(|domain| domain.name == domain_name);
        if domain.is_none() {
            problems.push(
                format!("{key}.domain"),
                format!("{:?} is not a configured domain", raw.domain),
            );
        }
        let kind = problems.known(format!("{key}.kind"), &raw.kind);
        let secret = account_secret(problems, &key, &raw, base_dir);
        let own_algorithms =
            algorithm_list(problems, &format!("{key}.algorithms"), &raw.algorithms);
        let algorithms = match (&secret, domain) {
            (Some(secret), Some(domain)) => effective_algorithms(
                problems,
                &key,
                secret,
                domain,
                &raw.algorithms,
                own_algorithms,
            ),
            _ => Vec::new(),
        };
        if username_ok && domain.is_some() {
            let identity = (raw.username.clone(), domain_name.clone());
            if let Some(first) = seen.get(&identity) {
                problems.push(
                    key.clone(),
                    format!(
                        "{}@{} is already configured by accounts[{first}]",
                        raw.username, domain_name
                    ),
                );
            } else {
                seen.insert(identity, index);
            }
        }
        if let (Some(kind), Some(secret)) = (kind, secret) {
            accounts.push(Account {
                username: raw.username,
                domain: domain_name,
                kind,
                secret,
                algorithms,
            });
        }
    }
    accounts
}

/// Usernames appear in `username:realm:password` and in quoted Digest parameters, so a colon, a
/// quote, a backslash, whitespace or a control character would make them ambiguous.
fn check_username(problems: &mut Problems, key: &str, username: &str) -> bool {
    let message = if username.is_empty() {
        "must not be empty".to_owned()
    } else if username.len() > MAX_USERNAME_BYTES {
        format!("must not be longer than {MAX_USERNAME_BYTES} bytes")
    } else if username
        .chars()
        .any(|c| matches!(c, ':' | '"' | '\\') || c.is_whitespace() || c.is_control())
    {
        "must not contain ':', '\"', '\\', whitespace or control characters".to_owned()
    } else {
        return true;
    };
    problems.push(format!("{key}.username"), message);
    false
}

fn account_secret(
    problems: &mut Problems,
    key: &str,
    raw: &raw::RawAccount,
    base_dir: &Path,
) -> Option<AccountSecret> {
    let ha1_fields = [
        ("ha1_md5", &raw.ha1_md5, DigestAlgorithmName::Md5),
        ("ha1_sha256", &raw.ha1_sha256, DigestAlgorithmName::Sha256),
        (
            "ha1_sha512_256",
            &raw.ha1_sha512_256,
            DigestAlgorithmName::Sha512_256,
        ),
    ];
    let has_ha1 = ha1_fields.iter().any(|(_, value, _)| !value.is_empty());
    match (raw.password_file.is_empty(), has_ha1) {
        (false, true) => {
            problems.push(key, "give either password_file or ha1_* values, not both");
            None
        }
        (true, false) => {
            problems.push(key, "give password_file or at least one ha1_* value");
            None
        }
        (false, false) => {
            let path = secret::resolve(base_dir, &raw.password_file);
            match secret::read_file(&path).map(secret::strip_line_endings) {
                Ok(password) if password.is_empty() => {
                    problems.push(
                        format!("{key}.password_file"),
                        format!("{path:?} holds an empty password"),
                    );
                    None
                }
                Ok(password) => Some(AccountSecret::Password(Secret::new(password))),
                Err(message) => {
                    problems.push(format!("{key}.password_file"), message);
                    None
                }
            }
        }
        (true, true) => {
            let mut values: [Option<String>; 3] = [None, None, None];
            let mut ok = true;
            for (slot, (field, value, algorithm)) in values.iter_mut().zip(ha1_fields) {
                if value.is_empty() {
                    continue;
                }
                let digits = algorithm.hex_len();
                if value.len() == digits && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    *slot = Some(value.to_ascii_lowercase());
                } else {
                    ok = false;
                    problems.push(
                        format!("{key}.{field}"),
                        format!(
                            "must be {digits} hex digits, the {algorithm} of \
                             username:realm:password (got {} characters)",
                            value.chars().count()
                        ),
                    );
                }
            }
            let [md5, sha256, sha512_256] = values;
            ok.then_some(AccountSecret::Ha1 {
                md5,
                sha256,
                sha512_256,
            })
        }
    }
}

/// The account's own list (every entry must be answerable with its secret) or, when it gives
/// none, the domain's list narrowed to what its secret can answer.
fn effective_algorithms(
    problems: &mut Problems,
    key: &str,
    secret: &AccountSecret,
    domain: &Domain,
    raw_own: &[OneOf<DigestAlgorithmName>],
    own: Vec<DigestAlgorithmName>,
) -> Vec<DigestAlgorithmName> {
    if !raw_own.is_empty() {
        for (index, algorithm) in own.iter().enumerate() {
            if !secret.supports(*algorithm) {
                problems.push(
                    format!("{key}.algorithms[{index}]"),
                    format!("{algorithm} is listed but no ha1 value for it is given"),
                );
            }
        }
        return own;
    }
    let inherited: Vec<_> = domain
        .algorithms
        .iter()
        .copied()
        .filter(|algorithm| secret.supports(*algorithm))
        .collect();
    if inherited.is_empty() {
        let names: Vec<_> = domain.algorithms.iter().map(|a| a.as_str()).collect();
        problems.push(
            key,
            format!(
                "no ha1_* value matches an algorithm of domain {:?} ({})",
                domain.name,
                names.join(", ")
            ),
        );
    }
    inherited
}
