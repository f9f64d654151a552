//! RFC 5626 keep-alives on a SIP UDP port (issue 15): CRLF datagrams are counted as
//! keep-alives (no parse error, no `unparseable` drop, no answer); a STUN Binding request
//! (RFC 5389) gets a Binding success response whose XOR-MAPPED-ADDRESS is the client's
//! address, over IPv4 and IPv6; malformed STUN is dropped and counted; a source over its
//! failure limit gets no STUN answer. The response is decoded here independently of the
//! server's encoder.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{config_on_ports, rand_token, Options, Server};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const KEEPALIVES: &str = "sipward_keepalives_total";

/// An in-process server whose only UDP listener is `udp` (e.g. `[::1]:0`), with `auth` extra
/// TOML in `[auth]`.
fn server_on(udp: &str, auth: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        auth,
        ..Options::default()
    };
    let path = config_on_ports(&opts, dir.path(), 0, 0, 0);
    let config = std::fs::read_to_string(&path).unwrap();
    let default = "udp = [\"127.0.0.1:0\"]";
    assert!(
        config.contains(default),
        "the harness's UDP listener line moved:\n{config}"
    );
    let config = config.replace(default, &format!("udp = [\"{udp}\"]"));
    std::fs::write(&path, config).unwrap();
    Server::in_process(path, dir)
}

