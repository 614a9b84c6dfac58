//! Entity keys: which fields of an event name the thing it is about (one alert, one GPU node,
//! one metric series), per event type, and the removal rules (docs/design.md, "State").
//!
//! The state a dashboard renders keeps the latest event per (event type, cluster, entity). The
//! entity is read from the paths this module lists for the type: by default the fields the
//! design document's event shapes name (`payload.fingerprint` for alerts, `payload.node_name`
//! for GPU updates, `payload.metric_name` and `payload.labels` for a metric series...), and
//! `history.entity_keys` in the configuration replaces a type's list. The event parser reads
//! these fields in the same pass as the routing fields (`crate::event`); an event lacking one of
//! its type's fields falls back to the namespace as its entity (the key before entity keys).
//!
//! Owns the rules, fixed at start-up: built once from the configuration, then only read.

use crate::event::{EventType, EVENT_TYPE_COUNT};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The one top-level field a key may name besides `payload.…` paths.
const CLUSTER_PATH: &str = "cluster_id";
/// Most paths in one type's key.
const MAX_PATHS: usize = 8;

/// The default keys, from the design document's event shapes.
const DEFAULTS: &[(EventType, &[&str])] = &[
    (EventType::CLUSTER_STATUS_CHANGED, &[CLUSTER_PATH]),
    (EventType::CLUSTER_REGISTERED, &[CLUSTER_PATH]),
    (EventType::CLUSTER_DELETED, &[CLUSTER_PATH]),
    (
        EventType::METRIC_UPDATE,
        &["payload.metric_name", "payload.labels"],
    ),
    (EventType::ALERT_FIRED, &["payload.fingerprint"]),
    (EventType::ALERT_RESOLVED, &["payload.fingerprint"]),
    (EventType::GPU_UPDATE, &["payload.node_name"]),
    (EventType::ANOMALY_DETECTED, &["payload.anomaly_id"]),
    (
        EventType::CHAT_MESSAGE,
        &["payload.session_id", "payload.message_id"],
    ),
];

/// What an event does to the state besides being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Kept as its entity's latest event.
    Keep,
    /// Not kept; removes the entry of the named type with the same cluster and entity
    /// (`ALERT_RESOLVED` removes its `ALERT_FIRED`).
    Remove(EventType),
    /// Not kept; removes every entry of its cluster (`CLUSTER_DELETED`).
    ClearCluster,
}

impl Effect {
    /// The rule for `ty`.
    pub fn of(ty: EventType) -> Effect {
        match ty {
            EventType::ALERT_RESOLVED => Effect::Remove(EventType::ALERT_FIRED),
            EventType::CLUSTER_DELETED => Effect::ClearCluster,
            _ => Effect::Keep,
        }
    }
}

/// The removal rules as `GET /state` states them: each removing type and what it takes away
/// (an event type, or `cluster` for every entry of its cluster).
pub fn removals() -> BTreeMap<&'static str, &'static str> {
    EventType::ALL
        .iter()
        .filter_map(|t| match Effect::of(*t) {
            Effect::Keep => None,
            Effect::Remove(other) => Some((t.as_str(), other.as_str())),
            Effect::ClearCluster => Some((t.as_str(), "cluster")),
        })
        .collect()
}

/// One part of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The event's `cluster_id`.
    Cluster,
    /// The payload value at this index of [`Rules::paths`].
    Payload(usize),
}

/// The compiled rules.
#[derive(Debug)]
struct Rules {
    /// Every payload path read, as segments after `payload`; 0 and 1 are the namespace's
    /// (`payload.namespace`, `payload.labels.namespace`), which routing always reads.
    paths: Vec<Box<[String]>>,
    /// Each type's key parts (empty: no entity, the namespace is the key).
    parts: [Box<[Part]>; EVENT_TYPE_COUNT],
    /// Each type's payload paths to read: the namespace's and its key's.
    reads: [Box<[usize]>; EVENT_TYPE_COUNT],
    /// Every payload path any type reads (for a payload met before the event's type).
    reads_any: Box<[usize]>,
    /// The lists in effect, by type name (for `GET /state` and the docs).
    lists: BTreeMap<&'static str, Vec<String>>,
}

