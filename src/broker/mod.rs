//! Brokers: where published events travel before this instance routes them.
//!
//! The seam has two sides, like centrifuge's `Broker` and `BrokerEventHandler`:
//!
//! - [`Broker`], what the hub asks of a broker: publish an event, say whether events flow, and
//!   wait until what the subscriptions ask for is listened to; optionally, a
//!   [`SharedHistory`] for resumes and snapshots where an instance's own cannot be complete.
//! - [`BrokerHandler`], what a broker hands back: events (each with the [`Scope`] of the index it
//!   serves), control messages, rejected messages, and the [`Demand`] it must follow. The hub
//!   implements it; no broker knows the hub.
//!
//! [`from_config`] picks the broker from the configuration's [`BrokerKind`]:
//! [`memory`] (embedded mode, the default) hands each event straight back to the handler;
//! [`redis`] publishes to `{prefix}:all` and feeds every instance from its subscription;
//! [`redis_cluster`] does the same over a Redis Cluster's sharded Pub/Sub, holding only the
//! per-cluster channels the demand names. What arrives from either Redis broker is checked in
//! [`inbound`] (for Redis Cluster, where it arrives: [`shard_arrivals`]); whether their
//! subscriptions are live is kept in [`link`]. [`nats`] puts each event into the region's
//! JetStream stream and feeds every instance from it (the stream is the history: read back at
//! start, followed from a known sequence). Adding a broker is one file or folder here plus one
//! arm in [`from_config`] (see ARCHITECTURE.md).
//!
//! Owns the seam's types ([`Scope`], [`Demand`], [`Full`], [`BrokerError`]); a broker is changed
//! only through the two traits.

use crate::config::{BrokerKind, Config};
use crate::control::Control;
use crate::event::{EventError, ParsedEvent};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use streamhub_wire::Channels;

mod inbound;
mod link;
mod memory;
mod nats;
mod redis;
mod redis_cluster;
mod shard_arrivals;

/// The shards are too far behind to take another event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Which subscriptions one arrival of an event serves.
///
/// With one stream of events (embedded mode, classic Redis Pub/Sub) every arrival serves every
/// matching subscription. With sharded Pub/Sub an event can arrive twice, on `{prefix}:all` and
/// on its cluster's channel, and each arrival serves its own half of the index, so that every
/// client still gets it once: see `redis_cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every matching subscription.
    Every,
    /// Only subscriptions without a cluster filter (the arrival on `{prefix}:all`).
    Unfiltered,
    /// Only subscriptions listing the event's cluster, skipping clients that an unfiltered
    /// subscription already serves (the arrival on `{prefix}:cluster:{id}`).
    Filtered,
    /// No subscription: an event from before this instance started, read back from a durable
    /// broker's stream (NATS) only to fill the history, so that resumes and snapshots work
    /// after a restart.
    Past,
}

/// Which clusters one instance's subscriptions ask for: what a broker that subscribes per
/// cluster (Redis Cluster sharded Pub/Sub) must listen to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    /// Some subscription has no cluster filter, so it needs every cluster's events.
    pub any_cluster: bool,
    /// The clusters named in some subscription's cluster filter.
    pub clusters: BTreeSet<Arc<str>>,
    /// Raised by one each time the index publishes a different demand.
    pub version: u64,
}

/// Why a publish did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot take events now (for example Redis is down).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The shards are too far behind to take another event now.
    #[error("the hub is overloaded: retry shortly")]
    Overloaded,
}

/// Why events do not flow through a broker now (`/readyz`, `status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

/// Why a broker's shared history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The broker has no connection to read it from.
    #[error("no redis cluster connection")]
    NotConnected,
    /// Reading failed.
    #[error("redis history: {0}")]
    Redis(#[from] ::redis::RedisError),
}

/// Why the configured broker cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `redis_url` is not a Redis URL.
    #[error("redis_url {url:?}: {source}")]
    RedisUrl {
        /// The URL given, without its user and password.
        url: String,
        /// Why it cannot be used.
        source: ::redis::RedisError,
    },
    /// `redis_tls_ca_file` cannot be read.
    #[error("redis_tls_ca_file {path:?}: {source}")]
    CaFile {
        /// The file given.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `redis_sentinel` cannot make a Sentinel client.
    #[error("redis_sentinel.nodes {nodes:?}: {source}")]
    SentinelNodes {
        /// The Sentinels given.
        nodes: Vec<String>,
        /// Why they cannot be used.
        source: ::redis::RedisError,
    },
    /// `redis_cluster_nodes` cannot make a cluster client.
    #[error("redis_cluster_nodes {nodes:?}: {source}")]
    ClusterNodes {
        /// The nodes given.
        nodes: Vec<String>,
        /// Why they cannot be used.
        source: ::redis::RedisError,
    },
}

/// The result of a publish.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>;

/// Something to wait for that yields nothing.
pub type WaitFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The events published after one event id, oldest first, from a broker's shared history:
/// `Ok(None)` when that id is not (or no longer) there, `Err` when the history cannot be read.
pub type ReplayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Vec<ParsedEvent>>, HistoryError>> + Send + 'a>>;

/// What a broker delivers to, and learns from: the receiving side of the seam.
pub trait BrokerHandler: Send + Sync {
    /// An event arrived, for the subscriptions `scope` names. `Err` when the shards are too
    /// far behind to take it (it was dropped and counted).
    fn handle_event(&self, event: ParsedEvent, scope: Scope) -> Result<(), Full>;
    /// Several events arrived at once (all that were ready): handed on in order, with one
    /// wake-up of the shards for all of them. Leaves `events` empty.
    fn handle_events(&self, events: &mut Vec<(ParsedEvent, Scope)>) {
        for (event, scope) in events.drain(..) {
            let _ = self.handle_event(event, scope);
        }
    }
    /// The broker may have missed events (its subscription was lost and is back): whatever
    /// was kept of the stream before is not known to be complete.
    fn handle_gap(&self) {}
    /// A message on an events channel was not a valid event (the broker counts it as junk too).
    fn handle_rejected(&self, error: &EventError);
    /// A control message arrived.
    fn handle_control(&self, control: Control);
    /// Which clusters this instance's subscriptions ask for, and every change of it: what a
    /// broker that subscribes per cluster must listen to.
    fn demand(&self) -> tokio::sync::watch::Receiver<Demand>;
}

