//! The I/O page table: a radix tree of atomic 64-bit entries that DMA translation walks
//! without a lock.
//!
//! # Shape
//!
//! A 4 KiB granule, `LEVEL_BITS` (9) bits of IOVA a level, as many levels as the aperture
//! needs (4 for 48 bits, 3 for 39, 6 for 64). Leaves can sit at level 0 (4 KiB), 1 (2 MiB) or
//! 2 (1 GiB): `map` uses the largest leaf whose size both the IOVA and the target are aligned
//! to and the remaining length covers. Under the `viommu_loom` cfg a level has 2 bits (a
//! 4-entry table) so that loom models stay small; the code is the same.
//!
//! # Readers
//!
//! [`PageTable::lookup`] walks from the root with one `Acquire` load a level. A reader holds
//! a guard (a grace-period pin, [`crate::grace`]), which keeps every table it can reach
//! alive: tables are freed only after a grace period. An entry is written with one atomic store, so a reader
//! sees a leaf whole or not at all.
//!
//! # Writers
//!
//! Writers are serialized by the table's `writer` mutex (always uncontended: the IOAS lock is
//! held around every write, the mutex only makes the serialization a fact of this type rather
//! than of its callers). A new intermediate table is zero-filled *before* the `Release` store
//! that links it, so a reader that follows the link sees zeros or later leaves, never garbage.
//! `unmap` clears leaves and leaves the tables it emptied linked, for the next map, up to
//! `EMPTY_LIMIT` of them; past that (and in `prune`, which `Iommu::synchronize` calls) every
//! empty table is unlinked, bottom-up, into a [`RetiredTables`] list that the caller retires.
//! No table a reader might be walking is ever freed in place.
//!
//! Each table counts its non-empty entries (`live`); the count is written only under the
//! writer mutex, so `Relaxed` suffices for it.
//!
//! # Table reuse
//!
//! A table that a prune unlinked is all zeros. Once its grace period is over (the
//! [`RetiredTables`] list is dropped by the thread that collects it) no reader can reach it,
//! so up to [`POOL_TABLES`] of them go back to their page table's pool instead of to the
//! allocator, and the next map that needs a table takes one from there: a 4 KiB map after a
//! 4 KiB unmap then allocates and zeroes nothing. Pooled tables stay counted in
//! `Counters::tables` (they are allocated memory); the pool is bounded and freed with its page
//! table, so memory after `synchronize` is the baseline plus at most `POOL_TABLES` tables a
//! page table.

mod entry;

pub(crate) use entry::Pte;

use crate::grace::Counters;
use crate::sync::{lock, Arc, AtomicU32, AtomicU64, Mutex, Ordering};
use crate::translation::{Chunk, Fault, FaultKind};
use crate::translation::{ChunkVec, Translation};
use crate::types::{Access, Prot, PAGE_SIZE};
use smallvec::SmallVec;
use std::ptr::NonNull;

/// IOVA bits translated by one level.
#[cfg(not(viommu_loom))]
pub(crate) const LEVEL_BITS: u32 = 9;
/// IOVA bits translated by one level (loom-sized: 4-entry tables).
#[cfg(viommu_loom)]
pub(crate) const LEVEL_BITS: u32 = 2;

/// Entries a table.
pub(crate) const FANOUT: usize = 1 << LEVEL_BITS;
const PAGE_SHIFT: u32 = 12;
/// The highest level that holds leaves: 4 KiB, 2 MiB, 1 GiB with 9-bit levels.
const MAX_LEAF_LEVEL: u32 = 2;

/// One level's table. 64-byte aligned so a pointer leaves the entry's flag bits free.
#[repr(C, align(64))]
struct Table {
    entries: [AtomicU64; FANOUT],
    /// Non-empty entries; written only by the (serialized) writer.
    live: AtomicU32,
    /// Under loom only: written when the table is freed and read by every walk that visits
    /// it, so a walk that reaches a freed table is a data race loom reports (loom does not
    /// see a use after free by itself).
    #[cfg(viommu_loom)]
    freed: crate::sync::TrackedUnsafeCell<bool>,
}

#[cfg(viommu_loom)]
impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: a loom-tracked write; `&mut self` is exclusive.
        self.freed.with_mut(|p| unsafe { *p = true });
    }
}

/// Tables an unmap emptied that stay linked for the next map, at most, before a prune unlinks
/// them all (64 KiB of 4 KiB tables): a map after an unmap in the same region then allocates
/// nothing and retires nothing. Under loom none stay: every unmap prunes what it emptied, at
/// once, so the models check the unlink-and-retire path on every unmap.
#[cfg(not(viommu_loom))]
const EMPTY_LIMIT: usize = 16;
/// See above.
#[cfg(viommu_loom)]
const EMPTY_LIMIT: usize = 0;

/// What the writer mutex guards besides the tables.
struct Writer {
    /// Linked tables (never the root) whose entries are all empty: counted when an unmap
    /// empties one, uncounted when a map puts an entry back or a prune unlinks it.
    empty: usize,
}

