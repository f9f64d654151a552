//! Redis device store, for `registrar.persistence = "redis"`: the token API's device records
//! shared by every node, so a device created at node A exists at node B, and a revoke at A is
//! what B reads on its next lookup of that credential.
//!
//! Keys, all hash-tagged `{devices}` so that they live in one cluster slot and one Lua script
//! can apply `issue` and the revokes atomically (the device store sees one write per token
//! exchange or revoke, not per REGISTER, so one slot is not a hot spot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `sipward:{devices}:d` | hash | username → the record (JSON); revoked records stay, with `revoked` set |
//! | `sipward:{devices}:u:ISS\nSUB` | set | usernames of the user's records that are not revoked |
//! | `sipward:{devices}:a:AOR` | set | usernames of the AoR's records that are not revoked |
//! | `sipward:{devices}:rb` | hash | AoR → `revoked_before` (the admin user revoke) |
//!
//! Every change a script makes is published on [`CHANNEL`] (the username), from inside the
//! script, so the publish cannot be separated from the change. Nodes subscribe
//! ([`subscribe`]) to drop the bindings *they* made with a revoked credential; the credential
//! itself is refused everywhere without waiting for the message, because a node reads the
//! record from Redis on every lookup of a device credential ([`DeviceStore::device`], see
//! `credentials::DeviceIndex`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde_json::{json, Value};

use super::{DeviceRecord, DeviceStore, Generation, IssueOutcome, IssueRequest, StoreError};

/// The pub/sub channel on which every change of a device record is announced (its username).
pub const CHANNEL: &str = "sipward:devices";
const PREFIX: &str = "sipward:{devices}:";

