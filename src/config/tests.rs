//! Unit tests for `crate::config`: the shipped profiles parse, every default and range is what
//! example.toml says, every problem is reported with its key, secret files resolve relative to
//! the config folder, and no secret reaches `Debug` or an error message.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256, Sha512_256};

use super::raw::RawConfig;
use super::*;

const EXAMPLE: &str = include_str!("../../config/example.toml");

const ONE_DOMAIN: &str = "[[domains]]\nname = \"example.test\"\n";

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(text, Path::new(""))
}

fn problems_of(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors,
    }
}

/// Asserts a problem for `key` whose message contains `fragment`.
#[track_caller]
fn assert_problem(errors: &ConfigErrors, key: &str, fragment: &str) {
    assert!(
        errors
            .problems()
            .iter()
            .any(|p| p.key() == key && p.message().contains(fragment)),
        "no problem `{key}: …{fragment}…` in:\n{errors}"
    );
}

fn hex_of(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

#[test]
fn dev_profile_parses_and_is_loopback_only() {
    let config = Config::dev();
    let loopback: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    assert_eq!(config.sip.udp, vec![loopback]);
    assert_eq!(config.sip.tcp, vec![loopback]);
    assert_eq!(config.http.listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(config.domains.len(), 1);
    assert_eq!(config.domains[0].name, "example.test");
    let tls = config.tls.as_ref().expect("dev serves TLS");
    assert!(tls.listeners.iter().all(|l| l.addr.ip().is_loopback()));
    crate::transport::tls::TlsState::check(tls).expect("dev certificates in certs/dev load");
    let names: Vec<_> = config
        .accounts
        .iter()
        .map(|a| a.username.as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(config
        .accounts
        .iter()
        .all(|a| a.kind == AccountKind::Human && a.algorithms.len() == 3));
    let token = config
        .http
        .admin_token
        .as_ref()
        .expect("dev has an admin token");
    assert!(token.matches(b"dev-admin-token"));
    assert!(!token.matches(b"dev-admin-token "));
    assert!(DEV_PROFILE.contains("FOR DEVELOPMENT ONLY"));
}

#[test]
fn dev_profile_ha1_values_match_the_published_passwords() {
    let config = Config::dev();
    for account in &config.accounts {
        let password = format!("{}-dev-secret", account.username);
        assert!(
            DEV_PROFILE.contains(&password),
            "password listed in the comment block"
        );
        let a1 = format!("{}:example.test:{password}", account.username);
        let secret = &account.secret;
        let sha256 = secret.ha1(DigestAlgorithmName::Sha256);
        assert_eq!(sha256, Some(hex_of(Sha256::digest(&a1)).as_str()));
        let sha512_256 = secret.ha1(DigestAlgorithmName::Sha512_256);
        assert_eq!(sha512_256, Some(hex_of(Sha512_256::digest(&a1)).as_str()));
        assert_eq!(secret.ha1(DigestAlgorithmName::Md5).map(str::len), Some(32));
    }
    // MD5 is not a dependency; pin the values computed with `md5sum`.
    assert!(DEV_PROFILE.contains("8bd3979a4aebacbfe70c28bacbcadd50"));
    assert!(DEV_PROFILE.contains("c4d7b859135599dec288f1b9144711dc"));
}

#[test]
fn example_parses_validates_and_shows_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("secrets")).unwrap();
    fs::write(dir.path().join("secrets/alice.pw"), "correct horse\n").unwrap();
    fs::write(
        dir.path().join("secrets/scim-corp.token"),
        "a-scim-token-of-the-idp\n",
    )
    .unwrap();
    let config = Config::from_toml_str(EXAMPLE, dir.path()).unwrap();
    assert_eq!(config.scim.len(), 1);
    assert_eq!(config.backchannel_logout[0].client_id, "sipward-softphone");
    assert_eq!(config.roles[0].auditor, ["sipward-auditors"]);
    assert_eq!(config.audit.file, None);
    assert_eq!(config.accounts.len(), 2);
    assert_eq!(config.accounts[1].algorithms, [DigestAlgorithmName::Md5]);

    let raw: RawConfig = toml::from_str(EXAMPLE).unwrap();
    let defaults = RawConfig::default();
    assert_eq!(raw.log, defaults.log);
    assert_eq!(raw.server, defaults.server);
    assert_eq!(raw.sip, defaults.sip);
    assert_eq!(raw.registrar, defaults.registrar);
    assert_eq!(raw.auth, defaults.auth);
    assert_eq!(raw.http, defaults.http);
    assert_eq!(raw.token_api, defaults.token_api);
    assert_eq!(raw.audit, defaults.audit);
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(config.issuers[0].domains, ["example.test"]);
    assert_eq!(config.domains[0].sso, Sso::Enable);
    assert_eq!(config.token_api.credential_ttl, Duration::from_secs(43_200));
    assert_eq!(config.token_api.max_devices_per_user, 5);
}

#[test]
fn missing_tables_take_documented_defaults() {
    let config = parse(ONE_DOMAIN).unwrap();
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.server.server_header.as_deref(), Some("sipward"));
    assert_eq!(config.server.drain_grace, Duration::from_secs(5));
    assert_eq!(config.sip.udp_workers, None);
    assert_eq!(config.sip.udp_recv_buffer_bytes, 4_194_304);
    assert_eq!(config.sip.max_message_bytes, 65_535);
    assert_eq!(config.sip.max_header_bytes, 16_384);
    assert_eq!(config.sip.max_headers, 128);
    assert_eq!(config.sip.tcp_max_connections, 10_000);
    assert_eq!(config.sip.tcp_idle_timeout, Duration::from_secs(600));
    assert_eq!(config.sip.tcp_header_timeout, Duration::from_secs(10));
    assert_eq!(config.sip.t1, Duration::from_millis(500));
    assert_eq!(config.sip.max_transactions, 100_000);
    assert_eq!(config.registrar.min_expires, Duration::from_secs(60));
    assert_eq!(config.registrar.max_expires, Duration::from_secs(3600));
    assert_eq!(config.registrar.default_expires, Duration::from_secs(3600));
    assert_eq!(config.registrar.max_bindings_per_aor, 10);
    assert_eq!(config.registrar.max_aors, 1_000_000);
    assert_eq!(config.registrar.expiry_jitter_percent, 0);
    assert!(config.registrar.remove_bindings_on_close);
    assert_eq!(config.registrar.purge_interval, Duration::from_secs(1));
    assert_eq!(config.auth.nonce_lifetime, Duration::from_secs(300));
    assert_eq!(config.auth.nonce_max_drift, Duration::from_secs(3));
    assert!(config.auth.nonce_secret.is_none());
    assert!(!config.auth.bind_nonce_to_source);
    assert_eq!(config.auth.replay_table_size, 1_048_576);
    assert_eq!(config.auth.max_failures_per_source, 20);
    assert_eq!(config.auth.max_failures_per_user, 10);
    assert_eq!(config.auth.failure_window, Duration::from_secs(60));
    assert_eq!(config.http.admin_token, None);
    assert_eq!(
        config.domains[0].algorithms,
        [DigestAlgorithmName::Sha256, DigestAlgorithmName::Md5]
    );
    assert!(config.accounts.is_empty());
}

