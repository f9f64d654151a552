//! REGISTER parsing: one pure function from a parsed `Message` (and its Request-URI) to what
//! the registrar needs, or a typed bad-request reason. No I/O, no policy: which domain is ours,
//! who may bind what and the §10.3 rules are decided by the caller and `registrar`.
//!
//! The request is split in two because the answers come at two moments: the addressing part
//! (Request-URI, To) is refused with 400 **before** authentication, the binding part (Contact,
//! Expires, Call-ID, CSeq) only **after** it, so a malformed binding is never answered to
//! someone who has not authenticated (the 400 would come before the 401).

use crate::registrar::{Aor, ContactInput, Credential, FlowId, RegisterInput, Transport};
use crate::sip::{Contact, HeaderName, Message, Scheme, Uri};

/// Why a REGISTER is a bad request (400 with this reason phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadRegister {
    UserInRequestUri,
    BadTo,
    ToIsNotSipAor,
    BadContact,
    BadExpires,
    BadCallId,
    BadCSeq,
}

impl BadRegister {
    pub(crate) fn reason_phrase(self) -> &'static str {
        match self {
            BadRegister::UserInRequestUri => "User In Request-URI",
            BadRegister::BadTo => "Bad To",
            BadRegister::ToIsNotSipAor => "To Is Not A SIP AoR",
            BadRegister::BadContact => "Bad Contact",
            BadRegister::BadExpires => "Bad Expires",
            BadRegister::BadCallId => "Bad Call-ID",
            BadRegister::BadCSeq => "Bad CSeq",
        }
    }
}

/// A REGISTER whose addressing parsed.
#[derive(Debug)]
pub(crate) struct RegisterRequest<'m> {
    /// The To AoR, canonical (`sip:user@host`; no user part when the To has none).
    pub to_aor: Aor,
    /// The To URI's host as written.
    pub to_host: String,
    /// The binding part; its error is answered only after authentication.
    pub bindings: Result<Bindings<'m>, BadRegister>,
}

/// The binding part of a REGISTER: what `registrar::Location::register` is given.
#[derive(Debug)]
pub(crate) struct Bindings<'m> {
    /// `Contact: *`.
    pub star: bool,
    contacts: Vec<ParsedContact<'m>>,
    pub expires_header: Option<u64>,
    /// Path values (RFC 3327), as received; whether they are stored is the caller's policy
    /// (`Origin::store_path`).
    pub path: Vec<&'m str>,
    /// `Supported: path`: the 200 echoes the stored Path only then (RFC 3327 §5.3).
    pub path_supported: bool,
    pub call_id: &'m str,
    pub cseq: u32,
    pub user_agent: Option<&'m str>,
}

#[derive(Debug)]
struct ParsedContact<'m> {
    uri: &'m str,
    uri_key: String,
    params: String,
    expires: Option<u64>,
    q: Option<u16>,
    instance: Option<&'m str>,
    reg_id: Option<u32>,
}

impl Bindings<'_> {
    /// Whether a Contact asks for an RFC 5626 outbound flow (`+sip.instance` and `reg-id`).
    pub(crate) fn asks_outbound(&self) -> bool {
        self.contacts
            .iter()
            .any(|c| c.instance.is_some() && c.reg_id.is_some())
    }
}

/// Where a REGISTER came from and what its credential allows, for [`Bindings::input`].
pub(crate) struct Origin<'a> {
    pub source: std::net::SocketAddr,
    pub transport: Transport,
    pub flow: Option<FlowId>,
    pub max_expires_cap: Option<u64>,
    pub credential: Option<Credential<'a>>,
    /// Store the Path values with the bindings (`registrar.path`).
    pub store_path: bool,
}

/// Parses a REGISTER: the first fault in the order the checks are answered (Request-URI user
/// part, To, then Contact, Expires, Call-ID, CSeq).
pub(crate) fn parse_register<'m>(
    msg: &'m Message,
    ruri: &Uri<'_>,
) -> Result<RegisterRequest<'m>, BadRegister> {
    if ruri.user.is_some() {
        return Err(BadRegister::UserInRequestUri);
    }
    let to = msg.to().map_err(|_| BadRegister::BadTo)?;
    let to_aor = to.uri.aor().ok_or(BadRegister::ToIsNotSipAor)?;
    Ok(RegisterRequest {
        to_aor,
        to_host: to.uri.host_raw.to_owned(),
        bindings: parse_bindings(msg),
    })
}

fn parse_bindings(msg: &Message) -> Result<Bindings<'_>, BadRegister> {
    let mut star = false;
    let mut parsed = Vec::new();
    for c in msg.contacts() {
        match c.map_err(|_| BadRegister::BadContact)? {
            Contact::Star => star = true,
            Contact::Addr(a) => {
                if !a.addr.uri.is_sip() && a.addr.uri.scheme != Scheme::Tel {
                    return Err(BadRegister::BadContact);
                }
                parsed.push(a);
            }
        }
    }
    let mut contacts = Vec::with_capacity(parsed.len());
    for a in &parsed {
        let (Ok(expires), Ok(q), Ok(reg_id)) = (a.expires(), a.q(), a.reg_id()) else {
            return Err(BadRegister::BadContact);
        };
        let mut params = String::new();
        for param in a.params_without_expires() {
            params.push(';');
            params.push_str(param.name);
            if let Some(v) = param.value {
                params.push('=');
                params.push_str(v);
            }
        }
        contacts.push(ParsedContact {
            uri: a.addr.uri.raw,
            uri_key: a.addr.uri.comparison_key(),
            params,
            expires,
            q,
            instance: a.instance(),
            reg_id,
        });
    }
    let expires_header = msg.expires().map_err(|_| BadRegister::BadExpires)?;
    let path_supported = msg.supports("path");
    let path = msg.values(HeaderName::Path).collect();
    let call_id = msg.call_id().map_err(|_| BadRegister::BadCallId)?;
    let cseq = msg.cseq().map_err(|_| BadRegister::BadCSeq)?;
    Ok(Bindings {
        star,
        contacts,
        expires_header,
        path,
        path_supported,
        call_id,
        cseq: cseq.seq,
        user_agent: msg.user_agent(),
    })
}

