//! What a `subscribe` may ask for before live events: the events since the one it last saw
//! (`resume_from`), or the latest event of each matching key (`snapshot`).
//!
//! The seam, with no gap and no duplicate: the caller holds the client's live events back in
//! its ring before the subscription enters the index; the history is read after, so it covers
//! every event up to a sequence number `upto` (events after it reach the ring, because the
//! subscription was already indexed when they were routed). The events read go out ahead of
//! the ring through the lossless control queue, then the ring is let go, and the writer skips
//! the live copies of events this answer covered (matching the subscription, `upto` or older).
//!
//! Owns nothing that lives: it writes the client's seam (`crate::seam`) and reads the history or
//! the broker's shared history.

use crate::broker::{OriginStatus, SHARED_HISTORY_TIMEOUT};
use crate::client::ClientHandle;
use crate::frame::OutFrame;
use crate::history::History;
use crate::hub::Hub;
use crate::protocol::{reply, Catchup};
use crate::state::State;
use crate::subscription::Subscription;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Most resumed or snapshot events waiting in the control queue at once, and most of their
/// bytes, so a long replay neither fills the queue (replies would be refused) nor outruns a
/// slow reader.
const IN_FLIGHT: usize = 64;
/// See [`IN_FLIGHT`]: half the queue's bytes, the other half left for replies.
const IN_FLIGHT_BYTES: usize = crate::client::CONTROL_QUEUE_BYTES / 2;

/// Sends what `catchup` asks for about `sub` (already indexed, with live events held back),
/// then lets the live events go.
pub(crate) async fn send(hub: &Hub, client: &ClientHandle, sub: &Subscription, catchup: &Catchup) {
    let history = hub.router.history();
    let mut covered = None;
    let mut resumed = false;
    let origins = hub.broker.origins();
    if let Some(positions) = catchup.positions.as_ref().filter(|_| !origins.is_empty()) {
        // NATS: where the client stands in each origin region's stream, whichever region it
        // was in.
        match resume_at(history, client, sub, positions, &origins).await {
            Some(upto) => (covered, resumed) = (Some(upto), true),
            None if client.goodbye().is_some() => return client.hold_events(false),
            None => {}
        }
    } else if let Some(id) = &catchup.resume_from {
        if let Some(shared) = hub.broker.shared_history() {
            // Redis Cluster: this instance's history holds only its clients' clusters.
            let done = resume_from_shared(client, sub, shared.replay(id)).await;
            if catchup.snapshot && !done {
                let bounds = hub.settings.session.state_bounds;
                snapshot_from_shared(client, sub, shared.recent(), bounds).await;
            }
            return client.hold_events(false);
        }
        let replay = history.replay(id, sub);
        let n = replay.frames.len();
        if replay.recovered {
            if !send_all(client, replay.frames).await {
                return client.hold_events(false);
            }
            covered = Some(replay.upto);
            resumed = true;
        }
        client.send_control(reply::replay_complete(replay.recovered, n));
    }
    // A resume that worked already brought the client up to date.
    if catchup.snapshot && !resumed {
        if let Some(shared) = hub.broker.shared_history() {
            let bounds = hub.settings.session.state_bounds;
            snapshot_from_shared(client, sub, shared.recent(), bounds).await;
            return client.hold_events(false);
        }
        covered = snapshot(history, client, sub).await;
    }
    if let Some(upto) = covered {
        client.seam.cover(sub, upto);
    }
    client.hold_events(false);
}

/// Resumes from `positions` (the last `origin_seq` the client saw of each origin region): the
/// events after them that match, then `replay_complete`; live events of origins where the
/// client is ahead of this instance are skipped up to its position; an origin region that
/// cannot be reached is named in a notice, with how much of it is not here yet. The last
/// sequence number covered when it recovered.
async fn resume_at(
    history: &History,
    client: &ClientHandle,
    sub: &Subscription,
    positions: &[(String, u64)],
    origins: &[OriginStatus],
) -> Option<u64> {
    let crate::history::ReplayAt { replay, ahead } = history.replay_at(positions, sub);
    let (recovered, n, upto) = (replay.recovered, replay.frames.len(), replay.upto);
    if recovered && !send_all(client, replay.frames).await {
        return None;
    }
    if !ahead.is_empty() {
        client.seam.cover_origins(sub, ahead);
    }
    client.send_control(reply::replay_complete(recovered, n));
    for o in origins.iter().filter(|o| !o.reachable) {
        let seen = positions
            .iter()
            .find(|(r, _)| **r == *o.region)
            .map_or(0, |(_, p)| *p);
        // Past both what this region holds and what the client saw: missed, for now.
        let missing = o.origin_last.saturating_sub(seen.max(o.stored));
        client.send_control(reply::origin_unreachable(&o.region, o.stored, missing));
    }
    recovered.then_some(upto)
}

