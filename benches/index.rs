//! Subscription index benches: matching one event against 10k and 100k dashboard subscriptions,
//! and the 10k-subscribe storm (one snapshot per change versus the index thread's batching).
//!
//! Run: `cargo bench --bench index`

mod support;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::sync::Arc;
use streamhub::client::ClientHandle;
use streamhub::event::EventType;
use streamhub::index::{IndexBuilder, IndexOp, SubscriptionIndex};
use streamhub::subscription::Subscription;
use support::*;

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match_one_event");
    for n in [10_000usize, 100_000] {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut b = IndexBuilder::default();
        let ops: Vec<IndexOp> = (0..n)
            .map(|_| IndexOp::Set(client(4), vec![dashboard_subscription(&mut rng)]))
            .collect();
        let snap = b.apply(ops);
        let events: Vec<(EventType, String, Option<String>)> = (0..256)
            .map(|_| {
                let ns = rng
                    .bool()
                    .then(|| format!("ns-{}", rng.usize(0..NAMESPACES)));
                (
                    EventType::ALL[rng.usize(0..11)],
                    format!("cluster-{}", rng.usize(0..CLUSTERS)),
                    ns,
                )
            })
            .collect();
        let mut i = 0;
        g.bench_function(format!("{n}_subscriptions"), |bench| {
            bench.iter(|| {
                let (t, c, ns) = &events[i % events.len()];
                i += 1;
                let mut count = 0u32;
                snap.for_each_match(*t, Some(c), ns.as_deref(), |client| {
                    black_box(client);
                    count += 1;
                });
                black_box(count)
            })
        });
    }
    g.finish();
}

fn storm(c: &mut Criterion) {
    let mut g = c.benchmark_group("subscribe_storm_10k");
    g.sample_size(10);
    let n = 10_000;
    // Worst case for copy-on-write: every client subscribes to the same key.
    let same_key = || {
        (0..n)
            .map(|_| (client(4), vec![everything()]))
            .collect::<Vec<_>>()
    };
    g.bench_function("same_key/one_snapshot_per_change", |bench| {
        bench.iter_batched(
            same_key,
            |clients| {
                let mut b = IndexBuilder::default();
                for (h, s) in clients {
                    black_box(b.apply([IndexOp::Set(h, s)]));
                }
            },
            BatchSize::PerIteration,
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every client's `subscribe` in flight at once, through a fresh index thread.
    let through_index_thread = |clients: Vec<(Arc<ClientHandle>, Vec<Subscription>)>| {
        let index = Arc::new(SubscriptionIndex::start(1, usize::MAX).unwrap());
        rt.block_on(futures_util::future::join_all(
            clients
                .into_iter()
                .map(|(h, s)| index.update(IndexOp::Set(h, s))),
        ));
    };
    g.bench_function("same_key/index_thread", |bench| {
        bench.iter_batched(same_key, through_index_thread, BatchSize::PerIteration)
    });
    let mut rng = fastrand::Rng::with_seed(3);
    let mut dashboards = || {
        (0..n)
            .map(|_| (client(4), vec![dashboard_subscription(&mut rng)]))
            .collect::<Vec<_>>()
    };
    g.bench_function("dashboards/index_thread", |bench| {
        bench.iter_batched(
            &mut dashboards,
            through_index_thread,
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, matching, storm);
criterion_main!(benches);
