//! The errno table, one bad input at a time: each failed call returns its errno and `Error`
//! variant and changes nothing.

use super::{Fx, A_IOVA, A_LEN, A_TARGET, B_IOVA, B_LEN, HOLE, MSI};
use crate::common::{assert_maps_to, bind, err, fault, narrow, reserving, Fixture, PAGE};
use viommu::errno::{EADDRINUSE, EBUSY, EEXIST, EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, EOVERFLOW};
use viommu::{Access, DeviceInfo, Error, FaultKind, GroupId, HwptFlags, Iommu, ObjKind, Prot};

#[test]
fn enoent_for_a_destroyed_id_in_every_call() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let gone_ioas = io.ioas_alloc().unwrap();
    let gone_hwpt = io
        .hwpt_alloc(fx.lone, gone_ioas, HwptFlags::empty())
        .unwrap();
    io.destroy(gone_hwpt).unwrap();
    io.destroy(gone_ioas).unwrap();
    for gone in [gone_ioas, gone_hwpt] {
        let e = err(io.ioas_map(gone, Some(HOLE), 0, PAGE, Prot::RW), ENOENT);
        assert!(
            matches!(e, Error::NoSuchObject { id } if id == gone),
            "{e:?}"
        );
        err(io.ioas_map(gone, None, 0, PAGE, Prot::RW), ENOENT);
        err(io.ioas_unmap(gone, A_IOVA, A_LEN), ENOENT);
        err(io.ioas_unmap(gone, 0, u64::MAX), ENOENT);
        err(io.hwpt_alloc(fx.lone, gone, HwptFlags::empty()), ENOENT);
        err(io.hwpt_alloc(gone, fx.ioas, HwptFlags::empty()), ENOENT);
        err(io.device_attach(fx.lone, gone), ENOENT);
        err(io.device_attach(gone, fx.ioas), ENOENT);
        err(io.device_replace(fx.dev, gone), ENOENT);
        err(io.device_replace(gone, fx.ioas), ENOENT);
        err(io.device_detach(gone), ENOENT);
        err(io.destroy(gone), ENOENT);
    }
    // IDs are not reused.
    let fresh = io.ioas_alloc().unwrap();
    assert!(![gone_ioas, gone_hwpt, fx.ioas, fx.hwpt, fx.dev, fx.peer, fx.lone].contains(&fresh));
    io.destroy(fresh).unwrap();
    fx.assert_intact();
    fx.teardown();
}

#[test]
fn enoent_unmap_where_nothing_is_mapped_but_unmap_all_of_an_empty_ioas_succeeds() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let e = err(io.ioas_unmap(fx.ioas, HOLE, PAGE), ENOENT);
    assert!(matches!(e, Error::NotMapped { .. }), "{e:?}");
    err(
        io.ioas_unmap(fx.ioas, A_IOVA + A_LEN, B_IOVA - A_IOVA - A_LEN),
        ENOENT,
    );
    fx.assert_intact();

    let empty = io.ioas_alloc().unwrap();
    assert_eq!(io.ioas_unmap(empty, 0, u64::MAX), Ok(0));
    err(io.ioas_unmap(empty, 0, PAGE), ENOENT);
    // Also with a device attached to the empty IOAS.
    assert_eq!(io.device_attach(fx.lone, empty).map(|_| ()), Ok(()));
    assert_eq!(io.ioas_unmap(empty, 0, u64::MAX), Ok(0));
    // Unmap-all of a non-empty IOAS removes everything and returns the bytes.
    assert_eq!(io.ioas_map(empty, Some(0), 0, PAGE, Prot::RW), Ok(0));
    assert_eq!(
        io.ioas_map(empty, Some(HOLE), 0, 3 * PAGE, Prot::RW),
        Ok(HOLE)
    );
    assert_eq!(io.ioas_unmap(empty, 0, u64::MAX), Ok(4 * PAGE));
    assert_eq!(
        fault(&fx.lone_h, 0, PAGE, Access::Read),
        FaultKind::Unmapped
    );
    io.device_detach(fx.lone).unwrap();
    fx.assert_intact();
}

