//! One page of the admin listing: AoRs in canonical order after a cursor, without a sorted
//! index (see [`Location::page`]). Reads only; the location service's locks are taken one
//! shard at a time by the walk.

use std::collections::BinaryHeap;
use std::time::Instant;

use super::binding::{Aor, BindingSnapshot};
use super::location::{snapshots, Location};

impl Location {
    /// One page of the admin listing in AoR order: the first `limit` AoRs with live bindings
    /// whose canonical text sorts after `after` (every AoR when `None`) and that `keep`
    /// accepts, each with the bindings `keep_binding` accepts (an AoR left with none is
    /// skipped). The second value is true when more AoRs follow the page: the caller's next
    /// `after` is the page's last AoR. A stable order without a sorted index: every shard is
    /// walked (each read-locked briefly) keeping the `limit` smallest keys in a bounded heap,
    /// so a page costs O(AoRs · log limit) time and O(limit) memory; meant for operators,
    /// not for a hot path.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep_binding: impl Fn(&Aor, &BindingSnapshot) -> bool,
        now: Instant,
    ) -> (Vec<(Aor, Vec<BindingSnapshot>)>, bool) {
        if limit == 0 {
            return (Vec::new(), false);
        }
        // Max-heap of the `limit + 1` smallest matching AoRs seen so far (one extra tells
        // whether more follow).
        let mut heap: BinaryHeap<PageEntry> = BinaryHeap::new();
        for entry in self.aors().iter() {
            let aor = entry.key();
            if after.is_some_and(|a| aor.as_str() <= a) {
                continue;
            }
            if heap.len() > limit && heap.peek().is_some_and(|top| *aor >= top.0) {
                continue;
            }
            let bindings: Vec<BindingSnapshot> = snapshots(entry.value(), now)
                .into_iter()
                .filter(|b| keep_binding(aor, b))
                .collect();
            if bindings.is_empty() {
                continue;
            }
            heap.push(PageEntry(aor.clone(), bindings));
            if heap.len() > limit + 1 {
                heap.pop();
            }
        }
        let mut page = heap.into_sorted_vec();
        let more = page.len() > limit;
        page.truncate(limit);
        (page.into_iter().map(|e| (e.0, e.1)).collect(), more)
    }
}

/// An AoR and its bindings in [`Location::page`]'s heap, ordered by the AoR alone.
struct PageEntry(Aor, Vec<BindingSnapshot>);

impl PartialEq for PageEntry {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for PageEntry {}

impl PartialOrd for PageEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PageEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}
