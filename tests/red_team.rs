//! The holes a red-team pass found in the token checks and the protocol's edges (issue 19),
//! one test each, against the real binary: a validation endpoint that says "not active", bad
//! tokens that flood the validator, JWT leeway, `crit` and `null` grants, a narrower token on
//! an open connection, the grace period after `AUTH_EXPIRED`, MessagePack before auth, and one
//! subject filling the index. The memory and connection holes are in `tests/hostile.rs`.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

/// Seconds since the Unix epoch, `offset` from now.
fn at(offset: i64) -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + offset
}

/// What a client gets for `auth` with `token`: `Ok(())`, or `Err(message)` after `AUTH_FAILED`.
async fn try_auth(hub: &HubProcess, token: &str) -> Result<(), String> {
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "auth", "token": token})).await;
    let r = recv(&mut ws).await;
    if r["type"] == "auth_response" {
        return Ok(());
    }
    assert_eq!(r["code"], "AUTH_FAILED", "{r}");
    Err(r["message"].as_str().unwrap_or_default().to_string())
}

/// The validator's answers: an RFC 7662 endpoint's and a plain one's; 401 for any other
/// token, after 20 ms for one starting `slow-`.
fn answers(token: &str) -> validator::Answer {
    let delay = Duration::from_millis(if token.starts_with("slow-") { 20 } else { 0 });
    let claims = match token {
        "inactive" => Some(json!({"active": false, "sub": "x", "roles": ["admin"]})),
        "empty" => Some(json!({})),
        "active" => Some(json!({"active": true, "sub": "a", "exp": at(60)})),
        "plain" => Some(json!({"sub": "p", "exp": at(60)})),
        "null-grant" => Some(json!({"sub": "n", "exp": at(60), "clusters": null})),
        "ops" => Some(json!({"sub": "ops", "exp": at(600), "roles": ["admin"]})),
        _ => None,
    };
    match claims {
        Some(c) => (200, c.to_string(), delay),
        None => (401, "{}".to_string(), delay),
    }
}

