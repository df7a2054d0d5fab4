//! The data plane: a `Device` handle, the `DmaGuard` a DMA thread holds while it translates
//! and accesses memory, and translation itself.
//!
//! `Device::pin` takes a guard slot of the calling thread ([`crate::grace`]), loads the
//! device's attached flag and its group's generation, and uses the thread's cached snapshot of
//! the group's domain when the generation is unchanged (else one load of the group's cell);
//! `DmaGuard::translate` is a page-table walk. `Device::pin_pasid` does the same through the
//! cell of one PASID, found in the device's PASID table ([`crate::pasid`]). None of it takes a lock, makes a syscall, frees
//! or allocates (a translation of at most [`crate::translation::INLINE_CHUNKS`] pieces is
//! returned inline), and the only writes are to the calling thread's own slot and cache (G11,
//! G13).

use crate::grace::{DomainCache, Grace, Pin};
use crate::group::{ActiveCell, GroupShared};
use crate::identity::IdentityMap;
use crate::nested::UNTAGGED;
use crate::pasid::PasidTable;
use crate::snapshot::Snapshot;
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::translation::Translation;
use crate::translation::{Chunk, Fault, FaultKind};
use crate::types::{Access, GroupId, ObjId};
use std::fmt;
use std::marker::PhantomData;

/// What a `Device` handle shares with the control plane.
pub(crate) struct DeviceShared {
    pub(crate) id: ObjId,
    pub(crate) grace: Arc<Grace>,
    pub(crate) group: Arc<GroupShared>,
    /// True while the device is attached. Set after its group's domain is published (attach),
    /// cleared before the detach fence.
    pub(crate) attached: AtomicBool,
    pub(crate) aperture_last: u64,
    /// The cells of the PASIDs the device has attached ([`crate::pasid`]).
    pub(crate) pasids: PasidTable,
}

/// A bound device, as its DMA threads see it: `Clone + Send + Sync`, cheap to clone, and the
/// only thing the hot path needs (no ID lookup, no lock).
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceShared>,
}

impl Device {
    /// Pins the current thread and takes one snapshot of the device's domain. Every
    /// translation through the guard uses that domain (G1); the memory behind those
    /// translations stays mapped until the guard is dropped (G5).
    ///
    /// A thread may hold any number of guards at once, of one device or many, of one `Iommu`
    /// or many: each fence waits only for the guards alive when it began (G12).
    #[inline(always)]
    pub fn pin(&self) -> DmaGuard<'_> {
        let inner = &*self.inner;
        let group = &*inner.group;
        let (pin, table) = inner.grace.pin(|cache| {
            // ORDERING: [ATTACHED] Acquire pairs with the Release store in attach that follows the
            // group's publish: a device seen attached also sees its group's domain.
            let attached = inner.attached.load(Ordering::Acquire);
            let table = snapshot(cache, group.cache_way, &group.rid);
            // Null too for a detached device: the guard faults `Blocked`.
            if attached {
                table
            } else {
                Snapshot::BLOCKED
            }
        });
        self.guard(pin, table, UNTAGGED)
    }

    /// Pins the current thread and takes one snapshot of the domain attached at PASID `pasid`
    /// of this device: [`Device::pin`] for PASID-tagged DMA. `pin_pasid(0)` is `pin()`.
    ///
    /// With nothing attached at `pasid` (for this device), the guard uses the RID's domain if
    /// that is an SMMUv3 nested HWPT (its CD `pasid`: the guest owns the CD table, as on real
    /// SMMUv3), and otherwise faults `Blocked`, as it does for `pasid` outside the device's
    /// range (`DeviceInfo::pasid_bits`). Like `pin`, it takes no lock, allocates nothing and
    /// writes only the thread's own slot and cache.
    #[inline]
    pub fn pin_pasid(&self, pasid: u32) -> DmaGuard<'_> {
        if pasid == 0 {
            return self.pin();
        }
        let inner = &*self.inner;
        let (pin, table) = inner.grace.pin(|cache| {
            // Under the pin (the lookup's loads come after the slot store): a device whose
            // entry `device_detach_pasid` cleared before its fence is found empty by every
            // guard the fence does not wait for.
            match inner.pasids.lookup(pasid) {
                // PASID `p` takes the `p`-th way after the group's: a way is validated by the
                // cell's generation, unique to one publish of one cell, so sharing ways
                // between cells costs evictions, never a wrong domain.
                Some(cell) => snapshot(
                    cache,
                    inner.group.cache_way.wrapping_add(pasid as usize),
                    cell,
                ),
                None if inner.pasids.in_range(pasid) => substream_of_rid(inner, cache),
                None => Snapshot::BLOCKED,
            }
        });
        self.guard(pin, table, pasid)
    }

    #[inline(always)]
    fn guard(&self, pin: Pin, table: Snapshot, ssid: u32) -> DmaGuard<'_> {
        DmaGuard {
            _pin: pin,
            table,
            aperture_last: self.inner.aperture_last,
            ssid,
            _device: PhantomData,
        }
    }

    /// Translates one request with a guard of its own (pin, translate, unpin). The returned
    /// chunks are no longer protected by a guard: use [`Device::pin`] when the access must be
    /// fenced against a concurrent unmap.
    #[inline]
    pub fn translate(&self, iova: u64, len: u64, access: Access) -> Result<Translation<'_>, Fault> {
        self.pin()
            .translate(iova, len, access)
            .map(Translation::rebind)
    }

    /// Translates the first piece of one request with a guard of its own: what
    /// [`DmaGuard::translate_chunk`] returns, pinned and unpinned around it. The cheapest
    /// one-shot translation; like [`Device::translate`], the chunk is no longer protected by a
    /// guard when it is returned.
    #[inline(always)]
    pub fn translate_chunk(&self, iova: u64, len: u64, access: Access) -> Result<Chunk, Fault> {
        self.pin().translate_chunk(iova, len, access)
    }

    /// The device's ID.
    pub fn id(&self) -> ObjId {
        self.inner.id
    }

    /// The device's group.
    pub fn group(&self) -> GroupId {
        self.inner.group.id
    }
}

