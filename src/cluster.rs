//! What the nodes of a Redis deployment (`registrar.persistence = "redis"`) share with the
//! authenticator: [`RedisAuth`] implements `auth::SharedAuth` on the same Redis (standalone or
//! cluster) as the bindings and devices.
//!
//! - **Nonce uses.** Every verified use of a nonce is claimed by one `EVAL` of [`CLAIM`] on the
//!   key `sipward:n:{NONCE}` (hash-tagged by the nonce, so uses spread over the slots): the
//!   first use records its `nc` and a fingerprint of its Call-ID and source; a later use, at any
//!   node, passes only with a higher `nc` and the same fingerprint. The key expires with the
//!   nonce (lifetime plus drift). Nonces stay stateless HMACs: the nodes share `auth.nonce_keys`,
//!   so any node verifies any node's nonce, and this record is the one replay state they share.
//!   The claim is one blocking round trip on the receive thread, over one of `redis.pool_size`
//!   connections, as a routing lookup of another node's binding is; the script goes by its
//!   SHA1 (`EVALSHA`, loaded on the first `NOSCRIPT`), not as text with every call.
//! - **Failures.** A failed Digest response is reported (a bounded queue, a thread of its own,
//!   one script of [`FAILURE`] each) to counters per fixed window of the limiter's length:
//!   `sipward:f:{s:SOURCE}:W` and `sipward:f:{u:USERNAME}:W`, `W` the window's number since the
//!   Unix epoch, each kept for two windows. A report that finds the limit reached by the current
//!   and the previous window together (so failures on both sides of a window's edge add up)
//!   publishes the block on [`BLOCKS`]; every node (this one too) subscribes and blocks the key
//!   in its own limiter for one window length. Approximate, as documented in
//!   docs/architecture.md: fixed windows where a node's own limiter slides from the first
//!   failure (the shared count errs towards blocking: it may count up to two windows); reports
//!   lost when the queue is full or Redis is down (each node's own limiter still counts them); a
//!   block reaches the other nodes one publish later.
//!
//! It must not know SIP, the limiters' policy or the authenticator's order: it answers claims
//! and turns published blocks into `FailureLimiter::block_until` calls.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};

use crate::auth::{Claim, FailureLimiter, NonceUse, SharedAuth};
use crate::location_store::StoreHealth;
use crate::store::{Conn, RedisSettings};

/// Checks and records one use of a nonce. KEYS[1]: the nonce's key; ARGV: `nc`, the use's
/// fingerprint, the key's lifetime (s). Returns 1 if accepted, 0 if replayed.
pub const CLAIM: &str = r"
local c = redis.call('HGET', KEYS[1], 'c')
local nc = tonumber(ARGV[1])
if c then
  if redis.call('HGET', KEYS[1], 'i') ~= ARGV[2] or nc <= tonumber(c) then
    return 0
  end
  redis.call('HSET', KEYS[1], 'c', nc)
  return 1
end
if nc < 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'c', nc, 'i', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Counts one failure. KEYS[1]: the key's counter of the current window; KEYS[2]: its counter
/// of the previous window (same slot: both hash-tagged by kind and key); ARGV: the counter's
/// expiry (Unix ms: the end of the window after this one), the limit, the channel, the
/// message published while the two windows together hold the limit or more. Returns that
/// sum. (A node whose limiter blocks the key stops reporting it, so the publishes after the
/// limit are the few failures in flight.)
pub const FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
local total = n + tonumber(redis.call('GET', KEYS[2]) or '0')
if total >= tonumber(ARGV[2]) then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return total
";

/// The channel blocks are announced on: `s UNTIL_MS SOURCE` or `u UNTIL_MS USERNAME`.
pub const BLOCKS: &str = "sipward:blocks";

pub const ROUND_TRIPS: &str = "sipward_redis_auth_round_trips_total";
pub const ERRORS: &str = "sipward_redis_auth_errors_total";
pub const DROPPED: &str = "sipward_redis_auth_failures_dropped_total";

/// Failure reports waiting for the reporting thread; more are dropped.
const FAILURE_QUEUE: usize = 4096;

/// Both limiters, to impose the blocks published on [`BLOCKS`].
#[derive(Clone)]
pub struct Limiters {
    pub source: FailureLimiter<IpAddr>,
    pub user: FailureLimiter<String>,
}

struct Counters {
    round_trips: IntCounter,
    errors: IntCounter,
    dropped: IntCounter,
}

/// `auth::SharedAuth` on Redis; see the module docs.
pub struct RedisAuth {
    settings: RedisSettings,
    /// [`CLAIM`], run by its SHA1 (`EVALSHA`).
    claim: redis::Script,
    pool: Mutex<Vec<Option<Conn>>>,
    ready: Condvar,
    reports: SyncSender<(String, IpAddr)>,
    counters: Arc<Counters>,
    /// `/readyz`'s view of Redis, shared with the location store: a claim that fails marks
    /// it down.
    health: Arc<StoreHealth>,
}

