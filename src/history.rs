//! History: the recent events, for a client that resumes after a reconnect, and the state (the
//! latest event of each entity, `crate::state`), for a client that asks for it on subscribe or
//! over `GET /state`.
//!
//! The router records every event it routes to every subscription (embedded mode and classic
//! Redis, where each instance receives every event, so each instance's copy is complete and a
//! client may resume on any of them: event ids are fixed before publishing). Recording happens
//! under one lock, together with the event's sequence number, so the history is in sequence
//! order and a reader knows exactly which events it holds. Nothing is copied: an entry is the
//! router's own shared frame.
//!
//! Bounded by count (`history.max_events`), age (`history.max_age_seconds`) and bytes
//! (`history.max_bytes`), and the state by entities (`history.snapshot_keys`) and the same
//! bytes. When the broker may have missed events (its link to Redis went down) the recent
//! events are forgotten, so a resume across the gap answers `recovered: false` instead of
//! leaving a silent hole.
//!
//! Owns the recent events and the state; only the router records into them, resumes, snapshots
//! and `GET /state` read them.

use crate::config::HistoryConfig;
use crate::frame::OutFrame;
use crate::state::State;
use crate::subscription::Subscription;
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A recorded frame, hashed and compared by its event id.
struct ById(Arc<OutFrame>);

impl ById {
    /// The event id.
    fn id(&self) -> &str {
        self.0.event.as_ref().map_or("", |m| m.event_id.as_str())
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.id().hash(h)
    }
}

impl PartialEq for ById {
    fn eq(&self, o: &Self) -> bool {
        self.id() == o.id()
    }
}

impl Eq for ById {}

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.id()
    }
}

/// What the lock guards.
struct Inner {
    /// The next sequence number to hand out.
    next_seq: u64,
    /// Recent events, oldest first, in sequence order.
    recent: VecDeque<Arc<OutFrame>>,
    /// The same events by id.
    by_id: HashSet<ById>,
    /// The latest event of each entity.
    state: State,
    /// Bytes of the recent events' frames.
    recent_bytes: usize,
    /// What is known of each origin region's stream (NATS mode; empty elsewhere).
    origins: Vec<OriginMark>,
}

/// What the history knows of one origin region's stream.
struct OriginMark {
    /// The region.
    region: Arc<str>,
    /// The highest origin sequence routed.
    last: u64,
    /// Every event of this origin up to this sequence is gone from the recent events (evicted,
    /// forgotten, or from before this instance started): a resume must start after it.
    gone_upto: u64,
}

/// The hub's history of events.
pub struct History {
    /// Recent and latest events, and the sequence counter.
    inner: Mutex<Inner>,
    /// Most recent events kept (0: no history, no resume).
    max_events: usize,
    /// Oldest recent event kept.
    max_age: Duration,
    /// Most bytes of recent events' frames kept.
    max_bytes: usize,
}

/// What a resume found.
pub struct Replay {
    /// Whether the event resumed from is known (false: nothing replayed; the client reloads).
    pub recovered: bool,
    /// The events after it that match the subscription, oldest first.
    pub frames: Vec<Arc<OutFrame>>,
    /// The last sequence number handed out when the history was read: live events up to it
    /// are covered by this answer.
    pub upto: u64,
}

/// What a resume from positions found.
pub struct ReplayAt {
    /// The events replayed, and whether every one after the positions was still held.
    pub replay: Replay,
    /// The origins whose position is past what this instance has routed of them, with that
    /// position: their live events up to it are ones the client already has.
    pub ahead: Vec<(String, u64)>,
}

/// What a read of the state found.
pub struct StateRead {
    /// The latest event of each matching entity, oldest change first.
    pub frames: Vec<Arc<OutFrame>>,
    /// The last sequence number handed out when it was read: live events up to it are covered.
    pub upto: u64,
    /// The id of the last event routed before the read, if the recent history still holds it:
    /// a `resume_from` this id misses nothing after the state.
    pub position: Option<String>,
    /// The last origin sequence routed of each origin region (NATS mode), at the same moment:
    /// a resume from these `positions` misses nothing after the state, in any region.
    pub positions: Vec<(Arc<str>, u64)>,
}

