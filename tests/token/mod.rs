//! Harness for the token API tests: the real OpenID provider in `tests/idp` (npm
//! `oidc-provider`, started with Node on a free loopback port), a sipward config with the token
//! API pointed at it, a small HTTP/1.1 client, and tokens built by the tests themselves (forged
//! with keys the IdP does not publish, or with broken shapes).
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{free_port, sha256_hex, Server, ADMIN_TOKEN, DOMAIN};

pub const AUDIENCE: &str = "urn:sipward:api";
pub const MINT: &str = "urn:sipward:params:oauth:grant-type:test-mint";
/// The body every token fault must get.
pub const INVALID_TOKEN_BODY: &str =
    r#"{"error":"invalid_token","error_description":"the access token is not valid"}"#;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---- HTTP ----

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    http_over(s, addr, method, path, headers, body)
}

/// [`http`] from a chosen loopback source address (e.g. `127.0.0.2`), to act as another
/// client address.
pub fn http_from(
    local: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let s = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(local, 0))?;
            socket.connect(addr).await?.into_std()
        })
        .expect("connect from the given address");
    s.set_nonblocking(false).expect("blocking");
    http_over(s, addr, method, path, headers, body)
}

fn http_over(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    // A server may answer and close before reading all of a large request.
    let _ = s.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- The test IdP ----

/// Whether Node and the IdP's npm packages are there. Missing: panics under `CI=true`, else
/// prints a loud SKIPPED line and returns false.
pub fn idp_available() -> bool {
    let node = crate::common::require_tool("node", "nodejs");
    if !node {
        return false;
    }
    let modules = idp_dir().join("node_modules/oidc-provider");
    if modules.is_dir() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "tests/idp/node_modules is missing; run `npm ci --prefix tests/idp` (tests/run does)"
        );
    }
    let _ = std::io::stderr().write_all(
        b"\n**** SKIPPED: tests/idp/node_modules is missing (run `npm ci --prefix tests/idp`); this test did not run ****\n\n",
    );
    false
}

/// A test IdP and an in-process token server for `setup` pointed at it; `None` (the test
/// does not run, said loudly; a failure under `CI=true`) without Node and the IdP's packages.
/// The IdP lives as long as the returned value.
pub fn idp_and_server(setup: &Setup<'_>) -> Option<(Idp, TokenServer)> {
    if !idp_available() {
        return None;
    }
    let idp = Idp::start();
    let server = TokenServer::start(&idp, setup);
    Some((idp, server))
}

pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// The IdP's stderr: discarded, or with `IDP_STDERR` set shown (debugging a test; with
/// `IDP_DEBUG` too, tests/idp/webphone.mjs logs each sign-in step).
fn idp_stderr() -> Stdio {
    match std::env::var_os("IDP_STDERR") {
        Some(_) => Stdio::inherit(),
        None => Stdio::null(),
    }
}

pub struct Idp {
    child: Child,
    pub issuer: String,
    pub addr: SocketAddr,
}

#[derive(Default, Clone)]
pub struct Mint<'a> {
    pub client_id: Option<&'a str>,
    pub alg: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub groups: Option<&'a str>,
    pub tid: Option<&'a str>,
    pub resource: Option<&'a str>,
}

impl Idp {
    /// Starts `node tests/idp/server.mjs` on a free port.
    pub fn start() -> Idp {
        Idp::start_with(&[])
    }

