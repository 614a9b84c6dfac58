//! Routing benches: parsing an event (serde_json view versus simd-json) and the encode-once
//! fan-out of one event to 10k client rings.
//!
//! Run: `cargo bench --bench fanout`

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::Arc;
use streamhub::config::HistoryConfig;
use streamhub::entity::EntityKeys;
use streamhub::event::parse_event;
use streamhub::history::History;
use streamhub::index::{IndexOp, SubscriptionIndex};
use streamhub::metrics::Metrics;
use streamhub::router::Router;
use support::*;

/// The simd-json alternative: a borrowed value tree, the same checks, then the same splice.
fn parse_with_simd_json(input: &[u8]) -> usize {
    let mut copy = input.to_vec(); // simd-json unescapes in place; the original bytes are spliced
    let v = simd_json::to_borrowed_value(&mut copy).expect("valid");
    use simd_json::prelude::*;
    let obj = v.as_object().expect("object");
    let ty = obj
        .get("event_type")
        .and_then(|t| t.as_str())
        .expect("type");
    let cluster = obj.get("cluster_id").and_then(|t| t.as_str());
    let payload = obj.get("payload").and_then(|p| p.as_object());
    let ns = payload
        .and_then(|p| p.get("namespace"))
        .and_then(|n| n.as_str());
    let mut out = Vec::with_capacity(input.len() + 32);
    out.extend_from_slice(br#"{"type":"event","#);
    out.extend_from_slice(&input[1..]);
    ty.len() + cluster.map_or(0, str::len) + ns.map_or(0, str::len) + out.len()
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_event");
    let keys = EntityKeys::default();
    for (name, event) in [
        ("gpu_update_1kb", gpu_update_8()),
        ("small_90b", tiny_event()),
    ] {
        let bytes = event.into_bytes();
        g.bench_function(format!("{name}/serde_json_view"), |b| {
            b.iter(|| {
                black_box(
                    parse_event(black_box(&bytes), &keys)
                        .expect("valid")
                        .message
                        .len(),
                )
            })
        });
        g.bench_function(format!("{name}/simd_json_tree"), |b| {
            b.iter(|| black_box(parse_with_simd_json(black_box(&bytes))))
        });
    }
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let n = 10_000;
    let index = Arc::new(SubscriptionIndex::start(1, usize::MAX).expect("index"));
    let router = Router::new(
        index.clone(),
        Arc::new(Metrics::new(1)),
        Arc::new(History::new(&HistoryConfig::default())),
        1,
        16,
    );
    let clients: Vec<_> = (0..n).map(|_| client(100)).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(futures_util::future::join_all(
        clients
            .iter()
            .map(|h| index.update(IndexOp::Set(h.clone(), vec![everything()]))),
    ));
    let event = gpu_update_8().into_bytes();
    let keys = EntityKeys::default();
    g.throughput(criterion::Throughput::Elements(n as u64));
    g.bench_function("gpu_update_1kb_to_10k_rings", |b| {
        b.iter(|| {
            let parsed = parse_event(&event, &keys).expect("valid");
            router
                .route(parsed)
                .expect("the inbox is drained every time");
            let out = router.drain(0);
            assert_eq!(out.deliveries, n as u64);
            // Keep the rings from filling: the writers' side of the work is not measured here.
            for c in &clients {
                c.ring.pop();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, parsing, fanout);
criterion_main!(benches);
