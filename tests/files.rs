//! File permissions and the CLI's file safety (issue 18), on the real binary: `sipward certs
//! dev` writes private keys 0600, refuses to overwrite a set without `--force` and refuses a
//! missing parent folder; the SQLite device store files are 0600; a group/world-readable
//! secret file named in the config is warned about at start; `--version` and the start-up
//! log carry the version and the git commit.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use common::{Options, Server};

const BIN: &str = env!("CARGO_BIN_EXE_sipward");

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn certs_dev(out: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["certs", "dev", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run sipward certs dev")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The default test server, logging at info (the start-up line is an INFO event).
fn info() -> Options<'static> {
    Options {
        log_level: "info",
        ..Options::default()
    }
}

/// `log` without ANSI escape sequences (colour, when the log writer adds it).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn certs_dev_writes_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let made = certs_dev(&out, &[]);
    assert!(made.status.success(), "{made:?}");
    let mut keys = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            keys += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(
        keys >= 5,
        "the set holds the CA, server and client keys; found {keys}"
    );
}

#[test]
fn certs_dev_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    assert!(certs_dev(&out, &[]).status.success());
    let ca_key = std::fs::read(out.join("ca.key")).unwrap();

    let again = certs_dev(&out, &[]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let lines = stderr_lines(&again);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains("already holds a certificate set") && lines[0].contains("--force"),
        "{}",
        lines[0]
    );
    assert_eq!(std::fs::read(out.join("ca.key")).unwrap(), ca_key, "kept");

    // A key made readable by others is narrowed back to 0600 when the set is replaced.
    std::fs::set_permissions(out.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = certs_dev(&out, &["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(
        std::fs::read(out.join("ca.key")).unwrap(),
        ca_key,
        "replaced"
    );
    assert_eq!(mode(&out.join("ca.key")), 0o600);
}

#[test]
fn certs_dev_refuses_a_missing_parent_folder() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent");
    let out = missing.join("a").join("b");
    let made = certs_dev(&out, &[]);
    assert_eq!(made.status.code(), Some(1), "{made:?}");
    let lines = stderr_lines(&made);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains("no such folder") && lines[0].contains(&missing.display().to_string()),
        "{}",
        lines[0]
    );
    assert!(!missing.exists(), "nothing was created");
}

#[test]
fn sqlite_store_files_are_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("devices.db");
    let store = sipward::store::SqliteStore::open(Some(&db)).expect("open the store");
    let wal = dir.path().join("devices.db-wal");
    let shm = dir.path().join("devices.db-shm");
    for path in [&db, &wal, &shm] {
        assert!(path.exists(), "{} exists (WAL mode)", path.display());
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    drop(store);
}

/// Starts the binary on the test config after setting every password file to `mode`;
/// returns its log (no colour codes) and the first password file.
fn start_with_password_mode(mode: u32) -> (String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (sip, http) = (common::free_port(), common::free_port());
    let config = common::config_on_ports(&info(), dir.path(), sip, http, 0);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pw") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let password_file = dir.path().join("account-0.pw");
    let mut server = Server::start_with_file(config, dir, sip, http, None);
    let log = plain(&server.stderr());
    server.terminate();
    (log, password_file)
}

#[test]
fn start_warns_about_readable_secret_files_and_logs_the_version() {
    for readable in [0o644, 0o640] {
        let (log, password_file) = start_with_password_mode(readable);
        let warning = log
            .lines()
            .find(|l| l.contains("secret file is readable by group or others"))
            .unwrap_or_else(|| panic!("{readable:o}: no warning in:\n{log}"));
        assert!(
            warning.contains(&password_file.display().to_string())
                && warning.contains(&format!("{readable:04o}")),
            "{warning}"
        );
        let starting = log
            .lines()
            .find(|l| l.contains("sipward starting"))
            .unwrap_or_else(|| panic!("no start line in:\n{log}"));
        assert!(
            starting.contains(&format!("version={}", env!("CARGO_PKG_VERSION")))
                && starting.contains(&format!("commit={}", sipward::GIT_COMMIT)),
            "{starting}"
        );
    }
}

#[test]
fn start_is_quiet_about_private_secret_files() {
    let (log, _) = start_with_password_mode(0o600);
    assert!(log.contains("sipward starting"), "{log}");
    assert!(!log.contains("secret file is readable"), "{log}");
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!(
        "sipward {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        sipward::GIT_COMMIT
    );
    assert_eq!(text, expected);
    let commit = sipward::GIT_COMMIT;
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
}

#[test]
fn check_config_warns_about_a_readable_secret_file_and_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_on_ports(&info(), dir.path(), 5060, 8080, 0);
    let password_file = dir.path().join("account-0.pw");
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one warning: {lines:?}");
    assert!(
        lines[0].starts_with("warning: ")
            && lines[0].contains(&password_file.display().to_string())
            && lines[0].contains("0604"),
        "{}",
        lines[0]
    );
}
