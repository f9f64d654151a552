//! Authorization / Proxy-Authorization header values: the scheme and, for Digest, the
//! parameters RFC 7616/8760 define. `uri` is kept as the raw string the client hashed.
//!
//! It parses only; verification lives in `auth`. Duplicate parameters are an error
//! (OpenSIPS CVE-2023-28098 class), as are unterminated quotes and an `nc` that is not
//! exactly 8 hex digits.

use super::error::ParseError;
use super::header::HeaderName;
use super::message::Message;
use super::scan::{eq_lower, is_lws, is_token, skip_lws, skip_quoted, unquote};

/// Digest parameters borrowed from the header; quoted values without their quotes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestParams<'a> {
    pub username: Option<&'a str>,
    pub realm: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub response: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub qop: Option<&'a str>,
    pub nc: Option<u32>,
    /// `nc` as sent (8 hex digits), for hashing.
    pub nc_raw: Option<&'a str>,
    pub opaque: Option<&'a str>,
    pub userhash: bool,
}

/// A credentials header: its scheme and, when the scheme is Digest, its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    Digest(DigestParams<'a>),
    /// Another scheme (for example RFC 4475 regaut01's `NoOneKnowsThisScheme`): never valid.
    Other(&'a str),
}

impl<'a> Credentials<'a> {
    pub fn parse(v: &'a str) -> Result<Credentials<'a>, ParseError> {
        let v = &v[skip_lws(v.as_bytes(), 0)..];
        let end = v.bytes().position(|b| !is_token(b)).unwrap_or(v.len());
        let scheme = &v[..end];
        if scheme.is_empty() {
            return Err(ParseError::InvalidAuthorization);
        }
        if !eq_lower(scheme, "digest") {
            return Ok(Credentials::Other(scheme));
        }
        let mut p = DigestParams::default();
        let b = v.as_bytes();
        let mut i = end;
        let mut seen: u16 = 0;
        loop {
            while i < b.len() && (is_lws(b[i]) || b[i] == b',') {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            let ns = i;
            while i < b.len() && is_token(b[i]) {
                i += 1;
            }
            let name = &v[ns..i];
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            if name.is_empty() || i >= b.len() || b[i] != b'=' {
                return Err(ParseError::InvalidAuthorization);
            }
            i += 1;
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            let vs = i;
            let quoted = b.get(i) == Some(&b'"');
            if quoted {
                i = skip_quoted(b, i).ok_or(ParseError::InvalidAuthorization)?;
            } else {
                while i < b.len() && is_token(b[i]) {
                    i += 1;
                }
            }
            let raw = &v[vs..i];
            if raw.is_empty() {
                return Err(ParseError::InvalidAuthorization);
            }
            let value = unquote(raw);
            let is = |n: &str| eq_lower(name, n);
            let (bit, slot): (u16, Option<&mut Option<&'a str>>) = if is("username") {
                (1, Some(&mut p.username))
            } else if is("realm") {
                (2, Some(&mut p.realm))
            } else if is("nonce") {
                (4, Some(&mut p.nonce))
            } else if is("uri") {
                (8, Some(&mut p.uri))
            } else if is("response") {
                (16, Some(&mut p.response))
            } else if is("algorithm") {
                (32, Some(&mut p.algorithm))
            } else if is("cnonce") {
                (64, Some(&mut p.cnonce))
            } else if is("qop") {
                (128, Some(&mut p.qop))
            } else if is("nc") {
                (256, Some(&mut p.nc_raw))
            } else if is("opaque") {
                (512, Some(&mut p.opaque))
            } else if is("userhash") {
                if seen & 1024 != 0 {
                    return Err(ParseError::InvalidAuthorization);
                }
                seen |= 1024;
                p.userhash = value.eq_ignore_ascii_case("true");
                (0, None)
            } else {
                (0, None) // unknown auth-params are ignored (RFC 7616 §3.4)
            };
            if let Some(slot) = slot {
                if seen & bit != 0 {
                    return Err(ParseError::InvalidAuthorization);
                }
                seen |= bit;
                *slot = Some(value);
            }
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            if i < b.len() && b[i] != b',' {
                return Err(ParseError::InvalidAuthorization);
            }
        }
        if let Some(nc) = p.nc_raw {
            if nc.len() != 8 || !nc.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseError::InvalidAuthorization);
            }
            p.nc = u32::from_str_radix(nc, 16).ok();
        }
        Ok(Credentials::Digest(p))
    }
}

impl Message {
    /// Every Authorization (or Proxy-Authorization) header, parsed.
    pub fn credentials(
        &self,
        kind: HeaderName,
    ) -> impl Iterator<Item = Result<Credentials<'_>, ParseError>> + '_ {
        self.values(kind).map(Credentials::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_params() {
        let c = Credentials::parse(
            "Digest username=\"alice\", realm=\"example.test\",nonce=\"abc\", uri=\"sip:example.test\", \
             response=\"0123\", algorithm=SHA-256, cnonce=\"xyz\", qop=auth, nc=0000000a, opaque=\"o\"",
        )
        .unwrap();
        let Credentials::Digest(p) = c else {
            panic!("not digest")
        };
        assert_eq!(p.username, Some("alice"));
        assert_eq!(p.uri, Some("sip:example.test"));
        assert_eq!(p.algorithm, Some("SHA-256"));
        assert_eq!(p.nc, Some(10));
        assert_eq!(p.nc_raw, Some("0000000a"));
        assert_eq!(p.qop, Some("auth"));
    }

    #[test]
    fn faults() {
        assert_eq!(
            Credentials::parse("NoOneKnowsThisScheme opaque-data=here").unwrap(),
            Credentials::Other("NoOneKnowsThisScheme")
        );
        for bad in [
            "Digest username=\"a\", username=\"b\"",
            "Digest username=\"unterminated",
            "Digest nc=1",
            "Digest nc=0000000g",
            "Digest username",
            "Digest username=",
            "Digest a=b c=d",
            "",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad}");
        }
    }
}