/// The snapshot of `cell`'s domain through way `way` of the thread's cache: the cached value
/// if the cell's generation is the one the way was filled under, else one load of the cell.
/// Called under a guard's pin.
///
/// Safe because a generation is never reused (by any cell of the `Iommu`), and a domain
/// swapped out of a cell is kept alive by the control plane until every guard pinned before
/// the swap's generation store is gone (this guard's pin came first: see `crate::grace`).
#[inline(always)]
fn snapshot(cache: &mut DomainCache, way: usize, cell: &ActiveCell) -> Snapshot {
    let generation = cell.generation();
    // The mask elides the bounds check.
    let way = &mut cache.ways[way & (crate::grace::CACHE_WAYS - 1)];
    if way.0 != generation {
        // SAFETY: the cell's current domain, protected by the pin from here on (as above).
        let domain = unsafe { &*cell.active_ptr() };
        *way = (generation, Snapshot::of(domain));
    }
    way.1
}

/// `pin_pasid` of a PASID the device has not attached: the RID's domain when it is an SMMUv3
/// nested domain (the guest's CD table serves the substream), else the blocked domain.
#[cold]
#[inline(never)]
fn substream_of_rid(inner: &DeviceShared, cache: &mut DomainCache) -> Snapshot {
    // ORDERING: [ATTACHED] Acquire pairs with the Release store in attach, as in `pin`.
    if !inner.attached.load(Ordering::Acquire) {
        return Snapshot::BLOCKED;
    }
    let rid = snapshot(cache, inner.group.cache_way, &inner.group.rid);
    // SAFETY: the snapshot was taken under the caller's pin, which is held.
    let nested = unsafe { rid.kind() }.and_then(|k| k.as_nested());
    if nested.is_some_and(|n| n.serves_substreams()) {
        rid
    } else {
        Snapshot::BLOCKED
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.inner.id)
            .field("group", &self.inner.group.id)
            .field("attached", &self.inner.attached.load(Ordering::Relaxed))
            .finish()
    }
}

