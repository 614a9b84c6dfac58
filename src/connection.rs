//! One WebSocket connection after the upgrade: its reader, its session (authentication state),
//! and the task that runs the reader and the writer side by side on the connection's shard.
//!
//! The reader parses frames with fastwebsockets and covers what that crate leaves to the
//! application: it assembles fragmented messages itself and caps the whole message (not only
//! each frame) at `max_message_size_bytes`, answering an oversize message with close code 1009
//! rather than dropping the socket; it routes pongs and close replies to the writer, which owns
//! the socket's write half.

use crate::auth::AuthError;
use crate::client::ClientHandle;
use crate::frame::OutFrame;
use crate::hub::{ConnectionSlot, Hub};
use crate::protocol::{parse_request, reply, ErrorCode, Request};
use crate::subscription::{all_types, remove_types};
use crate::writer::{self, WriterExit};
use bytes::Bytes;
use fastwebsockets::{after_handshake_split, OpCode, Role, WebSocketError};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long to wait for the peer's side of a closing handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where a connection stands with authentication.
#[derive(Debug, Clone, Copy)]
enum AuthPhase {
    /// Auth is off: everything is allowed.
    Off,
    /// Waiting for the first `auth` until the deadline.
    Pending(Instant),
    /// Authenticated; the token expires at the given time, if ever.
    Authed(Option<Instant>),
    /// The token expired; a fresh `auth` is needed before the deadline.
    Expired(Instant),
}

impl AuthPhase {
    /// When the watchdog must look again.
    fn deadline(self) -> Option<Instant> {
        match self {
            AuthPhase::Off | AuthPhase::Authed(None) => None,
            AuthPhase::Pending(d) | AuthPhase::Authed(Some(d)) | AuthPhase::Expired(d) => Some(d),
        }
    }
}

/// What the reader and the auth watchdog share.
struct Session {
    /// The hub.
    hub: Arc<Hub>,
    /// This client.
    client: Arc<ClientHandle>,
    /// Authentication state (this connection's own lock).
    auth: Mutex<AuthPhase>,
    /// Wakes the watchdog when `auth` changes.
    auth_changed: Notify,
}

/// How the reader ended.
#[derive(Debug, PartialEq, Eq)]
enum ReaderExit {
    /// It queued a close frame (the client's close was echoed, or the server closes).
    CloseQueued,
    /// The socket ended or failed.
    Gone,
}

/// Serves one upgraded connection until it ends.
pub(crate) async fn run(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    stream: TcpStream,
    leftover: Bytes,
    slot: ConnectionSlot,
) {
    let _slot = slot;
    let cfg = &hub.config;
    let client = Arc::new(ClientHandle::new(
        shard,
        remote,
        cfg.backpressure.max_queue_size,
        cfg.backpressure.drop_oldest,
    ));
    client.mark_heard(Instant::now());
    let phase = if cfg.auth.enabled {
        AuthPhase::Pending(Instant::now() + Duration::from_secs_f64(cfg.auth.timeout_seconds))
    } else {
        client.authenticated.store(true, Relaxed);
        AuthPhase::Off
    };
    hub.register(client.clone());
    if hub.is_shutting_down() {
        client.request_shutdown(crate::hub::jitter(cfg.shutdown.reconnect_after_ms));
    }
    let session = Session {
        hub: hub.clone(),
        client: client.clone(),
        auth: Mutex::new(phase),
        auth_changed: Notify::new(),
    };

    let (read_half, write_half) = stream.into_split();
    // The writer is a task of its own, so waking it for an event never polls the reader.
    let mut writer = tokio::spawn(writer::run(write_half, client.clone(), hub.clone()));
    let reader = read_loop(&session, std::io::Cursor::new(leftover).chain(read_half));
    let watchdog = auth_watchdog(&session);
    tokio::pin!(reader, watchdog);

    tokio::select! {
        r = &mut reader => {
            if r == ReaderExit::CloseQueued {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
            }
        }
        w = &mut writer => {
            if matches!(w, Ok(WriterExit::Closed)) {
                // Give the peer a moment to answer the close frame.
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
            }
        }
        () = &mut watchdog => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
    }
    writer.abort();
    hub.unregister(&client);
}

