//! The Redis Cluster broker: sharded Pub/Sub, so that Redis itself scales out.
//!
//! Classic Pub/Sub on a Redis Cluster copies every message to every node. Sharded Pub/Sub
//! (`SPUBLISH`/`SSUBSCRIBE`, Redis 7) keeps a channel on the one node that owns its slot, so
//! each node carries only its own channels. The channels, all shard channels:
//!
//! - `{prefix}:cluster:{id}`: the events of one cluster. This instance holds it only while one of
//!   its subscriptions lists that cluster (the index publishes that [`Demand`]).
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
use super::redis::{jittered, BACKOFF_MAX, BACKOFF_START, CONTROL_CHANNEL};
use super::{Broker, BrokerError, PublishFuture, WaitFuture};
use crate::event::ParsedEvent;
use crate::hub::Hub;
use crate::index::Demand;
use crate::index::Scope;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// How often a healthy broker checks that every primary answers.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for one command to the cluster.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// State shared by the broker (publishing side) and its subscriber thread.
pub struct RedisClusterShared {
    /// Where the cluster is (seed nodes).
    client: redis::cluster::ClusterClient,
    /// Messages and subscription events pushed by the cluster connection, until the subscriber
    /// takes them.
    pushes: Mutex<Option<UnboundedReceiver<PushInfo>>>,
    /// `{prefix}:all`.
    all_channel: String,
    /// `{prefix}:cluster:`, to which a cluster id is appended.
    cluster_prefix: String,
    /// Validates, routes and counts what arrives.
    inbound: Inbound,
    /// The cluster connection, once one is up (it reconnects node by node by itself).
    conn: ArcSwapOption<ClusterConnection>,
    /// Up when every wanted channel is confirmed and every primary answers.
    link: Link,
    /// The shard channels held now, for `status`.
    held: Mutex<BTreeSet<String>>,
    /// The version of the index's demand that `held` answers.
    synced: tokio::sync::watch::Sender<u64>,
}