#[test]
fn empty_strings_disable_optional_features() {
    let config = parse(&format!(
        "[server]\nserver_header = \"\"\n[http]\nlisten = \"\"\n{ONE_DOMAIN}"
    ))
    .unwrap();
    assert_eq!(config.server.server_header, None);
    assert_eq!(config.http.listen, None);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[log]
format = "xml"
level = " "

[server]
server_header = "sipward\r\nX-Injected: 1"
drain_grace_secs = 601

[sip]
udp = ["1.2.3.4", "127.0.0.1:5060", "127.0.0.1:5060"]
tcp = ["localhost:5060"]
udp_workers = 2000
udp_recv_buffer_bytes = 1
max_message_bytes = 2000
max_header_bytes = 4000
max_headers = 2
tcp_max_connections = 0
tcp_idle_timeout_secs = 20
tcp_header_timeout_secs = 30
t1_ms = 10
max_transactions = 999

[registrar]
min_expires = 120
max_expires = 60
default_expires = 0
max_bindings_per_aor = 0
max_aors = 0
expiry_jitter_percent = 51
purge_interval_secs = 0

[auth]
nonce_lifetime_secs = 20
nonce_max_drift_secs = 30
nonce_secret_file = "x"
replay_table_size = 1
max_failures_per_source = 0
max_failures_per_user = 0
failure_window_secs = 0

[http]
listen = "everywhere"
admin_token_file = "token"
admin_token_sha256 = "abc"

[[domains]]
name = "Example.TEST"
algorithms = ["SHA-1", "MD5", "md5"]

[[domains]]
name = "example.test"
algorithms = []

[[domains]]
name = "bad domain"

[[accounts]]
username = "alice"
domain = "example.test"
kind = "human"
password_file = "alice.pw"
ha1_md5 = "8bd3979a4aebacbfe70c28bacbcadd50"

[[accounts]]
username = "bob"
domain = "foo.test"
kind = "admin"
ha1_md5 = "abc"
ha1_sha256 = "zz59daddebcb48cdc5e729c66c333027bd420f337ff55495367d8fafa74912a3"

[[accounts]]
username = ""
domain = "example.test"
kind = "device"

[[accounts]]
username = "carol"
domain = "example.test"
kind = "trunk"
ha1_sha512_256 = "c07ad4274b2a50df25b87f01f3d86b428e144bf2f32618aa125b41505aa7187e"

[[accounts]]
username = "dave:x"
domain = "example.test"
kind = "trunk"
ha1_md5 = "8bd3979a4aebacbfe70c28bacbcadd50"
algorithms = ["MD5", "SHA-256"]

[[accounts]]
username = "erin"
domain = "EXAMPLE.test"
kind = "break-glass"
ha1_md5 = "8bd3979a4aebacbfe70c28bacbcadd50"

[[accounts]]
username = "erin"
domain = "example.test"
kind = "device"
ha1_md5 = "8bd3979a4aebacbfe70c28bacbcadd50"
"#;
    let errors = problems_of(text);
    let expected = [
        ("log.format", r#""xml" is not one of "text", "json""#),
        ("log.level", "must not be empty"),
        ("server.server_header", "control characters"),
        (
            "server.drain_grace_secs",
            "must be between 0 and 600 (got 601)",
        ),
        ("sip.udp[0]", r#""1.2.3.4" is not an address:port"#),
        ("sip.udp[2]", r#""127.0.0.1:5060" is listed twice"#),
        ("sip.tcp[0]", r#""localhost:5060" is not an address:port"#),
        ("sip.udp_workers", "must be between 0 and 1024"),
        ("sip.max_transactions", "must be between 1000 and 100000000"),
        (
            "sip.udp_recv_buffer_bytes",
            "must be between 65536 and 268435456",
        ),
        (
            "sip.max_header_bytes",
            "must not exceed sip.max_message_bytes (4000 > 2000)",
        ),
        ("sip.max_headers", "must be between 16 and 1024 (got 2)"),
        ("sip.tcp_max_connections", "must be between 1 and"),
        (
            "sip.tcp_header_timeout_secs",
            "must not exceed sip.tcp_idle_timeout_secs (30 > 20)",
        ),
        ("sip.t1_ms", "must be between 50 and 5000 (got 10)"),
        (
            "registrar.min_expires",
            "must not exceed registrar.max_expires (120 > 60)",
        ),
        (
            "registrar.default_expires",
            "must be between 1 and 604800 (got 0)",
        ),
        (
            "registrar.max_bindings_per_aor",
            "must be between 1 and 1000",
        ),
        ("registrar.max_aors", "must be between 1 and"),
        (
            "registrar.expiry_jitter_percent",
            "must be between 0 and 50 (got 51)",
        ),
        ("registrar.purge_interval_secs", "must be between 1 and 60"),
        (
            "auth.nonce_max_drift_secs",
            "must be less than auth.nonce_lifetime_secs (30 >= 20)",
        ),
        (
            "auth.nonce_secret_file",
            r#"cannot read "x": No such file or directory"#,
        ),
        ("auth.replay_table_size", "must be between 1024 and"),
        ("auth.max_failures_per_source", "must be between 1 and"),
        ("auth.max_failures_per_user", "must be between 1 and"),
        ("auth.failure_window_secs", "must be between 1 and 86400"),
        ("http.listen", r#""everywhere" is not an address:port"#),
        (
            "http",
            "give either admin_token_file or admin_token_sha256, not both",
        ),
        (
            "domains[0].algorithms[0]",
            r#""SHA-1" is not one of "MD5", "SHA-256", "SHA-512-256""#,
        ),
        ("domains[0].algorithms[2]", r#""md5" is listed twice"#),
        ("domains[1].algorithms", "must list at least one algorithm"),
        (
            "domains[1].name",
            r#""example.test" is already configured by domains[0]"#,
        ),
        (
            "domains[2].name",
            r#""bad domain" is not a valid domain name"#,
        ),
        (
            "accounts[0]",
            "give either password_file or ha1_* values, not both",
        ),
        (
            "accounts[1].domain",
            r#""foo.test" is not a configured domain"#,
        ),
        ("accounts[1].kind", r#""admin" is not one of"#),
        ("accounts[1].ha1_md5", "must be 32 hex digits"),
        ("accounts[1].ha1_sha256", "must be 64 hex digits"),
        ("accounts[2].username", "must not be empty"),
        (
            "accounts[2]",
            "give password_file or at least one ha1_* value",
        ),
        (
            "accounts[3]",
            r#"no ha1_* value matches an algorithm of domain "example.test""#,
        ),
        ("accounts[4].username", "must not contain ':'"),
        (
            "accounts[4].algorithms[1]",
            "SHA-256 is listed but no ha1 value for it is given",
        ),
        (
            "accounts[6]",
            "erin@example.test is already configured by accounts[5]",
        ),
    ];
    for (key, fragment) in expected {
        assert_problem(&errors, key, fragment);
    }
    assert_eq!(
        errors.problems().len(),
        expected.len(),
        "unexpected extra problems:\n{errors}"
    );
    // One problem per line, each as `key: message`.
    let display = errors.to_string();
    assert_eq!(display.lines().count(), expected.len());
    // Validation problems carry the line of their key (issue 18).
    assert!(display.lines().any(|line| line
        .strip_prefix(
            "registrar.min_expires: must not exceed registrar.max_expires (120 > 60) (line "
        )
        .is_some_and(|rest| rest.ends_with(')'))));
}

#[test]
fn default_expires_must_lie_between_min_and_max() {
    let errors = problems_of(&format!(
        "[registrar]\nmin_expires = 60\nmax_expires = 600\ndefault_expires = 3600\n{ONE_DOMAIN}"
    ));
    assert_problem(&errors, "registrar.default_expires", "(60..=600, got 3600)");
}

#[test]
fn no_listener_and_no_domain_are_problems() {
    let errors = problems_of("[sip]\nudp = []\ntcp = []\n");
    assert_problem(&errors, "sip", "at least one listener is required");
    assert_problem(
        &errors,
        "domains",
        "at least one [[domains]] entry is required",
    );
}

#[test]
fn unknown_keys_are_rejected_by_name_and_line() {
    let errors = problems_of("[sip]\nudp = []\nudpp = []\n");
    let problem = &errors.problems()[0];
    assert_eq!(problem.key(), "sip.udpp");
    assert!(
        problem.message().contains("unknown field `udpp`"),
        "{problem}"
    );
    assert!(problem.message().contains("line 3"), "{problem}");

    let errors = problems_of(&format!(
        "{ONE_DOMAIN}[[accounts]]\nusername = \"a\"\npasword_file = \"x\"\n"
    ));
    assert_eq!(errors.problems()[0].key(), "accounts[0].pasword_file");
    assert!(errors.to_string().contains("unknown field `pasword_file`"));

    let errors = problems_of(&format!("{ONE_DOMAIN}[registar]\nmin_expires = 1\n"));
    assert!(
        errors.to_string().contains("unknown field `registar`"),
        "{errors}"
    );
    assert_eq!(errors.to_string().lines().count(), 1);
}

#[test]
fn wrong_types_name_the_key() {
    let errors = problems_of("[sip]\nt1_ms = \"fast\"\n");
    let problem = &errors.problems()[0];
    assert_eq!(problem.key(), "sip.t1_ms");
    assert!(problem.message().contains("line 2"), "{problem}");

    let errors = problems_of("[registrar]\nmax_aors = -1\n");
    assert_eq!(errors.problems()[0].key(), "registrar.max_aors");
}

#[test]
fn secret_files_resolve_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    fs::create_dir(&secrets).unwrap();
    fs::write(secrets.join("alice.pw"), "s3cret-pass\r\n").unwrap();
    fs::write(secrets.join("nonce.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    fs::write(secrets.join("admin.token"), "a-long-admin-token-value\n").unwrap();
    let path = dir.path().join("sipward.toml");
    fs::write(
        &path,
        format!(
            "[auth]\nnonce_secret_file = \"secrets/nonce.key\"\n\
             [http]\nadmin_token_file = \"secrets/admin.token\"\n{ONE_DOMAIN}\
             [[accounts]]\nusername = \"alice\"\ndomain = \"example.test\"\nkind = \"device\"\n\
             password_file = \"secrets/alice.pw\"\n"
        ),
    )
    .unwrap();

    let config = Config::load(&path).unwrap();
    let AccountSecret::Password(password) = &config.accounts[0].secret else {
        panic!("expected a password");
    };
    assert_eq!(password.expose(), b"s3cret-pass");
    assert_eq!(config.accounts[0].algorithms, config.domains[0].algorithms);
    let nonce = config.auth.nonce_secret.as_ref().unwrap();
    assert_eq!(nonce.expose(), [0xab; 32]);
    let token = config.http.admin_token.as_ref().unwrap();
    assert!(token.matches(b"a-long-admin-token-value"));
    assert_eq!(
        *token,
        AdminToken::Sha256(Sha256::digest(b"a-long-admin-token-value").into())
    );

    // The same text parsed against another folder does not find the files.
    let text = fs::read_to_string(&path).unwrap();
    let errors = Config::from_toml_str(&text, Path::new("/nonexistent")).unwrap_err();
    assert_problem(
        &errors,
        "auth.nonce_secret_file",
        r#"cannot read "/nonexistent/secrets/nonce.key": No such file or directory"#,
    );
    assert_problem(&errors, "http.admin_token_file", "cannot read");
    assert_problem(&errors, "accounts[0].password_file", "cannot read");
}

#[test]
fn nonce_secret_accepts_hex_or_raw_of_at_least_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let load = |content: &[u8]| {
        fs::write(dir.path().join("key"), content).unwrap();
        Config::from_toml_str(
            &format!("[auth]\nnonce_secret_file = \"key\"\n{ONE_DOMAIN}"),
            dir.path(),
        )
    };
    let raw: Vec<u8> = (0u8..32).collect();
    assert_eq!(load(&raw).unwrap().auth.nonce_secret.unwrap().expose(), raw);
    let hex = format!("{}\n", hex::encode([7u8; 40]));
    assert_eq!(
        load(hex.as_bytes())
            .unwrap()
            .auth
            .nonce_secret
            .unwrap()
            .len(),
        40
    );

    let short_hex = load(format!("{}\n", hex::encode([7u8; 16])).as_bytes()).unwrap_err();
    assert_problem(
        &short_hex,
        "auth.nonce_secret_file",
        "holds 16 bytes of hex-encoded secret; at least 32 are required",
    );
    let short_raw = load(b"too short").unwrap_err();
    assert_problem(
        &short_raw,
        "auth.nonce_secret_file",
        "holds 9 bytes of secret",
    );
    assert!(!short_raw.to_string().contains("too short"));
}

#[test]
fn empty_password_and_short_admin_token_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty.pw"), "\n").unwrap();
    fs::write(dir.path().join("admin.token"), "short\n").unwrap();
    let text = format!(
        "[http]\nadmin_token_file = \"admin.token\"\n{ONE_DOMAIN}\
         [[accounts]]\nusername = \"a\"\ndomain = \"example.test\"\nkind = \"human\"\n\
         password_file = \"empty.pw\"\n"
    );
    let errors = Config::from_toml_str(&text, dir.path()).unwrap_err();
    assert_problem(
        &errors,
        "accounts[0].password_file",
        "holds an empty password",
    );
    assert_problem(&errors, "http.admin_token_file", "shorter than 16 bytes");
    assert!(!errors.to_string().contains("short\n"));
}

#[test]
fn bad_admin_token_hash_is_a_problem() {
    let errors = problems_of(&format!(
        "[http]\nadmin_token_sha256 = \"{}\"\n{ONE_DOMAIN}",
        "g".repeat(64)
    ));
    assert_problem(&errors, "http.admin_token_sha256", "must be 64 hex digits");
}

#[test]
fn names_are_normalised() {
    let config = parse(
        "[[domains]]\nname = \"Example.TEST\"\nalgorithms = [\"sha-512-256\"]\n\
         [[accounts]]\nusername = \"Alice\"\ndomain = \"EXAMPLE.test\"\nkind = \"break-glass\"\n\
         ha1_sha512_256 = \"C07AD4274B2A50DF25B87F01F3D86B428E144BF2F32618AA125B41505AA7187E\"\n",
    )
    .unwrap();
    assert_eq!(config.domains[0].name, "example.test");
    assert!(config.domain("EXAMPLE.Test").is_some());
    let account = &config.accounts[0];
    assert_eq!(account.username, "Alice");
    assert_eq!(account.domain, "example.test");
    assert_eq!(account.kind, AccountKind::BreakGlass);
    assert_eq!(account.algorithms, [DigestAlgorithmName::Sha512_256]);
    assert_eq!(
        account.secret.ha1(DigestAlgorithmName::Sha512_256),
        Some("c07ad4274b2a50df25b87f01f3d86b428e144bf2f32618aa125b41505aa7187e")
    );
}

#[test]
fn inherited_algorithms_narrow_to_the_given_ha1_values() {
    let config = parse(&format!(
        "{ONE_DOMAIN}[[accounts]]\nusername = \"phone\"\ndomain = \"example.test\"\n\
         kind = \"device\"\nha1_md5 = \"0123456789abcdef0123456789abcdef\"\n"
    ))
    .unwrap();
    assert_eq!(config.accounts[0].algorithms, [DigestAlgorithmName::Md5]);
}

#[test]
fn debug_output_and_errors_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pw"), "hunter2-very-secret").unwrap();
    let text = format!(
        "{ONE_DOMAIN}[[accounts]]\nusername = \"a\"\ndomain = \"example.test\"\nkind = \"human\"\n\
         password_file = \"pw\"\n"
    );
    let config = Config::from_toml_str(&text, dir.path()).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"));

    let dev = format!("{:?}", Config::dev());
    assert!(
        !dev.contains("8bd3979a4aebacbfe70c28bacbcadd50"),
        "HA1 redacted"
    );
    assert!(!dev.contains("1734d503"), "admin token hash redacted");

    let bad_ha1 = "0a59daddebcb48cdc5e729c66c333027bd420f337ff55495367d8fafa74912a";
    let errors = problems_of(&format!(
        "{ONE_DOMAIN}[[accounts]]\nusername = \"a\"\ndomain = \"example.test\"\nkind = \"human\"\n\
         ha1_sha256 = \"{bad_ha1}\"\n"
    ));
    assert_problem(&errors, "accounts[0].ha1_sha256", "got 63 characters");
    assert!(!errors.to_string().contains(bad_ha1));
}

#[test]
fn load_reports_an_unreadable_file() {
    let errors = Config::load("/nonexistent/sipward.toml").unwrap_err();
    assert_problem(
        &errors,
        "config",
        r#"cannot read "/nonexistent/sipward.toml": No such file or directory"#,
    );
}

#[test]
fn algorithm_names_round_trip() {
    for algorithm in DigestAlgorithmName::ALL {
        assert_eq!(
            DigestAlgorithmName::from_name(algorithm.as_str()),
            Some(algorithm)
        );
    }
    assert_eq!(DigestAlgorithmName::from_name("MD5-sess"), None);
}

const ISSUER: &str = "[[issuers]]\nname = \"corp\"\nissuer = \"https://idp.example.test\"\naudience = \"urn:sipward:api\"\n";

#[test]
fn dev_profile_trusts_the_test_idp_in_memory() {
    let config = Config::dev();
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(config.issuers[0].issuer, "http://127.0.0.1:4400");
    assert_eq!(config.domains[0].sso, Sso::Enable);
    assert!(config.token_api.store_path.is_none());
    assert!(config.token_api.credential_keys.is_none());
}

#[test]
fn opaque_token_keys_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty.secret"), "\n").unwrap();
    let issuer = |n: &str, extra: &str| {
        format!("[[issuers]]\nname = \"{n}\"\nissuer = \"https://{n}.example.test\"\naudience = \"a\"\n{extra}\n")
    };
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:5060\"]\n{}{}{}{}{}\
         [[domains]]\nname = \"example.test\"\nsso = \"enable\"\nissuers = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n",
        issuer("a", "token_format = \"opaque\"\nopaque_cache_secs = 7200"),
        issuer("b", "token_format = \"opaque\"\nintrospection_endpoint = \"http://idp.example.test/i\"\nintrospection_client_id = \"c\"\nintrospection_secret_file = \"empty.secret\"\nuserinfo_endpoint = \"https://x.example.test/u\""),
        issuer("c", "token_format = \"opaque\"\nopaque_validation = \"userinfo\"\nuserinfo_endpoint = \"https://x.example.test/u\""),
        issuer("d", "introspection_endpoint = \"https://x.example.test/i\""),
        issuer("e", "token_format = \"paseto\"\nopaque_validation = \"guess\""),
    );
    let errors = match Config::from_toml_str(&text, dir.path()) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e,
    };
    for (key, fragment) in [
        ("issuers[0].opaque_cache_secs", "between 0 and 3600"),
        ("issuers[0].introspection_endpoint", "is required"),
        ("issuers[0].introspection_client_id", "is required"),
        ("issuers[0].introspection_secret_file", "is required"),
        ("issuers[1].introspection_endpoint", "only https"),
        ("issuers[1].introspection_secret_file", "empty"),
        (
            "issuers[1].userinfo_endpoint",
            "only used with opaque_validation",
        ),
        ("issuers[2].tokeninfo_endpoint", "is required"),
        (
            "issuers[3].introspection_endpoint",
            "only used with token_format",
        ),
        ("issuers[4].token_format", "is not one of"),
        ("issuers[4].opaque_validation", "is not one of"),
    ] {
        assert_problem(&errors, key, fragment);
    }
    // The secret never shows in Debug.
    fs::write(dir.path().join("s.secret"), "hunter2-introspection\n").unwrap();
    let ok = format!(
        "[sip]\nudp = [\"127.0.0.1:5060\"]\n{}[[domains]]\nname = \"example.test\"\nsso = \"enable\"\nissuers = [\"a\"]\n",
        issuer("a", "token_format = \"opaque\"\nintrospection_endpoint = \"https://a.example.test/i\"\nintrospection_client_id = \"c\"\nintrospection_secret_file = \"s.secret\"")
    );
    let config = Config::from_toml_str(&ok, dir.path()).unwrap();
    assert!(config.issuers[0].opaque.is_some());
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn token_api_keys_are_checked_by_name() {
    let text =
        "[token_api]\nstore_path = \"devices.db\"\ncredential_ttl_secs = 90000\nleeway_secs = 120\n\
         jwks_min_cache_secs = 600\njwks_max_cache_secs = 60\nmax_header_bytes = 100\n\
         [[issuers]]\nname = \"Corp!\"\nissuer = \"http://idp.example.test\"\naudience = \"\"\n\
         algorithms = [\"HS256\", \"none\", \"XX1\"]\ntoken_types = []\nscope_claim = \"realm_access..roles\"\n\
         tenant_claim = \"tid\"\nusername_claim = \"user name\"\nuser_domains = [\"a b\"]\n\
         [[issuers]]\nname = \"hd\"\nissuer = \"https://hd.example.test\"\naudience = \"a\"\nuser_domain_claim = \"hd\"\n\
         [[issuers]]\nname = \"unused\"\nissuer = \"https://other.example.test\"\naudience = \"a\"\n\
         [[domains]]\nname = \"example.test\"\nsso = \"sometimes\"\nissuers = [\"Corp!\", \"nobody\"]\nregistrar = \"http://x\"\n";
    let errors = problems_of(text);
    for (key, fragment) in [
        ("token_api.credential_keys_file", "required with a durable"),
        ("token_api.credential_ttl_secs", "between 60 and 86400"),
        ("token_api.leeway_secs", "between 0 and 60"),
        ("token_api.jwks_min_cache_secs", "must not exceed"),
        ("token_api.max_header_bytes", "between 8192"),
        ("issuers[0].name", "a-z"),
        ("issuers[0].issuer", "only https"),
        ("issuers[0].audience", "must not be empty"),
        ("issuers[0].algorithms[0]", "never accepted"),
        ("issuers[0].algorithms[1]", "never accepted"),
        ("issuers[0].algorithms[2]", "is not one of"),
        ("issuers[0].token_types", "at least one"),
        ("issuers[0].scope_claim", "dotted path"),
        ("issuers[0].username_claim", "without whitespace"),
        ("issuers[0].user_domains[0]", "DNS domain"),
        (
            "issuers[1].user_domain_claim",
            "only used with user_domains",
        ),
        ("issuers[0]", "tenant_claim and tenants together"),
        ("issuers[2]", "not listed in any domains"),
        ("domains[0].sso", "is not one of"),
        (
            "domains[0].issuers[1]",
            "not the name of an [[issuers]] entry",
        ),
        ("domains[0].registrar", "sip: or sips:"),
    ] {
        assert_problem(&errors, key, fragment);
    }
}

#[test]
fn sso_and_issuers_must_agree() {
    let off_with_issuers =
        format!("{ISSUER}[[domains]]\nname = \"example.test\"\nissuers = [\"corp\"]\n");
    assert_problem(
        &problems_of(&off_with_issuers),
        "domains[0].sso",
        "is \"off\"",
    );
    let enforce_without = "[[domains]]\nname = \"example.test\"\nsso = \"enforce\"\n";
    assert_problem(
        &problems_of(enforce_without),
        "domains[0].issuers",
        "needs at least one",
    );
    let reserved = format!(
        "{ISSUER}[[domains]]\nname = \"example.test\"\nsso = \"enable\"\nissuers = [\"corp\"]\n\
         [[accounts]]\nusername = \"d-phone\"\ndomain = \"example.test\"\nkind = \"device\"\nha1_md5 = \"{}\"\n",
        "0".repeat(32)
    );
    assert_problem(&problems_of(&reserved), "accounts[0].username", "reserved");
    let ok = format!(
        "{ISSUER}[[domains]]\nname = \"example.test\"\nsso = \"enforce\"\nissuers = [\"corp\"]\n"
    );
    let config = parse(&ok).unwrap();
    assert_eq!(config.issuers[0].domains, ["example.test"]);
    assert_eq!(
        config.issuers[0].algorithms,
        ["RS256", "PS256", "ES256", "EdDSA"]
    );
    assert_eq!(config.issuers[0].required_scope.as_deref(), Some("sip"));
    assert_eq!(
        config.issuers[0].discovery_url,
        "https://idp.example.test/.well-known/openid-configuration"
    );
    assert_eq!(config.domains[0].registrar, "sip:example.test");
}

#[test]
fn credential_keys_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("keys"),
        format!("old {}\nnew {}\n", "11".repeat(32), "22".repeat(32)),
    )
    .unwrap();
    let text = format!(
        "[token_api]\nstore_path = \"devices.db\"\ncredential_keys_file = \"keys\"\n{ISSUER}\
         [[domains]]\nname = \"example.test\"\nsso = \"enable\"\nissuers = [\"corp\"]\n"
    );
    let config = Config::from_toml_str(&text, dir.path()).unwrap();
    assert_eq!(
        config.token_api.store_path,
        Some(dir.path().join("devices.db"))
    );
    let keys = config.token_api.credential_keys.as_ref().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].0, "new");
    assert!(!format!("{config:?}").contains(&"22".repeat(32)));
}

