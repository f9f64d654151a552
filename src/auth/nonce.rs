//! Stateless Digest nonces: minted from a timestamp and an HMAC, checked without any table, so a
//! flood of challenges costs no memory and a nonce can be checked before the user lookup (a
//! `stale=true` answer then says nothing about whether the user exists, docs/testing.md A5/E3).
//!
//! This file owns the nonce format, the secret keys and their rotation. It must not track `nc`
//! or first use (that is `super::replay`), and it never reads the clock: `now` is a parameter.
//!
//! Format: base64url without padding of `timestamp (u64 BE) | key id (u8) | sequence (u64 BE) |
//! MAC[..16]` where
//! `MAC = HMAC-SHA256(key, timestamp | key id | sequence | len(realm) u32 BE | realm | source)`.
//! The sequence number makes every challenge unique, so two clients challenged in the same
//! second never share a nonce, and it is where the replay table keeps the nonce's state
//! (`super::replay` explains why that needs no room per nonce). It is [`NonceSequence`]'s next
//! number: this process's random 16-bit instance in the top bits, a counter below, so numbers
//! only grow within a process and another process's nonces are told apart. Always
//! [`NONCE_LEN`] characters. Memory: at most [`MAX_NONCE_KEYS`] keys of about 200 bytes each
//! (the HMAC state is precomputed per key).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AuthError;

/// Length in characters of every nonce we mint: 33 bytes in unpadded base64.
pub const NONCE_LEN: usize = 44;

/// Most keys accepted at once (the newest plus older ones kept during a rotation).
pub const MAX_NONCE_KEYS: usize = 8;

/// Default time a nonce stays usable: Kamailio's `nonce_expire`.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Default tolerance for a timestamp in the future (clock steps between cluster nodes):
/// Kamailio's `nonce_auth_max_drift`.
pub const DEFAULT_NONCE_MAX_DRIFT: Duration = Duration::from_secs(3);

const RAW_LEN: usize = 8 + 1 + SEQUENCE_LEN + MAC_LEN;
const SEQUENCE_LEN: usize = 8;
const MAC_LEN: usize = 16;
/// Bits of a sequence number that count; the bits above hold the instance.
const COUNTER_BITS: u32 = 48;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC keys, newest first. The newest mints; any of them verifies, so a key can be rotated
/// in without invalidating nonces already handed out. A cluster must share them.
#[derive(Clone)]
pub struct NonceKeys {
    /// Each key's HMAC state with the key already absorbed; cloned per use.
    keys: Vec<(u8, HmacSha256)>,
}

impl NonceKeys {
    /// One random key (id 0), for a single process: nonces die with the process, as with
    /// Kamailio's default random `secret`.
    pub fn random() -> NonceKeys {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        NonceKeys {
            keys: vec![(0, hmac_for(&key))],
        }
    }

    /// Configured keys, newest first. Refuses an empty list, more than [`MAX_NONCE_KEYS`] keys,
    /// or a repeated key id.
    pub fn from_bytes(keys: &[(u8, [u8; 32])]) -> Result<NonceKeys, AuthError> {
        if keys.is_empty() || keys.len() > MAX_NONCE_KEYS {
            return Err(AuthError::NonceKeyCount {
                got: keys.len(),
                max: MAX_NONCE_KEYS,
            });
        }
        for (i, (id, _)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|(other, _)| other == id) {
                return Err(AuthError::DuplicateNonceKeyId(*id));
            }
        }
        Ok(NonceKeys {
            keys: keys.iter().map(|(id, key)| (*id, hmac_for(key))).collect(),
        })
    }

    fn newest(&self) -> (u8, &HmacSha256) {
        // Both constructors guarantee at least one key; index 0 is the newest.
        let (id, mac) = &self.keys[0];
        (*id, mac)
    }

    fn by_id(&self, id: u8) -> Option<&HmacSha256> {
        self.keys
            .iter()
            .find(|(kid, _)| *kid == id)
            .map(|(_, mac)| mac)
    }
}

/// HMAC pads a key shorter than the block size with zeros, so padding a 32-byte key to SHA-256's
/// 64-byte block ourselves gives the same MAC through the infallible constructor.
fn hmac_for(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <HmacSha256 as KeyInit>::new(&block.into())
}

impl fmt::Debug for NonceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("NonceKeys")
            .field("key_ids", &ids)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Where the sequence numbers of one process's nonces come from: a random 16-bit instance
/// above a 48-bit counter that starts at 1. Numbers grow strictly in mint order (2^48 nonces
/// outlast 89 years at 100 000 challenges per second), are never 0, and another process (a
/// restart, another cluster node sharing the keys) has another instance with probability
/// 65535/65536.
#[derive(Debug)]
pub struct NonceSequence {
    /// The instance, already shifted into the top bits.
    instance: u64,
    next: AtomicU64,
}

