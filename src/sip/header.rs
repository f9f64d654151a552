//! Header names: the canonical set the stack reads, compact forms, and lookup.
//!
//! Owns `HeaderName` only. It must not look at header values.

/// `s` (at most 24 bytes) as three little-endian words, zero-padded.
const fn words(s: &[u8]) -> [u64; 3] {
    let mut out = [0u64; 3];
    let mut i = 0;
    while i < s.len() {
        out[i / 8] |= (s[i] as u64) << ((i % 8) * 8);
        i += 1;
    }
    out
}

/// The long names, lower-case, as `words`.
const TO: [u64; 3] = words(b"to");
const VIA: [u64; 3] = words(b"via");
const FROM: [u64; 3] = words(b"from");
const CSEQ: [u64; 3] = words(b"cseq");
const PATH: [u64; 3] = words(b"path");
const DATE: [u64; 3] = words(b"date");
const ROUTE: [u64; 3] = words(b"route");
const EVENT: [u64; 3] = words(b"event");
const CALL_ID: [u64; 3] = words(b"call-id");
const CONTACT: [u64; 3] = words(b"contact");
const EXPIRES: [u64; 3] = words(b"expires");
const REQUIRE: [u64; 3] = words(b"require");
const SUBJECT: [u64; 3] = words(b"subject");
const REFER_TO: [u64; 3] = words(b"refer-to");
const IDENTITY: [u64; 3] = words(b"identity");
const SUPPORTED: [u64; 3] = words(b"supported");
const USER_AGENT: [u64; 3] = words(b"user-agent");
const FLOW_TIMER: [u64; 3] = words(b"flow-timer");
const MIN_EXPIRES: [u64; 3] = words(b"min-expires");
const UNSUPPORTED: [u64; 3] = words(b"unsupported");
const REFERRED_BY: [u64; 3] = words(b"referred-by");
const MAX_FORWARDS: [u64; 3] = words(b"max-forwards");
const RECORD_ROUTE: [u64; 3] = words(b"record-route");
const CONTENT_TYPE: [u64; 3] = words(b"content-type");
const ALLOW_EVENTS: [u64; 3] = words(b"allow-events");
const AUTHORIZATION: [u64; 3] = words(b"authorization");
const PROXY_REQUIRE: [u64; 3] = words(b"proxy-require");
const CONTENT_LENGTH: [u64; 3] = words(b"content-length");
const ACCEPT_CONTACT: [u64; 3] = words(b"accept-contact");
const REJECT_CONTACT: [u64; 3] = words(b"reject-contact");
const SESSION_EXPIRES: [u64; 3] = words(b"session-expires");
const WWW_AUTHENTICATE: [u64; 3] = words(b"www-authenticate");
const CONTENT_ENCODING: [u64; 3] = words(b"content-encoding");
const PROXY_AUTHENTICATE: [u64; 3] = words(b"proxy-authenticate");
const PROXY_AUTHORIZATION: [u64; 3] = words(b"proxy-authorization");
const REQUEST_DISPOSITION: [u64; 3] = words(b"request-disposition");

/// Eight bytes of `buf` from `at` as a little-endian word, ASCII upper-case letters
/// lower-cased and every other byte left alone (SWAR: no byte's carry reaches the next).
#[inline]
fn fold_word(buf: &[u8; 24], at: usize) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    let x = u64::from_le_bytes(bytes);
    let low7 = x & !HIGH;
    let at_least_a = low7 + ONES * (0x80 - b'A' as u64);
    let above_z = low7 + ONES * (0x7f - b'Z' as u64);
    let upper = at_least_a & !above_z & !x & HIGH;
    x | (upper >> 2)
}

/// A header the stack knows by name; everything else is `Other` (kept and forwarded as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Contact,
    Expires,
    MinExpires,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Route,
    RecordRoute,
    Path,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    ContentLength,
    ContentType,
    ContentEncoding,
    UserAgent,
    FlowTimer,
    Subject,
    Event,
    ReferTo,
    ReferredBy,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    AllowEvents,
    SessionExpires,
    Identity,
    Date,
    Other,
}

