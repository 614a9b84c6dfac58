//! Log lines a client can cause, each kind at most once per [`INTERVAL`]: a client that keeps
//! causing one (a token the validator cannot answer, a message that cannot be encoded) must not
//! flood the log. Each kind is a `static` [`LogLimit`]; the line that does get through says how
//! many were held back since the last one.
//!
//! Owns one throttle per kind of line (`static`s where the lines are written).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Least time between two lines of one kind.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of log line.
pub(crate) struct LogLimit {
    /// Milliseconds after the process's first look at the clock when the last line went out,
    /// plus one (0: never).
    last: AtomicU64,
    /// Lines held back since then.
    held: AtomicU64,
}

impl LogLimit {
    /// A kind never logged yet.
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may go out now; `None` when it
    /// must be held back (and is counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Relaxed);
        let due = last == 0 || now >= last + INTERVAL.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Relaxed));
        }
        self.held.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limit = LogLimit::new();
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow(), None);
        }
        // As if the interval had passed.
        limit.last.store(
            limit
                .last
                .load(Relaxed)
                .saturating_sub(INTERVAL.as_millis() as u64 + 1),
            Relaxed,
        );
        assert_eq!(limit.allow(), Some(5));
    }
}
