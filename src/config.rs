//! Configuration: the YAML layout of docs/design.md, "Configuration" (root key
//! `realtime_streaming`), read strictly.
//!
//! Precedence, lowest first: built-in defaults, the YAML file, `STREAMHUB_*` environment
//! variables, command-line flags. An unknown key or a value of the wrong type stops start-up with
//! a message that names the key's full path (`realtime_streaming.websocket.max_connections`).
//!
//! Owns the configuration's layout, defaults and checks; read once at start-up (settings.rs turns
//! it into each part's settings), never changed after.

use crate::entity::EntityKeys;
use serde::Deserialize;
use std::path::Path;

/// The whole file: everything lives under `realtime_streaming`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The service's settings.
    realtime_streaming: Config,
}

/// The service's settings, one field per key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub host: String,
    /// TCP port for WebSocket, REST and metrics; 0 picks a free port.
    pub port: u16,
    /// Redis URL; absent or empty means embedded mode (in-process bus).
    #[serde(deserialize_with = "unset_if_empty")]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster; non-empty means Redis Cluster mode with sharded Pub/Sub
    /// (`{prefix}:cluster:{id}` held only while a client wants that cluster). Exclusive with
    /// `redis_url`.
    #[serde(deserialize_with = "nodes_given")]
    pub redis_cluster_nodes: Vec<String>,
    /// Prefix of the Redis Pub/Sub channels (`{prefix}:all`, `{prefix}:cluster:{id}`).
    pub redis_channel_prefix: String,
    /// Redis Cluster mode: most per-cluster shard channels held at once. When this instance's
    /// subscriptions name more clusters, it holds only `{prefix}:all` and routes it to every
    /// subscription (reads more, never refuses a subscription).
    pub redis_cluster_max_shard_channels: usize,
    /// PEM certificates to trust for a `rediss://` `redis_url` (TLS to Redis), instead of the
    /// system's roots.
    #[serde(deserialize_with = "unset_if_empty")]
    pub redis_tls_ca_file: Option<String>,
    /// Redis behind Sentinels: the hub asks them for the primary of `master_name`, publishes
    /// and subscribes there, and follows a failover. Exclusive with `redis_url` and
    /// `redis_cluster_nodes`.
    pub redis_sentinel: Option<SentinelConfig>,
    /// NATS JetStream as the broker: events go into the region's stream and every instance
    /// reads them from there (durable history). Exclusive with the Redis modes.
    pub nats: NatsConfig,
    /// Number of per-core runtimes connections are spread over; 0 = number of cores.
    pub shards: usize,
    /// WebSocket settings.
    pub websocket: WebSocketConfig,
    /// Per-client queue settings.
    pub backpressure: BackpressureConfig,
    /// Recent events kept for resuming clients, and the latest per key for snapshots.
    pub history: HistoryConfig,
    /// Authentication settings.
    pub auth: AuthConfig,
    /// Horizontal scaling settings.
    pub scaling: ScalingConfig,
    /// Graceful shutdown settings.
    pub shutdown: ShutdownConfig,
    /// REST API settings.
    pub rest: RestConfig,
    /// Opt-in CPU profiling endpoint.
    pub profiling: ProfilingConfig,
    /// Per-client message rate limit.
    pub rate_limit: RateLimitConfig,
    /// TLS (`wss://`, `https://`) on the service port.
    pub tls: TlsConfig,
    /// How the log is written.
    pub log: LogConfig,
}

/// `realtime_streaming.redis_sentinel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the primary under.
    pub master_name: String,
    /// The Sentinels, as `redis://host:port` URLs (with the Sentinels' own password, if they
    /// have one: `redis://:password@host:port`).
    #[serde(deserialize_with = "nodes_given")]
    pub nodes: Vec<String>,
    /// The user the hub authenticates as on the primary (ACL), if any.
    #[serde(deserialize_with = "unset_if_empty")]
    pub username: Option<String>,
    /// The primary's password, if it has one (`requirepass`, or the ACL user's).
    #[serde(deserialize_with = "unset_if_empty")]
    pub password: Option<String>,
}

/// `realtime_streaming.nats`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// This region's NATS servers (`nats://host:port`); any given means NATS mode.
    #[serde(deserialize_with = "nodes_given")]
    pub servers: Vec<String>,
    /// This region's name (letters, digits, `-` and `_`): its stream is `{stream}_{REGION}` on
    /// subject `{subject_prefix}.events.{region}`.
    pub region: String,
    /// The streams' name prefix.
    pub stream: String,
    /// The subjects' prefix (events, and `{prefix}.control` for control messages).
    pub subject_prefix: String,
    /// Copies of the stream inside the region (3 on a three-node cluster).
    pub replicas: usize,
    /// Most events the stream keeps.
    pub max_messages: u64,
    /// Oldest event the stream keeps, seconds.
    pub max_age_seconds: u64,
    /// A publish repeating an event id within this window is stored once, seconds.
    pub duplicate_window_seconds: u64,
    /// Longest wait for the stream to acknowledge a publish before `POST /broadcast` answers 503,
    /// milliseconds.
    pub publish_timeout_ms: u64,
    /// The other regions, whose streams this region mirrors (each region's NATS is its own
    /// JetStream domain, named like the region, joined to the others by leafnodes).
    pub mirror_regions: Vec<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            region: "local".into(),
            stream: "STREAMHUB".into(),
            subject_prefix: "streamhub".into(),
            replicas: 1,
            max_messages: 1_000_000,
            max_age_seconds: 24 * 3600,
            duplicate_window_seconds: 120,
            publish_timeout_ms: 5000,
            mirror_regions: Vec::new(),
        }
    }
}

