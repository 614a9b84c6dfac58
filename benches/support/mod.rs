//! Shared bench fixtures: clients and subscriptions spread like the `dashboards` scenario.
#![allow(dead_code)]

use std::sync::Arc;
use streamhub::client::ClientHandle;
use streamhub::event::EventType;
use streamhub::subscription::Subscription;

/// 50 clusters, 10 namespaces.
pub const CLUSTERS: usize = 50;
pub const NAMESPACES: usize = 10;

/// A client with a ring of `queue` frames.
pub fn client(queue: usize) -> Arc<ClientHandle> {
    Arc::new(ClientHandle::new(
        0,
        "127.0.0.1:1".parse().unwrap(),
        queue,
        true,
    ))
}

/// One subscription like a dashboard's: 1–3 event types, 1–5 of 50 clusters, 0–2 of 10 namespaces.
pub fn dashboard_subscription(rng: &mut fastrand::Rng) -> Subscription {
    let mut pick = |n: usize, lo: usize, hi: usize, name: &str| -> Vec<String> {
        let k = rng.usize(lo..=hi);
        let mut v: Vec<String> = (0..k)
            .map(|_| format!("{name}{}", rng.usize(0..n)))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let clusters = pick(CLUSTERS, 1, 5, "cluster-");
    let namespaces = pick(NAMESPACES, 0, 2, "ns-");
    let mut types: Vec<EventType> = (0..rng.usize(1..=3))
        .map(|_| EventType::ALL[rng.usize(0..EventType::ALL.len())])
        .collect();
    types.sort();
    types.dedup();
    Subscription {
        event_types: types,
        cluster_filter: clusters,
        namespace_filter: namespaces,
    }
}

/// A subscription to every event type, unfiltered.
pub fn everything() -> Subscription {
    Subscription {
        event_types: EventType::ALL.to_vec(),
        cluster_filter: vec![],
        namespace_filter: vec![],
    }
}

/// A GPU_UPDATE for an 8-GPU node: about 1 KB.
pub fn gpu_update_8() -> String {
    let gpus: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"index": i, "utilization_gpu_percent": 78, "utilization_memory_percent": 55,
                                    "temperature_celsius": 62, "power_draw_watts": 285.5}))
        .collect();
    serde_json::json!({"event_type": "GPU_UPDATE", "event_id": "evt_001",
        "cluster_id": "cluster-7", "cluster_name": "prod-east-1", "timestamp": "2024-12-24T10:00:05Z",
        "payload": {"node_name": "worker-gpu-01", "namespace": "ns-3", "gpus": gpus}})
    .to_string()
}

/// A small event (about 90 bytes) with its id and timestamp, so nothing is generated.
pub fn tiny_event() -> String {
    r#"{"event_type":"ALERT_FIRED","event_id":"e1","timestamp":"2024-12-24T10:00:00Z","payload":{}}"#.to_string()
}
