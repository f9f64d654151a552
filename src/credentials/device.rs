//! Per-device credentials from the token API: the key ring that derives passwords, the
//! username generator, and the in-memory index of active device records that the registrar
//! checks on every REGISTER (no I/O on that path).
//!
//! `password = base64url(HMAC-SHA256(K[kid], "sipward/v1|" realm "|" username "|" gen "|"
//! expires_at))` cut to 22 characters (about 128 bits), with `expires_at` in decimal Unix
//! seconds. The index holds each generation's key id and expiry, and caches the HA1 per
//! algorithm once derived; it never holds a password, and the durable store holds neither.
//!
//! It must not touch the store or the location service: the API updates both and then this
//! index; REGISTER successes leave here as events on a bounded channel.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::{Algorithm, DummyHa1s, Ha1};
use crate::config::Secret;
use crate::store::{DeviceRecord, DeviceStore, Generation};

/// Every device username starts with this; static accounts may not (config).
pub const DEVICE_PREFIX: &str = "d-";
/// Random base32 characters after the prefix (80 bits).
pub const USERNAME_RANDOM_CHARS: usize = 16;
/// Characters of the base64url HMAC kept as the password (132 bits).
pub const PASSWORD_CHARS: usize = 22;
/// REGISTER successes queued for the store; more are dropped (only `last_register` and the
/// early end of the previous generation are lost, both harmless).
pub const REGISTER_EVENT_QUEUE: usize = 1024;

/// The credential keys by id; the last one derives new credentials.
pub struct CredentialKeys {
    keys: Vec<(String, Secret)>,
}

impl CredentialKeys {
    /// `None`: one random key (`"random"`), so credentials die with the process.
    pub fn new(keys: Option<Vec<(String, Secret)>>) -> CredentialKeys {
        let keys = keys.filter(|k| !k.is_empty()).unwrap_or_else(|| {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            vec![("random".to_owned(), Secret::new(key.to_vec()))]
        });
        CredentialKeys { keys }
    }

    /// The id that new credentials are derived with.
    pub fn current_kid(&self) -> &str {
        self.keys.last().map(|(id, _)| id.as_str()).unwrap_or("")
    }

    /// The device password for one generation; `None` if `kid` is not (any more) configured.
    pub fn password(
        &self,
        kid: &str,
        realm: &str,
        username: &str,
        gen: u32,
        expires_at: u64,
    ) -> Option<String> {
        let (_, key) = self.keys.iter().find(|(id, _)| id == kid)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).ok()?;
        mac.update(format!("sipward/v1|{realm}|{username}|{gen}|{expires_at}").as_bytes());
        let mut text =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        text.truncate(PASSWORD_CHARS);
        Some(text)
    }
}

impl std::fmt::Debug for CredentialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("CredentialKeys").field("ids", &ids).finish()
    }
}

/// A fresh device username: `d-` and 16 random base32 characters (lowercase, digits 2-7).
pub fn new_username() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; USERNAME_RANDOM_CHARS];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let mut out = String::with_capacity(DEVICE_PREFIX.len() + USERNAME_RANDOM_CHARS);
    out.push_str(DEVICE_PREFIX);
    out.extend(bytes.iter().map(|b| ALPHABET[usize::from(b & 31)] as char));
    out
}

/// One generation in the index, with its HA1s derived on first use.
#[derive(Debug)]
struct GenerationEntry {
    gen: u32,
    kid: String,
    expires_at: u64,
    ha1: [OnceLock<Option<Ha1>>; 3],
}

impl GenerationEntry {
    fn new(g: &Generation) -> Self {
        GenerationEntry {
            gen: g.gen,
            kid: g.kid.clone(),
            expires_at: g.expires_at,
            ha1: Default::default(),
        }
    }
}

/// An active device as the registrar sees it.
#[derive(Debug)]
pub struct DeviceEntry {
    pub username: Box<str>,
    /// `sip:user@domain`: the only AoR this credential may bind.
    pub aor: Arc<str>,
    pub realm: Box<str>,
    current: GenerationEntry,
    previous: Option<GenerationEntry>,
}

/// What a Digest check needs: two HA1s to verify against (current and previous generation,
/// or dummies), and, if the username is a usable device, its entry.
pub struct Candidates {
    pub ha1: [Ha1; 2],
    /// Generation of each candidate; `None` for a dummy.
    pub generations: [Option<(u32, u64)>; 2],
    pub entry: Option<Arc<DeviceEntry>>,
}

/// A REGISTER that succeeded with a device credential.
#[derive(Debug, Clone)]
pub struct RegisterEvent {
    pub username: Box<str>,
    pub gen: u32,
    pub at: u64,
}

/// The registrar's index of active device records. Cheap `Clone` handle.
#[derive(Clone)]
pub struct DeviceIndex {
    inner: Arc<IndexInner>,
}

