//! Destroy, attach and detach of IOASes and of auto and user HWPTs, after the iommufd selftest.

use super::{Fx, A_IOVA, A_LEN, A_TARGET, B_IOVA, B_LEN, B_TARGET, HOLE, MSI};
use crate::common::{assert_maps_to, err, fault, Fixture, PAGE};
use viommu::errno::{EBUSY, EINVAL, ENOENT};
use viommu::{Access, DeviceInfo, Error, FaultKind, HwptFlags, ObjKind, Prot};

#[test]
fn ioas_destroy_is_busy_while_a_device_is_attached_and_succeeds_after_detach() {
    let (iommu, dev, h, ioas) = Fixture::new(DeviceInfo::default())
        .map(A_IOVA, A_TARGET, A_LEN, Prot::RW)
        .parts();
    let hwpt = iommu.device_attach(dev, ioas).unwrap();

    let e = err(iommu.destroy(ioas), EBUSY);
    assert!(
        matches!(e, Error::Busy { id, kind: ObjKind::Ioas, .. } if id == ioas),
        "{e:?}"
    );
    // Nothing changed: the IOAS still maps and the device still translates.
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, A_TARGET);
    assert_eq!(
        iommu.ioas_map(ioas, Some(HOLE), B_TARGET, PAGE, Prot::RW),
        Ok(HOLE)
    );
    assert_maps_to(&h, HOLE, PAGE, Access::Read, B_TARGET);

    iommu.device_detach(dev).unwrap();
    assert_eq!(fault(&h, A_IOVA, PAGE, Access::Read), FaultKind::Blocked);
    // The auto HWPT went with its last device, so nothing holds the IOAS any more.
    err(iommu.destroy(hwpt), ENOENT);
    iommu.destroy(ioas).unwrap();
    let e = err(iommu.ioas_map(ioas, Some(0), 0, PAGE, Prot::RW), ENOENT);
    assert!(
        matches!(e, Error::NoSuchObject { id } if id == ioas),
        "{e:?}"
    );
    err(iommu.device_attach(dev, ioas), ENOENT);
}

#[test]
fn a_device_attaches_straight_to_a_user_hwpt() {
    let (iommu, dev, h, ioas) = Fixture::new(DeviceInfo::default())
        .map(A_IOVA, A_TARGET, A_LEN, Prot::RW)
        .parts();
    let hwpt = iommu.hwpt_alloc(dev, ioas, HwptFlags::empty()).unwrap();
    assert_ne!(hwpt, ioas);
    // Allocated but not attached: the device is still blocked.
    assert_eq!(fault(&h, A_IOVA, PAGE, Access::Read), FaultKind::Blocked);

    assert_eq!(iommu.device_attach(dev, hwpt), Ok(hwpt));
    assert_maps_to(&h, A_IOVA, A_LEN, Access::Write, A_TARGET);
    // The domain mirrors later maps and unmaps of its IOAS.
    iommu
        .ioas_map(ioas, Some(B_IOVA), B_TARGET, B_LEN, Prot::READ)
        .unwrap();
    assert_maps_to(&h, B_IOVA, B_LEN, Access::Read, B_TARGET);
    assert_eq!(iommu.ioas_unmap(ioas, A_IOVA, A_LEN), Ok(A_LEN));
    assert_eq!(fault(&h, A_IOVA, PAGE, Access::Read), FaultKind::Unmapped);

    // A user HWPT outlives its devices; it is destroyed by ID only.
    iommu.device_detach(dev).unwrap();
    assert_eq!(iommu.device_attach(dev, hwpt), Ok(hwpt));
    assert_maps_to(&h, B_IOVA, PAGE, Access::Read, B_TARGET);
    iommu.device_detach(dev).unwrap();
    iommu.destroy(hwpt).unwrap();
    err(iommu.destroy(hwpt), ENOENT);
    err(iommu.device_attach(dev, hwpt), ENOENT);
    iommu.destroy(ioas).unwrap();
}

