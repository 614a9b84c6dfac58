//! NATS mode: hub processes on real `nats-server` processes with JetStream (one server, or a
//! three-node cluster with an R3 stream): every instance delivers each event once; the stream is
//! the history, so a resume recovers on an instance started after the events; a NATS outage
//! answers 503 and heals; a lost node of three loses nothing and disconnects no client.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A hub in NATS mode on `nats` (region `r1`) with `extra` lines under `nats:`.
fn nats_hub(nats: &NatsCluster, instance: &str, extra: &str) -> HubProcess {
    let servers: Vec<String> = nats.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let hub = HubProcess::start(&format!(
        "  nats:\n    servers: [{}]\n    region: r1\n{extra}  scaling:\n    instance_id: {instance}\n",
        servers.join(", ")
    ));
    assert!(hub.banner.ends_with(", mode nats"), "{}", hub.banner);
    hub
}

/// A GPU update with id `id`.
fn gpu(id: &str) -> Value {
    json!({"event_type": "GPU_UPDATE", "event_id": id, "cluster_id": "c1",
           "payload": {"node_name": format!("node-{id}")}})
}

/// Event ids until `d` passes with nothing new (anything else than events fails the test,
/// a close included).
async fn ids_until_quiet(ws: &mut Ws, d: Duration) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match next_seen(ws, d).await {
            Seen::Json(v) if v["type"] == "event" => {
                got.push(v["event_id"].as_str().unwrap_or_default().to_string())
            }
            Seen::Nothing => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn every_instance_delivers_once_and_a_restarted_one_resumes_from_the_stream() {
    let mut nats = NatsCluster::single().expect("nats-server is installed (see .ci/run)");
    let a = nats_hub(&nats, "a", "");
    let b = nats_hub(&nats, "b", "");
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(15)).await, "ready");
    }
    let (mut on_a, mut on_b) = (a.ws().await, b.ws().await);
    for ws in [&mut on_a, &mut on_b] {
        subscribe(ws, &["GPU_UPDATE"], &[], &[]).await;
    }
    // A repeated id within the duplicate window is stored, and delivered, once.
    let mut batch: Vec<Value> = ids("n", 0..5).iter().map(|id| gpu(id)).collect();
    batch.push(gpu("n2"));
    let (code, body) = a.broadcast(&Value::Array(batch).to_string()).await;
    assert_eq!(code, 202, "{body}");
    for ws in [&mut on_a, &mut on_b] {
        let got = ids_until_quiet(ws, Duration::from_millis(800)).await;
        assert_eq!(got, ids("n", 0..5), "each event once, in order");
    }

    // An instance started after the events reads them back from the stream: a resume there
    // recovers, and its state holds them.
    let c = nats_hub(&nats, "c", "");
    assert!(c.wait_ready(200, Duration::from_secs(15)).await);
    let mut resumed = c.ws().await;
    send(
        &mut resumed,
        &json!({"type": "subscribe", "resume_from": "n2",
                "subscription": {"event_types": ["GPU_UPDATE"]}}),
    )
    .await;
    let (got, complete) = resumed_events(&mut resumed).await;
    assert_eq!(complete["recovered"], true, "{complete}");
    assert_eq!(got, ["n3", "n4"]);
    let state = c.get_json("/api/v1/streaming/state").await;
    assert_eq!(state["count"], 5, "{state}");
    assert_eq!(state["position"], "n4");

    // NATS down: publishing answers 503 and the instances are not ready; back, both heal and
    // the clients, still connected, get what follows.
    nats.kill(0);
    assert!(a.wait_ready(503, Duration::from_secs(15)).await);
    let (code, _) = a.broadcast(&gpu("lost").to_string()).await;
    assert_eq!(code, 503);
    nats.restart(0).expect("restart nats-server");
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(20)).await, "healed");
    }
    let (code, body) = b.broadcast(&gpu("after").to_string()).await;
    assert_eq!(code, 202, "{body}");
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(
            ids_until_quiet(ws, Duration::from_millis(800)).await,
            ["after"]
        );
    }
}

/// What a resuming client receives until it is quiet: event ids, and the `replay_complete`.
async fn resumed_events(ws: &mut Ws) -> (Vec<String>, Value) {
    let (got, complete) = resumed(ws).await;
    (got, complete.expect("replay_complete"))
}

