//! [`RedisShared`]: the bindings other nodes wrote to Redis, read on a routing lookup, and
//! deleted when the device credential that made them is revoked (`registrar::SharedBindings`).
//! See `redis.rs` for the keys.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::redis::{backend, decode, Conn, RedisLocationStore, RedisMetrics, StoreHealth};
use super::{LocationStoreError, WallClock};
use crate::config::RedisConfig;
use crate::registrar::{Aor, BindingRecord, PEER_BINDING_PARAM};

/// Reads the live bindings of one AoR with their records: pairs of (index member, hash
/// fields). KEYS[1]: the AoR's index; ARGV[1]: now (Unix ms); ARGV[2]: the binding key
/// prefix (`sipward:{AOR}:b:`). The binding keys share the index's slot.
pub const READ: &str = r"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for _, m in ipairs(members) do
  local h = redis.call('HGETALL', ARGV[2] .. m)
  if #h > 0 then
    table.insert(out, m)
    table.insert(out, h)
  end
end
return out
";

/// Deletes the bindings of one AoR made with one credential by other nodes. KEYS[1]: the
/// AoR's index; ARGV[1]: the binding key prefix (`sipward:{AOR}:b:`); ARGV[2]: the credential;
/// ARGV[3]: this node's member prefix (`NODE:`), skipped: this node's journal deletes its own.
/// Returns how many.
pub(super) const REMOVE_CREDENTIAL: &str = r"
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, #ARGV[3]) ~= ARGV[3] then
    local r = redis.call('HGET', ARGV[1] .. m, 'r')
    if r then
      local ok, v = pcall(cjson.decode, r)
      if ok and v['credential'] == ARGV[2] then
        redis.call('DEL', ARGV[1] .. m)
        redis.call('ZREM', KEYS[1], m)
        n = n + 1
      end
    end
  end
end
return n
";

/// The bindings other nodes wrote, read from Redis on a routing lookup
/// (`registrar::SharedBindings`): one `EVAL` of [`READ`], one round trip, over one of
/// `redis.pool_size` connections (a lookup that finds every connection busy waits for one).
pub struct RedisShared {
    store: std::sync::Mutex<Vec<RedisLocationStore>>,
    ready: std::sync::Condvar,
    node_prefix: String,
    /// `redis.peers`: where each node takes the requests for its connection-bound bindings.
    peers: HashMap<String, std::net::SocketAddr>,
}

impl RedisShared {
    /// `pool` connections, opened lazily.
    pub fn new(config: &RedisConfig, metrics: RedisMetrics, pool: usize) -> RedisShared {
        let stores = (0..pool.max(1))
            .map(|_| RedisLocationStore {
                config: config.clone(),
                conn: None,
                owners: HashMap::new(),
                metrics: metrics.clone(),
                health: Arc::new(StoreHealth {
                    ok: AtomicBool::new(true),
                }),
            })
            .collect();
        RedisShared {
            store: std::sync::Mutex::new(stores),
            ready: std::sync::Condvar::new(),
            node_prefix: format!("{}:", config.node),
            peers: config.peers.iter().cloned().collect(),
        }
    }

    fn read(
        &self,
        store: &mut RedisLocationStore,
        aor: &Aor,
    ) -> Result<Vec<BindingRecord>, LocationStoreError> {
        let clock = WallClock::now();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(READ)
            .arg(1)
            .arg(format!("sipward:{{{}}}:i", aor.as_str()))
            .arg(clock.now_ms())
            .arg(format!("sipward:{{{}}}:b:", aor.as_str()));
        let started = Instant::now();
        let result: redis::RedisResult<Vec<redis::Value>> = match store.connection()? {
            Conn::Single(c) => cmd.query(c),
            Conn::Cluster(c) => cmd.query(&mut **c),
        };
        store.metrics.round_trips.inc();
        store
            .metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        let values = result.map_err(|e| {
            store.metrics.errors.inc();
            store.conn = None;
            backend(e)
        })?;
        let mut out = Vec::new();
        for pair in values.chunks(2) {
            let [member, fields] = pair else { break };
            let Ok(member) = redis::from_redis_value_ref::<String>(member) else {
                continue;
            };
            if member.starts_with(&self.node_prefix) {
                continue; // this node's own: the local location service has them
            }
            let Ok(fields) = redis::from_redis_value_ref::<HashMap<String, String>>(fields) else {
                continue;
            };
            let Some(mut r) = decode(0, &fields, &clock) else {
                continue;
            };
            // Another node's connection is not usable here: a TCP/TLS/WS binding is reached
            // through its node, a Path-like hop naming the binding (docs/architecture.md
            // "Several nodes"). Without the node's address it is left out.
            if r.transport != crate::registrar::Transport::Udp && r.path.is_empty() {
                let owner = member
                    .split_once(':')
                    .and_then(|(node, id)| Some((self.peers.get(node)?, id)));
                if let Some((addr, id)) = owner {
                    r.path = vec![format!("<sip:{addr};lr;{PEER_BINDING_PARAM}={id}>")];
                }
            }
            out.push(r);
        }
        Ok(out)
    }
}

impl RedisShared {
    /// Runs `f` on a pooled connection (waiting for one when all are busy).
    fn pooled<T>(&self, f: impl FnOnce(&mut RedisLocationStore) -> T) -> T {
        let mut store = {
            let mut pool = self.store.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(s) = pool.pop() {
                    break s;
                }
                pool = self.ready.wait(pool).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = f(&mut store);
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
        self.ready.notify_one();
        result
    }

    fn remove(
        &self,
        store: &mut RedisLocationStore,
        aor: &Aor,
        name: &str,
    ) -> Result<usize, LocationStoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REMOVE_CREDENTIAL)
            .arg(1)
            .arg(format!("sipward:{{{}}}:i", aor.as_str()))
            .arg(format!("sipward:{{{}}}:b:", aor.as_str()))
            .arg(name)
            .arg(&self.node_prefix);
        let result: redis::RedisResult<usize> = match store.connection()? {
            Conn::Single(c) => cmd.query(c),
            Conn::Cluster(c) => cmd.query(&mut **c),
        };
        store.metrics.round_trips.inc();
        result.map_err(|e| {
            store.metrics.errors.inc();
            store.conn = None;
            backend(e)
        })
    }
}

impl crate::registrar::SharedBindings for RedisShared {
    fn others(&self, aor: &Aor) -> Vec<BindingRecord> {
        self.pooled(|store| self.read(store, aor))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "location store: reading other nodes' bindings failed");
                Vec::new()
            })
    }

    fn remove_credential(&self, aor: &Aor, name: &str) -> usize {
        // Retried once on a fresh connection: a revoke should not leave bindings behind for
        // one dropped connection (the owning node still removes its own on the publish).
        let attempt = || self.pooled(|store| self.remove(store, aor, name));
        match attempt().or_else(|_| attempt()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "location store: removing a revoked device's bindings at the other nodes failed; each node removes its own");
                0
            }
        }
    }
}
