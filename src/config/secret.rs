//! Secret values read at load: `Secret`, bytes that never show in `Debug`, and `AdminToken`, the
//! admin bearer token kept only as its SHA-256. Also the helpers that read secret files relative
//! to the config folder. Nothing here may format a secret's bytes into a message.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What `Debug` prints in place of a secret.
pub(super) const REDACTED: &str = "<redacted>";

/// Secret files larger than this are refused rather than read.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Secret bytes (a password, a nonce key). `Debug` prints `<redacted>`; there is no `Display` and
/// no `PartialEq`, so a secret cannot be logged or compared in variable time by accident.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes. Callers must not log or echo them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The admin API's bearer token, kept only as its SHA-256 so the running process (and a core
/// dump) never holds the token itself.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminToken {
    Sha256([u8; 32]),
}

impl AdminToken {
    /// Hashes a token as given to clients.
    pub fn from_token(token: &[u8]) -> Self {
        Self::Sha256(Sha256::digest(token).into())
    }

    /// Whether `presented` (the bearer token from a request) is this token, compared in constant
    /// time over the hashes.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let Self::Sha256(expected) = self;
        let actual: [u8; 32] = Sha256::digest(presented).into();
        expected
            .iter()
            .zip(actual.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Sha256")
            .field(&format_args!("{REDACTED}"))
            .finish()
    }
}

/// `configured` resolved against the config file's folder (absolute paths stay as they are).
pub(super) fn resolve(base_dir: &Path, configured: &str) -> PathBuf {
    base_dir.join(configured)
}

/// Reads a secret file, refusing large ones. The error text names the file, never its content.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let cannot_read = |err: std::io::Error| format!("cannot read {:?}: {}", path, io_reason(&err));
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{path:?} is larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?"
        ));
    }
    Ok(bytes)
}

/// Drops trailing line endings (`\n`, `\r\n`, several), as editors and `echo` add them.
pub(super) fn strip_line_endings(mut bytes: Vec<u8>) -> Vec<u8> {
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    bytes
}

/// The OS reason without Rust's ` (os error N)` suffix.
pub(super) fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
