//! The small value types the control and data planes speak in.
//!
//! Addresses are plain `u64` in the public signatures (they are the contract iommufd users
//! know; there is no `Iova` newtype); confusion between IOVAs and targets is avoided by
//! naming: every function that takes both names them `iova` and `target`, and page-table
//! entries are their own type (in `pagetable/`).

use std::fmt;
use std::ops::{BitOr, Range};

/// The granule of every mapping: 4 KiB.
pub const PAGE_SIZE: u64 = 4096;

/// An IOMMU group number, chosen by the caller (like a Linux `iommu_group` id).
///
/// Devices bound with the same `GroupId` must share one domain: they switch together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// The control plane's name for an IOAS, a HWPT or a device (iommufd's object id).
///
/// IDs are never reused within one [`crate::Iommu`]: a destroyed ID stays `ENOENT` forever.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId(pub(crate) u32);

impl ObjId {
    /// The raw number, for logging and for front ends that pass ids to a guest.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for ObjId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjId({})", self.0)
    }
}

impl fmt::Display for ObjId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a device brings to binding: the width of the IOVAs it can emit and the IOVA ranges
/// it reserves (an MSI doorbell window, say), which no mapping of its IOAS may cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Width of the device's IOVA space in bits (its aperture is `0 .. 1 << iova_bits`).
    /// Accepted range: 13 ..= 64.
    pub iova_bits: u8,
    /// Reserved IOVA ranges (half-open, byte granular; a range reserves every page it touches).
    pub reserved: Vec<Range<u64>>,
    /// Width of the device's PASIDs in bits: it can tag DMA with PASIDs `1 .. 1 << pasid_bits`
    /// ([`crate::Device::pin_pasid`]). `0` (the default): no PASID support. At most 20
    /// ([`MAX_PASID_BITS`]).
    pub pasid_bits: u8,
}

/// "No PASID": the PASID that names a device's RID, i.e. untagged DMA. `pin_pasid(NO_PASID)`
/// is `pin()`, and the `_pasid` control calls reject it (`EINVAL`: use the calls without
/// `_pasid`), as the kernel rejects PASID 0 (`IOMMU_NO_PASID`).
///
/// This is the control plane's value and the public one. The data plane carries untagged DMA
/// as `u32::MAX` instead (`nested::UNTAGGED`): there the value is a stage-1 substream ID,
/// where 0 indexes context descriptor 0 (docs/design.md, "No PASID").
pub const NO_PASID: u32 = 0;

/// The widest PASID a device can declare ([`DeviceInfo::pasid_bits`]), as PCIe and the kernel's
/// `IOASID_BITS` allow.
pub const MAX_PASID_BITS: u8 = 20;

impl Default for DeviceInfo {
    fn default() -> Self {
        DeviceInfo {
            iova_bits: 48,
            reserved: Vec::new(),
            pasid_bits: 0,
        }
    }
}

/// Access permissions of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prot(pub(crate) u8);

impl Prot {
    /// The device may read (DMA from memory).
    pub const READ: Prot = Prot(1);
    /// The device may write (DMA to memory).
    pub const WRITE: Prot = Prot(2);
    /// Both.
    pub const RW: Prot = Prot(3);

    /// True if every permission of `other` is in `self`.
    pub fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if `access` is allowed.
    pub fn allows(self, access: Access) -> bool {
        self.contains(access.prot())
    }

    /// The raw bits (READ = 1, WRITE = 2).
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl BitOr for Prot {
    type Output = Prot;
    fn bitor(self, rhs: Prot) -> Prot {
        Prot(self.0 | rhs.0)
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.contains(Prot::READ) { "R" } else { "-" };
        let w = if self.contains(Prot::WRITE) { "W" } else { "-" };
        write!(f, "Prot({r}{w})")
    }
}

/// Flags for [`crate::Iommu::hwpt_alloc`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HwptFlags(u32);

impl HwptFlags {
    /// The HWPT may become the stage-2 parent of nested HWPTs.
    pub const NEST_PARENT: HwptFlags = HwptFlags(1);
    const KNOWN: u32 = 1;

    /// No flags.
    pub const fn empty() -> HwptFlags {
        HwptFlags(0)
    }
    /// Builds flags from raw bits; unknown bits are refused by `hwpt_alloc` (`EOPNOTSUPP`).
    pub const fn from_bits_retain(bits: u32) -> HwptFlags {
        HwptFlags(bits)
    }
    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// True if every flag of `other` is set.
    pub const fn contains(self, other: HwptFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub(crate) const fn unknown_bits(self) -> u32 {
        self.0 & !Self::KNOWN
    }
}

impl BitOr for HwptFlags {
    type Output = HwptFlags;
    fn bitor(self, rhs: HwptFlags) -> HwptFlags {
        HwptFlags(self.0 | rhs.0)
    }
}

/// The direction of a DMA access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// The device reads memory.
    Read,
    /// The device writes memory.
    Write,
}

impl Access {
    pub(crate) fn prot(self) -> Prot {
        match self {
            Access::Read => Prot::READ,
            Access::Write => Prot::WRITE,
        }
    }
}

/// The kind of an object behind an [`ObjId`], as errors report it.
///
/// Non-exhaustive: kinds will be added (nested HWPTs, PASID attachments), so a `match` on it
/// needs a wildcard arm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ObjKind {
    /// An I/O address space.
    Ioas,
    /// A hardware page table (a domain).
    Hwpt,
    /// A bound device.
    Device,
}

impl fmt::Display for ObjKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjKind::Ioas => "IOAS",
            ObjKind::Hwpt => "HWPT",
            ObjKind::Device => "device",
        })
    }
}