#[test]
fn enoent_unmap_that_cuts_an_area_removes_nothing() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let cuts = [
        (A_IOVA, PAGE),                   // head of A
        (A_IOVA + PAGE, A_LEN - PAGE),    // tail of A
        (A_IOVA + PAGE, PAGE),            // middle of A
        (A_IOVA - PAGE, 2 * PAGE),        // reaches into A from below
        (A_IOVA, B_IOVA + PAGE - A_IOVA), // all of A, half of B
        (A_IOVA + PAGE, B_IOVA + B_LEN),  // part of A, all of B
    ];
    for (iova, len) in cuts {
        let e = err(io.ioas_unmap(fx.ioas, iova, len), ENOENT);
        assert!(
            matches!(e, Error::SplitsArea { .. }),
            "({iova:#x}, {len:#x}): {e:?}"
        );
        fx.assert_intact();
    }
    // A range that covers both areas entirely removes both.
    assert_eq!(
        io.ioas_unmap(fx.ioas, A_IOVA, B_IOVA + B_LEN - A_IOVA),
        Ok(A_LEN + B_LEN)
    );
    assert_eq!(
        fault(&fx.dev_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Unmapped
    );
    assert_eq!(
        fault(&fx.dev_h, B_IOVA, PAGE, Access::Read),
        FaultKind::Unmapped
    );
}

#[test]
fn eexist_fixed_map_over_a_range_in_use() {
    let fx = Fx::new();
    let io = &fx.iommu;
    for (iova, len) in [
        (A_IOVA, A_LEN),
        (A_IOVA + PAGE, PAGE),
        (A_IOVA - PAGE, 2 * PAGE),
        (A_IOVA + A_LEN - PAGE, 2 * PAGE),
        (A_IOVA - PAGE, B_IOVA + B_LEN),
    ] {
        let e = err(
            io.ioas_map(fx.ioas, Some(iova), 0x7000_0000, len, Prot::RW),
            EEXIST,
        );
        assert!(matches!(e, Error::Exists { .. }), "{e:?}");
        fx.assert_intact();
    }
    // Right next to A is free.
    assert_eq!(
        io.ioas_map(
            fx.ioas,
            Some(A_IOVA + A_LEN),
            A_TARGET + A_LEN,
            PAGE,
            Prot::RW
        ),
        Ok(A_IOVA + A_LEN)
    );
    // and merges with A into one chunk.
    assert_maps_to(&fx.dev_h, A_IOVA, A_LEN + PAGE, Access::Read, A_TARGET);
}

#[test]
fn einval_misaligned_map_and_unmap_arguments() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let bad_maps = [
        (Some(HOLE + 0x800), 0x7000_0000, PAGE, "iova"),
        (Some(HOLE), 0x7000_0010, PAGE, "target"),
        (Some(HOLE), 0x7000_0000, PAGE + 1, "length"),
        (None, 0x7000_0010, PAGE, "target"),
        (None, 0x7000_0000, 0x800, "length"),
    ];
    for (iova, target, len, what) in bad_maps {
        let e = err(io.ioas_map(fx.ioas, iova, target, len, Prot::RW), EINVAL);
        assert!(matches!(e, Error::Misaligned { .. }), "{what}: {e:?}");
        fx.assert_intact();
    }
    for (iova, len) in [
        (A_IOVA + 0x10, A_LEN),
        (A_IOVA, A_LEN - 1),
        (A_IOVA, A_LEN + 0x800),
    ] {
        let e = err(io.ioas_unmap(fx.ioas, iova, len), EINVAL);
        assert!(matches!(e, Error::Misaligned { .. }), "{e:?}");
        fx.assert_intact();
    }
    // The same map, aligned, works: nothing was half-done by the failures.
    assert_eq!(
        io.ioas_map(fx.ioas, Some(HOLE), 0x7000_0000, PAGE, Prot::RW),
        Ok(HOLE)
    );
}

#[test]
fn einval_zero_length_map_and_unmap() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let e = err(
        io.ioas_map(fx.ioas, Some(HOLE), 0x7000_0000, 0, Prot::RW),
        EINVAL,
    );
    assert!(matches!(e, Error::ZeroLength { .. }), "{e:?}");
    err(io.ioas_map(fx.ioas, None, 0x7000_0000, 0, Prot::RW), EINVAL);
    let e = err(io.ioas_unmap(fx.ioas, A_IOVA, 0), EINVAL);
    assert!(matches!(e, Error::ZeroLength { .. }), "{e:?}");
    fx.assert_intact();
    fx.teardown();
}

