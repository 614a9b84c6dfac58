//! The publish phase: step by step, publishers send events at the step's rate (over HTTP, to
//! one Redis or to a Redis Cluster, through `streamhub-wire`'s channel definitions), each step
//! is judged from the latency samples of its seconds, and stepping up stops at the scenario's
//! limits. A flamegraph of the hub may be taken meanwhile.

use super::Run;
use crate::client;
use crate::fixtures::proc_sample;
use crate::report::StepResult;
use crate::scenario::Via;
use crate::stats;
use crate::workload::{self, EventAttrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamhub_wire::Channels;
use tokio::task::JoinHandle;

/// A flamegraph being taken.
pub(super) type Profile = Option<JoinHandle<anyhow::Result<Vec<u8>>>>;

/// What the publish phase produced.
pub(super) struct Published {
    /// What it measured.
    pub(super) figures: PublishFigures,
    /// The flamegraph being taken over it, if asked for.
    pub(super) profile: Profile,
}

/// What the publish phase measured.
pub(super) struct PublishFigures {
    /// Each step run.
    pub(super) steps: Vec<StepResult>,
    /// Hub CPU time per delivery over all steps, in microseconds.
    pub(super) cpu_us_per_delivery: Option<f64>,
}

/// Runs the scenario's steps until they are done or one passes a limit.
pub(super) async fn steps(run: &Run, opts: &super::RunOptions) -> anyhow::Result<Published> {
    let s = &run.s;
    let profile = start_profile(run, opts.flamegraph.is_some());
    run.progress.set_length(s.publish.rates.len().max(1) as u64);
    run.progress.set_position(0);
    let mut drops_before = run.hub.metric(&run.http, "ws_events_dropped_total").await;
    let (cpu_before, delivered_before) = (run.hub.sample(), run.delivered.load(Relaxed));
    let seqs: Arc<Vec<AtomicU64>> = Arc::new(
        (0..s.publish.publishers)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let mut results = Vec::new();
    for (k, rate) in s.publish.rates.iter().enumerate() {
        let n = s.publish.rates.len();
        run.progress
            .set_message(format!("step {}/{n}: {rate} events/s", k + 1));
        let (step, drops_after) = step(run, *rate, &seqs, drops_before.unwrap_or(0.0)).await?;
        drops_before = drops_after.or(drops_before);
        run.progress.inc(1);
        let stop = past_limits(run, &step);
        results.push(step);
        if stop {
            break;
        }
    }
    let (cpu_after, delivered_after) = (run.hub.sample(), run.delivered.load(Relaxed));
    let cpu_us_per_delivery = cpu_per_delivery(
        cpu_before.zip(cpu_after),
        delivered_after.saturating_sub(delivered_before),
    );
    Ok(Published {
        figures: PublishFigures {
            steps: results,
            cpu_us_per_delivery,
        },
        profile,
    })
}

/// Microseconds of a process's CPU per delivery between two `/proc` samples.
fn cpu_per_delivery(
    samples: Option<(crate::fixtures::ProcSample, crate::fixtures::ProcSample)>,
    deliveries: u64,
) -> Option<f64> {
    let (a, b) = samples?;
    (deliveries > 0).then(|| 1e6 * (b.cpu_seconds - a.cpu_seconds) / deliveries as f64)
}

/// Starts a flamegraph over the whole publishing phase when asked for.
fn start_profile(run: &Run, wanted: bool) -> Profile {
    let seconds = run.s.publish.rates.len() as f64 * run.s.publish.step_seconds;
    (wanted && seconds > 0.0).then(|| {
        let (http, base) = (run.http.clone(), run.hub.http.clone());
        let token = run.hub.operator.clone();
        tokio::spawn(crate::hub::fetch_flamegraph(http, base, seconds, token))
    })
}

/// Writes the flamegraph to `path` once taken; returns where it went.
pub(super) async fn save_flamegraph(
    profile: Profile,
    path: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    let (Some(p), Some(path)) = (profile, path) else {
        return Ok(None);
    };
    let svg = match p.await {
        Ok(Ok(svg)) => svg,
        Ok(Err(e)) => {
            eprintln!("flamegraph: {e}");
            return Ok(None);
        }
        Err(e) => {
            eprintln!("flamegraph: {e}");
            return Ok(None);
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)?;
    Ok(Some(path.display().to_string()))
}

/// Runs one step at `rate` and judges it; returns it and the hub's drop count after it.
async fn step(
    run: &Run,
    rate: f64,
    seqs: &Arc<Vec<AtomicU64>>,
    drops_before: f64,
) -> anyhow::Result<(StepResult, Option<f64>)> {
    let from = run.started.elapsed().as_secs_f64().ceil() as usize;
    let (cpu_before, delivered_before) = (run.hub.sample(), run.delivered.load(Relaxed));
    let harness_before = proc_sample(std::process::id());
    let t0 = Instant::now();
    let sent = publish_at(run, rate, seqs).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let to = run.started.elapsed().as_secs_f64().floor() as usize;
    // Let the step's last events land before judging it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cpu_after, delivered_after) = (run.hub.sample(), run.delivered.load(Relaxed));
    let harness_after = proc_sample(std::process::id());
    let deliveries = delivered_after.saturating_sub(delivered_before);
    let drops_after = run.hub.metric(&run.http, "ws_events_dropped_total").await;
    let window = run.collector.lock().window(from, to.max(from + 1));
    let latency = stats::percentiles(&window);
    let secs = (to.max(from + 1) - from) as f64;
    let step = StepResult {
        target_events_per_second: rate,
        achieved_events_per_second: sent as f64 / elapsed,
        events: sent,
        deliveries_per_second: latency.count as f64 / secs,
        latency,
        hub_drops: (drops_after.unwrap_or(drops_before) - drops_before).max(0.0) as u64,
        cpu_us_per_delivery: cpu_per_delivery(cpu_before.zip(cpu_after), deliveries),
        harness_cpu_us_per_delivery: cpu_per_delivery(
            harness_before.zip(harness_after),
            deliveries,
        ),
    };
    Ok((step, drops_after))
}

/// Whether stepping up must stop after `step`: too slow, dropping, or the publishers could not
/// reach the rate.
fn past_limits(run: &Run, step: &StepResult) -> bool {
    let p = &run.s.publish;
    let too_slow = p
        .stop_when_p99_ms
        .is_some_and(|limit| step.latency.p99_ms > limit);
    let dropping = p.stop_on_drops && step.hub_drops > 0;
    let saturated = step.achieved_events_per_second < 0.9 * step.target_events_per_second;
    too_slow || dropping || saturated
}

/// Where a publisher sends events.
#[derive(Clone)]
enum Sink {
    /// The hub's broadcast endpoint (or the generic target's URL), with a bearer token when the
    /// hub checks them, and how many events one request may carry (`publish.max_batch`).
    Http {
        /// The client.
        http: reqwest::Client,
        /// Where to post.
        url: String,
        /// Bearer token.
        token: Option<String>,
        /// Most events per request (more than one: a JSON array).
        max_batch: u64,
        /// A Pusher-protocol target: each event is wrapped and the request signed.
        pusher: Option<Arc<crate::pusher::Pusher>>,
    },
    /// `PUBLISH` on `{prefix}:all` of one Redis.
    Redis(redis::aio::MultiplexedConnection, Channels),
    /// `SPUBLISH` on `{prefix}:all` and `{prefix}:cluster:{id}` of a Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection, Channels),
}

impl Sink {
    /// The sink the scenario's `publish.via` names; `None` for `via: none`.
    async fn open(run: &Run) -> anyhow::Result<Option<Self>> {
        let p = &run.s.publish;
        let channels = || {
            Channels::from_all(&p.channel)
                .ok_or_else(|| anyhow::anyhow!("publish.channel must end in :all"))
        };
        Ok(Some(match p.via {
            Via::None => return Ok(None),
            Via::Http => Sink::Http {
                http: run.http.clone(),
                url: publish_url(run),
                token: run.hub.operator.clone(),
                max_batch: p.max_batch,
                pusher: run
                    .s
                    .generic
                    .as_ref()
                    .and_then(|g| g.pusher.clone())
                    .map(Arc::new),
            },
            Via::Redis => {
                let url = p.redis_url.clone().or_else(|| run.hub.redis_url());
                let url = url.ok_or_else(|| anyhow::anyhow!("no redis to publish to"))?;
                let conn = redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await?;
                Sink::Redis(conn, channels()?)
            }
            Via::RedisCluster => {
                let nodes = run.hub.redis_cluster_urls();
                let nodes =
                    nodes.ok_or_else(|| anyhow::anyhow!("no redis cluster to publish to"))?;
                let client = redis::cluster::ClusterClient::new(nodes)?;
                Sink::Cluster(client.get_async_connection().await?, channels()?)
            }
        }))
    }

    /// How many events one request may carry.
    fn max_batch(&self) -> u64 {
        match self {
            Sink::Http { max_batch, .. } => *max_batch,
            _ => 1,
        }
    }

    /// Sends events (body, cluster); returns which were taken.
    async fn send(&mut self, events: &[(String, String)]) -> Vec<bool> {
        let mut taken = Vec::with_capacity(events.len());
        match self {
            Sink::Http {
                http,
                url,
                token,
                pusher,
                ..
            } => {
                let Some(pusher) = pusher else {
                    return post(http, url, token.as_deref(), events).await;
                };
                for (body, _) in events {
                    taken.push(post_pusher(http, url, pusher, body).await);
                }
            }
            Sink::Redis(conn, channels) => {
                for (body, _) in events {
                    let r = streamhub_wire::publish(conn, channels, body.as_bytes()).await;
                    taken.push(r.is_ok());
                }
            }
            Sink::Cluster(conn, channels) => {
                for (body, cluster) in events {
                    let r = streamhub_wire::spublish(
                        conn,
                        channels,
                        None,
                        Some(cluster),
                        body.as_bytes(),
                    );
                    taken.push(r.await.is_ok());
                }
            }
        }
        taken
    }
}

/// Posts one event, or several as one JSON array (the answer says which were taken).
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    events: &[(String, String)],
) -> Vec<bool> {
    let body = match events {
        [(one, _)] => one.clone(),
        many => {
            let bodies: Vec<&str> = many.iter().map(|(b, _)| b.as_str()).collect();
            format!("[{}]", bodies.join(","))
        }
    };
    let mut req = http.post(url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let ok = |r: &reqwest::Response| r.status().is_success();
    let Ok(resp) = req.send().await else {
        return vec![false; events.len()];
    };
    if events.len() == 1 || !ok(&resp) {
        return vec![ok(&resp); events.len()];
    }
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    (0..events.len())
        .map(|i| answer["results"][i]["event_id"].is_string())
        .collect()
}

/// Posts one event to a Pusher-protocol server's events API; whether it was taken.
async fn post_pusher(
    http: &reqwest::Client,
    url: &str,
    pusher: &crate::pusher::Pusher,
    body: &str,
) -> bool {
    let Ok((url, json)) = pusher.request(url, body) else {
        return false;
    };
    let req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json);
    req.send().await.is_ok_and(|r| r.status().is_success())
}

/// Where HTTP publishers post.
fn publish_url(run: &Run) -> String {
    match &run.s.generic {
        Some(g) => g.publish_url.clone(),
        None => format!("{}/api/v1/streaming/broadcast", run.hub.http),
    }
}

/// Publishes at `rate` events/s for the step's duration; returns how many were sent.
async fn publish_at(run: &Run, rate: f64, seqs: &Arc<Vec<AtomicU64>>) -> anyhow::Result<u64> {
    let p = &run.s.publish;
    let Some(sink) = Sink::open(run).await? else {
        tokio::time::sleep(Duration::from_secs_f64(p.step_seconds)).await;
        return Ok(0);
    };
    let per_publisher = rate / p.publishers as f64;
    let total = (p.step_seconds * per_publisher).round() as u64;
    let handles: Vec<_> = (0..p.publishers)
        .map(|k| {
            let publisher = Publisher {
                id: k,
                sink: sink.clone(),
                template: run.s.generic.as_ref().map(|g| g.body_template.clone()),
                pad: "x".repeat(p.payload_bytes),
                plan: run.s.subscriptions.clone(),
                expectation: run.expectation.clone(),
                seqs: seqs.clone(),
            };
            tokio::spawn(publisher.run(total, per_publisher))
        })
        .collect();
    let mut sent = 0;
    for h in handles {
        sent += h.await.unwrap_or(0);
    }
    Ok(sent)
}

/// One publishing connection.
struct Publisher {
    /// Its number (written into each event as `publisher`).
    id: usize,
    /// Where it sends.
    sink: Sink,
    /// The generic target's body template, if any.
    template: Option<String>,
    /// Payload padding.
    pad: String,
    /// How events are spread over types, clusters and namespaces.
    plan: crate::scenario::SubscriptionPlan,
    /// Who must receive what; updated for every event sent.
    expectation: Arc<parking_lot::Mutex<workload::Expectation>>,
    /// Each publisher's last sequence number, across steps.
    seqs: Arc<Vec<AtomicU64>>,
}

impl Publisher {
    /// Sends `total` events at `rate` per second (stopping 5 s past the schedule); returns how
    /// many were taken. With `publish.max_batch` above 1, every event already due goes in the
    /// same request (up to that many): at low rates that is one event per request, sent on time;
    /// when a request takes longer than the interval, the next one carries the backlog.
    async fn run(mut self, total: u64, rate: f64) -> u64 {
        let mut rng =
            fastrand::Rng::with_seed(1000 + self.id as u64 + self.seqs[self.id].load(Relaxed));
        let start = tokio::time::Instant::now();
        let at = |k: u64| start + Duration::from_secs_f64(k as f64 / rate);
        let deadline = start + Duration::from_secs_f64(total as f64 / rate + 5.0);
        let (mut sent, mut k) = (0u64, 0u64);
        while k < total {
            if at(k) > tokio::time::Instant::now() {
                tokio::time::sleep_until(at(k)).await;
            }
            let now = tokio::time::Instant::now();
            if now > deadline {
                break; // the server cannot keep up; stop this step
            }
            let mut n = 1;
            while k + n < total && n < self.sink.max_batch() && at(k + n) <= now {
                n += 1;
            }
            let attrs: Vec<EventAttrs> = (0..n)
                .map(|_| workload::next_event(&self.plan, &mut rng))
                .collect();
            sent += self.send(&attrs).await;
            k += n;
        }
        sent
    }

    /// Builds and sends events; records who must receive each one taken; returns how many were.
    async fn send(&mut self, attrs: &[EventAttrs]) -> u64 {
        let events: Vec<(String, String)> = attrs
            .iter()
            .map(|a| (self.body(a), workload::cluster_name(a.cluster)))
            .collect();
        let taken = self.sink.send(&events).await;
        let mut e = self.expectation.lock();
        let mut n = 0;
        for (a, ok) in attrs.iter().zip(taken) {
            if !ok {
                continue;
            }
            n += 1;
            match &self.template {
                Some(_) => e.expected.iter_mut().for_each(|x| *x += 1),
                None => e.publish(a),
            }
        }
        n
    }

    /// One event's body, with its sequence number and send time.
    fn body(&self, attrs: &EventAttrs) -> String {
        let seq = self.seqs[self.id].fetch_add(1, Relaxed) + 1;
        let sent_ns = client::now_ns();
        match &self.template {
            Some(t) => t
                .replace("{seq}", &seq.to_string())
                .replace("{sent_ns}", &sent_ns.to_string())
                .replace("{publisher}", &self.id.to_string())
                .replace("{pad}", &self.pad),
            None => workload::event_body(attrs, self.id, seq, sent_ns, &self.pad),
        }
    }
}
