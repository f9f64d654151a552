//! Our names: the domains we serve (each with its client-certificate policy) and the local
//! hosts and addresses that stand for us. Answers "is this URI for us?" and "which of our
//! domains does it name?".
//!
//! It must not authenticate or route: it only knows names.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ClientCertPolicy;
use crate::proxy::OurNames;
use crate::sip::Uri;

/// Per-domain policy the registrar side needs (Digest policy lives in `auth::RealmPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainPolicy {
    /// Whether a client-certificate identity authenticates a REGISTER alone.
    pub client_cert: ClientCertPolicy,
}

/// The domains we serve and the other names that mean us.
#[derive(Debug)]
pub struct Names {
    domains: HashMap<String, DomainPolicy>,
    /// Listener addresses, advertised names, aliases, `localhost` (see `proxy::OurNames`);
    /// each also stands for our only domain in a Request-URI.
    us: Arc<OurNames>,
}

impl Names {
    pub fn new(domains: Vec<(String, DomainPolicy)>, us: Arc<OurNames>) -> Names {
        Names {
            domains: domains.into_iter().collect(),
            us,
        }
    }

    /// The domain a Request-URI names: one of ours, or another of our names (an address, an
    /// alias, an advertised name; any port) standing for our only domain. `None` if the
    /// request is for someone else.
    pub fn domain_of(&self, ruri: &Uri<'_>) -> Option<String> {
        let host = ruri.host_raw.trim_end_matches('.').to_ascii_lowercase();
        if self.domains.contains_key(&host) {
            return Some(host);
        }
        if self.domains.len() == 1 && self.us.is_our_host(ruri) {
            return self.domains.keys().next().cloned();
        }
        None
    }

    /// Whether the URI's host is one of our domains or other names.
    pub fn is_us(&self, ruri: &Uri<'_>) -> bool {
        self.us.is_our_host(ruri)
    }

    /// The policy of one of our domains.
    pub fn policy(&self, domain: &str) -> Option<&DomainPolicy> {
        self.domains.get(domain)
    }
}
