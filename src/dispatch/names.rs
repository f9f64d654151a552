//! Our names: the domains we serve (each with its client-certificate policy) and the local
//! hosts and addresses that stand for us. Answers "is this URI for us?" and "which of our
//! domains does it name?".
//!
//! It must not authenticate or route: it only knows names.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::config::ClientCertPolicy;
use crate::sip::Uri;

/// Per-domain policy the registrar side needs (Digest policy lives in `auth::RealmPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainPolicy {
    /// Whether a client-certificate identity authenticates a REGISTER alone.
    pub client_cert: ClientCertPolicy,
}

/// The domains we serve and the addresses we listen on.
#[derive(Debug)]
pub struct Names {
    domains: HashMap<String, DomainPolicy>,
    /// Hosts (IP literals of our listeners, and `localhost`) that stand for our only domain.
    local_hosts: HashSet<String>,
    /// Our listening addresses (Route headers naming one of them are ours).
    local_addrs: Vec<SocketAddr>,
}

impl Names {
    pub fn new(domains: Vec<(String, DomainPolicy)>, local_addrs: &[SocketAddr]) -> Names {
        let mut local_hosts: HashSet<String> =
            local_addrs.iter().map(|a| a.ip().to_string()).collect();
        local_hosts.insert("localhost".into());
        Names {
            domains: domains.into_iter().collect(),
            local_hosts,
            local_addrs: local_addrs.to_vec(),
        }
    }

    /// The domain a Request-URI names: one of ours, or a local address standing for our
    /// only domain. `None` if the request is for someone else.
    pub fn domain_of(&self, ruri: &Uri<'_>) -> Option<String> {
        let host = ruri.host_raw.to_ascii_lowercase();
        if self.domains.contains_key(&host) {
            return Some(host);
        }
        if self.local_hosts.contains(host.trim_matches(['[', ']'])) && self.domains.len() == 1 {
            return self.domains.keys().next().cloned();
        }
        None
    }

    /// Whether the URI's host is one of our domains or local hosts.
    pub fn is_us(&self, ruri: &Uri<'_>) -> bool {
        let host = ruri.host_raw.to_ascii_lowercase();
        self.domains.contains_key(&host) || self.local_hosts.contains(host.trim_matches(['[', ']']))
    }

    /// The policy of one of our domains.
    pub fn policy(&self, domain: &str) -> Option<&DomainPolicy> {
        self.domains.get(domain)
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }
}
