//! Just enough SIP for a load generator: build REGISTERs, read a response's status, Call-ID,
//! CSeq and Digest challenges, and compute Digest responses (RFC 7616, qop=auth) with md-5 and
//! sha2 directly, independently of the code under test.

use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;

/// Digest algorithms the generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Algorithm {
    #[value(name = "MD5")]
    Md5,
    #[value(name = "SHA-256")]
    Sha256,
}

impl Algorithm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Lower-case hex of H(data).
    pub(crate) fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data)),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }
}

/// The user names and passwords of the benchmark population: `u100000`..`u109999` with
/// password `pw100000`.., as in benches/kamailio/registrar.cfg.
#[derive(Clone, Debug)]
pub(crate) struct Users {
    pub(crate) first: u32,
    pub(crate) count: u32,
}

impl Users {
    pub(crate) fn name(&self, i: u32) -> String {
        format!("u{}", self.first + i % self.count)
    }

    pub(crate) fn password(&self, i: u32) -> String {
        format!("pw{}", self.first + i % self.count)
    }
}

/// Status code of a response, `None` for a request or garbage.
pub(crate) fn status(msg: &[u8]) -> Option<u16> {
    let rest = msg.strip_prefix(b"SIP/2.0 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// Value of the first header named `name` (or its compact form), trimmed.
pub(crate) fn header<'a>(
    msg: &'a [u8],
    name: &'static str,
    compact: Option<&'static str>,
) -> Option<&'a str> {
    headers(msg, name, compact).next()
}

/// Values of every header named `name` (or its compact form), in order.
pub(crate) fn headers<'a>(
    msg: &'a [u8],
    name: &'static str,
    compact: Option<&'static str>,
) -> impl Iterator<Item = &'a str> + 'a {
    let end = memchr::memmem::find(msg, b"\r\n\r\n").unwrap_or(msg.len());
    let text = std::str::from_utf8(&msg[..end]).unwrap_or("");
    text.split("\r\n").skip(1).filter_map(move |line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim_end();
        let hit =
            n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c));
        hit.then(|| v.trim())
    })
}

pub(crate) fn call_id(msg: &[u8]) -> Option<&str> {
    header(msg, "Call-ID", Some("i"))
}

/// The CSeq number.
pub(crate) fn cseq(msg: &[u8]) -> Option<u32> {
    header(msg, "CSeq", None)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One Digest challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, Default)]
pub(crate) struct Challenge {
    pub(crate) realm: String,
    pub(crate) nonce: String,
    pub(crate) opaque: Option<String>,
    pub(crate) algorithm: Option<String>,
    pub(crate) qop: Option<String>,
    /// `stale=true`: the credentials were right, only the nonce is refused; answer the new one.
    pub(crate) stale: bool,
}

impl Challenge {
    fn parse(value: &str) -> Option<Challenge> {
        let rest = value.strip_prefix("Digest")?.trim_start();
        let mut c = Challenge::default();
        for (k, v) in params(rest) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => c.realm = v.to_owned(),
                "nonce" => c.nonce = v.to_owned(),
                "opaque" => c.opaque = Some(v.to_owned()),
                "algorithm" => c.algorithm = Some(v.to_owned()),
                "qop" => c.qop = Some(v.to_owned()),
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        Some(c)
    }

    fn is(&self, algorithm: Algorithm) -> bool {
        let name = self.algorithm.as_deref().unwrap_or("MD5");
        name.eq_ignore_ascii_case(algorithm.name())
    }
}

/// The challenge for `algorithm` among a 401's `WWW-Authenticate` headers.
pub(crate) fn challenge(msg: &[u8], algorithm: Algorithm) -> Option<Challenge> {
    headers(msg, "WWW-Authenticate", None)
        .filter_map(Challenge::parse)
        .find(|c| c.is(algorithm))
}

/// `k=v, k="v"` pairs; quoted values may contain commas (not escaped quotes: not needed here).
fn params(mut s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',', '\t']);
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq].trim();
        let rest = s[eq + 1..].trim_start();
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            out.push((key, &q[..end]));
            s = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            out.push((key, rest[..end].trim()));
            s = &rest[end..];
        }
    }
    out
}

/// What goes into one REGISTER.
pub(crate) struct Register<'a> {
    pub(crate) domain: &'a str,
    pub(crate) transport: &'a str,
    pub(crate) local: std::net::SocketAddr,
    pub(crate) user: &'a str,
    pub(crate) call_id: &'a str,
    pub(crate) tag: &'a str,
    pub(crate) branch: &'a str,
    pub(crate) cseq: u32,
    pub(crate) expires: u32,
    /// The contact's port (the socket's own for UDP; any for a stream).
    pub(crate) contact_port: u16,
    pub(crate) authorization: Option<&'a str>,
}

impl Register<'_> {
    /// Appends the message to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "REGISTER sip:{domain} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\n\
             From: <sip:{user}@{domain}>;tag={tag}\r\n\
             To: <sip:{user}@{domain}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{ip}:{port};transport={tl}>\r\n\
             Max-Forwards: 70\r\n\
             Expires: {expires}\r\n",
            domain = self.domain,
            transport = self.transport,
            local = self.local,
            branch = self.branch,
            user = self.user,
            tag = self.tag,
            call_id = self.call_id,
            cseq = self.cseq,
            ip = self.local.ip(),
            port = self.contact_port,
            tl = self.transport.to_ascii_lowercase(),
            expires = self.expires,
        );
        if let Some(a) = self.authorization {
            let _ = write!(s, "Authorization: {a}\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        out.extend_from_slice(s.as_bytes());
    }
}

/// The `Authorization` header value answering `c` (qop=auth when offered).
#[allow(clippy::too_many_arguments)]
pub(crate) fn authorization(
    algorithm: Algorithm,
    ha1: &str,
    user: &str,
    uri: &str,
    c: &Challenge,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha2 = algorithm.hex(format!("REGISTER:{uri}").as_bytes());
    let qop_auth = c
        .qop
        .as_deref()
        .is_some_and(|q| q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")));
    let mut out = String::with_capacity(400);
    if qop_auth {
        let response =
            algorithm.hex(format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", c.nonce).as_bytes());
        let _ = write!(
            out,
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={alg}, cnonce=\"{cnonce}\", qop=auth, nc={nc:08x}",
            realm = c.realm,
            nonce = c.nonce,
            alg = algorithm.name(),
        );
    } else {
        let response = algorithm.hex(format!("{ha1}:{}:{ha2}", c.nonce).as_bytes());
        let _ = write!(
            out,
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={alg}",
            realm = c.realm,
            nonce = c.nonce,
            alg = algorithm.name(),
        );
    }
    if let Some(o) = &c.opaque {
        let _ = write!(out, ", opaque=\"{o}\"");
    }
    out
}

/// HA1 = H(user:realm:password).
pub(crate) fn ha1(algorithm: Algorithm, user: &str, realm: &str, password: &str) -> String {
    algorithm.hex(format!("{user}:{realm}:{password}").as_bytes())
}
