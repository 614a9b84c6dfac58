//! Server-to-client WebSocket frames, encoded once.
//!
//! Server frames are unmasked, so the same bytes are a valid frame on every connection. An
//! [`OutFrame`] owns one buffer laid out as `[headroom][header][payload]`; the header is written
//! in place into the headroom the message was built with, so the payload is never copied. The
//! router shares one `Arc<OutFrame>` among every client that gets the event.
//!
//! Owns an encoded frame and its lazily built twins; a frame is never changed once built (a twin
//! is set once).

pub mod deflate;

use crate::event::{EventType, ParsedEvent, FRAME_HEADROOM, MESSAGE_PREFIX};
use bytes::Bytes;
use fastwebsockets::{CloseCode, Frame, OpCode, Payload};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// One encoded frame, shared by reference count.
#[derive(Debug)]
pub struct OutFrame {
    /// `[unused][header][payload]`.
    buf: Vec<u8>,
    /// Where the header starts in `buf`.
    start: usize,
    /// When the router accepted the event (for `ws_message_latency_seconds`).
    pub routed_at: Instant,
    /// What the frame carries, when it is an event: how the router, the history and a
    /// resuming client's writer tell events apart (shared with the frame's twins).
    pub event: Option<Arc<EventMeta>>,
    /// The same message as a MessagePack binary frame, encoded by the first MessagePack client
    /// that needs it and shared by all of them.
    msgpack: OnceLock<Arc<OutFrame>>,
    /// The same frame compressed (permessage-deflate, RSV1 set), built by the first client
    /// that negotiated compression and shared by all of them.
    deflated: OnceLock<Arc<OutFrame>>,
    /// The same event marked `"snapshot":true`, built by the first snapshot that sends it and
    /// shared by every later one (a snapshot holds references, never copies).
    snapshot: OnceLock<Arc<OutFrame>>,
    /// The same message as a Server-Sent Event (`crate::sse`), built by the first SSE client
    /// that needs it and shared by all of them.
    sse: OnceLock<Bytes>,
}

/// The routing facts of an event frame.
#[derive(Debug)]
pub struct EventMeta {
    /// Sequence number, in routing order (once-per-client delivery, resume seams).
    pub seq: u64,
    /// The event's type.
    pub event_type: EventType,
    /// Its id.
    pub event_id: String,
    /// Its cluster.
    pub cluster_id: Option<String>,
    /// Its namespace.
    pub namespace: Option<String>,
    /// What it is about (`crate::entity`), if its type has a key and it carries the fields.
    pub entity: Option<Box<str>>,
    /// Where it sits in its origin region's stream (NATS mode).
    pub origin: Option<crate::event::Origin>,
}

impl OutFrame {
    /// The frame's bytes on the wire.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The message the frame carries, without its header (an event's JSON text, for one).
    pub(crate) fn message(&self) -> &[u8] {
        self.buf.get(FRAME_HEADROOM..).unwrap_or_default()
    }

    /// Whether this is a text frame (a protocol message or an event, in JSON).
    pub(crate) fn is_text(&self) -> bool {
        self.buf[self.start] & 0x0F == OpCode::Text as u8
    }

    /// Whether this is a message (JSON text or MessagePack binary), not a control frame.
    pub(crate) fn is_message(&self) -> bool {
        self.is_text() || self.buf[self.start] & 0x0F == OpCode::Binary as u8
    }

    /// Whether this is a close frame (the writer stops after it).
    pub(crate) fn is_close(&self) -> bool {
        self.buf[self.start] & 0x0F == OpCode::Close as u8
    }