impl NatsConfig {
    /// Checks the NATS settings (only when NATS mode is chosen).
    fn validate(&self) -> Result<(), ConfigError> {
        for server in &self.servers {
            if server.parse::<async_nats::ServerAddr>().is_err() {
                let server = redacted(server);
                return bad("nats.servers", &format!("{server:?} is not a NATS URL"));
            }
        }
        let name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name(&self.region) {
            return bad("nats.region", "must be 1 to 64 letters, digits, - or _");
        }
        for other in &self.mirror_regions {
            if !name(other) || other.eq_ignore_ascii_case(&self.region) {
                return bad(
                    "nats.mirror_regions",
                    &format!("{other:?}: another region's name (letters, digits, - or _)"),
                );
            }
        }
        if !name(&self.stream) {
            return bad("nats.stream", "must be 1 to 64 letters, digits, - or _");
        }
        let subject_ok = !self.subject_prefix.is_empty()
            && self
                .subject_prefix
                .split('.')
                .all(|t| name(t) && t != "events");
        if !subject_ok {
            return bad(
                "nats.subject_prefix",
                "must be dot-separated tokens of letters, digits, - or _",
            );
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("nats.replicas", "must be 1 to 5");
        }
        if self.max_messages == 0 || self.max_age_seconds == 0 || self.publish_timeout_ms == 0 {
            return bad(
                "nats",
                "max_messages, max_age_seconds and publish_timeout_ms must be above 0",
            );
        }
        Ok(())
    }

    /// This region's stream.
    pub fn stream_name(&self) -> String {
        self.stream_of(&self.region)
    }

    /// The stream of `region` (its own, or its mirror in another region).
    pub fn stream_of(&self, region: &str) -> String {
        format!("{}_{}", self.stream, region.to_ascii_uppercase())
    }

    /// The subject events of this region are published on.
    pub fn events_subject(&self) -> String {
        format!("{}.events.{}", self.subject_prefix, self.region)
    }

    /// The subject of control messages.
    pub fn control_subject(&self) -> String {
        format!("{}.control", self.subject_prefix)
    }
}

/// `realtime_streaming.log`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (the default; no colour codes unless stderr is a terminal) or `json` (one object
    /// per line: timestamp, level, target, message, fields). Flag --log-format, env
    /// STREAMHUB_LOG_FORMAT.
    pub format: LogFormat,
}

/// A log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for a log shipper.
    Json,
}

/// `realtime_streaming.tls`: both set serve TLS (rustls) on the port; neither, plain TCP.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(deserialize_with = "unset_if_empty")]
    pub cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "unset_if_empty")]
    pub key_file: Option<String>,
}

/// `realtime_streaming.rate_limit`: a token bucket per client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Messages a client may send per second, sustained.
    pub messages_per_second: f64,
    /// Messages a client may send at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            messages_per_second: 50.0,
            burst: 100,
        }
    }
}

