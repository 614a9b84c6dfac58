//! Metrics: every family the hub exposes, and their Prometheus text exposition.
//!
//! This module owns them all: the per-shard counters, the instance-wide gauges, the counts of
//! event twins (MessagePack, compressed) built once, and the exposition that `GET /metrics`
//! serves (the gauges others keep, such as index keys or shard utilization, are handed in as
//! [`Gauges`]). Code elsewhere adds to a counter through this module's types and never
//! writes exposition text itself.
//!
//! Counters are per shard (one cache-padded block per runtime thread, found through a
//! thread-local), so the hot path adds to memory no other core writes; a scrape sums the blocks.
//! Threads that are not shards (the index thread, signal handling) share one extra block.

use crate::event::{EventType, EVENT_TYPE_COUNT};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

thread_local! {
    /// The shard this thread runs, if any.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the current thread as running shard `i`.
pub fn set_thread_shard(i: usize) {
    SHARD.with(|s| s.set(Some(i)));
}

/// One shard's counters.
#[derive(Default)]
pub struct ShardCounters {
    /// `ws_connections_total`.
    pub connections_total: AtomicU64,
    /// `ws_messages_sent_total`.
    pub messages_sent: AtomicU64,
    /// `ws_messages_received_total`.
    pub messages_received: AtomicU64,
    /// `ws_events_routed_total` by event type.
    pub events_routed: [AtomicU64; EVENT_TYPE_COUNT],
    /// `ws_events_dropped_total`.
    pub events_dropped: AtomicU64,
    /// Deliveries: event frames pushed to client rings.
    pub deliveries: AtomicU64,
    /// Clients dropped for missing heartbeats (or stalled writes).
    pub heartbeat_timeouts: AtomicU64,
    /// `ws_message_latency_seconds` bucket counts (non-cumulative; the last is +Inf).
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observed latencies, in microseconds.
    latency_sum_us: AtomicU64,
}

impl ShardCounters {
    /// Records one delivery latency.
    #[inline]
    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// All metrics of the hub.
pub struct Metrics {
    /// One block per shard, plus one for other threads.
    shards: Box<[CachePadded<ShardCounters>]>,
    /// `ws_connections_active`.
    pub connections_active: AtomicI64,
    /// `ws_subscription_count`.
    pub subscriptions: AtomicI64,
    /// Events refused as malformed, by any source.
    pub events_rejected: AtomicU64,
    /// Events that arrived while the shards' inboxes were full, and were dropped.
    pub events_shed: AtomicU64,
    /// Changes of some client's subscriptions sent to the index thread.
    pub index_updates: AtomicU64,
}

/// Events encoded as MessagePack so far (each once, however many clients get it).
static EVENTS_ENCODED: AtomicU64 = AtomicU64::new(0);

/// Events compressed (permessage-deflate) so far, each once per format.
static EVENTS_COMPRESSED: AtomicU64 = AtomicU64::new(0);

/// Counts one event encoded as MessagePack (a frame's twin, built once).
pub(crate) fn count_event_encoded() {
    EVENTS_ENCODED.fetch_add(1, Relaxed);
}

/// Events encoded as MessagePack so far (`status`).
pub fn events_encoded() -> u64 {
    EVENTS_ENCODED.load(Relaxed)
}

/// Counts one event compressed (a frame's twin, built once).
pub(crate) fn count_event_compressed() {
    EVENTS_COMPRESSED.fetch_add(1, Relaxed);
}

/// Events compressed so far (`status`).
pub fn events_compressed() -> u64 {
    EVENTS_COMPRESSED.load(Relaxed)
}

/// Writes one family of a single sample: its help, its type, its value.
fn family(o: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    let _ = write!(
        o,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
    );
}

/// One figure of an origin region's stream (`None`: not for this one).
type OriginFigure = fn(&crate::broker::OriginStatus) -> Option<u64>;

/// Writes the NATS families, one series per origin region's stream, when there are any.
fn write_origins(o: &mut String, origins: &[crate::broker::OriginStatus]) {
    if origins.is_empty() {
        return;
    }
    let families: [(&str, &str, OriginFigure); 4] = [
        (
            "streamhub_nats_consumer_lag",
            "Messages the stream of each origin region holds here that this instance has not handed on yet.",
            |s| Some(s.stored.saturating_sub(s.consumed)),
        ),
        (
            "streamhub_nats_stream_last_sequence",
            "The last sequence each origin region's stream holds in this region.",
            |s| Some(s.stored),
        ),
        (
            "streamhub_nats_mirror_lag",
            "Messages each mirror is behind its origin region's stream, as NATS reports it.",
            |s| s.mirror.then_some(s.mirror_lag),
        ),
        (
            "streamhub_nats_origin_reachable",
            "Whether each mirrored origin region answered when last asked (1) or not (0).",
            |s| s.mirror.then_some(u64::from(s.reachable)),
        ),
    ];
    for (name, help, value) in families {
        let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for s in origins {
            if let Some(v) = value(s) {
                let _ = writeln!(o, "{name}{{region=\"{}\"}} {v}", s.region);
            }
        }
    }
}

/// Writes the process's own families (`process_*`), when `/proc` has them.
fn write_process(o: &mut String) {
    let Some(p) = crate::process::figures() else {
        return;
    };
    let cpu = "User and system CPU time spent, in seconds.";
    family(
        o,
        "process_cpu_seconds_total",
        "counter",
        cpu,
        p.cpu_seconds,
    );
    let rss = "Resident memory size, in bytes.";
    family(
        o,
        "process_resident_memory_bytes",
        "gauge",
        rss,
        p.resident_bytes,
    );
    let start = "Start time of the process since the Unix epoch, in seconds.";
    family(
        o,
        "process_start_time_seconds",
        "gauge",
        start,
        p.start_time_seconds,
    );
    if let Some(n) = p.open_fds {
        family(o, "process_open_fds", "gauge", "Open file descriptors.", n);
    }
    if let Some(n) = p.max_fds {
        let max = "The open file descriptor limit.";
        family(o, "process_max_fds", "gauge", max, n);
    }
}

/// The index's and the state's sizes and the configured limits beside them.
fn write_capacity(o: &mut String, g: &Gauges) {
    let keys = "Keys (event type, cluster, namespace) in the subscription index.";
    family(o, "streamhub_index_keys", "gauge", keys, g.index_keys);
    let held = "Entities (event type, cluster, entity) whose latest event the state keeps.";
    family(o, "streamhub_state_entities", "gauge", held, g.state.0);
    let why = "Entities pushed out of the state by history.snapshot_keys or history.max_bytes, \
               oldest change first.";
    family(
        o,
        "streamhub_state_evicted_total",
        "counter",
        why,
        g.state.1,
    );
    let why = "websocket.max_index_keys: subscribes that would add keys past it are refused.";
    family(
        o,
        "streamhub_index_keys_max",
        "gauge",
        why,
        g.index_keys_max,
    );
    let why = "websocket.max_connections: upgrades past it are answered 503.";
    family(
        o,
        "streamhub_connections_max",
        "gauge",
        why,
        g.connections_max,
    );
}

/// The gauges other parts keep, read at scrape time for [`Metrics::exposition`].
pub(crate) struct Gauges {
    /// Keys in the subscription index.
    pub(crate) index_keys: usize,
    /// `websocket.max_index_keys`.
    pub(crate) index_keys_max: usize,
    /// `websocket.max_connections`.
    pub(crate) connections_max: usize,
    /// Whether events flow from the broker (what `/readyz` reports of it).
    pub(crate) broker_healthy: bool,
    /// Each shard's utilization (0..1) and write-coalescing window now.
    pub(crate) shards: Vec<(f64, Duration)>,
    /// Whether the broker's connection is up (`None`: it has none).
    pub(crate) broker_connected: Option<bool>,
    /// Bytes on the heap and resident, when the allocator keeps statistics.
    pub(crate) heap: Option<(usize, usize)>,
    /// Entities in this instance's state, and how many its bounds pushed out so far.
    pub(crate) state: (usize, u64),
    /// Each origin region's stream a durable broker follows (NATS; empty elsewhere).
    pub(crate) origins: Vec<crate::broker::OriginStatus>,
}

impl Metrics {
    /// Metrics for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..=shards)
                .map(|_| CachePadded::new(ShardCounters::default()))
                .collect(),
            connections_active: AtomicI64::new(0),
            subscriptions: AtomicI64::new(0),
            events_rejected: AtomicU64::new(0),
            events_shed: AtomicU64::new(0),
            index_updates: AtomicU64::new(0),
        }
    }

    /// The calling thread's counters.
    #[inline]
    pub fn local(&self) -> &ShardCounters {
        let i = SHARD.with(|s| s.get()).unwrap_or(self.shards.len() - 1);
        &self.shards[i.min(self.shards.len() - 1)]
    }

    /// Sums one counter over all shards.
    pub fn sum(&self, f: impl Fn(&ShardCounters) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }

    /// Events routed, by type, summed over shards.
    pub fn routed_by_type(&self) -> [u64; EVENT_TYPE_COUNT] {
        let mut out = [0; EVENT_TYPE_COUNT];
        for s in self.shards.iter() {
            for (o, c) in out.iter_mut().zip(&s.events_routed) {
                *o += c.load(Relaxed);
            }
        }
        out
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let counter =
            |o: &mut String, name: &str, help: &str, v: u64| family(o, name, "counter", help, v);
        let gauge =
            |o: &mut String, name: &str, help: &str, v: i64| family(o, name, "gauge", help, v);
        counter(
            &mut o,
            "ws_connections_total",
            "Total WebSocket connections established.",
            self.sum(|s| &s.connections_total),
        );
        gauge(
            &mut o,
            "ws_connections_active",
            "Current open WebSocket connections.",
            self.connections_active.load(Relaxed),
        );
        counter(
            &mut o,
            "ws_messages_sent_total",
            "Total messages sent to clients.",
            self.sum(|s| &s.messages_sent),
        );
        counter(
            &mut o,
            "ws_messages_received_total",
            "Total messages received from clients.",
            self.sum(|s| &s.messages_received),
        );
        let _ = write!(
            o,
            "# HELP ws_events_routed_total Events routed, by event type.\n# TYPE ws_events_routed_total counter\n"
        );
        for (t, v) in EventType::ALL.iter().zip(self.routed_by_type()) {
            let _ = writeln!(
                o,
                "ws_events_routed_total{{event_type=\"{}\"}} {v}",
                t.as_str()
            );
        }
        counter(
            &mut o,
            "ws_events_dropped_total",
            "Events dropped by backpressure.",
            self.sum(|s| &s.events_dropped),
        );
        counter(
            &mut o,
            "ws_events_shed_total",
            "Events dropped on arrival because the shards' inboxes were full.",
            self.events_shed.load(Relaxed),
        );
        gauge(
            &mut o,
            "ws_subscription_count",
            "Active subscriptions.",
            self.subscriptions.load(Relaxed),
        );
        self.render_latency(&mut o);
        o
    }

    /// The whole exposition of `GET /metrics`: [`Metrics::render`], the gauges of `g`, the
    /// process's own figures and the build.
    pub(crate) fn exposition(&self, g: &Gauges) -> String {
        let mut text = self.render();
        let o = &mut text;
        write_capacity(o, g);
        let why = "Whether events flow from the broker (1) or not (0); /readyz follows it.";
        family(
            o,
            "streamhub_broker_healthy",
            "gauge",
            why,
            u8::from(g.broker_healthy),
        );
        let why = "Clients dropped for missed heartbeats or stalled writes.";
        let timeouts = self.sum(|s| &s.heartbeat_timeouts);
        family(o, "ws_heartbeat_timeouts_total", "counter", why, timeouts);
        let _ = write!(
            o,
            "# HELP streamhub_build_info The running build (always 1).\n# TYPE streamhub_build_info gauge\nstreamhub_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        write_process(o);
        text.push_str("# HELP streamhub_shard_utilization Share of wall time each shard's runtime spent running tasks (smoothed).\n# TYPE streamhub_shard_utilization gauge\n");
        text.push_str("# HELP streamhub_write_coalesce_window_seconds Each shard's write-coalescing window now (it follows the shard's utilization).\n# TYPE streamhub_write_coalesce_window_seconds gauge\n");
        for (i, (busy, window)) in g.shards.iter().enumerate() {
            let _ = write!(
                text,
                "streamhub_shard_utilization{{shard=\"{i}\"}} {busy:.3}\nstreamhub_write_coalesce_window_seconds{{shard=\"{i}\"}} {:.6}\n",
                window.as_secs_f64()
            );
        }
        write_origins(&mut text, &g.origins);
        if let Some(up) = g.broker_connected {
            let why = "Whether the Redis subscription is live.";
            family(&mut text, "redis_connected", "gauge", why, u8::from(up));
        }
        if let Some((allocated, resident)) = g.heap {
            let why = "Bytes the hub holds on its heap.";
            family(
                &mut text,
                "streamhub_heap_allocated_bytes",
                "gauge",
                why,
                allocated,
            );
            let why = "Bytes of memory the allocator holds.";
            family(
                &mut text,
                "streamhub_heap_resident_bytes",
                "gauge",
                why,
                resident,
            );
        }
        text
    }

    /// Writes the latency histogram.
    fn render_latency(&self, o: &mut String) {
        let name = "ws_message_latency_seconds";
        let _ = write!(
            o,
            "# HELP {name} Delivery latency from routing an event to writing it to the client's socket.\n# TYPE {name} histogram\n"
        );
        let mut cumulative = 0u64;
        for i in 0..=LATENCY_BUCKETS.len() {
            cumulative += self
                .shards
                .iter()
                .map(|s| s.latency_buckets[i].load(Relaxed))
                .sum::<u64>();
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum_us: u64 = self
            .shards
            .iter()
            .map(|s| s.latency_sum_us.load(Relaxed))
            .sum();
        let _ = writeln!(o, "{name}_sum {}", sum_us as f64 / 1e6);
        let _ = writeln!(o, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new(1);
        m.local().observe_latency(Duration::from_micros(50));
        m.local().observe_latency(Duration::from_millis(3));
        m.local().observe_latency(Duration::from_secs(9));
        let text = m.render();
        assert!(
            text.contains("ws_message_latency_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ws_message_latency_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("ws_message_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ws_message_latency_seconds_count 3\n"),
            "{text}"
        );
    }
}
