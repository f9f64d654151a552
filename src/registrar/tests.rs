//! Registrar tests on a virtual clock: RFC 3261 §10.3 rules, docs/testing.md A13–A19, A23, P6, P7,
//! limits, indexes, concurrency and the per-binding footprint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::binding::{Binding, BindingId, BindingText, TextParts};
use super::*;

fn aor(user: &str) -> Aor {
    Aor::parse(&format!("sip:{user}@example.com")).expect("a SIP AoR")
}

fn contact(uri: &str) -> ContactInput<'_> {
    ContactInput {
        uri,
        uri_key: uri,
        params: "",
        expires: None,
        q: None,
        instance: None,
        reg_id: None,
    }
}

fn src(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([192, 0, 2, 1], 5060)))
}

fn req<'a>(
    aor: &'a Aor,
    call_id: &'a str,
    cseq: u32,
    contacts: &'a [ContactInput<'a>],
) -> RegisterInput<'a> {
    RegisterInput {
        aor,
        call_id,
        cseq,
        star: false,
        contacts,
        expires_header: None,
        path: &[],
        path_supported: false,
        source: src("192.0.2.1:5060"),
        transport: Transport::Udp,
        flow: None,
        user_agent: Some("TestPhone/1.0"),
        max_expires_cap: None,
        credential: None,
    }
}

fn star<'a>(aor: &'a Aor, call_id: &'a str, cseq: u32, expires: Option<u64>) -> RegisterInput<'a> {
    RegisterInput {
        star: true,
        expires_header: expires,
        ..req(aor, call_id, cseq, &[])
    }
}

fn location() -> Location {
    Location::new(RegistrarPolicy::default())
}

fn uris(bindings: &[BindingSnapshot]) -> Vec<&str> {
    bindings.iter().map(BindingSnapshot::uri).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn add_then_fetch_returns_contact_byte_for_byte() {
    let loc = location();
    let a = aor("alice");
    let t0 = Instant::now();
    let c = [ContactInput {
        uri_key: "sip:alice@198.51.100.7:5060",
        params: ";q=0.7;unknownparam",
        q: Some(700),
        ..contact("<sip:Alice@198.51.100.7:5060>")
    }];
    let out = loc.register(&req(&a, "c1", 1, &c), t0);
    let out = out.expect("register");
    assert_eq!((out.added, out.refreshed, out.removed), (1, 0, 0));
    assert!(!out.had_bindings);
    assert_eq!(uris(&out.bindings), ["<sip:Alice@198.51.100.7:5060>"]);
    assert_eq!(out.bindings[0].params(), ";q=0.7;unknownparam");
    assert_eq!(out.bindings[0].expires, 3600);
    assert_eq!(out.bindings[0].q, Some(700));
    assert_eq!(out.bindings[0].call_id(), "c1");
    assert_eq!(out.bindings[0].user_agent(), Some("TestPhone/1.0"));

    let fetched = loc.register(&req(&a, "other", 9, &[]), t0 + secs(10));
    let fetched = fetched.expect("fetch");
    assert!(fetched.had_bindings);
    assert_eq!(
        (fetched.added, fetched.refreshed, fetched.removed),
        (0, 0, 0)
    );
    assert_eq!(uris(&fetched.bindings), ["<sip:Alice@198.51.100.7:5060>"]);
    assert_eq!(fetched.bindings[0].expires, 3590);

    let found = loc.lookup(&a, t0 + secs(10));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source, src("192.0.2.1:5060"));
    assert_eq!(found[0].transport, Transport::Udp);
    assert_eq!((loc.aor_count(), loc.binding_count()), (1, 1));
}

#[test]
fn fetch_of_unknown_aor_is_empty_and_stores_nothing() {
    let loc = location();
    let a = aor("nobody");
    let out = loc.register(&req(&a, "c", 1, &[]), Instant::now());
    let out = out.expect("fetch");
    assert!(out.bindings.is_empty());
    assert!(!out.had_bindings);
    assert_eq!(loc.aor_count(), 0);
}

#[test]
fn reregister_refreshes_without_duplicating_p7() {
    let loc = location();
    let a = aor("bob");
    let t0 = Instant::now();
    let c = [contact("sip:bob@203.0.113.5")];
    loc.register(&req(&a, "c1", 1, &c), t0).expect("first");
    let out = loc.register(&req(&a, "c1", 2, &c), t0 + secs(1800));
    let out = out.expect("refresh");
    assert_eq!((out.added, out.refreshed), (0, 1));
    assert_eq!(out.bindings.len(), 1);
    assert_eq!(out.bindings[0].expires, 3600);
    assert!(out.rebound.is_empty());
    // "Overwrite": a new contact is added beside, the old one stays.
    let c2 = [contact("sip:bob@203.0.113.6")];
    let out = loc.register(&req(&a, "c1", 3, &c2), t0 + secs(1801));
    assert_eq!(out.expect("second").bindings.len(), 2);
    assert_eq!(loc.binding_count(), 2);
    assert_eq!(loc.index_sizes(), (2, 0));
}

#[test]
fn expires_zero_removes_by_param_or_header() {
    let loc = location();
    let a = aor("carol");
    let t0 = Instant::now();
    let c = [contact("sip:carol@a"), contact("sip:carol@b")];
    loc.register(&req(&a, "c1", 1, &c), t0).expect("add");
    let gone = [ContactInput {
        expires: Some(0),
        ..contact("sip:carol@a")
    }];
    let out = loc.register(&req(&a, "c1", 2, &gone), t0).expect("remove");
    assert_eq!(out.removed, 1);
    assert_eq!(uris(&out.bindings), ["sip:carol@b"]);

    let b = [contact("sip:carol@b")];
    let header_zero = RegisterInput {
        expires_header: Some(0),
        ..req(&a, "c1", 3, &b)
    };
    let out = loc.register(&header_zero, t0).expect("remove by header");
    assert_eq!(out.removed, 1);
    assert!(out.bindings.is_empty());
    assert_eq!((loc.aor_count(), loc.binding_count()), (0, 0));
    assert_eq!(loc.index_sizes(), (0, 0));
}

