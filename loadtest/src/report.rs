//! What a run produced, and the files written from it: `summary.json`, `report.md`,
//! `latency.hgrm`, `latency_percentiles.svg`, `timeline.svg`.

use crate::chart;
use crate::stats::{Accounting, Percentiles};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;

/// One run, summarized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// When the run ended (RFC 3339).
    pub date: String,
    /// Commit of the working tree.
    pub commit: Option<String>,
    /// The machine, briefly.
    pub machine: String,
    /// Clients asked for.
    pub clients: usize,
    /// Source addresses used.
    pub source_addresses: u8,
    /// Connection figures.
    pub connect: Connect,
    /// Publishing steps.
    pub steps: Vec<StepResult>,
    /// Highest deliveries/s of a step within its limits.
    pub best_sustained_deliveries_per_second: f64,
    /// Highest deliveries/s of any step, whatever its latency.
    #[serde(default)]
    pub peak_deliveries_per_second: f64,
    /// Latency over the whole run.
    pub latency: Percentiles,
    /// Loss and duplicates.
    pub accounting: Accounting,
    /// The hub's figures.
    pub hub: HubFigures,
    /// What each connection added to the hub's heap (when the hub answers `/debug/heap`).
    #[serde(default)]
    pub heap: Option<crate::heap::HeapPerConnection>,
    /// Where the flamegraph was written.
    pub flamegraph: Option<String>,
    /// Per-second figures.
    pub timeline: Vec<TimelinePoint>,
    /// (1/(1-percentile), ms) points of the latency distribution.
    pub percentile_curve: Vec<(f64, f64)>,
    /// Goals checked.
    pub goals: Vec<GoalResult>,
    /// The `.hgrm` text (written to its own file).
    #[serde(skip)]
    pub hgrm: Option<String>,
}

/// Connection figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connect {
    /// Clients asked for.
    pub clients: usize,
    /// Clients whose WebSocket opened.
    pub connected: usize,
    /// Clients that got every opening reply (authenticated and subscribed).
    pub ready: usize,
    /// Clients that stop reading.
    pub stalled: usize,
    /// Clients that failed.
    pub failed: usize,
    /// The first failure's reason.
    pub first_failure: Option<String>,
    /// Seconds from start until every client was subscribed.
    pub all_ready_seconds: Option<f64>,
    /// Median seconds from start to an open WebSocket.
    pub connect_p50_seconds: Option<f64>,
    /// Seconds from start to the last client ready.
    pub ready_max_seconds: Option<f64>,
}

/// One publishing step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Events/s asked for.
    pub target_events_per_second: f64,
    /// Events/s the publishers achieved.
    pub achieved_events_per_second: f64,
    /// Events published.
    pub events: u64,
    /// Deliveries per second received by the clients.
    pub deliveries_per_second: f64,
    /// Latency in the step.
    pub latency: Percentiles,
    /// Drops the hub counted in the step.
    pub hub_drops: u64,
    /// The hub's CPU time per delivery over the step (from `/proc`), in microseconds: what one
    /// delivery costs at this rate, comparable between servers at the steps they share.
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
    /// The harness's own CPU time per delivery over the step (its clients and publishers, from
    /// `/proc/self`), in microseconds: on a machine the two share, what the measuring costs.
    #[serde(default)]
    pub harness_cpu_us_per_delivery: Option<f64>,
}

