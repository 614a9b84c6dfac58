//! One SSE client's stream: what its WebSocket writer would write, as `text/event-stream`.
//!
//! The body starts with `retry:` (the reconnect advice), then, in order: the client's replies
//! and a catch-up's events (the reply queue), then live events from its ring (held back while a
//! catch-up goes out, skipping what the seam says it already sent, behind a `QUEUE_FULL` notice
//! when some were dropped), each as its shared SSE form. A quiet stream gets a comment every
//! heartbeat interval (which also finds a peer that went away: the write fails). A goodbye
//! (drain, shutdown, an operator's disconnect) flushes the ring, sends `disconnect` and a
//! `retry:` with its advice, and ends the stream. When the stream ends for any reason (the peer
//! left, or the goodbye was sent), the client is unregistered and its slot freed.
//!
//! Owns one stream's state: the client's place in the hub, its slot, what is about to be sent.

use crate::client::ClientHandle;
use crate::frame::OutFrame;
use crate::hub::{ConnectionSlot, Hub};
use crate::protocol::reply;
use crate::ws::writer::MAX_BATCH;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An SSE response's body.
pub(crate) type SseBody = UnsyncBoxBody<Bytes, Infallible>;

/// The comment a quiet stream gets every heartbeat interval.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// The stream of `client` (registered, subscribed) holding `slot`, as a response body;
/// `catch_up` is the task sending its resume or snapshot, stopped if the stream ends first.
pub(super) fn body(
    hub: Arc<Hub>,
    client: Arc<ClientHandle>,
    slot: ConnectionSlot,
    catch_up: Option<tokio::task::JoinHandle<()>>,
    expires_at: Option<Instant>,
) -> SseBody {
    let advice = crate::backoff::spread(hub.settings.connection.reconnect_after_ms);
    let out = Out {
        heartbeat: hub.writers.timing.heartbeat.interval,
        hub,
        client,
        _slot: slot,
        catch_up,
        expires_at,
        writes: (Instant::now(), Instant::now()),
        pending: VecDeque::from([Pending::Bytes(retry(advice))]),
        done: false,
    };
    let chunks = futures_util::stream::unfold(out, |mut out| async move {
        let chunk = out.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), out))
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// `retry: ms`: how long a browser's `EventSource` waits before it reconnects.
fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// Something about to be sent.
enum Pending {
    /// A message: its SSE form is taken when it goes out.
    Frame(Arc<OutFrame>, bool),
    /// Text of the stream's own (`retry:`).
    Bytes(Bytes),
}

/// The state of one stream.
struct Out {
    /// Where the client is registered.
    hub: Arc<Hub>,
    /// The client.
    client: Arc<ClientHandle>,
    /// Its place under `max_connections`, freed with the stream.
    _slot: ConnectionSlot,
    /// The task sending a resume or snapshot, if one was asked for.
    catch_up: Option<tokio::task::JoinHandle<()>>,
    /// When the token the stream was opened with expires: the stream ends then.
    expires_at: Option<Instant>,
    /// What goes out next, in order.
    pending: VecDeque<Pending>,
    /// The goodbye is queued: the stream ends once `pending` is sent.
    done: bool,
    /// How long a quiet stream waits before a heartbeat comment.
    heartbeat: Duration,
    /// When the last two chunks went out: a busy stream (two within twice the window) waits
    /// out its shard's write-coalescing window before the next, as a WebSocket writer does.
    writes: (Instant, Instant),
}

impl Drop for Out {
    fn drop(&mut self) {
        if let Some(task) = self.catch_up.take() {
            task.abort();
        }
        self.hub.unregister(&self.client);
    }
}

