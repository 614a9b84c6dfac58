//! The hub: where one instance's parts are wired together (settings, metrics, index, router,
//! broker, authenticator, subscriptions, the writers' shared part, the unauthenticated budget),
//! the operations that span clients (admit, drain, shutdown, disconnect), and the receiving
//! side of the broker seam ([`BrokerHandler`]): what a broker delivers is routed, control
//! messages are carried out, and the index's demand is what brokers follow.
//!
//! Owns the registry of connected clients and the shutdown flag; the connection layer registers
//! and unregisters, shutdown and control messages say goodbye through it. Every other part it
//! holds owns its own state.

use crate::auth::Authenticator;
use crate::backoff::spread;
use crate::broker::{Broker, BrokerHandler, Demand, Full, Scope};
use crate::client::{ClientHandle, Goodbye};
use crate::config::Config;
use crate::control::Control;
use crate::event::{EventError, ParsedEvent};
use crate::index::SubscriptionIndex;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::settings::Settings;
use crate::subscriptions::Subscriptions;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Shared state of one streamhub instance.
pub struct Hub {
    /// The configuration in force (what start-up and the hub's own operations read; every
    /// other part gets its own [`Settings`]).
    pub config: Config,
    /// Each room's settings, built once from `config`.
    pub(crate) settings: Settings,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// The subscription index.
    pub index: Arc<SubscriptionIndex>,
    /// The router: what the broker delivers goes here.
    pub router: Arc<Router>,
    /// Where published events go.
    pub broker: Arc<dyn Broker>,
    /// Validates tokens.
    pub auth: Box<dyn Authenticator>,
    /// Accepts TLS on the service port, when configured.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Connected clients by id (connect, disconnect and REST listings only; never per event).
    pub(crate) clients: DashMap<Uuid, Arc<ClientHandle>>,
    /// Who subscribes to what.
    pub(crate) subscriptions: Subscriptions,
    /// Number of shard runtimes.
    shards: usize,
    /// Set once shutdown has begun.
    pub(crate) shutting_down: AtomicBool,
    /// When the hub started.
    pub(crate) started: Instant,
    /// What every client's writer uses (durations, coalescing windows), built once.
    pub(crate) writers: Arc<crate::ws::writer::Writers>,
    /// With authentication on, the budget of connections that have not authenticated yet.
    pub(crate) unauthenticated: Option<Arc<crate::preauth::PreAuth>>,
}

/// What the hub talks to at its edges, built from the configuration.
pub struct Edges {
    /// Where published events go.
    pub broker: Box<dyn Broker>,
    /// Validates tokens.
    pub auth: Box<dyn Authenticator>,
    /// Accepts TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A reserved WebSocket slot; gives it back when dropped.
pub(crate) struct ConnectionSlot {
    /// The hub the slot belongs to.
    hub: Arc<Hub>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.hub.metrics.connections_active.fetch_sub(1, Relaxed);
    }
}