/// Where the device store's Redis is (built by `app` from `[redis]`; the store names no other
/// module).
#[derive(Clone)]
pub struct RedisSettings {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("urls", &self.urls)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// KEYS[1]: the records hash. ARGV[1]: the key prefix; ARGV[2]: the request (JSON).
/// Returns `{'taken'}`, `{'limit'}`, `{'renewed', json}` or `{'created', json}`.
const ISSUE: &str = r"
local p, recs = ARGV[1], KEYS[1]
local r = cjson.decode(ARGV[2])
local function get(u)
  local j = redis.call('HGET', recs, u)
  if j then return cjson.decode(j) end
  return nil
end
for _, u in ipairs(redis.call('SMEMBERS', p .. 'a:' .. r.aor)) do
  local d = get(u)
  if d and d.revoked == nil and (d.iss ~= r.iss or d.sub ~= r.sub) then return {'taken'} end
end
local ukey = p .. 'u:' .. r.iss .. '\n' .. r.sub
local active = 0
for _, u in ipairs(redis.call('SMEMBERS', ukey)) do
  local d = get(u)
  if d and d.revoked == nil then
    if d.device_id == r.device_id then
      if d.exp > r.now then
        d.pgen, d.pkid, d.pexp = d.gen, d.kid, d.exp
      else
        d.pgen, d.pkid, d.pexp = nil, nil, nil
      end
      d.gen, d.kid, d.exp = d.gen + 1, r.kid, r.expires_at
      if d.aor ~= r.aor then
        redis.call('SREM', p .. 'a:' .. d.aor, u)
        redis.call('SADD', p .. 'a:' .. r.aor, u)
        d.aor = r.aor
      end
      d.realm = r.realm
      if r.name then d.name = r.name end
      if r.platform then d.platform = r.platform end
      local j = cjson.encode(d)
      redis.call('HSET', recs, u, j)
      redis.call('PUBLISH', ARGV[3], u)
      return {'renewed', j}
    end
    if d.exp > r.now or (d.pexp and d.pexp > r.now) then active = active + 1 end
  end
end
if active >= r.max_devices then return {'limit'} end
local d = {username = r.new_username, device_id = r.device_id, iss = r.iss, sub = r.sub,
  aor = r.aor, realm = r.realm, gen = 1, kid = r.kid, exp = r.expires_at, created = r.now,
  name = r.name, platform = r.platform}
local j = cjson.encode(d)
redis.call('HSET', recs, d.username, j)
redis.call('SADD', ukey, d.username)
redis.call('SADD', p .. 'a:' .. r.aor, d.username)
redis.call('PUBLISH', ARGV[3], d.username)
return {'created', j}
";

/// KEYS[1]: the records hash. ARGV: prefix, channel, now, then either `D iss sub device_id`
/// (one device) or `A aor` (every device of the AoR, and `revoked_before`). Returns the
/// records as they were.
const REVOKE: &str = r"
local p, recs, ch, now = ARGV[1], KEYS[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local function revoke(u, d)
  table.insert(out, cjson.encode(d))
  d.revoked = now
  redis.call('HSET', recs, u, cjson.encode(d))
  redis.call('SREM', p .. 'u:' .. d.iss .. '\n' .. d.sub, u)
  redis.call('SREM', p .. 'a:' .. d.aor, u)
  redis.call('PUBLISH', ch, u)
end
if ARGV[4] == 'D' then
  for _, u in ipairs(redis.call('SMEMBERS', p .. 'u:' .. ARGV[5] .. '\n' .. ARGV[6])) do
    local j = redis.call('HGET', recs, u)
    if j then
      local d = cjson.decode(j)
      if d.revoked == nil and d.device_id == ARGV[7] then
        revoke(u, d)
        return out
      end
    end
  end
  return out
end
for _, u in ipairs(redis.call('SMEMBERS', p .. 'a:' .. ARGV[5])) do
  local j = redis.call('HGET', recs, u)
  if j then
    local d = cjson.decode(j)
    if d.revoked == nil then revoke(u, d) end
  end
end
redis.call('HSET', p .. 'rb', ARGV[5], now)
return out
";

/// KEYS[1]: the records hash. ARGV: username, gen, at, channel. Publishes only when the
/// previous generation ends (other nodes must stop accepting it).
const RECORD_REGISTER: &str = r"
local j = redis.call('HGET', KEYS[1], ARGV[1])
if not j then return 0 end
local d = cjson.decode(j)
d.last = tonumber(ARGV[3])
local ended = false
if d.gen == tonumber(ARGV[2]) and d.pgen then
  d.pgen, d.pkid, d.pexp = nil, nil, nil
  ended = true
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(d))
if ended then redis.call('PUBLISH', ARGV[4], ARGV[1]) end
return 1
";

/// One connection: to a standalone server or to a cluster (which follows MOVED/ASK itself).
pub enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    /// Opens a connection as `settings` say: the cluster client over every URL, or the first
    /// URL that answers.
    pub fn open(s: &RedisSettings) -> Result<Conn, StoreError> {
        if s.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(infos(s)?)
                .connection_timeout(s.connect_timeout)
                .response_timeout(s.response_timeout)
                .retries(3);
            if let Some(user) = &s.username {
                builder = builder.username(user);
            }
            if let Some(password) = &s.password {
                builder = builder.password(password.clone());
            }
            let client = builder.build().map_err(backend)?;
            return Ok(Conn::Cluster(Box::new(
                client.get_connection().map_err(backend)?,
            )));
        }
        Ok(Conn::Single(single(s)?))
    }

    /// Runs one command.
    pub fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query(c),
            Conn::Cluster(c) => cmd.query(&mut **c),
        }
    }

    /// The connection as the `redis` crate's interface, for `Script::invoke` (`EVALSHA`, the
    /// script loaded once per server instead of sent with every call).
    pub fn like(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }
}

