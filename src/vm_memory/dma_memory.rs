//! [`DmaMemory`]: vm-memory's IOVA-level [`GuestMemory`] trait implemented directly over a
//! viommu [`Device`] and a [`GuestMemoryBackend`], and [`PinnedDmaMemory`], the same memory
//! under one [`DmaGuard`] held for as long as the caller keeps it (a whole descriptor chain).
//!
//! `get_slices` pins the device (or borrows the pinned form's guard) and walks the request
//! with [`DmaGuard::translate_chunk`], one leaf at a time: no `Iotlb`, no chunk list, nothing
//! allocated. Each chunk's target range is cut into the backend's regions as
//! [`GuestMemoryBackend::get_slices`] cuts it, and the slices keep the backend region's bitmap,
//! so a write through an IOVA marks the guest-physical pages it lands in (see the
//! [module docs](super)).

use super::{accesses_chunk, fault_error_len};
use crate::{Device, DmaGuard};
use ::vm_memory::bitmap;
use ::vm_memory::guest_memory::{GuestMemorySliceIterator, Result as GuestMemoryResult};
use ::vm_memory::{
    Address, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion,
    Permissions, VolatileSlice,
};
use std::fmt;
use std::iter::FusedIterator;

/// Guest memory as one device sees it: every address is an IOVA, translated by the device's
/// current domain into the backend's guest-physical addresses. vm-memory's [`GuestMemory`]
/// (so [`Bytes<GuestAddress>`](::vm_memory::Bytes), and every virtio-queue `Queue`, `Reader`
/// and `Writer`) implemented without an IOTLB.
///
/// `Send + Sync` when `M` is, and `Clone` when `M` is (a clone shares the device). Every
/// `get_slices` pins the device for as long as its iterator lives; [`DmaMemory::pin`] gives
/// a [`PinnedDmaMemory`] that holds one pin across many accesses.
///
/// ```
/// use viommu::vm_memory::DmaMemory;
/// use viommu::{DeviceInfo, GroupId, Iommu, Prot};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let iommu = Iommu::new();
/// let (dev_id, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
/// let ioas = iommu.ioas_alloc()?;
/// iommu.ioas_map(ioas, Some(0x10_0000), 0x0, 0x10_0000, Prot::RW)?; // IOVA 1 MiB -> GPA 0
/// iommu.device_attach(dev_id, ioas)?;
///
/// let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
/// let mem = DmaMemory::new(ram, dev);
/// mem.write_obj(0x1234_u32, GuestAddress(0x10_0040)).unwrap(); // an IOVA
/// assert_eq!(mem.backend().read_obj::<u32>(GuestAddress(0x40)).unwrap(), 0x1234);
/// {
///     let chain = mem.pin(); // one pin for every access below
///     chain.write_obj(7_u8, GuestAddress(0x10_0000)).unwrap();
///     assert_eq!(chain.read_obj::<u8>(GuestAddress(0x10_0000)).unwrap(), 7);
/// }
/// # Ok::<(), viommu::Error>(())
/// ```
#[derive(Clone)]
pub struct DmaMemory<M: GuestMemoryBackend> {
    backend: M,
    device: Device,
}

impl<M: GuestMemoryBackend> DmaMemory<M> {
    /// The memory `device` reaches through its domain, over guest-physical `backend`.
    pub fn new(backend: M, device: Device) -> DmaMemory<M> {
        DmaMemory { backend, device }
    }

    /// The same device over another backend (guest memory after a hotplug, say).
    pub fn with_replaced_backend(&self, backend: M) -> DmaMemory<M> {
        DmaMemory {
            backend,
            device: self.device.clone(),
        }
    }

    /// The guest-physical memory the translations point into.
    pub fn backend(&self) -> &M {
        &self.backend
    }

    /// The device whose domain translates.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backend and the device handle back.
    pub fn into_parts(self) -> (M, Device) {
        (self.backend, self.device)
    }

    /// Pins the device once for many accesses: every access through the returned memory uses
    /// this one [`DmaGuard`] (one snapshot of the device's domain), and every slice it hands
    /// out borrows it, so an unmap or detach that overlaps any of them waits until it is
    /// dropped. Take it around one descriptor chain (see [`PinnedDmaMemory`]).
    #[inline]
    pub fn pin(&self) -> PinnedDmaMemory<'_, M> {
        PinnedDmaMemory {
            mem: self,
            guard: self.device.pin(),
        }
    }
}