#[test]
fn removing_unknown_contact_is_a_no_op() {
    let loc = location();
    let a = aor("dave");
    let gone = [ContactInput {
        expires: Some(0),
        ..contact("sip:dave@x")
    }];
    let out = loc.register(&req(&a, "c", 1, &gone), Instant::now());
    let out = out.expect("no-op");
    assert_eq!(out.removed, 0);
    assert_eq!(loc.aor_count(), 0);
}

#[test]
fn star_must_be_alone_with_expires_zero_a15() {
    let loc = location();
    let a = aor("erin");
    let t0 = Instant::now();
    let c = [contact("sip:erin@x")];
    loc.register(&req(&a, "c1", 1, &c), t0).expect("add");

    for bad in [
        star(&a, "c2", 1, Some(3600)),
        star(&a, "c2", 1, None),
        RegisterInput {
            contacts: &c,
            ..star(&a, "c2", 1, Some(0))
        },
    ] {
        let err = loc.register(&bad, t0).map(|o| o.removed);
        assert_eq!(err, Err(RegisterError::InvalidStar));
    }
    assert_eq!(loc.lookup(&a, t0).len(), 1);

    let out = loc.register(&star(&a, "c2", 1, Some(0)), t0).expect("star");
    assert_eq!(out.removed, 1);
    assert!(out.had_bindings);
    assert!(out.bindings.is_empty());
    assert_eq!((loc.aor_count(), loc.binding_count()), (0, 0));

    // Unregistering an unknown AoR succeeds with nothing: the caller may answer 404 (A16).
    let out = loc
        .register(&star(&a, "c3", 1, Some(0)), t0)
        .expect("star again");
    assert!(!out.had_bindings);
}

#[test]
fn star_with_same_call_id_and_old_cseq_fails_whole_request() {
    let loc = location();
    let a = aor("frank");
    let t0 = Instant::now();
    let c1 = [contact("sip:frank@one")];
    let c2 = [contact("sip:frank@two")];
    loc.register(&req(&a, "phone-1", 5, &c1), t0).expect("one");
    loc.register(&req(&a, "phone-2", 1, &c2), t0).expect("two");
    let err = loc
        .register(&star(&a, "phone-1", 5, Some(0)), t0)
        .map(|o| o.removed);
    assert_eq!(err, Err(RegisterError::OutOfOrder));
    assert_eq!(loc.lookup(&a, t0).len(), 2, "nothing removed");
    let out = loc
        .register(&star(&a, "phone-1", 6, Some(0)), t0)
        .expect("star");
    assert_eq!(out.removed, 2);
}

#[test]
fn expiry_below_minimum_is_423_and_nothing_applied_a17() {
    let loc = location();
    let a = aor("grace");
    let t0 = Instant::now();
    let c = [
        contact("sip:grace@ok"),
        ContactInput {
            expires: Some(30),
            ..contact("sip:grace@brief")
        },
    ];
    let err = loc.register(&req(&a, "c", 1, &c), t0).map(|o| o.added);
    assert_eq!(
        err,
        Err(RegisterError::IntervalTooBrief { min_expires: 60 })
    );
    assert_eq!(err.map_err(|e| e.sip_status().0), Err(423));
    assert_eq!(loc.aor_count(), 0);
    // The header counts too, and 60 exactly is accepted.
    let one = [contact("sip:grace@ok")];
    let brief = RegisterInput {
        expires_header: Some(59),
        ..req(&a, "c", 2, &one)
    };
    assert!(loc.register(&brief, t0).is_err());
    let enough = RegisterInput {
        expires_header: Some(60),
        ..req(&a, "c", 3, &one)
    };
    let out = loc.register(&enough, t0).expect("60 s");
    assert_eq!(out.bindings[0].expires, 60);
}

#[test]
fn long_expiry_is_clamped_and_capped_a18() {
    let loc = location();
    let a = aor("heidi");
    let t0 = Instant::now();
    let c = [
        ContactInput {
            expires: Some(7200),
            ..contact("sip:heidi@long")
        },
        ContactInput {
            expires: Some(u64::MAX),
            ..contact("sip:heidi@max")
        },
    ];
    let out = loc.register(&req(&a, "c", 1, &c), t0).expect("clamped");
    assert!(out.bindings.iter().all(|b| b.expires == 3600));

    let capped = RegisterInput {
        max_expires_cap: Some(100),
        ..req(&a, "c", 2, &c)
    };
    let out = loc.register(&capped, t0).expect("capped");
    assert!(out.bindings.iter().all(|b| b.expires == 100));
    assert_eq!(loc.next_deadline(), Some(t0 + secs(100)));
}

#[test]
fn cap_of_zero_stores_nothing() {
    let loc = location();
    let a = aor("ivan");
    let c = [contact("sip:ivan@x")];
    let input = RegisterInput {
        max_expires_cap: Some(0),
        ..req(&a, "c", 1, &c)
    };
    let out = loc.register(&input, Instant::now()).expect("ok");
    assert!(out.bindings.is_empty());
    assert_eq!(loc.binding_count(), 0);
}

#[test]
fn huge_expiry_and_inconsistent_policy_never_wrap() {
    let policy = RegistrarPolicy {
        max_expires: u64::MAX,
        min_expires: 0,
        default_expires: u64::MAX,
        expiry_jitter_percent: 255,
        ..RegistrarPolicy::default()
    };
    assert!(policy.validate().is_err());
    let loc = Location::new(policy);
    let a = aor("judy");
    let t0 = Instant::now();
    let c = [
        ContactInput {
            expires: Some(u64::MAX),
            ..contact("sip:judy@x")
        },
        contact("sip:judy@y"),
    ];
    let out = loc.register(&req(&a, "c", 1, &c), t0).expect("huge");
    assert!(out.bindings.iter().all(|b| b.expires == u32::MAX));
    assert_eq!(loc.lookup(&a, t0 + secs(1 << 31)).len(), 2);
    let out = loc
        .register(&req(&a, "c", u32::MAX, &c), t0)
        .expect("jittered");
    assert_eq!(out.bindings.len(), 2, "jitter never removes a binding");
    assert!(out.bindings.iter().all(|b| b.expires >= 1));
}