#[test]
fn tls_is_off_without_listeners_and_checked_with_them() {
    let config = parse(ONE_DOMAIN).expect("valid");
    assert!(config.tls.is_none());

    let text = format!(
        "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_ca_file = \"ca.pem\"\n\
         [[tls.listeners]]\naddr = \"127.0.0.1:5061\"\nclient_auth = \"required\"\n{ONE_DOMAIN}\
         client_cert = \"plus-digest\"\n"
    );
    let config = Config::from_toml_str(&text, Path::new("/etc/sipward")).expect("valid");
    let tls = config.tls.expect("tls on");
    assert_eq!(tls.cert_file, Path::new("/etc/sipward/s.pem"));
    assert_eq!(tls.listeners[0].client_auth, super::ClientAuth::Required);
    assert_eq!(tls.max_handshakes, 256);
    assert_eq!(
        config.domains[0].client_cert,
        super::ClientCertPolicy::PlusDigest
    );
}

#[test]
fn tls_problems_name_their_keys() {
    let errors = problems_of(&format!(
        "[tls]\nhandshake_timeout_secs = 0\ncrl_files = [\"x.crl\"]\n\
         [[tls.listeners]]\naddr = \"nowhere\"\n\
         [[tls.listeners]]\naddr = \"127.0.0.1:5061\"\nclient_auth = \"maybe\"\n\
         [[tls.listeners]]\naddr = \"127.0.0.1:5062\"\nclient_auth = \"optional\"\n\
         [[tls.certificates]]\ndomain = \"other.test\"\ncert_file = \"o.pem\"\nkey_file = \"o.key\"\n\
         {ONE_DOMAIN}client_cert = \"always\"\n"
    ));
    assert_problem(&errors, "tls.handshake_timeout_secs", "between 1 and 120");
    assert_problem(&errors, "tls.listeners[0].addr", "not an address:port");
    assert_problem(
        &errors,
        "tls.listeners[1].client_auth",
        "\"maybe\" is not one of",
    );
    assert_problem(&errors, "tls.cert_file", "is required");
    assert_problem(&errors, "tls.key_file", "is required");
    assert_problem(&errors, "tls.client_ca_file", "is required when a listener");
    assert_problem(&errors, "tls.crl_files", "need tls.client_ca_file");
    assert_problem(
        &errors,
        "tls.certificates[0].domain",
        "not a configured domain",
    );
    assert_problem(
        &errors,
        "domains[0].client_cert",
        "\"always\" is not one of",
    );
}

