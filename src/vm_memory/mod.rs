//! rust-vmm integration (feature `vm-memory`): vm-memory's [`GuestMemory`] and [`Iommu`]
//! traits over a [`Device`].
//!
//! Two ways in, both fenced by the device's [`DmaGuard`]s:
//!
//! * [`DmaMemory`] implements vm-memory's IOVA-level [`GuestMemory`] trait itself, over any
//!   [`GuestMemoryBackend`] (so [`Bytes<GuestAddress>`](::vm_memory::Bytes) and virtio-queue
//!   work on it), translating with [`DmaGuard::translate_chunk`] and no IOTLB;
//!   [`PinnedDmaMemory`] is the same memory under one guard held around a descriptor chain.
//!   The fast way, described in [`DmaMemory` and `PinnedDmaMemory`](#dmamemory-and-pinneddmamemory).
//! * [`DeviceIommu`] implements vm-memory's [`Iommu`] trait, for users of vm-memory's own
//!   [`IommuMemory`] (its IOVA-indexed dirty bitmap, its bypass switch). The rest of these
//!   docs up to that section describe it.
//!
//! [`DeviceIommu`] wraps a device handle so that vm-memory's [`IommuMemory`] (and so every
//! rust-vmm device built on it, virtio-queue's `Queue`, `Reader` and `Writer` included) reads
//! and writes guest memory through IOVAs that this crate translates:
//!
//! ```
//! use viommu::vm_memory::DeviceIommu;
//! use viommu::{DeviceInfo, GroupId, Iommu, Prot};
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, IommuMemory};
//!
//! let iommu = Iommu::new();
//! let (dev_id, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
//! let ioas = iommu.ioas_alloc()?;
//! iommu.ioas_map(ioas, Some(0x10_0000), 0x0, 0x10_0000, Prot::RW)?; // IOVA 1 MiB -> GPA 0
//! iommu.device_attach(dev_id, ioas)?;
//!
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
//! let mem = IommuMemory::new(ram, DeviceIommu::new(dev), true, ());
//! mem.write_obj(0x1234_u32, GuestAddress(0x10_0040)).unwrap(); // an IOVA
//! assert_eq!(mem.get_backend().read_obj::<u32>(GuestAddress(0x40)).unwrap(), 0x1234);
//! # Ok::<(), viommu::Error>(())
//! ```
//!
//! # The guard
//!
//! vm-memory's trait returns an [`IotlbIterator`] over a guard that dereferences to an
//! [`Iotlb`], the only way to hand vm-memory a translation. [`DeviceIommu::translate`]:
//!
//! 1. pins the device ([`Device::pin`]: one [`DmaGuard`], one snapshot of its domain);
//! 2. walks the request's pages through that guard, for every access the [`Permissions`]
//!    ask for; a fault becomes vm-memory's [`IommuError::CannotResolve`] naming the faulting
//!    IOVA and the rest of the request;
//! 3. writes the chunks into a scratch [`Iotlb`] that belongs to the calling thread;
//! 4. returns [`Iotlb::lookup`] over a [`DeviceIotlb`], which owns both the scratch and the
//!    `DmaGuard`. Dropping it gives the scratch back to the thread, then unpins.
//!
//! No lock is taken (the `DmaGuard` is lock-free; the scratch is the thread's own, moved out
//! of a thread-local and back). Nothing is allocated in the common case: the scratch's tree
//! keeps its node after the first use, and the thread keeps [`SPARE_IOTLBS`] scratches for
//! guards that nest. The scratch is also a one-entry cache: when a request falls within the
//! pages of the previous one and the fresh walk lands at the same offset, the entry is left as
//! it is and only the walk is paid. It is never trusted without that walk: every translation is
//! made through the access's own `DmaGuard`, and the scratch only carries its result to
//! vm-memory. Its entries therefore carry `Permissions::ReadWrite`; the walk checked the
//! access's real permission.
//!
//! # What the unmap fence covers, and what it does not
//!
//! [`Iommu::ioas_unmap`](crate::Iommu::ioas_unmap) and
//! [`Iommu::device_detach`](crate::Iommu::device_detach) wait for every `DmaGuard` alive when
//! they began (G5, G6, G12). A `DeviceIotlb` holds one for as long as vm-memory holds the
//! iterator, which is:
//!
//! * **Fenced:** every [`Bytes`](::vm_memory::Bytes) access on an `IommuMemory` (`read`,
//!   `write`, `read_slice`, `write_slice`, `read_obj`, `write_obj`, `load`, `store`,
//!   `read_volatile_from`, `write_volatile_to`): vm-memory makes the slices, copies and drops
//!   the iterator within one call, so the copy happens under the guard. virtio-queue's ring
//!   accesses (descriptor table, available and used rings) are of this kind. So is any
//!   `get_slices` iterator while the caller still holds it.
//! * **Not fenced:** a [`VolatileSlice`](::vm_memory::VolatileSlice) used after its iterator
//!   is dropped. virtio-queue's `Reader::new` and `Writer::new` collect the slices of a whole
//!   descriptor chain and drop the iterators before the device reads or writes a byte: those
//!   buffer accesses are translated (and fault) correctly, but an `ioas_unmap` may return
//!   while the device still copies into the old target. The same holds for the answer of
//!   `check_range`, which is stale as soon as it returns. A device that needs the fence for
//!   its buffers accesses them with `Bytes` calls on the `IommuMemory` (through the
//!   descriptors' addresses), or, better, serves the chain through a [`PinnedDmaMemory`].
//! * **Fenced, and so slow to fence:** `read_volatile_from` and `write_volatile_to` run their
//!   `read(2)`/`write(2)` on a file or socket while the guard is held, and a `get_slices`
//!   iterator kept across blocking I/O holds its guard just as long: every unmap and detach of
//!   the `Iommu` waits for that syscall, and a fencing call on the same thread returns
//!   `EDEADLK` ([`docs::patterns`](crate::docs::patterns)).
//!
//! Each `translate` is one snapshot of the device's domain (G1), so one access never straddles
//! a [`device_replace`](crate::Iommu::device_replace); two accesses of one request may use the
//! old and the new domain (both are the guest's valid choice during the replace).
//!
//! # Permissions, errors and bypass
//!
//! | vm-memory [`Permissions`] | viommu walk |
//! | --- | --- |
//! | `Read` | [`Access::Read`] |
//! | `Write` | [`Access::Write`] |
//! | `ReadWrite` | `Read`, then `Write`, through the same guard: both must pass |
//! | `No` (`check_range` "is it mapped") | `Read`, or `Write` where `Read` lacks permission |
//!
//! The other way, [`Permissions::from`] takes an [`Access`] or a [`Prot`], and
//! [`Prot::try_from`] a `Permissions` (`No` has no `Prot`: `EINVAL`). A
//! [`Fault`] becomes [`IommuError::CannotResolve`] whose `iova_range` starts at
//! the faulting IOVA and runs to the end of the request (as vm-memory's own `Iotlb` reports a
//! miss), and whose `reason` is the fault's text; [`GuestMemoryError::IommuError`] carries it
//! out of `IommuMemory`. A request whose end does not fit in 64 bits is `CannotResolve` too.
//!
//! With `use_iommu == false` (`IommuMemory::set_iommu_enabled(false)`) vm-memory never calls
//! [`DeviceIommu::translate`]: addresses are the backend's own and no guard is taken, as
//! vm-memory defines bypass. A zero-length request pins, walks nothing and yields nothing
//! (vm-memory's empty iterator), also for a blocked device.
//!
//! # Cost
//!
//! `cargo bench --features vm-memory --bench vm_memory` reads 512 bytes through
//! `IommuMemory` on one idle thread. On a shared 2-core machine (noisy: other builds ran) it
//! measured 136 ns through `DeviceIommu` against 78 ns for vm-memory's `RwLock<Iotlb>`
//! pattern and 33 ns for bypass, with one buffer read again and again; 179 ns against 107 ns
//! over 256 scattered pages. The pin and the walk take about 20 ns of it; vm-memory's
//! `Iotlb::lookup` and iteration (the baseline pays them too) about 20 %; most of the rest
//! is moving the guard (the scratch `Iotlb` and the `DmaGuard`, some 120 bytes) by value
//! through `Iotlb::lookup` and vm-memory's iterators, where the baseline moves a two-word
//! `RwLockReadGuard`.
//!
//! # `DmaMemory` and `PinnedDmaMemory`
//!
//! [`DmaMemory<M>`](DmaMemory) holds a backend `M` (guest-physical memory, e.g.
//! `GuestMemoryMmap`) and a [`Device`]. Its `get_slices` pins the device, translates the
//! request's first chunk with [`DmaGuard::translate_chunk`] (and, only when that chunk does
//! not cover the request, the rest, so a fault anywhere fails the call before a byte moves, as
//! with `IommuMemory`), and returns an iterator that owns the guard and cuts each chunk's
//! target into the backend's regions. Nothing is allocated and no `Iotlb` is involved; the
//! iterator is the guard (or, pinned, a reference to it) and five words.
//!
//! [`DmaMemory::pin`] returns a [`PinnedDmaMemory`]: one [`DmaGuard`] (one snapshot of the
//! device's domain, G1) that every access through it uses, so an access costs the leaf walk
//! and no pin. The slices it hands out borrow it, so they cannot outlive the guard.
//!
//! **What is fenced.** An `ioas_unmap` or `device_detach` waits for every guard alive when it
//! began, so:
//!
//! * through `DmaMemory`: every `Bytes` call (as with `IommuMemory`), and a `get_slices`
//!   iterator while it is held; not a slice kept after its iterator is dropped (as virtio-queue's
//!   `Reader::new` and `Writer::new` keep them);
//! * through `PinnedDmaMemory`: everything, for as long as it lives. virtio-queue's `Reader`
//!   and `Writer` built on a `&PinnedDmaMemory` borrow it, so every buffer copy of the chain
//!   happens under its guard: pin around the chain (pop, `Reader`, `Writer`, `add_used`), drop
//!   it after ([`docs::patterns`](crate::docs::patterns), "Pin around a descriptor chain").
//!
//! **`Send` and `Sync`.** `DmaGuard` is `!Send` (a pin belongs to its thread's slot), so
//! `PinnedDmaMemory` and `DmaMemory`'s slice iterator are neither `Send` nor `Sync`.
//! vm-memory's `GuestMemory` and virtio-queue's `Reader`, `Writer`, `DescriptorChain` and
//! `Queue::pop_descriptor_chain` ask neither, so they work on it; a device shares the
//! `DmaMemory` (which is `Send + Sync` when its backend is, and `Clone`) between its threads,
//! and each thread pins its own chains.
//!
//! **Dirty tracking.** The slices are the backend's, with the backend region's bitmap: a write
//! through an IOVA marks the guest-physical pages it lands in (what live migration scans),
//! where `IommuMemory` marks an IOVA-indexed bitmap of its own. There is no bypass switch:
//! a device without translation uses the backend itself (every `GuestMemoryBackend` is a
//! `GuestMemory`).
//!
//! **Permissions and faults** are those of [`DeviceIommu`] (the table above, the same
//! [`IommuError::CannotResolve`] inside [`GuestMemoryError::IommuError`]), checked chunk by
//! chunk. A request may end exactly at 2^64; one that wraps past it faults. A chunk whose
//! target the backend does not hold is `GuestMemoryError::InvalidGuestAddress`. A slice
//! re-walks chunks after the first under the same guard, so an unmap racing with the
//! iteration (it cannot return before the guard drops) can still turn a later chunk into an
//! error item.
//!
//! [`GuestMemoryError::IommuError`]: ::vm_memory::GuestMemoryError::IommuError
//! [`GuestMemory`]: ::vm_memory::GuestMemory
//! [`GuestMemoryBackend`]: ::vm_memory::GuestMemoryBackend

