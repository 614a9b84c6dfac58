//! Redis Cluster mode: hub processes on a real three-master Redis Cluster, sharded Pub/Sub.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A hub in Redis Cluster mode on `cluster`; its start-up line must say so.
fn cluster_hub(cluster: &RedisCluster, instance: &str) -> HubProcess {
    cluster_hub_with(cluster, instance, "")
}

/// [`cluster_hub`] with `extra` configuration lines.
fn cluster_hub_with(cluster: &RedisCluster, instance: &str, extra: &str) -> HubProcess {
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let hub = HubProcess::start(&format!(
        "  redis_cluster_nodes: [{}]\n  scaling:\n    instance_id: {instance}\n{extra}",
        nodes.join(", ")
    ));
    assert!(
        hub.banner.ends_with(", mode redis-cluster"),
        "{}",
        hub.banner
    );
    hub
}

/// The shard channels a hub says it holds.
async fn held(hub: &HubProcess) -> Vec<String> {
    let status = hub.get_json("/api/v1/streaming/status").await;
    status["broker"]["stats"]["shard_channels"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until the hub holds exactly `want` (sorted) and the cluster's nodes, between them,
/// have subscribers on exactly the channels `all_hubs_want`.
async fn wait_channels(
    cluster: &RedisCluster,
    hub: &HubProcess,
    want: &[&str],
    all_hubs_want: &[&str],
) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut on_nodes: Vec<String> = (0..3)
            .flat_map(|i| cluster.shard_channels(i).expect("PUBSUB SHARDCHANNELS"))
            .collect();
        on_nodes.sort();
        let here = held(hub).await;
        if here == want && on_nodes == all_hubs_want {
            return;
        }
        assert!(
            Instant::now() < end,
            "hub holds {here:?} (want {want:?}); nodes have {on_nodes:?} (want {all_hubs_want:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receives event ids until `d` passes with nothing new.
async fn ids_until_quiet(ws: &mut Ws, d: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(d, futures_util::StreamExt::next(ws)).await {
        if let Ok(text) = msg.to_text() {
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["type"] == "event" {
                ids.push(v["event_id"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    ids
}

#[tokio::test]
async fn sharded_pubsub_holds_only_wanted_clusters_and_delivers_once() {
    let cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let (a, b) = (cluster_hub(&cluster, "s1"), cluster_hub(&cluster, "s2"));
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(15)).await, "ready");
    }
    // Nobody subscribed: nothing is held, not even the full stream.
    wait_channels(&cluster, &a, &[], &[]).await;

    // On a: one client filtered on c1; one with both an unfiltered and a c1 subscription.
    let mut a_c1 = a.ws().await;
    subscribe(&mut a_c1, &["ALERT_FIRED"], &["c1"], &[]).await;
    let mut a_both = a.ws().await;
    subscribe(&mut a_both, &["ALERT_FIRED"], &[], &[]).await;
    subscribe(&mut a_both, &["ALERT_FIRED"], &["c1"], &[]).await;
    // On b: one client filtered on c2 and c3.
    let mut b_c2 = b.ws().await;
    subscribe(&mut b_c2, &["ALERT_FIRED"], &["c2", "c3"], &[]).await;

    let all = "aiops:events:all";
    let (c1, c2, c3) = (
        "aiops:events:cluster:c1",
        "aiops:events:cluster:c2",
        "aiops:events:cluster:c3",
    );
    wait_channels(&cluster, &a, &[all, c1], &[all, c1, c2, c3]).await;
    wait_channels(&cluster, &b, &[c2, c3], &[all, c1, c2, c3]).await;
    // Each channel lives on the one node that owns its slot, and they are spread over nodes.
    let busy_nodes = (0..3)
        .filter(|i| {
            !cluster
                .shard_channels(*i)
                .expect("PUBSUB SHARDCHANNELS")
                .is_empty()
        })
        .count();
    assert!(busy_nodes >= 2, "channels spread over the nodes");

    // Through a hub's broadcast endpoint (SPUBLISH to :all and to the cluster's channel).
    let (code, body) = b
        .broadcast(r#"{"event_type":"ALERT_FIRED","cluster_id":"c1","event_id":"e1"}"#)
        .await;
    assert_eq!(code, 202, "{body}");
    // Through the operator tool.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamhub"))
        .args([
            "publish",
            "--redis-cluster-nodes",
            &cluster.urls().join(","),
        ])
        .args([
            "--event",
            r#"{"event_type":"ALERT_FIRED","cluster_id":"c2","event_id":"e2"}"#,
        ])
        .output()
        .expect("run streamhub publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No cluster at all: only unfiltered subscriptions match.
    a.broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"e3"}"#)
        .await;
    // A cluster no client here wants: published, held by nobody, delivered to a_both via :all.
    a.broadcast(r#"{"event_type":"ALERT_FIRED","cluster_id":"c9","event_id":"e4"}"#)
        .await;
    // Junk: an event of cluster c2 on c1's channel is skipped and counted.
    cluster
        .spublish(
            c1,
            br#"{"event_type":"ALERT_FIRED","cluster_id":"c2","event_id":"junk"}"#,
        )
        .expect("spublish");

    let quiet = Duration::from_millis(700);
    assert_eq!(ids_until_quiet(&mut a_c1, quiet).await, ["e1"]);
    assert_eq!(
        ids_until_quiet(&mut a_both, quiet).await,
        ["e1", "e2", "e3", "e4"],
        "every event once, however many of its subscriptions match"
    );
    assert_eq!(ids_until_quiet(&mut b_c2, quiet).await, ["e2"]);
    // What each instance read from Redis: b only the cluster its client wants (e2, not e1, e3
    // or e4); a every event on :all plus e1 again on c1's channel (arrivals are counted).
    let routed = "ws_events_routed_total{event_type=\"ALERT_FIRED\"}";
    assert_eq!(metric(&b.metrics_text().await, routed), 1.0);
    assert_eq!(metric(&a.metrics_text().await, routed), 5.0);
    let status = a.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["mode"], "redis-cluster", "{status}");
    assert_eq!(
        status["broker"]["stats"]["junk"]["wrong_cluster_channel"], 1,
        "{status}"
    );

    // The control channel reaches the instance holding the client.
    send(&mut b_c2, &json!({"type": "auth", "token": "t"})).await;
    let id = recv(&mut b_c2).await["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    cluster
        .publish(
            "aiops:control:streaming",
            json!({"type": "disconnect_client", "client_id": id})
                .to_string()
                .as_bytes(),
        )
        .expect("publish");
    expect_close(&mut b_c2, 1000).await;
    // Its clusters are no longer wanted anywhere: b lets go of them.
    wait_channels(&cluster, &b, &[], &[all, c1]).await;
    // a_both drops its unfiltered subscription (unsubscribe all, then c1 again): :all goes too.
    send(&mut a_both, &json!({"type": "unsubscribe"})).await;
    assert_eq!(recv(&mut a_both).await["type"], "unsubscribed");
    subscribe(&mut a_both, &["ALERT_FIRED"], &["c1"], &[]).await;
    wait_channels(&cluster, &a, &[c1], &[c1]).await;
    let metrics = a.metrics_text().await;
    assert_eq!(metric(&metrics, "redis_connected"), 1.0);

    // `subscribed` means subscribed: with every node paused for a moment, the reply to a
    // subscription naming a new cluster waits until the hub holds that cluster's channel.
    for i in 0..3 {
        cluster
            .node_cmd(i, redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("ALL"))
            .expect("CLIENT PAUSE");
    }
    let mut a_c7 = a.ws().await;
    subscribe(&mut a_c7, &["ALERT_FIRED"], &["c7"], &[]).await;
    assert_eq!(
        held(&a).await,
        ["aiops:events:cluster:c1", "aiops:events:cluster:c7"],
        "held when the reply went out"
    );
}

/// Past `redis_cluster_max_shard_channels` clusters wanted, the instance holds only the full
/// stream and serves every subscription from it; below it again, per-cluster channels. Each
/// client gets each of its events once throughout.
#[tokio::test]
async fn too_many_clusters_fall_back_to_the_full_stream() {
    let cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let hub = cluster_hub_with(&cluster, "s1", "  redis_cluster_max_shard_channels: 2\n");
    assert!(hub.wait_ready(200, Duration::from_secs(15)).await, "ready");
    let (all, c1, c2) = (
        "aiops:events:all",
        "aiops:events:cluster:c1",
        "aiops:events:cluster:c2",
    );
    let mut x = hub.ws().await;
    subscribe(&mut x, &["ALERT_FIRED"], &["c1", "c2"], &[]).await;
    wait_channels(&cluster, &hub, &[c1, c2], &[c1, c2]).await;
    let mut y = hub.ws().await;
    subscribe(&mut y, &["ALERT_FIRED"], &["c3"], &[]).await;
    // Three clusters wanted, two allowed: the full stream alone.
    wait_channels(&cluster, &hub, &[all], &[all]).await;
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(
        status["broker"]["stats"]["full_stream_fallback"], true,
        "{status}"
    );
    for (id, c) in [("e1", "c1"), ("e2", "c3"), ("e3", "c9"), ("e4", "c2")] {
        let (code, body) = hub
            .broadcast(&format!(
                r#"{{"event_type":"ALERT_FIRED","cluster_id":"{c}","event_id":"{id}"}}"#
            ))
            .await;
        assert_eq!(code, 202, "{body}");
    }
    let quiet = Duration::from_millis(700);
    assert_eq!(ids_until_quiet(&mut x, quiet).await, ["e1", "e4"]);
    assert_eq!(ids_until_quiet(&mut y, quiet).await, ["e2"]);
    // y leaves: back to the two cluster channels, the full stream let go.
    drop(y);
    wait_channels(&cluster, &hub, &[c1, c2], &[c1, c2]).await;
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(
        status["broker"]["stats"]["full_stream_fallback"], false,
        "{status}"
    );
    hub.broadcast(r#"{"event_type":"ALERT_FIRED","cluster_id":"c2","event_id":"e5"}"#)
        .await;
    assert_eq!(ids_until_quiet(&mut x, quiet).await, ["e5"]);
}

#[tokio::test]
async fn cluster_node_lost_and_back() {
    let mut cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let hub = cluster_hub(&cluster, "s1");
    assert!(hub.wait_ready(200, Duration::from_secs(15)).await, "ready");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &["gpu-a"], &[]).await;
    let channel = "aiops:events:cluster:gpu-a";
    wait_channels(&cluster, &hub, &[channel], &[channel]).await;
    let (code, _) = hub
        .broadcast(r#"{"event_type":"GPU_UPDATE","cluster_id":"gpu-a","event_id":"before"}"#)
        .await;
    assert_eq!(code, 202);
    assert_eq!(recv(&mut ws).await["event_id"], "before");

    // Kill the node that holds the client's channel.
    let owner = (0..3)
        .find(|i| {
            cluster
                .shard_channels(*i)
                .expect("PUBSUB SHARDCHANNELS")
                .iter()
                .any(|c| c == channel)
        })
        .expect("a node holds the channel");
    cluster.kill(owner);
    assert!(
        hub.wait_ready(503, Duration::from_secs(15)).await,
        "readiness follows the cluster"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["broker"]["healthy"], false, "{status}");
    assert_eq!(metric(&hub.metrics_text().await, "redis_connected"), 0.0);
    let (code, _) = hub
        .broadcast(r#"{"event_type":"GPU_UPDATE","cluster_id":"gpu-a","event_id":"during"}"#)
        .await;
    assert_eq!(code, 503, "never a false 202");
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong", "the client stays");

    cluster.restart(owner).expect("restart the node");
    assert!(cluster.wait_ok(Duration::from_secs(30)), "cluster ok again");
    assert!(
        hub.wait_ready(200, Duration::from_secs(20)).await,
        "recovers by itself"
    );
    wait_channels(&cluster, &hub, &[channel], &[channel]).await;
    let (code, body) = hub
        .broadcast(r#"{"event_type":"GPU_UPDATE","cluster_id":"gpu-a","event_id":"after"}"#)
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        recv(&mut ws).await["event_id"],
        "after",
        "delivery resumes on the same connection"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert!(
        status["broker"]["stats"]["disconnects"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(status["connections"]["total"], 1, "never reconnected");
}

#[tokio::test]
async fn scoped_tokens_hold_in_redis_cluster_mode() {
    let cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let hub = HubProcess::start(&format!(
        "  redis_cluster_nodes: [{}]\n{SCOPED_AUTH}",
        nodes.join(", ")
    ));
    assert!(
        hub.wait_ready(200, Duration::from_secs(20)).await,
        "hub ready"
    );
    let _clients =
        scoped_client_sees_only_its_grant(&hub, "c1-prod", |body| broadcast_as(&hub, "ops", body))
            .await;
    // The narrowed subscription holds only its grant's channel (the unscoped one holds :all).
    let status = hub.get_json_as("/api/v1/streaming/status", "ops").await;
    assert_eq!(
        status["broker"]["stats"]["shard_channels"],
        json!(["aiops:events:all", "aiops:events:cluster:c1"]),
        "{status}"
    );
}

/// Publishes GPU_UPDATE events `h{i}` of cluster `c` through `hub`.
async fn publish_gpu(hub: &HubProcess, ids: std::ops::Range<usize>, c: &str) {
    let batch: Vec<Value> = ids
        .map(|i| json!({"event_type": "GPU_UPDATE", "event_id": format!("h{i}"), "cluster_id": c}))
        .collect();
    let (code, body) = hub.broadcast(&Value::Array(batch).to_string()).await;
    assert_eq!(code, 202, "{body}");
}

/// Resume in Redis Cluster mode: the history is the cluster's own stream, so a client resumes
/// on an instance that held none of its clusters before, with no gap and no duplicate while
/// events keep flowing.
#[tokio::test]
async fn resume_and_snapshot_on_another_instance_from_the_shared_history() {
    let cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let (a, b) = (cluster_hub(&cluster, "s1"), cluster_hub(&cluster, "s2"));
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(15)).await, "ready");
    }
    let mut first = a.ws().await;
    subscribe(&mut first, &["GPU_UPDATE"], &["c1"], &[]).await;
    publish_gpu(&a, 0..3, "c1").await;
    assert_eq!(
        ids_until_quiet(&mut first, Duration::from_millis(500)).await,
        ["h0", "h1", "h2"]
    );
    drop(first);
    // Missed: two of its cluster, one of another.
    publish_gpu(&a, 3..5, "c1").await;
    publish_gpu(&a, 5..6, "c2").await;

    // b holds no channel of c1 and saw none of these; it reads the cluster's history. Events
    // keep coming while it does.
    let mut again = b.ws().await;
    let more = publish_gpu(&a, 6..206, "c1");
    send(
        &mut again,
        &json!({"type": "subscribe", "resume_from": "h2",
                "subscription": {"event_types": ["GPU_UPDATE"], "cluster_filter": ["c1"]}}),
    )
    .await;
    more.await;
    let mut got = Vec::new();
    let mut complete = None;
    while let Seen::Json(v) = next_seen(&mut again, Duration::from_millis(800)).await {
        match v["type"].as_str() {
            Some("event") => got.push(v["event_id"].as_str().unwrap_or_default().to_string()),
            Some("replay_complete") => complete = Some(v),
            _ => {}
        }
    }
    let complete = complete.expect("replay_complete");
    assert_eq!(complete["recovered"], true, "{complete}");
    let want: Vec<String> = (3..5).chain(6..206).map(|i| format!("h{i}")).collect();
    assert_eq!(got, want, "every event of c1 after h2, once, in order");

    // An id the stream does not hold: the client knows to reload.
    let mut lost = b.ws().await;
    send(
        &mut lost,
        &json!({"type": "subscribe", "resume_from": "nope",
                "subscription": {"event_types": ["GPU_UPDATE"], "cluster_filter": ["c1"]}}),
    )
    .await;
    assert_eq!(recv(&mut lost).await["type"], "subscribed");
    assert_eq!(
        recv(&mut lost).await,
        json!({"type": "replay_complete", "recovered": false, "replayed": 0})
    );

    // A snapshot from the same history: the latest event of each key, marked, then live.
    for round in 0..2 {
        let batch: Vec<Value> = ["n1", "n2"]
            .iter()
            .map(|n| {
                json!({"event_type": "ALERT_FIRED", "event_id": format!("{n}-{round}"),
                            "cluster_id": "c9", "payload": {"namespace": n}})
            })
            .collect();
        let (code, _) = a.broadcast(&Value::Array(batch).to_string()).await;
        assert_eq!(code, 202);
    }
    let mut snap = b.ws().await;
    send(
        &mut snap,
        &json!({"type": "subscribe", "snapshot": true,
                "subscription": {"event_types": ["ALERT_FIRED"], "cluster_filter": ["c9"]}}),
    )
    .await;
    assert_eq!(recv(&mut snap).await["type"], "subscribed");
    for id in ["n1-1", "n2-1"] {
        let m = recv(&mut snap).await;
        assert_eq!(
            (m["event_id"].as_str(), m["snapshot"].as_bool()),
            (Some(id), Some(true)),
            "{m}"
        );
    }
    assert_eq!(
        recv(&mut snap).await,
        json!({"type": "snapshot_complete", "events": 2})
    );
}

/// With the node that holds the history stream gone, a resume answers `recovered: false`
/// (never a silent gap), and the client is still served live once the cluster is back.
#[tokio::test]
async fn a_resume_during_a_cluster_outage_says_it_did_not_recover() {
    let mut cluster = RedisCluster::start().expect("redis cluster (redis-server, redis-cli)");
    let hub = cluster_hub(&cluster, "s1");
    assert!(hub.wait_ready(200, Duration::from_secs(15)).await, "ready");
    publish_gpu(&hub, 0..3, "c1").await;
    // Only the node owning the stream's slot answers EXISTS without a MOVED error.
    let owner = (0..3)
        .find(|i| {
            cluster
                .node_cmd(*i, redis::cmd("EXISTS").arg("aiops:events:history"))
                .is_ok_and(|v| v == redis::Value::Int(1))
        })
        .expect("a node holds the history stream");
    cluster.kill(owner);
    assert!(hub.wait_ready(503, Duration::from_secs(15)).await, "down");
    let mut ws = hub.ws().await;
    send(
        &mut ws,
        &json!({"type": "subscribe", "resume_from": "h1",
                "subscription": {"event_types": ["GPU_UPDATE"], "cluster_filter": ["c1"]}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let done = next_seen(&mut ws, Duration::from_secs(10)).await;
    assert!(
        matches!(&done, Seen::Json(v) if *v == json!({"type": "replay_complete", "recovered": false, "replayed": 0})),
        "{done:?}"
    );
    cluster.restart(owner).expect("restart the node");
    assert!(cluster.wait_ok(Duration::from_secs(30)), "cluster ok again");
    assert!(
        hub.wait_ready(200, Duration::from_secs(20)).await,
        "recovers"
    );
    publish_gpu(&hub, 3..4, "c1").await;
    assert_eq!(recv(&mut ws).await["event_id"], "h3", "live again");
}

#[tokio::test]
async fn a_cluster_with_a_password_takes_it_from_the_node_urls() {
    let cluster = RedisCluster::start_with_password(Some("cluster-pw"))
        .expect("redis-server and redis-cli are installed (see .ci/run)");
    let hub = cluster_hub(&cluster, "p1");
    assert!(hub.wait_ready(200, Duration::from_secs(15)).await, "ready");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &["c1"], &[]).await;
    let (status, _) = hub
        .broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"pw1","cluster_id":"c1"}"#)
        .await;
    assert_eq!(status, 202);
    assert_eq!(recv(&mut ws).await["event_id"], "pw1");
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert!(!status.to_string().contains("cluster-pw"), "{status}");
}
