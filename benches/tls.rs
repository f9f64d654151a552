//! TLS figures for the real binary (a bench, not a test; results go to benches/RESULTS.md):
//!
//! 1. mTLS handshakes per second: each connection is TCP connect, a TLS 1.3 handshake with an
//!    ECDSA P-256 client certificate (the dev set's alice), one REGISTER answered 200 on the
//!    certificate alone, close. Reported with the server's CPU time per connection
//!    (utime + stime from /proc) and the client's, since both share this machine.
//! 2. Memory per idle TLS connection: the server's RSS growth over N idle connections
//!    (handshake done, nothing else sent), divided by N.
//!
//! Run with `cargo bench --bench tls` (options after `--`: `--seconds S` for the handshake
//! run, default 10; `--threads T`, default 2; `--idle N`, default 5000). Under
//! `cargo test --all-targets` it runs a 1-second, 50-connection smoke version.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_sipward");

fn main() {
    let mut seconds = 10u64;
    let mut threads = 2usize;
    let mut idle = 5000usize;
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then gets a short smoke run that checks the bench still works.
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        seconds = 1;
        idle = 50;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).unwrap_or(threads),
            "--idle" => idle = args.next().and_then(|v| v.parse().ok()).unwrap_or(idle),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let made = Command::new(BIN)
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .stdout(Stdio::null())
        .status()
        .expect("sipward certs dev");
    assert!(made.success());
    let (server, tls_addr) = start_server(dir.path(), &certs, idle);
    let pid = server.child.id();
    let config = client_config(&certs);

    // 1. Handshake + REGISTER + close, as fast as `threads` clients go.
    for _ in 0..20 {
        one_registration(tls_addr, config.clone(), 0); // warm-up
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu(pid);
    let self0 = self_cpu();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, done, config) = (stop.clone(), done.clone(), config.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if one_registration(tls_addr, config.clone(), (t as u64) << 32 | n) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = process_cpu(pid) - cpu0;
    let client_cpu = self_cpu() - self0;
    let n = done.load(Ordering::Relaxed) as f64;
    assert!(n > 0.0, "no registration completed");
    println!("mtls_handshake_register_close:");
    println!("  threads: {threads}, seconds: {elapsed:.1}, completed: {n}");
    println!("  rate: {:.0} /s", n / elapsed);
    println!(
        "  server cpu per connection: {:.0} us",
        server_cpu / n * 1e6
    );
    println!(
        "  client cpu per connection: {:.0} us",
        client_cpu / n * 1e6
    );

    // 2. Idle connections.
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = rss_kib(pid);
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        let (conn, sock) = handshake(tls_addr, config.clone()).expect("idle handshake");
        held.push((conn, sock));
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = rss_kib(pid);
    let open = metric(&server, "sipward_tls_connections");
    assert_eq!(
        open, idle as f64,
        "every idle connection is open at the server"
    );
    println!("idle_tls_connections:");
    println!("  connections: {idle} (server reports {open} open)");
    println!("  server rss: {rss0} KiB -> {rss1} KiB");
    println!(
        "  per connection: {:.0} bytes",
        (rss1 as f64 - rss0 as f64) * 1024.0 / idle as f64
    );
    drop(held);
    drop(server);
}

struct Server {
    child: Child,
    http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_server(dir: &Path, certs: &Path, idle: usize) -> (Server, SocketAddr) {
    let (sip, tls, http) = (free_port(), free_port(), free_port());
    let config = format!(
        "[log]\nlevel = \"warn\"\n[sip]\nudp = [\"127.0.0.1:{sip}\"]\ntcp = []\n\
         tcp_idle_timeout_secs = 3600\n\
         [tls]\ncert_file = \"{c}/server.pem\"\nkey_file = \"{c}/server.key\"\n\
         client_ca_file = \"{c}/ca.pem\"\nmax_connections = {max}\n\
         [[tls.listeners]]\naddr = \"127.0.0.1:{tls}\"\nclient_auth = \"required\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n\
         [registrar]\nmax_bindings_per_aor = 1000\n\
         [[domains]]\nname = \"example.test\"\n",
        c = certs.display(),
        max = idle + 1000,
    );
    let path = dir.join("sipward.toml");
    std::fs::write(&path, config).expect("config");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sipward");
    let server = Server {
        child,
        http: SocketAddr::from(([127, 0, 0, 1], http)),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(server.http, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "sipward did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, SocketAddr::from(([127, 0, 0, 1], tls)))
}

fn client_config(certs: &Path) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("ca") {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(certs.join("alice.pem"))
        .expect("alice")
        .map(|c| c.expect("pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("alice.key")).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    Arc::new(config)
}

fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(rustls::ClientConnection, TcpStream)> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok((conn, sock))
}

/// Handshake, REGISTER (certificate only), read the 200, close. True on a 200.
fn one_registration(addr: SocketAddr, config: Arc<rustls::ClientConfig>, n: u64) -> bool {
    let Ok((mut conn, mut sock)) = handshake(addr, config) else {
        return false;
    };
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let msg = format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{n:x}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag={n:x}\r\nTo: <sip:alice@example.test>\r\n\
         Call-ID: bench-{n:x}\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{port};transport=tls>\r\n\
         Expires: 60\r\nContent-Length: 0\r\n\r\n",
        port = 1024 + n % 60000
    );
    if tls.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    got.starts_with(b"SIP/2.0 200")
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

fn metric(server: &Server, name: &str) -> f64 {
    http_get(server.http, "/metrics")
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// utime + stime of a process, in seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which ends with ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

fn self_cpu() -> f64 {
    process_cpu(std::process::id())
}

fn clock_ticks() -> f64 {
    // getconf CLK_TCK; 100 on Linux unless configured otherwise.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
