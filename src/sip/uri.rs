//! URIs (RFC 3261 §19, RFC 3986 escapes): `sip:`, `sips:`, `tel:`, and any other scheme
//! kept raw. Also §19.1.4 comparison (as a canonical key) and the AoR canonical form.
//!
//! A `Uri` borrows from the message; parsing never allocates. Only `aor()` and
//! `comparison_key()` build strings, for storage. It must not resolve or route anything.
//!
//! [`Aor`] is the one address-of-record type of the crate: the registrar keys bindings by
//! it, the proxy looks callees up by it, TLS identities and the admin API compare by it. It
//! is built only here, by parsing a URI.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::error::ParseError;
use super::scan::{byte_table, eq_lower, Params};

/// Scheme characters after the first: ALPHA / DIGIT / "+" / "-" / "." (RFC 3986 §3.1).
static SCHEME: [bool; 256] =
    byte_table!(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));

/// Byte classes of the one pass `Uri::parse` makes over a URI after its scheme.
const PLAIN: u8 = 0;
/// Bytes no URI may hold as written: controls, SP, DEL, `<`, `>` and `"`.
const FORBIDDEN: u8 = 1;
const AT: u8 = 2;
const QUESTION: u8 = 3;
const PERCENT: u8 = 4;
static URI_CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            0..=b' ' | 0x7f | b'<' | b'>' | b'"' => FORBIDDEN,
            b'@' => AT,
            b'?' => QUESTION,
            b'%' => PERCENT,
            _ => PLAIN,
        };
        i += 1;
    }
    t
};

/// Host name and IPv4 bytes.
static HOST: [bool; 256] =
    byte_table!(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other scheme, kept raw (`isbn:`, `http:`, `soap.beep:` ...).
    Other,
}

/// The host part of a SIP URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    Name(&'a str),
    V4(Ipv4Addr),
    /// An IPv6 reference; the text keeps the brackets as written.
    V6(Ipv6Addr, &'a str),
}

impl<'a> Host<'a> {
    /// The host as written (IPv6 with brackets).
    pub fn as_written(&self, raw: &'a str) -> &'a str {
        match self {
            Host::Name(s) | Host::V6(_, s) => s,
            Host::V4(_) => raw,
        }
    }
}

/// A parsed URI. For `Other` schemes only `scheme` and `raw` are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    /// The whole URI as received.
    pub raw: &'a str,
    /// The user part as written (escapes kept); for `tel:` the number.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// The host text as written (IPv6 with brackets). Empty for `tel:` and `Other`.
    pub host_raw: &'a str,
    pub host: Option<Host<'a>>,
    pub port: Option<u16>,
    /// `;name=value` parameters, raw, starting with `;` (or empty).
    pub params_raw: &'a str,
    /// The `?` headers part without the `?`.
    pub headers: Option<&'a str>,
}

