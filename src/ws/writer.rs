//! A client's writer: the only code that writes to its socket.
//!
//! It drains protocol replies first, then up to [`MAX_BATCH`] event frames from the client's ring,
//! and writes them with one vectored system call where the socket takes them (partial writes
//! resume where they stopped). It also keeps the heartbeat, reports drops with `QUEUE_FULL`
//! ahead of the next message, and says goodbye on shutdown. A socket that accepts nothing for
//! `heartbeat_interval + heartbeat_timeout` is treated like a missed heartbeat.
//!
//! Owns one client's socket write side and heartbeat: the only code that writes to a client;
//! [`Writers`] (durations, coalescing windows, goodbye advice) is built once and shared by every
//! writer.

use super::close::{CloseCode, CLOSE_GRACE};
use super::socket::WriteHalf;
use crate::backoff::spread;
use crate::client::ClientHandle;
use crate::config::WebSocketConfig;
use crate::frame::OutFrame;
use crate::heartbeat::{Beat, Heartbeat, Periods};
use crate::metrics::Metrics;
use crate::protocol::reply;
use fastwebsockets::OpCode;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Most frames taken from the ring per write.
pub(crate) const MAX_BATCH: usize = 64;

/// Why a writer stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriterExit {
    /// It sent a close frame.
    Closed,
    /// The socket failed (the peer is gone).
    SocketError,
    /// The client missed a heartbeat or accepted no bytes for too long.
    Dead,
}

/// The writer's durations, the same for every client: computed once (kept in [`Writers`]) rather
/// than carried in every idle connection's task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// The heartbeat's periods.
    pub(crate) heartbeat: Periods,
    /// A socket that takes no bytes for this long is treated like a missed heartbeat.
    pub(crate) stall_limit: Duration,
}

impl Timing {
    /// The durations `websocket.*` asks for.
    pub(crate) fn new(ws: &WebSocketConfig) -> Self {
        let interval = Duration::from_secs_f64(ws.heartbeat_interval_seconds);
        let timeout = Duration::from_secs_f64(ws.heartbeat_timeout_seconds);
        Self {
            heartbeat: Periods { interval, timeout },
            stall_limit: interval + timeout,
        }
    }
}

/// What every client's writer uses, the same for all of them: built once from the configuration
/// (`server.rs` through the hub) and shared, so that a writer needs neither the hub nor the whole
/// configuration, and an idle connection's task carries one pointer for it.
pub(crate) struct Writers {
    /// The writers' durations.
    pub(crate) timing: Timing,
    /// Each shard's write-coalescing window, following the shard's load.
    pub(crate) windows: crate::load::Windows,
    /// Where writes, latencies and heartbeat timeouts are counted.
    metrics: Arc<Metrics>,
    /// The centre of the reconnect advice in a goodbye (`shutdown.reconnect_after_ms`).
    reconnect_after_ms: u64,
}

impl Writers {
    /// The writers' settings under `ws` and `shutdown`, for `shards` shards.
    pub(crate) fn new(
        ws: &WebSocketConfig,
        reconnect_after_ms: u64,
        shards: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            timing: Timing::new(ws),
            windows: crate::load::Windows::new(
                Duration::from_secs_f64(ws.write_coalesce_ms / 1000.0),
                shards,
                ws.write_coalesce_adaptive,
            ),
            metrics,
            reconnect_after_ms,
        }
    }

    /// Counts a client dropped for a missed heartbeat or a socket that took nothing.
    fn count_dead(&self) {
        self.metrics
            .local()
            .heartbeat_timeouts
            .fetch_add(1, Relaxed);
    }
}

