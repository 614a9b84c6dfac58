//! NATS regions: two regions, each its own `nats-server` (a JetStream domain) joined by a
//! leafnode, each mirroring the other's stream, with a hub in each.
//!
//! - Failover: region a's hub stops mid-stream; its clients reconnect to region b's hub and
//!   resume from their positions (the last `origin_seq` of each origin region): every event
//!   once, each origin's in order. Then the same with region a's NATS lost too: what b had
//!   mirrored is resumed at once, the rest is told (`ORIGIN_UNREACHABLE`) and arrives, in order,
//!   once a is back.
//! - Partition: the leafnode link cut for 30 s by a proxy of the test's own, then healed: no
//!   loss, no duplicate, mirror lag back to 0; then 40 ms added one way, and the cross-region
//!   delivery latency measured.

mod common;

use common::*;
use loadtest::fixtures::metric_sum;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A GPU update with id `id` on cluster `c1` or `c2` (by `i`), sent at `sent_ms` (ms since the
/// test's start).
fn gpu(id: &str, i: usize, sent_ms: u128) -> Value {
    json!({"event_type": "GPU_UPDATE", "event_id": id, "cluster_id": format!("c{}", 1 + i % 2),
           "payload": {"node_name": format!("node-{id}"), "sent_ms": sent_ms as u64}})
}

/// A dashboard's client that fails over: what it received and where it stands.
struct Tracked {
    /// The connection (`None` once it ended).
    ws: Option<Ws>,
    /// Its cluster filter.
    clusters: Vec<&'static str>,
    /// Each event received: origin region, origin sequence, id, and the ms since the test's
    /// start when it was sent (its payload's `sent_ms`) and when it arrived.
    got: Vec<(String, u64, String, (u64, u64))>,
    /// The last `origin_seq` seen of each origin region.
    positions: BTreeMap<String, u64>,
    /// `replay_complete` and `notice` messages received.
    notices: Vec<Value>,
}

impl Tracked {
    /// A client of `hub` subscribed to GPU updates of `clusters` (all when empty).
    async fn on(hub: &HubProcess, clusters: &[&'static str]) -> Self {
        let mut t = Tracked {
            ws: None,
            clusters: clusters.to_vec(),
            got: Vec::new(),
            positions: BTreeMap::new(),
            notices: Vec::new(),
        };
        t.subscribe(hub, false).await;
        t
    }

    /// Connects to `hub` and subscribes, resuming from its positions when `resume`.
    async fn subscribe(&mut self, hub: &HubProcess, resume: bool) {
        let mut ws = hub.ws().await;
        let mut msg = json!({"type": "subscribe", "subscription": {
            "event_types": ["GPU_UPDATE"], "cluster_filter": self.clusters}});
        if resume {
            msg["positions"] = json!(self.positions);
        }
        send(&mut ws, &msg).await;
        let r = recv(&mut ws).await;
        assert_eq!(r["type"], "subscribed", "{r}");
        for (region, seq) in r["positions"].as_object().into_iter().flatten() {
            let seq = seq.as_u64().expect("positions are numbers");
            self.positions.entry(region.clone()).or_insert(seq);
        }
        self.ws = Some(ws);
    }

    /// Reads what is there until `quiet` passes with nothing; false once the connection ended.
    async fn read(&mut self, quiet: Duration, start: Instant) -> bool {
        let Some(ws) = self.ws.as_mut() else {
            return false;
        };
        loop {
            match next_seen(ws, quiet).await {
                Seen::Nothing => return true,
                Seen::Json(v) if v["type"] == "event" => {
                    let region = v["origin"].as_str().expect("an origin").to_string();
                    let seq = v["origin_seq"].as_u64().expect("an origin_seq");
                    let id = v["event_id"].as_str().unwrap_or_default().to_string();
                    let p = self.positions.entry(region.clone()).or_insert(0);
                    *p = (*p).max(seq);
                    let sent = v["payload"]["sent_ms"].as_u64().unwrap_or(0);
                    let at = (sent, start.elapsed().as_millis() as u64);
                    self.got.push((region, seq, id, at));
                }
                Seen::Json(v) if v["type"] == "replay_complete" || v["type"] == "notice" => {
                    self.notices.push(v)
                }
                Seen::Json(v) => panic!("unexpected {v}"),
                Seen::Closed(_) | Seen::Ended => {
                    self.ws = None;
                    return false;
                }
            }
        }
    }

    /// Reads everything until `end`.
    async fn read_until(&mut self, end: Instant, start: Instant) {
        while Instant::now() < end {
            assert!(
                self.read(Duration::from_millis(50), start).await,
                "connected"
            );
        }
    }

    /// The ids received from `region`, in the order received; asserts their origin sequences
    /// only grow (each once, in the origin's order).
    fn ids_of(&self, region: &str) -> Vec<String> {
        let mine: Vec<_> = self.got.iter().filter(|g| g.0 == region).collect();
        for w in mine.windows(2) {
            assert!(
                w[1].1 > w[0].1,
                "{region}: {} (seq {}) after {} (seq {})",
                w[1].2,
                w[1].1,
                w[0].2,
                w[0].1
            );
        }
        mine.iter().map(|g| g.2.clone()).collect()
    }

    /// Whether an event of cluster `i`'s parity passes this client's filter.
    fn wants(&self, i: usize) -> bool {
        self.clusters.is_empty() || self.clusters.contains(&["c1", "c2"][i % 2])
    }
}

/// Publishes straight into a region's stream, as a platform service of that region would: the
/// event id as `Nats-Msg-Id`, acknowledged by the stream.
struct RegionPublisher {
    /// JetStream of the region's NATS.
    js: async_nats::jetstream::Context,
    /// The region's events subject.
    subject: String,
}

impl RegionPublisher {
    /// A publisher on the region `hub` belongs to (its NATS at `url`).
    async fn to(url: &str, hub: &HubProcess) -> Self {
        let status = hub.get_json("/api/v1/streaming/status").await;
        let subject = status["broker"]["stats"]["subject"]
            .as_str()
            .expect("subject")
            .to_string();
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        RegionPublisher { js, subject }
    }

    /// Whether the stream took `event`.
    async fn publish(&self, event: &Value) -> bool {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            event["event_id"].as_str().unwrap_or_default(),
        );
        let payload = bytes::Bytes::from(event.to_string());
        match self
            .js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    }
}

/// A hub's view of the other region's mirror in `status` (region b's of a, or a's of b).
async fn mirror_of_other(hub: &HubProcess) -> Value {
    let status = hub.get_json("/api/v1/streaming/status").await;
    status["broker"]["stats"]["streams"][1].clone()
}

/// Waits up to `limit` until `check` holds of `hub`'s mirror of the other region.
async fn wait_mirror(hub: &HubProcess, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + limit;
    loop {
        let m = mirror_of_other(hub).await;
        if check(&m) || Instant::now() > end {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The failover: events published in both regions; at `kill_at`, region a's hub is killed
/// (and its NATS with it when `lose_nats`); its clients resume on region b's hub. Returns the
/// clients and the ids each region's stream acknowledged.
async fn failover(lose_nats: bool) -> (Vec<Tracked>, Vec<(usize, String)>, Vec<(usize, String)>) {
    let mut regions = NatsRegions::start_linked(&["a", "b"]).expect("nats-server is installed");
    let mut a = region_hub(&regions, 0, "a", &["b"]);
    let b = region_hub(&regions, 1, "b", &["a"]);
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(20)).await, "ready");
    }
    let to_a = RegionPublisher::to(&regions.url(0), &a).await;
    // One event each way first, until both mirrors have brought it: the mirrors are set up
    // (over the leafnodes) before the test's events start. The clients subscribe after it.
    assert!(to_a.publish(&gpu("wa", 0, 0)).await, "warm-up taken");
    let (code, body) = b.broadcast(&gpu("wb", 0, 0).to_string()).await;
    assert_eq!(code, 202, "{body}");
    for hub in [&a, &b] {
        let m = wait_mirror(hub, Duration::from_secs(30), |m| {
            m["consumed_sequence"] == 1
        })
        .await;
        assert_eq!(m["consumed_sequence"], 1, "a mirror is set up: {m}");
    }
    let mut clients = vec![Tracked::on(&a, &[]).await, Tracked::on(&a, &["c1"]).await];
    let start = Instant::now();
    let (mut acked_a, mut acked_b) = (Vec::new(), Vec::new());
    let (n, kill_at) = (240, 80);
    for i in 0..n {
        if lose_nats && i == kill_at - 10 {
            // The last ten of region a's events before it is lost never reach region b: its
            // clients get them from a's hub, ahead of b's mirror.
            regions.link(1).expect("a linked region").cut(true);
        }
        let id = format!("a{i}");
        if !(lose_nats && i >= kill_at) {
            assert!(to_a.publish(&gpu(&id, i, 0)).await, "{id} taken");
            acked_a.push((i, id));
        }
        if i % 2 == 0 {
            let id = format!("b{i}");
            let (code, body) = b.broadcast(&gpu(&id, i, 0).to_string()).await;
            assert_eq!(code, 202, "{body}");
            acked_b.push((i, id));
        }
        if i == kill_at {
            let _ = a.child.kill();
            if lose_nats {
                regions.kill(0);
                let m = wait_mirror(&b, Duration::from_secs(10), |m| {
                    m["origin_reachable"] == false
                })
                .await;
                assert_eq!(m["origin_reachable"], false, "{m}");
            }
        }
        for c in clients.iter_mut() {
            if !c.read(Duration::from_millis(3), start).await && i >= kill_at {
                c.subscribe(&b, true).await;
            }
        }
    }
    if lose_nats {
        // Region a comes back with its store: the mirror catches up from where it stopped.
        tokio::time::sleep(Duration::from_secs(2)).await;
        regions.restart(0).expect("restart region a's nats-server");
        regions.link(1).expect("a linked region").cut(false);
        // Caught up: region b has handed on every event region a took (and its clients
        // must not get the ones they saw in a again).
        let all = 1 + acked_a.len() as u64;
        let m = wait_mirror(&b, Duration::from_secs(60), |m| {
            m["consumed_sequence"] == all
        })
        .await;
        assert_eq!(m["consumed_sequence"], all, "{m}");
        assert_eq!(m["origin_reachable"], true, "{m}");
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for c in clients.iter_mut() {
            assert!(c.read(Duration::from_millis(300), start).await, "connected");
        }
        let want_a = |c: &Tracked| acked_a.iter().filter(|(i, _)| c.wants(*i)).count();
        let done = clients
            .iter()
            .all(|c| c.got.iter().filter(|g| g.0 == "a").count() >= want_a(c));
        if done || Instant::now() > end {
            break;
        }
    }
    (clients, acked_a, acked_b)
}

/// Each client has every acknowledged event its filter matches, once, in its origin's order,
/// and resumed once, recovered.
fn assert_complete(clients: &[Tracked], acked_a: &[(usize, String)], acked_b: &[(usize, String)]) {
    for (k, c) in clients.iter().enumerate() {
        let resumes: Vec<_> = c
            .notices
            .iter()
            .filter(|n| n["type"] == "replay_complete")
            .collect();
        assert_eq!(resumes.len(), 1, "client {k}: one resume");
        assert_eq!(resumes[0]["recovered"], true, "{}", resumes[0]);
        for (region, acked) in [("a", acked_a), ("b", acked_b)] {
            let want: Vec<String> = acked
                .iter()
                .filter(|(i, _)| c.wants(*i))
                .map(|(_, id)| id.clone())
                .collect();
            assert_eq!(
                c.ids_of(region),
                want,
                "client {k}: region {region}'s events, once, in order"
            );
        }
    }
}

#[tokio::test]
async fn clients_of_a_stopped_region_resume_in_another_with_no_gap_and_no_duplicate() {
    let (clients, acked_a, acked_b) = failover(false).await;
    assert_complete(&clients, &acked_a, &acked_b);
    for c in &clients {
        assert!(!c.notices.iter().any(|n| n["type"] == "notice"));
    }
}

#[tokio::test]
async fn a_lost_region_s_unmirrored_tail_is_told_and_arrives_when_it_is_back() {
    let (clients, acked_a, acked_b) = failover(true).await;
    assert_complete(&clients, &acked_a, &acked_b);
    for c in &clients {
        let notice = c
            .notices
            .iter()
            .find(|n| n["code"] == "ORIGIN_UNREACHABLE")
            .expect("told that region a cannot be reached");
        assert_eq!(notice["region"], "a", "{notice}");
        // Region b held a's events up to the cut (the warm-up and all but the last ten).
        let mirrored = notice["mirrored_upto"].as_u64().expect("mirrored_upto");
        assert_eq!(mirrored as usize, 1 + acked_a.len() - 10, "{notice}");
        // The client saw those ten in region a: region b skips them when they come.
        assert!(c.positions["a"] > mirrored, "{:?}", c.positions);
        println!("{notice}");
    }
}

/// The `q`-quantile of `v` (sorted here), in ms.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Publishes `n` events in region a (through its hub, every `every`), ids `{prefix}{i}`, each
/// carrying when it was sent.
async fn publish_paced(a: &HubProcess, prefix: &str, n: usize, every: Duration, start: Instant) {
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let (code, body) = a
            .broadcast(&gpu(&id, i, start.elapsed().as_millis()).to_string())
            .await;
        assert_eq!(code, 202, "{body}");
        tokio::time::sleep(every).await;
    }
}

