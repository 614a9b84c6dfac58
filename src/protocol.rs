//! The WebSocket protocol: client requests parsed from text frames, server replies built as
//! frames, and the error codes (docs/design.md, "Error codes").
//!
//! Owns nothing that lives: requests are parsed and replies built per message.

use crate::event::EventType;
use crate::frame::{json_frame, OutFrame};
use crate::subscription::Subscription;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

/// Most entries in one filter list.
pub const MAX_FILTER_ENTRIES: usize = 256;
/// Most index keys one subscription, and all of one client's subscriptions together, may expand
/// to (types x clusters x namespaces): what one client can make the index hold.
pub const MAX_SUBSCRIPTION_KEYS: usize = 4096;
/// Longest cluster or namespace name (a DNS name's limit; Kubernetes namespaces take 63).
pub const MAX_NAME_LEN: usize = 253;

/// The error codes (docs/design.md, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum ErrorCode {
    /// Authentication failed; the connection is closed.
    AUTH_FAILED,
    /// The token expired; the client should authenticate again.
    AUTH_EXPIRED,
    /// Malformed message; the connection stays open.
    INVALID_MESSAGE,
    /// Bad subscription request; the connection stays open.
    INVALID_SUBSCRIPTION,
    /// The token does not grant what was asked (a cluster or namespace outside its scope);
    /// nothing is stored and the connection stays open.
    FORBIDDEN,
    /// Too many messages.
    RATE_LIMITED,
    /// Events were dropped by backpressure.
    QUEUE_FULL,
    /// A server fault.
    INTERNAL_ERROR,
}

/// A request the client may send.
#[derive(Debug)]
pub enum Request {
    /// `{"type":"auth","token":...}`.
    Auth {
        /// The bearer token.
        token: String,
    },
    /// `{"type":"subscribe","subscription":{...}}`, with what to send before live events.
    Subscribe(Subscription, Catchup),
    /// `{"type":"unsubscribe","event_types":[...]}`; `None` removes all.
    Unsubscribe(Option<Vec<EventType>>),
    /// `{"type":"ping","timestamp":...}`.
    Ping {
        /// The client's timestamp, echoed as given.
        timestamp: Option<Box<RawValue>>,
    },
}

/// What a `subscribe` asks for before live events (either field may sit beside
/// `subscription` or inside it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catchup {
    /// `resume_from`: every matching event after this id, then `replay_complete`.
    pub resume_from: Option<String>,
    /// `snapshot`: the latest event of each matching (type, cluster, namespace) first.
    pub snapshot: bool,
    /// `positions` (NATS mode): the last `origin_seq` seen of each origin region; a resume
    /// from them works on an instance of any region, whatever order it routed events in.
    pub positions: Option<Vec<(String, u64)>>,
}

/// Most origin regions a `positions` may name.
const MAX_POSITIONS: usize = 32;

/// Longest `resume_from` accepted (an event id).
const MAX_EVENT_ID_LEN: usize = 256;

/// A refused request: the error code and message sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
}

/// Longest `timestamp` a `ping` may carry (its JSON text): it is echoed in the `pong`, so a
/// larger one would let a client that never reads make the hub hold many copies of it.
pub const MAX_PING_TIMESTAMP_BYTES: usize = 64;

fn invalid_message(m: impl Into<String>) -> Refusal {
    Refusal {
        code: ErrorCode::INVALID_MESSAGE,
        message: m.into(),
    }
}

fn invalid_subscription(m: impl Into<String>) -> Refusal {
    Refusal {
        code: ErrorCode::INVALID_SUBSCRIPTION,
        message: m.into(),
    }
}

/// The outer shape every request shares.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    subscription: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event_types: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resume_from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    snapshot: Option<&'a RawValue>,
    #[serde(borrow, default)]
    positions: Option<&'a RawValue>,
}

/// The body of `subscribe`.
#[derive(Deserialize)]
struct SubscriptionIn<'a> {
    #[serde(borrow, default)]
    event_types: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cluster_filter: Option<&'a RawValue>,
    #[serde(borrow, default)]
    namespace_filter: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resume_from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    snapshot: Option<&'a RawValue>,
    #[serde(borrow, default)]
    positions: Option<&'a RawValue>,
}

