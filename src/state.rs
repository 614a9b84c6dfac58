//! The state a dashboard renders: the latest event of each (event type, cluster, entity), with
//! the removal rules of `crate::entity` applied (a resolved alert leaves, a deleted cluster's
//! entries go). What `snapshot` on subscribe and `GET /state` send.
//!
//! Bounded by entities (`history.snapshot_keys`) and bytes (`history.max_bytes`); past either,
//! the entity changed longest ago goes first, and is counted. An entry is the router's own
//! shared frame, never a copy.
//!
//! Owns its entries. The history keeps one, changed only by the router as it numbers events;
//! a snapshot from a broker's shared history folds one of its own from the events read
//! ([`State::fold`]).

use crate::entity::Effect;
use crate::event::EventType;
use crate::frame::{EventMeta, OutFrame};
use crate::subscription::Subscription;
use hashbrown::HashTable;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// What an entry is keyed by: type, cluster, and the entity (or, for an event without one,
/// the namespace; the flag keeps the two apart).
type Key<'a> = (EventType, Option<&'a str>, bool, Option<&'a str>);

/// An event's key.
fn key_of(m: &EventMeta) -> Key<'_> {
    match &m.entity {
        Some(e) => (m.event_type, m.cluster_id.as_deref(), true, Some(e)),
        None => (
            m.event_type,
            m.cluster_id.as_deref(),
            false,
            m.namespace.as_deref(),
        ),
    }
}

/// One entity's latest event.
struct Entry {
    /// The event (always an event frame).
    frame: Arc<OutFrame>,
    /// When it was last changed, in the order events were applied.
    order: u64,
}

impl Entry {
    /// The routing facts (every entry is an event).
    fn meta(&self) -> Option<&EventMeta> {
        self.frame.event.as_deref()
    }
}

/// The latest event per entity, bounded.
pub struct State {
    /// The entries, found by key.
    entries: HashTable<Entry>,
    /// The same entries' frames by `order`, oldest first.
    by_age: BTreeMap<u64, Arc<OutFrame>>,
    /// Hashes keys.
    hasher: RandomState,
    /// Bytes of the entries' frames.
    bytes: usize,
    /// Most entries (0: none kept).
    max_entries: usize,
    /// Most bytes.
    max_bytes: usize,
    /// Entries pushed out by the bounds so far.
    evicted: u64,
}