/// `realtime_streaming.websocket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Seconds between WebSocket ping frames sent to each client.
    pub heartbeat_interval_seconds: f64,
    /// Seconds a client has to answer a ping with a pong before it is dropped.
    pub heartbeat_timeout_seconds: f64,
    /// Largest client message (after reassembly of fragments); larger closes with 1009.
    pub max_message_size_bytes: usize,
    /// Most open WebSockets; a new upgrade past it is answered 503.
    pub max_connections: usize,
    /// With authentication on, most connections that have not authenticated yet (default: a
    /// quarter of `max_connections`, at least 1). When full, the oldest of them is evicted
    /// (`disconnect` with reason `authentication_timeout`, close 1008) for a new one.
    pub max_unauthenticated_connections: Option<usize>,
    /// With authentication on, most unauthenticated connections from one source address
    /// (behind a proxy, the proxy's); an upgrade past it is answered 503.
    pub max_unauthenticated_per_address: usize,
    /// Most subscriptions one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Most (event type, cluster, namespace) keys in the subscription index over all clients
    /// and shards; a subscribe that would add keys past it is refused (`INVALID_SUBSCRIPTION`).
    pub max_index_keys: usize,
    /// Most index keys one authenticated subject may hold over all its connections (each
    /// subscription counted by its breadth; default: a tenth of `max_index_keys`), so one
    /// principal cannot fill the index for everyone.
    pub max_index_keys_per_subject: Option<usize>,
    /// Browser origins allowed to connect; empty allows any (and requests without `Origin`).
    pub allowed_origins: Vec<String>,
    /// Kernel send buffer per connection (`SO_SNDBUF`), bounding what a client that stops reading
    /// can hold in kernel memory beyond its ring; 0 leaves the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`'s maximum, often 4 MiB per socket).
    pub socket_send_buffer_bytes: usize,
    /// Write coalescing window, milliseconds (0 = off): while a client is busy (its last two
    /// writes less than twice the window apart), its next write waits until its shard's window
    /// has passed since the last one, so that the events arriving meanwhile leave in one system
    /// call. The shard's window follows its load (`load.rs`): none while it is lightly loaded,
    /// all of this when it is short of time. Other clients get their events at once; replies
    /// never wait.
    pub write_coalesce_ms: f64,
    /// Whether the coalescing window follows each shard's load (default true): none below 25%
    /// utilization, all of `write_coalesce_ms` from 65%. With false every busy client waits the
    /// whole window, however idle the hub.
    pub write_coalesce_adaptive: bool,
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it: messages of 128 bytes
    /// or more go compressed, each compressed once for every client that negotiated it. On by
    /// default: about 5 µs per event whatever the number of clients, 25–75% fewer bytes
    /// (`cargo bench --bench deflate`; README, "Compression").
    pub compression: bool,
    /// A path (say `/echo`) where a WebSocket gets every message back as it sent it, served by
    /// the same reader and writer as `/ws`: for protocol conformance tests (the Autobahn
    /// TestSuite's cases). Off (`None`) by default; it takes no authentication, so never
    /// expose it.
    #[serde(deserialize_with = "unset_if_empty")]
    pub echo_path: Option<String>,
}

/// `realtime_streaming.backpressure`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackpressureConfig {
    /// Capacity of each client's event ring.
    pub max_queue_size: usize,
    /// When the ring is full: drop the oldest queued event (true) or the new one (false).
    pub drop_oldest: bool,
    /// A client with no write progress for this long is reported as slow.
    pub slow_client_threshold_ms: u64,
    /// Events waiting for fan-out in one shard's inbox, at most. Past it a broadcast answers
    /// 503 with `Retry-After` and an arrival from Redis is dropped and counted
    /// (`ws_events_shed_total`), instead of the queue growing without limit.
    pub max_pending_events: usize,
}

/// `realtime_streaming.history`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Recent events kept for `resume_from` (0: none; every resume answers
    /// `recovered: false`).
    pub max_events: usize,
    /// Oldest recent event kept, seconds.
    pub max_age_seconds: f64,
    /// Most bytes of event messages kept, for the recent events and again for the latest per
    /// key (whichever bound comes first evicts).
    pub max_bytes: usize,
    /// Entities (event type, cluster, entity) whose latest event is kept as the state that
    /// `snapshot` and `GET /state` send (0: none); past it the oldest entity goes first.
    pub snapshot_keys: usize,
    /// Which fields name an event's entity, per event type (`crate::entity`): a type named here
    /// replaces its default list; `[]` keys the type by namespace.
    pub entity_keys: EntityKeys,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_age_seconds: 300.0,
            max_bytes: 64 << 20,
            snapshot_keys: 10_000,
            entity_keys: EntityKeys::default(),
        }
    }
}

/// `realtime_streaming.auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether clients must send a valid `auth` message first.
    pub enabled: bool,
    /// Token validation endpoint: `GET` with `Authorization: Bearer <token>`; a 2xx answer
    /// carries the claims as JSON (`sub`, `exp`, `roles`, `clusters`, `namespaces`).
    #[serde(deserialize_with = "unset_if_empty")]
    pub token_validation_url: Option<String>,
    /// Seconds a validation endpoint's answer is reused for the same token (never past `exp`).
    pub validation_cache_seconds: f64,
    /// Seconds to wait for the validation endpoint; past it the token is refused.
    pub validation_timeout_seconds: f64,
    /// Most questions to the validation endpoint at once; a token that cannot be asked about
    /// within `validation_timeout_seconds` is refused as unavailable.
    pub validation_max_concurrent: usize,
    /// HS256 secret: JWTs signed with it are accepted.
    #[serde(deserialize_with = "unset_if_empty")]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA for RS256, EC P-256 for ES256) that JWTs are verified with.
    #[serde(deserialize_with = "unset_if_empty")]
    pub jwt_public_key_file: Option<String>,
    /// JWKS file (RSA and EC P-256 keys, chosen by `kid`), re-read when it changes.
    #[serde(deserialize_with = "unset_if_empty")]
    pub jwks_file: Option<String>,
    /// When set, a JWT's `iss` must equal it.
    #[serde(deserialize_with = "unset_if_empty")]
    pub jwt_issuer: Option<String>,
    /// When set, a JWT's `aud` must contain it.
    #[serde(deserialize_with = "unset_if_empty")]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub jwt_leeway_seconds: u64,
    /// Seconds a new connection has to authenticate.
    pub timeout_seconds: f64,
    /// Seconds a client has to re-authenticate after `AUTH_EXPIRED`.
    pub reauth_grace_seconds: f64,
    /// Fixed tokens for development and tests; empty accepts any non-empty token.
    pub static_tokens: Vec<StaticToken>,
}

