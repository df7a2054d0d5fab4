//! Scenario tests of the control plane, following the intent of the iommufd selftest
//! (`tools/testing/selftests/iommu/iommufd.c`) and the errno table of the API contract (the
//! variants of `viommu::Error` and `Error::errno`).
//!
//! Every bad input of the errno table has a test that checks the errno, the `Error` variant,
//! and that nothing changed: the same translations, mappings, reservations and HWPTs as
//! before (G8), and later calls behave as they would have without the failed one.
//!
//! - `lifecycle`: destroy, attach and detach of IOASes, auto and user HWPTs;
//! - `replace`: moving a group between domains;
//! - `translation`: what a translation returns (maximal chunks, large leaves, the aperture);
//! - `errno`: the errno table, one bad input at a time;
//! - `fences`: `EDEADLK`, and the calls that wait for guards held by other threads;
//! - `aperture`: how the apertures of auto and user HWPTs limit the maps of their IOAS.

#[path = "../common/mod.rs"]
mod common;

mod aperture;
mod errno;
mod fences;
mod lifecycle;
mod replace;
mod translation;

use common::{assert_maps_to, bind, err, fault, ioas_with, reserving, PAGE};
use std::ops::Range;
use viommu::errno::{EEXIST, EINVAL, ENOENT};
use viommu::{Access, Device, DeviceInfo, FaultKind, Iommu, ObjId, Prot};

/// Area A of the fixture: 4 pages, read-write.
const A_IOVA: u64 = 0x10_0000;
const A_TARGET: u64 = 0x8000_0000;
const A_LEN: u64 = 4 * PAGE;
/// Area B of the fixture: 2 pages, read-only.
const B_IOVA: u64 = 0x20_0000;
const B_TARGET: u64 = 0x9000_0000;
const B_LEN: u64 = 2 * PAGE;
/// Never mapped in the fixture.
const HOLE: u64 = 0x30_0000;
/// The fixture device's reserved range (an MSI doorbell window).
const MSI: Range<u64> = 0xfee0_0000..0xfef0_0000;

/// An IOAS with areas A (RW) and B (read-only); `dev` (reserves MSI) and `peer` of group 1
/// attached through the auto HWPT `hwpt`; `lone` of group 2 bound but not attached.
struct Fx {
    iommu: Iommu,
    ioas: ObjId,
    hwpt: ObjId,
    dev: ObjId,
    dev_h: Device,
    peer: ObjId,
    peer_h: Device,
    lone: ObjId,
    lone_h: Device,
}

impl Fx {
    fn new() -> Fx {
        let iommu = Iommu::new();
        let (dev, dev_h) = bind(&iommu, 1, reserving(MSI));
        let (peer, peer_h) = bind(&iommu, 1, DeviceInfo::default());
        let (lone, lone_h) = bind(&iommu, 2, DeviceInfo::default());
        let ioas = ioas_with(
            &iommu,
            &[
                (A_IOVA, A_TARGET, A_LEN, Prot::RW),
                (B_IOVA, B_TARGET, B_LEN, Prot::READ),
            ],
        );
        let hwpt = iommu.device_attach(dev, ioas).unwrap();
        assert_eq!(iommu.device_attach(peer, ioas), Ok(hwpt));
        let fx = Fx {
            iommu,
            ioas,
            hwpt,
            dev,
            dev_h,
            peer,
            peer_h,
            lone,
            lone_h,
        };
        fx.assert_intact();
        fx
    }

    /// The fixture's state, checked through translations and calls that fail without effect.
    #[track_caller]
    fn assert_intact(&self) {
        for h in [&self.dev_h, &self.peer_h] {
            assert_maps_to(h, A_IOVA, A_LEN, Access::Write, A_TARGET);
            assert_maps_to(h, B_IOVA + 0x10, PAGE, Access::Read, B_TARGET + 0x10);
            assert_eq!(fault(h, B_IOVA, PAGE, Access::Write), FaultKind::Permission);
            assert_eq!(fault(h, HOLE, PAGE, Access::Read), FaultKind::Unmapped);
            assert_eq!(
                fault(h, A_IOVA + A_LEN, PAGE, Access::Read),
                FaultKind::Unmapped
            );
        }
        assert_eq!(
            fault(&self.lone_h, A_IOVA, PAGE, Access::Read),
            FaultKind::Blocked
        );
        // A and B are still the IOAS's areas, and MSI is still reserved.
        let io = &self.iommu;
        err(
            io.ioas_map(self.ioas, Some(A_IOVA), 0, PAGE, Prot::RW),
            EEXIST,
        );
        err(
            io.ioas_map(self.ioas, Some(B_IOVA + PAGE), 0, PAGE, Prot::RW),
            EEXIST,
        );
        err(
            io.ioas_map(self.ioas, Some(MSI.start), 0, PAGE, Prot::RW),
            EINVAL,
        );
        // The group is still on the same HWPT (replace to it is a no-op) and both devices are
        // attached.
        assert_eq!(io.device_replace(self.dev, self.hwpt), Ok(self.hwpt));
        assert_eq!(io.device_replace(self.peer, self.ioas), Ok(self.hwpt));
        err(io.device_attach(self.peer, self.hwpt), EINVAL);
        err(io.device_detach(self.lone), EINVAL);
    }

    /// The fixture ends cleanly: unmap A and B, detach, the auto HWPT goes, the IOAS goes.
    fn teardown(self) {
        let io = &self.iommu;
        assert_eq!(io.ioas_unmap(self.ioas, A_IOVA, A_LEN), Ok(A_LEN));
        assert_eq!(io.ioas_unmap(self.ioas, 0, u64::MAX), Ok(B_LEN));
        io.device_detach(self.dev).unwrap();
        io.device_detach(self.peer).unwrap();
        err(io.destroy(self.hwpt), ENOENT);
        io.destroy(self.ioas).unwrap();
        io.synchronize().unwrap();
    }
}