#[test]
fn tls_alone_is_enough_of_a_listener() {
    let text = format!(
        "[sip]\nudp = []\ntcp = []\n[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n\
         [[tls.listeners]]\naddr = \"127.0.0.1:5061\"\n{ONE_DOMAIN}"
    );
    assert!(parse(&text).is_ok());
    let errors = problems_of(&format!("[sip]\nudp = []\ntcp = []\n{ONE_DOMAIN}"));
    assert_problem(&errors, "sip", "at least one listener");
}

#[test]
fn redis_persistence_is_validated_with_the_keys_named() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis.pw");
    fs::write(&pw, "s3cret\n").unwrap();
    let text = format!(
        "[registrar]\npersistence = \"redis\"\n[redis]\nurls = [\"redis://127.0.0.1:6379\"]\n\
         username = \"sipward\"\npassword_file = {:?}\nnode = \"a\"\ncluster = true\n\
         peers = {{ b = \"10.0.0.12:5060\", a = \"10.0.0.11:5060\" }}\n{ONE_DOMAIN}",
        pw.display().to_string()
    );
    let config = parse(&text).unwrap();
    let redis = config
        .redis
        .as_ref()
        .expect("[redis] read with persistence = redis");
    assert_eq!(redis.urls, ["redis://127.0.0.1:6379"]);
    assert_eq!(redis.password.as_ref().unwrap().expose(), b"s3cret");
    assert_eq!(redis.node, "a");
    assert!(redis.cluster);
    assert_eq!(redis.retries, 3);
    assert_eq!(redis.pool_size, 4);
    assert_eq!(redis.response_timeout, Duration::from_secs(1));
    assert_eq!(
        redis.peers,
        [
            ("a".to_owned(), "10.0.0.11:5060".parse().unwrap()),
            ("b".to_owned(), "10.0.0.12:5060".parse().unwrap())
        ]
    );
    assert!(!format!("{config:?}").contains("s3cret"));
    assert!(config.secret_files.contains(&pw));

    let errors = problems_of(&format!(
        "[registrar]\npersistence = \"redis\"\n[redis]\nnode = \"a b\"\nretries = 99\n\
         peers = {{ \"x y\" = \"10.0.0.1:5060\", c = \"0.0.0.0:5060\", d = \"host\" }}\n{ONE_DOMAIN}"
    ));
    assert_problem(&errors, "redis.peers.x y", "node name");
    assert_problem(&errors, "redis.peers.c", "ip:port");
    assert_problem(&errors, "redis.peers.d", "ip:port");
    assert_problem(&errors, "redis.urls", "at least one URL");
    assert_problem(&errors, "redis.node", "letters, digits");
    assert_problem(&errors, "redis.retries", "");
    let errors = problems_of(&format!(
        "[registrar]\npersistence = \"redis\"\n[redis]\nurls = [\"http://x\", \"redis://u:p@h:1\"]\n{ONE_DOMAIN}"
    ));
    assert_problem(&errors, "redis.urls[0]", "redis://host:port");
    assert_problem(&errors, "redis.urls[1]", "credentials");
    // Without persistence = "redis" the table is not read.
    assert!(parse(ONE_DOMAIN).unwrap().redis.is_none());
}

