//! Whether a Redis broker's subscriptions are live, why not if they are not, and how often that
//! changed: what `/readyz`, `status` and the `redis_connected` gauge report.
//!
//! Owns one broker's link state; changed by that broker's subscriber task, read by `/readyz` and
//! `status`.

use super::Unhealthy;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The state of a broker's link to Redis.
pub(super) struct Link {
    /// Whether events flow in.
    up: AtomicBool,
    /// Why they do not, if they do not.
    last_error: Mutex<Option<String>>,
    /// Times the link came up.
    connects: AtomicU64,
    /// Times it went down.
    disconnects: AtomicU64,
}

impl Link {
    /// A link not up yet.
    pub(super) fn new() -> Self {
        Self {
            up: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected yet".into())),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
        }
    }

    /// Whether events flow in.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Records the link's state; `error` says why it is down.
    pub(super) fn set(&self, up: bool, error: Option<String>) {
        let was = self.up.swap(up, Relaxed);
        if up && !was {
            self.connects.fetch_add(1, Relaxed);
        }
        if !up && was {
            self.disconnects.fetch_add(1, Relaxed);
            tracing::warn!(
                error = error.as_deref().unwrap_or(""),
                "redis link down; recovering"
            );
        }
        *self.last_error.lock() = error;
    }

    /// `Ok` when up, else why not.
    pub(super) fn health(&self) -> Result<(), Unhealthy> {
        if self.is_up() {
            return Ok(());
        }
        let why = self.last_error.lock().clone();
        Err(Unhealthy(
            why.unwrap_or_else(|| "redis not connected".into()),
        ))
    }

    /// (connects, disconnects) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.connects.load(Relaxed), self.disconnects.load(Relaxed))
    }
}
