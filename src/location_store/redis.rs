//! [`RedisLocationStore`]: the [`LocationStore`] contract on Redis (one standalone server or a
//! Redis Cluster), for `registrar.persistence = "redis"`.
//!
//! Keys, all hash-tagged by the AoR so that one AoR lives in one cluster slot:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `sipward:{AOR}:b:NODE:ID` | hash | one binding: `r` (the record, JSON), `c` (`cseq:granted` of the last refresh), `x` (expiry, Unix ms); `PEXPIREAT` = the binding's expiry |
//! | `sipward:{AOR}:i` | sorted set | `NODE:ID` of the AoR's bindings scored by expiry; expires with its last binding |
//!
//! Every binding expires in Redis by itself (`PEXPIREAT`), so no sweeper is needed for
//! correctness. A batch of the writer is grouped by AoR and each AoR's changes are applied by
//! one `EVAL` of [`APPLY`] (atomic per AoR); all of a batch's `EVAL`s go out as one pipeline:
//! one round trip per batch on a standalone server, one per master the batch touches on a
//! cluster. A REGISTER therefore costs at most one round trip (fewer under load: a batch holds
//! every REGISTER queued while the previous one was in flight).
//!
//! `NODE` (`redis.node`) keeps the binding ids of several nodes apart: ids are per process.
//! At start a node loads its own bindings (a `SCAN` of every master).
//!
//! A failed write is retried `redis.retries` times on a fresh connection (a cluster failover
//! moves slots; the cluster client follows MOVED/ASK itself); then the batch's REGISTERs are
//! answered 503 with Retry-After. [`StoreHealth`] carries the outcome of the last write or
//! ping to `/readyz`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use redis::IntoConnectionInfo;

use super::{LocationStore, LocationStoreError, WallClock};
use crate::config::RedisConfig;
use crate::registrar::{Aor, BindingChange, BindingRecord, Transport};

pub const ROUND_TRIPS: &str = "sipward_redis_round_trips_total";
pub const SCRIPTS: &str = "sipward_redis_scripts_total";
pub const ERRORS: &str = "sipward_redis_errors_total";
pub const SECONDS: &str = "sipward_redis_round_trip_seconds";

/// Applies one AoR's changes. KEYS[1]: the AoR's index; KEYS[2..]: one binding key per
/// change. ARGV[1]: now (Unix ms); then five per change: op (`P` put, `R` refresh, `D`
/// delete), index member, expiry (Unix ms), payload (`cseq:granted` for `R`), the record
/// (JSON). A refresh of a binding Redis no longer holds (lost in a failover, or written while
/// Redis was down and answered 503) writes the whole record again: Redis heals with the next
/// REGISTER.
pub const APPLY: &str = r"
local idx = KEYS[1]
for i = 2, #KEYS do
  local a = (i - 2) * 5 + 2
  local op, member, exp, payload, record = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local k = KEYS[i]
  if op == 'D' then
    redis.call('DEL', k)
    redis.call('ZREM', idx, member)
  else
    if op == 'P' or redis.call('EXISTS', k) == 0 then
      redis.call('DEL', k)
      redis.call('HSET', k, 'r', record)
    end
    if op == 'R' then
      redis.call('HSET', k, 'c', payload)
    end
    redis.call('HSET', k, 'x', exp)
    redis.call('PEXPIREAT', k, exp)
    redis.call('ZADD', idx, exp, member)
  end
end
redis.call('ZREMRANGEBYSCORE', idx, '-inf', ARGV[1])
local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if top[2] then
  redis.call('PEXPIREAT', idx, top[2])
end
return #KEYS - 1
";

/// Keys read per pipeline when loading.
const LOAD_CHUNK: usize = 1000;

/// Round trips, scripts, errors and latency of the Redis location store.
#[derive(Clone)]
pub struct RedisMetrics {
    pub round_trips: IntCounter,
    pub scripts: IntCounter,
    pub errors: IntCounter,
    pub seconds: Histogram,
}

impl RedisMetrics {
    pub fn new(registry: &Registry) -> RedisMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let seconds = Histogram::with_opts(
            HistogramOpts::new(SECONDS, "Time of one pipeline to Redis (a batch of writes)")
                .buckets(vec![
                    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0,
                ]),
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(seconds.clone()));
        RedisMetrics {
            round_trips: counter(
                ROUND_TRIPS,
                "Pipelines sent to Redis by the location store (one per writer batch on a standalone server)",
            ),
            scripts: counter(
                SCRIPTS,
                "Per-AoR scripts run in Redis by the location store (one per AoR per batch)",
            ),
            errors: counter(
                ERRORS,
                "Redis round trips of the location store that failed (each retried or answered 503)",
            ),
            seconds,
        }
    }
}

