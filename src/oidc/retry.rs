//! The issuer refresher's retry schedule and the issuer's reachability, with no I/O and no
//! clock: [`Backoff`] gives the wait after each failed attempt (exponential from
//! [`RETRY_FIRST`] to [`RETRY_CAP`], with jitter passed in, reset by a success), and
//! [`Reach`] says how loudly an attempt's outcome is logged: one WARN when the issuer becomes
//! unreachable, one INFO when it recovers, DEBUG in between.
//!
//! With the IdP absent, the attempts start at 0, about 1, 3, 7, 15 and 31 s (jitter moves
//! each wait by at most a fifth), so 30 s see at most 6 attempts and one WARN
//! (`an_absent_idp_for_30_s_gets_at_most_6_attempts_and_one_warn`).

use std::time::Duration;

/// The wait after the first failure.
pub(super) const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub(super) const RETRY_CAP: Duration = Duration::from_secs(300);
/// How far jitter moves a wait: up to this fraction either way.
const JITTER: f64 = 0.2;

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// The wait (before jitter) after the next failure.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: RETRY_FIRST }
    }
}

impl Backoff {
    /// A failed attempt: the wait before the next one. `jitter` in `[0, 1)` (a uniform
    /// random draw) scales the wait between 0.8 and 1.2 times its base; the base doubles
    /// each time up to [`RETRY_CAP`], and no wait exceeds the cap.
    pub(super) fn failure(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(RETRY_CAP);
        let factor = 1.0 + JITTER * (2.0 * jitter.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor).min(RETRY_CAP)
    }

    /// A successful attempt: the next failure waits [`RETRY_FIRST`] again.
    pub(super) fn success(&mut self) {
        self.next = RETRY_FIRST;
    }
}

/// Whether the issuer answered its last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// No attempt has ended yet.
    Unknown,
    Up,
    Down,
}

/// How an attempt's outcome is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loudness {
    /// The issuer became unreachable (or was at start).
    Warn,
    /// The issuer answered again after being unreachable.
    Info,
    /// Nothing changed.
    Debug,
}

impl Reach {
    /// The state after an attempt that succeeded (`ok`) or failed, and how loud to log it.
    pub(super) fn after(self, ok: bool) -> (Reach, Loudness) {
        match (self, ok) {
            (Reach::Down, true) => (Reach::Up, Loudness::Info),
            (_, true) => (Reach::Up, Loudness::Debug),
            (Reach::Down, false) => (Reach::Down, Loudness::Debug),
            (_, false) => (Reach::Down, Loudness::Warn),
        }
    }

    pub(super) fn to_u8(self) -> u8 {
        match self {
            Reach::Unknown => 0,
            Reach::Up => 1,
            Reach::Down => 2,
        }
    }

    pub(super) fn from_u8(v: u8) -> Reach {
        match v {
            1 => Reach::Up,
            2 => Reach::Down,
            _ => Reach::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the schedule on a virtual clock with every attempt failing for `window`;
    /// returns the attempt times and the WARN count.
    fn absent_for(window: Duration, jitter: impl Fn(usize) -> f64) -> (Vec<Duration>, usize) {
        let (mut backoff, mut reach) = (Backoff::default(), Reach::Unknown);
        let (mut now, mut attempts, mut warns) = (Duration::ZERO, Vec::new(), 0);
        while now < window {
            attempts.push(now);
            let (next, loud) = reach.after(false);
            reach = next;
            warns += usize::from(loud == Loudness::Warn);
            now += backoff.failure(jitter(attempts.len()));
        }
        (attempts, warns)
    }

    /// Issue 15 acceptance: the IdP absent for 30 s gets at most about 6 attempts and at
    /// most 2 WARN lines, whatever the jitter draws.
    #[test]
    fn an_absent_idp_for_30_s_gets_at_most_6_attempts_and_one_warn() {
        let window = Duration::from_secs(30);
        let draws: [&dyn Fn(usize) -> f64; 4] = [&|_| 0.0, &|_| 0.999_999, &|_| 0.5, &|n| {
            if n % 2 == 0 {
                0.0
            } else {
                0.99
            }
        }];
        for draw in draws {
            let (attempts, warns) = absent_for(window, draw);
            assert!(attempts.len() <= 6, "{attempts:?}");
            assert!(attempts.len() >= 5, "{attempts:?}");
            assert_eq!(warns, 1, "one WARN when it becomes unreachable");
        }
        let (attempts, _) = absent_for(window, |_| 0.5);
        let secs: Vec<u64> = attempts.iter().map(|d| d.as_secs()).collect();
        assert_eq!(
            secs,
            [0, 1, 3, 7, 15],
            "no jitter: 0, 1, 3, 7, 15 (then 31)"
        );
    }

    #[test]
    fn waits_double_up_to_five_minutes_and_a_success_resets_them() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..12).map(|_| b.failure(0.5).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for _ in 0..5 {
            assert!(
                b.failure(0.999_999) <= RETRY_CAP,
                "jitter never exceeds the cap"
            );
        }
        let low = b.failure(0.0);
        assert!(
            low > RETRY_CAP.mul_f64(0.79) && low < RETRY_CAP.mul_f64(0.81),
            "jitter moves a wait by a fifth: {low:?}"
        );
        b.success();
        assert_eq!(b.failure(0.5), RETRY_FIRST);
        assert_eq!(b.failure(0.5), RETRY_FIRST * 2);
    }

    #[test]
    fn one_warn_when_it_goes_down_one_info_when_it_recovers() {
        let outcomes = [true, false, false, false, true, true, false, true];
        let mut reach = Reach::Unknown;
        let louds: Vec<Loudness> = outcomes
            .iter()
            .map(|&ok| {
                let (next, loud) = reach.after(ok);
                reach = next;
                loud
            })
            .collect();
        use Loudness::*;
        assert_eq!(
            louds,
            [Debug, Warn, Debug, Debug, Info, Debug, Warn, Info],
            "transitions only are loud"
        );
        assert_eq!(
            Reach::Unknown.after(false),
            (Reach::Down, Warn),
            "down at start"
        );
        for r in [Reach::Unknown, Reach::Up, Reach::Down] {
            assert_eq!(Reach::from_u8(r.to_u8()), r);
        }
    }
}
