//! SIP over WebSocket (RFC 7118) on the public side: `ws:` and `wss:`
//! listeners for browser softphones. The upgrade request head is read
//! here within `ws.upgrade_timeout` and `ws.max_header` and checked by the
//! core (`Core::on_ws_upgrade`) before any SIP; a refusal gets the core's
//! plain HTTP error. After the 101, tokio-tungstenite does the framing:
//! each text or binary message is one SIP message for `Core::handle`, and
//! what the core sends to the connection leaves as a text message. The
//! connection sits in `TcpConns` under `Transport::Ws`/`Wss`, so responses
//! and Asterisk's requests through the Path flow token find it, and it
//! counts toward `tcp.max_connections` with TCP's and TLS's.

use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use sipwarden_core::flow::{Flow, Side, Transport};
use sipwarden_core::policy::ws::Upgrade;
use sipwarden_core::web;

use super::egress::Egress;
use super::now_ms;
use super::tcp::{WriterGuard, WRITER_GRACE};

/// The longest a refusal or the 101 may take to write: a peer that does
/// not read does not hold the connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer per connection: an idle browser costs little, a message
/// larger than it is read in several steps.
const READ_BUFFER: usize = 1024;

/// Accepts connections on a `ws:` or `wss:` listener (`transport`) until
/// the task is aborted. Each counts toward `tcp.max_connections` from the
/// accept on; a banned or denied source is closed at once.
pub async fn accept_loop(
    eg: Arc<Egress>,
    listener: TcpListener,
    side: Side,
    transport: Transport,
    listener_idx: Arc<AtomicU8>,
) {
    loop {
        let (stream, flow) =
            super::tcp::accept(&eg, &listener, side, transport, &listener_idx).await;
        if !eg.core.on_accept(now_ms(), &flow) {
            eg.tcp.release();
            continue;
        }
        let eg = eg.clone();
        tokio::spawn(async move {
            if transport == Transport::Wss {
                // The server-name gate and the handshake of `tls:`.
                if let Some((tls, sni)) = super::tls::handshake(&eg, stream, &flow).await {
                    serve(eg, tls, flow, sni).await;
                }
            } else {
                serve(eg, stream, flow, None).await;
            }
        });
    }
}

/// One connection whose place is reserved: the upgrade request, the
/// core's verdict, then SIP over WebSocket until it closes.
async fn serve<S>(eg: Arc<Egress>, mut stream: S, flow: Flow, sni: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some((key, rest)) = upgrade(&eg, &mut stream, &flow, sni.as_deref()).await else {
        eg.tcp.release();
        return;
    };
    let answer = web::switching_protocols(&derive_accept_key(key.as_bytes()));
    if !write_answer(&mut stream, &answer).await {
        eg.tcp.release();
        return;
    }
    let max = eg.core.settings().limits.max_message;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Each message is written out at once; a peer that stops reading
        // fills at most this much before sends fail.
        .write_buffer_size(0)
        .max_write_buffer_size(16 * max)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await;
    tracing::debug!(remote = %flow.remote, transport = %flow.transport, "WebSocket upgraded");
    let (id, tx, rx) = eg.tcp.register(flow.side, flow.transport, flow.remote);
    run(eg, ws, flow, id, tx, rx).await;
}

/// Reads the upgrade request within `ws.upgrade_timeout` and asks the
/// core. `Some((key, rest))` to upgrade (`rest`: bytes read past the
/// head); `None` once the connection is answered or gone.
async fn upgrade<S>(
    eg: &Arc<Egress>,
    stream: &mut S,
    flow: &Flow,
    sni: Option<&str>,
) -> Option<(String, Vec<u8>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = eg.core.settings().config.ws.upgrade_timeout.0;
    let deadline = tokio::time::Instant::now() + timeout;
    // Read into the heap buffer itself: an array here would be part of
    // the connection's task (this future is in it) for its whole life.
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => {
                tracing::debug!(remote = %flow.remote, "no WebSocket upgrade in time, closing");
                eg.core.on_ws_timeout(now_ms(), flow, &buf);
                write_answer(stream, &web::refusal(408, "no upgrade request in time")).await;
                return None;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
        match eg.core.on_ws_upgrade(now_ms(), flow, &buf, sni) {
            Upgrade::More => {}
            Upgrade::Refuse(r) => {
                write_answer(stream, &web::refusal(r.status, r.why)).await;
                return None;
            }
            Upgrade::Accept { key, head_len } => {
                let rest = buf.get(head_len..).unwrap_or_default().to_vec();
                return Some((key, rest));
            }
        }
    }
}

