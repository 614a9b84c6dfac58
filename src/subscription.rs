//! Subscriptions: what one `subscribe` stores, how it is validated, and the matching rule of
//! docs/design.md ("Subscriptions") in its plain form (the subscription index must answer the same).
//!
//! Owns nothing that lives: a subscription is a value, stored by the subscriptions part.

use crate::event::EventType;
use serde::Serialize;

/// One stored subscription of a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// Event types, without duplicates, in the order given.
    #[serde(serialize_with = "ser_types")]
    pub event_types: Vec<EventType>,
    /// Clusters; empty matches any.
    pub cluster_filter: Vec<String>,
    /// Namespaces; empty matches any, and an event without a namespace always passes.
    pub namespace_filter: Vec<String>,
}

fn ser_types<S: serde::Serializer>(t: &[EventType], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.iter().map(|t| t.as_str()))
}

impl Subscription {
    /// The matching rule of docs/design.md, evaluated directly.
    pub fn matches(&self, ty: EventType, cluster: Option<&str>, namespace: Option<&str>) -> bool {
        self.event_types.contains(&ty)
            && (self.cluster_filter.is_empty()
                || cluster.is_some_and(|c| self.cluster_filter.iter().any(|f| f == c)))
            && (self.namespace_filter.is_empty()
                || namespace.is_none_or(|n| self.namespace_filter.iter().any(|f| f == n)))
    }

    /// The index keys (event type, cluster, namespace) this subscription expands to.
    pub(crate) fn breadth(&self) -> usize {
        self.event_types.len()
            * self.cluster_filter.len().max(1)
            * self.namespace_filter.len().max(1)
    }
}

/// Removes `types` from each subscription; a subscription left with no types is gone.
/// Returns the types actually held before that were removed.
pub fn remove_types(subs: &mut Vec<Subscription>, types: &[EventType]) -> Vec<EventType> {
    let mut removed = Vec::new();
    for s in subs.iter_mut() {
        s.event_types.retain(|t| {
            let hit = types.contains(t);
            if hit && !removed.contains(t) {
                removed.push(*t);
            }
            !hit
        });
    }
    subs.retain(|s| !s.event_types.is_empty());
    removed
}

/// The distinct event types a set of subscriptions holds.
pub fn all_types(subs: &[Subscription]) -> Vec<EventType> {
    let mut out: Vec<EventType> = Vec::new();
    for t in subs.iter().flat_map(|s| &s.event_types) {
        if !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// A subscription from literals, for tests.
#[cfg(test)]
pub(crate) fn sub(t: &[EventType], c: &[&str], n: &[&str]) -> Subscription {
    Subscription {
        event_types: t.to_vec(),
        cluster_filter: c.iter().map(|s| s.to_string()).collect(),
        namespace_filter: n.iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    #[test]
    fn rule() {
        let s = sub(&[ALERT_FIRED], &["c1"], &["prod"]);
        assert!(s.matches(ALERT_FIRED, Some("c1"), Some("prod")));
        assert!(s.matches(ALERT_FIRED, Some("c1"), None));
        assert!(!s.matches(ALERT_FIRED, Some("c1"), Some("dev")));
        assert!(!s.matches(ALERT_FIRED, None, Some("prod")));
        assert!(!s.matches(GPU_UPDATE, Some("c1"), Some("prod")));
        let any = sub(&[GPU_UPDATE], &[], &[]);
        assert!(any.matches(GPU_UPDATE, None, Some("x")));
    }

    #[test]
    fn remove() {
        let mut subs = vec![
            sub(&[ALERT_FIRED, GPU_UPDATE], &[], &[]),
            sub(&[GPU_UPDATE], &["c"], &[]),
        ];
        let removed = remove_types(&mut subs, &[GPU_UPDATE, CHAT_MESSAGE]);
        assert_eq!(removed, vec![GPU_UPDATE]);
        assert_eq!(subs, vec![sub(&[ALERT_FIRED], &[], &[])]);
    }
}
