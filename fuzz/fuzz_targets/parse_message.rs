//! `Message::parse` on arbitrary bytes. On success every view is read, a response is built
//! and the message is forwarded; what we write must parse again, and forwarding with no
//! edits must reproduce the message byte for byte.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipward::sip::{
    forward, Contact, Credentials, ForwardEdits, HeaderName, Limits, Message, ResponseBuilder,
    ViaReceived,
};

/// Re-parsing what we wrote allows for what we added to it (a Via, a Record-Route, a
/// Max-Forwards or a To tag): a message just under the limit may grow past it.
fn grown(limits: &Limits) -> Limits {
    Limits {
        max_header_bytes: limits.max_header_bytes + 512,
        max_headers: limits.max_headers + 4,
        ..*limits
    }
}

/// The start of a message, for panic messages (inputs can be 64 KiB of `%.*d`).
fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(1500)]).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    read_views(&msg);

    // No edits: the message itself, without leading CRLFs and trailing datagram bytes.
    let skip = data
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let same = forward(&msg, &ForwardEdits::default());
    assert_eq!(
        &same[..],
        &data[skip..msg.wire_len()],
        "forward without edits changed bytes"
    );

    let core_ok = msg.check_core_headers().is_ok();
    if msg.is_request() {
        let response = ResponseBuilder::new(&msg, 200, "OK")
            .to_tag("fuzz1")
            .received(ViaReceived {
                addr: "192.0.2.99:5099".parse().expect("addr"),
            })
            .server(Some("sipward-fuzz"))
            .header("Expires", "60")
            .build();
        let parsed = Message::parse(response.clone(), &grown(&limits));
        if core_ok {
            let r = parsed.unwrap_or_else(|e| {
                panic!("our response does not parse: {e:?}\n{}", show(&response))
            });
            assert_eq!(r.status(), Some(200));
            assert_eq!(r.call_id().ok(), msg.call_id().ok());
            assert_eq!(r.cseq().ok(), msg.cseq().ok());
            r.top_via().expect("top Via of our response");
            let to = r.to().expect("To of our response");
            match msg.to().expect("To").tag() {
                Some(tag) => assert_eq!(to.tag(), Some(tag)),
                None => assert_eq!(to.tag(), Some("fuzz1")),
            }
        }
        let rr = ["<sip:192.0.2.1;lr>"];
        let realms = ["example.test".to_string()];
        let edits = ForwardEdits {
            request_uri: Some("sip:bob@192.0.2.7:5062"),
            push_via: Some("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz"),
            pop_via: false,
            record_route: &rr,
            decrement_max_forwards: true,
            pop_routes: 1,
            consume_credentials_for: &realms,
            ..ForwardEdits::default()
        };
        let out = forward(&msg, &edits);
        let fwd = Message::parse(out.clone(), &grown(&limits))
            .unwrap_or_else(|e| panic!("forwarded request does not parse: {e:?}\n{}", show(&out)));
        assert_eq!(fwd.request_uri(), Some("sip:bob@192.0.2.7:5062"));
        assert_eq!(fwd.body(), msg.body());
        assert_eq!(
            fwd.top_via().expect("our Via").branch(),
            Some("z9hG4bKfuzz")
        );
        if let Ok(Some(n)) = msg.max_forwards() {
            assert_eq!(fwd.max_forwards(), Ok(Some(n.saturating_sub(1))));
        }
        read_views(&fwd);
    } else {
        // A proxy pops its own Via from a response; only forward one that keeps a Via.
        let vias: Vec<_> = msg.vias().collect();
        if vias.len() >= 2 && vias.iter().all(Result::is_ok) {
            let edits = ForwardEdits {
                pop_via: true,
                ..ForwardEdits::default()
            };
            let out = forward(&msg, &edits);
            let fwd = Message::parse(out.clone(), &grown(&limits)).unwrap_or_else(|e| {
                panic!("forwarded response does not parse: {e:?}\n{}", show(&out))
            });
            assert_eq!(fwd.status(), msg.status());
            assert_eq!(fwd.body(), msg.body());
            assert_eq!(fwd.vias().count(), vias.len() - 1);
        }
    }
});

/// Reads every view; results are ignored, panics are the bug.
fn read_views(msg: &Message) {
    let _ = (
        msg.method(),
        msg.method_str(),
        msg.request_uri(),
        msg.status(),
        msg.reason(),
    );
    for via in msg.vias().flatten() {
        let _ = (
            via.branch(),
            via.received(),
            via.rport(),
            via.maddr(),
            via.ttl(),
        );
    }
    for na in [msg.from(), msg.to()].into_iter().flatten() {
        let _ = (na.tag(), na.uri.aor(), na.uri.comparison_key(), na.uri.lr());
    }
    let _ = (msg.call_id(), msg.cseq(), msg.max_forwards(), msg.expires());
    let _ = (
        msg.min_expires(),
        msg.flow_timer(),
        msg.user_agent(),
        msg.content_type(),
    );
    for c in msg.contacts().flatten() {
        if let Contact::Addr(a) = c {
            let _ = (a.expires(), a.q(), a.instance(), a.reg_id(), a.methods());
            let _ = a.params_without_expires().count();
            let _ = a.addr.uri.aor();
        }
    }
    for kind in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        let _ = msg.route_set(kind).count();
    }
    let _ = msg.option_tags(HeaderName::Require).count();
    let _ = msg.supports("outbound");
    for kind in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        for c in msg.credentials(kind).flatten() {
            if let Credentials::Digest(d) = c {
                let _ = (d.username, d.nc, d.userhash);
            }
        }
    }
    let _ = msg.values_named("X-Unknown").count();
    let _ = msg.check_core_headers();
}
