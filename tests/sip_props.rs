//! Property tests of the message layer at its seams: generated messages are
//! written as bytes, parsed, and every field read back must equal what was generated;
//! forwarding with no edits must give the same bytes; and a TCP-like stream of such
//! messages with keep-alives between them must frame to the same messages however it is cut.
//!
//! The generator covers: any method (known and extension tokens), requests and responses,
//! sip/sips URIs with escaped users, domain/IPv4/IPv6 hosts, ports and parameters, display
//! names (tokens and quoted strings with escapes), 1–3 Via values on one or several lines,
//! 0–3 Contacts with expires/q/+sip.instance/reg-id, optional Max-Forwards, Expires,
//! User-Agent, Supported, unknown `X-` headers, long/compact/any-case header names, several
//! spellings of the `:` separator, any header order, and a binary body with Content-Length.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use sipward::sip::{
    forward, Contact, ForwardEdits, Frame, HeaderName, Limits, Message, StreamFramer,
};

// ---- the model ----

#[derive(Debug, Clone)]
enum GenHost {
    Name(String),
    V4([u8; 4]),
    V6(u16, u16),
}

impl GenHost {
    fn render(&self) -> String {
        match self {
            GenHost::Name(n) => n.clone(),
            GenHost::V4([a, b, c, d]) => format!("{a}.{b}.{c}.{d}"),
            GenHost::V6(a, b) => format!("[2001:db8::{a:x}:{b:x}]"),
        }
    }
}

#[derive(Debug, Clone)]
struct GenUri {
    sips: bool,
    user: Option<String>,
    host: GenHost,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
}

impl GenUri {
    fn render(&self) -> String {
        let mut s = String::from(if self.sips { "sips:" } else { "sip:" });
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host.render());
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        push_params(&mut s, &self.params);
        s
    }
}

fn push_params(s: &mut String, params: &[(String, Option<String>)]) {
    for (name, value) in params {
        s.push(';');
        s.push_str(name);
        if let Some(v) = value {
            s.push('=');
            s.push_str(v);
        }
    }
}

#[derive(Debug, Clone)]
struct GenNameAddr {
    display: Option<String>,
    uri: GenUri,
    /// Without a display name and URI parameters, the `<>` may be left out.
    brackets: bool,
}

impl GenNameAddr {
    fn render(&self, header_params: &[(String, Option<String>)]) -> String {
        let bracketed = self.brackets || self.display.is_some() || !self.uri.params.is_empty();
        let mut s = String::new();
        if let Some(d) = &self.display {
            s.push_str(d);
            s.push(' ');
        }
        if bracketed {
            s.push('<');
        }
        s.push_str(&self.uri.render());
        if bracketed {
            s.push('>');
        }
        push_params(&mut s, header_params);
        s
    }
}

#[derive(Debug, Clone)]
struct GenVia {
    transport: String,
    host: GenHost,
    port: Option<u16>,
    branch: String,
    rport: bool,
}

impl GenVia {
    fn render(&self) -> String {
        let mut s = format!("SIP/2.0/{} {}", self.transport, self.host.render());
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push_str(";branch=");
        s.push_str(&self.branch);
        if self.rport {
            s.push_str(";rport");
        }
        s
    }
}

#[derive(Debug, Clone)]
struct GenContact {
    addr: GenNameAddr,
    expires: Option<u32>,
    /// Thousandths, written as `0.xyz` or `1`.
    q: Option<u16>,
    instance: Option<String>,
    reg_id: Option<u32>,
}

impl GenContact {
    fn render(&self) -> String {
        let mut params = Vec::new();
        if let Some(e) = self.expires {
            params.push(("expires".to_owned(), Some(e.to_string())));
        }
        if let Some(q) = self.q {
            let v = if q == 1000 {
                "1".to_owned()
            } else {
                format!("0.{q:03}")
            };
            params.push(("q".to_owned(), Some(v)));
        }
        if let Some(i) = &self.instance {
            params.push(("+sip.instance".to_owned(), Some(format!("\"<{i}>\""))));
        }
        if let Some(r) = self.reg_id {
            params.push(("reg-id".to_owned(), Some(r.to_string())));
        }
        let mut addr = self.addr.clone();
        // Header parameters after an unbracketed URI would be read as URI parameters
        // only if it had any; keep the URI bracketed whenever it has header parameters.
        addr.brackets |= !params.is_empty();
        addr.render(&params)
    }
}

