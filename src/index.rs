//! The subscription index: an inverted index keyed by (event_type, cluster, namespace),
//! published copy-on-write through `arc-swap`.
//!
//! There is one index per shard, holding that shard's clients, so a shard fans an event out to
//! its own clients only. Readers (a shard's fan-out task) load the current [`Snapshot`] and walk
//! at most a handful of buckets, taking no lock. Writers never touch a published snapshot: one
//! index thread owns the mutable [`IndexBuilder`]s, drains every pending change, applies the
//! batch, and publishes new snapshots that share every untouched bucket with the old ones (`Arc`
//! at the type, cluster and bucket levels). Only the buckets a batch touched are rebuilt. The thread then waits as long as the
//! rebuild took before taking the next batch, so under a subscribe storm batches grow and the
//! rebuild work stays below about half of one core, instead of costing one full copy per change.
//!
//! Owns the per-shard snapshots and the key budget; only the index thread changes them (the
//! subscriptions part asks it to), shards read the snapshots lock-free.

use crate::broker::{Demand, Scope};
use crate::client::ClientHandle;
use crate::event::{EventType, EVENT_TYPE_COUNT};
use crate::subscription::Subscription;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The clients of one (type, cluster, namespace) key.
pub type Bucket = Arc<[Arc<ClientHandle>]>;

/// A cluster's buckets by namespace (`None` = the subscription had no namespace filter).
#[derive(Clone, Default)]
struct ClusterIdx {
    /// Subscribers with no namespace filter.
    any_ns: Option<Bucket>,
    /// Subscribers filtering on one namespace.
    by_ns: HashMap<Arc<str>, Bucket>,
}

/// One event type's clusters (`any_cluster` = no cluster filter).
#[derive(Clone, Default)]
struct TypeIdx {
    /// Subscribers with no cluster filter.
    any_cluster: Arc<ClusterIdx>,
    /// Subscribers filtering on one cluster.
    by_cluster: HashMap<Arc<str>, Arc<ClusterIdx>>,
}

/// A published, immutable view of the index.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// One entry per event type, in [`EventType::ALL`] order.
    types: [Arc<TypeIdx>; EVENT_TYPE_COUNT],
}

impl Snapshot {
    /// Calls `f` for every client whose subscriptions match the event. A client with several
    /// matching subscriptions may be passed more than once; the router deduplicates.
    #[inline]
    pub fn for_each_match(
        &self,
        ty: EventType,
        cluster: Option<&str>,
        namespace: Option<&str>,
        mut f: impl FnMut(&Arc<ClientHandle>),
    ) {
        self.for_each_unfiltered(ty, namespace, &mut f);
        self.for_each_filtered(ty, cluster, namespace, f);
    }

    /// Calls `f` once for every client that arrival `seq` of an event with `scope` serves and
    /// that has not had arrival `seq` yet (each client remembers the last arrival it got).
    #[inline]
    pub fn for_each_in_scope(
        &self,
        scope: Scope,
        ty: EventType,
        cluster: Option<&str>,
        namespace: Option<&str>,
        seq: u64,
        mut f: impl FnMut(&Arc<ClientHandle>),
    ) {
        let once = |client: &Arc<ClientHandle>| {
            if client.first_delivery(seq) {
                f(client)
            }
        };
        match scope {
            Scope::Every => self.for_each_match(ty, cluster, namespace, once),
            Scope::Unfiltered => self.for_each_unfiltered(ty, namespace, once),
            Scope::Filtered => {
                // Clients an unfiltered subscription serves get this event from its arrival on
                // `{prefix}:all`: mark them as served, so the filtered half skips them.
                self.for_each_unfiltered(ty, namespace, |client| {
                    client.first_delivery(seq);
                });
                self.for_each_filtered(ty, cluster, namespace, once);
            }
            // Never routed (see `Router::enqueue`): it serves no subscription.
            Scope::Past => {}
        }
    }

    /// The half of [`Self::for_each_match`] served by subscriptions with no cluster filter.
    #[inline]
    pub fn for_each_unfiltered(
        &self,
        ty: EventType,
        namespace: Option<&str>,
        mut f: impl FnMut(&Arc<ClientHandle>),
    ) {
        visit_cluster(&self.types[ty.index()].any_cluster, namespace, &mut f);
    }

    /// The half of [`Self::for_each_match`] served by subscriptions that list `cluster`.
    #[inline]
    pub fn for_each_filtered(
        &self,
        ty: EventType,
        cluster: Option<&str>,
        namespace: Option<&str>,
        mut f: impl FnMut(&Arc<ClientHandle>),
    ) {
        if let Some(ci) = cluster.and_then(|c| self.types[ty.index()].by_cluster.get(c)) {
            visit_cluster(ci, namespace, &mut f);
        }
    }
}

