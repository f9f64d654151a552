//! The server transaction key of RFC 3261 §17.2.3.
//!
//! This file owns how a request is mapped to the server transaction it belongs to: the RFC 3261
//! key (top Via branch, normalized sent-by, CSeq method) and the RFC 2543 fallback for branches
//! without the magic cookie. It must not read raw header bytes (the `sip` layer hands it typed
//! values) and holds no state. A key is one shared, length-prefixed canonical string, so hashing
//! walks one short buffer, equality compares every field in full (no hash-collision risk), and
//! `clone` is a reference-count increment.

use std::fmt::Write as _;
use std::sync::Arc;

use super::TransactionError;

/// The branch prefix that marks an RFC 3261 client (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Default SIP port, used when the sent-by has none (§18.1, §19.1.2).
const DEFAULT_PORT: u16 = 5060;

/// Identifies one server transaction. Built only by [`TransactionKey::rfc3261`] or
/// [`TransactionKey::rfc2543`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    /// Keeps the two schemes apart even if their canonical strings happened to coincide.
    kind: Kind,
    /// Every field, each written as `<byte length>:<bytes>`, so no two field lists encode alike.
    canonical: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rfc3261,
    Rfc2543,
}

impl TransactionKey {
    /// The RFC 3261 key: top Via `branch`, Via `sent_by` (`host[:port]`) and the CSeq `method`.
    ///
    /// The branch and the method are compared exactly as written (methods are case-sensitive,
    /// and a retransmission repeats the branch byte for byte). The sent-by host is ASCII
    /// lowercased and a missing port becomes 5060, so `Host.Example` and `host.example:5060`
    /// match. The method is part of the key so a CANCEL and the request it cancels, which share
    /// a branch, are different transactions.
    ///
    /// Fails with [`TransactionError::NotRfc3261Branch`] when the branch does not start with
    /// [`MAGIC_COOKIE`] or is only the cookie (build an RFC 2543 key then), and with
    /// [`TransactionError::InvalidSentBy`] when the sent-by is malformed.
    pub fn rfc3261(branch: &str, sent_by: &str, method: &str) -> Result<Self, TransactionError> {
        if !is_rfc3261_branch(branch) {
            return Err(TransactionError::NotRfc3261Branch);
        }
        let (host, port) = normalize_sent_by(sent_by)?;
        let mut canonical = String::with_capacity(branch.len() + host.len() + method.len() + 24);
        push_field(&mut canonical, branch);
        push_field(&mut canonical, &host);
        push_field(&mut canonical, &port.to_string());
        push_field(&mut canonical, method);
        Ok(Self {
            kind: Kind::Rfc3261,
            canonical: canonical.into(),
        })
    }

    /// The RFC 2543 fallback key (§17.2.3): Request-URI, Call-ID, From tag, To tag (empty when
    /// absent), CSeq number and method, and the whole top Via value.
    ///
    /// All strings are compared exactly as the caller passes them (a retransmission repeats
    /// them byte for byte); no URI equivalence rules are applied.
    pub fn rfc2543(
        request_uri: &str,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        cseq_num: u32,
        cseq_method: &str,
        top_via: &str,
    ) -> Self {
        let fields = [
            request_uri,
            call_id,
            from_tag,
            to_tag,
            &cseq_num.to_string(),
            cseq_method,
            top_via,
        ];
        let mut canonical = String::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
        for field in fields {
            push_field(&mut canonical, field);
        }
        Self {
            kind: Kind::Rfc2543,
            canonical: canonical.into(),
        }
    }

    /// Whether this key was built from an RFC 3261 branch.
    pub fn is_rfc3261(&self) -> bool {
        self.kind == Kind::Rfc3261
    }
}

/// Whether `branch` is an RFC 3261 branch: the magic cookie followed by at least one byte.
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE)
}

fn push_field(out: &mut String, field: &str) {
    // Writing into a String cannot fail.
    let _ = write!(out, "{}:{}", field.len(), field);
}

