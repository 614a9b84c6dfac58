//! `POST /api/v1/streaming/broadcast`: one event, or a batch of them.
//!
//! A body that is a JSON object is one event: `202 {"event_id": ...}`, or 400 with the reason.
//! A JSON array, or NDJSON (`Content-Type: application/x-ndjson`, one object per line), is a
//! batch of at most `rest.max_batch_events`: each event is validated on its own and the valid
//! ones are published in order; the answer lists a result per event (`{"event_id": ...}` or
//! `{"error": ...}`) with counts, status 202 when at least one was accepted, else 400 (with an
//! `error` as well). Batches
//! let a publisher send many events per request (the load-test harness sends what is due at
//! once). While the broker cannot take events, the answer is 503 and events not yet published
//! are reported as not published.
//!
//! Owns nothing that lives: it validates and hands events to the broker.

use super::reply::{error_body, json_response};
use crate::broker::BrokerError;
use crate::entity::EntityKeys;
use crate::event::parse_event;
use crate::hub::Hub;
use crate::settings::RestSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

/// Answers one broadcast request.
pub(super) async fn handle(
    hub: &Hub,
    settings: &RestSettings,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let ndjson = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("application/x-ndjson") || t.starts_with("application/jsonl")
        });
    let max = settings.max_body_bytes;
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &error_body(&format!("body larger than {max} bytes")),
            )
        }
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &error_body(&e.to_string())),
    };
    match split(&body, ndjson, settings.max_batch_events) {
        Ok(None) => one(hub, &body, &settings.entity_keys).await,
        Ok(Some(events)) => batch(hub, &events, &settings.entity_keys).await,
        Err(why) => json_response(StatusCode::BAD_REQUEST, &error_body(&why)),
    }
}

/// The events of a batch body (`None`: the body is one event).
fn split(body: &[u8], ndjson: bool, max: usize) -> Result<Option<Vec<&[u8]>>, String> {
    let events: Vec<&[u8]> = if ndjson {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .collect()
    } else if body.trim_ascii_start().starts_with(b"[") {
        let raws: Vec<&RawValue> =
            serde_json::from_slice(body).map_err(|e| format!("not a JSON array of events: {e}"))?;
        raws.into_iter().map(|r| r.get().as_bytes()).collect()
    } else {
        return Ok(None);
    };
    if events.is_empty() {
        return Err("the batch holds no event".into());
    }
    if events.len() > max {
        return Err(format!("more than {max} events in one batch"));
    }
    Ok(Some(events))
}

/// One event: validate, publish, answer 202 with its id.
async fn one(hub: &Hub, body: &[u8], keys: &EntityKeys) -> Response<Full<Bytes>> {
    let event = match parse_event(body, keys) {
        Ok(e) => e,
        Err(e) => {
            hub.metrics.events_rejected.fetch_add(1, Relaxed);
            return json_response(StatusCode::BAD_REQUEST, &error_body(&e.to_string()));
        }
    };
    let event_id = event.event_id.clone();
    match publish(hub, event).await {
        Ok(()) => json_response(StatusCode::ACCEPTED, &json!({"event_id": event_id})),
        Err(e) => unavailable(&e, error_body(&e.to_string())),
    }
}

/// Publishes one event, unless this instance's shards are too far behind to deliver it.
async fn publish(hub: &Hub, event: crate::event::ParsedEvent) -> Result<(), BrokerError> {
    if !hub.router.has_room() {
        return Err(BrokerError::Overloaded);
    }
    hub.broker.publish(event).await
}

/// 503, with `Retry-After: 1` when the hub is overloaded (the broker's own outage has no
/// known end).
fn unavailable(e: &BrokerError, body: Value) -> Response<Full<Bytes>> {
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    if matches!(e, BrokerError::Overloaded) {
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    r
}

/// A batch: each event validated and published in order; a result per event.
async fn batch(hub: &Hub, events: &[&[u8]], keys: &EntityKeys) -> Response<Full<Bytes>> {
    let mut results: Vec<Value> = Vec::with_capacity(events.len());
    let (mut accepted, mut failed) = (0usize, None::<BrokerError>);
    for raw in events {
        if let Some(why) = &failed {
            results.push(json!({"error": format!("not published: {why}")}));
            continue;
        }
        let event = match parse_event(raw, keys) {
            Ok(e) => e,
            Err(e) => {
                hub.metrics.events_rejected.fetch_add(1, Relaxed);
                results.push(json!({"error": e.to_string()}));
                continue;
            }
        };
        let event_id = event.event_id.clone();
        match publish(hub, event).await {
            Ok(()) => {
                accepted += 1;
                results.push(json!({"event_id": event_id}));
            }
            Err(why) => {
                results.push(json!({"error": format!("not published: {why}")}));
                failed = Some(why);
            }
        }
    }
    let status = match (&failed, accepted) {
        (Some(_), _) => StatusCode::SERVICE_UNAVAILABLE,
        (None, 0) => StatusCode::BAD_REQUEST,
        (None, _) => StatusCode::ACCEPTED,
    };
    let mut body = json!({
        "accepted": accepted,
        "rejected": events.len() - accepted,
        "results": results,
    });
    if let Some(why) = &failed {
        body["error"] = why.to_string().into();
        return unavailable(why, body);
    }
    if accepted == 0 {
        body["error"] = "no event of the batch was accepted".into();
    }
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arrays_and_ndjson() {
        assert_eq!(split(br#"{"a":1}"#, false, 10), Ok(None));
        let arr = split(br#" [{"a":1}, {"b":[2]}] "#, false, 10)
            .unwrap()
            .unwrap();
        assert_eq!(arr, [&br#"{"a":1}"#[..], br#"{"b":[2]}"#]);
        let nd = split(b"{\"a\":1}\n\n{\"b\":2}\n", true, 10)
            .unwrap()
            .unwrap();
        assert_eq!(nd.len(), 2);
        assert!(split(b"[]", false, 10).is_err());
        assert!(split(b"[1,", false, 10).is_err());
        assert!(split(b"[1,2,3]", false, 2)
            .unwrap_err()
            .contains("more than 2"));
    }
}