/// Visits the buckets of one cluster that an event with `namespace` matches.
#[inline]
fn visit_cluster(ci: &ClusterIdx, namespace: Option<&str>, f: &mut impl FnMut(&Arc<ClientHandle>)) {
    let mut each = |b: &Bucket| b.iter().for_each(&mut *f);
    if let Some(b) = &ci.any_ns {
        each(b);
    }
    match namespace {
        Some(ns) => {
            if let Some(b) = ci.by_ns.get(ns) {
                each(b);
            }
        }
        // An event without a namespace passes every namespace filter.
        None => ci.by_ns.values().for_each(each),
    }
}

/// One index key; `None` stands for "any".
type Key = (EventType, Option<Arc<str>>, Option<Arc<str>>);

/// A change to the index.
pub enum IndexOp {
    /// Replace all of a client's subscriptions.
    Set(Arc<ClientHandle>, Vec<Subscription>),
    /// Remove a client.
    Remove(Uuid),
}

/// The write side: the full state, from which snapshots are derived.
#[derive(Default)]
pub struct IndexBuilder {
    /// Each indexed client's handle and keys (a boxed slice, not a set: an idle client with one
    /// key holds 48 bytes for it instead of a 192-byte hash table).
    clients: HashMap<Uuid, (Arc<ClientHandle>, Box<[Key]>)>,
    /// Each key's clients.
    buckets: HashMap<Key, HashMap<Uuid, Arc<ClientHandle>>>,
    /// The structure last published (its `Arc`s are shared with readers).
    working: Snapshot,
    /// How many keys name each cluster (`None`: no cluster filter), for [`Demand`].
    cluster_keys: HashMap<Option<Arc<str>>, usize>,
    /// Whether a cluster gained its first key or lost its last since the flag was taken.
    demand_changed: bool,
}

/// The keys a set of subscriptions expands to.
fn keys_of(subs: &[Subscription]) -> HashSet<Key> {
    let mut keys = HashSet::new();
    for s in subs {
        let clusters: Vec<Option<Arc<str>>> = if s.cluster_filter.is_empty() {
            vec![None]
        } else {
            s.cluster_filter
                .iter()
                .map(|c| Some(Arc::from(c.as_str())))
                .collect()
        };
        let namespaces: Vec<Option<Arc<str>>> = if s.namespace_filter.is_empty() {
            vec![None]
        } else {
            s.namespace_filter
                .iter()
                .map(|n| Some(Arc::from(n.as_str())))
                .collect()
        };
        for t in &s.event_types {
            for c in &clusters {
                for n in &namespaces {
                    keys.insert((*t, c.clone(), n.clone()));
                }
            }
        }
    }
    keys
}

impl IndexBuilder {
    /// Applies a batch of changes and returns the snapshot to publish.
    pub fn apply(&mut self, ops: impl IntoIterator<Item = IndexOp>) -> Snapshot {
        let mut touched: HashSet<Key> = HashSet::new();
        for op in ops {
            match op {
                IndexOp::Set(handle, subs) => {
                    let id = handle.id;
                    let new_keys = keys_of(&subs);
                    let old_keys: HashSet<Key> = self
                        .clients
                        .remove(&id)
                        .map(|(_, k)| k.into_vec().into_iter().collect())
                        .unwrap_or_default();
                    for k in old_keys.difference(&new_keys) {
                        self.unlink(k, &id);
                        touched.insert(k.clone());
                    }
                    for k in new_keys.difference(&old_keys) {
                        let bucket = self.buckets.entry(k.clone()).or_insert_with(|| {
                            let n = self.cluster_keys.entry(k.1.clone()).or_default();
                            *n += 1;
                            self.demand_changed |= *n == 1;
                            HashMap::new()
                        });
                        bucket.insert(id, handle.clone());
                        touched.insert(k.clone());
                    }
                    if !new_keys.is_empty() {
                        self.clients
                            .insert(id, (handle, new_keys.into_iter().collect()));
                    }
                }
                IndexOp::Remove(id) => {
                    if let Some((_, keys)) = self.clients.remove(&id) {
                        for k in keys.into_vec() {
                            self.unlink(&k, &id);
                            touched.insert(k);
                        }
                    }
                }
            }
        }
        for key in touched {
            self.rebuild(&key);
        }
        self.working.clone()
    }

    /// Removes a client from one key's bucket.
    fn unlink(&mut self, key: &Key, id: &Uuid) {
        if let Some(b) = self.buckets.get_mut(key) {
            b.remove(id);
            if b.is_empty() {
                self.buckets.remove(key);
                if let Some(n) = self.cluster_keys.get_mut(&key.1) {
                    *n -= 1;
                    if *n == 0 {
                        self.cluster_keys.remove(&key.1);
                        self.demand_changed = true;
                    }
                }
            }
        }
    }

