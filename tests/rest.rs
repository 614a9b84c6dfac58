//! The REST API, metrics and probes.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn status_clients_subscriptions_and_probes() {
    let hub = HubProcess::start("");
    // The start-up line names the mode (here embedded, the default).
    assert!(hub.banner.ends_with(", mode embedded"), "{}", hub.banner);
    let mut a = hub.ws().await;
    let mut b = hub.ws().await;
    subscribe(
        &mut a,
        &["ALERT_FIRED", "GPU_UPDATE"],
        &["c1", "c2"],
        &["prod"],
    )
    .await;
    subscribe(&mut a, &["GPU_UPDATE"], &[], &[]).await;
    subscribe(&mut b, &["GPU_UPDATE"], &["c1"], &[]).await;
    let (s, _) = hub
        .broadcast(r#"{"event_type":"GPU_UPDATE","cluster_id":"c1"}"#)
        .await;
    assert_eq!(s, 202);
    recv(&mut a).await;
    recv(&mut b).await;

    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["status"], "running");
    assert_eq!(status["mode"], "embedded");
    assert_eq!(status["ready"], true);
    assert_eq!(status["connections"]["active"], 2);
    assert_eq!(status["connections"]["total"], 2);
    assert_eq!(status["subscriptions"], 3);
    assert_eq!(status["events"]["routed"], 1);
    assert_eq!(status["events"]["deliveries"], 2);

    let subs = hub.get_json("/api/v1/streaming/subscriptions").await;
    assert_eq!(subs["total_subscriptions"], 3);
    assert_eq!(subs["clients_with_subscriptions"], 2);
    assert_eq!(subs["by_event_type"]["GPU_UPDATE"], 3);
    assert_eq!(subs["by_event_type"]["ALERT_FIRED"], 1);
    assert_eq!(subs["by_cluster"]["c1"], 2);
    assert_eq!(subs["by_namespace"]["prod"], 1);

    let clients = hub.get_json("/api/v1/streaming/clients").await;
    assert_eq!(clients["count"], 2);
    let rows = clients["clients"].as_array().unwrap();
    let row_a = rows
        .iter()
        .find(|c| c["subscriptions"].as_array().unwrap().len() == 2)
        .unwrap();
    assert_eq!(
        row_a["subscriptions"][0]["cluster_filter"],
        json!(["c1", "c2"])
    );
    assert!(row_a["messages_sent"].as_u64().unwrap() >= 3, "{row_a}");
    let limited = hub.get_json("/api/v1/streaming/clients?limit=1").await;
    assert_eq!(limited["clients"].as_array().unwrap().len(), 1);

    assert_eq!(
        reqwest::get(hub.url("/healthz")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(hub.url("/readyz")).await.unwrap().status(),
        200
    );
    assert_eq!(reqwest::get(hub.url("/nope")).await.unwrap().status(), 404);
    let r = reqwest::Client::new()
        .delete(hub.url("/api/v1/streaming/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // A plain GET on /ws is not an upgrade.
    assert_eq!(reqwest::get(hub.url("/ws")).await.unwrap().status(), 426);
}

#[tokio::test]
async fn metrics_expose_the_eight_names() {
    let hub = HubProcess::start("");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    for _ in 0..3 {
        hub.broadcast(r#"{"event_type":"ALERT_FIRED"}"#).await;
        recv(&mut ws).await;
    }
    let r = reqwest::get(hub.url("/metrics")).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for (name, kind) in [
        ("ws_connections_total", "counter"),
        ("ws_connections_active", "gauge"),
        ("ws_messages_sent_total", "counter"),
        ("ws_messages_received_total", "counter"),
        ("ws_events_routed_total", "counter"),
        ("ws_events_dropped_total", "counter"),
        ("ws_subscription_count", "gauge"),
        ("ws_message_latency_seconds", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}\n{text}"
        );
    }
    assert_eq!(metric(&text, "ws_connections_total"), 1.0);
    assert_eq!(metric(&text, "ws_connections_active"), 1.0);
    assert_eq!(metric(&text, "ws_subscription_count"), 1.0);
    assert_eq!(metric(&text, "ws_messages_received_total"), 1.0);
    // subscribed + 3 events.
    assert_eq!(metric(&text, "ws_messages_sent_total"), 4.0);
    assert!(
        text.contains("ws_events_routed_total{event_type=\"ALERT_FIRED\"} 3\n"),
        "{text}"
    );
    assert_eq!(metric(&text, "ws_message_latency_seconds_count"), 4.0);
}

/// `/debug/heap` shows the allocator's live allocations by size class, so that what each
/// connection costs can be attributed: fifty more connections add fifty allocations to some
/// class (each connection's task, its client state...). `/metrics` carries the totals.
#[tokio::test]
async fn heap_statistics_show_what_each_connection_adds() {
    let hub = HubProcess::start("");
    let live = |v: &serde_json::Value| -> std::collections::HashMap<u64, i64> {
        v["size_classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["size"].as_u64().unwrap(), c["live"].as_i64().unwrap()))
            .collect()
    };
    let before = hub.get_json("/debug/heap").await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut ws = hub.ws().await;
        subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
        conns.push(ws);
    }
    let after = hub.get_json("/debug/heap").await;
    let grown = after["totals"]["allocated"].as_f64().unwrap()
        - before["totals"]["allocated"].as_f64().unwrap();
    assert!(grown > 50.0 * 500.0, "50 connections added {grown} bytes");
    let (b, a) = (live(&before), live(&after));
    let per_connection = a
        .iter()
        .filter(|(size, n)| **n - b.get(size).copied().unwrap_or(0) >= 50)
        .count();
    assert!(
        per_connection >= 2,
        "classes grown by one per connection: {after}"
    );
    let text = reqwest::get(hub.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&text, "streamhub_heap_allocated_bytes") > 0.0);
    assert!(metric(&text, "streamhub_heap_resident_bytes") > 0.0);
}

#[tokio::test]
async fn broadcast_body_limits_and_openapi() {
    let hub = HubProcess::start("  rest:\n    max_body_bytes: 1024\n");
    let big = json!({"event_type": "GPU_UPDATE", "payload": {"pad": "x".repeat(2000)}}).to_string();
    let (status, body) = hub.broadcast(&big).await;
    assert_eq!(status, 413, "{body}");
    let doc = hub.get_json("/api/v1/streaming/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/api/v1/streaming/status",
        "/api/v1/streaming/clients",
        "/api/v1/streaming/subscriptions",
        "/api/v1/streaming/broadcast",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} documented");
    }
}

