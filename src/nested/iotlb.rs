//! The per-thread IOTLB of nested translations: a direct-mapped table of finished
//! translations (4 KiB pages) in thread-local storage, so a lookup or a fill writes only the
//! calling thread's own memory (G11) and allocates nothing (the table is static thread-local
//! storage, G13).
//!
//! An entry is tagged with (nested domain uid, substream, IOVA page) and carries the stamp it
//! was filled under ([`super::NestedDomain`]); a lookup uses it only when the caller's current
//! stamp is the same. Entries of domains that are gone are never matched again (uids are not
//! reused) and are overwritten in time.
//!
//! The table is borrowed only for the copy of one entry, never across a walk: a walk calls the
//! caller's [`super::TableMemory`], which may itself translate on this thread.

use std::cell::RefCell;

/// Entries (a power of two): 64 × 40 bytes.
const ENTRIES: usize = 64;

#[derive(Clone, Copy)]
struct Entry {
    /// 0: empty (uids start at 1).
    uid: u64,
    page: u64,
    stamp: u64,
    target: u64,
    ssid: u32,
    /// Bit 0 readable, bit 1 writable.
    perms: u32,
}

const EMPTY: Entry = Entry {
    uid: 0,
    page: 0,
    stamp: 0,
    target: 0,
    ssid: 0,
    perms: 0,
};

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

#[inline(always)]
fn slot(uid: u64, ssid: u32, page: u64) -> usize {
    let h = (page >> 12) ^ uid.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(ssid);
    (h as usize) & (ENTRIES - 1)
}

/// The cached `(target page, readable, writable)` of `page` in domain `uid` for `ssid`, if it
/// was filled under `stamp`.
#[inline]
pub(super) fn lookup(uid: u64, ssid: u32, page: u64, stamp: u64) -> Option<(u64, bool, bool)> {
    IOTLB
        .try_with(|t| {
            // A thread being torn down, or a re-entrant call: no cache.
            let t = t.try_borrow().ok()?;
            let e = &t.entries[slot(uid, ssid, page)];
            (e.uid == uid && e.page == page && e.ssid == ssid && e.stamp == stamp).then_some((
                e.target,
                e.perms & 1 != 0,
                e.perms & 2 != 0,
            ))
        })
        .ok()
        .flatten()
}

/// Caches a walk's result, filled under `stamp`.
#[inline]
pub(super) fn insert(uid: u64, ssid: u32, page: u64, stamp: u64, r: (u64, bool, bool)) {
    let _ = IOTLB.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            t.entries[slot(uid, ssid, page)] = Entry {
                uid,
                page,
                stamp,
                target: r.0,
                ssid,
                perms: u32::from(r.1) | (u32::from(r.2) << 1),
            };
        }
    });
}
