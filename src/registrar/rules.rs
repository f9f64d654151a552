//! RFC 3261 §10.3 steps 6–7 as a pure decision: given an AoR's current bindings and one
//! REGISTER, either refuse the whole request or produce a [`Plan`] whose application cannot
//! fail.
//!
//! Everything is validated before anything changes, so a request is never partially applied.
//! Contacts are processed in order, as if each were its own REGISTER, but atomically. This
//! module reads no clock, holds no lock and knows nothing of the shared map; the only side
//! effect is drawing the expiry jitter from the thread RNG.

use std::cmp::{max, min};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::binding::{Aor, Binding, BindingText, FlowId, MatchKey, TextParts, Transport};

/// Most bytes of text one binding may hold (URI, key, params, instance, Call-ID, User-Agent).
pub const MAX_BINDING_TEXT: usize = 4096;
/// Most bytes of Path header values stored with a REGISTER's bindings.
pub const MAX_PATH_TEXT: usize = 4096;
/// A longer User-Agent is truncated (it is informational only).
pub const MAX_USER_AGENT: usize = 256;

/// One Contact of a REGISTER, already parsed.
#[derive(Clone, Copy, Debug)]
pub struct ContactInput<'a> {
    /// The contact URI text exactly as received (returned byte for byte later).
    pub uri: &'a str,
    /// Comparison key computed by the parser per RFC 3261 §19.1.4; equal keys = same contact.
    pub uri_key: &'a str,
    /// The contact's header params as written, without `expires`.
    pub params: &'a str,
    /// The `expires` param, saturated.
    pub expires: Option<u64>,
    /// q-value in thousandths, 0..=1000.
    pub q: Option<u16>,
    /// The `+sip.instance` value, compared byte for byte.
    pub instance: Option<&'a str>,
    pub reg_id: Option<u32>,
}

/// One authenticated, authorised REGISTER, already parsed.
#[derive(Clone, Copy, Debug)]
pub struct RegisterInput<'a> {
    pub aor: &'a Aor,
    pub call_id: &'a str,
    pub cseq: u32,
    /// `Contact: *`.
    pub star: bool,
    pub contacts: &'a [ContactInput<'a>],
    /// The Expires header, saturated.
    pub expires_header: Option<u64>,
    /// Path header values, stored only if `path_supported`.
    pub path: &'a [&'a str],
    pub path_supported: bool,
    pub source: SocketAddr,
    pub transport: Transport,
    pub flow: Option<FlowId>,
    pub user_agent: Option<&'a str>,
    /// E.g. the credential's remaining lifetime: the granted expiry never exceeds it.
    pub max_expires_cap: Option<u64>,
    /// The revocable credential (a token API device) the REGISTER was verified with.
    pub credential: Option<Credential<'a>>,
}

/// A revocable credential behind a REGISTER. Its name is stored with every binding the
/// REGISTER adds or refreshes, and `is_live` is asked again while the AoR is locked, just
/// before the change is applied.
///
/// Why no revoke can be overtaken: a revoke first makes `is_live` false (removes the device
/// from the index), then removes the credential's bindings with
/// [`Location::remove_credential`](super::Location::remove_credential), which takes the same
/// AoR lock. A REGISTER that takes the lock before that removal is removed by it; one that
/// takes it after sees `is_live` false (the index change happened before the removal released
/// the lock) and is refused with [`RegisterError::CredentialRevoked`].
#[derive(Clone, Copy)]
pub struct Credential<'a> {
    pub name: &'a str,
    pub is_live: &'a (dyn Fn() -> bool + Sync),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .finish()
    }
}

