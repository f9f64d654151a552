//! RFC 4475 and RFC 5118 torture messages through the message layer: every file has an
//! expected outcome from its INDEX.md (tests/data), asserted here.

use bytes::Bytes;
use sipward::sip::{Contact, Credentials, HeaderName, Limits, Message, Method, ParseError, Scheme};

fn testdata(rel: &str) -> Bytes {
    let base = std::env::var("SIPWARD_TESTDATA")
        .unwrap_or_else(|_| format!("{}/tests/data", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{base}/{rel}");
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}")))
}

fn parse(rel: &str) -> Result<Message, ParseError> {
    Message::parse(testdata(rel), &Limits::default())
}

/// Parse and run the checks a server runs before its core sees the request.
fn full(rel: &str) -> Result<Message, ParseError> {
    let m = parse(rel)?;
    m.check_core_headers()?;
    Ok(m)
}

fn ok(rel: &str) -> Message {
    full(rel).unwrap_or_else(|e| panic!("{rel} should parse: {e:?}"))
}

fn err(rel: &str) -> ParseError {
    match full(rel) {
        Ok(_) => panic!("{rel} should fail"),
        Err(e) => e,
    }
}

// ---- RFC 4475 §3.1.1: valid messages ----

#[test]
fn wsinv_short_tortuous_invite() {
    let m = ok("rfc4475/wsinv.dat");
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, "INVITE"));
    assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
    assert_eq!(m.from().unwrap().tag(), Some("98asjd8"));
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host, "192.0.2.2");
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(
        m.values_named("UnknownHeaderWithUnusualValue").next(),
        Some(";;,,;;,;")
    );
    let c: Vec<_> = m.contacts().map(Result::unwrap).collect();
    let Contact::Addr(c) = &c[0] else {
        panic!("star")
    };
    assert_eq!(c.q().unwrap(), Some(330));
    assert_eq!(m.body().len(), 150);
}

