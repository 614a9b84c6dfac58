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

/// A WebSocket on a raw socket with a small receive buffer, for a client that never reads:
/// what the hub sends it soon stays in the hub.
async fn stalled_ws(addr: std::net::SocketAddr, from: std::net::IpAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    socket.bind(std::net::SocketAddr::new(from, 0)).ok()?;
    let mut s = socket.connect(addr).await.ok()?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        got.push(byte[0]);
    }
    got.starts_with(b"HTTP/1.1 101").then_some(s)
}

/// A masked text frame of `json`.
fn text(json: &serde_json::Value) -> Vec<u8> {
    masked_frame(0x81, json.to_string().as_bytes())
}

/// How much the hub's RSS grew, in MiB, since `before` KiB (once it settles).
async fn grown_mib(hub: &HubProcess, before: u64) -> f64 {
    tokio::time::sleep(Duration::from_millis(700)).await;
    hub.rss_kib().saturating_sub(before) as f64 / 1024.0
}

/// Publishes `n` alerts, one key each (its own namespace), `size` bytes of payload, in batches.
async fn publish_keys(hub: &HubProcess, token: &str, n: usize, size: usize) {
    let pad = "k".repeat(size);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                serde_json::json!({"event_type": "GPU_UPDATE", "event_id": format!("k{i}"),
                "cluster_id": "c1", "payload": {"namespace": format!("ns{i}"), "pad": pad}})
            })
            .collect();
        broadcast_as(hub, token, serde_json::Value::Array(batch).to_string()).await;
    }
}