/// One entry of `auth.static_tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The bearer token itself.
    pub token: String,
    /// Who the token belongs to.
    #[serde(default)]
    pub subject: String,
    /// Roles, such as `admin` (for `/clients`) and `internal` (for `/broadcast`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Seconds after start-up at which the token expires; absent never expires.
    #[serde(default)]
    pub expires_in_seconds: Option<f64>,
    /// The only clusters the token may receive; absent: any.
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// The only namespaces the token may receive; absent: any.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
}

/// `realtime_streaming.scaling`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// Name of the sticky-session cookie set on every WebSocket upgrade response.
    pub sticky_session_cookie: String,
    /// This instance's name, the cookie's value (a load balancer's server cookie, like `s1`).
    /// Default: a random id chosen at start-up.
    pub instance_id: String,
}

/// `realtime_streaming.shutdown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds to flush queues and close clients before exiting anyway.
    pub timeout_seconds: f64,
    /// Centre of the `reconnect_after_ms` advice; each client gets a value spread ±50% around it.
    pub reconnect_after_ms: u64,
}

/// `realtime_streaming.rest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestConfig {
    /// Largest accepted request body (the broadcast endpoint), in bytes; also the largest event
    /// taken from Redis.
    pub max_body_bytes: usize,
    /// Most events in one batch (a JSON array or NDJSON body) of the broadcast endpoint.
    pub max_batch_events: usize,
}

/// `realtime_streaming.profiling`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilingConfig {
    /// Serve `GET /debug/pprof/flamegraph?seconds=N` (samples the process while it runs).
    pub enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            redis_channel_prefix: streamhub_wire::DEFAULT_PREFIX.into(),
            redis_cluster_max_shard_channels: 1000,
            redis_tls_ca_file: None,
            redis_sentinel: None,
            nats: NatsConfig::default(),
            shards: 0,
            websocket: WebSocketConfig::default(),
            backpressure: BackpressureConfig::default(),
            history: HistoryConfig::default(),
            auth: AuthConfig::default(),
            scaling: ScalingConfig::default(),
            shutdown: ShutdownConfig::default(),
            rest: RestConfig::default(),
            profiling: ProfilingConfig::default(),
            rate_limit: RateLimitConfig::default(),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_seconds: 30.0,
            heartbeat_timeout_seconds: 10.0,
            max_message_size_bytes: 65536,
            max_connections: 1000,
            max_unauthenticated_connections: None,
            max_unauthenticated_per_address: 64,
            max_subscriptions_per_client: 64,
            max_index_keys: 1_000_000,
            max_index_keys_per_subject: None,
            allowed_origins: Vec::new(),
            socket_send_buffer_bytes: 256 * 1024,
            write_coalesce_ms: 10.0,
            write_coalesce_adaptive: true,
            compression: true,
            echo_path: None,
        }
    }
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            max_queue_size: 100,
            drop_oldest: true,
            slow_client_threshold_ms: 1000,
            max_pending_events: 10_000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            token_validation_url: None,
            validation_cache_seconds: 30.0,
            validation_timeout_seconds: 2.0,
            validation_max_concurrent: 16,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_seconds: 30,
            timeout_seconds: 10.0,
            reauth_grace_seconds: 30.0,
            static_tokens: Vec::new(),
        }
    }
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            sticky_session_cookie: "AIOPS_WS_SESSION".into(),
            instance_id: String::new(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 10.0,
            reconnect_after_ms: 5000,
        }
    }
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch_events: 1000,
        }
    }
}

