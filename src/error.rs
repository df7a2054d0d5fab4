//! The control plane's one error type.
//!
//! Every variant says what went wrong and carries the offending object or range, and maps to
//! the errno iommufd returns for the same mistake ([`Error::errno`]), so a front end that
//! forwards errors to a guest or to an iommufd-speaking client can do so without a table of
//! its own. A failed call changes nothing (guarantee G8).

use crate::observers::ObserverId;
use crate::types::{GroupId, ObjId, ObjKind, Prot};
use std::ops::Range;

/// A control-plane error. See [`Error::errno`] for the iommufd errno of each variant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ENOENT`: the ID names no live object (never allocated, or destroyed).
    #[error("no object with id {id}: it was never allocated or has been destroyed")]
    NoSuchObject {
        /// The unknown ID.
        id: ObjId,
    },
    /// `ENOENT`: an unmap range that holds no mapping.
    #[error("nothing is mapped in IOVA range {range:#x?}")]
    NotMapped {
        /// The requested range.
        range: Range<u64>,
    },
    /// `ENOENT`: an unmap range that cuts an area; areas are never split, nothing was removed.
    #[error("unmap of {range:#x?} would split the mapping {area:#x?}; unmap whole mappings")]
    SplitsArea {
        /// The requested range.
        range: Range<u64>,
        /// The area it cuts.
        area: Range<u64>,
    },
    /// `EEXIST`: a fixed-IOVA map over a range already mapped.
    #[error("IOVA range {range:#x?} overlaps the existing mapping {existing:#x?}")]
    Exists {
        /// The requested range.
        range: Range<u64>,
        /// The mapping in the way.
        existing: Range<u64>,
    },
    /// `EINVAL`: an address or length that is not a multiple of 4 KiB.
    #[error("{what} {value:#x} is not aligned to 4 KiB")]
    Misaligned {
        /// Which argument (`"iova"`, `"target"`, `"length"`).
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// `EINVAL`: a zero length.
    #[error("zero-length {what}")]
    ZeroLength {
        /// What had no length (`"map"`, `"unmap"`).
        what: &'static str,
    },
    /// `EINVAL`: a fixed-IOVA map into a reserved range.
    #[error("IOVA range {range:#x?} overlaps the reserved range {reserved:#x?}")]
    InReservedRange {
        /// The requested range.
        range: Range<u64>,
        /// The reserved range it hits.
        reserved: Range<u64>,
    },
    /// `EINVAL`: the ID names an object of another kind.
    #[error("object {id} is a {found}, but a {expected} is needed here")]
    WrongType {
        /// The ID given.
        id: ObjId,
        /// What the call needs.
        expected: ObjKind,
        /// What the ID names.
        found: ObjKind,
    },
    /// `EINVAL`: attach of a device whose group is on another HWPT (use `device_replace`).
    #[error("group {group:?} is attached to HWPT {current}, not {requested}; use device_replace to move it")]
    GroupOnOtherHwpt {
        /// The device's group.
        group: GroupId,
        /// The group's HWPT.
        current: ObjId,
        /// The HWPT (or IOAS) asked for.
        requested: ObjId,
    },
    /// `EINVAL`: attach of a device that is already attached.
    #[error("device {dev} is already attached (to HWPT {hwpt}); use device_replace to move it")]
    AlreadyAttached {
        /// The device.
        dev: ObjId,
        /// Its HWPT.
        hwpt: ObjId,
    },
    /// `EINVAL`: replace or detach of a device that is not attached.
    #[error("device {dev} is not attached")]
    NotAttached {
        /// The device.
        dev: ObjId,
    },
    /// `EINVAL`: the domain cannot serve the device: its IOAS maps IOVAs outside the device's
    /// aperture, or the domain's own aperture is narrower than the device's mappings need.
    #[error("HWPT/IOAS {pt} is incompatible with device {dev}: mapping {mapping:#x?} lies outside the device's aperture (IOVAs below {aperture_end:#x})")]
    Incompatible {
        /// The device.
        dev: ObjId,
        /// The HWPT or IOAS.
        pt: ObjId,
        /// The first mapping that does not fit.
        mapping: Range<u64>,
        /// The end of the device's aperture (exclusive; `u64::MAX` for a 64-bit device).
        aperture_end: u64,
    },
    /// `EINVAL`: `DeviceInfo::iova_bits` outside its accepted range, 13 ..= 64.
    #[error("DeviceInfo::iova_bits is {bits}, but it must be in 13..=64")]
    InvalidIovaBits {
        /// The width given.
        bits: u8,
    },
    /// `EINVAL`: an empty range in `DeviceInfo::reserved`.
    #[error("reserved range {range:#x?} is empty")]
    EmptyReservedRange {
        /// The range given.
        range: Range<u64>,
    },
    /// `EINVAL`: an empty range given to [`crate::Iommu::hwpt_alloc_identity`] (`0..0` for
    /// no range at all).
    #[error("identity range {range:#x?} is empty")]
    EmptyIdentityRange {
        /// The range given.
        range: Range<u64>,
    },
    /// `EINVAL`: `DeviceInfo::pasid_bits` above [`crate::MAX_PASID_BITS`] (20).
    #[error("DeviceInfo::pasid_bits is {bits}, but it must be at most 20")]
    InvalidPasidBits {
        /// The width given.
        bits: u8,
    },
    /// `EINVAL`: PASID 0 (the RID: use the calls without `_pasid`) or a PASID at or above
    /// `1 << pasid_bits` of the device.
    #[error(
        "PASID {pasid} is not valid for device {dev} (it takes PASIDs 1 .. 1 << {pasid_bits})"
    )]
    InvalidPasid {
        /// The device.
        dev: ObjId,
        /// The PASID given.
        pasid: u32,
        /// The device's `DeviceInfo::pasid_bits`.
        pasid_bits: u8,
    },
    /// `EBUSY`: attach of a PASID the device already has attached (even to the same HWPT: use
    /// `device_replace_pasid`).
    #[error("device {dev} already has PASID {pasid} attached (to HWPT {hwpt}); use device_replace_pasid to move it")]
    PasidBusy {
        /// The device.
        dev: ObjId,
        /// The PASID.
        pasid: u32,
        /// The HWPT it is attached to.
        hwpt: ObjId,
    },
    /// `EINVAL`: attach of a PASID that another device of the group has attached to another
    /// HWPT (a group's devices share one domain per PASID).
    #[error("PASID {pasid} of group {group:?} is attached to HWPT {current}, not {requested}")]
    PasidOnOtherHwpt {
        /// The device's group.
        group: GroupId,
        /// The PASID.
        pasid: u32,
        /// The HWPT the group's PASID is on.
        current: ObjId,
        /// The HWPT (or IOAS) asked for.
        requested: ObjId,
    },
    /// `EINVAL`: replace or detach of a PASID the device does not have attached.
    #[error("device {dev} has no domain attached at PASID {pasid}")]
    PasidNotAttached {
        /// The device.
        dev: ObjId,
        /// The PASID.
        pasid: u32,
    },
    /// `EINVAL`: a nested HWPT's parent is not a paging HWPT allocated with
    /// `HwptFlags::NEST_PARENT` (a nested HWPT, or a paging HWPT without the flag).
    #[error("HWPT {parent} cannot be a nesting parent: {why}")]
    NotNestParent {
        /// The HWPT given as parent.
        parent: ObjId,
        /// Why (`"it is a nested HWPT"`, `"it was not allocated with NEST_PARENT"`).
        why: &'static str,
    },
    /// `EINVAL`: stage-1 data the library cannot accept (an STE Config or S1Fmt it does not
    /// support, reserved bits set, a VT-d `addr_width` other than 48 or 57; the text says
    /// which).
    #[error("stage-1 configuration refused: {reason}")]
    InvalidStage1 {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `EINVAL`: `hwpt_invalidate` on a HWPT that is not nested (stage 2 belongs to the host:
    /// `ioas_unmap` keeps it coherent).
    #[error("HWPT {id} is not a nested HWPT; only nested HWPTs cache guest stage-1 entries")]
    NotNested {
        /// The HWPT.
        id: ObjId,
    },
    /// `EINVAL`: a PASID (SSID) in an invalidation that no device can use (20 bits at most).
    #[error("PASID {pasid} is out of range (PASIDs have at most 20 bits)")]
    PasidOutOfRange {
        /// The PASID given.
        pasid: u32,
    },
    /// `EINVAL`: a map without `READ` or `WRITE`.
    #[error("a mapping needs READ, WRITE or both, not {prot:?}")]
    NoPermission {
        /// The permissions given.
        prot: Prot,
    },
    /// `EINVAL`: an argument out of its accepted range (the text says which).
    ///
    /// Kept for the checks that have no typed variant yet; match the typed variants
    /// ([`Error::InvalidIovaBits`], [`Error::EmptyReservedRange`], [`Error::NoPermission`])
    /// where one exists, and [`Error::errno`] otherwise.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// `EBUSY`: the object is still referenced.
    #[error(
        "{kind} {id} is busy: {users} reference(s) remain (attached devices or HWPTs built on it)"
    )]
    Busy {
        /// The object.
        id: ObjId,
        /// What it is.
        kind: ObjKind,
        /// How many references hold it.
        users: usize,
    },
    /// `EBUSY`: auto HWPTs are freed with their last device, never destroyed by ID.
    #[error("HWPT {id} was made automatically by an attach; it goes away with its last device")]
    AutoHwpt {
        /// The auto HWPT.
        id: ObjId,
    },
    /// `ENOSPC`: no free IOVA hole of this size for an automatic map.
    #[error("no free IOVA range of {len:#x} bytes (with alignment {align:#x}) in the aperture")]
    NoSpace {
        /// The length asked for.
        len: u64,
        /// The alignment it needed.
        align: u64,
    },
    /// `ENOMEM`: the call could take an IOAS past its [`crate::Budget`]; nothing changed.
    #[error("the IOAS's budget allows {limit} {what}; the call could need {needed}")]
    BudgetExceeded {
        /// Which limit (`"areas"`, `"page-table bytes"`, `"page-table bytes one map may add"`).
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What the call could take the IOAS to (or add, for the per-map limit).
        needed: u64,
    },
    /// `ENOSPC`: every object ID of this `Iommu` has been used (IDs are never reused).
    #[error("object IDs are exhausted: all 2^32 - 1 have been allocated")]
    IdsExhausted,
    /// `EADDRINUSE`: a device's reserved range collides with a mapping of the target IOAS.
    #[error("device {dev} reserves {reserved:#x?}, but the IOAS maps {mapping:#x?} there")]
    ReservedInUse {
        /// The device.
        dev: ObjId,
        /// Its reserved range.
        reserved: Range<u64>,
        /// The mapping in the way.
        mapping: Range<u64>,
    },
    /// `EOVERFLOW`: `start + len` wraps around the 64-bit address space.
    #[error("{what} range starting at {start:#x} with length {len:#x} wraps past 2^64")]
    Overflow {
        /// Which range (`"iova"`, `"target"`).
        what: &'static str,
        /// Start of the range.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// `EOVERFLOW`: the range leaves the aperture of a device or domain on this IOAS.
    #[error("IOVA range {range:#x?} leaves the aperture (IOVAs below {aperture_end:#x}) of a device or domain attached to the IOAS")]
    OutsideAperture {
        /// The requested range.
        range: Range<u64>,
        /// The narrowest aperture end (exclusive).
        aperture_end: u64,
    },
    /// `EOPNOTSUPP`: HWPT flag bits this version does not know.
    #[error("unknown HWPT flag bits {bits:#x}")]
    UnknownHwptFlags {
        /// The unknown bits (the known ones masked off).
        bits: u32,
    },
    /// `EOPNOTSUPP`: flag bits or a feature this build does not know (the text says which).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// `EDEADLK`: a waiting call made by a thread that holds a `DmaGuard` of the same `Iommu`
    /// (the call would wait for that guard, i.e. for itself).
    #[error("{call} would wait for a DmaGuard held by the calling thread; drop the guard first")]
    Deadlock {
        /// The call.
        call: &'static str,
    },
    /// The mirror's own errno ([`crate::MirrorError`]): an [`crate::IoasMirror`] refused a
    /// map (in `ioas_map`, or replaying an area in `ioas_add_mirror`); nothing changed.
    #[error("{observer} refused the map (errno {errno})")]
    MirrorRefused {
        /// The mirror.
        observer: ObserverId,
        /// What it failed with.
        errno: i32,
    },
    /// `ETIMEDOUT`: a [`crate::DeviceObserver`] did not acknowledge an invalidation within
    /// its deadline (or dropped its [`crate::AckToken`]). The call's change was made (the
    /// guest's view moved on); the observer is marked failed and no later call waits for it.
    #[error("{observer} of device {dev} did not acknowledge an invalidation in time; it is marked failed")]
    ObserverTimedOut {
        /// The observer.
        observer: ObserverId,
        /// The device it observes.
        dev: ObjId,
    },
    /// `ENOENT`: the ID names no observer (never added, removed, or its IOAS or device was
    /// destroyed).
    #[error("no {id}: it was never added, was removed, or its IOAS or device is gone")]
    NoSuchObserver {
        /// The unknown ID.
        id: ObserverId,
    },
}

