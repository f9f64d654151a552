//! The durable location store: the bindings of the location service (`registrar::Location`)
//! on disk, so that a restart or a crash loses no acknowledged registration.
//!
//! It owns the [`LocationStore`] seam (one blocking backend: SQLite or Redis) and
//! the [`Writer`]: one thread fed by a bounded queue that writes every change the location
//! service applied, with group commit (everything queued while one transaction was being
//! written goes into the next one), and completes each REGISTER's [`Ack`] once its change is
//! durable. The location service calls the writer (as its `registrar::Journal`) while an AoR
//! is locked, so it only queues; receive threads never wait for the disk. It must not know
//! SIP messages, sockets or the async runtime.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the [`LocationStore`] trait, [`WallClock`] (deadlines ↔ Unix milliseconds), errors |
//! | `writer.rs` | [`Writer`]: the queue, the thread, group commit, batch purge, [`StoreMetrics`] |
//! | `sqlite.rs` | [`SqliteLocationStore`]: one table, WAL, `synchronous = FULL`, schema version |
//! | `redis.rs` | [`RedisLocationStore`]: per-binding hashes with their own expiry, one script per AoR, one pipeline per batch; [`StoreHealth`] for `/readyz` |
//! | `redis_read.rs` | [`RedisShared`]: other nodes' bindings of an AoR for a lookup, one script, a bounded pool |
//! | `memory.rs` | [`MemoryLocationStore`]: the same contract in a map (tests, no persistence) |
//! | `start.rs` | [`open`] (purge, load) before listening, then [`Loaded::serve`] (restore, writer) |
//!
//! [`Ack`]: crate::registrar::Ack

mod memory;
mod redis;
mod redis_read;
mod sqlite;
mod start;
mod writer;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::registrar::{BindingChange, BindingRecord};

pub use memory::MemoryLocationStore;
pub use redis::{
    RedisLocationStore, RedisMetrics, StoreHealth, APPLY, ERRORS as REDIS_ERRORS,
    ROUND_TRIPS as REDIS_ROUND_TRIPS, SCRIPTS as REDIS_SCRIPTS, SECONDS as REDIS_SECONDS,
};
pub use redis_read::{RedisShared, READ};
pub use sqlite::{SqliteLocationStore, StoreCheck, PURGE_SCAN, SCHEMA_VERSION};
pub use start::{open, open_redis, Loaded, Restored};
pub use writer::{StoreMetrics, Writer, WriterConfig, PURGE_BATCH, PURGE_EVERY, PURGE_GRACE};

pub const STORE_BYTES: &str = "sipward_location_store_bytes";
pub const QUEUE_DEPTH: &str = "sipward_location_store_queue_depth";
pub const BATCH_SIZE: &str = "sipward_location_store_batch_size";
pub const COMMIT_SECONDS: &str = "sipward_location_store_commit_seconds";
pub const COMMIT_FAILURES: &str = "sipward_location_store_commit_failures_total";
pub const REFUSED: &str = "sipward_location_store_refused_total";

/// Why the location store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LocationStoreError {
    #[error("{0}")]
    Backend(String),
    /// The file was written by a sipward with a schema this one does not know.
    #[error("schema version {found} is not supported (this sipward reads version {supported}); use a sipward that knows it, or move the file away to start empty")]
    UnknownSchema { found: i64, supported: i64 },
    /// The file holds tables but no sipward schema version.
    #[error("not a sipward location store (no schema_version table)")]
    NotAStore,
}

impl From<rusqlite::Error> for LocationStoreError {
    fn from(e: rusqlite::Error) -> Self {
        LocationStoreError::Backend(e.to_string())
    }
}

impl From<std::io::Error> for LocationStoreError {
    fn from(e: std::io::Error) -> Self {
        LocationStoreError::Backend(e.to_string())
    }
}

/// A durable home for bindings. Blocking: only the [`Writer`]'s thread (and start-up, before
/// the writer exists) calls it. Each call is atomic; a backend needs one write per batch.
pub trait LocationStore: Send + 'static {
    /// Every binding whose expiry lies after `clock`'s now, deadlines mapped back to
    /// `Instant`s with `clock`. Rows that do not parse are skipped and counted in the log.
    fn load(&mut self, clock: &WallClock) -> Result<Vec<BindingRecord>, LocationStoreError>;
    /// Applies `changes` in order as one atomic write; they are durable when it returns `Ok`.
    fn commit(
        &mut self,
        changes: &[BindingChange],
        clock: &WallClock,
    ) -> Result<(), LocationStoreError>;
    /// Deletes up to `max` bindings whose expiry is at or before `before_ms` (Unix ms);
    /// returns how many. A backend may look at a bounded part of the store per call (SQLite
    /// does): fewer than `max` then does not mean that none is left, only that this round
    /// is done.
    fn purge_expired(&mut self, before_ms: u64, max: usize) -> Result<usize, LocationStoreError>;
    /// Bytes on disk (0 for a store without a file).
    fn size_bytes(&self) -> u64;
}

/// One reading of both clocks, so deadlines (`Instant`) map to Unix milliseconds and back.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    instant: Instant,
    unix_ms: u64,
}

impl WallClock {
    /// Reads both clocks now.
    pub fn now() -> WallClock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        WallClock::at(Instant::now(), unix_ms)
    }

    /// A fixed pairing (tests, and the start-up reading).
    pub fn at(instant: Instant, unix_ms: u64) -> WallClock {
        WallClock { instant, unix_ms }
    }

    /// The Unix time (ms) this clock pairs with its instant.
    pub fn now_ms(&self) -> u64 {
        self.unix_ms
    }

    /// The instant this clock pairs with its Unix time.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// `t` in Unix milliseconds.
    pub fn unix_ms(&self, t: Instant) -> u64 {
        if t >= self.instant {
            let ahead = u64::try_from((t - self.instant).as_millis()).unwrap_or(u64::MAX);
            self.unix_ms.saturating_add(ahead)
        } else {
            let behind = u64::try_from((self.instant - t).as_millis()).unwrap_or(u64::MAX);
            self.unix_ms.saturating_sub(behind)
        }
    }

    /// The instant of Unix time `ms` (a time before this clock's reading is clamped to it:
    /// only live bindings are loaded, so it does not occur for them).
    pub fn to_instant(&self, ms: u64) -> Instant {
        let ahead = Duration::from_millis(ms.saturating_sub(self.unix_ms));
        self.instant.checked_add(ahead).unwrap_or(self.instant)
    }
}

#[cfg(test)]
mod tests;
