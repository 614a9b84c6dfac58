//! The budget of connections that have not authenticated yet (with authentication on): at
//! most `websocket.max_unauthenticated_connections` in the instance and
//! `websocket.max_unauthenticated_per_address` from one source address.
//!
//! Sockets that never send `auth` must not hold the slots real users need. An upgrade from an
//! address already at its share is refused (503). When the instance's budget is full, the
//! oldest unauthenticated connection is evicted (`disconnect` with reason
//! `authentication_timeout`, close 1008) to make room: a real client authenticates within a
//! round trip, so it is the sockets that sit silent that go first. A connection leaves the
//! budget when it authenticates or ends ([`Ticket`] is dropped). The budget knows a connection
//! only as something it can tell to go ([`Evict`]).
//!
//! Owns the unauthenticated budget; changed only through [`PreAuth::admit`] and a [`Ticket`]
//! dropped.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Weak};

/// A connection the budget can tell to go.
pub(crate) trait Evict: Send + Sync {
    /// Ends the connection: its place was needed.
    fn evict(&self);
}

/// Why an upgrade is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The source address holds its share already.
    Address,
    /// The instance's budget is full and none of it could be evicted.
    Full,
}

/// The budget, shared by every shard.
pub(crate) struct PreAuth {
    /// Most unauthenticated connections in the instance.
    total: usize,
    /// Most from one source address.
    per_address: usize,
    /// What is held now.
    held: Mutex<Held>,
}

/// What is held now.
#[derive(Default)]
struct Held {
    /// Connections by ticket number: the address and, once known, the client.
    tickets: HashMap<u64, (IpAddr, Option<Weak<dyn Evict>>)>,
    /// Ticket numbers, oldest first (numbers already returned are skipped when evicting).
    order: VecDeque<u64>,
    /// Connections by source address.
    by_address: HashMap<IpAddr, usize>,
    /// The next ticket number.
    next: u64,
}

/// One unauthenticated connection's place in the budget; given back when dropped.
pub(crate) struct Ticket {
    /// The budget.
    budget: Arc<PreAuth>,
    /// Its number.
    number: u64,
}

impl PreAuth {
    /// A budget of `total` connections, `per_address` from one address.
    pub(crate) fn new(total: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_address: per_address.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a place for a connection from `address`, evicting the oldest unauthenticated
    /// connection when the instance's budget is full.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refused> {
        let mut held = self.held.lock();
        if held.by_address.get(&address).copied().unwrap_or(0) >= self.per_address {
            return Err(Refused::Address);
        }
        if held.tickets.len() >= self.total && !held.evict_oldest() {
            return Err(Refused::Full);
        }
        let number = held.next;
        held.next += 1;
        held.tickets.insert(number, (address, None));
        held.order.push_back(number);
        *held.by_address.entry(address).or_insert(0) += 1;
        Ok(Ticket {
            budget: self.clone(),
            number,
        })
    }

    /// How many connections hold a place now.
    pub(crate) fn len(&self) -> usize {
        self.held.lock().tickets.len()
    }
}

impl Held {
    /// Tells the oldest connection that has a client to go, and takes its place back; false
    /// when there is none.
    fn evict_oldest(&mut self) -> bool {
        let mut skipped = Vec::new();
        let mut evicted = false;
        while let Some(number) = self.order.pop_front() {
            let Some((_, client)) = self.tickets.get(&number) else {
                continue; // already given back
            };
            let Some(client) = client.as_ref().and_then(Weak::upgrade) else {
                skipped.push(number); // still upgrading: kept in its place
                continue;
            };
            client.evict();
            self.give_back(number);
            evicted = true;
            break;
        }
        for number in skipped.into_iter().rev() {
            self.order.push_front(number);
        }
        evicted
    }

    /// Gives a place back.
    fn give_back(&mut self, number: u64) {
        let Some((address, _)) = self.tickets.remove(&number) else {
            return;
        };
        if let Some(n) = self.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
        // Keep the order list from growing with numbers already given back.
        if self.order.len() > 2 * self.tickets.len() + 64 {
            let tickets = &self.tickets;
            self.order.retain(|n| tickets.contains_key(n));
        }
    }
}

impl Ticket {
    /// Names the connection holding this place, so that it can be evicted.
    pub(crate) fn attach<C: Evict + 'static>(&self, client: &Arc<C>) {
        let client: Arc<dyn Evict> = client.clone();
        let mut held = self.budget.held.lock();
        if let Some((_, c)) = held.tickets.get_mut(&self.number) {
            *c = Some(Arc::downgrade(&client));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.held.lock().give_back(self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that remembers being evicted.
    #[derive(Default)]
    struct Conn(std::sync::atomic::AtomicBool);

    impl Evict for Conn {
        fn evict(&self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Conn {
        fn evicted(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn client() -> Arc<Conn> {
        Arc::new(Conn::default())
    }

    #[test]
    fn per_address_refused_and_the_oldest_evicted() {
        let budget = PreAuth::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t1 = budget.admit(a).unwrap();
        let c1 = client();
        t1.attach(&c1);
        let _t2 = budget.admit(a).unwrap();
        assert_eq!(budget.admit(a).err(), Some(Refused::Address));
        let t3 = budget.admit(b).unwrap();
        let c3 = client();
        t3.attach(&c3);
        // Full: the oldest with a client (t1) goes; t2 has none yet and stays.
        let _t4 = budget.admit(b).unwrap();
        assert!(c1.evicted());
        assert_eq!(budget.len(), 3);
        drop(t1); // its connection ends: nothing more to give back
        assert_eq!(budget.len(), 3);
        // The address that lost t1 has room again; t3 goes for it.
        assert!(budget.admit(a).is_ok());
        assert!(c3.evicted());
    }

    #[test]
    fn nothing_to_evict_is_refused_and_places_come_back() {
        let budget = PreAuth::new(1, 5);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = budget.admit(ip).unwrap();
        assert_eq!(budget.admit(ip).err(), Some(Refused::Full));
        drop(t);
        assert_eq!(budget.len(), 0);
        assert!(budget.admit(ip).is_ok());
    }
}
