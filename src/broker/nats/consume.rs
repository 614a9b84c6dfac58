//! The NATS broker's consumer, on a thread of its own: connects, makes sure the region's stream
//! exists, reads the stream's tail back into the history (`Scope::Past`: served to nobody), then
//! hands every new event on (`Scope::Every`), for the life of the process. Control messages
//! arrive on a plain NATS subject beside it.
//!
//! One ephemeral consumer (no acknowledgements, one replica, in memory) follows the stream from
//! a known sequence; when it fails (a lost connection, a lost NATS node, two missed heartbeats)
//! it is made again at the next sequence, so no event is missed or repeated.
//! A sequence that jumps (the stream dropped events past its limits while this instance was
//! away) is a gap: the history forgets its recent events, so a resume across it says so.
//!
//! Owns nothing beyond its task: it writes the broker's shared state (`super::Shared`).

use super::{Origin, Shared};
use crate::backoff::Backoff;
use crate::broker::{BrokerHandler, Scope};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy};
use futures_util::{FutureExt, StreamExt};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Most events handed to the shards with one wake-up.
const BATCH: usize = 64;
/// How often the server says a quiet consumer is still there: two missed, and it is made again
/// from the next sequence (a lost NATS node took it along).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest wait for an answer to a request about the stream or a consumer: short, so that an
/// attempt that landed on a node just lost is given up and made again soon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects, then follows the stream for the life of the process.
pub(super) async fn run(handler: Arc<dyn BrokerHandler>, shared: Arc<Shared>) {
    let client = loop {
        match connect(&shared).await {
            Ok(client) => break client,
            Err(e) => {
                shared.link.set(false, Some(e));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut context = jetstream::new(client.clone());
    shared.context.store(Some(Arc::new(context.clone())));
    // Publishing keeps its own (longer) wait; following asks and gives up sooner.
    context.set_timeout(REQUEST_TIMEOUT);
    tokio::spawn(control(client.clone(), handler.clone(), shared.clone()));
    // Other regions' mirrors, each followed and watched on its own; this region's stream here.
    for i in 1..shared.origins.len() {
        tokio::spawn(super::mirror::watch(client.clone(), shared.clone(), i));
        tokio::spawn(keep_following(
            handler.clone(),
            shared.clone(),
            context.clone(),
            i,
        ));
    }
    keep_following(handler, shared, context, 0).await
}

/// Follows origin `i`'s stream for the life of the process, again after each failure. The
/// link (what `/readyz` reports) is this region's stream's; a mirror's failure is logged.
async fn keep_following(
    handler: Arc<dyn BrokerHandler>,
    shared: Arc<Shared>,
    context: jetstream::Context,
    i: usize,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    // The next stream sequence to hand on (`None`: nothing handed on yet).
    let mut next = None;
    loop {
        let why = match follow(&*handler, &shared, &context, i, &mut next).await {
            Ok(()) => "the NATS consumer ended; following again".to_string(),
            Err(e) => e,
        };
        match i {
            0 => shared.link.set(false, Some(why)),
            _ => {
                tracing::warn!(stream = %shared.origins[i].stream, error = %why, "mirror not followed; again")
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
        if next.is_some() {
            backoff.reset();
        }
    }
}

/// A client for the region's servers that reconnects by itself; a lost connection marks the
/// link down until the consumer hands on events again.
async fn connect(shared: &Shared) -> Result<async_nats::Client, String> {
    let servers: Vec<async_nats::ServerAddr> = shared
        .config
        .servers
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let link = shared.link.clone();
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        // JetStream API requests (stream info, consumer creation) wait this long, not 10 s.
        .request_timeout(Some(REQUEST_TIMEOUT))
        .event_callback(move |event| {
            let link = link.clone();
            async move {
                if let async_nats::Event::Disconnected = event {
                    link.set(false, Some("NATS connection lost; reconnecting".into()));
                }
            }
        })
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS: {e}"))
}

/// Hands on control messages (plain NATS, not stored) until the connection is closed.
async fn control(client: async_nats::Client, handler: Arc<dyn BrokerHandler>, shared: Arc<Shared>) {
    let subject = shared.config.control_subject();
    let mut messages = loop {
        match client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    while let Some(m) = messages.next().await {
        shared.inbound.control(&*handler, &m.payload);
    }
}

/// `origin`'s stream in this region, created as configured when it does not exist yet: this
/// region's own on its subject, or a mirror of another region's (from that region's domain).
async fn stream(
    context: &jetstream::Context,
    shared: &Shared,
    origin: &Origin,
) -> Result<jetstream::stream::Stream, String> {
    let c = &shared.config;
    let (subjects, mirror) = match &origin.mirror_of {
        None => (vec![shared.subject.clone()], None),
        Some(api) => {
            let source = jetstream::stream::Source {
                name: origin.stream.clone(),
                external: Some(jetstream::stream::External {
                    api_prefix: api.clone(),
                    delivery_prefix: None,
                }),
                ..Default::default()
            };
            (Vec::new(), Some(source))
        }
    };
    // A mirror takes no publishes: no duplicate window of its own.
    let own = mirror.is_none();
    let config = jetstream::stream::Config {
        name: origin.stream.clone(),
        subjects,
        mirror,
        storage: jetstream::stream::StorageType::File,
        num_replicas: c.replicas,
        max_messages: i64::try_from(c.max_messages).unwrap_or(i64::MAX),
        max_age: Duration::from_secs(c.max_age_seconds),
        duplicate_window: Duration::from_secs(if own { c.duplicate_window_seconds } else { 0 }),
        ..Default::default()
    };
    context
        .get_or_create_stream(config)
        .await
        .map_err(|e| format!("cannot open the NATS stream {}: {e}", origin.stream))
}

/// Where to start reading, and up to which sequence events are past ones (0: none), given the
/// stream's `state` and the position `next` kept from the last round.
fn start_at(
    handler: &dyn BrokerHandler,
    state: &jetstream::stream::State,
    next: Option<u64>,
    readback: u64,
) -> (u64, u64) {
    match next {
        // Back after a failure: on from where it was, unless the stream dropped that since.
        Some(n) => {
            if n < state.first_sequence {
                handler.handle_gap();
            }
            (n.max(state.first_sequence).max(1), 0)
        }
        // At start: the tail the history holds, as past events.
        None => {
            let from = state.last_sequence.saturating_sub(readback) + 1;
            (from.max(state.first_sequence).max(1), state.last_sequence)
        }
    }
}

/// The messages of a new consumer on `stream` from sequence `start`.
async fn messages_from(
    stream: &jetstream::stream::Stream,
    start: u64,
) -> Result<jetstream::consumer::pull::Stream, String> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer
        .stream()
        .max_messages_per_batch(500)
        .heartbeat(HEARTBEAT)
        .expires(HEARTBEAT * 5)
        .messages()
        .await
        .map_err(|e| e.to_string())
}

/// Follows origin `i`'s stream from `next` (at start: from its tail, read back into the history)
/// until the consumer fails; `next` keeps the position for the next round.
async fn follow(
    handler: &dyn BrokerHandler,
    shared: &Shared,
    context: &jetstream::Context,
    i: usize,
    next: &mut Option<u64>,
) -> Result<(), String> {
    let origin = &shared.origins[i];
    let mut stream = stream(context, shared, origin).await?;
    let cannot = |e: String| format!("cannot follow the NATS stream {}: {e}", origin.stream);
    let state = stream
        .info()
        .await
        .map_err(|e| cannot(e.to_string()))?
        .state
        .clone();
    origin.last.store(state.last_sequence, Relaxed);
    let (start, past_until) = start_at(handler, &state, *next, shared.readback);
    let mut messages = messages_from(&stream, start).await.map_err(cannot)?;
    if i == 0 && (start > state.last_sequence || next.is_some()) {
        // Nothing to read back: following from here on.
        shared.link.set(true, None);
    }
    let mut batch = Vec::with_capacity(BATCH);
    // The first message of a new consumer may skip what the stream deleted; a later one that
    // skips lost messages in transit.
    let mut fresh = true;
    while let Some(first) = messages.next().await {
        // This message and every other one already received (up to BATCH) go to the shards
        // with one wake-up.
        let mut pending = Some(first);
        while let Some(item) = pending.take() {
            let message = match item {
                Ok(m) => m,
                Err(e) => {
                    handler.handle_events(&mut batch);
                    return Err(format!("the NATS consumer failed: {e}"));
                }
            };
            let (seq, left) = message
                .info()
                .map_or((0, 0), |m| (m.stream_sequence, m.pending));
            if let Some(n) = next.filter(|n| seq > *n) {
                handler.handle_events(&mut batch);
                if !fresh {
                    return Err(format!(
                        "messages {n}..{seq} were lost on the way; again from {n}"
                    ));
                }
                // Events between were dropped by the stream: what the history holds is not
                // known to be complete any more.
                handler.handle_gap();
            }
            fresh = false;
            hand_on(
                handler,
                shared,
                i,
                &message,
                (seq, left),
                (next, past_until),
                &mut batch,
            );
            if batch.len() < BATCH {
                pending = messages.next().now_or_never().flatten();
            }
        }
        handler.handle_events(&mut batch);
    }
    Ok(())
}

/// Adds one message (stream sequence `seq`, `left` more pending) to `batch` (a past event up to
/// `past_until`), noting the position reached in `next`.
fn hand_on(
    handler: &dyn BrokerHandler,
    shared: &Shared,
    i: usize,
    message: &jetstream::Message,
    (seq, left): (u64, u64),
    (next, past_until): (&mut Option<u64>, u64),
    batch: &mut Vec<(crate::event::ParsedEvent, Scope)>,
) {
    *next = Some(seq + 1);
    let scope = match seq <= past_until {
        true => Scope::Past,
        false => Scope::Every,
    };
    let origin = &shared.origins[i];
    if let Some(event) = shared.inbound.event(handler, &message.payload) {
        let at = crate::event::Origin {
            region: origin.region.clone(),
            seq,
        };
        batch.push((event.at_origin(at), scope));
    }
    origin.consumed.store(seq, Relaxed);
    origin.last.fetch_max(seq + left, Relaxed);
    if i == 0 && (seq >= past_until || left == 0) && !shared.link.is_up() {
        shared.link.set(true, None);
    }
}
