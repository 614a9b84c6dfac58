//! Redis mode: several hub processes on one real `redis-server`.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn every_instance_delivers_each_event_once() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hubs = [
        redis_hub(&redis, "s1"),
        redis_hub(&redis, "s2"),
        redis_hub(&redis, "s3"),
    ];
    for h in &hubs {
        assert!(
            h.wait_ready(200, Duration::from_secs(10)).await,
            "hub ready"
        );
    }
    let mut clients = Vec::new();
    for h in &hubs {
        let mut ws = h.ws().await;
        subscribe(&mut ws, &["ALERT_FIRED"], &["c1"], &[]).await;
        clients.push(ws);
    }
    // Through one hub's broadcast endpoint: every instance's client gets it once.
    let (status, body) = hubs[0]
        .broadcast(r#"{"event_type":"ALERT_FIRED","cluster_id":"c1","event_id":"via-http"}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    // Straight into Redis, also posted to the per-cluster, alerts and gpu channels.
    let event = br#"{"event_type":"ALERT_FIRED","cluster_id":"c1","event_id":"via-redis"}"#;
    for ch in [
        "aiops:events:all",
        "aiops:events:cluster:c1",
        "aiops:events:alerts",
        "aiops:events:gpu",
    ] {
        redis.publish(ch, event).await.expect("publish");
    }
    // An event without an id gets one id, the same on every instance; so does one whose id
    // and timestamp are `null` (once repeated in the message, so every instance refused it).
    hubs[1]
        .broadcast(r#"{"event_type":"ALERT_FIRED","cluster_id":"c1"}"#)
        .await;
    let (status, body) = hubs[2]
        .broadcast(
            r#"{"event_type":"ALERT_FIRED","cluster_id":"c1","event_id":null,"timestamp":null}"#,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let mut generated = Vec::new();
    for ws in clients.iter_mut() {
        assert_eq!(recv(ws).await["event_id"], "via-http");
        assert_eq!(recv(ws).await["event_id"], "via-redis");
        generated.push(recv(ws).await["event_id"].as_str().unwrap().to_string());
        let from_nulls = recv(ws).await;
        assert!(from_nulls["timestamp"].is_string(), "{from_nulls}");
        generated.push(from_nulls["event_id"].as_str().unwrap().to_string());
        expect_silence(ws, Duration::from_millis(400)).await;
    }
    for pair in [0, 1] {
        let ids: Vec<_> = generated.iter().skip(pair).step_by(2).collect();
        assert!(
            ids.iter().all(|g| g == &ids[0] && g.starts_with("evt_")),
            "{generated:?}"
        );
    }
    assert_ne!(generated[0], generated[1]);

    let status = hubs[2].get_json("/api/v1/streaming/status").await;
    assert_eq!(status["mode"], "redis");
    assert_eq!(status["instance_id"], "s3");
    let metrics = reqwest::get(hubs[0].url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "redis_connected"), 1.0);
}

#[tokio::test]
async fn upgrade_sets_the_sticky_cookie() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hub = redis_hub(&redis, "s2");
    let (_, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", hub.addr))
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("AIOPS_WS_SESSION=s2;"), "{cookie}");
}

