//! What clients subscribe to, what events are published, and which clients each event should
//! reach. The matching rule is re-implemented here on purpose: the harness checks the hub, so it
//! does not borrow the hub's code.

use crate::scenario::{PlanKind, SubscriptionPlan};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The event types of the protocol.
pub const EVENT_TYPES: [&str; 11] = [
    "CLUSTER_STATUS_CHANGED",
    "CLUSTER_REGISTERED",
    "CLUSTER_DELETED",
    "METRIC_UPDATE",
    "ALERT_FIRED",
    "ALERT_RESOLVED",
    "GPU_UPDATE",
    "TRACE_RECEIVED",
    "ANOMALY_DETECTED",
    "CHAT_MESSAGE",
    "RCA_COMPLETE",
];

/// One client subscription (indices into the type, cluster and namespace spaces).
#[derive(Debug, Clone, PartialEq)]
pub struct Sub {
    /// Event type indices.
    pub types: Vec<usize>,
    /// Cluster indices; empty = any.
    pub clusters: Vec<usize>,
    /// Namespace indices; empty = any.
    pub namespaces: Vec<usize>,
}

/// One published event's routing attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventAttrs {
    /// Type index.
    pub ty: usize,
    /// Cluster index.
    pub cluster: usize,
    /// Namespace index, if any.
    pub namespace: Option<usize>,
}

impl Sub {
    /// The matching rule of decisions.md.
    pub fn matches(&self, e: &EventAttrs) -> bool {
        self.types.contains(&e.ty)
            && (self.clusters.is_empty() || self.clusters.contains(&e.cluster))
            && (self.namespaces.is_empty()
                || e.namespace.is_none_or(|n| self.namespaces.contains(&n)))
    }

    /// The query of this subscription's event stream (`GET /api/v1/streaming/events`).
    pub fn query(&self) -> String {
        let names = |v: Vec<String>| v.join(",");
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair(
            "event_types",
            &names(
                self.types
                    .iter()
                    .map(|t| EVENT_TYPES[*t].to_string())
                    .collect(),
            ),
        );
        if !self.clusters.is_empty() {
            q.append_pair(
                "cluster_filter",
                &names(self.clusters.iter().map(|c| cluster_name(*c)).collect()),
            );
        }
        if !self.namespaces.is_empty() {
            q.append_pair(
                "namespace_filter",
                &names(self.namespaces.iter().map(|n| namespace_name(*n)).collect()),
            );
        }
        q.finish()
    }

    /// The `subscribe` message of this subscription.
    pub fn message(&self) -> Value {
        json!({"type": "subscribe", "subscription": {
            "event_types": self.types.iter().map(|t| EVENT_TYPES[*t]).collect::<Vec<_>>(),
            "cluster_filter": self.clusters.iter().map(|c| cluster_name(*c)).collect::<Vec<_>>(),
            "namespace_filter": self.namespaces.iter().map(|n| namespace_name(*n)).collect::<Vec<_>>(),
        }})
    }
}

/// The name of cluster `i`.
pub fn cluster_name(i: usize) -> String {
    format!("cluster-{i}")
}

/// The name of namespace `i`.
pub fn namespace_name(i: usize) -> String {
    format!("ns-{i}")
}

