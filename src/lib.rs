//! # viommu: a user-space IOMMU for device emulators
//!
//! `viommu` plays the part of an IOMMU inside a VMM, a vhost-user backend or a test harness.
//! Emulated devices translate every DMA address through it, while the guest (through a
//! virtio-iommu or an emulated VT-d/SMMU front end) changes mappings and moves devices between
//! domains. Its object model is Linux iommufd's (IOAS, HWPT, group, device), in user space,
//! with one thing the kernel does not promise: [`Iommu::device_replace`] moves a group from
//! any domain to any other in one atomic publish, so DMA is never blocked or torn during the
//! switch.
//!
//! ```
//! use viommu::{Access, DeviceInfo, GroupId, HwptFlags, Iommu, Prot};
//!
//! let iommu = Iommu::new();
//! let (dev_id, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
//! let ioas = iommu.ioas_alloc()?;
//! iommu.ioas_map(ioas, Some(0x10_0000), 0x8000_0000, 0x20_0000, Prot::RW)?;
//! iommu.device_attach(dev_id, ioas)?; // an auto HWPT on `ioas`
//!
//! // A DMA thread: pin once, translate, access memory, drop the guard.
//! {
//!     let dma = dev.pin();
//!     let chunks: Vec<_> = dma.translate(0x10_1000, 0x2000, Access::Write).unwrap().collect();
//!     assert_eq!(chunks[0].target, 0x8000_1000);
//!     assert_eq!(chunks[0].len, 0x2000);
//! }
//!
//! // Move the device to a user HWPT of another IOAS, in one publish.
//! let ioas2 = iommu.ioas_alloc()?;
//! iommu.ioas_map(ioas2, Some(0x10_0000), 0x9000_0000, 0x20_0000, Prot::RW)?;
//! let hwpt2 = iommu.hwpt_alloc(dev_id, ioas2, HwptFlags::empty())?;
//! iommu.device_replace(dev_id, hwpt2)?;
//! let t = dev.translate(0x10_0000, 0x1000, Access::Read).unwrap();
//! assert_eq!(t.as_slice()[0].target, 0x9000_0000);
//! # Ok::<(), viommu::Error>(())
//! ```
//!
//! ## Guarantees
//!
//! These are the contract; each is tested, and the concurrent ones are model-checked with loom
//! ([`docs::loom`]). [`docs::design`] explains how the code keeps them.
//!
//! * **G1 snapshot.** Every translation through one [`DmaGuard`] uses one domain, the one
//!   active when the guard was made.
//! * **G2 hitless replace.** Across [`Iommu::device_replace`], a translation of an IOVA mapped
//!   with enough permission in both the old and the new domain never faults; nothing observes
//!   a blocked or half-built domain.
//! * **G3 group-wide.** Every device of a group switches at the same instant (one publish).
//! * **G4 any-to-any.** Replace works between auto and user HWPTs, within one IOAS or across
//!   two, paging and nested, and to the same target (a no-op).
//! * **G5 unmap fence.** When [`Iommu::ioas_unmap`] returns, no guard made after the return
//!   translates into the range, and every guard that might have translated into it has been
//!   dropped: no DMA is still in flight to the old targets, so the guest may reuse them.
//! * **G6 detach fence.** When [`Iommu::device_detach`] returns, the device's translations
//!   fault [`FaultKind::Blocked`] and no guard of that device made before the call is alive.
//! * **G7 populate before publish.** A domain holds every mapping of its IOAS before any
//!   device can translate through it; a new IOAS gets the device's reserved ranges before
//!   the switch, the old IOAS loses them after it.
//! * **G8 rollback.** A failed control call leaves every object, mapping, reservation and
//!   count exactly as it was.
//! * **G9 reclamation.** An object's ID is gone as soon as the call that ends it returns; its
//!   memory, and that of retired page-table nodes, is freed once no guard can see it; after
//!   [`Iommu::synchronize`] returns, what was retired before the call has been freed.
//! * **G10 no deadlock.** All control calls may run concurrently from any threads; locks are
//!   taken in one documented order.
//! * **G11 lock-free reads.** Translation takes no lock, makes no syscall, allocates nothing
//!   and writes no shared cache line.
//! * **G12 fences wait for guards, not threads.** `ioas_unmap`, `device_detach`,
//!   `device_detach_pasid`, `hwpt_invalidate` and `synchronize` wait only for the guards that were alive when they began. A guard made
//!   after that never delays them, also on a thread that still holds older guards. A fencing
//!   call returns [`Error::Deadlock`] (`EDEADLK`) exactly when the calling thread itself holds
//!   a guard that the call would wait for.
//! * **G13 nothing is freed on a DMA thread.** [`Device::pin`], [`DmaGuard::translate`] and
//!   dropping a guard never free memory, run deferred destructors, take a lock or make a
//!   syscall; a pin may allocate only when its thread first uses that `Iommu` or holds more
//!   guards at once than it ever has. Retired memory is freed by control-plane calls.
//! * **G14 isolation.** No control call holds a lock shared by every group or every IOAS
//!   while it does work that grows with the size of an IOAS, so a replace, attach, map or
//!   unmap on one IOAS is not delayed by a populate or a large unmap on another.
//! * **G15 fences reach observers.** DMA outside the guards (a vhost back end's device
//!   IOTLB, a VFIO or vDPA device whose host IOMMU mirrors a domain) follows through
//!   [`IoasMirror`]s ([`Iommu::ioas_add_mirror`]) and [`DeviceObserver`]s
//!   ([`Iommu::device_add_observer`]). When `ioas_unmap`, `device_detach`, `device_replace`,
//!   `device_replace_pasid`, `device_detach_pasid` or `hwpt_invalidate` returns (or an
//!   [`UnmapCompletion`] completes), every observer of every device whose translations the
//!   call could change has acknowledged an invalidation covering them, and every mirror of the
//!   IOAS has returned from its `unmap`. A mirror's refused map fails `ioas_map` with nothing
//!   changed (G8); an observer that does not acknowledge within its deadline fails the call
//!   with `ETIMEDOUT` (the change stays) and is marked failed. Observers are called on
//!   control-plane threads, never while the object table's lock is held.
//!
//! ## PASIDs
//!
//! A device bound with [`DeviceInfo::pasid_bits`] tags DMA with PASIDs; each PASID has its own
//! domain, attached with [`Iommu::device_attach_pasid`], moved with
//! [`Iommu::device_replace_pasid`] and detached with [`Iommu::device_detach_pasid`] (a fence,
//! as `device_detach`), and read with [`Device::pin_pasid`] (`pin_pasid(0)` is `pin()`). Every
//! guarantee above holds per PASID: a PASID's cell is published exactly like the RID's.
//!
//! ## Nesting
//!
//! A guest that owns its IOMMU page tables (an emulated SMMUv3 or VT-d with nesting) gets a
//! nested HWPT: [`Iommu::hwpt_alloc_nested`] puts the guest's stage 1 ([`Stage1`]: an SMMUv3
//! STE, or a VT-d first-stage table) over a paging HWPT allocated with
//! [`HwptFlags::NEST_PARENT`] (stage 2, the guest's IPA space). Every stage-1 table read is an
//! IPA translated through stage 2 and read with the VMM's [`TableMemory`]. Finished
//! translations are cached per thread; the guest's invalidations reach the cache through
//! [`Iommu::hwpt_invalidate`] (a fence, like an unmap), and stage-2 unmaps reach it with no
//! guest involvement. A nested HWPT is attached, replaced and destroyed like any HWPT, at the
//! RID or at a PASID, hitlessly. [`docs::nesting`] has the formats and the coherence rules.
//!
//! Errors are one [`Error`] enum whose variants name the offending object or range;
//! [`Error::errno`] gives the errno iommufd returns for the same mistake.
//!
//! ## Using it well
//!
//! [`docs::patterns`] is the page to read before wiring `viommu` into an emulator: pin once
//! per unit of work and never hold a guard across blocking I/O (it delays every unmap and
//! detach fence), one [`Iommu`] per VM, how many guards a thread may hold, and what the
//! one-shot [`Device::translate`] does and does not fence.
//!
//! ## Safety and correctness
//!
//! * The data plane ([`Device::pin`], [`DmaGuard::translate`], [`Device::translate`]) takes no
//!   lock, makes no syscall and allocates nothing for translations of up to
//!   [`INLINE_CHUNKS`] pieces.
//! * Protection lives in types: a [`DmaGuard`] borrows its [`Device`], is neither `Send` nor
//!   `Sync`, and a [`Translation`] made through it cannot outlive it (pinned by
//!   `compile_fail` tests).
//! * Every `unsafe` block carries a `// SAFETY:` argument and every non-`Relaxed` ordering an
//!   `// ORDERING:` note naming its pair; the protocols are model-checked with loom
//!   ([`docs::loom`]), stress-tested, and the page-table and scenario tests run under
//!   valgrind's memory checker in CI.
//!
//! ## Features
//!
//! | feature | what |
//! | --- | --- |
//! | `virtio-iommu` | `viommu::virtio_iommu`: a virtio-iommu device model (virtio 1.3, section 5.13) that turns request bytes into reply bytes over an [`Iommu`] (off by default) |
//! | `vm-memory` | `viommu::vm_memory`: `DeviceIommu`, rust-vmm vm-memory 0.18's `Iommu` trait over a [`Device`], so `IommuMemory` and virtio-queue translate through viommu, fenced per access (off by default) |
//!
//! Everything else is always built. The `viommu_loom` cfg
//! (set by `scripts/loom.sh`) rebuilds the crate
//! on loom's primitives for model checking; it is for the crate's own tests, not for users.
//! The minimum supported Rust version of the library is the `rust-version` in `Cargo.toml`
//! (1.82); its tests, benches and loom build use dev-dependencies that need newer Rust.
//!
//! ## Further reading
//!
//! The [`docs`] module holds the longer pages: [`docs::patterns`] (patterns and
//! limitations), [`docs::design`] (architecture, protocols, orderings, lock order,
//! reclamation), [`docs::nesting`] (stage-1 formats, the IOTLB), [`docs::loom`] (model checking and the heap check) and
//! [`docs::benchmarks`] (the latency suite and how to reproduce its numbers).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod docs;

