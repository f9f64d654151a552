//! `sipward ctl`: the operator's CLI over the admin API (the `kamctl ul show` of sipward).
//! Each command is one or two HTTP requests to `/admin/v1/…` with the admin token; the
//! answer is printed as a table, or as JSON with `--json` (for scripts: the server's JSON,
//! listings wrapped as `{"aors"|"devices": [...], "next_cursor": …}`).
//!
//! Where it connects: `--url`, else `SIPWARD_ADMIN_URL`, else `http://127.0.0.1:8080` (the
//! packaged `http.listen`). The token: `--token-file`, else `--token` (visible in `ps`:
//! avoid), else `SIPWARD_ADMIN_TOKEN`, else the file named by `SIPWARD_ADMIN_TOKEN_FILE`
//! (flags before the environment). A token file's trailing newline is ignored, as the server
//! does. The token is never printed.
//!
//! It names only the API's header constant; it runs no server code. Exit status: 0 done, 1
//! the server refused or failed (its error is printed), 2 a usage or connection problem.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api::NEXT_CURSOR_HEADER;

/// Where `ctl` connects without `--url` or `SIPWARD_ADMIN_URL`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The HTTP listener's base URL [env: SIPWARD_ADMIN_URL; default http://127.0.0.1:8080].
    #[arg(long, global = true)]
    url: Option<String>,
    /// A file holding the admin token [env: SIPWARD_ADMIN_TOKEN_FILE]. SIPWARD_ADMIN_TOKEN
    /// gives the token itself.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// The admin token itself (visible to other local users in `ps`; prefer a file or the
    /// environment).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// The registered bindings, a page at a time in AoR order, with the credential that made
    /// each one.
    Bindings {
        /// Only this AoR (`alice@example.com` or `sip:alice@example.com`).
        #[arg(long)]
        aor: Option<String>,
        /// Only bindings made with this credential (a device's `d-…` name, or an account's
        /// user).
        #[arg(long)]
        user: Option<String>,
        /// AoRs per page (1-1000; default 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// The page after the one that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
        #[command(subcommand)]
        action: Option<BindingsAction>,
    },
    /// The token API's active devices (each a credential), in username order.
    Devices {
        /// Only this user's devices (the AoR, `alice@example.com`).
        #[arg(long)]
        user: Option<String>,
        /// Devices per page (1-1000; default 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// The page after the one that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
        #[command(subcommand)]
        action: Option<DevicesAction>,
    },
    /// Users of the token API.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// TLS material.
    Tls {
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Version, uptime, counts and readiness of the node.
    Status,
}

#[derive(Subcommand, Debug)]
enum BindingsAction {
    /// Remove one binding (--id, from the listing) or every binding of the AoR. The phone
    /// registers again at its next refresh unless its credential is revoked too.
    Remove {
        #[arg(long)]
        aor: String,
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum DevicesAction {
    /// Revoke one device: its credential stops working and its bindings are removed.
    Revoke {
        /// The device's username (`d-…`, the USERNAME column).
        username: String,
    },
}

#[derive(Subcommand, Debug)]
enum UsersAction {
    /// Revoke every device of a user, remove the AoR's bindings and refuse its tokens issued
    /// until now.
    Revoke {
        /// The AoR (`alice@example.com`).
        aor: String,
    },
}

#[derive(Subcommand, Debug)]
enum TlsAction {
    /// Reload the TLS files (as SIGHUP does) and report the outcome.
    Reload,
}

/// Why a command failed, with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A usage or connection problem (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error (exit 1).
    #[error("{0}")]
    Refused(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Refused(_) => 1,
        }
    }
}