/// The hub's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HubFigures {
    /// Its PID.
    pub pid: Option<u32>,
    /// RSS before clients connected.
    pub rss_baseline_kib: Option<u64>,
    /// RSS with every client connected.
    pub rss_connected_kib: Option<u64>,
    /// Highest RSS sampled.
    pub rss_peak_kib: Option<u64>,
    /// RSS at the end.
    pub rss_final_kib: Option<u64>,
    /// (connected − baseline) / ready clients.
    pub rss_per_connection_kib: Option<f64>,
    /// Mean CPU (percent of one core) over the run.
    pub cpu_percent_mean: Option<f64>,
    /// Highest one-second CPU.
    pub cpu_percent_peak: Option<f64>,
    /// Hub CPU time per delivery while publishing, in microseconds (all of the hub's work,
    /// including publishing requests, divided by deliveries).
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
    /// Hub CPU time from before the first client connected until all were subscribed, per
    /// subscribed client, in microseconds (accept, upgrade, authentication, subscription).
    #[serde(default)]
    pub cpu_us_per_connection: Option<f64>,
    /// `ws_events_dropped_total` at the end.
    pub drops_total: Option<u64>,
    /// Drops on clients that kept reading.
    pub drops_on_reading_clients: u64,
    /// Drops on clients that stopped reading.
    pub drops_on_stalled_clients: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Second since start.
    pub second: u32,
    /// Deliveries received in it.
    pub deliveries: u64,
    /// Its p99 latency.
    pub p99_ms: Option<f64>,
    /// Hub RSS.
    pub hub_rss_kib: Option<u64>,
    /// Hub CPU, percent of one core.
    pub hub_cpu_percent: Option<f64>,
}

/// One goal checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoalResult {
    /// What.
    pub goal: String,
    /// The bar.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

/// Writes every report file into `dir`.
pub fn write_all(s: &Summary, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(s)?)?;
    std::fs::write(dir.join("report.md"), markdown(s))?;
    if let Some(h) = &s.hgrm {
        std::fs::write(dir.join("latency.hgrm"), h)?;
    }
    chart::percentiles(
        &dir.join("latency_percentiles.svg"),
        &[(s.scenario.as_str(), &s.percentile_curve)],
    )?;
    let seconds: Vec<chart::Second> = s
        .timeline
        .iter()
        .map(|p| (p.second, p.deliveries, p.p99_ms))
        .collect();
    chart::timeline(&dir.join("timeline.svg"), &s.scenario, &seconds)?;
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("n/a".into(), |v| v.to_string())
}

fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

/// The Markdown report.
pub fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    heading(&mut o, s);
    latency(&mut o, s);
    accounting(&mut o, s);
    hub(&mut o, s);
    heap(&mut o, s);
    o
}

/// The heap per connection, in all and by size class.
fn heap(o: &mut String, s: &Summary) {
    let Some(h) = &s.heap else { return };
    let t = h.totals;
    let _ = writeln!(
        o,
        "\n## Heap per connection\n\nallocated {:.0} B, active {:.0} B, resident {:.0} B, allocator metadata {:.0} B (`/debug/heap` before connecting and while held).\n\n| size class | per connection | bytes |\n| --- | --- | --- |",
        t.allocated, t.active, t.resident, t.metadata
    );
    for c in &h.size_classes {
        let _ = writeln!(
            o,
            "| {} B | {:.2} | {:.0} |",
            c.size, c.per_connection, c.bytes_per_connection
        );
    }
}

/// Title, description, where and when, and the goals.
fn heading(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "# Load test: {}\n", s.scenario);
    if !s.description.is_empty() {
        let _ = writeln!(o, "{}\n", s.description);
    }
    let _ = writeln!(
        o,
        "Run {} on commit {} ({}), {} clients over {} source addresses.\n",
        s.date,
        opt(s.commit.as_deref()),
        s.machine,
        s.clients,
        s.source_addresses
    );
    if !s.goals.is_empty() {
        let _ = writeln!(
            o,
            "## Goals\n\n| goal | target | measured | met |\n| --- | --- | --- | --- |"
        );
        for g in &s.goals {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                g.goal,
                g.target,
                g.measured,
                if g.met { "yes" } else { "**no**" }
            );
        }
        o.push('\n');
    }
}