/// Publishes `id` until the hub takes it (a 503 while the stream elects a new leader is
/// retried with the same id, which the stream stores once), for at most 30 s; how long that took.
async fn publish_until_taken(hub: &HubProcess, id: &str) -> Duration {
    let started = Instant::now();
    let end = started + Duration::from_secs(30);
    loop {
        let (code, body) = hub.broadcast(&gpu(id).to_string()).await;
        if code == 202 {
            return started.elapsed();
        }
        assert!(Instant::now() < end, "{id} never taken: {code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_lost_node_of_three_loses_nothing_and_disconnects_no_client() {
    let mut nats = NatsCluster::three().expect("nats-server is installed (see .ci/run)");
    // Rings that hold the whole run: the clients read only once publishing is over.
    let extra = "    replicas: 3\n  backpressure:\n    max_queue_size: 5000\n";
    let a = nats_hub(&nats, "a", extra);
    let b = nats_hub(&nats, "b", extra);
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(20)).await, "ready");
    }
    let mut clients = Vec::new();
    for h in [&a, &b, &b] {
        let mut ws = h.ws().await;
        subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
        clients.push(ws);
    }
    let want = ids("k", 0..400);
    let mut longest = Duration::ZERO;
    for (i, id) in want.iter().enumerate() {
        if i == 150 {
            nats.kill(0);
        }
        longest = longest.max(publish_until_taken(&a, id).await);
    }
    eprintln!("longest wait for a publish to be taken: {longest:?}");
    for ws in clients.iter_mut() {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while got.len() < want.len() && Instant::now() < end {
            got.extend(ids_until_quiet(ws, Duration::from_millis(500)).await);
        }
        got.extend(ids_until_quiet(ws, Duration::from_millis(300)).await);
        assert_eq!(got.len(), want.len(), "missing or repeated");
        assert_eq!(got, want, "every event once, in order");
        send(ws, &json!({"type": "ping"})).await;
        assert_eq!(recv(ws).await["type"], "pong", "still connected");
    }
}

/// Two regions, each its own NATS (a JetStream domain) joined by a leafnode: each region's hub
/// delivers what was published in the other, in the origin's order, once.
#[tokio::test]
async fn each_region_delivers_what_the_other_published() {
    let regions = NatsRegions::start(&["a", "b"]).expect("nats-server is installed (see .ci/run)");
    let a = region_hub(&regions, 0, "a", &["b"]);
    let b = region_hub(&regions, 1, "b", &["a"]);
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(20)).await, "ready");
    }
    let (mut on_a, mut on_b) = (a.ws().await, b.ws().await);
    for ws in [&mut on_a, &mut on_b] {
        subscribe(ws, &["GPU_UPDATE"], &[], &[]).await;
    }
    let from_a: Vec<Value> = ids("a", 0..20).iter().map(|id| gpu(id)).collect();
    let (code, body) = a.broadcast(&Value::Array(from_a).to_string()).await;
    assert_eq!(code, 202, "{body}");
    let from_b: Vec<Value> = ids("b", 0..20).iter().map(|id| gpu(id)).collect();
    let (code, body) = b.broadcast(&Value::Array(from_b).to_string()).await;
    assert_eq!(code, 202, "{body}");
    for ws in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while got.len() < 40 && Instant::now() < end {
            got.extend(ids_until_quiet(ws, Duration::from_millis(500)).await);
        }
        let of = |p: &str| {
            got.iter()
                .filter(|id| id.starts_with(p))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            of("a"),
            ids("a", 0..20),
            "region a's events once, in its order"
        );
        assert_eq!(
            of("b"),
            ids("b", 0..20),
            "region b's events once, in its order"
        );
    }
    // Where a client subscribing now stands, and the state's position, per origin region.
    let mut late = b.ws().await;
    let subscribed = subscribe(&mut late, &["GPU_UPDATE"], &[], &[]).await;
    assert_eq!(
        subscribed["positions"],
        json!({"a": 20, "b": 20}),
        "{subscribed}"
    );
    let state = b.get_json("/api/v1/streaming/state").await;
    assert_eq!(state["positions"], json!({"a": 20, "b": 20}));
    let status = b.get_json("/api/v1/streaming/status").await;
    let streams = &status["broker"]["stats"]["streams"];
    assert_eq!(streams[1]["stream"], "STREAMHUB_A", "{status}");
    assert_eq!(streams[1]["consumed_sequence"], 20, "{status}");
}
