//! The shared half of one connected client: what the router, the REST API and the client's own
//! reader and writer tasks see of it.
//!
//! Everything here is either lock-free (the event ring, counters) or guarded by a lock of this
//! client alone (its control queue, its subscription list): no lock is shared with another
//! client. The struct is kept small, since an idle connection is mostly this.

use crate::backpressure::EventRing;
use crate::codec::{Codec, Deflate, Wire};
use crate::frame::OutFrame;
use crate::subscription::Subscription;
use fastwebsockets::CloseCode;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::Notify;
use uuid::Uuid;

/// Most protocol replies a client may leave unread before it is disconnected: replies are
/// lossless, so a client that sends requests but never reads the answers is cut off instead.
pub(crate) const CONTROL_QUEUE_LIMIT: usize = 256;

/// Most bytes of replies a client may leave unread (a reply larger than this alone is still
/// taken while nothing else waits). With [`CONTROL_QUEUE_LIMIT`] it bounds what a client that
/// never reads can pin through its own replies (README, "Limits").
pub(crate) const CONTROL_QUEUE_BYTES: usize = 256 * 1024;

/// The control queue's load packs its length (low bits) and its bytes (high bits) in one
/// atomic, so `ClientHandle` stays in its allocation class.
const LOAD_LEN_BITS: u32 = 20;
/// One queued frame of `bytes` bytes, as a load.
const fn load_of(bytes: usize) -> u64 {
    1 | ((bytes as u64) << LOAD_LEN_BITS)
}

/// Why the server ends a connection, and what it tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Goodbye {
    /// `reason` of the `disconnect` message.
    pub(crate) reason: &'static str,
    /// `reconnect_after_ms` of the `disconnect` message.
    pub(crate) reconnect_after_ms: u64,
    /// The close code that follows.
    pub(crate) close_code: CloseCode,
    /// Whether the connection then waits for the peer's side of the closing handshake (not
    /// for an unauthenticated connection evicted to make room: its slot is wanted now).
    pub(crate) lingers: bool,
}

impl Goodbye {
    /// The server is shutting down (close 1012, service restart).
    pub(crate) fn shutdown(reconnect_after_ms: u64) -> Self {
        Self {
            reason: "server_shutdown",
            reconnect_after_ms,
            close_code: CloseCode::Restart,
            lingers: true,
        }
    }

    /// The instance is being drained for a rolling restart (close 1012).
    pub(crate) fn drain(reconnect_after_ms: u64) -> Self {
        Self {
            reason: "server_drain",
            reconnect_after_ms,
            close_code: CloseCode::Restart,
            lingers: true,
        }
    }

    /// The client did not authenticate and its place was needed (close 1008).
    pub(crate) fn unauthenticated() -> Self {
        Self {
            reason: "authentication_timeout",
            reconnect_after_ms: 1000,
            close_code: CloseCode::Policy,
            lingers: false,
        }
    }

    /// An operator disconnected this client (close 1000).
    pub(crate) fn operator(reconnect_after_ms: u64) -> Self {
        Self {
            reason: "disconnected_by_operator",
            reconnect_after_ms,
            close_code: CloseCode::Normal,
            lingers: true,
        }
    }
}

/// The parts of a client few connections ever set.
#[derive(Default)]
struct Rare {
    /// The authenticated subject.
    subject: Option<String>,
    /// What to say when ending the connection.
    goodbye: Option<Goodbye>,
    /// Each resume or snapshot sent: the subscription and what it covered.
    covered: Vec<(Subscription, Covered)>,
    /// Its place among the unauthenticated connections, until it authenticates.
    unauthenticated: Option<crate::preauth::Ticket>,
    /// After a fresh token narrowed the subscriptions: events queued up to this sequence number
    /// reach the client only if they match one of these (the subscriptions now held).
    regranted: Option<(u64, Vec<Subscription>)>,
}

/// What a resume or snapshot sent ahead of the live events, for one subscription.
enum Covered {
    /// Every matching event up to this sequence number (the instance's own history).
    UpTo(u64),
    /// These events (a broker's shared history, read at this moment): their live copies may
    /// still arrive for a while, not after [`IDS_COVER_FOR`].
    Ids(std::collections::HashSet<String>, Instant),
}