impl Error {
    /// The iommufd errno for this error, as a positive Linux value (`ENOENT` = 2, ...).
    pub fn errno(&self) -> i32 {
        match self {
            Error::NoSuchObject { .. }
            | Error::NotMapped { .. }
            | Error::SplitsArea { .. }
            | Error::NoSuchObserver { .. } => errno::ENOENT,
            Error::Exists { .. } => errno::EEXIST,
            Error::Misaligned { .. }
            | Error::ZeroLength { .. }
            | Error::InReservedRange { .. }
            | Error::WrongType { .. }
            | Error::GroupOnOtherHwpt { .. }
            | Error::AlreadyAttached { .. }
            | Error::NotAttached { .. }
            | Error::Incompatible { .. }
            | Error::InvalidIovaBits { .. }
            | Error::EmptyReservedRange { .. }
            | Error::EmptyIdentityRange { .. }
            | Error::NoPermission { .. }
            | Error::InvalidPasidBits { .. }
            | Error::InvalidPasid { .. }
            | Error::PasidOnOtherHwpt { .. }
            | Error::PasidNotAttached { .. }
            | Error::NotNestParent { .. }
            | Error::InvalidStage1 { .. }
            | Error::NotNested { .. }
            | Error::PasidOutOfRange { .. }
            | Error::InvalidArgument(_) => errno::EINVAL,
            Error::Busy { .. } | Error::AutoHwpt { .. } | Error::PasidBusy { .. } => errno::EBUSY,
            Error::NoSpace { .. } | Error::IdsExhausted => errno::ENOSPC,
            Error::BudgetExceeded { .. } => errno::ENOMEM,
            Error::ReservedInUse { .. } => errno::EADDRINUSE,
            Error::Overflow { .. } | Error::OutsideAperture { .. } => errno::EOVERFLOW,
            Error::UnknownHwptFlags { .. } | Error::Unsupported(_) => errno::EOPNOTSUPP,
            Error::Deadlock { .. } => errno::EDEADLK,
            Error::MirrorRefused { errno, .. } => *errno,
            Error::ObserverTimedOut { .. } => errno::ETIMEDOUT,
        }
    }
}