/// Registrar limits and expiry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarPolicy {
    /// A non-zero expiry below this is refused with 423 and `Min-Expires`. Default 60.
    pub min_expires: u64,
    /// Longer requests are clamped to this, not refused. Default 3600.
    pub max_expires: u64,
    /// Used when neither the contact nor the request says. Default 3600.
    pub default_expires: u64,
    /// Most bindings per AoR; a REGISTER that would exceed it changes nothing. Default 10.
    /// Worst-case memory: `max_aors * max_bindings_per_aor` bindings of at most
    /// `MAX_BINDING_TEXT + MAX_PATH_TEXT` bytes of text each.
    pub max_bindings_per_aor: usize,
    /// When > 0, a refresh is granted up to this percent less (never below `min_expires`) so
    /// that phones registered together drift apart. Default 0. At most 50 (larger values act
    /// as 50).
    pub expiry_jitter_percent: u8,
    /// Most AoRs with bindings, across the process. Default 1 000 000.
    pub max_aors: usize,
}

impl Default for RegistrarPolicy {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 10,
            expiry_jitter_percent: 0,
            max_aors: 1_000_000,
        }
    }
}

/// An inconsistent [`RegistrarPolicy`], reported when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("min_expires must be at least 1 and at most max_expires")]
    MinExpires,
    #[error("max_expires must be at most {}", u32::MAX)]
    MaxExpires,
    #[error("default_expires must lie between min_expires and max_expires")]
    DefaultExpires,
    #[error("expiry_jitter_percent must be at most 50")]
    Jitter,
    #[error("max_bindings_per_aor and max_aors must be at least 1")]
    Limits,
}

impl RegistrarPolicy {
    /// Checks the policy is consistent. The registrar never panics on an inconsistent one, but
    /// its answers would surprise (e.g. every request refused with 423).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            return Err(PolicyError::MinExpires);
        }
        if self.max_expires > u64::from(u32::MAX) {
            return Err(PolicyError::MaxExpires);
        }
        if self.default_expires < self.min_expires || self.default_expires > self.max_expires {
            return Err(PolicyError::DefaultExpires);
        }
        if self.expiry_jitter_percent > 50 {
            return Err(PolicyError::Jitter);
        }
        if self.max_bindings_per_aor == 0 || self.max_aors == 0 {
            return Err(PolicyError::Limits);
        }
        Ok(())
    }
}

/// Why a REGISTER changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// `Contact: *` with other contacts or without `Expires: 0` (§10.3 step 6).
    #[error("Contact: * must be alone and come with Expires: 0")]
    InvalidStar,
    /// A non-zero expiry below the minimum (§10.3 step 7).
    #[error("expiry below the minimum of {min_expires} s")]
    IntervalTooBrief { min_expires: u64 },
    /// Same Call-ID as a stored binding with a CSeq not higher (§10.3 steps 6 and 7).
    #[error("CSeq not higher than the stored one for the same Call-ID")]
    OutOfOrder,
    /// The AoR would hold more than `max` bindings.
    #[error("more than {max} bindings for one AoR")]
    TooManyBindings { max: usize },
    /// The global AoR limit is reached.
    #[error("the location service is full")]
    Full,
    /// A contact's text or the Path values exceed [`MAX_BINDING_TEXT`] / [`MAX_PATH_TEXT`].
    #[error("contact or path too long to store")]
    TooLarge,
    /// `now + expiry` is not representable (an extreme `now`); an internal fault.
    #[error("expiry deadline out of range")]
    DeadlineOverflow,
    /// The REGISTER's credential was revoked after it verified and before the change could be
    /// applied; nothing was stored. Answered like any credential that does not verify.
    #[error("the credential was revoked")]
    CredentialRevoked,
    /// The durable store's write queue is full: nothing was applied; answered 503 with
    /// `Retry-After`, so the client tries again shortly.
    #[error("the location store's write queue is full")]
    StoreBusy,
}

impl RegisterError {
    /// The SIP status and reason phrase to answer with. `OutOfOrder` follows RFC 3261 and
    /// resiprocate (400); Kamailio answers 200 without change instead. `TooManyBindings`
    /// follows Kamailio (503 "Too Many Registered Contacts"). The 423 response must carry
    /// `Min-Expires`.
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            RegisterError::InvalidStar => (400, "Bad Request"),
            RegisterError::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            RegisterError::OutOfOrder => (400, "Bad Request"),
            RegisterError::TooManyBindings { .. } => (503, "Too Many Registered Contacts"),
            RegisterError::Full => (503, "Service Unavailable"),
            RegisterError::TooLarge => (400, "Bad Request"),
            RegisterError::DeadlineOverflow => (500, "Server Internal Error"),
            RegisterError::CredentialRevoked => (401, "Unauthorized"),
            RegisterError::StoreBusy => (503, "Service Unavailable"),
        }
    }
}

