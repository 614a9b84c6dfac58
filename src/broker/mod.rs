//! Brokers: where published events travel before the router delivers them.
//!
//! [`Broker`] is the seam between "an event was published" and "this instance routes it". The
//! [`MemoryBroker`] (embedded mode, the default) hands the event straight to the router in
//! process. The [`RedisBroker`] publishes to Redis instead, and its subscriber feeds every
//! instance's router from `{prefix}:all`, so every instance delivers every event once. The
//! [`RedisClusterBroker`] does the same over a Redis Cluster with sharded Pub/Sub, holding only
//! the per-cluster channels this instance's clients ask for. What arrives from either Redis
//! broker goes through [`inbound`].

use crate::event::ParsedEvent;
use std::future::Future;
use std::pin::Pin;

/// Why a publish did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot take events now (for example Redis is down).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// The result of a publish.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>;

/// Something to wait for that yields nothing.
pub type WaitFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Carries published events to routers.
pub trait Broker: Send + Sync {
    /// Publishes one validated event.
    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_>;
    /// `memory` or `redis`, for `status`.
    fn mode(&self) -> &'static str;
    /// `Ok` when events flow; otherwise why not (drives `/readyz`).
    fn health(&self) -> Result<(), String>;
    /// Whether the broker's connection is up, for a `redis_connected`-style gauge (`None`: no
    /// connection to speak of).
    fn connected(&self) -> Option<bool> {
        None
    }
    /// Broker-specific figures for `status`.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Waits until the broker listens to what version `demand_version` of the index's
    /// [`crate::index::Demand`] asks for, so that a `subscribed` reply means events published
    /// from then on arrive. Brokers that always receive everything return at once; a broker
    /// that is down does not hold the reply (the subscription takes effect on recovery).
    fn wait_for_demand(&self, demand_version: u64) -> WaitFuture<'_> {
        let _ = demand_version;
        Box::pin(std::future::ready(()))
    }
}

mod inbound;
mod link;
mod memory;
mod redis;
mod redis_cluster;

pub use memory::MemoryBroker;
pub use redis::{spawn_subscriber, RedisBroker, RedisShared};
pub use redis_cluster::{spawn_cluster_subscriber, RedisClusterBroker, RedisClusterShared};

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
