//! Unit tests of `digest.rs` (RFC vectors, verification, challenge rendering).

use super::*;

const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const REALM: &str = "http-auth@example.org";
const URI: &str = "/dir/index.html";

/// RFC 7616 §3.9.1.
const MD5_RESPONSE: &str = "8ca523f5e9506fed4657c9700eebdbec";
/// RFC 7616 §3.9.1.
const SHA256_RESPONSE: &str = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";
/// Same inputs with SHA-512/256, computed independently with Python's
/// `hashlib.new('sha512_256')`; the HA1 was cross-checked with `openssl dgst -sha512-256`.
const SHA512_256_HA1: &str = "fb174f5c3c7802721517cae13b98e2b8dae2e0118cb705d94ee29946319204ce";
const SHA512_256_RESPONSE: &str =
    "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0";

fn creds<'a>(algorithm: Option<&'a str>, response: &'a str) -> DigestCredentials<'a> {
    DigestCredentials {
        username: "Mufasa",
        realm: REALM,
        nonce: NONCE,
        uri: URI,
        response,
        algorithm,
        cnonce: Some(CNONCE),
        qop: Some("auth"),
        nc: Some(1),
        nc_raw: Some("00000001"),
        opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"),
        userhash: false,
    }
}

fn mufasa(algorithm: Algorithm) -> Ha1 {
    Ha1::from_password(algorithm, "Mufasa", REALM, "Circle of Life")
}

#[test]
fn rfc7616_md5_vector() {
    let c = creds(Some("MD5"), MD5_RESPONSE);
    assert_eq!(
        verify(&c, "GET", &mufasa(Algorithm::Md5)),
        Verdict::Accepted
    );
}

#[test]
fn absent_algorithm_means_md5() {
    let c = creds(None, MD5_RESPONSE);
    assert_eq!(
        verify(&c, "GET", &mufasa(Algorithm::Md5)),
        Verdict::Accepted
    );
}

#[test]
fn rfc7616_sha256_vector() {
    let c = creds(Some("SHA-256"), SHA256_RESPONSE);
    assert_eq!(
        verify(&c, "GET", &mufasa(Algorithm::Sha256)),
        Verdict::Accepted
    );
}

#[test]
fn sha512_256_independent_vector() {
    let ha1 = mufasa(Algorithm::Sha512_256);
    assert_eq!(ha1.hex.as_bytes(), SHA512_256_HA1.as_bytes());
    let c = creds(Some("sha-512-256"), SHA512_256_RESPONSE);
    assert_eq!(verify(&c, "GET", &ha1), Verdict::Accepted);
}

#[test]
fn stored_hex_ha1_verifies_like_the_password() {
    let ha1 =
        Ha1::from_hex(Algorithm::Sha512_256, &SHA512_256_HA1.to_uppercase()).expect("valid hex");
    let c = creds(Some("SHA-512-256"), SHA512_256_RESPONSE);
    assert_eq!(verify(&c, "GET", &ha1), Verdict::Accepted);
}

#[test]
fn from_hex_rejects_wrong_length_and_non_hex() {
    assert!(Ha1::from_hex(Algorithm::Sha256, &SHA512_256_HA1[..32]).is_err());
    assert!(Ha1::from_hex(Algorithm::Md5, SHA512_256_HA1).is_err());
    let bad = format!("{}g", &SHA512_256_HA1[..63]);
    assert!(Ha1::from_hex(Algorithm::Sha256, &bad).is_err());
    assert!(Ha1::from_hex(Algorithm::Md5, &SHA512_256_HA1[..32]).is_ok());
}

#[test]
fn uppercase_response_hex_is_accepted() {
    let upper = SHA256_RESPONSE.to_uppercase();
    let c = creds(Some("SHA-256"), &upper);
    assert_eq!(
        verify(&c, "GET", &mufasa(Algorithm::Sha256)),
        Verdict::Accepted
    );
}

#[test]
fn wrong_password_is_a_mismatch() {
    let ha1 = Ha1::from_password(Algorithm::Sha256, "Mufasa", REALM, "Circle of life");
    let c = creds(Some("SHA-256"), SHA256_RESPONSE);
    assert_eq!(verify(&c, "GET", &ha1), Verdict::Mismatch);
}

#[test]
fn wrong_uri_method_nc_or_cnonce_is_a_mismatch() {
    let ha1 = mufasa(Algorithm::Sha256);
    let base = creds(Some("SHA-256"), SHA256_RESPONSE);
    let wrong_uri = DigestCredentials {
        uri: "/dir/index.htm",
        ..base
    };
    let wrong_nc = DigestCredentials {
        nc: Some(2),
        nc_raw: Some("00000002"),
        ..base
    };
    let wrong_cnonce = DigestCredentials {
        cnonce: Some("x"),
        ..base
    };
    assert_eq!(verify(&wrong_uri, "GET", &ha1), Verdict::Mismatch);
    assert_eq!(verify(&wrong_nc, "GET", &ha1), Verdict::Mismatch);
    assert_eq!(verify(&wrong_cnonce, "GET", &ha1), Verdict::Mismatch);
    assert_eq!(verify(&base, "REGISTER", &ha1), Verdict::Mismatch);
}

#[test]
fn truncated_padded_or_empty_response_is_a_mismatch() {
    let ha1 = mufasa(Algorithm::Sha256);
    let long = format!("{SHA256_RESPONSE}00");
    for response in [&SHA256_RESPONSE[..63], long.as_str(), ""] {
        let c = creds(Some("SHA-256"), response);
        assert_eq!(verify(&c, "GET", &ha1), Verdict::Mismatch, "{response}");
    }
}

