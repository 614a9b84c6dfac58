//! The admin reads of the REST API: `status`, `subscriptions`, `clients`, and the debugging
//! endpoints (`/debug/heap`, the flamegraph). Owns nothing: each answer is read from the parts
//! that own the figures (metrics, the index, the history, the subscriptions, the registry).

use super::query::{count, number};
use super::reply::{error_body, json_response, text_response};
use crate::hub::Hub;
use crate::settings::RestSettings;
use bytes::Bytes;
use http_body_util::Full;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

/// `status.write_coalescing`: the configured window and each shard's utilization and window now.
fn write_coalescing(hub: &Hub, adaptive: bool) -> serde_json::Value {
    let shards: Vec<_> = hub
        .writers
        .windows
        .report()
        .into_iter()
        .map(|(busy, window)| {
            serde_json::json!({"utilization": (busy * 1000.0).round() / 1000.0,
                "window_ms": window.as_secs_f64() * 1000.0})
        })
        .collect();
    serde_json::json!({"max_ms": hub.writers.windows.max().as_secs_f64() * 1000.0,
        "adaptive": adaptive, "shards": shards})
}

/// `GET /debug/heap`: the allocator's totals and its live allocations by size class.
pub(super) fn heap() -> Response<Full<Bytes>> {
    match (crate::heap::totals(), crate::heap::by_size_class()) {
        (Some(totals), Some(classes)) => json_response(
            StatusCode::OK,
            &json!({"totals": totals, "size_classes": classes}),
        ),
        _ => json_response(
            StatusCode::NOT_IMPLEMENTED,
            &error_body("the allocator keeps no statistics"),
        ),
    }
}

/// `GET /api/v1/streaming/status`.
pub(super) fn status(hub: &Hub, settings: &RestSettings) -> Value {
    let facts = &settings.facts;
    let m = &hub.metrics;
    let history = hub.router.history().sizes();
    let broker = hub.broker.health();
    let routed: u64 = m.routed_by_type().iter().sum();
    json!({
        "status": if hub.is_shutting_down() { "shutting_down" } else { "running" },
        "instance_id": facts.instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": hub.broker.mode(),
        "uptime_seconds": hub.uptime_seconds(),
        "shards": hub.shard_count(),
        "ready": !hub.is_shutting_down() && broker.is_ok(),
        "broker": {
            "mode": hub.broker.mode(),
            "healthy": broker.is_ok(),
            "detail": broker.as_ref().err().map(ToString::to_string),
            "stats": hub.broker.details(),
        },
        "connections": {
            "active": m.connections_active.load(Relaxed),
            "total": m.sum(|s| &s.connections_total),
            "max": facts.max_connections,
            "unauthenticated": hub.unauthenticated.as_ref().map_or(0, |b| b.len()),
        },
        "subscriptions": m.subscriptions.load(Relaxed),
        "index_updates": m.index_updates.load(Relaxed),
        "msgpack": {"events_encoded": crate::metrics::events_encoded()},
        "deflate": {"events_compressed": crate::metrics::events_compressed()},
        "history": {
            "recent_events": history.recent,
            "state_entities": history.entities,
            "state_evicted": history.evicted,
            "max_events": facts.max_events,
        },
        "write_coalescing": write_coalescing(hub, facts.coalesce_adaptive),
        "index_keys": {
            "held": hub.index.keys(),
            "max": facts.max_index_keys,
        },
        "events": {
            "routed": routed,
            "deliveries": m.sum(|s| &s.deliveries),
            "dropped": m.sum(|s| &s.events_dropped),
            "rejected": m.events_rejected.load(Relaxed),
            "shed": m.events_shed.load(Relaxed),
        },
        "messages": {
            "sent": m.sum(|s| &s.messages_sent),
            "received": m.sum(|s| &s.messages_received),
        },
        "heartbeat_timeouts": m.sum(|s| &s.heartbeat_timeouts),
    })
}