/// A new or refreshed binding, fully built so that applying it cannot fail.
#[derive(Debug)]
pub(super) struct Upsert {
    pub(super) text: BindingText,
    pub(super) q: Option<u16>,
    pub(super) reg_id: Option<u32>,
    pub(super) granted: u32,
    pub(super) deadline: Instant,
}

#[derive(Debug)]
pub(super) enum Change {
    Keep,
    Remove,
    Update(Upsert),
}

/// The fate of one binding: an existing live one (`existing` = its index) or a new one.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) existing: Option<usize>,
    pub(super) change: Change,
    /// Already changed by an earlier contact of this request: the Call-ID/CSeq rule was
    /// checked against the stored binding then and must not be checked against our own update.
    touched: bool,
}

/// What one REGISTER does to one AoR.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Indices of bindings already past their deadline: dropped silently.
    pub(super) expired: Vec<usize>,
    /// One slot per live existing binding, in order, then one per new binding.
    pub(super) slots: Vec<Slot>,
    /// The Path values to store with every binding written by this request.
    pub(super) path: Option<Arc<[Box<str>]>>,
}

impl Plan {
    /// Bindings the AoR holds once the plan is applied.
    pub(super) fn final_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !matches!(s.change, Change::Remove))
            .count()
    }

    /// Whether the AoR had live bindings before the request.
    pub(super) fn had_bindings(&self) -> bool {
        self.slots.iter().any(|s| s.existing.is_some())
    }
}

/// Decides what `input` does to `existing` (one AoR's stored bindings) at `now`.
pub(super) fn plan(
    existing: &[Binding],
    input: &RegisterInput<'_>,
    now: Instant,
    policy: &RegistrarPolicy,
) -> Result<Plan, RegisterError> {
    if input.star && (!input.contacts.is_empty() || input.expires_header != Some(0)) {
        return Err(RegisterError::InvalidStar);
    }
    let mut plan = Plan::default();
    for (i, b) in existing.iter().enumerate() {
        if b.is_live(now) {
            plan.slots.push(Slot {
                existing: Some(i),
                change: Change::Keep,
                touched: false,
            });
        } else {
            plan.expired.push(i);
        }
    }

    if input.star {
        // §10.3 step 6: remove every binding, but a binding with the same Call-ID and a CSeq
        // not lower aborts the whole request.
        for slot in &mut plan.slots {
            if let Some(b) = slot.existing.and_then(|i| existing.get(i)) {
                check_order(b, input)?;
            }
            slot.change = Change::Remove;
        }
        return Ok(plan);
    }

    plan.path = stored_path(input)?;
    let user_agent = input.user_agent.map(|ua| truncate(ua, MAX_USER_AGENT));
    for contact in input.contacts {
        let requested = requested_expiry(contact, input, policy)?;
        let key = MatchKey::new(contact.uri_key, contact.instance, contact.reg_id);
        let found = plan
            .slots
            .iter()
            .position(|s| slot_key(s, existing) == Some(key));
        let slot_index = match found {
            Some(i) => i,
            None if requested == 0 => continue, // removing a binding we do not have
            None => {
                plan.slots.push(Slot {
                    existing: None,
                    change: Change::Keep,
                    touched: true,
                });
                plan.slots.len() - 1
            }
        };
        let Some(slot) = plan.slots.get_mut(slot_index) else {
            continue;
        };
        if !slot.touched {
            if let Some(b) = slot.existing.and_then(|i| existing.get(i)) {
                check_order(b, input)?;
            }
            slot.touched = true;
        }
        let refresh = slot.existing.is_some();
        let granted = grant(requested, refresh, input, policy);
        if granted == 0 {
            slot.change = Change::Remove;
            continue;
        }
        let deadline = now
            .checked_add(Duration::from_secs(u64::from(granted)))
            .ok_or(RegisterError::DeadlineOverflow)?;
        let text = BindingText::new(
            &TextParts {
                uri: contact.uri,
                uri_key: contact.uri_key,
                params: contact.params,
                instance: contact.instance,
                call_id: input.call_id,
                user_agent,
                credential: input.credential.map(|c| c.name),
            },
            MAX_BINDING_TEXT,
        )
        .ok_or(RegisterError::TooLarge)?;
        slot.change = Change::Update(Upsert {
            text,
            q: contact.q.map(|q| q.min(1000)),
            reg_id: contact.reg_id,
            granted,
            deadline,
        });
    }

    let live_before = plan.slots.iter().filter(|s| s.existing.is_some()).count();
    let after = plan.final_count();
    // A request that does not add bindings is allowed even above the limit, so that lowering
    // the limit does not stop existing phones from refreshing or unregistering.
    if after > policy.max_bindings_per_aor && after > live_before {
        return Err(RegisterError::TooManyBindings {
            max: policy.max_bindings_per_aor,
        });
    }
    Ok(plan)
}

