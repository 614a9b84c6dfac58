//! The Redis broker: many instances, one stream of events.
//!
//! Publishing (`POST /broadcast`) sends the validated event to `{prefix}:all` with `PUBLISH`;
//! nothing is routed locally at that point, so every instance, this one included, delivers the
//! event once, from its subscription. The subscriber runs on a thread of its own: it subscribes
//! to `{prefix}:all` and `aiops:control:streaming`, routes events through the same router as
//! embedded mode, applies control messages, and counts and skips junk. When the connection is
//! lost (the subscription stream ends), the broker reports itself unhealthy (`/readyz` 503,
//! publishes 503), reconnects with capped, jittered backoff and resubscribes; clients stay
//! connected throughout. Events published while it was away are lost (that is Pub/Sub); the
//! outage is counted.

use super::{Broker, BrokerError, PublishFuture};
use crate::control;
use crate::event::{parse_event, ParsedEvent};
use crate::hub::Hub;
use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The control channel of section 9.2.
pub const CONTROL_CHANNEL: &str = "aiops:control:streaming";
/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A kind of junk is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by the broker (publishing side) and its subscriber thread.
pub struct RedisShared {
    /// Where Redis is.
    client: redis::Client,
    /// `{prefix}:all`.
    channel: String,
    /// Largest accepted message on the events channel.
    max_message_bytes: usize,
    /// The publishing connection, once one is up (it reconnects by itself afterwards).
    publisher: ArcSwapOption<redis::aio::ConnectionManager>,
    /// Whether the subscription is live.
    subscribed: AtomicBool,
    /// Why it is not, if it is not.
    last_error: Mutex<Option<String>>,
    /// Subscriptions (re)established.
    pub connects: AtomicU64,
    /// Times the subscription was lost.
    pub disconnects: AtomicU64,
    /// Junk skipped on the events channel, by kind.
    junk: Mutex<HashMap<&'static str, (u64, Option<Instant>)>>,
}

impl RedisShared {
    /// Shared state for `url`, publishing to `{prefix}:all`.
    pub fn new(url: &str, prefix: &str, max_message_bytes: usize) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        Ok(Arc::new(Self {
            client,
            channel: format!("{prefix}:all"),
            max_message_bytes,
            publisher: ArcSwapOption::empty(),
            subscribed: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected yet".into())),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            junk: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether events flow in.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Relaxed)
    }

    /// Junk counts by kind.
    pub fn junk_counts(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .junk
            .lock()
            .iter()
            .map(|(k, (n, _))| (*k, *n))
            .collect();
        v.sort();
        v
    }

    /// Counts one piece of junk, logging it at most once per interval per kind.
    fn junk(&self, kind: &'static str, detail: &str) {
        let mut j = self.junk.lock();
        let entry = j.entry(kind).or_insert((0, None));
        entry.0 += 1;
        if entry.1.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            entry.1 = Some(Instant::now());
            tracing::warn!(
                kind,
                count = entry.0,
                detail,
                "skipping a malformed message from Redis"
            );
        }
    }

    /// Records the subscription's state.
    fn set_subscribed(&self, up: bool, error: Option<String>) {
        let was = self.subscribed.swap(up, Relaxed);
        if up && !was {
            self.connects.fetch_add(1, Relaxed);
        }
        if !up && was {
            self.disconnects.fetch_add(1, Relaxed);
        }
        *self.last_error.lock() = error;
    }
}

/// The Redis broker.
pub struct RedisBroker {
    /// State shared with the subscriber.
    shared: Arc<RedisShared>,
}

impl RedisBroker {
    /// A broker over `shared`; start its subscriber with [`spawn_subscriber`].
    pub fn new(shared: Arc<RedisShared>) -> Self {
        Self { shared }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_> {
        Box::pin(async move {
            // A 202 promises delivery by every instance, this one included.
            if !self.shared.is_subscribed() {
                return Err(BrokerError::Unavailable(
                    "redis subscription is down".into(),
                ));
            }
            let Some(conn) = self.shared.publisher.load_full() else {
                return Err(BrokerError::Unavailable("no redis connection".into()));
            };
            let mut conn = (*conn).clone();
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(&self.shared.channel).arg(event.to_published());
            // A connection that broke since the last publish fails once, then reconnects.
            let result = match cmd.query_async::<i64>(&mut conn).await {
                Ok(n) => Ok(n),
                Err(_) => cmd.query_async::<i64>(&mut conn).await,
            };
            result
                .map(|_| ())
                .map_err(|e| BrokerError::Unavailable(format!("redis publish failed: {e}")))
        })
    }

    fn mode(&self) -> &'static str {
        "redis"
    }

