//! The WebSocket protocol and subscription rules of decisions.md, against the real binary.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn auth_ping_and_invalid_messages_keep_the_connection() {
    let hub = HubProcess::start("");
    let mut ws = hub.ws().await;

    // Auth off: `auth` is answered `authenticated` all the same, with a server-assigned UUID.
    send(&mut ws, &json!({"type": "auth", "token": "anything"})).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "auth_response");
    assert_eq!(r["status"], "authenticated");
    let id = r["client_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    send(
        &mut ws,
        &json!({"type": "ping", "timestamp": "2024-12-24T10:00:00Z"}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "pong");
    assert_eq!(r["timestamp"], "2024-12-24T10:00:00Z");
    assert!(humantime::parse_rfc3339(r["server_time"].as_str().unwrap()).is_ok());

    for bad in [
        "not json",
        "[1,2]",
        "42",
        r#"{"type":"dance"}"#,
        r#"{"no":"type"}"#,
    ] {
        send_text(&mut ws, bad).await;
        let r = recv(&mut ws).await;
        assert_eq!(r["type"], "error", "{bad}");
        assert_eq!(r["code"], "INVALID_MESSAGE", "{bad}: {r}");
    }
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    assert_eq!(recv(&mut ws).await["code"], "INVALID_MESSAGE");

    // Still open and served.
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn events_reach_exactly_the_matching_clients_once() {
    let hub = HubProcess::start("");
    let mut all_alerts = hub.ws().await;
    let mut c1_prod = hub.ws().await;
    let mut gpu_only = hub.ws().await;
    let mut overlapping = hub.ws().await;

    let sub = subscribe(
        &mut all_alerts,
        &["ALERT_FIRED", "ALERT_RESOLVED"],
        &[],
        &[],
    )
    .await;
    assert_eq!(sub["event_types"], json!(["ALERT_FIRED", "ALERT_RESOLVED"]));
    assert_eq!(sub["cluster_filter"], json!([]));
    let sub = subscribe(&mut c1_prod, &["ALERT_FIRED"], &["c1"], &["production"]).await;
    assert_eq!(sub["cluster_filter"], json!(["c1"]));
    assert_eq!(sub["namespace_filter"], json!(["production"]));
    subscribe(&mut gpu_only, &["GPU_UPDATE"], &[], &[]).await;
    // Two subscriptions that both match: the event still arrives once.
    subscribe(&mut overlapping, &["ALERT_FIRED"], &[], &[]).await;
    subscribe(&mut overlapping, &["ALERT_FIRED"], &["c1"], &[]).await;

    let events = [
        // 0: c1, namespace from payload.labels → all_alerts, c1_prod, overlapping
        json!({"event_type": "ALERT_FIRED", "event_id": "e0", "cluster_id": "c1",
               "extra_field": {"kept": true},
               "payload": {"labels": {"namespace": "production"}, "severity": "CRITICAL", "v": 1.5}}),
        // 1: other namespace → all_alerts, overlapping
        json!({"event_type": "ALERT_FIRED", "event_id": "e1", "cluster_id": "c1",
               "payload": {"namespace": "staging"}}),
        // 2: no namespace passes the namespace filter → all_alerts, c1_prod, overlapping
        json!({"event_type": "ALERT_FIRED", "event_id": "e2", "cluster_id": "c1", "payload": {}}),
        // 3: other cluster → all_alerts, overlapping
        json!({"event_type": "ALERT_FIRED", "event_id": "e3", "cluster_id": "c2",
               "payload": {"namespace": "production"}}),
        // 4: no cluster → all_alerts, overlapping (not c1_prod)
        json!({"event_type": "ALERT_FIRED", "event_id": "e4"}),
        // 5: GPU → gpu_only
        json!({"event_type": "GPU_UPDATE", "event_id": "e5", "cluster_id": "c1"}),
        // 6: nobody
        json!({"event_type": "CHAT_MESSAGE", "event_id": "e6"}),
        // 7: resolved → all_alerts
        json!({"event_type": "ALERT_RESOLVED", "event_id": "e7", "cluster_id": "c1"}),
    ];
    for e in &events {
        let (status, body) = hub.broadcast(&e.to_string()).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["event_id"], e["event_id"]);
    }
    let expect = |ws_ids: &[&str]| ws_ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (ws, want) in [
        (
            &mut all_alerts,
            expect(&["e0", "e1", "e2", "e3", "e4", "e7"]),
        ),
        (&mut c1_prod, expect(&["e0", "e2"])),
        (&mut gpu_only, expect(&["e5"])),
        (&mut overlapping, expect(&["e0", "e1", "e2", "e3", "e4"])),
    ] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let m = recv(ws).await;
            assert_eq!(m["type"], "event", "{m}");
            got.push(m["event_id"].as_str().unwrap().to_string());
            if m["event_id"] == "e0" {
                // The event's own fields, untouched, plus "type": "event".
                assert_eq!(m["extra_field"], json!({"kept": true}));
                assert_eq!(m["payload"], events[0]["payload"]);
                assert_eq!(m["cluster_id"], "c1");
                assert!(m["timestamp"].is_string(), "timestamp set on arrival");
            }
        }
        assert_eq!(got, want);
        expect_silence(ws, Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn invalid_subscriptions_store_nothing() {
    let hub = HubProcess::start("");
    let mut ws = hub.ws().await;
    let bad = [
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED", "NOPE"]}}),
        json!({"type": "subscribe", "subscription": {"event_types": []}}),
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"], "cluster_filter": "c1"}}),
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"], "namespace_filter": [1]}}),
        json!({"type": "subscribe", "subscription": "ALERT_FIRED"}),
        json!({"type": "subscribe"}),
        // Names: 1 to 253 letters, digits, '-', '_', '.' or ':'.
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"], "cluster_filter": ["has space"]}}),
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"], "cluster_filter": [""]}}),
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"], "namespace_filter": ["x".repeat(254)]}}),
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"], "namespace_filter": ["ns\u{0}"]}}),
        // A subscription naming 1,000 clusters.
        json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"],
            "cluster_filter": (0..1000).map(|i| format!("c{i}")).collect::<Vec<_>>()}}),
    ];
    for b in &bad {
        send(&mut ws, b).await;
        let r = recv(&mut ws).await;
        assert_eq!(r["code"], "INVALID_SUBSCRIPTION", "{b}: {r}");
    }
    let stats = hub.get_json("/api/v1/streaming/subscriptions").await;
    assert_eq!(stats["total_subscriptions"], 0, "{stats}");
    hub.broadcast(r#"{"event_type":"ALERT_FIRED"}"#).await;
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    // The connection is still usable, and the allowed characters pass.
    subscribe(&mut ws, &["ALERT_FIRED"], &["eu-west.prod:1_a"], &[]).await;
}