/// Overrides taken from flags and environment variables (flags win; clap merges both): each
/// one's flag, variable and doc are here, and [`Config::apply`] is the one place they take
/// effect.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on.
    #[arg(long, env = "STREAMHUB_HOST")]
    pub host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "STREAMHUB_PORT")]
    pub port: Option<u16>,
    /// Number of shard runtimes (default: number of cores).
    #[arg(long, env = "STREAMHUB_SHARDS")]
    pub shards: Option<usize>,
    /// Redis URL: run in Redis mode (events from `{prefix}:all`, publishes to Redis).
    #[arg(long, env = "STREAMHUB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated: run in Redis Cluster mode (sharded Pub/Sub).
    #[arg(long, env = "STREAMHUB_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// The name the Redis Sentinels monitor the primary under: run in Sentinel mode.
    #[arg(
        long,
        env = "STREAMHUB_REDIS_SENTINEL_MASTER",
        requires = "redis_sentinel_nodes"
    )]
    pub redis_sentinel_master: Option<String>,
    /// The Redis Sentinels, comma-separated `redis://host:port` URLs.
    #[arg(long, env = "STREAMHUB_REDIS_SENTINEL_NODES", value_delimiter = ',')]
    pub redis_sentinel_nodes: Option<Vec<String>>,
    /// This instance's name (scaling.instance_id): the sticky cookie's value, in status.
    #[arg(long, env = "STREAMHUB_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// NATS servers, comma-separated `nats://host:port`: run in NATS mode (JetStream).
    #[arg(long, env = "STREAMHUB_NATS_SERVERS", value_delimiter = ',')]
    pub nats_servers: Option<Vec<String>>,
    /// This instance's NATS region (nats.region).
    #[arg(long, env = "STREAMHUB_NATS_REGION")]
    pub nats_region: Option<String>,
    /// Log format: text or json (log.format).
    #[arg(long, env = "STREAMHUB_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong type.
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Full path of the offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Values that parse but make no sense together.
    #[error("config: {0}")]
    Semantic(String),
}

impl Config {
    /// Reads a YAML file (root key `realtime_streaming`).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&text, &shown)
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let file: ConfigFile =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
                path: origin.to_string(),
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let config = file.realtime_streaming;
        config.validate()?;
        Ok(config)
    }

    /// Applies flag and environment overrides, then checks the result again.
    pub fn apply(mut self, o: &Overrides) -> Result<Self, ConfigError> {
        if let Some(h) = &o.host {
            self.host = h.clone();
        }
        if let Some(p) = o.port {
            self.port = p;
        }
        if let Some(s) = o.shards {
            self.shards = s;
        }
        if let Some(r) = &o.redis_url {
            self.redis_url = unset(Some(r.clone()));
        }
        if let Some(n) = &o.redis_cluster_nodes {
            self.redis_cluster_nodes = n.iter().filter_map(|u| unset(Some(u.clone()))).collect();
        }
        if let Some(master) = unset(o.redis_sentinel_master.clone()) {
            let nodes = o.redis_sentinel_nodes.clone().unwrap_or_default();
            let keep = self.redis_sentinel.take().unwrap_or_default();
            self.redis_sentinel = Some(SentinelConfig {
                master_name: master,
                nodes: nodes.into_iter().filter_map(|n| unset(Some(n))).collect(),
                ..keep
            });
        }
        if let Some(servers) = &o.nats_servers {
            self.nats.servers = servers
                .iter()
                .filter_map(|u| unset(Some(u.clone())))
                .collect();
        }
        if let Some(region) = unset(o.nats_region.clone()) {
            self.nats.region = region;
        }
        if let Some(id) = unset(o.instance_id.clone()) {
            self.scaling.instance_id = id;
        }
        if let Some(f) = o.log_format {
            self.log.format = f;
        }
        if self.scaling.instance_id.is_empty() {
            self.scaling.instance_id =
                format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        }
        self.validate()?;
        Ok(self)
    }

    /// Rejects values that would make the service misbehave.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.host.is_empty() {
            return bad("host", "must not be empty");
        }
        if self.rest.max_body_bytes < 64 {
            return bad("rest.max_body_bytes", "must be at least 64");
        }
        if self.rest.max_batch_events == 0 {
            return bad("rest.max_batch_events", "must be at least 1");
        }
        if !non_negative(self.shutdown.timeout_seconds) {
            return bad(
                "shutdown.timeout_seconds",
                "must be a number >= 0 (seconds, at most a year)",
            );
        }
        if self.backpressure.max_pending_events == 0 {
            return bad("backpressure.max_pending_events", "must be at least 1");
        }
        if self.backpressure.max_queue_size == 0 {
            return bad("backpressure.max_queue_size", "must be at least 1");
        }
        if !(self.rate_limit.messages_per_second > 0.0
            && self.rate_limit.messages_per_second <= 1e6)
        {
            return bad("rate_limit.messages_per_second", "must be a number > 0");
        }
        if self.rate_limit.burst == 0 {
            return bad("rate_limit.burst", "must be at least 1");
        }
        if !positive(self.history.max_age_seconds) {
            return bad(
                "history.max_age_seconds",
                "must be a number > 0 (seconds, at most a year)",
            );
        }
        self.tls.validate()?;
        self.websocket.validate()?;
        self.auth.validate()?;
        self.validate_redis()?;
        self.scaling.validate()
    }

    /// Checks the Redis settings: valid URLs, and one of Redis, Redis Cluster or Sentinel.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let chosen = [
            self.redis_url.is_some(),
            !self.redis_cluster_nodes.is_empty(),
            self.redis_sentinel.is_some(),
            !self.nats.servers.is_empty(),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return bad(
                "redis_cluster_nodes",
                "set one of redis_url (one Redis), redis_cluster_nodes (a Redis Cluster), redis_sentinel (Redis behind Sentinels) and nats.servers (NATS JetStream), not both",
            );
        }
        if !self.nats.servers.is_empty() {
            self.nats.validate()?;
        }
        if let Some(url) = self.redis_url.as_deref() {
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
                return bad("redis_url", &format!("not a Redis URL ({e})"));
            }
        }
        let urls = |key: &str, list: &[String]| -> Result<(), ConfigError> {
            for url in list {
                if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                    let url = redacted(url);
                    return bad(key, &format!("{url:?} is not a Redis URL ({e})"));
                }
            }
            Ok(())
        };
        urls("redis_cluster_nodes", &self.redis_cluster_nodes)?;
        if let Some(ca) = &self.redis_tls_ca_file {
            if let Err(e) = std::fs::metadata(ca) {
                return bad("redis_tls_ca_file", &format!("cannot read {ca:?}: {e}"));
            }
        }
        if let Some(s) = &self.redis_sentinel {
            if s.master_name.is_empty() {
                return bad("redis_sentinel.master_name", "must not be empty");
            }
            if s.nodes.is_empty() {
                return bad("redis_sentinel.nodes", "name at least one Sentinel");
            }
            urls("redis_sentinel.nodes", &s.nodes)?;
        }
        Ok(())
    }

    /// Which broker carries events between publishers and routers, as configured.
    pub fn broker_kind(&self) -> BrokerKind<'_> {
        if let Some(s) = &self.redis_sentinel {
            return BrokerKind::Sentinel(s);
        }
        if !self.nats.servers.is_empty() {
            return BrokerKind::Nats(&self.nats);
        }
        match self.redis_url.as_deref() {
            Some(url) => BrokerKind::Redis { url },
            None if !self.redis_cluster_nodes.is_empty() => BrokerKind::RedisCluster {
                nodes: &self.redis_cluster_nodes,
            },
            None => BrokerKind::Embedded,
        }
    }

    /// The number of shards to run: the configured value, or the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Which broker a configuration asks for: derived from `redis_url` and `redis_cluster_nodes`
