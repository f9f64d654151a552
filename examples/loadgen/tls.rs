//! SIP over TLS load: handshake storms (TCP connect, TLS 1.3 handshake with an ECDSA P-256
//! client certificate, one REGISTER answered 200 on the certificate alone, close) and idle
//! connections that register once and re-register over the same connection.
//!
//! Each connection presents its own client certificate naming `sip:u<N>@<domain>` in its SAN,
//! issued at start by the CA of a `sipward certs dev` set (its `ca.pem` and `ca.key`), so every
//! device has its own AoR and one binding. Session resumption is off in the client: every
//! connection is a full handshake, whatever the server offers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::procs;
use crate::sipmsg::{self, Register};
use crate::stats::Samples;

/// Client identities: one certificate per user, each with its connector.
pub(crate) struct Identities {
    pub(crate) domain: String,
    pub(crate) first_user: u32,
    connectors: Vec<TlsConnector>,
}

impl Identities {
    /// Issues `count` client certificates for u<first_user>.. from the dev CA in `certs`.
    pub(crate) fn issue(
        certs: &Path,
        domain: &str,
        first_user: u32,
        count: usize,
    ) -> anyhow::Result<Identities> {
        let ca_pem = std::fs::read(certs.join("ca.pem")).context("ca.pem")?;
        let ca_key = std::fs::read_to_string(certs.join("ca.key")).context("ca.key")?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&ca_pem)
            .map_err(|e| anyhow::anyhow!("ca.pem: {e}"))?;
        let ca_cert = pem
            .parse_x509()
            .map_err(|e| anyhow::anyhow!("ca.pem: {e}"))?;
        let ca_cn = ca_cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .context("CA common name")?
            .to_owned();
        // The issuer is rebuilt from the CA's name, key usages and key (as devcerts made it):
        // a child's issuer name and authority key identifier then match the CA certificate.
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_cn);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::Issuer::new(ca_params, rcgen::KeyPair::from_pem(&ca_key)?);

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(certs.join("ca.pem"))? {
            roots.add(c?)?;
        }
        let now = time::OffsetDateTime::now_utc();
        let mut connectors = Vec::with_capacity(count);
        for i in 0..count {
            let user = format!("u{}", first_user as usize + i);
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, user.as_str());
            params.subject_alt_names = vec![rcgen::SanType::URI(
                format!("sip:{user}@{domain}").try_into()?,
            )];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            params.is_ca = rcgen::IsCa::ExplicitNoCa;
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(30);
            params.serial_number = Some(rcgen::SerialNumber::from(1000 + i as u64));
            params.use_authority_key_identifier_extension = true;
            let key = rcgen::KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            let chain = vec![cert.der().clone()];
            let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain, key)?;
            config.resumption = rustls::client::Resumption::disabled();
            connectors.push(TlsConnector::from(Arc::new(config)));
        }
        Ok(Identities {
            domain: domain.to_owned(),
            first_user,
            connectors,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.connectors.len()
    }

    fn user(&self, i: usize) -> String {
        format!("u{}", self.first_user as usize + i)
    }
}

/// One TLS connection held open.
pub(crate) struct Conn {
    stream: TlsStream<TcpStream>,
    identity: usize,
    call_id: String,
    cseq: u32,
}

async fn handshake(
    addr: SocketAddr,
    ids: &Identities,
    identity: usize,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let tls = tokio::time::timeout(
        Duration::from_secs(15),
        ids.connectors[identity].connect(name, tcp),
    )
    .await??;
    Ok(tls)
}

/// Sends a REGISTER (certificate only, no Digest) and reads the status of the answer.
async fn register(
    stream: &mut TlsStream<TcpStream>,
    ids: &Identities,
    identity: usize,
    call_id: &str,
    cseq: u32,
    expires: u32,
) -> anyhow::Result<u16> {
    let local = stream.get_ref().0.local_addr()?;
    let user = ids.user(identity);
    let branch = format!("{call_id}x{cseq}");
    let mut msg = Vec::with_capacity(600);
    Register {
        domain: &ids.domain,
        transport: "TLS",
        local,
        user: &user,
        call_id,
        tag: "t1",
        branch: &branch,
        cseq,
        expires,
        contact_port: 20_000 + (identity % 40_000) as u16,
        authorization: None,
    }
    .write(&mut msg);
    stream.write_all(&msg).await?;
    let mut got = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = memchr::memmem::find(&got, b"\r\n\r\n") {
                // Skip provisional responses; a final one ends the wait.
                match sipmsg::status(&got) {
                    Some(s) if s >= 200 => return Ok::<u16, anyhow::Error>(s),
                    _ => {
                        got.drain(..end + 4);
                        continue;
                    }
                }
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                anyhow::bail!("connection closed");
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read).await?
}