struct IndexInner {
    entries: DashMap<Box<str>, Arc<DeviceEntry>>,
    /// Active devices per AoR, so the proxy can tell that a user of the token API exists.
    aors: DashMap<Arc<str>, usize>,
    keys: CredentialKeys,
    events: tokio::sync::mpsc::Sender<RegisterEvent>,
    /// A store shared with other nodes, read on every lookup (`set_authority`).
    authority: OnceLock<Arc<dyn DeviceStore>>,
    /// Usernames known revoked, with the expiry of their last generation: a username is never
    /// issued again, so a record read before its revoke must not re-enter the index (a lookup
    /// racing the revoke). Purged once expired (an expired record cannot enter anyway).
    revoked: DashMap<Box<str>, u64>,
    /// Serialises index writes, so that "not revoked? then insert" cannot interleave with
    /// "mark revoked, then remove". Lookups do not take it.
    writes: std::sync::Mutex<()>,
}

impl DeviceIndex {
    pub fn new(keys: CredentialKeys) -> (DeviceIndex, tokio::sync::mpsc::Receiver<RegisterEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(REGISTER_EVENT_QUEUE);
        (
            DeviceIndex {
                inner: Arc::new(IndexInner {
                    entries: DashMap::new(),
                    aors: DashMap::new(),
                    keys,
                    events: tx,
                    authority: OnceLock::new(),
                    revoked: DashMap::new(),
                    writes: std::sync::Mutex::new(()),
                }),
            },
            rx,
        )
    }

    pub fn keys(&self) -> &CredentialKeys {
        &self.inner.keys
    }

    /// Makes `store` the authority: every lookup of a device credential (`candidates`) reads
    /// its record from `store` first (one blocking round trip), so that a device created or
    /// revoked at another node is seen at once. A read that fails leaves the index as it was.
    /// Used with `registrar.persistence = "redis"`; set once.
    pub fn set_authority(&self, store: Arc<dyn DeviceStore>) {
        let _ = self.inner.authority.set(store);
    }

    /// Brings the index in line with the store's `record` of `username` (`None`: unknown):
    /// a revoked record is marked revoked for good; an unchanged one keeps its entry (and its
    /// cached HA1s). Returns whether the username was revoked by this call.
    pub fn refresh(&self, username: &str, record: Option<&DeviceRecord>, now: u64) -> bool {
        match record {
            Some(r) if r.revoked.is_some() => self.revoke_record(r),
            Some(r) => {
                let same = self.inner.entries.get(username).is_some_and(|e| {
                    e.current.gen == r.current.gen
                        && e.current.expires_at == r.current.expires_at
                        && *e.aor == *r.aor
                        && e.previous.as_ref().map(|p| p.gen)
                            == r.previous
                                .as_ref()
                                .filter(|p| p.expires_at > now)
                                .map(|p| p.gen)
                });
                if !same {
                    self.upsert(r, now);
                }
                false
            }
            None => {
                self.remove(username);
                false
            }
        }
    }

    /// Adds or replaces a record (after the store has it); revoked or expired records are
    /// removed instead, and a username once revoked is never added again.
    pub fn upsert(&self, record: &DeviceRecord, now: u64) {
        let _writes = self.inner.writes.lock().unwrap_or_else(|e| e.into_inner());
        if !record.is_active(now) || self.inner.revoked.contains_key(record.username.as_str()) {
            self.remove(&record.username);
            return;
        }
        let previous = record
            .previous
            .as_ref()
            .filter(|p| p.expires_at > now)
            .map(GenerationEntry::new);
        let entry = DeviceEntry {
            username: record.username.as_str().into(),
            aor: record.aor.as_str().into(),
            realm: record.realm.as_str().into(),
            current: GenerationEntry::new(&record.current),
            previous,
        };
        let aor = entry.aor.clone();
        let replaced = self
            .inner
            .entries
            .insert(record.username.as_str().into(), Arc::new(entry));
        if let Some(old) = replaced {
            self.inner.forget_aor(&old.aor);
        }
        *self.inner.aors.entry(aor).or_insert(0) += 1;
    }

    pub fn remove(&self, username: &str) -> bool {
        match self.inner.entries.remove(username) {
            Some((_, old)) => {
                self.inner.forget_aor(&old.aor);
                true
            }
            None => false,
        }
    }

    /// Whether some active device owns `aor` (`sip:user@domain`).
    pub fn has_aor(&self, aor: &str) -> bool {
        self.inner.aors.contains_key(aor)
    }

    /// Whether `username` is an active device: false once it is revoked or purged. The
    /// registrar asks again under the AoR lock before applying a REGISTER
    /// (`registrar::Credential`).
    pub fn is_active(&self, username: &str) -> bool {
        self.inner.entries.contains_key(username)
    }

