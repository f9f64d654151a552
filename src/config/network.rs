//! How sipward meets a real network: each listener's `advertise` (the name or address it writes
//! for itself in Via and Record-Route), `sip.aliases` (more names that mean us),
//! `registrar.path` (what to do with a Path header from an edge proxy), and the warnings
//! `check-config` and start-up print for a setup that works but will likely surprise (a
//! wildcard listener with nothing advertised); and how many receive threads read each UDP
//! socket (`Config::udp_workers`).

use std::net::SocketAddr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::problems::{Named, Problems};
use super::{Config, Persistence};
use crate::sip::{HostPort, Transport};

/// A `sip.udp` / `sip.tcp` entry: `"addr"`, or `{ addr = "...", advertise = "..." }`.
#[derive(Debug, PartialEq)]
pub(super) struct RawListener {
    pub(super) addr: String,
    /// "" = none.
    pub(super) advertise: String,
}

impl RawListener {
    pub(super) fn at(addr: &str) -> RawListener {
        RawListener {
            addr: addr.to_owned(),
            advertise: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerTable {
    addr: String,
    #[serde(default)]
    advertise: String,
}

impl<'de> Deserialize<'de> for RawListener {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = RawListener;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an \"address:port\" or a table { addr = \"address:port\", advertise = \"host[:port]\" }")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawListener, E> {
                Ok(RawListener::at(text))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<RawListener, M::Error> {
                let table =
                    RawListenerTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawListener {
                    addr: table.addr,
                    advertise: table.advertise,
                })
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// A listener that names itself in the headers it writes with `name` rather than with its
/// address (`advertise` of a `sip.udp`, `sip.tcp` or `[[tls.listeners]]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    pub transport: Transport,
    /// The address the listener binds, as configured.
    pub addr: SocketAddr,
    /// Without a port, the listener's own port is written.
    pub name: HostPort,
}

/// `registrar.path`: what a REGISTER's Path header (RFC 3327, added by an edge proxy) does
/// when the REGISTER does not say `Supported: path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPolicy {
    /// Stored whatever `Supported` says (as Kamailio and OpenSIPS do by default); echoed in
    /// the 200 only when the client supports `path`.
    Store,
    /// `420 Bad Extension` with `Unsupported: path`.
    Strict,
    /// Not stored, not echoed: calls to the binding bypass the edge proxy.
    Ignore,
}

impl Named for PathPolicy {
    const ALL: &'static [Self] = &[Self::Store, Self::Strict, Self::Ignore];
    fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Strict => "strict",
            Self::Ignore => "ignore",
        }
    }
}

/// Parses one `advertise` value (`key` names it in a problem); `None` for "".
pub(super) fn advertise(problems: &mut Problems, key: &str, text: &str) -> Option<HostPort> {
    if text.is_empty() {
        return None;
    }
    // An IPv6 address must be in brackets here: "2001:db8::7:5060" would otherwise be read
    // as an address without a port.
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        problems.push(
            key,
            format!(
                "{text:?}: write an IPv6 address in brackets, as \"[{text}]\" or \"[{text}]:port\""
            ),
        );
        return None;
    }
    match HostPort::parse(text) {
        Ok(name) if !usable_for_others(&name) => {
            problems.push(
                key,
                format!("{text:?} is not an address others can reach us at (unspecified, broadcast or multicast)"),
            );
            None
        }
        Ok(name) => Some(name),
        Err(_) => {
            problems.push(
                key,
                format!("{text:?} is not a host name or IP address with an optional port"),
            );
            None
        }
    }
}

/// Whether a peer can send to this name: not 0.0.0.0, `[::]`, a broadcast or a multicast
/// address (a host name always can, as far as config can tell).
fn usable_for_others(name: &HostPort) -> bool {
    match name.host() {
        crate::sip::HostKey::Ip(ip) => {
            let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
            !(ip.is_unspecified() || ip.is_multicast() || broadcast)
        }
        crate::sip::HostKey::Name(_) => true,
    }
}