impl RedisClusterShared {
    /// Shared state for the cluster reachable through `nodes`, with channels under `prefix`.
    pub fn new(
        nodes: &[String],
        prefix: &str,
        max_message_bytes: usize,
    ) -> Result<Arc<Self>, String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("redis_cluster_nodes {nodes:?}: {e}"))?;
        Ok(Arc::new(Self {
            client,
            pushes: Mutex::new(Some(rx)),
            all_channel: format!("{prefix}:all"),
            cluster_prefix: format!("{prefix}:cluster:"),
            inbound: Inbound::new(max_message_bytes),
            conn: ArcSwapOption::empty(),
            link: Link::new(),
            held: Mutex::new(BTreeSet::new()),
            synced: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Records that the channels held answer demand `version`.
    fn set_held(&self, channels: BTreeSet<String>, version: u64) {
        *self.held.lock() = channels;
        self.synced.send_replace(version);
    }

    /// The shard channels the latest demand calls for, and its version (marked seen).
    fn wanted(&self, demand: &mut tokio::sync::watch::Receiver<Demand>) -> (BTreeSet<String>, u64) {
        let d = demand.borrow_and_update();
        (self.channels_for(&d), d.version)
    }

    /// The shard channels `demand` calls for.
    fn channels_for(&self, demand: &Demand) -> BTreeSet<String> {
        let mut want: BTreeSet<String> = demand
            .clusters
            .iter()
            .map(|c| format!("{}{c}", self.cluster_prefix))
            .collect();
        if demand.any_cluster {
            want.insert(self.all_channel.clone());
        }
        want
    }

    /// Routes one message pushed by the cluster connection.
    fn on_message(&self, hub: &Hub, channel: &[u8], payload: &[u8]) {
        if channel == CONTROL_CHANNEL.as_bytes() {
            self.inbound.control(hub, payload);
        } else if channel == self.all_channel.as_bytes() {
            self.inbound.route(hub, payload, Scope::Unfiltered);
        } else if let Some(id) = channel.strip_prefix(self.cluster_prefix.as_bytes()) {
            let Some(event) = self.inbound.event(hub, payload) else {
                return;
            };
            // Routing by the channel and by the event's own cluster must agree, or a client
            // could get the event twice (or from a cluster it did not ask for).
            if event.cluster_id.as_deref().map(str::as_bytes) == Some(id) {
                hub.router.route_scoped(event, Scope::Filtered);
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
pub struct RedisClusterBroker {
    /// State shared with the subscriber.
    shared: Arc<RedisClusterShared>,
}

impl RedisClusterBroker {
    /// A broker over `shared`; start its subscriber with [`spawn_cluster_subscriber`].
    pub fn new(shared: Arc<RedisClusterShared>) -> Self {
        Self { shared }
    }
}

impl Broker for RedisClusterBroker {
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
            let mut conn = (*conn).clone();
            let message = event.to_published();
            let mut all = redis::cmd("SPUBLISH");
            all.arg(&s.all_channel).arg(&message[..]);
            let result = match &event.cluster_id {
                Some(id) => {
                    let mut one = redis::cmd("SPUBLISH");
                    one.arg(format!("{}{id}", s.cluster_prefix))
                        .arg(&message[..]);
                    let mut conn2 = conn.clone();
                    futures_util::future::try_join(
                        all.query_async::<i64>(&mut conn),
                        one.query_async::<i64>(&mut conn2),
                    )
                    .await
                    .map(|_| ())
                }
                None => all.query_async::<i64>(&mut conn).await.map(|_| ()),
            };
            result.map_err(|e| BrokerError::Unavailable(format!("redis publish failed: {e}")))
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
            "all_channel": s.all_channel,
            "shard_channels": *s.held.lock(),
            "subscribed": s.link.is_up(),
            "connects": connects,
            "disconnects": disconnects,
            "junk": s.inbound.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}

/// Starts the subscriber thread: connect, follow the demand, route, recover, for the life of
/// the process.
pub fn spawn_cluster_subscriber(
    hub: Arc<Hub>,
    shared: Arc<RedisClusterShared>,
) -> std::io::Result<()> {
    super::spawn_runtime_thread("streamhub-redis-cluster", subscriber(hub, shared))
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

/// Connects, then routes pushed messages (one task) and keeps the subscriptions in line with the
/// demand and the cluster's health (another), until the process ends. Routing never waits on a
/// subscription command.
async fn subscriber(hub: Arc<Hub>, shared: Arc<RedisClusterShared>) {
    let Some(pushes) = shared.pushes.lock().take() else {
        return;
    };
    let lost = Arc::new(Lost::default());
    tokio::spawn(route_pushes(
        hub.clone(),
        shared.clone(),
        pushes,
        lost.clone(),
    ));
    maintain(hub, shared, lost).await;
}

/// Connections lost, told by the routing task to the maintaining one.
#[derive(Default)]
struct Lost {
    /// How many `Disconnection` pushes so far.
    count: AtomicU64,
    /// Wakes the maintaining task.
    wake: tokio::sync::Notify,
}

/// Routes every message the cluster connection pushes; notes lost connections.
async fn route_pushes(
    hub: Arc<Hub>,
    shared: Arc<RedisClusterShared>,
    mut pushes: UnboundedReceiver<PushInfo>,
    lost: Arc<Lost>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let [Value::BulkString(channel), Value::BulkString(payload), ..] = &push.data[..]
                {
                    shared.on_message(&hub, channel, payload);
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

/// Connects, then keeps the shard channels equal to what the demand calls for, resubscribes
/// everything after any failure, and checks the primaries while healthy.
async fn maintain(hub: Arc<Hub>, shared: Arc<RedisClusterShared>, lost: Arc<Lost>) {
    let mut demand = hub.index.demand();
    let mut backoff = BACKOFF_START;
    let mut conn = loop {
        match shared.client.get_async_connection().await {
            Ok(c) => break c,
            Err(e) => {
                shared
                    .link
                    .set(false, Some(format!("redis cluster unreachable: {e}")));
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    shared.conn.store(Some(Arc::new(conn.clone())));
    backoff = BACKOFF_START;
    // Whether a full resubscription is due (at start, and after any failure).
    let mut dirty = true;
    let mut next_check = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = lost.wake.notified() => {
                dirty = true;
                next_check = tokio::time::Instant::now() + jittered(backoff);
            }
            changed = demand.changed() => {
                if changed.is_err() {
                    return;
                }
                // Marked seen even while dirty: the full resubscription reads the latest demand.
                let (want, version) = shared.wanted(&mut demand);
                if !dirty {
                    let held = shared.held.lock().clone();
                    match incremental_sync(&mut conn, &held, &want).await {
                        Ok(()) => shared.set_held(want, version),
                        Err(e) => {
                            shared.link.set(false, Some(format!("redis cluster: {e}")));
                            dirty = true;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_check) => {
                if !dirty {
                    if let Err(e) = ping_all(&mut conn).await {
                        shared.link.set(false, Some(format!("redis cluster: {e}")));
                        dirty = true;
                    }
                }
                if dirty {
                    let lost_before = lost.count.load(Relaxed);
                    let (want, version) = shared.wanted(&mut demand);
                    match full_sync(&mut conn, &want).await {
                        // A connection lost during the resubscription: do it again.
                        Ok(()) if lost.count.load(Relaxed) != lost_before => {}
                        Ok(()) => {
                            // Drop channels held before the outage and no longer wanted.
                            let stale: BTreeSet<String> =
                                shared.held.lock().difference(&want).cloned().collect();
                            for c in &stale {
                                let _ = bounded(conn.sunsubscribe(c)).await;
                            }
                            tracing::info!(channels = ?want, "subscribed to the redis cluster");
                            shared.set_held(want, version);
                            dirty = false;
                            backoff = BACKOFF_START;
                            shared.link.set(true, None);
                        }
                        Err(e) => shared.link.set(false, Some(format!("redis cluster: {e}"))),
                    }
                }
                next_check = tokio::time::Instant::now()
                    + if dirty { jittered(backoff) } else { CHECK_INTERVAL };
                if dirty {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