/// Reads `resume_from`, `snapshot` and `positions`, from beside the subscription or inside it.
fn catchup(
    resume: [Option<&RawValue>; 2],
    snapshot: [Option<&RawValue>; 2],
    positions: [Option<&RawValue>; 2],
) -> Result<Catchup, Refusal> {
    let present = |r: &Option<&RawValue>| r.is_some_and(|r| r.get() != "null");
    let resume_from = match resume.into_iter().find(present).flatten() {
        None => None,
        Some(r) => match serde_json::from_str::<String>(r.get()) {
            Ok(id) if !id.is_empty() && id.len() <= MAX_EVENT_ID_LEN => Some(id),
            _ => {
                return Err(invalid_subscription(format!(
                    "resume_from must be an event id (a string of 1 to {MAX_EVENT_ID_LEN} bytes)"
                )))
            }
        },
    };
    let snapshot = match snapshot.into_iter().find(present).flatten() {
        None => false,
        Some(r) => serde_json::from_str::<bool>(r.get())
            .map_err(|_| invalid_subscription("snapshot must be true or false"))?,
    };
    let positions = match positions.into_iter().find(present).flatten() {
        None => None,
        Some(r) => Some(position_list(r)?),
    };
    Ok(Catchup {
        resume_from,
        snapshot,
        positions,
    })
}

/// `{"region": origin_seq, ...}`: at most [`MAX_POSITIONS`] regions, each a name of 1 to 64
/// bytes.
fn position_list(raw: &RawValue) -> Result<Vec<(String, u64)>, Refusal> {
    let bad = || {
        invalid_subscription(format!(
            "positions must map at most {MAX_POSITIONS} region names (1 to 64 bytes) to origin_seq numbers"
        ))
    };
    let map: std::collections::BTreeMap<String, u64> =
        serde_json::from_str(raw.get()).map_err(|_| bad())?;
    let fits = |r: &String| !r.is_empty() && r.len() <= 64;
    if map.len() > MAX_POSITIONS || !map.keys().all(fits) {
        return Err(bad());
    }
    Ok(map.into_iter().collect())
}

