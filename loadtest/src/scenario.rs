//! Scenario files (`loadtest/scenarios/*.yaml`): who connects, what they subscribe to, how events
//! are published, and which goals the run is judged against.

use serde::Deserialize;
use std::path::Path;

/// One scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name; reports go to `loadtest/reports/<name>/`.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// The server under test.
    #[serde(default)]
    pub target: Target,
    /// Number of WebSocket clients.
    pub clients: usize,
    /// Clients bind to 127.0.0.1 .. 127.0.0.N, so runs can pass 64k connections.
    #[serde(default = "default_sources")]
    pub source_addresses: u8,
    /// Clients connecting at once; 0 = all at once (a storm).
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: usize,
    /// What each client subscribes to.
    #[serde(default)]
    pub subscriptions: SubscriptionPlan,
    /// Fraction of clients that stop reading after subscribing.
    #[serde(default)]
    pub stalled_fraction: f64,
    /// How events are published.
    #[serde(default)]
    pub publish: Publish,
    /// Goals the report checks (not assertions).
    #[serde(default)]
    pub goals: Goals,
    /// For `protocol: generic`: how to talk to an arbitrary WebSocket server.
    #[serde(default)]
    pub generic: Option<Generic>,
    /// How streamhub clients receive events: `websocket` (the default) or `sse` (each client
    /// reads `GET /api/v1/streaming/events` with its subscription in the query).
    #[serde(default)]
    pub transport: Transport,
}

/// The server under test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    /// Start a streamhub binary (true) or attach to a running server (false).
    pub start: bool,
    /// Extra hub configuration (YAML under `realtime_streaming`) when starting one.
    pub hub_config: Option<serde_norway::Value>,
    /// WebSocket URL when attaching (`ws://127.0.0.1:8080/ws`).
    pub ws_url: Option<String>,
    /// Base HTTP URL when attaching (`http://127.0.0.1:8080`).
    pub http_url: Option<String>,
    /// PID to sample RSS and CPU from when attaching.
    pub pid: Option<u32>,
    /// What the started hub carries events through; the harness starts the Redis it needs.
    pub backend: Backend,
    /// Whether the started hub checks JWTs, and of which kind.
    pub auth: AuthMode,
    /// Serve TLS from the started hub (a certificate made for the run); clients use `wss://`
    /// and HTTP publishers `https://`.
    pub tls: bool,
}

/// How streamhub clients receive events.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A WebSocket at `/ws`.
    #[default]
    Websocket,
    /// Server-Sent Events at `/api/v1/streaming/events`.
    Sse,
}

/// Authentication on the hub the harness starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Auth off.
    #[default]
    None,
    /// JWTs signed with an HS256 secret.
    Hs256,
    /// JWTs signed with an ES256 (P-256) key; the hub gets the public key as a PEM file.
    Es256,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            start: true,
            hub_config: None,
            ws_url: None,
            http_url: None,
            pid: None,
            backend: Backend::Embedded,
            auth: AuthMode::None,
            tls: false,
        }
    }
}

/// What a started hub carries events through, and so which Redis or NATS the harness starts for
/// it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Nothing: embedded mode.
    #[default]
    Embedded,
    /// A `redis-server` on a free port: Redis mode.
    Redis,
    /// A three-master Redis Cluster on loopback: Redis Cluster mode (sharded Pub/Sub).
    RedisCluster,
    /// A `nats-server` with JetStream on a free port: NATS mode (publish with `via: http`: the
    /// hub puts each event into the stream and waits for its acknowledgement).
    Nats,
}

/// What clients subscribe to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionPlan {
    /// The shape of each client's subscription.
    pub kind: PlanKind,
    /// Distinct clusters (dashboards).
    pub clusters: usize,
    /// Distinct namespaces (dashboards).
    pub namespaces: usize,
}

impl Default for SubscriptionPlan {
    fn default() -> Self {
        Self {
            kind: PlanKind::Everything,
            clusters: 50,
            namespaces: 10,
        }
    }
}

/// The shape of each client's subscription.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Every event type, no filters.
    Everything,
    /// Like a dashboard's: 1–3 types, 1–5 of `clusters`, 0–2 of `namespaces`.
    Dashboards,
    /// One event type (`GPU_UPDATE`) on one cluster: an idle, authenticated subscriber.
    Single,
}

