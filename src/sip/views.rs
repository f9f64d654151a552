//! Typed, lazy views over header values: Via, name-addr headers (From, To, Contact,
//! Route, Record-Route, Path), CSeq, Call-ID, Max-Forwards, Expires, option-tag lists,
//! and the `Message` accessors that return them.
//!
//! A view borrows from the message and is parsed on each call; nothing here allocates.
//! It must not apply registrar or proxy policy: it only says what the bytes mean.

use super::cseq::CSeq;
use super::error::ParseError;
use super::header::HeaderName;
use super::message::Message;
use super::scan::{
    eq_lower, is_lws, is_token, parse_u32_strict, parse_u64_saturating, skip_lws, skip_quoted,
    skip_token, split_commas, trim_lws, Params,
};
use super::uri::Uri;

/// One Via value: `SIP/2.0/UDP host:port;params`.
#[derive(Debug, Clone)]
pub struct Via<'a> {
    /// The whole value as written.
    pub raw: &'a str,
    pub transport: &'a str,
    /// `host[:port]` as written.
    pub sent_by: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// The parameters the accessors read, noted while `parse` checked `params`, so each
    /// accessor is a field read instead of another scan of the list (they describe
    /// `params` as parsed; assigning `params` afterwards does not update them).
    known: ViaParams<'a>,
}

/// First occurrence of each Via parameter the stack reads (`Some(None)`: a flag).
#[derive(Debug, Clone, Copy, Default)]
struct ViaParams<'a> {
    branch: Option<Option<&'a str>>,
    received: Option<Option<&'a str>>,
    rport: Option<Option<&'a str>>,
    maddr: Option<Option<&'a str>>,
    ttl: Option<Option<&'a str>>,
}

impl<'a> ViaParams<'a> {
    /// Checks every parameter of `params` and notes the known ones. An unquoted value
    /// may not hold `"`, `<` or `>`: none is a token or host character (RFC 3261 §20.42
    /// `via-params`), and since comma splitting pairs them up, a value holding one (say
    /// `branch=a<b;rport=c>`) would make a Via whose rewritten copy (the `rport` value
    /// replaced in a response) splits differently from the original.
    fn scan(params: &Params<'a>) -> Result<ViaParams<'a>, ()> {
        let mut known = ViaParams::default();
        for p in params.clone() {
            let p = p?;
            if let Some(v) = p.value {
                if !v.starts_with('"') && v.bytes().any(|c| matches!(c, b'"' | b'<' | b'>')) {
                    return Err(());
                }
            }
            let is = |n: &str| eq_lower(p.name, n);
            let slot = match p.name.len() {
                3 if is("ttl") => &mut known.ttl,
                5 if is("rport") => &mut known.rport,
                5 if is("maddr") => &mut known.maddr,
                6 if is("branch") => &mut known.branch,
                8 if is("received") => &mut known.received,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(p.value);
            }
        }
        Ok(known)
    }
}

impl<'a> Via<'a> {
    pub fn parse(raw: &'a str) -> Result<Via<'a>, ParseError> {
        let b = raw.as_bytes();
        let mut i = 0;
        let mut fields = [""; 3];
        for (n, field) in fields.iter_mut().enumerate() {
            let s = skip_lws(b, i);
            i = skip_token(b, s);
            *field = &raw[s..i];
            if field.is_empty() {
                return Err(ParseError::InvalidVia);
            }
            i = skip_lws(b, i);
            if n < 2 {
                if i >= b.len() || b[i] != b'/' {
                    return Err(ParseError::InvalidVia);
                }
                i += 1;
            }
        }
        if !eq_lower(fields[0], "sip") || fields[1] != "2.0" {
            return Err(ParseError::InvalidVia);
        }
        let transport = fields[2];
        let sb_start = i;
        let (host, rest) = if b.get(i) == Some(&b'[') {
            let close = raw[i..].find(']').ok_or(ParseError::InvalidVia)? + i;
            raw[i + 1..close]
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| ParseError::InvalidVia)?;
            (&raw[i..=close], &raw[close + 1..])
        } else {
            let s = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'.' | b'_'))
            {
                i += 1;
            }
            (&raw[s..i], &raw[i..])
        };
        if host.is_empty() {
            return Err(ParseError::InvalidVia);
        }
        let rest_trim = &rest[skip_lws(rest.as_bytes(), 0)..];
        let (port, params_raw) = if let Some(p) = rest_trim.strip_prefix(':') {
            let p = &p[skip_lws(p.as_bytes(), 0)..];
            let end = p
                .bytes()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(p.len());
            let port = parse_u32_strict(&p[..end])
                .and_then(|v| u16::try_from(v).ok())
                .ok_or(ParseError::InvalidVia)?;
            (Some(port), &p[end..])
        } else {
            (None, rest_trim)
        };
        let sent_by_end = raw.len() - params_raw.len();
        let sent_by = trim_lws(&raw[sb_start..sent_by_end]);
        let params = Params::new(params_raw);
        let known = ViaParams::scan(&params).map_err(|()| ParseError::InvalidVia)?;
        Ok(Via {
            raw,
            transport,
            sent_by,
            host,
            port,
            params,
            known,
        })
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.known.branch.flatten()
    }

    pub fn received(&self) -> Option<&'a str> {
        self.known.received.flatten()
    }

    /// `None`: no rport; `Some(None)`: rport without value (RFC 3581 request);
    /// `Some(Some(p))`: rport=p. An rport value that is not a port counts as absent value.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.known
            .rport
            .map(|v| v.and_then(|v| parse_u32_strict(v).and_then(|p| u16::try_from(p).ok())))
    }

    pub fn maddr(&self) -> Option<&'a str> {
        self.known.maddr.flatten()
    }

    pub fn ttl(&self) -> Option<u8> {
        self.known
            .ttl
            .flatten()
            .and_then(parse_u32_strict)
            .and_then(|v| u8::try_from(v).ok())
    }
}

