//! How the REST API answers: JSON bodies, errors as `{"error": message}`, and the `Allow` header
//! of a 405. Owns nothing; every REST handler (and the upgrade refusals of `http`) answers
//! through it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// `{"error": message}`.
pub(crate) fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    text_response(status, "application/json", body.to_string())
}

/// A response with a body and content type.
pub(crate) fn text_response(
    status: StatusCode,
    content_type: &str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// `405 Method Not Allowed`, with the `Allow` header RFC 9110 asks for.
pub(crate) fn method_not_allowed(allow: &str) -> Response<Full<Bytes>> {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &error_body("method not allowed"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(allow) {
        r.headers_mut().insert(hyper::header::ALLOW, v);
    }
    r
}
