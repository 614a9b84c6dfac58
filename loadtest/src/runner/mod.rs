//! One run of a scenario, phase by phase: [`prepare`] (start or attach to the server, draw the
//! workload), [`observe`] (collect latency samples, sample the hub's /proc), [`clients::connect`],
//! [`hold`], [`publish::steps`], [`settle`], [`finish`] (stop the clients, read the hub's drops)
//! and [`summary::build`]. Every loop here is bounded in count and in time.

mod clients;
mod publish;
mod summary;

use crate::client::ClientOutcome;
use crate::fixtures::{proc_sample, ProcSample};
use crate::hub::Hub;
use crate::report::Summary;
use crate::scenario::Scenario;
use crate::stats::{Collector, Sample};
use crate::workload::{self, Expectation, Sub};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

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
    let (run, subs) = prepare(scenario, opts)?;
    let observers = observe(&run);
    let heap_before = run.hub.heap(&run.http).await;
    let connected = clients::connect(&run, &subs, observers.samples.clone()).await;
    let held = hold(&run).await;
    let heap_held = run.hub.heap(&run.http).await;
    let published = publish::steps(&run, opts).await?;
    settle(&run).await;
    let finished = finish(&run, connected.tasks, observers).await;
    let flamegraph =
        publish::save_flamegraph(published.profile, opts.flamegraph.as_deref()).await?;
    Ok(summary::build(
        &run,
        summary::Phases {
            connected: connected.figures,
            held,
            heap: heap_before.zip(heap_held),
            published: published.figures,
            finished,
            flamegraph,
        },
    ))
}

/// What every phase of a run shares.
pub(crate) struct Run {
    /// The scenario, with the command line's overrides applied.
    s: Scenario,
    /// The server under test.
    hub: Hub,
    /// For the hub's HTTP endpoints and HTTP publishing.
    http: reqwest::Client,
    /// When the run started (latency samples are filed by second since then).
    started: Instant,
    /// The progress bar (hidden unless asked for).
    progress: ProgressBar,
    /// How many clients stop reading.
    stalled_n: usize,
    /// Each client's token, signed before the clock started.
    tokens: Vec<String>,
    /// How many events each client must receive, kept up to date by the publishers.
    expectation: Arc<Mutex<Expectation>>,
    /// Latency samples, merged as they arrive.
    collector: Arc<Mutex<Collector>>,
    /// Events received by all clients so far.
    delivered: Arc<AtomicU64>,
    /// The hub's /proc samples: (seconds since start, sample).
    procs: Arc<Mutex<Vec<(f64, ProcSample)>>>,
    /// Set to true to stop the clients and the sampler.
    stop: watch::Sender<bool>,
}

impl Run {
    /// Whether client `i` stops reading after subscribing.
    fn is_stalled(&self, i: usize) -> bool {
        stalled(i, self.stalled_n, self.s.clients)
    }
}

/// Whether client `i` of `all` is one of the `n` that stop reading: every `all / n`-th one,
/// spread over the run rather than bunched.
fn stalled(i: usize, n: usize, all: usize) -> bool {
    n > 0 && (i * n / all) != ((i + 1) * n / all)
}

