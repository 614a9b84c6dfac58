//! The live console: `GET /` serves a page built into the binary, and `GET /client.js` the
//! JavaScript client it runs on (`clients/js/index.js`, the same file as the npm package).
//!
//! The page shows the hub's status, live connection and event rates and drops (from
//! `GET /api/v1/streaming/status`, every 2 s), alerts by severity, GPU utilization as small
//! charts, and a filterable tail of live events (subscribed to every type with a snapshot
//! first). Both files are public: with authentication on, the page asks for a token and uses it
//! for the WebSocket's `auth` and as the bearer of its status requests (which need `admin`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// The page.
const PAGE: &str = include_str!("console.html");

/// The client library the page imports.
const CLIENT: &str = include_str!("../clients/js/index.js");

/// `GET /client.js` serves the client; any other path the page.
pub(crate) fn serve(path: &str) -> Response<Full<Bytes>> {
    let (body, content_type) = match path {
        "/client.js" => (CLIENT, "text/javascript; charset=utf-8"),
        _ => (PAGE, "text/html; charset=utf-8"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    response
}