/// Emptied tables a page table keeps for reuse, at most (about 33 KiB).
#[cfg(not(viommu_loom))]
pub(crate) const POOL_TABLES: usize = 8;
/// None under loom: a retired table goes back to the pool at exactly the point where it would
/// otherwise be freed (`RetiredTables::drop`, after its grace period), so the models check
/// that point with the pool off, where the live-table count shows it (with a pooled table
/// still counted, a premature hand-back would be invisible to them).
#[cfg(viommu_loom)]
pub(crate) const POOL_TABLES: usize = 0;

/// A page table's reusable tables: emptied, unlinked, past their grace period, all zeros.
/// Shared with the [`RetiredTables`] lists that return tables to it, which may outlive the
/// page table (then `closed` is set and they free their tables instead).
struct Pool {
    state: Mutex<PoolState>,
    counters: Arc<Counters>,
}

struct PoolState {
    tables: Vec<NonNull<Table>>,
    closed: bool,
}

// SAFETY: the pooled tables are unreachable by readers and owned by the pool alone; every
// access goes through the mutex.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    /// A pooled table, if there is one.
    fn take(&self) -> Option<NonNull<Table>> {
        lock(&self.state).tables.pop()
    }

    /// Keeps as many of `tables` for reuse as there is room for (one lock); returns the
    /// rest, for the caller to free.
    fn give<'t>(&self, tables: &'t [NonNull<Table>]) -> &'t [NonNull<Table>] {
        let mut st = lock(&self.state);
        if st.closed {
            return tables;
        }
        let keep = POOL_TABLES
            .saturating_sub(st.tables.len())
            .min(tables.len());
        st.tables.extend_from_slice(&tables[..keep]);
        &tables[keep..]
    }

    /// Frees every pooled table (`Iommu::synchronize`, so that memory returns to its
    /// baseline, G9); the pool fills again with later unmaps.
    fn drain(&self) {
        let tables = std::mem::take(&mut lock(&self.state).tables);
        for t in tables {
            // SAFETY: pooled tables are unreachable by readers and owned by the pool.
            unsafe { Table::free(t, &self.counters) };
        }
    }

    /// Frees every pooled table and refuses new ones (the page table is being dropped).
    fn close(&self) {
        let tables = {
            let mut st = lock(&self.state);
            st.closed = true;
            std::mem::take(&mut st.tables)
        };
        for t in tables {
            // SAFETY: pooled tables are unreachable by readers and owned by the pool.
            unsafe { Table::free(t, &self.counters) };
        }
    }
}

impl Table {
    /// Frees a table that no reader can reach and that nothing else owns.
    ///
    /// # Safety
    ///
    /// `table` came from [`Table::alloc`], is unreachable by readers and is freed once.
    unsafe fn free(table: NonNull<Table>, counters: &Counters) {
        // SAFETY: allocated by `Table::alloc` as a Box; the caller guarantees the rest.
        drop(unsafe { Box::from_raw(table.as_ptr()) });
        counters.tables.fetch_sub(1, Ordering::Relaxed);
    }