impl<'a> Uri<'a> {
    /// Parses a URI. `sip:`/`sips:` must be well-formed; `tel:` must have a number;
    /// any other scheme only needs a valid scheme name.
    pub fn parse(raw: &'a str) -> Result<Uri<'a>, ParseError> {
        let b = raw.as_bytes();
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ':'. Scheme characters
        // never include ':', so the run ends exactly at the first ':' when the scheme is valid.
        let colon = b
            .iter()
            .position(|&c| !SCHEME[usize::from(c)])
            .ok_or(ParseError::InvalidUri)?;
        if colon == 0 || b[colon] != b':' || !b[0].is_ascii_alphabetic() {
            return Err(ParseError::InvalidUri);
        }
        let scheme_text = &raw[..colon];
        let rest = &raw[colon + 1..];
        // One pass over the rest (the scheme holds no such byte): refuse controls, SP, DEL,
        // `<`, `>` and `"`; note the last '@', the first '?' after it, and whether any '%'
        // escape needs checking. '@' cannot appear in URI parameters or headers (RFC 3261
        // §25.1), while the user part may hold '?', ';' and ','; so the userinfo ends at the
        // last '@'.
        let mut at = None;
        let mut question = None;
        let mut percent = false;
        for (i, &c) in rest.as_bytes().iter().enumerate() {
            match URI_CLASS[usize::from(c)] {
                PLAIN => {}
                FORBIDDEN => return Err(ParseError::InvalidUri),
                AT => {
                    at = Some(i);
                    question = None;
                }
                QUESTION => {
                    if question.is_none() {
                        question = Some(i);
                    }
                }
                _ => percent = true,
            }
        }
        let escapes_ok = |s: &str| !percent || valid_escapes(s);
        let scheme = if eq_lower(scheme_text, "sip") {
            Scheme::Sip
        } else if eq_lower(scheme_text, "sips") {
            Scheme::Sips
        } else if eq_lower(scheme_text, "tel") {
            Scheme::Tel
        } else {
            return Ok(Uri {
                scheme: Scheme::Other,
                raw,
                user: None,
                password: None,
                host_raw: "",
                host: None,
                port: None,
                params_raw: "",
                headers: None,
            });
        };
        if scheme == Scheme::Tel {
            let end = memchr::memchr(b';', rest.as_bytes()).unwrap_or(rest.len());
            let number = &rest[..end];
            if number.is_empty() {
                return Err(ParseError::InvalidUri);
            }
            let params = &rest[end..];
            Params::new(params)
                .validate()
                .map_err(|_| ParseError::InvalidUri)?;
            return Ok(Uri {
                scheme,
                raw,
                user: Some(number),
                password: None,
                host_raw: "",
                host: None,
                port: None,
                params_raw: params,
                headers: None,
            });
        }
        let (userinfo, host_start) = match at {
            Some(at) => (Some(&rest[..at]), at + 1),
            None => (None, 0),
        };
        let (hostpart, headers) = match question {
            Some(q) => (&rest[host_start..q], Some(&rest[q + 1..])),
            None => (&rest[host_start..], None),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match ui.bytes().position(|c| c == b':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !escapes_ok(u) || !p.is_none_or(escapes_ok) {
                    return Err(ParseError::InvalidUri);
                }
                (Some(u), p)
            }
            None => (None, None),
        };
        let (host_raw, host, after_host) = parse_host(hostpart)?;
        let (port, params_raw) = if let Some(after_colon) = after_host.strip_prefix(':') {
            let end = after_colon
                .bytes()
                .position(|c| c == b';')
                .unwrap_or(after_colon.len());
            let digits = &after_colon[..end];
            let port = super::scan::parse_u32_strict(digits)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(ParseError::InvalidUri)?;
            (Some(port), &after_colon[end..])
        } else {
            (None, after_host)
        };
        if !params_raw.is_empty() && !params_raw.starts_with(';') {
            return Err(ParseError::InvalidUri);
        }
        Params::new(params_raw)
            .validate()
            .map_err(|_| ParseError::InvalidUri)?;
        if headers.is_some_and(|h| !escapes_ok(h)) {
            return Err(ParseError::InvalidUri);
        }
        Ok(Uri {
            scheme,
            raw,
            user,
            password,
            host_raw,
            host: Some(host),
            port,
            params_raw,
            headers,
        })
    }