use crate::{Access, Chunk, Device, DmaGuard, Error, Fault, FaultKind, Prot, PAGE_SIZE};
use ::vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use ::vm_memory::{GuestAddress, Iommu, IommuMemory, Iotlb, Permissions};
use std::cell::Cell;
use std::fmt;
use std::ops::Deref;

mod dma_memory;

pub use dma_memory::{DmaMemory, PinnedDmaMemory};

/// Scratch `Iotlb`s a thread keeps for reuse: one per guard it holds at once, up to this many.
/// A thread that holds more `DeviceIotlb`s at once allocates (and frees) the extra scratches.
pub const SPARE_IOTLBS: usize = 4;

/// vm-memory's [`Iommu`] over a viommu [`Device`]: `IommuMemory<M, DeviceIommu>` translates
/// every access through the device's current domain. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct DeviceIommu {
    device: Device,
}

impl DeviceIommu {
    /// Wraps a device handle (a clone of the one the emulator's DMA threads share).
    pub fn new(device: Device) -> DeviceIommu {
        DeviceIommu { device }
    }

    /// The device whose domain translates.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The device handle back.
    pub fn into_device(self) -> Device {
        self.device
    }
}

impl From<Device> for DeviceIommu {
    fn from(device: Device) -> DeviceIommu {
        DeviceIommu::new(device)
    }
}

