//! One run of a scenario: start or attach to the server, connect the clients, publish the
//! steps, settle, and gather everything the report needs. Every loop here is bounded in count
//! and in time.

use crate::client::{self, ClientOutcome, ClientSpec};
use crate::hub::{Backend, Hub};
use crate::report::{Connect, GoalResult, HubFigures, StepResult, Summary, TimelinePoint};
use crate::scenario::Scenario;
use crate::stats::{self, Collector, Sample, Tally};
use crate::workload::{self, Expectation, Sub};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The streamhub binary to start.
    pub hub_bin: PathBuf,
    /// Write a flamegraph of the hub to this file.
    pub flamegraph: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Override the scenario's client count.
    pub clients: Option<usize>,
    /// Override every step's duration.
    pub step_seconds: Option<f64>,
    /// Override the steps with one rate (events/s).
    pub rate: Option<f64>,
}

/// Longest wait for deliveries to settle after publishing stops.
const SETTLE: Duration = Duration::from_secs(5);

/// Runs a scenario and returns its summary.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<Summary> {
    let mut s = scenario.clone();
    if let Some(n) = opts.clients {
        s.clients = n;
    }
    if let Some(t) = opts.step_seconds {
        s.publish.step_seconds = t;
    }
    if let Some(r) = opts.rate {
        anyhow::ensure!(r > 0.0 && r.is_finite(), "--rate must be positive");
        s.publish.rates = vec![r];
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let hub = open_target(&s, opts)?;
    let generic = s.generic.is_some();

    // Workload: every client's subscription, and the expectation index.
    let mut rng = fastrand::Rng::with_seed(42);
    let subs: Vec<Sub> = (0..s.clients)
        .map(|_| workload::subscription_for(&s.subscriptions, &mut rng))
        .collect();
    let stalled_n = s.stalled_clients();
    // Every tenth client is stalled, spread over the run rather than bunched.
    let is_stalled = |i: usize| {
        stalled_n > 0 && (i * stalled_n / s.clients) != ((i + 1) * stalled_n / s.clients)
    };
    let expectation = Arc::new(Mutex::new(Expectation::new(&subs, |i| !is_stalled(i))));

    let spec = Arc::new(client_spec(&s, &hub)?);
    let progress = bar(opts.progress, s.clients as u64);
    progress.set_message("connecting");

    // Collector: merges sample batches as they arrive.
    let collector = Arc::new(Mutex::new(Collector::default()));
    let delivered = Arc::new(AtomicU64::new(0));
    let (sample_tx, mut sample_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Sample>>();
    let collecting = {
        let collector = collector.clone();
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Some(batch) = sample_rx.recv().await {
                delivered.fetch_add(batch.len() as u64, Relaxed);
                collector.lock().add(&batch);
            }
        })
    };

    // Hub memory and CPU, once a second.
    let baseline = hub.sample();
    let started = Instant::now();
    let samples_proc: Arc<Mutex<Vec<(f64, crate::hub::ProcSample)>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = {
        let pid = hub.pid;
        let out = samples_proc.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let Some(pid) = pid else { return };
            loop {
                if let Some(p) = crate::hub::proc_sample(pid) {
                    out.lock().push((started.elapsed().as_secs_f64(), p));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    };

    // Clients.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = (s.connect_concurrency > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(s.connect_concurrency)));
    let mut tasks = Vec::with_capacity(s.clients);
    for (i, sub) in subs.iter().enumerate() {
        let spec = spec.clone();
        let sample_tx = sample_tx.clone();
        let ready_tx = ready_tx.clone();
        let stop = stop_rx.clone();
        let gate = gate.clone();
        let stalled = is_stalled(i);
        let opening = if generic {
            spec.opening.clone()
        } else {
            streamhub_opening(sub)
        };
        let source = client::source_ip(i, s.source_addresses);
        tasks.push(tokio::spawn(async move {
            let permit = match &gate {
                Some(g) => g.clone().acquire_owned().await.ok(),
                None => None,
            };
            let spec = Arc::new(ClientSpec { opening, ..(*spec).clone() });
            let (ready_inner_tx, mut ready_inner_rx) = tokio::sync::mpsc::unbounded_channel();
            let run = client::run(spec, source, started, stalled, sample_tx, ready_inner_tx, stop);
            tokio::pin!(run);
            // Release the connect slot once this client is ready (or failed).
            let out = tokio::select! {
                out = &mut run => { drop(permit); out }
                _ = ready_inner_rx.recv() => { drop(permit); let _ = ready_tx.send(()); return run.await }
            };
            let _ = ready_tx.send(());
            out
        }));
    }
    drop(sample_tx);
    drop(ready_tx);
    let connect_deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(s.clients as u64 * 2);
    let mut ready = 0;
    while ready < s.clients && Instant::now() < connect_deadline {
        match tokio::time::timeout(Duration::from_millis(200), ready_rx.recv()).await {
            Ok(Some(())) => {
                ready += 1;
                progress.set_position(ready as u64);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let all_ready_at = started.elapsed();
    let after_connect = hub.sample();

    if s.publish.hold_seconds > 0.0 {
        progress.set_message("holding connections");
        tokio::time::sleep(Duration::from_secs_f64(s.publish.hold_seconds)).await;
    }
    let held = hub.sample();

    // Flamegraph over the publishing phase.
    let publish_seconds = s.publish.rates.len() as f64 * s.publish.step_seconds;
    let profile = match (&opts.flamegraph, publish_seconds > 0.0) {
        (Some(_), true) => {
            let (http, base) = (http.clone(), hub.http.clone());
            Some(tokio::spawn(crate::hub::fetch_flamegraph(
                http,
                base,
                publish_seconds,
            )))
        }
        _ => None,
    };

    // Publishing, step by step.
    let mut steps = Vec::new();
    let bar_total = s.publish.rates.len().max(1) as u64;
    progress.set_length(bar_total);
    progress.set_position(0);
    let mut drops_before = hub
        .metric(&http, "ws_events_dropped_total")
        .await
        .unwrap_or(0.0);
    let (cpu_before, delivered_before) = (hub.sample(), delivered.load(Relaxed));
    let seqs: Arc<Vec<AtomicU64>> = Arc::new(
        (0..s.publish.publishers)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    for (k, rate) in s.publish.rates.iter().enumerate() {
        progress.set_message(format!(
            "step {}/{}: {rate} events/s",
            k + 1,
            s.publish.rates.len()
        ));
        let from = started.elapsed().as_secs_f64().ceil() as usize;
        let t0 = Instant::now();
        let sent = publish_step(&s, &hub, &http, *rate, &expectation, &seqs).await?;
        let elapsed = t0.elapsed().as_secs_f64();
        let to = started.elapsed().as_secs_f64().floor() as usize;
        // Let the step's last events land before judging it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let drops_after = hub
            .metric(&http, "ws_events_dropped_total")
            .await
            .unwrap_or(drops_before);
        let window = collector.lock().window(from, to.max(from + 1));
        let lat = stats::percentiles(&window);
        let secs = (to.max(from + 1) - from) as f64;
        let step = StepResult {
            target_events_per_second: *rate,
            achieved_events_per_second: sent as f64 / elapsed,
            events: sent,
            deliveries_per_second: lat.count as f64 / secs,
            latency: lat,
            hub_drops: (drops_after - drops_before).max(0.0) as u64,
        };
        drops_before = drops_after;
        progress.inc(1);
        let too_slow = s
            .publish
            .stop_when_p99_ms
            .is_some_and(|limit| step.latency.p99_ms > limit);
        let dropping = s.publish.stop_on_drops && step.hub_drops > 0;
        let saturated = step.achieved_events_per_second < 0.9 * step.target_events_per_second;
        steps.push(step);
        if too_slow || dropping || saturated {
            break;
        }
    }

    let (cpu_after, delivered_after) = (hub.sample(), delivered.load(Relaxed));
    let cpu_us_per_delivery = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if delivered_after > delivered_before => Some(
            1e6 * (b.cpu_seconds - a.cpu_seconds) / (delivered_after - delivered_before) as f64,
        ),
        _ => None,
    };
    // Settle: wait until every expected delivery arrived, or nothing moves for a while.
    progress.set_message("settling");
    let expected_total: u64 = expectation.lock().expected.iter().sum();
    let mut last = delivered.load(Relaxed);
    let mut quiet_since = Instant::now();
    while delivered.load(Relaxed) < expected_total && quiet_since.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = delivered.load(Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let drops_by_client = if generic {
        Default::default()
    } else {
        hub.drops_by_client(&http).await
    };
    let drops_total = hub.metric(&http, "ws_events_dropped_total").await;
    let _ = stop_tx.send(true);
    let mut outcomes: Vec<ClientOutcome> = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or_default());
    }
    let _ = collecting.await;
    let _ = sampler.await;
    let finished = hub.sample();
    progress.finish_and_clear();

    let flamegraph = match (profile, &opts.flamegraph) {
        (Some(p), Some(path)) => match p.await {
            Ok(Ok(svg)) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(path, svg)?;
                Some(path.display().to_string())
            }
            Ok(Err(e)) => {
                eprintln!("flamegraph: {e}");
                None
            }
            Err(e) => {
                eprintln!("flamegraph: {e}");
                None
            }
        },
        _ => None,
    };

    let collector = Arc::try_unwrap(collector)
        .map(|m| m.into_inner())
        .unwrap_or_else(|c| {
            let c = c.lock();
            let mut copy = Collector::default();
            let _ = copy.overall.add(&c.overall);
            copy.per_second = c.per_second.clone();
            copy
        });
    let expected = expectation.lock().expected.clone();
    let tallies: Vec<Tally> = outcomes.iter().map(|o| o.tally).collect();
    let counted = |i: usize| !is_stalled(i) && outcomes[i].ready_after.is_some();
    let accounting = stats::account(&expected, &tallies, counted);

    let (mut on_reading, mut on_stalled) = (0u64, 0u64);
    for (i, o) in outcomes.iter().enumerate() {
        if let Some(d) = o.client_id.as_ref().and_then(|id| drops_by_client.get(id)) {
            if is_stalled(i) {
                on_stalled += d;
            } else {
                on_reading += d;
            }
        }
    }
    let procs = samples_proc.lock().clone();
    let timeline = timeline(&collector, &procs);
    let connected: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.connected_after)
        .map(|d| d.as_secs_f64())
        .collect();
    let readies: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.ready_after)
        .map(|d| d.as_secs_f64())
        .collect();
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.clone())
        .filter(|e| !e.starts_with("read"))
        .collect();
    let n_ready = readies.len();
    let rss_per_connection = match (baseline, held.or(after_connect)) {
        (Some(b), Some(a)) if n_ready > 0 => {
            Some((a.rss_kib.saturating_sub(b.rss_kib)) as f64 / n_ready as f64)
        }
        _ => None,
    };
    let cpu = cpu_figures(&procs);
    let best = steps
        .iter()
        .filter(|st| {
            s.publish
                .sustained_p99_ms
                .or(s.publish.stop_when_p99_ms)
                .is_none_or(|l| st.latency.p99_ms <= l)
                && st.hub_drops == 0
                && st.achieved_events_per_second >= 0.9 * st.target_events_per_second
        })
        .map(|st| st.deliveries_per_second)
        .fold(0.0, f64::max);
    let peak = steps
        .iter()
        .map(|st| st.deliveries_per_second)
        .fold(0.0, f64::max);
    let latency = stats::percentiles(&collector.overall);
    let connect = Connect {
        clients: s.clients,
        connected: connected.len(),
        ready: n_ready,
        stalled: stalled_n,
        failed: failures.len(),
        first_failure: failures.first().cloned(),
        all_ready_seconds: (n_ready == s.clients).then_some(all_ready_at.as_secs_f64()),
        connect_p50_seconds: median(&connected),
        ready_max_seconds: readies
            .iter()
            .cloned()
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
    };
    let hub_fig = HubFigures {
        pid: hub.pid,
        rss_baseline_kib: baseline.map(|p| p.rss_kib),
        rss_connected_kib: held.or(after_connect).map(|p| p.rss_kib),
        rss_peak_kib: procs.iter().map(|(_, p)| p.rss_kib).max(),
        rss_final_kib: finished.map(|p| p.rss_kib),
        rss_per_connection_kib: rss_per_connection,
        cpu_percent_mean: cpu.0,
        cpu_percent_peak: cpu.1,
        cpu_us_per_delivery,
        drops_total: drops_total.map(|d| d as u64),
        drops_on_reading_clients: on_reading,
        drops_on_stalled_clients: on_stalled,
    };
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
        latency,
        accounting,
        hub: hub_fig,
        flamegraph,
        timeline,
        percentile_curve: stats::percentile_curve(&collector.overall),
        goals: Vec::new(),
        hgrm: None,
    };
    summary.goals = judge(&s, &summary);
    summary.hgrm = Some(stats::hgrm(&collector.overall));
    Ok(summary)
}

