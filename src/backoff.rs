//! Spreading retries and reconnects over time: the brokers' reconnect backoff and the
//! `reconnect_after_ms` advice given to clients, both jittered so that many peers that lost the
//! same thing at the same moment do not all come back at once.
//!
//! Owns nothing: pure functions, used by the brokers and by whoever says goodbye.

use std::time::Duration;

/// A capped, jittered exponential backoff: each delay is drawn from [d/2, d], and d doubles up
/// to the cap after each draw.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// The first delay.
    start: Duration,
    /// The longest delay.
    max: Duration,
    /// The delay the next draw is taken around.
    current: Duration,
}

impl Backoff {
    /// The reconnect backoff of the Redis brokers: 100 ms doubling up to 5 s.
    pub(crate) fn reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// A backoff from `start` doubling up to `max`.
    pub(crate) fn new(start: Duration, max: Duration) -> Self {
        Self {
            start,
            max,
            current: start,
        }
    }

    /// The next delay, jittered over [d/2, d]; the one after will be around twice as long.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (d * 2).min(self.max);
        d / 2 + Duration::from_millis(fastrand::u64(0..=(d.as_millis() as u64 / 2)))
    }

    /// Starts again from the first delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.current = self.start;
    }
}

/// A value spread uniformly over ±50% around `centre` (the `reconnect_after_ms` advice), so that
/// clients told to go at once do not return at once.
pub(crate) fn spread(centre: u64) -> u64 {
    let half = centre / 2;
    (centre - half).saturating_add(fastrand::u64(0..=half * 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_within_bounds() {
        let v: Vec<u64> = (0..200).map(|_| spread(5000)).collect();
        assert!(v.iter().all(|x| (2500..=7500).contains(x)));
        let distinct: std::collections::HashSet<_> = v.iter().collect();
        assert!(distinct.len() > 50);
        assert!(spread(u64::MAX) >= u64::MAX / 2);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(400));
        let draws: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        for (d, centre) in draws.iter().zip([100, 200, 400, 400, 400]) {
            assert!(
                *d >= ms(centre / 2) && *d <= ms(centre),
                "{d:?} around {centre}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