/// `[display-name] <uri> ;params` or `uri ;params` (From, To, Contact, Route, Path ...).
#[derive(Debug, Clone)]
pub struct NameAddr<'a> {
    /// Display name as written (a quoted string keeps its quotes), if any.
    pub display_name: Option<&'a str>,
    pub uri: Uri<'a>,
    /// Whether the URI was enclosed in `<>`.
    pub bracketed: bool,
    /// Header parameters after the URI, raw (`;tag=…;expires=…`).
    pub params: Params<'a>,
    /// The parameters the accessors read, noted while `parse` checked `params`, so each
    /// accessor is a field read instead of another scan of the list (they describe
    /// `params` as parsed; assigning `params` afterwards does not update them).
    known: NameAddrParams<'a>,
}

/// First occurrence of each name-addr parameter the stack reads (`Some(None)`: a flag).
#[derive(Debug, Clone, Copy, Default)]
struct NameAddrParams<'a> {
    tag: Option<Option<&'a str>>,
    expires: Option<Option<&'a str>>,
    q: Option<Option<&'a str>>,
    instance: Option<Option<&'a str>>,
    reg_id: Option<Option<&'a str>>,
    methods: Option<Option<&'a str>>,
}

impl<'a> NameAddrParams<'a> {
    /// Checks every parameter of `params` (`InvalidParam` as `Params::validate`) and
    /// notes the known ones.
    fn scan(params: &Params<'a>) -> Result<NameAddrParams<'a>, ParseError> {
        let mut known = NameAddrParams::default();
        for p in params.clone() {
            let p = p.map_err(|()| ParseError::InvalidParam)?;
            let is = |n: &str| eq_lower(p.name, n);
            let slot = match p.name.len() {
                1 if is("q") => &mut known.q,
                3 if is("tag") => &mut known.tag,
                6 if is("reg-id") => &mut known.reg_id,
                7 if is("expires") => &mut known.expires,
                7 if is("methods") => &mut known.methods,
                13 if is("+sip.instance") => &mut known.instance,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(p.value);
            }
        }
        Ok(known)
    }
}

impl<'a> NameAddr<'a> {
    pub fn parse(raw: &'a str) -> Result<NameAddr<'a>, ParseError> {
        const BAD: ParseError = ParseError::InvalidNameAddr(HeaderName::Other);
        let s = trim_lws(raw);
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(BAD);
        }
        // Find a top-level '<' (outside quotes); what precedes it is the display name.
        let mut i = 0;
        let mut lt = None;
        while i < b.len() {
            match b[i] {
                b'"' => i = skip_quoted(b, i).ok_or(BAD)?,
                b'<' => {
                    lt = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        match lt {
            Some(lt) => {
                let dn = trim_lws(&s[..lt]);
                let display_name = if dn.is_empty() {
                    None
                } else {
                    if !valid_display_name(dn) {
                        return Err(BAD);
                    }
                    Some(dn)
                };
                let gt = memchr::memchr(b'>', &b[lt..]).ok_or(BAD)? + lt;
                let inner = &s[lt + 1..gt];
                // No LWS inside the brackets (RFC 4475 badaspec): `Uri::parse` refuses
                // every byte up to SP, so LWS there is already an error.
                if inner.is_empty() {
                    return Err(BAD);
                }
                let uri = Uri::parse(inner).map_err(|_| BAD)?;
                let params = Params::new(&s[gt + 1..]);
                let known = NameAddrParams::scan(&params)?;
                Ok(NameAddr {
                    display_name,
                    uri,
                    bracketed: true,
                    params,
                    known,
                })
            }
            None => {
                // addr-spec: a URI with ',', '?' or ';' must be bracketed, so the URI ends
                // at the first ';' and may not hold '?' (RFC 3261 §20.10, RFC 4475 regbadct).
                if b[0] == b'"' {
                    return Err(BAD);
                }
                let end = memchr::memchr(b';', b).unwrap_or(s.len());
                let uri_text = trim_lws(&s[..end]);
                // LWS inside the URI is refused by `Uri::parse` (every byte up to SP is).
                if memchr::memchr(b'?', uri_text.as_bytes()).is_some() {
                    return Err(BAD);
                }
                let uri = Uri::parse(uri_text).map_err(|_| BAD)?;
                let params = Params::new(&s[end..]);
                let known = NameAddrParams::scan(&params)?;
                Ok(NameAddr {
                    display_name: None,
                    uri,
                    bracketed: false,
                    params,
                    known,
                })
            }
        }
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.known.tag.flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.find(name)
    }
}

/// A display name is a quoted string or tokens separated by LWS (RFC 3261 §25.1).
fn valid_display_name(dn: &str) -> bool {
    let b = dn.as_bytes();
    if b[0] == b'"' {
        return skip_quoted(b, 0) == Some(b.len());
    }
    b.iter().all(|&c| is_token(c) || is_lws(c))
}

/// One Contact value.
// `Addr` is large (the name-addr with its URI and noted parameters) and `Star` is empty;
// boxing `Addr` would put a heap allocation per Contact on the parse path, which is kept
// allocation-free. A `Contact` lives on the stack for the length of one read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Contact<'a> {
    /// `Contact: *`
    Star,
    Addr(ContactAddr<'a>),
}

#[derive(Debug, Clone)]
pub struct ContactAddr<'a> {
    pub addr: NameAddr<'a>,
}

impl<'a> ContactAddr<'a> {
    /// The `expires` parameter, saturating (never wraps). `Err` if not a number.
    pub fn expires(&self) -> Result<Option<u64>, ParseError> {
        match self.addr.known.expires {
            None => Ok(None),
            Some(v) => v
                .and_then(parse_u64_saturating)
                .map(Some)
                .ok_or(ParseError::InvalidContact),
        }
    }

    /// The q-value in thousandths (0..=1000).
    pub fn q(&self) -> Result<Option<u16>, ParseError> {
        match self.addr.known.q {
            None => Ok(None),
            Some(v) => v
                .and_then(parse_qvalue)
                .map(Some)
                .ok_or(ParseError::InvalidContact),
        }
    }

    /// `+sip.instance`, without its quotes.
    pub fn instance(&self) -> Option<&'a str> {
        self.addr.known.instance.flatten().map(super::scan::unquote)
    }

    pub fn reg_id(&self) -> Result<Option<u32>, ParseError> {
        match self.addr.known.reg_id {
            None => Ok(None),
            Some(v) => v
                .and_then(parse_u32_strict)
                .map(Some)
                .ok_or(ParseError::InvalidContact),
        }
    }

    pub fn methods(&self) -> Option<&'a str> {
        self.addr.known.methods.flatten().map(super::scan::unquote)
    }