/// Runs one command; `Ok` is what to print on stdout.
pub fn run(args: CtlArgs) -> Result<String, CtlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start: {e}")))?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: CtlArgs) -> Result<String, CtlError> {
    let api = Admin::new(&args)?;
    let json = args.json;
    match args.command {
        CtlCommand::Bindings {
            action: Some(BindingsAction::Remove { aor, id }),
            ..
        } => {
            let mut q = vec![("aor", aor)];
            if let Some(id) = id {
                q.push(("id", id.to_string()));
            }
            let (v, _) = api.call("DELETE", "/admin/v1/bindings", &q).await?;
            Ok(match json {
                true => v.to_string(),
                false => format!(
                    "removed {} binding(s) of {}",
                    v["bindings_removed"],
                    text(&v["aor"])
                ),
            })
        }
        CtlCommand::Bindings {
            aor,
            user,
            limit,
            cursor,
            action: None,
        } => {
            let q = page_query(&[("aor", aor), ("user", user)], limit, cursor);
            let (v, next) = api.call("GET", "/admin/v1/bindings", &q).await?;
            Ok(match json {
                true => serde_json::json!({"aors": v, "next_cursor": next}).to_string(),
                false => bindings_table(&v, next.as_deref()),
            })
        }
        CtlCommand::Devices {
            action: Some(DevicesAction::Revoke { username }),
            ..
        } => {
            let path = format!("/admin/v1/devices/{}", encode(&username));
            let (v, _) = api.call("DELETE", &path, &[]).await?;
            Ok(match json {
                true => v.to_string(),
                false => format!(
                    "revoked device {} ({} of {}); {} binding(s) removed",
                    text(&v["username"]),
                    text(&v["device_id"]),
                    text(&v["aor"]),
                    v["bindings_removed"]
                ),
            })
        }
        CtlCommand::Devices {
            user,
            limit,
            cursor,
            action: None,
        } => {
            let q = page_query(&[("user", user)], limit, cursor);
            let (v, next) = api.call("GET", "/admin/v1/devices", &q).await?;
            Ok(match json {
                true => serde_json::json!({"devices": v, "next_cursor": next}).to_string(),
                false => devices_table(&v, next.as_deref()),
            })
        }
        CtlCommand::Users {
            action: UsersAction::Revoke { aor },
        } => {
            let path = format!("/admin/v1/users/{}/revoke", encode(&aor));
            let (v, _) = api.call("POST", &path, &[]).await?;
            Ok(match json {
                true => v.to_string(),
                false => format!(
                    "revoked {}: {} device(s), {} binding(s) removed",
                    text(&v["aor"]),
                    v["devices_revoked"],
                    v["bindings_removed"]
                ),
            })
        }
        CtlCommand::Tls {
            action: TlsAction::Reload,
        } => {
            let (v, _) = api.call("POST", "/admin/v1/tls/reload", &[]).await?;
            Ok(match json {
                true => v.to_string(),
                false => "tls material reloaded".to_owned(),
            })
        }
        CtlCommand::Status => {
            let (v, _) = api.call("GET", "/admin/v1/status", &[]).await?;
            Ok(match json {
                true => v.to_string(),
                false => status_table(&v),
            })
        }
    }
}

fn page_query(
    filters: &[(&'static str, Option<String>)],
    limit: Option<usize>,
    cursor: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut q: Vec<(&'static str, String)> = filters
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect();
    if let Some(n) = limit {
        q.push(("limit", n.to_string()));
    }
    if let Some(c) = cursor {
        q.push(("cursor", c));
    }
    q
}

/// The admin API at one URL with one token.
struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn new(args: &CtlArgs) -> Result<Admin, CtlError> {
        let base = args
            .url
            .clone()
            .or_else(|| std::env::var("SIPWARD_ADMIN_URL").ok())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::Usage(format!(
                "--url {base}: give an http:// or https:// URL"
            )));
        }
        let token = token(args)?;
        // reqwest's rustls needs a process-wide provider (the OIDC client installs the same).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CtlError::Usage(format!("HTTP client: {e}")))?;
        Ok(Admin {
            client,
            base,
            token,
        })
    }

    /// One request; `Ok` is the JSON body and the next-page cursor, when the server gave one.
    async fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Value, Option<String>), CtlError> {
        let mut url = format!("{}{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let response = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CtlError::Usage(format!("{method} {url}: {}", error_chain(&e))))?;
        let status = response.status();
        let next = response
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .map_err(|e| CtlError::Usage(format!("{method} {url}: {e}")))?;
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if !status.is_success() {
            let why = match (&value["error"], &value["error_description"]) {
                (Value::String(e), Value::String(d)) => format!("{e}: {d}"),
                (Value::String(e), _) => e.clone(),
                _ => value.to_string(),
            };
            let hint = match status.as_u16() {
                401 => " (is the admin token right? http.admin_token_file on the server)",
                404 if path.contains("devices") || path.contains("users") => {
                    " (not found, or the token API is off)"
                }
                404 if path.contains("tls") => " (no TLS listener)",
                _ => "",
            };
            return Err(CtlError::Refused(format!(
                "{method} {path}: {status}: {why}{hint}"
            )));
        }
        Ok((value, next))
    }
}

