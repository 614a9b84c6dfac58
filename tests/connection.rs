//! Connection rules: authentication, heartbeat, capacity, origin, shutdown, configuration.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

const AUTH: &str = "  auth:
    enabled: true
    timeout_seconds: 1
    reauth_grace_seconds: 1
    static_tokens:
      - token: good
        subject: alice
        roles: [admin, internal]
      - token: viewer
        subject: bob
        roles: []
      - token: short
        subject: carol
        expires_in_seconds: 2
";

#[tokio::test]
async fn auth_required_before_anything_but_auth_and_ping() {
    let hub = HubProcess::start(AUTH);

    // Ping is allowed before auth; subscribe is not.
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    send(
        &mut ws,
        &json!({"type": "subscribe", "subscription": {"event_types": ["GPU_UPDATE"]}}),
    )
    .await;
    let before = expect_close(&mut ws, 1008).await;
    assert_eq!(before[0]["code"], "AUTH_FAILED", "{before:?}");

    // A bad token: AUTH_FAILED and 1008.
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "auth", "token": "wrong"})).await;
    let before = expect_close(&mut ws, 1008).await;
    assert_eq!(before[0]["code"], "AUTH_FAILED");

    // A good token: authenticated, then subscriptions work.
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "auth", "token": "good"})).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["status"], "authenticated");
    assert_eq!(
        r["roles"],
        json!(["admin", "internal"]),
        "the token's roles: {r}"
    );
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;

    // No auth within timeout_seconds: closed.
    let mut idle = hub.ws().await;
    let started = Instant::now();
    let before = expect_close(&mut idle, 1008).await;
    assert_eq!(before[0]["code"], "AUTH_FAILED");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // The authenticated client was not affected.
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn expired_token_gets_auth_expired_and_a_grace_period() {
    let hub = HubProcess::start(AUTH);
    // Re-authenticates within the grace period: stays.
    let mut keeps = hub.ws().await;
    send(&mut keeps, &json!({"type": "auth", "token": "short"})).await;
    assert_eq!(recv(&mut keeps).await["status"], "authenticated");
    // Never re-authenticates: closed after the grace period.
    let mut lapses = hub.ws().await;
    send(&mut lapses, &json!({"type": "auth", "token": "short"})).await;
    assert_eq!(recv(&mut lapses).await["status"], "authenticated");

    let r = recv(&mut keeps).await;
    assert_eq!(r["code"], "AUTH_EXPIRED", "{r}");
    send(&mut keeps, &json!({"type": "auth", "token": "good"})).await;
    assert_eq!(recv(&mut keeps).await["status"], "authenticated");

    assert_eq!(recv(&mut lapses).await["code"], "AUTH_EXPIRED");
    let before = expect_close(&mut lapses, 1008).await;
    assert_eq!(before[0]["code"], "AUTH_FAILED");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&mut keeps, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut keeps).await["type"], "pong");
}