/// Closes the connection with an error message and a close code.
fn refuse_and_close(client: &ClientHandle, code: ErrorCode, message: &str, close_code: u16) {
    client.send_control(reply::error(code, message));
    client.send_control(OutFrame::close(close_code, message));
}

/// Ends the connection when authentication does not happen or lapses.
async fn auth_watchdog(s: &Session) {
    loop {
        let phase = *s.auth.lock();
        match phase.deadline() {
            None if matches!(phase, AuthPhase::Off) => return std::future::pending().await,
            None => {
                s.auth_changed.notified().await;
                continue;
            }
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                    _ = s.auth_changed.notified() => continue,
                }
            }
        }
        let mut guard = s.auth.lock();
        if guard.deadline().is_none_or(|d| Instant::now() < d) {
            continue; // the phase changed while the timer ran
        }
        match *guard {
            AuthPhase::Pending(_) => {
                drop(guard);
                refuse_and_close(
                    &s.client,
                    ErrorCode::AUTH_FAILED,
                    "authentication timeout",
                    1008,
                );
                return;
            }
            AuthPhase::Authed(Some(_)) => {
                let grace = Duration::from_secs_f64(s.hub.config.auth.reauth_grace_seconds);
                *guard = AuthPhase::Expired(Instant::now() + grace);
                drop(guard);
                s.client.send_control(reply::error(
                    ErrorCode::AUTH_EXPIRED,
                    "token expired: send a fresh auth message",
                ));
            }
            AuthPhase::Expired(_) => {
                drop(guard);
                refuse_and_close(&s.client, ErrorCode::AUTH_FAILED, "token expired", 1008);
                return;
            }
            AuthPhase::Off | AuthPhase::Authed(None) => {}
        }
    }
}

/// A message being reassembled from fragments.
struct Partial {
    /// Text (true) or binary.
    text: bool,
    /// The bytes so far.
    data: Vec<u8>,
}

/// Reads frames until the connection ends.
async fn read_loop<R>(s: &Session, read: R) -> ReaderExit
where
    R: tokio::io::AsyncRead + Unpin,
{
    let max = s.hub.config.websocket.max_message_size_bytes;
    let (mut ws, _) = after_handshake_split(read, tokio::io::sink(), Role::Server);
    // fastwebsockets refuses frames of `max_message_size` bytes or more.
    ws.set_max_message_size(max + 1);
    let client = &s.client;
    let mut obligated = |frame: fastwebsockets::Frame<'_>| {
        client.send_control(OutFrame::control(frame.opcode, &frame.payload));
        std::future::ready(Ok::<(), Infallible>(()))
    };
    let mut partial: Option<Partial> = None;
    loop {
        let frame = match ws.read_frame(&mut obligated).await {
            Ok(f) => f,
            Err(e) => return on_read_error(client, e),
        };
        client.mark_heard(Instant::now());
        let (text, data) = match frame.opcode {
            OpCode::Close => return ReaderExit::CloseQueued, // the echo was queued by `obligated`
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text | OpCode::Binary if partial.is_some() => {
                return protocol_close(client, 1002, "new message inside a fragmented message");
            }
            OpCode::Text | OpCode::Binary if !frame.fin => {
                partial = Some(Partial {
                    text: frame.opcode == OpCode::Text,
                    data: frame.payload.to_vec(),
                });
                continue;
            }
            OpCode::Text | OpCode::Binary => (frame.opcode == OpCode::Text, frame.payload.to_vec()),
            OpCode::Continuation => {
                let Some(p) = partial.as_mut() else {
                    return protocol_close(client, 1002, "continuation without a message");
                };
                if p.data.len() + frame.payload.len() > max {
                    return protocol_close(client, 1009, "message too big");
                }
                p.data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    continue;
                }
                let Some(p) = partial.take() else { continue };
                (p.text, p.data)
            }
        };
        s.hub
            .metrics
            .local()
            .messages_received
            .fetch_add(1, Relaxed);
        client.received.fetch_add(1, Relaxed);
        if !text {
            client.send_control(reply::error(
                ErrorCode::INVALID_MESSAGE,
                "binary messages are not supported; send JSON text",
            ));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&data) else {
            return protocol_close(client, 1007, "invalid UTF-8");
        };
        if !handle_message(s, text).await {
            return ReaderExit::CloseQueued;
        }
        if !client_keeps_up(client) {
            return protocol_close(client, 1008, "too many unread replies");
        }
    }
}