impl NonceSequence {
    fn random() -> NonceSequence {
        NonceSequence::with_instance(rand::random::<u16>())
    }

    fn with_instance(instance: u16) -> NonceSequence {
        NonceSequence {
            instance: u64::from(instance) << COUNTER_BITS,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> u64 {
        // Relaxed: only uniqueness and per-process growth matter, which fetch_add gives.
        self.instance | (self.next.fetch_add(1, Ordering::Relaxed) & COUNTER_MASK)
    }

    /// Whether `sequence` was minted by this process.
    pub fn is_ours(&self, sequence: u64) -> bool {
        sequence & !COUNTER_MASK == self.instance
    }
}

/// The sequence number inside a nonce in our format (see the file header), whoever minted
/// it; `None` if it is not one. Only meaningful after [`NonceIssuer::check`] said `Valid`:
/// the MAC covers the number, so it cannot be altered.
pub fn nonce_sequence(nonce: &str) -> Option<u64> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let mut raw = [0u8; RAW_LEN + 2];
    match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
        Ok(RAW_LEN) => {}
        _ => return None,
    }
    let mut sequence = [0u8; SEQUENCE_LEN];
    sequence.copy_from_slice(&raw[9..9 + SEQUENCE_LEN]);
    Some(u64::from_be_bytes(sequence))
}

/// Time limits on a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceConfig {
    /// A nonce older than this is [`NonceStatus::Stale`]. Default [`DEFAULT_NONCE_LIFETIME`].
    pub lifetime: Duration,
    /// A nonce issued further than this in the future is [`NonceStatus::Invalid`].
    /// Default [`DEFAULT_NONCE_MAX_DRIFT`].
    pub max_drift: Duration,
}

impl Default for NonceConfig {
    fn default() -> Self {
        NonceConfig {
            lifetime: DEFAULT_NONCE_LIFETIME,
            max_drift: DEFAULT_NONCE_MAX_DRIFT,
        }
    }
}

/// What [`NonceIssuer::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Ours, for this realm and source, and fresh.
    Valid {
        /// Unix seconds at which it was minted.
        issued_at: u64,
    },
    /// Ours but older than the lifetime: challenge again with `stale=true`.
    Stale,
    /// Not ours: malformed, unknown key id, bad MAC (another realm, source or server), or from
    /// the future. Challenge again without `stale`.
    Invalid,
}

/// Mints and checks nonces. A cheap `Clone` handle; its only mutable state is the sequence
/// counter.
#[derive(Debug, Clone)]
pub struct NonceIssuer {
    keys: NonceKeys,
    config: NonceConfig,
    sequence: Arc<NonceSequence>,
}

impl NonceIssuer {
    /// An issuer with a random instance (see [`NonceSequence`]).
    pub fn new(keys: NonceKeys, config: NonceConfig) -> NonceIssuer {
        NonceIssuer {
            keys,
            config,
            sequence: Arc::new(NonceSequence::random()),
        }
    }

    /// An issuer with a chosen instance, for tests that need two processes.
    #[cfg(test)]
    pub(crate) fn with_instance(
        keys: NonceKeys,
        config: NonceConfig,
        instance: u16,
    ) -> NonceIssuer {
        NonceIssuer {
            keys,
            config,
            sequence: Arc::new(NonceSequence::with_instance(instance)),
        }
    }

    pub fn config(&self) -> &NonceConfig {
        &self.config
    }

    /// The sequence this issuer numbers its nonces from (the replay table keeps it).
    pub fn sequence(&self) -> Arc<NonceSequence> {
        Arc::clone(&self.sequence)
    }

    /// A new nonce bound to `realm` and, if given, the client's address, always [`NONCE_LEN`]
    /// characters long whoever asks.
    pub fn mint(&self, realm: &str, source: Option<IpAddr>, now_unix_secs: u64) -> String {
        let (key_id, key) = self.keys.newest();
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&now_unix_secs.to_be_bytes());
        raw[8] = key_id;
        let sequence = self.sequence.next().to_be_bytes();
        raw[9..9 + SEQUENCE_LEN].copy_from_slice(&sequence);
        let mac = mac(key, now_unix_secs, key_id, &sequence, realm, source);
        raw[9 + SEQUENCE_LEN..].copy_from_slice(&mac[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce from an `Authorization` header. Needs no user, so it runs first.
    pub fn check(
        &self,
        nonce: &str,
        realm: &str,
        source: Option<IpAddr>,
        now_unix_secs: u64,
    ) -> NonceStatus {
        if nonce.len() != NONCE_LEN {
            return NonceStatus::Invalid;
        }
        // The strict engine rejects padding and non-zero trailing bits, so each nonce has exactly
        // one spelling: the replay table, keyed by the string, cannot be dodged by re-encoding.
        let mut raw = [0u8; RAW_LEN + 2];
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return NonceStatus::Invalid,
        }
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&raw[..8]);
        let issued_at = u64::from_be_bytes(timestamp);
        let key_id = raw[8];
        let Some(key) = self.keys.by_id(key_id) else {
            return NonceStatus::Invalid;
        };
        let mut sequence = [0u8; SEQUENCE_LEN];
        sequence.copy_from_slice(&raw[9..9 + SEQUENCE_LEN]);
        let expected = mac(key, issued_at, key_id, &sequence, realm, source);
        if !bool::from(expected[..MAC_LEN].ct_eq(&raw[9 + SEQUENCE_LEN..RAW_LEN])) {
            return NonceStatus::Invalid;
        }
        if issued_at > now_unix_secs.saturating_add(self.config.max_drift.as_secs()) {
            return NonceStatus::Invalid;
        }
        if now_unix_secs.saturating_sub(issued_at) > self.config.lifetime.as_secs() {
            return NonceStatus::Stale;
        }
        NonceStatus::Valid { issued_at }
    }
}

