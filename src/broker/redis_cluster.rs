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
//! Past `redis_cluster_max_shard_channels` clusters wanted at once, the instance holds only
//! `{prefix}:all` and routes it to every subscription (the fallback of [`ShardArrivals`]):
//! it reads more, but the subscriptions it holds and the commands a node failure costs to
//! replay stay bounded.
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
//!
//! Owns its cluster connections, the channels it holds and its link state; only its own tasks
//! change them, following the demand the handler publishes.

use super::link::Link;
use super::shard_arrivals::ShardArrivals;
use super::{Broker, BrokerError, BrokerHandler, Demand, HistoryError, PublishFuture};
use super::{Intake, ReplayFuture, SetupError, SharedHistory, Unhealthy, WaitFuture};
use crate::backoff::Backoff;
use crate::entity::EntityKeys;
use crate::event::ParsedEvent;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use streamhub_wire::{Channels, CONTROL_CHANNEL};
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
    /// Handles what the cluster connection pushes, where it arrives.
    arrivals: Arc<ShardArrivals>,
    /// The cluster connection, once one is up (it reconnects node by node by itself).
    conn: ArcSwapOption<ClusterConnection>,
    /// Most shard channels held for clusters; past it, the full stream serves everything.
    max_channels: usize,
    /// The shard channels held now, for `status`.
    held: Mutex<BTreeSet<String>>,
    /// The version of the handler's demand that `held` answers.
    synced: watch::Sender<u64>,
    /// How the history stream's events are read (the same rules as arrivals).
    keys: EntityKeys,
}

/// The shard channels one demand calls for.
struct Want {
    /// The channels.
    channels: BTreeSet<String>,
    /// Whether the full stream serves every subscription (too many clusters wanted).
    full_stream: bool,
    /// The demand's version.
    version: u64,
}

impl Shared {
    /// Records that the channels held answer demand `version`.
    fn set_held(&self, channels: BTreeSet<String>, version: u64) {
        *self.held.lock() = channels;
        self.synced.send_replace(version);
    }

    /// The shard channels the latest demand calls for (marked seen).
    fn wanted(&self, demand: &mut watch::Receiver<Demand>) -> Want {
        let d = demand.borrow_and_update();
        let full_stream = d.clusters.len() > self.max_channels;
        let all = self.arrivals.channels().all().to_string();
        let channels: BTreeSet<String> = if full_stream {
            BTreeSet::from([all])
        } else {
            let mut want: BTreeSet<String> = d
                .clusters
                .iter()
                .map(|c| self.arrivals.channels().cluster(c))
                .collect();
            if d.any_cluster {
                want.insert(all);
            }
            want
        };
        Want {
            channels,
            full_stream,
            version: d.version,
        }
    }
}

/// The Redis Cluster broker.
pub(super) struct RedisClusterBroker {
    /// State shared with the subscriber.
    shared: Arc<Shared>,
}

impl RedisClusterBroker {
    /// A broker for the cluster reachable through `nodes`, on `channels`, taking events as
    /// `intake` says and holding at most `max_channels` cluster channels.
    pub(super) fn new(
        nodes: &[String],
        channels: Channels,
        intake: Intake,
        max_channels: usize,
    ) -> Result<Self, SetupError> {
        let target: Vec<String> = nodes.iter().map(|n| Link::address(n)).collect();
        let keys = intake.keys.clone();
        let arrivals = Arc::new(ShardArrivals::new(channels, intake, target.join(",")));
        let pushed = arrivals.clone();
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(move |push: PushInfo| {
                pushed.on_push(push);
                Ok::<(), std::convert::Infallible>(())
            })
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .build()
            .map_err(|source| SetupError::ClusterNodes {
                nodes: nodes.iter().map(|n| crate::config::redacted(n)).collect(),
                source,
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                arrivals,
                conn: ArcSwapOption::empty(),
                max_channels,
                held: Mutex::new(BTreeSet::new()),
                synced: watch::Sender::new(0),
                keys,
            }),
        })
    }
}

