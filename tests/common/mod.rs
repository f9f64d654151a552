//! Shared harness for end-to-end tests: start the server with a generated config, in this
//! test process on kernel-chosen loopback ports (`Server::start`) or as the real `sipward`
//! binary on free ports (`Server::start_binary`, for the CLI, signals, stderr and external
//! tools), talk SIP to it over UDP or TCP, compute Digest responses
//! independently of the code under test (md-5/sha2 directly), and read its HTTP endpoints.
#![allow(dead_code, unreachable_pub)]

pub mod redis_server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DOMAIN: &str = "example.test";
/// SHA-256 of "test-admin-token-0123456789".
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Path to the test data in `tests/data` (or `SIPWARD_TESTDATA`); see `tests/data/README.md`.
pub fn testdata(rel: &str) -> PathBuf {
    let base = std::env::var("SIPWARD_TESTDATA")
        .unwrap_or_else(|_| format!("{}/tests/data", env!("CARGO_MANIFEST_DIR")));
    Path::new(&base).join(rel)
}

/// A free port usable for both UDP and TCP on 127.0.0.1.
///
/// Taken below the kernel's ephemeral range (and handed out once per test process), so that
/// a client socket's automatic source port cannot grab it between this call and the server's
/// bind, which happened now and then on the loaded CI machine ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(10_100));
    let span = high - low;
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::process::id().wrapping_mul(7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + seed.wrapping_add(n) % span) as u16;
        let tcp_free = TcpListener::bind(("127.0.0.1", port)).is_ok();
        if tcp_free && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found below the ephemeral range");
}

/// Writes a secret file owner-only, as an operator should (sipward warns at start and in
/// `check-config` about one its group or others can read).
pub fn write_secret(path: &std::path::Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// An account: (username, password).
pub type Account<'a> = (&'a str, &'a str);

/// Options for a test server.
pub struct Options<'a> {
    pub accounts: &'a [Account<'a>],
    pub algorithms: &'a [&'a str],
    /// Extra TOML appended to the [registrar] table.
    pub registrar: &'a str,
    /// Extra TOML appended to the [auth] table.
    pub auth: &'a str,
    /// Extra TOML appended to the [sip] table.
    pub sip: &'a str,
    /// A TLS listener with this `client_auth` ("off", "optional", "required"), using a fresh
    /// TEST-ONLY certificate set (see [`dev_certs`]); `None`: no TLS.
    pub tls: Option<&'a str>,
    /// Extra TOML appended to the [tls] table.
    pub tls_extra: &'a str,
    /// Extra TOML appended to the `example.test` [[domains]] entry.
    pub domain: &'a str,
    /// The `[log]` level (`RUST_LOG`, when set, wins, as for the binary).
    pub log_level: &'a str,
    /// Extra TOML tables appended at the end of the file (`[ws]`, `[[ws.listeners]]`).
    pub tables: &'a str,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            accounts: &[("alice", "alice-secret-1"), ("bob", "bob-secret-2")],
            algorithms: &["MD5", "SHA-256"],
            registrar: "",
            auth: "",
            sip: "",
            tls: None,
            tls_extra: "",
            domain: "",
            log_level: "warn",
            tables: "",
        }
    }
}

/// The TEST-ONLY certificate set, made once per test process by the binary under test
/// (`sipward certs dev --out DIR`), so tests never depend on the committed files' dates.
pub fn dev_certs() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certs(dir.path());
        dir
    })
    .path()
}

/// Writes a fresh certificate set into `dir` with `sipward certs dev`.
pub fn make_certs(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipward"))
        .args(["certs", "dev", "--out"])
        .arg(dir)
        .output()
        .expect("run sipward certs dev");
    assert!(
        out.status.success(),
        "sipward certs dev failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ports a generated config listens on: 0 everywhere for an in-process server (the
/// kernel picks; `Running` reports what was bound), free ports for the binary.
#[derive(Clone, Copy)]
struct Ports {
    sip: u16,
    http: u16,
    tls: u16,
}

impl Ports {
    const KERNEL: Ports = Ports {
        sip: 0,
        http: 0,
        tls: 0,
    };

    fn free() -> Ports {
        Ports {
            sip: free_port(),
            http: free_port(),
            tls: free_port(),
        }
    }
}

/// The [tls] tables for `opts`, or nothing without TLS. The server's certificate and key are
/// copied into `dir` (so a test can replace them for a reload).
fn tls_tables(opts: &Options<'_>, dir: &Path, port: u16) -> String {
    let Some(client_auth) = opts.tls else {
        return String::new();
    };
    let certs = dev_certs();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(certs.join(f), dir.join(f)).expect("copy server certificate");
    }
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{}\n\n[[tls.listeners]]\naddr = \"127.0.0.1:{port}\"\n\
         client_auth = \"{client_auth}\"\n\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
        certs.join("ca.pem").display(),
        opts.tls_extra,
    )
}