#[derive(Debug, Clone)]
enum GenStart {
    Request {
        method: String,
        uri: GenUri,
    },
    Response {
        code: u16,
        reason: String,
        method: String,
    },
}

#[derive(Debug, Clone)]
struct GenMessage {
    start: GenStart,
    vias: Vec<GenVia>,
    /// Put all Via values on one line, comma-separated.
    vias_one_line: bool,
    from: GenNameAddr,
    from_tag: String,
    to: GenNameAddr,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    max_forwards: Option<u32>,
    expires: Option<u32>,
    contacts: Vec<GenContact>,
    user_agent: Option<String>,
    supported: Vec<String>,
    unknown: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// Always true for stream messages; without a body it may be left out on datagrams.
    content_length: bool,
    /// Per header line: name spelling (0 canonical, 1 lower, 2 upper, 3 compact if any)
    /// and separator choice. Indexed by line number modulo the length.
    styles: Vec<(u8, u8)>,
    /// A permutation seed: the header lines are rotated and interleaved by these keys.
    order: Vec<u32>,
}

/// One header line being written: its canonical name, compact form, value, and the class
/// whose relative order must be kept (Via values, Contacts, same-named unknown headers).
struct Line {
    name: String,
    compact: Option<&'static str>,
    value: String,
    class: Option<String>,
}

impl GenMessage {
    fn method(&self) -> &str {
        match &self.start {
            GenStart::Request { method, .. } | GenStart::Response { method, .. } => method,
        }
    }

    fn lines(&self) -> Vec<Line> {
        let line = |name: &str, compact, value: String, class: Option<&str>| Line {
            name: name.to_owned(),
            compact,
            value,
            class: class.map(str::to_owned),
        };
        let mut out = Vec::new();
        if self.vias_one_line {
            let v: Vec<_> = self.vias.iter().map(GenVia::render).collect();
            out.push(line("Via", Some("v"), v.join(", "), Some("via")));
        } else {
            for v in &self.vias {
                out.push(line("Via", Some("v"), v.render(), Some("via")));
            }
        }
        let tag = |t: &str| vec![("tag".to_owned(), Some(t.to_owned()))];
        out.push(line(
            "From",
            Some("f"),
            self.from.render(&tag(&self.from_tag)),
            None,
        ));
        let to_params = self.to_tag.as_deref().map(tag).unwrap_or_default();
        out.push(line("To", Some("t"), self.to.render(&to_params), None));
        out.push(line("Call-ID", Some("i"), self.call_id.clone(), None));
        out.push(line(
            "CSeq",
            None,
            format!("{} {}", self.cseq, self.method()),
            None,
        ));
        if let Some(m) = self.max_forwards {
            out.push(line("Max-Forwards", None, m.to_string(), None));
        }
        if let Some(e) = self.expires {
            out.push(line("Expires", None, e.to_string(), None));
        }
        for c in &self.contacts {
            out.push(line("Contact", Some("m"), c.render(), Some("contact")));
        }
        if let Some(ua) = &self.user_agent {
            out.push(line("User-Agent", None, ua.clone(), None));
        }
        if !self.supported.is_empty() {
            out.push(line(
                "Supported",
                Some("k"),
                self.supported.join(", "),
                None,
            ));
        }
        for (name, value) in &self.unknown {
            let class = format!("x:{}", name.to_ascii_lowercase());
            out.push(line(name, None, value.clone(), Some(&class)));
        }
        if self.content_length || self.body.is_some() {
            let n = self.body.as_ref().map_or(0, Vec::len);
            out.push(line("Content-Length", Some("l"), n.to_string(), None));
        }
        out
    }

    fn to_bytes(&self) -> Vec<u8> {
        let lines = self.lines();
        // Shuffle by the generated keys: `order[p]` is the line written at position p ...
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| (self.order[i % self.order.len()] ^ i as u32, i));
        // ... then put each ordered class (Vias, Contacts, same-named unknowns) back in its
        // own order, on the positions the shuffle gave that class.
        let mut classes: Vec<&str> = lines.iter().filter_map(|l| l.class.as_deref()).collect();
        classes.sort_unstable();
        classes.dedup();
        for class in classes {
            let positions: Vec<usize> = (0..order.len())
                .filter(|&p| lines[order[p]].class.as_deref() == Some(class))
                .collect();
            let mut members: Vec<usize> = positions.iter().map(|&p| order[p]).collect();
            members.sort_unstable();
            for (p, m) in positions.into_iter().zip(members) {
                order[p] = m;
            }
        }

