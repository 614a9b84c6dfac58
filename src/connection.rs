//! One WebSocket connection after the upgrade: its reader, its session (authentication state),
//! and the task that runs the reader and the writer side by side on the connection's shard.
//!
//! The reader takes frames from [`crate::frame_reader`] (which holds no buffer while idle),
//! assembles fragmented messages and caps the whole message (not only each frame) at
//! `max_message_size_bytes`, answering an oversize message with close code 1009 rather than
//! dropping the socket; it answers pings and closes through the writer, which owns the socket's
//! write half. Handling a message runs in a boxed future, so an idle connection's task keeps
//! only the small state of waiting for the next frame.

use crate::auth::AuthError;
use crate::client::ClientHandle;
use crate::frame::OutFrame;
use crate::frame_reader::{opcode, read_frame, FrameError};
use crate::hub::{ConnectionSlot, Hub};
use crate::protocol::{parse_request, reply, ErrorCode, Request};
use crate::subscription::{all_types, remove_types};
use crate::writer::{self, WriterExit};
use bytes::Bytes;
use fastwebsockets::OpCode;
use parking_lot::Mutex;
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

/// The side of a connection left to finish its part of the closing handshake.
enum Finish {
    /// The writer: it has a close frame queued.
    Writer,
    /// The reader: the peer may still answer our close frame.
    Reader,
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
        let advice = crate::hub::jitter(cfg.shutdown.reconnect_after_ms);
        client.request_goodbye(crate::client::Goodbye::shutdown(advice));
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

    // Which side still has something to finish once the other has ended.
    let finish = tokio::select! {
        r = &mut reader => (r == ReaderExit::CloseQueued).then_some(Finish::Writer),
        w = &mut writer => matches!(w, Ok(WriterExit::Closed)).then_some(Finish::Reader),
        () = &mut watchdog => Some(Finish::Writer),
    };
    match finish {
        // The writer still has a close frame to send.
        Some(Finish::Writer) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
        // The close frame is sent: give the peer a moment to answer it.
        Some(Finish::Reader) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
        }
        None => {}
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
    let mut read = read;
    let client = &s.client;
    let mut partial: Option<Partial> = None;
    loop {
        let frame = match read_frame(&mut read, max).await {
            Ok(f) => f,
            Err(FrameError::Gone) => return ReaderExit::Gone,
            Err(FrameError::TooBig) => return protocol_close(client, 1009, "message too big"),
            Err(FrameError::Protocol(why)) => return protocol_close(client, 1002, why),
        };
        client.mark_heard(Instant::now());
        let (text, data) = match frame.opcode {
            opcode::CLOSE => return echo_close(client, &frame.payload),
            opcode::PING => {
                client.send_control(OutFrame::control(OpCode::Pong, &frame.payload));
                continue;
            }
            opcode::PONG => continue,
            opcode::TEXT | opcode::BINARY if partial.is_some() => {
                return protocol_close(client, 1002, "new message inside a fragmented message");
            }
            opcode::TEXT | opcode::BINARY if !frame.fin => {
                partial = Some(Partial {
                    text: frame.opcode == opcode::TEXT,
                    data: frame.payload,
                });
                continue;
            }
            opcode::TEXT | opcode::BINARY => (frame.opcode == opcode::TEXT, frame.payload),
            _ => {
                // Continuation (the reader refuses every other opcode).
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
        if !Box::pin(handle_message(s, text)).await {
            return ReaderExit::CloseQueued;
        }
        if !client.send_control_room() {
            return protocol_close(client, 1008, "too many unread replies");
        }
    }
}

/// Queues a close frame with `code` and ends reading.
fn protocol_close(client: &ClientHandle, code: u16, reason: &str) -> ReaderExit {
    client.send_control(OutFrame::close(code, reason));
    ReaderExit::CloseQueued
}

/// Answers the client's close frame with the same code (RFC 6455 5.5.1) and ends reading.
fn echo_close(client: &ClientHandle, payload: &[u8]) -> ReaderExit {
    match payload.len() {
        0 => protocol_close(client, 1000, ""),
        1 => protocol_close(client, 1002, "close frame with a one-byte body"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return protocol_close(client, 1002, "invalid close code");
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return protocol_close(client, 1007, "invalid UTF-8 in close reason");
            }
            protocol_close(client, code, "")
        }
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
