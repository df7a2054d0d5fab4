//! The read side: the lock-free walk, translation into chunks, and the stage-2 resolve of
//! nested translation. Callers hold a guard.

use super::table::Table;
use super::{PageTable, Pte, FANOUT, LEVEL_BITS, PAGE_SHIFT};
use crate::sync::Ordering;
use crate::translation::{Chunk, ChunkVec, Fault, FaultKind, Translation};
use crate::types::Access;

impl PageTable {
    /// The target of the single address `addr`, the permissions of the leaf that maps it and
    /// the leaf's size mask (`(target, readable, writable, size - 1)`), or `None` if nothing
    /// maps it. For stage-2 lookups of nested translation; the caller holds a guard.
    #[inline]
    pub(crate) fn resolve(&self, addr: u64) -> Option<(u64, bool, bool, u64)> {
        if addr > self.aperture_last {
            return None;
        }
        let (pte, mask) = self.walk(addr)?;
        Some((
            pte.target() | (addr & mask),
            pte.allows(Access::Read),
            pte.allows(Access::Write),
            mask,
        ))
    }

    /// Finds the leaf that maps `iova`: its entry and level (for the unit tests).
    #[cfg(all(test, not(viommu_loom)))]
    pub(crate) fn lookup(&self, iova: u64) -> Option<(Pte, u32)> {
        self.walk(iova)
            .map(|(pte, mask)| (pte, (mask.count_ones() - PAGE_SHIFT) / LEVEL_BITS))
    }

    /// Finds the leaf that maps `iova`: its entry and the mask of its size (`size - 1`).
    ///
    /// One `Acquire` load a level. An entry with both `VALID` and `TABLE` set names the next
    /// table; anything else ends the walk (a leaf, or nothing): leaves never carry `TABLE`,
    /// at any level, so the bottom level needs no test of its own.
    ///
    /// The common depths (4 levels: 48-bit IOVAs, the default; 3 levels: 39 bits) are walked
    /// with the depth a constant, so the loop unrolls into shifts by constants (a third fewer
    /// instructions a walk than the loop over a variable depth, measured with callgrind).
    #[inline(always)]
    fn walk(&self, iova: u64) -> Option<(Pte, u64)> {
        match self.levels {
            4 => self.walk_levels::<4>(iova),
            3 => self.walk_levels::<3>(iova),
            _ => self.walk_any(iova),
        }
    }

    /// [`PageTable::walk`] of a table of exactly `L` levels.
    #[inline(always)]
    fn walk_levels<const L: u32>(&self, iova: u64) -> Option<(Pte, u64)> {
        debug_assert_eq!(self.levels, L);
        let mut table = self.root.as_ptr() as *const Table;
        let mut level = L;
        loop {
            level -= 1;
            let shift = PAGE_SHIFT + LEVEL_BITS * level;
            // SAFETY: as in `walk_any`.
            let pte = unsafe { Self::load_entry(table, iova, shift) };
            if !pte.is_table_link() || level == 0 {
                return pte.is_valid().then_some((pte, (1u64 << shift) - 1));
            }
            table = pte.table_ptr() as *const Table;
        }
    }

    /// [`PageTable::walk`] of a table of any depth.
    #[inline(always)]
    fn walk_any(&self, iova: u64) -> Option<(Pte, u64)> {
        let mut table = self.root.as_ptr() as *const Table;
        let mut shift = PAGE_SHIFT + LEVEL_BITS * (self.levels - 1);
        loop {
            // SAFETY: `table` is the root (alive as long as `self`) or was read from a valid
            // table entry while the caller holds a guard (its grace-period pin); tables are
            // unlinked before they are retired and retired ones are freed only after every
            // guard that could reach them is gone (`crate::grace`).
            let pte = unsafe { Self::load_entry(table, iova, shift) };
            if !pte.is_table_link() {
                return pte.is_valid().then_some((pte, (1u64 << shift) - 1));
            }
            table = pte.table_ptr() as *const Table;
            shift -= LEVEL_BITS;
        }
    }

