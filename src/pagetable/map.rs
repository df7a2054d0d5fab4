//! Map: the largest leaves that fit, installed under the writer lock, with the intermediate
//! tables they need (pooled ones first).

use super::table::Table;
use super::{index, leaf_size, PageTable, Pte, Writer, MAX_LEAF_LEVEL};
use crate::sync::{lock, Ordering};
use crate::types::{Prot, PAGE_SIZE};
use std::ptr::NonNull;

impl PageTable {
    /// Maps `len` bytes at `iova` to `target`. All three are page aligned, the range lies in
    /// the aperture, and nothing in it is mapped (the IOAS checked all of that).
    pub(crate) fn map(&self, mut iova: u64, mut target: u64, len: u64, prot: Prot) {
        let mut writer = lock(&self.writer);
        debug_assert!(iova % PAGE_SIZE == 0 && target % PAGE_SIZE == 0 && len % PAGE_SIZE == 0);
        debug_assert!(iova
            .checked_add(len - 1)
            .is_some_and(|l| l <= self.aperture_last));
        let top_leaf = MAX_LEAF_LEVEL.min(self.levels - 1);
        let mut remaining = len;
        while remaining > 0 {
            let mut level = top_leaf;
            while level > 0 {
                let size = leaf_size(level);
                if iova % size == 0 && target % size == 0 && remaining >= size {
                    break;
                }
                level -= 1;
            }
            // An emptied table an unmap left linked may hold the slot of a large leaf: then
            // the leaf goes inside it, one level down (the range is unmapped, so the table's
            // subtree is empty).
            while !self.install(&mut writer, iova, level, Pte::leaf(target, prot)) {
                level -= 1;
            }
            let size = leaf_size(level);
            remaining -= size;
            iova = iova.wrapping_add(size);
            target = target.wrapping_add(size);
        }
    }

    /// Installs one leaf at `level`; the caller holds the writer lock (`writer`). False (and
    /// nothing changed) if the leaf's slot holds a link to a table (an emptied one that an
    /// unmap left linked).
    #[must_use]
    fn install(&self, writer: &mut Writer, iova: u64, leaf_level: u32, pte: Pte) -> bool {
        let mut table = self.root;
        let mut level = self.levels - 1;
        loop {
            // SAFETY: `table` is the root or a table linked below it; only the writer (us,
            // serialized by the writer lock) unlinks tables, so it is alive.
            let t = unsafe { table.as_ref() };
            let slot = &t.entries[index(iova, level)];
            if level == leaf_level {
                let cur = Pte(slot.load(Ordering::Relaxed));
                if cur.is_table_link() {
                    return false;
                }
                debug_assert_eq!(cur.0, 0, "mapping over a mapping");
                // ORDERING: [PTE] Release pairs with the Acquire load in `lookup`: a leaf is
                // self-contained, Release keeps the argument uniform with the table link below.
                slot.store(pte.0, Ordering::Release);
                t.live.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            let cur = Pte(slot.load(Ordering::Relaxed));
            if cur.is_valid() {
                debug_assert!(cur.is_table(), "mapping inside a huge leaf");
                // SAFETY: a valid table entry points to a live table (see above).
                table = unsafe { NonNull::new_unchecked(cur.table_ptr() as *mut Table) };
                // SAFETY: as above.
                if unsafe { table.as_ref() }.live.load(Ordering::Relaxed) == 0 {
                    // An emptied table kept linked (every one is counted): it gets an entry
                    // below now.
                    debug_assert!(writer.empty > 0, "an uncounted empty table");
                    writer.empty = writer.empty.saturating_sub(1);
                }
            } else {
                let child = self.alloc_table();
                self.owned.fetch_add(1, Ordering::Relaxed);
                // ORDERING: [PTE] Release pairs with the Acquire load in `lookup`: the child's
                // zeroed entries are visible to a reader that follows this link (for a pooled
                // table, its clearing stores happen before the pool's mutex handed it to us).
                slot.store(Pte::table(child.as_ptr() as *const u8).0, Ordering::Release);
                t.live.fetch_add(1, Ordering::Relaxed);
                table = child;
            }
            level -= 1;
        }
    }

    /// An all-zero table for `install`: a pooled one, else a fresh one.
    fn alloc_table(&self) -> NonNull<Table> {
        match self.pool.take() {
            Some(t) => {
                debug_assert!({
                    // SAFETY: pooled tables are alive and owned by the pool (now by us).
                    let tr = unsafe { t.as_ref() };
                    tr.live.load(Ordering::Relaxed) == 0
                        && tr.entries.iter().all(|e| e.load(Ordering::Relaxed) == 0)
                });
                t
            }
            None => Table::alloc(&self.counters),
        }
    }
}
