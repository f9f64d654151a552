//! TLS: listeners that run the handshake inside each connection's task, then hand the decrypted stream to the same framing,
//! deadlines and handler as TCP (`tcp::serve_stream`). The handshake has three steps, each
//! under `handshake_timeout`: read the whole ClientHello (no crypto yet, so a slow or partial
//! hello holds only its connection slot), wait for one of `max_handshakes` slots, and do the
//! CPU-heavy rest. Stalled handshakes therefore cannot starve real ones of slots (T9).
//!
//! Certificate material (server chain and key, per-domain SNI certificates, client CAs, CRLs)
//! is loaded from PEM files into one `rustls::ServerConfig` per client-auth mode in use, kept
//! behind a lock that is only held to clone an `Arc`. [`TlsState::reload`] builds the new
//! material first and swaps it in only when every file loaded, so a bad file keeps the old
//! material; established connections keep the config they were accepted with.
//!
//! Only TLS 1.3 and 1.2 with rustls's default (AEAD, forward-secret) suites; rustls has no
//! renegotiation and no SSLv3/TLS 1.0/1.1, NULL or EXPORT suites. With client certificates on,
//! session resumption is off, so every connection's certificate is verified (and checked
//! against the CRLs) in full.
//!
//! A verified client certificate's identity ([`PeerIdentity`]) is the set of its SAN URIs with
//! a `sip:` or `sips:` scheme, as AoRs; see that type for the rule.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::task::TaskTracker;

use super::tcp::{accept_each, serve_stream, StreamContext};
use super::{Source, Transport};
use crate::config::{ClientAuth, TlsConfig};
use crate::metrics::{HandshakeOutcome, Metrics};
use crate::sip::{Aor, Uri};

/// SAN URIs read from one certificate at most; a certificate with more gives no identity.
pub const MAX_IDENTITY_URIS: usize = 16;

/// The identity a verified client certificate proves.
///
/// The rule (pinned by tests): every `subjectAltName` URI whose scheme is `sip` or `sips` and
/// that parses as a SIP URI with a user part names one AoR, in canonical form
/// (`sip:user@host`, host lower-cased, `sips` folded to `sip`). A certificate may name several
/// AoRs (a desk phone with several lines) and may register any of them. A certificate with no
/// such URI, for example one with only a subject CN, proves no SIP identity: its connection
/// is treated like one without a certificate and must use Digest. A certificate naming more
/// than [`MAX_IDENTITY_URIS`] AoRs is treated the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    aors: Vec<Aor>,
}

impl PeerIdentity {
    /// The identity in a DER certificate, or `None` when it names no SIP AoR.
    pub fn from_certificate(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut aors = Vec::new();
        for name in &san.value.general_names {
            let x509_parser::extensions::GeneralName::URI(text) = name else {
                continue;
            };
            if let Some(aor) = identity_aor(text) {
                if !aors.contains(&aor) {
                    aors.push(aor);
                }
            }
        }
        (!aors.is_empty() && aors.len() <= MAX_IDENTITY_URIS).then_some(PeerIdentity { aors })
    }

    /// The AoRs this identity may register, canonical.
    pub fn aors(&self) -> &[Aor] {
        &self.aors
    }

    /// Whether this identity covers `aor` (any SIP URI text; compared in canonical form).
    pub fn permits(&self, aor: &str) -> bool {
        identity_aor(aor).is_some_and(|a| self.aors.contains(&a))
    }
}

/// The AoR of a SIP or SIPS URI with a user part, under `sip:`; `None` otherwise.
fn identity_aor(text: &str) -> Option<Aor> {
    let uri = Uri::parse(text).ok()?;
    uri.user?;
    Some(uri.aor()?.to_sip())
}

/// A TLS setting that could not be loaded: the config key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct TlsError {
    pub key: String,
    pub problem: String,
}