    /// Removes a revoked device. Remove its bindings only after this returns
    /// (`Location::remove_credential`), so that no REGISTER verified with it can store one
    /// afterwards.
    pub fn revoke(&self, username: &str) -> bool {
        self.remove(username)
    }

    /// [`DeviceIndex::revoke`] that also remembers the username as revoked until its last
    /// generation expires, so that no record of it read earlier (another node's lookup racing
    /// the revoke) can bring it back. Returns whether it was in the index.
    pub fn revoke_record(&self, record: &DeviceRecord) -> bool {
        let _writes = self.inner.writes.lock().unwrap_or_else(|e| e.into_inner());
        let until = record
            .previous
            .as_ref()
            .map_or(0, |p| p.expires_at)
            .max(record.current.expires_at);
        self.inner
            .revoked
            .insert(record.username.as_str().into(), until);
        self.remove(&record.username)
    }

    /// Usernames in the index (a resync after a lost subscription walks them).
    pub fn usernames(&self) -> Vec<String> {
        self.inner
            .entries
            .iter()
            .map(|e| e.key().to_string())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// docs/token-api.md "The registrar's check for a device credential": the record must exist,
    /// be unrevoked (revoked ones are not in the index), unexpired, in `realm`, and own
    /// `expected_aor`; then the HA1 of each live generation for `algorithm`. Anything else
    /// yields dummies, so the caller runs the same verification either way.
    pub fn candidates(
        &self,
        username: &str,
        realm: &str,
        expected_aor: Option<&str>,
        algorithm: Algorithm,
        now: u64,
        dummy: &DummyHa1s,
    ) -> Candidates {
        let fallback = *dummy.get(algorithm);
        if let Some(store) = self.inner.authority.get() {
            match store.device(username) {
                Ok(record) => {
                    self.refresh(username, record.as_ref(), now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "device store: reading a device record failed; the last known one is used");
                }
            }
        }
        let entry = self
            .inner
            .entries
            .get(username)
            .map(|e| e.value().clone())
            .filter(|e| {
                e.realm.eq_ignore_ascii_case(realm)
                    && expected_aor.is_some_and(|aor| aor == &*e.aor)
            });
        let mut out = Candidates {
            ha1: [fallback, fallback],
            generations: [None, None],
            entry: None,
        };
        let Some(entry) = entry else {
            return out;
        };
        let gens = [Some(&entry.current), entry.previous.as_ref()];
        let mut usable = false;
        for (slot, generation) in gens.into_iter().enumerate() {
            let Some(g) = generation.filter(|g| g.expires_at > now) else {
                continue;
            };
            let cell = &g.ha1[slot_of(algorithm)];
            let ha1 = cell.get_or_init(|| {
                self.inner
                    .keys
                    .password(&g.kid, &entry.realm, &entry.username, g.gen, g.expires_at)
                    .map(|pw| Ha1::from_password(algorithm, &entry.username, &entry.realm, &pw))
            });
            if let Some(ha1) = ha1 {
                out.ha1[slot] = *ha1;
                out.generations[slot] = Some((g.gen, g.expires_at));
                usable = true;
            }
        }
        if usable {
            out.entry = Some(entry);
        }
        out
    }

    /// After a 200 to a REGISTER with generation `gen`: the first REGISTER with the current
    /// generation ends the previous one; the store learns it through the event queue.
    pub fn registered(&self, entry: &DeviceEntry, gen: u32, now: u64) {
        if gen == entry.current.gen && entry.previous.is_some() {
            if let Some(mut slot) = self.inner.entries.get_mut(&*entry.username) {
                let e = slot.value();
                if e.current.gen == gen {
                    let replaced = DeviceEntry {
                        username: e.username.clone(),
                        aor: e.aor.clone(),
                        realm: e.realm.clone(),
                        current: GenerationEntry::new(&Generation {
                            gen: e.current.gen,
                            kid: e.current.kid.clone(),
                            expires_at: e.current.expires_at,
                        }),
                        previous: None,
                    };
                    *slot.value_mut() = Arc::new(replaced);
                }
            }
        }
        let _ = self.inner.events.try_send(RegisterEvent {
            username: entry.username.clone(),
            gen,
            at: now,
        });
    }

    /// Drops entries whose every generation has expired; returns how many.
    pub fn purge(&self, now: u64) -> usize {
        self.inner.revoked.retain(|_, until| *until > now);
        let before = self.inner.entries.len();
        let inner = &self.inner;
        inner.entries.retain(|_, e| {
            let live = e.current.expires_at > now
                || e.previous.as_ref().is_some_and(|p| p.expires_at > now);
            if !live {
                inner.forget_aor(&e.aor);
            }
            live
        });
        before.saturating_sub(self.inner.entries.len())
    }
}

impl IndexInner {
    fn forget_aor(&self, aor: &str) {
        if let dashmap::mapref::entry::Entry::Occupied(mut n) = self.aors.entry(aor.into()) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

fn slot_of(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Md5 => 0,
        Algorithm::Sha256 => 1,
        Algorithm::Sha512_256 => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CredentialKeys {
        CredentialKeys::new(Some(vec![
            ("old".into(), Secret::new(vec![1u8; 32])),
            ("new".into(), Secret::new(vec![2u8; 32])),
        ]))
    }

    #[test]
    fn usernames_are_prefixed_random_base32() {
        let a = new_username();
        let b = new_username();
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 + USERNAME_RANDOM_CHARS);
        assert!(a.starts_with("d-"));
        assert!(a[2..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
    }

    #[test]
    fn password_depends_on_every_input_and_the_key() {
        let k = keys();
        assert_eq!(k.current_kid(), "new");
        let p = k.password("new", "example.test", "d-x", 1, 100).unwrap();
        assert_eq!(p.len(), PASSWORD_CHARS);
        for other in [
            k.password("old", "example.test", "d-x", 1, 100),
            k.password("new", "example.org", "d-x", 1, 100),
            k.password("new", "example.test", "d-y", 1, 100),
            k.password("new", "example.test", "d-x", 2, 100),
            k.password("new", "example.test", "d-x", 1, 101),
        ] {
            assert_ne!(other.unwrap(), p);
        }
        assert!(k.password("gone", "example.test", "d-x", 1, 100).is_none());
        // Fixed vector, so a change of format is noticed: HMAC-SHA256 with key 0x02 * 32.
        let mut mac = Hmac::<Sha256>::new_from_slice(&[2u8; 32]).unwrap();
        mac.update(b"sipward/v1|example.test|d-x|1|100");
        let expected =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(p, expected[..22]);
    }

    fn record(now: u64) -> DeviceRecord {
        DeviceRecord {
            username: "d-abc".into(),
            device_id: "laptop".into(),
            iss: "https://idp".into(),
            sub: "s".into(),
            aor: "sip:alice@example.test".into(),
            realm: "example.test".into(),
            current: Generation {
                gen: 2,
                kid: "new".into(),
                expires_at: now + 100,
            },
            previous: Some(Generation {
                gen: 1,
                kid: "old".into(),
                expires_at: now + 50,
            }),
            created: now,
            revoked: None,
            last_register: None,
            name: None,
            platform: None,
        }
    }

    #[test]
    fn candidates_follow_the_registrar_check() {
        let (index, _rx) = DeviceIndex::new(keys());
        let dummy = DummyHa1s::new();
        let now = 1000;
        index.upsert(&record(now), now);
        let aor = Some("sip:alice@example.test");
        let c = index.candidates("d-abc", "example.test", aor, Algorithm::Sha256, now, &dummy);
        assert!(c.entry.is_some());
        assert_eq!(c.generations, [Some((2, now + 100)), Some((1, now + 50))]);
        assert!(index.has_aor("sip:alice@example.test"));
        index.upsert(&record(now), now);
        assert_eq!(
            index.inner.aors.get("sip:alice@example.test").map(|n| *n),
            Some(1)
        );
        for (user, realm, aor, at) in [
            ("d-zzz", "example.test", aor, now),
            ("d-abc", "example.org", aor, now),
            ("d-abc", "example.test", Some("sip:bob@example.test"), now),
            ("d-abc", "example.test", None, now),
            ("d-abc", "example.test", aor, now + 100),
        ] {
            let c = index.candidates(user, realm, aor, Algorithm::Md5, at, &dummy);
            assert!(c.entry.is_none(), "{user} {realm} {aor:?} {at}");
            assert_eq!(c.generations, [None, None]);
        }
        // The previous generation alone after the current one... cannot happen; after the
        // previous expires only the current is offered.
        let c = index.candidates(
            "d-abc",
            "example.test",
            aor,
            Algorithm::Md5,
            now + 60,
            &dummy,
        );
        assert_eq!(c.generations, [Some((2, now + 100)), None]);
        let entry = c.entry.unwrap();
        index.registered(&entry, 2, now);
        let c = index.candidates("d-abc", "example.test", aor, Algorithm::Md5, now, &dummy);
        assert_eq!(
            c.generations[1], None,
            "the first REGISTER with gen 2 ends gen 1"
        );
        assert!(index.is_active("d-abc"));
        assert!(index.revoke("d-abc"));
        assert!(!index.is_active("d-abc"));
        assert!(!index.revoke("d-abc"), "a second revoke finds nothing");
        index.upsert(&record(now), now);
        assert_eq!(index.purge(now + 100), 1);
        assert!(index.is_empty());
        assert!(!index.has_aor("sip:alice@example.test"));
    }
}
