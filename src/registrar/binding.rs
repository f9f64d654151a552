//! What the location service keeps per binding, and the snapshots it hands out.
//!
//! A binding must stay compact (there may be millions), so all its strings live in one shared
//! allocation ([`BindingText`]) addressed by 16-bit spans, the comparison key is not stored when
//! it equals the URI, and the `+sip.instance` value is not stored again when it appears in the
//! params. This module holds data only; the rules that change bindings live in `rules`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The AoR, as the SIP layer parses it; re-exported so `registrar::Aor` keeps naming it.
pub use crate::sip::Aor;
pub use crate::sip::FlowId;
pub use crate::sip::Transport;

/// Unique identity of one binding for the lifetime of the process; kept across refreshes and
/// RFC 5626 replacements so the expiry and flow indexes can find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct BindingId(pub(super) u64);

/// A byte range in [`BindingText::buf`]; `start == NONE` marks an absent optional field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u16,
    end: u16,
}

impl Span {
    const NONE: Span = Span {
        start: u16::MAX,
        end: u16::MAX,
    };
}

/// All strings of one binding in a single shared allocation.
///
/// Layout of `buf`: `uri [uri_key if different] params [instance if not inside params] call_id
/// [user_agent] [credential]`. Shared (`Arc`) so snapshots handed to the proxy copy no string.
#[derive(Clone, Debug)]
pub(super) struct BindingText {
    buf: Arc<str>,
    uri_end: u16,
    uri_key: Span,
    params: Span,
    instance: Span,
    call_id: Span,
    user_agent: Span,
    /// Where the credential starts; it runs to the end of `buf` (`u16::MAX`: none). Two bytes
    /// instead of a span keep the struct in its size class.
    credential_start: u16,
}

/// The strings a [`BindingText`] is built from.
pub(super) struct TextParts<'a> {
    pub(super) uri: &'a str,
    pub(super) uri_key: &'a str,
    pub(super) params: &'a str,
    pub(super) instance: Option<&'a str>,
    pub(super) call_id: &'a str,
    pub(super) user_agent: Option<&'a str>,
    /// The device credential that made the binding (token API username), so a revoke finds it.
    pub(super) credential: Option<&'a str>,
}

impl BindingText {
    /// Packs the parts; `None` when they exceed `max_len` bytes in total (or 16-bit spans).
    pub(super) fn new(parts: &TextParts<'_>, max_len: usize) -> Option<Self> {
        let max_len = max_len.min(usize::from(u16::MAX - 1));
        let key_shared = parts.uri_key == parts.uri;
        let instance_in_params = parts.instance.and_then(|i| parts.params.find(i));
        let mut total = parts.uri.len() + parts.params.len() + parts.call_id.len();
        if !key_shared {
            total += parts.uri_key.len();
        }
        if let (Some(i), None) = (parts.instance, instance_in_params) {
            total += i.len();
        }
        total += parts.user_agent.map_or(0, str::len);
        total += parts.credential.map_or(0, str::len);
        if total > max_len {
            return None;
        }
        let mut buf = String::with_capacity(total);
        let mut push = |s: &str| -> Option<Span> {
            let start = u16::try_from(buf.len()).ok()?;
            buf.push_str(s);
            let end = u16::try_from(buf.len()).ok()?;
            Some(Span { start, end })
        };
        let uri = push(parts.uri)?;
        let uri_key = if key_shared {
            uri
        } else {
            push(parts.uri_key)?
        };
        let params = push(parts.params)?;
        let instance = match (parts.instance, instance_in_params) {
            (None, _) => Span::NONE,
            (Some(i), Some(at)) => {
                let start = params.start.checked_add(u16::try_from(at).ok()?)?;
                let end = start.checked_add(u16::try_from(i.len()).ok()?)?;
                Span { start, end }
            }
            (Some(i), None) => push(i)?,
        };
        let call_id = push(parts.call_id)?;
        let user_agent = match parts.user_agent {
            Some(ua) => push(ua)?,
            None => Span::NONE,
        };
        let credential_start = match parts.credential {
            Some(c) => push(c)?.start,
            None => u16::MAX,
        };
        Some(Self {
            buf: Arc::from(buf),
            uri_end: uri.end,
            uri_key,
            params,
            instance,
            call_id,
            user_agent,
            credential_start,
        })
    }

    fn get(&self, span: Span) -> &str {
        self.buf
            .get(usize::from(span.start)..usize::from(span.end))
            .unwrap_or("")
    }

    fn get_opt(&self, span: Span) -> Option<&str> {
        (span != Span::NONE).then(|| self.get(span))
    }

    pub(super) fn uri(&self) -> &str {
        self.get(Span {
            start: 0,
            end: self.uri_end,
        })
    }

    pub(super) fn uri_key(&self) -> &str {
        self.get(self.uri_key)
    }

    pub(super) fn params(&self) -> &str {
        self.get(self.params)
    }

    pub(super) fn instance(&self) -> Option<&str> {
        self.get_opt(self.instance)
    }

    pub(super) fn call_id(&self) -> &str {
        self.get(self.call_id)
    }

    pub(super) fn user_agent(&self) -> Option<&str> {
        self.get_opt(self.user_agent)
    }

    pub(super) fn credential(&self) -> Option<&str> {
        (self.credential_start != u16::MAX).then(|| {
            self.buf
                .get(usize::from(self.credential_start)..)
                .unwrap_or("")
        })
    }

    #[cfg(test)]
    /// Heap bytes owned by this text (the `Arc` header of two counters plus the bytes).
    pub(super) fn heap_bytes(&self) -> usize {
        2 * std::mem::size_of::<usize>() + self.buf.len()
    }
}

