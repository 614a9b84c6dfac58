//! The REST API of section 6.1 plus `/metrics`, `/healthz`, `/readyz` and the OpenAPI document.

use crate::auth::{bearer, ROLE_ADMIN, ROLE_INTERNAL};
use crate::hub::Hub;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The OpenAPI document of these endpoints.
const OPENAPI: &str = include_str!("openapi.json");

/// Answers one REST request. While auth is enabled, every `/api/v1/streaming/*` endpoint and
/// the profiler need a bearer token: `admin` for status, clients, subscriptions and the profiler,
/// `internal` for broadcast, any valid token for the OpenAPI document. `/metrics`, `/healthz` and
/// `/readyz` stay open for scrapers and load balancers.
pub(crate) async fn handle(hub: Arc<Hub>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let role = match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => {
            return json_response(StatusCode::OK, &json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => return readyz(&hub),
        (&Method::GET, p) if crate::console::PATHS.contains(&p) => {
            return crate::console::serve(p, req.headers())
        }
        (&Method::GET, "/metrics") => return metrics(&hub),
        (&Method::POST, "/api/v1/streaming/broadcast") => Some(ROLE_INTERNAL),
        (&Method::GET, "/api/v1/streaming/openapi.json") => None,
        (&Method::GET, "/debug/pprof/flamegraph") if hub.config.profiling.enabled => {
            Some(ROLE_ADMIN)
        }
        (&Method::GET, "/debug/heap") => Some(ROLE_ADMIN),
        (&Method::GET, p) if ADMIN_PATHS.contains(&p) => Some(ROLE_ADMIN),
        (_, p) if KNOWN_PATHS.contains(&p) || ADMIN_PATHS.contains(&p) => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &error_body("method not allowed"),
            )
        }
        _ => return json_response(StatusCode::NOT_FOUND, &error_body("not found")),
    };
    if let Err(refused) = authorize(&hub, &req, role).await {
        return refused;
    }
    match path.as_str() {
        "/api/v1/streaming/status" => json_response(StatusCode::OK, &status(&hub)),
        "/api/v1/streaming/subscriptions" => json_response(StatusCode::OK, &subscriptions(&hub)),
        "/api/v1/streaming/clients" => {
            json_response(StatusCode::OK, &clients(&hub, req.uri().query()))
        }
        "/api/v1/streaming/broadcast" => crate::broadcast::handle(&hub, req).await,
        "/debug/pprof/flamegraph" => profile(req.uri().query()).await,
        "/debug/heap" => heap(),
        _ => text_response(StatusCode::OK, "application/json", OPENAPI.to_string()),
    }
}

/// The endpoints that need the `admin` role.
const ADMIN_PATHS: [&str; 3] = [
    "/api/v1/streaming/status",
    "/api/v1/streaming/subscriptions",
    "/api/v1/streaming/clients",
];

/// The other endpoints, for telling 405 from 404.
const KNOWN_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/streaming/broadcast",
    "/api/v1/streaming/openapi.json",
];

/// `status.write_coalescing`: the configured window and each shard's utilization and window now.
fn write_coalescing(hub: &Hub) -> serde_json::Value {
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
        "adaptive": hub.config.websocket.write_coalesce_adaptive, "shards": shards})
}

/// `GET /metrics`: Prometheus text, with `redis_connected` when the broker has a connection.
fn metrics(hub: &Hub) -> Response<Full<Bytes>> {
    let mut text = hub.metrics.render();
    text.push_str(&format!(
        "# HELP streamhub_index_keys Keys (event type, cluster, namespace) in the subscription index.\n# TYPE streamhub_index_keys gauge\nstreamhub_index_keys {}\n",
        hub.index.keys()
    ));
    text.push_str("# HELP streamhub_shard_utilization Share of wall time each shard's runtime spent running tasks (smoothed).\n# TYPE streamhub_shard_utilization gauge\n");
    text.push_str("# HELP streamhub_write_coalesce_window_seconds Each shard's write-coalescing window now (it follows the shard's utilization).\n# TYPE streamhub_write_coalesce_window_seconds gauge\n");
    for (i, (busy, window)) in hub.writers.windows.report().into_iter().enumerate() {
        text.push_str(&format!(
            "streamhub_shard_utilization{{shard=\"{i}\"}} {busy:.3}\nstreamhub_write_coalesce_window_seconds{{shard=\"{i}\"}} {:.6}\n",
            window.as_secs_f64()
        ));
    }
    if let Some(up) = hub.broker.connected() {
        text.push_str(&format!(
            "# HELP redis_connected Whether the Redis subscription is live.\n# TYPE redis_connected gauge\nredis_connected {}\n",
            u8::from(up)
        ));
    }
    if let Some(heap) = crate::heap::totals() {
        text.push_str(&format!(
            "# HELP streamhub_heap_allocated_bytes Bytes the hub holds on its heap.\n# TYPE streamhub_heap_allocated_bytes gauge\nstreamhub_heap_allocated_bytes {}\n\
             # HELP streamhub_heap_resident_bytes Bytes of memory the allocator holds.\n# TYPE streamhub_heap_resident_bytes gauge\nstreamhub_heap_resident_bytes {}\n",
            heap.allocated, heap.resident
        ));
    }
    text_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}

