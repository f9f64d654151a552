//! `OurNames`: which hosts and ports mean this proxy (RFC 3261 §16.4: a Route or a
//! Request-URI that "indicates this proxy"). Built once at start from plain data: the served
//! domains, `sip.aliases`, every listener's bound address (a wildcard listener stands for each
//! interface address of its family, and for all of 127.0.0.0/8 or `::1`), and every
//! advertised name.
//!
//! The rule, for a URI's host and port:
//! - a **name** (a served domain, an alias given without a port, and `localhost` when a
//!   listener is on a loopback or wildcard address) is us without a port, or with any port
//!   we listen on or advertise: a domain or host name reaches us through DNS, whatever
//!   port a phone's settings add;
//! - an **address** (a listener's address, an advertised name, an alias given with a port) is
//!   us at its port; a URI without a port means the default of its transport (5060, or 5061
//!   for TLS and `sips:`).
//!
//! It must not route or look at anything but the host, port, scheme and `transport`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::sip::{HostKey, HostPort, Scheme, Transport, Uri};

/// The names and addresses that mean us. See the module documentation for the rule.
#[derive(Debug, Default)]
pub struct OurNames {
    /// Us with no port or any of `ports`.
    names: HashSet<HostKey>,
    /// Us at exactly this port.
    addresses: HashSet<(HostKey, u16)>,
    /// Every port we listen on or advertise.
    ports: HashSet<u16>,
    /// Wildcard listeners (family: IPv4?, port): any loopback address of the family is us
    /// at that port.
    wildcards: Vec<(bool, u16)>,
}

/// What [`OurNames::new`] is built from.
#[derive(Debug, Default)]
pub struct NameSources<'a> {
    /// The served domains.
    pub domains: &'a [String],
    /// `sip.aliases`.
    pub aliases: &'a [HostPort],
    /// Every listener's bound address (ports as bound).
    pub listeners: &'a [SocketAddr],
    /// The host's interface addresses (what a wildcard listener answers on).
    pub interfaces: &'a [IpAddr],
    /// Every advertised name, with its port.
    pub advertised: &'a [HostPort],
}

impl OurNames {
    pub fn new(from: &NameSources<'_>) -> OurNames {
        let mut us = OurNames::default();
        for domain in from.domains {
            us.names.insert(HostKey::Name(domain.to_ascii_lowercase()));
        }
        for listener in from.listeners {
            let (ip, port) = (listener.ip(), listener.port());
            us.ports.insert(port);
            if ip.is_unspecified() {
                us.wildcards.push((ip.is_ipv4(), port));
                for local in from
                    .interfaces
                    .iter()
                    .filter(|l| l.is_ipv4() == ip.is_ipv4())
                {
                    us.addresses.insert((HostKey::Ip(*local), port));
                }
            } else {
                us.addresses.insert((HostKey::Ip(ip), port));
            }
            if ip.is_loopback() || ip.is_unspecified() {
                us.names.insert(HostKey::Name("localhost".into()));
            }
        }
        for name in from.aliases.iter().chain(from.advertised) {
            match name.port() {
                Some(port) => {
                    us.ports.insert(port);
                    us.addresses.insert((name.host().clone(), port));
                }
                None => {
                    us.names.insert(name.host().clone());
                }
            }
        }
        us
    }

    /// Whether `uri` (a Route or Request-URI) names us, port included (see the module
    /// documentation).
    pub fn is_us(&self, uri: &Uri<'_>) -> bool {
        let Some(host) = uri.host.as_ref().map(HostKey::of) else {
            return false;
        };
        if self.names.contains(&host) && uri.port.is_none_or(|p| self.ports.contains(&p)) {
            return true;
        }
        let port = uri.port.unwrap_or_else(|| default_port(uri));
        if self.addresses.contains(&(host.clone(), port)) {
            return true;
        }
        match host {
            HostKey::Ip(ip) if ip.is_loopback() => self
                .wildcards
                .iter()
                .any(|&(v4, p)| p == port && v4 == ip.is_ipv4()),
            _ => false,
        }
    }

    /// Whether the URI's host is one of ours, whatever its port (a Request-URI's host that
    /// stands for our only domain).
    pub fn is_our_host(&self, uri: &Uri<'_>) -> bool {
        let Some(host) = uri.host.as_ref().map(HostKey::of) else {
            return false;
        };
        if self.names.contains(&host) || self.addresses.iter().any(|(h, _)| *h == host) {
            return true;
        }
        matches!(host, HostKey::Ip(ip) if ip.is_loopback()
            && self.wildcards.iter().any(|&(v4, _)| v4 == ip.is_ipv4()))
    }
}