impl Iommu for DeviceIommu {
    type IotlbGuard<'a> = DeviceIotlb<'a>;

    /// Pins the device, walks `[iova, iova + length)` for `access` and returns the chunks as
    /// vm-memory's iterator, which holds the pin until it is dropped (see the module docs).
    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<DeviceIotlb<'_>>, IommuError> {
        let mut guard = DeviceIotlb {
            scratch: Scratch::take(),
            dma: self.device.pin(),
        };
        if length != 0 {
            let start = iova.0;
            // vm-memory's `Iotlb` computes `iova + length` in u64: refuse what it cannot hold.
            let end = u64::try_from(length)
                .ok()
                .and_then(|len| start.checked_add(len))
                .ok_or_else(|| IommuError::CannotResolve {
                    iova_range: IovaRange { base: iova, length },
                    reason: "the range ends past the 64-bit address space".into(),
                })?;
            // Whole pages: mappings are page-granular, so the walk faults exactly where the
            // request's would (bar the fault IOVA, clamped below), and the scratch entry then
            // serves later requests within the same pages.
            let page_start = start & !(PAGE_SIZE - 1);
            let page_end = end.checked_next_multiple_of(PAGE_SIZE).unwrap_or(end);
            let dma = &guard.dma;
            let chunks = walk(dma, page_start, page_end, access)
                .map_err(|fault| fault_error(fault, start, end))?;
            guard.scratch.fill(chunks.as_slice(), start, end)?;
        }
        Iotlb::lookup(guard, iova, length, access).map_err(|fails| IommuError::CannotResolve {
            iova_range: fails
                .misses
                .into_iter()
                .chain(fails.access_fails)
                .next()
                .unwrap_or(IovaRange { base: iova, length }),
            reason: "the scratch IOTLB lost the walk's result".into(),
        })
    }
}