    /// Takes the "demand changed" flag.
    fn take_demand_changed(&mut self) -> bool {
        std::mem::take(&mut self.demand_changed)
    }

    /// The clusters this builder's subscriptions ask for.
    pub fn demand(&self) -> Demand {
        let mut d = Demand::default();
        self.add_demand(&mut d);
        d
    }

    /// Adds this builder's clusters to `demand`.
    fn add_demand(&self, demand: &mut Demand) {
        for c in self.cluster_keys.keys() {
            match c {
                None => demand.any_cluster = true,
                Some(c) => {
                    demand.clusters.insert(c.clone());
                }
            }
        }
    }

    /// Rebuilds the published bucket of one key, copying only the path to it.
    fn rebuild(&mut self, key: &Key) {
        let (ty, cluster, ns) = key;
        let bucket: Option<Bucket> = self
            .buckets
            .get(key)
            .map(|m| m.values().cloned().collect::<Vec<_>>().into());
        let ti = Arc::make_mut(&mut self.working.types[ty.index()]);
        let ci_arc = match cluster {
            None => &mut ti.any_cluster,
            Some(c) => ti.by_cluster.entry(c.clone()).or_default(),
        };
        let ci = Arc::make_mut(ci_arc);
        match (ns, bucket) {
            (None, b) => ci.any_ns = b,
            (Some(n), Some(b)) => {
                ci.by_ns.insert(n.clone(), b);
            }
            (Some(n), None) => {
                ci.by_ns.remove(n);
            }
        }
        let empty = ci.any_ns.is_none() && ci.by_ns.is_empty();
        if let (Some(c), true) = (cluster, empty) {
            ti.by_cluster.remove(c);
        }
    }
}

/// A change refused because it would add keys past the instance's cap (the cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFull(pub usize);

impl std::error::Error for IndexFull {}

impl std::fmt::Display for IndexFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the hub's subscription index is full ({} keys); nothing was changed, try again later",
            self.0
        )
    }
}

/// A change on its way to the index thread, with whom to tell once it is published (true) or
/// refused because the instance's index is full (false).
type Pending = (IndexOp, Option<tokio::sync::oneshot::Sender<bool>>);

/// The indexes as the rest of the hub sees them: a snapshot per shard to read, and a queue of
/// changes.
pub struct SubscriptionIndex {
    /// The snapshot each shard's fan-out reads.
    current: Arc<[ArcSwap<Snapshot>]>,
    /// Changes for the index thread.
    tx: crossbeam_channel::Sender<Pending>,
    /// The clusters asked for across all shards, republished when that set changes.
    demand: tokio::sync::watch::Sender<Demand>,
    /// Keys held over all shards, as of the last published batch.
    keys: Arc<AtomicUsize>,
    /// Most keys over all shards.
    max_keys: usize,
}

impl SubscriptionIndex {
    /// Starts the index thread for `shards` shards, holding at most `max_keys` keys over all
    /// of them (a change that would add keys past it is refused).
    pub fn start(shards: usize, max_keys: usize) -> std::io::Result<Self> {
        let current: Arc<[ArcSwap<Snapshot>]> = (0..shards.max(1))
            .map(|_| ArcSwap::from_pointee(Snapshot::default()))
            .collect();
        let (tx, rx) = crossbeam_channel::unbounded::<Pending>();
        let published = current.clone();
        let demand = tokio::sync::watch::Sender::new(Demand::default());
        let demand_out = demand.clone();
        let keys = Arc::new(AtomicUsize::new(0));
        let budget = KeyBudget::new(max_keys, keys.clone());
        std::thread::Builder::new()
            .name("streamhub-index".into())
            .spawn(move || index_thread(rx, published, demand_out, budget))?;
        Ok(Self {
            current,
            tx,
            demand,
            keys,
            max_keys,
        })
    }

    /// Keys held over all shards (each shard's index counts its own).
    pub fn keys(&self) -> usize {
        self.keys.load(Relaxed)
    }

    /// Follows the clusters this instance's subscriptions ask for.
    pub fn demand(&self) -> tokio::sync::watch::Receiver<Demand> {
        self.demand.subscribe()
    }

    /// The version of the demand published last. Read after [`Self::update`] returns, it
    /// covers that update.
    pub fn demand_version(&self) -> u64 {
        self.demand.borrow().version
    }

    /// The current snapshot of `shard`'s clients (lock-free).
    #[inline]
    pub fn load(&self, shard: usize) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current[shard.min(self.current.len() - 1)].load()
    }

    /// Queues a change and waits until a snapshot containing it is published; refused, with
    /// nothing of it applied, when it would add keys past the instance's cap.
    pub async fn update(&self, op: IndexOp) -> Result<(), IndexFull> {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send((op, Some(done))).is_err() {
            return Ok(());
        }
        match wait.await.unwrap_or(true) {
            true => Ok(()),
            false => Err(IndexFull(self.max_keys)),
        }
    }

    /// Queues a change without waiting (used when a client goes away).
    pub fn update_later(&self, op: IndexOp) {
        let _ = self.tx.send((op, None));
    }
}

