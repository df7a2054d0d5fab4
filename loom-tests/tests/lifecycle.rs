//! Object lifetimes: attach racing the end of the domain or the IOAS it would land on.
#![cfg(viommu_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use viommu::{FaultKind, Iommu};
use viommu_loom_tests::{
    assert_after_fence, assert_nothing_live, bind, device_on_page, ioas_with_page, model,
    page_target, settled, target_of, IOVA, TARGET,
};

/// The last device of an auto HWPT detaches (freeing it) while a device of another group
/// attaches to the same IOAS. The attach either joins the old auto HWPT before it is freed
/// (which then survives with the new device) or builds a new one; it never lands on a domain
/// that is being destroyed. Afterwards the attached device translates, the detached one is
/// blocked, exactly one HWPT is alive, and after a grace period exactly one domain is.
#[test]
fn detach_last_vs_attach() {
    model("detach_last_vs_attach", || {
        let iommu = Iommu::new();
        let (a_id, a) = bind(&iommu, 1);
        let (b_id, b) = bind(&iommu, 2);
        let ioas = ioas_with_page(&iommu, IOVA, TARGET);
        let old = iommu.device_attach(a_id, ioas).unwrap();

        let other = iommu.clone();
        let attacher = thread::spawn(move || other.device_attach(b_id, ioas).unwrap());
        iommu.device_detach(a_id).unwrap();
        let hwpt = attacher.join().unwrap();

        assert_eq!(target_of(&b, IOVA), Ok(TARGET));
        assert_eq!(target_of(&a, IOVA), Err(FaultKind::Blocked));
        assert_eq!(
            iommu.destroy(hwpt).unwrap_err().errno(),
            16,
            "the attached auto HWPT is alive"
        );
        if hwpt != old {
            assert_eq!(iommu.destroy(old).unwrap_err().errno(), 2, "old HWPT freed");
        }
        let s = settled(&iommu);
        assert_eq!((s.hwpts, s.live_domains, s.live_tables), (1, 1, 2), "{s:?}");
        iommu.device_detach(b_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// `destroy` of an IOAS races an attach to it: either the attach wins (the destroy is `EBUSY`,
/// the device translates through a domain of the live IOAS) or the destroy wins (the attach is
/// `ENOENT`, the device stays blocked, and no domain was built for the dead IOAS).
#[test]
fn destroy_ioas_vs_attach() {
    model("destroy_ioas_vs_attach", || {
        let iommu = Iommu::new();
        let (dev_id, dev) = bind(&iommu, 1);
        let ioas = ioas_with_page(&iommu, IOVA, TARGET);

        let other = iommu.clone();
        let attacher = thread::spawn(move || other.device_attach(dev_id, ioas));
        let destroyed = iommu.destroy(ioas);
        let attached = attacher.join().unwrap();

        match (&attached, &destroyed) {
            (Ok(hwpt), Err(e)) => {
                assert_eq!(e.errno(), 16, "destroy of a used IOAS is EBUSY: {e:?}");
                assert_eq!(target_of(&dev, IOVA), Ok(TARGET));
                let s = settled(&iommu);
                assert_eq!((s.ioas, s.hwpts, s.live_domains), (1, 1, 1), "{s:?}");
                iommu.device_detach(dev_id).unwrap();
                assert_eq!(
                    iommu.destroy(*hwpt).unwrap_err().errno(),
                    2,
                    "auto HWPT freed"
                );
                iommu.destroy(ioas).unwrap();
            }
            (Err(e), Ok(())) => {
                assert_eq!(e.errno(), 2, "attach to a destroyed IOAS is ENOENT: {e:?}");
                assert_eq!(target_of(&dev, IOVA), Err(FaultKind::Blocked));
                assert_eq!(iommu.device_attach(dev_id, ioas).unwrap_err().errno(), 2);
            }
            _ => panic!("exactly one of attach and destroy wins: {attached:?} {destroyed:?}"),
        }
        let s = settled(&iommu);
        assert_eq!(s.ioas, 0, "{s:?}");
        assert_nothing_live(&iommu);
    });
}

/// G6: a device is detached (its group goes to the blocked domain) while a reader translates.
/// A guard that translated through the old domain is never alive once `device_detach` has
/// returned (the writer raises a flag after the return; the reader checks it is still down
/// while its guard lives), and a guard made after the reader saw the flag faults `Blocked`.
#[test]
fn detach_vs_translate() {
    model("detach_vs_translate", || {
        let iommu = Iommu::new();
        let (dev_id, dev, _ioas) = device_on_page(&iommu, IOVA, TARGET);
        let detached = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, detached) = (dev.clone(), detached.clone());
            thread::spawn(move || {
                {
                    let guard = dev.pin();
                    match page_target(&guard, IOVA) {
                        Ok(target) => {
                            assert_eq!(target, TARGET);
                            assert!(
                                !detached.load(Ordering::Acquire),
                                "device_detach returned while a guard of the device lives"
                            );
                        }
                        Err(kind) => assert_eq!(kind, FaultKind::Blocked),
                    }
                }
                let after = detached.load(Ordering::Acquire);
                let r = target_of(&dev, IOVA);
                assert_after_fence(r, after, TARGET, FaultKind::Blocked, "detach");
            })
        };
        iommu.device_detach(dev_id).unwrap();
        detached.store(true, Ordering::Release);
        reader.join().unwrap();

        assert_nothing_live(&iommu);
    });
}