/// The guard of one [`DeviceIommu::translate`]: a [`DmaGuard`] of the device and the thread's
/// scratch [`Iotlb`] holding the walk's result. vm-memory keeps it inside its slice iterator;
/// while it lives, unmap and detach fences wait for it (see the module docs).
///
/// Like the `DmaGuard` it holds, it borrows the [`DeviceIommu`] and is neither `Send` nor
/// `Sync`. Its `Iotlb` is valid for the translated range only (it may hold a neighbouring
/// entry that was not walked for this guard); vm-memory reads nothing else.
pub struct DeviceIotlb<'a> {
    scratch: Scratch,
    // Dropped after `Drop::drop` has put the scratch back: the pin ends last.
    dma: DmaGuard<'a>,
}

impl Deref for DeviceIotlb<'_> {
    type Target = Iotlb;

    fn deref(&self) -> &Iotlb {
        &self.scratch.iotlb
    }
}

impl Drop for DeviceIotlb<'_> {
    fn drop(&mut self) {
        Scratch::put(std::mem::take(&mut self.scratch));
    }
}

impl fmt::Debug for DeviceIotlb<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIotlb")
            .field("dma", &self.dma)
            .field("held", &self.scratch.held)
            .finish_non_exhaustive()
    }
}

/// What a scratch `Iotlb` holds, so it can be emptied without a full clear (which would free
/// the tree's node) and reused when the next request lands in the same entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Held {
    #[default]
    Empty,
    /// One entry: `[start, end)` maps to `start + diff ..` (wrapping, as vm-memory stores it).
    One { start: u64, end: u64, diff: u64 },
    /// Several entries within `[start, end)`.
    Many { start: u64, end: u64 },
}