    /// [`Idp::start`] with more environment (`IDP_WEB_PHONE_REDIRECTS`, ...).
    pub fn start_with(env: &[(&str, &str)]) -> Idp {
        let mut child = Command::new("node")
            .arg(idp_dir().join("server.mjs"))
            .envs(env.iter().copied())
            .env("IDP_PORT", "0")
            .env("IDP_AUDIENCE", AUDIENCE)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("IDP_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).expect("IdP start line");
        // Keep reading what the IdP prints later (oidc-provider's notices on the first
        // interactive sign-in): a closed pipe would end it with EPIPE.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("IdP did not start ({e}): {line:?}"));
        let port = v["port"].as_u64().unwrap() as u16;
        Idp {
            child,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// An IdP process started by the caller (with other options), after its start line.
    pub fn from_child(child: Child, issuer: &str, addr: SocketAddr) -> Idp {
        Idp {
            child,
            issuer: issuer.to_string(),
            addr,
        }
    }

    /// A real access token from the IdP's test-only grant.
    pub fn mint(&self, user: &str, m: &Mint<'_>) -> String {
        let mut pairs = vec![
            ("grant_type", MINT),
            ("client_id", m.client_id.unwrap_or("softphone")),
            ("username", user),
            ("resource", m.resource.unwrap_or(AUDIENCE)),
            ("scope", m.scope.unwrap_or("sip")),
            ("alg", m.alg.unwrap_or("ES256")),
        ];
        if let Some(g) = m.groups {
            pairs.push(("groups", g));
        }
        if let Some(t) = m.tid {
            pairs.push(("tid", t));
        }
        let r = http(
            self.addr,
            "POST",
            "/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &form(&pairs),
        );
        assert_eq!(r.status, 200, "mint: {}", r.body);
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    pub fn token_for(&self, user: &str) -> String {
        self.mint(user, &Mint::default())
    }

    /// Signs `payload` with the IdP's own key for `header.alg` (valid signature, test-chosen
    /// claims).
    pub fn sign(&self, header: &Value, payload: &Value) -> String {
        let r = self.post_json("/test/sign", &json!({"header": header, "payload": payload}));
        r["token"].as_str().unwrap().to_string()
    }

    pub fn keys(&self) -> Value {
        http(self.addr, "GET", "/test/keys", &[], "").json()
    }

    /// The kid of the newest key for `alg`.
    pub fn kid(&self, alg: &str) -> String {
        self.keys()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["alg"] == alg)
            .unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn rotate(&self, action: &str) -> Value {
        self.post_json("/test/rotate", &json!({"action": action}))
    }

    pub fn jwks_mode(&self, mode: &str) {
        self.post_json("/test/jwks", &json!({"mode": mode}));
    }

    pub fn jwks_requests(&self) -> u64 {
        http(self.addr, "GET", "/test/stats", &[], "").json()["jwks_requests"]
            .as_u64()
            .unwrap()
    }

    fn post_json(&self, path: &str, body: &Value) -> Value {
        let r = http(
            self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json()
    }

    /// Claims of a good access token for `user`, to be altered by a test.
    pub fn claims(&self, user: &str) -> Value {
        let t = now();
        json!({
            "iss": self.issuer, "sub": user, "aud": AUDIENCE, "iat": t, "exp": t + 600,
            "scope": "sip", "client_id": "softphone", "preferred_username": user,
            "jti": format!("jti-{}", crate::common::rand_token()),
        })
    }

    pub fn header(&self, alg: &str) -> Value {
        json!({"alg": alg, "typ": "at+jwt", "kid": self.kid(alg)})
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- sipward with the token API ----

pub struct TokenServer {
    pub server: Server,
    pub config: String,
}

/// The ports a token server listens on; 0: the kernel picks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    pub udp: u16,
    pub tcp: u16,
    pub http: u16,
}

/// What differs between test servers.
pub struct Setup<'a> {
    pub sso: &'a str,
    pub algorithms: &'a [&'a str],
    /// (username, password, kind) static accounts.
    pub accounts: &'a [(&'a str, &'a str, &'a str)],
    /// Extra `[token_api]` lines.
    pub token_api: &'a str,
    /// Extra `[[issuers]]` lines.
    pub issuer: &'a str,
    /// Extra `[registrar]` lines.
    pub registrar: &'a str,
    /// Extra `[auth]` lines.
    pub auth: &'a str,
    /// A folder for a durable store and key file; `None` = in memory.
    pub durable: Option<&'a Path>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            sso: "enable",
            algorithms: &["MD5", "SHA-256"],
            accounts: &[],
            token_api: "",
            issuer: "",
            registrar: "",
            auth: "",
            durable: None,
        }
    }
}

