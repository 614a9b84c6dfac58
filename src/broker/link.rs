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
    /// What the link reaches, for the log: addresses only, never a password.
    target: String,
    /// Whether events flow in.
    up: AtomicBool,
    /// Failed attempts since the link was last up (or since start).
    failures: AtomicU64,
    /// Why they do not, if they do not.
    last_error: Mutex<Option<String>>,
    /// Times the link came up.
    connects: AtomicU64,
    /// Times it went down.
    disconnects: AtomicU64,
}

impl Link {
    /// A link to `target` (addresses only), not up yet.
    pub(super) fn new(target: String) -> Self {
        Self {
            target,
            up: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(Some("not connected yet".into())),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
        }
    }

    /// Whether events flow in.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Records the link's state; `error` says why it is down. A failure is logged loudly: the
    /// first one (also when the link never came up, as with a wrong address), then the 2nd,
    /// 4th, 8th... in a row, so a broker that stays away keeps being named with backoff.
    pub(super) fn set(&self, up: bool, error: Option<String>) {
        let was = self.up.swap(up, Relaxed);
        let why = error.as_deref().unwrap_or("");
        if up {
            let failed = self.failures.swap(0, Relaxed);
            if !was {
                self.connects.fetch_add(1, Relaxed);
                tracing::info!(target_addr = %self.target, failed_attempts = failed, "broker link up");
            }
        } else if was {
            self.disconnects.fetch_add(1, Relaxed);
            self.failures.store(1, Relaxed);
            tracing::warn!(target_addr = %self.target, error = why, "broker link down; recovering");
        } else {
            let n = self.failures.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    target_addr = %self.target,
                    error = why,
                    failed_attempts = n,
                    "cannot reach the broker; retrying with backoff"
                );
            }
        }
        *self.last_error.lock() = error;
    }

    /// The address of `url` for the log (host and port, no user or password), or a note that
    /// it is not a Redis URL.
    pub(super) fn address(url: &str) -> String {
        match ::redis::IntoConnectionInfo::into_connection_info(url) {
            Ok(info) => info.addr().to_string(),
            Err(_) => "(not a redis URL)".into(),
        }
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
