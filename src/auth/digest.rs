//! HTTP Digest (RFC 2617, RFC 7616, RFC 8760) as SIP uses it: the algorithms we accept, the HA1
//! secret type, response verification and the challenge header value.
//!
//! This file owns the arithmetic only. It must not parse headers (the SIP parser fills
//! [`DigestCredentials`]), look users up, check nonces (see `super::nonce`), track `nc` (see
//! `super::replay`) or compare the Digest `uri` with the Request-URI: the caller does those, in
//! that order, before or after calling [`verify`]. Nothing here allocates on the verification
//! path, and no branch after the hashing starts depends on secret data.
//!
//! Memory: an [`Ha1`] is 72 bytes inline; [`DummyHa1s`] holds three of them per process.

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::{Choice, ConstantTimeEq};

use super::AuthError;

/// Longest lowercase-hex digest we produce: SHA-256 and SHA-512/256 give 32 bytes.
const MAX_HEX_LEN: usize = 64;

/// A Digest `algorithm` we support. The `-sess` variants are deliberately absent: RFC 8760 keeps
/// them optional and no SIP client we target needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`: RFC 2617; still what most deployed SIP phones send.
    Md5,
    /// `SHA-256`: RFC 7616 / RFC 8760.
    Sha256,
    /// `SHA-512-256`: RFC 7616 / RFC 8760 (SHA-512/256 from FIPS 180-4).
    Sha512_256,
}

impl Algorithm {
    /// Parses the `algorithm` parameter value, ignoring ASCII case. `MD5-sess`, `SHA-256-sess`,
    /// `SHA-512-256-sess` and anything unknown give `None`: we never support them.
    pub fn from_param(value: &str) -> Option<Algorithm> {
        if value.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if value.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else if value.eq_ignore_ascii_case("SHA-512-256") {
            Some(Algorithm::Sha512_256)
        } else {
            None
        }
    }

    /// The canonical spelling, as written in a challenge.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// Length of this algorithm's digest in lowercase hex characters (32 or 64).
    pub const fn hex_len(&self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 | Algorithm::Sha512_256 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Digest parameters of one `Authorization` / `Proxy-Authorization` header, borrowed from the
/// message by the SIP parser. Every value is the raw (unquoted) string as sent.
#[derive(Clone, Copy)]
pub struct DigestCredentials<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    /// Raw string from the header, used verbatim in HA2. The caller compares it with the
    /// Request-URI; this module does not.
    pub uri: &'a str,
    pub response: &'a str,
    /// `None` means MD5 (RFC 2617 §3.2.2).
    pub algorithm: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub qop: Option<&'a str>,
    /// `nc` as a number, for the replay table.
    pub nc: Option<u32>,
    /// `nc` exactly as sent (8 hex digits): the response is computed over these characters.
    pub nc_raw: Option<&'a str>,
    pub opaque: Option<&'a str>,
    /// RFC 7616 `userhash=true`: `username` is `H(user:realm)`. We never offer it; the caller's
    /// user lookup decides what such a username means.
    pub userhash: bool,
}

impl<'a> DigestCredentials<'a> {
    /// The credentials of a parsed `Authorization` header, if it carries everything a Digest
    /// response needs (username, realm, nonce, uri, response); `None` means a malformed header.
    pub fn from_params(p: &crate::sip::DigestParams<'a>) -> Option<DigestCredentials<'a>> {
        Some(DigestCredentials {
            username: p.username?,
            realm: p.realm?,
            nonce: p.nonce?,
            uri: p.uri?,
            response: p.response?,
            algorithm: p.algorithm,
            cnonce: p.cnonce,
            qop: p.qop,
            nc: p.nc,
            nc_raw: p.nc_raw,
            opaque: p.opaque,
            userhash: p.userhash,
        })
    }

    /// The algorithm these credentials claim (absent means MD5), or `None` if we do not support
    /// it. The caller uses it to fetch the matching [`Ha1`] before calling [`verify`].
    pub fn algorithm(&self) -> Option<Algorithm> {
        match self.algorithm {
            None => Some(Algorithm::Md5),
            Some(value) => Algorithm::from_param(value),
        }
    }
}

/// Hand-written so the `response` (an offline-crackable function of the password) never reaches
/// a log.
impl fmt::Debug for DigestCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("cnonce", &self.cnonce)
            .field("qop", &self.qop)
            .field("nc_raw", &self.nc_raw)
            .field("opaque", &self.opaque)
            .field("userhash", &self.userhash)
            .finish()
    }
}

/// A digest rendered as lowercase hex, inline (no heap).
#[derive(Clone, Copy)]
struct HexDigest {
    bytes: [u8; MAX_HEX_LEN],
    len: usize,
}

