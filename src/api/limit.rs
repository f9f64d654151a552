//! Fixed-window counters per key for the token API's 429s: requests per user and per device
//! ([`RateLimiter::check`] counts and refuses), failures per source address
//! ([`RateLimiter::refuses`] before the work, [`RateLimiter::record`] after a failure), so
//! that many valid sign-ins behind one NAT address are served while a source sending bad
//! tokens is throttled. Bounded: at most `max_keys` keys are tracked; when the map is full
//! even after dropping finished windows, new keys are refused (fail closed) until windows end.

use std::hash::Hash;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Keys tracked per limiter. Worst case about 100 bytes each.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

pub struct RateLimiter<K: Eq + Hash> {
    per_window: u32,
    window: Duration,
    max_keys: usize,
    counts: DashMap<K, (Instant, u32)>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn per_minute(limit: u32) -> Self {
        RateLimiter {
            per_window: limit.max(1),
            window: Duration::from_secs(60),
            max_keys: DEFAULT_MAX_KEYS,
            counts: DashMap::new(),
        }
    }

    /// Counts one request for `key`; `Err(retry_after)` when over the limit.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.counts.contains_key(key) && self.counts.len() >= self.max_keys {
            self.purge(now);
            if self.counts.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let mut slot = self.counts.entry(key.clone()).or_insert((now, 0));
        let (start, count) = slot.value_mut();
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            return Err((*start + self.window).saturating_duration_since(now));
        }
        *count += 1;
        Ok(())
    }

    /// Whether `key` has used up its window, without counting anything: `Err(retry_after)`
    /// when it has, or when the map is full and `key` is not in it.
    pub fn refuses(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if let Some(slot) = self.counts.get(key) {
            let (start, count) = *slot.value();
            if now.duration_since(start) < self.window && count >= self.per_window {
                return Err((start + self.window).saturating_duration_since(now));
            }
            return Ok(());
        }
        if self.counts.len() >= self.max_keys {
            self.purge(now);
            if self.counts.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        Ok(())
    }

    /// Counts one event (a failure) for `key`. When the map is full even after a purge, the
    /// event is not counted, but [`Self::refuses`] then refuses every new key anyway.
    pub fn record(&self, key: &K, now: Instant) {
        if !self.counts.contains_key(key) && self.counts.len() >= self.max_keys {
            self.purge(now);
            if self.counts.len() >= self.max_keys {
                return;
            }
        }
        let mut slot = self.counts.entry(key.clone()).or_insert((now, 0));
        let (start, count) = slot.value_mut();
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
    }

    /// Drops keys whose window has ended.
    pub fn purge(&self, now: Instant) {
        self.counts
            .retain(|_, (start, _)| now.duration_since(*start) < self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_resets_after_the_window() {
        let l = RateLimiter::per_minute(2);
        let t0 = Instant::now();
        assert!(l.check(&"a", t0).is_ok());
        assert!(l.check(&"a", t0).is_ok());
        let retry = l.check(&"a", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(l.check(&"b", t0).is_ok());
        assert!(l.check(&"a", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn failures_are_counted_apart_from_requests() {
        let l = RateLimiter::per_minute(2);
        let t0 = Instant::now();
        // Asking costs nothing: any number of requests without failures pass.
        for _ in 0..1000 {
            assert!(l.refuses(&"nat", t0).is_ok());
        }
        l.record(&"guesser", t0);
        assert!(l.refuses(&"guesser", t0).is_ok());
        l.record(&"guesser", t0);
        let retry = l
            .refuses(&"guesser", t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(l.refuses(&"nat", t0).is_ok());
        assert!(l.refuses(&"guesser", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_full_map_of_failures_fails_closed() {
        let mut l = RateLimiter::per_minute(5);
        l.max_keys = 1;
        let t0 = Instant::now();
        l.record(&1, t0);
        l.record(&2, t0);
        assert!(l.refuses(&1, t0).is_ok());
        assert!(l.refuses(&2, t0).is_err());
        assert!(l.refuses(&2, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn a_full_map_fails_closed() {
        let mut l = RateLimiter::per_minute(5);
        l.max_keys = 2;
        let t0 = Instant::now();
        assert!(l.check(&1, t0).is_ok());
        assert!(l.check(&2, t0).is_ok());
        assert!(l.check(&3, t0).is_err());
        assert!(l.check(&3, t0 + Duration::from_secs(61)).is_ok());
    }
}