/// Parses a `sip.udp` / `sip.tcp` list: each entry an IP `address:port`, listed once, with
/// an optional `advertise`; the advertised names are added to `advertised`.
pub(super) fn listeners(
    problems: &mut Problems,
    key: &str,
    transport: Transport,
    raw: &[RawListener],
    advertised: &mut Vec<Advertise>,
) -> Vec<SocketAddr> {
    let mut parsed: Vec<SocketAddr> = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        let item_key = format!("{key}[{index}]");
        let text = &entry.addr;
        match text.parse::<SocketAddr>() {
            Ok(addr) if parsed.contains(&addr) => {
                problems.push(item_key, format!("{text:?} is listed twice"));
            }
            Ok(addr) => {
                parsed.push(addr);
                let name_key = format!("{item_key}.advertise");
                if let Some(name) = advertise(problems, &name_key, &entry.advertise) {
                    advertised.push(Advertise {
                        transport,
                        addr,
                        name,
                    });
                }
            }
            Err(_) => problems.push(item_key, format!("{text:?} is not an address:port")),
        }
    }
    parsed
}

/// `sip.aliases`: each a host name or IP address with an optional port.
pub(super) fn aliases(problems: &mut Problems, raw: &[String]) -> Vec<HostPort> {
    raw.iter()
        .enumerate()
        .filter_map(|(index, text)| {
            let parsed = HostPort::parse(text);
            if parsed.is_err() {
                problems.push(
                    format!("sip.aliases[{index}]"),
                    format!("{text:?} is not a host name or IP address with an optional port"),
                );
            }
            parsed.ok()
        })
        .collect()
}

impl super::Config {
    /// Settings that load but will likely surprise, each as `key: why` (`check-config`
    /// prints them, start-up logs them): a listener on a wildcard address (`0.0.0.0`,
    /// `[::]`) with no `advertise`. sipward then writes the address each packet arrived on
    /// (a private address behind NAT, which phones outside cannot reach).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let tls = self.tls.iter().flat_map(|t| &t.listeners);
        let listeners = (self.sip.udp.iter().enumerate())
            .map(|(i, a)| (format!("sip.udp[{i}]"), Transport::Udp, *a))
            .chain(
                (self.sip.tcp.iter().enumerate())
                    .map(|(i, a)| (format!("sip.tcp[{i}]"), Transport::Tcp, *a)),
            )
            .chain(
                tls.enumerate()
                    .map(|(i, l)| (format!("tls.listeners[{i}]"), Transport::Tls, l.addr)),
            );
        for (key, transport, addr) in listeners {
            let advertised = self
                .sip
                .advertise
                .iter()
                .any(|a| a.transport == transport && a.addr == addr);
            if addr.ip().is_unspecified() && !advertised {
                warnings.push(format!(
                    "{key}: {addr} listens on every address and has no advertise: the proxy \
                     writes the address each request arrived on into Via and Record-Route; \
                     behind NAT set advertise to the public address or name"
                ));
            }
        }
        warnings
    }
}

/// Receive threads per UDP socket that wait on Redis: with `persistence = "redis"` a receive
/// thread blocks for a round trip on every authenticated request (the nonce claim), so the
/// default keeps this many per core, and the cores stay busy while some threads wait.
pub(super) const REDIS_UDP_WORKERS_PER_CORE: usize = 4;