impl HexDigest {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `H(parts[0]:parts[1]:...)` in lowercase hex.
fn hash_parts(algorithm: Algorithm, parts: &[&[u8]]) -> HexDigest {
    match algorithm {
        Algorithm::Md5 => hash_with::<Md5>(parts),
        Algorithm::Sha256 => hash_with::<Sha256>(parts),
        Algorithm::Sha512_256 => hash_with::<Sha512_256>(parts),
    }
}

fn hash_with<D: Digest>(parts: &[&[u8]]) -> HexDigest {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = HexDigest {
        bytes: [0; MAX_HEX_LEN],
        len: 0,
    };
    for (pair, byte) in out.bytes.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = hex_nibble(byte >> 4);
        pair[1] = hex_nibble(byte & 0x0f);
        out.len += 2;
    }
    out
}

/// Lowercase hex digit for a nibble, without a branch or a table lookup on the (secret) value.
fn hex_nibble(nibble: u8) -> u8 {
    // 9 - n wraps to >= 0xF6 exactly when n > 9; bit 7 then selects the 'a'..'f' offset.
    let above_nine = (9u8.wrapping_sub(nibble) >> 7) & 1;
    nibble + b'0' + above_nine * (b'a' - b'0' - 10)
}

/// Maps ASCII `A`..=`F` to `a`..=`f` and leaves every other byte alone, without branching.
fn lower_hex_letter(byte: u8) -> u8 {
    let is_upper_hex = u8::from(byte.wrapping_sub(b'A') < 6);
    byte | (is_upper_hex << 5)
}

/// `HA1 = H(username:realm:password)` in lowercase hex, for one algorithm. Secret: anyone holding
/// it can answer challenges for that user and realm, so `Debug` redacts it.
#[derive(Clone, Copy)]
pub struct Ha1 {
    algorithm: Algorithm,
    hex: HexDigest,
    /// Set only by [`DummyHa1s`]: [`verify`] does all the same work and then refuses, so a dummy
    /// can never authenticate even if its value leaked.
    dummy: bool,
}

impl Ha1 {
    /// Computes `H(username:realm:password)`.
    pub fn from_password(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> Ha1 {
        Ha1 {
            algorithm,
            hex: hash_parts(
                algorithm,
                &[username.as_bytes(), realm.as_bytes(), password.as_bytes()],
            ),
            dummy: false,
        }
    }

    /// Parses a stored HA1: exactly `algorithm.hex_len()` hex digits, either case.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Ha1, AuthError> {
        let expected = algorithm.hex_len();
        if hex.len() != expected || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::InvalidHa1 {
                algorithm,
                expected,
            });
        }
        let mut bytes = [0; MAX_HEX_LEN];
        for (slot, byte) in bytes.iter_mut().zip(hex.bytes()) {
            *slot = byte.to_ascii_lowercase();
        }
        Ok(Ha1 {
            algorithm,
            hex: HexDigest {
                bytes,
                len: expected,
            },
            dummy: false,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl fmt::Debug for Ha1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ha1")
            .field("algorithm", &self.algorithm)
            .field("hex", &"<redacted>")
            .finish()
    }
}

/// One dummy [`Ha1`] per algorithm, derived from a per-process random secret. For an unknown user
/// the caller verifies against [`DummyHa1s::get`], so known and unknown users take the same path
/// and the same time (docs/testing.md E4); the result is always [`Verdict::Mismatch`].
#[derive(Clone)]
pub struct DummyHa1s {
    md5: Ha1,
    sha256: Ha1,
    sha512_256: Ha1,
}

impl DummyHa1s {
    pub fn new() -> DummyHa1s {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        let make = |algorithm| Ha1 {
            algorithm,
            hex: hash_parts(algorithm, &[b"sipward-dummy-ha1", &secret]),
            dummy: true,
        };
        DummyHa1s {
            md5: make(Algorithm::Md5),
            sha256: make(Algorithm::Sha256),
            sha512_256: make(Algorithm::Sha512_256),
        }
    }

    pub fn get(&self, algorithm: Algorithm) -> &Ha1 {
        match algorithm {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
            Algorithm::Sha512_256 => &self.sha512_256,
        }
    }
}

impl Default for DummyHa1s {
    fn default() -> Self {
        DummyHa1s::new()
    }
}

impl fmt::Debug for DummyHa1s {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DummyHa1s(<redacted>)")
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The response is correct for this HA1.
    Accepted,
    /// Well-formed credentials with the wrong response (wrong password, uri, nonce, nc, cnonce,
    /// method), or a dummy HA1. Counts against the failure limits.
    Mismatch,
    /// Credentials we refuse before any hashing; the reason depends only on what the client sent,
    /// never on the user, so it is safe to act on before or after the user lookup.
    Refused(Refusal),
}