#[test]
fn intmeth_extension_method_with_odd_characters() {
    let m = ok("rfc4475/intmeth.dat");
    assert_eq!(m.method(), Some(Method::Extension));
    assert_eq!(
        m.method_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(m.cseq().unwrap().method, m.method_str());
}

#[test]
fn esc01_escapes_are_not_decoded_twice() {
    let m = ok("rfc4475/esc01.dat");
    let aor = sipward::sip::Uri::parse(m.request_uri().unwrap())
        .unwrap()
        .aor()
        .unwrap();
    assert!(!aor.contains("%%"), "{aor}");
}

#[test]
fn escnull_two_distinct_contacts_aor_not_cut() {
    let m = ok("rfc4475/escnull.dat");
    assert_eq!(
        m.to().unwrap().uri.aor().unwrap(),
        "sip:null-%00-null@example.com"
    );
    let keys: Vec<String> = m
        .contacts()
        .map(|c| match c.unwrap() {
            Contact::Addr(a) => a.addr.uri.comparison_key(),
            Contact::Star => panic!("star"),
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn esc02_is_not_register_and_has_two_contacts() {
    let m = ok("rfc4475/esc02.dat");
    assert_eq!(m.method(), Some(Method::Extension));
    assert_eq!(m.method_str(), "RE%47IST%45R");
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(m.values_named("C%6Fntact").count(), 1);
}

#[test]
fn lwsdisp_longreq_semiuri_transports() {
    let m = ok("rfc4475/lwsdisp.dat");
    assert_eq!(m.from().unwrap().display_name, Some("caller"));
    let m = ok("rfc4475/longreq.dat");
    assert!(m.vias().count() > 30);
    assert!(m.call_id().unwrap().len() > 100);
    let m = ok("rfc4475/semiuri.dat");
    let uri = sipward::sip::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(uri.user, Some("user;par=u%40example.net"));
    assert_eq!(uri.host_raw, "example.com");
    let m = ok("rfc4475/transports.dat");
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn mpart01_body_framed_by_content_length() {
    let m = ok("rfc4475/mpart01.dat");
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0u8));
}

#[test]
fn unreason_and_noreason_responses() {
    let m = parse("rfc4475/unreason.dat").unwrap();
    assert_eq!(m.status(), Some(200));
    assert!(!m.reason().unwrap().is_ascii());
    let m = parse("rfc4475/noreason.dat").unwrap();
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(""));
}

#[test]
fn dblreq_handles_register_and_ignores_trailing_invite() {
    let m = ok("rfc4475/dblreq.dat");
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.body().len(), 0);
    assert!(m.trailing_bytes() > 100);
}

// ---- RFC 4475 §3.1.2: invalid messages ----

#[test]
fn invalid_messages_give_the_specific_error() {
    let cases: &[(&str, ParseError)] = &[
        ("rfc4475/badinv01.dat", ParseError::InvalidVia),
        ("rfc4475/clerr.dat", ParseError::BodyTruncated),
        ("rfc4475/ncl.dat", ParseError::InvalidContentLength),
        ("rfc4475/scalar02.dat", ParseError::InvalidCSeq),
        ("rfc4475/scalarlg.dat", ParseError::InvalidCSeq),
        (
            "rfc4475/quotbal.dat",
            ParseError::InvalidNameAddr(HeaderName::To),
        ),
        ("rfc4475/ltgtruri.dat", ParseError::InvalidRequestUri),
        ("rfc4475/lwsruri.dat", ParseError::MalformedRequestLine),
        ("rfc4475/lwsstart.dat", ParseError::MalformedRequestLine),
        ("rfc4475/trws.dat", ParseError::MalformedRequestLine),
        ("rfc4475/escruri.dat", ParseError::RequestUriHeaders),
        ("rfc4475/regbadct.dat", ParseError::InvalidContact),
        (
            "rfc4475/badaspec.dat",
            ParseError::InvalidNameAddr(HeaderName::To),
        ),
        ("rfc4475/baddn.dat", ParseError::IncompleteHeaders),
        (
            "rfc4475/variants/baddn-terminated.dat",
            ParseError::InvalidNameAddr(HeaderName::From),
        ),
        ("rfc4475/badvers.dat", ParseError::UnsupportedVersion),
        ("rfc4475/mismatch01.dat", ParseError::CSeqMethodMismatch),
        ("rfc4475/mismatch02.dat", ParseError::CSeqMethodMismatch),
        ("rfc4475/bigcode.dat", ParseError::InvalidStatusCode),
        // §3.3 application-layer cases that the message layer already catches
        (
            "rfc4475/insuf.dat",
            ParseError::MissingHeader(HeaderName::From),
        ),
        (
            "rfc4475/multi01.dat",
            ParseError::DuplicateHeader(HeaderName::CSeq),
        ),
        ("rfc4475/mcl01.dat", ParseError::DuplicateContentLength),
        ("rfc4475/test.dat", ParseError::MalformedRequestLine),
    ];
    for (file, expected) in cases {
        assert_eq!(err(file), *expected, "{file}");
    }
}

#[test]
fn baddate_is_accepted_because_date_is_not_interpreted() {
    ok("rfc4475/baddate.dat");
}

// ---- RFC 4475 §3.2–3.4: valid syntax, decided above the message layer ----

#[test]
fn application_layer_cases_parse_with_the_facts_the_core_needs() {
    let m = ok("rfc4475/badbranch.dat");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"));
    for f in ["rfc4475/unkscm.dat", "rfc4475/novelsc.dat"] {
        let m = ok(f);
        assert_eq!(
            sipward::sip::Uri::parse(m.request_uri().unwrap())
                .unwrap()
                .scheme,
            Scheme::Other,
            "{f}"
        );
    }
    let m = ok("rfc4475/unksm2.dat");
    assert_eq!(m.to().unwrap().uri.scheme, Scheme::Other);
    let m = ok("rfc4475/bext01.dat");
    let req: Vec<_> = m.option_tags(HeaderName::Require).collect();
    assert_eq!(req, ["nothingSupportsThis", "nothingSupportsThisEither"]);
    assert_eq!(m.option_tags(HeaderName::ProxyRequire).count(), 2);
    ok("rfc4475/invut.dat");
    ok("rfc4475/sdp01.dat");
    let m = ok("rfc4475/regaut01.dat");
    let creds: Vec<_> = m
        .credentials(HeaderName::Authorization)
        .map(Result::unwrap)
        .collect();
    assert_eq!(creds, [Credentials::Other("NoOneKnowsThisScheme")]);
    let m = parse("rfc4475/bcast.dat").unwrap();
    assert_eq!(m.vias().nth(1).unwrap().unwrap().host, "255.255.255.255");
    let m = ok("rfc4475/zeromf.dat");
    assert_eq!(m.max_forwards().unwrap(), Some(0));
    let m = ok("rfc4475/inv2543.dat");
    assert_eq!(m.top_via().unwrap().branch(), None);
}

#[test]
fn cparam_and_regescrt_keep_parameters_on_the_right_side() {
    let contact = |f: &str| match ok(f).contacts().next().unwrap().unwrap() {
        Contact::Addr(a) => (
            a.addr.uri.params_raw.to_string(),
            a.addr.params.as_str().to_string(),
            a.addr.uri.headers.map(str::to_string),
        ),
        Contact::Star => panic!("star"),
    };
    let (uri_params, header_params, _) = contact("rfc4475/cparam01.dat");
    assert_eq!(
        (uri_params.as_str(), header_params.as_str()),
        ("", ";unknownparam")
    );
    let (uri_params, header_params, _) = contact("rfc4475/cparam02.dat");
    assert_eq!(
        (uri_params.as_str(), header_params.as_str()),
        (";unknownparam", "")
    );
    let (_, _, headers) = contact("rfc4475/regescrt.dat");
    assert_eq!(headers.as_deref(), Some("Route=%3Csip:sip.example.com%3E"));
}

#[test]
fn every_rfc4475_file_has_an_assertion() {
    // Guard: a new file in the corpus must get a row above.
    let dir = format!("{}/tests/data/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let count = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "dat")
        })
        .count();
    assert_eq!(count, 50);
}