impl Hub {
    /// A hub over the given parts.
    pub fn new(
        config: Config,
        shards: usize,
        index: Arc<SubscriptionIndex>,
        metrics: Arc<Metrics>,
        router: Arc<Router>,
        edges: Edges,
    ) -> Self {
        let broker: Arc<dyn Broker> = Arc::from(edges.broker);
        let subscriptions = Subscriptions::new(
            index.clone(),
            broker.clone(),
            metrics.clone(),
            config.websocket.index_keys_per_subject(),
        );
        Self {
            writers: Arc::new(crate::ws::writer::Writers::new(
                &config.websocket,
                config.shutdown.reconnect_after_ms,
                shards,
                metrics.clone(),
            )),
            unauthenticated: config.auth.enabled.then(|| {
                crate::preauth::PreAuth::new(
                    config.websocket.unauthenticated_budget(),
                    config.websocket.max_unauthenticated_per_address,
                )
            }),
            settings: Settings::new(&config),
            config,
            metrics,
            index,
            router,
            broker,
            auth: edges.auth,
            tls: edges.tls,
            clients: DashMap::new(),
            subscriptions,
            shards,
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards
    }

    /// Admits a new WebSocket from `address`: a place in the unauthenticated budget (with
    /// authentication on) and a slot; `Err` says why not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        address: std::net::IpAddr,
    ) -> Result<(ConnectionSlot, Option<crate::preauth::Ticket>), &'static str> {
        let ticket = match &self.unauthenticated {
            None => None,
            Some(budget) => Some(budget.admit(address).map_err(|refused| match refused {
                crate::preauth::Refused::Address => {
                    "too many unauthenticated connections from this address; retry later"
                }
                crate::preauth::Refused::Full => {
                    "too many unauthenticated connections; retry later"
                }
            })?),
        };
        let slot = self
            .reserve_connection()
            .ok_or("max_connections reached; retry later")?;
        Ok((slot, ticket))
    }

    /// Takes a WebSocket slot, or `None` past `max_connections`.
    pub(crate) fn reserve_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.config.websocket.max_connections as i64;
        let prev = self.metrics.connections_active.fetch_add(1, Relaxed);
        if prev >= max {
            self.metrics.connections_active.fetch_sub(1, Relaxed);
            return None;
        }
        Some(ConnectionSlot { hub: self.clone() })
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }

    /// Adds a client to the registry.
    pub(crate) fn register(&self, client: Arc<ClientHandle>) {
        self.metrics.local().connections_total.fetch_add(1, Relaxed);
        self.clients.insert(client.id, client);
    }

    /// Removes a client from the registry, its subscriptions from the index.
    pub(crate) fn unregister(&self, client: &ClientHandle) {
        self.clients.remove(&client.id);
        client.release_unauthenticated();
        self.subscriptions.remove(client);
    }

    /// Begins shutdown: every client is told to go, each with its own jittered advice.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Relaxed);
        let centre = self.config.shutdown.reconnect_after_ms;
        for c in self.clients.iter() {
            c.request_goodbye(Goodbye::shutdown(spread(centre)));
        }
    }

    /// Drains the instance for a rolling restart: no new connections, and every client is told
    /// to reconnect (elsewhere) after a jittered delay around `reconnect_after_ms`.
    pub fn drain(&self, reconnect_after_ms: u64) {
        self.shutting_down.store(true, Relaxed);
        for c in self.clients.iter() {
            c.request_goodbye(Goodbye::drain(spread(reconnect_after_ms)));
        }
    }

    /// Disconnects one client if it is connected here; true if it was.
    pub fn disconnect_client(&self, id: &Uuid) -> bool {
        let Some(c) = self.clients.get(id).map(|c| c.clone()) else {
            return false;
        };
        c.request_goodbye(Goodbye::operator(spread(
            self.config.shutdown.reconnect_after_ms,
        )));
        true
    }

    /// Counts events dropped on arrival because the shards' inboxes were full, and says so in
    /// the log at most once per [`crate::log_limit::INTERVAL`]. The history now has a hole, so
    /// its recent events are forgotten: a resume across it answers `recovered: false`.
    fn shed(&self, n: u64) {
        self.router.history().forget_recent();
        let total = self.metrics.events_shed.fetch_add(n, Relaxed) + n;
        static SHED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new();
        if let Some(held) = SHED.allow() {
            tracing::warn!(
                shed_total = total,
                held_back = held,
                max_pending = self.config.backpressure.max_pending_events,
                "the shards are behind: arriving events are being dropped"
            );
        }
    }

    /// Seconds since start.
    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl BrokerHandler for Hub {
    fn handle_event(&self, event: ParsedEvent, scope: Scope) -> Result<(), Full> {
        self.router
            .route_scoped(event, scope)
            .inspect_err(|_| self.shed(1))
    }

    fn handle_events(&self, events: &mut Vec<(ParsedEvent, Scope)>) {
        if events.is_empty() {
            return;
        }
        let mut shed = 0;
        for (event, scope) in events.drain(..) {
            shed += u64::from(self.router.enqueue(event, scope).is_err());
        }
        self.router.wake_shards();
        if shed > 0 {
            self.shed(shed);
        }
    }

    fn handle_gap(&self) {
        self.router.history().forget_recent();
    }

    fn handle_rejected(&self, _error: &EventError) {
        self.metrics.events_rejected.fetch_add(1, Relaxed);
    }

    fn handle_control(&self, control: Control) {
        match control {
            Control::Drain { reconnect_after_ms } => {
                let advice = reconnect_after_ms.unwrap_or(self.config.shutdown.reconnect_after_ms);
                tracing::warn!(advice, "drain requested: disconnecting every client");
                self.drain(advice);
            }
            Control::DisconnectClient { client_id } => {
                if self.disconnect_client(&client_id) {
                    tracing::info!(%client_id, "client disconnected by control message");
                }
            }
        }
    }

    fn demand(&self) -> tokio::sync::watch::Receiver<Demand> {
        self.index.demand()
    }
}
