//! The durable store for device records (the token API's credentials) behind one trait:
//! SQLite (`sqlite.rs`, one file, WAL) for one node, Redis (`redis.rs`) shared by several
//! nodes with `registrar.persistence = "redis"`.
//!
//! The store holds nothing that works as a password: a record names the key id, generation and
//! expiry that derive the password (`credentials::device`), never the password or an HA1.
//! Implementations are blocking; async callers go through [`Store`], which runs each call on
//! tokio's blocking pool with bounded concurrency. It must not know HTTP, SIP or tokens.

mod redis;
mod sqlite;

use std::sync::Arc;

pub use redis::{subscribe, subscribe_to, Conn, RedisSettings, RedisStore, CHANNEL};
pub use sqlite::SqliteStore;

/// Store calls running at once; further callers wait for a permit (their HTTP request waits,
/// bounded by the API's request timeout).
pub const MAX_CONCURRENT_STORE_CALLS: usize = 4;

/// One generation of a device's credential: the password is derived from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub gen: u32,
    /// Id of the credential key (`token_api.credential_keys_file`) that derives the password.
    pub kid: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A device record (docs/token-api.md "Credential format").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The Digest username, `d-…`; the primary key.
    pub username: String,
    pub device_id: String,
    /// The user key is `(iss, sub)`.
    pub iss: String,
    pub sub: String,
    /// `sip:user@domain`.
    pub aor: String,
    pub realm: String,
    pub current: Generation,
    /// Valid until its own expiry or the first REGISTER with `current`.
    pub previous: Option<Generation>,
    /// Unix seconds.
    pub created: u64,
    pub revoked: Option<u64>,
    pub last_register: Option<u64>,
    pub name: Option<String>,
    pub platform: Option<String>,
}

impl DeviceRecord {
    /// Whether any generation is still valid at `now` (and the record is not revoked).
    pub fn is_active(&self, now: u64) -> bool {
        self.revoked.is_none()
            && (self.current.expires_at > now
                || self.previous.as_ref().is_some_and(|p| p.expires_at > now))
    }
}

/// What the API asks for in one exchange.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub iss: String,
    pub sub: String,
    pub device_id: String,
    pub aor: String,
    pub realm: String,
    /// Used only when a new record is created.
    pub new_username: String,
    pub kid: String,
    pub expires_at: u64,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub now: u64,
    /// Most active devices per user.
    pub max_devices: usize,
}

/// The outcome of [`DeviceStore::issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueOutcome {
    Created(DeviceRecord),
    Renewed(DeviceRecord),
    DeviceLimitReached,
    /// Another subject (`iss`, `sub`) holds a record for this AoR that is not revoked: an AoR
    /// belongs to one subject at a time, and moves only after an admin revoke of the user.
    AorTaken,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("device store: {0}")]
    Backend(String),
    #[error("device store: the blocking task failed")]
    Join,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Durable device records. Blocking; call through [`Store`] from async code.
pub trait DeviceStore: Send + Sync + 'static {
    /// Every record still usable at `now` (not revoked, some generation unexpired): loaded at
    /// start into the registrar's index.
    fn load_active(&self, now: u64) -> Result<Vec<DeviceRecord>, StoreError>;
    /// The user's records that are not revoked (expired ones included).
    fn user_devices(&self, iss: &str, sub: &str) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Issue or renew, atomically with the device cap and the AoR's owner: nothing when
    /// another subject holds a not revoked record (expired ones included) for the AoR
    /// ([`IssueOutcome::AorTaken`]); else an existing, not revoked record of
    /// `(iss, sub, device_id)` gets `gen + 1` (the old generation becomes `previous` while
    /// unexpired); otherwise a new record, unless the user already has `max_devices` active.
    fn issue(&self, request: &IssueRequest) -> Result<IssueOutcome, StoreError>;
    /// Marks one of the user's devices revoked; returns the record as it was.
    fn revoke_device(
        &self,
        iss: &str,
        sub: &str,
        device_id: &str,
        now: u64,
    ) -> Result<Option<DeviceRecord>, StoreError>;
    /// Marks every record of `aor` revoked and remembers that tokens issued at or before `now`
    /// may not get new credentials for it; returns the records revoked.
    fn revoke_aor(&self, aor: &str, now: u64) -> Result<Vec<DeviceRecord>, StoreError>;
    /// The time set by [`DeviceStore::revoke_aor`], if any.
    fn aor_revoked_before(&self, aor: &str) -> Result<Option<u64>, StoreError>;
    /// The REGISTER side: a successful REGISTER with `gen` at `at`; forgets the previous
    /// generation when `gen` is the current one.
    fn record_register(&self, username: &str, gen: u32, at: u64) -> Result<(), StoreError>;
    /// One record by username, revoked or not (`None`: no such username). A store shared by
    /// several nodes is asked on every lookup of a device credential, so that a revoke at one
    /// node is seen at once at the others (`credentials::DeviceIndex::set_authority`).
    fn device(&self, username: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// A cheap query proving the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}

/// Cheap `Clone` handle: runs store calls off the async runtime, at most
/// [`MAX_CONCURRENT_STORE_CALLS`] at once.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn DeviceStore>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Store {
    pub fn new(backend: Arc<dyn DeviceStore>) -> Store {
        Store {
            backend,
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_STORE_CALLS)),
        }
    }

    /// Runs `f` on the blocking pool once a permit is free.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn DeviceStore) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Join)?;
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|_| StoreError::Join)?
    }
}
