//! The MessagePack subprotocol (`aiops.v1.msgpack`): negotiated at the upgrade, every message
//! both ways a binary frame holding the same map as the JSON one, each event encoded once
//! however many MessagePack clients get it.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// An upgrade request to `/ws` offering `protocols`.
fn request_offering(
    hub: &HubProcess,
    protocols: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = hub
        .url("/ws")
        .replace("http", "ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    req
}

/// A client offering `protocols`; returns it and the subprotocol the hub chose.
async fn offering(hub: &HubProcess, protocols: &str) -> (Ws, Option<String>) {
    let req = request_offering(hub, protocols);
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, chosen)
}

async fn send_mp(ws: &mut Ws, v: &Value) {
    let bytes = rmp_serde::to_vec(v).unwrap();
    ws.send(Message::binary(bytes)).await.unwrap();
}

/// The next message, which must be a binary frame of MessagePack.
async fn recv_mp(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        match m {
            Message::Binary(b) => return rmp_serde::from_slice(&b).expect("MessagePack map"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn msgpack_clients_get_the_same_maps_with_each_event_encoded_once() {
    let hub = HubProcess::start("  shards: 2\n");
    let mut json_client = hub.ws().await;
    subscribe(&mut json_client, &["ALERT_FIRED"], &[], &[]).await;
    let mut mp = Vec::new();
    for _ in 0..3 {
        let (mut ws, chosen) = offering(&hub, "aiops.v1.msgpack, aiops.v1.json").await;
        assert_eq!(chosen.as_deref(), Some("aiops.v1.msgpack"));
        send_mp(
            &mut ws,
            &json!({"type": "subscribe", "subscription": {"event_types": ["ALERT_FIRED"]}}),
        )
        .await;
        let r = recv_mp(&mut ws).await;
        assert_eq!(r["type"], "subscribed", "{r}");
        assert_eq!(r["event_types"], json!(["ALERT_FIRED"]));
        mp.push(ws);
    }
    let (code, _) = hub
        .broadcast(r#"{"event_type":"ALERT_FIRED","event_id":"m1","cluster_id":"c1","payload":{"severity":"CRITICAL","value":1.5,"tags":["a",null,true]}}"#)
        .await;
    assert_eq!(code, 202);
    let as_json = recv(&mut json_client).await;
    for ws in &mut mp {
        assert_eq!(
            recv_mp(ws).await,
            as_json,
            "the same map as the JSON message"
        );
    }
    let status = hub.get_json("/api/v1/streaming/status").await;
    assert_eq!(
        status["msgpack"]["events_encoded"], 1,
        "one encoding for three clients on two shards: {status}"
    );

    // A text frame, or bytes that are not MessagePack: INVALID_MESSAGE, connection stays.
    let ws = &mut mp[0];
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(recv_mp(ws).await["code"], "INVALID_MESSAGE");
    ws.send(Message::binary(vec![0x82u8, 0xa1, b'a']))
        .await
        .unwrap();
    assert_eq!(recv_mp(ws).await["code"], "INVALID_MESSAGE");
    send_mp(ws, &json!({"type": "ping", "timestamp": 7})).await;
    let pong = recv_mp(ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["timestamp"], 7);
}

#[tokio::test]
async fn json_is_the_default_and_can_be_asked_for() {
    let hub = HubProcess::start("");
    for offer in [
        "aiops.v1.json",
        "graphql-ws, aiops.v1.json, aiops.v1.msgpack",
    ] {
        let (mut ws, chosen) = offering(&hub, offer).await;
        assert_eq!(chosen.as_deref(), Some("aiops.v1.json"), "{offer}");
        subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    }
    // Offering only what the hub does not speak: refused with a clear error, not a connection
    // the client would have to fail.
    match tokio_tungstenite::connect_async(request_offering(&hub, "graphql-ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("aiops.v1.msgpack"), "{body}");
        }
        other => panic!("expected 400, got {other:?}"),
    }
}