/// What one connection of each kind can pin, measured with hostile clients that never read
/// (README, "Limits"): unauthenticated ones echoing huge timestamps, authenticated ones
/// asking for large replies, ones stalled with a full ring, and ones stalled mid-snapshot
/// over 8,000 keys of 1 KB. A good client gets every event once throughout.
#[tokio::test]
async fn clients_that_never_read_pin_bounded_memory() {
    let hub = HubProcess::start(
        "  websocket:\n    max_connections: 1000\n    max_unauthenticated_per_address: 200\n  \
         auth:\n    enabled: true\n    timeout_seconds: 30\n    static_tokens:\n      \
         - {token: ops, subject: ops, roles: [internal]}\n      - {token: user, subject: u}\n",
    );
    let mut good = authed(&hub, "user").await;
    subscribe(&mut good, &["ALERT_FIRED"], &[], &[]).await;
    let alerts = 300;
    // The good client reads all along.
    let good = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < alerts {
            match next_seen(&mut good, Duration::from_secs(60)).await {
                Seen::Json(m) => ids.push(m["event_id"].as_str().unwrap_or("?").to_string()),
                other => panic!("good client: {other:?}"),
            }
        }
        expect_silence(&mut good, Duration::from_millis(300)).await;
        ids
    });
    let mut sent = 0;
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    publish_keys(&hub, "ops", 8_000, 1_000).await;
    let mut held = Vec::new();
    let mut report = Vec::new();

    // Stalled mid-snapshot: 20 clients ask for the latest of 8,000 keys and never read.
    let before = hub.rss_kib();
    for _ in 0..20 {
        let mut s = stalled_ws(hub.addr, local).await.expect("upgrade");
        let _ = s
            .write_all(&text(&serde_json::json!({"type": "auth", "token": "user"})))
            .await;
        let sub = serde_json::json!({"type": "subscribe", "snapshot": true,
            "subscription": {"event_types": ["GPU_UPDATE"]}});
        let _ = s.write_all(&text(&sub)).await;
        held.push(s);
    }
    let snapshot = grown_mib(&hub, before).await;
    report.push(("stalled mid-snapshot", 20, snapshot));
    assert!(
        snapshot <= 48.0,
        "20 stalled snapshots grew the hub by {snapshot:.1} MiB"
    );

    // Unauthenticated, each ping echoing 60 KB: refused at once now.
    let before = hub.rss_kib();
    let stamp = "t".repeat(60_000);
    for _ in 0..30 {
        let mut s = stalled_ws(hub.addr, local).await.expect("upgrade");
        for _ in 0..64 {
            let ping = serde_json::json!({"type": "ping", "timestamp": stamp});
            if s.write_all(&text(&ping)).await.is_err() {
                break;
            }
        }
        held.push(s);
    }
    let unauthenticated = grown_mib(&hub, before).await;
    report.push(("unauthenticated, 60 KB timestamps", 30, unauthenticated));

    // Authenticated, asking again and again for a 16 KB reply.
    let before = hub.rss_kib();
    let clusters: Vec<String> = (0..64).map(|i| format!("{i:0>250}")).collect();
    let big = serde_json::json!({"type": "subscribe",
        "subscription": {"event_types": ["CHAT_MESSAGE"], "cluster_filter": clusters}});
    for _ in 0..30 {
        let mut s = stalled_ws(hub.addr, local).await.expect("upgrade");
        let _ = s
            .write_all(&text(&serde_json::json!({"type": "auth", "token": "user"})))
            .await;
        for _ in 0..100 {
            if s.write_all(&text(&big)).await.is_err() {
                break;
            }
        }
        held.push(s);
    }
    let authenticated = grown_mib(&hub, before).await;
    report.push(("authenticated, 16 KB replies", 30, authenticated));

    // Stalled with a full ring: subscribed, never reading, 300 alerts of 4 KB.
    let before = hub.rss_kib();
    for _ in 0..30 {
        let mut s = stalled_ws(hub.addr, local).await.expect("upgrade");
        let _ = s
            .write_all(&text(&serde_json::json!({"type": "auth", "token": "user"})))
            .await;
        let sub = serde_json::json!({"type": "subscribe",
            "subscription": {"event_types": ["ALERT_FIRED"]}});
        let _ = s.write_all(&text(&sub)).await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pad = "r".repeat(4_000);
    for _ in 0..alerts {
        let body = format!(
            r#"{{"event_type":"ALERT_FIRED","event_id":"a{sent}","payload":{{"pad":"{pad}"}}}}"#
        );
        broadcast_as(&hub, "ops", body).await;
        sent += 1;
    }
    let full_ring = grown_mib(&hub, before).await;
    report.push(("stalled with a full ring (100 of 4 KB)", 30, full_ring));
    for (kind, n, mib) in &report {
        eprintln!(
            "{kind}: {n} clients, hub grew {mib:.1} MiB ({:.0} KiB each)",
            mib * 1024.0 / *n as f64
        );
    }
    // The bounds of README "Limits", per connection: replies at most 256 KiB (+ reading
    // buffers), a ring's frames shared with every client that holds them.
    assert!(unauthenticated <= 16.0, "{report:?}");
    assert!(authenticated <= 30.0 * 0.75, "{report:?}");
    assert!(full_ring <= 3.0 + 30.0 * 0.25, "{report:?}");

    let r = reqwest::get(hub.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let expected: Vec<String> = (0..sent).map(|i| format!("a{i}")).collect();
    assert_eq!(
        good.await.unwrap(),
        expected,
        "the good client got every alert once"
    );
    drop(held);
}

/// Reads server frames from a raw socket until a close frame or the end: the pongs seen, and
/// the close code (`closed` is set once it arrives).
async fn pongs_and_close(
    mut s: tokio::net::tcp::OwnedReadHalf,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Option<u16>) {
    let (mut buf, mut chunk, mut pongs) = (Vec::new(), vec![0u8; 65536], 0);
    loop {
        let (frames, used) = server_frames(&buf);
        for (op, payload) in frames {
            match op {
                0xA => pongs += 1,
                0x8 if payload.len() >= 2 => {
                    closed.store(true, std::sync::atomic::Ordering::SeqCst);
                    return (pongs, Some(u16::from_be_bytes([payload[0], payload[1]])));
                }
                _ => {}
            }
        }
        buf.drain(..used);
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (pongs, None),
        }
    }
}

