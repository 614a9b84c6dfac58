//! permessage-deflate (RFC 7692), owned by the hub (fastwebsockets has none).
//!
//! Negotiated per connection when `websocket.compression` is on. The hub always answers with
//! `server_no_context_takeover` and `client_no_context_takeover`: every message is compressed
//! on its own, so one compressed copy of an event serves every client that negotiated it
//! ([`crate::frame::OutFrame::deflated`]), and the hub keeps no inflate window per idle
//! connection (a fresh one per compressed message from the client). A message under
//! [`MIN_SIZE`] goes uncompressed (RSV1 clear), as the RFC allows per message; so does every
//! message to a client that asked for a `server_max_window_bits` below 15 (the compressor's
//! window is 32 KiB), which the answer then echoes.
//!
//! Owns the per-thread compressor; nothing else lives here.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper::header::HeaderValue;
use hyper::HeaderMap;
use std::cell::RefCell;

/// Messages shorter than this are sent uncompressed.
pub(crate) const MIN_SIZE: usize = 128;

/// The tail every sync-flushed deflate block ends with, left off on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// Whether messages to the client may be compressed (false: the client limited the
    /// server's window below 15 bits; its messages to us still may be).
    pub(crate) compress_out: bool,
}

/// The first acceptable `permessage-deflate` offer in the request, and the answer to send;
/// `None` when there is none (the connection goes uncompressed).
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<(Negotiated, HeaderValue)> {
    let offers = headers
        .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    offers.filter_map(accept).next()
}

/// Accepts one offer, or `None` when it is not permessage-deflate or has a parameter this hub
/// does not know or a value out of range (the RFC says to decline such an offer).
fn accept(offer: &str) -> Option<(Negotiated, HeaderValue)> {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next()? != "permessage-deflate" {
        return None;
    }
    let mut server_bits = None;
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            _ => return None,
        }
    }
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        answer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let value = HeaderValue::from_str(&answer).ok()?;
    let compress_out = server_bits.is_none_or(|b| b >= 15);
    Some((Negotiated { compress_out }, value))
}

/// A window size parameter: 8 to 15.
fn window_bits(v: &str) -> Option<u8> {
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    /// One compressor per thread, reset for each message (no context taken over).
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    /// One that only stores (deflate blocks without back-references: any window size holds).
    static STORER: RefCell<Compress> = RefCell::new(Compress::new(Compression::none(), false));
}

/// `message` compressed as one permessage-deflate message (the tail left off), appended to
/// `out`; with `stored`, in stored blocks only.
pub fn compress(message: &[u8], out: &mut Vec<u8>, stored: bool) {
    let which = if stored { &STORER } else { &COMPRESSOR };
    which.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        out.reserve(message.len() / 2 + 64);
        let mut input = message;
        loop {
            let before_in = c.total_in();
            // Writing into a Vec with spare room never fails.
            let _ = c.compress_vec(input, out, FlushCompress::Sync);
            let used = (c.total_in() - before_in) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
    });
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

/// Why a compressed message was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the message size cap (close 1009).
    TooBig,
    /// It is not valid deflate data (close 1007).
    Invalid,
}

/// A compressed message from the client inflated, at most `max` bytes (a small message that
/// inflates to gigabytes is refused as it grows, not after).
pub(crate) fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity((data.len() * 3).clamp(64, max.max(64)));
    for chunk in [data, &TAIL[..]] {
        let mut input = chunk;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= max {
                    return Err(InflateError::TooBig);
                }
                out.reserve((out.len()).clamp(64, max - out.len()));
            }
            let before_in = d.total_in();
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            input = &input[(d.total_in() - before_in) as usize..];
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            let room = out.len() < out.capacity();
            if (input.is_empty() && room) || status == Status::StreamEnd {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(v: &str) -> Option<(Negotiated, HeaderValue)> {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(v).unwrap(),
        );
        negotiate(&h)
    }

    #[test]
    fn negotiation_accepts_what_it_can_honor() {
        let (n, answer) = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert!(n.compress_out);
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let (n, answer) = offer("permessage-deflate; server_max_window_bits=9").unwrap();
        assert!(!n.compress_out, "a 9-bit window: sent uncompressed");
        assert!(answer
            .to_str()
            .unwrap()
            .ends_with("server_max_window_bits=9"));
        // An unknown parameter declines that offer; the next one is taken.
        let (_, answer) = offer("permessage-deflate; x=1, permessage-deflate").unwrap();
        assert!(answer.to_str().unwrap().starts_with("permessage-deflate"));
        assert!(offer("permessage-deflate; server_max_window_bits=16").is_none());
        assert!(offer("x-webkit-deflate-frame").is_none());
    }

    #[test]
    fn round_trip_and_bounds() {
        let message =
            br#"{"type":"event","payload":{"a":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#
                .repeat(50);
        let mut packed = Vec::new();
        compress(&message, &mut packed, false);
        assert!(packed.len() < message.len() / 4, "{}", packed.len());
        assert_eq!(decompress(&packed, 1 << 20).unwrap(), message);
        assert_eq!(
            decompress(&packed, message.len() - 1),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            decompress(b"\xff\xff\xff\xff", 1 << 20),
            Err(InflateError::Invalid)
        );
        // The same compressor twice gives the same bytes (no context carried over).
        let mut again = Vec::new();
        compress(&message, &mut again, false);
        assert_eq!(again, packed);
        // Stored blocks: no smaller, but valid deflate.
        let mut stored = Vec::new();
        compress(&message, &mut stored, true);
        assert!(stored.len() >= message.len());
        assert_eq!(decompress(&stored, 1 << 20).unwrap(), message);
    }
}