impl<M: GuestMemoryBackend + fmt::Debug> fmt::Debug for DmaMemory<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMemory")
            .field("backend", &self.backend)
            .field("device", &self.device)
            .finish()
    }
}

impl<M: GuestMemoryBackend> GuestMemory for DmaMemory<M> {
    type PhysicalMemory = M;
    type Bitmap = <M::R as GuestMemoryRegion>::B;

    /// Whether every byte of the range translates for `access` (`No`: for some access) into
    /// the backend, through one pin.
    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        check_range(&self.device.pin(), &self.backend, addr, count, access)
    }

    /// Pins the device and translates the whole request (a fault is the error, and no slice
    /// is made); the iterator holds the pin and yields the slices chunk by chunk.
    #[inline]
    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, bitmap::BS<'a, Self::Bitmap>>> {
        Slices::new(self.device.pin(), &self.backend, addr, count, access)
    }

    /// `None`: addresses are IOVAs, not the backend's.
    fn physical_memory(&self) -> Option<&M> {
        None
    }
}

/// A [`DmaMemory`] under one [`DmaGuard`]: vm-memory's [`GuestMemory`] whose every access
/// uses that guard's snapshot of the device's domain, and whose slices cannot outlive it.
///
/// Build virtio-queue's `Reader` and `Writer` on it (they borrow it), serve the chain, drop
/// them and it: every buffer access of the chain, including the copies through the slices
/// the `Reader` and `Writer` collected when they were made, happens under the guard, so an
/// [`ioas_unmap`](crate::Iommu::ioas_unmap) or
/// [`device_detach`](crate::Iommu::device_detach) that began meanwhile returns only after it
/// is dropped. Each access costs a leaf walk and no pin.
///
/// Like the `DmaGuard`, it is neither `Send` nor `Sync`: it belongs to the thread that
/// pinned. vm-memory's `GuestMemory` and virtio-queue's `Reader`, `Writer` and
/// `DescriptorChain` ask neither, so a device's per-chain work runs on it unchanged. While it
/// lives, fencing calls of the same `Iommu` on its thread return `EDEADLK`, and every unmap
/// and detach of the `Iommu` waits for it: hold it for one chain, not across blocking I/O.
pub struct PinnedDmaMemory<'m, M: GuestMemoryBackend> {
    mem: &'m DmaMemory<M>,
    guard: DmaGuard<'m>,
}

impl<'m, M: GuestMemoryBackend> PinnedDmaMemory<'m, M> {
    /// The unpinned memory.
    pub fn memory(&self) -> &'m DmaMemory<M> {
        self.mem
    }

    /// The guard every access uses, for translations of the caller's own.
    pub fn guard(&self) -> &DmaGuard<'m> {
        &self.guard
    }
}

impl<M: GuestMemoryBackend> fmt::Debug for PinnedDmaMemory<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedDmaMemory")
            .field("device", &self.mem.device)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<M: GuestMemoryBackend> GuestMemory for PinnedDmaMemory<'_, M> {
    type PhysicalMemory = M;
    type Bitmap = <M::R as GuestMemoryRegion>::B;

    /// As [`DmaMemory`]'s, through the held guard.
    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        check_range(&self.guard, &self.mem.backend, addr, count, access)
    }

    /// As [`DmaMemory`]'s, through the held guard: no pin.
    #[inline]
    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, bitmap::BS<'a, Self::Bitmap>>> {
        Slices::new(&self.guard, &self.mem.backend, addr, count, access)
    }

    /// `None`: addresses are IOVAs, not the backend's.
    fn physical_memory(&self) -> Option<&M> {
        None
    }
}

/// A guard the slice iterator owns (`DmaMemory`) or borrows (`PinnedDmaMemory`).
trait HoldGuard {
    fn guard(&self) -> &DmaGuard<'_>;
}

impl HoldGuard for DmaGuard<'_> {
    #[inline(always)]
    fn guard(&self) -> &DmaGuard<'_> {
        self
    }
}

impl HoldGuard for &DmaGuard<'_> {
    #[inline(always)]
    fn guard(&self) -> &DmaGuard<'_> {
        self
    }
}