/// (which exclude each other), so the YAML keys stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind<'a> {
    /// Neither is set: the in-process bus of embedded mode.
    Embedded,
    /// `redis_url`: classic Pub/Sub on one Redis.
    Redis {
        /// The Redis URL.
        url: &'a str,
    },
    /// `redis_cluster_nodes`: sharded Pub/Sub on a Redis Cluster.
    RedisCluster {
        /// The seed nodes.
        nodes: &'a [String],
    },
    /// `redis_sentinel`: classic Pub/Sub on the primary the Sentinels name.
    Sentinel(&'a SentinelConfig),
    /// `nats.servers`: the region's JetStream stream.
    Nats(&'a NatsConfig),
}

impl BrokerKind<'_> {
    /// The mode's name, as `status` and the start-up line show it.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded",
            BrokerKind::Redis { .. } => "redis",
            BrokerKind::RedisCluster { .. } => "redis-cluster",
            BrokerKind::Sentinel(_) => "redis-sentinel",
            BrokerKind::Nats(_) => "nats",
        }
    }
}

impl WebSocketConfig {
    /// `max_index_keys_per_subject`, or its default: a tenth of `max_index_keys`.
    pub fn index_keys_per_subject(&self) -> usize {
        self.max_index_keys_per_subject
            .unwrap_or(self.max_index_keys / 10)
            .max(1)
    }

    /// `max_unauthenticated_connections`, or its default: a quarter of `max_connections`.
    pub fn unauthenticated_budget(&self) -> usize {
        self.max_unauthenticated_connections
            .unwrap_or(self.max_connections / 4)
            .max(1)
    }

    /// Checks `websocket.*`.
    fn validate(&self) -> Result<(), ConfigError> {
        if !positive(self.heartbeat_interval_seconds) {
            return bad(
                "websocket.heartbeat_interval_seconds",
                "must be a number > 0 (seconds, at most a year)",
            );
        }
        if !positive(self.heartbeat_timeout_seconds) {
            return bad(
                "websocket.heartbeat_timeout_seconds",
                "must be a number > 0 (seconds, at most a year)",
            );
        }
        if self.max_message_size_bytes < 64 {
            return bad("websocket.max_message_size_bytes", "must be at least 64");
        }
        if self.max_connections == 0 {
            return bad("websocket.max_connections", "must be at least 1");
        }
        if self.max_unauthenticated_connections == Some(0) {
            return bad(
                "websocket.max_unauthenticated_connections",
                "must be at least 1",
            );
        }
        if self.max_unauthenticated_per_address == 0 {
            return bad(
                "websocket.max_unauthenticated_per_address",
                "must be at least 1",
            );
        }
        if self.max_subscriptions_per_client == 0 {
            return bad(
                "websocket.max_subscriptions_per_client",
                "must be at least 1",
            );
        }
        if self.max_index_keys == 0 {
            return bad("websocket.max_index_keys", "must be at least 1");
        }
        if self.max_index_keys_per_subject == Some(0) {
            return bad("websocket.max_index_keys_per_subject", "must be at least 1");
        }
        if !(0.0..=1000.0).contains(&self.write_coalesce_ms) {
            return bad(
                "websocket.write_coalesce_ms",
                "must be a number from 0 (off) to 1000",
            );
        }
        Ok(())
    }
}

