//! The in-process bus of embedded mode: a publish is routed right away.

use super::{Broker, PublishFuture};
use crate::event::ParsedEvent;
use crate::router::Router;
use std::sync::Arc;

/// The in-process bus.
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
