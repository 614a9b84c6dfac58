//! Watches one mirror of another region's stream: what it holds in this region and how far
//! behind its origin NATS says it is, and whether the origin region answers (its stream's last
//! sequence, asked of that region's JetStream domain over the leafnodes). What `status`,
//! `/metrics` and a resuming client's `ORIGIN_UNREACHABLE` notice say of it.
//!
//! Owns nothing: it writes the mirror's figures in `super::Origin`.

use super::Shared;
use async_nats::jetstream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often a mirror is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Longest wait for an answer, here or from the origin region: past it, the origin counts as
/// unreachable until it answers again.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Looks at mirror `i` every [`EVERY`], for the life of the process.
pub(super) async fn watch(client: async_nats::Client, shared: Arc<Shared>, i: usize) {
    let origin = &shared.origins[i];
    let here = jetstream::new(client.clone());
    let there = jetstream::with_domain(client, &*origin.region);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ask = |js: &jetstream::Context| {
            let js = js.clone();
            let name = origin.stream.clone();
            // The client's own request timeout is longer: this one is the watch's.
            async move { tokio::time::timeout(ASK_TIMEOUT, js.get_stream(name)).await }
        };
        if let Ok(Ok(stream)) = ask(&here).await {
            let info = stream.cached_info();
            origin.last.fetch_max(info.state.last_sequence, Relaxed);
            if let Some(m) = &info.mirror {
                origin.mirror_lag.store(m.lag, Relaxed);
            }
        }
        match ask(&there).await {
            Ok(Ok(stream)) => {
                let last = stream.cached_info().state.last_sequence;
                origin.origin_last.store(last, Relaxed);
                origin.reachable.store(true, Relaxed);
            }
            _ => origin.reachable.store(false, Relaxed),
        }
    }
}