impl TlsConfig {
    /// Checks `tls.*`: both files or neither, and both readable.
    fn validate(&self) -> Result<(), ConfigError> {
        match (self.cert_file.clone(), self.key_file.clone()) {
            (None, None) => Ok(()),
            (Some(cert), Some(key)) => {
                for (k, path) in [("tls.cert_file", cert), ("tls.key_file", key)] {
                    if let Err(e) = std::fs::metadata(&path) {
                        return bad(k, &format!("cannot read {path:?}: {e}"));
                    }
                }
                Ok(())
            }
            _ => bad(
                "tls.cert_file",
                "set both tls.cert_file and tls.key_file, or neither",
            ),
        }
    }

    /// The certificate and key files, when TLS is on.
    pub fn files(&self) -> Option<(&str, &str)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

impl AuthConfig {
    /// Checks `auth.*`.
    fn validate(&self) -> Result<(), ConfigError> {
        if !positive(self.timeout_seconds) {
            return bad(
                "auth.timeout_seconds",
                "must be a number > 0 (seconds, at most a year)",
            );
        }
        if !non_negative(self.reauth_grace_seconds) {
            return bad(
                "auth.reauth_grace_seconds",
                "must be a number >= 0 (seconds, at most a year)",
            );
        }
        for t in &self.static_tokens {
            if t.expires_in_seconds.is_some_and(|s| !non_negative(s)) {
                return bad(
                    "auth.static_tokens.expires_in_seconds",
                    "must be a number >= 0",
                );
            }
            if t.token.is_empty() {
                return bad("auth.static_tokens.token", "must not be empty");
            }
        }
        if !non_negative(self.validation_cache_seconds) {
            return bad("auth.validation_cache_seconds", "must be a number >= 0");
        }
        if !positive(self.validation_timeout_seconds) {
            return bad("auth.validation_timeout_seconds", "must be a number > 0");
        }
        if self.validation_max_concurrent == 0 {
            return bad("auth.validation_max_concurrent", "must be at least 1");
        }
        self.validate_sources()
    }

    /// Whether some way to verify a token is configured (a JWT key, a validation endpoint or
    /// static tokens): with authentication on and none, nothing could ever authenticate.
    pub fn has_token_source(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwks_file.is_some()
            || self.token_validation_url.is_some()
            || !self.static_tokens.is_empty()
    }

    /// Checks the token sources: at most one JWT key, readable key files, an `http://`
    /// validation URL, and (fail closed) at least one source while auth is enabled.
    fn validate_sources(&self) -> Result<(), ConfigError> {
        let keys = [
            ("auth.jwt_secret", self.jwt_secret.is_some()),
            (
                "auth.jwt_public_key_file",
                self.jwt_public_key_file.is_some(),
            ),
            ("auth.jwks_file", self.jwks_file.is_some()),
        ];
        if keys.iter().filter(|(_, on)| *on).count() > 1 {
            return bad(
                "auth.jwt_secret",
                "set at most one of jwt_secret, jwt_public_key_file and jwks_file",
            );
        }
        for (key, path) in [
            ("auth.jwt_public_key_file", &self.jwt_public_key_file),
            ("auth.jwks_file", &self.jwks_file),
        ] {
            if let Some(p) = path.as_deref() {
                if let Err(e) = std::fs::metadata(p) {
                    return bad(key, &format!("cannot read {p:?}: {e}"));
                }
            }
        }
        if let Some(url) = self.token_validation_url.as_deref() {
            let ok = url
                .parse::<hyper::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
            if !ok {
                return bad("auth.token_validation_url", "must be an http:// URL");
            }
        }
        if self.enabled && !self.has_token_source() {
            return bad(
                "auth",
                "enabled with no way to verify a token: set jwt_secret, jwt_public_key_file, jwks_file, token_validation_url or static_tokens",
            );
        }
        Ok(())
    }
}

impl ScalingConfig {
    /// Checks `scaling.*`: both go into a `Set-Cookie` header.
    fn validate(&self) -> Result<(), ConfigError> {
        let cookie_ok = |v: &str| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if self.sticky_session_cookie.is_empty() || !cookie_ok(&self.sticky_session_cookie) {
            return bad(
                "scaling.sticky_session_cookie",
                "must be a non-empty token of letters, digits, '-', '_' or '.'",
            );
        }
        if !cookie_ok(&self.instance_id) {
            return bad(
                "scaling.instance_id",
                "may hold only letters, digits, '-', '_' or '.'",
            );
        }
        Ok(())
    }
}

/// The error for `realtime_streaming.{key}`.
/// "Unset", decided once for every optional text key: absent, `null` and the empty string
/// (an environment variable set to nothing) all mean the key is not set.
pub(crate) fn unset(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// `url` with any user and password replaced by `***`: what an error message may show.
pub(crate) fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// An optional text key, read through [`unset`].
fn unset_if_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d).map(unset)
}