/// How much the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Recent events.
    pub recent: usize,
    /// State entities.
    pub entities: usize,
    /// Entities the state's bounds pushed out so far.
    pub evicted: u64,
}

impl History {
    /// A history bounded as `config` says.
    pub fn new(config: &HistoryConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                recent: VecDeque::new(),
                by_id: HashSet::new(),
                state: State::new(config.snapshot_keys, config.max_bytes),
                recent_bytes: 0,
                origins: Vec::new(),
            }),
            max_events: config.max_events,
            max_age: Duration::from_secs_f64(config.max_age_seconds),
            max_bytes: config.max_bytes,
        }
    }

    /// Hands out the next sequence number; with `record`, records the frame `make` builds with
    /// it, in the same critical section (so the history is in sequence order).
    pub fn sequence(&self, record: bool, make: impl FnOnce(u64) -> Arc<OutFrame>) -> Arc<OutFrame> {
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let frame = make(seq);
        if record && frame.event.is_some() {
            self.record(&mut inner, &frame);
        }
        frame
    }

    /// Adds one frame, evicting what falls out of the bounds.
    fn record(&self, inner: &mut Inner, frame: &Arc<OutFrame>) {
        let size = frame.bytes().len();
        if let Some(seq) = seq_of(frame) {
            inner.state.apply(frame, seq);
        }
        let kept = self.max_events > 0 && size <= self.max_bytes;
        if let Some(o) = frame.event.as_ref().and_then(|m| m.origin.as_ref()) {
            inner.origin_routed(o, kept);
        }
        if !kept {
            return;
        }
        inner.recent.push_back(frame.clone());
        inner.recent_bytes += size;
        inner.by_id.replace(ById(frame.clone()));
        while inner.recent.len() > self.max_events || inner.recent_bytes > self.max_bytes {
            Self::evict_oldest(inner);
        }
        self.evict_aged(inner, frame.routed_at);
    }

    /// Drops recent events older than the age bound at `now`.
    fn evict_aged(&self, inner: &mut Inner, now: Instant) {
        while inner
            .recent
            .front()
            .is_some_and(|f| now.saturating_duration_since(f.routed_at) > self.max_age)
        {
            Self::evict_oldest(inner);
        }
    }

    /// Drops the oldest recent event.
    fn evict_oldest(inner: &mut Inner) {
        if let Some(old) = inner.recent.pop_front() {
            inner.recent_bytes -= old.bytes().len();
            if let Some(o) = old.event.as_ref().and_then(|m| m.origin.as_ref()) {
                if let Some(mark) = inner.mark(&o.region) {
                    mark.gone_upto = mark.gone_upto.max(o.seq);
                }
            }
            // Only if the id still names this frame (a later event may reuse an id).
            let same = inner
                .by_id
                .get(ById(old.clone()).id())
                .is_some_and(|f| Arc::ptr_eq(&f.0, &old));
            if same {
                inner.by_id.remove(ById(old).id());
            }
        }
    }

    /// The events after `event_id` that match `sub`, if `event_id` is still known.
    pub fn replay(&self, event_id: &str, sub: &Subscription) -> Replay {
        let mut inner = self.inner.lock();
        self.evict_aged(&mut inner, Instant::now());
        let upto = inner.next_seq - 1;
        let from = inner.by_id.get(event_id).and_then(|f| seq_of(&f.0));
        let Some(from) = from else {
            return Replay {
                recovered: false,
                frames: Vec::new(),
                upto,
            };
        };
        let start = inner.recent.partition_point(|f| seq_of(f) <= Some(from));
        let frames = inner
            .recent
            .range(start..)
            .filter(|f| frame_matches(f, sub))
            .cloned()
            .collect();
        Replay {
            recovered: true,
            frames,
            upto,
        }
    }

    /// The events after `positions` (the origin sequence seen last of each origin region) that
    /// match `sub`: recovered when the recent events hold every event of every origin after
    /// its position. Origins where the client is ahead of this instance (it saw events a
    /// mirror has not brought yet) are named in [`ReplayAt::ahead`], with the client's position.
    pub fn replay_at(&self, positions: &[(String, u64)], sub: &Subscription) -> ReplayAt {
        let mut inner = self.inner.lock();
        self.evict_aged(&mut inner, Instant::now());
        let upto = inner.next_seq - 1;
        let at = |region: &str| {
            positions
                .iter()
                .find(|(r, _)| r.as_str() == region)
                .map_or(0, |(_, p)| *p)
        };
        let recovered = inner.origins.iter().all(|m| at(&m.region) >= m.gone_upto);
        let ahead = positions
            .iter()
            .filter(|(r, p)| *p > inner.last_of(r))
            .cloned()
            .collect();
        let frames = match recovered {
            false => Vec::new(),
            true => inner
                .recent
                .iter()
                .filter(|f| {
                    let o = f.event.as_ref().and_then(|m| m.origin.as_ref());
                    o.is_some_and(|o| o.seq > at(&o.region)) && frame_matches(f, sub)
                })
                .cloned()
                .collect(),
        };
        ReplayAt {
            replay: Replay {
                recovered,
                frames,
                upto,
            },
            ahead,
        }
    }

    /// The last origin sequence routed of each origin region (NATS mode; empty elsewhere):
    /// where a client that subscribes now stands.
    pub fn positions(&self) -> Vec<(Arc<str>, u64)> {
        self.inner.lock().positions()
    }

    /// The last sequence number handed out: every event routed so far has it or an older one.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().next_seq - 1
    }

    /// The state (the latest event of every entity) that matches `sub`, oldest change first,
    /// with the position it was read at.
    pub fn state(&self, sub: &Subscription) -> StateRead {
        let inner = self.inner.lock();
        let upto = inner.next_seq - 1;
        // The newest recent event names the position, if it is the last one numbered (with
        // no recent history a page has no position to resume from: it subscribes with
        // `snapshot` instead).
        let position = inner
            .recent
            .back()
            .and_then(|f| f.event.as_ref())
            .filter(|m| m.seq == upto)
            .map(|m| m.event_id.clone());
        StateRead {
            frames: inner.state.read(sub),
            upto,
            position,
            positions: inner.positions(),
        }
    }

    /// Forgets the recent events (the broker may have missed some): a resume from any of them
    /// answers `recovered: false`. The latest events stay (they are still the last known state).
    pub fn forget_recent(&self) {
        let mut inner = self.inner.lock();
        inner.recent.clear();
        inner.by_id.clear();
        inner.recent_bytes = 0;
        for mark in &mut inner.origins {
            mark.gone_upto = mark.last;
        }
    }

    /// How many recent events and state entities are held, and how many entities the bounds
    /// pushed out so far.
    pub fn sizes(&self) -> Sizes {
        let inner = self.inner.lock();
        Sizes {
            recent: inner.recent.len(),
            entities: inner.state.len(),
            evicted: inner.state.evicted(),
        }
    }
}