#[tokio::test]
async fn a_ping_frame_flood_is_rate_limited_and_closed() {
    let hub = HubProcess::start(
        "  auth:\n    enabled: true\n    static_tokens:\n      - {token: u, subject: u}\n",
    );
    let (read, mut write) = raw_ws(hub.addr).await.into_split();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn(pongs_and_close(read, closed.clone()));
    let burst: Vec<u8> = (0..10_000).flat_map(|_| masked_frame(0x89, b"p")).collect();
    let started = std::time::Instant::now();
    let mut frames = 0;
    while !closed.load(std::sync::atomic::Ordering::SeqCst)
        && started.elapsed() < Duration::from_secs(2)
    {
        if write.write_all(&burst).await.is_err() {
            break;
        }
        frames += 10_000;
    }
    let (pongs, code) = reader.await.unwrap();
    assert_eq!(
        code,
        Some(1008),
        "after {frames} ping frames and {pongs} pongs"
    );
    assert!(pongs <= 200, "{pongs} pongs for {frames} ping frames");
    let r = reqwest::get(hub.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn silent_sockets_never_lock_out_a_user_who_authenticates() {
    let hub = HubProcess::start(
        "  websocket:\n    max_connections: 40\n  auth:\n    enabled: true\n    \
         timeout_seconds: 30\n    static_tokens:\n      - {token: u, subject: u}\n      \
         - {token: ops, subject: ops, roles: [internal, admin]}\n",
    );
    let mut good = authed(&hub, "u").await;
    subscribe(&mut good, &["ALERT_FIRED"], &[], &[]).await;
    // 40 sockets that never send `auth`: with a budget of 10 (a quarter of max_connections)
    // the oldest are evicted as new ones come.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(raw_ws(hub.addr).await);
    }
    broadcast_as(
        &hub,
        "ops",
        r#"{"event_type":"ALERT_FIRED","event_id":"s1"}"#.into(),
    )
    .await;
    let user = authed(&hub, "u").await;
    let status = hub.get_json_as("/api/v1/streaming/status", "ops").await;
    let pending = status["connections"]["unauthenticated"].as_u64().unwrap();
    assert!(pending <= 10, "{status}");
    // The evicted were told why.
    let code = raw_close_code(&mut silent[0]).await;
    assert_eq!(code, 1008);
    drop((user, silent));

    // One address at its share is refused; another is not.
    let hub2 = HubProcess::start(
        "  websocket:\n    max_unauthenticated_connections: 50\n    \
         max_unauthenticated_per_address: 5\n  auth:\n    enabled: true\n    \
         static_tokens:\n      - {token: u, subject: u}\n",
    );
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let two: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut from_one = Vec::new();
    for _ in 0..5 {
        from_one.push(stalled_ws(hub2.addr, one).await.expect("within the share"));
    }
    assert!(
        stalled_ws(hub2.addr, one).await.is_none(),
        "past the share: refused"
    );
    assert!(
        stalled_ws(hub2.addr, two).await.is_some(),
        "another address"
    );
    broadcast_as(
        &hub,
        "ops",
        r#"{"event_type":"ALERT_FIRED","event_id":"s2"}"#.into(),
    )
    .await;
    for id in ["s1", "s2"] {
        assert_eq!(recv(&mut good).await["event_id"], id);
    }
    expect_silence(&mut good, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_client_library_that_keeps_sending_still_reads_why_it_was_closed() {
    use futures_util::SinkExt;
    let hub = HubProcess::start("");
    let mut good = hub.ws().await;
    subscribe(&mut good, &["ALERT_FIRED"], &[], &[]).await;
    let mut flooder = hub.ws().await;
    // 300 pings in a loop, each sent and flushed, none read: past the burst the hub warns,
    // then closes 1008 while the client is still sending (the last ones arrive well after).
    // A hub that closed its socket at once would answer the late ones with a reset, and the
    // library would report the reset from `send`, not the close the hub sent first.
    for i in 0..300 {
        let ping = tokio_tungstenite::tungstenite::Message::text(r#"{"type":"ping"}"#);
        if let Err(e) = flooder.send(ping).await {
            panic!("send {i} failed before the client read the close: {e}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut limited = false;
    let code = loop {
        match next_seen(&mut flooder, Duration::from_secs(5)).await {
            Seen::Json(m) => limited |= m["code"] == "RATE_LIMITED",
            Seen::Closed(code) => break code,
            other => panic!("no close frame reached the client: {other:?}"),
        }
    };
    assert!(limited, "the client read RATE_LIMITED");
    assert_eq!(code, Some(1008));
    hub.broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"after"}"#)
        .await;
    assert_eq!(recv(&mut good).await["event_id"], "after");
}