/// Writes `sipward.toml` for `opts` into `dir`: the `example.test` domain with
/// `opts.accounts`, plus more served domains, each with its own accounts (their passwords in
/// files) and the same algorithms as `opts`. The Digest realm of an account is its domain.
fn write_config(
    opts: &Options<'_>,
    extra: &[(&str, &[Account<'_>])],
    dir: &Path,
    ports: Ports,
) -> PathBuf {
    let algs: Vec<String> = opts.algorithms.iter().map(|a| format!("\"{a}\"")).collect();
    let algs = algs.join(", ");
    let mut tables = tls_tables(opts, dir, ports.tls);
    tables.push_str(&format!(
        "[[domains]]\nname = \"{DOMAIN}\"\nalgorithms = [{algs}]\n{}\n\n",
        opts.domain
    ));
    for (domain, _) in extra {
        tables.push_str(&format!(
            "[[domains]]\nname = \"{domain}\"\nalgorithms = [{algs}]\n\n"
        ));
    }
    let accounts = opts.accounts.iter().map(|a| (DOMAIN, a)).chain(
        extra
            .iter()
            .flat_map(|(d, accounts)| accounts.iter().map(move |a| (*d, a))),
    );
    for (n, (domain, (user, pw))) in accounts.enumerate() {
        let file = dir.join(format!("account-{n}.pw"));
        write_secret(&file, pw);
        tables.push_str(&format!(
            "[[accounts]]\nusername = \"{user}\"\ndomain = \"{domain}\"\nkind = \"device\"\npassword_file = \"{}\"\n\n",
            file.display()
        ));
    }
    let token_hash = sha256_hex(ADMIN_TOKEN.as_bytes());
    let (port, http_port) = (ports.sip, ports.http);
    let config = format!(
        "[log]\nlevel = \"{}\"\n\n[sip]\nudp = [\"127.0.0.1:{port}\"]\ntcp = [\"127.0.0.1:{port}\"]\nudp_workers = 2\n{}\n\n\
         [registrar]\n{}\n\n[auth]\n{}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\nadmin_token_sha256 = \"{token_hash}\"\n\n{tables}",
        opts.log_level, opts.sip, opts.registrar, opts.auth,
    );
    let config = format!("{config}{}\n", opts.tables);
    // Bindings in memory unless the test asks for a store (the file default is sqlite).
    let config = if opts.registrar.contains("persistence") {
        config
    } else {
        config.replacen("[registrar]\n", "[registrar]\npersistence = \"none\"\n", 1)
    };
    let config_path = dir.join("sipward.toml");
    std::fs::write(&config_path, config).unwrap();
    config_path
}

/// Writes `sipward.toml` for `opts` into `dir` with SIP (UDP and TCP) on `sip`, HTTP on
/// `http` and, when `opts.tls` asks for it, TLS on `tls` (all on 127.0.0.1), for a test
/// that runs the binary itself.
pub fn config_on_ports(opts: &Options<'_>, dir: &Path, sip: u16, http: u16, tls: u16) -> PathBuf {
    write_config(opts, &[], dir, Ports { sip, http, tls })
}

/// How the server under test runs.
enum Process {
    /// The `sipward` binary, stopped with SIGTERM.
    Binary(Child),
    /// `sipward::app::start` on its own tokio runtime thread in this test process.
    InProcess(InProcess),
}

/// An in-process server: the thread that runs it and the token that stops it.
struct InProcess {
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The addresses an in-process server bound.
struct Bound {
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: Option<SocketAddr>,
    http: SocketAddr,
}

impl InProcess {
    /// Loads `config_path` as the binary does and starts the app on a runtime thread;
    /// returns once every socket is listening. Its logs (the config's `[log]` level and
    /// format) go to `log`, as the binary's stderr does.
    fn start(config_path: &Path, log: &Path) -> (InProcess, Bound) {
        let config = sipward::config::Config::load(config_path)
            .unwrap_or_else(|e| panic!("{}: invalid configuration:\n{e}", config_path.display()));
        let dispatch = log_dispatch(&config.log, log);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let token = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sipward-server".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .on_thread_start(move || {
                        // Held for the worker thread's life.
                        std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                    })
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    match sipward::app::start(&config, token).await {
                        Ok(running) => {
                            let bound = Bound {
                                udp: running.udp[0],
                                tcp: running.tcp[0],
                                tls: running.tls.first().copied(),
                                http: running.http.expect("an HTTP listener"),
                            };
                            let _ = tx.send(Ok(bound));
                            running.wait().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("spawn the server thread");
        match rx.recv() {
            Ok(Ok(bound)) => (
                InProcess {
                    shutdown,
                    thread: Some(thread),
                },
                bound,
            ),
            Ok(Err(e)) => panic!("sipward did not start: {e}"),
            Err(_) => panic!("sipward's server thread ended before listening"),
        }
    }

    fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Cancels the shutdown token and waits for the drain (`Running::wait`) to end;
    /// Some(0) when the server thread ended cleanly within 10 s.
    fn terminate(&mut self) -> Option<i32> {
        self.shutdown.cancel();
        let thread = self.thread.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                self.thread = Some(thread);
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().ok().map(|()| 0)
    }
}

/// A `tracing` dispatcher like the binary's (`init_logging`: the config's level, `RUST_LOG`
/// when set, text or JSON) writing to the file `log`.
fn log_dispatch(log: &sipward::config::LogConfig, path: &Path) -> tracing::Dispatch {
    let file = std::fs::File::create(path).expect("create the log file");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file));
    match log.format {
        sipward::config::LogFormat::Json => tracing::Dispatch::new(builder.json().finish()),
        sipward::config::LogFormat::Text => tracing::Dispatch::new(builder.finish()),
    }
}

/// A server under test: in-process ([`Server::start`]) or the binary
/// ([`Server::start_binary`]), with the same addresses and HTTP helpers either way.
pub struct Server {
    process: Process,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The TLS listener, when `Options::tls` asked for one.
    pub tls: Option<SocketAddr>,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Server {
    /// An in-process server for `opts` on kernel-chosen loopback ports.
    pub fn start(opts: &Options<'_>) -> Server {
        Server::start_with_domains(opts, &[])
    }

    /// Like [`Server::start`], plus more served domains, each with its own accounts (their
    /// passwords in files) and the same algorithms as `opts`. The Digest realm of an account
    /// is its domain.
    pub fn start_with_domains(opts: &Options<'_>, extra: &[(&str, &[Account<'_>])]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = write_config(opts, extra, dir.path(), Ports::KERNEL);
        Server::in_process(config_path, dir)
    }

    /// The `sipward` binary for `opts`, on free loopback ports: for the tests of the CLI,
    /// signals, logs on stderr and external tools.
    pub fn start_binary(opts: &Options<'_>) -> Server {
        Server::start_binary_with_domains(opts, &[])
    }

    /// [`Server::start_with_domains`] with the binary.
    pub fn start_binary_with_domains(
        opts: &Options<'_>,
        extra: &[(&str, &[Account<'_>])],
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = Ports::free();
        let config_path = write_config(opts, extra, dir.path(), ports);
        let tls = opts
            .tls
            .map(|_| SocketAddr::from(([127, 0, 0, 1], ports.tls)));
        Server::start_with_file(config_path, dir, ports.sip, ports.http, tls)
    }

    /// An in-process server for the config file `config_path` (in `dir`), on the addresses
    /// it bound. Its logs go to `dir/stderr.log`, as the binary's stderr does.
    pub fn in_process(config_path: PathBuf, dir: tempfile::TempDir) -> Server {
        let (process, bound) = InProcess::start(&config_path, &dir.path().join("stderr.log"));
        Server {
            process: Process::InProcess(process),
            udp: bound.udp,
            tcp: bound.tcp,
            tls: bound.tls,
            http: bound.http,
            dir,
            config_path,
        }
    }

    /// The binary for the config file `config_path`, which listens on `port` (UDP and
    /// TCP), `http_port` and `tls`; returns once `/healthz` answers 200.
    pub fn start_with_file(
        config_path: PathBuf,
        dir: tempfile::TempDir,
        port: u16,
        http_port: u16,
        tls: Option<SocketAddr>,
    ) -> Server {
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        // `SIPWARD_BIN` runs another build (benches/crash-loop.sh: the release binary).
        let bin = std::env::var_os("SIPWARD_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_sipward")),
            PathBuf::from,
        );
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sipward");
        let server = Server {
            process: Process::Binary(child),
            udp: SocketAddr::from(([127, 0, 0, 1], port)),
            tcp: SocketAddr::from(([127, 0, 0, 1], port)),
            tls,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            dir,
            config_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if server
                .http_get("/healthz", None)
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sipward did not become healthy; stderr:\n{}",
            server.stderr()
        );
    }

    /// The server's log: the binary's stderr, or what an in-process server logged.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn is_alive(&mut self) -> bool {
        match &mut self.process {
            Process::Binary(child) => matches!(child.try_wait(), Ok(None)),
            Process::InProcess(p) => p.is_alive(),
        }
    }

    /// The binary's process id (for signals).
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Binary(child) => child.id(),
            Process::InProcess(_) => panic!("an in-process server has no pid of its own"),
        }
    }

    /// The address a client over `proto` talks to.
    pub fn addr(&self, proto: Proto) -> SocketAddr {
        match proto {
            Proto::Udp => self.udp,
            Proto::Tcp => self.tcp,
            Proto::Tls => self.tls.expect("server has a TLS listener"),
        }
    }

    /// A fresh client of this server over `proto` (TLS: no client certificate).
    pub fn client(&self, proto: Proto) -> Client {
        Client::new(proto, self.addr(proto))
    }

    /// A plain HTTP/1.1 GET; returns (status, body).
    pub fn http_get(&self, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    pub fn metrics(&self) -> String {
        self.http_get("/metrics", None).expect("metrics").1
    }

    /// The value of one metric line (exact name with labels, e.g. `a{b="c"}`), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// Stops the server and waits for it to end; returns the exit code. The binary gets
    /// SIGTERM; an in-process server has its shutdown token cancelled and gives Some(0)
    /// once its drain has ended.
    pub fn terminate(&mut self) -> Option<i32> {
        let child = match &mut self.process {
            Process::InProcess(p) => return p.terminate(),
            Process::Binary(child) => child,
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Binary(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::InProcess(p) => {
                p.shutdown.cancel();
                if let Some(t) = p.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// H() for a Digest algorithm name, computed independently of sipward's auth module.
pub fn h(alg: &str, data: &str) -> String {
    use sha2::Digest;
    match alg.to_ascii_uppercase().as_str() {
        "MD5" => {
            use md5::Digest as _;
            hex::encode(md5::Md5::digest(data.as_bytes()))
        }
        "SHA-256" => hex::encode(sha2::Sha256::digest(data.as_bytes())),
        "SHA-512-256" => hex::encode(sha2::Sha512_256::digest(data.as_bytes())),
        other => panic!("unknown algorithm {other}"),
    }
}

/// RFC 7616 response with qop=auth.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    alg: &str,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let ha1 = h(alg, &format!("{user}:{realm}:{password}"));
    let ha2 = h(alg, &format!("{method}:{uri}"));
    h(alg, &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// Builds an Authorization header value.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    alg: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let nc = format!("{nc:08x}");
    let resp = digest_response(alg, user, DOMAIN, password, method, uri, nonce, &nc, cnonce);
    format!(
        "Digest username=\"{user}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", \
         algorithm={alg}, cnonce=\"{cnonce}\", qop=auth, nc={nc}"
    )
}

/// A SIP response as text with helpers.
#[derive(Debug, Clone)]
pub struct Resp {
    pub text: String,
}

impl Resp {
    pub fn status(&self) -> u16 {
        self.text
            .get(8..11)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    pub fn status_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// Values of a header (case-insensitive name, long form only).
    pub fn headers(&self, name: &str) -> Vec<String> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// The nonce of the first challenge (WWW- or Proxy-Authenticate).
    pub fn nonce(&self) -> String {
        let ch = self
            .header("WWW-Authenticate")
            .or_else(|| self.header("Proxy-Authenticate"))
            .expect("a challenge");
        param(&ch, "nonce").expect("nonce in challenge")
    }

    /// The nonce of the WWW-Authenticate challenge for Digest `alg`, if there is one.
    pub fn nonce_for(&self, alg: &str) -> Option<String> {
        let ch = self
            .headers("WWW-Authenticate")
            .into_iter()
            .find(|h| h.contains(&format!("algorithm={alg}")))?;
        param(&ch, "nonce")
    }
}

/// A quoted or token parameter from a challenge-like value.
pub fn param(v: &str, name: &str) -> Option<String> {
    let i = v.find(&format!("{name}="))?;
    let rest = &v[i + name.len() + 1..];
    if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next().map(str::to_string)
    } else {
        rest.split([',', ' ']).next().map(str::to_string)
    }
}

/// Which transport a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
    Tls,
}

impl Proto {
    pub fn via(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }
}

/// A byte stream a client speaks SIP over: TCP, or rustls over TCP.
pub trait Stream: Read + Write + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// A rustls client configuration: TLS 1.3 and 1.2, trusting `ca` (a PEM file), presenting
/// `client` (PEM certificate and key files) when given.
pub fn tls_client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("read client certificate")
                .map(|c| c.expect("certificate PEM"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key")
        }
    };
    Arc::new(config)
}

/// The client side of a TLS connection to `server` with `config`, handshake done (as far as
/// the client can tell: in TLS 1.3 a server that refuses the client certificate says so only
/// after this returns, with an alert on the first read).
pub fn tls_connect(
    server: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    tls_connect_named(server, config, "localhost")
}

/// Like [`tls_connect`], sending `name` as SNI and verifying the server certificate for it.
pub fn tls_connect_named(
    server: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut sock = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// The dev set's client certificate `name` (`alice`, `expired`, ...) as (cert, key) paths.
pub fn client_cert(name: &str) -> (PathBuf, PathBuf) {
    let dir = dev_certs();
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// A minimal SIP client over UDP or TCP.
pub struct Client {
    pub proto: Proto,
    udp: Option<UdpSocket>,
    stream: Option<Box<dyn Stream>>,
    server: SocketAddr,
    pub local: SocketAddr,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(proto: Proto, server: SocketAddr) -> Client {
        match proto {
            Proto::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let local = s.local_addr().unwrap();
                Client {
                    proto,
                    udp: Some(s),
                    stream: None,
                    server,
                    local,
                    buf: Vec::new(),
                }
            }
            Proto::Tcp => {
                let s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                Client::over(Proto::Tcp, server, Box::new(s))
            }
            Proto::Tls => Client::tls(server, None).expect("tls handshake"),
        }
    }

    /// A SIP client over a stream that is already connected.
    pub fn over(proto: Proto, server: SocketAddr, stream: Box<dyn Stream>) -> Client {
        let local = stream.tcp().local_addr().unwrap();
        Client {
            proto,
            udp: None,
            stream: Some(stream),
            server,
            local,
            buf: Vec::new(),
        }
    }

    /// A TLS client trusting the dev CA, presenting the dev set's client certificate `cert`
    /// (`alice`, `bob`, `expired`, ...) when given.
    pub fn tls(server: SocketAddr, cert: Option<&str>) -> std::io::Result<Client> {
        let pair = cert.map(client_cert);
        let config = tls_client_config(
            &dev_certs().join("ca.pem"),
            pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        );
        let stream = tls_connect(server, config)?;
        Ok(Client::over(Proto::Tls, server, Box::new(stream)))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        match self.proto {
            Proto::Udp => {
                self.udp
                    .as_ref()
                    .unwrap()
                    .send_to(bytes, self.server)
                    .unwrap();
            }
            Proto::Tcp | Proto::Tls => {
                let s = self.stream.as_mut().unwrap();
                s.write_all(bytes).unwrap();
                s.flush().unwrap();
            }
        }
    }

    /// Receives one response, or `None` after the timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<Resp> {
        match self.proto {
            Proto::Udp => {
                let s = self.udp.as_ref().unwrap();
                s.set_read_timeout(Some(timeout)).unwrap();
                let mut b = vec![0u8; 65535];
                let (n, _) = s.recv_from(&mut b).ok()?;
                Some(Resp {
                    text: String::from_utf8_lossy(&b[..n]).into_owned(),
                })
            }
            Proto::Tcp | Proto::Tls => {
                let s = self.stream.as_mut().unwrap();
                s.tcp().set_read_timeout(Some(timeout)).unwrap();
                let deadline = Instant::now() + timeout;
                loop {
                    if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                        let cl: usize = head
                            .lines()
                            .find_map(|l| {
                                let (n, v) = l.split_once(':')?;
                                let n = n.trim();
                                (n.eq_ignore_ascii_case("content-length")
                                    || n.eq_ignore_ascii_case("l"))
                                .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        let total = end + 4 + cl;
                        if self.buf.len() >= total {
                            let msg: Vec<u8> = self.buf.drain(..total).collect();
                            return Some(Resp {
                                text: String::from_utf8_lossy(&msg).into_owned(),
                            });
                        }
                    }
                    if Instant::now() >= deadline {
                        return None;
                    }
                    let mut b = [0u8; 8192];
                    match s.read(&mut b) {
                        Ok(0) => return None,
                        Ok(n) => self.buf.extend_from_slice(&b[..n]),
                        Err(_) => return None,
                    }
                }
            }
        }
    }

    /// Whether the server closed this stream connection within the timeout (read returns
    /// EOF, a reset, or over TLS a fatal alert).
    pub fn closed_by_server(&mut self, timeout: Duration) -> bool {
        let s = self.stream.as_mut().expect("stream client");
        s.tcp().set_read_timeout(Some(timeout)).unwrap();
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return match e.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => false,
                        // BrokenPipe: rustls writes on read (pending records) to a socket the
                        // server has closed.
                        std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe => true,
                        // rustls: an alert from the server, or its close without close_notify.
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => true,
                        other => {
                            eprintln!("closed_by_server: read error {other:?}: {e}");
                            false
                        }
                    };
                }
            }
        }
    }

    pub fn request(&mut self, msg: &str) -> Option<Resp> {
        self.send_raw(msg.as_bytes());
        self.recv(Duration::from_secs(2))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A REGISTER builder with sensible defaults.
#[derive(Clone)]
pub struct Register {
    pub user: String,
    pub to_user: String,
    pub call_id: String,
    pub cseq: u32,
    pub contact: Option<String>,
    pub expires: Option<String>,
    pub authorization: Vec<String>,
    pub extra: Vec<String>,
    pub ruri: String,
    pub branch: String,
}

impl Register {
    pub fn new(user: &str) -> Register {
        Register {
            user: user.into(),
            to_user: user.into(),
            call_id: format!("{}-{}", user, rand_token()),
            cseq: 1,
            contact: Some(format!("<sip:{user}@127.0.0.1:5999>")),
            expires: None,
            authorization: Vec::new(),
            extra: Vec::new(),
            ruri: format!("sip:{DOMAIN}"),
            branch: String::new(),
        }
    }

    pub fn build(&self, c: &Client) -> String {
        let branch = if self.branch.is_empty() {
            format!("z9hG4bK{}", rand_token())
        } else {
            self.branch.clone()
        };
        let mut m = format!(
            "REGISTER {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{}@{DOMAIN}>;tag={}\r\nTo: <sip:{}@{DOMAIN}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n",
            self.ruri,
            c.proto.via(),
            c.local,
            self.user,
            rand_token(),
            self.to_user,
            self.call_id,
            self.cseq
        );
        if let Some(contact) = &self.contact {
            m.push_str(&format!("Contact: {contact}\r\n"));
        }
        if let Some(e) = &self.expires {
            m.push_str(&format!("Expires: {e}\r\n"));
        }
        for a in &self.authorization {
            m.push_str(&format!("Authorization: {a}\r\n"));
        }
        for x in &self.extra {
            m.push_str(x);
            m.push_str("\r\n");
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }
}

/// `reg`'s next REGISTER (CSeq + 1) carrying Digest `alg` credentials of
/// `username`/`password` for `nonce`, a fresh cnonce and nc 1.
pub fn with_credentials(
    reg: &Register,
    alg: &str,
    username: &str,
    password: &str,
    nonce: &str,
) -> Register {
    let mut next = reg.clone();
    next.cseq += 1;
    next.authorization = vec![authorization(
        alg,
        username,
        password,
        "REGISTER",
        &reg.ruri,
        nonce,
        1,
        &rand_token(),
    )];
    next
}

/// Registers `user` with Digest `alg`: REGISTER → 401 → REGISTER with credentials.
/// Returns the final response.
pub fn register(c: &mut Client, reg: &Register, password: &str, alg: &str) -> Resp {
    let first = c.request(&reg.build(c)).expect("401");
    assert_eq!(first.status(), 401, "{}", first.text);
    let next = with_credentials(reg, alg, &reg.user, password, &first.nonce());
    c.request(&next.build(c)).expect("final response")
}

/// Where a registration attempt stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No answer to the request without credentials.
    NoChallenge,
    /// Challenged, then the credentials were dropped (see [`Server::request_or_drop`]).
    Dropped,
}

/// REGISTER `reg` with `password` (401, then MD5 Digest): the final status, or where the
/// server went silent.
pub fn try_register(
    server: &Server,
    c: &mut Client,
    reg: &Register,
    password: &str,
) -> Result<u16, Step> {
    let first = c.request(&reg.build(c)).ok_or(Step::NoChallenge)?;
    assert_eq!(first.status(), 401, "{}", first.text);
    let next = with_credentials(reg, "MD5", &reg.user, password, &first.nonce());
    // A REGISTER without credentials: answered (challenged) even from a throttled source.
    let mut probe = reg.clone();
    probe.call_id = rand_token();
    let (msg, probe) = (next.build(c), probe.build(c));
    server
        .request_or_drop(c, &msg, &probe)
        .map(|r| r.status())
        .ok_or(Step::Dropped)
}

/// A response to `req` as a UAS builds it: Vias, From, To (+ tag), Call-ID, CSeq and
/// Record-Route copied, Contact `contact` (a URI), an optional SDP body. The To tag is added
/// unless To has one or `to_tag` is empty.
pub fn response_to(
    req: &Resp,
    status: u16,
    reason: &str,
    to_tag: &str,
    contact: &str,
    sdp: bool,
) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for v in req.headers("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for rr in req.headers("Record-Route") {
        out.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    let to = req.header("To").unwrap();
    let to = if to.contains(";tag=") || to_tag.is_empty() {
        to
    } else {
        format!("{to};tag={to_tag}")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <{contact}>\r\n",
        req.header("From").unwrap(),
        req.header("Call-ID").unwrap(),
        req.header("CSeq").unwrap(),
    ));
    let body = if sdp {
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
    } else {
        ""
    };
    if sdp {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

pub fn rand_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}{:x}", std::process::id(), t & 0xffff_ffff, n)
}

// ---- Helpers added for the wire-corpus, SIPp and svwar tests. ----

impl Server {
    /// The sum of `sipward_sip_dropped_total` over every reason.
    pub fn dropped_total(&self) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("sipward_sip_dropped_total{"))
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            })
            .sum()
    }

    /// Sends `msg` from `c` (whose other requests are all answered before this call) and
    /// returns its answer, or `None` when the server dropped it: its drop counter went up
    /// with no answer on `c`, and then the answer to `probe` (a request the server answers,
    /// with another Call-ID) came with no answer to `msg` before it. No fixed wait: a drop
    /// is seen as soon as the server counts it. Only for a server that gets no other
    /// traffic meanwhile (the counter is the server's, not the client's).
    pub fn request_or_drop(&self, c: &mut Client, msg: &str, probe: &str) -> Option<Resp> {
        let before = self.dropped_total();
        c.send_raw(msg.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = c.recv(Duration::from_millis(20)) {
                return Some(r);
            }
            if self.dropped_total() > before {
                break;
            }
            if Instant::now() >= deadline {
                // Neither answered nor counted: silence for 10 s.
                return None;
            }
        }
        let call_id = |text: &str| {
            Resp {
                text: text.to_string(),
            }
            .header("Call-ID")
        };
        let probe_call = call_id(probe);
        assert_ne!(probe_call, call_id(msg), "the probe needs its own Call-ID");
        c.send_raw(probe.as_bytes());
        let r = c
            .recv(Duration::from_secs(2))
            .expect("the probe is answered");
        if r.header("Call-ID") == probe_call {
            None
        } else {
            Some(r)
        }
    }

    /// The admin bindings view (`GET /admin/v1/bindings`) as JSON text.
    pub fn admin_bindings(&self) -> String {
        let (status, body) = self
            .http_get("/admin/v1/bindings", Some(ADMIN_TOKEN))
            .expect("admin bindings");
        assert_eq!(status, 200, "admin bindings: {body}");
        body
    }

    /// Polls `series` until `pred` holds or `timeout` passes; returns the last value and the
    /// time it took.
    pub fn wait_metric(
        &self,
        series: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> (f64, Duration) {
        let start = Instant::now();
        loop {
            let v = self.metric(series);
            if pred(v) || start.elapsed() >= timeout {
                return (v, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Client {
    /// Writes `bytes` on the TCP connection one byte per write (Nagle off, so each byte
    /// leaves in its own segment).
    ///
    /// Returns how many bytes were written: the server may close the connection before the
    /// end (framing it cannot trust, such as a negative Content-Length), after which writes
    /// fail with EPIPE or ECONNRESET. Callers assert on what the server did, not on this.
    pub fn send_bytewise(&mut self, bytes: &[u8]) -> usize {
        let s = self.stream.as_mut().expect("stream client");
        s.tcp().set_nodelay(true).unwrap();
        for (n, b) in bytes.iter().enumerate() {
            // Over TLS, each flush sends one record holding one byte.
            match s
                .write_all(std::slice::from_ref(b))
                .and_then(|()| s.flush())
            {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return n;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
        bytes.len()
    }
}

/// Whether an external tool is on PATH. When it is missing: with `CI=true` this panics (the
/// test must fail in CI); otherwise it prints a loud SKIPPED line and returns false.
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("`{tool}` is not installed (Debian package {package}); it is required when CI=true");
    }
    // Straight to the stderr handle: `eprintln!` is captured by the test harness and would
    // hide the notice for a passing test.
    let _ = std::io::stderr().write_all(
        format!(
            "\n**** SKIPPED: `{tool}` is not installed (Debian package {package}); \
             this test did not run ****\n\n"
        )
        .as_bytes(),
    );
    false
}

impl Client {
    /// A UDP client bound to another loopback address (for per-source-IP limits).
    pub fn udp_from(local_ip: &str, server: SocketAddr) -> Client {
        let s = UdpSocket::bind((local_ip, 0)).expect("bind loopback alias");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let local = s.local_addr().unwrap();
        Client {
            proto: Proto::Udp,
            udp: Some(s),
            stream: None,
            server,
            local,
            buf: Vec::new(),
        }
    }
}

impl Client {
    /// The next UDP datagram and the address it came from.
    pub fn recv_with_source(&mut self, timeout: Duration) -> Option<(Resp, SocketAddr)> {
        let s = self.udp.as_ref().expect("a UDP client");
        s.set_read_timeout(Some(timeout)).unwrap();
        let mut b = vec![0u8; 65535];
        let (n, from) = s.recv_from(&mut b).ok()?;
        let text = String::from_utf8_lossy(&b[..n]).into_owned();
        Some((Resp { text }, from))
    }
}

impl Client {
    /// A UDP client bound to `local` (a port another program will use afterwards).
    pub fn udp_on(local: SocketAddr, server: SocketAddr) -> Client {
        // The port was free when the test took it; another test's brief probe of a port
        // (free_port binds and releases) can hold it for a moment, so retry for a second
        // before naming who holds it.
        let deadline = Instant::now() + Duration::from_secs(1);
        let s = loop {
            match UdpSocket::bind(local) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    let holders = std::process::Command::new("ss")
                        .args(["-uapn"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    let port = format!(":{}", local.port());
                    let held: Vec<&str> = holders.lines().filter(|l| l.contains(&port)).collect();
                    panic!("bind {local}: {e}; sockets on that port: {held:?}")
                }
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Client {
            proto: Proto::Udp,
            udp: Some(s),
            stream: None,
            server,
            local,
            buf: Vec::new(),
        }
    }
}

impl Server {
    /// Sends SIGTERM to the binary and returns at once (the drain tests keep talking to it).
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the binary to exit; its exit code, or `None` if it still runs
    /// (or was killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let Process::Binary(child) = &mut self.process else {
            panic!("wait_exit needs the binary (Server::start_binary)");
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}