impl TlsError {
    fn new(key: &str, problem: impl Into<String>) -> TlsError {
        TlsError {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The loaded material: one server config per client-auth mode in use, and each served
/// certificate's expiry.
#[derive(Debug)]
struct Material {
    configs: HashMap<ClientAuth, Arc<ServerConfig>>,
    /// `(label, notAfter as Unix seconds)`: `default`, then each SNI domain.
    expiries: Vec<(String, i64)>,
}

/// The TLS material of a running server, shared by its TLS listeners and the reload signal.
#[derive(Clone)]
pub struct TlsState {
    inner: Arc<StateInner>,
}

struct StateInner {
    config: TlsConfig,
    current: RwLock<Arc<Material>>,
    metrics: Metrics,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsState")
    }
}

impl TlsState {
    /// Loads every file `config` names; the error names the first key that failed.
    pub fn load(config: &TlsConfig, metrics: Metrics) -> Result<TlsState, TlsError> {
        let material = Material::load(config)?;
        publish_expiries(&metrics, &material);
        Ok(TlsState {
            inner: Arc::new(StateInner {
                config: config.clone(),
                current: RwLock::new(Arc::new(material)),
                metrics,
            }),
        })
    }

    /// Loads the files and throws the result away: `check-config`.
    pub fn check(config: &TlsConfig) -> Result<(), TlsError> {
        Material::load(config).map(drop)
    }

    /// Reads every file again. On success new handshakes use the new material; on failure the
    /// old material stays and the error says which file and why. Connections already
    /// established are not touched either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        let i = &self.inner;
        match Material::load(&i.config) {
            Ok(material) => {
                publish_expiries(&i.metrics, &material);
                *i.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
                i.metrics.tls_reload(true);
                tracing::info!("tls material reloaded");
                Ok(())
            }
            Err(e) => {
                i.metrics.tls_reload(false);
                tracing::error!(error = %e, "tls reload failed; keeping the previous certificates");
                Err(e)
            }
        }
    }

    /// The current server config for a listener with client-auth `mode`.
    pub(crate) fn server_config(&self, mode: ClientAuth) -> Option<Arc<ServerConfig>> {
        let material = self
            .inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        material.configs.get(&mode).cloned()
    }
}

fn publish_expiries(metrics: &Metrics, material: &Material) {
    for (label, not_after) in &material.expiries {
        metrics
            .tls_cert_expiry
            .with_label_values(&[label.as_str()])
            .set(*not_after);
    }
}

impl Material {
    fn load(config: &TlsConfig) -> Result<Material, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let default = certified_key(
            "tls.cert_file",
            &config.cert_file,
            "tls.key_file",
            &config.key_file,
            &provider,
        )?;
        let mut expiries = vec![("default".to_owned(), not_after(&default))];
        let mut by_name = HashMap::new();
        for (index, sni) in config.certificates.iter().enumerate() {
            let key = certified_key(
                &format!("tls.certificates[{index}].cert_file"),
                &sni.cert_file,
                &format!("tls.certificates[{index}].key_file"),
                &sni.key_file,
                &provider,
            )?;
            expiries.push((sni.domain.clone(), not_after(&key)));
            by_name.insert(sni.domain.clone(), key);
        }
        let resolver = Arc::new(SniResolver { default, by_name });

        let client_roots = match &config.client_ca_file {
            Some(path) => Some(client_roots(path)?),
            None => None,
        };
        let mut crls = Vec::new();
        for (index, path) in config.crl_files.iter().enumerate() {
            let key = format!("tls.crl_files[{index}]");
            let iter = CertificateRevocationListDer::pem_file_iter(path)
                .map_err(|e| TlsError::new(&key, pem_problem(path, &e)))?;
            let before = crls.len();
            for crl in iter {
                crls.push(crl.map_err(|e| TlsError::new(&key, pem_problem(path, &e)))?);
            }
            if crls.len() == before {
                return Err(TlsError::new(&key, format!("{path:?} holds no X509 CRL")));
            }
        }

        let mut configs = HashMap::new();
        for mode in config.listeners.iter().map(|l| l.client_auth) {
            if configs.contains_key(&mode) {
                continue;
            }
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::new("tls", e.to_string()))?;
            let mut server = match (mode, &client_roots) {
                (ClientAuth::Off, _) => builder
                    .with_no_client_auth()
                    .with_cert_resolver(resolver.clone()),
                (_, None) => {
                    return Err(TlsError::new(
                        "tls.client_ca_file",
                        "is required for client_auth \"optional\" or \"required\"",
                    ))
                }
                (ClientAuth::Optional | ClientAuth::Required, Some(roots)) => {
                    let mut verifier = WebPkiClientVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .with_crls(crls.iter().cloned());
                    if mode == ClientAuth::Optional {
                        verifier = verifier.allow_unauthenticated();
                    }
                    let verifier = verifier
                        .build()
                        .map_err(|e| TlsError::new("tls.crl_files", e.to_string()))?;
                    let mut server = builder
                        .with_client_cert_verifier(verifier)
                        .with_cert_resolver(resolver.clone());
                    // A resumed session skips certificate verification (and the CRL check).
                    server.session_storage = Arc::new(NoServerSessionStorage {});
                    server.send_tls13_tickets = 0;
                    server
                }
            };
            server.ignore_client_order = false;
            configs.insert(mode, Arc::new(server));
        }
        Ok(Material { configs, expiries })
    }
}

