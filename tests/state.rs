//! The state a dashboard renders (entity keys and removal rules), over `GET /state` and over a
//! `snapshot` on subscribe, in every mode: embedded, classic Redis (read on another instance than
//! the one published to) and Redis Cluster (from the shared stream, on another instance). And
//! the seam a page relies on: state over HTTP, then `resume_from` its position, under
//! concurrent publishing, loses nothing and repeats nothing.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The events of the rules, in publishing order, with the ids the state keeps after them.
fn dashboard_events() -> (Vec<Value>, Vec<&'static str>) {
    let alert = |id: &str, ty: &str, fp: &str| {
        json!({"event_id": id, "event_type": ty, "cluster_id": "c1", "payload": {
            "fingerprint": fp, "severity": "CRITICAL", "labels": {"namespace": "prod"}}})
    };
    let gpu = |id: &str, cluster: &str, node: &str| {
        json!({"event_id": id, "event_type": "GPU_UPDATE", "cluster_id": cluster,
               "payload": {"node_name": node, "gpus": [{"index": 0}]}})
    };
    let metric = |id: &str, labels: Value| {
        json!({"event_id": id, "event_type": "METRIC_UPDATE", "cluster_id": "c1",
               "payload": {"metric_name": "cpu", "labels": labels, "value": 1}})
    };
    let cluster =
        |id: &str, ty: &str, c: &str| json!({"event_id": id, "event_type": ty, "cluster_id": c});
    let events = vec![
        alert("a1", "ALERT_FIRED", "fp1"),
        alert("a2", "ALERT_FIRED", "fp2"),
        alert("a3", "ALERT_FIRED", "fp3"),
        alert("a4", "ALERT_RESOLVED", "fp2"),
        gpu("g1", "c1", "n1"),
        gpu("g2", "c1", "n2"),
        metric("m1", json!({"namespace": "prod", "pod": "a"})),
        metric("m2", json!({"namespace": "prod", "pod": "b"})),
        // The same series as m1, its labels in another order.
        json!({"event_id": "m3", "event_type": "METRIC_UPDATE", "cluster_id": "c1",
               "payload": {"value": 2, "labels": {"pod": "a", "namespace": "prod"}, "metric_name": "cpu"}}),
        cluster("k1", "CLUSTER_STATUS_CHANGED", "c2"),
        gpu("k2", "c2", "n9"),
        cluster("k3", "CLUSTER_DELETED", "c2"),
        cluster("k4", "CLUSTER_STATUS_CHANGED", "c1"),
    ];
    (events, vec!["a1", "a3", "g1", "g2", "m2", "m3", "k4"])
}