/// How long the live copies of events a shared history replayed are watched for.
const IDS_COVER_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// One connected client, shared by reference count.
pub struct ClientHandle {
    /// Server-assigned id, returned in `auth_response`.
    pub id: Uuid,
    /// The shard (runtime thread) the connection lives on.
    pub(crate) shard: usize,
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    /// When the WebSocket was opened (monotonic; the wall-clock time is derived for listings).
    pub(crate) epoch: Instant,
    /// Event frames waiting for the writer (lossy, bounded).
    pub ring: EventRing,
    /// Protocol replies and control frames waiting for the writer (lossless, limited).
    control: Mutex<VecDeque<Arc<OutFrame>>>,
    /// Length and bytes of `control` (packed, see [`load_of`]), read without the lock.
    control_load: AtomicU64,
    /// Wakes the writer when anything was queued or a shutdown was asked for.
    pub(crate) wake: Notify,
    /// Sequence number of the last event pushed, so an event reaches a client once even when
    /// several of its subscriptions match.
    last_event_seq: AtomicU64,
    /// The client's subscriptions, as stored (mirrored into the index).
    pub(crate) subscriptions: Mutex<Vec<Subscription>>,
    /// What few connections ever hold (the subject, the goodbye), boxed only once one is set,
    /// so an idle connection carries one pointer for them.
    rare: Mutex<Option<Box<Rare>>>,
    /// Whether the client has authenticated (always true-equivalent while auth is off).
    pub(crate) authenticated: AtomicBool,
    /// The connection's wire format: what its frames are encoded as, and compression.
    pub(crate) wire: Wire,
    /// While set, the writer leaves the ring alone: a resume or snapshot is being sent ahead
    /// of the live events gathering there.
    holding: AtomicBool,
    /// The highest sequence number a resume or snapshot covered (0: none): ring frames up to
    /// it are checked against [`Rare::covered`] and skipped when already sent.
    covered_upto: AtomicU64,
    /// Set once the server has decided to end this connection (checked on every writer pass).
    leaving: AtomicBool,
    /// Messages written to the client.
    pub(crate) sent: AtomicU64,
    /// Messages received from the client.
    pub(crate) received: AtomicU64,
    /// Events dropped for this client, in all.
    pub(crate) dropped: AtomicU64,
    /// Milliseconds after `epoch` of the last write progress (or of the last idle moment).
    last_progress_ms: AtomicU64,
    /// Nanoseconds after `epoch` when the client last sent any frame (heartbeat). Not coarser:
    /// a pong often arrives within the ping's own millisecond, and must not look older than it.
    last_heard_ns: AtomicU64,
}

impl ClientHandle {
    /// A new client with an empty ring of `queue_size` and drop policy `drop_oldest`.
    pub fn new(shard: usize, remote: SocketAddr, queue_size: usize, drop_oldest: bool) -> Self {
        Self {
            id: Uuid::new_v4(),
            shard,
            remote,
            epoch: Instant::now(),
            ring: EventRing::new(queue_size, drop_oldest),
            control: Mutex::new(VecDeque::new()),
            control_load: AtomicU64::new(0),
            wake: Notify::new(),
            last_event_seq: AtomicU64::new(0),
            subscriptions: Mutex::new(Vec::new()),
            rare: Mutex::new(None),
            wire: Wire {
                codec: Codec::Json,
                deflate: Deflate::Off,
            },
            holding: AtomicBool::new(false),
            covered_upto: AtomicU64::new(0),
            authenticated: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_progress_ms: AtomicU64::new(0),
            last_heard_ns: AtomicU64::new(0),
        }
    }