#[tokio::test]
async fn redis_outage_keeps_clients_and_recovers() {
    let mut redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hub = redis_hub(&redis, "s1");
    assert!(hub.wait_ready(200, Duration::from_secs(10)).await);
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    hub.broadcast(r#"{"event_type":"GPU_UPDATE","event_id":"before"}"#)
        .await;
    assert_eq!(recv(&mut ws).await["event_id"], "before");

    redis.kill();
    assert!(
        hub.wait_ready(503, Duration::from_secs(10)).await,
        "readiness follows Redis"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["broker"]["healthy"], false, "{status}");
    assert!(
        status["broker"]["detail"]
            .as_str()
            .unwrap()
            .contains("redis"),
        "{status}"
    );
    let metrics = hub.metrics_text().await;
    assert_eq!(metric(&metrics, "redis_connected"), 0.0);
    // Never a false 202.
    let (code, _) = hub
        .broadcast(r#"{"event_type":"GPU_UPDATE","event_id":"during"}"#)
        .await;
    assert_eq!(code, 503);
    // The client is still connected and served.
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");

    redis.restart().expect("restart redis-server");
    assert!(
        hub.wait_ready(200, Duration::from_secs(15)).await,
        "reconnects by itself"
    );
    let (code, _) = hub
        .broadcast(r#"{"event_type":"GPU_UPDATE","event_id":"after"}"#)
        .await;
    assert_eq!(code, 202);
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
    assert_eq!(
        status["connections"]["total"], 1,
        "the client never reconnected"
    );
}

#[tokio::test]
async fn junk_on_the_channel_is_counted_and_skipped() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hub = redis_hub(&redis, "s1");
    assert!(hub.wait_ready(200, Duration::from_secs(10)).await);
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    let huge = format!(
        r#"{{"event_type":"GPU_UPDATE","pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    for junk in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"event_type":"NOPE"}"#,
        br#"{"event_type":"GPU_UPDATE","payload":7}"#,
        huge.as_bytes(),
    ] {
        redis
            .publish("aiops:events:all", junk)
            .await
            .expect("publish");
    }
    redis
        .publish("aiops:control:streaming", b"{\"type\":\"reboot\"}")
        .await
        .expect("publish");
    redis
        .publish(
            "aiops:events:all",
            br#"{"event_type":"GPU_UPDATE","event_id":"good"}"#,
        )
        .await
        .expect("publish");
    assert_eq!(recv(&mut ws).await["event_id"], "good");
    let status = hub.get_json("/api/v1/streaming/status").await;
    let junk = &status["broker"]["stats"]["junk"];
    for (kind, n) in [
        ("not_json", 1),
        ("not_object", 1),
        ("unknown_type", 1),
        ("bad_field", 1),
        ("too_large", 1),
        ("control", 1),
    ] {
        assert_eq!(junk[kind], n, "{kind}: {junk}");
    }
    assert_eq!(status["ready"], true);
}

#[tokio::test]
async fn control_messages_reach_every_instance() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let (a, b) = (redis_hub(&redis, "s1"), redis_hub(&redis, "s2"));
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(10)).await);
    }
    let mut on_a = a.ws().await;
    let mut on_b = b.ws().await;
    let mut target = b.ws().await;
    send(&mut target, &json!({"type": "auth", "token": "t"})).await;
    let id = recv(&mut target).await["client_id"]
        .as_str()
        .unwrap()
        .to_string();

    // disconnect_client: whichever instance holds the client closes it; nobody else is touched.
    redis
        .publish(
            "aiops:control:streaming",
            json!({"type": "disconnect_client", "client_id": id})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("publish");
    let before = expect_close(&mut target, 1000).await;
    assert_eq!(before.last().unwrap()["reason"], "disconnected_by_operator");
    for ws in [&mut on_a, &mut on_b] {
        send(ws, &json!({"type": "ping"})).await;
        assert_eq!(recv(ws).await["type"], "pong");
    }

    // drain: every instance tells its clients to go, with spread advice, and takes no new ones.
    redis
        .publish(
            "aiops:control:streaming",
            br#"{"type":"drain","reconnect_after_ms":2000}"#,
        )
        .await
        .expect("publish");
    for ws in [&mut on_a, &mut on_b] {
        let before = expect_close(ws, 1012).await;
        let bye = before.last().unwrap();
        assert_eq!(bye["reason"], "server_drain");
        let ms = bye["reconnect_after_ms"].as_u64().unwrap();
        assert!((1000..=3000).contains(&ms), "{ms}");
    }
    for h in [&a, &b] {
        assert_eq!(h.readyz().await, 503);
        let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", h.addr)).await;
        assert!(
            matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 503)
        );
    }
}

