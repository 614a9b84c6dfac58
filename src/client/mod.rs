//! The shared half of one connected client: what the router, the REST API and the client's own
//! reader and writer tasks see of it.
//!
//! Owns the client's event ring, its reply queue ([`replies`]), its goodbye ([`goodbye`]),
//! its subject and the counters of what it did. The router pushes into the ring; the session
//! queues replies and sets the subject; whoever ends the connection asks for a goodbye; only
//! the client's writer drains ring and queue. The resume seam it carries is the catch-up's
//! (the `seam` module); its subscriptions sit here but belong to the subscriptions part.
//!
//! Everything here is either lock-free (the event ring, counters) or guarded by a lock of this
//! client alone (its reply queue, its rare fields): no lock is shared with another client. The
//! struct is kept small, since an idle connection is mostly this.

mod goodbye;
mod replies;

pub(crate) use goodbye::Goodbye;
pub(crate) use replies::{CONTROL_QUEUE_BYTES, CONTROL_QUEUE_LIMIT};

use crate::backpressure::EventRing;
use crate::codec::{Codec, Deflate, Wire};
use crate::frame::OutFrame;
use crate::seam::Seam;
use crate::subscription::Subscription;
use parking_lot::Mutex;
use replies::Replies;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::Notify;
use uuid::Uuid;

/// The parts of a client few connections ever set.
#[derive(Default)]
struct Rare {
    /// The authenticated subject.
    subject: Option<String>,
    /// What to say when ending the connection.
    goodbye: Option<Goodbye>,
    /// Its place among the unauthenticated connections, until it authenticates.
    unauthenticated: Option<crate::preauth::Ticket>,
}

/// Where the client stands.
#[derive(Default)]
struct Flags {
    /// Whether the client has authenticated (always true-equivalent while auth is off).
    authenticated: AtomicBool,
    /// Set once the server has decided to end this connection (checked on every writer pass).
    leaving: AtomicBool,
}

/// What the client did, and when.
pub(crate) struct Activity {
    /// When the WebSocket was opened (monotonic; the wall-clock time is derived for listings).
    epoch: Instant,
    /// Messages written to the client.
    pub(crate) sent: AtomicU64,
    /// Messages received from the client.
    pub(crate) received: AtomicU64,
    /// Events dropped for this client, in all.
    pub(crate) dropped: AtomicU64,
    /// Sequence number of the last event pushed, so an event reaches a client once even when
    /// several of its subscriptions match.
    last_event_seq: AtomicU64,
    /// Milliseconds after `epoch` of the last write progress (or of the last idle moment).
    last_progress_ms: AtomicU64,
    /// Nanoseconds after `epoch` when the client last sent any frame (heartbeat). Not coarser:
    /// a pong often arrives within the ping's own millisecond, and must not look older than it.
    last_heard_ns: AtomicU64,
}

/// One connected client, shared by reference count.
pub struct ClientHandle {
    /// Server-assigned id, returned in `auth_response`.
    pub id: Uuid,
    /// The shard (runtime thread) the connection lives on.
    pub(crate) shard: usize,
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    /// Event frames waiting for the writer (lossy, bounded).
    pub ring: EventRing,
    /// Protocol replies and control frames waiting for the writer (lossless, limited).
    replies: Replies,
    /// Wakes the writer when anything was queued or a shutdown was asked for.
    pub(crate) wake: Notify,
    /// Its stored subscriptions (the subscriptions part's: only that part reads them).
    pub(crate) subscriptions: crate::subscriptions::held::Held,
    /// What few connections ever hold (the subject, the goodbye), boxed only once one is set,
    /// so an idle connection carries one pointer for them.
    rare: Mutex<Option<Box<Rare>>>,
    /// Authenticated, leaving.
    flags: Flags,
    /// The connection's wire format: what its frames are encoded as, and compression.
    pub(crate) wire: Wire,
    /// What a resume or snapshot sent ahead of the live events (the catch-up's).
    pub(crate) seam: Seam,
    /// Counters and times of what the client did.
    pub(crate) activity: Activity,
}