/// Whether the client still reads its replies (its control queue has room).
fn client_keeps_up(client: &ClientHandle) -> bool {
    client.send_control_room()
}

/// Queues a close frame with `code` and ends reading.
fn protocol_close(client: &ClientHandle, code: u16, reason: &str) -> ReaderExit {
    client.send_control(OutFrame::close(code, reason));
    ReaderExit::CloseQueued
}

/// Maps a read error to a close code, or to a vanished peer.
fn on_read_error(client: &ClientHandle, e: WebSocketError) -> ReaderExit {
    match e {
        WebSocketError::FrameTooLarge => protocol_close(client, 1009, "message too big"),
        WebSocketError::InvalidUTF8 => protocol_close(client, 1007, "invalid UTF-8"),
        WebSocketError::IoError(_)
        | WebSocketError::UnexpectedEOF
        | WebSocketError::SendError(_) => ReaderExit::Gone,
        other => protocol_close(client, 1002, &other.to_string()),
    }
}

/// Handles one text message; false when the connection must close.
async fn handle_message(s: &Session, text: &str) -> bool {
    let client = &s.client;
    let request = match parse_request(text) {
        Ok(r) => r,
        Err(refusal) => {
            if needs_auth_first(s, None) {
                refuse_and_close(client, ErrorCode::AUTH_FAILED, "authenticate first", 1008);
                return false;
            }
            client.send_control(reply::error(refusal.code, &refusal.message));
            return true;
        }
    };
    if needs_auth_first(s, Some(&request)) {
        refuse_and_close(client, ErrorCode::AUTH_FAILED, "authenticate first", 1008);
        return false;
    }
    match request {
        Request::Auth { token } => authenticate(s, &token).await,
        Request::Ping { timestamp } => {
            client.send_control(reply::pong(timestamp.as_deref()));
            true
        }
        Request::Subscribe(sub) => {
            let mut subs = client.subscriptions.lock().clone();
            if subs.len() >= s.hub.config.websocket.max_subscriptions_per_client {
                client.send_control(reply::error(
                    ErrorCode::INVALID_SUBSCRIPTION,
                    &format!(
                        "too many subscriptions (most {})",
                        s.hub.config.websocket.max_subscriptions_per_client
                    ),
                ));
                return true;
            }
            let answer = reply::subscribed(&sub);
            subs.push(sub);
            s.hub.set_subscriptions(client, subs).await;
            client.send_control(answer);
            true
        }
        Request::Unsubscribe(types) => {
            let mut subs = client.subscriptions.lock().clone();
            let removed = match types {
                Some(t) => remove_types(&mut subs, &t),
                None => {
                    let all = all_types(&subs);
                    subs.clear();
                    all
                }
            };
            s.hub.set_subscriptions(client, subs).await;
            client.send_control(reply::unsubscribed(&removed));
            true
        }
    }
}

/// Whether this request is refused because the client has not authenticated yet.
fn needs_auth_first(s: &Session, request: Option<&Request>) -> bool {
    matches!(*s.auth.lock(), AuthPhase::Pending(_))
        && !matches!(
            request,
            Some(Request::Auth { .. }) | Some(Request::Ping { .. })
        )
}

/// Handles `auth`; false when the connection must close.
async fn authenticate(s: &Session, token: &str) -> bool {
    let client = &s.client;
    let phase = *s.auth.lock();
    if let AuthPhase::Off = phase {
        client.send_control(reply::auth_response(&client.id.to_string()));
        return true;
    }
    match s.hub.auth.authenticate(token).await {
        Ok(p) => {
            *s.auth.lock() = AuthPhase::Authed(p.expires_at);
            s.auth_changed.notify_one();
            *client.subject.lock() = Some(p.subject);
            client.authenticated.store(true, Relaxed);
            client.send_control(reply::auth_response(&client.id.to_string()));
            true
        }
        Err(e) => {
            let message = match e {
                AuthError::Invalid => "invalid token",
                AuthError::Expired => "token expired",
            };
            refuse_and_close(client, ErrorCode::AUTH_FAILED, message, 1008);
            false
        }
    }
}
