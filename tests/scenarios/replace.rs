//! Replace: a group moves between domains (auto and user HWPTs, one or two IOASes), after the
//! iommufd selftest.

use super::{Fx, A_IOVA, A_LEN, A_TARGET, B_TARGET, MSI};
use crate::common::{assert_maps_to, err, fault, ioas_with, one, within, Fixture, PAGE};
use std::time::Duration;
use viommu::errno::{EADDRINUSE, EBUSY, EINVAL, ENOENT};
use viommu::{Access, Chunk, Device, DeviceInfo, Error, FaultKind, HwptFlags, Iommu, ObjId, Prot};

/// `(iommu, dev, h, [ioas1, ioas2])`: one device of group 1 and two IOASes that map area A's
/// IOVAs, the first to `A_TARGET` and the second to `B_TARGET`; nothing attached.
fn two_ioases() -> (Iommu, ObjId, Device, [ObjId; 2]) {
    let (iommu, dev, h, ioas1) = Fixture::new(DeviceInfo::default())
        .map(A_IOVA, A_TARGET, A_LEN, Prot::RW)
        .parts();
    let ioas2 = ioas_with(&iommu, &[(A_IOVA, B_TARGET, A_LEN, Prot::RW)]);
    (iommu, dev, h, [ioas1, ioas2])
}

#[test]
fn replace_to_a_new_ioas_frees_the_old_auto_hwpt() {
    let (iommu, dev, h, [ioas1, ioas2]) = two_ioases();
    let auto1 = iommu.device_attach(dev, ioas1).unwrap();
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, A_TARGET);

    let auto2 = iommu.device_replace(dev, ioas2).unwrap();
    assert_ne!(auto2, auto1);
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, B_TARGET);

    // The old auto HWPT is gone at once: replacing back to it is ENOENT and changes nothing.
    let e = err(iommu.device_replace(dev, auto1), ENOENT);
    assert!(
        matches!(e, Error::NoSuchObject { id } if id == auto1),
        "{e:?}"
    );
    err(iommu.destroy(auto1), ENOENT);
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, B_TARGET);
    // Its hold on ioas1 went with it.
    iommu.destroy(ioas1).unwrap();
    // The new one is auto: not destroyable by ID.
    let e = err(iommu.destroy(auto2), EBUSY);
    assert!(matches!(e, Error::AutoHwpt { id } if id == auto2), "{e:?}");
    err(iommu.destroy(ioas2), EBUSY);
    iommu.device_detach(dev).unwrap();
    err(iommu.destroy(auto2), ENOENT);
    iommu.destroy(ioas2).unwrap();
}

/// A -> B -> A -> B, checking translations at every step, for two user HWPTs on two IOASes
/// (different targets) and on one IOAS (same targets).
#[test]
fn rotation_between_two_hwpts_translates_through_each_in_turn() {
    let (iommu, dev, h, [ioas1, ioas2]) = two_ioases();
    let a = iommu.hwpt_alloc(dev, ioas1, HwptFlags::empty()).unwrap();
    let b = iommu.hwpt_alloc(dev, ioas2, HwptFlags::empty()).unwrap();
    let a2 = iommu
        .hwpt_alloc(dev, ioas1, HwptFlags::NEST_PARENT)
        .unwrap();
    assert_eq!(iommu.device_attach(dev, a), Ok(a));
    for _ in 0..3 {
        assert_maps_to(&h, A_IOVA, A_LEN, Access::Read, A_TARGET);
        assert_eq!(iommu.device_replace(dev, b), Ok(b));
        assert_maps_to(&h, A_IOVA, A_LEN, Access::Read, B_TARGET);
        assert_eq!(iommu.device_replace(dev, a), Ok(a));
    }
    // Two HWPTs of one IOAS translate alike.
    for _ in 0..3 {
        assert_eq!(iommu.device_replace(dev, a2), Ok(a2));
        assert_maps_to(&h, A_IOVA, A_LEN, Access::Read, A_TARGET);
        assert_eq!(iommu.device_replace(dev, a), Ok(a));
        assert_maps_to(&h, A_IOVA, A_LEN, Access::Read, A_TARGET);
    }
    // User HWPTs survive being replaced away, any number of times.
    for hw in [a, b, a2] {
        assert_eq!(iommu.device_replace(dev, hw), Ok(hw));
    }
    iommu.device_detach(dev).unwrap();
    for hw in [a, b, a2] {
        iommu.destroy(hw).unwrap();
    }
}

/// G1: a guard keeps the domain it was made with across a replace; a new guard sees the new one.
#[test]
fn a_guard_keeps_its_domain_across_a_replace() {
    let (iommu, dev, h, [ioas1, ioas2]) = two_ioases();
    iommu.device_attach(dev, ioas1).unwrap();
    let old = h.pin();
    let io = iommu.clone();
    let auto2 = within(
        Duration::from_secs(10),
        "device_replace with a guard held",
        move || io.device_replace(dev, ioas2),
    )
    .unwrap();
    let through_old: Vec<Chunk> = old.translate(A_IOVA, PAGE, Access::Read).unwrap().collect();
    assert_eq!(through_old, one(A_IOVA, A_TARGET, PAGE));
    assert_maps_to(&h, A_IOVA, PAGE, Access::Read, B_TARGET);
    drop(old);
    iommu.device_detach(dev).unwrap();
    err(iommu.destroy(auto2), ENOENT);
}

