//! The Redis Cluster broker: sharded Pub/Sub, so that Redis itself scales out.
//!
//! Classic Pub/Sub on a Redis Cluster copies every message to every node. Sharded Pub/Sub
//! (`SPUBLISH`/`SSUBSCRIBE`, Redis 7) keeps a channel on the one node that owns its slot, so
//! each node carries only its own channels. The channels, all shard channels:
//!
//! - `{prefix}:cluster:{id}`: the events of one cluster. This instance holds it only while one of
//!   its subscriptions lists that cluster (the handler's [`Demand`] says which).
//! - `{prefix}:all`: every event (the full stream). Held only while some subscription here has
//!   no cluster filter; an instance whose clients all filter by cluster never reads it.
//! - `aiops:control:streaming` stays a classic channel (few messages, every instance needs them).
//!
//! A publisher sends each event to `{prefix}:all` and, when it has a `cluster_id`, to its
//! cluster's channel (`POST /broadcast` and `streamhub publish` do both). The two arrivals serve
//! two halves of the index ([`Scope`]): the one on `{prefix}:all` serves subscriptions without a
//! cluster filter, the one on the cluster's channel serves those that list the cluster and skips
//! clients the first already served, so every client gets the event once.
//!
//! The cluster connection (RESP3, redis-rs) reconnects to a lost node and resubscribes by itself.
//! This broker still treats a lost node as an outage until it has confirmed every channel it
//! wants again and every primary answers: `/readyz` says 503 meanwhile and publishes answer 503.

use super::inbound::Inbound;
use super::link::Link;
use super::{Broker, BrokerError, BrokerHandler, PublishFuture, WaitFuture};
use crate::backoff::Backoff;
use crate::event::ParsedEvent;
use crate::index::{Demand, Scope};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use streamhub_wire::{Channels, CONTROL_CHANNEL};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a healthy broker checks that every primary answers.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for one command to the cluster.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// State shared by the broker (publishing side) and its subscriber thread.
struct Shared {
    /// Where the cluster is (seed nodes).
    client: redis::cluster::ClusterClient,
    /// Messages and subscription events pushed by the cluster connection, until the subscriber
    /// takes them.
    pushes: Mutex<Option<UnboundedReceiver<PushInfo>>>,
    /// The channel names.
    channels: Channels,
    /// Validates, hands on and counts what arrives.
    inbound: Inbound,
    /// The cluster connection, once one is up (it reconnects node by node by itself).
    conn: ArcSwapOption<ClusterConnection>,
    /// Up when every wanted channel is confirmed and every primary answers.
    link: Link,
    /// The shard channels held now, for `status`.
    held: Mutex<BTreeSet<String>>,
    /// The version of the handler's demand that `held` answers.
    synced: watch::Sender<u64>,
}

impl Shared {
    /// Records that the channels held answer demand `version`.
    fn set_held(&self, channels: BTreeSet<String>, version: u64) {
        *self.held.lock() = channels;
        self.synced.send_replace(version);
    }

    /// The shard channels the latest demand calls for, and its version (marked seen).
    fn wanted(&self, demand: &mut watch::Receiver<Demand>) -> (BTreeSet<String>, u64) {
        let d = demand.borrow_and_update();
        let mut want: BTreeSet<String> = d
            .clusters
            .iter()
            .map(|c| self.channels.cluster(c))
            .collect();
        if d.any_cluster {
            want.insert(self.channels.all().to_string());
        }
        (want, d.version)
    }

    /// Hands on one message pushed by the cluster connection.
    fn on_message(&self, handler: &dyn BrokerHandler, channel: &[u8], payload: &[u8]) {
        if channel == CONTROL_CHANNEL.as_bytes() {
            self.inbound.control(handler, payload);
        } else if channel == self.channels.all().as_bytes() {
            self.inbound.route(handler, payload, Scope::Unfiltered);
        } else if let Some(id) = self.channels.cluster_of(channel) {
            let Some(event) = self.inbound.event(handler, payload) else {
                return;
            };
            // Routing by the channel and by the event's own cluster must agree, or a client
            // could get the event twice (or from a cluster it did not ask for).
            if event.cluster_id.as_deref().map(str::as_bytes) == Some(id) {
                // Refused only when the shards are full: the handler counted the drop.
                let _ = handler.handle_event(event, Scope::Filtered);
            } else {
                self.inbound.junk(
                    "wrong_cluster_channel",
                    &format!(
                        "event of cluster {:?} on {}",
                        event.cluster_id,
                        String::from_utf8_lossy(channel)
                    ),
                );
            }
        }
    }
}