/// `k` distinct values below `n`, sorted.
fn pick(rng: &mut fastrand::Rng, n: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..k.min(n)).map(|_| rng.usize(0..n)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The subscription of client `i` under `plan` (deterministic for a seed).
pub fn subscription_for(plan: &SubscriptionPlan, rng: &mut fastrand::Rng) -> Sub {
    let (clusters, namespaces) = (plan.clusters, plan.namespaces);
    match plan.kind {
        PlanKind::Everything => Sub {
            types: (0..EVENT_TYPES.len()).collect(),
            clusters: vec![],
            namespaces: vec![],
        },
        PlanKind::Dashboards => {
            let k = rng.usize(1..=3);
            let c = rng.usize(1..=5);
            let n = rng.usize(0..=2);
            Sub {
                types: pick(rng, EVENT_TYPES.len(), k),
                clusters: pick(rng, clusters, c),
                namespaces: pick(rng, namespaces, n),
            }
        }
        PlanKind::Single => Sub {
            types: vec![6],
            clusters: vec![0],
            namespaces: vec![],
        },
    }
}

/// The next event's attributes under `plan`.
pub fn next_event(plan: &SubscriptionPlan, rng: &mut fastrand::Rng) -> EventAttrs {
    match plan.kind {
        PlanKind::Dashboards => EventAttrs {
            ty: rng.usize(0..EVENT_TYPES.len()),
            cluster: rng.usize(0..plan.clusters),
            namespace: (rng.usize(0..3) > 0).then(|| rng.usize(0..plan.namespaces)),
        },
        PlanKind::Everything | PlanKind::Single => EventAttrs {
            ty: 6,
            cluster: 0,
            namespace: None,
        },
    }
}

/// The JSON body of an event with sequence `seq` from publisher `publisher`.
pub fn event_body(e: &EventAttrs, publisher: usize, seq: u64, sent_ns: u128, pad: &str) -> String {
    let mut payload =
        json!({"seq": seq, "publisher": publisher, "sent_ns": sent_ns as u64, "pad": pad});
    if let Some(n) = e.namespace {
        payload["namespace"] = json!(namespace_name(n));
    }
    json!({"event_type": EVENT_TYPES[e.ty], "cluster_id": cluster_name(e.cluster), "payload": payload})
        .to_string()
}

/// Finds, for an event, the clients it must reach (by type and cluster, then namespace).
pub struct Expectation {
    /// (type, cluster or `usize::MAX` for any) → (client, subscription).
    buckets: HashMap<(usize, usize), Vec<(usize, Sub)>>,
    /// Events each client should receive.
    pub expected: Vec<u64>,
}

impl Expectation {
    /// Indexes the clients' subscriptions.
    pub fn new(subs: &[Sub], counted: impl Fn(usize) -> bool) -> Self {
        let mut buckets: HashMap<(usize, usize), Vec<(usize, Sub)>> = HashMap::new();
        for (client, s) in subs.iter().enumerate().filter(|(i, _)| counted(*i)) {
            let clusters = if s.clusters.is_empty() {
                vec![usize::MAX]
            } else {
                s.clusters.clone()
            };
            for t in &s.types {
                for c in &clusters {
                    buckets
                        .entry((*t, *c))
                        .or_default()
                        .push((client, s.clone()));
                }
            }
        }
        Self {
            buckets,
            expected: vec![0; subs.len()],
        }
    }

    /// Counts one published event for every client it should reach (once per client).
    pub fn publish(&mut self, e: &EventAttrs) {
        let mut hit: Vec<usize> = Vec::new();
        for key in [(e.ty, e.cluster), (e.ty, usize::MAX)] {
            if let Some(list) = self.buckets.get(&key) {
                hit.extend(list.iter().filter(|(_, s)| s.matches(e)).map(|(c, _)| *c));
            }
        }
        hit.sort_unstable();
        hit.dedup();
        for c in hit {
            self.expected[c] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectation_equals_naive_count() {
        let plan = SubscriptionPlan {
            kind: PlanKind::Dashboards,
            clusters: 6,
            namespaces: 3,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let subs: Vec<Sub> = (0..200)
            .map(|_| subscription_for(&plan, &mut rng))
            .collect();
        let mut exp = Expectation::new(&subs, |_| true);
        let events: Vec<EventAttrs> = (0..500).map(|_| next_event(&plan, &mut rng)).collect();
        for e in &events {
            exp.publish(e);
        }
        for (i, s) in subs.iter().enumerate() {
            let naive = events.iter().filter(|e| s.matches(e)).count() as u64;
            assert_eq!(exp.expected[i], naive, "client {i}");
        }
        assert!(exp.expected.iter().any(|n| *n > 0));
    }

    #[test]
    fn dashboard_shapes() {
        let plan = SubscriptionPlan {
            kind: PlanKind::Dashboards,
            ..Default::default()
        };
        let mut rng = fastrand::Rng::with_seed(2);
        for _ in 0..1000 {
            let s = subscription_for(&plan, &mut rng);
            assert!((1..=3).contains(&s.types.len()));
            assert!((1..=5).contains(&s.clusters.len()));
            assert!(s.namespaces.len() <= 2);
        }
    }

    #[test]
    fn body_carries_seq_and_time() {
        let e = EventAttrs {
            ty: 6,
            cluster: 3,
            namespace: Some(1),
        };
        let b: Value = serde_json::from_str(&event_body(&e, 2, 42, 1_000, "xx")).unwrap();
        assert_eq!(b["event_type"], "GPU_UPDATE");
        assert_eq!(b["cluster_id"], "cluster-3");
        assert_eq!(b["payload"]["namespace"], "ns-1");
        assert_eq!(b["payload"]["seq"], 42);
        assert_eq!(b["payload"]["publisher"], 2);
    }
}