/// The entity key rules in effect: cheap to clone, shared.
#[derive(Debug, Clone)]
pub struct EntityKeys(Arc<Rules>);

impl Default for EntityKeys {
    fn default() -> Self {
        let lists = DEFAULTS
            .iter()
            .map(|(t, paths)| (*t, paths.iter().map(|p| p.to_string()).collect()))
            .collect();
        Self::build(lists).unwrap_or_else(|_| unreachable!("the default keys are valid"))
    }
}

impl<'de> Deserialize<'de> for EntityKeys {
    /// A map from event type to its list of paths; a type it names replaces its default.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given: BTreeMap<String, Vec<String>> = Deserialize::deserialize(d)?;
        let mut lists: BTreeMap<EventType, Vec<String>> = DEFAULTS
            .iter()
            .map(|(t, paths)| (*t, paths.iter().map(|p| p.to_string()).collect()))
            .collect();
        for (name, paths) in given {
            let ty = EventType::parse(&name)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {name:?}")))?;
            lists.insert(ty, paths);
        }
        Self::build(lists).map_err(serde::de::Error::custom)
    }
}

impl EntityKeys {
    /// Compiles the lists, refusing a path that is neither `cluster_id` nor `payload.…`.
    fn build(lists: BTreeMap<EventType, Vec<String>>) -> Result<Self, String> {
        let mut paths: Vec<Box<[String]>> = vec![
            Box::new(["namespace".to_string()]),
            Box::new(["labels".to_string(), "namespace".to_string()]),
        ];
        let mut parts: [Vec<Part>; EVENT_TYPE_COUNT] = Default::default();
        for (ty, list) in &lists {
            if list.len() > MAX_PATHS {
                return Err(format!("{}: at most {MAX_PATHS} paths", ty.as_str()));
            }
            for path in list {
                let part = part_of(path, &mut paths)
                    .map_err(|why| format!("{}: path {path:?} {why}", ty.as_str()))?;
                parts[ty.index()].push(part);
            }
        }
        let reads_of = |parts: &[Part]| -> Box<[usize]> {
            let mut r = vec![0, 1];
            r.extend(parts.iter().filter_map(|p| match p {
                Part::Payload(i) => Some(*i),
                Part::Cluster => None,
            }));
            r.sort_unstable();
            r.dedup();
            r.into()
        };
        let reads = std::array::from_fn(|i| reads_of(&parts[i]));
        let reads_any = (0..paths.len()).collect();
        Ok(Self(Arc::new(Rules {
            paths,
            parts: parts.map(Vec::into_boxed_slice),
            reads,
            reads_any,
            lists: lists.into_iter().map(|(t, l)| (t.as_str(), l)).collect(),
        })))
    }

    /// Every payload path read, as segments after `payload` (index 0: `namespace`, 1:
    /// `labels.namespace`).
    pub(crate) fn paths(&self) -> &[Box<[String]>] {
        &self.0.paths
    }

    /// The payload paths a parse reads for `ty` (`None`: the type is not known yet; all).
    pub(crate) fn reads(&self, ty: Option<EventType>) -> &[usize] {
        match ty {
            Some(t) => &self.0.reads[t.index()],
            None => &self.0.reads_any,
        }
    }