#[tokio::test]
async fn publish_and_tail_tools() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let (a, b) = (redis_hub(&redis, "s1"), redis_hub(&redis, "s2"));
    for h in [&a, &b] {
        assert!(h.wait_ready(200, Duration::from_secs(10)).await);
    }
    let bin = env!("CARGO_BIN_EXE_streamhub");
    // `tail` on instance b, filtered to GPU updates of cluster c1, stops after two events.
    let tail = std::process::Command::new(bin)
        .args([
            "tail",
            "--url",
            &format!("ws://{}/ws", b.addr),
            "--types",
            "GPU_UPDATE",
            "--cluster",
            "c1",
            "--count",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has subscribed (the hub lists the subscription).
    let mut subscribed = false;
    for _ in 0..100 {
        if b.get_json("/api/v1/streaming/subscriptions").await["total_subscriptions"] == 1 {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(subscribed, "tail subscribed");
    let publish = |args: Vec<String>| {
        let out = std::process::Command::new(bin)
            .arg("publish")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Through instance a's broadcast endpoint, then straight into Redis; one that tail filters out.
    let e = |id: &str, c: &str| {
        format!(r#"{{"event_type":"GPU_UPDATE","cluster_id":"{c}","event_id":"{id}"}}"#)
    };
    assert_eq!(
        publish(vec![
            "--url".into(),
            format!("http://{}", a.addr),
            "--event".into(),
            e("one", "c1")
        ]),
        "one"
    );
    assert_eq!(
        publish(vec![
            "--url".into(),
            format!("http://{}", a.addr),
            "--event".into(),
            e("other", "c2")
        ]),
        "other"
    );
    assert_eq!(
        publish(vec![
            "--redis-url".into(),
            redis.url(),
            "--event".into(),
            e("two", "c1")
        ]),
        "two"
    );
    // Batches (events of c2, which tail filters out): one request, or one PUBLISH each.
    let batch = |a: &str, b: &str| format!("[{}, {}]", e(a, "c2"), e(b, "c2"));
    assert_eq!(
        publish(vec![
            "--url".into(),
            format!("http://{}", a.addr),
            "--event".into(),
            batch("x", "y")
        ]),
        "x\ny"
    );
    assert_eq!(
        publish(vec![
            "--redis-url".into(),
            redis.url(),
            "--event".into(),
            batch("p", "q")
        ]),
        "p\nq"
    );
    // A malformed event is refused before it is sent.
    let bad = std::process::Command::new(bin)
        .args(["publish", "--redis-url", &redis.url(), "--event", "{}"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let out = tokio::task::spawn_blocking(move || tail.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "event")
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(events, vec!["one", "two"], "{lines:?}");
}

#[tokio::test]
async fn scoped_tokens_hold_in_redis_mode() {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hub = HubProcess::start(&format!("  redis_url: \"{}\"\n{SCOPED_AUTH}", redis.url()));
    assert!(
        hub.wait_ready(200, Duration::from_secs(10)).await,
        "hub ready"
    );
    scoped_client_sees_only_its_grant(&hub, "c1-prod", |body| broadcast_as(&hub, "ops", body))
        .await;
}

#[tokio::test]
async fn a_burst_from_redis_arrives_whole_and_in_order() {
    // A ring larger than the burst: this is about order and batching, not backpressure.
    let (_redis, hub, mut ws, mut conn) = burst_setup("").await;
    // One pipeline: the subscriber finds many messages ready at once and hands them over in
    // batches; a control message in the middle is taken in its place.
    let mut pipe = redis::pipe();
    for i in 0..300 {
        if i == 150 {
            let junk = r#"{"type":"no_such_control"}"#;
            pipe.cmd("PUBLISH")
                .arg("aiops:control:streaming")
                .arg(junk)
                .ignore();
        }
        let e = format!(r#"{{"event_type":"GPU_UPDATE","event_id":"b{i}"}}"#);
        pipe.cmd("PUBLISH").arg("aiops:events:all").arg(e).ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    for i in 0..300 {
        let m = recv(&mut ws).await;
        assert_eq!(m["event_id"], format!("b{i}"), "{m}");
    }
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["broker"]["stats"]["junk"]["control"], 1, "{status}");
}

/// An arrival from Redis past the shards' bound is dropped and counted, never queued without
/// limit: a pipelined burst reaches the subscriber as batches that are handed over without a
/// pause, so with a bound of one event most of a batch finds the inbox full. What got through
/// arrives in order, and the count of what did not is in `/metrics` and the status.
#[tokio::test]
async fn arrivals_past_the_bound_are_shed_and_counted() {
    let (_redis, hub, mut ws, mut conn) = burst_setup("    max_pending_events: 1\n").await;
    let mut pipe = redis::pipe();
    for i in 0..300 {
        let e =
            format!(r#"{{"event_type":"GPU_UPDATE","event_id":"s{i}","payload":{{"seq":{i}}}}}"#);
        pipe.cmd("PUBLISH").arg("aiops:events:all").arg(e).ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let mut last = -1;
    let mut received = 0;
    while let Seen::Json(m) = next_seen(&mut ws, Duration::from_millis(500)).await {
        let seq = m["payload"]["seq"].as_i64().unwrap();
        assert!(seq > last, "in order: {seq} after {last}");
        (last, received) = (seq, received + 1);
    }
    let text = hub.metrics_text().await;
    let shed = metric(&text, "ws_events_shed_total");
    assert!(
        shed > 0.0,
        "nothing shed of a 300-event burst with a bound of 1"
    );
    assert_eq!(
        shed as i64 + received,
        300,
        "each event delivered or counted"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["events"]["shed"], shed as i64, "{status}");
}

/// A Redis-mode hub (client rings of 1,000, plus `backpressure` lines `extra`), a client
/// subscribed to `GPU_UPDATE`, and a connection to publish bursts with.
async fn burst_setup(
    extra: &str,
) -> (
    RedisServer,
    HubProcess,
    Ws,
    redis::aio::MultiplexedConnection,
) {
    let redis = RedisServer::start().expect("redis-server is installed (see .ci/run)");
    let hub = HubProcess::start(&format!(
        "  redis_url: \"{}\"\n  backpressure:\n    max_queue_size: 1000\n{extra}",
        redis.url()
    ));
    assert!(
        hub.wait_ready(200, Duration::from_secs(10)).await,
        "hub ready"
    );
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    (redis, hub, ws, conn)
}

#[tokio::test]
async fn rediss_trusts_the_configured_ca_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    // TLS only: the plain port is off, the TLS port is the fixture's own.
    let redis = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-auth-clients",
        "no",
    ])
    .expect("redis-server with TLS (Debian's is built with it)");
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let trusting = HubProcess::start(&format!(
        "  redis_url: \"{url}\"\n  redis_tls_ca_file: \"{cert}\"\n"
    ));
    assert!(
        trusting.wait_ready(200, Duration::from_secs(10)).await,
        "TLS to Redis"
    );
    let mut ws = trusting.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    let (status, _) = trusting
        .broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"tls1"}"#)
        .await;
    assert_eq!(status, 202);
    assert_eq!(recv(&mut ws).await["event_id"], "tls1");
    // Without the CA the self-signed certificate is not trusted: never ready.
    let doubting = HubProcess::start(&format!("  redis_url: \"{url}\"\n"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(doubting.readyz().await, 503);
}
