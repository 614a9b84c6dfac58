//! The resume seam of one client: which live event frames its writer must not send because a
//! resume or snapshot already sent them, or because a fresh, narrower grant no longer covers
//! them.
//!
//! Owned by the catch-up: `session/catchup.rs` holds the live events back while it sends, and
//! records what it covered ([`Seam::cover`], [`Seam::cover_ids`], and for a resume from NATS
//! positions the origins the client was ahead on, [`Seam::cover_origins`]); a re-authentication that
//! narrows the subscriptions records the new grant ([`Seam::regrant`]). The client's writer only
//! asks ([`Seam::is_holding`], [`Seam::skip`]). A client that never resumed carries two atomics
//! and an empty pointer here.

use crate::frame::OutFrame;
use crate::history::frame_matches;
use crate::subscription::Subscription;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the live copies of events a shared history replayed are watched for.
const IDS_COVER_FOR: Duration = Duration::from_secs(30);
/// How long live events of an origin the client was ahead on are watched for, at most (each
/// origin's watch ends sooner, with its first live event past the client's position).
const ORIGINS_COVER_FOR: Duration = Duration::from_secs(600);

/// What a resume or snapshot sent ahead of the live events, for one subscription.
enum Covered {
    /// Every matching event up to this sequence number (the instance's own history).
    UpTo(u64),
    /// These events (a broker's shared history, read at this moment): their live copies may
    /// still arrive for a while, not after [`IDS_COVER_FOR`].
    Ids(HashSet<String>, Instant),
    /// Events of these origin regions up to these origin sequences (the client saw them in
    /// another region before this instance routed them): skipped when they arrive live.
    Origins(Vec<(String, u64)>, Instant),
}

/// What is covered, boxed once the client first resumes or is regranted.
#[derive(Default)]
struct Covers {
    /// Each resume or snapshot sent: the subscription and what it covered (the latest each).
    covered: Vec<(Subscription, Covered)>,
    /// After a fresh token narrowed the subscriptions: events queued up to this sequence
    /// number reach the client only if they match one of these (the subscriptions now held).
    regranted: Option<(u64, Vec<Subscription>)>,
}

/// One client's seam.
#[derive(Default)]
pub(crate) struct Seam {
    /// While set, the writer leaves the ring alone: a resume or snapshot is being sent ahead
    /// of the live events gathering there.
    holding: AtomicBool,
    /// The highest sequence number covered (0: none): ring frames up to it are checked against
    /// `covers` and skipped when already sent.
    covered_upto: AtomicU64,
    /// What was covered.
    covers: Mutex<Option<Box<Covers>>>,
}

impl Seam {
    /// Holds live events back (true) while a resume or snapshot goes out, or lets them go.
    pub(crate) fn hold(&self, hold: bool) {
        self.holding.store(hold, Ordering::Release);
    }

    /// Whether live events are held back.
    pub(crate) fn is_holding(&self) -> bool {
        self.holding.load(Ordering::Acquire)
    }

    /// Records that events matching `sub` up to sequence number `upto` were sent by a resume
    /// or snapshot, so their live copies are skipped. One entry per subscription and kind (the latest).
    pub(crate) fn cover(&self, sub: &Subscription, upto: u64) {
        self.add_cover(sub, Covered::UpTo(upto));
        self.covered_upto.fetch_max(upto, Ordering::AcqRel);
    }

    /// Records that the events with these ids, matching `sub`, were sent by a resume from a
    /// broker's shared history, so their live copies are skipped (for [`IDS_COVER_FOR`]).
    pub(crate) fn cover_ids(&self, sub: &Subscription, ids: HashSet<String>) {
        self.add_cover(sub, Covered::Ids(ids, Instant::now()));
        self.covered_upto.store(u64::MAX, Ordering::Release);
    }