/// The device store on Redis: one connection behind a mutex (the token API's calls are few;
/// [`super::Store`] bounds how many wait), reopened after an error.
pub struct RedisStore {
    settings: RedisSettings,
    conn: Mutex<Option<Conn>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

fn infos(s: &RedisSettings) -> Result<Vec<redis::ConnectionInfo>, StoreError> {
    s.urls
        .iter()
        .map(|u| {
            let info = u.as_str().into_connection_info().map_err(backend)?;
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &s.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &s.password {
                settings = settings.set_password(password.clone());
            }
            Ok(info.set_redis_settings(settings))
        })
        .collect()
}

/// A standalone connection to the first URL that answers.
fn single(s: &RedisSettings) -> Result<redis::Connection, StoreError> {
    let mut last = None;
    for info in infos(s)? {
        let attempt = redis::Client::open(info).and_then(|client| {
            let c = client.get_connection_with_timeout(s.connect_timeout)?;
            c.set_read_timeout(Some(s.response_timeout))?;
            c.set_write_timeout(Some(s.response_timeout))?;
            Ok(c)
        });
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(backend(last.map_or_else(
        || "no URL in redis.urls".to_owned(),
        |e| e.to_string(),
    )))
}

impl RedisStore {
    /// Connects (failing when no URL answers).
    pub fn connect(settings: RedisSettings) -> Result<RedisStore, StoreError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let store = RedisStore {
            settings,
            conn: Mutex::new(None),
        };
        store.ping()?;
        Ok(store)
    }

    /// Runs `cmd` once, and once more on a fresh connection if the first attempt failed.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("connection mutex poisoned".into()))?;
        let mut last = None;
        for _ in 0..2 {
            if guard.is_none() {
                match Conn::open(&self.settings) {
                    Ok(c) => *guard = Some(c),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let result = guard.as_mut().expect("opened above").query(cmd);
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *guard = None;
                    last = Some(backend(e));
                }
            }
        }
        Err(last.unwrap_or_else(|| backend("no attempt")))
    }

    fn eval(script: &str, args: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(1).arg(format!("{PREFIX}d"));
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    fn records(&self, values: Vec<String>) -> Vec<DeviceRecord> {
        values.iter().filter_map(|j| decode(j)).collect()
    }
}

/// A record read back; `None` for one that does not parse (logged: Redis holds what a script
/// wrote, so this means another writer).
fn decode(text: &str) -> Option<DeviceRecord> {
    let v: Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    // cjson writes whole numbers as integers, but may write big ones as floats.
    let n = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f.max(0.0) as u64)))
    };
    let gen = |k: &str| n(k).map(|g| u32::try_from(g).unwrap_or(u32::MAX));
    let record = (|| {
        Some(DeviceRecord {
            username: s("username")?,
            device_id: s("device_id")?,
            iss: s("iss")?,
            sub: s("sub")?,
            aor: s("aor")?,
            realm: s("realm")?,
            current: Generation {
                gen: gen("gen")?,
                kid: s("kid")?,
                expires_at: n("exp")?,
            },
            previous: match (gen("pgen"), s("pkid"), n("pexp")) {
                (Some(gen), Some(kid), Some(expires_at)) => Some(Generation {
                    gen,
                    kid,
                    expires_at,
                }),
                _ => None,
            },
            created: n("created")?,
            revoked: n("revoked"),
            last_register: n("last"),
            name: s("name"),
            platform: s("platform"),
        })
    })();
    if record.is_none() {
        tracing::warn!("device store: a record in Redis does not parse");
    }
    record
}

impl DeviceStore for RedisStore {
    fn load_active(&self, now: u64) -> Result<Vec<DeviceRecord>, StoreError> {
        let all: Vec<String> = self.query(redis::cmd("HVALS").arg(format!("{PREFIX}d")))?;
        Ok(self
            .records(all)
            .into_iter()
            .filter(|r| r.is_active(now))
            .collect())
    }

    fn user_devices(&self, iss: &str, sub: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let names: Vec<String> =
            self.query(redis::cmd("SMEMBERS").arg(format!("{PREFIX}u:{iss}\n{sub}")))?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> =
            self.query(redis::cmd("HMGET").arg(format!("{PREFIX}d")).arg(&names))?;
        let mut out: Vec<DeviceRecord> = self
            .records(values.into_iter().flatten().collect())
            .into_iter()
            .filter(|r| r.revoked.is_none())
            .collect();
        out.sort_by(|a, b| (a.created, &a.username).cmp(&(b.created, &b.username)));
        Ok(out)
    }

