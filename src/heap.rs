//! Heap statistics from the allocator (jemalloc, the binary's global allocator): totals for
//! `/metrics`, and live allocations by size class for `GET /debug/heap` (admin), so that the
//! memory an idle connection costs can be attributed to the structures that take it (the harness
//! diffs two snapshots; flamegraphs/README.md, "Where an idle connection's bytes go").
//!
//! Read on demand, never on the event path. In a process whose allocator is not jemalloc (the
//! library's own tests) the figures describe jemalloc's idle arenas and are near zero.
//!
//! Owns nothing: it reads the allocator's statistics when asked.

use serde::Serialize;
use tikv_jemalloc_ctl::{epoch, raw, stats};

/// `MALLCTL_ARENAS_ALL`: the index that sums over every arena.
const ALL_ARENAS: usize = 4096;

/// The allocator's totals, in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct HeapTotals {
    /// Bytes the program holds.
    pub(crate) allocated: usize,
    /// Bytes in pages that hold live allocations (allocated plus size-class rounding).
    pub(crate) active: usize,
    /// Bytes of physical memory the allocator holds (active, metadata, dirty unused pages).
    pub(crate) resident: usize,
    /// The allocator's own bookkeeping.
    pub(crate) metadata: usize,
}

/// Live allocations of one size class.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct SizeClass {
    /// The class's size in bytes (an allocation is rounded up to it).
    pub(crate) size: usize,
    /// How many are live.
    pub(crate) live: usize,
}

/// Reads one statistic by name (without its terminating NUL).
fn read(name: &str) -> Option<usize> {
    let name = format!("{name}\0");
    // SAFETY: every name read here is a `size_t` statistic of jemalloc 5.
    unsafe { raw::read::<usize>(name.as_bytes()) }.ok()
}

/// Reads one `unsigned` setting by name (without its terminating NUL).
fn read_u32(name: &str) -> Option<u32> {
    let name = format!("{name}\0");
    // SAFETY: `arenas.nbins` and `arenas.nlextents` are `unsigned` in jemalloc 5.
    unsafe { raw::read::<u32>(name.as_bytes()) }.ok()
}

/// The totals now, or `None` when the allocator keeps no statistics.
pub(crate) fn totals() -> Option<HeapTotals> {
    epoch::advance().ok()?;
    Some(HeapTotals {
        allocated: stats::allocated::read().ok()?,
        active: stats::active::read().ok()?,
        resident: stats::resident::read().ok()?,
        metadata: stats::metadata::read().ok()?,
    })
}

/// Every size class with live allocations, smallest first: the small classes (slabs) and the
/// large ones (whole extents).
pub(crate) fn by_size_class() -> Option<Vec<SizeClass>> {
    epoch::advance().ok()?;
    let mut out = Vec::new();
    for j in 0..read_u32("arenas.nbins")? {
        let live = read(&format!("stats.arenas.{ALL_ARENAS}.bins.{j}.curregs"))?;
        if live > 0 {
            let size = read(&format!("arenas.bin.{j}.size"))?;
            out.push(SizeClass { size, live });
        }
    }
    for j in 0..read_u32("arenas.nlextents")? {
        let live = read(&format!(
            "stats.arenas.{ALL_ARENAS}.lextents.{j}.curlextents"
        ))?;
        if live > 0 {
            let size = read(&format!("arenas.lextent.{j}.size"))?;
            out.push(SizeClass { size, live });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_read_in_order() {
        // The library's tests run on the system allocator, so jemalloc's arenas are nearly
        // empty; what is checked is that the statistics can be read and are consistent.
        let totals = totals().expect("jemalloc keeps statistics");
        assert!(totals.allocated <= totals.active);
        let classes = by_size_class().expect("size classes");
        assert!(classes.windows(2).all(|w| w[0].size < w[1].size));
    }
}