#[test]
fn more_bindings_than_the_limit_store_nothing_a19() {
    let policy = RegistrarPolicy {
        max_bindings_per_aor: 3,
        ..RegistrarPolicy::default()
    };
    let loc = Location::new(policy);
    let a = aor("ken");
    let t0 = Instant::now();
    let names: Vec<String> = (0..5).map(|i| format!("sip:ken@host{i}")).collect();
    let all: Vec<ContactInput<'_>> = names.iter().map(|u| contact(u)).collect();

    let err = loc.register(&req(&a, "c", 1, &all), t0).map(|o| o.added);
    assert_eq!(err, Err(RegisterError::TooManyBindings { max: 3 }));
    assert_eq!(
        err.map_err(|e| e.sip_status()),
        Err((503, "Too Many Registered Contacts"))
    );
    assert_eq!((loc.aor_count(), loc.binding_count()), (0, 0));

    loc.register(&req(&a, "c", 2, &all[..3]), t0)
        .expect("three fit");
    let err = loc
        .register(&req(&a, "c", 3, &all[3..4]), t0)
        .map(|o| o.added);
    assert_eq!(err, Err(RegisterError::TooManyBindings { max: 3 }));
    assert_eq!(loc.lookup(&a, t0).len(), 3, "nothing beyond the limit");
    assert_eq!(loc.binding_count(), 3);

    // At the limit, refreshing works, and so does swapping one contact for another.
    loc.register(&req(&a, "c", 4, &all[..3]), t0)
        .expect("refresh at limit");
    let swap = [
        ContactInput {
            expires: Some(0),
            ..all[0]
        },
        all[3],
    ];
    let out = loc.register(&req(&a, "c", 5, &swap), t0).expect("swap");
    assert_eq!((out.added, out.removed, out.bindings.len()), (1, 1, 3));
}

#[test]
fn global_aor_limit_is_full() {
    let policy = RegistrarPolicy {
        max_aors: 2,
        ..RegistrarPolicy::default()
    };
    let loc = Location::new(policy);
    let t0 = Instant::now();
    let (a, b, c) = (aor("a"), aor("b"), aor("c"));
    let one = [contact("sip:x@y")];
    loc.register(&req(&a, "c", 1, &one), t0).expect("a");
    loc.register(&req(&b, "c", 1, &one), t0).expect("b");
    let err = loc.register(&req(&c, "c", 1, &one), t0).map(|o| o.added);
    assert_eq!(err, Err(RegisterError::Full));
    // Existing AoRs still refresh; a freed slot can be reused.
    loc.register(&req(&a, "c", 2, &one), t0).expect("refresh a");
    assert_eq!(loc.remove_aor(&b), 1);
    loc.register(&req(&c, "c", 1, &one), t0).expect("c");
    assert_eq!(loc.aor_count(), 2);
}

#[test]
fn same_call_id_lower_or_equal_cseq_fails_a13() {
    let loc = location();
    let a = aor("leo");
    let t0 = Instant::now();
    let c = [contact("sip:leo@x")];
    loc.register(&req(&a, "c1", 10, &c), t0).expect("first");
    for cseq in [9, 10] {
        let late = [ContactInput {
            expires: Some(0),
            ..c[0]
        }];
        let err = loc
            .register(&req(&a, "c1", cseq, &late), t0 + secs(5))
            .map(|o| o.removed);
        assert_eq!(err, Err(RegisterError::OutOfOrder));
        assert_eq!(err.map_err(|e| e.sip_status().0), Err(400));
    }
    let found = loc.lookup(&a, t0 + secs(5));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].cseq, 10);
    assert_eq!(found[0].expires, 3595, "not refreshed");
}

#[test]
fn out_of_order_contact_aborts_the_other_contacts_too() {
    let loc = location();
    let a = aor("mia");
    let t0 = Instant::now();
    let old = [contact("sip:mia@old")];
    loc.register(&req(&a, "c1", 10, &old), t0).expect("first");
    let both = [contact("sip:mia@new"), contact("sip:mia@old")];
    assert!(loc.register(&req(&a, "c1", 3, &both), t0).is_err());
    assert_eq!(uris(&loc.lookup(&a, t0)), ["sip:mia@old"]);
}

#[test]
fn new_call_id_with_same_cseq_updates_a14() {
    let loc = location();
    let a = aor("nina");
    let t0 = Instant::now();
    let c = [contact("sip:nina@x")];
    loc.register(&req(&a, "c1", 10, &c), t0).expect("first");
    let out = loc
        .register(&req(&a, "c2", 10, &c), t0 + secs(5))
        .expect("new call-id");
    assert_eq!(out.refreshed, 1);
    assert_eq!(out.bindings[0].call_id(), "c2");
    // A different Call-ID may even go lower.
    loc.register(&req(&a, "c3", 1, &c), t0)
        .expect("lower cseq, new call-id");
}