/// A list of strings; `null` or absent is an empty list.
fn string_list(raw: Option<&RawValue>, name: &str) -> Result<Vec<String>, Refusal> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let list: Option<Vec<String>> = serde_json::from_str(raw.get())
        .map_err(|_| invalid_subscription(format!("{name} must be a list of strings")))?;
    let mut list = list.unwrap_or_default();
    if list.len() > MAX_FILTER_ENTRIES {
        return Err(invalid_subscription(format!(
            "{name} has more than {MAX_FILTER_ENTRIES} entries"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    list.retain(|s| seen.insert(s.clone()));
    Ok(list)
}

/// A list of known event types, without duplicates.
fn event_type_list(raw: Option<&RawValue>) -> Result<Vec<EventType>, Refusal> {
    let names = string_list(raw, "event_types")?;
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let t = EventType::parse(&n)
            .ok_or_else(|| invalid_subscription(format!("Unknown event type: {n}")))?;
        out.push(t);
    }
    Ok(out)
}

/// A list of cluster or namespace names: each 1 to [`MAX_NAME_LEN`] bytes of ASCII letters,
/// digits, `-`, `_`, `.` and `:` (every cluster name becomes a Redis channel name in Redis
/// Cluster mode, and every name an index key).
fn name_list(raw: Option<&RawValue>, name: &str) -> Result<Vec<String>, Refusal> {
    let list = string_list(raw, name)?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match list.iter().find(|s| !valid(s)) {
        None => Ok(list),
        Some(bad) => Err(invalid_subscription(format!(
            "{name}: a name is 1 to {MAX_NAME_LEN} letters, digits, '-', '_', '.' or ':' (got {:?})",
            bad.chars().take(40).collect::<String>()
        ))),
    }
}

/// Refuses adding `sub` when the client's subscriptions together would expand to more than
/// [`MAX_SUBSCRIPTION_KEYS`] index keys.
pub fn check_total_breadth(held: &[Subscription], sub: &Subscription) -> Result<(), Refusal> {
    let keys: usize = held.iter().map(Subscription::breadth).sum::<usize>() + sub.breadth();
    if keys > MAX_SUBSCRIPTION_KEYS {
        return Err(invalid_subscription(format!(
            "subscriptions too broad together: {keys} type/cluster/namespace combinations (most {MAX_SUBSCRIPTION_KEYS} per client)"
        )));
    }
    Ok(())
}

/// Refuses a subscription of more than [`MAX_SUBSCRIPTION_KEYS`] type/cluster/namespace
/// combinations.
pub fn check_breadth(sub: &Subscription) -> Result<(), Refusal> {
    let keys = sub.breadth();
    if keys > MAX_SUBSCRIPTION_KEYS {
        return Err(invalid_subscription(format!(
            "subscription is too broad: {keys} type/cluster/namespace combinations (most {MAX_SUBSCRIPTION_KEYS})"
        )));
    }
    Ok(())
}

/// Parses one text message from a client.
pub fn parse_request(text: &str) -> Result<Request, Refusal> {
    if !text.trim_start().starts_with('{') {
        // serde would read a struct from an array too; only an object is a request.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => invalid_message("message must be a JSON object"),
            Err(e) => invalid_message(format!("message is not valid JSON: {e}")),
        });
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            invalid_message(format!("malformed message: {e}"))
        } else {
            invalid_message(format!("message is not valid JSON: {e}"))
        }
    })?;
    let kind = env.kind.ok_or_else(|| invalid_message("missing type"))?;
    match kind.as_ref() {
        "auth" => {
            let token = env
                .token
                .and_then(|t| serde_json::from_str::<String>(t.get()).ok())
                .ok_or_else(|| invalid_message("auth needs a string token"))?;
            Ok(Request::Auth { token })
        }
        "subscribe" => {
            let raw = env
                .subscription
                .ok_or_else(|| invalid_subscription("subscribe needs a subscription object"))?;
            let s: SubscriptionIn<'_> = serde_json::from_str(raw.get())
                .ok()
                .filter(|_| raw.get().starts_with('{'))
                .ok_or_else(|| invalid_subscription("subscription must be an object"))?;
            let event_types = event_type_list(s.event_types)?;
            if event_types.is_empty() {
                return Err(invalid_subscription("event_types must not be empty"));
            }
            let cluster_filter = name_list(s.cluster_filter, "cluster_filter")?;
            let namespace_filter = name_list(s.namespace_filter, "namespace_filter")?;
            let sub = Subscription {
                event_types,
                cluster_filter,
                namespace_filter,
            };
            check_breadth(&sub)?;
            let catchup = catchup(
                [env.resume_from, s.resume_from],
                [env.snapshot, s.snapshot],
                [env.positions, s.positions],
            )?;
            Ok(Request::Subscribe(sub, catchup))
        }
        "unsubscribe" => match env.event_types {
            None => Ok(Request::Unsubscribe(None)),
            Some(r) if r.get() == "null" => Ok(Request::Unsubscribe(None)),
            Some(r) => Ok(Request::Unsubscribe(Some(event_type_list(Some(r))?))),
        },
        "ping" => match env.timestamp {
            Some(t) if t.get().len() > MAX_PING_TIMESTAMP_BYTES => Err(invalid_message(format!(
                "timestamp longer than {MAX_PING_TIMESTAMP_BYTES} bytes"
            ))),
            t => Ok(Request::Ping {
                timestamp: t.map(|t| t.to_owned()),
            }),
        },
        other => Err(invalid_message(format!("unknown message type: {other}"))),
    }
}

/// Server messages, each encoded as a frame.
pub(crate) mod reply {
    use super::*;

