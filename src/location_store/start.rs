//! Start-up: open the store, purge what expired while sipward was down, load the rest
//! ([`open`], blocking, before anything listens), then fill the location service, start the
//! writer and attach it ([`Loaded::serve`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    LocationStore, LocationStoreError, SqliteLocationStore, StoreMetrics, WallClock, Writer,
    WriterConfig,
};
use crate::registrar::{BindingChange, BindingRecord, Journal, Location};

/// Rows deleted per transaction when purging at start.
const START_PURGE_BATCH: usize = 10_000;

/// A store opened and read, not serving yet.
pub struct Loaded {
    store: Box<dyn LocationStore>,
    records: Vec<BindingRecord>,
    clock: WallClock,
    /// Time spent opening, purging and reading.
    pub took: Duration,
}

/// What [`Loaded::serve`] put into the location service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub bindings: usize,
    /// Bindings of a device credential no longer active: not restored, removed from the store.
    pub dropped: usize,
    pub took: Duration,
}

/// Opens the store at `path` and reads every live binding. Blocking.
pub fn open(path: &Path) -> Result<Loaded, LocationStoreError> {
    let started = Instant::now();
    let mut store = SqliteLocationStore::open(path)?;
    let clock = WallClock::now();
    store.purge_all_expired(clock.now_ms(), START_PURGE_BATCH)?;
    let records = store.load(&clock)?;
    Ok(Loaded {
        store: Box::new(store),
        records,
        clock,
        took: started.elapsed(),
    })
}

/// Connects to Redis and reads this node's live bindings (Redis expired the others itself).
/// Blocking.
pub fn open_redis(store: super::RedisLocationStore) -> Result<Loaded, LocationStoreError> {
    let started = Instant::now();
    let mut store = store;
    let clock = WallClock::now();
    let records = store.load(&clock)?;
    Ok(Loaded {
        store: Box::new(store),
        records,
        clock,
        took: started.elapsed(),
    })
}

impl Loaded {
    /// Live bindings read (size the location service with it).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Restores the bindings whose credential (if any) `is_live` accepts into `location`,
    /// starts the writer and attaches it; the others are removed from the store.
    pub fn serve(
        mut self,
        location: &Location,
        is_live: impl Fn(&str) -> bool,
        config: WriterConfig,
        metrics: StoreMetrics,
    ) -> Result<(Arc<Writer>, Restored), LocationStoreError> {
        let started = Instant::now();
        let live = |r: &BindingRecord| r.credential.as_deref().is_none_or(&is_live);
        let stale: Vec<BindingChange> = self
            .records
            .iter()
            .filter(|r| !live(r))
            .map(|r| BindingChange::Remove { id: r.id })
            .collect();
        self.records.retain(live);
        let bindings = location.restore(&self.records, self.clock.instant());
        // A million records take a while to free: not on the way to listening.
        let records = std::mem::take(&mut self.records);
        let _ = std::thread::Builder::new()
            .name("location-free".into())
            .spawn(move || drop(records));
        let writer = Writer::start(self.store, config, metrics)?;
        let dropped = stale.len();
        writer.append(stale);
        location.attach_journal(writer.clone());
        Ok((
            writer,
            Restored {
                bindings,
                dropped,
                took: started.elapsed(),
            },
        ))
    }
}
