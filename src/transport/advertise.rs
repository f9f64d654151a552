//! `Advertised`: the name each listener writes for itself in the Via and Record-Route the
//! proxy adds. A listener with `advertise` writes that (its port, or the listener's when it
//! names none); any other writes the real local address of the message: the address a
//! request arrived on, or the one a request to a destination leaves from, never `0.0.0.0`.
//!
//! It must not look at messages: given a transport and a local address, it answers a name.

use std::net::SocketAddr;
use std::sync::Arc;

use super::serve::Addresses;
use super::Transport;
use crate::config::{SipConfig, TlsConfig};
use crate::sip::HostPort;

/// Every listener's advertised name, keyed by transport and bound address (the ports the
/// kernel chose for port 0 included). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Advertised {
    entries: Arc<[(Transport, SocketAddr, HostPort)]>,
}

impl Advertised {
    /// From the configured `advertise` values and the addresses the listeners bound (in the
    /// order of `sip.udp`, `sip.tcp` and `tls.listeners`).
    pub fn new(sip: &SipConfig, tls: Option<&TlsConfig>, bound: &Addresses) -> Advertised {
        let tls_addrs: Vec<SocketAddr> = tls
            .map(|t| t.listeners.iter().map(|l| l.addr).collect())
            .unwrap_or_default();
        let entries = sip
            .advertise
            .iter()
            .filter_map(|a| {
                let (configured, bound): (&[SocketAddr], &[SocketAddr]) = match a.transport {
                    Transport::Udp => (&sip.udp, &bound.udp),
                    Transport::Tcp => (&sip.tcp, &bound.tcp),
                    Transport::Tls => (&tls_addrs, &bound.tls),
                    // WebSocket listeners have no `advertise` (yet): they write their address.
                    Transport::Ws | Transport::Wss => return None,
                };
                let index = configured.iter().position(|c| *c == a.addr)?;
                let addr = *bound.get(index)?;
                Some((a.transport, addr, a.name.or_port(addr.port())))
            })
            .collect();
        Advertised { entries }
    }

    /// What a message over `transport` whose real local address is `local` names us with.
    pub fn sent_by(&self, transport: Transport, local: SocketAddr) -> HostPort {
        self.configured(transport, local)
            .cloned()
            .unwrap_or_else(|| HostPort::from_addr(local))
    }

    /// The configured name of the listener `local` belongs to, if it has one.
    pub fn configured(&self, transport: Transport, local: SocketAddr) -> Option<&HostPort> {
        self.entries
            .iter()
            .find(|(t, addr, _)| {
                *t == transport
                    && addr.port() == local.port()
                    && (addr.ip() == local.ip()
                        || (addr.ip().is_unspecified() && addr.is_ipv4() == local.is_ipv4()))
            })
            .map(|(_, _, name)| name)
    }

    /// Every advertised name, each with its port.
    pub fn names(&self) -> impl Iterator<Item = &HostPort> {
        self.entries.iter().map(|(_, _, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn advertised_names_replace_the_address_of_their_listener_only() {
        let text = r#"
            [sip]
            udp = [{ addr = "0.0.0.0:0", advertise = "203.0.113.7" }, "127.0.0.1:0"]
            tcp = [{ addr = "0.0.0.0:5060", advertise = "sip.example.test:5070" }]
            [[domains]]
            name = "example.test"
        "#;
        let config = Config::from_toml_str(text, std::path::Path::new(".")).unwrap();
        let bound = Addresses {
            udp: vec![
                "0.0.0.0:40000".parse().unwrap(),
                "127.0.0.1:40001".parse().unwrap(),
            ],
            tcp: vec!["0.0.0.0:5060".parse().unwrap()],
            tls: vec![],
            ws: vec![],
        };
        let names = Advertised::new(&config.sip, None, &bound);
        let sent_by = |t, a: &str| names.sent_by(t, a.parse().unwrap()).to_string();
        // The kernel's port, with the advertised address.
        assert_eq!(
            sent_by(Transport::Udp, "10.1.2.3:40000"),
            "203.0.113.7:40000"
        );
        // The other UDP listener, and an address no listener advertises: itself.
        assert_eq!(
            sent_by(Transport::Udp, "127.0.0.1:40001"),
            "127.0.0.1:40001"
        );
        assert_eq!(
            sent_by(Transport::Tcp, "10.1.2.3:5060"),
            "sip.example.test:5070"
        );
        assert_eq!(sent_by(Transport::Tls, "10.1.2.3:5060"), "10.1.2.3:5060");
        assert_eq!(
            sent_by(Transport::Udp, "[2001:db8::1]:40000"),
            "[2001:db8::1]:40000"
        );
        assert_eq!(names.names().count(), 2);
    }
}