/// Where a publisher sends events.
#[derive(Clone)]
enum Sink {
    /// The hub's broadcast endpoint (or the generic target's URL).
    Http,
    /// `PUBLISH` on a channel of one Redis.
    Redis(redis::aio::MultiplexedConnection, String),
    /// `SPUBLISH` on `{prefix}:all` and on `{prefix}:cluster:{id}` of a Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection, String, String),
}

/// Starts or attaches to the server the scenario names.
fn open_target(s: &Scenario, opts: &RunOptions) -> anyhow::Result<Hub> {
    if let Some(g) = &s.generic {
        let (addr, _, _) = parse_ws_url(&g.url)?;
        return Ok(Hub::attach(addr, format!("http://{addr}"), s.target.pid));
    }
    if s.target.start {
        Hub::start(
            &opts.hub_bin,
            s.target.hub_config.as_ref(),
            opts.flamegraph.is_some(),
            match (s.target.redis, s.target.redis_cluster) {
                (true, _) => Backend::Redis,
                (false, true) => Backend::RedisCluster,
                (false, false) => Backend::Embedded,
            },
        )
    } else {
        let url = s
            .target
            .ws_url
            .as_deref()
            .unwrap_or("ws://127.0.0.1:8080/ws");
        let (addr, _, _) = parse_ws_url(url)?;
        let http = s
            .target
            .http_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        Ok(Hub::attach(addr, http, s.target.pid))
    }
}