/// RFC 3263: 5061 for TLS (`sips:` or `transport=tls`), else 5060.
fn default_port(uri: &Uri<'_>) -> u16 {
    let tls = uri.scheme == Scheme::Sips
        || uri
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case(Transport::Tls.as_str()));
    if tls {
        5061
    } else {
        5060
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listeners: &[&str], aliases: &[&str], advertised: &[&str]) -> OurNames {
        let listeners: Vec<SocketAddr> = listeners.iter().map(|l| l.parse().unwrap()).collect();
        let aliases: Vec<HostPort> = aliases
            .iter()
            .map(|a| HostPort::parse(a).unwrap())
            .collect();
        let advertised: Vec<HostPort> = advertised
            .iter()
            .map(|a| HostPort::parse(a).unwrap())
            .collect();
        OurNames::new(&NameSources {
            domains: &["example.test".to_owned()],
            aliases: &aliases,
            listeners: &listeners,
            interfaces: &["127.0.0.1".parse().unwrap(), "10.0.0.5".parse().unwrap()],
            advertised: &advertised,
        })
    }

    fn is_us(names: &OurNames, uri: &str) -> bool {
        names.is_us(&Uri::parse(uri).unwrap())
    }

    /// The Route variants of issue 15, adapted to listeners on 5160 (UDP/TCP) and 5161 (TLS).
    #[test]
    fn domains_aliases_and_localhost_are_us_with_and_without_our_ports() {
        let us = names(
            &["127.0.0.1:5160", "127.0.0.1:5161"],
            &["sip.example.test"],
            &[],
        );
        for uri in [
            "sip:localhost:5161;transport=tls;lr",
            "sip:example.test;lr",
            "sip:example.test:5160;lr",
            "sip:sip.example.test:5160;transport=udp;lr",
            "sip:EXAMPLE.test.;lr",
            "sip:127.0.0.1:5160;lr",
            "sip:token@127.0.0.1:5161;transport=tls;lr",
        ] {
            assert!(is_us(&us, uri), "{uri} is us");
        }
        for uri in [
            // A port we do not listen on is someone else on that host.
            "sip:example.test:5070;lr",
            "sip:localhost:5070;lr",
            // An address without a port means 5060.
            "sip:127.0.0.1;lr",
            "sip:10.0.0.5:5160;lr",
            "sip:other.test;lr",
            "sip:sip.example.test.evil.test;lr",
        ] {
            assert!(!is_us(&us, uri), "{uri} is not us");
        }
    }

    #[test]
    fn wildcard_listeners_stand_for_the_interface_addresses_and_loopback() {
        let us = names(&["0.0.0.0:5060", "[::]:5062"], &[], &[]);
        assert!(is_us(&us, "sip:10.0.0.5;lr"));
        assert!(is_us(&us, "sip:127.0.0.2:5060;lr"));
        assert!(is_us(&us, "sip:[::1]:5062;lr"));
        assert!(is_us(&us, "sip:localhost:5062;lr"));
        assert!(!is_us(&us, "sip:10.0.0.6;lr"), "not an interface address");
        assert!(!is_us(&us, "sip:10.0.0.5:5062;lr"), "5062 is IPv6 only");
        assert!(!is_us(&us, "sip:[::1]:5060;lr"));
    }

    #[test]
    fn advertised_names_and_aliases_with_a_port_are_us_at_that_port() {
        let us = names(
            &["0.0.0.0:5060"],
            &["edge.example.test:5080", "[2001:db8::9]:5090"],
            &["203.0.113.7:5060", "sip.example.com:5060"],
        );
        assert!(is_us(&us, "sip:203.0.113.7;lr"));
        assert!(is_us(&us, "sip:t@203.0.113.7:5060;lr"));
        assert!(!is_us(&us, "sip:203.0.113.7:5070;lr"));
        assert!(is_us(&us, "sip:SIP.example.com;lr"));
        assert!(is_us(&us, "sip:edge.example.test:5080;lr"));
        assert!(!is_us(&us, "sip:edge.example.test;lr"));
        assert!(is_us(&us, "sip:[2001:db8::9]:5090;lr"));
        // sips defaults to 5061.
        assert!(!is_us(&us, "sips:203.0.113.7;lr"));
        // Any of our hosts, whatever the port (a Request-URI standing for our domain).
        let uri = Uri::parse("sip:bob@203.0.113.7:9999").unwrap();
        assert!(us.is_our_host(&uri));
        assert!(!us.is_our_host(&Uri::parse("sip:bob@198.51.100.1").unwrap()));
    }
}