impl Inner {
    /// The last origin sequence routed of each origin region.
    fn positions(&self) -> Vec<(Arc<str>, u64)> {
        self.origins
            .iter()
            .map(|m| (m.region.clone(), m.last))
            .collect()
    }

    /// The last origin sequence routed of `region` (0: none yet).
    fn last_of(&self, region: &str) -> u64 {
        self.origins
            .iter()
            .find(|m| &*m.region == region)
            .map_or(0, |m| m.last)
    }

    /// The mark of `region`'s stream, if one of its events was routed.
    fn mark(&mut self, region: &str) -> Option<&mut OriginMark> {
        self.origins.iter_mut().find(|m| &*m.region == region)
    }

    /// Notes that the event at `o` was routed (and `kept` in the recent events, or not).
    fn origin_routed(&mut self, o: &crate::event::Origin, kept: bool) {
        let mark = match self.origins.iter().position(|m| m.region == o.region) {
            Some(i) => &mut self.origins[i],
            None => {
                // The first event seen of this origin: what came before it is not here.
                self.origins.push(OriginMark {
                    region: o.region.clone(),
                    last: 0,
                    gone_upto: o.seq.saturating_sub(1),
                });
                let last = self.origins.len() - 1;
                &mut self.origins[last]
            }
        };
        mark.last = mark.last.max(o.seq);
        if !kept {
            mark.gone_upto = mark.gone_upto.max(o.seq);
        }
    }
}