/// The Linux errno values [`Error::errno`] returns (x86-64/arm64 numbering).
pub mod errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Out of memory (a budget, [`crate::Budget`]).
    pub const ENOMEM: i32 = 12;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Resource deadlock would occur.
    pub const EDEADLK: i32 = 35;
    /// Value too large for defined data type.
    pub const EOVERFLOW: i32 = 75;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Address already in use.
    pub const EADDRINUSE: i32 = 98;
    /// Connection timed out (an observer's deadline, [`crate::DeviceObserver`]).
    pub const ETIMEDOUT: i32 = 110;
}

/// The control plane's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant against the errno SPEC's table gives it, written as numbers so that a
    /// changed constant in [`errno`] is caught too.
    #[test]
    fn errno_table() {
        let id = ObjId(7);
        let cases: Vec<(Error, i32)> = vec![
            (Error::NoSuchObject { id }, 2),
            (Error::NotMapped { range: 0..4096 }, 2),
            (
                Error::SplitsArea {
                    range: 0..4096,
                    area: 0..8192,
                },
                2,
            ),
            (
                Error::Exists {
                    range: 0..4096,
                    existing: 0..4096,
                },
                17,
            ),
            (
                Error::Misaligned {
                    what: "iova",
                    value: 1,
                },
                22,
            ),
            (Error::ZeroLength { what: "map" }, 22),
            (
                Error::InReservedRange {
                    range: 0..4096,
                    reserved: 0..1,
                },
                22,
            ),
            (
                Error::WrongType {
                    id,
                    expected: ObjKind::Ioas,
                    found: ObjKind::Device,
                },
                22,
            ),
            (
                Error::GroupOnOtherHwpt {
                    group: GroupId(1),
                    current: id,
                    requested: ObjId(8),
                },
                22,
            ),
            (Error::AlreadyAttached { dev: id, hwpt: id }, 22),
            (Error::NotAttached { dev: id }, 22),
            (
                Error::Incompatible {
                    dev: id,
                    pt: id,
                    mapping: 0..4096,
                    aperture_end: 4096,
                },
                22,
            ),
            (Error::InvalidIovaBits { bits: 12 }, 22),
            (Error::EmptyReservedRange { range: 5..5 }, 22),
            (Error::EmptyIdentityRange { range: 5..5 }, 22),
            (Error::NoPermission { prot: Prot(0) }, 22),
            (Error::InvalidArgument("x"), 22),
            (Error::InvalidPasidBits { bits: 21 }, 22),
            (
                Error::InvalidPasid {
                    dev: id,
                    pasid: 0,
                    pasid_bits: 4,
                },
                22,
            ),
            (
                Error::PasidBusy {
                    dev: id,
                    pasid: 1,
                    hwpt: id,
                },
                16,
            ),
            (
                Error::PasidOnOtherHwpt {
                    group: GroupId(1),
                    pasid: 1,
                    current: id,
                    requested: ObjId(8),
                },
                22,
            ),
            (Error::PasidNotAttached { dev: id, pasid: 1 }, 22),
            (
                Error::Busy {
                    id,
                    kind: ObjKind::Hwpt,
                    users: 1,
                },
                16,
            ),
            (Error::AutoHwpt { id }, 16),
            (
                Error::NoSpace {
                    len: 4096,
                    align: 4096,
                },
                28,
            ),
            (
                Error::BudgetExceeded {
                    what: "areas",
                    limit: 1,
                    needed: 2,
                },
                12,
            ),
            (
                Error::ReservedInUse {
                    dev: id,
                    reserved: 0..1,
                    mapping: 0..4096,
                },
                98,
            ),
            (
                Error::Overflow {
                    what: "iova",
                    start: u64::MAX,
                    len: 4096,
                },
                75,
            ),
            (
                Error::OutsideAperture {
                    range: 0..4096,
                    aperture_end: 0,
                },
                75,
            ),
            (Error::UnknownHwptFlags { bits: 2 }, 95),
            (Error::Unsupported("x"), 95),
            (Error::Deadlock { call: "ioas_unmap" }, 35),
            (
                Error::MirrorRefused {
                    observer: ObserverId(1),
                    errno: 14,
                },
                14,
            ),
            (
                Error::ObserverTimedOut {
                    observer: ObserverId(1),
                    dev: id,
                },
                110,
            ),
            (Error::NoSuchObserver { id: ObserverId(1) }, 2),
        ];
        for (e, want) in cases {
            assert_eq!(e.errno(), want, "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}
