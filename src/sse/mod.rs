//! Server-Sent Events: `GET /api/v1/streaming/events`, for networks that break WebSocket
//! upgrades and for scripts that only follow a stream (`curl -N`).
//!
//! An SSE client is the same client as a WebSocket's (`ClientHandle`: ring, reply queue, seam,
//! goodbye), fed by the same router; only the way out differs: [`stream`] turns what a
//! WebSocket writer would write into `text/event-stream`, each event's SSE form built once and
//! shared by every SSE client (`OutFrame::sse`). The request says everything up front:
//!
//! - the subscription: `event_types`, `cluster_filter`, `namespace_filter` (comma-separated,
//!   as `GET /state` takes them; every type when `event_types` is absent);
//! - the catch-up: `Last-Event-ID` (what a browser's `EventSource` sends when it reconnects) or
//!   `last_event_id` resumes like `resume_from`; `snapshot=true` sends the state first;
//! - the token: `Authorization: Bearer`, or `access_token` in the query, because a browser's
//!   `EventSource` cannot set headers (this route only; the hub never logs a request's query).
//!   The stream is opened only for a valid token, narrowed to its grant: an SSE connection is
//!   never unauthenticated, so it takes nothing from the unauthenticated budget.
//!
//! The rules of `/ws` hold otherwise: shutdown and `allowed_origins` (503, 403),
//! `max_connections` (503), the ring and its `QUEUE_FULL` notice, the drain and shutdown
//! goodbyes (the stream ends with `disconnect` and `retry:`), `/clients` lists the client with
//! its transport.
//!
//! Owns nothing that lives: each stream's state is its body's ([`stream`]).

mod stream;

use crate::auth::bearer;
use crate::client::ClientHandle;
use crate::codec::{Codec, Deflate, Wire};
use crate::hub::Hub;
use crate::protocol::{check_breadth, reply, Catchup};
use crate::rest::reply::{error_body, json_response};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) use stream::SseBody;

/// The route's path.
pub(crate) const PATH: &str = "/api/v1/streaming/events";

/// What any request on the service port is answered with: a whole body, or an event stream.
pub(crate) type HubBody = Either<Full<Bytes>, SseBody>;

/// A whole answer as a [`HubBody`].
fn whole(r: Response<Full<Bytes>>) -> Response<HubBody> {
    r.map(Either::Left)
}

/// Answers `GET /api/v1/streaming/events`: refused with a JSON error, or a stream.
pub(crate) async fn serve(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<HubBody> {
    if let Some(refused) = crate::http::refusal(&hub, &req) {
        return whole(refused);
    }
    let query = req.uri().query();
    let sub = match crate::rest::query::subscription(query) {
        Ok(sub) => sub,
        Err(why) => return whole(json_response(StatusCode::BAD_REQUEST, &error_body(&why))),
    };
    let principal = match authenticate(&hub, &req).await {
        Ok(p) => p,
        Err(refused) => return whole(refused),
    };
    let grant = principal
        .as_ref()
        .map(|p| p.grant.clone())
        .unwrap_or_default();
    let sub = match grant.admit(sub) {
        Ok(sub) => sub,
        Err(why) => {
            return whole(json_response(
                StatusCode::FORBIDDEN,
                &error_body(&why.to_string()),
            ))
        }
    };
    if let Err(r) = check_breadth(&sub) {
        return whole(json_response(
            StatusCode::BAD_REQUEST,
            &error_body(&r.message),
        ));
    }
    let Some(slot) = hub.reserve_connection() else {
        return whole(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &error_body("max_connections reached; retry later"),
        ));
    };
    let catchup = catchup_of(&req, query);
    let expires_at = principal.as_ref().and_then(|p| p.expires_at);
    let client = new_client(&hub, shard, remote, principal.map(|p| p.subject));
    hub.register(client.clone());
    let catching_up = catchup.resume_from.is_some() || catchup.snapshot;
    client.hold_events(catching_up);
    if let Err(full) = hub.subscriptions.set(&client, vec![sub.clone()]).await {
        hub.unregister(&client);
        return whole(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &error_body(&full.to_string()),
        ));
    }
    let positions = hub.router.history().positions();
    client.send_control(reply::subscribed(&sub, &positions));
    let catch_up = catching_up.then(|| {
        let (hub, client) = (hub.clone(), client.clone());
        tokio::spawn(async move { crate::session::catch_up(&hub, &client, &sub, &catchup).await })
    });
    respond(
        &hub,
        stream::body(hub.clone(), client, slot, catch_up, expires_at),
    )
}

/// The 200 that carries the stream: not to be cached or buffered by a proxy, with the sticky
/// cookie like a WebSocket upgrade's.
fn respond(hub: &Hub, body: SseBody) -> Response<HubBody> {
    let mut response = Response::new(Either::Right(body));
    let headers = response.headers_mut();
    let set = |h: &mut hyper::HeaderMap, k, v: &'static str| {
        h.insert(k, hyper::header::HeaderValue::from_static(v));
    };
    set(headers, hyper::header::CONTENT_TYPE, "text/event-stream");
    set(headers, hyper::header::CACHE_CONTROL, "no-cache");
    headers.insert(
        hyper::header::HeaderName::from_static("x-accel-buffering"),
        hyper::header::HeaderValue::from_static("no"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&hub.settings.http.sticky_cookie) {
        headers.insert(hyper::header::SET_COOKIE, v);
    }
    response
}

/// The token's principal (`None` while auth is off), from `Authorization: Bearer` or the
/// `access_token` query parameter; a 401 when there is none or it is not valid.
async fn authenticate(
    hub: &Hub,
    req: &Request<Incoming>,
) -> Result<Option<crate::auth::Principal>, Response<Full<Bytes>>> {
    if !hub.settings.rest.auth {
        return Ok(None);
    }
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let from_query =
        crate::rest::query::param(req.uri().query(), "access_token").map(|t| t.into_owned());
    let token = bearer(header).map(str::to_string).or(from_query);
    let missing = "missing token: Authorization: Bearer, or access_token in the query";
    crate::rest::principal(hub, token.as_deref(), missing)
        .await
        .map(Some)
}

/// What the stream sends ahead of live events: the resume (`Last-Event-ID` wins over
/// `last_event_id`) and the snapshot.
fn catchup_of(req: &Request<Incoming>, query: Option<&str>) -> Catchup {
    let header = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    let resume_from = header
        .or_else(|| crate::rest::query::param(query, "last_event_id").map(|t| t.into_owned()))
        .filter(|id| id.len() <= 256);
    let snapshot = crate::rest::query::param(query, "snapshot").is_some_and(|v| v == "true");
    Catchup {
        resume_from,
        snapshot,
        positions: None,
    }
}

/// The client of a new stream: authenticated (the token was checked before), speaking SSE.
fn new_client(
    hub: &Hub,
    shard: usize,
    remote: SocketAddr,
    subject: Option<String>,
) -> Arc<ClientHandle> {
    let settings = &hub.settings.connection;
    let wire = Wire {
        codec: Codec::Sse,
        deflate: Deflate::Off,
    };
    let client =
        ClientHandle::new(shard, remote, settings.queue_size, settings.drop_oldest).with_wire(wire);
    client.set_authenticated();
    if let Some(subject) = subject {
        client.set_subject(subject);
    }
    Arc::new(client)
}