impl Config {
    /// `sip.udp_workers`, or by default one receive thread per core of `cores` (four per core
    /// with `registrar.persistence = "redis"`).
    pub fn udp_workers(&self, cores: usize) -> usize {
        self.sip.udp_workers.map_or_else(
            || match self.registrar.persistence {
                Persistence::Redis => cores * REDIS_UDP_WORKERS_PER_CORE,
                _ => cores,
            },
            |n| n.get(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    const DOMAIN: &str = "[[domains]]\nname = \"example.test\"\n";

    fn parse(sip: &str, rest: &str) -> Result<Config, super::super::ConfigErrors> {
        Config::from_toml_str(&format!("[sip]\n{sip}\n{rest}\n{DOMAIN}"), Path::new(""))
    }

    #[test]
    fn listener_entries_take_an_advertise_name() {
        let config = parse(
            r#"udp = [{ addr = "0.0.0.0:5060", advertise = "203.0.113.7" }, "127.0.0.1:5062"]
               tcp = [{ addr = "[::]:5060", advertise = "sip.example.test:5080" }]
               aliases = ["example.com", "pbx.internal:5080", "[2001:db8::1]"]"#,
            "[registrar]\npath = \"strict\"\n",
        )
        .unwrap();
        let sip = &config.sip;
        assert_eq!(sip.udp.len(), 2);
        assert_eq!(sip.tcp, vec!["[::]:5060".parse::<SocketAddr>().unwrap()]);
        let names: Vec<(Transport, String)> = sip
            .advertise
            .iter()
            .map(|a| (a.transport, a.name.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                (Transport::Udp, "203.0.113.7".to_owned()),
                (Transport::Tcp, "sip.example.test:5080".to_owned())
            ]
        );
        let aliases: Vec<String> = sip.aliases.iter().map(ToString::to_string).collect();
        assert_eq!(
            aliases,
            ["example.com", "pbx.internal:5080", "[2001:db8::1]"]
        );
        assert_eq!(config.registrar.path, PathPolicy::Strict);
        // Defaults: no alias, no advertise, Path stored.
        let config = parse("", "").unwrap();
        assert!(config.sip.advertise.is_empty() && config.sip.aliases.is_empty());
        assert_eq!(config.registrar.path, PathPolicy::Store);
    }

    #[test]
    fn bad_values_are_named_by_their_key() {
        let errors = parse(
            r#"udp = [{ addr = "0.0.0.0:5060", advertise = "sip:x@y" }]
               tcp = ["0.0.0.0:5060"]
               aliases = ["ok.test", "bad host"]"#,
            "[registrar]\npath = \"sometimes\"\n",
        )
        .unwrap_err()
        .to_string();
        for fragment in [
            "sip.udp[0].advertise: \"sip:x@y\" is not a host name",
            "sip.aliases[1]: \"bad host\" is not a host name",
            "registrar.path",
        ] {
            assert!(errors.contains(fragment), "{fragment} not in:\n{errors}");
        }
        let errors = parse(r#"udp = [{ addr = "0.0.0.0:5060", port = 1 }]"#, "")
            .unwrap_err()
            .to_string();
        assert!(errors.contains("unknown field `port`"), "{errors}");
        let errors = Config::from_toml_str(
            "[[tls.listeners]]\naddr = \"0.0.0.0:5061\"\nadvertise = \"a b\"\n",
            Path::new(""),
        )
        .unwrap_err()
        .to_string();
        assert!(errors.contains("tls.listeners[0].advertise"), "{errors}");
    }

    #[test]
    fn an_advertise_others_cannot_reach_or_a_bare_ipv6_is_refused() {
        for (value, fragment) in [
            ("0.0.0.0", "not an address others can reach"),
            ("[::]:5060", "not an address others can reach"),
            ("255.255.255.255", "not an address others can reach"),
            ("224.0.0.1", "not an address others can reach"),
            ("2001:db8::7:5060", "in brackets"),
        ] {
            let errors = parse(
                &format!(r#"udp = [{{ addr = "0.0.0.0:5060", advertise = "{value}" }}]"#),
                "",
            )
            .unwrap_err()
            .to_string();
            assert!(
                errors.contains("sip.udp[0].advertise") && errors.contains(fragment),
                "{value}: {errors}"
            );
        }
        let config = parse(
            r#"udp = [{ addr = "0.0.0.0:5060", advertise = "[2001:db8::7]:5060" }]"#,
            "",
        );
        assert!(config.is_ok(), "a bracketed IPv6 advertise is fine");
    }

    #[test]
    fn a_wildcard_listener_without_advertise_is_warned_about() {
        let config = parse(
            r#"udp = [{ addr = "0.0.0.0:5060", advertise = "203.0.113.7" }]
               tcp = ["0.0.0.0:5060", "127.0.0.1:5070"]"#,
            "",
        )
        .unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("sip.tcp[0]: 0.0.0.0:5060 listens on every address"),
            "{warnings:?}"
        );
        assert!(Config::dev().warnings().is_empty());
    }
}
