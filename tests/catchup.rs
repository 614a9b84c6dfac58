//! Reconnect without loss (`resume_from`) and state on subscribe (`snapshot`), against real hub
//! processes (embedded, and classic Redis with a real `redis-server`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A subscribe message for `GPU_UPDATE` with `extra` fields beside the subscription.
fn gpu_subscribe(clusters: &[&str], extra: Value) -> Value {
    let mut m = json!({"type": "subscribe", "subscription": {
        "event_types": ["GPU_UPDATE"], "cluster_filter": clusters}});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

/// Publishes `GPU_UPDATE` events with the given ids (cluster `c1` unless the id says `c2`).
async fn publish(hub: &HubProcess, ids: &[String]) {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| {
            let cluster = if id.contains("c2") { "c2" } else { "c1" };
            json!({"event_type": "GPU_UPDATE", "event_id": id, "cluster_id": cluster,
                   "payload": {"node": id}})
        })
        .collect();
    let (code, body) = hub.broadcast(&Value::Array(batch).to_string()).await;
    assert_eq!(code, 202, "{body}");
}

/// Messages until `d` passes with nothing new.
async fn until_quiet(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Seen::Json(v) = next_seen(ws, d).await {
        seen.push(v);
    }
    seen
}

/// The ids of the events among `msgs`.
fn event_ids(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn a_client_resumes_where_it_left_off() {
    let hub = HubProcess::start("");
    let mut first = hub.ws().await;
    subscribe(&mut first, &["GPU_UPDATE"], &["c1"], &[]).await;
    publish(&hub, &ids("e", 1..6)).await;
    let got = until_quiet(&mut first, Duration::from_millis(300)).await;
    assert_eq!(event_ids(&got), ids("e", 1..6));
    drop(first);
    // Missed while away: two of its cluster, one of another it never asked for.
    publish(&hub, &["e6".into(), "e7-c2".into(), "e8".into()]).await;

    let mut again = hub.ws().await;
    send(
        &mut again,
        &gpu_subscribe(&["c1"], json!({"resume_from": "e5"})),
    )
    .await;
    assert_eq!(recv(&mut again).await["type"], "subscribed");
    assert_eq!(recv(&mut again).await["event_id"], "e6");
    assert_eq!(recv(&mut again).await["event_id"], "e8");
    let done = recv(&mut again).await;
    assert_eq!(
        done,
        json!({"type": "replay_complete", "recovered": true, "replayed": 2})
    );
    publish(&hub, &["e9".into()]).await;
    let live = until_quiet(&mut again, Duration::from_millis(300)).await;
    assert_eq!(event_ids(&live), ["e9"], "live after the replay, once");

    // An id the hub never saw (or forgot): nothing replayed, the client knows to reload.
    let mut lost = hub.ws().await;
    send(
        &mut lost,
        &gpu_subscribe(&["c1"], json!({"resume_from": "nope"})),
    )
    .await;
    assert_eq!(recv(&mut lost).await["type"], "subscribed");
    assert_eq!(
        recv(&mut lost).await,
        json!({"type": "replay_complete", "recovered": false, "replayed": 0})
    );
    // A bad resume_from is refused like any bad subscription.
    send(
        &mut lost,
        &gpu_subscribe(&["c2"], json!({"resume_from": 5})),
    )
    .await;
    assert_eq!(recv(&mut lost).await["code"], "INVALID_SUBSCRIPTION");
}

/// Events keep flowing while a client resumes: it gets every one after its id exactly once, in
/// order, whether it came from the history or live.
#[tokio::test]
async fn no_gap_and_no_duplicate_at_the_seam() {
    // A ring big enough for what arrives during the replay: this test is about the seam, not
    // about a slow client (whose drops a QUEUE_FULL notice would report).
    let hub = HubProcess::start(
        "  websocket:\n    write_coalesce_ms: 0\n  backpressure:\n    max_queue_size: 20000\n",
    );
    publish(&hub, &ids("s", 0..200)).await;
    let publisher = {
        let url = hub.url("/api/v1/streaming/broadcast");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for b in 1..40 {
                let batch: Vec<Value> = (b * 200..b * 200 + 200)
                    .map(|i| {
                        json!({"event_type": "GPU_UPDATE", "event_id": format!("s{i}"),
                                    "cluster_id": "c1"})
                    })
                    .collect();
                let r = http.post(&url).json(&batch).send().await.expect("publish");
                assert_eq!(r.status(), 202);
            }
        })
    };
    let mut ws = hub.ws().await;
    send(&mut ws, &gpu_subscribe(&[], json!({"resume_from": "s99"}))).await;
    publisher.await.expect("publisher");
    let (got, complete) = resumed(&mut ws).await;
    let complete = complete.expect("replay_complete");
    assert_eq!(complete["recovered"], true, "{complete}");
    assert_eq!(
        got,
        ids("s", 100..8000),
        "every event after s99, once, in order"
    );
}

