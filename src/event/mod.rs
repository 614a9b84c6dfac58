//! Events: the known event types, validation of an incoming event (from the broadcast endpoint
//! or a broker), and the one serialization of its `event` delivery message.
//!
//! The delivery message is built by splicing, not by re-serializing: the incoming object's bytes
//! after its opening `{` are copied once behind `{"type":"event",` (plus a generated `event_id`
//! and `timestamp` when the event lacks them). Unknown fields and the payload reach clients
//! byte for byte. Only the few fields routing needs are parsed, borrowed from the input.
//!
//! Owns nothing that lives: an event is parsed once and then only read, shared by reference.

mod payload;

use crate::entity::EntityKeys;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

/// Bytes reserved in front of every encoded message for the WebSocket frame header, so the
/// frame is built in place without copying the payload (see the `frame` module).
pub(crate) const FRAME_HEADROOM: usize = 10;

macro_rules! event_types {
    ($($name:ident),* $(,)?) => {
        /// The event types of docs/design.md ("Events"); anything else is unknown.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub enum EventType { $($name),* }

        impl EventType {
            /// Every type, in index order.
            pub const ALL: &'static [EventType] = &[$(EventType::$name),*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$name => stringify!($name)),* }
            }

            /// Looks up a wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $(stringify!($name) => Some(EventType::$name),)* _ => None }
            }
        }
    };
}

event_types!(
    CLUSTER_STATUS_CHANGED,
    CLUSTER_REGISTERED,
    CLUSTER_DELETED,
    METRIC_UPDATE,
    ALERT_FIRED,
    ALERT_RESOLVED,
    GPU_UPDATE,
    TRACE_RECEIVED,
    ANOMALY_DETECTED,
    CHAT_MESSAGE,
    RCA_COMPLETE,
);

/// Number of event types (derived from the list above).
pub const EVENT_TYPE_COUNT: usize = EventType::ALL.len();

impl EventType {
    /// Position in [`EventType::ALL`], for per-type arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why an event was refused. The broadcast endpoint answers 400 with the text; a broker counts
/// it under [`EventError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("event must be a JSON object")]
    NotObject,
    /// No `event_type`.
    #[error("missing event_type")]
    MissingType,
    /// `event_type` names no known type.
    #[error("unknown event_type: {0}")]
    UnknownType(String),
    /// A field has the wrong JSON type.
    #[error("{0}")]
    BadField(String),
}

impl EventError {
    /// A short, stable name for counting faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::NotJson(_) => "not_json",
            EventError::NotObject => "not_object",
            EventError::MissingType => "missing_type",
            EventError::UnknownType(_) => "unknown_type",
            EventError::BadField(_) => "bad_field",
        }
    }
}

/// An event that passed validation, with its delivery message already encoded.
#[derive(Debug)]
pub struct ParsedEvent {
    /// The event's type.
    pub event_type: EventType,
    /// The event's id (given or generated).
    pub event_id: String,
    /// The event's cluster, if any.
    pub cluster_id: Option<String>,
    /// `payload.namespace`, else `payload.labels.namespace`, else none.
    pub namespace: Option<String>,
    /// What the event is about, from its type's entity key (`crate::entity`); `None`: the type
    /// has none, or the event lacks a field of it.
    pub entity: Option<Box<str>>,
    /// `[FRAME_HEADROOM zero bytes][the "event" message JSON]`.
    pub message: Vec<u8>,
    /// Where the event sits in its origin region's stream (NATS mode; `None` elsewhere).
    pub origin: Option<Origin>,
}

/// An event's position in the stream of the region it was published in: the same in every
/// region (a mirror keeps the origin's sequence numbers), so a client that fails over to
/// another region can say exactly what it has seen of each origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The region the event was published in.
    pub region: Arc<str>,
    /// Its sequence number in that region's stream.
    pub seq: u64,
}

/// The start of every delivery message, before the event's own fields.
pub(crate) const MESSAGE_PREFIX: &[u8] = br#"{"type":"event","#;

impl ParsedEvent {
    /// The event as published to other instances: the delivery message without its
    /// `"type":"event"`, with any generated `event_id` and `timestamp` kept (so every instance
    /// delivers the same id).
    pub fn to_published(&self) -> Vec<u8> {
        let body = &self.message[FRAME_HEADROOM + MESSAGE_PREFIX.len()..];
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(b'{');
        out.extend_from_slice(body);
        out
    }

    /// The event at `origin`: the delivery message carries it as `"origin"` and
    /// `"origin_seq"`, written once here, right after `"type":"event"`.
    pub fn at_origin(mut self, origin: Origin) -> Self {
        // A region is letters, digits, `-` and `_` (checked in the configuration): no escaping.
        let fields = format!(
            r#""origin":"{}","origin_seq":{},"#,
            origin.region, origin.seq
        );
        let at = FRAME_HEADROOM + MESSAGE_PREFIX.len();
        self.message.splice(at..at, fields.into_bytes());
        self.origin = Some(origin);
        self
    }
}

