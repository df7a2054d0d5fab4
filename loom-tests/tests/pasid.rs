//! PASIDs: a PASID replace against `pin_pasid`, and a PASID's first attach (the device's
//! table leaf and the group's cell created) against a concurrent lookup.
#![cfg(viommu_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use viommu::{DeviceInfo, FaultKind, GroupId, HwptFlags, Iommu, ObjId};
use viommu_loom_tests::{
    assert_after_fence, assert_nothing_live, ioas_with_page, model, page_target, settled, IOVA,
    IOVA_BITS,
};

const OLD: u64 = 0x10_0000;
const NEW: u64 = 0x20_0000;

/// A loom-sized device with 2-bit PASIDs (1 ..= 3; under loom a table leaf holds two cells,
/// so PASID 1 is in the first leaf and 2, 3 in the second).
fn bind_pasid(iommu: &Iommu) -> (ObjId, viommu::Device) {
    let info = DeviceInfo {
        iova_bits: IOVA_BITS,
        pasid_bits: 2,
        ..DeviceInfo::default()
    };
    iommu.device_bind(GroupId(1), info).unwrap()
}

/// G1, G2, G9 per PASID, and the snapshot cache: a reader pins PASID 1 and translates twice
/// while the PASID is replaced from an auto HWPT on one IOAS to a prebuilt user HWPT on
/// another (so two domains are allocated throughout, until the auto one is freed).
/// It sees the old or the new target, never a fault, the same through one guard; while a guard
/// that saw the old domain lives, that domain is still allocated; a guard made after the
/// replace returned (the flag) sees the new target even if the thread's cache was filled
/// during the replace.
#[test]
fn pasid_replace_vs_pin_pasid() {
    model("pasid_replace_vs_pin_pasid", || {
        let iommu = Iommu::new();
        let (dev_id, dev) = bind_pasid(&iommu);
        let ioas1 = ioas_with_page(&iommu, IOVA, OLD);
        let ioas2 = ioas_with_page(&iommu, IOVA, NEW);
        iommu.device_attach_pasid(dev_id, 1, ioas1).unwrap();
        let user = iommu.hwpt_alloc(dev_id, ioas2, HwptFlags::empty()).unwrap();
        let replaced = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, iommu, replaced) = (dev.clone(), iommu.clone(), replaced.clone());
            thread::spawn(move || {
                let guard = dev.pin_pasid(1);
                let first = page_target(&guard, IOVA);
                assert!(
                    first == Ok(OLD) || first == Ok(NEW),
                    "a PASID replace is hitless: {first:x?}"
                );
                if first == Ok(OLD) {
                    let s = iommu.stats();
                    assert_eq!(s.live_domains, 2, "a guard's domain was freed: {s:?}");
                }
                assert_eq!(page_target(&guard, IOVA), first, "one guard, one domain");
                drop(guard);
                // ORDERING: Acquire pairs with the writer's Release after the replace.
                let after = replaced.load(Ordering::Acquire);
                let again = page_target(&dev.pin_pasid(1), IOVA);
                if after {
                    assert_eq!(again, Ok(NEW), "a guard made after the replace returned");
                } else {
                    assert!(again == Ok(OLD) || again == Ok(NEW), "{again:x?}");
                }
            })
        };
        assert_eq!(iommu.device_replace_pasid(dev_id, 1, user), Ok(user));
        // ORDERING: Release pairs with the reader's Acquire.
        replaced.store(true, Ordering::Release);
        reader.join().unwrap();

        assert_eq!(page_target(&dev.pin_pasid(1), IOVA), Ok(NEW));
        let s = settled(&iommu);
        assert_eq!((s.hwpts, s.live_domains, s.live_tables), (1, 1, 2), "{s:?}");
        iommu.device_detach_pasid(dev_id, 1).unwrap();
        iommu.destroy(user).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// The first attach of PASID `pasid` races a `pin_pasid(pasid)`: the attach populates a new
/// auto domain, makes the group's cell for the PASID, publishes the domain into it, creates
/// the device's table leaf when `leaf_exists` is false, and stores the cell's pointer in it.
/// The reader sees `Blocked` or the mapped target (never a half-built leaf, cell or domain:
/// loom reports a read of an atomic not ordered after its creation), and after the attach
/// returned (the flag), exactly the target. Afterwards the detach fence leaves it `Blocked`.
fn first_attach_vs_lookup(name: &str, leaf_exists: bool) {
    model(name, move || {
        let iommu = Iommu::new();
        let (dev_id, dev) = bind_pasid(&iommu);
        let ioas = ioas_with_page(&iommu, IOVA, NEW);
        if leaf_exists {
            // PASID 2 shares PASID 3's leaf: the leaf is there, the cell is not.
            iommu.device_attach_pasid(dev_id, 2, ioas).unwrap();
        }
        let attached = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, attached) = (dev.clone(), attached.clone());
            thread::spawn(move || {
                let first = page_target(&dev.pin_pasid(3), IOVA);
                assert!(
                    first == Ok(NEW) || first == Err(FaultKind::Blocked),
                    "{first:x?}"
                );
                // ORDERING: Acquire pairs with the writer's Release after the attach.
                let after = attached.load(Ordering::Acquire);
                let again = page_target(&dev.pin_pasid(3), IOVA);
                if after {
                    assert_eq!(again, Ok(NEW), "a guard made after the attach returned");
                } else {
                    assert!(
                        again == Ok(NEW) || again == Err(FaultKind::Blocked),
                        "{again:x?}"
                    );
                }
            })
        };
        iommu.device_attach_pasid(dev_id, 3, ioas).unwrap();
        // ORDERING: Release pairs with the reader's Acquire.
        attached.store(true, Ordering::Release);
        reader.join().unwrap();

        iommu.device_detach_pasid(dev_id, 3).unwrap();
        assert_after_fence(
            page_target(&dev.pin_pasid(3), IOVA),
            true,
            NEW,
            FaultKind::Blocked,
            "device_detach_pasid",
        );
        if leaf_exists {
            iommu.device_detach_pasid(dev_id, 2).unwrap();
        }
        assert_nothing_live(&iommu);
    });
}