impl RedisAuth {
    /// Starts the failure reporter and the subscriber to [`BLOCKS`] (both stop when `stop` is
    /// set) and returns the claims' side, with `pool` connections opened lazily.
    pub fn start(
        settings: RedisSettings,
        pool: usize,
        limiters: Limiters,
        registry: &Registry,
        health: Arc<StoreHealth>,
        stop: Arc<AtomicBool>,
    ) -> Arc<RedisAuth> {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let counters = Arc::new(Counters {
            round_trips: counter(
                ROUND_TRIPS,
                "Round trips to Redis for shared nonce uses and failure counts",
            ),
            errors: counter(
                ERRORS,
                "Round trips to Redis for nonce uses and failure counts that failed",
            ),
            dropped: counter(
                DROPPED,
                "Failure reports not shared with the other nodes (queue full or Redis down)",
            ),
        });
        let (reports, queue) = sync_channel(FAILURE_QUEUE);
        let reporter = Reporter {
            settings: settings.clone(),
            script: redis::Script::new(FAILURE),
            limiters: limiters.clone(),
            counters: counters.clone(),
        };
        let reporter_stop = stop.clone();
        std::thread::Builder::new()
            .name("redis-failures".into())
            .spawn(move || reporter.run(queue, &reporter_stop))
            .expect("spawn the failure reporter");
        crate::store::subscribe_to(
            settings.clone(),
            BLOCKS,
            stop,
            move |message| impose(&limiters, &message),
            || {},
        );
        Arc::new(RedisAuth {
            settings,
            claim: redis::Script::new(CLAIM),
            pool: Mutex::new((0..pool.max(1)).map(|_| None).collect()),
            ready: Condvar::new(),
            reports,
            counters,
            health,
        })
    }

    /// Runs `call` on a pooled connection, once more on a fresh one if the first attempt
    /// failed.
    fn query(&self, call: impl Fn(&mut Conn) -> redis::RedisResult<i64>) -> Option<i64> {
        let mut slot = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(s) = pool.pop() {
                    break s;
                }
                pool = self.ready.wait(pool).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut answer = None;
        for _ in 0..2 {
            if slot.is_none() {
                slot = Conn::open(&self.settings).ok();
            }
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            self.counters.round_trips.inc();
            match call(conn) {
                Ok(n) => {
                    answer = Some(n);
                    break;
                }
                Err(e) => {
                    self.counters.errors.inc();
                    tracing::debug!(error = %e, "redis: nonce claim failed");
                    slot = None;
                }
            }
        }
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
        self.ready.notify_one();
        self.health.set(answer.is_some());
        answer
    }
}

impl SharedAuth for RedisAuth {
    fn claim(&self, use_: &NonceUse<'_>) -> Claim {
        let (key, fingerprint) = (format!("sipward:n:{{{}}}", use_.nonce), use_.fingerprint());
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(&key)
            .arg(use_.nc)
            .arg(&fingerprint)
            .arg(use_.ttl_secs);
        match self.query(|conn| invocation.invoke(conn.like())) {
            Some(1) => Claim::Accepted,
            Some(_) => Claim::Replayed,
            None => {
                tracing::warn!("redis: a nonce use could not be checked; answered 503");
                Claim::Unavailable
            }
        }
    }

    fn failure(&self, username: &str, source: IpAddr) {
        match self.reports.try_send((username.to_owned(), source)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.inc();
            }
        }
    }
}

/// Sends the failure reports, one `EVAL` each, on a connection of its own.
struct Reporter {
    settings: RedisSettings,
    /// [`FAILURE`], run by its SHA1.
    script: redis::Script,
    limiters: Limiters,
    counters: Arc<Counters>,
}

impl Reporter {
    fn run(self, queue: Receiver<(String, IpAddr)>, stop: &AtomicBool) {
        let mut conn: Option<Conn> = None;
        while !stop.load(Ordering::Relaxed) {
            let (username, source) = match queue.recv_timeout(Duration::from_millis(200)) {
                Ok(report) => report,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let now_ms = crate::location_store::WallClock::now().now_ms();
            // `source` is already the limiter's key (`auth::source_key`: an IPv6 /64).
            let source_key = source.to_string();
            let counts = [
                ('s', source_key.as_str(), self.limiters.source.config()),
                ('u', username.as_str(), self.limiters.user.config()),
            ];
            for (kind, key, config) in counts {
                let window_ms = u64::try_from(config.window.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let window = now_ms / window_ms;
                let expiry = window.saturating_add(2).saturating_mul(window_ms);
                let mut call = self.script.prepare_invoke();
                call.key(format!("sipward:f:{{{kind}:{key}}}:{window}"))
                    .key(format!(
                        "sipward:f:{{{kind}:{key}}}:{}",
                        window.saturating_sub(1)
                    ))
                    .arg(expiry)
                    .arg(config.max_failures.max(1))
                    .arg(BLOCKS)
                    // Blocked for a whole window from now, as a node's own limiter blocks
                    // (the current window may end a moment later).
                    .arg(format!("{kind} {} {key}", now_ms.saturating_add(window_ms)));
                if conn.is_none() {
                    conn = Conn::open(&self.settings).ok();
                }
                let Some(c) = conn.as_mut() else {
                    self.counters.dropped.inc();
                    continue;
                };
                self.counters.round_trips.inc();
                if let Err(e) = call.invoke::<i64>(c.like()) {
                    self.counters.errors.inc();
                    self.counters.dropped.inc();
                    tracing::debug!(error = %e, "redis: a failure report was lost");
                    conn = None;
                }
            }
        }
    }
}

/// Blocks the key a message on [`BLOCKS`] names until its end.
fn impose(limiters: &Limiters, message: &str) {
    let mut parts = message.splitn(3, ' ');
    let (Some(kind), Some(until), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(until_ms) = until.parse::<u64>() else {
        return;
    };
    let clock = crate::location_store::WallClock::now();
    let (now, until) = (Instant::now(), clock.to_instant(until_ms));
    if until <= clock.instant() {
        return;
    }
    match kind {
        "s" => {
            if let Ok(ip) = key.parse::<IpAddr>() {
                limiters.source.block_until(ip, until, now);
                tracing::warn!(source = %ip, "failure limit reached across the nodes: source blocked");
            }
        }
        "u" => {
            limiters.user.block_until(key.to_owned(), until, now);
            tracing::warn!(username = ?key, "failure limit reached across the nodes: username blocked");
        }
        _ => {}
    }
}