mod device;
mod domain;
mod error;
mod grace;
mod group;
mod identity;
mod ioas;
mod iommu;
mod nested;
mod observers;
mod pagetable;
/// Under loom only: the page table's shape knobs for models of the production shape.
#[cfg(viommu_loom)]
#[doc(hidden)]
pub use pagetable::loom_shape as loom_page_table_shape;
mod pasid;
mod snapshot;
mod sync;
mod translation;
mod types;
#[cfg(feature = "virtio-iommu")]
pub mod virtio_iommu;
#[cfg(feature = "vm-memory")]
pub mod vm_memory;

/// The README's example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use device::{Device, DmaGuard};
pub use error::{errno, Error, Result};
pub use grace::FenceMode;
pub use ioas::{Budget, BudgetUsage};
pub use iommu::{Iommu, Stats, UnmapCompletion};
pub use nested::{Invalidation, Stage1, TableMemory};
pub use observers::{
    Ack, AckToken, DeviceObserver, IoasMirror, MirrorError, ObserverId, PendingAck,
    DEFAULT_OBSERVER_DEADLINE,
};
pub use translation::{Chunk, Fault, FaultKind, Translation, INLINE_CHUNKS};
pub use types::{
    Access, DeviceInfo, GroupId, HwptFlags, ObjId, ObjKind, Prot, MAX_PASID_BITS, NO_PASID,
    PAGE_SIZE,
};
