//! The live console: `GET /` serves a page built into the binary, `GET /console.js` and
//! `GET /console.css` its script and style, and `GET /client.js` the JavaScript client it runs
//! on (`clients/js/index.js`, the same file as the npm package).
//!
//! The page shows the hub's status, live connection and event rates and drops (from
//! `GET /api/v1/streaming/status`, every 2 s); the hub's state (loaded over `GET /state`, then
//! kept by live events): active alerts by severity, one tile per GPU node, each cluster's
//! status; and a filterable tail of live events. The files are public: with authentication on,
//! the page asks for a token and uses it for the WebSocket's `auth` and as the bearer of its REST
//! requests; the roles `auth_response` reports decide whether it offers the admin panel (clients,
//! disconnect, drain) and the publish form (`internal`).
//!
//! Event data is shown as text only (the script never builds markup from it), and every file
//! goes out with a strict Content-Security-Policy ([`policy`]): scripts and styles from the hub
//! alone, none inline, connections to the hub alone, never framed.
//!
//! Owns the console's files, built into the binary; nothing changes at run time.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// The page.
const PAGE: &str = include_str!("console.html");
/// The page's script.
const SCRIPT: &str = include_str!("console.js");
/// The page's style.
const STYLE: &str = include_str!("console.css");
/// The client library the page imports.
const CLIENT: &str = include_str!("../clients/js/index.js");

/// Serves one of the console's paths (`/`, `/console.js`, `/console.css`, `/client.js`; any
/// other path gets the page); `headers` are the request's.
pub(crate) fn serve(path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let (body, content_type) = match path {
        "/client.js" => (CLIENT, "text/javascript; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => (PAGE, "text/html; charset=utf-8"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(csp) = HeaderValue::from_str(&policy(headers)) {
        out.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The Content-Security-Policy: nothing but the hub's own script, style, images and
/// connections (its WebSocket named by the request's `Host`, when that is a plain host and
/// port; else `'self'` alone), no inline script or style, no `eval`, no plugins, no framing.
fn policy(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let sockets = host.map_or(String::new(), |h| format!(" ws://{h} wss://{h}"));
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{sockets}; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_hub_and_nothing_inline() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let p = policy(&h);
        assert!(
            p.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"),
            "{p}"
        );
        assert!(
            p.contains("script-src 'self';") && !p.contains("unsafe"),
            "{p}"
        );
        h.insert(header::HOST, HeaderValue::from_static("x; script-src *"));
        assert!(
            policy(&h).contains("connect-src 'self';"),
            "a Host that is not a host is left out"
        );
        for path in ["/", "/console.js", "/console.css", "/client.js"] {
            let r = serve(path, &h);
            assert!(
                r.headers().contains_key(header::CONTENT_SECURITY_POLICY),
                "{path}"
            );
        }
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains("<style"),
            "no inline script or style"
        );
        assert!(
            !SCRIPT.contains("innerHTML"),
            "no markup built from strings"
        );
    }
}