#[tokio::test]
async fn rest_roles_while_auth_is_on() {
    let hub = HubProcess::start(AUTH);
    let http = reqwest::Client::new();
    let clients = hub.url("/api/v1/streaming/clients");
    let broadcast = hub.url("/api/v1/streaming/broadcast");
    let event = r#"{"event_type":"GPU_UPDATE"}"#;
    assert_eq!(http.get(&clients).send().await.unwrap().status(), 401);
    assert_eq!(
        http.get(&clients)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(&clients)
            .bearer_auth("viewer")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        http.get(&clients)
            .bearer_auth("good")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(&broadcast)
            .body(event)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http
        .post(&broadcast)
        .bearer_auth("viewer")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(&broadcast)
        .bearer_auth("good")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Status, subscriptions and clients need admin; the OpenAPI document any valid token;
    // metrics and probes stay open.
    for path in ["status", "subscriptions", "clients"] {
        let url = hub.url(&format!("/api/v1/streaming/{path}"));
        let status = |token: Option<&'static str>| {
            let mut r = http.get(&url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move { r.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status(None).await, 401, "{path}");
        assert_eq!(status(Some("viewer")).await, 403, "{path}");
        assert_eq!(status(Some("good")).await, 200, "{path}");
    }
    let openapi = hub.url("/api/v1/streaming/openapi.json");
    assert_eq!(http.get(&openapi).send().await.unwrap().status(), 401);
    let r = http
        .get(&openapi)
        .bearer_auth("viewer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for open in ["/metrics", "/healthz", "/readyz"] {
        let r = http.get(hub.url(open)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn silent_client_is_dropped_by_the_heartbeat() {
    let hub = HubProcess::start(
        "  websocket:\n    heartbeat_interval_seconds: 0.3\n    heartbeat_timeout_seconds: 0.3\n",
    );
    // A well-behaved client (tungstenite answers pings) stays connected.
    let mut good = hub.ws().await;
    // A raw client that reads pings but never answers them.
    let mut mute = raw_ws(hub.addr).await;
    let mute_side = async {
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), mute.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), seen),
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Err(_) => panic!("silent client was never dropped"),
            }
        }
    };
    // Meanwhile the good client keeps reading (and so answers pings) for two seconds.
    let good_side = async {
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            send(&mut good, &json!({"type": "ping"})).await;
            assert_eq!(recv(&mut good).await["type"], "pong");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((closed, seen), ()) = tokio::join!(mute_side, good_side);
    assert!(seen.contains(&0x89), "the server sent WebSocket pings");
    // Before the socket closes it says why (design document §8.1), then close 1001.
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains(r#""type":"disconnect","reason":"heartbeat_timeout""#)
            || text.contains(r#""reason":"heartbeat_timeout""#),
        "{text}"
    );
    let close_at = seen
        .iter()
        .rposition(|b| *b == 0x88)
        .expect("a close frame");
    assert_eq!(&seen[close_at + 2..close_at + 4], &1001u16.to_be_bytes());
    assert!(
        closed >= Duration::from_millis(500),
        "dropped too early: {closed:?}"
    );
    assert!(
        closed < Duration::from_secs(3),
        "dropped too late: {closed:?}"
    );
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["heartbeat_timeouts"], 1, "{status}");
    assert_eq!(status["connections"]["active"], 1, "{status}");
}

/// A client whose only sign of life is its pong, sent within a fraction of a millisecond of the
/// ping (a fast client on loopback), stays connected. The time it was heard from was once kept
/// in whole milliseconds, so a pong in the ping's own millisecond looked older than the ping and
/// the client was dropped as dead.
#[tokio::test]
async fn a_client_that_only_answers_pings_stays_connected() {
    let hub = HubProcess::start(
        "  websocket:\n    heartbeat_interval_seconds: 0.2\n    heartbeat_timeout_seconds: 0.2\n",
    );
    let mut ws = hub.ws().await;
    let mut pings = 0;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        // Reading answers each ping with a pong at once (tungstenite does it while reading).
        match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("connection ended after {pings} pings: {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 3 s");
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["heartbeat_timeouts"], 0, "{status}");
    assert_eq!(status["connections"]["active"], 1, "{status}");
}

#[tokio::test]
async fn max_connections_refuses_with_503_and_spares_the_open_ones() {
    let hub = HubProcess::start("  websocket:\n    max_connections: 3\n");
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(hub.ws().await);
    }
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", hub.addr))
        .await
        .expect_err("fourth connection refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 503),
        other => panic!("expected HTTP 503, got {other}"),
    }
    for ws in open.iter_mut() {
        send(ws, &json!({"type": "ping"})).await;
        assert_eq!(recv(ws).await["type"], "pong");
    }
    // A slot frees when a client leaves.
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(format!("ws://{}/ws", hub.addr)).await
        {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "slot was given back");
}