    /// The entity of an event of type `ty`, from its cluster and the payload values read (by
    /// path index): `None` when the type has no key or a part is missing (or `null`). A key of
    /// one string field takes that string rather than copying it (unless routing still needs
    /// it: the namespace's paths).
    pub(crate) fn entity(
        &self,
        ty: EventType,
        cluster: Option<&str>,
        read: &mut [Option<Value>],
    ) -> Option<Box<str>> {
        let parts = &self.0.parts[ty.index()];
        match parts.as_ref() {
            [] => return None,
            [Part::Payload(i)] if *i > 1 => {
                if let Some(Some(Value::String(s))) = read.get_mut(*i) {
                    return Some(std::mem::take(s).into_boxed_str());
                }
            }
            _ => {}
        }
        let mut out = String::new();
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                // A separator no JSON text or sensible id holds unescaped.
                out.push('\u{1f}');
            }
            match part {
                Part::Cluster => out.push_str(cluster?),
                Part::Payload(i) => match read.get(*i)?.as_ref()? {
                    Value::Null => return None,
                    Value::String(s) => out.push_str(s),
                    // Objects print with their keys sorted: the same labels in any order are
                    // the same series.
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Some(out.into())
    }

    /// The lists in effect, by type name.
    pub fn lists(&self) -> &BTreeMap<&'static str, Vec<String>> {
        &self.0.lists
    }
}

/// The key part `path` names, adding a payload path to `paths` if it is new.
fn part_of(path: &str, paths: &mut Vec<Box<[String]>>) -> Result<Part, &'static str> {
    if path == CLUSTER_PATH {
        return Ok(Part::Cluster);
    }
    let Some(rest) = path.strip_prefix("payload.") else {
        return Err("must be cluster_id or start with payload.");
    };
    let segments: Box<[String]> = rest.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err("has an empty segment");
    }
    if let Some(i) = paths.iter().position(|p| *p == segments) {
        return Ok(Part::Payload(i));
    }
    paths.push(segments);
    Ok(Part::Payload(paths.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(yaml: &str) -> Result<EntityKeys, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_type_named_in_config_replaces_its_default_only() {
        let k =
            keys("GPU_UPDATE: [payload.host.name]\nTRACE_RECEIVED: [payload.trace_id]").unwrap();
        assert_eq!(k.lists()["GPU_UPDATE"], ["payload.host.name"]);
        assert_eq!(k.lists()["TRACE_RECEIVED"], ["payload.trace_id"]);
        assert_eq!(k.lists()["ALERT_FIRED"], ["payload.fingerprint"]);
        let k = keys("ALERT_FIRED: []").unwrap();
        let mut read = vec![None, None, Some(Value::String("fp".into()))];
        assert_eq!(k.entity(EventType::ALERT_FIRED, Some("c"), &mut read), None);
    }

    #[test]
    fn refuses_unknown_types_and_paths_outside_the_event() {
        for (yaml, says) in [
            ("NOPE: [payload.x]", "unknown event type"),
            (
                "GPU_UPDATE: [node_name]",
                "must be cluster_id or start with payload.",
            ),
            ("GPU_UPDATE: [payload..x]", "empty segment"),
            ("GPU_UPDATE: payload.x", "invalid type"),
        ] {
            let err = keys(yaml).err().unwrap_or_default();
            assert!(err.contains(says), "{yaml}: {err}");
        }
    }

    #[test]
    fn an_entity_joins_its_parts_and_labels_in_any_order_are_one_series() {
        let k = EntityKeys::default();
        let i = |p: &str| k.paths().iter().position(|x| x.join(".") == p).unwrap();
        let mut read = vec![None; k.paths().len()];
        read[i("metric_name")] = Some(Value::String("cpu".into()));
        read[i("labels")] = Some(serde_json::json!({"pod": "a", "namespace": "p"}));
        let one = k.entity(EventType::METRIC_UPDATE, None, &mut read).unwrap();
        read[i("labels")] = Some(serde_json::from_str(r#"{"namespace":"p","pod":"a"}"#).unwrap());
        assert_eq!(
            k.entity(EventType::METRIC_UPDATE, None, &mut read).unwrap(),
            one
        );
        read[i("labels")] = Some(Value::Null);
        assert_eq!(k.entity(EventType::METRIC_UPDATE, None, &mut read), None);
        assert_eq!(
            k.entity(EventType::CLUSTER_DELETED, Some("c1"), &mut read)
                .as_deref(),
            Some("c1")
        );
        assert_eq!(
            k.entity(EventType::TRACE_RECEIVED, Some("c1"), &mut read),
            None
        );
    }
}
