//! How apertures limit an IOAS: an auto HWPT is shared only with devices it can serve, so a
//! narrow device that left limits nothing; a user HWPT keeps the aperture of the device it was
//! made for (`docs/design.md`, "Limits of this version").

use crate::common::{assert_maps_to, bind, narrow, PAGE};
use viommu::{Access, DeviceInfo, Error, HwptFlags, Iommu, Prot};

/// The contract: EOVERFLOW when "the range leaves the aperture of a device attached to the
/// IOAS". Once the narrow device has left, only a 48-bit device is attached, so the IOAS maps
/// past 2 MiB and the wide device translates there: it never shares an auto HWPT whose
/// aperture is narrower than its own.
#[test]
fn a_wide_device_is_not_limited_by_a_narrow_device_that_left_its_auto_hwpt() {
    let iommu = Iommu::new();
    let (tiny, _) = bind(&iommu, 1, narrow(21));
    let (wide, wide_h) = bind(&iommu, 2, DeviceInfo::default());
    let ioas = iommu.ioas_alloc().unwrap();
    iommu.device_attach(tiny, ioas).unwrap();
    iommu.device_attach(wide, ioas).unwrap();
    iommu.device_detach(tiny).unwrap();
    assert_eq!(
        iommu.ioas_map(ioas, Some(4 << 20), 0x4000_0000, PAGE, Prot::RW),
        Ok(4 << 20)
    );
    assert_maps_to(&wide_h, 4 << 20, PAGE, Access::Read, 0x4000_0000);
}

/// A user HWPT keeps the aperture of the device it was made for, attached or not, as an
/// iommufd domain's geometry does: a map its page table could not hold is `EOVERFLOW`, and
/// nothing is mapped. Destroying the HWPT lifts the limit.
#[test]
fn a_user_hwpt_limits_maps_of_its_ioas_to_its_aperture() {
    let iommu = Iommu::new();
    let (tiny, _) = bind(&iommu, 1, narrow(21));
    let ioas = iommu.ioas_alloc().unwrap();
    let hwpt = iommu.hwpt_alloc(tiny, ioas, HwptFlags::empty()).unwrap();
    let err = iommu
        .ioas_map(ioas, Some(4 << 20), 0x4000_0000, PAGE, Prot::RW)
        .unwrap_err();
    assert_eq!(err.errno(), viommu::errno::EOVERFLOW);
    assert!(matches!(err, Error::OutsideAperture { aperture_end, .. } if aperture_end == 2 << 20));
    assert_eq!(
        iommu.ioas_unmap(ioas, 0, u64::MAX),
        Ok(0),
        "nothing was mapped"
    );
    iommu.destroy(hwpt).unwrap();
    assert_eq!(
        iommu.ioas_map(ioas, Some(4 << 20), 0x4000_0000, PAGE, Prot::RW),
        Ok(4 << 20)
    );
}
