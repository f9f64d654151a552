//! The audit trail (issue 20, docs/lifecycle.md): one JSON line per credential issue,
//! renewal and revoke, SCIM change, deprovisioning, and break-glass use of the static admin
//! token, appended to `audit.file` (created 0600, reopened on SIGHUP so logrotate can move it).
//! A line holds the time, the actor (`user:<issuer>:<hash>`, `admin:<issuer>:<hash>`,
//! `admin-token`, `scim:<issuer>`), the action, the target (AoR or SCIM id) and device, the
//! source address, the outcome and the request id; never a token, a password or a raw `sub`
//! (callers pass hashes). `read.rs` is the bounded reader behind `GET /admin/v1/audit`.
//!
//! Writes are one `write` of a whole line on an `O_APPEND` file under a mutex (lines never
//! interleave); a failed write is logged at error and the request goes on. Names `fsutil`
//! only.

pub mod read;

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Cheap `Clone` handle; [`AuditLog::disabled`] records nothing.
#[derive(Clone, Default)]
pub struct AuditLog(Option<Arc<Inner>>);

struct Inner {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_append(path: &Path) -> io::Result<File> {
    crate::fsutil::ensure_private(path)?;
    OpenOptions::new()
        .append(true)
        .mode(crate::fsutil::PRIVATE_MODE)
        .open(path)
}

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub time: String,
    pub actor: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub outcome: &'static str,
    pub request_id: String,
}

impl Event {
    pub fn new(actor: impl Into<String>, action: &'static str, outcome: &'static str) -> Event {
        Event {
            time: String::new(),
            actor: actor.into(),
            action,
            target: None,
            device: None,
            source: None,
            outcome,
            request_id: String::new(),
        }
    }
    pub fn target(mut self, t: impl Into<String>) -> Event {
        self.target = Some(t.into());
        self
    }
    pub fn device(mut self, d: impl Into<String>) -> Event {
        self.device = Some(d.into());
        self
    }
    pub fn source(mut self, s: Option<std::net::IpAddr>) -> Event {
        self.source = s.map(|s| s.to_string());
        self
    }
    pub fn request(mut self, id: &str) -> Event {
        self.request_id = id.to_owned();
        self
    }
}

impl AuditLog {
    pub fn disabled() -> AuditLog {
        AuditLog(None)
    }

    /// Opens (creating 0600) `path` for appending.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let file = open_append(path)?;
        Ok(AuditLog(Some(Arc::new(Inner {
            path: path.to_owned(),
            file: Mutex::new(file),
        }))))
    }

    pub fn path(&self) -> Option<&Path> {
        self.0.as_ref().map(|i| i.path.as_path())
    }

    /// Opens the path again (after logrotate moved the file); the old handle is closed.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(inner) = &self.0 else {
            return Ok(());
        };
        let file = open_append(&inner.path)?;
        if let Ok(mut f) = inner.file.lock() {
            *f = file;
        }
        Ok(())
    }

    /// Appends `event` as one line, stamped with the current time.
    pub fn record(&self, mut event: Event) {
        let Some(inner) = &self.0 else {
            return;
        };
        event.time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        if event.request_id.is_empty() {
            event.request_id = hex::encode(rand::random::<[u8; 8]>());
        }
        let Ok(mut line) = serde_json::to_vec(&event) else {
            return;
        };
        line.push(b'\n');
        let written = match inner.file.lock() {
            Ok(mut f) => f.write_all(&line),
            Err(_) => Err(io::Error::other("audit log lock poisoned")),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, action = event.action, "audit line not written");
        }
    }
}