/// Whether the last write or ping reached Redis (`/readyz`).
#[derive(Debug)]
pub struct StoreHealth {
    pub(super) ok: AtomicBool,
}

impl StoreHealth {
    pub fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }

    /// Records the outcome of a round trip (this store's, or another user of the same Redis:
    /// `cluster`'s nonce claims).
    pub fn set(&self, ok: bool) {
        self.ok.store(ok, Ordering::Relaxed);
    }
}

pub(super) enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    fn query<T: redis::FromRedisValue>(&mut self, pipe: &Batch) -> redis::RedisResult<T> {
        match (self, pipe) {
            (Conn::Single(c), Batch::Single(p)) => p.query(c),
            (Conn::Cluster(c), Batch::Cluster(p)) => p.query(c),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "pipeline kind does not match the connection",
            ))),
        }
    }

    fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => redis::cmd("PING").query::<()>(c),
            Conn::Cluster(c) => {
                if c.check_connection() {
                    Ok(())
                } else {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cluster connection check failed",
                    )))
                }
            }
        }
    }
}

enum Batch {
    Single(redis::Pipeline),
    Cluster(redis::cluster::ClusterPipeline),
}

impl Batch {
    fn add(&mut self, cmd: redis::Cmd) {
        match self {
            Batch::Single(p) => {
                p.add_command(cmd);
            }
            Batch::Cluster(p) => {
                p.add_command(cmd);
            }
        }
    }
}

/// The location store on Redis.
pub struct RedisLocationStore {
    pub(super) config: RedisConfig,
    pub(super) conn: Option<Conn>,
    /// The AoR and record (JSON) of each binding this node wrote: a change names only the
    /// id, and a refresh resends the record in case Redis lost it.
    pub(super) owners: HashMap<u64, (Aor, String)>,
    pub(super) metrics: RedisMetrics,
    pub(super) health: Arc<StoreHealth>,
}

pub(super) fn backend(e: impl std::fmt::Display) -> LocationStoreError {
    LocationStoreError::Backend(format!("redis: {e}"))
}