/// The config text for `setup`, issuer `idp_issuer`, on the given ports.
pub fn config_text(idp_issuer: &str, setup: &Setup<'_>, dir: &Path, ports: Ports) -> String {
    let Ports { udp, tcp, http } = ports;
    // The registrar phones are told about; a kernel-picked port is not known yet.
    let registrar = match udp {
        0 => "sip:127.0.0.1".to_string(),
        port => format!("sip:127.0.0.1:{port}"),
    };
    let algs: Vec<String> = setup
        .algorithms
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let mut accounts = String::new();
    for (user, pw, kind) in setup.accounts {
        let file = dir.join(format!("{user}.pw"));
        std::fs::write(&file, pw).unwrap();
        accounts.push_str(&format!(
            "[[accounts]]\nusername = \"{user}\"\ndomain = \"{DOMAIN}\"\nkind = \"{kind}\"\npassword_file = \"{}\"\n\n",
            file.display()
        ));
    }
    let store = match setup.durable {
        Some(d) => {
            let keys = d.join("credential-keys");
            if !keys.exists() {
                std::fs::write(&keys, format!("k1 {}\n", "5a".repeat(32))).unwrap();
            }
            format!(
                "store_path = \"{}\"\ncredential_keys_file = \"{}\"\n",
                d.join("devices.db").display(),
                keys.display()
            )
        }
        None => "store_path = \":memory:\"\n".to_string(),
    };
    format!(
        "[log]\nlevel = \"info\"\n\n[sip]\nudp = [\"127.0.0.1:{udp}\"]\ntcp = [\"127.0.0.1:{tcp}\"]\nudp_workers = 2\n\n\
         [registrar]\nmin_expires = 1\n{}\n\n[auth]\n{}\n\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\nadmin_token_sha256 = \"{}\"\n\n\
         [token_api]\n{store}{}\n\n\
         [[issuers]]\nname = \"test-idp\"\nissuer = \"{idp_issuer}\"\naudience = \"{AUDIENCE}\"\nalgorithms = [\"ES256\", \"RS256\"]\n\
         client_ids = [\"softphone\"]\nlogin_client_id = \"softphone\"\nlabel = \"Test IdP\"\nadmin_claim = \"groups\"\nadmin_values = [\"sipward-admins\"]\n{}\n\n\
         [[domains]]\nname = \"{DOMAIN}\"\nalgorithms = [{}]\nsso = \"{}\"\nissuers = [\"test-idp\"]\nregistrar = \"{registrar}\"\n\n{accounts}",
        setup.registrar,
        setup.auth,
        sha256_hex(ADMIN_TOKEN.as_bytes()),
        setup.token_api,
        setup.issuer,
        algs.join(", "),
        setup.sso,
    )
}

impl TokenServer {
    /// An in-process server for `setup` on kernel-chosen ports.
    pub fn start(idp: &Idp, setup: &Setup<'_>) -> TokenServer {
        TokenServer::start_on(idp, setup, Ports::default())
    }

    /// Starts on given ports (a restart reuses the first run's [`TokenServer::ports`]).
    pub fn start_on(idp: &Idp, setup: &Setup<'_>, ports: Ports) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let config = config_text(&idp.issuer, setup, dir.path(), ports);
        let path = dir.path().join("sipward.toml");
        std::fs::write(&path, &config).unwrap();
        let server = Server::in_process(path, dir);
        TokenServer { server, config }
    }

    /// The `sipward` binary for `setup`, on free ports (for the tests that drive it with SIPp).
    pub fn start_binary(idp: &Idp, setup: &Setup<'_>) -> TokenServer {
        let port = free_port();
        let ports = Ports {
            udp: port,
            tcp: port,
            http: free_port(),
        };
        let dir = tempfile::tempdir().unwrap();
        let config = config_text(&idp.issuer, setup, dir.path(), ports);
        let path = dir.path().join("sipward.toml");
        std::fs::write(&path, &config).unwrap();
        let server = Server::start_with_file(path, dir, port, ports.http, None);
        TokenServer { server, config }
    }