#[test]
fn einval_fixed_map_in_a_reserved_range() {
    let fx = Fx::new();
    let io = &fx.iommu;
    for (iova, len) in [
        (MSI.start, PAGE),
        (MSI.end - PAGE, PAGE),
        (MSI.start - PAGE, 2 * PAGE),
        (MSI.start - PAGE, MSI.end - MSI.start + 2 * PAGE),
    ] {
        let e = err(
            io.ioas_map(fx.ioas, Some(iova), 0x7000_0000, len, Prot::RW),
            EINVAL,
        );
        assert!(matches!(e, Error::InReservedRange { .. }), "{e:?}");
        fx.assert_intact();
    }
    // Right below the reserved range is fine, and automatic maps never land in it.
    assert_eq!(
        io.ioas_map(fx.ioas, Some(MSI.start - PAGE), 0x7000_0000, PAGE, Prot::RW),
        Ok(MSI.start - PAGE)
    );
    for _ in 0..8 {
        let at = io
            .ioas_map(fx.ioas, None, 0x7000_0000, 0x10_0000, Prot::RW)
            .unwrap();
        assert!(at + 0x10_0000 <= MSI.start || at >= MSI.end, "{at:#x}");
    }
}

/// A byte-granular reserved range reserves every page it touches.
#[test]
fn einval_fixed_map_in_any_page_a_reserved_range_touches() {
    let (iommu, _dev, _h, ioas) = Fixture::new(reserving(0x5100..0x6001)).attached().parts();
    for page in [0x5000, 0x6000] {
        err(iommu.ioas_map(ioas, Some(page), 0, PAGE, Prot::RW), EINVAL);
    }
    assert_eq!(
        iommu.ioas_map(ioas, Some(0x4000), 0, PAGE, Prot::RW),
        Ok(0x4000)
    );
    assert_eq!(
        iommu.ioas_map(ioas, Some(0x7000), 0, PAGE, Prot::RW),
        Ok(0x7000)
    );
}

#[test]
fn einval_attach_while_the_group_is_on_another_hwpt() {
    let fx = Fx::new();
    let io = &fx.iommu;
    io.device_detach(fx.peer).unwrap();
    let other = io.ioas_alloc().unwrap();
    let user_same_ioas = io.hwpt_alloc(fx.peer, fx.ioas, HwptFlags::empty()).unwrap();
    let user_other = io.hwpt_alloc(fx.peer, other, HwptFlags::empty()).unwrap();
    for pt in [other, user_same_ioas, user_other] {
        let e = err(io.device_attach(fx.peer, pt), EINVAL);
        assert!(
            matches!(e, Error::GroupOnOtherHwpt { current, .. } if current == fx.hwpt),
            "{e:?}"
        );
        assert_eq!(
            fault(&fx.peer_h, A_IOVA, PAGE, Access::Read),
            FaultKind::Blocked
        );
    }
    // Nothing got attached: the user HWPTs and the other IOAS are free to destroy.
    io.destroy(user_same_ioas).unwrap();
    io.destroy(user_other).unwrap();
    io.destroy(other).unwrap();
    assert_eq!(io.device_attach(fx.peer, fx.ioas), Ok(fx.hwpt));
    fx.assert_intact();
}

#[test]
fn einval_attach_of_an_attached_device() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let other = io.ioas_alloc().unwrap();
    let user = io.hwpt_alloc(fx.dev, fx.ioas, HwptFlags::empty()).unwrap();
    for pt in [fx.ioas, fx.hwpt, other, user] {
        let e = err(io.device_attach(fx.dev, pt), EINVAL);
        assert!(
            matches!(
                e,
                Error::AlreadyAttached { .. } | Error::GroupOnOtherHwpt { .. }
            ),
            "{e:?}"
        );
        fx.assert_intact();
    }
    let e = err(io.device_attach(fx.dev, fx.hwpt), EINVAL);
    assert!(
        matches!(e, Error::AlreadyAttached { dev, hwpt } if dev == fx.dev && hwpt == fx.hwpt),
        "{e:?}"
    );
    io.destroy(user).unwrap();
    io.destroy(other).unwrap();
}