impl HeaderName {
    /// Canonical spelling, used when we write a header ourselves.
    pub fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            MaxForwards => "Max-Forwards",
            Contact => "Contact",
            Expires => "Expires",
            MinExpires => "Min-Expires",
            Authorization => "Authorization",
            ProxyAuthorization => "Proxy-Authorization",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthenticate => "Proxy-Authenticate",
            Route => "Route",
            RecordRoute => "Record-Route",
            Path => "Path",
            Supported => "Supported",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Unsupported => "Unsupported",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            ContentEncoding => "Content-Encoding",
            UserAgent => "User-Agent",
            FlowTimer => "Flow-Timer",
            Subject => "Subject",
            Event => "Event",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            AcceptContact => "Accept-Contact",
            RejectContact => "Reject-Contact",
            RequestDisposition => "Request-Disposition",
            AllowEvents => "Allow-Events",
            SessionExpires => "Session-Expires",
            Identity => "Identity",
            Date => "Date",
            Other => "",
        }
    }

    /// Map a header name as written (any case, long or compact form) to its canonical name.
    pub fn from_wire(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b's' => Subject,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'r' => ReferTo,
                b'u' => AllowEvents,
                b'j' => RejectContact,
                b'd' => RequestDisposition,
                b'x' => SessionExpires,
                b'y' => Identity,
                b'b' => ReferredBy,
                b'a' => AcceptContact,
                _ => Other,
            };
        }
        // Long names: fold the case eight bytes at a time and compare whole words with
        // the lower-case names (the longest is 19 bytes: three words).
        let mut buf = [0u8; 24];
        let Some(dst) = buf.get_mut(..name.len()) else {
            return Other;
        };
        dst.copy_from_slice(name);
        let w = [fold_word(&buf, 0), fold_word(&buf, 8), fold_word(&buf, 16)];
        match (name.len(), w) {
            (2, TO) => To,
            (3, VIA) => Via,
            (4, FROM) => From,
            (4, CSEQ) => CSeq,
            (4, PATH) => Path,
            (4, DATE) => Date,
            (5, ROUTE) => Route,
            (5, EVENT) => Event,
            (7, CALL_ID) => CallId,
            (7, CONTACT) => Contact,
            (7, EXPIRES) => Expires,
            (7, REQUIRE) => Require,
            (7, SUBJECT) => Subject,
            (8, REFER_TO) => ReferTo,
            (8, IDENTITY) => Identity,
            (9, SUPPORTED) => Supported,
            (10, USER_AGENT) => UserAgent,
            (10, FLOW_TIMER) => FlowTimer,
            (11, MIN_EXPIRES) => MinExpires,
            (11, UNSUPPORTED) => Unsupported,
            (11, REFERRED_BY) => ReferredBy,
            (12, MAX_FORWARDS) => MaxForwards,
            (12, RECORD_ROUTE) => RecordRoute,
            (12, CONTENT_TYPE) => ContentType,
            (12, ALLOW_EVENTS) => AllowEvents,
            (13, AUTHORIZATION) => Authorization,
            (13, PROXY_REQUIRE) => ProxyRequire,
            (14, CONTENT_LENGTH) => ContentLength,
            (14, ACCEPT_CONTACT) => AcceptContact,
            (14, REJECT_CONTACT) => RejectContact,
            (15, SESSION_EXPIRES) => SessionExpires,
            (16, WWW_AUTHENTICATE) => WwwAuthenticate,
            (16, CONTENT_ENCODING) => ContentEncoding,
            (18, PROXY_AUTHENTICATE) => ProxyAuthenticate,
            (19, PROXY_AUTHORIZATION) => ProxyAuthorization,
            (19, REQUEST_DISPOSITION) => RequestDisposition,
            _ => Other,
        }
    }

    /// Headers that may appear once only (RFC 3261 §7.3.1: not comma-separated lists).
    pub(crate) fn single_valued(self) -> bool {
        matches!(
            self,
            HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::Expires
        )
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn compact_and_long_forms_map_to_the_same_name() {
        for (compact, long) in [
            ("v", "VIA"),
            ("f", "from"),
            ("t", "To"),
            ("i", "call-id"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("c", "content-type"),
            ("k", "Supported"),
        ] {
            assert_eq!(
                HeaderName::from_wire(compact.as_bytes()),
                HeaderName::from_wire(long.as_bytes())
            );
            assert_ne!(HeaderName::from_wire(long.as_bytes()), HeaderName::Other);
        }
        assert_eq!(HeaderName::from_wire(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_wire(b""), HeaderName::Other);
        assert_eq!(HeaderName::from_wire(b"Allow"), HeaderName::Other);
        assert_eq!(HeaderName::from_wire(b"q"), HeaderName::Other);
    }

    #[test]
    fn every_long_name_maps_to_itself_in_any_case() {
        use HeaderName::*;
        for h in [
            Via,
            From,
            To,
            CallId,
            CSeq,
            MaxForwards,
            Contact,
            Expires,
            MinExpires,
            Authorization,
            ProxyAuthorization,
            WwwAuthenticate,
            ProxyAuthenticate,
            Route,
            RecordRoute,
            Path,
            Supported,
            Require,
            ProxyRequire,
            Unsupported,
            ContentLength,
            ContentType,
            ContentEncoding,
            UserAgent,
            FlowTimer,
            Subject,
            Event,
            ReferTo,
            ReferredBy,
            AcceptContact,
            RejectContact,
            RequestDisposition,
            AllowEvents,
            SessionExpires,
            Identity,
            Date,
        ] {
            let name = h.as_str();
            assert_eq!(HeaderName::from_wire(name.as_bytes()), h, "{name}");
            let upper = name.to_ascii_uppercase();
            assert_eq!(HeaderName::from_wire(upper.as_bytes()), h, "{upper}");
            let lower = name.to_ascii_lowercase();
            assert_eq!(HeaderName::from_wire(lower.as_bytes()), h, "{lower}");
        }
    }

    /// The word-at-a-time lookup agrees with a plain case-insensitive comparison for every
    /// known name with any one byte replaced by any value, and for each name's prefixes.
    #[test]
    fn folded_lookup_matches_plain_comparison() {
        use HeaderName::*;
        let all = [
            Via,
            From,
            To,
            CallId,
            CSeq,
            MaxForwards,
            Contact,
            Expires,
            MinExpires,
            Authorization,
            ProxyAuthorization,
            WwwAuthenticate,
            ProxyAuthenticate,
            Route,
            RecordRoute,
            Path,
            Supported,
            Require,
            ProxyRequire,
            Unsupported,
            ContentLength,
            ContentType,
            ContentEncoding,
            UserAgent,
            FlowTimer,
            Subject,
            Event,
            ReferTo,
            ReferredBy,
            AcceptContact,
            RejectContact,
            RequestDisposition,
            AllowEvents,
            SessionExpires,
            Identity,
            Date,
        ];
        let reference = |name: &[u8]| {
            all.iter()
                .copied()
                .find(|h| name.len() > 1 && h.as_str().as_bytes().eq_ignore_ascii_case(name))
                .unwrap_or(Other)
        };
        for h in all {
            let name = h.as_str().as_bytes();
            for i in 0..name.len() {
                for b in 0..=255u8 {
                    let mut m = name.to_vec();
                    m[i] = b;
                    assert_eq!(HeaderName::from_wire(&m), reference(&m), "{m:?}");
                }
                if i > 1 {
                    assert_eq!(HeaderName::from_wire(&name[..i]), reference(&name[..i]));
                }
            }
            let mut long = name.to_vec();
            long.push(b'x');
            assert_eq!(HeaderName::from_wire(&long), Other);
        }
    }
}
