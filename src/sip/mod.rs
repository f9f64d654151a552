//! The SIP message layer: parse, typed views, URIs, Digest credentials, stream framing and
//! building. It is the only code that reads raw header bytes; everything above asks it for
//! typed views. It knows nothing of sockets, transactions, users or policy.
//!
//! | file | owns |
//! | --- | --- |
//! | `message.rs` | `Message::parse`: start line, header index (offsets; line ends found once), body, eager checks (CSeq kept parsed); `Limits`, `Method` |
//! | `header.rs` | `HeaderName`: canonical names and compact forms (case-folded word lookup) |
//! | `scan.rs` | lexing: byte-class tables, tokens, LWS, quoted strings, `Params`, comma lists, numbers |
//! | `host_port.rs` | `HostPort`: host and optional port as sipward writes itself into Via and Record-Route; `HostKey`, a host as compared |
//! | `uri.rs` | `Uri` (sip, sips, tel, others raw), §19.1.4 comparison key, `Aor` (the one AoR type, built by parsing) |
//! | `cseq.rs` | `CSeq`: number and method, read by `Message::parse` and the views |
//! | `views.rs` | `Via`, `NameAddr`, `Contact` (parameters the accessors read noted in one scan) and the `Message` accessors |
//! | `digest.rs` | `Credentials`/`DigestParams` from Authorization headers |
//! | `framing.rs` | `StreamFramer` for TCP/TLS, CRLF keep-alives |
//! | `builder.rs` | `ResponseBuilder`, `forward` edits for the proxy |
//! | `error.rs` | `ParseError` and the `Reaction` a server takes |
//! | `status.rs` | `Status` (a status code, parsed; reason phrases) and `StatusClass` (the metric label) |
//! | `transport.rs` | `Transport`: UDP, TCP, TLS by their RFC 3261 names |
//!
//! Why our own parser: see docs/architecture.md (`rsip` rejects what real phones send and is slow).
//! The header section must be UTF-8 (SIP is UTF-8 text); a message that is not is dropped.

mod builder;
mod cseq;
mod digest;
mod error;
mod framing;
mod header;
mod host_port;
mod message;
mod scan;
mod status;
mod transport;
mod uri;
mod views;

pub use builder::{forward, ForwardEdits, ResponseBuilder, ViaReceived};
pub use cseq::CSeq;
pub use digest::{Credentials, DigestParams};
pub use error::{ParseError, Reaction};
pub use framing::{Frame, StreamFramer};
pub use header::HeaderName;
pub use host_port::{HostKey, HostPort};
pub use message::{Header, Limits, Message, Method, Span, StartLine};
pub use scan::{Param, Params};
pub use status::{Status, StatusClass};
pub use transport::{FlowId, Transport};
pub use uri::{Aor, Host, Scheme, Uri};
pub use views::{Contact, ContactAddr, NameAddr, Via};
