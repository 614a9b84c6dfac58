//! What the fuzz targets (`fuzz/`) check, one function per target, each taking arbitrary bytes:
//! parsing must never panic, and what parses must hold its invariants (a panic here is a
//! finding). The regression test `tests/fuzz_corpus.rs` replays every committed corpus file
//! through the same functions on the stable toolchain. Not used by the hub itself.
//!
//! Owns nothing: checks run by the fuzz targets and by `tests/fuzz_corpus.rs`.

use crate::config::Config;
use crate::event::{parse_event, FRAME_HEADROOM};
use crate::protocol::parse_request;
use crate::ws::{frame_reader, message};

/// Message size cap for the frame target (small, so that big lengths are refused early).
const MAX_MESSAGE: usize = 4096;

/// A client's text message: parsed or refused, never a panic.
pub fn client_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_request(text);
    }
}

/// An event from a publisher or Redis: when it parses, its delivery message is one JSON object
/// of type `event` carrying the event's id, and the form republished to Redis parses back to
/// the same id and type (so every instance accepts what one accepted).
pub fn event(data: &[u8]) {
    let keys = crate::entity::EntityKeys::default();
    let Ok(e) = parse_event(data, &keys) else {
        return;
    };
    // Read as a client library would, other members skipped: a repeated `type` or `event_id`
    // is an error here. (Numbers pass as given, even past f64's range: nothing is altered.)
    let message: Delivered = serde_json::from_slice(&e.message[FRAME_HEADROOM..])
        .expect("the delivery message is one JSON object, without repeated keys");
    assert_eq!(message.kind, "event");
    assert_eq!(message.event_id, e.event_id);
    let again = parse_event(&e.to_published(), &keys).expect("the republished form parses");
    assert_eq!(again.event_id, e.event_id);
    assert_eq!(again.event_type, e.event_type);
    assert_eq!(again.entity, e.entity);
    assert_eq!(again.namespace, e.namespace);
}

/// The members of a delivery message every client reads.
#[derive(serde::Deserialize)]
struct Delivered {
    /// Always `event`.
    #[serde(rename = "type")]
    kind: String,
    /// The event's id.
    event_id: String,
}

/// Bytes from a client's socket, through the frame reader and message assembly as the
/// reader runs them: messages or a protocol error, never a panic, and no message over the cap.
pub fn frames(data: &[u8]) {
    for (_, bytes) in decode_client_bytes(data, MAX_MESSAGE) {
        assert!(bytes.len() <= MAX_MESSAGE);
    }
}

/// A configuration file: loaded or refused with an error, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_yaml(text, "fuzz");
    }
}

/// Runs bytes through the frame reader and message assembly until they run out or break the
/// protocol; returns the whole messages (text or not, and their bytes).
pub fn decode_client_bytes(mut bytes: &[u8], max: usize) -> Vec<(bool, Vec<u8>)> {
    use fastwebsockets::OpCode;
    use futures_util::FutureExt;
    let mut assembler = message::Assembler::new(max);
    let mut out = Vec::new();
    // A slice never makes a read wait, so each frame is ready at once.
    while let Some(Ok(frame)) = frame_reader::read_frame(&mut bytes, max, true).now_or_never() {
        if matches!(frame.opcode, OpCode::Close | OpCode::Ping | OpCode::Pong) {
            continue;
        }
        match assembler.push(frame) {
            Ok(Some(m)) => out.push((m.text, m.data)),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    out
}
