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
//! Nodes are created by the control plane (serialized by the object-table lock) and freed only
//! when the table is dropped, with its device handle: no reader can reach them then. A cell a
//! table ever pointed to is kept alive by the table itself ([`PasidTable::set`]), so a reader
//! that loaded a pointer under its pin can always dereference it. The per-thread snapshot
//! cache is shared with the RID: a way is validated by the cell's generation, which is unique
//! per publish across every cell of the `Iommu`, so a way never serves a domain for a
//! (group, PASID) it was not filled from.
//!
//! Sizes: 512 cells a leaf (4 KiB); a 20-bit device's top has 2048 entries (16 KiB, at bind),
//! a device without PASIDs none. Under loom a leaf has 2 cells, so a model with 2-bit PASIDs
//! reaches two leaves.

use crate::group::ActiveCell;
use crate::sync::{lock, ptr_mut, Arc, AtomicPtr, Mutex, Ordering};
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

/// A device's PASID → cell table.
pub(crate) struct PasidTable {
    /// PASIDs below this are in range (`0` for a device without PASIDs; PASID 0 is never
    /// looked up here).
    limit: u32,
    top: Box<[AtomicPtr<Leaf>]>,
    /// Every cell an entry ever pointed to, by PASID: what keeps a cell a reader may have
    /// loaded alive (a device's cell for a PASID is always its group's one cell for it). A
    /// `BTreeMap`, not a `HashMap`: its drop order (of loom `Arc`s) must be deterministic.
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
        pasid != 0 && pasid < self.limit
    }

    /// The cell the device translates PASID `pasid` through, or `None` (nothing attached, or
    /// out of range). The data plane calls it under a guard's pin, after the pin's epoch store.
    #[inline]
    pub(crate) fn lookup(&self, pasid: u32) -> Option<&ActiveCell> {
        if pasid >= self.limit {
            return None;
        }
        let slot = self.top.get((pasid >> LEAF_BITS) as usize)?;
        // ORDERING: Acquire pairs with the Release store that linked the leaf in `set`: a
        // reader that finds the leaf sees its null-initialized entries.
        let leaf = slot.load(Ordering::Acquire);
        // SAFETY: null or a leaf from `Box::into_raw` in `set`, freed only by `Drop` (`&self`
        // is alive).
        let leaf = unsafe { leaf.as_ref() }?;
        // ORDERING: Acquire pairs with the Release store of the entry in `set`: a reader that
        // finds the cell sees it constructed and the domain published into it before the
        // entry was stored.
        let cell = leaf.cells[pasid as usize & (LEAF - 1)].load(Ordering::Acquire);
        // SAFETY: null or a cell whose `Arc` `keep` holds for as long as the table lives.
        unsafe { cell.as_ref() }
    }

    /// Points PASID `pasid` (in range) at `cell`, or at nothing. Control plane only, serialized
    /// by the object-table lock; a `Some` is stored after the cell's domain was published, a
    /// `None` before the caller's fence.
    pub(crate) fn set(&self, pasid: u32, cell: Option<&Arc<ActiveCell>>) {
        debug_assert!(self.in_range(pasid));
        let slot = &self.top[(pasid >> LEAF_BITS) as usize];
        // ORDERING: Relaxed: only the control plane (serialized) stores leaves.
        let mut leaf = slot.load(Ordering::Relaxed);
        if leaf.is_null() {
            if cell.is_none() {
                return;
            }
            leaf = Box::into_raw(Box::new(Leaf {
                cells: std::array::from_fn(|_| AtomicPtr::new(null_mut())),
            }));
            // ORDERING: Release pairs with the Acquire leaf load in `lookup`: the leaf's
            // entries are initialized before it can be found.
            slot.store(leaf, Ordering::Release);
        }
        let ptr = match cell {
            Some(c) => {
                lock(&self.keep).entry(pasid).or_insert_with(|| c.clone());
                Arc::as_ptr(c) as *mut ActiveCell
            }
            None => null_mut(),
        };
        // SAFETY: a leaf linked above or earlier, freed only by `Drop`.
        let leaf = unsafe { &*leaf };
        // ORDERING: Release pairs with the Acquire entry load in `lookup`: the cell and the
        // domain published into it are visible to a reader that finds the pointer. (A null
        // store needs no ordering of its own; the caller's fence orders it for later guards.)
        leaf.cells[pasid as usize & (LEAF - 1)].store(ptr, Ordering::Release);
    }
}

impl Drop for PasidTable {
    fn drop(&mut self) {
        for slot in self.top.iter_mut() {
            // `&mut self`: no reader is left.
            let leaf = ptr_mut(slot);
            if !leaf.is_null() {
                // SAFETY: from `Box::into_raw` in `set`, linked once, freed once here.
                drop(unsafe { Box::from_raw(leaf) });
            }
        }
    }
}