#[tokio::test]
async fn snapshot_sends_the_latest_of_each_key_first() {
    let hub = HubProcess::start("");
    for round in 0..3 {
        let batch: Vec<Value> = [("c1", "n1"), ("c1", "n2"), ("c2", "n1")]
            .iter()
            .map(|(c, n)| {
                json!({"event_type": "GPU_UPDATE", "event_id": format!("{c}-{n}-{round}"),
                       "cluster_id": c, "payload": {"namespace": n, "util": round}})
            })
            .collect();
        let (code, _) = hub.broadcast(&Value::Array(batch).to_string()).await;
        assert_eq!(code, 202);
    }
    let mut ws = hub.ws().await;
    send(&mut ws, &gpu_subscribe(&["c1"], json!({"snapshot": true}))).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let first = recv(&mut ws).await;
    let second = recv(&mut ws).await;
    for (m, id) in [(&first, "c1-n1-2"), (&second, "c1-n2-2")] {
        assert_eq!(m["type"], "event", "{m}");
        assert_eq!(m["snapshot"], true, "marked: {m}");
        assert_eq!(m["event_id"], id, "{m}");
        assert_eq!(m["payload"]["util"], 2, "{m}");
    }
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "snapshot_complete", "events": 2})
    );
    publish(&hub, &["live".into()]).await;
    let m = recv(&mut ws).await;
    assert_eq!(m["event_id"], "live");
    assert!(
        m.get("snapshot").is_none(),
        "live events are not marked: {m}"
    );
}

/// Events larger than the reply queue's byte budget still go out whole in a snapshot, one at a
/// time (the queue is bounded in bytes, README "Limits").
#[tokio::test]
async fn a_snapshot_of_large_events_is_complete() {
    let hub = HubProcess::start("");
    let pad = "x".repeat(200_000);
    for n in ["n1", "n2", "n3"] {
        let body = json!({"event_type": "GPU_UPDATE", "event_id": format!("big-{n}"),
            "cluster_id": "c1", "payload": {"namespace": n, "pad": pad}});
        let (code, _) = hub.broadcast(&body.to_string()).await;
        assert_eq!(code, 202);
    }
    let mut ws = hub.ws().await;
    send(&mut ws, &gpu_subscribe(&["c1"], json!({"snapshot": true}))).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    for n in ["n1", "n2", "n3"] {
        let m = recv(&mut ws).await;
        assert_eq!(m["event_id"], format!("big-{n}"), "{}", m["type"]);
    }
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "snapshot_complete", "events": 3})
    );
}

/// With Redis, every instance keeps the stream, so a client resumes on another instance; an
/// outage of Redis shows as `recovered: false`, never as a silent gap.
#[tokio::test]
async fn resume_on_another_instance_and_across_a_redis_outage() {
    let mut redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let (a, b) = redis_pair(&redis).await;
    let mut on_a = a.ws().await;
    subscribe(&mut on_a, &["GPU_UPDATE"], &[], &[]).await;
    publish(&a, &ids("r", 1..4)).await;
    let got = until_quiet(&mut on_a, Duration::from_millis(300)).await;
    assert_eq!(event_ids(&got), ids("r", 1..4));
    drop(on_a);
    publish(&a, &ids("r", 4..6)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut on_b = b.ws().await;
    send(&mut on_b, &gpu_subscribe(&[], json!({"resume_from": "r3"}))).await;
    let got = until_quiet(&mut on_b, Duration::from_millis(300)).await;
    assert_eq!(event_ids(&got), ["r4", "r5"], "{got:?}");
    assert_eq!(got.last().unwrap()["recovered"], true, "{got:?}");

    redis.kill();
    assert!(b.wait_ready(503, Duration::from_secs(10)).await);
    redis.restart().expect("restart redis-server");
    assert!(b.wait_ready(200, Duration::from_secs(15)).await);
    let mut after = b.ws().await;
    send(
        &mut after,
        &gpu_subscribe(&[], json!({"resume_from": "r5"})),
    )
    .await;
    assert_eq!(recv(&mut after).await["type"], "subscribed");
    assert_eq!(
        recv(&mut after).await,
        json!({"type": "replay_complete", "recovered": false, "replayed": 0}),
        "what was published during the outage is unknown here: never a silent gap"
    );
}