        let mut s = match &self.start {
            GenStart::Request { method, uri } => format!("{method} {} SIP/2.0\r\n", uri.render()),
            GenStart::Response { code, reason, .. } => format!("SIP/2.0 {code} {reason}\r\n"),
        };
        for (i, l) in order.iter().map(|&o| &lines[o]).enumerate() {
            let (style, sep) = self.styles[i % self.styles.len()];
            let name = match (style, l.compact) {
                (1, _) => l.name.to_ascii_lowercase(),
                (2, _) => l.name.to_ascii_uppercase(),
                (3, Some(c)) => c.to_owned(),
                _ => l.name.clone(),
            };
            let sep = [": ", ":", " : ", ":\t"][usize::from(sep % 4)];
            s.push_str(&name);
            s.push_str(sep);
            s.push_str(&l.value);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        if let Some(b) = &self.body {
            out.extend_from_slice(b);
        }
        out
    }
}

// ---- strategies ----

const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "OPTIONS",
    "BYE",
    "CANCEL",
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "INFO",
    "UPDATE",
    "PRACK",
    "PUBLISH",
];

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(METHODS).prop_map(str::to_owned),
        1 => "[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,10}",
    ]
}

fn host() -> impl Strategy<Value = GenHost> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{1,6}){0,3}".prop_map(GenHost::Name),
        any::<[u8; 4]>().prop_map(GenHost::V4),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| GenHost::V6(a, b)),
    ]
}

fn param() -> impl Strategy<Value = (String, Option<String>)> {
    ("[a-z][a-z0-9-]{0,8}", option::of("[A-Za-z0-9.-]{1,10}"))
}

fn uri() -> impl Strategy<Value = GenUri> {
    (
        any::<bool>(),
        option::of("([A-Za-z0-9_.!~*'()+-]|%[0-9A-F]{2}){1,10}"),
        host(),
        option::of(any::<u16>()),
        vec(param(), 0..3),
    )
        .prop_map(|(sips, user, host, port, params)| GenUri {
            sips,
            user,
            host,
            port,
            params,
        })
}

fn display_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2}",
        "\"([ !#-\\[\\]-~]|\\\\[!-~]){0,12}\"",
    ]
}

fn name_addr() -> impl Strategy<Value = GenNameAddr> {
    (option::of(display_name()), uri(), any::<bool>()).prop_map(|(display, uri, brackets)| {
        GenNameAddr {
            display,
            uri,
            brackets,
        }
    })
}

fn via() -> impl Strategy<Value = GenVia> {
    (
        select(&["UDP", "TCP", "TLS", "SCTP", "WS"][..]),
        host(),
        option::of(any::<u16>()),
        "z9hG4bK[A-Za-z0-9.-]{1,16}",
        any::<bool>(),
    )
        .prop_map(|(transport, host, port, branch, rport)| GenVia {
            transport: transport.to_owned(),
            host,
            port,
            branch,
            rport,
        })
}

