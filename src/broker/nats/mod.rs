//! The NATS JetStream broker: one durable stream per region, read by every instance.
//!
//! Publishing (`POST /broadcast`) puts the validated event into this region's stream
//! (`{stream}_{REGION}`, subject `{prefix}.events.{region}`) with its event id as `Nats-Msg-Id`
//! (a repeat within the duplicate window is stored once) and waits for the stream's
//! acknowledgement before answering 202; a stream that cannot take it (no quorum, NATS
//! unreachable) answers 503. Nothing is routed locally at that point: every instance, this one
//! included, delivers the event from its consumer (`consume`).
//!
//! The stream is the history. At start an instance reads the stream's tail back into its own
//! history (as many events as `history.max_events`), so a resume and a snapshot work on any
//! instance and after a restart; then it follows the stream from a known sequence, picking up
//! where it was after a lost connection or a lost NATS node, so nothing is missed and nothing
//! repeats. Only events the stream no longer holds when it comes back (past its limits)
//! are a gap, and a resume across it says so (`recovered: false`).
//!
//! Regions: each region's NATS is its own JetStream domain, named like the region, joined to the
//! others by leafnodes. An instance mirrors every other region's stream into its own region
//! (`nats.mirror_regions`; a mirror keeps the origin's sequence numbers and catches up by itself
//! after a partition) and follows each of them beside its own, so it delivers what was published
//! in any region; events of one origin stay in that origin's order. Each event is marked with its
//! origin region and its sequence there (`origin`, `origin_seq`), the same in every region, so a
//! client can resume from its positions in any region; `mirror` watches each mirror's lag and
//! whether its origin answers (`Broker::origins`).
//!
//! Owns its NATS connection, its consumers' positions and its link state; only its own tasks
//! change them.

mod consume;
mod mirror;

use super::inbound::Inbound;
use super::link::Link;
use super::{
    Broker, BrokerError, BrokerHandler, Intake, OriginStatus, PublishFuture, SetupError, Unhealthy,
};
use crate::config::NatsConfig;
use crate::event::ParsedEvent;
use arc_swap::ArcSwapOption;
use async_nats::jetstream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// State shared by the broker (publishing side) and its consumer thread.
struct Shared {
    /// The region's settings.
    config: NatsConfig,
    /// This region's stream.
    stream: String,
    /// The subject its events are published on.
    subject: String,
    /// JetStream, once a connection exists (it reconnects by itself from then on).
    context: ArcSwapOption<jetstream::Context>,
    /// Whether the consumer follows the stream (what `/readyz` reports).
    link: Arc<Link>,
    /// What an event message must be; junk counters.
    inbound: Inbound,
    /// Events read back into the history at start.
    readback: u64,
    /// Every stream followed: this region's first, then each other region's mirror.
    origins: Vec<Origin>,
}

/// One stream followed: a region's own, or another region's mirrored into it.
struct Origin {
    /// The region the events were published in.
    region: Arc<str>,
    /// The stream's name (the same in every region).
    stream: String,
    /// For a mirror: the JetStream API prefix of the origin region's domain.
    mirror_of: Option<String>,
    /// The stream sequence of the last event handed on.
    consumed: AtomicU64,
    /// The stream's last sequence when the consumer (or, for a mirror, its watch) last looked.
    last: AtomicU64,
    /// For a mirror: the origin stream's last sequence, as its region last answered.
    origin_last: AtomicU64,
    /// For a mirror: how far behind its origin NATS says it is.
    mirror_lag: AtomicU64,
    /// For a mirror: whether its origin region answered the last time it was asked.
    reachable: AtomicBool,
}

impl Origin {
    /// An origin not followed yet.
    fn new(region: &str, stream: String, mirror_of: Option<String>) -> Self {
        Self {
            region: region.into(),
            stream,
            mirror_of,
            consumed: AtomicU64::new(0),
            last: AtomicU64::new(0),
            origin_last: AtomicU64::new(0),
            mirror_lag: AtomicU64::new(0),
            reachable: AtomicBool::new(true),
        }
    }

