//! A connection's reader: frames in (from [`super::frame_reader`], which holds no buffer while
//! idle), whole messages out (through [`super::message`]), each text message handed to the
//! connection's [`Session`]. Pings are answered (each counted against the rate limit, like a
//! message) and close frames echoed through the writer,
//! which owns the socket's write half. Handling a message runs in a boxed future, so an idle
//! connection's task keeps only the small state of waiting for the next frame.
//!
//! Owns nothing beyond its loop: what it reads goes to the session.

use super::close::{self, CloseCode};
use super::frame_reader::{read_frame, FrameError};
use super::message::{Assembler, Message};
use crate::client::{ClientHandle, CONTROL_QUEUE_BYTES, CONTROL_QUEUE_LIMIT};
use crate::codec::{Codec, Deflate};
use crate::frame::deflate::InflateError;
use crate::frame::{message_buf, OutFrame};
use crate::session::{Admit, Session};
use fastwebsockets::OpCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;

/// How the reader ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReaderExit {
    /// It queued a close frame (the client's close was echoed, or the server closes).
    CloseQueued,
    /// The socket ended or failed.
    Gone,
}

/// Reads frames until the connection ends. Once a close frame is queued, the close lingers
/// ([`close::linger`]): what the peer still sends is read and dropped until it closes its side.
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(s: &Session, mut read: R) -> ReaderExit {
    let settings = &s.hub.settings.connection;
    let max = settings.max_message_bytes;
    let client = &s.client;
    let mut assembler = Assembler::new(max);
    let deflate = client.wire.deflate != Deflate::Off;
    // A fragmented message must be finished within one heartbeat interval.
    let assembly_limit = settings.assembly_limit;
    let exit = loop {
        let frame = match read_frame(&mut read, max, deflate).await {
            Ok(f) => f,
            Err(FrameError::Gone) => break ReaderExit::Gone,
            Err(FrameError::TooBig) => {
                break close_with(client, CloseCode::Size, "message too big")
            }
            Err(FrameError::Protocol(why)) => break close_with(client, CloseCode::Protocol, why),
        };
        let now = Instant::now();
        client.mark_heard(now);
        if assembler.overdue(now, assembly_limit) {
            break close_with(client, CloseCode::Policy, "fragmented message not finished");
        }
        let message = match frame.opcode {
            OpCode::Close => {
                let (code, why) = close::answer_to(&frame.payload);
                break close_with(client, code, why);
            }
            OpCode::Ping => {
                // Pings count against the message rate limit like any message (not on the
                // echo route, which has none): a flood of them is dropped, then closed 1008.
                match if s.echo { Admit::Pass } else { s.admit() } {
                    Admit::Pass => {
                        client.send_control(OutFrame::control(OpCode::Pong, &frame.payload));
                    }
                    Admit::Drop | Admit::DropAndWarn => {}
                    Admit::Close => break ReaderExit::CloseQueued,
                }
                continue;
            }
            OpCode::Pong => continue,
            _ => match assembler.push(frame) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err((code, why)) => break close_with(client, code, why),
            },
        };
        let message = match inflate(message, max) {
            Ok(m) => m,
            Err((code, why)) => break close_with(client, code, why),
        };
        // One boxed await for whatever a message leads to, so that the idle task holds only
        // the state of waiting for the next frame.
        if let Some(exit) = Box::pin(handle(s, message)).await {
            break exit;
        }
    };
    if exit == ReaderExit::CloseQueued {
        Box::pin(close::linger(&mut read, close::CLOSE_GRACE)).await;
    }
    exit
}

/// A compressed message inflated (within the size cap); others as they are.
fn inflate(message: Message, max: usize) -> Result<Message, (CloseCode, &'static str)> {
    if !message.compressed {
        return Ok(message);
    }
    match crate::frame::deflate::decompress(&message.data, max) {
        Ok(data) => Ok(Message {
            data,
            compressed: false,
            ..message
        }),
        Err(InflateError::TooBig) => Err((CloseCode::Size, "message too big")),
        Err(InflateError::Invalid) => Err((CloseCode::Invalid, "bad compressed data")),
    }
}

/// Acts on one whole message: echoed on the echo route; otherwise counted against the rate
/// limit and handed to the session. `Some` ends the connection.
async fn handle(s: &Session, message: Message) -> Option<ReaderExit> {
    let client = &s.client;
    if s.echo {
        return echo(client, message).await;
    }
    s.hub
        .metrics
        .local()
        .messages_received
        .fetch_add(1, Relaxed);
    client.activity.received.fetch_add(1, Relaxed);
    match s.admit() {
        Admit::Pass => {}
        Admit::Drop | Admit::DropAndWarn => return None,
        Admit::Close => return Some(ReaderExit::CloseQueued),
    }
    let text = match (client.wire.codec, message.text) {
        (Codec::Json, true) => match std::str::from_utf8(&message.data) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => return Some(close_with(client, CloseCode::Invalid, "invalid UTF-8")),
        },
        (Codec::MsgPack, false) => match crate::codec::msgpack_to_json(&message.data) {
            Ok(text) => std::borrow::Cow::Owned(text),
            Err(why) => {
                return (!s.refuse_undecodable(&why)).then_some(ReaderExit::CloseQueued);
            }
        },
        (codec, _) => return (!s.handle_wrong_frame(codec)).then_some(ReaderExit::CloseQueued),
    };
    if !s.handle_message(&text).await {
        return Some(ReaderExit::CloseQueued);
    }
    if !client.send_control_room() {
        return Some(close_with(
            client,
            CloseCode::Policy,
            "too many unread replies",
        ));
    }
    None
}

/// Longest an echo waits for the client to read earlier echoes before it gives up.
const ECHO_STALL: Duration = Duration::from_secs(5);

/// The echo route (`websocket.echo_path`): sends `message` back as it came, through the same
/// writer as every reply (a text message must be UTF-8, else close 1007). While the client has
/// too many echoes unread, waits for it to read them instead of closing at once. `Some` ends
/// the connection.
async fn echo(client: &ClientHandle, message: Message) -> Option<ReaderExit> {
    if message.text && std::str::from_utf8(&message.data).is_err() {
        return Some(close_with(client, CloseCode::Invalid, "invalid UTF-8"));
    }
    let opcode = if message.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    // With compression negotiated, every echo goes compressed, whatever its size (the hub's
    // own messages skip it under 128 bytes; conformance runners expect it on every message).
    let frame = match client.wire.deflate {
        Deflate::Off => {
            let mut buf = message_buf(message.data.len());
            buf.extend_from_slice(&message.data);
            Arc::new(OutFrame::from_headroom(buf, opcode))
        }
        Deflate::Inbound => OutFrame::compressed(&message.data, opcode, true),
        Deflate::Both => OutFrame::compressed(&message.data, opcode, false),
    };
    // Wait until this echo fits in the reply queue (one larger than its byte bound goes into
    // an empty queue), so that no echo is ever refused.
    let started = Instant::now();
    let bounds = (CONTROL_QUEUE_LIMIT, CONTROL_QUEUE_BYTES);
    while !client.room_for(frame.bytes().len(), bounds) {
        if started.elapsed() > ECHO_STALL {
            return Some(close_with(client, CloseCode::Policy, "echoes not read"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client.send_control(frame);
    None
}

/// Queues a close frame with `code` and ends reading.
fn close_with(client: &ClientHandle, code: CloseCode, reason: &str) -> ReaderExit {
    client.send_control(OutFrame::close(code, reason));
    ReaderExit::CloseQueued
}
