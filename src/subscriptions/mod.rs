//! Who subscribes to what: each client's stored subscriptions, the counts behind
//! `GET /subscriptions` ([`tally`]), the keys each subject holds ([`subject_keys`]), and the
//! change of the index with the wait for the broker to follow.
//!
//! The one owner of all of them (a client's list sits in its record as a [`held::Held`], which
//! only this module can read or change). A client's session changes its subscriptions through
//! [`Subscriptions::set`] (one change at a time: only its own session calls it); the registry
//! drops them through [`Subscriptions::remove`] when the client leaves; REST reads them. The
//! router never comes here: it reads the index's snapshots.

pub(crate) mod held;
mod subject_keys;
mod tally;

use crate::broker::Broker;
use crate::client::ClientHandle;
use crate::index::{IndexFull, IndexOp, SubscriptionIndex};
use crate::metrics::Metrics;
use crate::subscription::Subscription;
use parking_lot::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use subject_keys::{OverQuota, SubjectKeys};
use tally::SubscriptionTally;

/// Why a change of subscriptions was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The instance's index is full.
    #[error("{0}")]
    IndexFull(#[from] IndexFull),
    /// The client's subject holds its share of the index.
    #[error("{0}")]
    SubjectQuota(#[from] OverQuota),
}

/// The subscriptions of every client of this instance.
pub(crate) struct Subscriptions {
    /// The counts behind `GET /subscriptions`.
    tally: Mutex<SubscriptionTally>,
    /// Index keys held per authenticated subject.
    subject_keys: SubjectKeys,
    /// The index the router reads.
    index: Arc<SubscriptionIndex>,
    /// The broker, which may have to follow the index's demand.
    broker: Arc<dyn Broker>,
    /// `ws_subscription_count` and the count of index updates.
    metrics: Arc<Metrics>,
}

impl Subscriptions {
    /// No subscriptions yet; each subject may hold `keys_per_subject` index keys.
    pub(crate) fn new(
        index: Arc<SubscriptionIndex>,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        keys_per_subject: usize,
    ) -> Self {
        Self {
            tally: Mutex::new(SubscriptionTally::default()),
            subject_keys: SubjectKeys::new(keys_per_subject),
            index,
            broker,
            metrics,
        }
    }

    /// The subscriptions `client` holds.
    pub(crate) fn of(&self, client: &ClientHandle) -> Vec<Subscription> {
        client.subscriptions.get()
    }

    /// The counts by event type, cluster and namespace, as JSON.
    pub(crate) fn tally_json(&self) -> serde_json::Value {
        self.tally.lock().to_json()
    }

    /// Replaces `client`'s subscriptions with `subs` and waits until routing sees the change
    /// (and, with a broker that subscribes per cluster, until the broker listens for it).
    /// Refused, with the client's subscriptions left as they were, when the change would add
    /// index keys past `websocket.max_index_keys`, or past its subject's share
    /// (`websocket.max_index_keys_per_subject`).
    pub(crate) async fn set(
        &self,
        client: &Arc<ClientHandle>,
        subs: Vec<Subscription>,
    ) -> Result<(), Refused> {
        let subject = client.subject();
        let old = self.of(client);
        if old == subs {
            // Nothing changes: the index thread is not asked to do anything.
            return Ok(());
        }
        if let Some(subject) = &subject {
            self.subject_keys.change(subject, &old, &subs)?;
        }
        self.store(client, &old, subs.clone());
        let delta = subs.len() as i64 - old.len() as i64;
        self.metrics.subscriptions.fetch_add(delta, Relaxed);
        self.metrics.index_updates.fetch_add(1, Relaxed);
        if let Err(full) = self.index.update(IndexOp::Set(client.clone(), subs)).await {
            // Put back what the client held: only its own session changes it.
            let now = self.of(client);
            if let Some(subject) = &subject {
                // Back to fewer keys: always taken.
                let _ = self.subject_keys.change(subject, &now, &old);
            }
            self.store(client, &now, old);
            self.metrics.subscriptions.fetch_sub(delta, Relaxed);
            return Err(full.into());
        }
        self.broker
            .wait_for_demand(self.index.demand_version())
            .await;
        Ok(())
    }

    /// Forgets `client`'s subscriptions (it left) and takes it out of the index.
    pub(crate) fn remove(&self, client: &ClientHandle) {
        let subs = client.subscriptions.take();
        if subs.is_empty() {
            return;
        }
        self.tally.lock().replace(&subs, &[]);
        if let Some(subject) = client.subject() {
            let _ = self.subject_keys.change(&subject, &subs, &[]);
        }
        self.metrics
            .subscriptions
            .fetch_sub(subs.len() as i64, Relaxed);
        self.index.update_later(IndexOp::Remove(client.id));
    }

    /// Stores `new` for `client` in place of `old`, and counts the change.
    fn store(&self, client: &ClientHandle, old: &[Subscription], new: Vec<Subscription>) {
        self.tally.lock().replace(old, &new);
        client.subscriptions.set(new);
    }
}