    /// `auth_response`, with the token's roles (`null` while auth is off), so a page knows
    /// which actions to offer.
    pub fn auth_response(client_id: &str, roles: Option<Vec<String>>) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({
            "type": "auth_response",
            "status": "authenticated",
            "client_id": client_id,
            "roles": roles,
        }))
    }

    /// `subscribed`, echoing the subscription as stored, with the last `origin_seq` routed of
    /// each origin region when there are any (NATS mode): where the client stands.
    pub fn subscribed(sub: &Subscription, positions: &[(Arc<str>, u64)]) -> Arc<OutFrame> {
        #[derive(Serialize)]
        struct Subscribed<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            sub: &'a Subscription,
            #[serde(skip_serializing_if = "Option::is_none")]
            positions: Option<std::collections::BTreeMap<&'a str, u64>>,
        }
        json_frame(&Subscribed {
            kind: "subscribed",
            sub,
            positions: (!positions.is_empty())
                .then(|| positions.iter().map(|(r, p)| (&**r, *p)).collect()),
        })
    }

    /// `notice` `ORIGIN_UNREACHABLE`: events of `region` after `mirrored_upto` are not here
    /// yet (its region cannot be reached); at least `missing` of them, past what the client
    /// saw, were published there. They follow, in order, when the region is back.
    pub fn origin_unreachable(region: &str, mirrored_upto: u64, missing: u64) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({
            "type": "notice",
            "code": "ORIGIN_UNREACHABLE",
            "region": region,
            "mirrored_upto": mirrored_upto,
            "missing_at_least": missing,
            "message": format!(
                "region {region} cannot be reached: its events after origin_seq {mirrored_upto} \
                 arrive when it is back ({missing} or more you have not seen)"
            ),
        }))
    }

    /// `unsubscribed`, naming the types removed.
    pub fn unsubscribed(types: &[EventType]) -> Arc<OutFrame> {
        let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        json_frame(&serde_json::json!({"type": "unsubscribed", "event_types": names}))
    }

    /// `pong`, echoing the client's timestamp.
    pub fn pong(timestamp: Option<&RawValue>) -> Arc<OutFrame> {
        #[derive(Serialize)]
        struct Pong<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            timestamp: Option<&'a RawValue>,
            server_time: String,
        }
        json_frame(&Pong {
            kind: "pong",
            timestamp,
            server_time: crate::event::now_rfc3339(),
        })
    }

    /// `replay_complete`, after the events a `resume_from` asked for.
    pub fn replay_complete(recovered: bool, replayed: usize) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({
            "type": "replay_complete",
            "recovered": recovered,
            "replayed": replayed,
        }))
    }

    /// `snapshot_complete`, after the latest events a `snapshot` asked for.
    pub fn snapshot_complete(events: usize) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({"type": "snapshot_complete", "events": events}))
    }

    /// `error`.
    pub fn error(code: ErrorCode, message: &str) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({"type": "error", "code": code, "message": message}))
    }

    /// The `QUEUE_FULL` notice that precedes the next message after drops.
    pub fn queue_full(dropped: u64) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({
            "type": "error",
            "code": ErrorCode::QUEUE_FULL,
            "message": format!("{dropped} event(s) dropped: client is reading too slowly"),
            "dropped": dropped,
        }))
    }

    /// `disconnect`, sent before the server closes the connection.
    pub fn disconnect(reason: &str, reconnect_after_ms: u64) -> Arc<OutFrame> {
        json_frame(&serde_json::json!({
            "type": "disconnect",
            "reason": reason,
            "reconnect_after_ms": reconnect_after_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resume_and_snapshot_beside_or_inside_the_subscription() {
        let catchup_of = |text: &str| match parse_request(text) {
            Ok(Request::Subscribe(_, c)) => Ok(c),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.code),
        };
        let beside = r#"{"type":"subscribe","resume_from":"e1","snapshot":true,"positions":{"b":7,"a":3},"subscription":{"event_types":["GPU_UPDATE"]}}"#;
        let inside = r#"{"type":"subscribe","subscription":{"event_types":["GPU_UPDATE"],"resume_from":"e1","snapshot":true,"positions":{"b":7,"a":3}}}"#;
        let want = Catchup {
            resume_from: Some("e1".into()),
            snapshot: true,
            positions: Some(vec![("a".into(), 3), ("b".into(), 7)]),
        };
        assert_eq!(catchup_of(beside), Ok(want.clone()));
        assert_eq!(catchup_of(inside), Ok(want));
        for bad in [
            r#"{"type":"subscribe","resume_from":7,"subscription":{"event_types":["GPU_UPDATE"]}}"#,
            r#"{"type":"subscribe","resume_from":"","subscription":{"event_types":["GPU_UPDATE"]}}"#,
            r#"{"type":"subscribe","snapshot":"yes","subscription":{"event_types":["GPU_UPDATE"]}}"#,
            r#"{"type":"subscribe","positions":{"a":-1},"subscription":{"event_types":["GPU_UPDATE"]}}"#,
            r#"{"type":"subscribe","positions":["a",1],"subscription":{"event_types":["GPU_UPDATE"]}}"#,
            r#"{"type":"subscribe","positions":{"":1},"subscription":{"event_types":["GPU_UPDATE"]}}"#,
        ] {
            assert_eq!(
                catchup_of(bad),
                Err(ErrorCode::INVALID_SUBSCRIPTION),
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"type":"subscribe","resume_from":"{}","subscription":{{"event_types":["GPU_UPDATE"]}}}}"#,
            "x".repeat(257)
        );
        assert_eq!(catchup_of(&long), Err(ErrorCode::INVALID_SUBSCRIPTION));
        let many: Vec<String> = (0..33).map(|i| format!(r#""r{i}":1"#)).collect();
        let many = format!(
            r#"{{"type":"subscribe","positions":{{{}}},"subscription":{{"event_types":["GPU_UPDATE"]}}}}"#,
            many.join(",")
        );
        assert_eq!(catchup_of(&many), Err(ErrorCode::INVALID_SUBSCRIPTION));
    }

    #[test]
    fn parses_subscribe() {
        let r = parse_request(
            r#"{"type":"subscribe","subscription":{"event_types":["GPU_UPDATE","GPU_UPDATE"],"cluster_filter":["c"],"namespace_filter":null}}"#,
        )
        .unwrap();
        let Request::Subscribe(s, c) = r else {
            panic!("{r:?}")
        };
        assert_eq!(c, Catchup::default());
        assert_eq!(
            s,
            Subscription {
                event_types: vec![EventType::GPU_UPDATE],
                cluster_filter: vec!["c".into()],
                namespace_filter: vec![],
            }
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            ("nope", ErrorCode::INVALID_MESSAGE),
            ("[1]", ErrorCode::INVALID_MESSAGE),
            (r#"["subscribe"]"#, ErrorCode::INVALID_MESSAGE),
            (r#"{"type":"dance"}"#, ErrorCode::INVALID_MESSAGE),
            (r#"{"x":1}"#, ErrorCode::INVALID_MESSAGE),
            (r#"{"type":"auth"}"#, ErrorCode::INVALID_MESSAGE),
            (r#"{"type":"subscribe"}"#, ErrorCode::INVALID_SUBSCRIPTION),
            (
                r#"{"type":"subscribe","subscription":{"event_types":[]}}"#,
                ErrorCode::INVALID_SUBSCRIPTION,
            ),
            (
                r#"{"type":"subscribe","subscription":{"event_types":["NOPE"]}}"#,
                ErrorCode::INVALID_SUBSCRIPTION,
            ),
            (
                r#"{"type":"subscribe","subscription":{"event_types":["GPU_UPDATE"],"cluster_filter":"c"}}"#,
                ErrorCode::INVALID_SUBSCRIPTION,
            ),
            (
                r#"{"type":"subscribe","subscription":{"event_types":["GPU_UPDATE"],"namespace_filter":[1]}}"#,
                ErrorCode::INVALID_SUBSCRIPTION,
            ),
            (
                r#"{"type":"unsubscribe","event_types":"GPU_UPDATE"}"#,
                ErrorCode::INVALID_SUBSCRIPTION,
            ),
        ];
        for (text, code) in cases {
            assert_eq!(parse_request(text).unwrap_err().code, code, "{text}");
        }
    }

    #[test]
    fn ping_echoes_any_timestamp() {
        let Request::Ping { timestamp } =
            parse_request(r#"{"type":"ping","timestamp":12}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(timestamp.unwrap().get(), "12");
        let long = format!(r#"{{"type":"ping","timestamp":"{}"}}"#, "x".repeat(63));
        let refused = parse_request(&long).unwrap_err();
        assert_eq!(refused.code, ErrorCode::INVALID_MESSAGE);
        let deep = format!(
            r#"{{"type":"ping","timestamp":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(parse_request(&deep).is_err());
        let fits = format!(r#"{{"type":"ping","timestamp":"{}"}}"#, "x".repeat(62));
        assert!(parse_request(&fits).is_ok());
    }
}