/// The Redis Cluster broker.
pub(super) struct RedisClusterBroker {
    /// State shared with the subscriber.
    shared: Arc<Shared>,
}

impl RedisClusterBroker {
    /// A broker for the cluster reachable through `nodes`, on `channels`, taking messages up to
    /// `max_message_bytes`.
    pub(super) fn new(
        nodes: &[String],
        channels: Channels,
        max_message_bytes: usize,
    ) -> Result<Self, String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("redis_cluster_nodes {nodes:?}: {e}"))?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                pushes: Mutex::new(Some(rx)),
                channels,
                inbound: Inbound::new(max_message_bytes),
                conn: ArcSwapOption::empty(),
                link: Link::new(),
                held: Mutex::new(BTreeSet::new()),
                synced: watch::Sender::new(0),
            }),
        })
    }
}

impl Broker for RedisClusterBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> std::io::Result<()> {
        let task = subscriber(handler, self.shared.clone());
        super::spawn_runtime_thread("streamhub-redis-cluster", task)
    }

    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.link.is_up() {
                return Err(BrokerError::Unavailable(
                    "redis cluster subscriptions are down".into(),
                ));
            }
            let Some(conn) = s.conn.load_full() else {
                return Err(BrokerError::Unavailable(
                    "no redis cluster connection".into(),
                ));
            };
            let message = event.to_published();
            streamhub_wire::spublish(&conn, &s.channels, event.cluster_id.as_deref(), &message)
                .await
                .map(|_| ())
                .map_err(|e| BrokerError::Unavailable(format!("redis publish failed: {e}")))
        })
    }

    fn mode(&self) -> &'static str {
        "redis-cluster"
    }

    fn health(&self) -> Result<(), String> {
        self.shared.link.health()
    }

    fn connected(&self) -> Option<bool> {
        Some(self.shared.link.is_up())
    }

    fn wait_for_demand(&self, demand_version: u64) -> WaitFuture<'_> {
        Box::pin(async move {
            if !self.shared.link.is_up() {
                return;
            }
            let mut synced = self.shared.synced.subscribe();
            let _ =
                tokio::time::timeout(COMMAND_TIMEOUT, synced.wait_for(|v| *v >= demand_version))
                    .await;
        })
    }

    fn details(&self) -> serde_json::Value {
        let s = &self.shared;
        let (connects, disconnects) = s.link.counts();
        serde_json::json!({
            "sharded_pubsub": true,
            "all_channel": s.channels.all(),
            "shard_channels": *s.held.lock(),
            "subscribed": s.link.is_up(),
            "connects": connects,
            "disconnects": disconnects,
            "junk": s.inbound.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}

/// Waits for one request to the cluster, at most [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    request: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "redis cluster command timed out",
        ))),
    }
}

/// Pings every primary.
async fn ping_all(conn: &mut ClusterConnection) -> redis::RedisResult<()> {
    bounded(redis::cmd("PING").query_async::<Value>(conn))
        .await
        .map(|_| ())
}

/// Subscribes to everything wanted from scratch and checks every primary.
async fn full_sync(
    conn: &mut ClusterConnection,
    want: &BTreeSet<String>,
) -> redis::RedisResult<()> {
    bounded(conn.subscribe(CONTROL_CHANNEL)).await?;
    // One SSUBSCRIBE per channel: channels of different slots cannot share a command.
    for c in want {
        bounded(conn.ssubscribe(c)).await?;
    }
    ping_all(conn).await
}

/// Subscribes to channels newly wanted and drops those no longer wanted.
async fn incremental_sync(
    conn: &mut ClusterConnection,
    held: &BTreeSet<String>,
    want: &BTreeSet<String>,
) -> redis::RedisResult<()> {
    for c in want.difference(held) {
        bounded(conn.ssubscribe(c)).await?;
    }
    for c in held.difference(want) {
        bounded(conn.sunsubscribe(c)).await?;
    }
    Ok(())
}

/// Connects, then hands on pushed messages (one task) and keeps the subscriptions in line with
/// the demand and the cluster's health (another), until the process ends. Routing never waits
/// on a subscription command.
async fn subscriber(handler: Arc<dyn BrokerHandler>, shared: Arc<Shared>) {
    let Some(pushes) = shared.pushes.lock().take() else {
        return;
    };
    let lost = Arc::new(Lost::default());
    let demand = handler.demand();
    tokio::spawn(route_pushes(handler, shared.clone(), pushes, lost.clone()));
    let conn = connect(&shared).await;
    Maintainer {
        shared,
        lost,
        demand,
        conn,
        backoff: Backoff::reconnect(),
        dirty: true,
        next_check: Instant::now(),
    }
    .run()
    .await;
}

