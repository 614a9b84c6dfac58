//! The one pass over an incoming event's JSON: the routing fields, borrowed from the input, and
//! from `payload` only the values the entity keys and the namespace need (`crate::entity`
//! says which); the rest of the payload is skipped, not copied.
//!
//! Owns nothing that lives: a [`View`] borrows the input for the length of one parse.

use crate::entity::EntityKeys;
use crate::event::EventType;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The fields routing needs, borrowed from the input, and the payload values read.
#[derive(Default)]
pub(super) struct View<'a> {
    /// `event_type`, unless absent or `null`.
    pub event_type: Option<&'a RawValue>,
    /// Kept even when `null` (`Some("null")`), so that a `null` can be left out of the message.
    pub event_id: Option<&'a RawValue>,
    /// `cluster_id`, unless absent or `null`.
    pub cluster_id: Option<&'a RawValue>,
    /// Kept even when `null`, like `event_id`.
    pub timestamp: Option<&'a RawValue>,
    /// A top-level `type` would clash with the message's own `"type":"event"`; kept even when
    /// `null` (a `"type":null` copied behind `"type":"event"` would win in a JSON reader).
    pub type_key: Option<&'a RawValue>,
    /// The payload values read, by the index of their path in [`EntityKeys::paths`] (as long
    /// as the highest index read: an event without them allocates nothing).
    pub read: Vec<Option<Value>>,
}

impl View<'_> {
    /// `payload.namespace` if a string, else `payload.labels.namespace` if a string.
    pub fn namespace(&mut self) -> Option<String> {
        let mut string_at = |i: usize| match self.read.get_mut(i).and_then(Option::take) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        string_at(0).or_else(|| string_at(1))
    }
}

/// An object key, borrowed from the input unless it holds escapes (serde's own `Cow<str>`
/// always copies: one allocation per key of every event).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads one event object into a [`View`], with the entity keys saying what to read.
pub(super) struct ViewSeed<'k>(pub &'k EntityKeys);

impl<'de> DeserializeSeed<'de> for ViewSeed<'_> {
    type Value = View<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<View<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ViewSeed<'_> {
    type Value = View<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<View<'de>, A::Error> {
        let keys = self.0;
        let mut view = View::default();
        let mut seen_payload = false;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let (slot, field) = match key.as_ref() {
                "event_type" => (&mut view.event_type, "event_type"),
                "event_id" => (&mut view.event_id, "event_id"),
                "cluster_id" => (&mut view.cluster_id, "cluster_id"),
                "timestamp" => (&mut view.timestamp, "timestamp"),
                "type" => (&mut view.type_key, "type"),
                "payload" => {
                    if std::mem::replace(&mut seen_payload, true) {
                        return Err(A::Error::duplicate_field("payload"));
                    }
                    // The type, if it came first, narrows what is read.
                    let ty = view.event_type.and_then(type_of);
                    let reads = keys.reads(ty);
                    map.next_value_seed(Payload {
                        paths: keys.paths(),
                        reads,
                        depth: 0,
                        out: &mut view.read,
                    })?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(A::Error::duplicate_field(field));
            }
            let raw: &'de RawValue = map.next_value()?;
            // `event_type` and `cluster_id` read `null` as absent; the others keep it.
            let absent = matches!(field, "event_type" | "cluster_id") && raw.get() == "null";
            *slot = (!absent).then_some(raw);
        }
        Ok(view)
    }
}

/// The event type a raw `event_type` names, if it is a known one (a name with escapes is left
/// to the full check after the pass).
fn type_of(raw: &RawValue) -> Option<EventType> {
    let name = raw.get().strip_prefix('"')?.strip_suffix('"')?;
    EventType::parse(name)
}

/// Reads the values at `reads` (indexes into `paths`) below an object at `depth`. The payload
/// itself must be an object (or `null`); anything below it that is not an object where a path
/// goes on is simply not there.
struct Payload<'p, 'o> {
    /// Every path, as segments after `payload`.
    paths: &'p [Box<[String]>],
    /// The paths to read.
    reads: &'p [usize],
    /// How many segments are behind us (0: at the payload).
    depth: usize,
    /// Where the values go, by path index.
    out: &'o mut Vec<Option<Value>>,
}

impl<'de> DeserializeSeed<'de> for Payload<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Payload<'_, '_> {
    /// The paths to read that go through `key` here: those that end at it, and those deeper.
    fn through(&self, key: &str) -> (Vec<usize>, Vec<usize>) {
        let d = self.depth;
        let (mut ends, mut deeper) = (Vec::new(), Vec::new());
        for &i in self.reads {
            let path = &self.paths[i];
            if path.get(d).is_some_and(|s| s == key) {
                match path.len() == d + 1 {
                    true => ends.push(i),
                    false => deeper.push(i),
                }
            }
        }
        (ends, deeper)
    }

    /// A value not at the top (where the payload must be an object) is read as nothing.
    fn nothing<E: serde::de::Error>(self, what: &str) -> Result<(), E> {
        match self.depth {
            0 => Err(E::custom(format!(
                "payload must be a JSON object, not {what}"
            ))),
            _ => Ok(()),
        }
    }
}

impl<'de> Visitor<'de> for Payload<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("payload to be a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let (ends, deeper) = self.through(&key);
            if ends.is_empty() && deeper.is_empty() {
                map.next_value::<IgnoredAny>()?;
            } else if ends.is_empty() {
                map.next_value_seed(Payload {
                    paths: self.paths,
                    reads: &deeper,
                    depth: self.depth + 1,
                    out: self.out,
                })?;
            } else {
                // Read whole, once; paths deeper inside it are looked up in the value.
                let value: Value = map.next_value()?;
                for i in deeper {
                    let rest = &self.paths[i][self.depth + 1..];
                    let found = rest.iter().try_fold(&value, |v, s| v.get(s)).cloned();
                    put(self.out, i, found);
                }
                if let Some((&last, others)) = ends.split_last() {
                    for &i in others {
                        put(self.out, i, Some(value.clone()));
                    }
                    put(self.out, last, Some(value));
                }
            }
        }
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        // `"payload": null` is no payload; `null` below it is not an object either.
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth == 0 {
            return Err(A::Error::custom(
                "payload must be a JSON object, not an array",
            ));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.nothing("a boolean")
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.nothing("a number")
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.nothing("a number")
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.nothing("a number")
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.nothing("a string")
    }
}

/// Sets the value read at path `i`, growing `out` to hold it.
fn put(out: &mut Vec<Option<Value>>, i: usize, value: Option<Value>) {
    if out.len() <= i {
        out.resize(i + 1, None);
    }
    out[i] = value;
}

/// Reads the view of one event object.
pub(super) fn read<'a>(text: &'a str, keys: &EntityKeys) -> serde_json::Result<View<'a>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let view = ViewSeed(keys).deserialize(&mut de)?;
    de.end()?;
    Ok(view)
}