    fn alloc(counters: &Counters) -> NonNull<Table> {
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

/// The size in bytes of a leaf at `level`.
#[inline]
fn leaf_size(level: u32) -> u64 {
    1u64 << (PAGE_SHIFT + LEVEL_BITS * level)
}

#[inline]
fn index(iova: u64, level: u32) -> usize {
    ((iova >> (PAGE_SHIFT + LEVEL_BITS * level)) as usize) & (FANOUT - 1)
}

/// A radix I/O page table. See the module docs for the protocol.
pub(crate) struct PageTable {
    root: NonNull<Table>,
    levels: u32,
    /// The last IOVA the table can hold (`2^bits - 1`).
    aperture_last: u64,
    writer: Mutex<Writer>,
    counters: Arc<Counters>,
    /// Emptied tables kept for reuse (see the module docs).
    pool: Arc<Pool>,
    /// Counts the unmaps of this table: the stage-2 half of a nested domain's IOTLB
    /// stamp ([`crate::nested`]). Bumped after the entries are cleared.
    unmaps: AtomicU64,
}

// SAFETY: the tables behind the raw pointers are only read and written through atomics;
// writers are serialized by `writer`; tables are freed only after a grace period
// (unmap) or by `Drop`, which has exclusive access.
unsafe impl Send for PageTable {}
// SAFETY: as above: shared access only performs atomic operations on the tables.
unsafe impl Sync for PageTable {}

impl PageTable {
    /// A table for IOVAs `0 .. 2^iova_bits` (`iova_bits` in 13 ..= 64).
    pub(crate) fn new(iova_bits: u8, counters: Arc<Counters>) -> PageTable {
        let bits = u32::from(iova_bits).clamp(PAGE_SHIFT + 1, 64);
        let levels = (bits - PAGE_SHIFT).div_ceil(LEVEL_BITS);
        let aperture_last = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        PageTable {
            root: Table::alloc(&counters),
            levels,
            aperture_last,
            writer: Mutex::new(Writer { empty: 0 }),
            pool: Arc::new(Pool {
                state: Mutex::new(PoolState {
                    tables: Vec::new(),
                    closed: false,
                }),
                counters: counters.clone(),
            }),
            counters,
            unmaps: AtomicU64::new(0),
        }
    }

    /// How many unmaps have cleared entries so far. A nested IOTLB entry filled after reading
    /// `n` here is stale once this reads more than `n`.
    #[inline]
    pub(crate) fn unmap_generation(&self) -> u64 {
        // ORDERING: Acquire pairs with the Release increment in `unmap`: a reader that sees
        // the new count also sees the cleared entries when it walks again.
        self.unmaps.load(Ordering::Acquire)
    }

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

    /// The last IOVA this table can map.
    pub(crate) fn aperture_last(&self) -> u64 {
        self.aperture_last
    }

    /// Frees the emptied tables kept for reuse (see [`POOL_TABLES`]).
    pub(crate) fn release_pool(&self) {
        self.pool.drain();
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
        // ORDERING: Acquire pairs with the Release stores in `install` (a new table's
        // zeroed entries and a leaf are visible once the entry that names them is).
        Pte(slot.load(Ordering::Acquire))
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
    fn aperture_fault(&self, iova: u64) -> Fault {
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
                // ORDERING: Release pairs with the Acquire load in `lookup`.
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
                // ORDERING: Release pairs with the Acquire load in `lookup`: the child's
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
        unsafe { self.clear(&mut writer, self.root, self.levels - 1, 0, iova, last) };
        if writer.empty > EMPTY_LIMIT {
            self.prune_locked(&mut writer, retired);
        }
        // ORDERING: Release pairs with the Acquire load in `unmap_generation`, and comes after
        // the clearing stores: a nested IOTLB entry stamped with an older count is never used
        // once a reader sees this one, and a reader that sees it walks the cleared table.
        self.unmaps.fetch_add(1, Ordering::Release);
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
            }
        }
    }

    /// Frees `table` and everything below it.
    ///
    /// # Safety
    ///
    /// No reader can reach `table` any more, and it is freed only once.
    unsafe fn free_tree(&self, table: NonNull<Table>, level: u32) {
        if level > 0 {
            // SAFETY: the caller guarantees the table is alive and exclusively ours.
            let t = unsafe { table.as_ref() };
            for slot in &t.entries {
                let pte = Pte(slot.load(Ordering::Relaxed));
                if pte.is_valid() && pte.is_table() {
                    // SAFETY: a linked child, also unreachable by readers, freed once.
                    unsafe {
                        self.free_tree(
                            NonNull::new_unchecked(pte.table_ptr() as *mut Table),
                            level - 1,
                        )
                    };
                }
            }
        }
        // SAFETY: allocated by `Table::alloc`; unreachable and freed once (the caller).
        unsafe { Table::free(table, &self.counters) };
    }
}

/// Page-table nodes an unmap unlinked, waiting for their grace period
/// ([`crate::grace::Garbage::Tables`]); dropping this hands them back to their page tables'
/// pools (bounded) or frees them.
#[derive(Default)]
pub(crate) struct RetiredTables {
    /// The nodes, inline for a few (a 4 KiB unmap empties up to three).
    tables: SmallVec<[NonNull<Table>; 4]>,
    /// The pool of each run of `tables`: `(pool, end)` covers `tables[previous end .. end]`.
    pools: SmallVec<[(Arc<Pool>, usize); 1]>,
}

// SAFETY: the nodes are unlinked and owned by this list alone; nothing else touches them.
unsafe impl Send for RetiredTables {}

impl RetiredTables {
    fn push(&mut self, table: NonNull<Table>, pool: &Arc<Pool>) {
        self.tables.push(table);
        let end = self.tables.len();
        match self.pools.last_mut() {
            Some((p, e)) if Arc::ptr_eq(p, pool) => *e = end,
            _ => self.pools.push((pool.clone(), end)),
        }
    }

    /// True if nothing was retired.
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

impl Drop for RetiredTables {
    fn drop(&mut self) {
        let mut begin = 0;
        for (pool, end) in self.pools.drain(..) {
            // Each node is unlinked (no new reader can reach it) and empty (all zeros, no
            // children); the list is dropped only after a grace period, when no guard that
            // reached it before the unlink is alive; each node is in one list once. So it may
            // be reused as a fresh table, or freed.
            for &table in pool.give(&self.tables[begin..end]) {
                // SAFETY: as above.
                unsafe { Table::free(table, &pool.counters) };
            }
            begin = end;
        }
    }
}

impl Drop for PageTable {
    fn drop(&mut self) {
        // SAFETY: a page table is dropped with its domain, when the last reference to the
        // domain is gone: no reader holds it, so no reader can reach any of its tables.
        unsafe { self.free_tree(self.root, self.levels - 1) };
        // Retired lists still waiting for their grace period free their nodes from now on.
        self.pool.close();
    }
}

#[cfg(all(test, not(viommu_loom)))]
mod tests;
