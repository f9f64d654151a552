//! `HostPort`: a host (IP literal or name) and an optional port, as RFC 3261 §25.1 `hostport`
//! spells it: what sipward writes for itself in Via and Record-Route (a listener's advertised
//! name, or the address a packet arrived on) and the names configured to mean "us". Built
//! only by parsing (or from a socket address), so it is always fit to write into a header.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::uri::{Host, Uri};
use super::ParseError;

/// A host and an optional port. Names are kept lowercase; IP addresses in their canonical
/// text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: HostKey,
    port: Option<u16>,
}

/// A host as compared: an IP address, or a lowercase name without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    Ip(IpAddr),
    Name(String),
}

impl HostKey {
    /// The comparison form of a parsed URI host.
    pub fn of(host: &Host<'_>) -> HostKey {
        match host {
            Host::V4(ip) => HostKey::Ip(IpAddr::V4(*ip)),
            Host::V6(ip, _) => HostKey::Ip(IpAddr::V6(*ip)),
            Host::Name(name) => HostKey::Name(name.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

impl HostPort {
    /// Parses `host`, `host:port`, `1.2.3.4[:port]` or `[v6][:port]`; anything else (a user
    /// part, parameters, an empty host, a port out of range) is refused.
    pub fn parse(text: &str) -> Result<HostPort, ParseError> {
        if text.is_empty() || text.contains(['@', ';', '?']) {
            return Err(ParseError::InvalidUri);
        }
        // A bare IPv6 address without brackets is accepted too (`::1`, as `[::1]`).
        if let Ok(ip) = text.parse::<std::net::Ipv6Addr>() {
            return Ok(HostPort {
                host: HostKey::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let uri_text = format!("sip:{text}");
        let uri = Uri::parse(&uri_text)?;
        let host = uri.host.as_ref().ok_or(ParseError::InvalidUri)?;
        if uri.port == Some(0) {
            return Err(ParseError::InvalidUri);
        }
        Ok(HostPort {
            host: HostKey::of(host),
            port: uri.port,
        })
    }

    /// The host and port of a socket address.
    pub fn from_addr(addr: SocketAddr) -> HostPort {
        HostPort {
            host: HostKey::Ip(addr.ip()),
            port: Some(addr.port()),
        }
    }

    pub fn host(&self) -> &HostKey {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// This host with `port` when it names none.
    pub fn or_port(&self, port: u16) -> HostPort {
        HostPort {
            host: self.host.clone(),
            port: Some(self.port.unwrap_or(port)),
        }
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKey::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostKey::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            HostKey::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for HostPort {
    /// As a header writes it: `host`, `host:port`, `[v6]:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses_with_and_without_port() {
        let cases = [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7:5080", "203.0.113.7:5080"),
            ("SIP.Example.COM", "sip.example.com"),
            ("sip.example.com.:5061", "sip.example.com:5061"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("[2001:db8::1]:5070", "[2001:db8::1]:5070"),
            ("2001:db8::1", "[2001:db8::1]"),
            ("localhost", "localhost"),
        ];
        for (text, written) in cases {
            let hp = HostPort::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(hp.to_string(), written, "{text}");
        }
        let hp = HostPort::parse("203.0.113.7:5080").unwrap();
        assert_eq!(hp.host(), &HostKey::Ip("203.0.113.7".parse().unwrap()));
        assert_eq!(hp.port(), Some(5080));
        assert_eq!(hp.or_port(5060).port(), Some(5080));
        assert_eq!(
            HostPort::parse("a.test").unwrap().or_port(5060).port(),
            Some(5060)
        );
    }

    #[test]
    fn refuses_what_is_not_a_hostport() {
        for text in [
            "",
            "alice@host",
            "host;lr",
            "host?x=1",
            "host:",
            "host:0",
            "host:65536",
            "ho st",
            "[::1",
            "[2001:db8:::1]",
            "sip:host",
        ] {
            assert!(HostPort::parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn from_a_socket_address() {
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        assert_eq!(HostPort::from_addr(v6).to_string(), "[::1]:5060");
        let v4: SocketAddr = "127.0.0.1:5160".parse().unwrap();
        assert_eq!(HostPort::from_addr(v4).to_string(), "127.0.0.1:5160");
    }
}