#[test]
fn outbound_instance_and_reg_id_replace_from_new_source_a23() {
    let loc = location();
    let a = aor("oscar");
    let t0 = Instant::now();
    let inst = "\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"";
    let params = format!(";+sip.instance={inst};reg-id=1");
    let first = [ContactInput {
        params: &params,
        instance: Some(inst),
        reg_id: Some(1),
        ..contact("sip:oscar@10.0.0.5:5060;transport=tcp")
    }];
    let over_tcp = RegisterInput {
        transport: Transport::Tcp,
        flow: Some(FlowId(1)),
        ..req(&a, "c1", 1, &first)
    };
    loc.register(&over_tcp, t0).expect("first");

    let moved = [ContactInput {
        params: &params,
        instance: Some(inst),
        reg_id: Some(1),
        ..contact("sip:oscar@172.16.0.9:5061;transport=tls")
    }];
    let over_tls = RegisterInput {
        source: src("198.51.100.20:40000"),
        transport: Transport::Tls,
        flow: Some(FlowId(2)),
        ..req(&a, "c9", 1, &moved)
    };
    let out = loc.register(&over_tls, t0 + secs(60)).expect("moved");
    assert_eq!((out.added, out.refreshed), (0, 1));
    assert_eq!(
        uris(&out.bindings),
        ["sip:oscar@172.16.0.9:5061;transport=tls"]
    );
    assert_eq!(out.bindings[0].instance(), Some(inst));
    assert_eq!(out.bindings[0].reg_id, Some(1));
    assert_eq!(out.rebound.len(), 1);
    assert_eq!(out.rebound[0].old_source, src("192.0.2.1:5060"));
    assert_eq!(out.rebound[0].new_transport, Transport::Tls);
    assert_eq!(out.rebound[0].new_flow, Some(FlowId(2)));
    // The flow index followed the binding.
    assert_eq!(loc.remove_flow(FlowId(1)), 0);
    assert_eq!(loc.lookup(&a, t0 + secs(60)).len(), 1);

    // Another reg-id of the same instance is a second flow: added beside.
    let second = [ContactInput {
        reg_id: Some(2),
        ..moved[0]
    }];
    let out = loc
        .register(&req(&a, "c9", 2, &second), t0 + secs(60))
        .expect("reg-id 2");
    assert_eq!((out.added, out.bindings.len()), (1, 2));
    assert_eq!(loc.remove_flow(FlowId(2)), 1);
    assert_eq!(loc.lookup(&a, t0 + secs(60)).len(), 1);
}

#[test]
fn instance_alone_replaces_per_rfc_5627_and_reg_id_alone_is_ignored() {
    let loc = location();
    let a = aor("peggy");
    let t0 = Instant::now();
    let inst = "<urn:uuid:1>";
    let gruu = [ContactInput {
        instance: Some(inst),
        ..contact("sip:peggy@a")
    }];
    loc.register(&req(&a, "c1", 1, &gruu), t0).expect("first");
    let moved = [ContactInput {
        instance: Some(inst),
        ..contact("sip:peggy@b")
    }];
    let out = loc.register(&req(&a, "c1", 2, &moved), t0).expect("moved");
    assert_eq!(uris(&out.bindings), ["sip:peggy@b"]);
    assert_eq!(
        out.bindings[0].instance(),
        Some(inst),
        "instance stored outside params"
    );

    // reg-id without an instance: matched by URI.
    let plain = [ContactInput {
        reg_id: Some(1),
        ..contact("sip:peggy@c")
    }];
    loc.register(&req(&a, "c1", 3, &plain), t0).expect("plain");
    let plain2 = [ContactInput {
        reg_id: Some(2),
        ..contact("sip:peggy@c")
    }];
    let out = loc
        .register(&req(&a, "c1", 4, &plain2), t0)
        .expect("same uri");
    assert_eq!((out.refreshed, out.bindings.len()), (1, 2));
}

#[test]
fn uri_key_decides_equality_not_uri_text() {
    let loc = location();
    let a = aor("quinn");
    let t0 = Instant::now();
    let one = [ContactInput {
        uri_key: "sip:quinn@host",
        ..contact("sip:quinn@HOST")
    }];
    let two = [ContactInput {
        uri_key: "sip:quinn@host",
        ..contact("<sip:quinn@Host>")
    }];
    loc.register(&req(&a, "c", 1, &one), t0).expect("one");
    let out = loc.register(&req(&a, "c", 2, &two), t0).expect("two");
    assert_eq!(uris(&out.bindings), ["<sip:quinn@Host>"]);
}

#[test]
fn duplicate_contacts_in_one_request_make_one_binding() {
    let loc = location();
    let a = aor("rita");
    let t0 = Instant::now();
    let c = [
        ContactInput {
            expires: Some(100),
            ..contact("sip:rita@x")
        },
        ContactInput {
            expires: Some(200),
            ..contact("sip:rita@x")
        },
    ];
    let out = loc.register(&req(&a, "c", 1, &c), t0).expect("dup");
    assert_eq!(out.added, 1);
    assert_eq!(out.bindings.len(), 1);
    assert_eq!(out.bindings[0].expires, 200, "the last one wins");
    assert_eq!(loc.index_sizes(), (1, 0));
}

#[test]
fn expiry_exactly_on_time_p6() {
    let loc = location();
    let a = aor("sam");
    let t0 = Instant::now();
    let c = [ContactInput {
        expires: Some(60),
        ..contact("sip:sam@x")
    }];
    loc.register(&req(&a, "c", 1, &c), t0).expect("add");
    assert_eq!(loc.next_deadline(), Some(t0 + secs(60)));

    let just_before = t0 + secs(60) - Duration::from_millis(1);
    let found = loc.lookup(&a, just_before);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].expires, 1, "rounded up, never 0 while alive");
    assert_eq!(
        loc.lookup(&a, t0 + Duration::from_millis(500))[0].expires,
        60
    );
    assert_eq!(
        loc.lookup(&a, t0 + Duration::from_millis(1500))[0].expires,
        59
    );
    assert_eq!(loc.purge(just_before), 0);

    let deadline = t0 + secs(60);
    assert!(loc.lookup(&a, deadline).is_empty());
    assert!(loc.dump(None, 10, deadline).is_empty());
    let fetched = loc
        .register(&req(&a, "x", 1, &[]), deadline)
        .expect("fetch");
    assert!(fetched.bindings.is_empty());
    assert_eq!(loc.binding_count(), 1, "still stored until purge");
    assert_eq!(loc.purge(deadline), 1);
    assert_eq!((loc.aor_count(), loc.binding_count()), (0, 0));
    assert_eq!(loc.index_sizes(), (0, 0));
    assert_eq!(loc.next_deadline(), None);
}

