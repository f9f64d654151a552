//! Latency samples and the figures printed from them.

use std::time::Duration;

/// Latencies in microseconds; percentiles by sorting (a run holds at most a few million).
#[derive(Clone, Debug, Default)]
pub(crate) struct Samples(Vec<u32>);

impl Samples {
    pub(crate) fn push(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub(crate) fn merge(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The `p`-th percentile (0..=100) in microseconds; `None` without samples.
    pub(crate) fn percentile(&mut self, p: f64) -> Option<u32> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        Some(self.0[rank.min(self.0.len() - 1)])
    }

    /// "p50 / p99" as milliseconds with three decimals.
    pub(crate) fn p50_p99(&mut self) -> String {
        match (self.percentile(50.0), self.percentile(99.0)) {
            (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(b)),
            _ => "-".into(),
        }
    }
}

pub(crate) fn ms(us: u32) -> String {
    format!("{:.3}", f64::from(us) / 1000.0)
}
