//! Query parameters of the REST API: read percent-decoded, and refused with a 400 that names the
//! parameter when they do not parse.
//!
//! Owns nothing: functions over a request's query string.

use super::reply::{error_body, json_response};
use crate::event::EventType;
use crate::subscription::Subscription;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use std::borrow::Cow;

/// A query parameter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("query parameter {name} must be {what}")]
pub(super) struct BadQuery {
    /// The parameter.
    name: String,
    /// What it should be.
    what: &'static str,
}

impl BadQuery {
    /// The 400 that says so.
    pub(super) fn answer(self) -> Response<Full<Bytes>> {
        json_response(StatusCode::BAD_REQUEST, &error_body(&self.to_string()))
    }
}

/// Query parameter `name` as a `T` (`None` when absent); refused when it does not parse as
/// `what` says it should.
pub(super) fn number<T: std::str::FromStr>(
    query: Option<&str>,
    name: &str,
    what: &'static str,
) -> Result<Option<T>, BadQuery> {
    let Some(raw) = param(query, name) else {
        return Ok(None);
    };
    raw.parse().map(Some).map_err(|_| BadQuery {
        name: name.to_string(),
        what,
    })
}

/// Whether `v` is a whole number written out (one or more digits).
fn all_digits(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// Query parameter `name` as a count: a whole number, where one past `usize` means "all"
/// (`usize::MAX`); anything else is refused.
pub(super) fn count(query: Option<&str>, name: &str) -> Result<Option<usize>, BadQuery> {
    match number::<usize>(query, name, "a whole number") {
        Err(_) if param(query, name).is_some_and(|v| all_digits(&v)) => Ok(Some(usize::MAX)),
        other => other,
    }
}

/// The value of query parameter `name` (the first, if repeated), percent-decoded.
pub(crate) fn param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes()).find_map(|(k, v)| (k == name).then_some(v))
}

/// Query parameter `name` as a comma list, empty entries left out (absent: empty).
pub(super) fn list(query: Option<&str>, name: &str) -> Vec<String> {
    param(query, name).map_or_else(Vec::new, |v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// The subscription the query describes: every type when `event_types` is absent.
pub(crate) fn subscription(query: Option<&str>) -> Result<Subscription, String> {
    let mut event_types = Vec::new();
    for name in list(query, "event_types") {
        let Some(ty) = EventType::parse(&name) else {
            return Err(format!(
                "query parameter event_types: unknown event type {name:?}"
            ));
        };
        if !event_types.contains(&ty) {
            event_types.push(ty);
        }
    }
    if event_types.is_empty() {
        event_types = EventType::ALL.to_vec();
    }
    Ok(Subscription {
        event_types,
        cluster_filter: list(query, "cluster_filter"),
        namespace_filter: list(query, "namespace_filter"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_splits() {
        let q = Some("event_types=ALERT_FIRED%2CGPU_UPDATE&cluster_filter=a,,b+c&limit=5");
        assert_eq!(list(q, "event_types"), ["ALERT_FIRED", "GPU_UPDATE"]);
        assert_eq!(list(q, "cluster_filter"), ["a", "b c"]);
        assert!(list(q, "namespace_filter").is_empty());
        assert_eq!(count(q, "limit").unwrap(), Some(5));
        assert!(number::<f64>(Some("limit=x"), "limit", "a number").is_err());
    }
}