/// The index thread: batch, apply per shard, publish, acknowledge, pause as long as it took.
fn index_thread(
    rx: crossbeam_channel::Receiver<Pending>,
    current: Arc<[ArcSwap<Snapshot>]>,
    demand: tokio::sync::watch::Sender<Demand>,
    mut budget: KeyBudget,
) {
    let mut builders: Vec<IndexBuilder> = (0..current.len())
        .map(|_| IndexBuilder::default())
        .collect();
    // Which shard each indexed client lives on, so a removal finds its builder.
    let mut shard_of: HashMap<Uuid, usize> = HashMap::new();
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut ops: Vec<Vec<IndexOp>> = (0..current.len()).map(|_| Vec::new()).collect();
        budget.begin(&builders);
        for (op, ack) in std::iter::once(first).chain(rx.try_iter()) {
            let shard = match &op {
                IndexOp::Set(h, subs) => {
                    let s = h.shard.min(current.len() - 1);
                    if !budget.admit(&builders[s], s, subs) {
                        if let Some(ack) = ack {
                            let _ = ack.send(false);
                        }
                        continue;
                    }
                    if subs.is_empty() {
                        shard_of.remove(&h.id);
                    } else {
                        shard_of.insert(h.id, s);
                    }
                    Some(s)
                }
                IndexOp::Remove(id) => shard_of.remove(id),
            };
            if let Some(s) = shard {
                ops[s].push(op);
            }
            acks.extend(ack);
        }
        let mut demand_changed = false;
        for (s, batch) in ops.into_iter().enumerate() {
            if !batch.is_empty() {
                current[s].store(Arc::new(builders[s].apply(batch)));
                demand_changed |= builders[s].take_demand_changed();
            }
        }
        if demand_changed {
            let mut now = Demand::default();
            builders.iter().for_each(|b| b.add_demand(&mut now));
            demand.send_if_modified(|d| {
                if d.any_cluster == now.any_cluster && d.clusters == now.clusters {
                    return false;
                }
                now.version = d.version + 1;
                *d = now;
                true
            });
        }
        budget.publish(&builders);
        for ack in acks.drain(..) {
            let _ = ack.send(true);
        }
        let took = started.elapsed();
        if took > Duration::from_micros(200) {
            std::thread::sleep(took.min(Duration::from_millis(50)));
        }
    }
}

/// The instance's cap on index keys, checked by the index thread before a change is applied.
///
/// A key is one (type, cluster, namespace) entry of one shard's index; it costs a bucket and
/// its path in the published snapshots whoever holds it. Each client is bounded on its own
/// (4,096 keys), but many clients naming different clusters could still grow the index without
/// limit: past the cap, a change that adds keys is refused (the client is told, and keeps what
/// it held). Keys a batch frees count only from the next batch on.
struct KeyBudget {
    /// Most keys over all shards.
    cap: usize,
    /// Keys held, plus those admitted in the batch being gathered.
    used: usize,
    /// Keys admitted in this batch that no builder holds yet, by shard.
    fresh: HashSet<(usize, Key)>,
    /// Where [`SubscriptionIndex::keys`] reads the count.
    published: Arc<AtomicUsize>,
}

impl KeyBudget {
    /// A budget of `cap` keys, publishing its count to `published`.
    fn new(cap: usize, published: Arc<AtomicUsize>) -> Self {
        Self {
            cap,
            used: 0,
            fresh: HashSet::new(),
            published,
        }
    }

    /// Starts a batch from what the builders hold.
    fn begin(&mut self, builders: &[IndexBuilder]) {
        self.used = builders.iter().map(|b| b.buckets.len()).sum();
        self.fresh.clear();
    }

    /// Whether `subs` for a client of `shard` fit; if so, their new keys are reserved.
    fn admit(&mut self, builder: &IndexBuilder, shard: usize, subs: &[Subscription]) -> bool {
        let new: Vec<(usize, Key)> = keys_of(subs)
            .into_iter()
            .filter(|k| !builder.buckets.contains_key(k))
            .map(|k| (shard, k))
            .filter(|sk| !self.fresh.contains(sk))
            .collect();
        if self.used + new.len() > self.cap {
            return false;
        }
        self.used += new.len();
        self.fresh.extend(new);
        true
    }

    /// Publishes the count after a batch was applied.
    fn publish(&self, builders: &[IndexBuilder]) {
        let held = builders.iter().map(|b| b.buckets.len()).sum();
        self.published.store(held, Relaxed);
    }
}