/// The token from the sources in the order the module header gives.
fn token(args: &CtlArgs) -> Result<String, CtlError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|t| t.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| CtlError::Usage(format!("token file {}: {e}", path.display())))
    };
    if let Some(path) = &args.token_file {
        return read(path);
    }
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    if let Ok(t) = std::env::var("SIPWARD_ADMIN_TOKEN") {
        return Ok(t);
    }
    if let Ok(path) = std::env::var("SIPWARD_ADMIN_TOKEN_FILE") {
        return read(std::path::Path::new(&path));
    }
    Err(CtlError::Usage(
        "no admin token: give --token-file, or set SIPWARD_ADMIN_TOKEN or SIPWARD_ADMIN_TOKEN_FILE"
            .to_owned(),
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value as table text: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

fn more(next: Option<&str>, what: &str) -> String {
    match next {
        Some(c) => format!("\n(more {what} follow: add --cursor {c})"),
        None => String::new(),
    }
}

fn bindings_table(v: &Value, next: Option<&str>) -> String {
    let mut rows = Vec::new();
    for aor in v.as_array().into_iter().flatten() {
        for b in aor["bindings"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(&aor["aor"]),
                text(&b["id"]),
                text(&b["contact"]),
                text(&b["transport"]),
                text(&b["source"]),
                text(&b["expires"]),
                text(&b["credential"]),
                text(&b["user_agent"]),
            ]);
        }
    }
    let header = [
        "AOR",
        "ID",
        "CONTACT",
        "TRANSPORT",
        "SOURCE",
        "EXPIRES",
        "CREDENTIAL",
        "USER-AGENT",
    ];
    format!(
        "{}\n{} binding(s){}",
        table(&header, &rows),
        rows.len(),
        more(next, "AoRs")
    )
}

fn devices_table(v: &Value, next: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                text(&d["username"]),
                text(&d["device_id"]),
                text(&d["aor"]),
                text(&d["name"]),
                text(&d["platform"]),
                text(&d["bindings"]),
                text(&d["last_register"]),
                text(&d["expires_at"]),
            ]
        })
        .collect();
    let header = [
        "USERNAME",
        "DEVICE-ID",
        "AOR",
        "NAME",
        "PLATFORM",
        "BINDINGS",
        "LAST-REGISTER",
        "EXPIRES-AT",
    ];
    format!(
        "{}\n{} device(s){}",
        table(&header, &rows),
        rows.len(),
        more(next, "devices")
    )
}

fn status_table(v: &Value) -> String {
    let keys = [
        ("version", "version"),
        ("commit", "commit"),
        ("uptime", "uptime_secs"),
        ("ready", "readiness"),
        ("aors", "aors"),
        ("bindings", "bindings"),
        ("active devices", "devices_active"),
        ("token api", "token_api"),
        ("tls", "tls"),
    ];
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|(label, key)| {
            let value = match *key {
                "uptime_secs" => v[key]
                    .as_u64()
                    .map_or_else(|| text(&v[key]), |s| format!("{s} s")),
                _ => text(&v[key]),
            };
            vec![format!("{label}:"), value]
        })
        .collect();
    table(&["", ""], &rows).trim_start().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_show_null_as_a_dash() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "1".into()], vec!["y".into(), "-".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  1\ny    -");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&serde_json::json!("s")), "s");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("sip:a b@x/y"), "sip%3Aa%20b%40x%2Fy");
        assert_eq!(encode("d-Ab_9.~"), "d-Ab_9.~");
    }
}
