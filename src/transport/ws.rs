//! SIP over WebSocket (RFC 7118): WS and WSS listeners for browser softphones.
//!
//! The accept loop is the TCP one (`tcp::accept_each`: the connection slot is taken before
//! `accept`). Each connection then has `handshake_timeout` for everything before the first SIP
//! message may flow: the TLS handshake on WSS (the `[tls]` material, SNI included) and the
//! HTTP upgrade. The upgrade (tokio-tungstenite, not a hand-written framer) is refused with
//! `400` unless the client offers the `sip` subprotocol, and with `403` when its `Origin` is
//! not on the listener's allowlist; the answer selects `Sec-WebSocket-Protocol: sip`.
//!
//! After the upgrade every text or binary message is one SIP message, handed to the same
//! `Handler` as any stream (the framing is the WebSocket's, so no Content-Length framing). A
//! message or frame larger than `max_message_bytes` closes the connection (1009). When the
//! peer has sent nothing for `ping_interval` a ping goes out; a connection that has sent
//! nothing (not even a pong) for `idle_timeout` is closed. The connection is a flow like a
//! TCP one: the registrar binds it (RFC 5626 outbound), the proxy's Record-Route flow tokens
//! name it, and its bindings go when it closes (`Handler::on_flow_closed`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::task::TaskTracker;

use super::tcp::{accept_each, StreamContext};
use super::tls::TlsState;
use super::{FlowInfo, Later, Source, Transport};
use crate::config::{ClientAuth, OriginPolicy, WsConfig};

/// The subprotocol RFC 7118 registers.
pub const SUBPROTOCOL: &str = "sip";

/// What one WebSocket listener needs besides the shared stream context.
#[derive(Clone)]
pub struct WsServing {
    pub origins: Arc<OriginPolicy>,
    /// WSS: the TLS material; `None` for plain WS.
    pub tls: Option<TlsState>,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub max_message_bytes: usize,
}

impl WsServing {
    /// The serving settings of `[ws]` for one listener.
    pub fn new(config: &WsConfig, origins: OriginPolicy, tls: Option<TlsState>) -> WsServing {
        WsServing {
            origins: Arc::new(origins),
            tls,
            handshake_timeout: config.handshake_timeout,
            ping_interval: config.ping_interval,
            max_message_bytes: config.max_message_bytes,
        }
    }
}

/// Accepts WebSocket connections on `listener`; `ctx.limits.max_connections` bounds its
/// open connections (upgrading or established).
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    serving: WsServing,
    ctx: StreamContext,
    tracker: TaskTracker,
) {
    let serve_ctx = ctx.clone();
    accept_each(listener, &ctx, &tracker, move |stream, peer, local| {
        upgrade_then_serve(stream, peer, local, serving.clone(), serve_ctx.clone())
    })
    .await;
}

async fn upgrade_then_serve(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    serving: WsServing,
    ctx: StreamContext,
) {
    let deadline = Instant::now() + serving.handshake_timeout;
    match serving.tls.clone() {
        None => {
            let Some(ws) = upgrade(stream, &serving, deadline, &ctx).await else {
                return;
            };
            serve(ws, Transport::Ws, peer, local, &serving, ctx).await;
        }
        Some(state) => {
            let Some(config) = state.server_config(ClientAuth::Off) else {
                return;
            };
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            let tls = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                r = tokio::time::timeout_at(deadline, accept) => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "wss: tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "wss: tls handshake deadline passed");
                        return;
                    }
                },
            };
            let Some(ws) = upgrade(tls, &serving, deadline, &ctx).await else {
                return;
            };
            serve(ws, Transport::Wss, peer, local, &serving, ctx).await;
        }
    }
}

/// The HTTP upgrade under the handshake deadline; `None` when refused, failed or late.
async fn upgrade<S>(
    stream: S,
    serving: &WsServing,
    deadline: Instant,
    ctx: &StreamContext,
) -> Option<tokio_tungstenite::WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let origins = serving.origins.clone();
    #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
    let check = move |req: &Request, resp: Response| check_upgrade(&origins, req, resp);
    let config = WebSocketConfig::default()
        .max_message_size(Some(serving.max_message_bytes))
        .max_frame_size(Some(serving.max_message_bytes));
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    tokio::select! {
        _ = ctx.shutdown.cancelled() => None,
        r = tokio::time::timeout_at(deadline, upgrade) => match r {
            Ok(Ok(ws)) => Some(ws),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket upgrade refused or failed");
                None
            }
            Err(_) => {
                tracing::debug!("websocket upgrade deadline passed");
                None
            }
        },
    }
}