/// Why [`verify`] refused credentials without hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `algorithm` is unknown or a `-sess` variant.
    UnsupportedAlgorithm,
    /// The `algorithm` differs from the HA1's: the caller fetched the wrong HA1.
    AlgorithmMismatch,
    /// No `qop`: RFC 2069 compatibility mode, which has no `cnonce`/`nc` and so no replay defence.
    QopMissing,
    /// A `qop` other than `auth` (e.g. `auth-int`).
    QopUnsupported,
    /// `qop=auth` without `cnonce`.
    CnonceMissing,
    /// `nc` missing, not 8 hex digits, or `nc_raw` and `nc` disagree.
    NonceCountMalformed,
}

/// Checks `response == KD(HA1, nonce:nc:cnonce:qop:HA2)` with `HA2 = H(method:uri)` and
/// `KD(s, d) = H(s:d)`, requiring `qop=auth`. The comparison is constant-time and accepts the
/// client's hex in either case. The caller has already checked the nonce and will record `nc` in
/// the replay table only after [`Verdict::Accepted`].
pub fn verify(creds: &DigestCredentials<'_>, method: &str, ha1: &Ha1) -> Verdict {
    let Some(algorithm) = creds.algorithm() else {
        return Verdict::Refused(Refusal::UnsupportedAlgorithm);
    };
    if algorithm != ha1.algorithm {
        return Verdict::Refused(Refusal::AlgorithmMismatch);
    }
    let qop = match creds.qop {
        None => return Verdict::Refused(Refusal::QopMissing),
        Some(qop) if qop.eq_ignore_ascii_case("auth") => qop,
        Some(_) => return Verdict::Refused(Refusal::QopUnsupported),
    };
    let Some(cnonce) = creds.cnonce else {
        return Verdict::Refused(Refusal::CnonceMissing);
    };
    let nc_raw = match (creds.nc_raw, creds.nc) {
        // from_str_radix alone would take a leading '+'.
        (Some(raw), Some(nc))
            if raw.len() == 8
                && raw.bytes().all(|b| b.is_ascii_hexdigit())
                && u32::from_str_radix(raw, 16).ok() == Some(nc) =>
        {
            raw
        }
        _ => return Verdict::Refused(Refusal::NonceCountMalformed),
    };

    let ha2 = hash_parts(algorithm, &[method.as_bytes(), creds.uri.as_bytes()]);
    let expected = hash_parts(
        algorithm,
        &[
            ha1.hex.as_bytes(),
            creds.nonce.as_bytes(),
            nc_raw.as_bytes(),
            cnonce.as_bytes(),
            qop.as_bytes(),
            ha2.as_bytes(),
        ],
    );

    // The supplied length is public (it is on the wire); copy at most 64 bytes, lowering A-F.
    let supplied = creds.response.as_bytes();
    let mut lowered = [0u8; MAX_HEX_LEN];
    for (slot, &byte) in lowered.iter_mut().zip(supplied) {
        *slot = lower_hex_letter(byte);
    }
    let same_len = Choice::from(u8::from(supplied.len() == expected.len));
    let same = same_len & lowered[..expected.len].ct_eq(expected.as_bytes());
    let accepted = same & !Choice::from(u8::from(ha1.dummy));
    if bool::from(accepted) {
        Verdict::Accepted
    } else {
        Verdict::Mismatch
    }
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` challenge. Write one per allowed algorithm,
/// strongest first (RFC 8760 §2.4).
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub algorithm: Algorithm,
    /// RFC 7616 `stale=true`: the nonce was ours but too old; the client retries silently.
    pub stale: bool,
    pub opaque: Option<&'a str>,
}

impl Challenge<'_> {
    /// Appends the header value, e.g.
    /// `Digest realm="example.com", nonce="…", algorithm=SHA-256, qop="auth", stale=true`.
    /// Quoted values are escaped as RFC 3261 `quoted-string`s.
    pub fn write_to(&self, out: &mut String) {
        out.push_str("Digest realm=");
        push_quoted(out, self.realm);
        out.push_str(", nonce=");
        push_quoted(out, self.nonce);
        if let Some(opaque) = self.opaque {
            out.push_str(", opaque=");
            push_quoted(out, opaque);
        }
        out.push_str(", algorithm=");
        out.push_str(self.algorithm.as_str());
        out.push_str(", qop=\"auth\"");
        if self.stale {
            out.push_str(", stale=true");
        }
    }
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

#[cfg(test)]
#[path = "digest_tests.rs"]
mod tests;
