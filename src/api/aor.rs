//! The address-of-record of a token API user, `sip:user@domain`, built only by parsing, and
//! the one place that says how such an AoR is spelled: the exchange builds it from the
//! username claim, the admin revoke from its path, and both get the same canonical text for
//! the same user (`Lc8`, `lc8@EXAMPLE.test` and `sip:LC8@example.test` are one user).
//!
//! Canonical form: the user part lowercased ASCII, 1 to [`MAX_USER_BYTES`] of letters, digits
//! and `.-_+~`, never in the device namespace (`d-…`, the Digest usernames sipward hands out);
//! the domain lowercased. Those are the token API's rules for its users; the result is then
//! parsed into the SIP layer's [`Aor`], the one AoR type, so it is spelled as the registrar
//! spells the same address. It does not decide whether the domain is served: callers check that
//! against their own domain list (the issuer's for the exchange, every served one for revoke).

use std::fmt;

use crate::credentials::device::DEVICE_PREFIX;
use crate::sip::Aor;

/// Longest user part accepted.
pub const MAX_USER_BYTES: usize = 64;
/// Longest domain accepted (RFC 1035 name length).
const MAX_DOMAIN_BYTES: usize = 253;

/// Why text is not a token API AoR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AorError {
    /// No `@domain` where one is required, or a bare user when the issuer has several domains.
    #[error("no domain")]
    NoDomain,
    /// A user part that is empty, too long, has other characters, or is in the device namespace.
    #[error("unusable user part")]
    User,
    /// A domain that is not a host name.
    #[error("unusable domain")]
    Domain,
    /// A well-formed domain that is not among the ones allowed here.
    #[error("domain not served")]
    NotServed,
}

/// `sip:user@domain` in canonical form: an [`Aor`] that also meets the token API's rules for
/// a user. Cheap to clone and compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserAor {
    aor: Aor,
    /// Index of the `@` in the text.
    at: usize,
}

impl UserAor {
    /// The username claim's value: `user@domain` with a domain of `domains` (the issuer's), or
    /// a bare `user` when `domains` holds exactly one.
    pub fn from_claim(value: &str, domains: &[String]) -> Result<UserAor, AorError> {
        let aor = match value.rsplit_once('@') {
            Some((user, domain)) => UserAor::new(user, domain)?,
            None => match domains {
                [only] => UserAor::new(value, only)?,
                _ => return Err(AorError::NoDomain),
            },
        };
        if domains.iter().any(|d| d.eq_ignore_ascii_case(aor.domain())) {
            Ok(aor)
        } else {
            Err(AorError::NotServed)
        }
    }

    /// An operator's spelling: `user@domain` or `sip:user@domain` (scheme in any case). The
    /// domain is required; whether it is served is the caller's check.
    pub fn from_admin(text: &str) -> Result<UserAor, AorError> {
        let rest = match text.get(..4) {
            Some(scheme) if scheme.eq_ignore_ascii_case("sip:") => &text[4..],
            _ => text,
        };
        let (user, domain) = rest.rsplit_once('@').ok_or(AorError::NoDomain)?;
        UserAor::new(user, domain)
    }

    /// The token API's rules for a user, then the SIP layer's parse.
    fn new(user: &str, domain: &str) -> Result<UserAor, AorError> {
        let user_ok = !user.is_empty()
            && user.len() <= MAX_USER_BYTES
            && user.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+' | b'~')
            })
            && !user
                .get(..DEVICE_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(DEVICE_PREFIX));
        if !user_ok {
            return Err(AorError::User);
        }
        if domain.is_empty() {
            return Err(AorError::NoDomain);
        }
        let domain_ok = domain.len() <= MAX_DOMAIN_BYTES
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err(AorError::Domain);
        }
        // The checked characters are all URI-safe, so this parses and keeps its spelling.
        let text = format!(
            "sip:{}@{}",
            user.to_ascii_lowercase(),
            domain.to_ascii_lowercase()
        );
        let aor = Aor::parse(&text).ok_or(AorError::User)?;
        debug_assert_eq!(aor.as_str(), text);
        Ok(UserAor {
            at: 4 + user.len(),
            aor,
        })
    }

    pub fn as_str(&self) -> &str {
        self.aor.as_str()
    }

    pub fn user(&self) -> &str {
        &self.as_str()[4..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.as_str()[self.at + 1..]
    }

    /// The AoR, as the location service keys it.
    pub fn aor(&self) -> &Aor {
        &self.aor
    }
}

impl fmt::Display for UserAor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(d: &[&str]) -> Vec<String> {
        d.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn claims_map_inside_the_issuers_domains() {
        let one = domains(&["example.test"]);
        let two = domains(&["example.test", "example.org"]);
        let aor = UserAor::from_claim("Alice", &one).unwrap();
        assert_eq!(aor.as_str(), "sip:alice@example.test");
        assert_eq!((aor.user(), aor.domain()), ("alice", "example.test"));
        assert_eq!(
            UserAor::from_claim("bob@EXAMPLE.org", &two)
                .unwrap()
                .as_str(),
            "sip:bob@example.org"
        );
        assert_eq!(UserAor::from_claim("bob", &two), Err(AorError::NoDomain));
        assert_eq!(
            UserAor::from_claim("eve@evil.test", &one),
            Err(AorError::NotServed)
        );
        for bad in [
            "a:b",
            "",
            &"a".repeat(65),
            "a b",
            "a%41",
            "d-abc",
            "D-x",
            "d-",
        ] {
            assert_eq!(
                UserAor::from_claim(bad, &one),
                Err(AorError::User),
                "{bad:?}"
            );
        }
        assert!(UserAor::from_claim("dave-d", &one).is_ok());
        assert!(UserAor::from_claim("d", &one).is_ok());
    }

    #[test]
    fn the_admin_spelling_and_the_claim_give_one_aor() {
        let claim = UserAor::from_claim("Lc8", &domains(&["example.test"])).unwrap();
        for text in [
            "Lc8@example.test",
            "lc8@EXAMPLE.TEST",
            "sip:LC8@example.test",
            "SIP:lc8@Example.Test",
        ] {
            assert_eq!(UserAor::from_admin(text).as_ref(), Ok(&claim), "{text}");
        }
        assert_eq!(UserAor::from_admin("Lc8"), Err(AorError::NoDomain));
        assert_eq!(UserAor::from_admin("sip:Lc8"), Err(AorError::NoDomain));
        assert_eq!(UserAor::from_admin("lc8@"), Err(AorError::NoDomain));
        assert_eq!(
            UserAor::from_admin("sips:lc8@example.test"),
            Err(AorError::User)
        );
        assert_eq!(
            UserAor::from_admin("d-abc@example.test"),
            Err(AorError::User)
        );
        for bad in [
            "a@b..c",
            "a@exa mple",
            "a@example.test;transport=udp",
            "a@[::1]",
        ] {
            assert_eq!(UserAor::from_admin(bad), Err(AorError::Domain), "{bad}");
        }
        assert_eq!(
            UserAor::from_admin("x@example.test.evil").unwrap().domain(),
            "example.test.evil"
        );
    }
}
