//! Hostile clients, one kind after another, against one hub, while a well-behaved client stays
//! subscribed and events are published between the attacks: random and truncated frames, bad
//! UTF-8, control frames inside fragmented messages, oversized headers, slowloris upgrades,
//! half-open sockets, and a flood of 1 MiB broadcasts. After each kind `/healthz` answers and the
//! hub's RSS stays under a bound; at the end the good client has every event, once, in order.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The hub's RSS must stay under this through every attack (it idles near 10 MB; the 1 MiB
/// broadcasts pass through it one at a time).
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// A small deterministic generator, so that a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What one hostile connection sends after its upgrade, by kind.
fn hostile_bytes(kind: u64, rng: &mut Lcg) -> Vec<u8> {
    match kind % 5 {
        // Random bytes.
        0 => {
            let n = 1 + rng.next() as usize % 300;
            rng.bytes(n)
        }
        // A valid frame cut short.
        1 => {
            let f = masked_frame(0x81, br#"{"type":"ping","timestamp":"x"}"#);
            let cut = 1 + rng.next() as usize % (f.len() - 1);
            f[..cut].to_vec()
        }
        // Bad UTF-8 in a text message.
        2 => masked_frame(0x81, &[0xc3, 0x28, 0xff, 0xfe]),
        // Control frames inside a fragmented message, then a continuation that never ends it.
        3 => [
            masked_frame(0x01, br#"{"type":"#),
            masked_frame(0x89, b"p"),
            masked_frame(0x8A, b"q"),
            masked_frame(0x00, br#""ping""#),
        ]
        .concat(),
        // A frame claiming a huge length.
        _ => vec![
            0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
        ],
    }
}

/// Publishes `n` alerts numbered from `from`.
async fn publish(hub: &HubProcess, from: u64, n: u64) {
    for i in from..from + n {
        let (status, body) = hub
            .broadcast(&format!(
                r#"{{"event_type":"ALERT_FIRED","event_id":"a{i}","payload":{{"seq":{i}}}}}"#
            ))
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

/// `/healthz` answers and RSS is under the bound.
async fn still_well(hub: &HubProcess, after: &str) {
    let r = reqwest::get(hub.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200, "healthz after {after}");
    let rss = hub.rss_kib();
    assert!(rss < RSS_BOUND_KIB, "RSS {rss} KiB after {after}");
}

#[tokio::test]
async fn hostile_clients_do_not_hurt_anyone_else() {
    let hub = HubProcess::start("  websocket:\n    max_connections: 10000\n");
    let mut good = hub.ws().await;
    subscribe(&mut good, &["ALERT_FIRED"], &[], &[]).await;
    let mut rng = Lcg(0x5eed);
    let mut published = 0;

    // Thousands of hostile frames, 2,000 connections, 100 at a time.
    for round in 0..20u64 {
        let mut tasks = Vec::new();
        for k in 0..100u64 {
            let bytes = hostile_bytes(round * 100 + k, &mut rng);
            let addr = hub.addr;
            tasks.push(tokio::spawn(async move {
                let mut s = raw_ws(addr).await;
                let _ = s.write_all(&bytes).await;
                let mut sink = [0u8; 512];
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        publish(&hub, published, 5).await;
        published += 5;
    }
    still_well(&hub, "hostile frames").await;

    // Oversized request headers: refused, nothing else disturbed.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let big = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 101"),
        "an oversized request was upgraded"
    );
    publish(&hub, published, 5).await;
    published += 5;
    still_well(&hub, "oversized headers").await;

    // 500 slowloris upgrades (half a request line each) and 500 half-open sockets, all held.
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(hub.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpg")
                .await
                .unwrap();
        }
        held.push(s);
    }
    publish(&hub, published, 20).await;
    published += 20;
    still_well(&hub, "slowloris and half-open sockets").await;
    drop(held);

    // A flood of 1 MiB broadcasts to a type nobody reads.
    let pad = "x".repeat(1024 * 1024 - 200);
    let floods: Vec<_> = (0..40)
        .map(|_| {
            let body = format!(r#"{{"event_type":"GPU_UPDATE","payload":{{"pad":"{pad}"}}}}"#);
            let url = hub.url("/api/v1/streaming/broadcast");
            tokio::spawn(async move {
                let r = reqwest::Client::new().post(url).body(body).send().await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    for f in floods {
        let status = f.await.unwrap();
        assert!(matches!(status, 202 | 413 | 503), "flood answered {status}");
    }
    publish(&hub, published, 5).await;
    published += 5;
    still_well(&hub, "1 MiB broadcasts").await;

    // The good client got every alert, once, in order, and is still connected.
    for i in 0..published {
        let m = recv(&mut good).await;
        assert_eq!(m["event_id"], format!("a{i}"), "{m}");
    }
    expect_silence(&mut good, Duration::from_millis(300)).await;
    send(&mut good, &serde_json::json!({"type": "ping"})).await;
    assert_eq!(recv(&mut good).await["type"], "pong");
}
