//! The expiry index: every binding's `(deadline, id)` in one ordered set, so purge reads only
//! what is due and the purge task knows when to wake.
//!
//! It owns no bindings and never touches the location map: callers that hold a map entry may
//! lock it (map entry, then this mutex), but this module never calls back, so the lock order
//! cannot invert. The mutex is held only for set operations, never across I/O or `.await`.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::binding::{Aor, BindingId};

/// One scheduled expiry. Ordered by `(deadline, id)` only; the AoR rides along so purge can
/// find the binding without a second index.
#[derive(Clone, Debug)]
pub(super) struct ExpiryEntry {
    pub(super) deadline: Instant,
    pub(super) id: BindingId,
    pub(super) aor: Aor,
}

impl PartialEq for ExpiryEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ExpiryEntry {}

impl PartialOrd for ExpiryEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ExpiryEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.id).cmp(&(other.deadline, other.id))
    }
}

/// Worst case: one entry (about 40 bytes plus B-tree overhead) per stored binding.
#[derive(Debug, Default)]
pub(super) struct ExpiryQueue {
    set: Mutex<BTreeSet<ExpiryEntry>>,
}

impl ExpiryQueue {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<ExpiryEntry>> {
        // A panic elsewhere while holding the lock cannot leave the set half-updated (each
        // operation is a single insert/remove), so a poisoned lock is still usable.
        self.set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes then inserts, under one lock acquisition.
    pub(super) fn update(&self, remove: &[ExpiryEntry], insert: Vec<ExpiryEntry>) {
        if remove.is_empty() && insert.is_empty() {
            return;
        }
        let mut set = self.lock();
        for entry in remove {
            set.remove(entry);
        }
        for entry in insert {
            set.insert(entry);
        }
    }

    /// Takes up to `max` entries whose deadline is at or before `now`, earliest first.
    pub(super) fn pop_due(&self, now: Instant, max: usize) -> Vec<ExpiryEntry> {
        let mut set = self.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match set.first() {
                Some(first) if first.deadline <= now => {}
                _ => break,
            }
            match set.pop_first() {
                Some(entry) => due.push(entry),
                None => break,
            }
        }
        due
    }

    /// Adds many entries at once (a restore): into an empty index they are sorted and
    /// bulk-built, much faster than one insert each.
    pub(super) fn extend(&self, entries: Vec<ExpiryEntry>) {
        let mut set = self.lock();
        if set.is_empty() {
            *set = entries.into_iter().collect();
        } else {
            set.extend(entries);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.lock().first().map(|e| e.deadline)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}