/// What identifies "the same binding" within one AoR.
///
/// RFC 5626 §6: `(instance, reg-id)` when both are present; RFC 5627: the instance alone;
/// otherwise RFC 3261 §10.3 step 7: the URI compared per §19.1.4. A `reg-id` without an
/// instance is stored but does not take part in matching. At most one binding per key exists
/// in an AoR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MatchKey<'a> {
    Outbound(&'a str, u32),
    Instance(&'a str),
    Uri(&'a str),
}

impl<'a> MatchKey<'a> {
    pub(super) fn new(uri_key: &'a str, instance: Option<&'a str>, reg_id: Option<u32>) -> Self {
        match (instance, reg_id) {
            (Some(i), Some(r)) => MatchKey::Outbound(i, r),
            (Some(i), None) => MatchKey::Instance(i),
            (None, _) => MatchKey::Uri(uri_key),
        }
    }
}

/// One stored binding. Kept small: see the size test, which prints its footprint.
#[derive(Clone, Debug)]
pub(super) struct Binding {
    pub(super) id: BindingId,
    /// The binding is visible strictly before this instant and purged at or after it.
    pub(super) deadline: Instant,
    pub(super) text: BindingText,
    /// Path header values (RFC 3327), only when the client said `Supported: path`; shared by
    /// all bindings of the REGISTER that carried them.
    pub(super) path: Option<Arc<[Box<str>]>>,
    pub(super) source: SocketAddr,
    pub(super) flow: Option<FlowId>,
    pub(super) reg_id: Option<u32>,
    /// CSeq of the REGISTER that last changed this binding (the §10.3 step 7 ordering rule).
    pub(super) cseq: u32,
    /// Seconds granted by that REGISTER: caps the `expires` we report and dates the update.
    pub(super) granted: u32,
    pub(super) q: Option<u16>,
    pub(super) transport: Transport,
}

impl Binding {
    pub(super) fn match_key(&self) -> MatchKey<'_> {
        MatchKey::new(self.text.uri_key(), self.text.instance(), self.reg_id)
    }

    pub(super) fn is_live(&self, now: Instant) -> bool {
        now < self.deadline
    }

    /// When the REGISTER that set the current deadline was applied.
    pub(super) fn updated_at(&self) -> Instant {
        self.deadline
            .checked_sub(Duration::from_secs(u64::from(self.granted)))
            .unwrap_or(self.deadline)
    }

    /// Remaining seconds, rounded up (so a live binding never shows 0) but never above what
    /// was granted.
    pub(super) fn remaining_secs(&self, now: Instant) -> u32 {
        let left = self.deadline.saturating_duration_since(now);
        let secs = left
            .as_secs()
            .saturating_add(u64::from(left.subsec_nanos() > 0));
        u32::try_from(secs).unwrap_or(u32::MAX).min(self.granted)
    }

    #[cfg(test)]
    /// Heap bytes owned by this binding (text and, when present, the path list it shares).
    pub(super) fn heap_bytes(&self) -> usize {
        let path = self.path.as_ref().map_or(0, |p| {
            2 * std::mem::size_of::<usize>()
                + p.iter()
                    .map(|s| std::mem::size_of::<Box<str>>() + s.len())
                    .sum::<usize>()
        });
        self.text.heap_bytes() + path
    }

    pub(super) fn snapshot(&self, now: Instant) -> BindingSnapshot {
        BindingSnapshot {
            id: self.id.0,
            text: self.text.clone(),
            path: self.path.clone(),
            expires: self.remaining_secs(now),
            q: self.q,
            reg_id: self.reg_id,
            cseq: self.cseq,
            source: self.source,
            transport: self.transport,
            flow: self.flow,
        }
    }
}

/// A read-only view of one binding at a given `now`, for the 200 OK, the proxy and the admin
/// listing. Cloning it copies no string.
#[derive(Clone, Debug)]
pub struct BindingSnapshot {
    /// The binding's id: unique in this location service and kept across a restart with a
    /// durable store (the admin API removes one binding by it).
    pub id: u64,
    text: BindingText,
    path: Option<Arc<[Box<str>]>>,
    /// Remaining lifetime in whole seconds, rounded up and never above what was granted.
    pub expires: u32,
    /// q-value in thousandths (0..=1000) as registered; `None` when the contact had none.
    pub q: Option<u16>,
    pub reg_id: Option<u32>,
    pub cseq: u32,
    /// Where the REGISTER came from (the proxy sends there for NAT traversal).
    pub source: SocketAddr,
    pub transport: Transport,
    pub flow: Option<FlowId>,
}

impl BindingSnapshot {
    /// The Contact URI exactly as received.
    pub fn uri(&self) -> &str {
        self.text.uri()
    }

    /// The Contact header params as received, without `expires`.
    pub fn params(&self) -> &str {
        self.text.params()
    }

    /// The `+sip.instance` value, when registered with one.
    pub fn instance(&self) -> Option<&str> {
        self.text.instance()
    }

    pub fn call_id(&self) -> &str {
        self.text.call_id()
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.text.user_agent()
    }

    /// The token API device username that made or last refreshed this binding; `None` for a
    /// static account or a client certificate.
    pub fn credential(&self) -> Option<&str> {
        self.text.credential()
    }

    /// Path header values stored with the binding (empty unless the client supported path).
    pub fn path(&self) -> &[Box<str>] {
        self.path.as_deref().unwrap_or(&[])
    }

    /// q-value used for ordering: a contact without `q` counts as 1.0.
    pub fn effective_q(&self) -> u16 {
        self.q.unwrap_or(1000)
    }
}