/// Whether a present field is `null`.
fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|v| v.get() == "null")
}

/// The top-level members of an object in their order, each value's bytes exactly as given.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON string value, or `Err` naming the field.
fn string_field(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, EventError> {
    match raw {
        None => Ok(None),
        Some(r) => match serde_json::from_str::<Cow<'_, str>>(r.get()) {
            Ok(s) => Ok(Some(s.into_owned())),
            Err(_) => Err(EventError::BadField(format!("{name} must be a string"))),
        },
    }
}

/// A new unique event id: `evt_` and a time-ordered UUID.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// Now, in RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Validates one event and encodes its delivery message once; `keys` says which payload fields
/// name its entity (read in the same pass).
pub fn parse_event(input: &[u8], keys: &EntityKeys) -> Result<ParsedEvent, EventError> {
    let text = std::str::from_utf8(input).map_err(|e| EventError::NotJson(e.to_string()))?;
    if !text.trim_start().starts_with('{') {
        // serde would read a struct from an array too; only an object is an event.
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => EventError::NotObject,
            Err(e) => EventError::NotJson(e.to_string()),
        });
    }
    let mut view = match payload::read(text, keys) {
        Ok(v) => v,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(EventError::BadField(e.to_string()))
        }
        Err(e) => return Err(EventError::NotJson(e.to_string())),
    };
    let type_name = string_field(view.event_type, "event_type")?.ok_or(EventError::MissingType)?;
    let event_type =
        EventType::parse(&type_name).ok_or_else(|| EventError::UnknownType(type_name.clone()))?;
    // A `null` id or timestamp counts as absent: one is generated, and the `null` is left out.
    let (null_id, null_timestamp) = (is_null(view.event_id), is_null(view.timestamp));
    let given_id = match null_id {
        true => None,
        false => string_field(view.event_id, "event_id")?,
    };
    let cluster_id = string_field(view.cluster_id, "cluster_id")?;
    let has_timestamp = !null_timestamp && string_field(view.timestamp, "timestamp")?.is_some();
    let entity = keys.entity(event_type, cluster_id.as_deref(), &mut view.read);
    let namespace = view.namespace();
    let event_id = given_id.clone().unwrap_or_else(new_event_id);
    let generated_id = given_id.is_none().then_some(&event_id);
    let message = if view.type_key.is_some() || null_id || null_timestamp {
        let left_out = |key: &str, value: &RawValue| {
            key == "type" || (matches!(key, "event_id" | "timestamp") && value.get() == "null")
        };
        rebuild_without(text, left_out, generated_id, has_timestamp)?
    } else {
        splice(text, generated_id, has_timestamp)
    };
    Ok(ParsedEvent {
        event_type,
        event_id,
        cluster_id,
        namespace,
        entity,
        message,
        origin: None,
    })
}

/// `{"type":"event",` + generated fields + the input after its `{`.
fn splice(text: &str, generated_id: Option<&String>, has_timestamp: bool) -> Vec<u8> {
    let body = text.trim();
    // The view parse proved `body` is an object holding at least `event_type`.
    let rest = &body[1..];
    let mut out = Vec::with_capacity(FRAME_HEADROOM + body.len() + 96);
    out.resize(FRAME_HEADROOM, 0);
    out.extend_from_slice(MESSAGE_PREFIX);
    push_generated(&mut out, generated_id, has_timestamp);
    out.extend_from_slice(rest.trim_start().as_bytes());
    out
}

