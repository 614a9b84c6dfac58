//! Backpressure: each client's bounded ring of event frames.
//!
//! The router pushes into the ring from any thread without a lock (crossbeam `ArrayQueue`); the
//! client's writer pops from it. When the ring is full, the oldest queued frame is dropped
//! (`drop_oldest: true`, via `force_push`) or the new one is. Every drop is counted here until the
//! writer takes the count and tells the client with a `QUEUE_FULL` error ahead of its next message.
//! The ring's slots are allocated on the first push, so a client that never receives an event
//! costs no ring memory.
//!
//! Owns one client's ring: the router pushes into it, the client's writer alone pops.

use crate::frame::OutFrame;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A client's event queue.
pub struct EventRing {
    /// The frames waiting to be written (allocated on first use).
    queue: OnceLock<Box<ArrayQueue<Arc<OutFrame>>>>,
    /// The ring's capacity.
    capacity: usize,
    /// Drop the oldest (true) or the newest (false) frame when full.
    drop_oldest: bool,
    /// Frames dropped since the writer last reported them to the client.
    unreported_drops: AtomicU64,
}

/// What happened to a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued into an empty ring: the writer may be asleep and must be woken.
    First,
    /// Queued behind frames the writer has not taken yet: it is awake, or already woken, or
    /// holding back to coalesce on its own timer (it empties the ring before it sleeps), so no
    /// wake-up is needed.
    Queued,
    /// Queued or refused, and one frame was lost to make it fit.
    Dropped,
}

impl EventRing {
    /// A ring holding up to `capacity` frames.
    pub fn new(capacity: usize, drop_oldest: bool) -> Self {
        Self {
            queue: OnceLock::new(),
            capacity: capacity.max(1),
            drop_oldest,
            unreported_drops: AtomicU64::new(0),
        }
    }

    /// Queues a frame, applying the drop policy when full. Never waits. The router and the
    /// writer of a client run on the same shard thread, so the length read after the push is
    /// exact.
    pub fn push(&self, frame: Arc<OutFrame>) -> Push {
        let queue = self
            .queue
            .get_or_init(|| Box::new(ArrayQueue::new(self.capacity)));
        let lost = if self.drop_oldest {
            queue.force_push(frame).is_some()
        } else {
            queue.push(frame).is_err()
        };
        if lost {
            self.unreported_drops.fetch_add(1, Ordering::Relaxed);
            Push::Dropped
        } else if queue.len() == 1 {
            Push::First
        } else {
            Push::Queued
        }
    }

    /// Takes the next frame.
    pub fn pop(&self) -> Option<Arc<OutFrame>> {
        self.queue.get()?.pop()
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, |q| q.len())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.get().is_none_or(|q| q.is_empty())
    }

    /// Takes the count of drops not yet reported to the client.
    pub fn take_drops(&self) -> u64 {
        self.unreported_drops.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{message_buf, OutFrame};

    fn frame(n: u8) -> Arc<OutFrame> {
        let mut b = message_buf(1);
        b.push(n);
        OutFrame::text(b)
    }

    fn drain(r: &EventRing) -> Vec<u8> {
        std::iter::from_fn(|| r.pop())
            .map(|f| *f.bytes().last().unwrap())
            .collect()
    }

    #[test]
    fn drop_oldest_keeps_newest() {
        let r = EventRing::new(2, true);
        assert_eq!(r.push(frame(1)), Push::First);
        assert_eq!(r.push(frame(2)), Push::Queued);
        assert_eq!(r.push(frame(3)), Push::Dropped);
        assert_eq!(drain(&r), vec![2, 3]);
        assert_eq!(r.take_drops(), 1);
        assert_eq!(r.take_drops(), 0);
    }

    #[test]
    fn drop_newest_keeps_oldest() {
        let r = EventRing::new(2, false);
        r.push(frame(1));
        r.push(frame(2));
        assert_eq!(r.push(frame(3)), Push::Dropped);
        assert_eq!(drain(&r), vec![1, 2]);
        assert_eq!(r.take_drops(), 1);
    }

    #[test]
    fn only_a_push_into_an_empty_ring_asks_for_a_wake_up() {
        let r = EventRing::new(4, true);
        assert_eq!(r.push(frame(1)), Push::First);
        assert_eq!(r.push(frame(2)), Push::Queued);
        drain(&r);
        assert_eq!(r.push(frame(3)), Push::First);
    }
}