/// Runs the writer of one client until the connection ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a dead copy of its arguments in every idle connection's task"
)]
pub(crate) fn run(
    mut half: WriteHalf,
    client: Arc<ClientHandle>,
    writers: Arc<Writers>,
) -> impl std::future::Future<Output = WriterExit> {
    // An async block rather than an async fn: its captures are its only copy of the
    // arguments (an async fn keeps a dead copy of each next to the live one, 32 bytes here).
    async move {
        let periods = writers.timing.heartbeat;
        let mut heartbeat = Heartbeat::new(Instant::now(), periods);
        // One timer for the connection's life, moved only when the heartbeat deadline moves: a
        // timer armed and cancelled on every wake-up costs more than the write itself.
        let timer = tokio::time::sleep_until(heartbeat.deadline(periods).into());
        tokio::pin!(timer);
        let mut batch: Vec<Arc<OutFrame>> = Vec::new();
        let mut now = Instant::now();
        // When the last two writes ended (an idle client's first events leave at once).
        let most = writers.windows.max();
        let long_ago = now.checked_sub(most * 2).unwrap_or(now);
        let (mut prev_write, mut last_write) = (long_ago, long_ago);
        loop {
            if let Some(until) = hold_until(&client, &writers, (prev_write, last_write), now) {
                timer.as_mut().reset(until.into());
                hold_back(&client, timer.as_mut()).await;
                now = Instant::now();
            }
            let periods = writers.timing.heartbeat;
            if now >= heartbeat.deadline(periods) {
                match heartbeat.check(now, client.last_heard(), periods) {
                    Beat::Dead => {
                        writers.count_dead();
                        // Boxed: only a dying connection needs the goodbye's timer.
                        Box::pin(say_heartbeat_timeout(&mut half, &client, &writers)).await;
                        return WriterExit::Dead;
                    }
                    Beat::Ping => batch.push(OutFrame::control(OpCode::Ping, b"hb")),
                    Beat::Wait => {}
                }
            }
            let Filled { closing, from_ring } = fill_batch(&client, &mut batch);
            if batch.is_empty() {
                // The timer's own deadline says where it stands (a coalescing wait may have moved it).
                let due: tokio::time::Instant = heartbeat.deadline(periods).into();
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                tokio::select! {
                    biased;
                    _ = client.wake.notified() => {}
                    _ = &mut timer => {}
                }
                now = Instant::now();
                continue;
            }
            let result = half
                .write_batch(&batch, &client, writers.timing.stall_limit)
                .await;
            now = Instant::now();
            (prev_write, last_write) = (last_write, now);
            client.mark_progress(now);
            account(&writers, &client, &batch, from_ring, now);
            batch.clear();
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    writers.count_dead();
                    return WriterExit::Dead;
                }
                Err(_) => return WriterExit::SocketError,
            }
            if closing {
                half.shutdown().await;
                return WriterExit::Closed;
            }
        }
    }
}

/// Tells a client that missed its heartbeat why it is being dropped (docs/design.md, "Heartbeat and goodbye"): the
/// `disconnect` message with reason `heartbeat_timeout`, then close 1001. A peer that is really
/// gone takes neither, so the attempt is bounded by [`CLOSE_GRACE`].
async fn say_heartbeat_timeout(half: &mut WriteHalf, client: &ClientHandle, writers: &Writers) {
    let advice = spread(writers.reconnect_after_ms);
    let goodbye = [
        reply::disconnect("heartbeat_timeout", advice),
        OutFrame::close(CloseCode::Away, "heartbeat timeout"),
    ];
    let write = half.write_batch(&goodbye, client, CLOSE_GRACE);
    if tokio::time::timeout(CLOSE_GRACE, write).await.is_ok() {
        half.shutdown().await;
    }
}

/// Whether to hold the next write back so that more frames go out with it: only events are
/// waiting (no reply, no goodbye), coalescing is on, and the last write ended less than the
/// window ago. The caller asks only while the client is busy (its last two writes were less
/// than twice the window apart), so a client that gets an event now and then, even two close
/// together, never waits.
fn coalesce_wait(
    client: &ClientHandle,
    window: Duration,
    last_write: Instant,
    now: Instant,
) -> bool {
    !window.is_zero()
        && now < last_write + window
        && !client.ring.is_empty()
        && !client.has_control()
        && client.goodbye().is_none()
}

