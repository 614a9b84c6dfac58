//! The configuration, turned once into what each room uses.
//!
//! [`Settings::new`] reads a [`Config`] at start-up and hands each part only its own settings:
//! the HTTP front ([`HttpSettings`]), the REST API ([`RestSettings`]), one connection's tasks
//! ([`ConnectionSettings`]) and a client's session ([`SessionSettings`]). Nothing here changes
//! after start-up; the hub keeps them and no part reads the configuration itself.

use crate::config::{Config, RateLimitConfig};
use std::time::Duration;

/// Every room's settings.
pub(crate) struct Settings {
    /// The service port's upgrade path.
    pub(crate) http: HttpSettings,
    /// The REST API.
    pub(crate) rest: RestSettings,
    /// One connection's reader, writer and watchdog.
    pub(crate) connection: ConnectionSettings,
    /// One client's session.
    pub(crate) session: SessionSettings,
}

/// What the upgrade path uses.
pub(crate) struct HttpSettings {
    /// `SO_SNDBUF` of accepted sockets (0: the kernel's).
    pub(crate) send_buffer_bytes: usize,
    /// The echo route, if any (`websocket.echo_path`).
    pub(crate) echo_path: Option<String>,
    /// Whether permessage-deflate may be negotiated.
    pub(crate) compression: bool,
    /// The `Set-Cookie` value that names this instance for sticky sessions.
    pub(crate) sticky_cookie: String,
    /// Browser origins allowed to open a WebSocket (empty: any).
    pub(crate) allowed_origins: Vec<String>,
}

/// What the REST API uses.
pub(crate) struct RestSettings {
    /// Whether requests need a bearer token.
    pub(crate) auth: bool,
    /// Whether the flamegraph endpoint is served.
    pub(crate) profiling: bool,
    /// Largest broadcast body.
    pub(crate) max_body_bytes: usize,
    /// Most events in one broadcast batch.
    pub(crate) max_batch_events: usize,
    /// How a published event's entity is read.
    pub(crate) entity_keys: crate::entity::EntityKeys,
    /// A client with queued frames and no write progress for this long is listed as slow.
    pub(crate) slow_client_threshold_ms: u64,
    /// The limits and names `status` reports.
    pub(crate) facts: Facts,
}

/// The configured figures `GET /status` shows beside the live ones.
pub(crate) struct Facts {
    /// `scaling.instance_id`.
    pub(crate) instance_id: String,
    /// `websocket.max_connections`.
    pub(crate) max_connections: usize,
    /// `history.max_events`.
    pub(crate) max_events: usize,
    /// `websocket.max_index_keys`.
    pub(crate) max_index_keys: usize,
    /// `websocket.write_coalesce_adaptive`.
    pub(crate) coalesce_adaptive: bool,
}

/// What one connection's tasks use.
pub(crate) struct ConnectionSettings {
    /// Largest message a client may send.
    pub(crate) max_message_bytes: usize,
    /// Time a fragmented message has to be finished in (one heartbeat interval).
    pub(crate) assembly_limit: Duration,
    /// Event frames each client's ring holds.
    pub(crate) queue_size: usize,
    /// The ring's drop policy.
    pub(crate) drop_oldest: bool,
    /// Whether clients must authenticate (the watchdog runs).
    pub(crate) auth: bool,
    /// Reconnect advice centre of a goodbye at shutdown.
    pub(crate) reconnect_after_ms: u64,
}

/// What one client's session uses.
pub(crate) struct SessionSettings {
    /// Whether clients must authenticate.
    pub(crate) auth: bool,
    /// Time allowed from connecting to `auth`.
    pub(crate) auth_timeout: Duration,
    /// Time a client has to send a fresh token once its token expired.
    pub(crate) reauth_grace: Duration,
    /// The message rate limit.
    pub(crate) rate_limit: RateLimitConfig,
    /// Most subscriptions one client may hold.
    pub(crate) max_subscriptions: usize,
    /// Most entities and bytes of a state folded from a shared history (`history.snapshot_keys`
    /// and `history.max_bytes`).
    pub(crate) state_bounds: (usize, usize),
}

impl Settings {
    /// Each room's settings from `config`.
    pub(crate) fn new(config: &Config) -> Self {
        let ws = &config.websocket;
        Self {
            http: HttpSettings {
                send_buffer_bytes: ws.socket_send_buffer_bytes,
                echo_path: ws.echo_path.clone(),
                compression: ws.compression,
                sticky_cookie: format!(
                    "{}={}; Path=/; HttpOnly",
                    config.scaling.sticky_session_cookie, config.scaling.instance_id
                ),
                allowed_origins: ws.allowed_origins.clone(),
            },
            rest: RestSettings {
                auth: config.auth.enabled,
                profiling: config.profiling.enabled,
                max_body_bytes: config.rest.max_body_bytes,
                max_batch_events: config.rest.max_batch_events,
                entity_keys: config.history.entity_keys.clone(),
                slow_client_threshold_ms: config.backpressure.slow_client_threshold_ms,
                facts: Facts {
                    instance_id: config.scaling.instance_id.clone(),
                    max_connections: ws.max_connections,
                    max_events: config.history.max_events,
                    max_index_keys: ws.max_index_keys,
                    coalesce_adaptive: ws.write_coalesce_adaptive,
                },
            },
            connection: ConnectionSettings {
                max_message_bytes: ws.max_message_size_bytes,
                assembly_limit: Duration::from_secs_f64(ws.heartbeat_interval_seconds),
                queue_size: config.backpressure.max_queue_size,
                drop_oldest: config.backpressure.drop_oldest,
                auth: config.auth.enabled,
                reconnect_after_ms: config.shutdown.reconnect_after_ms,
            },
            session: SessionSettings {
                auth: config.auth.enabled,
                auth_timeout: Duration::from_secs_f64(config.auth.timeout_seconds),
                reauth_grace: Duration::from_secs_f64(config.auth.reauth_grace_seconds),
                rate_limit: config.rate_limit.clone(),
                max_subscriptions: ws.max_subscriptions_per_client,
                state_bounds: (config.history.snapshot_keys, config.history.max_bytes),
            },
        }
    }
}
