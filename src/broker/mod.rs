//! Brokers: where published events travel before the router delivers them.
//!
//! [`Broker`] is the seam between "an event was published" and "this instance routes it". The
//! [`MemoryBroker`] (embedded mode, the default) hands the event straight to the router in
//! process. The [`RedisBroker`] publishes to Redis instead, and its subscriber feeds every
//! instance's router from `{prefix}:all`, so every instance delivers every event once.

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
}

mod memory;
mod redis;

pub use memory::MemoryBroker;
pub use redis::{spawn_subscriber, RedisBroker, RedisShared};