/// Until when to hold the client's next write back, if at all: only while it is busy (its last
/// two writes were less than twice the configured window apart), and then its
/// shard's window now (load.rs) after the last write, when [`coalesce_wait`] agrees. A plain
/// function, so that the writer's task keeps no extra state across the wait.
fn hold_until(
    client: &ClientHandle,
    writers: &Writers,
    (prev_write, last_write): (Instant, Instant),
    now: Instant,
) -> Option<Instant> {
    if last_write >= prev_write + writers.windows.max() * 2 {
        return None;
    }
    let window = writers.windows.get(client.shard);
    coalesce_wait(client, window, last_write, now).then(|| last_write + window)
}

/// Waits until `timer` fires (the caller set it to the end of the window) while only events
/// arrive; a reply or a goodbye ends the wait at once. Uses the connection's one timer (the
/// caller re-arms it for the heartbeat afterwards), so an idle connection's task carries no
/// second timer.
async fn hold_back(client: &ClientHandle, mut timer: Pin<&mut Sleep>) {
    loop {
        tokio::select! {
            _ = &mut timer => return,
            _ = client.wake.notified() => {
                if client.has_control() || client.goodbye().is_some() {
                    return;
                }
            }
        }
    }
}

/// What [`fill_batch`] gathered.
struct Filled {
    /// The batch ends with a close frame.
    closing: bool,
    /// Where the frames taken from the ring start (before it: replies, resumed events).
    from_ring: usize,
}

/// Fills `batch` with what to write next: replies (and a resume's events) first, then live
/// events from the ring unless they are held back.
fn fill_batch(client: &ClientHandle, batch: &mut Vec<Arc<OutFrame>>) -> Filled {
    while let Some(f) = client.pop_control() {
        let close = f.is_close();
        batch.push(f);
        if close {
            return Filled {
                closing: true,
                from_ring: batch.len(),
            };
        }
    }
    let from_ring = batch.len();
    if let Some(bye) = client.goodbye() {
        // Flush everything still queued, then say goodbye.
        push_events(client, batch, usize::MAX);
        batch.push(reply::disconnect(bye.reason, bye.reconnect_after_ms));
        batch.push(OutFrame::close(bye.close_code, bye.reason));
        return Filled {
            closing: true,
            from_ring,
        };
    }
    if !client.seam.is_holding() {
        push_events(client, batch, MAX_BATCH);
    }
    Filled {
        closing: false,
        from_ring,
    }
}

/// Moves up to `limit` event frames from the ring, behind a `QUEUE_FULL` notice if any were lost.
/// Frames a resume or snapshot already sent, or queued under a grant the client no longer
/// holds, are skipped.
fn push_events(client: &ClientHandle, batch: &mut Vec<Arc<OutFrame>>, limit: usize) {
    let mut taken = 0;
    let mut notice_at = None;
    while taken < limit {
        let Some(f) = client.ring.pop() else { break };
        if client.seam.skip(&f) {
            continue;
        }
        if taken == 0 {
            notice_at = Some(batch.len());
        }
        batch.push(f);
        taken += 1;
    }
    // Read the drop count after popping, so drops that raced with the pops are reported too.
    let dropped = client.ring.take_drops();
    if dropped > 0 {
        let at = notice_at.unwrap_or(batch.len());
        batch.insert(at, reply::queue_full(dropped));
    }
}

/// Counts what a write sent, which was complete at `now`. Latency is observed for replies and
/// live events, not for the old events a resume sent again.
fn account(
    writers: &Writers,
    client: &ClientHandle,
    batch: &[Arc<OutFrame>],
    from_ring: usize,
    now: Instant,
) {
    let local = writers.metrics.local();
    let mut texts = 0;
    for (i, f) in batch.iter().enumerate().filter(|(_, f)| f.is_message()) {
        texts += 1;
        if i >= from_ring || f.event.is_none() {
            local.observe_latency(now.saturating_duration_since(f.routed_at));
        }
    }
    local.messages_sent.fetch_add(texts, Relaxed);
    client.activity.sent.fetch_add(texts, Relaxed);
}
