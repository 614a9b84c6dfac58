//! Message assembly: data frames in, whole messages out. A message may come in fragments (a
//! text or binary frame without FIN, then continuation frames); the cap
//! `websocket.max_message_size_bytes` applies to the whole message, not only to each frame.
//! Control frames never reach here (they may arrive between fragments and are answered by the
//! reader at once). A fragmented message must be finished within a time limit, so that a client
//! that keeps answering pings cannot hold a partial message for ever.
//!
//! Owns one connection's partly assembled message; only its reader changes it.

use super::close::CloseCode;
use super::frame_reader::ClientFrame;
use fastwebsockets::OpCode;
use std::time::{Duration, Instant};

/// One whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// Text (true) or binary.
    pub(crate) text: bool,
    /// Its bytes.
    pub(crate) data: Vec<u8>,
    /// Compressed (permessage-deflate): to be inflated before use.
    pub(crate) compressed: bool,
}

/// Why a message cannot be assembled: the close code and reason to end the connection with.
pub(crate) type Violation = (CloseCode, &'static str);

/// Reassembles fragmented messages.
pub(crate) struct Assembler {
    /// Largest message accepted.
    max: usize,
    /// The message being reassembled, if any.
    partial: Option<Message>,
    /// When its first fragment arrived.
    since: Option<Instant>,
}

impl Assembler {
    /// An assembler of messages up to `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            partial: None,
            since: None,
        }
    }

    /// Whether a fragmented message has been open for longer than `limit` at `now`.
    pub(crate) fn overdue(&self, now: Instant, limit: Duration) -> bool {
        self.since
            .is_some_and(|t| now.saturating_duration_since(t) > limit)
    }

    /// Takes one data frame; returns the message it completes, if any.
    pub(crate) fn push(&mut self, frame: ClientFrame) -> Result<Option<Message>, Violation> {
        let text = frame.opcode == OpCode::Text;
        match frame.opcode {
            OpCode::Text | OpCode::Binary if self.partial.is_some() => Err((
                CloseCode::Protocol,
                "new message inside a fragmented message",
            )),
            OpCode::Text | OpCode::Binary if !frame.fin => {
                self.partial = Some(Message {
                    text,
                    data: frame.payload,
                    compressed: frame.compressed,
                });
                self.since = Some(Instant::now());
                Ok(None)
            }
            OpCode::Text | OpCode::Binary => Ok(Some(Message {
                text,
                data: frame.payload,
                compressed: frame.compressed,
            })),
            _ => self.continue_with(frame),
        }
    }

    /// Adds a continuation frame to the message being reassembled.
    fn continue_with(&mut self, frame: ClientFrame) -> Result<Option<Message>, Violation> {
        let Some(p) = self.partial.as_mut() else {
            return Err((CloseCode::Protocol, "continuation without a message"));
        };
        if p.data.len() + frame.payload.len() > self.max {
            return Err((CloseCode::Size, "message too big"));
        }
        p.data.extend_from_slice(&frame.payload);
        if !frame.fin {
            return Ok(None);
        }
        self.since = None;
        Ok(self.partial.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> ClientFrame {
        ClientFrame {
            fin,
            opcode,
            payload: payload.to_vec(),
            compressed: false,
        }
    }

    #[test]
    fn reassembles_and_caps_the_whole_message() {
        let mut a = Assembler::new(6);
        assert_eq!(a.push(frame(false, OpCode::Text, b"ab")), Ok(None));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b"cd")), Ok(None));
        let whole = a.push(frame(true, OpCode::Continuation, b"e")).unwrap();
        assert_eq!(
            whole,
            Some(Message {
                text: true,
                data: b"abcde".to_vec(),
                compressed: false,
            })
        );
        assert_eq!(a.push(frame(false, OpCode::Binary, b"1234")), Ok(None));
        let err = a
            .push(frame(true, OpCode::Continuation, b"567"))
            .unwrap_err();
        assert_eq!(err.0, CloseCode::Size);
    }

    #[test]
    fn refuses_out_of_order_fragments() {
        let mut a = Assembler::new(100);
        let err = a.push(frame(true, OpCode::Continuation, b"x")).unwrap_err();
        assert_eq!(err.0, CloseCode::Protocol);
        assert_eq!(a.push(frame(false, OpCode::Text, b"x")), Ok(None));
        let err = a.push(frame(true, OpCode::Text, b"y")).unwrap_err();
        assert_eq!(err.0, CloseCode::Protocol);
    }
}