/// Applies the overrides, starts or attaches to the server and draws every client's
/// subscription.
fn prepare(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<(Run, Vec<Sub>)> {
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
    let hub = open_target(&s, opts)?;
    let mut http = reqwest::Client::builder().pool_max_idle_per_host(64);
    if let Some(tls) = &hub.tls {
        http = http.use_preconfigured_tls((**tls).clone());
    }
    let http = http.build()?;
    let mut rng = fastrand::Rng::with_seed(42);
    let subs: Vec<Sub> = (0..s.clients)
        .map(|_| workload::subscription_for(&s.subscriptions, &mut rng))
        .collect();
    let tokens = (0..s.clients)
        .map(|i| hub.minter.token(i))
        .collect::<anyhow::Result<Vec<String>>>()?;
    let (stalled_n, all) = (s.stalled_clients(), s.clients);
    let expectation = Expectation::new(&subs, |i| !stalled(i, stalled_n, all));
    let run = Run {
        stalled_n,
        tokens,
        progress: bar(opts.progress, s.clients as u64),
        s,
        hub,
        http,
        started: Instant::now(),
        expectation: Arc::new(Mutex::new(expectation)),
        collector: Arc::default(),
        delivered: Arc::default(),
        procs: Arc::default(),
        stop: watch::Sender::new(false),
    };
    Ok((run, subs))
}

/// The tasks that watch a run from the side.
struct Observers {
    /// Where clients send their latency samples.
    samples: mpsc::UnboundedSender<Vec<Sample>>,
    /// Merges samples until every client is gone.
    collecting: JoinHandle<()>,
    /// Samples the hub's /proc once a second until the run stops.
    sampler: JoinHandle<()>,
    /// The hub before any client connected.
    baseline: Option<ProcSample>,
}

/// Starts collecting latency samples and sampling the hub's memory and CPU once a second.
fn observe(run: &Run) -> Observers {
    let (samples, mut sample_rx) = mpsc::unbounded_channel::<Vec<Sample>>();
    let (collector, delivered) = (run.collector.clone(), run.delivered.clone());
    let collecting = tokio::spawn(async move {
        while let Some(batch) = sample_rx.recv().await {
            delivered.fetch_add(batch.len() as u64, Relaxed);
            collector.lock().add(&batch);
        }
    });
    let (pid, out, started) = (run.hub.pid, run.procs.clone(), run.started);
    let mut stop = run.stop.subscribe();
    let sampler = tokio::spawn(async move {
        let Some(pid) = pid else { return };
        loop {
            if let Some(p) = proc_sample(pid) {
                out.lock().push((started.elapsed().as_secs_f64(), p));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Observers {
        samples,
        collecting,
        sampler,
        baseline: run.hub.sample(),
    }
}

/// Holds the connections open for `hold_seconds` (the idle scenario) and samples the hub then.
async fn hold(run: &Run) -> Option<ProcSample> {
    if run.s.publish.hold_seconds > 0.0 {
        run.progress.set_message("holding connections");
        tokio::time::sleep(Duration::from_secs_f64(run.s.publish.hold_seconds)).await;
    }
    run.hub.sample()
}

/// Waits until every expected delivery arrived, or nothing moved for [`SETTLE`].
async fn settle(run: &Run) {
    run.progress.set_message("settling");
    let expected_total: u64 = run.expectation.lock().expected.iter().sum();
    let mut last = run.delivered.load(Relaxed);
    let mut quiet_since = Instant::now();
    while run.delivered.load(Relaxed) < expected_total && quiet_since.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = run.delivered.load(Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

/// What the end of a run found.
pub(crate) struct Finished {
    /// Each client's outcome, in client order.
    outcomes: Vec<ClientOutcome>,
    /// The hub's drops per client id.
    drops_by_client: HashMap<String, u64>,
    /// `ws_events_dropped_total` at the end.
    drops_total: Option<f64>,
    /// The hub at the end.
    sample: Option<ProcSample>,
    /// The baseline taken before clients connected.
    baseline: Option<ProcSample>,
}

/// Reads the hub's drops, stops the clients and the observers, and gathers what they saw.
async fn finish(run: &Run, tasks: Vec<JoinHandle<ClientOutcome>>, obs: Observers) -> Finished {
    let drops_by_client = if run.s.generic.is_some() {
        HashMap::new()
    } else {
        run.hub.drops_by_client(&run.http).await
    };
    let drops_total = run.hub.metric(&run.http, "ws_events_dropped_total").await;
    run.stop.send_replace(true);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or_default());
    }
    drop(obs.samples);
    let _ = obs.collecting.await;
    let _ = obs.sampler.await;
    run.progress.finish_and_clear();
    Finished {
        outcomes,
        drops_by_client,
        drops_total,
        sample: run.hub.sample(),
        baseline: obs.baseline,
    }
}

/// Starts or attaches to the server the scenario names.
fn open_target(s: &Scenario, opts: &RunOptions) -> anyhow::Result<Hub> {
    if let Some(g) = &s.generic {
        let (addr, _, _) = parse_ws_url(&g.url)?;
        return Ok(Hub::attach(addr, format!("http://{addr}"), s.target.pid));
    }
    if s.target.start {
        return Hub::start(&opts.hub_bin, &s.target, opts.flamegraph.is_some());
    }
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