    /// The ports this server listens on.
    pub fn ports(&self) -> Ports {
        Ports {
            udp: self.server.udp.port(),
            tcp: self.server.tcp.port(),
            http: self.server.http.port(),
        }
    }

    pub fn http(&self, method: &str, path: &str, bearer: Option<&str>, body: &str) -> HttpResponse {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        http(self.server.http, method, path, &headers, body)
    }

    /// `POST /v1/sip/credentials` for `device`.
    pub fn exchange(&self, token: &str, device: &str) -> HttpResponse {
        self.http(
            "POST",
            "/v1/sip/credentials",
            Some(token),
            &json!({"device_id": device, "device_name": format!("{device} test"), "platform": "test"})
                .to_string(),
        )
    }

    /// An exchange that must succeed; returns the credential.
    pub fn credential(&self, token: &str, device: &str) -> Credential {
        let r = self.exchange(token, device);
        assert!(
            r.status == 201 || r.status == 200,
            "exchange: {} {}\n{}",
            r.status,
            r.body,
            self.server.stderr()
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let v = r.json();
        Credential {
            username: v["sip"]["username"].as_str().unwrap().into(),
            password: v["sip"]["password"].as_str().unwrap().into(),
            aor: v["sip"]["aor"].as_str().unwrap().into(),
            expires_in: v["expires_in"].as_u64().unwrap(),
            body: v,
        }
    }

    pub fn metric(&self, series: &str) -> f64 {
        self.server.metric(series)
    }

    /// The bindings of `aor_user@example.test` in the admin view.
    pub fn bindings_of(&self, user: &str) -> Vec<Value> {
        let (status, body) = self
            .server
            .http_get(
                &format!("/admin/v1/bindings?aor={user}@{DOMAIN}"),
                Some(ADMIN_TOKEN),
            )
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["bindings"].as_array().unwrap().clone())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub aor: String,
    pub expires_in: u64,
    pub body: Value,
}

/// REGISTER as `aor_user` with a device credential over `c`: 401, then Digest with `alg`.
pub fn register_device(
    c: &mut crate::common::Client,
    aor_user: &str,
    cred: &Credential,
    alg: &str,
    expires: Option<&str>,
) -> crate::common::Resp {
    register_with(
        c,
        &crate::common::Register::new(aor_user),
        cred,
        alg,
        expires,
    )
}

pub fn register_with(
    c: &mut crate::common::Client,
    reg: &crate::common::Register,
    cred: &Credential,
    alg: &str,
    expires: Option<&str>,
) -> crate::common::Resp {
    let mut reg = reg.clone();
    reg.expires = expires.map(str::to_string);
    let first = c.request(&reg.build(c)).expect("401");
    assert_eq!(first.status(), 401, "{}", first.text);
    let nonce = first
        .nonce_for(alg)
        .unwrap_or_else(|| panic!("no {alg} challenge in {}", first.text));
    let next = crate::common::with_credentials(&reg, alg, &cred.username, &cred.password, &nonce);
    c.request(&next.build(c)).expect("final response")
}

// ---- Forged tokens ----

/// An ES256 key the IdP does not publish.
pub struct ForgedKey {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
    pub kid: String,
}

impl ForgedKey {
    pub fn new(kid: &str) -> ForgedKey {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        ForgedKey {
            pair,
            kid: kid.to_string(),
        }
    }

    /// The public key as a JWK (for the `jwk` header injection).
    pub fn jwk(&self) -> Value {
        use aws_lc_rs::signature::KeyPair;
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]), "kid": self.kid})
    }

    pub fn sign(&self, header: &Value, payload: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        let sig = self
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// `header.payload.signature` from raw JSON text and signature bytes.
pub fn raw_token(header: &str, payload: &str, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// HS256 over header.payload with `secret`.
pub fn hs256(header: &Value, payload: &Value, secret: &[u8]) -> String {
    use hmac::Mac;
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(mac.finalize().into_bytes()))
}

/// A loopback listener that counts the connections made to it (J6).
pub struct CountingListener {
    pub addr: SocketAddr,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingListener {
    pub fn start() -> CountingListener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        CountingListener { addr, count }
    }

    pub fn connections(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}