    /// The entry of `table` that `iova` selects at the level of `shift`.
    ///
    /// # Safety
    ///
    /// `table` is the root or was read from a valid table entry while the caller holds a guard
    /// (as in `walk_any`).
    #[inline(always)]
    unsafe fn load_entry(table: *const Table, iova: u64, shift: u32) -> Pte {
        // SAFETY: the caller's contract: the table is alive while its guard pins it.
        let slot = unsafe { &(*table).entries[((iova >> shift) as usize) & (FANOUT - 1)] };
        #[cfg(viommu_loom)]
        {
            // SAFETY: as above: the table is alive while the caller's guard pins it.
            let t = unsafe { &*table };
            t.freed.with(|p| {
                // SAFETY: `p` is valid for the closure's duration; loom tracks this read,
                // which races with the write in `drop` if the walk reached a table that is
                // being freed.
                let freed = unsafe { *p };
                assert!(!freed, "a walk reached a freed page table");
            });
        }
        // ORDERING: [PTE] Acquire pairs with the Release stores in `install` (a new table's
        // zeroed entries and a leaf are visible once the entry that names them is).
        Pte(slot.load(Ordering::Acquire))
    }

    /// Translates `iova ..= last` for `access`: the maximal chunks that cover it, or the
    /// first IOVA that cannot be translated.
    ///
    /// The common case, a request inside one leaf, is one walk and one inline chunk; longer
    /// requests continue in [`PageTable::translate_rest`].
    #[inline(always)]
    pub(crate) fn translate(
        &self,
        iova: u64,
        last: u64,
        access: Access,
    ) -> Result<Translation<'static>, Fault> {
        if last > self.aperture_last {
            return Err(self.aperture_fault(iova));
        }
        let (pte, mask) = self.leaf_for(iova, access)?;
        let first = Chunk {
            iova,
            target: pte.target() | (iova & mask),
            len: (iova | mask).min(last) - iova + 1,
        };
        if last <= iova | mask {
            // The common case: one leaf, one chunk, built in place; no join with the longer
            // path below (where the two met, the compiler moved the chunk list through odd
            // offsets and the caller's reads stalled on store forwarding: 3x a hit).
            return Ok(Translation::one(first));
        }
        self.translate_long(first, (iova | mask) + 1, last, access)
    }

    /// The piece of `iova ..= last` that the leaf mapping `iova` covers, for `access`: one
    /// walk, returned in registers ([`crate::DmaGuard::translate_chunk`]). The caller has
    /// checked `last` against the aperture.
    #[inline(always)]
    pub(crate) fn translate_chunk(
        &self,
        iova: u64,
        last: u64,
        access: Access,
    ) -> Result<Chunk, Fault> {
        let (pte, mask) = self.leaf_for(iova, access)?;
        Ok(Chunk {
            iova,
            target: pte.target() | (iova & mask),
            len: (iova | mask).min(last) - iova + 1,
        })
    }

    /// A request that spans more than one leaf: the first chunk, then the rest.
    #[inline(never)]
    fn translate_long(
        &self,
        first: Chunk,
        next: u64,
        last: u64,
        access: Access,
    ) -> Result<Translation<'static>, Fault> {
        let mut chunks = ChunkVec::new();
        chunks.push(first);
        self.translate_rest(next, last, access, &mut chunks)?;
        Ok(Translation::new(chunks))
    }

    #[cold]
    pub(crate) fn aperture_fault(&self, iova: u64) -> Fault {
        let at = if iova > self.aperture_last {
            iova
        } else {
            self.aperture_last + 1
        };
        Fault {
            iova: at,
            kind: FaultKind::Aperture,
        }
    }

    /// The leaf that maps `iova`, if it allows `access`.
    #[inline(always)]
    fn leaf_for(&self, iova: u64, access: Access) -> Result<(Pte, u64), Fault> {
        let Some((pte, mask)) = self.walk(iova) else {
            return Err(Fault {
                iova,
                kind: FaultKind::Unmapped,
            });
        };
        if !pte.allows(access) {
            return Err(Fault {
                iova,
                kind: FaultKind::Permission,
            });
        }
        Ok((pte, mask))
    }

    /// Appends the chunks that cover `iova ..= last` to `out`, merging each with the chunk
    /// before it when the targets are contiguous.
    #[inline(never)]
    pub(crate) fn translate_rest(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        out: &mut ChunkVec,
    ) -> Result<(), Fault> {
        let mut cur = iova;
        loop {
            let (pte, mask) = self.leaf_for(cur, access)?;
            let target = pte.target() | (cur & mask);
            let end = (cur | mask).min(last);
            let len = end - cur + 1;
            match out.last_mut() {
                // Never across the top of the target space: a chunk ending at 2^64 and one
                // starting at 0 are not contiguous memory.
                Some(c) if c.target.checked_add(c.len) == Some(target) => c.len += len,
                _ => out.push(Chunk {
                    iova: cur,
                    target,
                    len,
                }),
            }
            if end == last {
                return Ok(());
            }
            cur = end + 1;
        }
    }
}