/// Splits `host[:port]` / `[v6]` / `[v6]:port`, lowercases the host, defaults the port.
fn normalize_sent_by(sent_by: &str) -> Result<(String, u16), TransactionError> {
    let sent_by = sent_by.trim();
    let (host, port) = if sent_by.starts_with('[') {
        let end = sent_by.find(']').ok_or(TransactionError::InvalidSentBy)?;
        let (host, rest) = sent_by.split_at(end + 1);
        let port = match rest {
            "" => None,
            _ => Some(
                rest.strip_prefix(':')
                    .ok_or(TransactionError::InvalidSentBy)?,
            ),
        };
        (host, port)
    } else {
        match sent_by.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (sent_by, None),
        }
    };
    let host_is_bad = host.is_empty()
        || host == "[]"
        || host.chars().any(|c| c.is_whitespace())
        || (!host.starts_with('[') && host.contains(['[', ']']));
    if host_is_bad {
        return Err(TransactionError::InvalidSentBy);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => port
            .parse::<u16>()
            .map_err(|_| TransactionError::InvalidSentBy)?,
        Some(_) => return Err(TransactionError::InvalidSentBy),
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRANCH: &str = "z9hG4bK776asdhds";

    fn key(branch: &str, sent_by: &str, method: &str) -> TransactionKey {
        TransactionKey::rfc3261(branch, sent_by, method).expect("valid rfc3261 key")
    }

    #[test]
    fn magic_cookie_selects_rfc3261() {
        assert!(key(BRANCH, "pc33.example.com", "REGISTER").is_rfc3261());
        for branch in ["", "z9hG4bK", "776asdhds", "Z9HG4BK776asdhds", "z9hG4b"] {
            assert_eq!(
                TransactionKey::rfc3261(branch, "pc33.example.com", "REGISTER"),
                Err(TransactionError::NotRfc3261Branch),
                "{branch:?}"
            );
        }
        let fallback = TransactionKey::rfc2543(
            "sip:example.com",
            "a84b4c76e66710",
            "1928301774",
            "",
            314159,
            "REGISTER",
            "SIP/2.0/UDP pc33.example.com;branch=776asdhds",
        );
        assert!(!fallback.is_rfc3261());
    }

    #[test]
    fn sent_by_host_is_case_insensitive_and_port_defaults() {
        let a = key(BRANCH, "PC33.Example.COM", "REGISTER");
        assert_eq!(a, key(BRANCH, "pc33.example.com", "REGISTER"));
        assert_eq!(a, key(BRANCH, "pc33.example.com:5060", "REGISTER"));
        assert_ne!(a, key(BRANCH, "pc33.example.com:5070", "REGISTER"));
        assert_eq!(
            key(BRANCH, "[2001:DB8::1]:5070", "OPTIONS"),
            key(BRANCH, "[2001:db8::1]:5070", "OPTIONS")
        );
        assert_eq!(
            key(BRANCH, "[2001:db8::1]", "OPTIONS"),
            key(BRANCH, "[2001:db8::1]:5060", "OPTIONS")
        );
    }

    #[test]
    fn branch_and_method_are_case_sensitive() {
        let a = key(BRANCH, "h", "REGISTER");
        assert_ne!(a, key("z9hG4bK776ASDHDS", "h", "REGISTER"));
        assert_ne!(a, key(BRANCH, "h", "register"));
    }

    #[test]
    fn cancel_and_register_with_same_branch_differ() {
        assert_ne!(
            key(BRANCH, "pc33.example.com", "REGISTER"),
            key(BRANCH, "pc33.example.com", "CANCEL")
        );
    }

    #[test]
    fn malformed_sent_by_is_rejected() {
        for sent_by in [
            "",
            ":5060",
            "host:",
            "host:x",
            "host:65536",
            "host:+1",
            "[::1",
            "[::1]x",
            "[]",
            "2001:db8::1",
            "a b",
            "h]",
            "[::1]:",
        ] {
            assert_eq!(
                TransactionKey::rfc3261(BRANCH, sent_by, "REGISTER"),
                Err(TransactionError::InvalidSentBy),
                "{sent_by:?}"
            );
        }
    }

    #[test]
    fn rfc2543_fields_are_length_prefixed() {
        let base = |uri: &str, call_id: &str| {
            TransactionKey::rfc2543(uri, call_id, "f", "", 1, "REGISTER", "SIP/2.0/UDP h")
        };
        assert_eq!(base("sip:a", "b"), base("sip:a", "b"));
        // Shifting bytes between adjacent fields must not produce the same key.
        assert_ne!(base("sip:a", "b"), base("sip:", "ab"));
        let cancel = TransactionKey::rfc2543("sip:a", "b", "f", "", 1, "CANCEL", "SIP/2.0/UDP h");
        assert_ne!(base("sip:a", "b"), cancel);
    }

    #[test]
    fn rfc3261_and_rfc2543_never_collide() {
        let a = key(BRANCH, "h", "REGISTER");
        let b = TransactionKey::rfc2543("", "", "", "", 0, "", "");
        assert_ne!(a, b);
    }
}