/// Sends the state (the latest event of each matching entity), then `snapshot_complete`; the last sequence
/// number the snapshot covers, or `None` if the connection ended meanwhile.
async fn snapshot(history: &History, client: &ClientHandle, sub: &Subscription) -> Option<u64> {
    let crate::history::StateRead { frames, upto, .. } = history.state(sub);
    let n = frames.len();
    // The history's own frames, marked once and shared: a client that stalls mid-snapshot
    // holds references to them, not a copy.
    let marked = frames.iter().map(|f| f.snapshot_twin()).collect();
    if !send_all(client, marked).await {
        return None;
    }
    client.send_control(reply::snapshot_complete(n));
    Some(upto)
}

/// A snapshot from a broker's shared history: the state folded from its events (the rules and
/// bounds of the instance's own), oldest change first, then `snapshot_complete`. Every matching
/// event read is covered by id, so an older one still on its way live never lands after the
/// newer state.
async fn snapshot_from_shared(
    client: &ClientHandle,
    sub: &Subscription,
    read: crate::broker::ReplayFuture<'_>,
    bounds: (usize, usize),
) {
    let events = match tokio::time::timeout(SHARED_HISTORY_TIMEOUT, read).await {
        Ok(Ok(Some(events))) => events,
        // Unreadable: an empty snapshot, said so; live events follow.
        _ => {
            client.send_control(reply::snapshot_complete(0));
            return;
        }
    };
    let frames: Vec<Arc<OutFrame>> = events.into_iter().map(|e| OutFrame::event(e, 0)).collect();
    let ids = ids_matching(&frames, sub);
    let state = State::fold(frames, sub, bounds.0, bounds.1);
    let latest: Vec<Arc<OutFrame>> = state.read(sub).iter().map(|f| f.snapshot_twin()).collect();
    let n = latest.len();
    if send_all(client, latest).await {
        client.seam.cover_ids(sub, ids);
        client.send_control(reply::snapshot_complete(n));
    }
}

/// Resumes from a broker's shared history: the events after the id that match, then
/// `replay_complete`; their live copies are skipped by id. True when it recovered.
async fn resume_from_shared(
    client: &ClientHandle,
    sub: &Subscription,
    read: crate::broker::ReplayFuture<'_>,
) -> bool {
    let events = match tokio::time::timeout(SHARED_HISTORY_TIMEOUT, read).await {
        Ok(Ok(Some(events))) => events,
        // Not found, unreadable or too slow: never a silent gap.
        _ => {
            client.send_control(reply::replay_complete(false, 0));
            return false;
        }
    };
    let (frames, ids) = matching_frames(events, sub);
    let n = frames.len();
    if !send_all(client, frames).await {
        return false;
    }
    client.seam.cover_ids(sub, ids);
    client.send_control(reply::replay_complete(true, n));
    true
}

/// The events from a shared history that match `sub`, as frames, and their ids.
fn matching_frames(
    events: Vec<crate::event::ParsedEvent>,
    sub: &Subscription,
) -> (Vec<Arc<OutFrame>>, HashSet<String>) {
    let frames: Vec<Arc<OutFrame>> = events
        .into_iter()
        .map(|e| OutFrame::event(e, 0))
        .filter(|f| crate::history::frame_matches(f, sub))
        .collect();
    let ids = frames
        .iter()
        .filter_map(|f| f.event.as_ref().map(|m| m.event_id.clone()))
        .collect();
    (frames, ids)
}

/// The ids of the frames that match `sub`.
fn ids_matching(frames: &[Arc<OutFrame>], sub: &Subscription) -> HashSet<String> {
    frames
        .iter()
        .filter(|f| crate::history::frame_matches(f, sub))
        .filter_map(|f| f.event.as_ref().map(|m| m.event_id.clone()))
        .collect()
}

/// Queues `frames` for the writer, at most [`IN_FLIGHT`] and [`IN_FLIGHT_BYTES`] at a time
/// (one larger frame alone); false if the connection is ending meanwhile.
async fn send_all(client: &ClientHandle, frames: Vec<Arc<OutFrame>>) -> bool {
    for f in frames {
        // Room for this one: a frame larger than the byte budget waits for an empty queue.
        while !client.room_for(f.bytes().len(), (IN_FLIGHT, IN_FLIGHT_BYTES)) {
            if client.goodbye().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !client.send_control(f) {
            return false;
        }
    }
    true
}