/// The ids of a state answer's events.
fn state_ids(state: &Value) -> Vec<String> {
    state["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["event_id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /state` with `query` until it holds `want` ids (the events may still be on their way
/// through the broker), at most ten seconds; the last answer.
async fn state_until(hub: &HubProcess, query: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = hub
            .get_json(&format!("/api/v1/streaming/state{query}"))
            .await;
        if state_ids(&state) == want || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes the rules' events on `publisher`, then checks on `reader` that `GET /state` and a
/// snapshot on subscribe both give the state the rules leave, oldest change first.
async fn the_rules_hold(publisher: &HubProcess, reader: &HubProcess) {
    let (events, want) = dashboard_events();
    let (code, body) = publisher.broadcast(&Value::Array(events).to_string()).await;
    assert_eq!(code, 202, "{body}");
    let state = state_until(reader, "", &want).await;
    assert_eq!(state_ids(&state), want, "{state}");
    assert_eq!(state["count"], want.len());
    assert_eq!(state["position"], "k4", "the last event published");
    assert_eq!(state["events"][0]["type"], "event", "as delivered");
    assert_eq!(state["rules"]["removes"]["ALERT_RESOLVED"], "ALERT_FIRED");
    assert_eq!(
        state["rules"]["entity_keys"]["GPU_UPDATE"],
        json!(["payload.node_name"])
    );
    // Filtered like a subscription: three alerts with one resolved give two; two nodes give two.
    let alerts = reader
        .get_json(
            "/api/v1/streaming/state?event_types=ALERT_FIRED,ALERT_RESOLVED&namespace_filter=prod",
        )
        .await;
    assert_eq!(state_ids(&alerts), ["a1", "a3"], "{alerts}");
    let gpus = reader
        .get_json("/api/v1/streaming/state?event_types=GPU_UPDATE&cluster_filter=c1%2Cc2")
        .await;
    assert_eq!(
        state_ids(&gpus),
        ["g1", "g2"],
        "the deleted cluster's node is gone"
    );

    let mut ws = reader.ws().await;
    send(
        &mut ws,
        &json!({"type": "subscribe", "snapshot": true, "subscription": {"event_types": [
            "ALERT_FIRED", "ALERT_RESOLVED", "GPU_UPDATE", "METRIC_UPDATE",
            "CLUSTER_STATUS_CHANGED", "CLUSTER_DELETED"]}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let mut got = Vec::new();
    loop {
        let m = recv(&mut ws).await;
        if m["type"] == "snapshot_complete" {
            assert_eq!(m["events"], want.len(), "{m}");
            break;
        }
        assert_eq!(m["snapshot"], true, "{m}");
        got.push(m["event_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(got, want, "the snapshot sends what GET /state sends");
}

#[tokio::test]
async fn the_rules_hold_embedded() {
    let hub = HubProcess::start("");
    the_rules_hold(&hub, &hub).await;
    let bad = reqwest::get(hub.url("/api/v1/streaming/state?event_types=NOPE"))
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_rules_hold_with_redis_on_every_instance() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let (a, b) = redis_pair(&redis).await;
    the_rules_hold(&a, &b).await;
    // Each instance keeps its own, by the same rules.
    let (_, want) = dashboard_events();
    assert_eq!(state_ids(&state_until(&a, "", &want).await), want);
}

#[tokio::test]
async fn the_rules_hold_in_redis_cluster_mode_from_the_shared_stream() {
    let cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let hub = |id: &str| {
        let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
        HubProcess::start(&format!(
            "  redis_cluster_nodes: [{}]\n  scaling:\n    instance_id: {id}\n",
            nodes.join(", ")
        ))
    };
    let (a, b) = (hub("s1"), hub("s2"));
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(15)).await, "ready");
    }
    // b has no client and so holds no channel: all it answers comes from the shared stream.
    the_rules_hold(&a, &b).await;
}

/// The entity keys a configuration names replace the defaults of those types only.
#[tokio::test]
async fn configured_entity_keys_replace_the_defaults() {
    let hub = HubProcess::start(
        "  history:\n    entity_keys:\n      GPU_UPDATE: [payload.host.name]\n      ALERT_FIRED: []\n",
    );
    let events = json!([
        {"event_id": "g1", "event_type": "GPU_UPDATE", "cluster_id": "c", "payload": {"host": {"name": "h1"}, "node_name": "x"}},
        {"event_id": "g2", "event_type": "GPU_UPDATE", "cluster_id": "c", "payload": {"host": {"name": "h2"}, "node_name": "x"}},
        {"event_id": "a1", "event_type": "ALERT_FIRED", "cluster_id": "c", "payload": {"fingerprint": "f1"}},
        {"event_id": "a2", "event_type": "ALERT_FIRED", "cluster_id": "c", "payload": {"fingerprint": "f2"}},
    ]);
    let (code, _) = hub.broadcast(&events.to_string()).await;
    assert_eq!(code, 202);
    let state = state_until(&hub, "", &["g1", "g2", "a2"]).await;
    assert_eq!(
        state_ids(&state),
        ["g1", "g2", "a2"],
        "alerts keyed by namespace: one"
    );
    assert_eq!(state["rules"]["entity_keys"]["ALERT_FIRED"], json!([]));
}

/// A token sees the state its grant allows; naming a cluster outside it is refused.
#[tokio::test]
async fn the_state_is_narrowed_to_the_token_grant() {
    let hub = HubProcess::start(SCOPED_AUTH);
    let events = ["c1/prod", "c1/dev", "c2/prod"].map(|w| {
        let (c, ns) = w.split_once('/').unwrap_or_default();
        json!({"event_id": w, "event_type": "ALERT_FIRED", "cluster_id": c,
               "payload": {"fingerprint": w, "labels": {"namespace": ns}}})
    });
    broadcast_as(&hub, "ops", Value::Array(events.to_vec()).to_string()).await;
    let scoped = hub.get_json_as("/api/v1/streaming/state", "c1-prod").await;
    assert_eq!(state_ids(&scoped), ["c1/prod"], "{scoped}");
    let all = hub.get_json_as("/api/v1/streaming/state", "all").await;
    assert_eq!(state_ids(&all).len(), 3, "{all}");
    let http = reqwest::Client::new();
    let outside = http
        .get(hub.url("/api/v1/streaming/state?cluster_filter=c2"))
        .bearer_auth("c1-prod")
        .send()
        .await
        .expect("get");
    assert_eq!(outside.status(), 403);
    let anonymous = http
        .get(hub.url("/api/v1/streaming/state"))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), 401);
}

/// A page reads the state over HTTP while events keep coming, then subscribes with
/// `resume_from` the position it got: every event after the position arrives once, in order,
/// and none at or before it.
#[tokio::test]
async fn state_over_http_then_resume_loses_nothing_under_concurrent_publishing() {
    let hub = HubProcess::start(
        "  websocket:\n    write_coalesce_ms: 0\n  backpressure:\n    max_queue_size: 20000\n",
    );
    let event = |i: usize| {
        json!({"event_type": "GPU_UPDATE", "event_id": format!("s{i}"), "cluster_id": "c1",
               "payload": {"node_name": format!("n{}", i % 50)}})
    };
    let first: Vec<Value> = (0..100).map(event).collect();
    let (code, _) = hub.broadcast(&Value::Array(first).to_string()).await;
    assert_eq!(code, 202);
    let publisher = {
        let url = hub.url("/api/v1/streaming/broadcast");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for b in 1..30 {
                let batch: Vec<Value> = (b * 100..b * 100 + 100).map(event).collect();
                let r = http.post(&url).json(&batch).send().await.expect("publish");
                assert_eq!(r.status(), 202);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let state = hub
        .get_json("/api/v1/streaming/state?event_types=GPU_UPDATE")
        .await;
    let position = state["position"].as_str().expect("a position").to_string();
    let at: usize = position[1..].parse().expect("an id of ours");
    eprintln!("state read at {position}");
    let held = state_ids(&state);
    assert_eq!(held.len(), 50, "one per node: {state}");
    assert!(held
        .iter()
        .all(|id| id[1..].parse::<usize>().unwrap_or(usize::MAX) <= at));
    let mut ws = hub.ws().await;
    send(
        &mut ws,
        &json!({"type": "subscribe", "resume_from": position,
                "subscription": {"event_types": ["GPU_UPDATE"]}}),
    )
    .await;
    publisher.await.expect("publisher");
    let (got, complete) = resumed(&mut ws).await;
    assert_eq!(complete.expect("replay_complete")["recovered"], true);
    let want: Vec<String> = (at + 1..3000).map(|i| format!("s{i}")).collect();
    assert!(
        at < 3000 - 1,
        "the read happened before the last event ({at})"
    );
    assert_eq!(got, want, "every event after the position, once, in order");
}

/// Past `history.snapshot_keys` entities the one changed longest ago goes, counted in `status`
/// and `/metrics`.
#[tokio::test]
async fn a_full_state_lets_the_oldest_entity_go_and_counts_it() {
    let hub = HubProcess::start("  history:\n    snapshot_keys: 2\n");
    let events: Vec<Value> = ["n1", "n2", "n3", "n1"]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            json!({"event_id": format!("g{i}"), "event_type": "GPU_UPDATE", "cluster_id": "c",
                   "payload": {"node_name": node}})
        })
        .collect();
    let (code, _) = hub.broadcast(&Value::Array(events).to_string()).await;
    assert_eq!(code, 202);
    // n1 left for n3, then came back and pushed out n2.
    let state = state_until(&hub, "", &["g2", "g3"]).await;
    assert_eq!(state_ids(&state), ["g2", "g3"], "{state}");
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["history"]["state_evicted"], 2, "{status}");
    assert_eq!(status["history"]["state_entities"], 2, "{status}");
    let text = hub.metrics_text().await;
    assert_eq!(metric(&text, "streamhub_state_evicted_total"), 2.0);
    assert_eq!(metric(&text, "streamhub_state_entities"), 2.0);
}
