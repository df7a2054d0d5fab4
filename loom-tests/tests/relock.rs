//! The lock order of issue 15 (G10, G14): IOAS locks before the object table's, with a re-plan
//! when the table names another IOAS (`with_ioas_locks`), and pending domains that narrow
//! nothing (a map past one spoils it; its attach re-plans).
#![cfg(viommu_loom)]

use loom::thread;
use viommu::{DeviceInfo, FaultKind, GroupId, HwptFlags, Iommu, Prot};
use viommu_loom_tests::{
    assert_nothing_live, bind, ioas_with_page, model, settled, target_of, IOVA, PAGE, TARGET,
};

/// A map past a narrow device's aperture races `hwpt_alloc` for that device (which populates
/// a new, narrow domain as pending). Exactly one wins: the map first (the allocation's check
/// sees the map: `EINVAL`), or the allocation first (the new HWPT narrows the IOAS's limit:
/// the map is `EOVERFLOW`). A pending domain that the map spoiled is never committed.
#[test]
fn map_past_a_pending_domain_vs_its_hwpt_alloc() {
    model("map_past_a_pending_domain_vs_its_hwpt_alloc", || {
        let iommu = Iommu::new();
        let narrow = DeviceInfo {
            iova_bits: 14,
            ..DeviceInfo::default()
        };
        let (dev_id, dev) = iommu.device_bind(GroupId(1), narrow).unwrap();
        let ioas = ioas_with_page(&iommu, IOVA, TARGET);

        let other = iommu.clone();
        let allocator = thread::spawn(move || other.hwpt_alloc(dev_id, ioas, HwptFlags::empty()));
        let mapped = iommu.ioas_map(ioas, Some(0x8000), TARGET, PAGE, Prot::RW);
        let allocated = allocator.join().unwrap();

        match (&mapped, &allocated) {
            (Ok(_), Err(e)) => {
                assert_eq!(e.errno(), 22, "the allocation sees the map: {e:?}");
                let s = settled(&iommu);
                assert_eq!((s.hwpts, s.live_domains), (0, 0), "{s:?}");
            }
            (Err(e), Ok(hwpt)) => {
                assert_eq!(e.errno(), 75, "the map sees the HWPT: {e:?}");
                iommu.device_attach(dev_id, *hwpt).unwrap();
                assert_eq!(target_of(&dev, IOVA), Ok(TARGET));
                iommu.device_detach(dev_id).unwrap();
                iommu.destroy(*hwpt).unwrap();
            }
            other => panic!("exactly one of map and hwpt_alloc wins: {other:?}"),
        }
        iommu.ioas_unmap(ioas, 0, u64::MAX).unwrap();
        iommu.destroy(ioas).unwrap();
        iommu.destroy(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// A detach races a replace that moves the device to another IOAS: the detach may plan with
/// the old IOAS and find the device on the new one, and then runs again with that IOAS's lock
/// (taken before the table's). Either order is fine; no deadlock, and the device ends blocked
/// with nothing left attached.
#[test]
fn detach_vs_replace_to_another_ioas() {
    model("detach_vs_replace_to_another_ioas", || {
        let iommu = Iommu::new();
        let (dev_id, dev) = bind(&iommu, 1);
        let a = ioas_with_page(&iommu, IOVA, TARGET);
        let b = ioas_with_page(&iommu, IOVA, TARGET + PAGE);
        iommu.device_attach(dev_id, a).unwrap();

        let other = iommu.clone();
        let replacer = thread::spawn(move || other.device_replace(dev_id, b));
        iommu.device_detach(dev_id).unwrap();
        let replaced = replacer.join().unwrap();

        if let Err(e) = &replaced {
            assert_eq!(e.errno(), 22, "replace of a detached device: {e:?}");
        }
        assert_eq!(target_of(&dev, IOVA), Err(FaultKind::Blocked));
        let s = settled(&iommu);
        assert_eq!((s.hwpts, s.live_domains), (0, 0), "{s:?}");
        for ioas in [a, b] {
            iommu.ioas_unmap(ioas, 0, u64::MAX).unwrap();
            iommu.destroy(ioas).unwrap();
        }
        iommu.destroy(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}