#[test]
fn einval_replace_and_detach_of_a_device_that_is_not_attached() {
    let fx = Fx::new();
    let io = &fx.iommu;
    // A device whose group is not attached at all.
    let e = err(io.device_replace(fx.lone, fx.ioas), EINVAL);
    assert!(
        matches!(e, Error::NotAttached { dev } if dev == fx.lone),
        "{e:?}"
    );
    let e = err(io.device_detach(fx.lone), EINVAL);
    assert!(
        matches!(e, Error::NotAttached { dev } if dev == fx.lone),
        "{e:?}"
    );
    assert_eq!(
        fault(&fx.lone_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    // A device whose group is attached through another device.
    io.device_detach(fx.peer).unwrap();
    for pt in [fx.ioas, fx.hwpt] {
        let e = err(io.device_replace(fx.peer, pt), EINVAL);
        assert!(
            matches!(e, Error::NotAttached { dev } if dev == fx.peer),
            "{e:?}"
        );
    }
    err(io.device_detach(fx.peer), EINVAL);
    assert_eq!(
        fault(&fx.peer_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    assert_maps_to(&fx.dev_h, A_IOVA, PAGE, Access::Read, A_TARGET);
    assert_eq!(io.device_attach(fx.peer, fx.ioas), Ok(fx.hwpt));
    fx.assert_intact();
}

#[test]
fn einval_wrong_object_type() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let wrong = |e: Error| {
        assert_eq!(e.errno(), EINVAL, "{e:?}");
        assert!(matches!(e, Error::WrongType { .. }), "{e:?}");
    };
    wrong(
        io.ioas_map(fx.hwpt, Some(HOLE), 0, PAGE, Prot::RW)
            .unwrap_err(),
    );
    wrong(
        io.ioas_map(fx.dev, Some(HOLE), 0, PAGE, Prot::RW)
            .unwrap_err(),
    );
    wrong(io.ioas_unmap(fx.hwpt, A_IOVA, A_LEN).unwrap_err());
    wrong(io.ioas_unmap(fx.dev, 0, u64::MAX).unwrap_err());
    wrong(
        io.hwpt_alloc(fx.ioas, fx.ioas, HwptFlags::empty())
            .unwrap_err(),
    );
    wrong(
        io.hwpt_alloc(fx.lone, fx.peer, HwptFlags::empty())
            .unwrap_err(),
    );
    wrong(io.device_attach(fx.ioas, fx.ioas).unwrap_err());
    wrong(io.device_attach(fx.lone, fx.peer).unwrap_err());
    wrong(io.device_replace(fx.dev, fx.lone).unwrap_err());
    wrong(io.device_replace(fx.hwpt, fx.ioas).unwrap_err());
    wrong(io.device_detach(fx.ioas).unwrap_err());
    wrong(io.device_detach(fx.hwpt).unwrap_err());
    let e = io.device_attach(fx.lone, fx.dev).unwrap_err();
    assert!(
        matches!(e, Error::WrongType { id, found: ObjKind::Device, .. } if id == fx.dev),
        "{e:?}"
    );
    fx.assert_intact();
    assert_eq!(
        fault(&fx.lone_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    fx.teardown();
}

/// A domain is incompatible with a device when its IOAS maps IOVAs past the device's aperture.
#[test]
fn einval_incompatible_domain_on_attach_replace_and_hwpt_alloc() {
    let iommu = Iommu::new();
    let (wide, wide_h) = bind(&iommu, 1, DeviceInfo::default());
    let (tiny, tiny_h) = bind(&iommu, 2, narrow(21));
    let high = iommu.ioas_alloc().unwrap();
    let low = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(high, Some(4 << 20), 0x4000_0000, PAGE, Prot::RW)
        .unwrap();
    iommu
        .ioas_map(low, Some(0x1000), 0x5000_0000, PAGE, Prot::RW)
        .unwrap();
    let high_hwpt = iommu.hwpt_alloc(wide, high, HwptFlags::empty()).unwrap();

    let e = err(iommu.device_attach(tiny, high), EINVAL);
    assert!(
        matches!(e, Error::Incompatible { dev, .. } if dev == tiny),
        "{e:?}"
    );
    err(iommu.device_attach(tiny, high_hwpt), EINVAL);
    let e = err(iommu.hwpt_alloc(tiny, high, HwptFlags::empty()), EINVAL);
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
    assert_eq!(
        fault(&tiny_h, 0x1000, PAGE, Access::Read),
        FaultKind::Blocked
    );

    iommu.device_attach(tiny, low).unwrap();
    err(iommu.device_replace(tiny, high), EINVAL);
    err(iommu.device_replace(tiny, high_hwpt), EINVAL);
    assert_maps_to(&tiny_h, 0x1000, PAGE, Access::Read, 0x5000_0000);

    // The wide device is fine with either.
    assert_eq!(iommu.device_attach(wide, high_hwpt), Ok(high_hwpt));
    assert_maps_to(&wide_h, 4 << 20, PAGE, Access::Read, 0x4000_0000);
    // Once the high mapping is gone the tiny device may move there.
    assert_eq!(iommu.ioas_unmap(high, 4 << 20, PAGE), Ok(PAGE));
    assert_eq!(iommu.device_replace(tiny, high_hwpt), Ok(high_hwpt));
}

#[test]
fn ebusy_destroy_of_a_referenced_ioas_or_hwpt_and_of_an_auto_hwpt() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let other = io.ioas_alloc().unwrap();
    let user = io.hwpt_alloc(fx.lone, other, HwptFlags::empty()).unwrap();
    // An IOAS held by a user HWPT without devices.
    let e = err(io.destroy(other), EBUSY);
    assert!(
        matches!(
            e,
            Error::Busy {
                kind: ObjKind::Ioas,
                ..
            }
        ),
        "{e:?}"
    );
    // An IOAS held by an auto HWPT.
    err(io.destroy(fx.ioas), EBUSY);
    // An auto HWPT, always.
    let e = err(io.destroy(fx.hwpt), EBUSY);
    assert!(
        matches!(e, Error::AutoHwpt { id } if id == fx.hwpt),
        "{e:?}"
    );
    // A user HWPT with a device attached.
    io.device_attach(fx.lone, user).unwrap();
    let e = err(io.destroy(user), EBUSY);
    assert!(
        matches!(e, Error::Busy { id, kind: ObjKind::Hwpt, .. } if id == user),
        "{e:?}"
    );
    err(io.destroy(other), EBUSY);
    assert_eq!(
        fault(&fx.lone_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Unmapped
    );
    io.device_detach(fx.lone).unwrap();
    fx.assert_intact();
    io.destroy(user).unwrap();
    io.destroy(other).unwrap();
    fx.teardown();
}

#[test]
fn enospc_automatic_map_without_a_free_hole() {
    // A 16 KiB aperture: four pages.
    let (iommu, _dev, h, ioas) = Fixture::new(narrow(14))
        .attached()
        .map(PAGE, 0x4000_0000, PAGE, Prot::RW)
        .parts();
    // Holes: page 0 and pages 2-3.
    let e = err(
        iommu.ioas_map(ioas, None, 0x5000_0000, 3 * PAGE, Prot::RW),
        ENOSPC,
    );
    assert!(matches!(e, Error::NoSpace { .. }), "{e:?}");
    assert_eq!(fault(&h, 2 * PAGE, PAGE, Access::Read), FaultKind::Unmapped);
    assert_maps_to(&h, PAGE, PAGE, Access::Read, 0x4000_0000);
    // Two pages fit in exactly one place.
    assert_eq!(
        iommu.ioas_map(ioas, None, 0x5000_0000, 2 * PAGE, Prot::RW),
        Ok(2 * PAGE)
    );
    assert_maps_to(&h, 2 * PAGE, 2 * PAGE, Access::Read, 0x5000_0000);
    err(
        iommu.ioas_map(ioas, None, 0x6000_0000, 2 * PAGE, Prot::RW),
        ENOSPC,
    );
}

#[test]
fn eaddrinuse_reserved_range_collides_on_attach() {
    let (iommu, dev, h, ioas) = Fixture::new(reserving(MSI))
        .map(MSI.end - PAGE, 0x4000_0000, 2 * PAGE, Prot::RW)
        .parts();
    let user = iommu.hwpt_alloc(dev, ioas, HwptFlags::empty());
    for pt in [Some(ioas), user.as_ref().ok().copied()]
        .into_iter()
        .flatten()
    {
        let e = err(iommu.device_attach(dev, pt), EADDRINUSE);
        assert!(
            matches!(&e, Error::ReservedInUse { dev: d, .. } if *d == dev),
            "{e:?}"
        );
        assert_eq!(fault(&h, MSI.end, PAGE, Access::Read), FaultKind::Blocked);
    }
    // Nothing was reserved or attached: the IOAS maps inside MSI and can be destroyed.
    assert_eq!(
        iommu.ioas_map(ioas, Some(MSI.start), 0x5000_0000, PAGE, Prot::RW),
        Ok(MSI.start)
    );
    if let Ok(user) = user {
        iommu.destroy(user).unwrap();
    }
    assert_eq!(iommu.ioas_unmap(ioas, 0, u64::MAX), Ok(3 * PAGE));
    let auto = iommu.device_attach(dev, ioas).unwrap();
    err(
        iommu.ioas_map(ioas, Some(MSI.start), 0, PAGE, Prot::RW),
        EINVAL,
    );
    iommu.device_detach(dev).unwrap();
    err(iommu.destroy(auto), ENOENT);
    iommu.destroy(ioas).unwrap();
}

#[test]
fn eoverflow_wrapping_map_and_unmap_ranges() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let top = 0u64.wrapping_sub(PAGE); // the last page of the 64-bit space
    let e = err(
        io.ioas_map(fx.ioas, Some(top), 0x7000_0000, 2 * PAGE, Prot::RW),
        EOVERFLOW,
    );
    assert!(
        matches!(e, Error::Overflow { .. } | Error::OutsideAperture { .. }),
        "{e:?}"
    );
    let e = err(
        io.ioas_map(fx.ioas, Some(HOLE), top, 2 * PAGE, Prot::RW),
        EOVERFLOW,
    );
    assert!(matches!(e, Error::Overflow { .. }), "{e:?}");
    err(
        io.ioas_map(fx.ioas, None, top, 2 * PAGE, Prot::RW),
        EOVERFLOW,
    );
    let e = err(io.ioas_unmap(fx.ioas, top, 2 * PAGE), EOVERFLOW);
    assert!(matches!(e, Error::Overflow { .. }), "{e:?}");
    err(
        io.ioas_unmap(fx.ioas, A_IOVA, u64::MAX - (PAGE - 1)),
        EOVERFLOW,
    );
    fx.assert_intact();

    // Without any device the IOVA wrap is still refused.
    let bare = io.ioas_alloc().unwrap();
    let e = err(
        io.ioas_map(bare, Some(top), 0x7000_0000, 2 * PAGE, Prot::RW),
        EOVERFLOW,
    );
    assert!(matches!(e, Error::Overflow { .. }), "{e:?}");
    assert_eq!(io.ioas_unmap(bare, 0, u64::MAX), Ok(0));
    fx.teardown();
}

#[test]
fn eoverflow_map_leaving_the_aperture_of_an_attached_device() {
    let (iommu, tiny, tiny_h, ioas) = Fixture::new(narrow(21)).attached().parts();
    let end = 2u64 << 20;
    let e = err(
        iommu.ioas_map(ioas, Some(end - PAGE), 0x4000_0000, 2 * PAGE, Prot::RW),
        EOVERFLOW,
    );
    assert!(matches!(e, Error::OutsideAperture { .. }), "{e:?}");
    err(
        iommu.ioas_map(ioas, Some(end), 0x4000_0000, PAGE, Prot::RW),
        EOVERFLOW,
    );
    assert_eq!(
        fault(&tiny_h, end - PAGE, PAGE, Access::Read),
        FaultKind::Unmapped
    );
    assert_eq!(
        iommu.ioas_map(ioas, Some(end - PAGE), 0x4000_0000, PAGE, Prot::RW),
        Ok(end - PAGE)
    );
    // Automatic maps stay inside the aperture.
    for _ in 0..4 {
        let at = iommu
            .ioas_map(ioas, None, 0x5000_0000, 0x4_0000, Prot::RW)
            .unwrap();
        assert!(at + 0x4_0000 <= end, "{at:#x}");
    }
    // Once the device (and with it the auto HWPT) is gone, the IOAS may map past 2 MiB.
    iommu.device_detach(tiny).unwrap();
    assert_eq!(
        iommu.ioas_map(ioas, Some(end), 0x4000_0000, PAGE, Prot::RW),
        Ok(end)
    );
}

#[test]
fn eopnotsupp_unknown_hwpt_flags() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let bad = HwptFlags::from_bits_retain(1 << 9);
    let e = err(io.hwpt_alloc(fx.lone, fx.ioas, bad), EOPNOTSUPP);
    assert!(
        matches!(e, Error::UnknownHwptFlags { bits: 0x200 }),
        "{e:?}"
    );
    err(
        io.hwpt_alloc(fx.lone, fx.ioas, bad | HwptFlags::NEST_PARENT),
        EOPNOTSUPP,
    );
    // No HWPT was left behind holding the IOAS: after teardown the IOAS can be destroyed.
    fx.assert_intact();
    fx.teardown();
}

#[test]
fn einval_bind_with_an_aperture_out_of_range() {
    let iommu = Iommu::new();
    for bits in [0u8, 12, 65, 255] {
        let e = iommu.device_bind(GroupId(1), narrow(bits)).unwrap_err();
        assert_eq!(e.errno(), EINVAL, "{bits}: {e:?}");
    }
    assert_eq!(iommu.stats().devices, 0);
    for bits in [13u8, 64] {
        iommu.device_bind(GroupId(1), narrow(bits)).unwrap();
    }
    assert_eq!(iommu.stats().devices, 2);
}
