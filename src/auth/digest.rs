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
mod tests {
    use super::*;

    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const REALM: &str = "http-auth@example.org";
    const URI: &str = "/dir/index.html";

    /// RFC 7616 §3.9.1.
    const MD5_RESPONSE: &str = "8ca523f5e9506fed4657c9700eebdbec";
    /// RFC 7616 §3.9.1.
    const SHA256_RESPONSE: &str =
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";
    /// Same inputs with SHA-512/256, computed independently with Python's
    /// `hashlib.new('sha512_256')`; the HA1 was cross-checked with `openssl dgst -sha512-256`.
    const SHA512_256_HA1: &str = "fb174f5c3c7802721517cae13b98e2b8dae2e0118cb705d94ee29946319204ce";
    const SHA512_256_RESPONSE: &str =
        "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0";

    fn creds<'a>(algorithm: Option<&'a str>, response: &'a str) -> DigestCredentials<'a> {
        DigestCredentials {
            username: "Mufasa",
            realm: REALM,
            nonce: NONCE,
            uri: URI,
            response,
            algorithm,
            cnonce: Some(CNONCE),
            qop: Some("auth"),
            nc: Some(1),
            nc_raw: Some("00000001"),
            opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"),
            userhash: false,
        }
    }

    fn mufasa(algorithm: Algorithm) -> Ha1 {
        Ha1::from_password(algorithm, "Mufasa", REALM, "Circle of Life")
    }

    #[test]
    fn rfc7616_md5_vector() {
        let c = creds(Some("MD5"), MD5_RESPONSE);
        assert_eq!(
            verify(&c, "GET", &mufasa(Algorithm::Md5)),
            Verdict::Accepted
        );
    }

    #[test]
    fn absent_algorithm_means_md5() {
        let c = creds(None, MD5_RESPONSE);
        assert_eq!(
            verify(&c, "GET", &mufasa(Algorithm::Md5)),
            Verdict::Accepted
        );
    }

    #[test]
    fn rfc7616_sha256_vector() {
        let c = creds(Some("SHA-256"), SHA256_RESPONSE);
        assert_eq!(
            verify(&c, "GET", &mufasa(Algorithm::Sha256)),
            Verdict::Accepted
        );
    }

    #[test]
    fn sha512_256_independent_vector() {
        let ha1 = mufasa(Algorithm::Sha512_256);
        assert_eq!(ha1.hex.as_bytes(), SHA512_256_HA1.as_bytes());
        let c = creds(Some("sha-512-256"), SHA512_256_RESPONSE);
        assert_eq!(verify(&c, "GET", &ha1), Verdict::Accepted);
    }

    #[test]
    fn stored_hex_ha1_verifies_like_the_password() {
        let ha1 = Ha1::from_hex(Algorithm::Sha512_256, &SHA512_256_HA1.to_uppercase())
            .expect("valid hex");
        let c = creds(Some("SHA-512-256"), SHA512_256_RESPONSE);
        assert_eq!(verify(&c, "GET", &ha1), Verdict::Accepted);
    }

    #[test]
    fn from_hex_rejects_wrong_length_and_non_hex() {
        assert!(Ha1::from_hex(Algorithm::Sha256, &SHA512_256_HA1[..32]).is_err());
        assert!(Ha1::from_hex(Algorithm::Md5, SHA512_256_HA1).is_err());
        let bad = format!("{}g", &SHA512_256_HA1[..63]);
        assert!(Ha1::from_hex(Algorithm::Sha256, &bad).is_err());
        assert!(Ha1::from_hex(Algorithm::Md5, &SHA512_256_HA1[..32]).is_ok());
    }

    #[test]
    fn uppercase_response_hex_is_accepted() {
        let upper = SHA256_RESPONSE.to_uppercase();
        let c = creds(Some("SHA-256"), &upper);
        assert_eq!(
            verify(&c, "GET", &mufasa(Algorithm::Sha256)),
            Verdict::Accepted
        );
    }

    #[test]
    fn wrong_password_is_a_mismatch() {
        let ha1 = Ha1::from_password(Algorithm::Sha256, "Mufasa", REALM, "Circle of life");
        let c = creds(Some("SHA-256"), SHA256_RESPONSE);
        assert_eq!(verify(&c, "GET", &ha1), Verdict::Mismatch);
    }

    #[test]
    fn wrong_uri_method_nc_or_cnonce_is_a_mismatch() {
        let ha1 = mufasa(Algorithm::Sha256);
        let base = creds(Some("SHA-256"), SHA256_RESPONSE);
        let wrong_uri = DigestCredentials {
            uri: "/dir/index.htm",
            ..base
        };
        let wrong_nc = DigestCredentials {
            nc: Some(2),
            nc_raw: Some("00000002"),
            ..base
        };
        let wrong_cnonce = DigestCredentials {
            cnonce: Some("x"),
            ..base
        };
        assert_eq!(verify(&wrong_uri, "GET", &ha1), Verdict::Mismatch);
        assert_eq!(verify(&wrong_nc, "GET", &ha1), Verdict::Mismatch);
        assert_eq!(verify(&wrong_cnonce, "GET", &ha1), Verdict::Mismatch);
        assert_eq!(verify(&base, "REGISTER", &ha1), Verdict::Mismatch);
    }

