//! The router: one validated event in, the same encoded frame in every matching client's ring.
//!
//! Per event, on whatever thread published it: the message was serialized once by
//! [`crate::event::parse_event`]; here the frame header is written in place once, and one shared
//! [`Routed`] event is handed to each shard's inbox (a lock-free queue and one wake-up per shard).
//! Each shard's fan-out task then reads its own index snapshot without a lock and pushes one `Arc`
//! of the frame into each matching client's ring, on the same thread that runs those clients'
//! writers: the rings stay in that core's cache and waking a writer is a local operation.
//! Nothing here waits on any client. Each inbox is bounded (`backpressure.max_pending_events`):
//! when the shards fall that far behind, new events are refused rather than queued without
//! limit, and the caller says so (503 to a publisher, a counted drop for an arrival from Redis).
//!
//! Owns the shards' inboxes; brokers (through the hub) enqueue, each shard's fan-out task drains
//! its own.

use crate::backpressure::Push;
use crate::broker::{Full, Scope};
use crate::event::ParsedEvent;
use crate::frame::OutFrame;
use crate::history::History;
use crate::index::SubscriptionIndex;
use crate::metrics::Metrics;
use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::Notify;

/// An event ready for fan-out, shared by every shard.
#[derive(Debug)]
pub struct Routed {
    /// The encoded frame, with the event's type, cluster, namespace and sequence number.
    frame: Arc<OutFrame>,
    /// Which subscriptions this arrival serves.
    scope: Scope,
}

/// A shard's queue of events to fan out.
#[derive(Default)]
struct Inbox {
    /// Events waiting.
    queue: SegQueue<Arc<Routed>>,
    /// How many, read without walking the queue.
    pending: AtomicUsize,
    /// Wakes the shard's fan-out task.
    wake: Notify,
}

/// Routes events to clients.
pub struct Router {
    /// Where matching clients are found.
    index: Arc<SubscriptionIndex>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Hands out sequence numbers and keeps the recent and latest events.
    history: Arc<History>,
    /// One inbox per shard.
    inboxes: Box<[Inbox]>,
    /// Most events waiting in one inbox.
    max_pending: usize,
}

/// What fanning out did on one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Frames queued for clients.
    pub deliveries: u64,
    /// Of those, how many found a full ring (a frame was dropped).
    pub dropped: u64,
}

impl Router {
    /// A router over `index`, for `shards` shards, each holding up to `max_pending` events,
    /// numbering events through `history` (which records those routed to every subscription).
    pub fn new(
        index: Arc<SubscriptionIndex>,
        metrics: Arc<Metrics>,
        history: Arc<History>,
        shards: usize,
        max_pending: usize,
    ) -> Self {
        Self {
            index,
            metrics,
            history,
            inboxes: (0..shards.max(1)).map(|_| Inbox::default()).collect(),
            max_pending: max_pending.max(1),
        }
    }

    /// Hands one event to every shard for fan-out to every matching client. Never waits.
    pub fn route(&self, event: ParsedEvent) -> Result<(), Full> {
        self.route_scoped(event, Scope::Every)
    }

    /// Hands one arrival of an event to every shard, for the subscriptions `scope` names.
    pub fn route_scoped(&self, event: ParsedEvent, scope: Scope) -> Result<(), Full> {
        self.enqueue(event, scope)?;
        self.wake_shards();
        Ok(())
    }

    /// Whether every shard's inbox has room for another event.
    pub fn has_room(&self) -> bool {
        self.inboxes
            .iter()
            .all(|i| i.pending.load(Relaxed) < self.max_pending)
    }

    /// Hands one arrival to every shard's inbox without waking the shards: a broker that
    /// received several events at once enqueues them all, then calls [`Router::wake_shards`]
    /// once. Refused, for every shard alike, when any inbox is full (concurrent publishers may
    /// overshoot the bound by one event each).
    pub fn enqueue(&self, event: ParsedEvent, scope: Scope) -> Result<(), Full> {
        if !self.has_room() {
            return Err(Full);
        }
        let ty = event.event_type;
        // An arrival serving only half of the index (Redis Cluster) is not the whole stream:
        // only arrivals for every subscription are recorded, and past events read back.
        let record = matches!(scope, Scope::Every | Scope::Past);
        let frame = self
            .history
            .sequence(record, |seq| OutFrame::event(event, seq));
        if scope == Scope::Past {
            return Ok(());
        }
        let routed = Arc::new(Routed { frame, scope });
        self.metrics.local().events_routed[ty.index()].fetch_add(1, Relaxed);
        for inbox in self.inboxes.iter() {
            inbox.pending.fetch_add(1, Relaxed);
            inbox.queue.push(routed.clone());
        }
        Ok(())
    }

    /// Wakes every shard's fan-out task for what was enqueued.
    pub fn wake_shards(&self) {
        for inbox in self.inboxes.iter() {
            inbox.wake.notify_one();
        }
    }

    /// The history events are numbered and recorded in.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Fans out every event waiting for `shard` to that shard's matching clients.
    pub fn drain(&self, shard: usize) -> FanOut {
        let mut out = FanOut::default();
        let inbox = &self.inboxes[shard.min(self.inboxes.len() - 1)];
        while let Some(ev) = inbox.queue.pop() {
            inbox.pending.fetch_sub(1, Relaxed);
            let Some(meta) = &ev.frame.event else {
                continue;
            };
            let snapshot = self.index.load(shard);
            let (ty, cluster, ns) = (
                meta.event_type,
                meta.cluster_id.as_deref(),
                meta.namespace.as_deref(),
            );
            snapshot.for_each_in_scope(ev.scope, ty, cluster, ns, meta.seq, |client| {
                out.deliveries += 1;
                match client.ring.push(client.encoded(&ev.frame)) {
                    // Only a frame into an empty ring wakes the writer: it empties the ring
                    // before it sleeps, and a writer holding back to coalesce is not woken
                    // for each frame that joins its next write.
                    Push::First => client.wake.notify_one(),
                    Push::Queued => {}
                    Push::Dropped => {
                        out.dropped += 1;
                        client.activity.dropped.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        let local = self.metrics.local();
        local.deliveries.fetch_add(out.deliveries, Relaxed);
        if out.dropped > 0 {
            local.events_dropped.fetch_add(out.dropped, Relaxed);
        }
        out
    }

    /// A shard's fan-out task: waits for events and fans them out, for the shard's life;
    /// `before_drain` runs at each wake-up (the shard samples its load there).
    pub async fn run_shard(self: Arc<Self>, shard: usize, mut before_drain: impl FnMut()) {
        let inbox = &self.inboxes[shard.min(self.inboxes.len() - 1)];
        loop {
            inbox.wake.notified().await;
            before_drain();
            self.drain(shard);
        }
    }
}