impl Out {
    /// The next chunk of the stream; `None` once it ends. Everything ready goes in one chunk
    /// (one write, like a WebSocket writer's vectored write): copied together when there is
    /// more than one message, the shared bytes themselves when there is one.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                self.writes = (self.writes.1, Instant::now());
                let mut count = 0;
                let first = self.sent(p, &mut count);
                let chunk = match self.pending.is_empty() {
                    true => first,
                    false => {
                        let mut chunk = bytes::BytesMut::from(&first[..]);
                        while let Some(p) = self.pending.pop_front() {
                            chunk.extend_from_slice(&self.sent(p, &mut count));
                        }
                        chunk.freeze()
                    }
                };
                self.account(count);
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            if let Some(until) = self.hold_until(Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
            }
            self.fill();
            if !self.pending.is_empty() {
                continue;
            }
            // No token lasts for ever: far enough to never fire without one.
            let expiry = self
                .expires_at
                .unwrap_or_else(|| Instant::now() + 2 * self.heartbeat);
            tokio::select! {
                _ = self.client.wake.notified() => {}
                _ = tokio::time::sleep(self.heartbeat) => {
                    return Some(Bytes::from_static(HEARTBEAT));
                }
                _ = tokio::time::sleep_until(expiry.into()), if self.expires_at.is_some() => {
                    self.expired();
                }
            }
        }
    }

    /// Until when to hold the next chunk back so that more events go out with it: only while
    /// the stream is busy and only events wait (`ws/writer.rs`'s rule, with its shard's window).
    fn hold_until(&self, now: Instant) -> Option<Instant> {
        let windows = &self.hub.writers.windows;
        let (prev, last) = self.writes;
        if last >= prev + windows.max() * 2 {
            return None;
        }
        let window = windows.get(self.client.shard);
        let c = &self.client;
        let wait = !window.is_zero()
            && now < last + window
            && !c.ring.is_empty()
            && !c.has_control()
            && c.goodbye().is_none();
        wait.then(|| last + window)
    }

    /// The token expired: an SSE client cannot send a fresh one on the stream, so the stream
    /// ends with `AUTH_EXPIRED` (the client reconnects with a fresh token).
    fn expired(&mut self) {
        let why = "the token expired: reconnect with a fresh one";
        let notice = reply::error(crate::protocol::ErrorCode::AUTH_EXPIRED, why);
        self.pending.push_back(Pending::Frame(notice, false));
        self.done = true;
    }

    /// One pending item's bytes; `count` tallies the messages among them (a live event's
    /// latency observed).
    fn sent(&self, p: Pending, count: &mut u64) -> Bytes {
        match p {
            Pending::Bytes(b) => b,
            Pending::Frame(f, live) => {
                if f.is_message() {
                    *count += 1;
                    if live || f.event.is_none() {
                        let latency = f.routed_at.elapsed();
                        self.hub.metrics.local().observe_latency(latency);
                    }
                }
                f.sse()
            }
        }
    }

    /// Counts `n` messages as written to the client now.
    fn account(&self, n: u64) {
        self.client.mark_progress(Instant::now());
        if n > 0 {
            let local = self.hub.metrics.local();
            local.messages_sent.fetch_add(n, Relaxed);
            self.client.activity.sent.fetch_add(n, Relaxed);
        }
    }

    /// Queues what the client's writer would write next: replies (and a catch-up's events),
    /// then the goodbye with everything still in the ring, or live events unless held back.
    fn fill(&mut self) {
        while let Some(f) = self.client.pop_control() {
            self.pending.push_back(Pending::Frame(f, false));
        }
        if let Some(bye) = self.client.goodbye() {
            self.take_events(usize::MAX);
            let advice = bye.reconnect_after_ms;
            let disconnect = reply::disconnect(bye.reason, advice);
            self.pending.push_back(Pending::Frame(disconnect, false));
            self.pending.push_back(Pending::Bytes(retry(advice)));
            self.done = true;
            return;
        }
        if !self.client.seam.is_holding() {
            self.take_events(MAX_BATCH);
        }
    }

    /// Moves up to `limit` live events from the ring, skipping what the seam says was sent,
    /// behind a `QUEUE_FULL` notice when some were dropped.
    fn take_events(&mut self, limit: usize) {
        let first = self.pending.len();
        let mut taken = 0;
        while taken < limit {
            let Some(f) = self.client.ring.pop() else {
                break;
            };
            if self.client.seam.skip(&f) {
                continue;
            }
            self.pending.push_back(Pending::Frame(f, true));
            taken += 1;
        }
        let dropped = self.client.ring.take_drops();
        if dropped > 0 {
            let notice = Pending::Frame(reply::queue_full(dropped), false);
            self.pending.insert(first, notice);
        }
    }
}