fn certified_key(
    cert_key: &str,
    cert_path: &Path,
    key_key: &str,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert_key, cert_path)?;
    server_usage(cert_key, cert_path, &chain[0])?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| TlsError::new(key_key, pem_problem(key_path, &e)))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError::new(
            key_key,
            format!("{key_path:?} does not fit {cert_path:?}: {e}"),
        )
    })?;
    Ok(Arc::new(certified))
}

/// A served leaf must be usable for TLS server authentication: with an extended key usage
/// extension, it must list serverAuth (or anyExtendedKeyUsage). A client-only certificate
/// (clientAuth, a common mix-up with the mTLS files) is refused by name here rather than by
/// every client's handshake. Without the extension, any use is allowed (RFC 5280 §4.2.1.12).
fn server_usage(key: &str, path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Ok(()); // read_certs already refused what does not parse
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.server_auth || eku.value.any) => {
            let has = match eku.value.client_auth {
                true => "clientAuth only: a client certificate",
                false => "no serverAuth",
            };
            Err(TlsError::new(
                key,
                format!("{path:?}: the certificate's extended key usage has {has}; a server certificate needs serverAuth"),
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(TlsError::new(
            key,
            format!("{path:?}: the extended key usage extension does not parse: {e}"),
        )),
    }
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(key, pem_problem(path, &e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(key, pem_problem(path, &e)))?;
    if chain.is_empty() {
        return Err(TlsError::new(
            key,
            format!("{path:?} holds no CERTIFICATE block"),
        ));
    }
    for cert in &chain {
        if x509_parser::parse_x509_certificate(cert).is_err() {
            return Err(TlsError::new(
                key,
                format!("{path:?} holds a certificate that does not parse"),
            ));
        }
    }
    Ok(chain)
}

fn client_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let key = "tls.client_ca_file";
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(read_certs(key, path)?);
    if added == 0 || ignored > 0 {
        return Err(TlsError::new(
            key,
            format!("{path:?}: {ignored} certificate(s) are not usable as trust anchors"),
        ));
    }
    Ok(Arc::new(roots))
}

fn pem_problem(path: &Path, e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => {
            format!("cannot read {path:?}: {}", io_reason(io))
        }
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{path:?} holds no PEM block of the expected kind")
        }
        other => format!("{path:?} is not valid PEM: {other}"),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// The leaf's `notAfter` (Unix seconds); 0 if it cannot be read (it parsed at load).
fn not_after(key: &CertifiedKey) -> i64 {
    key.cert
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp())
}

/// The certificate for the SNI name when one is configured for it, else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

/// Bounds shared by every TLS listener of a server.
#[derive(Clone)]
pub struct HandshakeLimits {
    /// Bounds each step: reading the ClientHello, the wait for a slot, the rest.
    pub timeout: std::time::Duration,
    /// Handshakes in progress at once.
    pub slots: Arc<Semaphore>,
}

/// Accepts TLS connections on `listener` with client-auth `mode`. `ctx.limits.max_connections`
/// bounds this listener's open connections (handshaking or established).
pub async fn accept_loop(
    listener: TcpListener,
    mode: ClientAuth,
    state: TlsState,
    handshakes: HandshakeLimits,
    ctx: StreamContext,
    tracker: TaskTracker,
) {
    let serve_ctx = ctx.clone();
    accept_each(listener, &ctx, &tracker, move |stream, peer, local| {
        handshake_then_serve(
            stream,
            peer,
            local,
            state.server_config(mode),
            handshakes.clone(),
            serve_ctx.clone(),
        )
    })
    .await;
}