impl ClientHandle {
    /// A new client with an empty ring of `queue_size` and drop policy `drop_oldest`.
    pub fn new(shard: usize, remote: SocketAddr, queue_size: usize, drop_oldest: bool) -> Self {
        Self {
            id: Uuid::new_v4(),
            shard,
            remote,
            ring: EventRing::new(queue_size, drop_oldest),
            replies: Replies::default(),
            wake: Notify::new(),
            subscriptions: Default::default(),
            rare: Mutex::new(None),
            flags: Flags::default(),
            wire: Wire {
                codec: Codec::Json,
                deflate: Deflate::Off,
            },
            seam: Seam::default(),
            activity: Activity {
                epoch: Instant::now(),
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                last_event_seq: AtomicU64::new(0),
                last_progress_ms: AtomicU64::new(0),
                last_heard_ns: AtomicU64::new(0),
            },
        }
    }

    /// This client speaking `wire`.
    pub(crate) fn with_wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// `frame` as this client's wire format wants it: an event's MessagePack and compressed
    /// twins are built once and shared.
    #[inline]
    pub(crate) fn encoded(&self, frame: &Arc<OutFrame>) -> Arc<OutFrame> {
        let framed = match self.wire.codec {
            // An SSE stream takes each message's SSE form when it writes it (`OutFrame::sse`).
            Codec::Json | Codec::Sse => frame.clone(),
            Codec::MsgPack => frame.msgpack(),
        };
        match self.wire.deflate {
            Deflate::Both => framed.deflated(),
            Deflate::Off | Deflate::Inbound => framed,
        }
    }

    /// Marks event `seq` as delivered to this client; false if it already was.
    pub(crate) fn first_delivery(&self, seq: u64) -> bool {
        self.activity.last_event_seq.swap(seq, Ordering::Relaxed) != seq
    }

    /// Queues a protocol reply or control frame and wakes the writer. Returns false, and
    /// queues nothing, when the client has left too many replies or reply bytes unread (the
    /// caller then closes the connection); a close frame is always taken.
    pub(crate) fn send_control(&self, frame: Arc<OutFrame>) -> bool {
        if !self.replies.push(self.encoded(&frame)) {
            return false;
        }
        self.wake.notify_one();
        true
    }

    /// Whether the reply queue still has room (the client reads its replies); a reader
    /// closes the connection when it has none.
    pub(crate) fn send_control_room(&self) -> bool {
        let (len, bytes) = self.control_queued();
        len < CONTROL_QUEUE_LIMIT && bytes < CONTROL_QUEUE_BYTES
    }

    /// Whether a frame of `size` bytes would fit in the reply queue now, kept to `bounds`
    /// (frames, bytes; a frame larger than that fits only in an empty queue).
    pub(crate) fn room_for(&self, size: usize, bounds: (usize, usize)) -> bool {
        self.replies.room_for(size, bounds)
    }

    /// How many replies and control frames wait for the writer, and their bytes.
    pub(crate) fn control_queued(&self) -> (usize, usize) {
        self.replies.queued()
    }

    /// Whether a reply or control frame waits for the writer.
    pub(crate) fn has_control(&self) -> bool {
        self.replies.any()
    }

    /// Takes the next control frame.
    pub(crate) fn pop_control(&self) -> Option<Arc<OutFrame>> {
        self.replies.pop()
    }