    /// Marks event `seq` as delivered to this client; false if it already was.
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
            Codec::Json => frame.clone(),
            Codec::MsgPack => frame.msgpack(),
        };
        match self.wire.deflate {
            Deflate::Both => framed.deflated(),
            Deflate::Off | Deflate::Inbound => framed,
        }
    }

    pub(crate) fn first_delivery(&self, seq: u64) -> bool {
        self.last_event_seq.swap(seq, Ordering::Relaxed) != seq
    }

    /// Queues a protocol reply or control frame and wakes the writer. Returns false, and
    /// queues nothing, when the client has left too many replies or reply bytes unread (the
    /// caller then closes the connection); a close frame is always taken.
    pub(crate) fn send_control(&self, frame: Arc<OutFrame>) -> bool {
        let frame = self.encoded(&frame);
        let load = load_of(frame.bytes().len());
        let before = self.control_load.fetch_add(load, Ordering::Relaxed);
        let bounds = (CONTROL_QUEUE_LIMIT, CONTROL_QUEUE_BYTES);
        if !fits(unpack(before), frame.bytes().len(), bounds) && !frame.is_close() {
            self.control_load.fetch_sub(load, Ordering::Relaxed);
            return false;
        }
        self.control.lock().push_back(frame);
        self.wake.notify_one();
        true
    }

    /// Whether the control queue still has room (the client reads its replies); a reader
    /// closes the connection when it has none.
    pub(crate) fn send_control_room(&self) -> bool {
        let (len, bytes) = self.control_queued();
        len < CONTROL_QUEUE_LIMIT && bytes < CONTROL_QUEUE_BYTES
    }

    /// Whether a frame of `size` bytes would fit in the control queue now, kept to `most`
    /// frames and `most_bytes` (a frame larger than that fits only in an empty queue).
    pub(crate) fn room_for(&self, size: usize, bounds: (usize, usize)) -> bool {
        fits(self.control_queued(), size, bounds)
    }

    /// How many replies and control frames wait for the writer, and their bytes.
    pub(crate) fn control_queued(&self) -> (usize, usize) {
        unpack(self.control_load.load(Ordering::Relaxed))
    }

    /// Whether a reply or control frame waits for the writer.
    pub(crate) fn has_control(&self) -> bool {
        self.control_load.load(Ordering::Relaxed) > 0
    }

    /// Takes the next control frame.
    pub(crate) fn pop_control(&self) -> Option<Arc<OutFrame>> {
        if self.control_load.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let f = self.control.lock().pop_front()?;
        self.control_load
            .fetch_sub(load_of(f.bytes().len()), Ordering::Relaxed);
        Some(f)
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
        self.leaving.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The goodbye, once one was asked for.
    pub(crate) fn goodbye(&self) -> Option<Goodbye> {
        if !self.leaving.load(Ordering::Acquire) {
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
    /// them, or lets them go (false).
    pub(crate) fn hold_events(&self, hold: bool) {
        self.holding.store(hold, Ordering::Release);
        if !hold {
            self.wake.notify_one();
        }
    }

    /// Whether live events are held back.
    pub(crate) fn is_holding(&self) -> bool {
        self.holding.load(Ordering::Acquire)
    }

    /// Records that events matching `sub` up to sequence number `upto` were sent by a resume
    /// or snapshot, so their live copies are skipped. One entry per subscription (the latest).
    pub(crate) fn cover(&self, sub: &Subscription, upto: u64) {
        self.add_cover(sub, Covered::UpTo(upto));
        self.covered_upto.fetch_max(upto, Ordering::AcqRel);
    }

    /// Records that the events with these ids, matching `sub`, were sent by a resume from a
    /// broker's shared history, so their live copies are skipped (for [`IDS_COVER_FOR`]).
    pub(crate) fn cover_ids(&self, sub: &Subscription, ids: std::collections::HashSet<String>) {
        self.add_cover(sub, Covered::Ids(ids, Instant::now()));
        self.covered_upto.store(u64::MAX, Ordering::Release);
    }

    /// Replaces what is covered for `sub`.
    fn add_cover(&self, sub: &Subscription, covered: Covered) {
        let mut rare = self.rare.lock();
        let list = &mut rare.get_or_insert_with(Box::default).covered;
        list.retain(|(s, _)| s != sub);
        list.push((sub.clone(), covered));
    }

    /// After a fresh token narrowed this client's subscriptions to `subs`: the events already
    /// queued (up to sequence number `upto`, the last one routed) that match none of them are
    /// skipped, so nothing outside the new grant goes out after the change.
    pub(crate) fn regrant(&self, upto: u64, subs: Vec<Subscription>) {
        self.rare.lock().get_or_insert_with(Box::default).regranted = Some((upto, subs));
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
        let mut rare = self.rare.lock();
        let Some(r) = rare.as_mut() else {
            return false;
        };
        if let Some((upto, subs)) = &r.regranted {
            if meta.seq <= *upto && !subs.iter().any(|s| crate::history::frame_matches(frame, s)) {
                return true;
            }
        }
        let sent = r.covered.iter().any(|(sub, c)| {
            let covers = match c {
                Covered::UpTo(upto) => meta.seq <= *upto,
                Covered::Ids(ids, _) => ids.contains(&meta.event_id),
            };
            covers && crate::history::frame_matches(frame, sub)
        });
        // Id covers end after a while; then only sequence numbers are checked again.
        let before = r.covered.len();
        r.covered
            .retain(|(_, c)| !matches!(c, Covered::Ids(_, at) if at.elapsed() > IDS_COVER_FOR));
        if r.covered.len() != before {
            let upto = r.covered.iter().map(|(_, c)| match c {
                Covered::UpTo(u) => *u,
                Covered::Ids(..) => u64::MAX,
            });
            let regranted = r.regranted.as_ref().map(|(u, _)| *u);
            self.covered_upto
                .store(upto.chain(regranted).max().unwrap_or(0), Ordering::Release);
        }
        sent
    }

    /// Records write progress (or having nothing to write) now.
    pub(crate) fn mark_progress(&self, now: Instant) {
        let d = now.saturating_duration_since(self.epoch);
        let ms = d.as_secs() * 1000 + u64::from(d.subsec_millis());
        self.last_progress_ms.store(ms, Ordering::Relaxed);
    }

    /// Records that the client sent something now.
    pub(crate) fn mark_heard(&self, now: Instant) {
        let ns = now.saturating_duration_since(self.epoch).as_nanos();
        self.last_heard_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the client last sent anything.
    pub(crate) fn last_heard(&self) -> Instant {
        self.epoch + std::time::Duration::from_nanos(self.last_heard_ns.load(Ordering::Relaxed))
    }

    /// Milliseconds since the writer last made progress while it had frames queued.
    pub(crate) fn stalled_ms(&self, now: Instant) -> u64 {
        if self.ring.is_empty() {
            return 0;
        }
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        now_ms.saturating_sub(self.last_progress_ms.load(Ordering::Relaxed))
    }

    /// A snapshot for the `clients` listing.
    pub(crate) fn info(&self, slow_threshold_ms: u64) -> ClientInfo {
        let stalled = self.stalled_ms(Instant::now());
        ClientInfo {
            client_id: self.id.to_string(),
            remote_addr: self.remote.to_string(),
            shard: self.shard,
            connected_at: humantime::format_rfc3339_seconds(
                SystemTime::now() - self.epoch.elapsed(),
            )
            .to_string(),
            authenticated: self.authenticated.load(Ordering::Relaxed),
            subject: self.subject(),
            subscriptions: self.subscriptions.lock().clone(),
            queue_length: self.ring.len(),
            messages_sent: self.sent.load(Ordering::Relaxed),
            messages_received: self.received.load(Ordering::Relaxed),
            events_dropped: self.dropped.load(Ordering::Relaxed),
            slow: stalled >= slow_threshold_ms,
        }
    }
}

impl crate::preauth::Evict for ClientHandle {
    fn evict(&self) {
        self.request_goodbye(Goodbye::unauthenticated());
    }
}

/// Whether a frame of `size` bytes fits in a control queue holding `(len, bytes)`, kept to
/// `most` frames and `most_bytes` (a larger frame fits only in an empty queue).
fn fits((len, bytes): (usize, usize), size: usize, (most, most_bytes): (usize, usize)) -> bool {
    len == 0 || (len < most && bytes + size <= most_bytes)
}

/// A control queue's (length, bytes).
fn unpack(load: u64) -> (usize, usize) {
    let len = load & ((1 << LOAD_LEN_BITS) - 1);
    (len as usize, (load >> LOAD_LEN_BITS) as usize)
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