/// `POST /api/v1/streaming/clients/{id}/disconnect`: the client is told to go (`disconnect`,
/// reason `disconnected_by_operator`, close 1000); 202, or 404 when no client of this instance
/// has that id.
pub(super) fn disconnect(hub: &Hub, id: &str) -> Response<Full<Bytes>> {
    // An id that is not even a UUID names no client either.
    match uuid::Uuid::parse_str(id) {
        Ok(id) if hub.disconnect_client(&id) => json_response(
            StatusCode::ACCEPTED,
            &json!({"disconnected": id.to_string()}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &error_body("no client of this instance has that id"),
        ),
    }
}

/// `POST /api/v1/streaming/drain[{"reconnect_after_ms": N}]`: this instance takes no new
/// connection and tells every client to reconnect elsewhere, after a delay spread around N
/// (default `shutdown.reconnect_after_ms`); 202 with how many clients were told.
pub(super) async fn drain(hub: &Hub, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let why = "the body must be a JSON object under 4 KiB";
            return json_response(StatusCode::BAD_REQUEST, &error_body(why));
        }
    };
    let advice = match drain_advice(&body) {
        Ok(a) => a.unwrap_or(hub.settings.connection.reconnect_after_ms),
        Err(why) => return json_response(StatusCode::BAD_REQUEST, &error_body(why)),
    };
    let clients = hub.clients.len();
    tracing::warn!(advice, clients, "drain requested over REST");
    hub.drain(advice);
    json_response(
        StatusCode::ACCEPTED,
        &json!({"draining": true, "clients": clients, "reconnect_after_ms": advice}),
    )
}

/// The `reconnect_after_ms` a drain body asks for: none for an empty body or object without it.
fn drain_advice(body: &[u8]) -> Result<Option<u64>, &'static str> {
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    let bad = "the body must be {\"reconnect_after_ms\": a whole number of milliseconds}";
    let v: Value = serde_json::from_slice(body).map_err(|_| bad)?;
    let obj = v.as_object().ok_or(bad)?;
    if obj.keys().any(|k| k != "reconnect_after_ms") {
        return Err(bad);
    }
    match obj.get("reconnect_after_ms") {
        None => Ok(None),
        Some(n) => n.as_u64().filter(|n| *n <= 3_600_000).map(Some).ok_or(bad),
    }
}

/// `GET /api/v1/streaming/subscriptions`: counts by event type, cluster and namespace.
pub(super) fn subscriptions(hub: &Hub) -> Value {
    hub.subscriptions.tally_json()
}

/// `GET /api/v1/streaming/clients[?limit=N]` (at most 1000 rows unless asked for more); a
/// `limit` that is not a whole number is a 400.
pub(super) fn clients(
    hub: &Hub,
    query: Option<&str>,
    slow_threshold_ms: u64,
) -> Response<Full<Bytes>> {
    let limit = match count(query, "limit") {
        Ok(limit) => limit.unwrap_or(1000),
        Err(bad) => return bad.answer(),
    };
    let list: Vec<_> = hub
        .clients
        .iter()
        .take(limit)
        .map(|c| c.info(slow_threshold_ms, hub.subscriptions.of(&c)))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "count": hub.clients.len(), "clients": list }),
    )
}

/// `GET /debug/pprof/flamegraph?seconds=N` (default 10).
pub(super) async fn profile(query: Option<&str>) -> Response<Full<Bytes>> {
    let seconds = match number::<f64>(query, "seconds", "a number of seconds") {
        Ok(s) => s.filter(|s| s.is_finite()).unwrap_or(10.0),
        Err(bad) => return bad.answer(),
    };
    match crate::profiling::flamegraph(seconds).await {
        Ok(svg) => text_response(
            StatusCode::OK,
            "image/svg+xml",
            String::from_utf8_lossy(&svg).into_owned(),
        ),
        Err(e @ crate::profiling::ProfileError::Busy) => {
            json_response(StatusCode::CONFLICT, &error_body(&e.to_string()))
        }
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error_body(&e.to_string()),
        ),
    }
}