/// The key a slot currently answers to: a removed binding matches nothing.
fn slot_key<'a>(slot: &'a Slot, existing: &'a [Binding]) -> Option<MatchKey<'a>> {
    match &slot.change {
        Change::Remove => None,
        Change::Update(u) => Some(MatchKey::new(u.text.uri_key(), u.text.instance(), u.reg_id)),
        Change::Keep => slot
            .existing
            .and_then(|i| existing.get(i))
            .map(Binding::match_key),
    }
}

/// §10.3 step 7: same Call-ID needs a higher CSeq; a different Call-ID always updates.
fn check_order(stored: &Binding, input: &RegisterInput<'_>) -> Result<(), RegisterError> {
    if stored.text.call_id() == input.call_id && input.cseq <= stored.cseq {
        Err(RegisterError::OutOfOrder)
    } else {
        Ok(())
    }
}

/// The contact's requested expiry after the minimum check and the clamp: 0 means remove.
fn requested_expiry(
    contact: &ContactInput<'_>,
    input: &RegisterInput<'_>,
    policy: &RegistrarPolicy,
) -> Result<u64, RegisterError> {
    let requested = contact
        .expires
        .or(input.expires_header)
        .unwrap_or(policy.default_expires);
    if requested == 0 {
        return Ok(0);
    }
    if requested < policy.min_expires {
        return Err(RegisterError::IntervalTooBrief {
            min_expires: policy.min_expires,
        });
    }
    Ok(requested
        .min(policy.max_expires)
        .min(u64::from(u32::MAX))
        .max(1))
}

/// Applies jitter (refreshes only) and the caller's cap; 0 means the binding is removed.
fn grant(
    requested: u64,
    refresh: bool,
    input: &RegisterInput<'_>,
    policy: &RegistrarPolicy,
) -> u32 {
    let mut granted = requested;
    let percent = u64::from(policy.expiry_jitter_percent.min(50));
    if refresh && percent > 0 {
        let max_cut = granted.saturating_mul(percent) / 100;
        if max_cut > 0 {
            let cut = rand::rng().random_range(0..=max_cut);
            granted = max(granted - cut, min(policy.min_expires, granted)).max(1);
        }
    }
    if let Some(cap) = input.max_expires_cap {
        granted = granted.min(cap);
    }
    u32::try_from(granted).unwrap_or(u32::MAX)
}

fn stored_path(input: &RegisterInput<'_>) -> Result<Option<Arc<[Box<str>]>>, RegisterError> {
    if !input.path_supported || input.path.is_empty() {
        return Ok(None);
    }
    let total = input
        .path
        .iter()
        .fold(0usize, |acc, p| acc.saturating_add(p.len()));
    if total > MAX_PATH_TEXT {
        return Err(RegisterError::TooLarge);
    }
    Ok(Some(input.path.iter().map(|p| Box::from(*p)).collect()))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}