    /// Records that the client already has the events of each origin region up to its origin
    /// sequence here (it saw them in another region, ahead of this instance), so their live
    /// copies matching `sub` are skipped when they arrive.
    pub(crate) fn cover_origins(&self, sub: &Subscription, positions: Vec<(String, u64)>) {
        self.add_cover(sub, Covered::Origins(positions, Instant::now()));
        self.covered_upto.store(u64::MAX, Ordering::Release);
    }

    /// Replaces what is covered for `sub`, of the same kind (a resume from positions covers
    /// both the origins a client is ahead on and a sequence number).
    fn add_cover(&self, sub: &Subscription, covered: Covered) {
        let mut covers = self.covers.lock();
        let list = &mut covers.get_or_insert_with(Box::default).covered;
        let kind = std::mem::discriminant(&covered);
        list.retain(|(s, c)| s != sub || std::mem::discriminant(c) != kind);
        list.push((sub.clone(), covered));
    }

    /// After a fresh token narrowed the client's subscriptions to `subs`: the events already
    /// queued (up to sequence number `upto`, the last one routed) that match none of them are
    /// skipped, so nothing outside the new grant goes out after the change.
    pub(crate) fn regrant(&self, upto: u64, subs: Vec<Subscription>) {
        self.covers
            .lock()
            .get_or_insert_with(Box::default)
            .regranted = Some((upto, subs));
        self.covered_upto.fetch_max(upto, Ordering::AcqRel);
    }

    /// Whether a live event frame from the ring is not to be sent: a resume or snapshot sent
    /// it already, or it was queued under a grant the client no longer holds.
    pub(crate) fn skip(&self, frame: &OutFrame) -> bool {
        let Some(meta) = frame.event.as_ref() else {
            return false;
        };
        if meta.seq > self.covered_upto.load(Ordering::Acquire) {
            return false;
        }
        let mut covers = self.covers.lock();
        let Some(c) = covers.as_mut() else {
            return false;
        };
        if let Some((upto, subs)) = &c.regranted {
            if meta.seq <= *upto && !subs.iter().any(|s| frame_matches(frame, s)) {
                return true;
            }
        }
        let sent = c.covered.iter().any(|(sub, covered)| {
            let covers = match covered {
                Covered::UpTo(upto) => meta.seq <= *upto,
                Covered::Ids(ids, _) => ids.contains(&meta.event_id),
                Covered::Origins(floors, _) => meta.origin.as_ref().is_some_and(|o| {
                    floors
                        .iter()
                        .any(|(r, upto)| **r == *o.region && o.seq <= *upto)
                }),
            };
            covers && frame_matches(frame, sub)
        });
        self.expire(c, meta.origin.as_ref());
        sent
    }

    /// Id covers end after a while, origin covers once `passed` (a live event's origin) is
    /// past them or after a longer while; then only sequence numbers are checked again.
    fn expire(&self, c: &mut Covers, passed: Option<&crate::event::Origin>) {
        let before = c.covered.len();
        for (_, covered) in c.covered.iter_mut() {
            if let (Covered::Origins(floors, _), Some(o)) = (covered, passed) {
                floors.retain(|(r, upto)| **r != *o.region || o.seq <= *upto);
            }
        }
        c.covered.retain(|(_, c)| match c {
            Covered::UpTo(_) => true,
            Covered::Ids(_, at) => at.elapsed() <= IDS_COVER_FOR,
            Covered::Origins(floors, at) => !floors.is_empty() && at.elapsed() <= ORIGINS_COVER_FOR,
        });
        if c.covered.len() != before {
            let upto = c.covered.iter().map(|(_, c)| match c {
                Covered::UpTo(u) => *u,
                Covered::Ids(..) | Covered::Origins(..) => u64::MAX,
            });
            let regranted = c.regranted.as_ref().map(|(u, _)| *u);
            self.covered_upto
                .store(upto.chain(regranted).max().unwrap_or(0), Ordering::Release);
        }
    }
}