// ---- RFC 5118 ----

#[test]
fn rfc5118_ipv6_messages() {
    for f in [
        "ipv6-good",
        "port-ambiguous",
        "port-unambiguous",
        "via-received-param-with-delim",
        "via-received-param-no-delim",
        "ipv6-in-sdp",
        "mult-ip-in-header",
        "mult-ip-in-sdp",
        "ipv4-mapped-ipv6",
        "ipv6-correct-abnf-2-colons",
    ] {
        ok(&format!("rfc5118/wire/{f}.dat"));
    }
    let m = ok("rfc5118/wire/port-unambiguous.dat");
    let uri = sipward::sip::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!((uri.host_raw, uri.port), ("[2001:db8::10]", Some(5070)));
    let m = ok("rfc5118/wire/port-ambiguous.dat");
    let uri = sipward::sip::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!((uri.host_raw, uri.port), ("[2001:db8::10:5070]", None));
    let m = ok("rfc5118/wire/via-received-param-no-delim.dat");
    assert_eq!(m.top_via().unwrap().received(), Some("2001:db8::9:255"));
    // The registrar case: a Request-URI with an unbracketed IPv6 address is a 400.
    assert_eq!(
        err("rfc5118/wire/ipv6-bad.dat"),
        ParseError::InvalidRequestUri
    );
    // Pinned policy for §4.10: the 3-colon form is not a valid IPv6 address; we reject it.
    assert_eq!(
        err("rfc5118/wire/ipv6-bug-abnf-3-colons.dat"),
        ParseError::InvalidRequestUri
    );
}
