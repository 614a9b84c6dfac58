//! One client's stored subscriptions, kept in the client's record (one pointer, no map to look
//! them up in). Owned by the subscriptions part: only `subscriptions/mod.rs` reads or changes
//! them; everyone else sees the field and nothing in it.

use crate::subscription::Subscription;
use arc_swap::ArcSwapOption;
use std::sync::Arc;

/// One client's stored subscriptions. It sits in the client's record (no map to look it up in,
/// no memory per client beyond one pointer), but only this module reads or changes it.
#[derive(Default)]
pub(crate) struct Held(ArcSwapOption<Box<[Subscription]>>);

impl Held {
    /// The subscriptions held now.
    pub(super) fn get(&self) -> Vec<Subscription> {
        self.0
            .load()
            .as_deref()
            .map_or_else(Vec::new, |s| s.to_vec())
    }

    /// Holds `subs` from now on (none: nothing is kept).
    pub(super) fn set(&self, subs: Vec<Subscription>) {
        self.0
            .store((!subs.is_empty()).then(|| Arc::new(subs.into_boxed_slice())));
    }

    /// Takes what is held, leaving nothing.
    pub(super) fn take(&self) -> Vec<Subscription> {
        self.0.swap(None).map_or_else(Vec::new, |s| s.to_vec())
    }
}