    /// Its figures now.
    fn status(&self) -> OriginStatus {
        let stored = self.last.load(Relaxed);
        let mirror = self.mirror_of.is_some();
        OriginStatus {
            region: self.region.clone(),
            mirror,
            consumed: self.consumed.load(Relaxed),
            stored,
            origin_last: match mirror {
                true => self.origin_last.load(Relaxed),
                false => stored,
            },
            mirror_lag: self.mirror_lag.load(Relaxed),
            reachable: !mirror || self.reachable.load(Relaxed),
        }
    }

    /// Its figures for `status`.
    fn details(&self) -> serde_json::Value {
        let o = self.status();
        serde_json::json!({
            "region": &*o.region,
            "stream": self.stream,
            "mirror": o.mirror,
            "consumed_sequence": o.consumed,
            "stream_last_sequence": o.stored,
            "consumer_lag": o.stored.saturating_sub(o.consumed),
            "origin_last_sequence": o.origin_last,
            "mirror_lag": o.mirror_lag,
            "origin_reachable": o.reachable,
        })
    }
}

/// The NATS JetStream broker.
pub(super) struct NatsBroker {
    /// State shared with the consumer.
    shared: Arc<Shared>,
}

impl NatsBroker {
    /// A broker for the region `config` describes, taking events as `intake` says and reading
    /// back `readback` events into the history at start.
    pub(super) fn new(
        config: &NatsConfig,
        intake: Intake,
        readback: usize,
    ) -> Result<Self, SetupError> {
        let target = config
            .servers
            .iter()
            .map(|s| crate::config::redacted(s))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            shared: Arc::new(Shared {
                stream: config.stream_name(),
                subject: config.events_subject(),
                origins: std::iter::once(Origin::new(&config.region, config.stream_name(), None))
                    .chain(config.mirror_regions.iter().map(|r| {
                        let api = format!("$JS.{r}.API");
                        Origin::new(r, config.stream_of(r), Some(api))
                    }))
                    .collect(),
                config: config.clone(),
                context: ArcSwapOption::empty(),
                link: Arc::new(Link::new(format!("nats {target}"))),
                inbound: Inbound::new(intake),
                readback: readback as u64,
            }),
        })
    }
}

impl Broker for NatsBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> std::io::Result<()> {
        let task = consume::run(handler, self.shared.clone());
        super::spawn_runtime_thread("streamhub-nats", task)
    }

    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_> {
        Box::pin(async move {
            let s = &self.shared;
            let Some(context) = s.context.load_full() else {
                return Err(BrokerError::Unavailable("not connected to NATS yet".into()));
            };
            // Refused at once while the connection is down: the client would hold the message
            // and send it on reconnect, after a 503 had said it was not taken.
            if context.client().connection_state() != async_nats::connection::State::Connected {
                return Err(BrokerError::Unavailable("NATS is unreachable".into()));
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.event_id.as_str());
            let payload = bytes::Bytes::from(event.to_published());
            let stored = async {
                let ack = context
                    .publish_with_headers(s.subject.clone(), headers, payload)
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            let timeout = Duration::from_millis(s.config.publish_timeout_ms);
            match tokio::time::timeout(timeout, stored).await {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) => Err(BrokerError::Unavailable(format!(
                    "the NATS stream {} did not take the event: {e}",
                    s.stream
                ))),
                Err(_) => Err(BrokerError::Unavailable(format!(
                    "the NATS stream {} did not acknowledge within {} ms",
                    s.stream, s.config.publish_timeout_ms
                ))),
            }
        })
    }

    fn mode(&self) -> &'static str {
        "nats"
    }

    fn health(&self) -> Result<(), Unhealthy> {
        self.shared.link.health()
    }

    fn origins(&self) -> Vec<OriginStatus> {
        self.shared.origins.iter().map(Origin::status).collect()
    }

    fn details(&self) -> serde_json::Value {
        let s = &self.shared;
        let (connects, disconnects) = s.link.counts();
        serde_json::json!({
            "region": s.config.region,
            "stream": s.stream,
            "subject": s.subject,
            "replicas": s.config.replicas,
            "following": s.link.is_up(),
            "streams": s.origins.iter().map(Origin::details).collect::<Vec<_>>(),
            "connects": connects,
            "disconnects": disconnects,
            "junk": s.inbound.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}