#[test]
fn expired_binding_does_not_block_or_count() {
    let loc = location();
    let a = aor("tom");
    let t0 = Instant::now();
    let c = [ContactInput {
        expires: Some(60),
        ..contact("sip:tom@x")
    }];
    loc.register(&req(&a, "c", 5, &c), t0).expect("add");
    // Past the deadline the old CSeq no longer applies: it is a new binding.
    let out = loc
        .register(&req(&a, "c", 1, &c), t0 + secs(60))
        .expect("again");
    assert_eq!((out.added, out.refreshed, out.had_bindings), (1, 0, false));
    assert_eq!(loc.binding_count(), 1);
    assert_eq!(loc.index_sizes(), (1, 0));
    assert_eq!(
        loc.purge(t0 + secs(60)),
        0,
        "the expired one went with the register"
    );
    assert_eq!(loc.lookup(&a, t0 + secs(61)).len(), 1);
}

#[test]
fn refresh_moves_the_deadline_for_purge() {
    let loc = location();
    let a = aor("uma");
    let t0 = Instant::now();
    let c = [ContactInput {
        expires: Some(60),
        ..contact("sip:uma@x")
    }];
    loc.register(&req(&a, "c", 1, &c), t0).expect("add");
    loc.register(&req(&a, "c", 2, &c), t0 + secs(30))
        .expect("refresh");
    assert_eq!(loc.purge(t0 + secs(60)), 0);
    assert_eq!(loc.lookup(&a, t0 + secs(60)).len(), 1);
    assert_eq!(loc.next_deadline(), Some(t0 + secs(90)));
    assert_eq!(loc.purge(t0 + secs(90)), 1);
}

#[test]
fn remove_flow_removes_only_that_flows_bindings() {
    let loc = location();
    let t0 = Instant::now();
    let (a, b) = (aor("pbx-line1"), aor("pbx-line2"));
    let c = [contact("sip:pbx@10.0.0.1;transport=tcp")];
    for who in [&a, &b] {
        let input = RegisterInput {
            transport: Transport::Tcp,
            flow: Some(FlowId(7)),
            ..req(who, "c", 1, &c)
        };
        loc.register(&input, t0).expect("tcp");
    }
    let udp = [contact("sip:pbx@10.0.0.1")];
    loc.register(&req(&a, "u", 1, &udp), t0).expect("udp");
    let found = loc.lookup(&a, t0);
    let udp_binding = found.iter().find(|b| b.uri() == "sip:pbx@10.0.0.1");
    assert_eq!(udp_binding.map(|b| b.flow), Some(None));
    assert_eq!(loc.index_sizes(), (3, 2));

    assert_eq!(loc.remove_flow(FlowId(7)), 2);
    assert_eq!(loc.remove_flow(FlowId(7)), 0);
    assert_eq!(uris(&loc.lookup(&a, t0)), ["sip:pbx@10.0.0.1"]);
    assert!(loc.lookup(&b, t0).is_empty());
    assert_eq!((loc.aor_count(), loc.binding_count()), (1, 1));
    assert_eq!(loc.index_sizes(), (1, 0));
}

#[test]
fn remove_aor_and_dump() {
    let loc = location();
    let t0 = Instant::now();
    let c = [contact("sip:u@h")];
    let aors: Vec<Aor> = (0..5).map(|i| aor(&format!("user{i}"))).collect();
    for a in &aors {
        loc.register(&req(a, "c", 1, &c), t0).expect("add");
    }
    assert_eq!(loc.dump(None, 3, t0).len(), 3);
    assert_eq!(loc.dump(None, 100, t0).len(), 5);
    assert_eq!(loc.dump(None, 0, t0).len(), 0);
    let one = loc.dump(Some(&aors[2]), 10, t0);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, aors[2]);
    assert!(loc.dump(Some(&aor("ghost")), 10, t0).is_empty());

    assert_eq!(loc.remove_aor(&aors[2]), 1);
    assert_eq!(loc.remove_aor(&aors[2]), 0);
    assert_eq!((loc.aor_count(), loc.binding_count()), (4, 4));
    assert_eq!(loc.index_sizes(), (4, 0));
}

#[test]
fn lookup_orders_by_q_then_most_recent() {
    let loc = location();
    let a = aor("vic");
    let t0 = Instant::now();
    let c = [
        ContactInput {
            q: Some(500),
            ..contact("sip:vic@half")
        },
        contact("sip:vic@unset"),
        ContactInput {
            q: Some(900),
            ..contact("sip:vic@high")
        },
    ];
    loc.register(&req(&a, "c", 1, &c), t0).expect("add");
    let later = [ContactInput {
        q: Some(500),
        ..contact("sip:vic@half-later")
    }];
    loc.register(&req(&a, "c", 2, &later), t0 + secs(1))
        .expect("later");
    let found = loc.lookup(&a, t0 + secs(2));
    assert_eq!(
        uris(&found),
        [
            "sip:vic@unset",
            "sip:vic@high",
            "sip:vic@half-later",
            "sip:vic@half"
        ]
    );
    assert_eq!(found[0].effective_q(), 1000);
}

