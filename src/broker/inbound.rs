//! What arrives from Redis, whichever Redis broker received it: control messages are applied,
//! events are validated and routed, and junk is counted per kind, logged at most once per
//! interval per kind, and skipped.

use crate::control;
use crate::event::{parse_event, ParsedEvent};
use crate::hub::Hub;
use crate::index::Scope;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// A kind of junk is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The receiving side's limits and junk counters.
pub(crate) struct Inbound {
    /// Largest accepted message on an events channel.
    max_message_bytes: usize,
    /// Junk skipped, by kind: how many, and when it was last logged.
    junk: Mutex<HashMap<&'static str, (u64, Option<Instant>)>>,
}

impl Inbound {
    /// Accepts event messages up to `max_message_bytes`.
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            junk: Mutex::new(HashMap::new()),
        }
    }

    /// Applies one message of the control channel.
    pub(crate) fn control(&self, hub: &Hub, payload: &[u8]) {
        if let Err(e) = control::apply(hub, payload) {
            self.junk("control", &e);
        }
    }

    /// Validates one message of an events channel; `None` when it was junk (already counted).
    pub(crate) fn event(&self, hub: &Hub, payload: &[u8]) -> Option<ParsedEvent> {
        if payload.len() > self.max_message_bytes {
            self.junk("too_large", &format!("{} bytes", payload.len()));
            return None;
        }
        match parse_event(payload) {
            Ok(event) => Some(event),
            Err(e) => {
                hub.metrics.events_rejected.fetch_add(1, Relaxed);
                self.junk(e.kind(), &e.to_string());
                None
            }
        }
    }

    /// Validates one message of an events channel and routes it for `scope`.
    pub(crate) fn route(&self, hub: &Hub, payload: &[u8], scope: Scope) {
        if let Some(event) = self.event(hub, payload) {
            hub.router.route_scoped(event, scope);
        }
    }

    /// Junk counts by kind, sorted by kind.
    pub(crate) fn junk_counts(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .junk
            .lock()
            .iter()
            .map(|(k, (n, _))| (*k, *n))
            .collect();
        v.sort();
        v
    }

    /// Counts one piece of junk, logging it at most once per interval per kind.
    pub(crate) fn junk(&self, kind: &'static str, detail: &str) {
        let mut j = self.junk.lock();
        let entry = j.entry(kind).or_insert((0, None));
        entry.0 += 1;
        if entry.1.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            entry.1 = Some(Instant::now());
            tracing::warn!(
                kind,
                count = entry.0,
                detail,
                "skipping a malformed message from Redis"
            );
        }
    }
}