    /// This URI as a Request-URI may carry it (RFC 3261 §19.1.1 and the §19.1.5 table):
    /// without URI headers (`?…`) and without the `method` parameter, both of which a
    /// registered Contact may hold but a Request-URI may not. Borrowed when there is
    /// nothing to remove; other schemes are returned as they are.
    pub fn request_uri_form(&self) -> Cow<'a, str> {
        if !self.is_sip() || (self.headers.is_none() && self.param("method").is_none()) {
            return Cow::Borrowed(self.raw);
        }
        // `raw` ends with the parameters, then `?` and the headers.
        let tail = self.params_raw.len() + self.headers.map_or(0, |h| h.len() + 1);
        let mut out = String::with_capacity(self.raw.len());
        out.push_str(&self.raw[..self.raw.len() - tail]);
        // `params_raw` is empty or starts with ';'; URI parameters hold no unescaped ';'.
        for param in self.params_raw.split(';').skip(1) {
            let name = param.split('=').next().unwrap_or("");
            if !name.eq_ignore_ascii_case("method") {
                out.push(';');
                out.push_str(param);
            }
        }
        Cow::Owned(out)
    }

    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    pub fn params(&self) -> Params<'a> {
        Params::new(self.params_raw)
    }

    /// A URI parameter by name (case-insensitive): `Some(None)` for a flag such as `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().find(name)
    }

    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport").flatten()
    }

    pub fn lr(&self) -> bool {
        self.param("lr").is_some()
    }

    pub fn maddr(&self) -> Option<&'a str> {
        self.param("maddr").flatten()
    }

    /// `sip:` or `sips:`, then the user (escapes normalized), the password if asked for,
    /// and `@`; nothing for the user when there is none.
    fn push_scheme_and_user(&self, out: &mut String, with_password: bool) {
        out.push_str(if self.scheme == Scheme::Sips {
            "sips:"
        } else {
            "sip:"
        });
        if let Some(user) = self.user {
            normalize_escapes(user, out);
            if let (true, Some(pw)) = (with_password, self.password) {
                out.push(':');
                normalize_escapes(pw, out);
            }
            out.push('@');
        }
    }

    /// The address-of-record this URI names (see [`Aor`]); `None` for URIs that cannot be
    /// an AoR (not `sip:` or `sips:`).
    pub fn aor(&self) -> Option<Aor> {
        if !self.is_sip() {
            return None;
        }
        // Written into a per-thread buffer and copied once into the `Arc`: one allocation
        // per AoR (an `Arc<str>` from a `String` would be a second).
        thread_local! {
            static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        Some(TEXT.with_borrow_mut(|out| {
            out.clear();
            self.push_scheme_and_user(out, false);
            push_lower(self.host_raw, out);
            let aor = Aor(Arc::from(out.as_str()));
            if out.capacity() > AOR_BUFFER_KEPT {
                *out = String::new();
            }
            aor
        }))
    }

    /// A canonical key such that two URIs are equal per RFC 3261 §19.1.4 when their keys
    /// are equal: scheme and host case-insensitive, user and password case-sensitive after
    /// escape normalization, port as written (absent ≠ 5060), and the parameters that §19.1.4
    /// makes significant when present (`user`, `ttl`, `method`, `maddr`, `transport`) in a
    /// fixed order. Other URI parameters and the headers are left out (approximation:
    /// §19.1.4 compares other parameters only when both URIs carry them).
    pub fn comparison_key(&self) -> String {
        let mut out = String::with_capacity(self.raw.len());
        if !self.is_sip() {
            push_lower(self.raw, &mut out);
            return out;
        }
        self.push_scheme_and_user(&mut out, true);
        push_lower(self.host_raw, &mut out);
        if let Some(port) = self.port {
            let _ = write!(out, ":{port}");
        }
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            if let Some(v) = self.param(name) {
                out.push(';');
                out.push_str(name);
                if let Some(v) = v {
                    out.push('=');
                    push_lower(v, &mut out);
                }
            }
        }
        out
    }
}

fn parse_host(s: &str) -> Result<(&str, Host<'_>, &str), ParseError> {
    if s.starts_with('[') {
        let close = s.find(']').ok_or(ParseError::InvalidUri)?;
        let inner = &s[1..close];
        // Policy (RFC 5118 §4.10): only addresses that are valid RFC 4291 text parse;
        // `[2001:db8:::192.0.2.1]` (three colons) is rejected.
        let addr: Ipv6Addr = inner.parse().map_err(|_| ParseError::InvalidUri)?;
        let host_raw = &s[..=close];
        return Ok((host_raw, Host::V6(addr, host_raw), &s[close + 1..]));
    }
    // The host runs to the first ':' or ';'; every byte before it must be a host byte.
    let b = s.as_bytes();
    let end = b
        .iter()
        .position(|&c| !HOST[usize::from(c)])
        .unwrap_or(b.len());
    if end < b.len() && !matches!(b[end], b':' | b';') {
        return Err(ParseError::InvalidUri);
    }
    let host = &s[..end];
    if host.is_empty() || host.len() > 255 {
        return Err(ParseError::InvalidUri);
    }
    // An IPv4 address starts with a digit; skip the address parser for names.
    let v4 = if b[0].is_ascii_digit() {
        parse_ipv4(host.as_bytes())
    } else {
        None
    };
    let parsed = match v4 {
        Some(v4) => Host::V4(v4),
        None => Host::Name(host),
    };
    Ok((host, parsed, &s[end..]))
}

