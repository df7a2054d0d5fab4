//! Unmap and prune: clearing leaves, keeping a few emptied tables linked for the next map,
//! and unlinking the rest into a [`RetiredTables`] list.

use super::table::Table;
use super::{index, leaf_size};
use super::{PageTable, Pte, RetiredTables, Writer, EMPTY_LIMIT, FANOUT, LEVEL_BITS, PAGE_SHIFT};
use crate::sync::{lock, Ordering};
use std::ptr::NonNull;

impl PageTable {
    /// Clears every leaf in `iova .. iova + len` (whole leaves: the IOAS never splits one).
    /// Tables it empties stay linked for the next map, up to [`EMPTY_LIMIT`] of them; past
    /// that every empty table is unlinked into `retired` ([`PageTable::prune`]).
    pub(crate) fn unmap(&self, iova: u64, len: u64, retired: &mut RetiredTables) {
        let mut writer = lock(&self.writer);
        let last = iova + (len - 1);
        let last = last.min(self.aperture_last);
        if iova > last {
            return;
        }
        // SAFETY: the root is ours; the writer lock is held.
        if !unsafe { self.clear_one_leaf(&mut writer, iova, last) } {
            // SAFETY: as above.
            unsafe { self.clear(&mut writer, self.root, self.levels - 1, 0, iova, last) };
        }
        if writer.empty > EMPTY_LIMIT {
            self.prune_locked(&mut writer, retired);
        }
        // ORDERING: [UNMAP-GEN] Release pairs with the Acquire load in `unmap_generation`, and
        // comes after the clearing stores: a nested IOTLB entry stamped with an older count is
        // never used once a reader sees this one, and a reader that sees it walks the cleared
        // table.
        self.unmaps.fetch_add(1, Ordering::Release);
    }

    /// The common unmap, one leaf exactly (a 4 KiB page, or one 2 MiB or 1 GiB block): walks
    /// straight to it and clears it, with the bookkeeping `clear` would do (the leaf's table
    /// counted empty if this was its last entry; the tables above keep their links, so their
    /// counts do not change). False, having changed nothing, if `iova ..= last` is not one
    /// leaf: `clear` handles every other case.
    ///
    /// # Safety
    ///
    /// The writer lock is held.
    unsafe fn clear_one_leaf(&self, writer: &mut Writer, iova: u64, last: u64) -> bool {
        let mut table = self.root;
        let mut level = self.levels - 1;
        loop {
            // SAFETY: `table` is the root or a table linked below it; writes are ours alone.
            let t = unsafe { table.as_ref() };
            let slot = &t.entries[index(iova, level)];
            let pte = Pte(slot.load(Ordering::Relaxed));
            if level > 0 && pte.is_table_link() {
                // SAFETY: a valid table entry of a linked table points to a linked table.
                table = unsafe { NonNull::new_unchecked(pte.table_ptr() as *mut Table) };
                level -= 1;
                continue;
            }
            let size = leaf_size(level);
            if !pte.is_valid() || iova % size != 0 || last - iova != size - 1 {
                return false;
            }
            // ORDERING: Relaxed, as a cleared leaf in `clear`.
            slot.store(0, Ordering::Relaxed);
            if t.live.fetch_sub(1, Ordering::Relaxed) == 1 && table != self.root {
                writer.empty += 1;
            }
            return true;
        }
    }