impl RedisLocationStore {
    /// Connects (failing when no URL answers) and returns the store.
    pub fn connect(
        config: RedisConfig,
        metrics: RedisMetrics,
    ) -> Result<RedisLocationStore, LocationStoreError> {
        // The TLS client (rediss://) needs the process's crypto provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut store = RedisLocationStore {
            config,
            conn: None,
            owners: HashMap::new(),
            metrics,
            health: Arc::new(StoreHealth {
                ok: AtomicBool::new(false),
            }),
        };
        store.connection()?;
        store.health.set(true);
        Ok(store)
    }

    /// What `/readyz` reads.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    fn infos(&self) -> Result<Vec<redis::ConnectionInfo>, LocationStoreError> {
        self.config
            .urls
            .iter()
            .map(|u| {
                let info = u.as_str().into_connection_info().map_err(backend)?;
                let mut settings = info.redis_settings().clone();
                if let Some(user) = &self.config.username {
                    settings = settings.set_username(user);
                }
                if let Some(password) = &self.config.password {
                    settings = settings.set_password(String::from_utf8_lossy(password.expose()));
                }
                Ok(info.set_redis_settings(settings))
            })
            .collect()
    }

    fn open(&self) -> Result<Conn, LocationStoreError> {
        let infos = self.infos()?;
        if self.config.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(self.config.connect_timeout)
                .response_timeout(self.config.response_timeout)
                .retries(self.config.retries)
                .min_retry_wait(50)
                .max_retry_wait(1000);
            if let Some(user) = &self.config.username {
                builder = builder.username(user);
            }
            if let Some(password) = &self.config.password {
                builder = builder.password(String::from_utf8_lossy(password.expose()));
            }
            let client = builder.build().map_err(backend)?;
            return Ok(Conn::Cluster(Box::new(
                client.get_connection().map_err(backend)?,
            )));
        }
        let mut last = None;
        for info in infos {
            let attempt = redis::Client::open(info).and_then(|client| {
                let c = client.get_connection_with_timeout(self.config.connect_timeout)?;
                c.set_read_timeout(Some(self.config.response_timeout))?;
                c.set_write_timeout(Some(self.config.response_timeout))?;
                Ok(c)
            });
            match attempt {
                Ok(c) => return Ok(Conn::Single(c)),
                Err(e) => last = Some(e),
            }
        }
        Err(backend(last.map_or_else(
            || "no URL in redis.urls".to_owned(),
            |e| e.to_string(),
        )))
    }

    pub(super) fn connection(&mut self) -> Result<&mut Conn, LocationStoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.open()?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn batch(&self) -> Batch {
        if self.config.cluster {
            Batch::Cluster(redis::cluster::cluster_pipe())
        } else {
            Batch::Single(redis::pipe())
        }
    }

    /// Sends `batch` (retried on a fresh connection up to `redis.retries` times).
    fn send(&mut self, batch: &Batch) -> Result<(), LocationStoreError> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let result = match self.connection() {
                Ok(conn) => conn.query::<redis::Value>(batch).map_err(backend),
                Err(e) => Err(e),
            };
            self.metrics.round_trips.inc();
            self.metrics
                .seconds
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(_) => {
                    self.health.set(true);
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    self.conn = None;
                    if attempt >= self.config.retries {
                        self.health.set(false);
                        tracing::warn!(error = %e, "location store: a write to Redis failed");
                        return Err(e);
                    }
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 << attempt.min(4)));
                }
            }
        }
    }

    fn key(&self, aor: &str, id: u64) -> String {
        format!("sipward:{{{aor}}}:b:{}:{id}", self.config.node)
    }

    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.config.node)
    }

    /// Every key of this node's bindings, from every master.
    fn scan_own(&mut self) -> Result<Vec<String>, LocationStoreError> {
        let pattern = format!("sipward:{{*}}:b:{}:*", self.config.node);
        let mut masters = Vec::new();
        if self.config.cluster {
            let conn = self.connection()?;
            let Conn::Cluster(c) = conn else {
                unreachable!("cluster config has a cluster connection")
            };
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut **c)
                .map_err(backend)?;
            for line in nodes.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                if fields.len() > 2
                    && fields[2].split(',').any(|f| f == "master")
                    && !fields[2].contains("fail")
                {
                    let addr = fields[1].split('@').next().unwrap_or_default();
                    masters.push(addr.to_owned());
                }
            }
        }
        let mut keys = Vec::new();
        let mut scan = |conn: &mut redis::Connection| -> Result<(), LocationStoreError> {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(LOAD_CHUNK)
                    .query(conn)
                    .map_err(backend)?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        };
        if self.config.cluster {
            let scheme = if self.config.urls[0].starts_with("rediss://") {
                "rediss"
            } else {
                "redis"
            };
            let template = self.infos()?.remove(0);
            for addr in masters {
                let info = format!("{scheme}://{addr}")
                    .as_str()
                    .into_connection_info()
                    .map_err(backend)?
                    .set_redis_settings(template.redis_settings().clone());
                let client = redis::Client::open(info).map_err(backend)?;
                let mut conn = client
                    .get_connection_with_timeout(self.config.connect_timeout)
                    .map_err(backend)?;
                conn.set_read_timeout(Some(self.config.response_timeout))
                    .map_err(backend)?;
                scan(&mut conn)?;
            }
        } else {
            let conn = self.connection()?;
            let Conn::Single(c) = conn else {
                unreachable!("standalone config has a standalone connection")
            };
            scan(c)?;
        }
        Ok(keys)
    }
}

/// The record's text, JSON (cseq and granted as of the put; a refresh overrides them).
pub(super) fn encode(r: &BindingRecord) -> String {
    serde_json::json!({
        "aor": r.aor.as_str(),
        "uri": r.uri,
        "uri_key": r.uri_key,
        "params": r.params,
        "instance": r.instance,
        "reg_id": r.reg_id,
        "q": r.q,
        "call_id": r.call_id,
        "cseq": r.cseq,
        "user_agent": r.user_agent,
        "credential": r.credential,
        "path": r.path,
        "source": r.source.to_string(),
        "transport": r.transport.as_str(),
        "granted": r.granted,
    })
    .to_string()
}

/// A stored binding back (`None` when it does not parse).
pub(super) fn decode(
    id: u64,
    fields: &HashMap<String, String>,
    clock: &WallClock,
) -> Option<BindingRecord> {
    let v: serde_json::Value = serde_json::from_str(fields.get("r")?).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let expires: u64 = fields.get("x")?.parse().ok()?;
    let (mut cseq, mut granted) = (
        u32::try_from(num("cseq")?).ok()?,
        u32::try_from(num("granted")?).ok()?,
    );
    if let Some((c, g)) = fields.get("c").and_then(|c| c.split_once(':')) {
        cseq = c.parse().ok()?;
        granted = g.parse().ok()?;
    }
    let path = match v.get("path") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|p| p.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Some(BindingRecord {
        id,
        aor: Aor::parse(&text("aor")?)?,
        uri: text("uri")?,
        uri_key: text("uri_key"),
        params: text("params")?,
        instance: text("instance"),
        reg_id: num("reg_id").and_then(|n| u32::try_from(n).ok()),
        q: num("q").and_then(|n| u16::try_from(n).ok()),
        call_id: text("call_id")?,
        cseq,
        user_agent: text("user_agent"),
        credential: text("credential"),
        path,
        source: text("source")?.parse().ok()?,
        transport: Transport::parse(&text("transport")?)?,
        granted,
        deadline: clock.to_instant(expires),
    })
}

