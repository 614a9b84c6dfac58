//! What permessage-deflate costs and saves per event, with the hub's own compressor
//! (`streamhub::frame::deflate::compress`, fast level, no context takeover): one compression per
//! event, shared by every client that negotiated it. Prints the bytes saved for each sample.
//!
//! Run: `cargo bench --bench deflate`

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::hint::black_box;
use streamhub::frame::deflate::compress;

/// Events shaped like the design document's examples (sections 5.1–5.4).
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let alert = json!({"type": "event", "event_id": "evt_001", "event_type": "ALERT_FIRED",
        "cluster_id": "550e8400-e29b-41d4-a716-446655440000", "cluster_name": "prod-east-1",
        "timestamp": "2024-12-24T10:00:05Z",
        "payload": {"fingerprint": "abc123", "alertname": "HighCPUUsage", "severity": "WARNING",
                    "namespace": "production"}});
    let gpus: Vec<_> = (0..8)
        .map(|i| {
            json!({"index": i, "utilization_gpu_percent": 70 + i, "utilization_memory_percent": 55,
                        "temperature_celsius": 62, "power_draw_watts": 285.5})
        })
        .collect();
    let gpu = json!({"type": "event", "event_id": "evt_002", "event_type": "GPU_UPDATE",
        "cluster_id": "550e8400-e29b-41d4-a716-446655440000", "timestamp": "2024-12-24T10:00:05Z",
        "payload": {"node_name": "worker-gpu-01", "gpus": gpus}});
    let metric = json!({"type": "event", "event_id": "evt_003", "event_type": "METRIC_UPDATE",
        "cluster_id": "550e8400-e29b-41d4-a716-446655440000", "timestamp": "2024-12-24T10:00:05Z",
        "payload": {"metric_name": "container_cpu_usage_seconds_total", "namespace": "production",
                    "labels": {"pod": "api-7d9f8b6c5-x2k4p", "container": "api"}, "value": 0.85,
                    "threshold": 0.8}});
    vec![
        ("alert", serde_json::to_vec(&alert).unwrap()),
        ("gpu_8", serde_json::to_vec(&gpu).unwrap()),
        ("metric", serde_json::to_vec(&metric).unwrap()),
    ]
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for (name, message) in samples() {
        let mut out = Vec::new();
        compress(&message, &mut out, false);
        println!(
            "{name}: {} -> {} bytes ({:.0}% saved)",
            message.len(),
            out.len(),
            100.0 * (1.0 - out.len() as f64 / message.len() as f64)
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(message.len());
                compress(black_box(&message), &mut out, false);
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
