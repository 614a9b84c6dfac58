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
//!
//! Behind Sentinels (`redis_sentinel`), the same broker asks the Sentinels for the primary on
//! every (re)connect; after a failover the subscription to the old primary ends, and the next
//! round finds the new one, where publishing moves too.
//!
//! Owns its Redis connections and link state; only its own tasks change them.

use super::inbound::Inbound;
use super::link::Link;
use super::Unhealthy;
use super::{Broker, BrokerError, BrokerHandler, Intake, PublishFuture, Scope, SetupError};
use crate::backoff::Backoff;
use crate::config::SentinelConfig;
use crate::event::ParsedEvent;
use arc_swap::ArcSwapOption;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use streamhub_wire::{Channels, CONTROL_CHANNEL};

/// Most events handed to the shards with one wake-up.
const BATCH: usize = 64;

/// Where the Redis to use is.
enum Source {
    /// One Redis at a fixed address.
    Fixed(redis::Client),
    /// The primary the Sentinels name for a master name, asked again on every (re)connect.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Source {
    /// A client for the Redis to use now.
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Fixed(c) => Ok(c.clone()),
            Source::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

/// State shared by the broker (publishing side) and its subscriber thread.
struct Shared {
    /// Where Redis is.
    source: Source,
    /// The address of the Redis in use (the primary, behind Sentinels), for `status`.
    serving: parking_lot::Mutex<Option<String>>,
    /// The channel names.
    channels: Channels,
    /// Validates, hands on and counts what arrives.
    inbound: Inbound,
    /// The publishing connection, once one is up (it reconnects by itself afterwards).
    publisher: ArcSwapOption<redis::aio::ConnectionManager>,
    /// Whether the subscription is live.
    link: Link,
}

/// The Redis broker.
pub(super) struct RedisBroker {
    /// State shared with the subscriber.
    shared: Arc<Shared>,
}

impl RedisBroker {
    /// A broker for the Redis at `url` (for `rediss://`, trusting the PEM certificates in
    /// `ca_file` if given, else the system's roots), on `channels`, taking messages up to
    /// events as `intake` says.
    pub(super) fn new(
        url: &str,
        ca_file: Option<&str>,
        channels: Channels,
        intake: Intake,
    ) -> Result<Self, SetupError> {
        let bad_url = |source| SetupError::RedisUrl {
            url: crate::config::redacted(url),
            source,
        };
        let client = match ca_file {
            None => redis::Client::open(url).map_err(bad_url)?,
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|source| SetupError::CaFile {
                    path: path.to_string(),
                    source,
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(url, certs).map_err(bad_url)?
            }
        };
        Ok(Self::over(
            Source::Fixed(client),
            Link::address(url),
            channels,
            intake,
        ))
    }

    /// A broker for the primary the Sentinels of `config` name for its master name,
    /// authenticating there with its user and password, if any.
    pub(super) fn behind_sentinels(
        config: &SentinelConfig,
        channels: Channels,
        intake: Intake,
    ) -> Result<Self, SetupError> {
        let (master, nodes) = (&config.master_name, &config.nodes);
        let mut primary = redis::RedisConnectionInfo::default();
        if let Some(user) = &config.username {
            primary = primary.set_username(user);
        }
        if let Some(password) = &config.password {
            primary = primary.set_password(password);
        }
        let sentinels = redis::sentinel::SentinelClient::build(
            nodes.to_vec(),
            master,
            Some(
                redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(primary),
            ),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|source| SetupError::SentinelNodes {
            nodes: nodes.iter().map(|n| crate::config::redacted(n)).collect(),
            source,
        })?;
        let addresses: Vec<String> = nodes.iter().map(|n| Link::address(n)).collect();
        Ok(Self::over(
            Source::Sentinel(tokio::sync::Mutex::new(sentinels)),
            format!("{master} via sentinels {}", addresses.join(",")),
            channels,
            intake,
        ))
    }

