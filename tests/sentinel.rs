//! Redis behind Sentinels, and Redis with a password, on real processes: a primary and a
//! replica (`redis-server`, both with a password), three Sentinels (`redis-server --sentinel`,
//! quorum 2, down after 1 s). The primary is killed mid-stream: the Sentinels promote the
//! replica, the hub follows, delivery resumes within 10 s of the promotion, the client stays
//! connected, and `/readyz` says 503 while no primary serves.

mod common;

use common::*;
use loadtest::fixtures::{RedisServer, Sentinels};
use std::time::{Duration, Instant};

/// Waits until `ok()` holds, at most `limit`; whether it did.
async fn eventually(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok()
}

/// An event whose id says its number.
fn event(n: u32) -> String {
    format!(r#"{{"event_type":"ALERT_FIRED","event_id":"e{n}","payload":{{"n":{n}}}}}"#)
}

#[tokio::test]
async fn the_hub_follows_a_sentinel_failover_without_dropping_clients() {
    let auth = [
        "--requirepass",
        "pw-of-the-primary",
        "--masterauth",
        "pw-of-the-primary",
    ];
    let mut primary =
        RedisServer::start_with(&auth).expect("redis-server is installed (see .ci/run)");
    let replica_of = primary.port.to_string();
    let mut replica_args = auth.to_vec();
    replica_args.extend(["--replicaof", "127.0.0.1", &replica_of]);
    let replica = RedisServer::start_with(&replica_args).unwrap();
    let watched = ("streamhub", primary.port, Some("pw-of-the-primary"));
    let sentinels = Sentinels::start(3, watched, 2, 1000).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || sentinels.replicas_known() >= 1).await,
        "the sentinels see the replica"
    );
    let nodes: Vec<String> = sentinels
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let hub = HubProcess::start(&format!(
        "  redis_sentinel:\n    master_name: streamhub\n    password: pw-of-the-primary\n    nodes: [{}]\n",
        nodes.join(", ")
    ));
    assert!(
        hub.banner.ends_with(", mode redis-sentinel"),
        "{}",
        hub.banner
    );
    assert!(hub.wait_ready(200, Duration::from_secs(10)).await, "ready");
    let mut ws = hub.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    assert_eq!(hub.broadcast(&event(1)).await.0, 202);
    assert_eq!(recv(&mut ws).await["event_id"], "e1");

    primary.kill();
    let killed = Instant::now();
    // While no primary serves, the hub says so.
    assert!(
        hub.wait_ready(503, Duration::from_secs(10)).await,
        "readyz follows the lost primary"
    );
    assert!(
        eventually(Duration::from_secs(30), || sentinels.primary_port()
            == Some(replica.port))
        .await,
        "the sentinels promoted the replica"
    );
    let promoted = Instant::now();
    // Publish until one gets through and reaches the client: within 10 s of the promotion.
    let mut n = 2;
    let resumed = loop {
        assert!(
            promoted.elapsed() < Duration::from_secs(10),
            "no delivery within 10 s of the promotion"
        );
        if hub.broadcast(&event(n)).await.0 == 202 {
            match next_seen(&mut ws, Duration::from_secs(2)).await {
                Seen::Json(v) if v["event_id"] == format!("e{n}") => break promoted.elapsed(),
                Seen::Json(v) => panic!("unexpected message {v}"),
                Seen::Closed(c) => panic!("the client was disconnected ({c:?})"),
                Seen::Ended => panic!("the client's connection ended"),
                Seen::Nothing => {}
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hub.readyz().await, 200);
    eprintln!(
        "primary killed; promoted after {:?}; delivery resumed {resumed:?} after the promotion",
        promoted - killed
    );
    // And it keeps flowing, on the same connection, in order.
    for m in n + 1..n + 4 {
        assert_eq!(hub.broadcast(&event(m)).await.0, 202);
        assert_eq!(recv(&mut ws).await["event_id"], format!("e{m}"));
    }
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(status["mode"], "redis-sentinel");
    assert_eq!(
        status["broker"]["stats"]["serving"],
        format!("127.0.0.1:{}", replica.port)
    );
    assert!(
        !status.to_string().contains("pw-of-the-primary"),
        "{status}"
    );
}

#[tokio::test]
async fn redis_with_a_password_takes_it_from_the_url() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]).unwrap();
    // Without the password the hub never becomes ready; with it, events flow.
    let without = HubProcess::start(&format!("  redis_url: \"{}\"\n", redis.url()));
    let with = HubProcess::start(&format!(
        "  redis_url: \"redis://:s3cret@127.0.0.1:{}/\"\n",
        redis.port
    ));
    assert!(with.wait_ready(200, Duration::from_secs(10)).await);
    let mut ws = with.ws().await;
    subscribe(&mut ws, &["ALERT_FIRED"], &[], &[]).await;
    assert_eq!(with.broadcast(&event(1)).await.0, 202);
    assert_eq!(recv(&mut ws).await["event_id"], "e1");
    assert_eq!(without.readyz().await, 503);
    let status = without.get_json("/api/v1/streaming/status").await;
    let detail = status["broker"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!detail.contains("s3cret"), "{detail}");
    let status = with.get_json("/api/v1/streaming/status").await;
    assert!(!status.to_string().contains("s3cret"), "{status}");
}