/// How long each event with an id starting with `prefix` took from being sent to reaching
/// `c`, in ms.
fn latencies(c: &Tracked, prefix: &str) -> Vec<f64> {
    c.got
        .iter()
        .filter(|g| g.2.starts_with(prefix))
        .map(|g| g.3 .1.saturating_sub(g.3 .0) as f64)
        .collect()
}

#[tokio::test]
async fn a_30_s_partition_loses_and_repeats_nothing_and_delay_is_measured() {
    let regions = NatsRegions::start_linked(&["a", "b"]).expect("nats-server is installed");
    let link = regions.link(1).expect("a linked region");
    let a = region_hub(&regions, 0, "a", &["b"]);
    let b = region_hub(&regions, 1, "b", &["a"]);
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(20)).await, "ready");
    }
    let start = Instant::now();
    let mut on_b = Tracked::on(&b, &[]).await;
    // 30 s cut while region a publishes (10 events a second); its hub takes every one.
    link.cut(true);
    let cut_at = Instant::now();
    let publishing = publish_paced(&a, "p", 300, Duration::from_millis(100), start);
    let watching = async {
        let m = wait_mirror(&b, Duration::from_secs(10), |m| {
            m["origin_reachable"] == false
        })
        .await;
        assert_eq!(m["origin_reachable"], false, "a cut link is seen: {m}");
    };
    tokio::join!(publishing, watching);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed())).await;
    assert!(on_b.read(Duration::from_millis(200), start).await);
    let held = 300 - on_b.got.len();
    assert!(held > 0, "the link was cut");
    link.cut(false);
    let healed = Instant::now();
    let m = wait_mirror(&b, Duration::from_secs(60), |m| {
        m["consumed_sequence"] == 300
    })
    .await;
    let caught_up = healed.elapsed();
    assert!(on_b.read(Duration::from_millis(500), start).await);
    assert_eq!(
        on_b.ids_of("a"),
        (0..300).map(|i| format!("p{i}")).collect::<Vec<_>>()
    );
    assert_eq!(m["origin_reachable"], true, "{m}");
    let metrics = b.metrics_text().await;
    assert_eq!(
        metric_sum(&metrics, "streamhub_nats_mirror_lag"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "streamhub_nats_consumer_lag"),
        Some(0.0)
    );
    assert_eq!(
        metric_sum(&metrics, "streamhub_nats_origin_reachable"),
        Some(1.0)
    );
    println!(
        "partition: 30 s cut, {} events held; region b caught up {:.1} s after the heal",
        held,
        caught_up.as_secs_f64()
    );

    // Cross-region delivery: without and with 40 ms added one way (region a to b).
    let mut on_a = Tracked::on(&a, &[]).await;
    for (prefix, delay) in [("q", 0u64), ("r", 40)] {
        link.delay(Duration::from_millis(delay));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Both regions' clients read while region a publishes (a reader late by a wait would
        // add it to the latency).
        let end = Instant::now() + Duration::from_secs(6);
        tokio::join!(
            publish_paced(&a, prefix, 200, Duration::from_millis(20), start),
            on_a.read_until(end, start),
            on_b.read_until(end, start),
        );
        let (mut local, mut remote) = (latencies(&on_a, prefix), latencies(&on_b, prefix));
        assert_eq!(
            (local.len(), remote.len()),
            (200, 200),
            "each event once in each region"
        );
        let (p50, p99) = (quantile(&mut remote, 0.5), quantile(&mut remote, 0.99));
        println!(
            "{delay} ms added one way: region b (mirrored) p50 {p50:.0} ms, p99 {p99:.0} ms; \
             region a (its own) p50 {:.0} ms, p99 {:.0} ms",
            quantile(&mut local, 0.5),
            quantile(&mut local, 0.99)
        );
        if delay > 0 {
            assert!(
                p50 >= delay as f64,
                "the delay is on the link: p50 {p50} ms"
            );
        }
    }
}
