//! PASIDs: a device's table of the active-domain cells it translates PASID-tagged DMA through.
//!
//! Each PASID of a group has its own [`ActiveCell`], published exactly like the RID's (one
//! swap, then a fresh generation; swapped-out domains are retired, never dropped), so a PASID
//! replace is hitless (G2) and switches every device of the group that has the PASID attached
//! at one instant (G3). The cells belong to the group on the control plane
//! (`GroupCtl::pasids`); the data plane finds them through the device's own [`PasidTable`], a
//! two-level radix of cell pointers:
//!
//! ```text
//!   top: [AtomicPtr<Leaf>; 2^pasid_bits / 2^LEAF_BITS]   made at bind, fixed size
//!   leaf: [AtomicPtr<ActiveCell>; 2^LEAF_BITS]           made by the first attach in its range
//! ```
//!
//! A lookup is two dependent `Acquire` loads (leaf, cell) after a bounds check against the
//! device's PASID limit; no lock, no allocation, no write. A null leaf or cell means the device
//! has nothing attached at that PASID: its guard faults `Blocked`. The entry is per device, so
//! `device_detach_pasid` of one device (a store of null, then a fence) blocks that device only,
//! while the group's other devices keep translating through the cell.
//!
//! Nodes are created by the control plane (serialized by the object-table lock). A cell an
//! entry points to is kept alive by the table itself ([`PasidTable::set`]), so a reader that
//! loaded a pointer under its pin can always dereference it. Clearing an entry unlinks what
//! only it needed: the table's reference to the cell and, when no entry of its leaf is left,
//! the leaf (its top slot stored null first). Both come back as [`PasidGarbage`], which the
//! detach retires (`Garbage::Pasid`) and frees after the grace period of its fence, as it
//! does for a swapped-out domain: a reader pinned before the unlink may still be using them,
//! one pinned after it finds null. The group's cell for a PASID goes the same way when its
//! last device detaches. So a device's PASID state is what it has attached now: after any
//! number of attach/detach cycles, `synchronize` frees the rest (G9). The lookup is unchanged
//! by any of it: two `Acquire` loads. The per-thread snapshot
//! cache is shared with the RID: a way is validated by the cell's generation, which is unique
//! per publish across every cell of the `Iommu`, so a way never serves a domain for a
//! (group, PASID) it was not filled from.
//!
//! Sizes: 512 cells a leaf (4 KiB); a 20-bit device's top has 2048 entries (16 KiB, at bind),
//! a device without PASIDs none. Under loom a leaf has 2 cells, so a model with 2-bit PASIDs
//! reaches two leaves.

use crate::group::ActiveCell;
use crate::sync::{lock, ptr_mut, Arc, AtomicPtr, Mutex, Ordering};
use crate::types::NO_PASID;
use std::collections::BTreeMap;
use std::ptr::null_mut;

/// log2 of the cells in one leaf.
#[cfg(not(viommu_loom))]
const LEAF_BITS: u32 = 9;
/// log2 of the cells in one leaf (loom-sized).
#[cfg(viommu_loom)]
const LEAF_BITS: u32 = 1;
const LEAF: usize = 1 << LEAF_BITS;

struct Leaf {
    cells: [AtomicPtr<ActiveCell>; LEAF],
}

/// PASID state an unlink left unreachable for new readers: cell references and emptied leaves,
/// freed when this is dropped (by the retired list, after a grace period).
// The payloads are never read: they are held for their `Drop`.
#[allow(dead_code)]
#[derive(Default)]
pub(crate) struct PasidGarbage {
    cells: Vec<Arc<ActiveCell>>,
    leaves: Vec<Box<Leaf>>,
}

impl PasidGarbage {
    /// Adds a cell reference the control plane dropped (a group's cell for a PASID).
    pub(crate) fn push_cell(&mut self, cell: Arc<ActiveCell>) {
        self.cells.push(cell);
    }

    /// Moves `other`'s entries into this one.
    pub(crate) fn append(&mut self, mut other: PasidGarbage) {
        self.cells.append(&mut other.cells);
        self.leaves.append(&mut other.leaves);
    }

    /// True if there is nothing to retire.
    pub(crate) fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.leaves.is_empty()
    }
}

/// A device's PASID → cell table.
pub(crate) struct PasidTable {
    /// PASIDs below this are in range (`0` for a device without PASIDs; [`NO_PASID`], the
    /// RID, is never looked up here).
    limit: u32,
    top: Box<[AtomicPtr<Leaf>]>,
    /// The cell of every entry that is set, by PASID: what keeps a cell a reader may have
    /// loaded alive (a device's cell for a PASID is always its group's one cell for it); a
    /// cleared entry's reference goes to the retired list. Also the count of a leaf's set
    /// entries (a range of keys). A `BTreeMap`, not a `HashMap`: its drop order (of loom
    /// `Arc`s) must be deterministic, and it answers range queries.
    keep: Mutex<BTreeMap<u32, Arc<ActiveCell>>>,
}

