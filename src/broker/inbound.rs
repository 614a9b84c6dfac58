//! What arrives from Redis, whichever Redis broker received it: control messages are parsed and
//! handed on, events are validated and handed on with their scope, and junk is counted per kind,
//! logged at most once per interval per kind, and skipped.
//!
//! Owns the per-kind junk counters; changed only by the Redis brokers' subscriber threads.

use super::Intake;
use super::{BrokerHandler, Scope};
use crate::control::Control;
use crate::event::{parse_event, ParsedEvent};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A kind of junk is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The receiving side's limits and junk counters.
pub(super) struct Inbound {
    /// What an event message must be, and how its entity is read.
    intake: Intake,
    /// Junk skipped, by kind: how many, and when it was last logged.
    junk: Mutex<HashMap<&'static str, (u64, Option<Instant>)>>,
}

impl Inbound {
    /// Accepts event messages as `intake` says.
    pub(super) fn new(intake: Intake) -> Self {
        Self {
            intake,
            junk: Mutex::new(HashMap::new()),
        }
    }

    /// Hands on one message of the control channel.
    pub(super) fn control(&self, handler: &dyn BrokerHandler, payload: &[u8]) {
        match Control::parse(payload) {
            Ok(c) => handler.handle_control(c),
            Err(e) => self.junk("control", &e),
        }
    }

    /// Validates one message of an events channel; `None` when it was junk (already counted).
    pub(super) fn event(&self, handler: &dyn BrokerHandler, payload: &[u8]) -> Option<ParsedEvent> {
        if payload.len() > self.intake.max_message_bytes {
            self.junk("too_large", &format!("{} bytes", payload.len()));
            return None;
        }
        match parse_event(payload, &self.intake.keys) {
            Ok(event) => Some(event),
            Err(e) => {
                handler.handle_rejected(&e);
                self.junk(e.kind(), &e.to_string());
                None
            }
        }
    }

    /// Validates one message of an events channel and hands it on for `scope`.
    pub(super) fn route(&self, handler: &dyn BrokerHandler, payload: &[u8], scope: Scope) {
        if let Some(event) = self.event(handler, payload) {
            // Refused only when the shards are full: the handler counted and logged the drop.
            let _ = handler.handle_event(event, scope);
        }
    }

    /// Validates one message of an events channel and adds it to `batch` for `scope`.
    pub(super) fn collect(
        &self,
        handler: &dyn BrokerHandler,
        payload: &[u8],
        scope: Scope,
        batch: &mut Vec<(ParsedEvent, Scope)>,
    ) {
        if let Some(event) = self.event(handler, payload) {
            batch.push((event, scope));
        }
    }

    /// Junk counts by kind, sorted by kind.
    pub(super) fn junk_counts(&self) -> Vec<(&'static str, u64)> {
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
    pub(super) fn junk(&self, kind: &'static str, detail: &str) {
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
