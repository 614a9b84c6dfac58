//! A connection's reader: frames in (from [`super::frame_reader`], which holds no buffer while
//! idle), whole messages out (through [`super::message`]), each text message handed to the
//! connection's [`Session`]. Pings are answered and close frames echoed through the writer,
//! which owns the socket's write half. Handling a message runs in a boxed future, so an idle
//! connection's task keeps only the small state of waiting for the next frame.

use super::close::{self, CloseCode};
use super::frame::OutFrame;
use super::frame_reader::{read_frame, FrameError};
use super::message::Assembler;
use crate::client::ClientHandle;
use crate::session::{Admit, Session};
use fastwebsockets::OpCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::AsyncRead;

/// How the reader ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReaderExit {
    /// It queued a close frame (the client's close was echoed, or the server closes).
    CloseQueued,
    /// The socket ended or failed.
    Gone,
}

/// Reads frames until the connection ends.
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(s: &Session, mut read: R) -> ReaderExit {
    let max = s.hub.config.websocket.max_message_size_bytes;
    let client = &s.client;
    let mut assembler = Assembler::new(max);
    // A fragmented message must be finished within one heartbeat interval.
    let assembly_limit =
        std::time::Duration::from_secs_f64(s.hub.config.websocket.heartbeat_interval_seconds);
    loop {
        let frame = match read_frame(&mut read, max).await {
            Ok(f) => f,
            Err(FrameError::Gone) => return ReaderExit::Gone,
            Err(FrameError::TooBig) => {
                return close_with(client, CloseCode::Size, "message too big")
            }
            Err(FrameError::Protocol(why)) => return close_with(client, CloseCode::Protocol, why),
        };
        let now = Instant::now();
        client.mark_heard(now);
        if assembler.overdue(now, assembly_limit) {
            return close_with(client, CloseCode::Policy, "fragmented message not finished");
        }
        let message = match frame.opcode {
            OpCode::Close => {
                let (code, why) = close::answer_to(&frame.payload);
                return close_with(client, code, why);
            }
            OpCode::Ping => {
                client.send_control(OutFrame::control(OpCode::Pong, &frame.payload));
                continue;
            }
            OpCode::Pong => continue,
            _ => match assembler.push(frame) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err((code, why)) => return close_with(client, code, why),
            },
        };
        s.hub
            .metrics
            .local()
            .messages_received
            .fetch_add(1, Relaxed);
        client.received.fetch_add(1, Relaxed);
        match s.admit() {
            Admit::Pass => {}
            Admit::Drop | Admit::DropAndWarn => continue,
            Admit::Close => return ReaderExit::CloseQueued,
        }
        if !message.text {
            if !s.handle_binary() {
                return ReaderExit::CloseQueued;
            }
            continue;
        }
        let Ok(text) = std::str::from_utf8(&message.data) else {
            return close_with(client, CloseCode::Invalid, "invalid UTF-8");
        };
        if !Box::pin(s.handle_message(text)).await {
            return ReaderExit::CloseQueued;
        }
        if !client.send_control_room() {
            return close_with(client, CloseCode::Policy, "too many unread replies");
        }
    }
}

/// Queues a close frame with `code` and ends reading.
fn close_with(client: &ClientHandle, code: CloseCode, reason: &str) -> ReaderExit {
    client.send_control(OutFrame::close(code, reason));
    ReaderExit::CloseQueued
}
