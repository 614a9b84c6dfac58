//! What a `subscribe` may ask for before live events: the events since the one it last saw
//! (`resume_from`), or the latest event of each matching key (`snapshot`).
//!
//! The seam, with no gap and no duplicate: the caller holds the client's live events back in
//! its ring before the subscription enters the index; the history is read after, so it covers
//! every event up to a sequence number `upto` (events after it reach the ring, because the
//! subscription was already indexed when they were routed). The events read go out ahead of
//! the ring through the lossless control queue, then the ring is let go, and the writer skips
//! the live copies of events this answer covered (matching the subscription, `upto` or older).

use crate::client::ClientHandle;
use crate::history::History;
use crate::protocol::{reply, Catchup};
use crate::subscription::Subscription;
use crate::ws::frame::OutFrame;
use std::sync::Arc;
use std::time::Duration;

/// Most resumed or snapshot events waiting in the control queue at once, so a long replay
/// neither fills the queue (replies would be refused) nor outruns a slow reader.
const IN_FLIGHT: usize = 64;

/// Sends what `catchup` asks for about `sub` (already indexed, with live events held back),
/// then lets the live events go.
pub(super) async fn send(
    history: &History,
    client: &ClientHandle,
    sub: &Subscription,
    catchup: &Catchup,
) {
    let mut covered = None;
    let mut resumed = false;
    if let Some(id) = &catchup.resume_from {
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
        let (frames, upto) = history.snapshot(sub);
        let n = frames.len();
        let marked = frames.iter().map(|f| f.snapshot_copy()).collect();
        if !send_all(client, marked).await {
            return client.hold_events(false);
        }
        client.send_control(reply::snapshot_complete(n));
        covered = Some(upto);
    }
    if let Some(upto) = covered {
        client.cover(sub, upto);
    }
    client.hold_events(false);
}

/// Queues `frames` for the writer, at most [`IN_FLIGHT`] at a time; false if the connection
/// is ending meanwhile.
async fn send_all(client: &ClientHandle, frames: Vec<Arc<OutFrame>>) -> bool {
    for f in frames {
        while client.control_len() >= IN_FLIGHT {
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