/// `GET /status` with a bearer token: the status code.
async fn status_as(client: &reqwest::Client, hub: &HubProcess, token: &str) -> u16 {
    client
        .get(hub.url("/api/v1/streaming/status"))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_validator_must_say_active_and_bad_tokens_neither_flood_it_nor_evict_good_ones() {
    let (addr, asked) = validator::validator(answers).await;
    let hub = HubProcess::start(&format!(
        "  auth:\n    enabled: true\n    token_validation_url: \"http://{addr}/\"\n    \
         validation_cache_seconds: 60\n    validation_timeout_seconds: 5\n    \
         validation_max_concurrent: 4\n"
    ));
    // Item 3: a 2xx is not enough.
    for refused in ["inactive", "empty", "null-grant"] {
        assert_eq!(
            try_auth(&hub, refused).await,
            Err("invalid token".into()),
            "{refused}"
        );
    }
    assert_eq!(try_auth(&hub, "active").await, Ok(()));
    assert_eq!(try_auth(&hub, "plain").await, Ok(()));

    // Item 9: a good token cached, then a flood of random ones (more than the cache holds).
    let http = reqwest::Client::new();
    assert_eq!(status_as(&http, &hub, "ops").await, 200);
    let flood = 10_100;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (http, url, next) = (
                http.clone(),
                hub.url("/api/v1/streaming/status"),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= flood {
                        break;
                    }
                    // The first ones slow, to see how many are asked about at once.
                    let slow = if n < 400 { "slow-" } else { "" };
                    let token = format!("{slow}random-{}", fastrand::u64(..));
                    let r = http.get(&url).bearer_auth(token).send().await.unwrap();
                    assert!(matches!(r.status().as_u16(), 401 | 503), "{}", r.status());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let most = asked.most.load(Ordering::SeqCst);
    assert!(
        most <= 4,
        "{most} questions at once (validation_max_concurrent 4)"
    );
    let before = asked.served.load(Ordering::SeqCst);
    assert_eq!(status_as(&http, &hub, "ops").await, 200);
    assert_eq!(
        asked.served.load(Ordering::SeqCst),
        before,
        "the good token was still cached after {flood} bad ones"
    );
    // A bad token asked twice is asked about once.
    assert_eq!(status_as(&http, &hub, "bad-twice").await, 401);
    let once = asked.served.load(Ordering::SeqCst);
    assert_eq!(status_as(&http, &hub, "bad-twice").await, 401);
    assert_eq!(
        asked.served.load(Ordering::SeqCst),
        once,
        "the refusal was cached"
    );
}

/// A HS256 token with `claims`, and `crit` in its header when given.
fn hs256(claims: &Value, crit: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.crit = crit.map(|c| vec![c.to_string()]);
    encode(&header, claims, &EncodingKey::from_secret(b"k")).unwrap()
}

#[tokio::test]
async fn jwt_leeway_applies_to_exp_and_neither_crit_nor_null_widens_anything() {
    let hub = HubProcess::start(
        "  auth:\n    enabled: true\n    jwt_secret: \"k\"\n    jwt_leeway_seconds: 5\n",
    );
    let token = |exp: i64| hs256(&json!({"sub": "a", "exp": at(exp)}), None);
    assert_eq!(
        try_auth(&hub, &token(-3)).await,
        Ok(()),
        "within the leeway"
    );
    assert_eq!(
        try_auth(&hub, &token(-30)).await,
        Err("token expired".into())
    );
    let crit = hs256(
        &json!({"sub": "a", "exp": at(60)}),
        Some("http://example/ext"),
    );
    assert_eq!(try_auth(&hub, &crit).await, Err("invalid token".into()));
    for null in [
        json!({"sub": "a", "exp": at(60), "clusters": null}),
        json!({"sub": "a", "exp": at(60), "namespaces": null}),
    ] {
        assert_eq!(
            try_auth(&hub, &hs256(&null, None)).await,
            Err("invalid token".into()),
            "{null}"
        );
    }
}

#[tokio::test]
async fn after_auth_expired_only_auth_and_ping_are_taken_and_held_subscriptions_deliver() {
    let hub = HubProcess::start(
        "  auth:\n    enabled: true\n    reauth_grace_seconds: 5\n    static_tokens:\n      \
         - {token: short, subject: s, expires_in_seconds: 1.5}\n      \
         - {token: fresh, subject: s}\n      - {token: ops, subject: ops, roles: [internal]}\n",
    );
    let mut ws = authed(&hub, "short").await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    let expired = recv(&mut ws).await;
    assert_eq!(expired["code"], "AUTH_EXPIRED", "{expired}");
    send(
        &mut ws,
        &json!({"type": "subscribe", "subscription": {"event_types": ["GPU_UPDATE"]}}),
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        r["code"], "AUTH_EXPIRED",
        "a subscribe in the grace period: {r}"
    );
    send(
        &mut ws,
        &json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"]},
        "snapshot": true}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "AUTH_EXPIRED");
    send(&mut ws, &json!({"type": "ping", "timestamp": 7})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    // What was held still delivers: a refresh causes no gap.
    broadcast_as(
        &hub,
        "ops",
        r#"{"event_type":"ALERT_FIRED","event_id":"g1"}"#.into(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["event_id"], "g1");
    send(&mut ws, &json!({"type": "auth", "token": "fresh"})).await;
    assert_eq!(recv(&mut ws).await["type"], "auth_response");
    let sub = subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    assert_eq!(sub["type"], "subscribed");
}

#[tokio::test]
async fn a_narrower_token_filters_what_is_already_queued() {
    let hub = HubProcess::start(
        "  websocket:\n    socket_send_buffer_bytes: 4096\n    write_coalesce_ms: 0\n  \
         auth:\n    enabled: true\n    static_tokens:\n      - {token: wide, subject: t}\n      \
         - {token: narrow, subject: t, clusters: [c1]}\n      \
         - {token: ops, subject: ops, roles: [internal]}\n",
    );
    // A client with a small receive buffer, so that what it leaves unread stays in its ring.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", hub.addr), stream)
        .await
        .unwrap();
    send(&mut ws, &json!({"type": "auth", "token": "wide"})).await;
    assert_eq!(recv(&mut ws).await["type"], "auth_response");
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    let pad = "p".repeat(1000);
    let batch: Vec<Value> = (0..150)
        .map(|i| {
            json!({"event_type": "ALERT_FIRED", "event_id": format!("c2-{i}"),
            "cluster_id": "c2", "payload": {"pad": pad}})
        })
        .collect();
    broadcast_as(&hub, "ops", Value::Array(batch).to_string()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Unread events wait in the ring; now the token narrows to c1.
    send(&mut ws, &json!({"type": "auth", "token": "narrow"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    broadcast_as(
        &hub,
        "ops",
        r#"{"event_type":"ALERT_FIRED","event_id":"c1-after","cluster_id":"c1"}"#.into(),
    )
    .await;
    let (mut before, mut after, mut replied) = (0, Vec::new(), false);
    loop {
        let m = recv(&mut ws).await;
        match m["type"].as_str() {
            Some("auth_response") => replied = true,
            Some("event") if replied => after.push(m["event_id"].as_str().unwrap().to_string()),
            Some("event") => before += 1,
            _ => {}
        }
        if after.last().is_some_and(|id| id == "c1-after") {
            break;
        }
    }
    assert!(
        before < 150,
        "some events were still queued at the hub ({before} arrived first)"
    );
    assert_eq!(
        after,
        ["c1-after"],
        "after the narrower token: only its cluster"
    );
}

/// A client speaking `aiops.v1.msgpack`.
async fn msgpack_client(addr: std::net::SocketAddr) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "aiops.v1.msgpack".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next MessagePack map.
async fn recv_mp(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => return rmp_serde::from_slice(&b).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a MessagePack message, saw {other:?}"),
        }
    }
}

#[tokio::test]
async fn undecodable_msgpack_before_auth_closes_and_client_caused_logs_are_throttled() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.yaml");
    std::fs::write(
        &config,
        format!(
            "realtime_streaming:\n  host: \"127.0.0.1\"\n  port: 0\n  rate_limit:\n    \
             messages_per_second: 1000\n    burst: 1000\n  auth:\n    enabled: true\n    \
             token_validation_url: \"http://{gone_addr}/\"\n    \
             validation_timeout_seconds: 0.5\n    static_tokens:\n      \
             - {{token: good, subject: a}}\n"
        ),
    )
    .unwrap();
    let (child, banner) = spawn_captured(&config, &[]);
    let addr = loadtest::hub::banner_addr(&banner).expect("address");
    // Item 12: not MessagePack, before auth: AUTH_FAILED and close 1008, as for any message.
    let mut ws = msgpack_client(addr).await;
    ws.send(Message::binary(vec![0xc1, 0xc1, 0xc1]))
        .await
        .unwrap();
    let r = recv_mp(&mut ws).await;
    assert_eq!(r["code"], "AUTH_FAILED", "{r}");
    match next_seen(&mut ws, Duration::from_secs(3)).await {
        Seen::Closed(Some(1008)) => {}
        other => panic!("expected close 1008, saw {other:?}"),
    }
    // Item 13: a 200-deep timestamp is an invalid message, and logs nothing.
    let mut ws = msgpack_client(addr).await;
    let auth = |token: &str| rmp_serde::to_vec(&json!({"type": "auth", "token": token})).unwrap();
    ws.send(Message::binary(auth("good"))).await.unwrap();
    assert_eq!(recv_mp(&mut ws).await["type"], "auth_response");
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let ping = rmp_serde::to_vec(&json!({"type": "ping", "timestamp": deep})).unwrap();
    for _ in 0..50 {
        ws.send(Message::binary(ping.clone())).await.unwrap();
        let r = recv_mp(&mut ws).await;
        assert_eq!(r["code"], "INVALID_MESSAGE", "{r}");
    }
    // A line a client can cause (its token cannot be checked) goes out once per interval.
    for _ in 0..20 {
        let mut ws = msgpack_client(addr).await;
        ws.send(Message::binary(auth("unknown"))).await.unwrap();
        assert_eq!(recv_mp(&mut ws).await["code"], "AUTH_FAILED");
    }
    let logs = kill_and_read_logs(child);
    let errors = logs.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 0, "{logs}");
    let down = logs.matches("token validation endpoint down").count();
    assert_eq!(down, 1, "{logs}");
}

/// A subscribe to `ALERT_FIRED` in `clusters` clusters named from `from`: the reply.
async fn subscribe_clusters(ws: &mut Ws, from: usize, clusters: usize) -> Value {
    let names: Vec<String> = (from..from + clusters).map(|i| format!("c{i}")).collect();
    send(
        ws,
        &json!({"type": "subscribe", "subscription": {
        "event_types": ["ALERT_FIRED"], "cluster_filter": names}}),
    )
    .await;
    recv(ws).await
}

#[tokio::test]
async fn one_subject_cannot_fill_the_index_for_everyone() {
    let hub = HubProcess::start(
        "  websocket:\n    max_index_keys: 200\n    max_index_keys_per_subject: 100\n  \
         auth:\n    enabled: true\n    static_tokens:\n      - {token: tenant, subject: t}\n      \
         - {token: other, subject: o}\n",
    );
    let mut first = authed(&hub, "tenant").await;
    assert_eq!(
        subscribe_clusters(&mut first, 0, 60).await["type"],
        "subscribed"
    );
    // Another connection of the same subject: its keys count together.
    let mut second = authed(&hub, "tenant").await;
    let refused = subscribe_clusters(&mut second, 60, 60).await;
    assert_eq!(refused["code"], "INVALID_SUBSCRIPTION", "{refused}");
    let why = refused["message"].as_str().unwrap();
    assert!(why.contains("max_index_keys_per_subject"), "{why}");
    assert_eq!(
        subscribe_clusters(&mut second, 60, 40).await["type"],
        "subscribed"
    );
    // Someone else still has room.
    let mut other = authed(&hub, "other").await;
    assert_eq!(
        subscribe_clusters(&mut other, 100, 90).await["type"],
        "subscribed"
    );
    // Keys come back when a connection ends.
    drop(first);
    let mut third = authed(&hub, "tenant").await;
    let mut answer = Value::Null;
    for _ in 0..50 {
        answer = subscribe_clusters(&mut third, 200, 50).await;
        if answer["type"] == "subscribed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer["type"], "subscribed", "{answer}");
}