    #[test]
    fn truncated_padded_or_empty_response_is_a_mismatch() {
        let ha1 = mufasa(Algorithm::Sha256);
        let long = format!("{SHA256_RESPONSE}00");
        for response in [&SHA256_RESPONSE[..63], long.as_str(), ""] {
            let c = creds(Some("SHA-256"), response);
            assert_eq!(verify(&c, "GET", &ha1), Verdict::Mismatch, "{response}");
        }
    }

    #[test]
    fn missing_or_other_qop_is_refused() {
        let ha1 = mufasa(Algorithm::Md5);
        let base = creds(Some("MD5"), MD5_RESPONSE);
        let no_qop = DigestCredentials { qop: None, ..base };
        let auth_int = DigestCredentials {
            qop: Some("auth-int"),
            ..base
        };
        assert_eq!(
            verify(&no_qop, "GET", &ha1),
            Verdict::Refused(Refusal::QopMissing)
        );
        assert_eq!(
            verify(&auth_int, "GET", &ha1),
            Verdict::Refused(Refusal::QopUnsupported)
        );
    }

    #[test]
    fn malformed_nc_or_missing_cnonce_is_refused() {
        let ha1 = mufasa(Algorithm::Md5);
        let base = creds(Some("MD5"), MD5_RESPONSE);
        let cases = [
            DigestCredentials { nc: None, ..base },
            DigestCredentials {
                nc_raw: Some("1"),
                ..base
            },
            DigestCredentials {
                nc: Some(2),
                ..base
            },
            DigestCredentials {
                nc_raw: Some("+0000001"),
                ..base
            },
        ];
        for c in cases {
            assert_eq!(
                verify(&c, "GET", &ha1),
                Verdict::Refused(Refusal::NonceCountMalformed)
            );
        }
        let no_cnonce = DigestCredentials {
            cnonce: None,
            ..base
        };
        assert_eq!(
            verify(&no_cnonce, "GET", &ha1),
            Verdict::Refused(Refusal::CnonceMissing)
        );
    }

    #[test]
    fn sess_unknown_and_mismatched_algorithms_are_refused() {
        for name in ["MD5-sess", "SHA-256-sess", "SHA-512-256-sess", "SHA-1", ""] {
            assert_eq!(Algorithm::from_param(name), None, "{name}");
            let c = creds(Some(name), MD5_RESPONSE);
            assert_eq!(
                verify(&c, "GET", &mufasa(Algorithm::Md5)),
                Verdict::Refused(Refusal::UnsupportedAlgorithm)
            );
        }
        let c = creds(Some("MD5"), MD5_RESPONSE);
        assert_eq!(
            verify(&c, "GET", &mufasa(Algorithm::Sha256)),
            Verdict::Refused(Refusal::AlgorithmMismatch)
        );
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256] {
            assert_eq!(Algorithm::from_param(alg.as_str()), Some(alg));
            assert_eq!(
                Algorithm::from_param(&alg.as_str().to_lowercase()),
                Some(alg)
            );
        }
    }

    #[test]
    fn dummy_ha1_never_accepts_even_with_its_own_response() {
        let dummies = DummyHa1s::new();
        let dummy = dummies.get(Algorithm::Sha256);
        // Forge the response a client holding the dummy's value would send.
        let real = Ha1 {
            dummy: false,
            ..*dummy
        };
        let base = creds(Some("SHA-256"), "");
        let ha2 = hash_parts(Algorithm::Sha256, &[b"GET", URI.as_bytes()]);
        let forged = hash_parts(
            Algorithm::Sha256,
            &[
                real.hex.as_bytes(),
                NONCE.as_bytes(),
                b"00000001",
                CNONCE.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ],
        );
        let forged = std::str::from_utf8(forged.as_bytes()).expect("hex is ascii");
        let c = DigestCredentials {
            response: forged,
            ..base
        };
        assert_eq!(verify(&c, "GET", &real), Verdict::Accepted);
        assert_eq!(verify(&c, "GET", dummy), Verdict::Mismatch);
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let ha1 = mufasa(Algorithm::Sha512_256);
        let shown = format!("{ha1:?} {:?}", DummyHa1s::new());
        assert!(!shown.contains(SHA512_256_HA1), "{shown}");
        let c = creds(Some("SHA-256"), SHA256_RESPONSE);
        let shown = format!("{c:?}");
        assert!(!shown.contains(SHA256_RESPONSE), "{shown}");
    }

    #[test]
    fn challenge_renders_header_value() {
        let mut out = String::new();
        Challenge {
            realm: "example.com",
            nonce: "abc",
            algorithm: Algorithm::Sha256,
            stale: false,
            opaque: None,
        }
        .write_to(&mut out);
        assert_eq!(
            out,
            r#"Digest realm="example.com", nonce="abc", algorithm=SHA-256, qop="auth""#
        );

        out.clear();
        Challenge {
            realm: r#"a"b\c"#,
            nonce: "n",
            algorithm: Algorithm::Md5,
            stale: true,
            opaque: Some("o"),
        }
        .write_to(&mut out);
        assert_eq!(
            out,
            r#"Digest realm="a\"b\\c", nonce="n", opaque="o", algorithm=MD5, qop="auth", stale=true"#
        );
    }

    #[test]
    fn hex_helpers_match_the_obvious_definition() {
        for n in 0..16u8 {
            assert_eq!(hex_nibble(n), b"0123456789abcdef"[usize::from(n)]);
        }
        for b in 0..=255u8 {
            let want = if (b'A'..=b'F').contains(&b) {
                b + 32
            } else {
                b
            };
            assert_eq!(lower_hex_letter(b), want);
        }
    }
}