/// `ws://host:port/path` → (address, host header, path).
pub fn parse_ws_url(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("only ws:// URLs: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} resolves to nothing"))?;
    Ok((addr, host.to_string(), path.to_string()))
}

/// The client settings shared by every client.
fn client_spec(s: &Scenario, hub: &Hub) -> anyhow::Result<ClientSpec> {
    let quoted = |k: &str| format!("\"{k}\"").into_bytes();
    Ok(match &s.generic {
        Some(g) => {
            let (server, host, path) = parse_ws_url(&g.url)?;
            ClientSpec {
                server,
                host,
                path,
                opening: g.on_connect.clone(),
                await_replies: false,
                time_key: quoted(&g.time_key),
                seq_key: quoted(&g.seq_key),
                publisher_key: quoted("publisher"),
                publishers: s.publish.publishers,
            }
        }
        None => ClientSpec {
            server: hub.addr,
            host: hub.addr.to_string(),
            path: "/ws".into(),
            opening: Vec::new(),
            await_replies: true,
            time_key: quoted("sent_ns"),
            seq_key: quoted("seq"),
            publisher_key: quoted("publisher"),
            publishers: s.publish.publishers,
        },
    })
}

/// A streamhub client's opening: authenticate, then subscribe.
fn streamhub_opening(sub: &Sub) -> Vec<String> {
    vec![
        serde_json::json!({"type": "auth", "token": "loadtest"}).to_string(),
        sub.message().to_string(),
    ]
}

