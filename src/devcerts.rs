//! `sipward certs dev --out DIR`: a TEST-ONLY certificate set for the development profile and
//! the TLS tests, made with rcgen (ECDSA P-256, SHA-256). Every private key is written next to
//! its certificate and is therefore public: never trust this CA outside a test. Keys are still
//! written 0600, an existing set is kept unless `--force`, and a missing parent folder is an
//! error (a typo in `--out` must not create a tree).
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem`, `ca.key` | the development CA (10 years), trusted for server and client certificates |
//! | `ca.crl` | a CRL from that CA listing `revoked.pem` |
//! | `server.pem`, `server.key` | server certificate: DNS `localhost`, `example.test`, `sip.example.test`; IP `127.0.0.1`, `::1` |
//! | `alice.pem`, `bob.pem` (+ `.key`) | client certificates, SAN URI `sip:alice@example.test` / `sip:bob@example.test` |
//! | `two-aors.pem` | one certificate naming both alice and bob (a phone with two lines) |
//! | `cn-only.pem` | CN `alice@example.test`, no SAN: proves no SIP identity |
//! | `untrusted.pem`, `untrusted-ca.pem` | alice, issued by a CA the server does not trust |
//! | `expired.pem`, `not-yet-valid.pem` | alice, outside their validity window |
//! | `server-auth-only.pem` | alice, EKU serverAuth only (not usable for client auth) |
//! | `revoked.pem` | alice, listed in `ca.crl` |

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::fsutil;

/// The SIP domain the development profile serves.
pub const DEV_DOMAIN: &str = "example.test";
/// Leaf certificates are valid this long from the moment they are made.
const LEAF_DAYS: i64 = 3 * 365;
const CA_DAYS: i64 = 10 * 365;
/// Files whose presence means a set is already there (refused without `--force`).
const SET_MARKERS: &[&str] = &["ca.pem", "ca.key", "server.pem", "server.key"];

/// What one leaf certificate looks like.
struct Leaf<'a> {
    file: &'a str,
    cn: &'a str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    /// Validity offsets from now, in days.
    not_before: i64,
    not_after: i64,
    serial: u64,
    trusted: bool,
}

/// Why a set was not written, before anything was.
#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    #[error("{}: no such folder (create it first)", .0.display())]
    MissingParent(PathBuf),
    #[error("{} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("{path} already holds a certificate set ({marker}); pass --force to replace it", path = .0.display(), marker = .1)]
    Exists(PathBuf, String),
}

/// Writes the whole set into `out`; returns the file names written. `out` may be missing
/// (it is created, one level only) but its parent must exist. A folder that already holds a
/// file of the set is refused unless `force`. Private keys (`*.key`) are written 0600,
/// certificates and the CRL with the usual mode.
pub fn write_dev_set(out: &Path, force: bool) -> anyhow::Result<Vec<String>> {
    prepare_out(out, force)?;
    let now = OffsetDateTime::now_utc();
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = out.join(name);
        let result = if name.ends_with(".key") {
            fsutil::write_private(&path, text.as_bytes())
        } else {
            std::fs::write(&path, text)
        };
        result.with_context(|| format!("writing {}", path.display()))?;
        written.push(name.to_owned());
        Ok(())
    };

    let (ca_params, ca_key) = new_ca("sipward development CA (TEST ONLY)", now)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write("ca.pem", &ca_cert.pem())?;
    write("ca.key", &ca_key.serialize_pem())?;
    let ca = Issuer::new(ca_params, ca_key);

    let (other_params, other_key) = new_ca("untrusted CA (TEST ONLY)", now)?;
    write(
        "untrusted-ca.pem",
        &other_params.self_signed(&other_key)?.pem(),
    )?;
    let other = Issuer::new(other_params, other_key);

    let alice = || vec![sip_uri("alice")];
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let leaves = [
        Leaf {
            file: "server",
            cn: "sip.example.test",
            sans: vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::DnsName(DEV_DOMAIN.try_into()?),
                SanType::DnsName(format!("sip.{DEV_DOMAIN}").try_into()?),
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            ],
            eku: ExtendedKeyUsagePurpose::ServerAuth,
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 1,
            trusted: true,
        },
        Leaf {
            file: "alice",
            cn: "alice",
            sans: alice(),
            eku: client.clone(),
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 2,
            trusted: true,
        },
        Leaf {
            file: "bob",
            cn: "bob",
            sans: vec![sip_uri("bob")],
            eku: client.clone(),
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 3,
            trusted: true,
        },
        Leaf {
            file: "two-aors",
            cn: "alice and bob",
            sans: vec![sip_uri("alice"), sip_uri("bob")],
            eku: client.clone(),
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 4,
            trusted: true,
        },
        Leaf {
            file: "cn-only",
            cn: "alice@example.test",
            sans: Vec::new(),
            eku: client.clone(),
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 5,
            trusted: true,
        },
        Leaf {
            file: "untrusted",
            cn: "alice",
            sans: alice(),
            eku: client.clone(),
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 6,
            trusted: false,
        },
        Leaf {
            file: "expired",
            cn: "alice",
            sans: alice(),
            eku: client.clone(),
            not_before: -400,
            not_after: -30,
            serial: 7,
            trusted: true,
        },
        Leaf {
            file: "not-yet-valid",
            cn: "alice",
            sans: alice(),
            eku: client.clone(),
            not_before: 30,
            not_after: 400,
            serial: 8,
            trusted: true,
        },
        Leaf {
            file: "server-auth-only",
            cn: "alice",
            sans: alice(),
            eku: ExtendedKeyUsagePurpose::ServerAuth,
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 9,
            trusted: true,
        },
        Leaf {
            file: "revoked",
            cn: "alice",
            sans: alice(),
            eku: client,
            not_before: -1,
            not_after: LEAF_DAYS,
            serial: 10,
            trusted: true,
        },
    ];
    for leaf in &leaves {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, leaf.cn);
        params.subject_alt_names = leaf.sans.clone();
        params.extended_key_usages = vec![leaf.eku.clone()];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = now + Duration::days(leaf.not_before);
        params.not_after = now + Duration::days(leaf.not_after);
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let issuer = if leaf.trusted { &ca } else { &other };
        let cert = params.signed_by(&key, issuer)?;
        write(&format!("{}.pem", leaf.file), &cert.pem())?;
        write(&format!("{}.key", leaf.file), &key.serialize_pem())?;
    }

    let crl = CertificateRevocationListParams {
        this_update: now - Duration::days(1),
        next_update: now + Duration::days(LEAF_DAYS),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(10u64),
            revocation_time: now - Duration::days(1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca)?;
    write("ca.crl", &crl.pem()?)?;
    Ok(written)
}

/// Checks `out` (see [`write_dev_set`]) and creates it when missing.
fn prepare_out(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() {
        if !out.is_dir() {
            return Err(DevCertsError::NotAFolder(out.to_owned()).into());
        }
        if !force {
            if let Some(name) = SET_MARKERS.iter().find(|f| out.join(f).exists()) {
                return Err(DevCertsError::Exists(out.to_owned(), (*name).to_owned()).into());
            }
        }
        return Ok(());
    }
    let parent = match out.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    if !parent.is_dir() {
        return Err(DevCertsError::MissingParent(parent.to_owned()).into());
    }
    std::fs::create_dir(out).with_context(|| format!("creating {}", out.display()))
}

fn new_ca(cn: &str, now: OffsetDateTime) -> anyhow::Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_DAYS);
    Ok((params, KeyPair::generate()?))
}

fn sip_uri(user: &str) -> SanType {
    let uri = format!("sip:{user}@{DEV_DOMAIN}");
    SanType::URI(uri.try_into().expect("an ASCII URI is an IA5String"))
}
