//! The router: one validated event in, the same encoded frame in every matching client's ring.
//!
//! Per event: the message was serialized once by [`crate::event::parse_event`]; here the frame
//! header is written in place once, the current index snapshot is read without a lock, and one
//! `Arc` of the frame is pushed to each matching client's ring, whose writer is then woken.
//! Nothing here waits on any client.

use crate::backpressure::Push;
use crate::event::ParsedEvent;
use crate::frame::OutFrame;
use crate::index::SubscriptionIndex;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Routes events to clients.
pub struct Router {
    /// Where matching clients are found.
    index: Arc<SubscriptionIndex>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Event sequence numbers, for once-per-client delivery.
    seq: AtomicU64,
}

/// What routing one event did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteOutcome {
    /// Clients the event was queued for.
    pub recipients: u64,
    /// Of those, how many rings were full (a frame was dropped).
    pub dropped: u64,
}

impl Router {
    /// A router over `index`.
    pub fn new(index: Arc<SubscriptionIndex>, metrics: Arc<Metrics>) -> Self {
        Self {
            index,
            metrics,
            seq: AtomicU64::new(1),
        }
    }

    /// Delivers one event to every matching client.
    pub fn route(&self, event: ParsedEvent) -> RouteOutcome {
        let frame = Arc::new(OutFrame::from_headroom(
            event.message,
            fastwebsockets::OpCode::Text,
        ));
        let seq = self.seq.fetch_add(1, Relaxed);
        let mut out = RouteOutcome::default();
        let snapshot = self.index.load();
        snapshot.for_each_match(
            event.event_type,
            event.cluster_id.as_deref(),
            event.namespace.as_deref(),
            |client| {
                if !client.first_delivery(seq) {
                    return;
                }
                out.recipients += 1;
                if client.ring.push(frame.clone()) == Push::Dropped {
                    out.dropped += 1;
                    client.dropped.fetch_add(1, Relaxed);
                }
                client.wake.notify_one();
            },
        );
        let local = self.metrics.local();
        local.events_routed[event.event_type.index()].fetch_add(1, Relaxed);
        local.deliveries.fetch_add(out.recipients, Relaxed);
        if out.dropped > 0 {
            local.events_dropped.fetch_add(out.dropped, Relaxed);
        }
        out
    }
}