/// `GET /debug/heap`: the allocator's totals and its live allocations by size class.
fn heap() -> Response<Full<Bytes>> {
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

/// `{"error": message}`.
pub(crate) fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    text_response(status, "application/json", body.to_string())
}

/// A response with a body and content type.
fn text_response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Checks the bearer token (and its `role`, when one is needed) while auth is on.
async fn authorize(
    hub: &Hub,
    req: &Request<Incoming>,
    role: Option<&str>,
) -> Result<(), Response<Full<Bytes>>> {
    if !hub.config.auth.enabled {
        return Ok(());
    }
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = bearer(header) else {
        return Err(json_response(
            StatusCode::UNAUTHORIZED,
            &error_body("missing bearer token"),
        ));
    };
    match hub.auth.authenticate(token).await {
        Err(e) => Err(json_response(
            StatusCode::UNAUTHORIZED,
            &error_body(&e.to_string()),
        )),
        Ok(p) if role.is_some_and(|r| !p.has_role(r)) => Err(json_response(
            StatusCode::FORBIDDEN,
            &error_body(&format!("needs the {} role", role.unwrap_or_default())),
        )),
        Ok(_) => Ok(()),
    }
}

/// `/readyz`: 200 while the hub takes connections and its broker delivers.
fn readyz(hub: &Hub) -> Response<Full<Bytes>> {
    if hub.is_shutting_down() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": "shutting down"}),
        );
    }
    match hub.broker.health() {
        Ok(()) => json_response(StatusCode::OK, &json!({"ready": true})),
        Err(why) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": why}),
        ),
    }
}

/// `GET /api/v1/streaming/status`.
fn status(hub: &Hub) -> Value {
    let m = &hub.metrics;
    let history = hub.router.history().sizes();
    let broker = hub.broker.health();
    let routed: u64 = m.routed_by_type().iter().sum();
    json!({
        "status": if hub.is_shutting_down() { "shutting_down" } else { "running" },
        "instance_id": hub.config.scaling.instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": hub.broker.mode(),
        "uptime_seconds": hub.uptime_seconds(),
        "shards": hub.shard_count(),
        "ready": !hub.is_shutting_down() && broker.is_ok(),
        "broker": {
            "mode": hub.broker.mode(),
            "healthy": broker.is_ok(),
            "detail": broker.err(),
            "stats": hub.broker.details(),
        },
        "connections": {
            "active": m.connections_active.load(Relaxed),
            "total": m.sum(|s| &s.connections_total),
            "max": hub.config.websocket.max_connections,
            "unauthenticated": hub.unauthenticated.as_ref().map_or(0, |b| b.len()),
        },
        "subscriptions": m.subscriptions.load(Relaxed),
        "index_updates": m.index_updates.load(Relaxed),
        "msgpack": {"events_encoded": crate::codec::events_encoded()},
        "deflate": {"events_compressed": crate::codec::events_compressed()},
        "history": {
            "recent_events": history.0,
            "snapshot_keys": history.1,
            "max_events": hub.config.history.max_events,
        },
        "write_coalescing": write_coalescing(hub),
        "index_keys": {
            "held": hub.index.keys(),
            "max": hub.config.websocket.max_index_keys,
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

/// `GET /api/v1/streaming/subscriptions`: counts by event type, cluster and namespace.
fn subscriptions(hub: &Hub) -> Value {
    hub.tally.lock().to_json()
}

/// `GET /api/v1/streaming/clients[?limit=N]` (at most 1000 rows unless asked for more).
fn clients(hub: &Hub, query: Option<&str>) -> Value {
    let limit = query_param(query, "limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1000);
    let slow = hub.config.backpressure.slow_client_threshold_ms;
    let list: Vec<_> = hub
        .clients
        .iter()
        .take(limit)
        .map(|c| c.info(slow))
        .collect();
    json!({ "count": hub.clients.len(), "clients": list })
}

/// The value of query parameter `name`.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `GET /debug/pprof/flamegraph?seconds=N` (default 10).
async fn profile(query: Option<&str>) -> Response<Full<Bytes>> {
    let seconds = query_param(query, "seconds")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .unwrap_or(10.0);
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
