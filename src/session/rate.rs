//! A client's message rate limit: a token bucket of `rate_limit.burst` tokens refilled at
//! `rate_limit.messages_per_second`. Every message a client sends (text or binary, subscription
//! changes included) and every WebSocket ping frame takes a token (a pong frame does not). Without one the
//! message is dropped, and the client learns it once per second with `RATE_LIMITED`. A client
//! that keeps flooding, more than `messages_per_second` dropped messages within one second, is
//! closed with 1008.
//!
//! Owns one client's bucket; only its session takes from it.

use crate::config::RateLimitConfig;
use std::time::{Duration, Instant};

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Handle it.
    Pass,
    /// Drop it, and tell the client (`RATE_LIMITED`).
    DropAndWarn,
    /// Drop it silently (the client was told this second).
    Drop,
    /// Close the connection: it keeps flooding.
    Close,
}

/// One client's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens held.
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// Start of the current one-second window of dropped messages.
    window: Instant,
    /// Messages dropped in that window.
    dropped: u32,
}

impl Bucket {
    /// A full bucket under `cfg`, at `now`.
    pub(crate) fn new(cfg: &RateLimitConfig, now: Instant) -> Self {
        Self {
            rate: cfg.messages_per_second,
            burst: f64::from(cfg.burst),
            tokens: f64::from(cfg.burst),
            refilled: now,
            window: now,
            dropped: 0,
        }
    }

    /// Decides about one message arriving at `now`.
    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admit::Pass;
        }
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.dropped = 0;
        }
        self.dropped += 1;
        if f64::from(self.dropped) > self.rate.max(1.0) {
            Admit::Close
        } else if self.dropped == 1 {
            Admit::DropAndWarn
        } else {
            Admit::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_close() {
        let cfg = RateLimitConfig {
            messages_per_second: 10.0,
            burst: 5,
        };
        let t0 = Instant::now();
        let mut b = Bucket::new(&cfg, t0);
        for _ in 0..5 {
            assert_eq!(b.admit(t0), Admit::Pass);
        }
        assert_eq!(b.admit(t0), Admit::DropAndWarn);
        assert_eq!(b.admit(t0), Admit::Drop);
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(t1), Admit::Pass);
        assert_eq!(b.admit(t1), Admit::Drop);
        // Flooding: more than 10 dropped within the second closes.
        let verdicts: Vec<Admit> = (0..9).map(|_| b.admit(t1)).collect();
        assert_eq!(verdicts.last(), Some(&Admit::Close), "{verdicts:?}");
        // A new second: a warning again, not a close.
        let t2 = t0 + Duration::from_millis(1200);
        let mut fresh = Bucket::new(&cfg, t0);
        (0..5).for_each(|_| {
            fresh.admit(t0);
        });
        assert_eq!(fresh.admit(t0), Admit::DropAndWarn);
        assert_eq!(fresh.admit(t2), Admit::Pass);
    }
}