#[test]
fn lifecycle_sections_name_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{ONE_DOMAIN}\n[[scim]]\nissuer = \"nope\"\ntoken_file = \"missing.token\"\nuser_match = \"email\"\n\n\
         [[backchannel_logout]]\nissuer = \"nope\"\n\n[[roles]]\nissuer = \"nope\"\nclaim = \"\"\n\n\
         [audit]\nfile = \"no/such/folder/audit.log\"\n"
    );
    let errors = Config::from_toml_str(&text, dir.path()).unwrap_err();
    assert_problem(
        &errors,
        "scim[0].issuer",
        "not the name of an [[issuers]] entry",
    );
    assert_problem(&errors, "scim[0].token_file", "cannot read");
    assert_problem(&errors, "scim[0].user_match", "\"email\" is not one of");
    assert_problem(&errors, "backchannel_logout[0].issuer", "not the name");
    assert_problem(&errors, "roles[0].issuer", "not the name");
    assert_problem(&errors, "roles[0].claim", "must name a claim");
    assert_problem(&errors, "audit.file", "folder does not exist");
}

#[test]
fn udp_workers_default_to_one_per_core_and_four_per_core_with_redis() {
    let memory = parse(ONE_DOMAIN).unwrap();
    assert_eq!(memory.udp_workers(2), 2);
    let redis = parse(&format!(
        "[registrar]\npersistence = \"redis\"\n[redis]\nurls = [\"redis://127.0.0.1:6379\"]\n{ONE_DOMAIN}"
    ))
    .unwrap();
    assert_eq!(
        redis.udp_workers(2),
        2 * network::REDIS_UDP_WORKERS_PER_CORE
    );
    let set = parse(&format!(
        "[sip]\nudp_workers = 3\n[registrar]\npersistence = \"redis\"\n[redis]\nurls = [\"redis://127.0.0.1:6379\"]\n{ONE_DOMAIN}"
    ))
    .unwrap();
    assert_eq!(set.udp_workers(2), 3, "a configured count is kept");
}
