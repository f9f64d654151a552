//! RFC 5626 §4.4 keep-alives on a SIP UDP port, recognised before the SIP parser sees the
//! datagram: a datagram of CRLFs only (linphone sends them over UDP), and the STUN Binding
//! request of RFC 5389, whose success response carries the client's address as the server
//! saw it (XOR-MAPPED-ADDRESS), so the client learns its NAT binding and that the flow lives.
//!
//! Pure bytes in, bytes out: no socket, no limiter, no metric (the caller, `dispatch`, owns
//! those). Written by hand rather than with a STUN crate: a keep-alive server needs the
//! 20-byte header, an attribute walk and one attribute, while the crates (`stun-rs`,
//! `stun_codec`, `webrtc-stun`) bring a full STUN/TURN codec and its dependencies.
//!
//! What it answers: a Binding request (type 0x0001) whose length field matches the datagram,
//! with well-formed attributes, none of them comprehension-required (type < 0x8000: USERNAME,
//! MESSAGE-INTEGRITY and the ICE attributes, which a keep-alive does not carry). Anything
//! else that looks like STUN (the first two bits 0 and the magic cookie) is not answered:
//! RFC 5389 §7.3 lets a server drop malformed messages, and an ICE connectivity check is not
//! ours to answer.

use std::net::{IpAddr, SocketAddr};

/// RFC 5389 §6: the fixed magic cookie in bytes 4..8 of every STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN header length.
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_INDICATION: u16 = 0x0011;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// What a datagram on a SIP UDP port is, before SIP parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAlive {
    /// Only CRLFs: a keep-alive, with nothing to answer.
    Crlf,
    /// A STUN Binding request: answer with [`binding_success`] for this transaction id.
    BindingRequest { transaction: [u8; 12] },
    /// A STUN Binding indication: a keep-alive with nothing to answer (RFC 5389 §10).
    BindingIndication,
    /// STUN framing (first two bits 0, the magic cookie) but nothing we answer: malformed,
    /// another method or class, or a comprehension-required attribute.
    OtherStun(StunFault),
}

/// Why a STUN-looking datagram is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunFault {
    /// Shorter than the header, a length not a multiple of 4 or not the datagram's.
    Length,
    /// An attribute runs past the message.
    Attribute,
    /// A comprehension-required attribute (type below 0x8000).
    Required(u16),
    /// Not a Binding request or indication (a response, another method).
    NotBinding(u16),
}

/// Classifies a datagram: `None` when it is neither a CRLF keep-alive nor STUN, so it goes
/// to the SIP parser. A SIP message starts with a letter (first byte 0x41 or above), a STUN
/// message with two zero bits and carries the magic cookie, so the two never overlap.
pub fn classify(datagram: &[u8]) -> Option<KeepAlive> {
    if !datagram.is_empty() && datagram.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Some(KeepAlive::Crlf);
    }
    if datagram.len() < 8 || datagram[0] & 0xC0 != 0 || u32_at(datagram, 4) != MAGIC_COOKIE {
        return None;
    }
    Some(match stun(datagram) {
        Ok(k) => k,
        Err(fault) => KeepAlive::OtherStun(fault),
    })
}

fn stun(datagram: &[u8]) -> Result<KeepAlive, StunFault> {
    if datagram.len() < HEADER {
        return Err(StunFault::Length);
    }
    let kind = u16_at(datagram, 0);
    let length = usize::from(u16_at(datagram, 2));
    if length % 4 != 0 || HEADER + length != datagram.len() {
        return Err(StunFault::Length);
    }
    let mut at = HEADER;
    while at < datagram.len() {
        if at + 4 > datagram.len() {
            return Err(StunFault::Attribute);
        }
        let (attribute, value) = (u16_at(datagram, at), usize::from(u16_at(datagram, at + 2)));
        let padded = value.div_ceil(4) * 4;
        if at + 4 + padded > datagram.len() {
            return Err(StunFault::Attribute);
        }
        if attribute < 0x8000 {
            return Err(StunFault::Required(attribute));
        }
        at += 4 + padded;
    }
    match kind {
        BINDING_REQUEST => {
            let mut transaction = [0u8; 12];
            transaction.copy_from_slice(&datagram[8..HEADER]);
            Ok(KeepAlive::BindingRequest { transaction })
        }
        BINDING_INDICATION => Ok(KeepAlive::BindingIndication),
        other => Err(StunFault::NotBinding(other)),
    }
}

