//! A count the location service keeps (bindings, AoRs), mirrored into a Prometheus gauge
//! when there is one; `increment_below` is how the AoR cap is taken without a lock.

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGauge;

/// A count, mirrored into a gauge when there is one.
pub(super) struct Count {
    value: AtomicUsize,
    gauge: Option<IntGauge>,
}

impl Count {
    pub(super) fn new(gauge: Option<IntGauge>) -> Count {
        if let Some(g) = &gauge {
            g.set(0);
        }
        Count {
            value: AtomicUsize::new(0),
            gauge,
        }
    }

    pub(super) fn load(&self) -> usize {
        self.value.load(Ordering::Relaxed)
    }

    pub(super) fn add(&self, n: usize) {
        self.value.fetch_add(n, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.add(n as i64);
        }
    }

    pub(super) fn sub(&self, n: usize) {
        self.value.fetch_sub(n, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.sub(n as i64);
        }
    }

    /// Adds one unless the count has reached `max`.
    pub(super) fn increment_below(&self, max: usize) -> bool {
        let taken = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if let (true, Some(g)) = (taken, &self.gauge) {
            g.inc();
        }
        taken
    }
}

impl std::fmt::Debug for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.load().fmt(f)
    }
}
