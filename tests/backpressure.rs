//! Backpressure: a client that does not read never holds anyone else back, never grows the hub's
//! memory without bound, and learns exactly how much it lost.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw WebSocket that subscribes to everything, reads the `subscribed` reply, then never reads.
async fn stalled_client(hub: &HubProcess) -> tokio::net::TcpStream {
    let mut s = raw_ws(hub.addr).await;
    let sub =
        json!({"type": "subscribe", "subscription": {"event_types": ["GPU_UPDATE"]}}).to_string();
    s.write_all(&masked_frame(0x81, sub.as_bytes()))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains("subscribed") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// A GPU_UPDATE of about `size` bytes.
fn gpu_event(id: usize, size: usize) -> String {
    json!({"event_type": "GPU_UPDATE", "event_id": format!("e{id}"), "cluster_id": "c1",
           "payload": {"node_name": "worker-gpu-01", "pad": "x".repeat(size)}})
    .to_string()
}

#[tokio::test]
async fn stalled_client_does_not_delay_others_or_grow_memory() {
    // The history keeps up to `history.max_bytes` of recent events (and as much again of the
    // latest per key) whoever reads them: held to 1 MiB here, so what is measured is what the
    // stalled client costs.
    let hub = HubProcess::start(
        "  backpressure:\n    max_queue_size: 100\n    slow_client_threshold_ms: 200\n  history:\n    max_bytes: 1048576\n",
    );
    let _stalled = stalled_client(&hub).await;
    let mut fast = hub.ws().await;
    subscribe(&mut fast, &["GPU_UPDATE"], &[], &[]).await;

    let http = reqwest::Client::new();
    let url = hub.url("/api/v1/streaming/broadcast");
    let rss_before = hub.rss_kib();
    let (batches, per_batch, size) = (60, 100, 8 * 1024);
    for b in 0..batches {
        for i in 0..per_batch {
            let r = http
                .post(&url)
                .body(gpu_event(b * per_batch + i, size))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        // The fast client gets every event of the batch, in order, promptly.
        for i in 0..per_batch {
            let m = recv(&mut fast).await;
            assert_eq!(
                m["event_id"],
                format!("e{}", b * per_batch + i),
                "{}",
                m["type"]
            );
        }
    }
    let rss_after = hub.rss_kib();
    let sent_mib = (batches * per_batch * size) as u64 / (1 << 20);
    let grew_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "hub RSS {rss_before} KiB -> {rss_after} KiB while {sent_mib} MiB went to a stalled client"
    );
    // ~47 MiB went to the stalled client; its ring holds at most 100 frames (~0.8 MiB).
    assert!(
        grew_mib < 16,
        "hub RSS grew {grew_mib} MiB while {sent_mib} MiB went to a stalled client"
    );

    let metrics = hub.metrics_text().await;
    assert!(metric(&metrics, "ws_events_dropped_total") > 0.0);
    let clients = hub.get_json("/api/v1/streaming/clients").await;
    let list = clients["clients"].as_array().unwrap();
    let stalled = list
        .iter()
        .find(|c| c["events_dropped"].as_u64().unwrap() > 0)
        .expect("stalled listed");
    assert!(stalled["queue_length"].as_u64().unwrap() <= 100);
    assert_eq!(stalled["slow"], true, "{stalled}");
    let fast_row = list
        .iter()
        .find(|c| c["events_dropped"] == 0)
        .expect("fast listed");
    assert_eq!(fast_row["slow"], false);
}

/// Connects with a small receive buffer, so a client that pauses fills up quickly.
async fn small_buffer_client(hub: &HubProcess) -> Ws {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&hub.addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws", hub.addr),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

/// Publishes `n` large events while the client is not reading, then reads everything back.
/// Returns the event numbers received in order and the drops reported (with what followed each).
async fn pause_then_read(hub: &HubProcess, n: usize) -> (Vec<usize>, u64, Vec<Value>) {
    let mut ws = small_buffer_client(hub).await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    let http = reqwest::Client::new();
    for i in 0..n {
        let r = http
            .post(hub.url("/api/v1/streaming/broadcast"))
            .body(gpu_event(i, 32 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let (mut events, mut dropped, mut notices) = (Vec::new(), 0u64, Vec::new());
    let mut after_notice = false;
    while events.len() as u64 + dropped < n as u64 {
        let m = recv(&mut ws).await;
        match m["type"].as_str() {
            Some("event") => {
                after_notice = false;
                let id = m["event_id"].as_str().unwrap();
                events.push(id[1..].parse().unwrap());
            }
            Some("error") => {
                assert_eq!(m["code"], "QUEUE_FULL", "{m}");
                assert!(!after_notice, "two notices in a row");
                after_notice = true;
                dropped += m["dropped"].as_u64().unwrap();
                notices.push(m);
            }
            _ => panic!("{m}"),
        }
    }
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    (events, dropped, notices)
}

#[tokio::test]
async fn drop_oldest_reports_every_drop_and_keeps_the_newest() {
    let hub = HubProcess::start("  backpressure:\n    max_queue_size: 5\n    drop_oldest: true\n");
    let n = 400;
    let (events, dropped, notices) = pause_then_read(&hub, n).await;
    assert!(
        dropped > 0 && !notices.is_empty(),
        "a paused client lost events"
    );
    assert_eq!(
        events.len() as u64 + dropped,
        n as u64,
        "every event delivered or reported"
    );
    assert!(
        events.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert_eq!(
        *events.last().unwrap(),
        n - 1,
        "drop-oldest keeps the newest"
    );
    let metrics = hub.metrics_text().await;
    assert_eq!(metric(&metrics, "ws_events_dropped_total") as u64, dropped);
}

#[tokio::test]
async fn drop_newest_reports_every_drop_and_keeps_the_oldest() {
    let hub = HubProcess::start("  backpressure:\n    max_queue_size: 5\n    drop_oldest: false\n");
    let n = 400;
    let (events, dropped, _) = pause_then_read(&hub, n).await;
    assert!(dropped > 0);
    assert_eq!(events.len() as u64 + dropped, n as u64);
    assert!(events.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(events[0], 0, "drop-newest keeps the oldest");
    assert_ne!(*events.last().unwrap(), n - 1, "the newest were dropped");
}

#[tokio::test]
async fn writes_coalesce_under_load_but_idle_clients_and_replies_never_wait() {
    // A long window, so the hold-back is plain to see (the default is 10 ms), and a fixed one
    // (the default follows the shard's load, and an idle hub holds nothing).
    let hub = HubProcess::start(
        "  websocket:\n    write_coalesce_ms: 400\n    write_coalesce_adaptive: false\n",
    );
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let event = |id: &str| format!(r#"{{"event_type":"GPU_UPDATE","event_id":"{id}"}}"#);
    // A client that was idle gets its events at once, even two close together.
    let t0 = std::time::Instant::now();
    for id in ["a", "b"] {
        hub.broadcast(&event(id)).await;
        assert_eq!(recv(&mut ws).await["event_id"], id);
    }
    let at_once = t0.elapsed();
    assert!(
        at_once < Duration::from_millis(300),
        "an idle client waited {at_once:?}"
    );
    // Busy now (two writes within the window): the next events are held back until the window
    // has passed since the last write, and leave together.
    hub.broadcast(&event("c")).await;
    hub.broadcast(&event("d")).await;
    assert_eq!(recv(&mut ws).await["event_id"], "c");
    assert_eq!(recv(&mut ws).await["event_id"], "d");
    let held = t0.elapsed();
    assert!(
        held >= Duration::from_millis(350),
        "events were not held back: {held:?}"
    );
    // A reply is never held: it ends the hold-back, and the held event leaves with it.
    hub.broadcast(&event("e")).await;
    assert_eq!(recv(&mut ws).await["event_id"], "e");
    let t1 = std::time::Instant::now();
    hub.broadcast(&event("f")).await;
    send(&mut ws, &serde_json::json!({"type": "ping"})).await;
    let mut got = [recv(&mut ws).await, recv(&mut ws).await];
    got.sort_by_key(|m| m["type"].as_str().unwrap_or_default().to_string());
    let (f, pong) = (got[0]["event_id"].as_str(), got[1]["type"].as_str());
    assert_eq!((f, pong), (Some("f"), Some("pong")));
    let replied = t1.elapsed();
    assert!(
        replied < Duration::from_millis(300),
        "the reply waited {replied:?}"
    );
}

/// With the default adaptive window, a hub with CPU to spare never holds a write back, even for
/// a busy client: the window is its shard's, and an idle shard's is zero (`status` says so).
#[tokio::test]
async fn an_idle_hub_writes_at_once_even_to_a_busy_client() {
    let hub = HubProcess::start("  shards: 1\n  websocket:\n    write_coalesce_ms: 400\n");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    let event = |id: &str| format!(r#"{{"event_type":"GPU_UPDATE","event_id":"{id}"}}"#);
    let t0 = std::time::Instant::now();
    // Four writes in a row: with a fixed window the last two would wait 400 ms.
    for id in ["a", "b", "c", "d"] {
        hub.broadcast(&event(id)).await;
        assert_eq!(recv(&mut ws).await["event_id"], id);
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(300),
        "an idle hub held a busy client's events: {took:?}"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    let c = &status["write_coalescing"];
    assert_eq!(c["max_ms"], 400.0, "{c}");
    assert_eq!(c["adaptive"], true, "{c}");
    assert_eq!(c["shards"].as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(c["shards"][0]["window_ms"], 0.0, "{c}");
}