#[test]
fn missing_or_other_qop_is_refused() {
    let ha1 = mufasa(Algorithm::Md5);
    let base = creds(Some("MD5"), MD5_RESPONSE);
    let no_qop = DigestCredentials { qop: None, ..base };
    let auth_int = DigestCredentials {
        qop: Some("auth-int"),
        ..base
    };
    assert_eq!(
        verify(&no_qop, "GET", &ha1),
        Verdict::Refused(Refusal::QopMissing)
    );
    assert_eq!(
        verify(&auth_int, "GET", &ha1),
        Verdict::Refused(Refusal::QopUnsupported)
    );
}

#[test]
fn malformed_nc_or_missing_cnonce_is_refused() {
    let ha1 = mufasa(Algorithm::Md5);
    let base = creds(Some("MD5"), MD5_RESPONSE);
    let cases = [
        DigestCredentials { nc: None, ..base },
        DigestCredentials {
            nc_raw: Some("1"),
            ..base
        },
        DigestCredentials {
            nc: Some(2),
            ..base
        },
        DigestCredentials {
            nc_raw: Some("+0000001"),
            ..base
        },
    ];
    for c in cases {
        assert_eq!(
            verify(&c, "GET", &ha1),
            Verdict::Refused(Refusal::NonceCountMalformed)
        );
    }
    let no_cnonce = DigestCredentials {
        cnonce: None,
        ..base
    };
    assert_eq!(
        verify(&no_cnonce, "GET", &ha1),
        Verdict::Refused(Refusal::CnonceMissing)
    );
}

#[test]
fn sess_unknown_and_mismatched_algorithms_are_refused() {
    for name in ["MD5-sess", "SHA-256-sess", "SHA-512-256-sess", "SHA-1", ""] {
        assert_eq!(Algorithm::from_param(name), None, "{name}");
        let c = creds(Some(name), MD5_RESPONSE);
        assert_eq!(
            verify(&c, "GET", &mufasa(Algorithm::Md5)),
            Verdict::Refused(Refusal::UnsupportedAlgorithm)
        );
    }
    let c = creds(Some("MD5"), MD5_RESPONSE);
    assert_eq!(
        verify(&c, "GET", &mufasa(Algorithm::Sha256)),
        Verdict::Refused(Refusal::AlgorithmMismatch)
    );
}

#[test]
fn algorithm_names_round_trip() {
    for alg in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256] {
        assert_eq!(Algorithm::from_param(alg.as_str()), Some(alg));
        assert_eq!(
            Algorithm::from_param(&alg.as_str().to_lowercase()),
            Some(alg)
        );
    }
}

#[test]
fn dummy_ha1_never_accepts_even_with_its_own_response() {
    let dummies = DummyHa1s::new();
    let dummy = dummies.get(Algorithm::Sha256);
    // Forge the response a client holding the dummy's value would send.
    let real = Ha1 {
        dummy: false,
        ..*dummy
    };
    let base = creds(Some("SHA-256"), "");
    let ha2 = hash_parts(Algorithm::Sha256, &[b"GET", URI.as_bytes()]);
    let forged = hash_parts(
        Algorithm::Sha256,
        &[
            real.hex.as_bytes(),
            NONCE.as_bytes(),
            b"00000001",
            CNONCE.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ],
    );
    let forged = std::str::from_utf8(forged.as_bytes()).expect("hex is ascii");
    let c = DigestCredentials {
        response: forged,
        ..base
    };
    assert_eq!(verify(&c, "GET", &real), Verdict::Accepted);
    assert_eq!(verify(&c, "GET", dummy), Verdict::Mismatch);
}

#[test]
fn debug_output_redacts_secrets() {
    let ha1 = mufasa(Algorithm::Sha512_256);
    let shown = format!("{ha1:?} {:?}", DummyHa1s::new());
    assert!(!shown.contains(SHA512_256_HA1), "{shown}");
    let c = creds(Some("SHA-256"), SHA256_RESPONSE);
    let shown = format!("{c:?}");
    assert!(!shown.contains(SHA256_RESPONSE), "{shown}");
}

#[test]
fn challenge_renders_header_value() {
    let mut out = String::new();
    Challenge {
        realm: "example.com",
        nonce: "abc",
        algorithm: Algorithm::Sha256,
        stale: false,
        opaque: None,
    }
    .write_to(&mut out);
    assert_eq!(
        out,
        r#"Digest realm="example.com", nonce="abc", algorithm=SHA-256, qop="auth""#
    );

    out.clear();
    Challenge {
        realm: r#"a"b\c"#,
        nonce: "n",
        algorithm: Algorithm::Md5,
        stale: true,
        opaque: Some("o"),
    }
    .write_to(&mut out);
    assert_eq!(
        out,
        r#"Digest realm="a\"b\\c", nonce="n", opaque="o", algorithm=MD5, qop="auth", stale=true"#
    );
}

#[test]
fn hex_helpers_match_the_obvious_definition() {
    for n in 0..16u8 {
        assert_eq!(hex_nibble(n), b"0123456789abcdef"[usize::from(n)]);
    }
    for b in 0..=255u8 {
        let want = if (b'A'..=b'F').contains(&b) {
            b + 32
        } else {
            b
        };
        assert_eq!(lower_hex_letter(b), want);
    }
}
