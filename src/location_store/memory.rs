//! The [`LocationStore`] contract in a map: what a backend must do, without a disk. Used by
//! the writer's tests; `registrar.persistence = "none"` attaches no store at all.

use std::collections::HashMap;

use super::{LocationStore, LocationStoreError, WallClock};
use crate::registrar::{BindingChange, BindingRecord};

/// Bindings by id, each with its expiry in Unix milliseconds.
#[derive(Debug, Default)]
pub struct MemoryLocationStore {
    rows: HashMap<u64, (BindingRecord, u64)>,
    /// Commits so far (tests count batches with it).
    pub commits: usize,
}

impl LocationStore for MemoryLocationStore {
    fn load(&mut self, clock: &WallClock) -> Result<Vec<BindingRecord>, LocationStoreError> {
        let now = clock.now_ms();
        Ok(self
            .rows
            .values()
            .filter(|(_, at)| *at > now)
            .map(|(r, at)| BindingRecord {
                deadline: clock.to_instant(*at),
                ..r.clone()
            })
            .collect())
    }

    fn commit(
        &mut self,
        changes: &[BindingChange],
        clock: &WallClock,
    ) -> Result<(), LocationStoreError> {
        for change in changes {
            match change {
                BindingChange::Put(r) | BindingChange::Renew(r) => {
                    self.rows
                        .insert(r.id, ((**r).clone(), clock.unix_ms(r.deadline)));
                }
                BindingChange::Refresh {
                    id,
                    cseq,
                    granted,
                    deadline,
                } => {
                    if let Some((r, at)) = self.rows.get_mut(id) {
                        r.cseq = *cseq;
                        r.granted = *granted;
                        r.deadline = *deadline;
                        *at = clock.unix_ms(*deadline);
                    }
                }
                BindingChange::Remove { id } => {
                    self.rows.remove(id);
                }
            }
        }
        self.commits += 1;
        Ok(())
    }

    fn purge_expired(&mut self, before_ms: u64, max: usize) -> Result<usize, LocationStoreError> {
        let doomed: Vec<u64> = self
            .rows
            .iter()
            .filter(|(_, (_, at))| *at <= before_ms)
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        for id in &doomed {
            self.rows.remove(id);
        }
        Ok(doomed.len())
    }

    fn size_bytes(&self) -> u64 {
        0
    }
}
