//! The hub's heap per connection: two snapshots of its allocator (`GET /debug/heap`), one before
//! the clients connect and one while they are held, turned into bytes per connection in all and
//! by size class, so that an idle connection's memory can be matched to the structures that take
//! it (flamegraphs/README.md, "Where an idle connection's bytes go").

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One snapshot of the hub's allocator.
#[derive(Debug, Clone, Deserialize)]
pub struct HeapSnapshot {
    /// Totals in bytes.
    pub totals: HeapTotals,
    /// Live allocations by size class.
    pub size_classes: Vec<SizeClass>,
}

/// The allocator's totals, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct HeapTotals {
    /// Held by the program.
    pub allocated: f64,
    /// In pages holding live allocations.
    pub active: f64,
    /// Physical memory the allocator holds.
    pub resident: f64,
    /// The allocator's bookkeeping.
    pub metadata: f64,
}

/// Live allocations of one size class.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SizeClass {
    /// Its size in bytes.
    pub size: u64,
    /// How many are live.
    pub live: u64,
}

/// What one connection adds to the heap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeapPerConnection {
    /// Totals per connection, in bytes.
    pub totals: HeapTotals,
    /// Size classes that grew, the most bytes first.
    pub size_classes: Vec<ClassGrowth>,
}

/// How one size class grew, per connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassGrowth {
    /// The class's size in bytes.
    pub size: u64,
    /// Allocations of it per connection.
    pub per_connection: f64,
    /// Bytes of it per connection.
    pub bytes_per_connection: f64,
}

/// `after − before`, divided by `connections`; classes that grew by less than one allocation
/// per hundred connections are left out.
pub fn per_connection(
    before: &HeapSnapshot,
    after: &HeapSnapshot,
    connections: usize,
) -> Option<HeapPerConnection> {
    if connections == 0 {
        return None;
    }
    let n = connections as f64;
    let per = |a: f64, b: f64| (a - b) / n;
    let (a, b) = (after.totals, before.totals);
    let totals = HeapTotals {
        allocated: per(a.allocated, b.allocated),
        active: per(a.active, b.active),
        resident: per(a.resident, b.resident),
        metadata: per(a.metadata, b.metadata),
    };
    let mut live: BTreeMap<u64, f64> = BTreeMap::new();
    for c in &after.size_classes {
        *live.entry(c.size).or_default() += c.live as f64;
    }
    for c in &before.size_classes {
        *live.entry(c.size).or_default() -= c.live as f64;
    }
    let mut size_classes: Vec<ClassGrowth> = live
        .into_iter()
        .map(|(size, grew)| ClassGrowth {
            size,
            per_connection: grew / n,
            bytes_per_connection: grew * size as f64 / n,
        })
        .filter(|g| g.per_connection >= 0.01)
        .collect();
    size_classes.sort_by(|x, y| y.bytes_per_connection.total_cmp(&x.bytes_per_connection));
    Some(HeapPerConnection {
        totals,
        size_classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(allocated: f64, classes: &[(u64, u64)]) -> HeapSnapshot {
        HeapSnapshot {
            totals: HeapTotals {
                allocated,
                ..Default::default()
            },
            size_classes: classes
                .iter()
                .map(|&(size, live)| SizeClass { size, live })
                .collect(),
        }
    }

    #[test]
    fn growth_per_connection_by_size_class() {
        let before = snap(1000.0, &[(16, 10), (1280, 1)]);
        let after = snap(
            1000.0 + 100.0 * 1696.0,
            &[(16, 10), (1280, 101), (384, 100), (48, 201)],
        );
        let g = per_connection(&before, &after, 100).unwrap();
        assert_eq!(g.totals.allocated, 1696.0);
        let sizes: Vec<_> = g
            .size_classes
            .iter()
            .map(|c| (c.size, c.per_connection))
            .collect();
        assert_eq!(sizes, [(1280, 1.0), (384, 1.0), (48, 2.01)]);
        assert!(per_connection(&before, &after, 0).is_none());
    }
}