#[test]
fn path_is_stored_only_when_supported() {
    let loc = location();
    let a = aor("wes");
    let t0 = Instant::now();
    let c = [contact("sip:wes@x")];
    let path = [
        "<sip:edge1.example.com;lr;ob>",
        "<sip:edge2.example.com;lr>",
    ];
    let without = RegisterInput {
        path: &path,
        ..req(&a, "c", 1, &c)
    };
    let out = loc.register(&without, t0).expect("no path");
    assert!(out.bindings[0].path().is_empty());
    let with = RegisterInput {
        path: &path,
        path_supported: true,
        ..req(&a, "c", 2, &c)
    };
    let out = loc.register(&with, t0).expect("path");
    assert_eq!(out.bindings[0].path().len(), 2);
    assert_eq!(&*out.bindings[0].path()[0], path[0]);
}

#[test]
fn oversized_contact_or_path_is_refused_atomically() {
    let loc = location();
    let a = aor("xena");
    let t0 = Instant::now();
    let long = format!("sip:{}@x", "a".repeat(MAX_BINDING_TEXT));
    let c = [contact("sip:xena@fine"), contact(&long)];
    let err = loc.register(&req(&a, "c", 1, &c), t0).map(|o| o.added);
    assert_eq!(err, Err(RegisterError::TooLarge));
    assert_eq!(loc.binding_count(), 0);

    let big = "p".repeat(MAX_PATH_TEXT + 1);
    let path = [big.as_str()];
    let input = RegisterInput {
        path: &path,
        path_supported: true,
        ..req(&a, "c", 2, &c[..1])
    };
    assert_eq!(
        loc.register(&input, t0).map(|o| o.added),
        Err(RegisterError::TooLarge)
    );

    // A long User-Agent is truncated on a char boundary, not refused.
    let ua = "é".repeat(MAX_USER_AGENT);
    let input = RegisterInput {
        user_agent: Some(&ua),
        ..req(&a, "c", 3, &c[..1])
    };
    let out = loc.register(&input, t0).expect("ua");
    let stored = out.bindings[0].user_agent().unwrap_or_default();
    assert!(stored.len() <= MAX_USER_AGENT && stored.len() >= MAX_USER_AGENT - 1);
}

#[test]
fn jitter_shortens_refreshes_only() {
    let policy = RegistrarPolicy {
        expiry_jitter_percent: 20,
        ..RegistrarPolicy::default()
    };
    assert_eq!(policy.validate(), Ok(()));
    let loc = Location::new(policy);
    let a = aor("yuri");
    let t0 = Instant::now();
    let c = [contact("sip:yuri@x")];
    let out = loc.register(&req(&a, "c", 1, &c), t0).expect("initial");
    assert_eq!(out.bindings[0].expires, 3600);
    let mut seen_shorter = false;
    for cseq in 2..200 {
        let out = loc.register(&req(&a, "c", cseq, &c), t0).expect("refresh");
        let e = out.bindings[0].expires;
        assert!((2880..=3600).contains(&e), "{e}");
        seen_shorter |= e < 3600;
    }
    assert!(seen_shorter);
    // Never below the minimum.
    let short = [ContactInput {
        expires: Some(61),
        ..c[0]
    }];
    for cseq in 200..300 {
        let out = loc
            .register(&req(&a, "c", cseq, &short), t0)
            .expect("short");
        assert!(out.bindings[0].expires >= 60);
    }
}

#[test]
fn concurrent_registers_for_different_aors() {
    let loc = location();
    let t0 = Instant::now();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let loc = loc.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let a = aor(&format!("t{t}u{i}"));
                    let uri = format!("sip:t{t}u{i}@10.0.{t}.{}", i % 250);
                    let c = [contact(&uri)];
                    let input = RegisterInput {
                        transport: Transport::Tcp,
                        flow: Some(FlowId(t as u64)),
                        ..req(&a, "c", 1, &c)
                    };
                    assert!(loc.register(&input, t0).is_ok());
                    assert!(loc
                        .register(&RegisterInput { cseq: 2, ..input }, t0)
                        .is_ok());
                    assert_eq!(loc.lookup(&a, t0).len(), 1);
                }
            });
        }
        // A reader and the purge run alongside.
        let loc = loc.clone();
        s.spawn(move || {
            for _ in 0..50 {
                let _ = loc.dump(None, 100, t0);
                let _ = loc.purge(t0);
            }
        });
    });
    assert_eq!(loc.aor_count(), THREADS * PER_THREAD);
    assert_eq!(loc.binding_count(), THREADS * PER_THREAD);
    assert_eq!(
        loc.index_sizes(),
        (THREADS * PER_THREAD, THREADS * PER_THREAD)
    );
    assert_eq!(loc.remove_flow(FlowId(0)), PER_THREAD);
    assert_eq!(loc.purge(t0 + secs(3600)), (THREADS - 1) * PER_THREAD);
    assert_eq!((loc.aor_count(), loc.binding_count()), (0, 0));
    assert_eq!(loc.index_sizes(), (0, 0));
}

