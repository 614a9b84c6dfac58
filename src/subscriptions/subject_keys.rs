//! Index keys per authenticated subject: one principal (however many connections it opens)
//! may hold at most `websocket.max_index_keys_per_subject` type/cluster/namespace keys in all
//! (each connection's subscriptions counted by their breadth), so it cannot fill the
//! instance's index (`websocket.max_index_keys`) for everyone else. Connections without a
//! subject (authentication off) are not counted.
//!
//! Owns the keys held per subject; only [`super::Subscriptions`] changes them.

use crate::subscription::Subscription;
use dashmap::DashMap;

/// Keys held per subject, within one quota.
pub(crate) struct SubjectKeys {
    /// Most keys one subject may hold.
    quota: usize,
    /// Keys held, by subject (absent: none).
    held: DashMap<String, usize>,
}

/// A change refused: it would take the subject past its quota.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OverQuota(pub(crate) usize);

impl std::error::Error for OverQuota {}

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this subject's subscriptions would hold more than {} index keys \
             (websocket.max_index_keys_per_subject) over all its connections",
            self.0
        )
    }
}

impl SubjectKeys {
    /// An empty tally under `quota`.
    pub(crate) fn new(quota: usize) -> Self {
        Self {
            quota,
            held: DashMap::new(),
        }
    }

    /// Moves `subject` from holding `old` to holding `new` subscriptions, unless that takes it
    /// past the quota (a change that does not add keys is always taken).
    pub(crate) fn change(
        &self,
        subject: &str,
        old: &[Subscription],
        new: &[Subscription],
    ) -> Result<(), OverQuota> {
        let (old, new) = (keys(old), keys(new));
        if old == new {
            return Ok(());
        }
        let mut held = self.held.entry(subject.to_string()).or_insert(0);
        let next = (*held - old.min(*held)) + new;
        if new > old && next > self.quota {
            return Err(OverQuota(self.quota));
        }
        *held = next;
        let empty = next == 0;
        drop(held);
        if empty {
            self.held.remove_if(subject, |_, n| *n == 0);
        }
        Ok(())
    }
}

/// The index keys `subs` expand to, counted per subscription.
fn keys(subs: &[Subscription]) -> usize {
    subs.iter().map(Subscription::breadth).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn sub(clusters: usize) -> Subscription {
        Subscription {
            event_types: vec![EventType::ALERT_FIRED],
            cluster_filter: (0..clusters).map(|i| format!("c{i}")).collect(),
            namespace_filter: Vec::new(),
        }
    }

    #[test]
    fn a_subject_stays_within_its_quota_over_connections() {
        let q = SubjectKeys::new(10);
        q.change("ann", &[], &[sub(6)]).unwrap();
        assert_eq!(q.change("ann", &[], &[sub(5)]), Err(OverQuota(10)));
        q.change("bob", &[], &[sub(10)]).unwrap();
        q.change("ann", &[], &[sub(4)]).unwrap();
        // Narrowing is always taken; leaving gives the keys back.
        q.change("ann", &[sub(6)], &[sub(1)]).unwrap();
        q.change("ann", &[], &[sub(5)]).unwrap();
        q.change("ann", &[sub(1)], &[]).unwrap();
        q.change("ann", &[sub(4)], &[]).unwrap();
        q.change("ann", &[sub(5)], &[]).unwrap();
        assert!(q.held.get("ann").is_none());
    }
}
