//! The in-process bus of embedded mode: a publish is handed straight back to this instance's
//! handler, which routes it.
//!
//! Owns the handler it was started with; nothing else.

use super::{Broker, BrokerError, BrokerHandler, PublishFuture, Scope, Unhealthy};
use crate::event::ParsedEvent;
use std::sync::{Arc, OnceLock};

/// The in-process bus.
#[derive(Default)]
pub(crate) struct MemoryBroker {
    /// Where events go, once started.
    handler: OnceLock<Arc<dyn BrokerHandler>>,
}

impl Broker for MemoryBroker {
    fn start(&self, handler: Arc<dyn BrokerHandler>) -> std::io::Result<()> {
        let _ = self.handler.set(handler);
        Ok(())
    }

    fn publish(&self, event: ParsedEvent) -> PublishFuture<'_> {
        let result = match self.handler.get() {
            Some(h) => h
                .handle_event(event, Scope::Every)
                .map_err(|_| BrokerError::Overloaded),
            None => Err(BrokerError::Unavailable("broker not started".into())),
        };
        Box::pin(std::future::ready(result))
    }

    fn mode(&self) -> &'static str {
        "embedded"
    }

    fn health(&self) -> Result<(), Unhealthy> {
        match self.handler.get() {
            Some(_) => Ok(()),
            None => Err(Unhealthy("broker not started".into())),
        }
    }
}