async fn handshake_then_serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    config: Option<Arc<ServerConfig>>,
    limits: HandshakeLimits,
    ctx: StreamContext,
) {
    let Some(config) = config else {
        return;
    };
    let metrics = &ctx.metrics;
    let accepted = std::time::Instant::now();
    // Three bounds of `limits.timeout` each: reading the ClientHello (cheap, no slot, so a
    // stalled or partial hello costs only its connection slot), the wait for a handshake
    // slot, and the CPU-heavy rest of the handshake.
    let handshake = async {
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match tokio::time::timeout(limits.timeout, hello).await {
            Err(_) => return Err(HandshakeOutcome::Timeout),
            Ok(Err(e)) => return Err(failed(peer, &e)),
            Ok(Ok(start)) => start,
        };
        let Ok(Ok(_slot)) = tokio::time::timeout(limits.timeout, limits.slots.acquire()).await
        else {
            return Err(HandshakeOutcome::Timeout);
        };
        match tokio::time::timeout(limits.timeout, start.into_stream(config)).await {
            Err(_) => Err(HandshakeOutcome::Timeout),
            Ok(Err(e)) => Err(failed(peer, &e)),
            Ok(Ok(tls)) => Ok(tls),
        }
    };
    let tls = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = handshake => match r {
            Ok(tls) => tls,
            Err(outcome) => {
                metrics.tls_handshake(outcome);
                return;
            }
        },
    };
    metrics.tls_handshake(HandshakeOutcome::Ok);
    metrics.tls_handshake_took(accepted.elapsed());
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| PeerIdentity::from_certificate(leaf))
        .map(Arc::new);
    if let Some(id) = &identity {
        tracing::debug!(%peer, aors = ?id.aors(), "tls client certificate identity");
    }
    let src = Source {
        transport: Transport::Tls,
        peer,
        local,
        flow: None,
        identity,
    };
    serve_stream(tls, src, ctx).await;
}

fn failed(peer: SocketAddr, e: &std::io::Error) -> HandshakeOutcome {
    let outcome = classify(e);
    tracing::debug!(%peer, error = %e, ?outcome, "tls handshake failed");
    outcome
}

fn classify(e: &std::io::Error) -> HandshakeOutcome {
    use rustls::Error as E;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(_) | E::NoCertificatesPresented)
        | Some(E::InvalidCertRevocationList(_)) => HandshakeOutcome::FailedVerification,
        _ => HandshakeOutcome::ProtocolError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_sans(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(text: &str) -> rcgen::SanType {
        rcgen::SanType::URI(text.try_into().expect("ia5"))
    }

    #[test]
    fn one_san_uri_is_the_identity() {
        let id = PeerIdentity::from_certificate(&cert_with_sans(
            vec![uri("sip:Alice@Example.TEST")],
            "ignored",
        ))
        .expect("identity");
        assert_eq!(id.aors(), ["sip:Alice@example.test"]);
        assert!(id.permits("sip:Alice@example.test"));
        assert!(id.permits("sips:Alice@EXAMPLE.test"));
        assert!(
            !id.permits("sip:alice@example.test"),
            "user part is case-sensitive"
        );
        assert!(!id.permits("sip:bob@example.test"));
    }

    #[test]
    fn several_sip_uris_each_count_and_other_schemes_are_ignored() {
        let id = PeerIdentity::from_certificate(&cert_with_sans(
            vec![
                uri("https://example.test/alice"),
                uri("sips:alice@example.test"),
                uri("sip:line2@example.test"),
                rcgen::SanType::DnsName("phone.example.test".try_into().expect("ia5")),
            ],
            "alice",
        ))
        .expect("identity");
        assert_eq!(
            id.aors(),
            ["sip:alice@example.test", "sip:line2@example.test"]
        );
    }

    #[test]
    fn no_sip_uri_means_no_identity() {
        let cn_only = cert_with_sans(vec![], "alice@example.test");
        assert_eq!(PeerIdentity::from_certificate(&cn_only), None);
        let host_only = cert_with_sans(vec![uri("sip:example.test")], "x");
        assert_eq!(PeerIdentity::from_certificate(&host_only), None);
        let too_many = cert_with_sans(
            (0..=MAX_IDENTITY_URIS)
                .map(|n| uri(&format!("sip:u{n}@example.test")))
                .collect(),
            "x",
        );
        assert_eq!(PeerIdentity::from_certificate(&too_many), None);
        assert_eq!(PeerIdentity::from_certificate(b"not a certificate"), None);
    }
}