/// Connections lost, told by the routing task to the maintaining one.
#[derive(Default)]
struct Lost {
    /// How many `Disconnection` pushes so far.
    count: AtomicU64,
    /// Wakes the maintaining task.
    wake: tokio::sync::Notify,
}

/// Hands on every message the cluster connection pushes; notes lost connections.
async fn route_pushes(
    handler: Arc<dyn BrokerHandler>,
    shared: Arc<Shared>,
    mut pushes: UnboundedReceiver<PushInfo>,
    lost: Arc<Lost>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let [Value::BulkString(channel), Value::BulkString(payload), ..] = &push.data[..]
                {
                    shared.on_message(&*handler, channel, payload);
                }
            }
            PushKind::Disconnection => {
                shared.link.set(
                    false,
                    Some("lost a redis cluster node; reconnecting".into()),
                );
                lost.count.fetch_add(1, Relaxed);
                lost.wake.notify_one();
            }
            _ => {}
        }
    }
}

/// Connects to the cluster, retrying with backoff until it answers.
async fn connect(shared: &Shared) -> ClusterConnection {
    let mut backoff = Backoff::reconnect();
    loop {
        match shared.client.get_async_connection().await {
            Ok(c) => {
                shared.conn.store(Some(Arc::new(c.clone())));
                return c;
            }
            Err(e) => {
                shared
                    .link
                    .set(false, Some(format!("redis cluster unreachable: {e}")));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Keeps the shard channels equal to what the demand calls for, resubscribes everything after
/// any failure, and checks the primaries while healthy.
struct Maintainer {
    /// State shared with the broker.
    shared: Arc<Shared>,
    /// Connections lost, as the routing task saw them.
    lost: Arc<Lost>,
    /// The handler's demand.
    demand: watch::Receiver<Demand>,
    /// The cluster connection.
    conn: ClusterConnection,
    /// Delay before the next full resubscription while failing.
    backoff: Backoff,
    /// Whether a full resubscription is due (at start, and after any failure).
    dirty: bool,
    /// When to check the primaries, or retry a full resubscription, next.
    next_check: Instant,
}

impl Maintainer {
    /// Runs until the handler's demand goes away (the hub is gone).
    async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.lost.wake.notified() => {
                    self.dirty = true;
                    self.next_check = Instant::now() + self.backoff.next_delay();
                }
                changed = self.demand.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.follow_demand().await;
                }
                _ = tokio::time::sleep_until(self.next_check) => self.check().await,
            }
        }
    }

    /// Subscribes to what a new demand adds and drops what it no longer names.
    async fn follow_demand(&mut self) {
        // Marked seen even while dirty: the full resubscription reads the latest demand.
        let (want, version) = self.shared.wanted(&mut self.demand);
        if self.dirty {
            return;
        }
        let held = self.shared.held.lock().clone();
        match incremental_sync(&mut self.conn, &held, &want).await {
            Ok(()) => self.shared.set_held(want, version),
            Err(e) => self.failed(e),
        }
    }

    /// Pings the primaries while healthy; resubscribes everything when a failure was seen.
    async fn check(&mut self) {
        if !self.dirty {
            if let Err(e) = ping_all(&mut self.conn).await {
                self.failed(e);
            }
        }
        if self.dirty {
            self.resubscribe().await;
        }
        self.next_check = Instant::now()
            + if self.dirty {
                self.backoff.next_delay()
            } else {
                CHECK_INTERVAL
            };
    }

    /// Subscribes to every wanted channel from scratch; healthy again when that worked with no
    /// connection lost meanwhile.
    async fn resubscribe(&mut self) {
        let lost_before = self.lost.count.load(Relaxed);
        let (want, version) = self.shared.wanted(&mut self.demand);
        match full_sync(&mut self.conn, &want).await {
            // A connection lost during the resubscription: do it again.
            Ok(()) if self.lost.count.load(Relaxed) != lost_before => {}
            Ok(()) => {
                // Drop channels held before the outage and no longer wanted.
                let stale: BTreeSet<String> =
                    self.shared.held.lock().difference(&want).cloned().collect();
                for c in &stale {
                    let _ = bounded(self.conn.sunsubscribe(c)).await;
                }
                tracing::info!(channels = ?want, "subscribed to the redis cluster");
                self.shared.set_held(want, version);
                self.dirty = false;
                self.backoff.reset();
                self.shared.link.set(true, None);
            }
            Err(e) => self.failed(e),
        }
    }

    /// Records a failure: the link is down and everything is resubscribed next.
    fn failed(&mut self, e: redis::RedisError) {
        self.shared
            .link
            .set(false, Some(format!("redis cluster: {e}")));
        self.dirty = true;
    }
}
