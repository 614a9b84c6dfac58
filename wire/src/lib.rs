//! streamhub's wire contract with the services that publish events and the tools that drive it:
//! which Redis channels carry events and control messages, and how one event is published to
//! them. The hub, its CLI and the load-test harness all use these definitions, so a channel name
//! is spelled in one place; the harness depends on this crate, never on the hub's internals.
//!
//! # Layout
//!
//! - [`Channels`]: the channel names under one prefix (`{prefix}:all`,
//!   `{prefix}:cluster:{id}`) and [`CONTROL_CHANNEL`].
//! - [`publish`]: classic Pub/Sub, one `PUBLISH` to `{prefix}:all` (Redis mode).
//! - [`spublish`]: sharded Pub/Sub, `SPUBLISH` to `{prefix}:all` and, for an event with a
//!   cluster, to `{prefix}:cluster:{id}` (Redis Cluster mode), after appending the event to the
//!   shared history stream `{prefix}:history` (capped near [`HISTORY_MAXLEN`] entries), which a
//!   hub reads when a client resumes on an instance that did not see every event.

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;

/// The channel prefix when none is configured (`redis_channel_prefix`).
pub const DEFAULT_PREFIX: &str = "aiops:events";

/// The classic channel of control messages (`drain`, `disconnect_client`), design document 9.2.
pub const CONTROL_CHANNEL: &str = "aiops:control:streaming";

/// About how many events the Redis Cluster history stream keeps (`MAXLEN ~`).
pub const HISTORY_MAXLEN: usize = 10_000;

/// The event channels under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// `{prefix}:all`: every event.
    all: String,
    /// `{prefix}:history`: the stream of recent events (Redis Cluster mode).
    history: String,
    /// `{prefix}:cluster:`, to which a cluster id is appended.
    cluster_prefix: String,
}

impl Channels {
    /// The channels under `prefix` (such as [`DEFAULT_PREFIX`]).
    pub fn new(prefix: &str) -> Self {
        Self {
            all: format!("{prefix}:all"),
            history: format!("{prefix}:history"),
            cluster_prefix: format!("{prefix}:cluster:"),
        }
    }

    /// The channels whose full-stream channel is `all` (which must end in `:all`).
    pub fn from_all(all: &str) -> Option<Self> {
        all.strip_suffix(":all").map(Self::new)
    }

    /// `{prefix}:all`, the channel of every event.
    pub fn all(&self) -> &str {
        &self.all
    }

    /// `{prefix}:history`, the stream of recent events (Redis Cluster mode): each entry holds
    /// the event's id (`id`) and message (`e`).
    pub fn history(&self) -> &str {
        &self.history
    }

    /// `{prefix}:cluster:{id}`, the shard channel of one cluster's events.
    pub fn cluster(&self, id: &str) -> String {
        format!("{}{id}", self.cluster_prefix)
    }

    /// The cluster id of a `{prefix}:cluster:{id}` channel name; `None` for any other channel.
    pub fn cluster_of<'a>(&self, channel: &'a [u8]) -> Option<&'a [u8]> {
        channel.strip_prefix(self.cluster_prefix.as_bytes())
    }
}

impl Default for Channels {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

/// Publishes one event message to `{prefix}:all` with `PUBLISH` (Redis mode); returns how many
/// subscribers received it.
pub async fn publish<C: ConnectionLike + Send>(
    conn: &mut C,
    channels: &Channels,
    message: &[u8],
) -> RedisResult<i64> {
    redis::cmd("PUBLISH")
        .arg(channels.all())
        .arg(message)
        .query_async(conn)
        .await
}

/// How many subscribers an event reached on each channel of a sharded publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardedReceivers {
    /// On `{prefix}:all`.
    pub all: i64,
    /// On `{prefix}:cluster:{id}`, when the event has a cluster.
    pub cluster: Option<i64>,
}

/// Publishes one event message (Redis Cluster mode): first appends it, with `event_id` (when
/// known; a hub resumes only from ids it finds), to the
/// history stream `{prefix}:history`, then `SPUBLISH`es it to `{prefix}:all` and, when
/// `cluster_id` is given, to `{prefix}:cluster:{cluster_id}`, both at once. A hub serves each
/// client from exactly one of the two arrivals, so the event is delivered once. The history
/// comes first: a hub that subscribed before reading the history then misses no event (one
/// appended after its read is published after its subscription).
pub async fn spublish(
    conn: &ClusterConnection,
    channels: &Channels,
    event_id: Option<&str>,
    cluster_id: Option<&str>,
    message: &[u8],
) -> RedisResult<ShardedReceivers> {
    let (mut to_all, mut to_one) = (conn.clone(), conn.clone());
    redis::cmd("XADD")
        .arg(channels.history())
        .arg("MAXLEN")
        .arg("~")
        .arg(HISTORY_MAXLEN)
        .arg("*")
        .arg("id")
        .arg(event_id.unwrap_or_default())
        .arg("e")
        .arg(message)
        .query_async::<redis::Value>(&mut to_all)
        .await?;
    let mut all = redis::cmd("SPUBLISH");
    all.arg(channels.all()).arg(message);
    let Some(id) = cluster_id else {
        return Ok(ShardedReceivers {
            all: all.query_async(&mut to_all).await?,
            cluster: None,
        });
    };
    let mut one = redis::cmd("SPUBLISH");
    one.arg(channels.cluster(id)).arg(message);
    let (all, one) = futures_util::future::try_join(
        all.query_async::<i64>(&mut to_all),
        one.query_async::<i64>(&mut to_one),
    )
    .await?;
    Ok(ShardedReceivers {
        all,
        cluster: Some(one),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_inverse() {
        let c = Channels::default();
        assert_eq!(c.all(), "aiops:events:all");
        assert_eq!(c.cluster("prod-1"), "aiops:events:cluster:prod-1");
        assert_eq!(
            c.cluster_of(b"aiops:events:cluster:prod-1"),
            Some(&b"prod-1"[..])
        );
        assert_eq!(c.cluster_of(b"aiops:events:all"), None);
        assert_eq!(Channels::from_all("x:all"), Some(Channels::new("x")));
        assert_eq!(Channels::from_all("x:some"), None);
    }
}
