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
//! ## Safety and correctness
//!
//! * The data plane ([`Device::pin`], [`DmaGuard::translate`], [`Device::translate`]) takes no
//!   lock, makes no syscall and allocates nothing for translations of up to
//!   [`INLINE_CHUNKS`] pieces.
//! * Each group's active domain sits behind one `arc_swap::ArcSwap`; replace is one store.
//! * Page-table nodes emptied by unmap are retired through crossbeam-epoch (a collector per
//!   `Iommu`); a `DmaGuard` holds one epoch pin, which is also what the unmap and detach
//!   fences wait for.
//! * Every `unsafe` block carries a `// SAFETY:` argument and every non-`Relaxed` ordering an
//!   `// ORDERING:` note naming its pair; the protocols are model-checked with loom
//!   (`loom-tests/`) and stress-tested (`tests/`).
//!
//! The guarantees (G1-G11), the protocols and the lock order are in the design notes below.
#![doc = ""]
#![doc = include_str!("../docs/design.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod device;
mod domain;
mod error;
mod grace;
mod group;
mod ioas;
mod iommu;
mod pagetable;
mod sync;
mod translation;
mod types;

/// The README's example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use device::{Device, DmaGuard};
pub use error::{errno, Error, Result};
pub use iommu::{Iommu, Stats, UnmapCompletion};
pub use translation::{Translation, INLINE_CHUNKS};
pub use types::{
    Access, Chunk, DeviceInfo, Fault, FaultKind, GroupId, HwptFlags, ObjId, ObjKind, Prot,
    PAGE_SIZE,
};