/// Dotted-quad IPv4 text exactly as `Ipv4Addr::from_str` takes it (four groups of one to
/// three digits, each at most 255, no leading zero), without its general-purpose parser.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut groups = s.split(|&c| c == b'.');
    for octet in &mut octets {
        let g = groups.next()?;
        if g.is_empty() || g.len() > 3 || (g.len() > 1 && g[0] == b'0') {
            return None;
        }
        let mut v: u16 = 0;
        for &c in g {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
        }
        *octet = u8::try_from(v).ok()?;
    }
    if groups.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Every `%` must start a two-hex-digit escape.
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Decodes escapes of unreserved characters, upper-cases the hex of every other escape.
fn normalize_escapes(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut run = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push_str(&s[run..i]);
            let v = (hex_val(b[i + 1]) << 4) | hex_val(b[i + 2]);
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            run = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[run..]);
}

fn push_lower(s: &str, out: &mut String) {
    let from = out.len();
    out.push_str(s);
    out[from..].make_ascii_lowercase();
}

/// Largest AoR buffer a thread keeps between calls of [`Uri::aor`] (longer ones allocate it
/// afresh each time).
const AOR_BUFFER_KEPT: usize = 1024;

/// A canonical address-of-record (RFC 3261 §10.3): `sip:user@host` (or `sips:`), the user
/// with unreserved escapes decoded and other escapes upper-cased (so `%00` stays visible and
/// is never cut), the user otherwise as written (user parts are case-sensitive, §19.1.4), the
/// host lower-cased, no port, no parameters.
///
/// Built only by parsing ([`Uri::aor`], [`Aor::parse`]); cheap to clone (one reference
/// count); compared and hashed by its canonical text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aor(Arc<str>);

impl Aor {
    /// An operator's or a configuration's spelling of an AoR: a SIP URI (`sip:alice@example.test`,
    /// `SIP:alice@Example.Test;transport=tcp`) or `user@host` without a scheme (taken as
    /// `sip:`). The same canonical form the registrar stores for the same address.
    pub fn parse(text: &str) -> Option<Aor> {
        match Uri::parse(text) {
            Ok(uri) if uri.scheme != Scheme::Other => uri.aor(),
            _ if !text.contains(':') => Uri::parse(&format!("sip:{text}")).ok()?.aor(),
            _ => None,
        }
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same address under `sip:` (a `sips:` AoR names the same user, RFC 3261 §19.1).
    pub fn to_sip(&self) -> Aor {
        match self.0.strip_prefix("sips:") {
            Some(rest) => Aor(Arc::from(format!("sip:{rest}"))),
            None => self.clone(),
        }
    }
}

impl std::ops::Deref for Aor {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Aor {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Aor {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Aor {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse("sip:alice:pw@Example.COM:5070;transport=tcp;lr?Subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host_raw, "Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(u.headers, Some("Subject=x"));
        assert_eq!(u.aor().unwrap(), "sip:alice@example.com");
    }

    #[test]
    fn request_uri_form_drops_headers_and_method_only() {
        let form = |s: &str| Uri::parse(s).unwrap().request_uri_form().into_owned();
        assert_eq!(
            form("sip:alice@127.0.0.1:5371?Route=%3Csip:evil%3E&Call-ID=x"),
            "sip:alice@127.0.0.1:5371"
        );
        assert_eq!(
            form("sip:alice@h;transport=tcp;METHOD=INVITE;lr;maddr=192.0.2.1?Subject=x"),
            "sip:alice@h;transport=tcp;lr;maddr=192.0.2.1"
        );
        assert_eq!(form("sips:h;method=REGISTER"), "sips:h");
        // The user part may hold '?' and ';' (it ends at the last '@'): kept as written.
        assert_eq!(
            form("sip:a?b;method=x@h:5060;x=1?h=v"),
            "sip:a?b;method=x@h:5060;x=1"
        );
        let plain = Uri::parse("sip:bob@192.0.2.4:5060;transport=udp").unwrap();
        assert!(matches!(plain.request_uri_form(), Cow::Borrowed(_)));
        assert_eq!(form("tel:+1-201-555-0123"), "tel:+1-201-555-0123");
    }

    #[test]
    fn user_part_may_hold_semicolons() {
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host_raw, "example.com");
    }