/// A DMA thread's pin: one domain snapshot plus a grace-period slot. Not `Send`: it belongs
/// to the thread that made it. While any guard of an `Iommu` is alive on a thread, that
/// thread's `ioas_unmap`, `device_detach` and `synchronize` calls on the same `Iommu` return
/// `EDEADLK` (they would wait for it).
///
/// Making and dropping a guard takes no lock, makes no system call, frees nothing and writes
/// only the thread's own slot (G11, G13).
pub struct DmaGuard<'d> {
    /// Keeps the snapshot (and so `table`) alive; cleared on drop.
    _pin: Pin,
    /// The snapshot (see [`crate::snapshot`]); the blocked one: the guard faults `Blocked`.
    table: Snapshot,
    aperture_last: u64,
    /// The substream of the DMA: its PASID, or [`UNTAGGED`] (used by nested domains only).
    ssid: u32,
    _device: PhantomData<&'d Device>,
}

impl DmaGuard<'_> {
    /// Translates `len` bytes at `iova` for `access`, through the guard's domain.
    ///
    /// A zero `len` gives an empty translation. Faults name the first IOVA that cannot be
    /// translated: `Blocked` if the device was not attached when the guard was made,
    /// `Aperture` past the device's or the domain's aperture, `Unmapped`, `Permission`.
    /// Through a nested domain the IOVA goes through the guest's stage 1 and then stage 2,
    /// with the faults of [`crate::docs::nesting`] ("Faults").
    // Always inlined: the result is returned through memory, and a caller that reads it
    // right after an out-of-line call stalls on store forwarding (measured: most of the
    // cost of a hit). The multi-leaf tail stays out of line.
    #[inline(always)]
    pub fn translate(&self, iova: u64, len: u64, access: Access) -> Result<Translation<'_>, Fault> {
        if self.table.is_tagged() {
            return self.translate_other(iova, len, access);
        }
        // SAFETY: untagged, and taken under the guard's pin, which lives as long as the guard
        // (the control plane frees a swapped-out domain only after every guard pinned before
        // the swap is gone).
        let Some(table) = (unsafe { self.table.page_table() }) else {
            return Err(blocked(iova));
        };
        match request_last(iova, len, self.aperture_last)? {
            Some(last) => table.translate(iova, last, access),
            None => Ok(Translation::new(Default::default())),
        }
    }

    /// Translates the start of `len` bytes at `iova` for `access`: the piece that the first
    /// leaf of the guard's domain covers (all of the request when it lies in one page, block
    /// or IOTLB region), as one [`Chunk`] in registers, with no chunk list to build or read.
    /// An emulator that walks a buffer calls it again at `chunk.iova + chunk.len` until the
    /// request is covered; [`DmaGuard::translate`] does that walk and merges contiguous pieces.
    ///
    /// The chunk's `len` is between 1 and `len`; a zero `len` gives an empty chunk at `iova`
    /// (target 0) and checks nothing. Faults are those of [`DmaGuard::translate`], for the
    /// piece returned: a fault past it is reported by the call that reaches it. The end of the
    /// request is checked against the aperture, so a request that leaves it faults here.
    #[inline(always)]
    pub fn translate_chunk(&self, iova: u64, len: u64, access: Access) -> Result<Chunk, Fault> {
        if self.table.is_tagged() {
            return self.chunk_other(iova, len, access);
        }
        // SAFETY: as in `translate`.
        let Some(table) = (unsafe { self.table.page_table() }) else {
            return Err(blocked(iova));
        };
        // One test for both apertures: the first IOVA past the smaller one is the first that
        // cannot be translated.
        let aperture_last = self.aperture_last.min(table.aperture_last());
        match request_last(iova, len, aperture_last)? {
            Some(last) => table.translate_chunk(iova, last, access),
            None => Ok(empty_chunk(iova)),
        }
    }

    /// `translate_chunk` through an identity domain: no walk, every access allowed inside its
    /// ranges.
    #[inline(always)]
    fn chunk_identity(&self, map: &IdentityMap, iova: u64, len: u64) -> Result<Chunk, Fault> {
        match request_last(iova, len, self.aperture_last)? {
            Some(last) => map.translate_chunk(iova, last),
            None => Ok(empty_chunk(iova)),
        }
    }

    /// `translate_chunk` through any domain but a paging or the blocked one.
    #[cold]
    #[inline(never)]
    fn chunk_other(&self, iova: u64, len: u64, access: Access) -> Result<Chunk, Fault> {
        // The identity domain first, without the dispatch: the cheapest translation there is.
        // (Tested here rather than inline after the paging test, which cost the paging path
        // three to sixteen instructions, by code layout, under callgrind.)
        // SAFETY: as in `translate`.
        if let Some(map) = unsafe { self.table.identity() } {
            return self.chunk_identity(map, iova, len);
        }
        // SAFETY: as in `translate`.
        let Some(kind) = (unsafe { self.table.kind() }) else {
            return Err(blocked(iova));
        };
        match request_last(iova, len, self.aperture_last)? {
            Some(last) => kind.translate_chunk(iova, last, access, self.ssid),
            None => Ok(empty_chunk(iova)),
        }
    }

    /// `translate` through any domain but a paging or the blocked one.
    #[cold]
    #[inline(never)]
    fn translate_other(
        &self,
        iova: u64,
        len: u64,
        access: Access,
    ) -> Result<Translation<'_>, Fault> {
        // SAFETY: as in `translate`.
        let Some(kind) = (unsafe { self.table.kind() }) else {
            return Err(blocked(iova));
        };
        match request_last(iova, len, self.aperture_last)? {
            Some(last) => kind.translate(iova, last, access, self.ssid),
            None => Ok(Translation::new(Default::default())),
        }
    }

    /// A translation of the single address `iova` through the guard's nested domain with no
    /// IOTLB: every stage-1 and stage-2 table walked. The baseline the benchmarks measure the
    /// IOTLB against; `None` if the guard's domain is not nested.
    #[doc(hidden)]
    pub fn translate_uncached(&self, iova: u64, access: Access) -> Option<Result<u64, Fault>> {
        // SAFETY: as in `translate`.
        let nested = unsafe { self.table.kind() }?.as_nested()?;
        if iova > self.aperture_last {
            return Some(Err(aperture_fault(iova, self.aperture_last)));
        }
        Some(
            nested
                .translate_uncached(iova, access, self.ssid)
                .map_err(|kind| Fault { iova, kind }),
        )
    }
}