/// Publishes at `rate` events/s for the step's duration; returns how many were sent.
async fn publish_step(
    s: &Scenario,
    hub: &Hub,
    http: &reqwest::Client,
    rate: f64,
    expectation: &Arc<Mutex<Expectation>>,
    seqs: &Arc<Vec<AtomicU64>>,
) -> anyhow::Result<u64> {
    if s.publish.via == "none" {
        tokio::time::sleep(Duration::from_secs_f64(s.publish.step_seconds)).await;
        return Ok(0);
    }
    let n = s.publish.publishers;
    let per_publisher = rate / n as f64;
    let total = (s.publish.step_seconds * per_publisher).round() as u64;
    let pad = "x".repeat(s.publish.payload_bytes);
    let url = match &s.generic {
        Some(g) => g.publish_url.clone(),
        None => format!("{}/api/v1/streaming/broadcast", hub.http),
    };
    let sink = match s.publish.via.as_str() {
        "redis" => {
            let redis_url = s
                .publish
                .redis_url
                .clone()
                .or_else(|| hub.redis_url().map(str::to_string))
                .ok_or_else(|| anyhow::anyhow!("no redis to publish to"))?;
            let client = redis::Client::open(redis_url)?;
            Sink::Redis(
                client.get_multiplexed_async_connection().await?,
                s.publish.channel.clone(),
            )
        }
        "redis-cluster" => {
            let nodes = hub
                .redis_cluster_urls()
                .ok_or_else(|| anyhow::anyhow!("no redis cluster to publish to"))?;
            let client = redis::cluster::ClusterClient::new(nodes)?;
            let all = s.publish.channel.clone();
            let prefix = format!("{}:cluster:", all.trim_end_matches(":all"));
            Sink::Cluster(client.get_async_connection().await?, all, prefix)
        }
        _ => Sink::Http,
    };
    let mut handles = Vec::new();
    for p in 0..n {
        let (http, url, pad, plan) = (
            http.clone(),
            url.clone(),
            pad.clone(),
            s.subscriptions.clone(),
        );
        let template = s.generic.as_ref().map(|g| g.body_template.clone());
        let mut sink = sink.clone();
        let expectation = expectation.clone();
        let seqs = seqs.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(1000 + p as u64 + seqs[p].load(Relaxed));
            let start = tokio::time::Instant::now();
            let deadline = start + Duration::from_secs_f64(total as f64 / per_publisher + 5.0);
            let mut sent = 0u64;
            for k in 0..total {
                let due = start + Duration::from_secs_f64(k as f64 / per_publisher);
                if due > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
                if tokio::time::Instant::now() > deadline {
                    break; // the server cannot keep up; stop this step
                }
                let seq = seqs[p].fetch_add(1, Relaxed) + 1;
                let attrs = workload::next_event(&plan, &mut rng);
                let sent_ns = client::now_ns();
                let body = match &template {
                    Some(t) => t
                        .replace("{seq}", &seq.to_string())
                        .replace("{sent_ns}", &sent_ns.to_string())
                        .replace("{publisher}", &p.to_string())
                        .replace("{pad}", &pad),
                    None => workload::event_body(&attrs, p, seq, sent_ns, &pad),
                };
                let ok = match &mut sink {
                    Sink::Redis(conn, channel) => redis::cmd("PUBLISH")
                        .arg(channel.as_str())
                        .arg(body)
                        .query_async::<i64>(conn)
                        .await
                        .is_ok(),
                    Sink::Cluster(conn, all, prefix) => {
                        let channel = format!("{prefix}{}", workload::cluster_name(attrs.cluster));
                        let mut one = conn.clone();
                        let (mut to_all, mut to_one) =
                            (redis::cmd("SPUBLISH"), redis::cmd("SPUBLISH"));
                        to_all.arg(all.as_str()).arg(&body);
                        to_one.arg(channel).arg(&body);
                        let (a, b) = tokio::join!(
                            to_all.query_async::<i64>(conn),
                            to_one.query_async::<i64>(&mut one)
                        );
                        a.is_ok() && b.is_ok()
                    }
                    Sink::Http => http
                        .post(&url)
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false),
                };
                if ok {
                    sent += 1;
                    if template.is_some() {
                        expectation.lock().expected.iter_mut().for_each(|e| *e += 1);
                    } else {
                        expectation.lock().publish(&attrs);
                    }
                }
            }
            sent
        }));
    }
    let mut sent = 0;
    for h in handles {
        sent += h.await.unwrap_or(0);
    }
    Ok(sent)
}

/// Per second: deliveries, p99, hub RSS and CPU.
fn timeline(c: &Collector, procs: &[(f64, crate::hub::ProcSample)]) -> Vec<TimelinePoint> {
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
fn cpu_figures(procs: &[(f64, crate::hub::ProcSample)]) -> (Option<f64>, Option<f64>) {
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

/// A progress bar (hidden when not wanted).
fn bar(show: bool, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
    {
        b.set_style(style);
    }
    b.enable_steady_tick(Duration::from_millis(200));
    b
}