#[tokio::test]
async fn flamegraph_endpoint_is_opt_in() {
    let off = HubProcess::start("");
    let r = reqwest::get(off.url("/debug/pprof/flamegraph?seconds=0.2"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let on = HubProcess::start("  profiling:\n    enabled: true\n");
    let mut ws = on.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    // Keep the hub busy while it samples itself.
    let profile = tokio::spawn(reqwest::get(on.url("/debug/pprof/flamegraph?seconds=1")));
    let started = std::time::Instant::now();
    while !profile.is_finished() && started.elapsed() < std::time::Duration::from_secs(10) {
        on.broadcast(r#"{"event_type":"GPU_UPDATE"}"#).await;
        recv(&mut ws).await;
    }
    let r = profile.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "{}",
        &svg[..svg.len().min(300)]
    );
}

#[tokio::test]
async fn broadcast_takes_batches_as_arrays_and_ndjson() {
    let hub = HubProcess::start("  rest:\n    max_batch_events: 3\n");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    let post = |body: &str, content_type: &str| {
        let req = reqwest::Client::new()
            .post(hub.url("/api/v1/streaming/broadcast"))
            .header("content-type", content_type.to_string())
            .body(body.to_string());
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = post(
        r#"[{"event_type":"ALERT_FIRED","event_id":"b1"},{"event_type":"NOPE"},{"event_type":"ALERT_FIRED","event_id":"b2"}]"#,
        "application/json",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(body["results"][0]["event_id"], "b1");
    assert!(body["results"][1]["error"]
        .as_str()
        .unwrap()
        .contains("unknown event_type"));
    assert_eq!(recv(&mut ws).await["event_id"], "b1");
    assert_eq!(recv(&mut ws).await["event_id"], "b2");
    let (status, body) = post(
        "{\"event_type\":\"ALERT_FIRED\",\"event_id\":\"n1\"}\n{\"event_type\":\"ALERT_FIRED\",\"event_id\":\"n2\"}\n",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(2)),
        "{body}"
    );
    assert_eq!(recv(&mut ws).await["event_id"], "n1");
    assert_eq!(recv(&mut ws).await["event_id"], "n2");
    for bad in [r#"[{"event_type":"NOPE"}]"#, "[]", "[1,2,3,4]", "[{"] {
        let (status, body) = post(bad, "application/json").await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    expect_silence(&mut ws, std::time::Duration::from_millis(200)).await;
}

/// The shards' inboxes are bounded: while they hold `max_pending_events`, a broadcast is
/// refused with 503 and `Retry-After` instead of queueing without limit. A batch publishes
/// without yielding, so the shard serving it cannot drain in between: with a bound of one, its
/// second event finds the inbox full. What was accepted is delivered, and once the shards have
/// caught up a broadcast is accepted again.
#[tokio::test]
async fn a_full_inbox_answers_503_with_retry_after() {
    let hub = HubProcess::start("  backpressure:\n    max_pending_events: 1\n");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    let r = reqwest::Client::new()
        .post(hub.url("/api/v1/streaming/broadcast"))
        .body(r#"[{"event_type":"ALERT_FIRED","event_id":"o1"},{"event_type":"ALERT_FIRED","event_id":"o2"},{"event_type":"ALERT_FIRED","event_id":"o3"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["results"][0]["event_id"], "o1");
    assert!(
        body["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("overloaded"),
        "{body}"
    );
    assert_eq!(recv(&mut ws).await["event_id"], "o1");
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    let (status, body) = hub
        .broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"o4"}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(recv(&mut ws).await["event_id"], "o4");
}