/// The gauges handed to `with_gauges` follow every change of the counts: a REGISTER, a closed
/// flow, a removed credential or AoR, a purge, and concurrent changes (deltas, never a stale
/// `set`), so no caller has to refresh them.
#[test]
fn location_keeps_its_gauges_equal_to_its_counts() {
    let gauges = LocationGauges {
        bindings: prometheus::IntGauge::new("b", "bindings").expect("gauge"),
        aors: prometheus::IntGauge::new("a", "aors").expect("gauge"),
    };
    gauges.bindings.set(99);
    let loc = Location::with_gauges(RegistrarPolicy::default(), gauges.clone());
    let seen = || (gauges.aors.get(), gauges.bindings.get());
    let counts = || (loc.aor_count() as i64, loc.binding_count() as i64);
    assert_eq!(seen(), (0, 0));
    let t0 = Instant::now();
    let (a, b) = (aor("alice"), aor("bob"));
    let tcp = [
        contact("sip:alice@10.0.0.1;transport=tcp"),
        contact("sip:alice@10.0.0.2;transport=tcp"),
    ];
    let input = RegisterInput {
        transport: Transport::Tcp,
        flow: Some(FlowId(7)),
        ..req(&a, "c", 1, &tcp)
    };
    loc.register(&input, t0).expect("tcp");
    let short = [ContactInput {
        expires: Some(60),
        ..contact("sip:bob@10.0.0.3")
    }];
    loc.register(&req(&b, "c", 1, &short), t0).expect("udp");
    assert_eq!(seen(), (2, 3));
    assert_eq!(loc.remove_flow(FlowId(7)), 2);
    assert_eq!(seen(), (1, 1));
    assert_eq!(loc.purge(t0 + secs(61)), 1);
    assert_eq!(seen(), (0, 0));
    loc.register(&req(&a, "c", 2, &[contact("sip:alice@10.0.0.9")]), t0)
        .expect("again");
    assert_eq!(seen(), (1, 1));
    assert_eq!(loc.remove_aor(&a), 1);
    assert_eq!(seen(), (0, 0));

    const THREADS: usize = 4;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let loc = loc.clone();
            s.spawn(move || {
                for i in 0..200 {
                    let who = aor(&format!("t{t}u{}", i % 20));
                    let uri = format!("sip:t{t}@10.1.{t}.{i}");
                    let c = [contact(&uri)];
                    let _ = loc.register(&req(&who, "c", i + 1, &c), t0);
                    if i % 3 == 0 {
                        loc.remove_aor(&who);
                    }
                }
            });
        }
    });
    assert_eq!(seen(), counts());
    assert!(counts().1 > 0);
    loc.purge(t0 + secs(7200));
    assert_eq!(seen(), (0, 0));
}

#[test]
fn policy_defaults_validate_and_statuses_map() {
    let p = RegistrarPolicy::default();
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(
        (p.min_expires, p.max_expires, p.default_expires),
        (60, 3600, 3600)
    );
    assert_eq!(
        (p.max_bindings_per_aor, p.expiry_jitter_percent, p.max_aors),
        (10, 0, 1_000_000)
    );
    let bad = RegistrarPolicy {
        min_expires: 4000,
        ..RegistrarPolicy::default()
    };
    assert_eq!(bad.validate(), Err(PolicyError::MinExpires));
    assert_eq!(RegisterError::InvalidStar.sip_status().0, 400);
    assert_eq!(RegisterError::Full.sip_status().0, 503);
    assert_eq!(RegisterError::DeadlineOverflow.sip_status().0, 500);
}

#[test]
fn binding_text_round_trips_and_shares_what_it_can() {
    let params = ";+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1";
    let inst = "\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"";
    let parts = TextParts {
        uri: "sip:alice@192.0.2.10:5060;transport=tcp",
        uri_key: "sip:alice@192.0.2.10:5060;transport=tcp",
        params,
        instance: Some(inst),
        call_id: "a84b4c76e66710@pc33.example.com",
        user_agent: None,
        credential: None,
    };
    let text = BindingText::new(&parts, MAX_BINDING_TEXT).expect("fits");
    assert_eq!(text.uri(), parts.uri);
    assert_eq!(text.uri_key(), parts.uri_key);
    assert_eq!(text.params(), params);
    assert_eq!(text.instance(), Some(inst));
    assert_eq!(text.call_id(), parts.call_id);
    assert_eq!(text.user_agent(), None);
    let shared = parts.uri.len() + params.len() + parts.call_id.len();
    assert_eq!(
        text.heap_bytes(),
        16 + shared,
        "key and instance not stored twice"
    );

    let other = TextParts {
        uri_key: "sip:alice@192.0.2.10",
        instance: Some("<urn:uuid:elsewhere>"),
        user_agent: Some("UA"),
        ..parts
    };
    let text = BindingText::new(&other, MAX_BINDING_TEXT).expect("fits");
    assert_eq!(text.uri_key(), "sip:alice@192.0.2.10");
    assert_eq!(text.instance(), Some("<urn:uuid:elsewhere>"));
    assert_eq!(text.user_agent(), Some("UA"));
    assert!(BindingText::new(&other, 10).is_none());
}

#[test]
fn footprint_per_binding() {
    // A typical outbound softphone binding over TCP.
    let params =
        ";+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1;q=0.8";
    let parts = TextParts {
        uri: "sip:alice@192.0.2.10:52314;transport=tcp;ob",
        uri_key: "sip:alice@192.0.2.10:52314;transport=tcp;ob",
        params,
        instance: Some("\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\""),
        call_id: "a84b4c76e66710@pc33.example.com",
        user_agent: Some("Linphone/5.2.0 (belle-sip/5.2.0)"),
        credential: None,
    };
    let text = BindingText::new(&parts, MAX_BINDING_TEXT).expect("fits");
    let binding = Binding {
        id: BindingId(1),
        deadline: Instant::now(),
        text,
        path: None,
        source: src("198.51.100.7:52314"),
        flow: Some(FlowId(3)),
        reg_id: Some(1),
        cseq: 1,
        granted: 3600,
        q: Some(800),
        transport: Transport::Tcp,
    };
    let inline = std::mem::size_of::<Binding>();
    let heap = binding.heap_bytes();
    // Index entries: one expiry entry, one flow entry (plus container overhead).
    let expiry_entry = std::mem::size_of::<super::expiry::ExpiryEntry>();
    let flow_entry = std::mem::size_of::<(Aor, BindingId)>();
    println!(
        "Binding: {inline} B inline + {heap} B heap = {} B; expiry index entry {expiry_entry} B, flow index entry {flow_entry} B; total {} B",
        inline + heap,
        inline + heap + expiry_entry + flow_entry
    );
    assert!(inline <= 160, "{inline}");
    assert!(inline + heap + expiry_entry + flow_entry < 420);
}

fn with_credential<'a>(input: RegisterInput<'a>, credential: Credential<'a>) -> RegisterInput<'a> {
    RegisterInput {
        credential: Some(credential),
        ..input
    }
}

