//! The REST API (docs/design.md, "REST") plus `/metrics`, `/healthz`, `/readyz`, the
//! console and the OpenAPI document.
//!
//! Every route is one row of [`ROUTES`]: method, path, who may call it, and what answers. The
//! 404 / 405 decision and the `Allow` header come from that table, and a test holds the OpenAPI
//! document's paths to it. Owns nothing but the table; [`admin`] answers the admin reads,
//! [`broadcast`] the publishing endpoint, [`reply`] shapes every answer.

mod admin;
mod broadcast;
pub(crate) mod query;
pub(crate) mod reply;
mod state;

use crate::auth::{bearer, ROLE_ADMIN, ROLE_INTERNAL};
use crate::hub::Hub;
use crate::settings::RestSettings;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use reply::{error_body, json_response, method_not_allowed, text_response};
use serde_json::json;
use std::sync::Arc;

/// The OpenAPI document of these endpoints.
const OPENAPI: &str = include_str!("openapi.json");

/// Who may call a route while authentication is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone (scrapers, load balancers, the console's files).
    Open,
    /// Any valid token.
    Token,
    /// A token with this role.
    Role(&'static str),
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Healthz,
    Readyz,
    Metrics,
    Console,
    Status,
    Subscriptions,
    Clients,
    Broadcast,
    OpenApi,
    Flamegraph,
    Heap,
    Disconnect,
    Drain,
    State,
}

