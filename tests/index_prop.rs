//! Properties, through random sequences of subscription changes applied in random batches:
//! the inverted index answers exactly what a naive scan of every subscription answers; and with
//! sharded Pub/Sub (an event arriving once on `{prefix}:all` and once on its cluster's channel,
//! each only if the index's demand asks for that channel) every matching client gets it exactly
//! once.

use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use streamhub::broker::Scope;
use streamhub::client::ClientHandle;
use streamhub::event::EventType;
use streamhub::index::{IndexBuilder, IndexOp, Snapshot};
use streamhub::subscription::Subscription;

const CLUSTERS: &[&str] = &["c0", "c1", "c2", "c3"];
const NAMESPACES: &[&str] = &["n0", "n1", "n2"];
const CLIENTS: usize = 12;

fn event_type() -> impl Strategy<Value = EventType> {
    (0..4usize).prop_map(|i| EventType::ALL[i])
}

fn subscription() -> impl Strategy<Value = Subscription> {
    (
        prop::collection::btree_set(event_type(), 1..3),
        prop::collection::btree_set(0..CLUSTERS.len(), 0..3),
        prop::collection::btree_set(0..NAMESPACES.len(), 0..3),
    )
        .prop_map(|(t, c, n)| Subscription {
            event_types: t.into_iter().collect(),
            cluster_filter: c.into_iter().map(|i| CLUSTERS[i].to_string()).collect(),
            namespace_filter: n.into_iter().map(|i| NAMESPACES[i].to_string()).collect(),
        })
}

#[derive(Debug, Clone)]
enum Change {
    Set(usize, Vec<Subscription>),
    Remove(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..CLIENTS, prop::collection::vec(subscription(), 0..4)).prop_map(|(c, s)| Change::Set(c, s)),
        1 => (0..CLIENTS).prop_map(Change::Remove),
    ]
}

fn event() -> impl Strategy<Value = (EventType, Option<&'static str>, Option<&'static str>)> {
    (
        event_type(),
        prop::option::of(prop::sample::select(CLUSTERS)),
        prop::option::of(prop::sample::select(NAMESPACES)),
    )
}

/// Clients, the model of their subscriptions, and the index under test.
struct World {
    handles: Vec<Arc<ClientHandle>>,
    model: HashMap<usize, Vec<Subscription>>,
    builder: IndexBuilder,
}

impl World {
    fn new() -> Self {
        let addr = "127.0.0.1:1".parse().unwrap();
        World {
            handles: (0..CLIENTS)
                .map(|_| Arc::new(ClientHandle::new(0, addr, 4, true)))
                .collect(),
            model: HashMap::new(),
            builder: IndexBuilder::default(),
        }
    }

    /// Applies one batch to the model and the index; returns the published snapshot.
    fn apply(&mut self, batch: Vec<Change>) -> Snapshot {
        let mut ops = Vec::new();
        for c in batch {
            match c {
                Change::Set(i, subs) => {
                    self.model.insert(i, subs.clone());
                    ops.push(IndexOp::Set(self.handles[i].clone(), subs));
                }
                Change::Remove(i) => {
                    self.model.remove(&i);
                    ops.push(IndexOp::Remove(self.handles[i].id));
                }
            }
        }
        self.builder.apply(ops)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn index_equals_naive_scan(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..6), 1..8),
        events in prop::collection::vec(event(), 1..24),
    ) {
        let mut world = World::new();
        for batch in batches {
            let snapshot = world.apply(batch);
            let (handles, model) = (&world.handles, &world.model);
            for (ty, cluster, ns) in &events {
                let mut got = BTreeSet::new();
                snapshot.for_each_match(*ty, *cluster, *ns, |c| {
                    got.insert(handles.iter().position(|h| Arc::ptr_eq(h, c)).unwrap());
                });
                let want: BTreeSet<usize> = model
                    .iter()
                    .filter(|(_, subs)| subs.iter().any(|s| s.matches(*ty, *cluster, *ns)))
                    .map(|(i, _)| *i)
                    .collect();
                prop_assert_eq!(got, want, "event {:?} {:?} {:?}", ty, cluster, ns);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn sharded_arrivals_deliver_exactly_once(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..6), 1..8),
        events in prop::collection::vec(event(), 1..24),
    ) {
        let mut world = World::new();
        let mut seq = 0u64;
        for batch in batches {
            let snapshot = world.apply(batch);
            let (handles, model) = (&world.handles, &world.model);
            // The demand is exactly what the subscriptions name.
            let demand = world.builder.demand();
            let all_subs = || model.values().flatten();
            prop_assert_eq!(demand.any_cluster, all_subs().any(|s| s.cluster_filter.is_empty()));
            let named: BTreeSet<String> =
                all_subs().flat_map(|s| s.cluster_filter.iter().cloned()).collect();
            let held: BTreeSet<String> = demand.clusters.iter().map(|c| c.to_string()).collect();
            prop_assert_eq!(held, named);
            for (ty, cluster, ns) in &events {
                let mut got: Vec<usize> = Vec::new();
                let mut arrive = |scope: Scope, seq: u64| {
                    snapshot.for_each_in_scope(scope, *ty, *cluster, *ns, seq, |c| {
                        got.push(handles.iter().position(|h| Arc::ptr_eq(h, c)).unwrap());
                    });
                };
                // The arrivals in either order, each only on a channel the demand holds.
                let on_all = demand.any_cluster;
                let on_cluster = cluster.is_some_and(|c| demand.clusters.contains(c));
                let order = [(Scope::Unfiltered, on_all), (Scope::Filtered, on_cluster)];
                let reversed = seq % 2 == 1;
                for k in 0..2 {
                    let (scope, held) = order[if reversed { 1 - k } else { k }];
                    seq += 1;
                    if held {
                        arrive(scope, seq);
                    }
                }
                let want: BTreeSet<usize> = model
                    .iter()
                    .filter(|(_, subs)| subs.iter().any(|s| s.matches(*ty, *cluster, *ns)))
                    .map(|(i, _)| *i)
                    .collect();
                let unique: BTreeSet<usize> = got.iter().copied().collect();
                prop_assert_eq!(unique.len(), got.len(), "a client got it twice: {:?}", got);
                prop_assert_eq!(unique, want, "event {:?} {:?} {:?}", ty, cluster, ns);
            }
        }
    }
}