impl Broker for RedisClusterBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> std::io::Result<()> {
        self.shared.arrivals.start(handler.clone());
        let task = subscriber(handler, self.shared.clone());
        super::spawn_runtime_thread("streamhub-redis-cluster", task)
    }

    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.arrivals.link().is_up() {
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
            streamhub_wire::spublish(
                &conn,
                s.arrivals.channels(),
                Some(&event.event_id),
                event.cluster_id.as_deref(),
                &message,
            )
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Unavailable(format!("redis publish failed: {e}")))
        })
    }

    fn mode(&self) -> &'static str {
        "redis-cluster"
    }

    fn health(&self) -> Result<(), Unhealthy> {
        self.shared.arrivals.link().health()
    }

    fn connected(&self) -> Option<bool> {
        Some(self.shared.arrivals.link().is_up())
    }

    fn shared_history(&self) -> Option<&dyn SharedHistory> {
        Some(self)
    }

    fn wait_for_demand(&self, demand_version: u64) -> WaitFuture<'_> {
        Box::pin(async move {
            if !self.shared.arrivals.link().is_up() {
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
        let (connects, disconnects) = s.arrivals.link().counts();
        serde_json::json!({
            "sharded_pubsub": true,
            "all_channel": s.arrivals.channels().all(),
            "shard_channels": *s.held.lock(),
            "max_shard_channels": s.max_channels,
            "full_stream_fallback": s.arrivals.full_stream(),
            "subscribed": s.arrivals.link().is_up(),
            "connects": connects,
            "disconnects": disconnects,
            "junk": s.arrivals.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}

impl SharedHistory for RedisClusterBroker {
    fn replay<'a>(&'a self, event_id: &'a str) -> ReplayFuture<'a> {
        Box::pin(async move {
            let (messages, found) = self.read_history(Some(event_id)).await?;
            Ok(found.then(|| parse_all(&messages, &self.shared.keys)))
        })
    }

    fn recent(&self) -> ReplayFuture<'_> {
        Box::pin(async move {
            let (messages, _) = self.read_history(None).await?;
            Ok(Some(parse_all(&messages, &self.shared.keys)))
        })
    }
}

impl RedisClusterBroker {
    /// Reads the history stream back to `event_id` (or whole): see [`read_history_back`].
    async fn read_history(
        &self,
        event_id: Option<&str>,
    ) -> Result<(Vec<Vec<u8>>, bool), HistoryError> {
        let Some(mut conn) = self.shared.conn.load_full().map(|c| (*c).clone()) else {
            return Err(HistoryError::NotConnected);
        };
        let stream = self.shared.arrivals.channels().history();
        Ok(bounded(read_history_back(&mut conn, stream, event_id)).await?)
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

/// Entries read per `XREVRANGE` while looking for a resume point.
const HISTORY_PAGE: usize = 500;

/// The messages of the history stream newer than the entry of `event_id` (all of them when
/// `None`), oldest first, and whether that entry was found. Reads newest first, a page at a
/// time, so a client a few seconds behind costs one page; never more than twice the stream's
/// cap.
async fn read_history_back(
    conn: &mut ClusterConnection,
    stream: &str,
    event_id: Option<&str>,
) -> redis::RedisResult<(Vec<Vec<u8>>, bool)> {
    let mut newer: Vec<Vec<u8>> = Vec::new();
    let mut end = "+".to_string();
    let found = loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(HISTORY_PAGE)
            .query_async(conn)
            .await?;
        let hit = page.ids.iter().position(|entry| {
            event_id.is_some() && entry.get::<String>("id").as_deref() == event_id
        });
        let upto = hit.unwrap_or(page.ids.len());
        newer.extend(
            page.ids[..upto]
                .iter()
                .filter_map(|e| e.get::<Vec<u8>>("e")),
        );
        if hit.is_some() {
            break true;
        }
        match page.ids.last() {
            Some(last) if page.ids.len() == HISTORY_PAGE => end = format!("({}", last.id),
            _ => break false,
        }
        if newer.len() > 2 * streamhub_wire::HISTORY_MAXLEN {
            break false;
        }
    };
    newer.reverse();
    Ok((newer, found))
}

/// Parses history messages into events (an entry that is not one is skipped).
fn parse_all(messages: &[Vec<u8>], keys: &EntityKeys) -> Vec<ParsedEvent> {
    messages
        .iter()
        .filter_map(|m| crate::event::parse_event(m, keys).ok())
        .collect()
}

/// Pings every primary.
async fn ping_all(conn: &mut ClusterConnection) -> redis::RedisResult<()> {
    bounded(redis::cmd("PING").query_async::<Value>(conn))
        .await
        .map(|_| ())
}

/// Subscribes to everything wanted from scratch and checks every primary; the full stream
/// switches to serving everything (or back) once all wanted channels are held.
async fn full_sync(
    conn: &mut ClusterConnection,
    want: &Want,
    arrivals: &ShardArrivals,
) -> redis::RedisResult<()> {
    bounded(conn.subscribe(CONTROL_CHANNEL)).await?;
    // One SSUBSCRIBE per channel: channels of different slots cannot share a command.
    for c in &want.channels {
        bounded(conn.ssubscribe(c)).await?;
    }
    arrivals.set_full_stream(want.full_stream);
    ping_all(conn).await
}

/// Subscribes to channels newly wanted, switches the full stream's role, then drops the
/// channels no longer wanted: at the switch both sources are held.
async fn incremental_sync(
    conn: &mut ClusterConnection,
    held: &BTreeSet<String>,
    want: &Want,
    arrivals: &ShardArrivals,
) -> redis::RedisResult<()> {
    for c in want.channels.difference(held) {
        bounded(conn.ssubscribe(c)).await?;
    }
    arrivals.set_full_stream(want.full_stream);
    for c in held.difference(&want.channels) {
        bounded(conn.sunsubscribe(c)).await?;
    }
    Ok(())
}

/// Connects, then keeps the subscriptions in line with the demand and the cluster's health
/// until the process ends. Messages are handled as they arrive ([`ShardArrivals`]): routing
/// never waits on a subscription command.
async fn subscriber(handler: Arc<dyn BrokerHandler>, shared: Arc<Shared>) {
    let demand = handler.demand();
    let conn = connect(&shared).await;
    Maintainer {
        shared,
        demand,
        conn,
        backoff: Backoff::reconnect(),
        dirty: true,
        next_check: Instant::now(),
    }
    .run()
    .await;
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
                    .arrivals
                    .link()
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
                _ = self.shared.arrivals.lost().wake.notified() => {
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
        let want = self.shared.wanted(&mut self.demand);
        if self.dirty {
            return;
        }
        let held = self.shared.held.lock().clone();
        match incremental_sync(&mut self.conn, &held, &want, &self.shared.arrivals).await {
            Ok(()) => self.shared.set_held(want.channels, want.version),
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
        let lost_before = self.shared.arrivals.lost().count.load(Relaxed);
        let want = self.shared.wanted(&mut self.demand);
        match full_sync(&mut self.conn, &want, &self.shared.arrivals).await {
            // A connection lost during the resubscription: do it again.
            Ok(()) if self.shared.arrivals.lost().count.load(Relaxed) != lost_before => {}
            Ok(()) => {
                // Drop channels held before the outage and no longer wanted.
                let stale: BTreeSet<String> = self
                    .shared
                    .held
                    .lock()
                    .difference(&want.channels)
                    .cloned()
                    .collect();
                for c in &stale {
                    let _ = bounded(self.conn.sunsubscribe(c)).await;
                }
                tracing::info!(channels = ?want.channels, "subscribed to the redis cluster");
                self.shared.set_held(want.channels, want.version);
                self.dirty = false;
                self.backoff.reset();
                self.shared.arrivals.link().set(true, None);
            }
            Err(e) => self.failed(e),
        }
    }

    /// Records a failure: the link is down and everything is resubscribed next.
    fn failed(&mut self, e: redis::RedisError) {
        self.shared
            .arrivals
            .link()
            .set(false, Some(format!("redis cluster: {e}")));
        self.dirty = true;
    }
}