fn socket(local: &str) -> UdpSocket {
    let s = UdpSocket::bind(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn recv(s: &UdpSocket, timeout: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

/// An OPTIONS to the server (answered 200) and its Call-ID.
fn options(local: SocketAddr) -> (String, String) {
    let call_id = rand_token();
    let via_host = match local {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    let msg = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{}>;tag=1\r\nTo: <sip:{}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        common::DOMAIN,
        common::DOMAIN,
        common::DOMAIN
    );
    (msg, call_id)
}

/// Sends an OPTIONS and asserts that the next datagram is its answer: nothing sent earlier
/// was answered.
fn next_answer_is_the_options_one(s: &UdpSocket, server: SocketAddr) {
    let (msg, call_id) = options(s.local_addr().unwrap());
    s.send_to(msg.as_bytes(), server).unwrap();
    let got = recv(s, Duration::from_secs(2)).expect("the OPTIONS is answered");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("SIP/2.0 200") && text.contains(&call_id),
        "the first answer is the OPTIONS one: {text:?}"
    );
}

/// A STUN message of `kind` with transaction id `tid` and raw `attributes`.
fn stun(kind: u16, tid: &[u8; 12], attributes: &[u8]) -> Vec<u8> {
    let mut m = kind.to_be_bytes().to_vec();
    m.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(tid);
    m.extend_from_slice(attributes);
    m
}

/// Checks a Binding success response for `tid` and returns its XOR-MAPPED-ADDRESS.
fn mapped_address(resp: &[u8], tid: &[u8; 12]) -> SocketAddr {
    assert!(resp.len() >= 20, "{resp:?}");
    assert_eq!(&resp[..2], &[0x01, 0x01], "Binding success response");
    let length = usize::from(u16::from_be_bytes([resp[2], resp[3]]));
    assert_eq!(resp.len(), 20 + length, "length field");
    assert_eq!(&resp[4..8], &COOKIE);
    assert_eq!(&resp[8..20], tid, "the request's transaction id");
    let attr = &resp[20..];
    assert_eq!(&attr[..2], &[0x00, 0x20], "XOR-MAPPED-ADDRESS");
    let port = u16::from_be_bytes([attr[6], attr[7]]) ^ 0x2112;
    let mut key = COOKIE.to_vec();
    key.extend_from_slice(tid);
    let ip = match attr[5] {
        0x01 => {
            assert_eq!(u16::from_be_bytes([attr[2], attr[3]]), 8);
            let o: Vec<u8> = attr[8..12].iter().zip(&key).map(|(a, k)| a ^ k).collect();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
        }
        0x02 => {
            assert_eq!(u16::from_be_bytes([attr[2], attr[3]]), 20);
            let mut o = [0u8; 16];
            for (i, b) in attr[8..24].iter().enumerate() {
                o[i] = b ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        f => panic!("address family {f}"),
    };
    SocketAddr::new(ip, port)
}

#[test]
fn crlf_datagrams_are_counted_keepalives_not_parse_errors() {
    let server = server_on("127.0.0.1:0", "");
    let s = socket("127.0.0.1:0");
    for ping in [&b"\r\n\r\n"[..], b"\r\n", b"\r\n\r\n\r\n\r\n"] {
        s.send_to(ping, server.udp).unwrap();
    }
    let series = format!("{KEEPALIVES}{{kind=\"crlf\"}}");
    let (n, _) = server.wait_metric(&series, Duration::from_secs(5), |v| v >= 3.0);
    assert_eq!(n, 3.0);
    next_answer_is_the_options_one(&s, server.udp);
    assert_eq!(
        server.metric("sipward_parse_errors_total{transport=\"udp\"}"),
        0.0
    );
    assert_eq!(server.dropped_total(), 0.0, "{}", server.metrics());
}

/// A Binding request (bare, and with SOFTWARE and FINGERPRINT, which are optional) gets the
/// client's own address back, over IPv4 and over IPv6 ([::1]).
#[test]
fn a_stun_binding_request_gets_the_xor_mapped_address_over_ipv4_and_ipv6() {
    for (listen, local) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
        let server = server_on(listen, "");
        let s = socket(local);
        let me = s.local_addr().unwrap();
        let software = [
            0x80, 0x22, 0x00, 0x05, b'p', b'h', b'o', b'n', b'e', 0, 0, 0, 0x80, 0x28, 0x00, 0x04,
            0xde, 0xad, 0xbe, 0xef,
        ];
        for attributes in [&[][..], &software[..]] {
            let tid: [u8; 12] = std::array::from_fn(|i| (i as u8) * 17 + attributes.len() as u8);
            s.send_to(&stun(0x0001, &tid, attributes), server.udp)
                .unwrap();
            let resp = recv(&s, Duration::from_secs(2)).expect("a Binding success response");
            let expected_len = if me.is_ipv4() { 32 } else { 44 };
            assert_eq!(resp.len(), expected_len, "{listen}: {resp:?}");
            assert_eq!(mapped_address(&resp, &tid), me, "{listen}");
        }
        let series = format!("{KEEPALIVES}{{kind=\"stun_binding\"}}");
        assert_eq!(server.metric(&series), 2.0, "{listen}");
        assert_eq!(server.dropped_total(), 0.0, "{listen}");
        next_answer_is_the_options_one(&s, server.udp);
    }
}

/// Malformed STUN, a Binding response, an ICE check (USERNAME, comprehension-required) and
/// an indication get no answer and no panic; each counted; the port keeps answering.
#[test]
fn malformed_or_foreign_stun_is_dropped_and_counted_without_an_answer() {
    let server = server_on("127.0.0.1:0", "");
    let s = socket("127.0.0.1:0");
    let tid = [7u8; 12];
    let good = stun(0x0001, &tid, &[]);
    let mut too_long = good.clone();
    too_long.extend_from_slice(&[0, 0, 0, 0]);
    let bad: Vec<Vec<u8>> = vec![
        good[..12].to_vec(),                                       // truncated header
        too_long,                                                  // length field too short
        stun(0x0001, &tid, &[0x80, 0x22, 0x00, 0x09, 1, 2, 3, 4]), // attribute overruns
        stun(
            0x0001,
            &tid,
            &[0x00, 0x06, 0x00, 0x04, b'u', b's', b'e', b'r'],
        ), // USERNAME
        stun(0x0101, &tid, &[]),                                   // a response
    ];
    for b in &bad {
        s.send_to(b, server.udp).unwrap();
    }
    let dropped = "sipward_sip_dropped_total{reason=\"stun\"}";
    let (n, _) = server.wait_metric(dropped, Duration::from_secs(5), |v| v >= 5.0);
    assert_eq!(n, 5.0);
    s.send_to(&stun(0x0011, &tid, &[]), server.udp).unwrap();
    let indication = format!("{KEEPALIVES}{{kind=\"stun_indication\"}}");
    let (n, _) = server.wait_metric(&indication, Duration::from_secs(5), |v| v >= 1.0);
    assert_eq!(n, 1.0);
    next_answer_is_the_options_one(&s, server.udp);
    // Still answering STUN after all that.
    s.send_to(&good, server.udp).unwrap();
    let resp = recv(&s, Duration::from_secs(2)).expect("answered");
    assert_eq!(mapped_address(&resp, &tid), s.local_addr().unwrap());
}

/// The per-source limit that silences answers to malformed SIP silences STUN answers too:
/// once 127.0.0.3 is over `max_failures_per_source`, its Binding requests are dropped and
/// counted `throttled`, while another source is still answered.
#[test]
fn a_source_over_its_failure_limit_gets_no_stun_answer() {
    let server = server_on("127.0.0.1:0", "max_failures_per_source = 2");
    let blocked = socket("127.0.0.3:0");
    let tid = [9u8; 12];
    blocked
        .send_to(&stun(0x0001, &tid, &[]), server.udp)
        .unwrap();
    assert!(
        recv(&blocked, Duration::from_secs(2)).is_some(),
        "answered while under the limit"
    );
    // Two malformed requests, each answered with 400 and counted as a failure of the source.
    for _ in 0..2 {
        let (msg, _) = options(blocked.local_addr().unwrap());
        let msg = msg.replace("\r\nTo:", "\r\nTo\x01:");
        blocked.send_to(msg.as_bytes(), server.udp).unwrap();
        let r = recv(&blocked, Duration::from_secs(2)).expect("400");
        assert!(String::from_utf8_lossy(&r).starts_with("SIP/2.0 400"));
    }
    blocked
        .send_to(&stun(0x0001, &tid, &[]), server.udp)
        .unwrap();
    let throttled = "sipward_sip_dropped_total{reason=\"throttled\"}";
    let (n, _) = server.wait_metric(throttled, Duration::from_secs(5), |v| v >= 1.0);
    assert_eq!(n, 1.0);
    assert!(
        recv(&blocked, Duration::from_millis(300)).is_none(),
        "no STUN answer"
    );
    let other = socket("127.0.0.1:0");
    other.send_to(&stun(0x0001, &tid, &[]), server.udp).unwrap();
    let resp = recv(&other, Duration::from_secs(2)).expect("another source is answered");
    assert_eq!(mapped_address(&resp, &tid), other.local_addr().unwrap());
    let series = format!("{KEEPALIVES}{{kind=\"stun_binding\"}}");
    assert_eq!(server.metric(&series), 2.0);
}