impl State {
    /// An empty state of at most `max_entries` entities and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: HashTable::new(),
            by_age: BTreeMap::new(),
            hasher: RandomState::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            evicted: 0,
        }
    }

    /// The state after `frames` (oldest first), keeping only events that match `sub`; removals
    /// apply whatever they match (a deleted cluster's entries go even if the subscription does
    /// not name `CLUSTER_DELETED`).
    pub fn fold(
        frames: impl IntoIterator<Item = Arc<OutFrame>>,
        sub: &Subscription,
        max_entries: usize,
        max_bytes: usize,
    ) -> Self {
        let mut state = Self::new(max_entries, max_bytes);
        for (order, frame) in frames.into_iter().enumerate() {
            let keep = frame.event.as_ref().is_some_and(|m| {
                Effect::of(m.event_type) != Effect::Keep
                    || sub.matches(
                        m.event_type,
                        m.cluster_id.as_deref(),
                        m.namespace.as_deref(),
                    )
            });
            if keep {
                state.apply(&frame, order as u64);
            }
        }
        state
    }

    /// Applies one event frame: kept as its entity's latest, or removing what its rule says.
    /// `order` must grow from one call to the next.
    pub fn apply(&mut self, frame: &Arc<OutFrame>, order: u64) {
        let Some(m) = frame.event.as_deref() else {
            return;
        };
        match Effect::of(m.event_type) {
            Effect::Keep => self.keep(frame, order),
            Effect::Remove(ty) => {
                if let Some(entity) = m.entity.as_deref() {
                    self.remove((ty, m.cluster_id.as_deref(), true, Some(entity)));
                }
            }
            Effect::ClearCluster => {
                if let Some(cluster) = m.cluster_id.as_deref() {
                    self.clear_cluster(cluster);
                }
            }
        }
    }

    /// Keeps `frame` as its entity's latest, pushing out the oldest entities past the bounds.
    fn keep(&mut self, frame: &Arc<OutFrame>, order: u64) {
        let size = frame.bytes().len();
        if self.max_entries == 0 || size > self.max_bytes {
            return;
        }
        let Some(meta) = frame.event.as_deref() else {
            return;
        };
        let key = key_of(meta);
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let entry = self.entries.entry(
            hash,
            |e| e.meta().is_some_and(|m| key_of(m) == key),
            |e| e.meta().map_or(0, |m| hasher.hash_one(key_of(m))),
        );
        let new = Entry {
            frame: frame.clone(),
            order,
        };
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut held) => {
                let old = std::mem::replace(held.get_mut(), new);
                self.by_age.remove(&old.order);
                self.bytes -= old.frame.bytes().len();
            }
            hashbrown::hash_table::Entry::Vacant(room) => {
                room.insert(new);
            }
        }
        self.by_age.insert(order, frame.clone());
        self.bytes += size;
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.by_age.first_key_value() else {
                break;
            };
            let Some(m) = oldest.event.clone() else {
                break;
            };
            self.remove(key_of(&m));
            self.evicted += 1;
        }
    }

    /// Removes the entry of `key`, if any.
    fn remove(&mut self, key: Key<'_>) {
        let hash = self.hasher.hash_one(key);
        let found = self
            .entries
            .find_entry(hash, |e| e.meta().is_some_and(|m| key_of(m) == key));
        if let Ok(held) = found {
            let (old, _) = held.remove();
            self.by_age.remove(&old.order);
            self.bytes -= old.frame.bytes().len();
        }
    }

    /// Removes every entry of `cluster` (a walk over all entries: cluster deletions are rare).
    fn clear_cluster(&mut self, cluster: &str) {
        let (by_age, bytes) = (&mut self.by_age, &mut self.bytes);
        self.entries.retain(|e| {
            let of_cluster = e
                .meta()
                .is_some_and(|m| m.cluster_id.as_deref() == Some(cluster));
            if of_cluster {
                by_age.remove(&e.order);
                *bytes -= e.frame.bytes().len();
            }
            !of_cluster
        });
    }

    /// The entries that match `sub`, oldest change first.
    pub fn read(&self, sub: &Subscription) -> Vec<Arc<OutFrame>> {
        self.by_age
            .values()
            .filter(|f| crate::history::frame_matches(f, sub))
            .cloned()
            .collect()
    }

    /// How many entities are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entities pushed out by the bounds so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityKeys;
    use crate::event::parse_event;
    use crate::subscription::sub;

    /// The state after these events (JSON, each given an id by its position), read whole.
    fn after(events: &[&str], max_entries: usize) -> (State, Vec<String>) {
        let keys = EntityKeys::default();
        let mut state = State::new(max_entries, 1 << 20);
        for (i, json) in events.iter().enumerate() {
            let json = json.replacen('{', &format!(r#"{{"event_id":"e{i}","#), 1);
            let e = parse_event(json.as_bytes(), &keys).expect("valid event");
            state.apply(&OutFrame::event(e, i as u64 + 1), i as u64 + 1);
        }
        let everything = sub(EventType::ALL, &[], &[]);
        let ids = state
            .read(&everything)
            .iter()
            .filter_map(|f| f.event.as_ref().map(|m| m.event_id.clone()))
            .collect();
        (state, ids)
    }

    fn alert(ty: &str, fp: &str) -> String {
        format!(
            r#"{{"event_type":"{ty}","cluster_id":"c1","payload":{{"fingerprint":"{fp}","labels":{{"namespace":"prod"}}}}}}"#
        )
    }

    #[test]
    fn three_alerts_with_one_resolved_leave_two() {
        let events = [
            alert("ALERT_FIRED", "fp1"),
            alert("ALERT_FIRED", "fp2"),
            alert("ALERT_FIRED", "fp3"),
            alert("ALERT_RESOLVED", "fp2"),
        ];
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        assert_eq!(after(&refs, 100).1, ["e0", "e2"]);
    }

    #[test]
    fn two_nodes_two_series_and_a_refire_moves_to_the_end() {
        let gpu = |node: &str| {
            format!(
                r#"{{"event_type":"GPU_UPDATE","cluster_id":"c1","payload":{{"node_name":"{node}"}}}}"#
            )
        };
        let metric = |pod: &str| {
            format!(
                r#"{{"event_type":"METRIC_UPDATE","cluster_id":"c1","payload":{{"metric_name":"cpu","labels":{{"pod":"{pod}","namespace":"p"}}}}}}"#
            )
        };
        let events = [gpu("n1"), gpu("n2"), metric("a"), metric("b"), gpu("n1")];
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        assert_eq!(after(&refs, 100).1, ["e1", "e2", "e3", "e4"]);
    }

    #[test]
    fn a_deleted_cluster_is_gone_and_the_oldest_entity_goes_first_when_full() {
        let events = [
            r#"{"event_type":"CLUSTER_STATUS_CHANGED","cluster_id":"c1"}"#,
            r#"{"event_type":"GPU_UPDATE","cluster_id":"c1","payload":{"node_name":"n"}}"#,
            r#"{"event_type":"CLUSTER_STATUS_CHANGED","cluster_id":"c2"}"#,
            r#"{"event_type":"CLUSTER_DELETED","cluster_id":"c1"}"#,
        ];
        let (state, ids) = after(&events, 100);
        assert_eq!(ids, ["e2"]);
        assert_eq!(
            state.bytes,
            state
                .by_age
                .values()
                .map(|f| f.bytes().len())
                .sum::<usize>()
        );
        let (state, ids) = after(&events[..3], 2);
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(state.evicted(), 1);
    }

    #[test]
    fn an_event_without_its_key_fields_is_keyed_by_namespace() {
        let events = [
            r#"{"event_type":"GPU_UPDATE","cluster_id":"c1","payload":{"namespace":"a"}}"#,
            r#"{"event_type":"GPU_UPDATE","cluster_id":"c1","payload":{"namespace":"b"}}"#,
            r#"{"event_type":"GPU_UPDATE","cluster_id":"c1","payload":{"namespace":"a","x":1}}"#,
            r#"{"event_type":"GPU_UPDATE","cluster_id":"c1","payload":{"node_name":"a"}}"#,
        ];
        assert_eq!(after(&events, 100).1, ["e1", "e2", "e3"]);
    }
}
