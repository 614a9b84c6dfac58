//! Latency histograms and delivery accounting.
//!
//! Clients send batches of samples; one collector merges them into an overall HdrHistogram and
//! one histogram per second of the run (for the timeline and per-step figures).

use hdrhistogram::Histogram;
use serde::Serialize;

/// One received event: the second of the run it arrived in and its latency.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Whole seconds since the run started.
    pub second: u32,
    /// Publish-to-receipt latency in microseconds.
    pub latency_us: u32,
}

/// What one client counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Distinct events received.
    pub received: u64,
    /// Events received again.
    pub duplicates: u64,
    /// Distinct events that arrived after a later event of the same publisher.
    pub reordered: u64,
}

/// How far below the newest sequence number a late event is still told apart from a duplicate.
const WINDOW: u64 = 1024;

/// Which of one publisher's sequence numbers a client has seen: the highest, and a bit for each
/// of the [`WINDOW`] numbers below it. Events usually arrive in publish order; with sharded
/// Pub/Sub a client fed by two channels can see them out of order, which is not loss.
#[derive(Debug, Clone, Default)]
pub struct SeenWindow {
    /// Highest sequence number seen (0: none yet; sequence numbers start at 1).
    max: u64,
    /// Bit `i` of the ring: whether `n` with `n % WINDOW == i` within the window was seen.
    bits: Vec<u64>,
}

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time, in order.
    New,
    /// First time, after a later one.
    Late,
    /// Seen before (or too late to tell).
    Duplicate,
}

impl SeenWindow {
    /// Records sequence number `seq` (≥ 1).
    pub fn record(&mut self, seq: u64) -> Arrival {
        if self.bits.is_empty() {
            self.bits = vec![0; (WINDOW / 64) as usize];
        }
        let bit = |n: u64| ((n % WINDOW / 64) as usize, 1u64 << (n % 64));
        if seq > self.max {
            // Clear the numbers the window slides over.
            let from = (self.max + 1).max(seq.saturating_sub(WINDOW - 1));
            for n in from..seq {
                let (w, b) = bit(n);
                self.bits[w] &= !b;
            }
            self.max = seq;
            let (w, b) = bit(seq);
            self.bits[w] |= b;
            return Arrival::New;
        }
        if self.max - seq >= WINDOW {
            return Arrival::Duplicate;
        }
        let (w, b) = bit(seq);
        if self.bits[w] & b != 0 {
            return Arrival::Duplicate;
        }
        self.bits[w] |= b;
        Arrival::Late
    }
}

/// Latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Merges samples as they arrive.
pub struct Collector {
    /// Every sample.
    pub overall: Histogram<u64>,
    /// Samples by second of arrival.
    pub per_second: Vec<Histogram<u64>>,
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            overall: new_histogram(),
            per_second: Vec::new(),
        }
    }
}

impl Collector {
    /// Adds a batch.
    pub fn add(&mut self, batch: &[Sample]) {
        for s in batch {
            let v = u64::from(s.latency_us.max(1));
            self.overall.saturating_record(v);
            let i = s.second as usize;
            while self.per_second.len() <= i {
                self.per_second.push(new_histogram());
            }
            self.per_second[i].saturating_record(v);
        }
    }

    /// Merges the seconds in `[from, to)`.
    pub fn window(&self, from: usize, to: usize) -> Histogram<u64> {
        let mut h = new_histogram();
        for s in self.per_second.iter().take(to).skip(from) {
            let _ = h.add(s);
        }
        h
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// The percentiles of a histogram of microseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    }
}

/// The percentile distribution in HdrHistogram's `.hgrm` text format (values in milliseconds),
/// as HdrHistogram's own tools and plotter read it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                o,
                "{value:12.3} {q:2.12} {:10} {:14.2}",
                v.count_since_last_iteration(),
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(
                o,
                "{value:12.3} {q:2.12} {:10}",
                v.count_since_last_iteration()
            );
        }
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        o,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        o,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    );
    o
}

/// Points of the percentile curve: (1/(1-q), latency ms), for charts and comparisons.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            (
                1.0 / (1.0 - v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect()
}