fn contact() -> impl Strategy<Value = GenContact> {
    (
        name_addr(),
        option::of(any::<u32>()),
        option::of(0u16..=1000),
        option::of("urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        option::of(any::<u32>()),
    )
        .prop_map(|(addr, expires, q, instance, reg_id)| GenContact {
            addr,
            expires,
            q,
            instance,
            reg_id,
        })
}

fn start_line() -> impl Strategy<Value = GenStart> {
    prop_oneof![
        3 => (method(), uri()).prop_map(|(method, uri)| GenStart::Request { method, uri }),
        1 => (100u16..=699, "[A-Za-z]([A-Za-z ]{0,15}[A-Za-z])?", method())
            .prop_map(|(code, reason, method)| GenStart::Response { code, reason, method }),
    ]
}

/// A header value with no CR/LF and no white space at either end.
fn safe_value() -> impl Strategy<Value = String> {
    "([!-~]([ -~]{0,30}[!-~])?)?"
}

fn message(stream: bool) -> impl Strategy<Value = GenMessage> {
    let head = (
        start_line(),
        vec(via(), 1..4),
        any::<bool>(),
        name_addr(),
        "[A-Za-z0-9]{1,12}",
        name_addr(),
        option::of("[A-Za-z0-9]{1,12}"),
        "[A-Za-z0-9]{1,20}(@[a-z0-9.]{1,12})?",
        any::<u32>(),
    );
    let rest = (
        option::of(0u32..=255),
        option::of(any::<u32>()),
        vec(contact(), 0..4),
        option::of(safe_value()),
        vec(
            select(&["path", "outbound", "gruu", "100rel", "timer"][..]),
            0..3,
        ),
        vec(("X-[A-Za-z0-9-]{1,12}", safe_value()), 0..4),
        option::of(vec(any::<u8>(), 0..200)),
        any::<bool>(),
        vec((0u8..4, 0u8..4), 1..8),
        vec(any::<u32>(), 1..8),
    );
    (head, rest).prop_map(
        move |(
            (start, vias, vias_one_line, from, from_tag, to, to_tag, call_id, cseq),
            (
                max_forwards,
                expires,
                contacts,
                user_agent,
                supported,
                unknown,
                body,
                content_length,
                styles,
                order,
            ),
        )| GenMessage {
            start,
            vias,
            vias_one_line,
            from,
            from_tag,
            to,
            to_tag,
            call_id,
            cseq,
            max_forwards,
            expires,
            contacts,
            user_agent,
            supported: supported.into_iter().map(str::to_owned).collect(),
            unknown,
            body,
            content_length: content_length || stream,
            styles,
            order,
        },
    )
}

// ---- checks ----

fn check_uri(parsed: &sipward::sip::Uri<'_>, g: &GenUri) {
    assert_eq!(parsed.raw, g.render());
    assert_eq!(parsed.user, g.user.as_deref());
    assert_eq!(parsed.host_raw, g.host.render());
    assert_eq!(parsed.port, g.port);
    for (name, value) in &g.params {
        // The first parameter of that name (names may repeat).
        let first = g.params.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        assert_eq!(
            parsed.param(name),
            first.map(|v| v.as_deref()),
            "{name}={value:?}"
        );
    }
}

fn check_name_addr(parsed: &sipward::sip::NameAddr<'_>, g: &GenNameAddr) {
    assert_eq!(parsed.display_name, g.display.as_deref());
    check_uri(&parsed.uri, &g.uri);
}

/// Every field read back through the views equals the generated one.
fn check_fields(msg: &Message, g: &GenMessage) {
    match &g.start {
        GenStart::Request { method, uri } => {
            assert!(msg.is_request());
            assert_eq!(msg.method_str(), method);
            assert_eq!(msg.request_uri(), Some(uri.render().as_str()));
        }
        GenStart::Response {
            code,
            reason,
            method,
        } => {
            assert_eq!(msg.status(), Some(*code));
            assert_eq!(msg.reason(), Some(reason.as_str()));
            assert_eq!(msg.method_str(), method);
        }
    }
    let vias: Vec<_> = msg.vias().map(|v| v.expect("via parses")).collect();
    assert_eq!(vias.len(), g.vias.len());
    for (v, gv) in vias.iter().zip(&g.vias) {
        assert_eq!(v.transport, gv.transport);
        assert_eq!(v.host, gv.host.render());
        assert_eq!(v.port, gv.port);
        assert_eq!(v.branch(), Some(gv.branch.as_str()));
        assert_eq!(v.rport(), gv.rport.then_some(None));
    }
    let from = msg.from().expect("From");
    check_name_addr(&from, &g.from);
    assert_eq!(from.tag(), Some(g.from_tag.as_str()));
    let to = msg.to().expect("To");
    check_name_addr(&to, &g.to);
    assert_eq!(to.tag(), g.to_tag.as_deref());
    assert_eq!(msg.call_id(), Ok(g.call_id.as_str()));
    let cseq = msg.cseq().expect("CSeq");
    assert_eq!((cseq.seq, cseq.method), (g.cseq, g.method()));
    assert_eq!(msg.max_forwards(), Ok(g.max_forwards));
    assert_eq!(msg.expires(), Ok(g.expires.map(u64::from)));
    let contacts: Vec<_> = msg.contacts().map(|c| c.expect("contact")).collect();
    assert_eq!(contacts.len(), g.contacts.len());
    for (c, gc) in contacts.iter().zip(&g.contacts) {
        let Contact::Addr(c) = c else {
            panic!("unexpected Contact: *")
        };
        check_name_addr(&c.addr, &gc.addr);
        assert_eq!(c.expires(), Ok(gc.expires.map(u64::from)));
        assert_eq!(c.q(), Ok(gc.q));
        assert_eq!(
            c.instance().map(|i| i.trim_matches(['<', '>'])),
            gc.instance.as_deref()
        );
        assert_eq!(c.reg_id(), Ok(gc.reg_id));
    }
    assert_eq!(msg.user_agent(), g.user_agent.as_deref());
    let tags: Vec<_> = msg.option_tags(HeaderName::Supported).collect();
    assert_eq!(tags, g.supported);
    for (name, _) in &g.unknown {
        let want: Vec<&str> = g
            .unknown
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        let got: Vec<&str> = msg.values_named(name).collect();
        assert_eq!(got, want, "values of {name}");
    }
    assert_eq!(msg.body(), g.body.as_deref().unwrap_or(b""));
    msg.check_core_headers().expect("core headers");
}

fn parse(bytes: &[u8]) -> Message {
    Message::parse(Bytes::copy_from_slice(bytes), &Limits::default()).unwrap_or_else(|e| {
        panic!(
            "generated message does not parse: {e:?}\n{}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// A stream of messages with optional keep-alives before each and at the end, and the
/// frames it must yield.
fn stream_of(msgs: &[GenMessage], keepalives: &[bool]) -> (Vec<u8>, Vec<Frame>) {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if keepalives[i % keepalives.len()] {
            stream.extend_from_slice(b"\r\n\r\n");
            frames.push(Frame::Ping);
        }
        let bytes = m.to_bytes();
        stream.extend_from_slice(&bytes);
        frames.push(Frame::Message(Bytes::from(bytes)));
    }
    if keepalives[msgs.len() % keepalives.len()] {
        stream.extend_from_slice(b"\r\n\r\n");
        frames.push(Frame::Ping);
    }
    (stream, frames)
}

/// Feeds `chunks` and drains every frame after each.
fn frame_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut framer = StreamFramer::new(Limits::default());
    let mut out = Vec::new();
    for c in chunks {
        framer.push(c);
        while let Some(f) = framer.next_frame().expect("framing error") {
            out.push(f);
        }
    }
    assert_eq!(framer.buffered(), 0, "bytes left over");
    out
}

fn check_frames(frames: &[Frame], want: &[Frame], msgs: &[GenMessage]) {
    assert_eq!(frames, want);
    let parsed = frames.iter().filter_map(|f| match f {
        Frame::Message(b) => Some(parse(b)),
        Frame::Ping => None,
    });
    for (m, g) in parsed.zip(msgs) {
        check_fields(&m, g);
    }
}

/// Integration tests have no `lib.rs` beside them for proptest's regression files, so
/// persistence is off; a failure prints its minimal case.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn generated_messages_parse_to_their_fields(g in message(false)) {
        let bytes = g.to_bytes();
        let msg = parse(&bytes);
        check_fields(&msg, &g);
        let same = forward(&msg, &ForwardEdits::default());
        prop_assert_eq!(&same[..], &bytes[..], "forward without edits changed bytes");
    }

    #[test]
    fn streams_frame_the_same_in_random_chunks(
        msgs in vec(message(true), 1..=5),
        keepalives in vec(any::<bool>(), 1..7),
        cuts in vec(0usize..400, 0..40),
    ) {
        let (stream, want) = stream_of(&msgs, &keepalives);
        check_frames(&frame_chunks([&stream[..]]), &want, &msgs);
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts {
            let end = (at + c).min(stream.len());
            chunks.push(&stream[at..end]);
            at = end;
        }
        chunks.push(&stream[at..]);
        check_frames(&frame_chunks(chunks), &want, &msgs);
    }
}

proptest! {
    // Every split point is O(n²) in the stream length: fewer, smaller cases.
    #![proptest_config(config(24))]

    #[test]
    fn small_streams_frame_the_same_at_every_byte_boundary(
        msgs in vec(message(true), 1..=2),
        keepalives in vec(any::<bool>(), 1..4),
    ) {
        let (stream, want) = stream_of(&msgs, &keepalives);
        check_frames(&frame_chunks(stream.chunks(1)), &want, &msgs);
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            prop_assert_eq!(&frame_chunks([a, b]), &want, "split at {}", i);
        }
    }
}