#[derive(Debug, Default)]
pub(crate) struct StormReport {
    pub(crate) seconds: f64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) latency: Samples,
    pub(crate) client_cpu: f64,
}

impl StormReport {
    pub(crate) fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds.max(1e-9)
    }

    pub(crate) fn print(&mut self, label: &str) {
        println!("{label}:");
        println!(
            "  {:.1} s: {} connections completed ({:.0}/s), {} failed; p50/p99 ms {}; generator cpu {:.0} us per connection",
            self.seconds,
            self.completed,
            self.rate(),
            self.failed,
            self.latency.p50_p99(),
            self.client_cpu / self.completed.max(1) as f64 * 1e6
        );
    }
}

/// Connect, handshake, REGISTER, close, from `concurrency` loops at once, for `seconds`.
pub(crate) async fn storm(
    addr: SocketAddr,
    ids: Arc<Identities>,
    concurrency: usize,
    seconds: f64,
) -> StormReport {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = procs::self_cpu_secs();
    let started = Instant::now();
    let run_tag: u32 = rand::random();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (stop, done, failed, ids) = (stop.clone(), done.clone(), failed.clone(), ids.clone());
        tasks.spawn(async move {
            let mut latency = Samples::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let identity = (w + n as usize * concurrency) % ids.len();
                let t0 = Instant::now();
                let call_id = format!("{run_tag:08x}-{w}-{n}@storm");
                let ok = async {
                    let mut s = handshake(addr, &ids, identity).await?;
                    let status = register(&mut s, &ids, identity, &call_id, 1, 3600).await?;
                    let _ = s.shutdown().await;
                    Ok::<bool, anyhow::Error>(status == 200)
                }
                .await;
                if matches!(ok, Ok(true)) {
                    latency.push(t0.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            latency
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = Samples::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(l) = r {
            latency.merge(l);
        }
    }
    StormReport {
        seconds: started.elapsed().as_secs_f64(),
        completed: done.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        latency,
        client_cpu: procs::self_cpu_secs() - cpu0,
    }
}

/// Opens `count` connections (identities 0..count), at most `concurrency` handshakes at once,
/// and returns those that completed their handshake.
pub(crate) async fn open_idle(
    addr: SocketAddr,
    ids: Arc<Identities>,
    count: usize,
    concurrency: usize,
) -> Vec<Conn> {
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let run_tag: u32 = rand::random();
    let mut tasks = tokio::task::JoinSet::new();
    for identity in 0..count {
        let (gate, ids) = (gate.clone(), ids.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let stream = handshake(addr, &ids, identity % ids.len()).await.ok()?;
            Some(Conn {
                stream,
                identity: identity % ids.len(),
                call_id: format!("{run_tag:08x}-{identity}@idle"),
                cseq: 0,
            })
        });
    }
    let mut conns = Vec::with_capacity(count);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(c)) = r {
            conns.push(c);
        }
    }
    conns
}

/// Every connection sends one REGISTER (CSeq one higher each round) and waits for the final
/// response; at most `concurrency` outstanding. Returns (connections, 200s, failures, latency).
pub(crate) async fn register_round(
    conns: Vec<Conn>,
    ids: Arc<Identities>,
    concurrency: usize,
    expires: u32,
) -> (Vec<Conn>, u64, u64, Samples) {
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let (gate, ids) = (gate.clone(), ids.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            c.cseq += 1;
            let t0 = Instant::now();
            let r = register(&mut c.stream, &ids, c.identity, &c.call_id, c.cseq, expires).await;
            (c, r, t0.elapsed())
        });
    }
    let mut back = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    let mut latency = Samples::default();
    while let Some(r) = tasks.join_next().await {
        let Ok((c, status, took)) = r else { continue };
        match status {
            Ok(200) => {
                ok += 1;
                latency.push(took);
                back.push(c);
            }
            Ok(_) => {
                failed += 1;
                back.push(c);
            }
            Err(_) => failed += 1,
        }
    }
    (back, ok, failed, latency)
}