    /// Turns `[FRAME_HEADROOM bytes][payload]` into a frame of the given opcode, in place.
    pub(crate) fn from_headroom(mut buf: Vec<u8>, opcode: OpCode) -> Self {
        let payload_len = buf.len().saturating_sub(FRAME_HEADROOM);
        let mut head = [0u8; 16];
        let head_len = {
            // Only the length matters to `fmt_head`; borrow a dummy slice of the right size.
            let mut frame = Frame::new(
                true,
                opcode,
                None,
                Payload::Borrowed(&buf[FRAME_HEADROOM..FRAME_HEADROOM + payload_len]),
            );
            frame.fmt_head(&mut head)
        };
        let start = FRAME_HEADROOM - head_len;
        buf[start..FRAME_HEADROOM].copy_from_slice(&head[..head_len]);
        OutFrame {
            buf,
            start,
            routed_at: Instant::now(),
            event: None,
            msgpack: OnceLock::new(),
            deflated: OnceLock::new(),
            snapshot: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// This message for a connection that negotiated permessage-deflate: compressed once and
    /// shared; a control frame or a short message stays as it is.
    pub(crate) fn deflated(self: &Arc<Self>) -> Arc<Self> {
        let payload = self.buf.get(FRAME_HEADROOM..).unwrap_or_default();
        let already = self.buf[self.start] & 0x40 != 0;
        if already || !self.is_message() || payload.len() < deflate::MIN_SIZE {
            return self.clone();
        }
        self.deflated
            .get_or_init(|| {
                let opcode = if self.is_text() {
                    OpCode::Text
                } else {
                    OpCode::Binary
                };
                if self.event.is_some() {
                    crate::metrics::count_event_compressed();
                }
                self.twin(Self::compressed_frame(payload, opcode, false))
            })
            .clone()
    }

    /// A message compressed into a frame with RSV1 set; `stored` keeps the deflate data
    /// uncompressed (valid for any window size a client asked the server to keep to).
    pub(crate) fn compressed(message: &[u8], opcode: OpCode, stored: bool) -> Arc<Self> {
        Arc::new(Self::compressed_frame(message, opcode, stored))
    }

    /// See [`Self::compressed`].
    fn compressed_frame(message: &[u8], opcode: OpCode, stored: bool) -> Self {
        let mut buf = message_buf(message.len() / 2 + 8);
        deflate::compress(message, &mut buf, stored);
        let mut frame = Self::from_headroom(buf, opcode);
        // RSV1: this message is compressed.
        frame.buf[frame.start] |= 0x40;
        frame
    }

    /// This message for a MessagePack connection: a text frame's JSON as a binary frame of
    /// MessagePack, encoded once and shared (control frames are the same on both).
    pub(crate) fn msgpack(self: &Arc<Self>) -> Arc<Self> {
        if !self.is_text() {
            return self.clone();
        }
        self.msgpack.get_or_init(|| self.transcoded()).clone()
    }

    /// The MessagePack twin of this text frame.
    fn transcoded(&self) -> Arc<Self> {
        let json = self.buf.get(FRAME_HEADROOM..).unwrap_or_default();
        let mut buf = message_buf(json.len());
        if let Err(e) = crate::codec::json_to_msgpack(json, &mut buf) {
            // Our own messages are valid JSON; say so rather than send half a map.
            static LOG: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new();
            if let Some(held) = LOG.allow() {
                tracing::error!(error = %e, held, "cannot encode a message as MessagePack");
            }
            buf.truncate(FRAME_HEADROOM);
            let fallback = br#"{"type":"error","code":"INTERNAL_ERROR","message":"encode"}"#;
            let _ = crate::codec::json_to_msgpack(fallback, &mut buf);
        }
        if self.event.is_some() {
            crate::metrics::count_event_encoded();
        }
        self.twin(Self::from_headroom(buf, OpCode::Binary))
    }

    /// `frame`, another encoding of this one's message, carrying the same routing time and
    /// event facts (shared, not copied).
    fn twin(&self, mut frame: Self) -> Arc<Self> {
        frame.routed_at = self.routed_at;
        frame.event = self.event.clone();
        Arc::new(frame)
    }

    /// The frame of a parsed event, numbered `seq`: its message, header written in place.
    pub(crate) fn event(event: ParsedEvent, seq: u64) -> Arc<Self> {
        let mut frame = Self::from_headroom(event.message, OpCode::Text);
        frame.event = Some(Arc::new(EventMeta {
            seq,
            event_type: event.event_type,
            event_id: event.event_id,
            cluster_id: event.cluster_id,
            namespace: event.namespace,
            entity: event.entity,
            origin: event.origin,
        }));
        Arc::new(frame)
    }

    /// This event frame marked `"snapshot":true`, for `snapshot` on subscribe: built once,
    /// then shared by every client that asks (never on the live path). It keeps the event's
    /// routing facts.
    pub(crate) fn snapshot_twin(self: &Arc<Self>) -> Arc<Self> {
        self.snapshot
            .get_or_init(|| {
                let message = self.buf.get(FRAME_HEADROOM..).unwrap_or_default();
                let rest = message.strip_prefix(MESSAGE_PREFIX).unwrap_or(message);
                let mut buf = message_buf(message.len() + 16);
                buf.extend_from_slice(MESSAGE_PREFIX);
                buf.extend_from_slice(br#""snapshot":true,"#);
                buf.extend_from_slice(rest);
                self.twin(Self::from_headroom(buf, OpCode::Text))
            })
            .clone()
    }

    /// This message as a Server-Sent Event, built once and shared (an event's by every SSE
    /// client): `id:` (an event's id), `event:` (`event`, or a reply's `type`) and `data:` (the
    /// JSON message a WebSocket client gets, its line breaks, which JSON allows only between
    /// tokens, made spaces). A ping is a comment (the heartbeat); other control frames are
    /// nothing.
    pub(crate) fn sse(&self) -> Bytes {
        self.sse.get_or_init(|| self.sse_text()).clone()
    }

    /// See [`Self::sse`].
    fn sse_text(&self) -> Bytes {
        if !self.is_text() {
            return match self.buf[self.start] & 0x0F == OpCode::Ping as u8 {
                true => Bytes::from_static(b": ping\n\n"),
                false => Bytes::new(),
            };
        }
        let json = self.message();
        let mut out = Vec::with_capacity(json.len() + 64);
        match &self.event {
            Some(m) => {
                // A line break in an id would end the field: such an id is left out.
                if !m.event_id.contains(['\n', '\r', '\0']) {
                    out.extend_from_slice(b"id: ");
                    out.extend_from_slice(m.event_id.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"event: event\n");
            }
            None => {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(message_type(json).as_bytes());
                out.push(b'\n');
            }
        }
        out.extend_from_slice(b"data: ");
        out.extend(json.iter().map(|&b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        }));
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    /// A text frame of a JSON message built with [`message_buf`].
    pub(crate) fn text(buf: Vec<u8>) -> Arc<Self> {
        Arc::new(Self::from_headroom(buf, OpCode::Text))
    }

    /// A control frame (ping, pong, close) with a small payload.
    pub(crate) fn control(opcode: OpCode, payload: &[u8]) -> Arc<Self> {
        let mut buf = message_buf(payload.len());
        buf.extend_from_slice(payload);
        Arc::new(Self::from_headroom(buf, opcode))
    }

    /// A close frame with a status code and a reason.
    pub(crate) fn close(code: CloseCode, reason: &str) -> Arc<Self> {
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&u16::from(code).to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        Self::control(OpCode::Close, &payload)
    }
}

/// The `type` of a protocol message (`message` when it has none that fits an SSE field).
fn message_type(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Typed>(json)
        .ok()
        .map(|t| t.kind)
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_else(|| "message".into())
}

/// An empty message buffer with frame headroom, ready for a payload of about `capacity` bytes.
pub(crate) fn message_buf(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FRAME_HEADROOM + capacity);
    buf.resize(FRAME_HEADROOM, 0);
    buf
}

/// A text frame of a serializable message (protocol replies; not the event hot path).
pub(crate) fn json_frame<T: serde::Serialize>(msg: &T) -> Arc<OutFrame> {
    let mut buf = message_buf(128);
    // Serializing our own reply types into a Vec cannot fail.
    if serde_json::to_writer(&mut buf, msg).is_err() {
        buf.truncate(FRAME_HEADROOM);
        buf.extend_from_slice(br#"{"type":"error","code":"INTERNAL_ERROR","message":"encode"}"#);
    }
    OutFrame::text(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        for (len, head) in [(5usize, 2usize), (200, 4), (70_000, 10)] {
            let mut buf = message_buf(len);
            buf.extend(std::iter::repeat_n(b'a', len));
            let f = OutFrame::text(buf);
            let b = f.bytes();
            assert_eq!(b.len(), len + head);
            assert_eq!(b[0], 0x81);
            match head {
                2 => assert_eq!(b[1] as usize, len),
                4 => assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, len),
                _ => assert_eq!(b[1], 127),
            }
        }
    }

    #[test]
    fn the_sse_form_names_the_event_and_keeps_the_message_on_one_line() {
        let json = "{\"event_type\":\"GPU_UPDATE\",\"event_id\":\"e1\",\n \"payload\":{}}";
        let event = crate::event::parse_event(json.as_bytes(), &Default::default()).unwrap();
        let f = OutFrame::event(event, 1);
        let sse = f.sse();
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(
            text.starts_with("id: e1\nevent: event\ndata: {\"type\":\"event\","),
            "{text}"
        );
        assert!(
            text.ends_with("}\n\n") && text.matches('\n').count() == 4,
            "{text}"
        );
        assert_eq!(f.sse().as_ptr(), sse.as_ptr(), "built once");
        let mut buf = message_buf(64);
        buf.extend_from_slice(br#"{"replayed":2,"type":"replay_complete"}"#);
        let reply = OutFrame::text(buf).sse();
        assert_eq!(
            &reply[..],
            b"event: replay_complete\ndata: {\"replayed\":2,\"type\":\"replay_complete\"}\n\n"
        );
        assert_eq!(
            &OutFrame::control(OpCode::Ping, b"hb").sse()[..],
            b": ping\n\n"
        );
    }

    #[test]
    fn close_frame() {
        let f = OutFrame::close(CloseCode::Size, "too big");
        assert_eq!(&f.bytes()[..4], &[0x88, 9, 0x03, 0xF1]);
    }
}