/// The leaf and the cell are both created by the attach.
#[test]
fn first_pasid_attach_vs_lookup() {
    first_attach_vs_lookup("first_pasid_attach_vs_lookup", false);
}

/// The leaf exists (a neighbour PASID is attached); the cell is created by the attach.
#[test]
fn first_pasid_attach_in_existing_leaf_vs_lookup() {
    first_attach_vs_lookup("first_pasid_attach_in_existing_leaf_vs_lookup", true);
}

/// G6 per device and PASID: device A detaches PASID 1 while a reader translates through
/// `A.pin_pasid(1)`; device B of the same group keeps PASID 1 attached, so the group's cell
/// stays on the domain and only A's table entry (and the fence) can block A. A guard of A that
/// translated is never alive after `device_detach_pasid` returned, and a guard of A made after
/// it faults `Blocked`, while B still translates.
#[test]
fn detach_pasid_vs_pin_pasid() {
    model("detach_pasid_vs_pin_pasid", || {
        let iommu = Iommu::new();
        let (a_id, a) = bind_pasid(&iommu);
        let (b_id, b) = bind_pasid(&iommu);
        let ioas = ioas_with_page(&iommu, IOVA, NEW);
        let hwpt = iommu.device_attach_pasid(a_id, 1, ioas).unwrap();
        assert_eq!(iommu.device_attach_pasid(b_id, 1, ioas), Ok(hwpt));
        let detached = Arc::new(AtomicBool::new(false));

        let reader = {
            let (a, detached) = (a.clone(), detached.clone());
            thread::spawn(move || {
                {
                    let guard = a.pin_pasid(1);
                    match page_target(&guard, IOVA) {
                        Ok(target) => {
                            assert_eq!(target, NEW);
                            assert!(
                                // ORDERING: Acquire pairs with the writer's Release.
                                !detached.load(Ordering::Acquire),
                                "device_detach_pasid returned while a guard of the device lives"
                            );
                        }
                        Err(kind) => assert_eq!(kind, FaultKind::Blocked),
                    }
                }
                // ORDERING: Acquire pairs with the writer's Release.
                let after = detached.load(Ordering::Acquire);
                let r = page_target(&a.pin_pasid(1), IOVA);
                assert_after_fence(r, after, NEW, FaultKind::Blocked, "device_detach_pasid");
            })
        };
        iommu.device_detach_pasid(a_id, 1).unwrap();
        // ORDERING: Release pairs with the reader's Acquire loads.
        detached.store(true, Ordering::Release);
        reader.join().unwrap();

        assert_eq!(
            page_target(&b.pin_pasid(1), IOVA),
            Ok(NEW),
            "B keeps PASID 1"
        );
        iommu.device_detach_pasid(b_id, 1).unwrap();
        assert_nothing_live(&iommu);
    });
}