/// Replacing into an IOAS that maps over a device's reserved range fails with EADDRINUSE and
/// leaves everything as it was; once the mapping is gone the replace succeeds, the new IOAS
/// reserves the range and the old one no longer does.
#[test]
fn replace_into_an_ioas_mapping_a_reserved_range_is_refused_then_moves_the_reservation() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let other = ioas_with(io, &[(A_IOVA, B_TARGET, A_LEN, Prot::RW)]);
    io.ioas_map(other, Some(MSI.start + PAGE), 0x7000_0000, PAGE, Prot::RW)
        .unwrap();
    let user = io.hwpt_alloc(fx.peer, other, HwptFlags::empty()).unwrap();

    for pt in [other, user] {
        let e = err(io.device_replace(fx.dev, pt), EADDRINUSE);
        assert!(
            matches!(&e, Error::ReservedInUse { dev, mapping, .. }
                if *dev == fx.dev && mapping.start == MSI.start + PAGE),
            "{e:?}"
        );
        // Through the peer too: the whole group moves, so the group's reservations count.
        err(io.device_replace(fx.peer, pt), EADDRINUSE);
        fx.assert_intact();
        // The failed replace did not leave MSI reserved in `other`: other pages of it map.
        assert_eq!(
            io.ioas_map(other, Some(MSI.start), 0x7100_0000, PAGE, Prot::RW),
            Ok(MSI.start)
        );
        assert_eq!(io.ioas_unmap(other, MSI.start, PAGE), Ok(PAGE));
    }
    // The user HWPT is unused, so it can go; its IOAS is still held by nothing else.
    io.destroy(user).unwrap();

    // Remove the offending mapping; now the replace goes through.
    assert_eq!(io.ioas_unmap(other, MSI.start + PAGE, PAGE), Ok(PAGE));
    let auto2 = io.device_replace(fx.dev, other).unwrap();
    assert_ne!(auto2, fx.hwpt);
    err(io.destroy(fx.hwpt), ENOENT);
    for h in [&fx.dev_h, &fx.peer_h] {
        assert_maps_to(h, A_IOVA, PAGE, Access::Read, B_TARGET);
    }
    // The new IOAS reserves the range, byte-granular ranges covering whole pages.
    let e = err(
        io.ioas_map(other, Some(MSI.end - PAGE), 0x7000_0000, PAGE, Prot::RW),
        EINVAL,
    );
    assert!(matches!(e, Error::InReservedRange { .. }), "{e:?}");
    // The old IOAS no longer does.
    assert_eq!(
        io.ioas_map(fx.ioas, Some(MSI.start), 0x7000_0000, PAGE, Prot::RW),
        Ok(MSI.start)
    );
    // And replacing back is now refused, since the old IOAS maps the reserved range.
    err(io.device_replace(fx.dev, fx.ioas), EADDRINUSE);
    for h in [&fx.dev_h, &fx.peer_h] {
        assert_maps_to(h, A_IOVA, PAGE, Access::Read, B_TARGET);
    }
}

#[test]
fn replace_moves_the_whole_group() {
    let fx = Fx::new();
    let io = &fx.iommu;
    let other = ioas_with(io, &[(A_IOVA, B_TARGET, A_LEN, Prot::RW)]);
    let user = io.hwpt_alloc(fx.dev, other, HwptFlags::empty()).unwrap();
    // Replace through one device moves both.
    assert_eq!(io.device_replace(fx.peer, user), Ok(user));
    for h in [&fx.dev_h, &fx.peer_h] {
        assert_maps_to(h, A_IOVA, PAGE, Access::Read, B_TARGET);
    }
    // The old auto HWPT lost its last devices.
    err(io.destroy(fx.hwpt), ENOENT);
    // Both devices are attached to `user` now: re-attach is refused, detach works for each.
    err(io.device_attach(fx.dev, user), EINVAL);
    assert_eq!(io.device_replace(fx.dev, user), Ok(user));
    io.device_detach(fx.dev).unwrap();
    assert_eq!(
        fault(&fx.dev_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    assert_maps_to(&fx.peer_h, A_IOVA, PAGE, Access::Read, B_TARGET);
    // The lone device's group was never involved.
    assert_eq!(
        fault(&fx.lone_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    io.device_detach(fx.peer).unwrap();
    io.destroy(user).unwrap();
}

#[test]
fn replace_to_the_current_hwpt_is_a_no_op() {
    let fx = Fx::new();
    let io = &fx.iommu;
    for _ in 0..3 {
        assert_eq!(io.device_replace(fx.dev, fx.hwpt), Ok(fx.hwpt));
        assert_eq!(io.device_replace(fx.dev, fx.ioas), Ok(fx.hwpt));
    }
    fx.assert_intact();
    // Likewise on a user HWPT.
    let user = io.hwpt_alloc(fx.dev, fx.ioas, HwptFlags::empty()).unwrap();
    assert_eq!(io.device_replace(fx.dev, user), Ok(user));
    assert_eq!(io.device_replace(fx.peer, user), Ok(user));
    err(io.destroy(user), EBUSY);
    for h in [&fx.dev_h, &fx.peer_h] {
        assert_maps_to(h, A_IOVA, PAGE, Access::Read, A_TARGET);
    }
}
