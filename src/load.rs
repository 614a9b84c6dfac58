//! How busy each shard has been lately, and the write-coalescing window that follows from it.
//!
//! Holding a busy client's next write back (ws/writer.rs) gathers several frames into one
//! system call, which saves CPU but adds latency. The saving only matters when the shard is
//! short of time, so the window a writer uses scales with its shard's recent utilization (the
//! share of wall time its runtime spent running tasks, from tokio's runtime metrics): no hold
//! while the shard is busy less than [`LOW`] of the time, the whole configured window
//! (`websocket.write_coalesce_ms`) from [`HIGH`] up, in proportion between. Each shard's fan-out
//! task samples its own runtime (at most once per [`PERIOD`]) and publishes the window in one
//! atomic that its writers read.
//!
//! Owns each shard's gauge and window; each shard's own sampler changes its own.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Utilization under which writes are never held back.
const LOW: f64 = 0.25;
/// Utilization from which the whole window is used.
const HIGH: f64 = 0.65;
/// Shortest time between two samples of a shard's runtime.
const PERIOD: Duration = Duration::from_millis(10);
/// How fast the smoothed utilization follows the samples (time constant).
const SMOOTHING: Duration = Duration::from_millis(50);

/// Each shard's current coalescing window, published by the shard and read by its writers.
#[derive(Debug)]
pub(crate) struct Windows {
    /// The configured (largest) window.
    max: Duration,
    /// Whether the window follows the load (`websocket.write_coalesce_adaptive`); if not, every
    /// shard uses `max` all the time.
    adaptive: bool,
    /// Each shard's figures, each on a cache line of its own: every writer of the shard reads
    /// it, and nothing else written often may share its line.
    per_shard: Box<[CachePadded<Shard>]>,
}

/// One shard's published figures.
#[derive(Debug, Default)]
struct Shard {
    /// The window its writers use now, in nanoseconds.
    window: AtomicU64,
    /// Its smoothed utilization (an `f64`'s bits), for `/status` and `/metrics`.
    utilization: AtomicU64,
}

impl Windows {
    /// `shards` windows of at most `max`; adaptive ones start closed (an idle shard holds
    /// nothing), fixed ones at `max`.
    pub(crate) fn new(max: Duration, shards: usize, adaptive: bool) -> Self {
        let start = if adaptive { 0 } else { max.as_nanos() as u64 };
        let shard = || {
            CachePadded::new(Shard {
                window: AtomicU64::new(start),
                utilization: AtomicU64::new(0),
            })
        };
        Self {
            max,
            adaptive,
            per_shard: (0..shards.max(1)).map(|_| shard()).collect(),
        }
    }

    /// The configured window: what a fully loaded shard uses.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// The window writers on `shard` use now.
    pub(crate) fn get(&self, shard: usize) -> Duration {
        let i = shard.min(self.per_shard.len() - 1);
        Duration::from_nanos(self.per_shard[i].window.load(Relaxed))
    }

    /// Each shard's (smoothed utilization, window now), for reports.
    pub(crate) fn report(&self) -> Vec<(f64, Duration)> {
        (0..self.per_shard.len())
            .map(|i| {
                (
                    f64::from_bits(self.per_shard[i].utilization.load(Relaxed)),
                    self.get(i),
                )
            })
            .collect()
    }

    /// Publishes `shard`'s window for its smoothed `utilization`.
    fn set(&self, shard: usize, utilization: f64) {
        let share = ((utilization - LOW) / (HIGH - LOW)).clamp(0.0, 1.0);
        let i = shard.min(self.per_shard.len() - 1);
        let nanos = (self.max.as_nanos() as f64 * share) as u64;
        self.per_shard[i].window.store(nanos, Relaxed);
        self.per_shard[i]
            .utilization
            .store(utilization.to_bits(), Relaxed);
    }
}

