//! The wire format a connection speaks, chosen by WebSocket subprotocol at the upgrade:
//! `aiops.v1.json` (the default: text frames of JSON) or `aiops.v1.msgpack` (binary frames, each
//! holding the same map as the JSON message, MessagePack-encoded).
//!
//! Messages are built as JSON once; a MessagePack connection gets them transcoded (no
//! intermediate value): an event once per event, shared by every MessagePack client
//! (`OutFrame::msgpack` in the `frame` module); a reply once for its one client. What a
//! MessagePack client sends is transcoded to JSON text and parsed like any other request.
//!
//! Owns nothing that lives: a connection's [`Wire`] is chosen once at the upgrade and never
//! changed.

use hyper::header::HeaderValue;
use hyper::HeaderMap;

/// The JSON subprotocol's name.
pub const JSON: &str = "aiops.v1.json";
/// The MessagePack subprotocol's name.
pub const MSGPACK: &str = "aiops.v1.msgpack";

/// A connection's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Text frames of JSON.
    #[default]
    Json,
    /// Binary frames of MessagePack.
    MsgPack,
    /// Not a WebSocket: Server-Sent Events (`crate::sse`), each message written as its SSE form.
    Sse,
}

impl Codec {
    /// The format a client asked for in `Sec-WebSocket-Protocol`: the first of its offers that
    /// the hub speaks, and the header value to answer with; JSON and no header when it offered
    /// none. `Err` when it offered only subprotocols the hub does not speak (a client that
    /// offers subprotocols fails a connection whose answer names none).
    pub fn negotiate(headers: &HeaderMap) -> Result<(Self, Option<HeaderValue>), String> {
        let offers = headers
            .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty());
        let mut offered = false;
        for offer in offers {
            match offer {
                JSON => return Ok((Self::Json, Some(HeaderValue::from_static(JSON)))),
                MSGPACK => return Ok((Self::MsgPack, Some(HeaderValue::from_static(MSGPACK)))),
                _ => offered = true,
            }
        }
        if offered {
            return Err(format!(
                "no subprotocol offered is spoken here; offer {JSON} or {MSGPACK}"
            ));
        }
        Ok((Self::Json, None))
    }
}

/// A JSON message as MessagePack, appended to `out`.
pub fn json_to_msgpack(json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut ser = rmp_serde::Serializer::new(out);
    serde_transcode::transcode(&mut de, &mut ser).map_err(|e| e.to_string())
}

/// What a connection negotiated at the upgrade: its message format and compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wire {
    /// JSON or MessagePack.
    pub codec: Codec,
    /// permessage-deflate, if negotiated.
    pub deflate: Deflate,
}

/// permessage-deflate on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deflate {
    /// Not negotiated: RSV1 set by the client is a protocol error.
    #[default]
    Off,
    /// The client may compress; the hub sends uncompressed (the client limited the hub's
    /// window below what its compressor uses).
    Inbound,
    /// Both ways: the hub compresses messages of `frame::deflate::MIN_SIZE` or more.
    Both,
}

/// A MessagePack message as JSON text (for the request parser). Fails on anything JSON cannot
/// say (a map key that is not a string, trailing bytes).
pub fn msgpack_to_json(msgpack: &[u8]) -> Result<String, String> {
    // Reading through `&mut &[u8]` leaves `rest` at what the message did not use.
    let mut rest = msgpack;
    let mut out = Vec::with_capacity(msgpack.len() * 2);
    {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        let mut ser = serde_json::Serializer::new(&mut out);
        serde_transcode::transcode(&mut de, &mut ser).map_err(|e| e.to_string())?;
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the message".into());
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_map_both_ways() {
        let json = br#"{"type":"event","event_id":"e1","n":1.5,"big":18446744073709551615,"neg":-3,"list":[true,null,"x"],"nested":{"a":{}}}"#;
        let mut mp = Vec::new();
        json_to_msgpack(json, &mut mp).unwrap();
        let decoded: serde_json::Value = rmp_serde::from_slice(&mp).unwrap();
        let original: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(decoded, original);
        let back: serde_json::Value = serde_json::from_str(&msgpack_to_json(&mp).unwrap()).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn junk_is_refused() {
        // A map keyed by a list, a truncated map, trailing bytes.
        for bad in [
            &[0x81u8, 0x90, 0x01][..],
            &[0x82, 0xa1, b'a'],
            &[0xc0, 0xc0],
        ] {
            assert!(msgpack_to_json(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn negotiation_takes_the_first_offer_spoken() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                hyper::header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(v).unwrap(),
            );
            Codec::negotiate(&h)
        };
        assert_eq!(
            with("x, aiops.v1.msgpack, aiops.v1.json").unwrap().0,
            Codec::MsgPack
        );
        assert_eq!(
            with("aiops.v1.json, aiops.v1.msgpack").unwrap().0,
            Codec::Json
        );
        assert!(with("graphql-ws").is_err());
        assert_eq!(Codec::negotiate(&HeaderMap::new()), Ok((Codec::Json, None)));
    }
}