/// The Binding success response for `transaction`: the header and one XOR-MAPPED-ADDRESS
/// naming `mapped` (an IPv4-mapped IPv6 address as IPv4, as the client knows it). 32 bytes
/// for IPv4, 44 for IPv6.
pub fn binding_success(transaction: &[u8; 12], mapped: SocketAddr) -> Vec<u8> {
    let ip = mapped.ip().to_canonical();
    let address_len = match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    };
    let attribute_len = 4 + address_len;
    let mut out = Vec::with_capacity(HEADER + 4 + attribute_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(4 + attribute_len as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(transaction);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(attribute_len as u16).to_be_bytes());
    out.push(0);
    // RFC 5389 §15.2: the port XORed with the cookie's top half; the address with the
    // cookie (IPv4), or the cookie followed by the transaction id (IPv6).
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(transaction);
    let x_port = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match ip {
        IpAddr::V4(v4) => {
            out.push(0x01);
            out.extend_from_slice(&x_port.to_be_bytes());
            out.extend(v4.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(v6) => {
            out.push(0x02);
            out.extend_from_slice(&x_port.to_be_bytes());
            out.extend(v6.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
    }
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSACTION: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn request(kind: u16, attributes: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&TRANSACTION);
        m.extend_from_slice(attributes);
        m
    }

    #[test]
    fn crlf_only_datagrams_are_keep_alives() {
        for d in [&b"\r\n"[..], b"\r\n\r\n", b"\r\n\r\n\r\n\r\n", b"\n"] {
            assert_eq!(classify(d), Some(KeepAlive::Crlf), "{d:?}");
        }
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"\r\n\r\nx"), None);
        assert_eq!(classify(b"OPTIONS sip:x SIP/2.0\r\n\r\n"), None);
    }

    #[test]
    fn a_binding_request_is_recognised_with_or_without_optional_attributes() {
        let bare = request(BINDING_REQUEST, &[]);
        assert_eq!(
            classify(&bare),
            Some(KeepAlive::BindingRequest {
                transaction: TRANSACTION
            })
        );
        // SOFTWARE (0x8022, 5 bytes padded to 8) and FINGERPRINT (0x8028) are optional.
        let attrs = [
            0x80, 0x22, 0x00, 0x05, b'p', b'h', b'o', b'n', b'e', 0, 0, 0, 0x80, 0x28, 0x00, 0x04,
            1, 2, 3, 4,
        ];
        assert!(matches!(
            classify(&request(BINDING_REQUEST, &attrs)),
            Some(KeepAlive::BindingRequest { .. })
        ));
        assert_eq!(
            classify(&request(BINDING_INDICATION, &[])),
            Some(KeepAlive::BindingIndication)
        );
    }

    #[test]
    fn malformed_or_foreign_stun_is_not_answered() {
        let ok = request(BINDING_REQUEST, &[]);
        let fault = |d: &[u8]| match classify(d) {
            Some(KeepAlive::OtherStun(f)) => Some(f),
            other => panic!("{d:?}: {other:?}"),
        };
        assert_eq!(
            fault(&ok[..12]),
            Some(StunFault::Length),
            "truncated header"
        );
        let mut long = ok.clone();
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            fault(&long),
            Some(StunFault::Length),
            "length field too short"
        );
        let mut odd = request(BINDING_REQUEST, &[0x80, 0x22, 0, 1, b'x']);
        assert_eq!(fault(&odd), Some(StunFault::Length), "not a multiple of 4");
        odd = request(BINDING_REQUEST, &[0x80, 0x22, 0, 9, 1, 2, 3, 4]);
        assert_eq!(
            fault(&odd),
            Some(StunFault::Attribute),
            "attribute overruns"
        );
        let username = request(BINDING_REQUEST, &[0x00, 0x06, 0, 4, b'u', b's', b'e', b'r']);
        assert_eq!(fault(&username), Some(StunFault::Required(0x0006)));
        assert_eq!(
            fault(&request(BINDING_SUCCESS, &[])),
            Some(StunFault::NotBinding(BINDING_SUCCESS))
        );
        // No cookie, or a first byte a SIP message could start with: not STUN at all.
        let mut no_cookie = ok.clone();
        no_cookie[5] ^= 0xff;
        assert_eq!(classify(&no_cookie), None);
        let mut letter = ok;
        letter[0] = b'R';
        assert_eq!(classify(&letter), None);
    }

    proptest::proptest! {
        /// Any datagram, and any bytes behind a STUN header with the cookie (the shape that
        /// reaches the attribute walk): classified without a panic; whatever is answered is a
        /// well-formed Binding request whose length field is the datagram's.
        #[test]
        fn any_bytes_are_classified_without_a_panic(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            kind in 0u16..0x0200,
            length in proptest::prelude::any::<u16>(),
        ) {
            let _ = classify(&body);
            let mut m = kind.to_be_bytes().to_vec();
            m.extend_from_slice(&length.to_be_bytes());
            m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            m.extend_from_slice(&TRANSACTION);
            m.extend_from_slice(&body);
            if let Some(KeepAlive::BindingRequest { transaction }) = classify(&m) {
                proptest::prop_assert_eq!(transaction, TRANSACTION);
                proptest::prop_assert_eq!(kind, BINDING_REQUEST);
                proptest::prop_assert_eq!(usize::from(length) + HEADER, m.len());
            }
        }
    }

    /// RFC 5769 §2.2 (IPv4) and §2.3 (IPv6): the XOR-MAPPED-ADDRESS bytes of the sample
    /// responses, for 192.0.2.1:32853 and [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    #[test]
    fn binding_success_matches_the_rfc_5769_vectors() {
        let v4 = binding_success(&TRANSACTION, "192.0.2.1:32853".parse().unwrap());
        assert_eq!(v4.len(), 32);
        assert_eq!(&v4[..4], &[0x01, 0x01, 0x00, 0x0c]);
        assert_eq!(&v4[4..8], &MAGIC_COOKIE.to_be_bytes());
        assert_eq!(&v4[8..20], &TRANSACTION);
        assert_eq!(
            &v4[20..],
            &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        let v6 = binding_success(
            &TRANSACTION,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap(),
        );
        assert_eq!(v6.len(), 44);
        assert_eq!(&v6[..4], &[0x01, 0x01, 0x00, 0x18]);
        assert_eq!(
            &v6[20..],
            &[
                0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
                0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
        // A dual-stack socket's view of an IPv4 client is answered as IPv4.
        let mapped = binding_success(&TRANSACTION, "[::ffff:192.0.2.1]:32853".parse().unwrap());
        assert_eq!(mapped, v4);
    }
}