/// Where publishers send events.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// `POST` to the hub's broadcast endpoint (or the generic target's `publish_url`).
    #[default]
    Http,
    /// `PUBLISH` on `channel` of one Redis.
    Redis,
    /// `SPUBLISH` on `channel` (which must end in `:all`) and on the event's
    /// `{prefix}:cluster:{id}` of a Redis Cluster.
    RedisCluster,
    /// Nobody publishes (idle and storm scenarios).
    None,
}

/// How events are published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Publish {
    /// Where events go.
    pub via: Via,
    /// Redis to publish to with `via: redis` (default: the one the harness started).
    pub redis_url: Option<String>,
    /// Channel to publish to with `via: redis` or `via: redis-cluster`.
    pub channel: String,
    /// Events per second, one step per entry; each step lasts `step_seconds`.
    pub rates: Vec<f64>,
    /// Seconds per step.
    pub step_seconds: f64,
    /// Concurrent publishing connections.
    pub publishers: usize,
    /// Most events one HTTP request may carry (a JSON array to streamhub's broadcast endpoint):
    /// each request takes every event already due, up to this many. 1 (the default) sends one
    /// event per request, evenly spaced.
    pub max_batch: u64,
    /// Bytes of padding in each event's payload.
    pub payload_bytes: usize,
    /// Stop stepping up once a step's p99 passes this many milliseconds.
    pub stop_when_p99_ms: Option<f64>,
    /// A step counts as sustained while its p99 stays at or below this (default: the stop limit).
    pub sustained_p99_ms: Option<f64>,
    /// Stop stepping up once the hub reports drops.
    pub stop_on_drops: bool,
    /// Seconds to hold connections open before and after publishing (for `idle`).
    pub hold_seconds: f64,
}

impl Default for Publish {
    fn default() -> Self {
        Self {
            via: Via::Http,
            redis_url: None,
            channel: streamhub_wire::Channels::default().all().to_string(),
            rates: Vec::new(),
            step_seconds: 10.0,
            publishers: 1,
            max_batch: 1,
            payload_bytes: 0,
            stop_when_p99_ms: None,
            sustained_p99_ms: None,
            stop_on_drops: false,
            hold_seconds: 0.0,
        }
    }
}

/// Goals a report checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goals {
    /// Highest sustained deliveries per second at least this.
    pub min_deliveries_per_second: Option<f64>,
    /// p99 latency below this (ms).
    pub p99_ms: Option<f64>,
    /// p99.9 latency below this (ms).
    pub p999_ms: Option<f64>,
    /// No event lost or duplicated for reading clients.
    #[serde(default)]
    pub zero_loss: bool,
    /// Hub RSS per connection below this (KiB).
    pub max_rss_kib_per_connection: Option<f64>,
    /// Every client subscribed within this many seconds of the start.
    pub all_subscribed_within_seconds: Option<f64>,
}

/// Talking to an arbitrary WebSocket server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generic {
    /// WebSocket URL.
    pub url: String,
    /// What to do after connecting, in order: a text is sent; `{expect: "prefix"}` waits for a
    /// message starting with `prefix` (skipping others), as socket.io wants its `0{...}` open
    /// packet before `40`, and its `40` before any event is sent.
    #[serde(default)]
    pub on_connect: Vec<OnConnect>,
    /// HTTP URL to POST events to.
    pub publish_url: String,
    /// Body template: `{seq}`, `{sent_ns}`, `{publisher}` and `{pad}` are replaced.
    pub body_template: String,
    /// Key whose number is the send time in nanoseconds (`"sent_ns":123`).
    #[serde(default = "sent_ns")]
    pub time_key: String,
    /// Key whose number is the sequence number.
    #[serde(default = "seq")]
    pub seq_key: String,
    /// A Pusher-protocol server (sockudo): each body is sent as the escaped `data` of a signed
    /// Pusher HTTP API event, and arrives escaped the same way.
    #[serde(default)]
    pub pusher: Option<crate::pusher::Pusher>,
}

/// One `generic.on_connect` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OnConnect {
    /// Send this text.
    Send(String),
    /// Wait for a message starting with this.
    Expect {
        /// The prefix.
        expect: String,
    },
}

impl OnConnect {
    /// The client's step.
    pub fn to_step(&self) -> crate::client::Step {
        match self {
            Self::Send(t) => crate::client::Step::Send(t.clone()),
            Self::Expect { expect } => crate::client::Step::Expect(Some(expect.clone())),
        }
    }
}