    /// A broker on `source`, named `target` in the log.
    fn over(source: Source, target: String, channels: Channels, intake: Intake) -> Self {
        Self {
            shared: Arc::new(Shared {
                source,
                serving: parking_lot::Mutex::new(None),
                channels,
                inbound: Inbound::new(intake),
                publisher: ArcSwapOption::empty(),
                link: Link::new(target),
            }),
        }
    }
}

impl Broker for RedisBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> std::io::Result<()> {
        let task = subscriber(handler, self.shared.clone());
        super::spawn_runtime_thread("streamhub-redis", task)
    }

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
            let (channels, message) = (&self.shared.channels, event.to_published());
            // A connection that broke since the last publish fails once, then reconnects.
            let result = match streamhub_wire::publish(&mut conn, channels, &message).await {
                Ok(n) => Ok(n),
                Err(_) => streamhub_wire::publish(&mut conn, channels, &message).await,
            };
            result
                .map(|_| ())
                .map_err(|e| BrokerError::Unavailable(format!("redis publish failed: {e}")))
        })
    }

    fn mode(&self) -> &'static str {
        match self.shared.source {
            Source::Fixed(_) => "redis",
            Source::Sentinel(_) => "redis-sentinel",
        }
    }

    fn health(&self) -> Result<(), Unhealthy> {
        self.shared.link.health()?;
        match self.shared.publisher.load().is_some() {
            true => Ok(()),
            false => Err(Unhealthy("no redis publishing connection".into())),
        }
    }

    fn connected(&self) -> Option<bool> {
        Some(self.shared.link.is_up())
    }

    fn details(&self) -> serde_json::Value {
        let s = &self.shared;
        let (connects, disconnects) = s.link.counts();
        serde_json::json!({
            "channel": s.channels.all(),
            "serving": *s.serving.lock(),
            "subscribed": s.link.is_up(),
            "connects": connects,
            "disconnects": disconnects,
            "junk": s.inbound.junk_counts().into_iter().collect::<HashMap<_, _>>(),
        })
    }
}

/// Keeps a publishing connection and a subscription up, for the life of the process.
async fn subscriber(handler: Arc<dyn BrokerHandler>, shared: Arc<Shared>) {
    let mut backoff = Backoff::reconnect();
    loop {
        let client = match shared.source.client().await {
            Ok(client) => client,
            Err(e) => {
                let why = format!("redis sentinels name no primary: {e}");
                shared.link.set(false, Some(why));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        follow(&shared, &client);
        if shared.publisher.load().is_none() {
            // One attempt per round: this loop's own backoff retries, and logs each failure
            // (the manager's own retries would hide the first one for seconds).
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(0);
            match redis::aio::ConnectionManager::new_with_config(client.clone(), config).await {
                Ok(m) => shared.publisher.store(Some(Arc::new(m))),
                Err(e) => shared
                    .link
                    .set(false, Some(format!("redis unreachable: {e}"))),
            }
        }
        match subscribe_and_route(&*handler, &shared, &client).await {
            Ok(()) => {
                backoff.reset();
                shared
                    .link
                    .set(false, Some("redis subscription lost; reconnecting".into()));
            }
            Err(e) => shared
                .link
                .set(false, Some(format!("redis unreachable: {e}"))),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Notes the Redis `client` reaches; when that is another one than before (the Sentinels
/// named a new primary), the publishing connection is dropped, to be made again there.
fn follow(shared: &Shared, client: &redis::Client) {
    let addr = client.get_connection_info().addr().to_string();
    let mut serving = shared.serving.lock();
    if serving.as_deref() != Some(addr.as_str()) {
        if serving.is_some() {
            tracing::warn!(primary = %addr, "redis primary changed; publishing moves there");
        }
        shared.publisher.store(None);
        *serving = Some(addr);
    }
}

/// Subscribes and hands on what arrives until the subscription ends.
async fn subscribe_and_route(
    handler: &dyn BrokerHandler,
    shared: &Shared,
    client: &redis::Client,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub
        .subscribe(&[shared.channels.all(), CONTROL_CHANNEL])
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
    // Whatever was published while no subscription was live is lost to this instance.
    handler.handle_gap();
    shared.link.set(true, None);
    tracing::info!(channel = %shared.channels.all(), "subscribed to redis");
    let mut messages = pubsub.on_message();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(msg) = messages.next().await {
        // This message and every other one already received (up to BATCH) go to the shards
        // with one wake-up; a control message first hands on the events before it.
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            let payload = msg.get_payload_bytes();
            if msg.get_channel_name() == CONTROL_CHANNEL {
                handler.handle_events(&mut batch);
                shared.inbound.control(handler, payload);
            } else {
                shared
                    .inbound
                    .collect(handler, payload, Scope::Every, &mut batch);
            }
            if batch.len() < BATCH {
                next = messages.next().now_or_never().flatten();
            }
        }
        handler.handle_events(&mut batch);
    }
    Ok(())
}