/// The last IOVA of a request of `len` bytes at `iova` that must stay at or below
/// `aperture_last`: `None` for an empty request (nothing to translate), the aperture fault if
/// it leaves the aperture or wraps past 2^64.
#[inline(always)]
fn request_last(iova: u64, len: u64, aperture_last: u64) -> Result<Option<u64>, Fault> {
    if len == 0 {
        return Ok(None);
    }
    match iova.checked_add(len - 1) {
        Some(last) if last <= aperture_last => Ok(Some(last)),
        _ => Err(aperture_fault(iova, aperture_last)),
    }
}

/// The empty chunk a zero-length request translates to.
#[inline(always)]
fn empty_chunk(iova: u64) -> Chunk {
    Chunk {
        iova,
        target: 0,
        len: 0,
    }
}

/// The fault of a guard on the blocked domain.
#[inline(always)]
fn blocked(iova: u64) -> Fault {
    Fault {
        iova,
        kind: FaultKind::Blocked,
    }
}

/// The fault of a request that leaves the aperture: at the aperture's end, or at the request's
/// start if it starts outside or wraps past 2^64 with a 64-bit aperture (there is no IOVA past
/// the top to name). Either way the IOVA lies inside the request.
#[cold]
fn aperture_fault(iova: u64, aperture_last: u64) -> Fault {
    let at = if iova > aperture_last || aperture_last == u64::MAX {
        iova
    } else {
        aperture_last + 1
    };
    Fault {
        iova: at,
        kind: FaultKind::Aperture,
    }
}

impl fmt::Debug for DmaGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaGuard")
            .field("blocked", &self.table.is_blocked())
            .finish_non_exhaustive()
    }
}