    fn health(&self) -> Result<(), String> {
        if self.shared.is_subscribed() && self.shared.publisher.load().is_some() {
            Ok(())
        } else {
            Err(self
                .shared
                .last_error
                .lock()
                .clone()
                .unwrap_or_else(|| "redis not connected".into()))
        }
    }

    fn connected(&self) -> Option<bool> {
        Some(self.shared.is_subscribed())
    }

    fn details(&self) -> serde_json::Value {
        let s = &self.shared;
        serde_json::json!({
            "channel": s.channel,
            "subscribed": s.is_subscribed(),
            "connects": s.connects.load(Relaxed),
            "disconnects": s.disconnects.load(Relaxed),
            "junk": s.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}

/// Starts the subscriber thread: subscribe, route, reconnect, for the life of the process.
pub fn spawn_subscriber(hub: Arc<Hub>, shared: Arc<RedisShared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("streamhub-redis".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the redis runtime");
                    return;
                }
            };
            rt.block_on(subscriber(hub, shared));
        })?;
    Ok(())
}

/// Keeps a publishing connection and a subscription up, forever.
async fn subscriber(hub: Arc<Hub>, shared: Arc<RedisShared>) {
    let mut backoff = BACKOFF_START;
    loop {
        if shared.publisher.load().is_none() {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            match redis::aio::ConnectionManager::new_with_config(shared.client.clone(), config)
                .await
            {
                Ok(m) => shared.publisher.store(Some(Arc::new(m))),
                Err(e) => shared.set_subscribed(false, Some(format!("redis unreachable: {e}"))),
            }
        }
        match subscribe_and_route(&hub, &shared).await {
            Ok(()) => {
                backoff = BACKOFF_START;
                shared.set_subscribed(false, Some("redis subscription lost; reconnecting".into()));
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(e) => shared.set_subscribed(false, Some(format!("redis unreachable: {e}"))),
        }
        let wait = jittered(backoff);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A delay spread over [d/2, d].
fn jittered(d: Duration) -> Duration {
    d / 2 + Duration::from_millis(fastrand::u64(0..=(d.as_millis() as u64 / 2)))
}

/// Subscribes and routes until the subscription ends.
async fn subscribe_and_route(hub: &Arc<Hub>, shared: &RedisShared) -> redis::RedisResult<()> {
    let mut pubsub = shared.client.get_async_pubsub().await?;
    pubsub
        .subscribe(&[shared.channel.as_str(), CONTROL_CHANNEL])
        .await?;
    let Some(publisher) = shared.publisher.load_full() else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "publisher not connected",
        )));
    };
    // Make the publishing connection reconnect now too, before calling the broker healthy.
    let mut conn = (*publisher).clone();
    let mut pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
    if pong.is_err() {
        pong = redis::cmd("PING").query_async(&mut conn).await;
    }
    pong?;
    shared.set_subscribed(true, None);
    tracing::info!(channel = %shared.channel, "subscribed to redis");
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload = msg.get_payload_bytes();
        if msg.get_channel_name() == CONTROL_CHANNEL {
            if let Err(e) = control::apply(hub, payload) {
                shared.junk("control", &e);
            }
            continue;
        }
        if payload.len() > shared.max_message_bytes {
            shared.junk("too_large", &format!("{} bytes", payload.len()));
            continue;
        }
        match parse_event(payload) {
            Ok(event) => hub.router.route(event),
            Err(e) => {
                hub.metrics.events_rejected.fetch_add(1, Relaxed);
                shared.junk(e.kind(), &e.to_string());
            }
        }
    }
    Ok(())
}