impl PasidTable {
    /// An empty table for a device with `pasid_bits`-bit PASIDs (validated at bind: at most 20).
    pub(crate) fn new(pasid_bits: u8) -> PasidTable {
        let limit = if pasid_bits == 0 {
            0
        } else {
            1u32 << pasid_bits
        };
        let leaves = (limit as usize).div_ceil(LEAF);
        PasidTable {
            limit,
            top: (0..leaves).map(|_| AtomicPtr::new(null_mut())).collect(),
            keep: Mutex::new(BTreeMap::new()),
        }
    }

    /// True if `pasid` is a PASID of this device (`1 .. limit`).
    pub(crate) fn in_range(&self, pasid: u32) -> bool {
        pasid != NO_PASID && pasid < self.limit
    }

    /// The cell the device translates PASID `pasid` through, or `None` (nothing attached, or
    /// out of range). The data plane calls it under a guard's pin, after the pin's epoch store.
    #[inline]
    pub(crate) fn lookup(&self, pasid: u32) -> Option<&ActiveCell> {
        if pasid >= self.limit {
            return None;
        }
        let slot = self.top.get((pasid >> LEAF_BITS) as usize)?;
        // ORDERING: [PASID-LEAF] Acquire pairs with the Release store that linked the leaf in
        // `set`: a reader that finds the leaf sees its null-initialized entries.
        let leaf = slot.load(Ordering::Acquire);
        // SAFETY: null or a leaf from `Box::into_raw` in `set`, freed by `Drop` (`&self` is
        // alive) or, once `set` unlinked it, by the retired list after the grace period of the
        // pin this lookup runs under.
        let leaf = unsafe { leaf.as_ref() }?;
        // ORDERING: [PASID-ENTRY] Acquire pairs with the Release store of the entry in `set`: a
        // reader that finds the cell sees it constructed and the domain published into it before
        // the entry was stored.
        let cell = leaf.cells[pasid as usize & (LEAF - 1)].load(Ordering::Acquire);
        // SAFETY: null or a cell whose `Arc` `keep` holds while the entry is set and the retired
        // list holds after `set` cleared it, until the grace period of this pin is over.
        unsafe { cell.as_ref() }
    }

    /// Points PASID `pasid` (in range) at `cell`, or at nothing. Control plane only, serialized
    /// by the object-table lock; a `Some` is stored after the cell's domain was published, a
    /// `None` before the caller's fence. Clearing returns what it unlinked (the table's
    /// reference to the cell, the leaf if no entry of it is left), which the caller retires
    /// before that fence.
    pub(crate) fn set(&self, pasid: u32, cell: Option<&Arc<ActiveCell>>) -> PasidGarbage {
        debug_assert!(self.in_range(pasid));
        let mut garbage = PasidGarbage::default();
        let index = (pasid >> LEAF_BITS) as usize;
        let slot = &self.top[index];
        let mut keep = lock(&self.keep);
        // ORDERING: Relaxed: only the control plane (serialized) stores leaves.
        let mut leaf = slot.load(Ordering::Relaxed);
        let Some(cell) = cell else {
            if leaf.is_null() {
                return garbage;
            }
            // SAFETY: a leaf linked earlier; only this (serialized) path unlinks it.
            let entry = unsafe { &(*leaf).cells[pasid as usize & (LEAF - 1)] };
            // ORDERING: Relaxed: a null store publishes nothing; the caller's fence orders it
            // before every later guard, and what it unlinks is freed only after that fence.
            entry.store(null_mut(), Ordering::Relaxed);
            garbage.cells.extend(keep.remove(&pasid));
            let first = (index as u32) << LEAF_BITS;
            let last = first | (LEAF as u32 - 1);
            if keep.range(first..=last).next().is_none() {
                // ORDERING: Relaxed, as the entry's null store above.
                slot.store(null_mut(), Ordering::Relaxed);
                // SAFETY: from `Box::into_raw` below, unlinked just now (no new reader can
                // find it); the retired list frees it after the caller's grace period.
                garbage.leaves.push(unsafe { Box::from_raw(leaf) });
            }
            return garbage;
        };
        if leaf.is_null() {
            leaf = Box::into_raw(Box::new(Leaf {
                cells: std::array::from_fn(|_| AtomicPtr::new(null_mut())),
            }));
            // ORDERING: [PASID-LEAF] Release pairs with the Acquire leaf load in `lookup`: the
            // leaf's entries are initialized before it can be found.
            slot.store(leaf, Ordering::Release);
        }
        keep.entry(pasid).or_insert_with(|| cell.clone());
        // SAFETY: a leaf linked above or earlier, freed only by `Drop` or by a clear (this
        // serialized path, which a set cannot race).
        let leaf = unsafe { &*leaf };
        // ORDERING: [PASID-ENTRY] Release pairs with the Acquire entry load in `lookup`: the cell
        // and the domain published into it are visible to a reader that finds the pointer.
        leaf.cells[pasid as usize & (LEAF - 1)]
            .store(Arc::as_ptr(cell) as *mut ActiveCell, Ordering::Release);
        garbage
    }
}

impl Drop for PasidTable {
    fn drop(&mut self) {
        for slot in self.top.iter_mut() {
            // `&mut self`: no reader is left.
            let leaf = ptr_mut(slot);
            if !leaf.is_null() {
                // SAFETY: from `Box::into_raw` in `set`, still linked (a cleared leaf's slot is
                // null), freed once here.
                drop(unsafe { Box::from_raw(leaf) });
            }
        }
    }
}