/// `check_range` of both forms: every chunk translates and lies in the backend.
fn check_range<M: GuestMemoryBackend>(
    guard: &DmaGuard<'_>,
    backend: &M,
    addr: GuestAddress,
    count: usize,
    access: Permissions,
) -> bool {
    let (mut iova, mut left) = (addr.0, count as u64);
    while left != 0 {
        let Ok(c) = accesses_chunk(guard, iova, left, access) else {
            return false;
        };
        if !backend.check_range(GuestAddress(c.target), c.len as usize) {
            return false;
        }
        iova = iova.wrapping_add(c.len);
        left -= c.len;
    }
    true
}

/// The slice iterator of both forms: the guard, and the request's next IOVA, the bytes left
/// and the rest of the current chunk. Yields a slice per chunk and backend region.
struct Slices<'a, M: GuestMemoryBackend, G> {
    guard: G,
    backend: &'a M,
    access: Permissions,
    /// The next IOVA to yield (wraps to 0 after the last byte of the address space).
    iova: u64,
    /// Bytes of the request not yet yielded; 0 ends the iteration.
    left: u64,
    /// Where the current chunk's rest lands, and its length (0: translate the next chunk).
    target: u64,
    chunk_left: u64,
}

impl<'a, M: GuestMemoryBackend, G: HoldGuard> Slices<'a, M, G> {
    /// Translates the whole request through `guard` before a slice is made, as `IommuMemory`
    /// does: a fault anywhere is `get_slices`' error and nothing is accessed. The first chunk
    /// is kept (a request within one leaf is translated once); later ones are walked again
    /// as the iterator reaches them.
    #[inline(always)]
    fn new(
        guard: G,
        backend: &'a M,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<Self> {
        let (iova, left) = (addr.0, count as u64);
        let (mut target, mut chunk_left) = (0, 0);
        if left != 0 {
            let g = guard.guard();
            let first = accesses_chunk(g, iova, left, access)
                .map_err(|f| GuestMemoryError::IommuError(fault_error_len(f, iova, left)))?;
            if first.len < left {
                check_rest(g, iova, left, first.len, access)?;
            }
            (target, chunk_left) = (first.target, first.len);
        }
        Ok(Slices {
            guard,
            backend,
            access,
            iova,
            left,
            target,
            chunk_left,
        })
    }

    #[inline(always)]
    fn step(&mut self) -> GuestMemoryResult<VolatileSlice<'a, bitmap::MS<'a, M>>> {
        if self.chunk_left == 0 {
            // Within a guard the domain is one snapshot, but an unmap that is waiting for
            // this guard may already have cleared a leaf that `new` walked.
            let c = accesses_chunk(self.guard.guard(), self.iova, self.left, self.access).map_err(
                |f| GuestMemoryError::IommuError(fault_error_len(f, self.iova, self.left)),
            )?;
            (self.target, self.chunk_left) = (c.target, c.len);
        }
        let at = GuestAddress(self.target);
        let (region, offset) = self
            .backend
            .to_region_addr(at)
            .ok_or(GuestMemoryError::InvalidGuestAddress(at))?;
        let len = (region.len() - offset.raw_value()).min(self.chunk_left);
        let slice = region.get_slice(offset, len as usize)?;
        self.target = self.target.wrapping_add(len);
        self.chunk_left -= len;
        self.iova = self.iova.wrapping_add(len);
        self.left -= len;
        Ok(slice)
    }
}

/// The walk of the request's chunks after the first, for `get_slices`' up-front check.
#[inline(never)]
fn check_rest(
    guard: &DmaGuard<'_>,
    start: u64,
    count: u64,
    done: u64,
    access: Permissions,
) -> GuestMemoryResult<()> {
    let mut at = done;
    while at < count {
        let iova = start.wrapping_add(at);
        let c = accesses_chunk(guard, iova, count - at, access)
            .map_err(|f| GuestMemoryError::IommuError(fault_error_len(f, start, count)))?;
        at += c.len;
    }
    Ok(())
}

impl<'a, M: GuestMemoryBackend, G: HoldGuard> Iterator for Slices<'a, M, G> {
    type Item = GuestMemoryResult<VolatileSlice<'a, bitmap::MS<'a, M>>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let item = self.step();
        if item.is_err() {
            // No item after an error.
            self.left = 0;
        }
        Some(item)
    }
}

/// `next` returns `None` once `left` is 0, and sets it to 0 on an error.
impl<M: GuestMemoryBackend, G: HoldGuard> FusedIterator for Slices<'_, M, G> {}

impl<'a, M: GuestMemoryBackend, G: HoldGuard> GuestMemorySliceIterator<'a, bitmap::MS<'a, M>>
    for Slices<'a, M, G>
{
}