/// One route: method, path, access, handler.
type Route = (Method, &'static str, Access, Handler);

/// Every route the REST API serves (`{id}` stands for one path segment).
const ROUTES: [Route; 17] = [
    (Method::GET, "/healthz", Access::Open, Handler::Healthz),
    (Method::GET, "/readyz", Access::Open, Handler::Readyz),
    (Method::GET, "/metrics", Access::Open, Handler::Metrics),
    (Method::GET, "/", Access::Open, Handler::Console),
    (Method::GET, "/console.js", Access::Open, Handler::Console),
    (Method::GET, "/console.css", Access::Open, Handler::Console),
    (Method::GET, "/client.js", Access::Open, Handler::Console),
    (
        Method::GET,
        "/api/v1/streaming/status",
        Access::Role(ROLE_ADMIN),
        Handler::Status,
    ),
    (
        Method::GET,
        "/api/v1/streaming/subscriptions",
        Access::Role(ROLE_ADMIN),
        Handler::Subscriptions,
    ),
    (
        Method::GET,
        "/api/v1/streaming/clients",
        Access::Role(ROLE_ADMIN),
        Handler::Clients,
    ),
    (
        Method::POST,
        "/api/v1/streaming/broadcast",
        Access::Role(ROLE_INTERNAL),
        Handler::Broadcast,
    ),
    (
        Method::GET,
        "/api/v1/streaming/openapi.json",
        Access::Token,
        Handler::OpenApi,
    ),
    (
        Method::GET,
        "/debug/pprof/flamegraph",
        Access::Role(ROLE_ADMIN),
        Handler::Flamegraph,
    ),
    (
        Method::GET,
        "/debug/heap",
        Access::Role(ROLE_ADMIN),
        Handler::Heap,
    ),
    (
        Method::POST,
        "/api/v1/streaming/clients/{id}/disconnect",
        Access::Role(ROLE_ADMIN),
        Handler::Disconnect,
    ),
    (
        Method::POST,
        "/api/v1/streaming/drain",
        Access::Role(ROLE_ADMIN),
        Handler::Drain,
    ),
    (
        Method::GET,
        "/api/v1/streaming/state",
        Access::Token,
        Handler::State,
    ),
];

/// Whether `path` is the route path `pattern`, where `{id}` stands for one non-empty segment:
/// `Some` with that segment (if the pattern has one), `None` when it is not.
fn matches<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    let mut id = None;
    loop {
        match (p.next(), q.next()) {
            (None, None) => return Some(id),
            (Some("{id}"), Some(seg)) if !seg.is_empty() => id = Some(seg),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// Why no route answers a request.
enum Miss {
    /// No route has the path.
    NotFound,
    /// Routes have the path, with these methods (the `Allow` header).
    Method(String),
}

/// The route for `method` and `path` (with the path's `{id}`, if the route has one), or why
/// there is none. The flamegraph is there only with profiling on.
fn find<'a>(
    method: &Method,
    path: &'a str,
    settings: &RestSettings,
) -> Result<(Access, Handler, Option<&'a str>), Miss> {
    let served = |r: &Route| r.3 != Handler::Flamegraph || settings.profiling;
    let mut methods = Vec::new();
    for route @ (m, pattern, access, handler) in ROUTES.iter() {
        let Some(id) = matches(pattern, path).filter(|_| served(route)) else {
            continue;
        };
        if m == method {
            return Ok((*access, *handler, id));
        }
        methods.push(m.as_str());
    }
    match methods.is_empty() {
        true => Err(Miss::NotFound),
        false => Err(Miss::Method(methods.join(", "))),
    }
}

/// Answers one REST request. While auth is enabled, every `/api/v1/streaming/*` endpoint and
/// the profiler need a bearer token: `admin` for status, clients, subscriptions, the disconnect
/// and drain actions and the profiler,
/// `internal` for broadcast, any valid token for the OpenAPI document and the state (narrowed to
/// the token's grant). `/metrics`, `/healthz` and
/// `/readyz` stay open for scrapers and load balancers.
pub(crate) async fn handle(hub: Arc<Hub>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let settings = &hub.settings.rest;
    let path = req.uri().path().to_string();
    let (access, handler, id) = match find(req.method(), &path, settings) {
        Ok(found) => found,
        Err(Miss::NotFound) => {
            return json_response(StatusCode::NOT_FOUND, &error_body("not found"))
        }
        Err(Miss::Method(allow)) => return method_not_allowed(&allow),
    };
    let role = match access {
        Access::Open => None,
        Access::Token => Some(None),
        Access::Role(role) => Some(Some(role)),
    };
    // The caller's grant (no limit while auth is off, or for an open route).
    let mut grant = crate::auth::Grant::default();
    if let Some(role) = role {
        match authorize(&hub, settings.auth, &req, role).await {
            Ok(principal) => grant = principal.map(|p| p.grant).unwrap_or_default(),
            Err(refused) => return refused,
        }
    }
    let query = req.uri().query();
    match handler {
        Handler::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Handler::Readyz => readyz(&hub),
        Handler::Metrics => metrics(&hub),
        Handler::Console => crate::console::serve(&path, req.headers()),
        Handler::Status => json_response(StatusCode::OK, &admin::status(&hub, settings)),
        Handler::Subscriptions => json_response(StatusCode::OK, &admin::subscriptions(&hub)),
        Handler::Clients => admin::clients(&hub, query, settings.slow_client_threshold_ms),
        Handler::Broadcast => broadcast::handle(&hub, settings, req).await,
        Handler::OpenApi => text_response(StatusCode::OK, "application/json", OPENAPI.to_string()),
        Handler::Flamegraph => admin::profile(query).await,
        Handler::Heap => admin::heap(),
        Handler::Disconnect => admin::disconnect(&hub, id.unwrap_or_default()),
        Handler::Drain => admin::drain(&hub, req).await,
        Handler::State => state::handle(&hub, query, &grant, &settings.entity_keys).await,
    }
}

/// `GET /metrics`: the Prometheus text of [`crate::metrics`], with the gauges other parts keep.
fn metrics(hub: &Hub) -> Response<Full<Bytes>> {
    let facts = &hub.settings.rest.facts;
    let gauges = crate::metrics::Gauges {
        index_keys: hub.index.keys(),
        index_keys_max: facts.max_index_keys,
        connections_max: facts.max_connections,
        broker_healthy: hub.broker.health().is_ok(),
        shards: hub.writers.windows.report(),
        broker_connected: hub.broker.connected(),
        heap: crate::heap::totals().map(|h| (h.allocated, h.resident)),
        state: {
            let sizes = hub.router.history().sizes();
            (sizes.entities, sizes.evicted)
        },
        origins: hub.broker.origins(),
    };
    text_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        hub.metrics.exposition(&gauges),
    )
}

/// Checks the bearer token (and its `role`, when one is needed) while auth is on: who it is
/// (`None` while auth is off).
async fn authorize(
    hub: &Hub,
    enabled: bool,
    req: &Request<Incoming>,
    role: Option<&str>,
) -> Result<Option<crate::auth::Principal>, Response<Full<Bytes>>> {
    if !enabled {
        return Ok(None);
    }
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let p = principal(hub, bearer(header), "missing bearer token").await?;
    match role {
        Some(r) if !p.has_role(r) => Err(json_response(
            StatusCode::FORBIDDEN,
            &error_body(&format!("needs the {r} role")),
        )),
        _ => Ok(Some(p)),
    }
}

/// Who `token` is, or the 401 that says why not (`missing` when there is no token).
pub(crate) async fn principal(
    hub: &Hub,
    token: Option<&str>,
    missing: &str,
) -> Result<crate::auth::Principal, Response<Full<Bytes>>> {
    let Some(token) = token else {
        return Err(json_response(
            StatusCode::UNAUTHORIZED,
            &error_body(missing),
        ));
    };
    hub.auth
        .authenticate(token)
        .await
        .map_err(|e| json_response(StatusCode::UNAUTHORIZED, &error_body(&e.to_string())))
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
            &json!({"ready": false, "reason": why.to_string()}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_path_takes_one_segment_for_an_id() {
        let p = "/api/v1/streaming/clients/{id}/disconnect";
        assert_eq!(
            matches(p, "/api/v1/streaming/clients/abc/disconnect"),
            Some(Some("abc"))
        );
        assert!(matches(p, "/api/v1/streaming/clients//disconnect").is_none());
        assert!(matches(p, "/api/v1/streaming/clients/a/b/disconnect").is_none());
        assert!(matches(p, "/api/v1/streaming/clients/abc").is_none());
        assert_eq!(matches("/healthz", "/healthz"), Some(None));
        assert!(matches("/healthz", "/healthz/").is_none());
    }

    #[test]
    fn the_openapi_document_lists_the_routes_it_documents() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("the document parses");
        let mut documented: Vec<String> = Vec::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        let mut routed: Vec<String> = ROUTES
            .iter()
            .filter(|r| r.3 != Handler::Console && !r.1.starts_with("/debug/"))
            .map(|r| format!("{} {}", r.0, r.1))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
