//! What a Redis Cluster connection pushes, handled where it arrives: no queue between the
//! cluster connection and the shards' bounded inboxes, so nothing here can grow when
//! publishers outrun the hub (past the inboxes' bound an event is shed and counted).
//!
//! Also decides which half of the index each arrival serves ([`Scope`]), including the
//! fallback past `redis_cluster_max_shard_channels`: the full stream alone serves every
//! subscription and per-cluster arrivals are ignored.
//!
//! Owns what one cluster connection has received and not yet handed on; only that connection's
//! task changes it.

use super::inbound::Inbound;
use super::link::Link;
use super::{BrokerHandler, Intake, Scope};
use redis::{PushInfo, PushKind, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use streamhub_wire::{Channels, CONTROL_CHANNEL};

/// Connections lost, told by the arrivals to the task that keeps the subscriptions.
#[derive(Default)]
pub(super) struct Lost {
    /// How many `Disconnection` pushes so far.
    pub(super) count: AtomicU64,
    /// Wakes the maintaining task.
    pub(super) wake: tokio::sync::Notify,
}

/// The receiving end of the cluster connection's pushes.
pub(super) struct ShardArrivals {
    /// Where events go; set when the broker starts (nothing is subscribed before).
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// The channel names.
    channels: Channels,
    /// Validates, hands on and counts what arrives.
    inbound: Inbound,
    /// Up when every wanted channel is confirmed and every primary answers.
    link: Link,
    /// Connections lost.
    lost: Lost,
    /// Whether the full stream serves every subscription (more clusters wanted than shard
    /// channels allowed), rather than only those without a cluster filter.
    full_stream: AtomicBool,
}

impl ShardArrivals {
    /// Arrivals on `channels` from the cluster at `target` (addresses, for the log), taking
    /// events as `intake` says.
    pub(super) fn new(channels: Channels, intake: Intake, target: String) -> Self {
        Self {
            handler: OnceLock::new(),
            channels,
            inbound: Inbound::new(intake),
            link: Link::new(target),
            lost: Lost::default(),
            full_stream: AtomicBool::new(false),
        }
    }

    /// The channel names.
    pub(super) fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Whether the subscriptions are live: what `/readyz`, `status` and the gauge report.
    pub(super) fn link(&self) -> &Link {
        &self.link
    }

    /// Connections lost, for the task that keeps the subscriptions.
    pub(super) fn lost(&self) -> &Lost {
        &self.lost
    }

    /// Junk counted so far, by kind.
    pub(super) fn junk_counts(&self) -> Vec<(&'static str, u64)> {
        self.inbound.junk_counts()
    }

    /// Hands events to `handler` from now on.
    pub(super) fn start(&self, handler: Arc<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    /// Whether the full stream serves every subscription now.
    pub(super) fn full_stream(&self) -> bool {
        self.full_stream.load(Relaxed)
    }

    /// Switches between the full stream serving everything (`on`) and the split by scope.
    /// Called while both the full stream and the wanted cluster channels are held, so no
    /// subscription is left without a source at the switch.
    pub(super) fn set_full_stream(&self, on: bool) {
        if self.full_stream.swap(on, Relaxed) != on {
            if on {
                tracing::warn!(
                    "more clusters wanted than redis_cluster_max_shard_channels: reading the \
                     full stream for every subscription instead of per-cluster channels"
                );
            } else {
                tracing::info!("back to per-cluster shard channels");
            }
        }
    }

    /// Handles one push of the cluster connection, where it arrives.
    pub(super) fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let (
                    Some(handler),
                    [Value::BulkString(channel), Value::BulkString(payload), ..],
                ) = (self.handler.get(), &push.data[..])
                {
                    self.on_message(&**handler, channel, payload);
                }
            }
            PushKind::Disconnection => {
                self.link.set(
                    false,
                    Some("lost a redis cluster node; reconnecting".into()),
                );
                self.lost.count.fetch_add(1, Relaxed);
                self.lost.wake.notify_one();
            }
            _ => {}
        }
    }

    /// Hands on one message of `channel`.
    fn on_message(&self, handler: &dyn BrokerHandler, channel: &[u8], payload: &[u8]) {
        if channel == CONTROL_CHANNEL.as_bytes() {
            self.inbound.control(handler, payload);
        } else if channel == self.channels.all().as_bytes() {
            let scope = if self.full_stream() {
                Scope::Every
            } else {
                Scope::Unfiltered
            };
            self.inbound.route(handler, payload, scope);
        } else if let Some(id) = self.channels.cluster_of(channel) {
            if self.full_stream() {
                // The full stream serves this event's subscribers: a late arrival on a
                // cluster channel being let go of must not reach them twice.
                return;
            }
            let Some(event) = self.inbound.event(handler, payload) else {
                return;
            };
            // Routing by the channel and by the event's own cluster must agree, or a client
            // could get the event twice (or from a cluster it did not ask for).
            if event.cluster_id.as_deref().map(str::as_bytes) == Some(id) {
                // Refused only when the shards are full: the handler counted the drop.
                let _ = handler.handle_event(event, Scope::Filtered);
            } else {
                self.inbound.junk(
                    "wrong_cluster_channel",
                    &format!(
                        "event of cluster {:?} on {}",
                        event.cluster_id,
                        String::from_utf8_lossy(channel)
                    ),
                );
            }
        }
    }
}