    #[test]
    fn ipv4_text_is_read_as_std_reads_it() {
        let mut cases: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.4a",
            "0000.1.1.1",
            "192.0.2.10",
            "1.2.3.0",
            "1.2.3.00",
            "1.2.3.099",
            "999.1.1.1",
            "",
            ".",
            "1",
            "1.2.3.4.",
            "+1.2.3.4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for a in [
            "0", "1", "9", "10", "25", "99", "100", "199", "249", "255", "256", "300", "07",
        ] {
            cases.push(format!("{a}.{a}.0.{a}"));
            cases.push(format!("1.{a}.2.{a}"));
        }
        for c in &cases {
            assert_eq!(
                parse_ipv4(c.as_bytes()),
                c.parse::<Ipv4Addr>().ok(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn ipv6_references() {
        let u = Uri::parse("sip:[2001:db8::10]:5070").unwrap();
        assert!(matches!(u.host, Some(Host::V6(_, "[2001:db8::10]"))));
        assert_eq!(u.port, Some(5070));
        let u = Uri::parse("sip:[2001:db8::10:5070]").unwrap();
        assert_eq!(u.port, None);
        assert!(Uri::parse("sip:2001:db8::10").is_err());
        // Pinned policy for RFC 5118 §4.10: three colons are rejected.
        assert!(Uri::parse("sip:[2001:db8:::192.0.2.1]").is_err());
        assert!(Uri::parse("sip:[2001:db8::192.0.2.1]").is_ok());
    }

    #[test]
    fn escapes_normalize_but_never_truncate() {
        let a = Uri::parse("sip:null-%00-null@example.com").unwrap();
        assert_eq!(a.aor().unwrap(), "sip:null-%00-null@example.com");
        let b = Uri::parse("sip:%61lice@EXAMPLE.com").unwrap();
        assert_eq!(b.aor().unwrap(), "sip:alice@example.com");
        assert_ne!(
            Uri::parse("sip:%00@h").unwrap().comparison_key(),
            Uri::parse("sip:%00%00@h").unwrap().comparison_key()
        );
        assert!(Uri::parse("sip:bad%4@h").is_err());
        assert!(Uri::parse("sip:bad%zz@h").is_err());
    }

    #[test]
    fn comparison_follows_19_1_4() {
        let k = |s: &str| Uri::parse(s).unwrap().comparison_key();
        assert_eq!(
            k("sip:%61lice@atlanta.com;transport=TCP"),
            k("sip:alice@AtLanTa.CoM;Transport=tcp")
        );
        assert_ne!(k("sip:alice@atlanta.com"), k("sip:ALICE@atlanta.com"));
        assert_ne!(k("sip:bob@biloxi.com"), k("sip:bob@biloxi.com:5060"));
        assert_ne!(
            k("sip:bob@biloxi.com"),
            k("sip:bob@biloxi.com;transport=udp")
        );
        assert_eq!(
            k("sip:carol@chicago.com;newparam=5"),
            k("sip:carol@chicago.com;security=on")
        );
    }

    #[test]
    fn other_schemes_are_kept_raw_and_tel_parses() {
        let u = Uri::parse("isbn:2983792873").unwrap();
        assert_eq!(u.scheme, Scheme::Other);
        assert!(u.aor().is_none());
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(t.user, Some("+1-201-555-0123"));
        assert!(Uri::parse("sip:").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:a b@h").is_err());
        assert!(Uri::parse("nocolon").is_err());
    }

    #[test]
    fn aor_spellings_parse_to_the_form_the_registrar_stores() {
        let stored = Uri::parse("sip:Alice@Example.test").unwrap().aor().unwrap();
        assert_eq!(stored, "sip:Alice@example.test");
        for text in [
            "sip:Alice@Example.test",
            "SIP:Alice@EXAMPLE.TEST",
            "Alice@Example.test",
            "sip:Alice@example.test:5060;transport=tcp",
            "sip:%41lice@example.test",
        ] {
            assert_eq!(Aor::parse(text).as_ref(), Some(&stored), "{text}");
        }
        // The user part is case-sensitive (RFC 3261 §19.1.4).
        assert_ne!(Aor::parse("sip:alice@example.test").unwrap(), stored);
        // A host alone is an AoR with no user part, as a To without one is.
        assert_eq!(Aor::parse("example.test").unwrap(), "sip:example.test");
        for bad in ["", "<sip:a@b>", "tel:+1234", "mailto:a@b", "sip:a b@c"] {
            assert_eq!(Aor::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            Aor::parse("sips:Bob@EXAMPLE.test").unwrap().to_sip(),
            "sip:Bob@example.test"
        );
    }
}