    /// Clears `start ..= last` below `table`, which covers IOVAs from `base` at `level`.
    ///
    /// # Safety
    ///
    /// The writer lock is held and `table` is linked in this page table.
    unsafe fn clear(
        &self,
        writer: &mut Writer,
        table: NonNull<Table>,
        level: u32,
        base: u64,
        start: u64,
        last: u64,
    ) {
        // SAFETY: the caller guarantees `table` is linked and writes are ours alone.
        let t = unsafe { table.as_ref() };
        let shift = PAGE_SHIFT + LEVEL_BITS * level;
        let first_idx = ((start - base) >> shift) as usize;
        let last_idx = (((last - base) >> shift) as usize).min(FANOUT - 1);
        for idx in first_idx..=last_idx {
            let slot = &t.entries[idx];
            let pte = Pte(slot.load(Ordering::Relaxed));
            if !pte.is_valid() {
                continue;
            }
            if level == 0 || !pte.is_table() {
                // ORDERING: Relaxed: a reader that loads the 0 reads nothing through it, and
                // one that still loads the old leaf is waited for by the unmap's fence. Guards
                // made after the fence see the 0 through the fence's bump (an AcqRel RMW after
                // this store, and the unmap count's Release increment for nested IOTLBs).
                // Seen: Release here is not load-bearing (the loom models pass either way).
                slot.store(0, Ordering::Relaxed);
                t.live.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let child_base = base + ((idx as u64) << shift);
            let child_last = child_base + ((1u64 << shift) - 1);
            // SAFETY: a valid table entry of a linked table points to a linked table.
            let child = unsafe { NonNull::new_unchecked(pte.table_ptr() as *mut Table) };
            // SAFETY: as above; the writer lock is still held.
            let was_empty = unsafe { child.as_ref() }.live.load(Ordering::Relaxed) == 0;
            // SAFETY: as above.
            unsafe {
                self.clear(
                    writer,
                    child,
                    level - 1,
                    child_base,
                    start.max(child_base),
                    last.min(child_last),
                )
            };
            // SAFETY: `child` is still linked (only this writer unlinks).
            if !was_empty && unsafe { child.as_ref() }.live.load(Ordering::Relaxed) == 0 {
                writer.empty += 1;
            }
        }
    }

    /// Unlinks every empty table (bottom-up, so a table left empty by its children's unlink
    /// goes too) into `retired`, for the caller to retire: `Iommu::synchronize` calls it so
    /// that memory returns to its baseline (G9).
    pub(crate) fn prune(&self, retired: &mut RetiredTables) {
        let mut writer = lock(&self.writer);
        if writer.empty > 0 {
            self.prune_locked(&mut writer, retired);
        }
    }

    fn prune_locked(&self, writer: &mut Writer, retired: &mut RetiredTables) {
        // SAFETY: the root is ours; the writer lock is held.
        unsafe { self.prune_below(self.root, self.levels - 1, retired) };
        writer.empty = 0;
    }

    /// Unlinks the empty tables below `table` (at `level`) into `retired`.
    ///
    /// # Safety
    ///
    /// The writer lock is held and `table` is linked in this page table.
    unsafe fn prune_below(&self, table: NonNull<Table>, level: u32, retired: &mut RetiredTables) {
        if level == 0 {
            return;
        }
        // SAFETY: the caller guarantees `table` is linked and writes are ours alone.
        let t = unsafe { table.as_ref() };
        for slot in &t.entries {
            let pte = Pte(slot.load(Ordering::Relaxed));
            if !pte.is_table_link() {
                continue;
            }
            // SAFETY: a valid table entry of a linked table points to a linked table.
            let child = unsafe { NonNull::new_unchecked(pte.table_ptr() as *mut Table) };
            // SAFETY: as above; the writer lock is still held.
            unsafe { self.prune_below(child, level - 1, retired) };
            // SAFETY: `child` is still linked (only this writer unlinks).
            if unsafe { child.as_ref() }.live.load(Ordering::Relaxed) == 0 {
                // ORDERING: Relaxed, as a cleared leaf in `clear`: the unlinked table is freed
                // only after a grace period whose bump (an AcqRel RMW) comes after this store,
                // and a reader that still follows the old link is one that period waits for.
                slot.store(0, Ordering::Relaxed);
                t.live.fetch_sub(1, Ordering::Relaxed);
                retired.push(child, &self.pool);
                self.owned.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