#[test]
fn remove_credential_removes_only_the_bindings_that_credential_made() {
    let loc = location();
    let a = aor("alice");
    let t0 = Instant::now();
    let live = || true;
    let laptop = [contact("<sip:alice@192.0.2.10:5060>")];
    let phone = [contact("<sip:alice@192.0.2.20:5060>")];
    let desk = [contact("<sip:alice@192.0.2.30:5060>")];
    let by = |name| Credential {
        name,
        is_live: &live,
    };
    loc.register(
        &with_credential(req(&a, "laptop-call", 1, &laptop), by("d-laptop")),
        t0,
    )
    .unwrap();
    loc.register(
        &with_credential(req(&a, "phone-call", 1, &phone), by("d-phone")),
        t0,
    )
    .unwrap();
    loc.register(&req(&a, "desk-call", 1, &desk), t0).unwrap();
    assert_eq!(loc.binding_count(), 3);
    assert_eq!(loc.remove_credential(&aor("bob"), "d-laptop"), 0);
    assert_eq!(loc.remove_credential(&a, "d-other"), 0);
    assert_eq!(loc.remove_credential(&a, "d-laptop"), 1);
    let left = loc.lookup(&a, t0);
    let mut by_uri: Vec<(&str, Option<&str>)> =
        left.iter().map(|b| (b.uri(), b.credential())).collect();
    by_uri.sort();
    assert_eq!(
        by_uri,
        [
            ("<sip:alice@192.0.2.20:5060>", Some("d-phone")),
            ("<sip:alice@192.0.2.30:5060>", None),
        ],
        "a static account's binding has no credential"
    );
    // A refresh by another credential makes the binding that credential's.
    loc.register(
        &with_credential(req(&a, "phone-call", 2, &phone), by("d-laptop")),
        t0,
    )
    .unwrap();
    assert_eq!(loc.remove_credential(&a, "d-phone"), 0);
    assert_eq!(loc.remove_credential(&a, "d-laptop"), 1);
    assert_eq!(uris(&loc.lookup(&a, t0)), ["<sip:alice@192.0.2.30:5060>"]);
    loc.remove_aor(&a);
    assert_eq!((loc.binding_count(), loc.aor_count()), (0, 0));
    assert_eq!(loc.index_sizes(), (0, 0));
}

#[test]
fn a_credential_revoked_before_apply_stores_nothing() {
    let loc = location();
    let a = aor("alice");
    let t0 = Instant::now();
    let revoked = || false;
    let laptop = [contact("<sip:alice@192.0.2.10:5060>")];
    let input = with_credential(
        req(&a, "laptop-call", 1, &laptop),
        Credential {
            name: "d-laptop",
            is_live: &revoked,
        },
    );
    assert_eq!(
        loc.register(&input, t0).unwrap_err(),
        RegisterError::CredentialRevoked
    );
    assert_eq!((loc.binding_count(), loc.aor_count()), (0, 0));
    assert_eq!(RegisterError::CredentialRevoked.sip_status().0, 401);
}

/// The revoke protocol of `Credential` under real threads: a revoke (flag off, then
/// `remove_credential`) racing REGISTERs with that credential never leaves a binding behind.
#[test]
fn no_register_overtakes_a_revoke() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Barrier;
    for trial in 0..200 {
        let loc = location();
        let a = aor("alice");
        let live = AtomicBool::new(true);
        let barrier = Barrier::new(3);
        let is_live = || live.load(Ordering::SeqCst);
        std::thread::scope(|scope| {
            for phone in 0..2 {
                let (loc, a, barrier, is_live) = (&loc, &a, &barrier, &is_live);
                scope.spawn(move || {
                    barrier.wait();
                    for n in 0..50u32 {
                        let uri = format!("<sip:alice@192.0.2.{phone}:5060>");
                        let contacts = [contact(&uri)];
                        let call_id = format!("call-{phone}");
                        let input = with_credential(
                            req(a, &call_id, n + 1, &contacts),
                            Credential {
                                name: "d-laptop",
                                is_live,
                            },
                        );
                        let _ = loc.register(&input, Instant::now());
                    }
                });
            }
            barrier.wait();
            std::thread::yield_now();
            live.store(false, Ordering::SeqCst);
            loc.remove_credential(&a, "d-laptop");
        });
        assert_eq!(
            loc.binding_count(),
            0,
            "trial {trial}: a binding outlived the revoke"
        );
    }
}

#[test]
fn pages_walk_every_aor_once_in_order_and_one_binding_can_be_removed() {
    let loc = location();
    let t0 = Instant::now();
    let aors: Vec<Aor> = (0..7).map(|i| aor(&format!("user{i}"))).collect();
    for a in aors.iter().rev() {
        let c = [contact("sip:u@h1"), contact("sip:u@h2")];
        loc.register(&req(a, "c", 1, &c), t0).expect("add");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, more) = loc.page(after.as_deref(), 3, |_, _| true, t0);
        pages += 1;
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|(a, _)| a.clone()));
        after = page.last().map(|(a, _)| a.to_string());
        if !more {
            break;
        }
    }
    assert_eq!(pages, 3, "7 AoRs in pages of 3");
    assert_eq!(seen, aors, "every AoR once, in canonical order");
    let (empty, more) = loc.page(None, 0, |_, _| true, t0);
    assert!(empty.is_empty() && !more);

    // A binding filter drops the AoRs left with none.
    let (only, more) = loc.page(None, 10, |a, _| *a == aors[4], t0);
    assert!(!more);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].1.len(), 2);

    let id = only[0].1[0].id;
    assert!(loc.remove_binding(&aors[4], id));
    assert!(!loc.remove_binding(&aors[4], id), "already gone");
    assert!(
        !loc.remove_binding(&aors[3], only[0].1[1].id),
        "another AoR's id"
    );
    assert_eq!(loc.lookup(&aors[4], t0).len(), 1);
    assert_eq!(loc.binding_count(), 13);
}
