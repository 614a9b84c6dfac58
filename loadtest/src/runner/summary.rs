//! The summary of a run: connection figures, steps, latency, loss accounting, the hub's memory
//! and CPU, the timeline, and the scenario's goals checked against them.

use super::clients::ConnectFigures;
use super::publish::PublishFigures;
use super::{Finished, Run};
use crate::fixtures::ProcSample;
use crate::heap::{self, HeapSnapshot};
use crate::report::{Connect, GoalResult, HubFigures, Summary, TimelinePoint};
use crate::scenario::Scenario;
use crate::stats::{self, Collector, Tally};

/// What the phases of a run produced, for the summary.
pub(super) struct Phases {
    /// The connect phase.
    pub(super) connected: ConnectFigures,
    /// The hub while connections were held (the idle scenario), or after connecting.
    pub(super) held: Option<ProcSample>,
    /// The hub's allocator before the clients connected and while they were held.
    pub(super) heap: Option<(HeapSnapshot, HeapSnapshot)>,
    /// The publish phase.
    pub(super) published: PublishFigures,
    /// The end of the run.
    pub(super) finished: Finished,
    /// Where the flamegraph was written.
    pub(super) flamegraph: Option<String>,
}

/// Summarizes a finished run.
pub(super) fn build(run: &Run, p: Phases) -> Summary {
    let s = &run.s;
    let collector = run.collector.lock();
    let procs = run.procs.lock().clone();
    let connect = connect_figures(run, &p.finished, &p.connected);
    let hub = hub_figures(run, &p, &procs, connect.ready);
    let heap = p
        .heap
        .as_ref()
        .and_then(|(before, held)| heap::per_connection(before, held, connect.ready));
    let steps = p.published.steps;
    let limit = s.publish.sustained_p99_ms.or(s.publish.stop_when_p99_ms);
    let best = steps
        .iter()
        .filter(|st| {
            limit.is_none_or(|l| st.latency.p99_ms <= l)
                && st.hub_drops == 0
                && st.achieved_events_per_second >= 0.9 * st.target_events_per_second
        })
        .map(|st| st.deliveries_per_second)
        .fold(0.0, f64::max);
    let peak = steps
        .iter()
        .map(|st| st.deliveries_per_second)
        .fold(0.0, f64::max);
    let expected = run.expectation.lock().expected.clone();
    let outcomes = &p.finished.outcomes;
    let tallies: Vec<Tally> = outcomes.iter().map(|o| o.tally).collect();
    let counted = |i: usize| !run.is_stalled(i) && outcomes[i].ready_after.is_some();
    let mut summary = Summary {
        scenario: s.name.clone(),
        description: s.description.clone(),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        commit: git_commit(),
        machine: format!(
            "{} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
        clients: s.clients,
        source_addresses: s.source_addresses,
        connect,
        steps,
        best_sustained_deliveries_per_second: best,
        peak_deliveries_per_second: peak,
        latency: stats::percentiles(&collector.overall),
        accounting: stats::account(&expected, &tallies, counted),
        hub,
        heap,
        flamegraph: p.flamegraph,
        timeline: timeline(&collector, &procs),
        percentile_curve: stats::percentile_curve(&collector.overall),
        goals: Vec::new(),
        hgrm: Some(stats::hgrm(&collector.overall)),
    };
    summary.goals = judge(s, &summary);
    summary
}

/// How the clients connected and subscribed.
fn connect_figures(run: &Run, f: &Finished, c: &ConnectFigures) -> Connect {
    let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
    let connected: Vec<f64> = f
        .outcomes
        .iter()
        .filter_map(|o| secs(o.connected_after))
        .collect();
    let readies: Vec<f64> = f
        .outcomes
        .iter()
        .filter_map(|o| secs(o.ready_after))
        .collect();
    let failures: Vec<String> = f
        .outcomes
        .iter()
        .filter_map(|o| o.error.clone())
        .filter(|e| !e.starts_with("read"))
        .collect();
    let n = run.s.clients;
    Connect {
        clients: n,
        connected: connected.len(),
        ready: readies.len(),
        stalled: run.stalled_n,
        failed: failures.len(),
        first_failure: failures.first().cloned(),
        all_ready_seconds: (readies.len() == n).then_some(c.all_ready_at.as_secs_f64()),
        connect_p50_seconds: median(&connected),
        ready_max_seconds: readies.iter().cloned().reduce(f64::max),
    }
}

/// The hub's memory, CPU and drops.
fn hub_figures(run: &Run, p: &Phases, procs: &[(f64, ProcSample)], ready: usize) -> HubFigures {
    let f = &p.finished;
    let connected = p.held.or(p.connected.after_connect);
    let rss_per_connection_kib = match (f.baseline, connected) {
        (Some(b), Some(a)) if ready > 0 => {
            Some((a.rss_kib.saturating_sub(b.rss_kib)) as f64 / ready as f64)
        }
        _ => None,
    };
    let (mut on_reading, mut on_stalled) = (0u64, 0u64);
    for (i, o) in f.outcomes.iter().enumerate() {
        if let Some(d) = o
            .client_id
            .as_ref()
            .and_then(|id| f.drops_by_client.get(id))
        {
            if run.is_stalled(i) {
                on_stalled += d;
            } else {
                on_reading += d;
            }
        }
    }
    let cpu = cpu_figures(procs);
    let cpu_us_per_connection = match (f.baseline, p.connected.after_connect) {
        (Some(b), Some(a)) if ready > 0 => {
            Some(1e6 * (a.cpu_seconds - b.cpu_seconds) / ready as f64)
        }
        _ => None,
    };
    HubFigures {
        pid: run.hub.pid,
        rss_baseline_kib: f.baseline.map(|p| p.rss_kib),
        rss_connected_kib: connected.map(|p| p.rss_kib),
        rss_peak_kib: procs.iter().map(|(_, p)| p.rss_kib).max(),
        rss_final_kib: f.sample.map(|p| p.rss_kib),
        rss_per_connection_kib,
        cpu_percent_mean: cpu.0,
        cpu_percent_peak: cpu.1,
        cpu_us_per_delivery: p.published.cpu_us_per_delivery,
        cpu_us_per_connection,
        drops_total: f.drops_total.map(|d| d as u64),
        drops_on_reading_clients: on_reading,
        drops_on_stalled_clients: on_stalled,
    }
}

/// Per second: deliveries, p99, hub RSS and CPU.
fn timeline(c: &Collector, procs: &[(f64, ProcSample)]) -> Vec<TimelinePoint> {
    let seconds = c
        .per_second
        .len()
        .max(procs.last().map(|(t, _)| *t as usize + 1).unwrap_or(0));
    (0..seconds)
        .map(|sec| {
            let h = c.per_second.get(sec);
            let near = procs.iter().min_by(|a, b| {
                (a.0 - sec as f64)
                    .abs()
                    .partial_cmp(&(b.0 - sec as f64).abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let cpu = procs.windows(2).find(|w| w[1].0 >= sec as f64).map(|w| {
                100.0 * (w[1].1.cpu_seconds - w[0].1.cpu_seconds) / (w[1].0 - w[0].0).max(1e-3)
            });
            TimelinePoint {
                second: sec as u32,
                deliveries: h.map_or(0, |h| h.len()),
                p99_ms: h
                    .filter(|h| !h.is_empty())
                    .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0),
                hub_rss_kib: near.map(|(_, p)| p.rss_kib),
                hub_cpu_percent: cpu,
            }
        })
        .collect()
}

/// Mean and peak CPU percent (of one core) over the samples.
fn cpu_figures(procs: &[(f64, ProcSample)]) -> (Option<f64>, Option<f64>) {
    let rates: Vec<f64> = procs
        .windows(2)
        .map(|w| 100.0 * (w[1].1.cpu_seconds - w[0].1.cpu_seconds) / (w[1].0 - w[0].0).max(1e-3))
        .collect();
    if rates.is_empty() {
        return (None, None);
    }
    let (first, last) = (procs[0], procs[procs.len() - 1]);
    let mean = 100.0 * (last.1.cpu_seconds - first.1.cpu_seconds) / (last.0 - first.0).max(1e-3);
    (Some(mean), rates.into_iter().reduce(f64::max))
}

/// The median of some values.
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

/// The commit of the working tree, if this is a git checkout.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks the scenario's goals against the summary.
fn judge(s: &Scenario, r: &Summary) -> Vec<GoalResult> {
    let g = &s.goals;
    let mut out = Vec::new();
    let mut add = |goal: &str, target: String, measured: String, met: bool| {
        out.push(GoalResult {
            goal: goal.into(),
            target,
            measured,
            met,
        });
    };
    if let Some(min) = g.min_deliveries_per_second {
        let v = r.best_sustained_deliveries_per_second;
        add(
            "sustained deliveries/s",
            format!(">= {min:.0}"),
            format!("{v:.0}"),
            v >= min,
        );
    }
    if let Some(p) = g.p99_ms {
        let v = r.latency.p99_ms;
        add(
            "p99 latency",
            format!("< {p} ms"),
            format!("{v:.3} ms"),
            v < p,
        );
    }
    if let Some(p) = g.p999_ms {
        let v = r.latency.p999_ms;
        add(
            "p99.9 latency",
            format!("< {p} ms"),
            format!("{v:.3} ms"),
            v < p,
        );
    }
    if g.zero_loss {
        let a = &r.accounting;
        add(
            "zero loss (reading clients)",
            "0 lost, 0 duplicated".into(),
            format!("{} lost, {} duplicated", a.lost, a.duplicates),
            a.lost == 0 && a.duplicates == 0 && a.expected > 0,
        );
    }
    if let Some(k) = g.max_rss_kib_per_connection {
        let v = r.hub.rss_per_connection_kib;
        add(
            "hub RSS per connection",
            format!("< {k} KiB"),
            v.map_or("n/a".into(), |v| format!("{v:.2} KiB")),
            v.is_some_and(|v| v < k),
        );
    }
    if let Some(t) = g.all_subscribed_within_seconds {
        let v = r.connect.all_ready_seconds;
        add(
            "all clients subscribed",
            format!("within {t} s"),
            v.map_or("not all".into(), |v| format!("{v:.3} s")),
            v.is_some_and(|v| v <= t),
        );
    }
    if s.stalled_fraction > 0.0 {
        add(
            "drops only on stalled clients",
            "0 on reading clients".into(),
            format!(
                "{} on reading, {} on stalled",
                r.hub.drops_on_reading_clients, r.hub.drops_on_stalled_clients
            ),
            r.hub.drops_on_reading_clients == 0,
        );
    }
    out
}
