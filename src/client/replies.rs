//! A client's reply queue: protocol replies and control frames waiting for its writer,
//! lossless and limited.
//!
//! Owns the queue and its load (length and bytes packed in one atomic, so the writer and the
//! limits read it without the lock). The session and the hub queue frames through
//! `ClientHandle::send_control`; only the client's writer takes them out.

use crate::frame::OutFrame;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Most protocol replies a client may leave unread before it is disconnected: replies are
/// lossless, so a client that sends requests but never reads the answers is cut off instead.
pub(crate) const CONTROL_QUEUE_LIMIT: usize = 256;

/// Most bytes of replies a client may leave unread (a reply larger than this alone is still
/// taken while nothing else waits). With [`CONTROL_QUEUE_LIMIT`] it bounds what a client that
/// never reads can pin through its own replies (README, "Limits").
pub(crate) const CONTROL_QUEUE_BYTES: usize = 256 * 1024;

/// The load packs the queue's length (low bits) and its bytes (high bits) in one atomic, so
/// `ClientHandle` stays in its allocation class.
const LOAD_LEN_BITS: u32 = 20;

/// One queued frame of `bytes` bytes, as a load.
const fn load_of(bytes: usize) -> u64 {
    1 | ((bytes as u64) << LOAD_LEN_BITS)
}

/// The queue of one client.
#[derive(Default)]
pub(crate) struct Replies {
    /// The frames, oldest first.
    queue: Mutex<VecDeque<Arc<OutFrame>>>,
    /// Length and bytes of `queue` (packed, see [`load_of`]), read without the lock.
    load: AtomicU64,
}

impl Replies {
    /// Queues `frame` unless the queue is over its limits (a close frame is always taken);
    /// false when it was not queued.
    pub(crate) fn push(&self, frame: Arc<OutFrame>) -> bool {
        let load = load_of(frame.bytes().len());
        let before = self.load.fetch_add(load, Ordering::Relaxed);
        let bounds = (CONTROL_QUEUE_LIMIT, CONTROL_QUEUE_BYTES);
        if !fits(unpack(before), frame.bytes().len(), bounds) && !frame.is_close() {
            self.load.fetch_sub(load, Ordering::Relaxed);
            return false;
        }
        self.queue.lock().push_back(frame);
        true
    }

    /// Takes the oldest frame.
    pub(crate) fn pop(&self) -> Option<Arc<OutFrame>> {
        if self.load.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let f = self.queue.lock().pop_front()?;
        self.load
            .fetch_sub(load_of(f.bytes().len()), Ordering::Relaxed);
        Some(f)
    }

    /// How many frames wait, and their bytes.
    pub(crate) fn queued(&self) -> (usize, usize) {
        unpack(self.load.load(Ordering::Relaxed))
    }

    /// Whether a frame waits.
    pub(crate) fn any(&self) -> bool {
        self.load.load(Ordering::Relaxed) > 0
    }

    /// Whether a frame of `size` bytes would fit now, kept to `bounds` (frames, bytes).
    pub(crate) fn room_for(&self, size: usize, bounds: (usize, usize)) -> bool {
        fits(self.queued(), size, bounds)
    }
}

/// Whether a frame of `size` bytes fits in a queue holding `(len, bytes)`, kept to `most`
/// frames and `most_bytes` (a larger frame fits only in an empty queue).
fn fits((len, bytes): (usize, usize), size: usize, (most, most_bytes): (usize, usize)) -> bool {
    len == 0 || (len < most && bytes + size <= most_bytes)
}

/// A queue's (length, bytes).
fn unpack(load: u64) -> (usize, usize) {
    let len = load & ((1 << LOAD_LEN_BITS) - 1);
    (len as usize, (load >> LOAD_LEN_BITS) as usize)
}