/// `redis_cluster_nodes`, without empty entries.
fn nodes_given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)
        .map(|nodes| nodes.into_iter().filter_map(|n| unset(Some(n))).collect())
}

fn bad(key: &str, why: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Semantic(format!(
        "realtime_streaming.{key}: {why}"
    )))
}

/// Longest duration accepted for any seconds setting: one year.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A usable positive number of seconds.
fn positive(x: f64) -> bool {
    x > 0.0 && x <= MAX_SECONDS
}

/// A usable non-negative number of seconds.
fn non_negative(x: f64) -> bool {
    (0.0..=MAX_SECONDS).contains(&x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml(
            "realtime_streaming:\n  websocket:\n    max_conections: 5\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("websocket"), "{err}");
        assert!(err.contains("max_conections"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_yaml(
            "realtime_streaming:\n  websocket:\n    max_connections: lots\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("websocket.max_connections"), "{err}");
    }

    #[test]
    fn shipped_files_parse() {
        for f in ["config/default.yaml", "config/production.yaml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::from_file(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn production_yaml_states_every_default_but_the_marked_ones() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.yaml");
        let mut shipped = Config::from_file(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("# production:").count(), 3, "the marked lines");
        // The three lines marked "production:" in the file.
        assert_eq!(shipped.host, "0.0.0.0");
        assert!(shipped.auth.enabled && shipped.auth.token_validation_url.is_some());
        let default = Config::default();
        shipped.host = default.host.clone();
        shipped.auth.enabled = default.auth.enabled;
        shipped.auth.token_validation_url = default.auth.token_validation_url.clone();
        assert_eq!(format!("{shipped:#?}"), format!("{default:#?}"));
    }

    #[test]
    fn nats_mode_is_checked_and_excludes_redis() {
        let nats = |rest: &str| {
            format!(
                "realtime_streaming:\n  nats:\n    servers: [\"nats://127.0.0.1:4222\"]\n{rest}"
            )
        };
        let c = Config::from_yaml(&nats("    region: eu-west_1\n"), "t").unwrap();
        assert_eq!(c.broker_kind().name(), "nats");
        assert_eq!(c.nats.stream_name(), "STREAMHUB_EU-WEST_1");
        assert_eq!(c.nats.events_subject(), "streamhub.events.eu-west_1");
        for (rest, says) in [
            ("  redis_url: \"redis://127.0.0.1:1/\"\n", "not both"),
            ("    region: \"eu.west\"\n", "nats.region"),
            ("    replicas: 7\n", "nats.replicas"),
        ] {
            let err = Config::from_yaml(&nats(rest), "t").unwrap_err().to_string();
            assert!(err.contains(says), "{rest}: {err}");
        }
        let bad = "realtime_streaming:\n  nats:\n    servers: [\"nats://a b:x\"]\n";
        let err = Config::from_yaml(bad, "t").unwrap_err().to_string();
        assert!(err.contains("nats.servers"), "{err}");
    }

    #[test]
    fn redis_url_and_cluster_nodes_exclude_each_other() {
        let both = "realtime_streaming:\n  redis_url: \"redis://127.0.0.1:1/\"\n  redis_cluster_nodes: [\"redis://127.0.0.1:2/\"]\n";
        let err = Config::from_yaml(both, "t").unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        let bad_node = "realtime_streaming:\n  redis_cluster_nodes: [\"http://x\"]\n";
        let err = Config::from_yaml(bad_node, "t").unwrap_err().to_string();
        assert!(err.contains("redis_cluster_nodes"), "{err}");
        let ok = "realtime_streaming:\n  redis_cluster_nodes: [\"redis://127.0.0.1:7000/\"]\n";
        let c = Config::from_yaml(ok, "t").unwrap();
        assert_eq!(c.broker_kind().name(), "redis-cluster");
        let one = "realtime_streaming:\n  redis_url: \"redis://127.0.0.1:1/\"\n";
        assert_eq!(
            Config::from_yaml(one, "t").unwrap().broker_kind().name(),
            "redis"
        );
        assert_eq!(Config::default().broker_kind(), BrokerKind::Embedded);
    }

    #[test]
    fn bad_redis_url_is_named() {
        let err = Config::from_yaml("realtime_streaming:\n  redis_url: \"http://nope\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis_url"), "{err}");
    }

    #[test]
    fn overrides_win() {
        let c = Config::from_yaml("realtime_streaming:\n  port: 9000\n", "t").unwrap();
        let c = c
            .apply(&Overrides {
                port: Some(9100),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.port, 9100);
    }
}