/// Longest wait for a read of a broker's shared history (a resume, a snapshot, `GET /state`).
pub const SHARED_HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A broker's shared history: what a resume or snapshot reads where the instance's own history
/// cannot be complete.
pub trait SharedHistory: Send + Sync {
    /// The events published after `event_id`, for a resuming client.
    fn replay<'a>(&'a self, event_id: &'a str) -> ReplayFuture<'a>;
    /// Every event of the history, oldest first (always `Some(..)` when readable), for a
    /// snapshot.
    fn recent(&self) -> ReplayFuture<'_>;
}

/// Carries published events to every instance's handler: the publishing side of the seam.
pub trait Broker: Send + Sync {
    /// Starts delivering what arrives to `handler` (a subscriber thread, for the Redis brokers).
    /// Called once, before the first publish.
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> std::io::Result<()>;
    /// Publishes one validated event.
    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_>;
    /// `embedded`, `redis` or `redis-cluster`, for `status` and the start-up line.
    fn mode(&self) -> &'static str;
    /// `Ok` when events flow; otherwise why not (drives `/readyz`).
    fn health(&self) -> Result<(), Unhealthy>;
    /// Whether the broker's connection is up, for a `redis_connected`-style gauge (`None`: no
    /// connection to speak of).
    fn connected(&self) -> Option<bool> {
        None
    }
    /// Broker-specific figures for `status`.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Waits until the broker listens to what version `demand_version` of the handler's
    /// [`Demand`] asks for, so that a `subscribed` reply means events published from then on
    /// arrive. Brokers that always receive everything return at once; a broker that is down
    /// does not hold the reply (the subscription takes effect on recovery).
    fn wait_for_demand(&self, demand_version: u64) -> WaitFuture<'_> {
        let _ = demand_version;
        Box::pin(std::future::ready(()))
    }
    /// The streams a durable broker follows, one per origin region (NATS: this region's own
    /// and each other region's mirror), as last seen. Empty for brokers without origins; where
    /// it is not, events carry their origin and a resume may give positions instead of an id.
    fn origins(&self) -> Vec<OriginStatus> {
        Vec::new()
    }
    /// The broker's own history, when this instance's cannot be complete (Redis Cluster: it
    /// reads only its clients' clusters). `None`: resumes and snapshots use the instance's
    /// history, which sees every event. An optional ability, like centrifuge's `HistoryManager`.
    fn shared_history(&self) -> Option<&dyn SharedHistory> {
        None
    }
}

/// One origin region's stream as a durable broker last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginStatus {
    /// The region its events were published in.
    pub region: Arc<str>,
    /// Whether this is another region's stream mirrored into this one.
    pub mirror: bool,
    /// The stream sequence of the last event this instance handed on.
    pub consumed: u64,
    /// The last sequence the stream holds in this region.
    pub stored: u64,
    /// The origin stream's last sequence, as its region last told (for this region's own
    /// stream: `stored`); 0 until it was asked.
    pub origin_last: u64,
    /// How many messages the mirror is behind its origin, as NATS reports it (0 for the own
    /// stream).
    pub mirror_lag: u64,
    /// Whether the origin region answered lately (always true for this region's own stream:
    /// when that is lost, `health` says so).
    pub reachable: bool,
}

/// What a broker accepts from its channels as an event: how large a message may be, and how an
/// event's entity is read (the same rules as the instance's own history).
#[derive(Debug, Clone)]
pub struct Intake {
    /// Largest accepted message on an events channel.
    pub max_message_bytes: usize,
    /// The entity key rules.
    pub keys: crate::entity::EntityKeys,
}

/// The broker `config` asks for (not started yet: see [`Broker::start`]).
pub fn from_config(config: &Config) -> Result<Box<dyn Broker>, SetupError> {
    let channels = Channels::new(&config.redis_channel_prefix);
    let intake = Intake {
        max_message_bytes: config.rest.max_body_bytes,
        keys: config.history.entity_keys.clone(),
    };
    Ok(match config.broker_kind() {
        BrokerKind::Embedded => Box::new(memory::MemoryBroker::default()),
        BrokerKind::Redis { url } => Box::new(redis::RedisBroker::new(
            url,
            config.redis_tls_ca_file.as_deref(),
            channels,
            intake.clone(),
        )?),
        BrokerKind::Sentinel(sentinel) => Box::new(redis::RedisBroker::behind_sentinels(
            sentinel,
            channels,
            intake.clone(),
        )?),
        BrokerKind::Nats(nats) => Box::new(nats::NatsBroker::new(
            nats,
            intake.clone(),
            config.history.max_events,
        )?),
        BrokerKind::RedisCluster { nodes } => Box::new(redis_cluster::RedisClusterBroker::new(
            nodes,
            channels,
            intake.clone(),
            config.redis_cluster_max_shard_channels,
        )?),
    })
}

/// Runs `task` on a thread of its own with a single-threaded runtime (a broker's subscriber:
/// it never shares a core's runtime with client connections).
fn spawn_runtime_thread(
    name: &str,
    task: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(task),
                Err(e) => tracing::error!(error = %e, "cannot start a broker runtime"),
            }
        })?;
    Ok(())
}