/// RFC 7118 §4: the client must offer `sip`; the answer selects it. The `Origin` must be on
/// the allowlist (RFC 6455 §10.2).
#[allow(clippy::result_large_err)] // the callback's type is tungstenite's
fn check_upgrade(
    origins: &OriginPolicy,
    req: &Request,
    mut resp: Response,
) -> Result<Response, ErrorResponse> {
    let origin = req
        .headers()
        .get("origin")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    if !origins.allows(origin) {
        return Err(refusal(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let offers_sip = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offers_sip {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the sip subprotocol is required (RFC 7118)",
        ));
    }
    resp.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(why.to_owned()));
    *resp.status_mut() = status;
    resp
}

/// Serves one upgraded connection until it closes, its idle deadline passes or `halt`.
async fn serve<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    serving: &WsServing,
    ctx: StreamContext,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (flow, mut outbound) = ctx.flows.open(FlowInfo {
        transport,
        local,
        peer,
    });
    let src = Source {
        transport,
        peer,
        local,
        flow: Some(flow),
        identity: None,
    };
    let open_gauge = ctx.metrics.stream_connections(transport).clone();
    open_gauge.inc();
    let (mut sink, mut stream) = ws.split();
    let write_timeout = ctx.limits.write_timeout;
    let mut heard = Instant::now();
    let mut pinged = false;
    let mut close: Option<CloseFrame> = None;
    loop {
        let ping_at = heard + serving.ping_interval;
        let idle_at = heard + ctx.limits.idle_timeout;
        let next = if pinged {
            idle_at
        } else {
            ping_at.min(idle_at)
        };
        tokio::select! {
            _ = ctx.halt.cancelled() => {
                close = Some(CloseFrame { code: CloseCode::Away, reason: Utf8Bytes::from_static("shutting down") });
                break;
            }
            _ = tokio::time::sleep_until(next) => {
                if Instant::now() >= idle_at {
                    tracing::debug!(%peer, "websocket idle; closing");
                    break;
                }
                pinged = true;
                if !send(&mut sink, Message::Ping(Bytes::new()), write_timeout).await {
                    break;
                }
            }
            out = outbound.recv() => {
                let Some(out) = out else { break };
                if !out.bytes.is_empty() && !send(&mut sink, to_message(out.bytes), write_timeout).await {
                    break;
                }
                if out.close {
                    break;
                }
            }
            read = stream.next() => {
                let msg = match read {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::debug!(%peer, error = %e, "websocket message too large; closing");
                        close = Some(CloseFrame { code: CloseCode::Size, reason: Utf8Bytes::from_static("message too large") });
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "websocket read failed; closing");
                        break;
                    }
                };
                heard = Instant::now();
                pinged = false;
                let data = match msg {
                    Message::Text(t) => Bytes::from(t),
                    Message::Binary(b) => b,
                    // tungstenite answers pings itself (flushed with the next write).
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => break,
                };
                // A frame of only CRLFs is a keep-alive some clients send; nothing to parse.
                if data.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ')) {
                    continue;
                }
                let reply = ctx.handler.handle(data, &src, Later::flow(&ctx.flows, flow));
                if let Some(bytes) = reply.bytes {
                    if !send(&mut sink, to_message(bytes), write_timeout).await {
                        break;
                    }
                }
                if reply.close {
                    break;
                }
            }
        }
    }
    // The closing handshake, bounded: a peer that does not read gets no more time.
    let bye = Message::Close(close);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = sink.send(bye).await;
        let _ = sink.close().await;
    })
    .await;
    ctx.flows.close(flow);
    open_gauge.dec();
    ctx.handler.on_flow_closed(flow);
}

/// SIP text goes as a text message (what browsers' SIP stacks expect); anything that is not
/// UTF-8 as binary.
fn to_message(bytes: Bytes) -> Message {
    match std::str::from_utf8(&bytes).is_ok() {
        true => Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default()),
        false => Message::Binary(bytes),
    }
}

async fn send<W>(sink: &mut W, msg: Message, limit: Duration) -> bool
where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    matches!(
        tokio::time::timeout(limit, sink.send(msg)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn upgrade_needs_sip_and_an_allowed_origin() {
        let listed = OriginPolicy::Listed(vec!["https://phone.example.com".into()]);
        let ok = check_upgrade(
            &listed,
            &request(&[
                ("origin", "https://phone.example.com"),
                ("sec-websocket-protocol", "foo, sip"),
            ]),
            Response::new(()),
        )
        .unwrap();
        assert_eq!(ok.headers()["sec-websocket-protocol"], "sip");
        let no_sip = check_upgrade(
            &listed,
            &request(&[("sec-websocket-protocol", "chat")]),
            Response::new(()),
        )
        .unwrap_err();
        assert_eq!(no_sip.status(), StatusCode::BAD_REQUEST);
        let foreign = check_upgrade(
            &listed,
            &request(&[
                ("origin", "https://evil.example"),
                ("sec-websocket-protocol", "sip"),
            ]),
            Response::new(()),
        )
        .unwrap_err();
        assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    }
}