#[test]
fn a_user_hwpt_in_use_is_busy_and_destroyable_after_replacing_away() {
    let (iommu, dev, h, ioas) = Fixture::new(DeviceInfo::default())
        .map(A_IOVA, A_TARGET, A_LEN, Prot::RW)
        .parts();
    let user = iommu.hwpt_alloc(dev, ioas, HwptFlags::empty()).unwrap();
    iommu.device_attach(dev, user).unwrap();

    let e = err(iommu.destroy(user), EBUSY);
    assert!(
        matches!(e, Error::Busy { id, kind: ObjKind::Hwpt, .. } if id == user),
        "{e:?}"
    );
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, A_TARGET);
    // The IOAS is held by the HWPT.
    err(iommu.destroy(ioas), EBUSY);

    // Replace away to the auto HWPT of the same IOAS.
    let auto = iommu.device_replace(dev, ioas).unwrap();
    assert_ne!(auto, user);
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, A_TARGET);
    iommu.destroy(user).unwrap();
    err(iommu.destroy(user), ENOENT);
    err(iommu.device_replace(dev, user), ENOENT);
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, A_TARGET);
    iommu.device_detach(dev).unwrap();
    iommu.destroy(ioas).unwrap();
}

#[test]
fn attach_to_an_ioas_twice_in_one_group_reuses_the_auto_hwpt() {
    let fx = Fx::new();
    // Fx::new attached both devices to the IOAS and checked they got the same HWPT; a
    // detach and re-attach of one of them joins the group's HWPT again.
    fx.iommu.device_detach(fx.peer).unwrap();
    assert_eq!(
        fault(&fx.peer_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    assert_eq!(fx.iommu.device_attach(fx.peer, fx.ioas), Ok(fx.hwpt));
    fx.assert_intact();
    // Attaching by the HWPT's id works as well.
    fx.iommu.device_detach(fx.peer).unwrap();
    assert_eq!(fx.iommu.device_attach(fx.peer, fx.hwpt), Ok(fx.hwpt));
    fx.assert_intact();
    fx.teardown();
}

#[test]
fn detach_blocks_that_device_only_and_the_group_when_its_last_device_leaves() {
    let fx = Fx::new();
    let io = &fx.iommu;
    io.device_detach(fx.dev).unwrap();
    assert_eq!(
        fault(&fx.dev_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    let g = fx.dev_h.pin();
    assert_eq!(
        g.translate(A_IOVA, PAGE, Access::Read).unwrap_err().kind,
        FaultKind::Blocked
    );
    drop(g);
    assert_maps_to(&fx.peer_h, A_IOVA, A_LEN, Access::Read, A_TARGET);
    // The detached device's reservation is gone with it.
    assert_eq!(
        io.ioas_map(fx.ioas, Some(MSI.start), 0x7000_0000, PAGE, Prot::RW),
        Ok(MSI.start)
    );
    assert_eq!(io.ioas_unmap(fx.ioas, MSI.start, PAGE), Ok(PAGE));
    // Detach and replace of the detached device are refused while its group stays attached.
    let e = err(io.device_detach(fx.dev), EINVAL);
    assert!(
        matches!(e, Error::NotAttached { dev } if dev == fx.dev),
        "{e:?}"
    );
    err(io.device_replace(fx.dev, fx.hwpt), EINVAL);
    err(io.device_replace(fx.dev, fx.ioas), EINVAL);
    assert_maps_to(&fx.peer_h, A_IOVA, PAGE, Access::Read, A_TARGET);
    // The last device leaves: the group is blocked, the auto HWPT is gone.
    io.device_detach(fx.peer).unwrap();
    assert_eq!(
        fault(&fx.peer_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    err(io.destroy(fx.hwpt), ENOENT);
    // The group is free to go anywhere now.
    let user = io.hwpt_alloc(fx.dev, fx.ioas, HwptFlags::empty()).unwrap();
    assert_eq!(io.device_attach(fx.dev, user), Ok(user));
    assert_maps_to(&fx.dev_h, A_IOVA, PAGE, Access::Read, A_TARGET);
    assert_eq!(
        fault(&fx.peer_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
}
