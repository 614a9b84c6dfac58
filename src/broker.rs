//! Brokers: where published events travel before the router delivers them.
//!
//! [`Broker`] is the seam between "an event was published" and "this instance routes it". The
//! [`MemoryBroker`] (embedded mode, the default) hands the event straight to the router in
//! process. A Redis broker publishes to Redis instead and feeds the router from its subscription,
//! so every instance delivers every event once.

use crate::event::ParsedEvent;
use crate::router::Router;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
}

/// The in-process bus of embedded mode.
pub struct MemoryBroker {
    /// The router events go to.
    router: Arc<Router>,
}

impl MemoryBroker {
    /// A bus feeding `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self { router }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_> {
        self.router.route(event);
        Box::pin(std::future::ready(Ok(())))
    }

    fn mode(&self) -> &'static str {
        "embedded"
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}