fn default_sources() -> u8 {
    4
}
fn default_connect_concurrency() -> usize {
    256
}
fn sent_ns() -> String {
    "sent_ns".into()
}
fn seq() -> String {
    "seq".into()
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks scenario YAML.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Scenario = serde_norway::from_str(text)?;
        anyhow::ensure!(s.clients > 0, "clients must be at least 1");
        anyhow::ensure!(
            s.subscriptions.clusters > 0 && s.subscriptions.namespaces > 0,
            "subscriptions.clusters and subscriptions.namespaces must be at least 1"
        );
        anyhow::ensure!(
            s.source_addresses >= 1,
            "source_addresses must be at least 1"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&s.stalled_fraction),
            "stalled_fraction must be in [0, 1)"
        );
        anyhow::ensure!(
            s.publish.via != Via::RedisCluster
                || (s.target.backend == Backend::RedisCluster
                    && streamhub_wire::Channels::from_all(&s.publish.channel).is_some()),
            "publish.via: redis-cluster needs target.backend: redis-cluster and a channel ending in :all"
        );
        anyhow::ensure!(
            s.publish.via != Via::Redis
                || s.publish.redis_url.is_some()
                || s.target.backend == Backend::Redis,
            "publish.via: redis needs publish.redis_url or target.backend: redis"
        );
        anyhow::ensure!(
            s.publish.publishers >= 1,
            "publish.publishers must be at least 1"
        );
        anyhow::ensure!(
            s.publish.max_batch >= 1 && (s.publish.max_batch == 1 || s.generic.is_none()),
            "publish.max_batch must be at least 1, and 1 for a generic target"
        );
        anyhow::ensure!(
            s.publish.rates.iter().all(|r| *r > 0.0 && r.is_finite()),
            "publish.rates must be positive"
        );
        anyhow::ensure!(
            s.publish.step_seconds > 0.0,
            "publish.step_seconds must be > 0"
        );
        anyhow::ensure!(
            s.target.start || s.target.ws_url.is_some() || s.generic.is_some(),
            "target.ws_url is needed when target.start is false"
        );
        Ok(s)
    }

    /// The number of clients that stop reading.
    pub fn stalled_clients(&self) -> usize {
        (self.clients as f64 * self.stalled_fraction).round() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_shipped_scenario() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for dir in [root.join("scenarios"), root.join("peers/scenarios")] {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 9, "{n} scenarios");
    }

    #[test]
    fn opening_steps_send_texts_and_wait_for_prefixes() {
        let s = Scenario::parse(
            "name: t\nclients: 1\ngeneric:\n  url: ws://127.0.0.1:1/\n  publish_url: http://127.0.0.1:1/\n  body_template: x\n  on_connect: ['a', {expect: '0{'}, '40']\n",
        )
        .unwrap();
        let steps: Vec<_> = s
            .generic
            .unwrap()
            .on_connect
            .iter()
            .map(OnConnect::to_step)
            .collect();
        use crate::client::Step;
        assert_eq!(
            steps,
            [
                Step::Send("a".into()),
                Step::Expect(Some("0{".into())),
                Step::Send("40".into())
            ]
        );
        assert!(Scenario::parse("name: t\nclients: 1\ngeneric:\n  url: ws://127.0.0.1:1/\n  publish_url: http://127.0.0.1:1/\n  body_template: x\n  on_connect: [{wait: 'x'}]\n").is_err());
    }

    #[test]
    fn defaults_and_plans() {
        let s = Scenario::parse(
            "name: t\nclients: 10\nsubscriptions: {kind: dashboards, clusters: 5}\nstalled_fraction: 0.2\npublish: {rates: [100, 200]}\n",
        )
        .unwrap();
        assert_eq!(s.subscriptions.kind, PlanKind::Dashboards);
        assert_eq!(
            (s.subscriptions.clusters, s.subscriptions.namespaces),
            (5, 10)
        );
        assert_eq!(s.stalled_clients(), 2);
        assert_eq!(s.publish.publishers, 1);
        assert!(s.target.start);
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "name: t\nclients: 0\n",
            "name: t\nclients: 1\nstalled_fraction: 1.5\n",
            "name: t\nclients: 1\npublish: {via: carrier_pigeon}\n",
            "name: t\nclients: 1\npublish: {via: redis}\n",
            "name: t\nclients: 1\npublish: {rates: [-1]}\n",
            "name: t\nclients: 1\nunknown_key: 1\n",
            "name: t\nclients: 1\nsubscriptions: {kind: everything, clusters: 0}\n",
            "name: t\nclients: 1\ntarget: {start: false}\n",
        ] {
            assert!(Scenario::parse(bad).is_err(), "{bad}");
        }
    }
}