    fn issue(&self, req: &IssueRequest) -> Result<IssueOutcome, StoreError> {
        let request = json!({
            "iss": req.iss, "sub": req.sub, "device_id": req.device_id, "aor": req.aor,
            "realm": req.realm, "new_username": req.new_username, "kid": req.kid,
            "expires_at": req.expires_at, "name": req.name, "platform": req.platform,
            "now": req.now, "max_devices": req.max_devices,
        });
        // Absent, not null: the script tests fields with `if r.name`.
        let request = match request {
            Value::Object(mut m) => {
                m.retain(|_, v| !v.is_null());
                Value::Object(m).to_string()
            }
            other => other.to_string(),
        };
        let reply: Vec<String> = self.query(&Self::eval(ISSUE, &[PREFIX, &request, CHANNEL]))?;
        let record = || {
            reply
                .get(1)
                .and_then(|j| decode(j))
                .ok_or_else(|| backend("the issue script returned no record"))
        };
        match reply.first().map(String::as_str) {
            Some("taken") => Ok(IssueOutcome::AorTaken),
            Some("limit") => Ok(IssueOutcome::DeviceLimitReached),
            Some("renewed") => Ok(IssueOutcome::Renewed(record()?)),
            Some("created") => Ok(IssueOutcome::Created(record()?)),
            _ => Err(backend("unexpected reply of the issue script")),
        }
    }

    fn revoke_device(
        &self,
        iss: &str,
        sub: &str,
        device_id: &str,
        now: u64,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let now = now.to_string();
        let reply: Vec<String> = self.query(&Self::eval(
            REVOKE,
            &[PREFIX, CHANNEL, &now, "D", iss, sub, device_id],
        ))?;
        Ok(self.records(reply).into_iter().next())
    }

    fn revoke_aor(&self, aor: &str, now: u64) -> Result<Vec<DeviceRecord>, StoreError> {
        let now = now.to_string();
        let reply: Vec<String> =
            self.query(&Self::eval(REVOKE, &[PREFIX, CHANNEL, &now, "A", aor]))?;
        Ok(self.records(reply))
    }

    fn aor_revoked_before(&self, aor: &str) -> Result<Option<u64>, StoreError> {
        self.query(redis::cmd("HGET").arg(format!("{PREFIX}rb")).arg(aor))
    }

    fn record_register(&self, username: &str, gen: u32, at: u64) -> Result<(), StoreError> {
        let (gen, at) = (gen.to_string(), at.to_string());
        let _: i64 = self.query(&Self::eval(
            RECORD_REGISTER,
            &[username, &gen, &at, CHANNEL],
        ))?;
        Ok(())
    }

    fn device(&self, username: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let j: Option<String> =
            self.query(redis::cmd("HGET").arg(format!("{PREFIX}d")).arg(username))?;
        Ok(j.and_then(|j| decode(&j)))
    }

    fn ping(&self) -> Result<(), StoreError> {
        let _: Option<String> = self.query(redis::cmd("HGET").arg(format!("{PREFIX}d")).arg(""))?;
        Ok(())
    }
}

/// Subscribes to [`CHANNEL`] on a thread of its own and calls `changed(username)` for every
/// record change any node makes, and `resync()` after every (re)subscription (messages sent
/// while this node was not subscribed are lost: the caller re-reads what it holds). Stops
/// when `stop` is set (checked every `response_timeout`). On a cluster, any node relays every
/// publish, so the first URL that answers is enough.
pub fn subscribe(
    settings: RedisSettings,
    stop: Arc<AtomicBool>,
    changed: impl Fn(String) + Send + 'static,
    resync: impl Fn() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    subscribe_to(settings, CHANNEL, stop, changed, resync)
}

/// [`subscribe`] to any `channel`: `message(payload)` for every message published on it,
/// `resync()` after every (re)subscription.
pub fn subscribe_to(
    settings: RedisSettings,
    channel: &'static str,
    stop: Arc<AtomicBool>,
    changed: impl Fn(String) + Send + 'static,
    resync: impl Fn() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut failures = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let mut conn = match single(&settings) {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, channel, "redis: cannot subscribe");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            let mut pubsub = conn.as_pubsub();
            if let Err(e) = pubsub.subscribe(channel) {
                tracing::warn!(error = %e, channel, "redis: SUBSCRIBE failed");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            failures = 0;
            resync();
            while !stop.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        if let Ok(username) = msg.get_payload::<String>() {
                            changed(username);
                        }
                    }
                    Err(e) if e.is_timeout() => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, channel, "redis: subscription lost, resubscribing");
                        break;
                    }
                }
            }
        }
    })
}