/// A thread's scratch `Iotlb` and what it holds.
#[derive(Debug, Default)]
struct Scratch {
    iotlb: Iotlb,
    held: Held,
}

thread_local! {
    /// The calling thread's spare scratches. A `Cell` each: a scratch is moved out while a
    /// guard uses it and moved back when the guard drops, so no borrow is ever held.
    static SPARES: [Cell<Option<Scratch>>; SPARE_IOTLBS] =
        const { [const { Cell::new(None) }; SPARE_IOTLBS] };
}

impl Scratch {
    /// A spare of this thread, or a new (empty, unallocated) one.
    fn take() -> Scratch {
        SPARES
            .try_with(|spares| spares.iter().find_map(Cell::take))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Gives a scratch back to the thread; one that finds no free slot is dropped.
    fn put(scratch: Scratch) {
        let _ = SPARES.try_with(|spares| {
            let mut scratch = scratch;
            for slot in spares {
                match slot.replace(Some(scratch)) {
                    None => return,
                    Some(older) => scratch = older,
                }
            }
        });
    }

    /// Makes the scratch map `[start, end)` as `chunks` do (a walk's result covering it).
    fn fill(&mut self, chunks: &[Chunk], start: u64, end: u64) -> Result<(), IommuError> {
        if let [c] = chunks {
            let diff = c.target.wrapping_sub(c.iova);
            if let Held::One {
                start: s,
                end: e,
                diff: d,
            } = self.held
            {
                if d == diff && s <= start && end <= e {
                    // The entry already says what the walk says over the request.
                    return Ok(());
                }
            }
            self.clear();
            self.insert(c)?;
            self.held = Held::One {
                start: c.iova,
                end: c.iova + c.len,
                diff,
            };
        } else {
            self.clear();
            for c in chunks {
                self.insert(c)?;
            }
            if let (Some(first), Some(last)) = (chunks.first(), chunks.last()) {
                self.held = Held::Many {
                    start: first.iova,
                    end: last.iova + last.len,
                };
            }
        }
        Ok(())
    }

    fn insert(&mut self, c: &Chunk) -> Result<(), IommuError> {
        let len = usize::try_from(c.len).map_err(|_| IommuError::IommuMisconfigured {
            reason: format!("a chunk of {:#x} bytes does not fit in usize", c.len),
        })?;
        // `ReadWrite`: the walk checked the access's permission; the entry only carries it.
        self.iotlb.set_mapping(
            GuestAddress(c.iova),
            GuestAddress(c.target),
            len,
            Permissions::ReadWrite,
        )
    }

    /// Removes what the scratch holds, keeping the tree's node allocated.
    fn clear(&mut self) {
        match std::mem::take(&mut self.held) {
            Held::Empty => {}
            Held::One { start, end, .. } | Held::Many { start, end } => {
                // Every entry was inserted from a `usize` length, so the span fits.
                self.iotlb
                    .invalidate_mapping(GuestAddress(start), (end - start) as usize);
            }
        }
    }
}

/// Walks `[start, end)` through `dma` for every access `perm` asks for (see the module docs).
fn walk<'g>(
    dma: &'g DmaGuard<'_>,
    start: u64,
    end: u64,
    perm: Permissions,
) -> Result<crate::Translation<'g>, Fault> {
    let len = end - start;
    match perm {
        Permissions::Read => dma.translate(start, len, Access::Read),
        Permissions::Write => dma.translate(start, len, Access::Write),
        Permissions::ReadWrite => {
            dma.translate(start, len, Access::Read)?;
            dma.translate(start, len, Access::Write)
        }
        Permissions::No => dma.translate(start, len, Access::Read).or_else(|fault| {
            if fault.kind == FaultKind::Permission {
                dma.translate(start, len, Access::Write).map_err(|_| fault)
            } else {
                Err(fault)
            }
        }),
    }
}

