//! Property: the inverted index answers exactly what a naive scan of every subscription answers,
//! through random sequences of subscription changes applied in random batches.

use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use streamhub::client::ClientHandle;
use streamhub::event::EventType;
use streamhub::index::{IndexBuilder, IndexOp};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn index_equals_naive_scan(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..6), 1..8),
        events in prop::collection::vec(event(), 1..24),
    ) {
        let addr = "127.0.0.1:1".parse().unwrap();
        let handles: Vec<Arc<ClientHandle>> =
            (0..CLIENTS).map(|_| Arc::new(ClientHandle::new(0, addr, 4, true))).collect();
        let mut model: HashMap<usize, Vec<Subscription>> = HashMap::new();
        let mut builder = IndexBuilder::default();
        for batch in batches {
            let mut ops = Vec::new();
            for c in batch {
                match c {
                    Change::Set(i, subs) => {
                        model.insert(i, subs.clone());
                        ops.push(IndexOp::Set(handles[i].clone(), subs));
                    }
                    Change::Remove(i) => {
                        model.remove(&i);
                        ops.push(IndexOp::Remove(handles[i].id));
                    }
                }
            }
            let snapshot = builder.apply(ops);
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