#[tokio::test]
async fn origin_is_checked_when_configured() {
    let hub = HubProcess::start("  websocket:\n    allowed_origins: [\"https://dash.example\"]\n");
    let url = format!("ws://{}/ws", hub.addr);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "https://dash.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn sigterm_flushes_then_disconnects_with_jittered_advice_and_1012() {
    let mut hub = HubProcess::start("  shutdown:\n    reconnect_after_ms: 4000\n");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut ws = hub.ws().await;
        subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
        clients.push(ws);
    }
    for i in 0..5 {
        let (s, _) = hub
            .broadcast(
                &json!({"event_type": "ALERT_FIRED", "event_id": format!("e{i}")}).to_string(),
            )
            .await;
        assert_eq!(s, 202);
    }
    hub.sigterm();
    let mut advice = Vec::new();
    for ws in clients.iter_mut() {
        let before = expect_close(ws, 1012).await;
        // Every queued event first, then `disconnect`.
        let (last, events) = before.split_last().expect("messages before close");
        let ids: Vec<_> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, (0..5).map(|i| format!("e{i}")).collect::<Vec<_>>());
        assert_eq!(last["type"], "disconnect");
        assert_eq!(last["reason"], "server_shutdown");
        let ms = last["reconnect_after_ms"].as_u64().unwrap();
        assert!((2000..=6000).contains(&ms), "{ms}");
        advice.push(ms);
    }
    advice.sort();
    advice.dedup();
    assert!(advice.len() > 1, "reconnect advice is spread: {advice:?}");
    let status = hub.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bad_config_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, key) in [
        (
            "realtime_streaming:\n  websocket:\n    max_conections: 5\n",
            "max_conections",
        ),
        (
            "realtime_streaming:\n  websocket:\n    max_connections: many\n",
            "websocket.max_connections",
        ),
        (
            "realtime_streaming:\n  backpressure:\n    drop_oldest: 7\n",
            "backpressure.drop_oldest",
        ),
        (
            "realtime_streaming:\n  websocket:\n    heartbeat_timeout_seconds: -1\n",
            "heartbeat_timeout_seconds",
        ),
        ("other_root: {}\n", "other_root"),
        // Fail closed: auth on with no way to verify a token.
        (
            "realtime_streaming:\n  auth:\n    enabled: true\n",
            "realtime_streaming.auth: enabled with no way to verify a token",
        ),
        (
            "realtime_streaming:\n  auth:\n    enabled: true\n    jwt_secret: s\n    jwks_file: /x\n",
            "auth.jwt_secret",
        ),
        (
            "realtime_streaming:\n  auth:\n    enabled: true\n    jwt_public_key_file: /no/such.pem\n",
            "auth.jwt_public_key_file",
        ),
        (
            "realtime_streaming:\n  auth:\n    enabled: true\n    token_validation_url: \"ftp://x\"\n",
            "auth.token_validation_url",
        ),
    ] {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamhub"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{yaml}: {err}");
    }
}

#[tokio::test]
async fn env_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "realtime_streaming:\n  host: \"127.0.0.1\"\n  port: 1\n",
    )
    .unwrap();
    // The file says port 1; the environment says 0 (a free port): the environment wins.
    let (child, line) =
        spawn_captured(&path, &[("STREAMHUB_PORT", "0"), ("STREAMHUB_SHARDS", "3")]);
    kill_and_read_logs(child);
    assert!(
        line.contains("127.0.0.1:") && !line.contains("127.0.0.1:1 "),
        "{line}"
    );
    assert!(line.contains("3 shard(s)"), "{line}");
}

#[tokio::test]
async fn auth_off_on_a_non_loopback_address_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |host: &str| {
        let path = dir.path().join(format!("{host}.yaml"));
        std::fs::write(
            &path,
            format!("realtime_streaming:\n  host: \"{host}\"\n  port: 0\n"),
        )
        .unwrap();
        let (child, _) = spawn_captured(&path, &[]);
        kill_and_read_logs(child)
    };
    let open = run("0.0.0.0");
    assert!(open.contains("AUTH IS DISABLED"), "{open}");
    assert!(open.contains("/api/v1/streaming/broadcast"), "{open}");
    assert!(!run("127.0.0.1").contains("AUTH IS DISABLED"));
}
