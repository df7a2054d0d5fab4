//! One level's table: its entries and live count, allocated and freed here only.

use super::FANOUT;
use crate::grace::Counters;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;

/// One level's table. 64-byte aligned so a pointer leaves the entry's flag bits free.
#[repr(C, align(64))]
pub(super) struct Table {
    pub(super) entries: [AtomicU64; FANOUT],
    /// Non-empty entries; written only by the (serialized) writer.
    pub(super) live: AtomicU32,
    /// Under loom only: written when the table is freed and read by every walk that visits
    /// it, so a walk that reaches a freed table is a data race loom reports (loom does not
    /// see a use after free by itself).
    #[cfg(viommu_loom)]
    pub(super) freed: crate::sync::TrackedUnsafeCell<bool>,
}

#[cfg(viommu_loom)]
impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: a loom-tracked write; `&mut self` is exclusive.
        self.freed.with_mut(|p| unsafe { *p = true });
    }
}

impl Table {
    /// Frees a table that no reader can reach and that nothing else owns.
    ///
    /// # Safety
    ///
    /// `table` came from [`Table::alloc`], is unreachable by readers and is freed once.
    pub(super) unsafe fn free(table: NonNull<Table>, counters: &Counters) {
        // SAFETY: allocated by `Table::alloc` as a Box; the caller guarantees the rest.
        drop(unsafe { Box::from_raw(table.as_ptr()) });
        counters.tables.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn alloc(counters: &Counters) -> NonNull<Table> {
        let table = Box::new(Table {
            entries: std::array::from_fn(|_| AtomicU64::new(0)),
            live: AtomicU32::new(0),
            #[cfg(viommu_loom)]
            freed: crate::sync::TrackedUnsafeCell::new(false),
        });
        counters.tables.fetch_add(1, Ordering::Relaxed);
        NonNull::from(Box::leak(table))
    }
}