impl<'m> Bindings<'m> {
    /// The Contacts as the registrar takes them (borrowing from `self`).
    pub(crate) fn contacts(&self) -> Vec<ContactInput<'_>> {
        self.contacts
            .iter()
            .map(|c| ContactInput {
                uri: c.uri,
                uri_key: &c.uri_key,
                params: &c.params,
                expires: c.expires,
                q: c.q,
                instance: c.instance,
                reg_id: c.reg_id,
            })
            .collect()
    }

    /// The registrar's input for `aor`.
    pub(crate) fn input<'a>(
        &'a self,
        aor: &'a Aor,
        contacts: &'a [ContactInput<'a>],
        origin: Origin<'a>,
    ) -> RegisterInput<'a> {
        RegisterInput {
            aor,
            call_id: self.call_id,
            cseq: self.cseq,
            star: self.star,
            contacts,
            expires_header: self.expires_header,
            path: if origin.store_path { &self.path } else { &[] },
            path_supported: origin.store_path,
            source: origin.source,
            transport: origin.transport,
            flow: origin.flow,
            user_agent: self.user_agent,
            max_expires_cap: origin.max_expires_cap,
            credential: origin.credential,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sip::Limits;

    fn message(extra: &str, ruri: &str) -> Message {
        let text = format!(
            "REGISTER {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.test>;tag=a\r\n\
             To: <sip:alice@example.test>\r\n\
             Call-ID: c1\r\n\
             CSeq: 7 REGISTER\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), &Limits::default()).expect("test message parses")
    }

    /// Parses a REGISTER with `extra` headers to `ruri` and hands the result to `check`.
    fn with(extra: &str, ruri: &str, check: impl FnOnce(Result<RegisterRequest<'_>, BadRegister>)) {
        let msg = message(extra, ruri);
        let uri_text = msg.request_uri().unwrap_or("").to_owned();
        let ruri = Uri::parse(&uri_text).expect("request-uri");
        check(parse_register(&msg, &ruri));
    }

    #[test]
    fn a_register_parses_into_the_registrar_input() {
        let extra = "Contact: <sip:alice@192.0.2.1:5060;transport=udp>;expires=300;q=0.5;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n\
             Expires: 600\r\nSupported: path\r\nPath: <sip:edge.example.test;lr>\r\nUser-Agent: phone/1\r\n";
        with(extra, "sip:example.test", |r| {
            let r = r.expect("parses");
            assert_eq!(r.to_aor, "sip:alice@example.test");
            assert_eq!(r.to_host, "example.test");
            let b = r.bindings.expect("bindings parse");
            assert!(!b.star);
            assert_eq!((b.call_id, b.cseq, b.expires_header), ("c1", 7, Some(600)));
            assert_eq!(b.path, vec!["<sip:edge.example.test;lr>"]);
            assert!(b.path_supported);
            assert_eq!(b.user_agent, Some("phone/1"));
            let contacts = b.contacts();
            assert_eq!(contacts.len(), 1);
            let c = &contacts[0];
            assert_eq!(c.uri, "sip:alice@192.0.2.1:5060;transport=udp");
            assert_eq!((c.expires, c.q, c.reg_id), (Some(300), Some(500), Some(1)));
            assert_eq!(c.instance, Some("<urn:uuid:1>"));
            assert!(!c.params.contains("expires"), "{}", c.params);
            assert!(c.params.contains(";q=0.5"), "{}", c.params);
        });
    }

    #[test]
    fn path_is_read_whatever_supported_says_and_star_is_kept() {
        let extra = "Contact: *\r\nExpires: 0\r\nPath: <sip:edge.example.test;lr>\r\n";
        with(extra, "sip:example.test", |r| {
            let b = r.expect("parses").bindings.expect("bindings parse");
            assert!(b.star && b.contacts().is_empty());
            assert!(!b.path_supported);
            assert_eq!(b.path, vec!["<sip:edge.example.test;lr>"]);
        });
    }

    #[test]
    fn addressing_faults_come_first_binding_faults_are_deferred() {
        with("Contact: <mailto:x@y>\r\n", "sip:alice@example.test", |r| {
            assert_eq!(r.unwrap_err(), BadRegister::UserInRequestUri);
        });
        for (extra, fault) in [
            ("Contact: <mailto:x@y>\r\n", BadRegister::BadContact),
            ("Contact: <sip:a@b>;q=7\r\n", BadRegister::BadContact),
            ("Contact: <sip:a@b>;reg-id=x\r\n", BadRegister::BadContact),
            ("Expires: soon\r\n", BadRegister::BadExpires),
        ] {
            with(extra, "sip:example.test", |r| {
                let r = r.expect("addressing parses");
                assert_eq!(r.to_aor, "sip:alice@example.test");
                assert_eq!(r.bindings.unwrap_err(), fault, "{extra}");
            });
        }
    }

    #[test]
    fn reason_phrases_are_the_answered_ones() {
        assert_eq!(
            BadRegister::ToIsNotSipAor.reason_phrase(),
            "To Is Not A SIP AoR"
        );
        assert_eq!(
            BadRegister::UserInRequestUri.reason_phrase(),
            "User In Request-URI"
        );
        assert_eq!(BadRegister::BadContact.reason_phrase(), "Bad Contact");
    }
}
