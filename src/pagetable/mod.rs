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
//! [`PageTable::walk`] walks from the root with one `Acquire` load a level. A reader holds
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
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`PageTable`], its shape and limits, teardown |
//! | `entry.rs` | the entry format ([`Pte`]) |
//! | `table.rs` | one level's table: allocation and freeing |
//! | `walk.rs` | the read side: the walk, translate, stage-2 resolve |
//! | `map.rs` | map: leaf sizes, installing entries and intermediate tables |
//! | `unmap.rs` | unmap and prune: clearing leaves, unlinking emptied tables |
//! | `retired.rs` | [`RetiredTables`]: unlinked tables waiting for their grace period |
//! | `pool.rs` | the pool of emptied tables kept for reuse |

mod entry;
mod map;
mod pool;
mod retired;
mod table;
mod unmap;
mod walk;

pub(crate) use entry::Pte;
pub(crate) use retired::RetiredTables;

use crate::grace::Counters;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, Ordering};
use pool::{Pool, PoolState};
use std::ptr::NonNull;
use table::Table;

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

/// Tables an unmap emptied that stay linked for the next map, at most, before a prune unlinks
/// them all (64 KiB of 4 KiB tables): a map after an unmap in the same region then allocates
/// nothing and retires nothing. Under loom none stay: every unmap prunes what it emptied, at
/// once, so the models check the unlink-and-retire path on every unmap.
#[cfg(not(viommu_loom))]
const EMPTY_LIMIT: usize = 16;
/// See above. Under loom a knob that compares as a `usize` (`writer.empty > EMPTY_LIMIT` reads
/// the same in both builds): none by default, the production 16 when a model asks for it
/// (`loom_shape`).
#[cfg(viommu_loom)]
const EMPTY_LIMIT: loom_shape::Knob = loom_shape::Knob;

/// [`POOL_TABLES`], as the pool reads it: the constant, or under loom the value a model set
/// (`loom_shape`).
#[inline(always)]
fn pool_tables() -> usize {
    #[cfg(viommu_loom)]
    {
        loom_shape::pool()
    }
    #[cfg(not(viommu_loom))]
    {
        POOL_TABLES
    }
}

/// Under loom, the page table's shape knobs. By default the models run with no emptied table
/// kept linked and no table pooled ([`EMPTY_LIMIT`], [`POOL_TABLES`]): every unmap then takes
/// the unlink-and-retire path, and the live-table count shows a premature free. The
/// production build keeps up to 16 emptied tables linked and pools up to 8, paths the default
/// models never reach; a model that checks them sets the production values here first
/// (loom-tests' `tests/prod_shape.rs`), at the start of the model.
#[cfg(viommu_loom)]
#[doc(hidden)]
pub mod loom_shape {
    use std::cell::Cell;
    use std::cmp::Ordering as Cmp;

    std::thread_local! {
        /// Per OS thread: loom runs a model's threads as coroutines on the thread that called
        /// the model, so a model's setting is seen by all of its threads and by no other
        /// model that the test harness runs at the same time.
        pub(super) static EMPTY: Cell<usize> = const { Cell::new(0) };
        pub(super) static POOL: Cell<usize> = const { Cell::new(super::POOL_TABLES) };
    }

    /// Emptied tables an unmap keeps linked before it prunes, in the production build.
    pub const PRODUCTION_EMPTY_LIMIT: usize = 16;
    /// Tables a page table pools for reuse, in the production build.
    pub const PRODUCTION_POOL_TABLES: usize = 8;

    /// Sets how many emptied tables unmaps keep linked and how many tables a page table
    /// pools, for the models run on the calling thread from now on.
    pub fn set(empty_limit: usize, pool_tables: usize) {
        EMPTY.with(|c| c.set(empty_limit));
        POOL.with(|c| c.set(pool_tables));
    }

    /// The pool bound set for this thread.
    pub(super) fn pool() -> usize {
        POOL.with(Cell::get)
    }

    /// A limit read from the calling thread's knob when compared with a `usize`.
    pub(crate) struct Knob;

    impl PartialEq<Knob> for usize {
        fn eq(&self, _: &Knob) -> bool {
            *self == EMPTY.with(Cell::get)
        }
    }

    impl PartialOrd<Knob> for usize {
        fn partial_cmp(&self, _: &Knob) -> Option<Cmp> {
            Some(self.cmp(&EMPTY.with(Cell::get)))
        }
    }
}

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
    /// Tables this page table owns: the root and every linked table (not pooled or retired
    /// ones). Written only under the writer mutex (so `Relaxed`); read by an IOAS's budget
    /// check ([`crate::Budget`]).
    owned: AtomicUsize,
}

/// The bytes one table takes, as budgets count them.
pub(crate) const TABLE_BYTES: u64 = std::mem::size_of::<Table>() as u64;

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
            owned: AtomicUsize::new(1),
        }
    }

    /// How many unmaps have cleared entries so far. A nested IOTLB entry filled after reading
    /// `n` here is stale once this reads more than `n`.
    #[inline]
    pub(crate) fn unmap_generation(&self) -> u64 {
        // ORDERING: [UNMAP-GEN] Acquire pairs with the Release increment in `unmap`: a reader that
        // sees the new count also sees the cleared entries when it walks again.
        self.unmaps.load(Ordering::Acquire)
    }

    /// The last IOVA this table can map.
    pub(crate) fn aperture_last(&self) -> u64 {
        self.aperture_last
    }

    /// Tables this page table owns now (the root and every linked table).
    #[inline]
    pub(crate) fn owned_tables(&self) -> u64 {
        self.owned.load(Ordering::Relaxed) as u64
    }

    /// The most tables that `map(iova, target, len)` can add: for each level below the root,
    /// one table per slot of the level above that a leaf of this level or lower lands in.
    /// Where `iova` and `target` are congruent modulo a large leaf, only the unaligned head
    /// and tail use smaller leaves (one slot each). An upper bound, computed from the
    /// arguments alone in O(levels); tables the range already has count too.
    pub(crate) fn tables_bound(&self, iova: u64, target: u64, len: u64) -> u64 {
        let last = iova + (len - 1);
        let top_leaf = MAX_LEAF_LEVEL.min(self.levels - 1);
        // The largest leaf level the congruence of `iova` and `target` allows.
        let mut congruent = 0;
        while congruent < top_leaf && (iova ^ target) % leaf_size(congruent + 1) == 0 {
            congruent += 1;
        }
        let mut tables = 0u64;
        for level in 0..self.levels - 1 {
            // Tables at `level` hang off the slots of `level + 1`.
            let shift = PAGE_SHIFT + LEVEL_BITS * (level + 1);
            let slots = (last >> shift) - (iova >> shift) + 1;
            tables = tables.saturating_add(if level >= congruent {
                slots
            } else {
                slots.min(2)
            });
        }
        tables
    }

    /// Frees the emptied tables kept for reuse (see [`POOL_TABLES`]).
    pub(crate) fn release_pool(&self) {
        self.pool.drain();
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