/// Loss and duplicates over the clients that read.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Accounting {
    /// Events the publisher's schedule says should arrive, summed over reading clients.
    pub expected: u64,
    /// Distinct events that arrived.
    pub received: u64,
    /// Expected but never arrived.
    pub lost: u64,
    /// Arrived more than once.
    pub duplicates: u64,
    /// Arrived once, but after a later event of the same publisher.
    #[serde(default)]
    pub reordered: u64,
    /// Arrived though not expected (more than the schedule says).
    pub unexpected: u64,
    /// Clients that lost at least one event.
    pub clients_with_loss: u64,
}

/// Compares what each counted client received with what it should have.
pub fn account(expected: &[u64], tallies: &[Tally], counted: impl Fn(usize) -> bool) -> Accounting {
    let mut a = Accounting::default();
    for (i, (e, t)) in expected.iter().zip(tallies).enumerate() {
        if !counted(i) {
            continue;
        }
        a.expected += e;
        a.received += t.received;
        a.duplicates += t.duplicates;
        a.reordered += t.reordered;
        if t.received < *e {
            a.lost += e - t.received;
            a.clients_with_loss += 1;
        } else {
            a.unexpected += t.received - e;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_windows_and_percentiles() {
        let mut c = Collector::default();
        // Second 0: 1..=100 µs; second 2: 1000 µs x 100.
        let a: Vec<Sample> = (1..=100)
            .map(|v| Sample {
                second: 0,
                latency_us: v,
            })
            .collect();
        let b: Vec<Sample> = (0..100)
            .map(|_| Sample {
                second: 2,
                latency_us: 1000,
            })
            .collect();
        c.add(&a[..50]);
        c.add(&b);
        c.add(&a[50..]);
        assert_eq!(c.overall.len(), 200);
        assert_eq!(c.per_second.len(), 3);
        assert_eq!(c.per_second[1].len(), 0);
        let first = percentiles(&c.window(0, 1));
        assert_eq!(first.count, 100);
        assert!((first.p50_ms - 0.050).abs() < 0.001, "{first:?}");
        assert!((first.max_ms - 0.100).abs() < 0.001);
        let all = percentiles(&c.overall);
        assert!((all.p99_ms - 1.0).abs() < 0.01, "{all:?}");
    }

    #[test]
    fn hgrm_adds_up() {
        let mut c = Collector::default();
        let s: Vec<Sample> = (1..=1000)
            .map(|v| Sample {
                second: 0,
                latency_us: v * 10,
            })
            .collect();
        c.add(&s);
        let text = hgrm(&c.overall);
        let total: u64 = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("Value"))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 1000, "{text}");
        assert!(text.contains("Total count    =         1000"), "{text}");
        let curve = percentile_curve(&c.overall);
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn seen_window_tells_late_from_duplicate() {
        let mut w = SeenWindow::default();
        assert_eq!(w.record(1), Arrival::New);
        assert_eq!(w.record(3), Arrival::New);
        assert_eq!(w.record(2), Arrival::Late);
        assert_eq!(w.record(2), Arrival::Duplicate);
        assert_eq!(w.record(3), Arrival::Duplicate);
        assert_eq!(w.record(3 + WINDOW), Arrival::New);
        assert_eq!(w.record(3), Arrival::Duplicate, "fell out of the window");
        assert_eq!(
            w.record(4 + WINDOW / 2),
            Arrival::Late,
            "a slid-over slot was cleared"
        );
    }

    #[test]
    fn loss_and_duplicates() {
        let expected = [10, 10, 10, 5];
        let tallies = [
            Tally {
                received: 10,
                duplicates: 0,
                ..Default::default()
            },
            Tally {
                received: 7,
                duplicates: 2,
                ..Default::default()
            },
            Tally {
                received: 12,
                duplicates: 0,
                ..Default::default()
            },
            Tally {
                received: 0,
                duplicates: 0,
                ..Default::default()
            },
        ];
        let a = account(&expected, &tallies, |i| i != 3);
        assert_eq!(a.expected, 30);
        assert_eq!(a.received, 29);
        assert_eq!(a.lost, 3);
        assert_eq!(a.duplicates, 2);
        assert_eq!(a.unexpected, 2);
        assert_eq!(a.clients_with_loss, 1);
    }
}
