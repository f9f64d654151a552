//! Header names: the canonical set the stack reads, compact forms, and lookup.
//!
//! Owns `HeaderName` only. It must not look at header values.

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
        const LONG: &[(&str, HeaderName)] = &[
            ("via", Via),
            ("from", From),
            ("to", To),
            ("call-id", CallId),
            ("cseq", CSeq),
            ("max-forwards", MaxForwards),
            ("contact", Contact),
            ("expires", Expires),
            ("min-expires", MinExpires),
            ("authorization", Authorization),
            ("proxy-authorization", ProxyAuthorization),
            ("www-authenticate", WwwAuthenticate),
            ("proxy-authenticate", ProxyAuthenticate),
            ("route", Route),
            ("record-route", RecordRoute),
            ("path", Path),
            ("supported", Supported),
            ("require", Require),
            ("proxy-require", ProxyRequire),
            ("unsupported", Unsupported),
            ("content-length", ContentLength),
            ("content-type", ContentType),
            ("content-encoding", ContentEncoding),
            ("user-agent", UserAgent),
            ("flow-timer", FlowTimer),
            ("subject", Subject),
            ("event", Event),
            ("refer-to", ReferTo),
            ("referred-by", ReferredBy),
            ("accept-contact", AcceptContact),
            ("reject-contact", RejectContact),
            ("request-disposition", RequestDisposition),
            ("allow-events", AllowEvents),
            ("session-expires", SessionExpires),
            ("identity", Identity),
            ("date", Date),
        ];
        for (long, canon) in LONG {
            if long.len() == name.len() && long.as_bytes().eq_ignore_ascii_case(name) {
                return *canon;
            }
        }
        Other
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
        assert_eq!(HeaderName::from_wire(b"q"), HeaderName::Other);
    }
}
