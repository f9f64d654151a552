//! What each validated section means to the module that uses it: the domain types built from
//! it. `validate` checked every value and every cross-check these types state (ranges,
//! `min_expires <= default_expires <= max_expires`, T1), so building them cannot fail and
//! no other module checks them again.

use crate::auth::{LimiterConfig, NonceConfig, ReplayConfig};
use crate::registrar::RegistrarPolicy;
use crate::sip::Limits;
use crate::transaction::{TransactionConfig, MAX_T1};

use super::{AuthConfig, RegistrarConfig, SipConfig};

// The transaction layer's T1 bound contains the file's `sip.t1_ms` range, so `transactions()`
// cannot fail.
const _: () = assert!(super::raw::T1_MS.min >= 1);
const _: () = assert!(super::raw::T1_MS.max as u128 <= MAX_T1.as_millis());

impl SipConfig {
    /// The parser's limits: the header section, the body (what `max_message_bytes` leaves
    /// after the header limit, at least 1 byte) and the header count.
    pub fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self
                .max_message_bytes
                .saturating_sub(self.max_header_bytes)
                .max(1),
            max_headers: self.max_headers,
        }
    }

    /// T1 and the cap on transactions, for the server transactions and the proxy.
    pub fn transactions(&self) -> TransactionConfig {
        TransactionConfig::new(self.t1, self.max_transactions)
            .expect("sip.t1_ms's range lies within the transaction layer's (asserted above)")
    }
}

impl RegistrarConfig {
    /// The binding rules' policy (RFC 3261 §10.3).
    pub fn policy(&self) -> RegistrarPolicy {
        RegistrarPolicy {
            min_expires: self.min_expires.as_secs(),
            max_expires: self.max_expires.as_secs(),
            default_expires: self.default_expires.as_secs(),
            max_bindings_per_aor: self.max_bindings_per_aor,
            expiry_jitter_percent: self.expiry_jitter_percent,
            max_aors: self.max_aors,
        }
    }
}

impl AuthConfig {
    pub fn nonce(&self) -> NonceConfig {
        NonceConfig {
            lifetime: self.nonce_lifetime,
            max_drift: self.nonce_max_drift,
        }
    }

    pub fn replay(&self) -> ReplayConfig {
        ReplayConfig {
            capacity: self.replay_table_size,
        }
    }

    /// The failure limiter per source address.
    pub fn source_limiter(&self) -> LimiterConfig {
        LimiterConfig {
            window: self.failure_window,
            max_failures: self.max_failures_per_source,
            ..LimiterConfig::per_source()
        }
    }

    /// The failure limiter per username.
    pub fn user_limiter(&self) -> LimiterConfig {
        LimiterConfig {
            window: self.failure_window,
            max_failures: self.max_failures_per_user,
            ..LimiterConfig::per_username()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// Each key reaches its field of the domain type, and a config that loads builds a
    /// policy the registrar accepts without checking again.
    #[test]
    fn sections_build_the_domain_types_key_for_key() {
        let text = "[sip]\nmax_message_bytes = 20000\nmax_header_bytes = 4096\nmax_headers = 64\nt1_ms = 250\n\
                    max_transactions = 5000\n\n[registrar]\nmin_expires = 30\nmax_expires = 7200\n\
                    default_expires = 600\nmax_bindings_per_aor = 3\nmax_aors = 99\nexpiry_jitter_percent = 7\n\n\
                    [auth]\nnonce_lifetime_secs = 120\nnonce_max_drift_secs = 2\nreplay_table_size = 2048\n\
                    max_failures_per_source = 4\nmax_failures_per_user = 3\nfailure_window_secs = 90\n\n\
                    [[domains]]\nname = \"example.test\"\n";
        let config = Config::from_toml_str(text, Path::new("")).unwrap();
        let limits = config.sip.limits();
        assert_eq!(
            (
                limits.max_header_bytes,
                limits.max_body_bytes,
                limits.max_headers
            ),
            (4096, 20000 - 4096, 64)
        );
        let txn = config.sip.transactions();
        assert_eq!((txn.t1().as_millis(), txn.max_transactions()), (250, 5000));
        let policy = config.registrar.policy();
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(
            (
                policy.min_expires,
                policy.max_expires,
                policy.default_expires
            ),
            (30, 7200, 600)
        );
        assert_eq!(
            (
                policy.max_bindings_per_aor,
                policy.max_aors,
                policy.expiry_jitter_percent
            ),
            (3, 99, 7)
        );
        let nonce = config.auth.nonce();
        assert_eq!(
            (nonce.lifetime.as_secs(), nonce.max_drift.as_secs()),
            (120, 2)
        );
        assert_eq!(config.auth.replay().capacity, 2048);
        let (source, user) = (config.auth.source_limiter(), config.auth.user_limiter());
        assert_eq!((source.max_failures, source.window.as_secs()), (4, 90));
        assert_eq!((user.max_failures, user.window.as_secs()), (3, 90));
    }
}