fn mac(
    key: &HmacSha256,
    timestamp: u64,
    key_id: u8,
    sequence: &[u8; SEQUENCE_LEN],
    realm: &str,
    source: Option<IpAddr>,
) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(&timestamp.to_be_bytes());
    mac.update(&[key_id]);
    mac.update(sequence);
    // Realm length first so that realm and source can never be confused.
    let realm_len = u32::try_from(realm.len()).unwrap_or(u32::MAX);
    mac.update(&realm_len.to_be_bytes());
    mac.update(realm.as_bytes());
    // `::ffff:a.b.c.d` and `a.b.c.d` are the same client on a dual-stack socket.
    match source.map(|ip| ip.to_canonical()) {
        None => mac.update(&[0]),
        Some(IpAddr::V4(v4)) => {
            mac.update(&[4]);
            mac.update(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            mac.update(&[6]);
            mac.update(&v6.octets());
        }
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "sip.example.com";
    const T0: u64 = 1_700_000_000;

    fn source() -> Option<IpAddr> {
        Some("192.0.2.7".parse().expect("literal"))
    }

    fn issuer() -> NonceIssuer {
        let keys = NonceKeys::from_bytes(&[(1, [7; 32])]).expect("one key");
        NonceIssuer::new(keys, NonceConfig::default())
    }

    #[test]
    fn nonces_minted_in_the_same_second_differ_and_all_verify() {
        let issuer = issuer();
        let a = issuer.mint("example.com", None, 1_000);
        let b = issuer.mint("example.com", None, 1_000);
        assert_ne!(a, b, "two clients must never share a nonce");
        assert_eq!((a.len(), b.len()), (NONCE_LEN, NONCE_LEN));
        for n in [a, b] {
            assert!(matches!(
                issuer.check(&n, "example.com", None, 1_000),
                NonceStatus::Valid { .. }
            ));
        }
    }

    #[test]
    fn sequence_numbers_grow_and_name_their_instance() {
        let a = NonceIssuer::with_instance(NonceKeys::random(), NonceConfig::default(), 7);
        let b = NonceIssuer::with_instance(NonceKeys::random(), NonceConfig::default(), 8);
        let first = nonce_sequence(&a.mint(REALM, None, T0)).expect("our format");
        let second = nonce_sequence(&a.mint(REALM, None, T0)).expect("our format");
        assert!(second > first && first > 0);
        assert!(a.sequence().is_ours(first) && a.sequence().is_ours(second));
        let theirs = nonce_sequence(&b.mint(REALM, None, T0)).expect("our format");
        assert!(!a.sequence().is_ours(theirs));
        assert!(b.sequence().is_ours(theirs));
        for bad in ["", "nonce", &"A".repeat(NONCE_LEN + 1)] {
            assert_eq!(nonce_sequence(bad), None, "{bad}");
        }
    }

    #[test]
    fn padded_key_gives_the_same_mac_as_new_from_slice() {
        let key = [0x5a; 32];
        let mut a = hmac_for(&key);
        let mut b = <HmacSha256 as Mac>::new_from_slice(&key).expect("any length");
        a.update(b"x");
        b.update(b"x");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }

    #[test]
    fn fresh_nonce_is_valid_and_fixed_length() {
        let issuer = issuer();
        let nonce = issuer.mint(REALM, source(), T0);
        assert_eq!(nonce.len(), NONCE_LEN);
        let v6 = issuer.mint("x", Some("2001:db8::1".parse().expect("literal")), u64::MAX);
        assert_eq!(v6.len(), NONCE_LEN);
        assert_eq!(
            issuer.check(&nonce, REALM, source(), T0 + 10),
            NonceStatus::Valid { issued_at: T0 }
        );
    }

    #[test]
    fn lifetime_boundary_then_stale() {
        let issuer = issuer();
        let nonce = issuer.mint(REALM, source(), T0);
        assert_eq!(
            issuer.check(&nonce, REALM, source(), T0 + 300),
            NonceStatus::Valid { issued_at: T0 }
        );
        assert_eq!(
            issuer.check(&nonce, REALM, source(), T0 + 301),
            NonceStatus::Stale
        );
    }

    #[test]
    fn drift_rule() {
        let issuer = issuer();
        let nonce = issuer.mint(REALM, source(), T0);
        assert_eq!(
            issuer.check(&nonce, REALM, source(), T0 - 3),
            NonceStatus::Valid { issued_at: T0 }
        );
        assert_eq!(
            issuer.check(&nonce, REALM, source(), T0 - 4),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn other_realm_source_or_server_is_invalid() {
        let issuer = issuer();
        let nonce = issuer.mint("other.example.com", source(), T0);
        assert_eq!(
            issuer.check(&nonce, REALM, source(), T0),
            NonceStatus::Invalid
        );
        let nonce = issuer.mint(REALM, source(), T0);
        let elsewhere = Some("192.0.2.8".parse().expect("literal"));
        assert_eq!(
            issuer.check(&nonce, REALM, elsewhere, T0),
            NonceStatus::Invalid
        );
        assert_eq!(issuer.check(&nonce, REALM, None, T0), NonceStatus::Invalid);
        let other_server = NonceIssuer::new(NonceKeys::random(), NonceConfig::default());
        assert_eq!(
            other_server.check(&nonce, REALM, source(), T0),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn ipv4_mapped_source_is_the_same_client() {
        let issuer = issuer();
        let nonce = issuer.mint(REALM, source(), T0);
        let mapped = Some("::ffff:192.0.2.7".parse().expect("literal"));
        assert_eq!(
            issuer.check(&nonce, REALM, mapped, T0),
            NonceStatus::Valid { issued_at: T0 }
        );
    }

    #[test]
    fn malformed_or_tampered_is_invalid() {
        let issuer = issuer();
        let nonce = issuer.mint(REALM, source(), T0);
        let mut tampered = nonce.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        // Same bytes, different spelling: flip the unused low bits of the last character.
        let last = nonce.as_bytes()[NONCE_LEN - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).expect("base64url");
        let respelled = format!(
            "{}{}",
            &nonce[..NONCE_LEN - 1],
            char::from(alphabet[index ^ 1])
        );
        for bad in [
            "",
            "nonce",
            &nonce[..NONCE_LEN - 1],
            &format!("{nonce}A"),
            &format!("{}=", &nonce[..NONCE_LEN - 1]),
            &nonce.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
            &tampered,
            &respelled,
            "ééééééééééééééééé",
        ] {
            assert_eq!(
                issuer.check(bad, REALM, source(), T0),
                NonceStatus::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_key_id_is_invalid() {
        let old = NonceIssuer::new(
            NonceKeys::from_bytes(&[(9, [7; 32])]).expect("one key"),
            NonceConfig::default(),
        );
        // Same key bytes, different id: the id is both checked and MACed.
        let nonce = old.mint(REALM, source(), T0);
        assert_eq!(
            issuer().check(&nonce, REALM, source(), T0),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn rotation_old_key_still_verifies_new_key_mints() {
        let before = issuer();
        let old_nonce = before.mint(REALM, source(), T0);
        let after = NonceIssuer::new(
            NonceKeys::from_bytes(&[(2, [8; 32]), (1, [7; 32])]).expect("two keys"),
            NonceConfig::default(),
        );
        assert_eq!(
            after.check(&old_nonce, REALM, source(), T0 + 1),
            NonceStatus::Valid { issued_at: T0 }
        );
        let new_nonce = after.mint(REALM, source(), T0 + 1);
        assert_eq!(
            before.check(&new_nonce, REALM, source(), T0 + 1),
            NonceStatus::Invalid
        );
        assert_eq!(
            after.check(&new_nonce, REALM, source(), T0 + 1),
            NonceStatus::Valid { issued_at: T0 + 1 }
        );
    }

    #[test]
    fn key_list_limits() {
        assert!(NonceKeys::from_bytes(&[]).is_err());
        assert!(NonceKeys::from_bytes(&[(1, [0; 32]), (1, [1; 32])]).is_err());
        let nine: Vec<(u8, [u8; 32])> = (0..9).map(|i| (i, [i; 32])).collect();
        assert!(NonceKeys::from_bytes(&nine).is_err());
        assert!(NonceKeys::from_bytes(&nine[..8]).is_ok());
    }

    #[test]
    fn debug_redacts_keys() {
        let shown = format!("{:?}", issuer());
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("7, 7"), "{shown}");
    }
}