    /// Asks the writer to flush what is queued, say goodbye and close. The first request wins.
    pub(crate) fn request_goodbye(&self, goodbye: Goodbye) {
        {
            let mut rare = self.rare.lock();
            let g = &mut rare.get_or_insert_with(Box::default).goodbye;
            if g.is_some() {
                return;
            }
            *g = Some(goodbye);
        }
        self.flags.leaving.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The goodbye, once one was asked for.
    pub(crate) fn goodbye(&self) -> Option<Goodbye> {
        if !self.flags.leaving.load(Ordering::Acquire) {
            return None;
        }
        self.rare.lock().as_ref().and_then(|r| r.goodbye)
    }

    /// The authenticated subject, if any.
    pub(crate) fn subject(&self) -> Option<String> {
        self.rare.lock().as_ref().and_then(|r| r.subject.clone())
    }

    /// Records the authenticated subject; the client leaves the unauthenticated budget.
    pub(crate) fn set_subject(&self, subject: String) {
        let ticket = {
            let mut rare = self.rare.lock();
            let rare = rare.get_or_insert_with(Box::default);
            rare.subject = Some(subject);
            rare.unauthenticated.take()
        };
        drop(ticket);
    }

    /// Holds the client's place among the unauthenticated connections until it
    /// authenticates or leaves.
    pub(crate) fn hold_unauthenticated(&self, ticket: crate::preauth::Ticket) {
        self.rare
            .lock()
            .get_or_insert_with(Box::default)
            .unauthenticated = Some(ticket);
    }

    /// Gives back the client's place among the unauthenticated connections, if it holds one.
    pub(crate) fn release_unauthenticated(&self) {
        let ticket = self
            .rare
            .lock()
            .as_mut()
            .and_then(|r| r.unauthenticated.take());
        drop(ticket);
    }

    /// Holds live events back in the ring (true) while a resume or snapshot goes out ahead of
    /// them, or lets them go (false) and wakes the writer.
    pub(crate) fn hold_events(&self, hold: bool) {
        self.seam.hold(hold);
        if !hold {
            self.wake.notify_one();
        }
    }

    /// Records that the client authenticated.
    pub(crate) fn set_authenticated(&self) {
        self.flags.authenticated.store(true, Ordering::Relaxed);
    }

    /// Records write progress (or having nothing to write) now.
    pub(crate) fn mark_progress(&self, now: Instant) {
        let d = now.saturating_duration_since(self.activity.epoch);
        let ms = d.as_secs() * 1000 + u64::from(d.subsec_millis());
        self.activity.last_progress_ms.store(ms, Ordering::Relaxed);
    }

    /// Records that the client sent something now.
    pub(crate) fn mark_heard(&self, now: Instant) {
        let ns = now
            .saturating_duration_since(self.activity.epoch)
            .as_nanos();
        self.activity
            .last_heard_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the client last sent anything.
    pub(crate) fn last_heard(&self) -> Instant {
        let ns = self.activity.last_heard_ns.load(Ordering::Relaxed);
        self.activity.epoch + std::time::Duration::from_nanos(ns)
    }

    /// Milliseconds since the writer last made progress while it had frames queued.
    pub(crate) fn stalled_ms(&self, now: Instant) -> u64 {
        if self.ring.is_empty() {
            return 0;
        }
        let now_ms = now
            .saturating_duration_since(self.activity.epoch)
            .as_millis() as u64;
        now_ms.saturating_sub(self.activity.last_progress_ms.load(Ordering::Relaxed))
    }

    /// A snapshot for the `clients` listing, with the `subscriptions` it holds.
    pub(crate) fn info(
        &self,
        slow_threshold_ms: u64,
        subscriptions: Vec<Subscription>,
    ) -> ClientInfo {
        let stalled = self.stalled_ms(Instant::now());
        ClientInfo {
            client_id: self.id.to_string(),
            remote_addr: self.remote.to_string(),
            shard: self.shard,
            connected_at: humantime::format_rfc3339_seconds(
                SystemTime::now() - self.activity.epoch.elapsed(),
            )
            .to_string(),
            transport: match self.wire.codec {
                Codec::Sse => "sse",
                Codec::Json | Codec::MsgPack => "websocket",
            },
            authenticated: self.flags.authenticated.load(Ordering::Relaxed),
            subject: self.subject(),
            subscriptions,
            queue_length: self.ring.len(),
            messages_sent: self.activity.sent.load(Ordering::Relaxed),
            messages_received: self.activity.received.load(Ordering::Relaxed),
            events_dropped: self.activity.dropped.load(Ordering::Relaxed),
            slow: stalled >= slow_threshold_ms,
        }
    }
}

impl crate::preauth::Evict for ClientHandle {
    fn evict(&self) {
        self.request_goodbye(Goodbye::unauthenticated());
    }
}

/// One row of `GET /api/v1/streaming/clients`.
#[derive(Debug, Serialize)]
pub(crate) struct ClientInfo {
    /// Server-assigned id.
    client_id: String,
    /// Peer address.
    remote_addr: String,
    /// Shard the connection lives on.
    shard: usize,
    /// RFC 3339 time of connection.
    connected_at: String,
    /// `websocket` or `sse`.
    transport: &'static str,
    /// Whether the client has authenticated.
    authenticated: bool,
    /// Authenticated subject.
    subject: Option<String>,
    /// Stored subscriptions.
    subscriptions: Vec<Subscription>,
    /// Event frames waiting in its ring now.
    queue_length: usize,
    /// Messages written to it.
    messages_sent: u64,
    /// Messages it sent.
    messages_received: u64,
    /// Events dropped for it by backpressure.
    events_dropped: u64,
    /// Whether it has made no write progress for `slow_client_threshold_ms` with frames queued.
    slow: bool,
}
