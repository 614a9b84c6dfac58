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

use super::inbound::Inbound;
use super::link::Link;
use super::{Broker, BrokerError, PublishFuture};
use crate::event::ParsedEvent;
use crate::hub::Hub;
use crate::index::Scope;
use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The control channel of section 9.2.
pub const CONTROL_CHANNEL: &str = "aiops:control:streaming";
/// First reconnect delay.
pub(super) const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// State shared by the broker (publishing side) and its subscriber thread.
pub struct RedisShared {
    /// Where Redis is.
    client: redis::Client,
    /// `{prefix}:all`.
    channel: String,
    /// Validates, routes and counts what arrives.
    pub(crate) inbound: Inbound,
    /// The publishing connection, once one is up (it reconnects by itself afterwards).
    publisher: ArcSwapOption<redis::aio::ConnectionManager>,
    /// Whether the subscription is live.
    link: Link,
}

impl RedisShared {
    /// Shared state for `url`, publishing to `{prefix}:all`.
    pub fn new(url: &str, prefix: &str, max_message_bytes: usize) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        Ok(Arc::new(Self {
            client,
            channel: format!("{prefix}:all"),
            inbound: Inbound::new(max_message_bytes),
            publisher: ArcSwapOption::empty(),
            link: Link::new(),
        }))
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
            if !self.shared.link.is_up() {
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
        self.shared.link.health()?;
        match self.shared.publisher.load().is_some() {
            true => Ok(()),
            false => Err("no redis publishing connection".into()),
        }
    }

    fn connected(&self) -> Option<bool> {
        Some(self.shared.link.is_up())
    }

    fn details(&self) -> serde_json::Value {
        let s = &self.shared;
        let (connects, disconnects) = s.link.counts();
        serde_json::json!({
            "channel": s.channel,
            "subscribed": s.link.is_up(),
            "connects": connects,
            "disconnects": disconnects,
            "junk": s.inbound.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}

/// Starts the subscriber thread: subscribe, route, reconnect, for the life of the process.
pub fn spawn_subscriber(hub: Arc<Hub>, shared: Arc<RedisShared>) -> std::io::Result<()> {
    super::spawn_runtime_thread("streamhub-redis", subscriber(hub, shared))
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
                Err(e) => shared
                    .link
                    .set(false, Some(format!("redis unreachable: {e}"))),
            }
        }
        match subscribe_and_route(&hub, &shared).await {
            Ok(()) => {
                backoff = BACKOFF_START;
                shared
                    .link
                    .set(false, Some("redis subscription lost; reconnecting".into()));
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(e) => shared
                .link
                .set(false, Some(format!("redis unreachable: {e}"))),
        }
        let wait = jittered(backoff);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A delay spread over [d/2, d].
pub(super) fn jittered(d: Duration) -> Duration {
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
    shared.link.set(true, None);
    tracing::info!(channel = %shared.channel, "subscribed to redis");
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload = msg.get_payload_bytes();
        if msg.get_channel_name() == CONTROL_CHANNEL {
            shared.inbound.control(hub, payload);
        } else {
            shared.inbound.route(hub, payload, Scope::Every);
        }
    }
    Ok(())
}