/// Writes an HTTP answer within [`ANSWER_TIMEOUT`]; after a refusal the
/// connection is shut down. False when it could not be written.
async fn write_answer<S: AsyncWrite + Unpin>(stream: &mut S, answer: &[u8]) -> bool {
    let write = async {
        stream.write_all(answer).await?;
        stream.flush().await
    };
    let ok = matches!(
        tokio::time::timeout(ANSWER_TIMEOUT, write).await,
        Ok(Ok(()))
    );
    if ok && !answer.starts_with(b"HTTP/1.1 101") {
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, stream.shutdown()).await;
    }
    ok
}

/// The first line of a message, for the debug log (bounded, lossy).
fn first_line(b: &[u8]) -> String {
    let end = b
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(b.len())
        .min(120);
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

/// The SIP message as a WebSocket message: text when it is UTF-8 (what
/// browsers expect), binary otherwise (RFC 7118 allows both).
fn to_message(b: Bytes) -> Message {
    match Utf8Bytes::try_from(b.clone()) {
        Ok(t) => Message::Text(t),
        Err(_) => Message::Binary(b),
    }
}

/// Serves an upgraded connection like `tcp::run` serves a stream: a
/// writer drains the queue as WebSocket messages (and pings every
/// `ws.ping_interval`), the reader hands each message to the core; idle
/// for `tcp.idle_timeout` (pongs count as traffic), a close, an error or
/// shutdown ends it.
async fn run<S>(
    eg: Arc<Egress>,
    ws: WebSocketStream<S>,
    flow: Flow,
    id: u64,
    tx: mpsc::Sender<Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let guard = WriterGuard::new(&eg.tcp);
    let ping = eg.core.settings().config.ws.ping_interval.0;
    let mut writer = tokio::spawn(async move {
        let _guard = guard;
        let flow = flow;
        let mut tick = tokio::time::interval(if ping.is_zero() {
            Duration::from_secs(3600)
        } else {
            ping
        });
        tick.tick().await;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(b) => {
                        tracing::debug!(remote = %flow.remote, line = %first_line(&b), "SIP over WebSocket out");
                        if sink.send(to_message(b)).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick(), if !ping.is_zero() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    let idle = Duration::from_millis(eg.core.settings().config.tcp.idle_timeout.ms());
    let stop = eg.tcp.stopped();
    tokio::pin!(stop);
    loop {
        if eg.tcp.closing() {
            break;
        }
        let next = tokio::select! {
            _ = &mut stop => break,
            r = tokio::time::timeout(idle, stream.next()) => r,
        };
        let msg = match next {
            Err(_) => {
                tracing::debug!(remote = %flow.remote, "WebSocket connection idle, closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. })))) => {
                tracing::debug!(remote = %flow.remote, size, "WebSocket message too large, closing");
                eg.execute(eg.core.on_truncated(now_ms(), &flow, b""));
                break;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(remote = %flow.remote, error = %e, "WebSocket error, closing");
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        let data = match msg {
            Message::Text(t) => Bytes::from(t),
            Message::Binary(b) => b,
            Message::Close(_) => break,
            // Pings are answered by the WebSocket layer; pongs only show
            // the browser is there.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        tracing::debug!(remote = %flow.remote, line = %first_line(&data), "SIP over WebSocket in");
        let out = eg.core.handle(now_ms(), &flow, data);
        eg.execute(out);
    }
    eg.tcp
        .unregister(flow.side, flow.transport, flow.remote, id);
    drop(tx);
    let grace = WRITER_GRACE.max(eg.core.settings().config.tcp.drain_timeout.0);
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
    }
}