impl LocationStore for RedisLocationStore {
    fn load(&mut self, clock: &WallClock) -> Result<Vec<BindingRecord>, LocationStoreError> {
        let keys = self.scan_own()?;
        let now = clock.now_ms();
        let (mut out, mut skipped) = (Vec::new(), 0usize);
        for chunk in keys.chunks(LOAD_CHUNK) {
            let mut batch = self.batch();
            for k in chunk {
                batch.add(redis::cmd("HGETALL").arg(k).clone());
            }
            let rows: Vec<HashMap<String, String>> = {
                let conn = self.connection()?;
                conn.query(&batch).map_err(backend)?
            };
            for (k, fields) in chunk.iter().zip(rows) {
                if fields.is_empty() {
                    continue; // expired between SCAN and HGETALL
                }
                let id = k.rsplit(':').next().and_then(|i| i.parse::<u64>().ok());
                match id.and_then(|id| decode(id, &fields, clock)) {
                    Some(r) if clock.unix_ms(r.deadline) > now => {
                        self.owners.insert(r.id, (r.aor.clone(), encode(&r)));
                        out.push(r);
                    }
                    Some(_) => {}
                    None => skipped += 1,
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "location store: Redis bindings that do not parse were skipped"
            );
        }
        Ok(out)
    }

    fn commit(
        &mut self,
        changes: &[BindingChange],
        clock: &WallClock,
    ) -> Result<(), LocationStoreError> {
        // Per AoR, in order: (binding keys, arguments).
        let mut per_aor: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        let mut slot: HashMap<String, usize> = HashMap::new();
        for change in changes {
            let (id, op, exp, payload, record, aor) = match change {
                BindingChange::Put(r) | BindingChange::Renew(r) => {
                    let record = encode(r);
                    self.owners.insert(r.id, (r.aor.clone(), record.clone()));
                    let exp = clock.unix_ms(r.deadline);
                    (
                        r.id,
                        "P",
                        exp,
                        String::new(),
                        record,
                        r.aor.as_str().to_owned(),
                    )
                }
                BindingChange::Refresh {
                    id,
                    cseq,
                    granted,
                    deadline,
                } => {
                    let Some((aor, record)) = self.owners.get(id) else {
                        continue;
                    };
                    let exp = clock.unix_ms(*deadline);
                    let payload = format!("{cseq}:{granted}");
                    (
                        *id,
                        "R",
                        exp,
                        payload,
                        record.clone(),
                        aor.as_str().to_owned(),
                    )
                }
                BindingChange::Remove { id } => {
                    let Some((aor, _)) = self.owners.remove(id) else {
                        continue;
                    };
                    (
                        *id,
                        "D",
                        0,
                        String::new(),
                        String::new(),
                        aor.as_str().to_owned(),
                    )
                }
            };
            let at = *slot.entry(aor.clone()).or_insert_with(|| {
                per_aor.push((aor.clone(), Vec::new(), Vec::new()));
                per_aor.len() - 1
            });
            let key = self.key(&aor, id);
            let member = self.member(id);
            let (_, keys, args) = &mut per_aor[at];
            keys.push(key);
            args.extend([op.to_owned(), member, exp.to_string(), payload, record]);
        }
        if per_aor.is_empty() {
            return Ok(());
        }
        let now = clock.now_ms().to_string();
        let mut batch = self.batch();
        for (aor, keys, args) in &per_aor {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(APPLY)
                .arg(keys.len() + 1)
                .arg(format!("sipward:{{{aor}}}:i"))
                .arg(keys)
                .arg(&now)
                .arg(args);
            batch.add(cmd);
        }
        self.metrics.scripts.inc_by(per_aor.len() as u64);
        self.send(&batch)
    }

    /// Redis expires bindings itself (`PEXPIREAT`); this only checks that Redis answers
    /// (the writer calls it every few seconds), for `/readyz`.
    fn purge_expired(&mut self, _before_ms: u64, _max: usize) -> Result<usize, LocationStoreError> {
        let ok = self.connection().and_then(|c| c.ping().map_err(backend));
        if ok.is_err() {
            self.conn = None;
        }
        self.health.set(ok.is_ok());
        Ok(0)
    }

    fn size_bytes(&self) -> u64 {
        0
    }
}
