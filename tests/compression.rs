//! permessage-deflate on `/ws` (RFC 7692), with a raw client that speaks it: negotiated while
//! `websocket.compression` is on (the default), events of 128 bytes or more sent compressed (RSV1) and
//! compressed once however many clients get them, shorter replies sent plain, and compressed
//! client messages inflated. (The Autobahn cases of sections 12 and 13 run through the echo
//! route in tests/conformance.rs.)

mod common;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upgrades offering `extensions`; returns the socket and the response head.
async fn upgrade(hub: &HubProcess, extensions: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n",
        hub.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(
            s.read(&mut byte).await.unwrap() > 0,
            "closed in the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, head)
}

/// One server frame: (first byte, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.unwrap();
    let len = match h[1] & 0x7f {
        126 => u64::from(s.read_u16().await.unwrap()),
        127 => s.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await.unwrap();
    (h[0], payload)
}

/// The next message as JSON, inflating it when RSV1 says so; also whether it was compressed.
async fn next_json(s: &mut TcpStream) -> (Value, bool) {
    loop {
        let (first, mut payload) = read_frame(s).await;
        if first & 0x0f != 0x1 {
            continue; // a ping
        }
        let compressed = first & 0x40 != 0;
        if compressed {
            payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = Vec::with_capacity(payload.len() * 10 + 1024);
            Decompress::new(false)
                .decompress_vec(&payload, &mut out, FlushDecompress::Sync)
                .unwrap();
            payload = out;
        }
        return (serde_json::from_slice(&payload).unwrap(), compressed);
    }
}

/// A masked text frame, compressed (RSV1) or not.
fn client_text(text: &str, compress: bool) -> Vec<u8> {
    if !compress {
        return masked_frame(0x81, text.as_bytes());
    }
    let mut out = Vec::with_capacity(text.len() + 64);
    Compress::new(Compression::default(), false)
        .compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - 4);
    masked_frame(0xC1, &out)
}

#[tokio::test]
async fn events_go_compressed_once_for_every_client_that_asked() {
    let hub = HubProcess::start("  shards: 2\n");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (mut s, head) = upgrade(&hub, "permessage-deflate; client_max_window_bits").await;
        assert!(
            head.to_lowercase().contains(
                "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ),
            "{head}"
        );
        // A compressed subscribe is inflated and understood.
        let sub = json!({"type": "subscribe", "subscription": {"event_types": ["GPU_UPDATE"]}});
        s.write_all(&client_text(&sub.to_string(), true))
            .await
            .unwrap();
        let (reply, compressed) = next_json(&mut s).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert!(!compressed, "a short reply goes plain");
        clients.push(s);
    }
    let mut plain = hub.ws().await;
    subscribe(&mut plain, &["GPU_UPDATE"], &[], &[]).await;
    let gpus: Vec<Value> = (0..8)
        .map(|i| json!({"index": i, "utilization_gpu_percent": 78, "temperature_celsius": 62}))
        .collect();
    let event = json!({"event_type": "GPU_UPDATE", "event_id": "z1", "cluster_id": "c1",
                       "payload": {"node_name": "worker-gpu-01", "gpus": gpus}});
    let (code, _) = hub.broadcast(&event.to_string()).await;
    assert_eq!(code, 202);
    let want = recv(&mut plain).await;
    for s in &mut clients {
        let (got, compressed) = next_json(s).await;
        assert!(compressed, "an event this long goes compressed");
        assert_eq!(got, want, "the same message");
    }
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(
        status["deflate"]["events_compressed"], 1,
        "one compression for three clients on two shards: {status}"
    );
}

#[tokio::test]
async fn compression_can_be_turned_off_and_rsv1_is_then_refused() {
    let hub = HubProcess::start("  websocket:\n    compression: false\n");
    let (mut s, head) = upgrade(&hub, "permessage-deflate").await;
    assert!(
        !head.to_lowercase().contains("sec-websocket-extensions"),
        "{head}"
    );
    s.write_all(&client_text(r#"{"type":"ping"}"#, true))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut s).await, 1002);
}
