//! The per-thread IOTLB of nested translations: a direct-mapped table of finished
//! translations in thread-local storage, so a lookup or a fill writes only the calling
//! thread's own memory (G11) and allocates nothing (the table is static thread-local storage,
//! G13).
//!
//! An entry is a region that both stages map linearly ([`Leaf`]: 4 KiB, 2 MiB or 1 GiB, the
//! smaller of the two stages' leaves), tagged with (nested domain uid, substream, first IOVA,
//! size), in the slot of its first IOVA. A lookup probes the slot of the request's page as a
//! 4 KiB region, then as part of a 2 MiB and a 1 GiB one: a large buffer in a block mapping
//! takes one entry and one walk, however many pages it spans. An entry carries the stamp it
//! was filled under ([`super::NestedDomain`]); a lookup uses it only when the caller's current
//! stamp is the same. Entries of domains that are gone are never matched again (uids are not
//! reused) and are overwritten in time.
//!
//! The table is borrowed only for the copy of one entry, never across a walk: a walk calls the
//! caller's [`super::TableMemory`], which may itself translate on this thread.

use super::Leaf;
use std::cell::RefCell;

/// Entries (a power of two): 64 × 40 bytes.
const ENTRIES: usize = 64;

#[derive(Clone, Copy)]
struct Entry {
    /// 0: empty (uids start at 1).
    uid: u64,
    /// The region's first IOVA.
    iova: u64,
    stamp: u64,
    /// Where `iova` lands.
    target: u64,
    ssid: u32,
    /// Bit 0 readable, bit 1 writable; bits 8.. the region's size as a shift (12, 21, 30).
    perms: u32,
}

const EMPTY: Entry = Entry {
    uid: 0,
    iova: 0,
    stamp: 0,
    target: 0,
    ssid: 0,
    perms: 0,
};

/// The region sizes an entry may have, as shifts, smallest first (the lookup's probe order).
const SHIFTS: [u32; 3] = [12, 21, 30];

struct Iotlb {
    entries: [Entry; ENTRIES],
}

#[cfg(not(viommu_loom))]
thread_local! {
    static IOTLB: RefCell<Iotlb> = const { RefCell::new(Iotlb { entries: [EMPTY; ENTRIES] }) };
}

// loom's `thread_local!` takes no `const { }` initializer.
#[cfg(viommu_loom)]
#[allow(clippy::missing_const_for_thread_local)]
mod local {
    use super::{Iotlb, RefCell, EMPTY, ENTRIES};
    crate::sync::thread_local! {
        pub(super) static IOTLB: RefCell<Iotlb> = RefCell::new(Iotlb { entries: [EMPTY; ENTRIES] });
    }
}
#[cfg(viommu_loom)]
use local::IOTLB;

/// The mask of the largest region size the IOTLB keeps that is at most `mask + 1` bytes
/// (`mask` is `2^k - 1`, k >= 12).
#[inline]
pub(super) fn region_mask(mask: u64) -> u64 {
    let shift = SHIFTS
        .iter()
        .rev()
        .copied()
        .find(|&s| (1u64 << s) - 1 <= mask)
        .unwrap_or(SHIFTS[0]);
    (1u64 << shift) - 1
}

#[inline(always)]
fn slot(uid: u64, ssid: u32, iova: u64) -> usize {
    let h = (iova >> 12) ^ uid.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(ssid);
    (h as usize) & (ENTRIES - 1)
}

/// The cached region of domain `uid` for `ssid` that holds `page`, if it was filled under
/// `stamp`.
#[inline]
pub(super) fn lookup(uid: u64, ssid: u32, page: u64, stamp: u64) -> Option<Leaf> {
    IOTLB
        .try_with(|t| {
            // A thread being torn down, or a re-entrant call: no cache.
            let t = t.try_borrow().ok()?;
            SHIFTS.iter().find_map(|&shift| {
                let mask = (1u64 << shift) - 1;
                let iova = page & !mask;
                let e = &t.entries[slot(uid, ssid, iova)];
                (e.uid == uid
                    && e.iova == iova
                    && e.ssid == ssid
                    && e.stamp == stamp
                    && e.perms >> 8 == shift)
                    .then_some(Leaf {
                        iova,
                        target: e.target,
                        mask,
                        readable: e.perms & 1 != 0,
                        writable: e.perms & 2 != 0,
                    })
            })
        })
        .ok()
        .flatten()
}

/// Caches a walk's result, filled under `stamp`.
#[inline]
pub(super) fn insert(uid: u64, ssid: u32, stamp: u64, leaf: &Leaf) {
    let shift = leaf.mask.count_ones();
    debug_assert!(SHIFTS.contains(&shift), "a region of 2^{shift} bytes");
    let _ = IOTLB.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            t.entries[slot(uid, ssid, leaf.iova)] = Entry {
                uid,
                iova: leaf.iova,
                stamp,
                target: leaf.target,
                ssid,
                perms: u32::from(leaf.readable) | (u32::from(leaf.writable) << 1) | (shift << 8),
            };
        }
    });
}
