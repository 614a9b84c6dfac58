//! The counts behind `GET /api/v1/streaming/subscriptions`, kept up to date as clients'
//! subscriptions change, so that a GET costs the number of distinct names rather than a walk
//! over every filter entry of every client.
//!
//! Owns the counts; only [`super::Subscriptions`] changes them.

use crate::event::{EventType, EVENT_TYPE_COUNT};
use crate::subscription::Subscription;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// Stored subscriptions counted by event type, cluster and namespace.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionTally {
    /// Subscriptions stored.
    total: i64,
    /// Clients holding at least one.
    clients: i64,
    /// Subscriptions naming each event type, by [`EventType::index`].
    by_type: [i64; EVENT_TYPE_COUNT],
    /// Subscriptions naming each cluster (names no longer named are removed).
    by_cluster: HashMap<String, i64>,
    /// Subscriptions naming each namespace.
    by_namespace: HashMap<String, i64>,
}

impl SubscriptionTally {
    /// A client's subscriptions went from `old` to `new` (`new` empty when it left).
    pub(crate) fn replace(&mut self, old: &[Subscription], new: &[Subscription]) {
        self.apply(old, -1);
        self.apply(new, 1);
        self.clients += i64::from(!new.is_empty()) - i64::from(!old.is_empty());
    }

    /// Adds (`sign` 1) or removes (-1) the counts of `subs`.
    fn apply(&mut self, subs: &[Subscription], sign: i64) {
        for s in subs {
            self.total += sign;
            for t in &s.event_types {
                self.by_type[t.index()] += sign;
            }
            count(&mut self.by_cluster, &s.cluster_filter, sign);
            count(&mut self.by_namespace, &s.namespace_filter, sign);
        }
    }

    /// The answer of `GET /subscriptions`: every event type (zeros included), and the named
    /// clusters and namespaces in order.
    pub(crate) fn to_json(&self) -> Value {
        let by_type: BTreeMap<&'static str, i64> = EventType::ALL
            .iter()
            .map(|t| (t.as_str(), self.by_type[t.index()]))
            .collect();
        let sorted = |m: &HashMap<String, i64>| -> BTreeMap<String, i64> {
            m.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        json!({
            "total_subscriptions": self.total,
            "clients_with_subscriptions": self.clients,
            "by_event_type": by_type,
            "by_cluster": sorted(&self.by_cluster),
            "by_namespace": sorted(&self.by_namespace),
        })
    }
}

/// Adds `sign` to each name's count, forgetting names whose count reaches zero.
fn count(map: &mut HashMap<String, i64>, names: &[String], sign: i64) {
    for n in names {
        let c = map.entry(n.clone()).or_default();
        *c += sign;
        if *c == 0 {
            map.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::sub;

    /// The counts of a fresh tally built from the final subscriptions alone.
    fn recount(clients: &[Vec<Subscription>]) -> Value {
        let mut t = SubscriptionTally::default();
        for c in clients {
            t.replace(&[], c);
        }
        t.to_json()
    }

    #[test]
    fn kept_counts_equal_a_full_recount_after_changes() {
        use EventType::*;
        let a1 = vec![sub(&[ALERT_FIRED, GPU_UPDATE], &["c1"], &["prod"])];
        let a2 = vec![
            sub(&[ALERT_FIRED], &["c1", "c2"], &[]),
            sub(&[METRIC_UPDATE], &[], &["dev"]),
        ];
        let b = vec![sub(&[GPU_UPDATE], &["c2"], &["prod"])];
        let mut kept = SubscriptionTally::default();
        kept.replace(&[], &a1);
        kept.replace(&[], &b);
        kept.replace(&a1, &a2);
        assert_eq!(kept.to_json(), recount(&[a2.clone(), b.clone()]));
        kept.replace(&b, &[]);
        let v = kept.to_json();
        assert_eq!(v, recount(std::slice::from_ref(&a2)));
        assert_eq!(v["clients_with_subscriptions"], 1);
        assert_eq!(v["by_cluster"], json!({"c1": 1, "c2": 1}));
        assert_eq!(v["by_namespace"], json!({"dev": 1}), "prod is forgotten");
        kept.replace(&a2, &[]);
        assert_eq!(kept.to_json(), recount(&[]));
    }
}
