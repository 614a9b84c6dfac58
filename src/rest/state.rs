//! `GET /api/v1/streaming/state`: the state a dashboard renders on load (the latest event of
//! each entity, `crate::state`), over HTTP, with the position it was read at. A page renders the
//! events, then subscribes with `resume_from` that position and misses nothing in between (no
//! position: nothing to resume from yet, so it subscribes with `snapshot` instead).
//!
//! The same content as a `snapshot` on subscribe: filtered by the query as a subscription would
//! be, narrowed by the token's grant, read from this instance's history or, where that cannot be
//! complete (Redis Cluster), folded from the broker's shared history.
//!
//! Owns nothing: it reads the history or the shared history and shapes the answer.

use super::reply::{error_body, json_response, text_response};
use crate::auth::Grant;
use crate::entity::{removals, EntityKeys};
use crate::frame::OutFrame;
use crate::hub::Hub;
use crate::state::State;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;
use std::sync::Arc;

/// What a read found: the events, oldest change first, and the position.
struct Read {
    /// The latest event of each matching entity.
    frames: Vec<Arc<OutFrame>>,
    /// The id of the last event before the read, if there is one to resume from.
    position: Option<String>,
    /// NATS mode: the last `origin_seq` of each origin region before the read.
    positions: Vec<(Arc<str>, u64)>,
}

/// Answers `GET /state?event_types=&cluster_filter=&namespace_filter=` for a token with `grant`.
pub(super) async fn handle(
    hub: &Hub,
    query: Option<&str>,
    grant: &Grant,
    keys: &EntityKeys,
) -> Response<Full<Bytes>> {
    let sub = match super::query::subscription(query) {
        Ok(sub) => sub,
        Err(why) => return json_response(StatusCode::BAD_REQUEST, &error_body(&why)),
    };
    let sub = match grant.admit(sub) {
        Ok(sub) => sub,
        Err(why) => return json_response(StatusCode::FORBIDDEN, &error_body(&why.to_string())),
    };
    let read = match hub.broker.shared_history() {
        None => {
            let read = hub.router.history().state(&sub);
            Read {
                frames: read.frames,
                position: read.position,
                positions: read.positions,
            }
        }
        Some(shared) => {
            match tokio::time::timeout(crate::broker::SHARED_HISTORY_TIMEOUT, shared.recent()).await
            {
                Ok(Ok(Some(events))) => {
                    let frames: Vec<Arc<OutFrame>> =
                        events.into_iter().map(|e| OutFrame::event(e, 0)).collect();
                    let position = frames
                        .last()
                        .and_then(|f| f.event.as_ref())
                        .map(|m| m.event_id.clone());
                    let (max_entries, max_bytes) = hub.settings.session.state_bounds;
                    let state = State::fold(frames, &sub, max_entries, max_bytes);
                    Read {
                        frames: state.read(&sub),
                        position,
                        positions: Vec::new(),
                    }
                }
                _ => {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &error_body("the shared history cannot be read now"),
                    )
                }
            }
        }
    };
    text_response(StatusCode::OK, "application/json", body(&read, keys))
}

/// `{"events":[...],"count":n,"position":..,"rules":{..}}`, each event's message as delivered
/// (its bytes copied once into the answer, not parsed again).
fn body(read: &Read, keys: &EntityKeys) -> String {
    let messages: Vec<&[u8]> = read.frames.iter().map(|f| f.message()).collect();
    let size: usize = messages.iter().map(|m| m.len() + 1).sum();
    let mut out = String::with_capacity(size + 512);
    out.push_str(r#"{"events":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Event messages are JSON text, built from a UTF-8 body.
        out.push_str(&String::from_utf8_lossy(m));
    }
    let mut rest = json!({
        "count": messages.len(),
        "position": read.position,
        "rules": {"entity_keys": keys.lists(), "removes": removals()},
    });
    if !read.positions.is_empty() {
        let positions: serde_json::Map<String, serde_json::Value> = read
            .positions
            .iter()
            .map(|(r, p)| (r.to_string(), json!(p)))
            .collect();
        rest["positions"] = positions.into();
    }
    out.push_str("],");
    // `rest` is an object: append its members after the events.
    let rest = rest.to_string();
    out.push_str(rest.strip_prefix('{').unwrap_or(&rest));
    out
}