/// One shard's view of its own runtime: the last sample and the smoothed utilization.
pub(crate) struct Gauge {
    /// The shard's runtime (a current-thread runtime: worker 0 is the shard's thread).
    runtime: tokio::runtime::RuntimeMetrics,
    /// When the last sample was taken.
    at: Instant,
    /// The runtime's total busy time then.
    busy: Duration,
    /// Smoothed share of wall time spent running tasks, 0 to 1.
    utilization: f64,
}

impl Gauge {
    /// A gauge of the runtime it is created on.
    pub(crate) fn new() -> Self {
        let runtime = tokio::runtime::Handle::current().metrics();
        let busy = runtime.worker_total_busy_duration(0);
        Self {
            runtime,
            at: Instant::now(),
            busy,
            utilization: 0.0,
        }
    }

    /// Samples the runtime if [`PERIOD`] has passed and publishes `shard`'s window (when the
    /// windows follow the load).
    pub(crate) fn sample(&mut self, windows: &Windows, shard: usize) {
        if !windows.adaptive {
            return;
        }
        let now = Instant::now();
        let wall = now.duration_since(self.at);
        if wall < PERIOD {
            return;
        }
        let busy = self.runtime.worker_total_busy_duration(0);
        let share = busy.saturating_sub(self.busy).as_secs_f64() / wall.as_secs_f64();
        self.utilization = smooth(self.utilization, share.min(1.0), wall);
        (self.at, self.busy) = (now, busy);
        windows.set(shard, self.utilization);
    }
}

/// The smoothed value after `sample` covering `wall`: an exponential moving average whose weight
/// grows with the time the sample covers, so one long idle gap counts as what it is.
fn smooth(previous: f64, sample: f64, wall: Duration) -> f64 {
    let weight = 1.0 - (-wall.as_secs_f64() / SMOOTHING.as_secs_f64()).exp();
    previous + weight * (sample - previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_utilization() {
        let w = Windows::new(Duration::from_millis(10), 2, true);
        assert_eq!(
            w.get(0),
            Duration::ZERO,
            "an idle shard starts with no hold"
        );
        w.set(0, 0.1);
        assert_eq!(w.get(0), Duration::ZERO);
        w.set(0, (LOW + HIGH) / 2.0);
        assert_eq!(w.get(0), Duration::from_millis(5));
        w.set(1, 1.0);
        assert_eq!(w.get(1), Duration::from_millis(10));
        assert_eq!(w.get(0), Duration::from_millis(5), "shards are separate");
        assert_eq!(
            w.get(7),
            Duration::from_millis(10),
            "out of range reads the last"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_fixed_window_ignores_the_load() {
        let w = Windows::new(Duration::from_millis(10), 1, false);
        let mut g = Gauge::new();
        tokio::time::sleep(PERIOD * 2).await;
        g.sample(&w, 0);
        assert_eq!(w.get(0), Duration::from_millis(10));
    }

    #[test]
    fn a_long_sample_outweighs_a_short_one() {
        let after_short = smooth(1.0, 0.0, Duration::from_millis(10));
        let after_long = smooth(1.0, 0.0, Duration::from_secs(1));
        assert!(after_short > 0.8, "{after_short}");
        assert!(after_long < 0.001, "{after_long}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_runtime_opens_the_window() {
        let w = Windows::new(Duration::from_millis(10), 1, true);
        let mut g = Gauge::new();
        for _ in 0..30 {
            // Busy the whole period: spin inside one task.
            let until = Instant::now() + PERIOD;
            while Instant::now() < until {}
            tokio::task::yield_now().await;
            g.sample(&w, 0);
        }
        assert!(
            w.get(0) > Duration::from_millis(5),
            "a shard running tasks all the time holds writes: {:?} at {:.2}",
            w.get(0),
            g.utilization
        );
        for _ in 0..30 {
            tokio::time::sleep(PERIOD).await;
            g.sample(&w, 0);
        }
        assert_eq!(w.get(0), Duration::ZERO, "{:.2}", g.utilization);
    }
}