/// A frame's sequence number, if it is an event.
fn seq_of(f: &OutFrame) -> Option<u64> {
    f.event.as_ref().map(|m| m.seq)
}

/// Whether an event frame matches a subscription.
pub(crate) fn frame_matches(f: &OutFrame, sub: &Subscription) -> bool {
    f.event.as_ref().is_some_and(|m| {
        sub.matches(
            m.event_type,
            m.cluster_id.as_deref(),
            m.namespace.as_deref(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityKeys;
    use crate::event::{parse_event, EventType};
    use crate::subscription::sub;

    /// Routes (numbers and records) one GPU_UPDATE of `cluster` with id `id`.
    fn route(h: &History, id: &str, cluster: &str) -> Arc<OutFrame> {
        let json =
            format!(r#"{{"event_type":"GPU_UPDATE","event_id":"{id}","cluster_id":"{cluster}"}}"#);
        let event = parse_event(json.as_bytes(), &EntityKeys::default()).expect("valid event");
        h.sequence(true, |seq| OutFrame::event(event, seq))
    }

    /// Routes a GPU_UPDATE with id `id` from `region`'s stream at `seq`.
    fn route_at(h: &History, id: &str, region: &str, seq: u64) {
        let json = format!(r#"{{"event_type":"GPU_UPDATE","event_id":"{id}"}}"#);
        let event = parse_event(json.as_bytes(), &EntityKeys::default()).expect("valid event");
        let at = crate::event::Origin {
            region: region.into(),
            seq,
        };
        h.sequence(true, |n| OutFrame::event(event.at_origin(at), n));
    }

    fn ids(frames: &[Arc<OutFrame>]) -> Vec<&str> {
        frames
            .iter()
            .map(|f| f.event.as_ref().map_or("", |m| m.event_id.as_str()))
            .collect()
    }

    fn config(max_events: usize, max_bytes: usize, snapshot_keys: usize) -> HistoryConfig {
        HistoryConfig {
            max_events,
            max_age_seconds: 300.0,
            max_bytes,
            snapshot_keys,
            entity_keys: EntityKeys::default(),
        }
    }

    #[test]
    fn replays_after_an_id_within_the_bounds_and_forgets_on_a_gap() {
        let h = History::new(&config(3, 1 << 20, 10));
        let all = sub(&[EventType::GPU_UPDATE], &[], &[]);
        for (id, c) in [("a", "c1"), ("b", "c2"), ("c", "c1"), ("d", "c1")] {
            route(&h, id, c);
        }
        // Three kept: "a" fell out.
        assert!(!h.replay("a", &all).recovered);
        let r = h.replay("b", &all);
        assert!(r.recovered);
        assert_eq!(ids(&r.frames), ["c", "d"]);
        assert_eq!(r.upto, 4);
        let only_c2 = sub(&[EventType::GPU_UPDATE], &["c2"], &[]);
        assert_eq!(h.replay("b", &only_c2).frames.len(), 0);
        // The latest of each entity (GPU updates without a node: by namespace), oldest first,
        // read at the last event routed.
        let state = h.state(&all);
        assert_eq!(ids(&state.frames), ["b", "d"]);
        assert_eq!((state.upto, state.position.as_deref()), (4, Some("d")));
        h.forget_recent();
        assert!(!h.replay("c", &all).recovered);
        assert_eq!(
            h.state(&all).position,
            None,
            "no recent event to resume from"
        );
        let sizes = h.sizes();
        assert_eq!((sizes.recent, sizes.entities), (0, 2), "the state stays");
    }

    #[test]
    fn resumes_from_positions_whatever_order_the_origins_were_routed_in() {
        let h = History::new(&config(5, 1 << 20, 10));
        let all = sub(&[EventType::GPU_UPDATE], &[], &[]);
        // This instance saw region b's stream from 7 on (it started then), a's from 1.
        for (id, region, seq) in [
            ("a1", "a", 1),
            ("b7", "b", 7),
            ("a2", "a", 2),
            ("b8", "b", 8),
        ] {
            route_at(&h, id, region, seq);
        }
        let at = |p: &[(&str, u64)]| -> Vec<(String, u64)> {
            p.iter().map(|(r, s)| (r.to_string(), *s)).collect()
        };
        let positions: Vec<(String, u64)> = h
            .positions()
            .iter()
            .map(|(r, s)| (r.to_string(), *s))
            .collect();
        assert_eq!(positions, at(&[("a", 2), ("b", 8)]));
        // Seen elsewhere in another order: a up to 2, b up to 7.
        let r = h.replay_at(&at(&[("a", 2), ("b", 7)]), &all);
        assert!(r.replay.recovered);
        assert_eq!(ids(&r.replay.frames), ["b8"]);
        assert!(r.ahead.is_empty());
        // b before 7 was never here: not recovered; a client ahead on a is named.
        let r = h.replay_at(&at(&[("a", 4), ("b", 5)]), &all);
        assert!(!r.replay.recovered);
        assert_eq!(r.ahead, at(&[("a", 4)]));
        // An origin the client has no position for is replayed from its start when held.
        let r = h.replay_at(&at(&[("b", 8)]), &all);
        assert!(r.replay.recovered);
        assert_eq!(ids(&r.replay.frames), ["a1", "a2"]);
        // Two more: a1 and b7 evicted (5 kept), so a resume from a 0 is not recovered.
        route_at(&h, "a3", "a", 3);
        route_at(&h, "a4", "a", 4);
        assert!(!h.replay_at(&at(&[("b", 8)]), &all).replay.recovered);
        let r = h.replay_at(&at(&[("a", 1), ("b", 7)]), &all);
        assert!(r.replay.recovered);
        assert_eq!(ids(&r.replay.frames), ["a2", "b8", "a3", "a4"]);
        // A gap: every origin's events up to the last routed are gone.
        h.forget_recent();
        assert!(
            !h.replay_at(&at(&[("a", 3), ("b", 8)]), &all)
                .replay
                .recovered
        );
        assert!(
            h.replay_at(&at(&[("a", 4), ("b", 8)]), &all)
                .replay
                .recovered
        );
    }

    #[test]
    fn an_event_carries_its_origin_in_its_message() {
        let json = r#"{"event_type":"GPU_UPDATE","event_id":"x"}"#;
        let event = parse_event(json.as_bytes(), &EntityKeys::default()).expect("valid event");
        let at = crate::event::Origin {
            region: "eu-1".into(),
            seq: 42,
        };
        let frame = OutFrame::event(event.at_origin(at.clone()), 1);
        let v: serde_json::Value = serde_json::from_slice(frame.message()).expect("JSON");
        assert_eq!(
            (v["origin"].as_str(), v["origin_seq"].as_u64()),
            (Some("eu-1"), Some(42))
        );
        assert_eq!(v["event_id"], "x");
        assert_eq!(
            frame.event.as_ref().and_then(|m| m.origin.clone()),
            Some(at)
        );
    }

    #[test]
    fn bytes_bound_recent_and_latest_events() {
        let size = route(&History::new(&config(0, 0, 0)), "x0", "c0")
            .bytes()
            .len();
        // Room for two frames' bytes.
        let h = History::new(&config(100, 2 * size, 100));
        let all = sub(&[EventType::GPU_UPDATE], &[], &[]);
        for i in 0..5 {
            route(&h, &format!("x{i}"), &format!("c{i}"));
        }
        let r = h.replay("x3", &all);
        assert!(r.recovered);
        assert_eq!(ids(&r.frames), ["x4"]);
        assert!(!h.replay("x2", &all).recovered);
        // Two entities fit: the oldest went first, counted.
        let sizes = h.sizes();
        assert_eq!((sizes.recent, sizes.entities, sizes.evicted), (2, 2, 3));
        assert_eq!(ids(&h.state(&all).frames), ["x3", "x4"]);
        route(&h, "y", "c0");
        assert_eq!(ids(&h.state(&all).frames), ["x4", "y"]);
    }
}