    /// The header parameters as written, minus `expires` (which the registrar rewrites).
    /// Returned as the raw list and the spans to skip; callers rebuild it when storing.
    pub fn params_without_expires(&self) -> impl Iterator<Item = super::scan::Param<'a>> + 'a {
        self.addr
            .params
            .clone()
            .filter_map(Result::ok)
            .filter(|p| !p.name.eq_ignore_ascii_case("expires"))
    }
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (n, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][n];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl Message {
    /// Every Via value, top first, across header lines.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        self.values(HeaderName::Via).flat_map(|v| {
            split_commas(v).map(|r| match r {
                Ok(s) if !s.is_empty() => Via::parse(s),
                _ => Err(ParseError::InvalidVia),
            })
        })
    }

    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        self.vias()
            .next()
            .unwrap_or(Err(ParseError::MissingHeader(HeaderName::Via)))
    }

    fn name_addr(&self, kind: HeaderName) -> Result<NameAddr<'_>, ParseError> {
        let v = self.value(kind).ok_or(ParseError::MissingHeader(kind))?;
        NameAddr::parse(v).map_err(|_| ParseError::InvalidNameAddr(kind))
    }

    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::From)
    }

    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(HeaderName::To)
    }

    /// The From tag; `None` when From is absent, does not parse, or has no tag.
    pub fn from_tag(&self) -> Option<&str> {
        self.from().ok().and_then(|f| f.tag())
    }

    /// The To tag; `None` when To is absent, does not parse, or has no tag.
    pub fn to_tag(&self) -> Option<&str> {
        self.to().ok().and_then(|t| t.tag())
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self
            .value(HeaderName::CallId)
            .ok_or(ParseError::MissingHeader(HeaderName::CallId))?;
        // LWS is not graphic; a fold without early exit compiles to vector compares.
        if v.is_empty() || v.bytes().fold(false, |bad, b| bad | !b.is_ascii_graphic()) {
            return Err(ParseError::InvalidCallId);
        }
        Ok(v)
    }

    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        if let Some((seq, method)) = self.parsed_cseq() {
            return Ok(CSeq {
                seq,
                method: self.text(method),
            });
        }
        CSeq::parse(
            self.value(HeaderName::CSeq)
                .ok_or(ParseError::MissingHeader(HeaderName::CSeq))?,
        )
    }

    /// Max-Forwards, saturating at u32::MAX; `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.value(HeaderName::MaxForwards) {
            None => Ok(None),
            Some(v) => parse_u64_saturating(v)
                .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX)))
                .ok_or(ParseError::InvalidMaxForwards),
        }
    }

    /// The Expires header (delta-seconds), saturating; `None` when absent.
    pub fn expires(&self) -> Result<Option<u64>, ParseError> {
        match self.value(HeaderName::Expires) {
            None => Ok(None),
            Some(v) => parse_u64_saturating(v)
                .map(Some)
                .ok_or(ParseError::InvalidExpires),
        }
    }

    pub fn min_expires(&self) -> Option<u64> {
        self.value(HeaderName::MinExpires)
            .and_then(parse_u64_saturating)
    }

    /// Every Contact value across header lines.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ParseError>> + '_ {
        self.values(HeaderName::Contact).flat_map(|v| {
            split_commas(v).map(|r| match r {
                Ok("*") => Ok(Contact::Star),
                Ok(s) if !s.is_empty() => NameAddr::parse(s)
                    .map(|addr| Contact::Addr(ContactAddr { addr }))
                    .map_err(|_| ParseError::InvalidContact),
                _ => Err(ParseError::InvalidContact),
            })
        })
    }

    /// Route, Record-Route or Path values, in order.
    pub fn route_set(
        &self,
        kind: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.values(kind).flat_map(move |v| {
            split_commas(v).map(move |r| match r {
                Ok(s) if !s.is_empty() => {
                    NameAddr::parse(s).map_err(|_| ParseError::InvalidNameAddr(kind))
                }
                _ => Err(ParseError::InvalidNameAddr(kind)),
            })
        })
    }

    /// Option tags of Supported, Require, Proxy-Require or Unsupported.
    pub fn option_tags(&self, kind: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.values(kind)
            .flat_map(|v| v.split(',').map(trim_lws).filter(|t| !t.is_empty()))
    }

    pub fn supports(&self, tag: &str) -> bool {
        self.option_tags(HeaderName::Supported)
            .any(|t| t.eq_ignore_ascii_case(tag))
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.value(HeaderName::UserAgent)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.value(HeaderName::ContentType)
    }

    /// Flow-Timer (RFC 5626), when present and numeric.
    pub fn flow_timer(&self) -> Option<u64> {
        self.value(HeaderName::FlowTimer)
            .and_then(parse_u64_saturating)
    }

    /// The checks a server applies before handing a request to its core: every Via,
    /// From/To name-addrs, Call-ID, Max-Forwards, and every Contact parse. This is where
    /// RFC 4475's malformed-but-framable messages are caught (badinv01, quotbal, baddn,
    /// badaspec, regbadct ...).
    pub fn check_core_headers(&self) -> Result<(), ParseError> {
        for via in self.vias() {
            via?;
        }
        self.from()?;
        self.to()?;
        self.call_id()?;
        self.max_forwards()?;
        self.expires()?;
        for c in self.contacts() {
            if let Contact::Addr(a) = c? {
                a.expires()?;
                a.q()?;
                a.reg_id()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_and_to_tags() {
        let parse = |from: &str, to: &str| {
            let text = format!(
                "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: {from}\r\n\
                 To: {to}\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(bytes::Bytes::from(text), &crate::sip::Limits::default())
                .expect("parses")
        };
        let m = parse("<sip:a@b>;tag=f1", "\"B\" <sip:b@b>;tag=t1");
        assert_eq!((m.from_tag(), m.to_tag()), (Some("f1"), Some("t1")));
        let m = parse("<sip:a@b>;tag=f1", "<sip:b@b>");
        assert_eq!((m.from_tag(), m.to_tag()), (Some("f1"), None));
        // A From that does not parse has no tag to offer.
        let m = parse("<sip:a@b;tag=f1", "<sip:b@b>;tag=t1");
        assert_eq!((m.from_tag(), m.to_tag()), (None, Some("t1")));
    }

    #[test]
    fn via_fields() {
        let v = Via::parse(
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport;received=[2001:db8::9:255]",
        )
        .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.sent_by, "192.0.2.1:5060");
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        let v = Via::parse("SIP / 2.0 / TCP [2001:db8::1] ; branch=x;rport=7;ttl=3;maddr=1.2.3.4")
            .unwrap();
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.rport(), Some(Some(7)));
        assert_eq!(v.ttl(), Some(3));
        assert_eq!(v.maddr(), Some("1.2.3.4"));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;,").is_err());
        // Fuzz regression: angle brackets or a stray quote in an unquoted value.
        assert!(Via::parse("SIP/2.0/UDP h;branch=z9hG4bK-1<2;rport=UDP>").is_err());
        assert!(Via::parse("SIP/2.0/UDP h;branch=z9hG4bK\"1").is_err());
        assert!(Via::parse("SIP/2.0/UDP h;branch=z9hG4bK1;x=\"<a,b>\"").is_ok());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/3.0/UDP h").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Alice \\\"A\\\"\" <sip:alice@example.com;lr>;tag=1").unwrap();
        assert_eq!(n.display_name, Some("\"Alice \\\"A\\\"\""));
        assert!(n.uri.lr());
        assert_eq!(n.tag(), Some("1"));
        let n = NameAddr::parse("sip:+1972@gw1.example.net;unknownparam").unwrap();
        assert!(!n.bracketed);
        assert!(n.uri.param("unknownparam").is_none());
        assert_eq!(n.param("unknownparam"), Some(None));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name, Some("caller"));
        assert!(NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse("\"W\" < sip:t@example.org >").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse("<sip:user@example.com?Route=%3Csip:x%3E>").is_ok());
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("0.7"), Some(700));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.001"), Some(1));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.0001"), None);
        assert_eq!(parse_qvalue("x"), None);
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(
            CSeq::parse("0009 INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: "INVITE"
            }
        );
        assert_eq!(CSeq::parse("4294967295 REGISTER").unwrap().seq, u32::MAX);
        assert!(CSeq::parse("4294967296 REGISTER").is_err());
        assert!(CSeq::parse("-1 REGISTER").is_err());
        assert!(CSeq::parse("1").is_err());
    }
}