/// vm-memory's error for a fault of a walk over the request `[start, end)` widened to pages: it
/// names the faulting IOVA (clamped into the request) and the rest of the request.
#[cold]
fn fault_error(fault: Fault, start: u64, end: u64) -> IommuError {
    fault_error_len(fault, start, end - start)
}

/// vm-memory's error for a fault in the request of `len` (non-zero, at most a `usize`) bytes at
/// `start`, which may end at 2^64: `CannotResolve` from the faulting IOVA (clamped into the
/// request) to the request's end, with the fault's text.
#[cold]
#[inline(never)]
fn fault_error_len(fault: Fault, start: u64, len: u64) -> IommuError {
    // Offsets from `start`, so a request that ends at 2^64 needs no 65-bit end. A walk widened
    // to pages may fault below `start`: that is the request's first byte.
    let off = fault.iova.saturating_sub(start).min(len - 1);
    let base = start.wrapping_add(off);
    let fault = Fault {
        iova: base,
        kind: fault.kind,
    };
    IommuError::CannotResolve {
        iova_range: IovaRange {
            base: GuestAddress(base),
            // At most the request's length, which was a `usize`.
            length: (len - off) as usize,
        },
        reason: fault.to_string(),
    }
}

/// The first chunk of `[iova, iova + len)` (`len` non-zero) through `dma` for every access
/// `perm` asks for, as [`walk`] checks them: `ReadWrite` walks the leaf for both.
#[inline(always)]
fn accesses_chunk(
    dma: &DmaGuard<'_>,
    iova: u64,
    len: u64,
    perm: Permissions,
) -> Result<Chunk, Fault> {
    match perm {
        Permissions::Read => dma.translate_chunk(iova, len, Access::Read),
        Permissions::Write => dma.translate_chunk(iova, len, Access::Write),
        Permissions::ReadWrite => {
            let read = dma.translate_chunk(iova, len, Access::Read)?;
            dma.translate_chunk(iova, read.len, Access::Write)
        }
        Permissions::No => dma
            .translate_chunk(iova, len, Access::Read)
            .or_else(|fault| {
                if fault.kind == FaultKind::Permission {
                    dma.translate_chunk(iova, len, Access::Write)
                        .map_err(|_| fault)
                } else {
                    Err(fault)
                }
            }),
    }
}

/// The vm-memory permission of one viommu access.
impl From<Access> for Permissions {
    fn from(access: Access) -> Permissions {
        match access {
            Access::Read => Permissions::Read,
            Access::Write => Permissions::Write,
        }
    }
}

/// The vm-memory permissions of a mapping's `Prot`.
impl From<Prot> for Permissions {
    fn from(prot: Prot) -> Permissions {
        match (prot.contains(Prot::READ), prot.contains(Prot::WRITE)) {
            (true, true) => Permissions::ReadWrite,
            (true, false) => Permissions::Read,
            (false, true) => Permissions::Write,
            (false, false) => Permissions::No,
        }
    }
}

/// The `Prot` to map with for vm-memory permissions; `Permissions::No` is `EINVAL` (a mapping
/// needs `READ`, `WRITE` or both).
impl TryFrom<Permissions> for Prot {
    type Error = Error;

    fn try_from(perm: Permissions) -> Result<Prot, Error> {
        match perm {
            Permissions::Read => Ok(Prot::READ),
            Permissions::Write => Ok(Prot::WRITE),
            Permissions::ReadWrite => Ok(Prot::RW),
            Permissions::No => Err(Error::InvalidArgument(
                "vm-memory's Permissions::No grants no access to map with",
            )),
        }
    }
}

/// The viommu accesses that vm-memory `perm` asks for, each of which a translation must allow
/// (`No`: none, any mapping will do).
pub fn accesses(perm: Permissions) -> &'static [Access] {
    match perm {
        Permissions::No => &[],
        Permissions::Read => &[Access::Read],
        Permissions::Write => &[Access::Write],
        Permissions::ReadWrite => &[Access::Read, Access::Write],
    }
}

/// `IommuMemory` over a [`DeviceIommu`]: guest memory as one device sees it.
pub type DeviceMemory<M> = IommuMemory<M, DeviceIommu>;