/// Latency over the run and per step.
fn latency(o: &mut String, s: &Summary) {
    let l = &s.latency;
    let _ = writeln!(
        o,
        "## Latency (publish to receipt, all steps)\n\n| samples | p50 | p90 | p99 | p99.9 | max |\n| --- | --- | --- | --- | --- | --- |\n| {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |\n",
        l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    );
    if !s.steps.is_empty() {
        let _ = writeln!(
            o,
            "## Steps\n\n| target ev/s | achieved ev/s | events | deliveries/s | p50 | p99 | p99.9 | max | hub drops | hub CPU per delivery | harness CPU per delivery |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for st in &s.steps {
            let _ = writeln!(
                o,
                "| {:.0} | {:.0} | {} | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {} | {} | {} |",
                st.target_events_per_second,
                st.achieved_events_per_second,
                st.events,
                st.deliveries_per_second,
                st.latency.p50_ms,
                st.latency.p99_ms,
                st.latency.p999_ms,
                st.latency.max_ms,
                st.hub_drops,
                micros(st.cpu_us_per_delivery),
                micros(st.harness_cpu_us_per_delivery),
            );
        }
        let _ = writeln!(
            o,
            "\nHighest sustained (within the scenario's latency limit, no drops): **{:.0} deliveries/s**; highest of any step: {:.0} deliveries/s.\n",
            s.best_sustained_deliveries_per_second, s.peak_deliveries_per_second
        );
    }
}

/// Microseconds with two decimals, or `n/a`.
fn micros(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |c| format!("{c:.2} µs"))
}

/// Loss and duplicates, and how the clients connected.
fn accounting(o: &mut String, s: &Summary) {
    let a = &s.accounting;
    let _ = writeln!(
        o,
        "## Delivery accounting (clients that kept reading)\n\n| expected | received | lost | duplicated | reordered | unexpected | clients with loss |\n| --- | --- | --- | --- | --- | --- | --- |\n| {} | {} | {} | {} | {} | {} | {} |\n",
        a.expected, a.received, a.lost, a.duplicates, a.reordered, a.unexpected, a.clients_with_loss
    );
    let c = &s.connect;
    let _ = writeln!(
        o,
        "## Connections\n\n| asked | connected | subscribed | stalled | failed | all subscribed after | median connect |\n| --- | --- | --- | --- | --- | --- | --- |\n| {} | {} | {} | {} | {} | {} s | {} s |\n",
        c.clients,
        c.connected,
        c.ready,
        c.stalled,
        c.failed,
        opt_f(c.all_ready_seconds, 3),
        opt_f(c.connect_p50_seconds, 3)
    );
    if let Some(f) = &c.first_failure {
        let _ = writeln!(o, "First failure: `{f}`\n");
    }
}

/// The hub's memory, CPU and drops, and the files of the run.
fn hub(o: &mut String, s: &Summary) {
    let h = &s.hub;
    let _ = writeln!(
        o,
        "## Hub\n\n| RSS before | RSS connected | RSS peak | RSS end | RSS per connection | CPU mean | CPU peak | CPU per connection | CPU per delivery | drops (reading / stalled) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n| {} KiB | {} KiB | {} KiB | {} KiB | {} KiB | {}% | {}% | {} µs | {} µs | {} / {} |\n",
        opt(h.rss_baseline_kib),
        opt(h.rss_connected_kib),
        opt(h.rss_peak_kib),
        opt(h.rss_final_kib),
        opt_f(h.rss_per_connection_kib, 2),
        opt_f(h.cpu_percent_mean, 0),
        opt_f(h.cpu_percent_peak, 0),
        opt_f(h.cpu_us_per_connection, 1),
        opt_f(h.cpu_us_per_delivery, 2),
        h.drops_on_reading_clients,
        h.drops_on_stalled_clients
    );
    let _ = writeln!(
        o,
        "## Files\n\n- `latency_percentiles.svg`: the latency percentile curve\n- `timeline.svg`: deliveries/s and p99 per second\n- `latency.hgrm`: the HdrHistogram percentile distribution\n- `summary.json`: every figure above"
    );
    if let Some(f) = &s.flamegraph {
        let _ = writeln!(o, "- `{f}`: CPU flamegraph of the hub while publishing");
    }
}
