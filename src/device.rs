//! The data plane: a `Device` handle, the `DmaGuard` a DMA thread holds while it translates
//! and accesses memory, and translation itself.
//!
//! `Device::pin` is one epoch pin, one load of the device's attached flag and one load of
//! its group's active domain; `DmaGuard::translate` is a page-table walk. None of it takes a
//! lock, makes a syscall or allocates (a translation of at most
//! [`crate::translation::INLINE_CHUNKS`] pieces is returned inline), and the only writes are
//! to the calling thread's own epoch record and arc-swap debt slot (G11).

use crate::domain::Domain;
use crate::group::GroupShared;
use crate::pagetable::PageTable;
use crate::reclaim::Reclaim;
use crate::sync::{Arc, AtomicBool, DomainRef, EpochGuard, Ordering};
use crate::translation::Translation;
use crate::types::{Access, Fault, FaultKind, GroupId, ObjId};
use std::fmt;
use std::marker::PhantomData;

/// What a `Device` handle shares with the control plane.
pub(crate) struct DeviceShared {
    pub(crate) id: ObjId,
    pub(crate) reclaim: Arc<Reclaim>,
    pub(crate) group: Arc<GroupShared>,
    /// True while the device is attached. Set after its group's domain is published (attach),
    /// cleared before the detach fence.
    pub(crate) attached: AtomicBool,
    pub(crate) aperture_last: u64,
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
    #[inline]
    pub fn pin(&self) -> DmaGuard<'_> {
        let epoch = self.inner.reclaim.pin();
        // ORDERING: Acquire pairs with the Release store in attach that follows the group's
        // publish: a device seen attached also sees its group's domain.
        let attached = self.inner.attached.load(Ordering::Acquire);
        let domain = self.inner.group.active.load(&epoch);
        // Resolved once here, not on every translation: null for a detached device or the
        // blocked domain.
        let table = match domain.page_table() {
            Some(pt) if attached => pt as *const PageTable,
            _ => std::ptr::null(),
        };
        DmaGuard {
            _domain: domain,
            table,
            aperture_last: self.inner.aperture_last,
            _epoch: epoch,
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

    /// The device's ID.
    pub fn id(&self) -> ObjId {
        self.inner.id
    }

    /// The device's group.
    pub fn group(&self) -> GroupId {
        self.inner.group.id
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

/// A DMA thread's pin: one domain snapshot plus an epoch pin. Not `Send`: it belongs to the
/// thread that made it. While any guard of an `Iommu` is alive on a thread, that thread's
/// `ioas_unmap`, `device_detach` and `synchronize` calls on the same `Iommu` return `EDEADLK`.
pub struct DmaGuard<'d> {
    // Field order matters: the domain snapshot is released before the epoch pin.
    /// Held, not read: the snapshot keeps the domain (and so `table`) alive.
    _domain: DomainRef<Domain>,
    /// The snapshot's page table (inside `domain`), or null: the guard faults `Blocked`.
    table: *const PageTable,
    aperture_last: u64,
    _epoch: EpochGuard,
    _device: PhantomData<&'d Device>,
}

impl DmaGuard<'_> {
    /// Translates `len` bytes at `iova` for `access`, through the guard's domain.
    ///
    /// A zero `len` gives an empty translation. Faults name the first IOVA that cannot be
    /// translated: `Blocked` if the device was not attached when the guard was made,
    /// `Aperture` past the device's or the domain's aperture, `Unmapped`, `Permission`.
    // Always inlined: the result is returned through memory, and a caller that reads it
    // right after an out-of-line call stalls on store forwarding (measured: most of the
    // cost of a hit). The multi-leaf tail stays out of line.
    #[inline(always)]
    pub fn translate(&self, iova: u64, len: u64, access: Access) -> Result<Translation<'_>, Fault> {
        // SAFETY: `table` is null or points into the domain that `self.domain` keeps alive
        // (a snapshot reference, dropped only with the guard); a domain's page table is
        // never replaced.
        let Some(table) = (unsafe { self.table.as_ref() }) else {
            return Err(Fault {
                iova,
                kind: FaultKind::Blocked,
            });
        };
        if len == 0 {
            return Ok(Translation::new(Default::default()));
        }
        let last = match iova.checked_add(len - 1) {
            Some(last) if last <= self.aperture_last => last,
            _ => {
                let at = if iova > self.aperture_last {
                    iova
                } else {
                    self.aperture_last.wrapping_add(1)
                };
                return Err(Fault {
                    iova: at,
                    kind: FaultKind::Aperture,
                });
            }
        };
        table.translate(iova, last, access, &self._epoch)
    }
}

impl fmt::Debug for DmaGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaGuard")
            .field("blocked", &self.table.is_null())
            .finish_non_exhaustive()
    }
}