/// One client cannot make the index hold more than 4,096 keys through many subscriptions (64
/// of 4,096 each were allowed before), and a request that changes nothing does not reach the
/// index thread at all.
#[tokio::test]
async fn one_client_cannot_amplify_index_work() {
    let hub = HubProcess::start("");
    let mut ws = hub.ws().await;
    let names = |p: &str| (0..32).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let wide = json!({"type": "subscribe", "subscription": {
        "event_types": ["ALERT_FIRED", "ALERT_RESOLVED", "GPU_UPDATE", "METRIC_UPDATE"],
        "cluster_filter": names("c"), "namespace_filter": names("n")}});
    send(&mut ws, &wide).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    send(
        &mut ws,
        &json!({"type": "subscribe", "subscription": {"event_types": ["ANOMALY_DETECTED"]}}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["code"], "INVALID_SUBSCRIPTION", "{r}");
    assert!(r["message"].as_str().unwrap().contains("together"), "{r}");
    assert_eq!(index_updates(&hub).await, 1);
    // The same subscription again, and removing a type not held: answered, index untouched.
    send(&mut ws, &wide).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    send(
        &mut ws,
        &json!({"type": "unsubscribe", "event_types": ["TRACE_RECEIVED"]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "unsubscribed");
    assert_eq!(index_updates(&hub).await, 1);
    send(
        &mut ws,
        &json!({"type": "unsubscribe", "event_types": ["GPU_UPDATE"]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "unsubscribed");
    assert_eq!(index_updates(&hub).await, 2);
}

/// Many clients together cannot grow the index past `websocket.max_index_keys`: a subscribe
/// that would add keys past it is refused with a clear error and changes nothing, while one
/// that only reuses keys already held still passes.
#[tokio::test]
async fn the_instance_index_is_capped() {
    let hub = HubProcess::start("  shards: 1\n  websocket:\n    max_index_keys: 100\n");
    let clusters = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let four = [
        "ALERT_FIRED",
        "ALERT_RESOLVED",
        "GPU_UPDATE",
        "METRIC_UPDATE",
    ];
    let sub = |cs: Vec<String>| json!({"type": "subscribe", "subscription": {"event_types": four, "cluster_filter": cs}});
    let mut a = hub.ws().await;
    send(&mut a, &sub(clusters("a", 16))).await;
    assert_eq!(recv(&mut a).await["type"], "subscribed");
    let mut b = hub.ws().await;
    send(&mut b, &sub(clusters("b", 16))).await;
    let r = recv(&mut b).await;
    assert_eq!(r["code"], "INVALID_SUBSCRIPTION", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("index is full"),
        "{r}"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["index_keys"]["held"], 64, "{status}");
    assert_eq!(status["subscriptions"], 1, "{status}");
    // The refused subscription holds nothing: an event of its cluster does not reach b.
    hub.broadcast(r#"{"event_type":"ALERT_FIRED","cluster_id":"b0"}"#)
        .await;
    expect_silence(&mut b, Duration::from_millis(300)).await;
    // Keys already held cost nothing: b may share a's.
    send(&mut b, &sub(clusters("a", 16))).await;
    assert_eq!(recv(&mut b).await["type"], "subscribed");
    // Once a leaves, its keys stay (b holds them) and 32 more fit under 100.
    drop(a);
    send(&mut b, &sub(clusters("c", 8))).await;
    assert_eq!(recv(&mut b).await["type"], "subscribed");
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["index_keys"]["held"], 96, "{status}");
    hub.broadcast(r#"{"event_type":"GPU_UPDATE","cluster_id":"c7"}"#)
        .await;
    assert_eq!(recv(&mut b).await["type"], "event");
}

#[tokio::test]
async fn unsubscribe_removes_types_from_every_subscription() {
    let hub = HubProcess::start("");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED", "GPU_UPDATE"], &[], &[]).await;
    subscribe(&mut ws, &["GPU_UPDATE"], &["c1"], &[]).await;
    subscribe(&mut ws, &["METRIC_UPDATE"], &[], &[]).await;

    send(
        &mut ws,
        &json!({"type": "unsubscribe", "event_types": ["GPU_UPDATE"]}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        r,
        json!({"type": "unsubscribed", "event_types": ["GPU_UPDATE"]})
    );
    let stats = hub.get_json("/api/v1/streaming/subscriptions").await;
    // The GPU-only subscription is gone; the other two remain.
    assert_eq!(stats["total_subscriptions"], 2, "{stats}");

    hub.broadcast(r#"{"event_type":"GPU_UPDATE","event_id":"g","cluster_id":"c1"}"#)
        .await;
    hub.broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"a"}"#)
        .await;
    assert_eq!(recv(&mut ws).await["event_id"], "a");

    send(&mut ws, &json!({"type": "unsubscribe"})).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "unsubscribed");
    let mut types: Vec<String> = serde_json::from_value(r["event_types"].clone()).unwrap();
    types.sort();
    assert_eq!(types, vec!["ALERT_FIRED", "METRIC_UPDATE"]);
    hub.broadcast(r#"{"event_type":"METRIC_UPDATE"}"#).await;
    hub.broadcast(r#"{"event_type":"ALERT_FIRED"}"#).await;
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    let stats = hub.get_json("/api/v1/streaming/subscriptions").await;
    assert_eq!(stats["total_subscriptions"], 0);
}

#[tokio::test]
async fn broadcast_refuses_malformed_events() {
    let hub = HubProcess::start("");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED", "GPU_UPDATE"], &[], &[]).await;
    for bad in [
        "not json",
        "[1]",
        "{}",
        r#"{"event_type":"NOPE"}"#,
        r#"{"event_type":"ALERT_FIRED","payload":[1]}"#,
        r#"{"event_type":"ALERT_FIRED","event_id":5}"#,
        r#"{"event_type":"ALERT_FIRED","cluster_id":{"a":1}}"#,
        r#"{"event_type":"ALERT_FIRED","timestamp":12}"#,
    ] {
        let (status, body) = hub.broadcast(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    let (status, body) = hub.broadcast(r#"{"event_type":"GPU_UPDATE"}"#).await;
    assert_eq!(status, 202);
    let id = body["event_id"].as_str().unwrap();
    assert!(id.starts_with("evt_"), "{id}");
    let m = recv(&mut ws).await;
    assert_eq!(m["event_id"], id);
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["events"]["rejected"], 8, "{status}");
}

#[tokio::test]
async fn oversize_messages_close_with_1009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;

    let hub = HubProcess::start("  websocket:\n    max_message_size_bytes: 1024\n");
    // A message of exactly the limit is fine.
    let mut ws = hub.ws().await;
    // (Padded with a field the hub ignores: a `timestamp` that long is refused.)
    let at_limit = format!(r#"{{"type":"ping","padding":"{}"}}"#, "x".repeat(1024 - 28));
    assert_eq!(at_limit.len(), 1024);
    send_text(&mut ws, &at_limit).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    // One frame over it closes with 1009.
    send_text(&mut ws, &"x".repeat(1025)).await;
    expect_close(&mut ws, 1009).await;

    // Fragments each under the limit, adding up to more: 1009 too.
    let mut ws = hub.ws().await;
    let chunk = vec![b' '; 600];
    let first = Frame::message(chunk.clone(), OpCode::Data(Data::Text), false);
    let second = Frame::message(chunk, OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first)).await.unwrap();
    ws.send(Message::Frame(second)).await.unwrap();
    expect_close(&mut ws, 1009).await;

    // A fragmented message within the limit is reassembled and served.
    let mut ws = hub.ws().await;
    let (a, b) = r#"{"type":"ping","timestamp":"frag"}"#.split_at(10);
    ws.send(Message::Frame(Frame::message(
        a.as_bytes().to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        b.as_bytes().to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let r = recv(&mut ws).await;
    assert_eq!(r["timestamp"], "frag");
}

/// A fragmented message must be finished within one heartbeat interval: a client that opens one
/// and then only sends pongs is closed with 1008 instead of holding the partial message for
/// ever.
#[tokio::test]
async fn an_unfinished_fragmented_message_is_not_held_for_ever() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = HubProcess::start(
        "  websocket:\n    heartbeat_interval_seconds: 0.5\n    heartbeat_timeout_seconds: 30\n",
    );
    let mut s = raw_ws(hub.addr).await;
    let started = std::time::Instant::now();
    s.write_all(&masked_frame(0x01, b"{\"type\":"))
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let pongs = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(&masked_frame(0x8A, b"")).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(4), r.read_to_end(&mut buf)).await;
    pongs.abort();
    let close_at = buf.iter().rposition(|b| *b == 0x88).expect("a close frame");
    assert_eq!(&buf[close_at + 2..close_at + 4], &1008u16.to_be_bytes());
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn malformed_frames_close_with_the_right_code() {
    use tokio::io::AsyncWriteExt;
    let hub = HubProcess::start("");
    for (name, bytes, want) in [
        ("reserved bits set", masked_frame(0x81 | 0x40, b"{}"), 1002),
        (
            "invalid UTF-8",
            masked_frame(0x81, &[0xff, 0xfe, 0xfd]),
            1007,
        ),
        (
            "continuation without a message",
            masked_frame(0x80, b"x"),
            1002,
        ),
        ("unknown opcode", masked_frame(0x83, b"x"), 1002),
        ("fragmented ping", masked_frame(0x09, b"x"), 1002),
    ] {
        let mut s = raw_ws(hub.addr).await;
        s.write_all(&bytes).await.unwrap();
        assert_eq!(raw_close_code(&mut s).await, want, "{name}");
    }
    // The hub is still serving.
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

/// Subscription changes the hub has sent to its index thread so far.
async fn index_updates(hub: &HubProcess) -> u64 {
    hub.get_json("/api/v1/streaming/status").await["index_updates"]
        .as_u64()
        .unwrap()
}