/// Writes `"event_id":"..",` and `"timestamp":"..",` where the event lacks them.
fn push_generated(out: &mut Vec<u8>, generated_id: Option<&String>, has_timestamp: bool) {
    if let Some(id) = generated_id {
        out.extend_from_slice(br#""event_id":""#);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(br#"","#);
    }
    if !has_timestamp {
        out.extend_from_slice(br#""timestamp":""#);
        out.extend_from_slice(now_rfc3339().as_bytes());
        out.extend_from_slice(br#"","#);
    }
}

/// The slow path for an event with members the message must not carry (its own top-level
/// `type`, a `null` id or timestamp): the object is rewritten member by member without them.
/// Every other member keeps its place and its value's exact bytes (`1.50` stays `1.50`, a big
/// integer keeps its digits); only the whitespace between members goes.
fn rebuild_without(
    text: &str,
    left_out: impl Fn(&str, &RawValue) -> bool,
    generated_id: Option<&String>,
    has_timestamp: bool,
) -> Result<Vec<u8>, EventError> {
    let members: Members<'_> =
        serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    let mut rest = String::with_capacity(text.len());
    rest.push('{');
    for (key, value) in members.0.iter().filter(|(k, v)| !left_out(k, v)) {
        if rest.len() > 1 {
            rest.push(',');
        }
        let quoted = serde_json::to_string(key).map_err(|e| EventError::NotJson(e.to_string()))?;
        rest.push_str(&quoted);
        rest.push(':');
        rest.push_str(value.get());
    }
    rest.push('}');
    Ok(splice(&rest, generated_id, has_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses with the default entity keys.
    fn parse_event(input: &[u8]) -> Result<ParsedEvent, EventError> {
        super::parse_event(input, &EntityKeys::default())
    }

    #[test]
    fn reads_the_entity_in_the_same_pass_wherever_the_type_stands() {
        let before = br#"{"event_type":"METRIC_UPDATE","cluster_id":"c","payload":{"metric_name":"cpu","labels":{"pod":"a","namespace":"p"},"value":1}}"#;
        let after = br#"{"payload":{"labels":{"namespace":"p","pod":"a"},"value":2,"metric_name":"cpu"},"cluster_id":"c","event_type":"METRIC_UPDATE"}"#;
        let (a, b) = (parse_event(before).unwrap(), parse_event(after).unwrap());
        assert_eq!(a.entity, b.entity);
        assert_eq!(
            a.entity.as_deref(),
            Some("cpu\u{1f}{\"namespace\":\"p\",\"pod\":\"a\"}")
        );
        assert_eq!(
            (a.namespace.as_deref(), b.namespace.as_deref()),
            (Some("p"), Some("p"))
        );
        let alert = parse_event(br#"{"event_type":"ALERT_FIRED","cluster_id":"c","payload":{"fingerprint":"fp1","labels":7}}"#).unwrap();
        assert_eq!(
            (alert.entity.as_deref(), alert.namespace),
            (Some("fp1"), None)
        );
        let lacking =
            parse_event(br#"{"event_type":"GPU_UPDATE","payload":{"node_name":null}}"#).unwrap();
        assert_eq!(lacking.entity, None);
        let escaped = parse_event(
            br#"{"event\u005ftype":"GPU_\u0055PDATE","payload":{"node\u005fname":"n\u0031"}}"#,
        )
        .unwrap();
        assert_eq!(
            (escaped.event_type, escaped.entity.as_deref()),
            (EventType::GPU_UPDATE, Some("n1"))
        );
        let cluster =
            parse_event(br#"{"event_type":"CLUSTER_DELETED","cluster_id":"c9"}"#).unwrap();
        assert_eq!(cluster.entity.as_deref(), Some("c9"));
    }

    #[test]
    fn configured_nested_paths_are_read_and_repeated_fields_refused() {
        let keys: EntityKeys =
            serde_norway::from_str("GPU_UPDATE: [payload.host.name, cluster_id]").unwrap();
        let e = super::parse_event(br#"{"event_type":"GPU_UPDATE","cluster_id":"c","payload":{"host":{"name":"h1","x":[1]}}}"#, &keys).unwrap();
        assert_eq!(e.entity.as_deref(), Some("h1\u{1f}c"));
        let e = super::parse_event(
            br#"{"event_type":"GPU_UPDATE","cluster_id":"c","payload":{"host":"h1"}}"#,
            &keys,
        )
        .unwrap();
        assert_eq!(e.entity, None);
        for twice in [
            &br#"{"event_type":"GPU_UPDATE","payload":{},"payload":{}}"#[..],
            br#"{"event_type":"GPU_UPDATE","cluster_id":"a","cluster_id":"b"}"#,
        ] {
            assert_eq!(parse_event(twice).unwrap_err().kind(), "bad_field");
        }
    }

    fn msg(e: &ParsedEvent) -> serde_json::Value {
        serde_json::from_slice(&e.message[FRAME_HEADROOM..]).unwrap()
    }

    #[test]
    fn keeps_unknown_fields_and_payload() {
        let e = parse_event(
            br#"{"event_type":"ALERT_FIRED","event_id":"e1","cluster_id":"c1","timestamp":"2024-12-24T10:00:00Z","x":[1,2],"payload":{"labels":{"namespace":"prod"},"v":1.50}}"#,
        )
        .unwrap();
        assert_eq!(e.namespace.as_deref(), Some("prod"));
        assert_eq!(e.cluster_id.as_deref(), Some("c1"));
        let text = std::str::from_utf8(&e.message[FRAME_HEADROOM..]).unwrap();
        assert!(text.contains(r#""v":1.50"#), "payload bytes kept: {text}");
        let m = msg(&e);
        assert_eq!(m["type"], "event");
        assert_eq!(m["event_id"], "e1");
        assert_eq!(m["x"], serde_json::json!([1, 2]));
    }

    #[test]
    fn published_form_parses_back_to_the_same_message() {
        let e = parse_event(br#"{"event_type":"GPU_UPDATE","x":{"y":[1,2]}}"#).unwrap();
        let again = parse_event(&e.to_published()).unwrap();
        assert_eq!(again.event_id, e.event_id);
        assert_eq!(again.message, e.message);
    }

    #[test]
    fn generates_id_and_timestamp() {
        let e = parse_event(br#" {"event_type":"GPU_UPDATE"} "#).unwrap();
        let m = msg(&e);
        assert!(e.event_id.starts_with("evt_"));
        assert_eq!(m["event_id"], e.event_id.as_str());
        assert!(humantime::parse_rfc3339(m["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let e =
            parse_event(br#"{"event_type":"GPU_UPDATE","payload":null,"event_id":null}"#).unwrap();
        assert!(e.event_id.starts_with("evt_"));
        assert_eq!(e.namespace, None);
    }

    /// Occurrences of `"key":` in the message (a JSON object must not repeat a key: the hub's
    /// own duplicate check refuses such an event when another instance reads it from Redis).
    fn count_key(e: &ParsedEvent, key: &str) -> usize {
        let text = std::str::from_utf8(&e.message[FRAME_HEADROOM..]).unwrap();
        text.matches(&format!("\"{key}\":")).count()
    }

    #[test]
    fn a_null_id_or_timestamp_is_replaced_not_repeated() {
        let e = parse_event(
            br#"{"event_type":"GPU_UPDATE","event_id":null,"timestamp":null,"payload":{"v":1}}"#,
        )
        .unwrap();
        assert_eq!(count_key(&e, "event_id"), 1);
        assert_eq!(count_key(&e, "timestamp"), 1);
        let m = msg(&e);
        assert_eq!(m["event_id"], e.event_id.as_str());
        assert!(m["timestamp"].is_string());
        // What another instance reads back from Redis is accepted, with the same id.
        let again = parse_event(&e.to_published()).unwrap();
        assert_eq!(again.event_id, e.event_id);
    }

    /// Found by the `event` fuzz target: a `"type":null` was copied behind the message's own
    /// `"type":"event"`, and a JSON reader keeps the last of two keys.
    #[test]
    fn a_null_type_is_cut_out_too() {
        let e = parse_event(br#"{"event_type":"GPU_UPDATE","type":null,"v":1}"#).unwrap();
        assert_eq!(count_key(&e, "type"), 1);
        assert_eq!(msg(&e)["type"], "event");
    }

    #[test]
    fn an_event_with_its_own_type_keeps_every_other_byte() {
        let e = parse_event(
            br#"{"event_type":"GPU_UPDATE","type":"gpu","z":1,"a":{"v":1.50,"big":123456789012345678901234567890},"payload":{"x":[1.0,2e3]}}"#,
        )
        .unwrap();
        let text = std::str::from_utf8(&e.message[FRAME_HEADROOM..]).unwrap();
        assert_eq!(count_key(&e, "type"), 1, "{text}");
        assert!(text.starts_with(r#"{"type":"event","#), "{text}");
        assert!(
            text.contains(r#""z":1,"a":{"v":1.50,"big":123456789012345678901234567890},"payload":{"x":[1.0,2e3]}}"#),
            "{text}"
        );
    }

    #[test]
    fn payload_namespace_wins_over_labels() {
        let e = parse_event(
            br#"{"event_type":"METRIC_UPDATE","payload":{"namespace":"a","labels":{"namespace":"b"}}}"#,
        )
        .unwrap();
        assert_eq!(e.namespace.as_deref(), Some("a"));
    }

    #[test]
    fn own_type_field_is_replaced() {
        let e = parse_event(br#"{"type":"x","event_type":"CHAT_MESSAGE","k":1}"#).unwrap();
        let m = msg(&e);
        assert_eq!(m["type"], "event");
        assert_eq!(m["k"], 1);
    }

    #[test]
    fn refuses_malformed() {
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "not_json"),
            (b"[1]", "not_object"),
            (b"\"s\"", "not_object"),
            (b"{}", "missing_type"),
            (br#"{"event_type":"NOPE"}"#, "unknown_type"),
            (br#"{"event_type":"GPU_UPDATE","payload":[1]}"#, "bad_field"),
            (br#"{"event_type":"GPU_UPDATE","event_id":7}"#, "bad_field"),
            (
                br#"{"event_type":"GPU_UPDATE","cluster_id":{}}"#,
                "bad_field",
            ),
            (br#"{"event_type":"GPU_UPDATE","timestamp":1}"#, "bad_field"),
            (br#"{"event_type":5}"#, "bad_field"),
            (br#"{"event_type":"GPU_UPDATE"} x"#, "not_json"),
            (b"\xff\xfe", "not_json"),
        ];
        for (input, kind) in cases {
            let err = parse_event(input).unwrap_err();
            assert_eq!(
                err.kind(),
                *kind,
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
