//! `Transport`: the SIP transports this server speaks, by the names of RFC 3261 §18 (the
//! `transport` URI parameter, the Via sent-protocol). Below every layer that names one: the
//! transports that carry messages, the registrar's bindings, the proxy's targets and metrics.
//! `FlowId`: the one stream connection a message came over, named by the same layers (a
//! binding remembers it, the proxy sends back over it); the flow table itself is `transport`'s.

/// Identifies one TCP/TLS/WebSocket connection for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// The transport a message came in on or leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    /// SIP over WebSocket (RFC 7118), plain.
    Ws,
    /// SIP over WebSocket over TLS (RFC 7118): what browsers use.
    Wss,
}

impl Transport {
    /// Every transport, for metric labels.
    pub const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// Whether this is a WebSocket transport (RFC 7118): a message per frame, and the
    /// peer's Contact names a host nobody can reach (`*.invalid`), so it is reached only
    /// over its connection.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// The lowercase name: the `transport` URI parameter value and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// A transport name as written in a URI parameter or a Via (case-insensitive); `None`
    /// for one this server does not speak (SCTP).
    pub fn parse(name: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| name.eq_ignore_ascii_case(t.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(Transport::parse("TCP"), Some(Transport::Tcp));
        assert_eq!(Transport::parse("tls"), Some(Transport::Tls));
        assert_eq!(Transport::parse("Udp"), Some(Transport::Udp));
        assert_eq!(Transport::parse("WSS"), Some(Transport::Wss));
        assert_eq!(Transport::parse("ws"), Some(Transport::Ws));
        assert_eq!(Transport::parse("sctp"), None);
        assert_eq!(Transport::parse(""), None);
    }
}
