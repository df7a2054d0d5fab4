//! Replace: a group's move between domains against DMA translation and against itself.
#![cfg(viommu_loom)]

use loom::thread;
use viommu::{Device, HwptFlags, Iommu, ObjId};
use viommu_loom_tests::{
    assert_nothing_live, bind, ioas_with_page, model, page_target, settled, target_of, IOVA,
};

const OLD: u64 = 0x10_0000;
const NEW: u64 = 0x20_0000;
const T1: u64 = 0x30_0000;
const T2: u64 = 0x40_0000;

/// Devices A and B, of groups 1 and 2, and IOASes 1 and 2 mapping `IOVA` to `T1` and `T2`.
fn two_groups(iommu: &Iommu) -> ([(ObjId, Device); 2], [ObjId; 2]) {
    let devices = [bind(iommu, 1), bind(iommu, 2)];
    let ioas = [T1, T2].map(|t| ioas_with_page(iommu, IOVA, t));
    (devices, ioas)
}

/// A crossed over to IOAS 2 and B to IOAS 1.
#[track_caller]
fn assert_crossed(a: &Device, b: &Device) {
    assert_eq!(target_of(a, IOVA), Ok(T2));
    assert_eq!(target_of(b, IOVA), Ok(T1));
}

/// G1, G2: a reader that pins and translates while the device is replaced from an auto HWPT
/// on one IOAS to a new auto HWPT on another sees the old or the new target, never a fault and
/// never a torn chunk, and both translations through one guard agree.
#[test]
fn replace_vs_translate() {
    model("replace_vs_translate", || {
        let iommu = Iommu::new();
        let (dev_id, dev) = bind(&iommu, 1);
        let ioas1 = ioas_with_page(&iommu, IOVA, OLD);
        let ioas2 = ioas_with_page(&iommu, IOVA, NEW);
        iommu.device_attach(dev_id, ioas1).unwrap();

        let reader_dev = dev.clone();
        let reader = thread::spawn(move || {
            let guard = reader_dev.pin();
            let first = page_target(&guard, IOVA);
            assert!(
                first == Ok(OLD) || first == Ok(NEW),
                "a replace is hitless: {first:x?}"
            );
            assert_eq!(page_target(&guard, IOVA), first, "one guard, one domain");
        });
        iommu.device_replace(dev_id, ioas2).unwrap();
        reader.join().unwrap();

        assert_eq!(target_of(&dev, IOVA), Ok(NEW));
        let s = settled(&iommu);
        assert_eq!(s.hwpts, 1, "the replaced-away auto HWPT is gone: {s:?}");
        assert_eq!(s.live_domains, 1, "its domain is freed: {s:?}");
        assert_eq!(
            s.live_tables, 2,
            "only the new domain's root and leaf table: {s:?}"
        );
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// G1, G9: a guard's snapshot lives as long as the guard. The device moves from an auto HWPT
/// to a prebuilt user HWPT and the writer then calls `synchronize`; a reader that pinned the
/// old domain still translates through it, and its domain is still allocated (two live
/// domains: nothing else is allocated or freed in between) until the guard is dropped. When
/// `synchronize` returns, the old domain is freed.
#[test]
fn replace_vs_guard_lifetime() {
    model("replace_vs_guard_lifetime", || {
        let iommu = Iommu::new();
        let (dev_id, dev) = bind(&iommu, 1);
        let ioas1 = ioas_with_page(&iommu, IOVA, OLD);
        let ioas2 = ioas_with_page(&iommu, IOVA, NEW);
        iommu.device_attach(dev_id, ioas1).unwrap();
        let user = iommu.hwpt_alloc(dev_id, ioas2, HwptFlags::empty()).unwrap();
        assert_eq!(iommu.stats().live_domains, 2);

        let reader = {
            let (dev, iommu) = (dev.clone(), iommu.clone());
            thread::spawn(move || {
                let guard = dev.pin();
                let first = page_target(&guard, IOVA);
                assert!(first == Ok(OLD) || first == Ok(NEW), "hitless: {first:x?}");
                if first == Ok(OLD) {
                    let s = iommu.stats();
                    assert_eq!(
                        s.live_domains, 2,
                        "a guard's domain was freed under it: {s:?}"
                    );
                }
                assert_eq!(page_target(&guard, IOVA), first, "one guard, one domain");
            })
        };
        assert_eq!(iommu.device_replace(dev_id, user).unwrap(), user);
        iommu.synchronize().unwrap();
        let s = iommu.stats();
        assert_eq!(
            s.live_domains, 1,
            "synchronize frees the replaced-away domain: {s:?}"
        );
        reader.join().unwrap();

        assert_eq!(target_of(&dev, IOVA), Ok(NEW));
        iommu.device_detach(dev_id).unwrap();
        iommu.destroy(user).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// Two replaces of one group race (from two of its devices, to new auto HWPTs on two
/// different IOASes): both succeed, the group ends on exactly one of the two HWPTs with both
/// devices translating through it (G3), the other auto HWPT is freed (`ENOENT`), and after a
/// grace period only the winner's domain and tables are allocated (G9).
#[test]
fn replace_vs_replace() {
    model("replace_vs_replace", || {
        let iommu = Iommu::new();
        let (a_id, a) = bind(&iommu, 1);
        let (b_id, b) = bind(&iommu, 1);
        let ioas0 = ioas_with_page(&iommu, IOVA, OLD);
        let ioas1 = ioas_with_page(&iommu, IOVA, T1);
        let ioas2 = ioas_with_page(&iommu, IOVA, T2);
        let h0 = iommu.device_attach(a_id, ioas0).unwrap();
        assert_eq!(iommu.device_attach(b_id, ioas0).unwrap(), h0);

        let other = iommu.clone();
        let racer = thread::spawn(move || other.device_replace(a_id, ioas1).unwrap());
        let h2 = iommu.device_replace(b_id, ioas2).unwrap();
        let h1 = racer.join().unwrap();
        assert_ne!(h1, h2);

        let target = target_of(&a, IOVA);
        assert_eq!(target_of(&b, IOVA), target, "one group, one domain");
        let (winner, loser) = match target {
            Ok(T1) => (h1, h2),
            Ok(T2) => (h2, h1),
            other => panic!("the group is on one of the two new HWPTs: {other:x?}"),
        };
        assert_eq!(
            iommu.destroy(winner).unwrap_err().errno(),
            16,
            "winner is a live auto HWPT"
        );
        assert_eq!(
            iommu.destroy(loser).unwrap_err().errno(),
            2,
            "loser was freed"
        );
        assert_eq!(
            iommu.destroy(h0).unwrap_err().errno(),
            2,
            "first HWPT was freed"
        );
        let s = settled(&iommu);
        assert_eq!((s.hwpts, s.live_domains, s.live_tables), (1, 1, 2), "{s:?}");
        iommu.device_detach(a_id).unwrap();
        iommu.device_detach(b_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// G10: group A moves from IOAS 1 to IOAS 2 while group B moves from IOAS 2 to IOAS 1 (auto
/// HWPTs), so the two replaces want the same two IOAS locks in opposite roles. loom reports a
/// deadlock if any schedule blocks both; both succeed and each device lands on its new IOAS.
#[test]
fn replace_crossing_ioases() {
    model("replace_crossing_ioases", || {
        let iommu = Iommu::new();
        let ([(a_id, a), (b_id, b)], [ioas1, ioas2]) = two_groups(&iommu);
        iommu.device_attach(a_id, ioas1).unwrap();
        iommu.device_attach(b_id, ioas2).unwrap();

        let other = iommu.clone();
        let racer = thread::spawn(move || other.device_replace(a_id, ioas2).unwrap());
        iommu.device_replace(b_id, ioas1).unwrap();
        racer.join().unwrap();

        assert_crossed(&a, &b);
        let s = settled(&iommu);
        assert_eq!((s.hwpts, s.live_domains, s.live_tables), (2, 2, 4), "{s:?}");
        iommu.device_detach(a_id).unwrap();
        iommu.device_detach(b_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// G10 with user HWPTs: group A moves from a user HWPT on IOAS 1 to one on IOAS 2 while group
/// B moves the other way. No HWPT is shared or freed, so the only thing the two replaces
/// contend on is the pair of IOAS locks, taken in opposite roles (old, new); loom reports a
/// deadlock if any schedule blocks both.
#[test]
fn replace_crossing_user_hwpts() {
    model("replace_crossing_user_hwpts", || {
        let iommu = Iommu::new();
        let ([(a_id, a), (b_id, b)], [ioas1, ioas2]) = two_groups(&iommu);
        let flags = HwptFlags::empty();
        let a_old = iommu.hwpt_alloc(a_id, ioas1, flags).unwrap();
        let a_new = iommu.hwpt_alloc(a_id, ioas2, flags).unwrap();
        let b_old = iommu.hwpt_alloc(b_id, ioas2, flags).unwrap();
        let b_new = iommu.hwpt_alloc(b_id, ioas1, flags).unwrap();
        iommu.device_attach(a_id, a_old).unwrap();
        iommu.device_attach(b_id, b_old).unwrap();

        let other = iommu.clone();
        let racer = thread::spawn(move || other.device_replace(a_id, a_new).unwrap());
        assert_eq!(iommu.device_replace(b_id, b_new).unwrap(), b_new);
        assert_eq!(racer.join().unwrap(), a_new);

        assert_crossed(&a, &b);
        iommu.device_detach(a_id).unwrap();
        iommu.device_detach(b_id).unwrap();
        for h in [a_old, a_new, b_old, b_new] {
            iommu.destroy(h).unwrap();
        }
        assert_nothing_live(&iommu);
    });
}
