//! Reclamation (G9): after any number of replace, map, unmap, attach and detach cycles,
//! `synchronize()` brings the library's memory counters (`Stats::live_domains`,
//! `Stats::live_tables`) back to their baseline, also while other threads keep pinning guards;
//! with every object destroyed both are zero. Nested HWPTs of both stage-1 formats, at the RID
//! and at PASIDs, return to the baseline the same way.

mod common;
#[path = "support/stage1.rs"]
mod stage1;

use common::{bind, reserving, PAGE};
use stage1::{ste_s1, write_cd, Fmt, Guest, S1Table};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use viommu::{
    Access, DeviceInfo, FaultKind, HwptFlags, Invalidation, Iommu, ObjId, Prot, Stage1, Stats,
};

const TWO_MIB: u64 = 2 << 20;
const ONE_GIB: u64 = 1 << 30;
/// A reserved range (an MSI doorbell window) of one device.
const MSI: std::ops::Range<u64> = 0xfee0_0000..0xfef0_0000;

/// After `synchronize`, the memory counters are back at `base` (checked after `round`).
#[track_caller]
fn assert_back_to_baseline(iommu: &Iommu, base: Stats, round: u64) {
    iommu.synchronize().unwrap();
    let now = iommu.stats();
    assert_eq!(
        (now.live_domains, now.live_tables),
        (base.live_domains, base.live_tables),
        "after round {round}: (live_domains, live_tables) did not return to the baseline"
    );
}

/// With every object destroyed, `synchronize` frees every domain and table node.
#[track_caller]
fn assert_all_freed(iommu: &Iommu) {
    iommu.synchronize().unwrap();
    let end = iommu.stats();
    assert_eq!((end.live_domains, end.live_tables), (0, 0), "{end:?}");
}

/// The first of the single pages `map_spread(_, _, salt)` maps; it goes to `SPREAD_TARGET`.
fn spread_first(salt: u64) -> u64 {
    (salt % 7) * TWO_MIB + PAGE
}
const SPREAD_TARGET: u64 = 0x1_0000_0000;

/// Maps a spread of areas into `ioas`: single pages a GiB apart (each needs its own chain of
/// table nodes), a run of 16 pages at 128 MiB, and a 2 MiB area at 132 MiB (a large leaf where
/// supported). Returns the bytes mapped.
fn map_spread(iommu: &Iommu, ioas: ObjId, salt: u64) -> u64 {
    let mut bytes = 0;
    for i in 0..8u64 {
        let iova = i * ONE_GIB + spread_first(salt);
        iommu
            .ioas_map(ioas, Some(iova), SPREAD_TARGET + i * PAGE, PAGE, Prot::RW)
            .unwrap();
        bytes += PAGE;
    }
    iommu
        .ioas_map(
            ioas,
            Some(64 * TWO_MIB),
            0x2_0000_0000,
            16 * PAGE,
            Prot::READ,
        )
        .unwrap();
    iommu
        .ioas_map(ioas, Some(66 * TWO_MIB), 0x3_0000_0000, TWO_MIB, Prot::RW)
        .unwrap();
    bytes + 16 * PAGE + TWO_MIB
}

/// An automatic map of three pages.
fn map_auto(iommu: &Iommu, ioas: ObjId) -> u64 {
    let at = iommu
        .ioas_map(ioas, None, 0x4_0000_0000, 3 * PAGE, Prot::RW)
        .unwrap();
    assert_eq!(at % PAGE, 0);
    3 * PAGE
}

/// One round of everything that makes and retires domains and table nodes. Leaves every
/// device detached, both IOASes empty and no HWPT alive.
fn churn(iommu: &Iommu, devs: [ObjId; 3], ioas: [ObjId; 2], round: u64, peak: &mut Stats) {
    let [a, b, c] = devs;
    let user1 = iommu.hwpt_alloc(a, ioas[0], HwptFlags::empty()).unwrap();
    let user2 = iommu
        .hwpt_alloc(c, ioas[1], HwptFlags::NEST_PARENT)
        .unwrap();

    // Auto HWPT on ioas[0] for group 1, populated by maps made before and after the attach.
    let mapped0 = map_spread(iommu, ioas[0], round);
    let auto1 = iommu.device_attach(a, ioas[0]).unwrap();
    assert_eq!(iommu.device_attach(b, ioas[0]), Ok(auto1));
    iommu
        .ioas_map(
            ioas[0],
            Some(100 * TWO_MIB),
            0x5_0000_0000,
            4 * PAGE,
            Prot::RW,
        )
        .unwrap();

    // Group 2 on an auto HWPT of ioas[1], then maps there.
    iommu.device_attach(c, ioas[1]).unwrap();
    let mapped1 = map_spread(iommu, ioas[1], round + 3) + map_auto(iommu, ioas[1]);

    let s = iommu.stats();
    peak.live_domains = peak.live_domains.max(s.live_domains);
    peak.live_tables = peak.live_tables.max(s.live_tables);

    // Any-to-any replaces: auto -> user (other IOAS) -> auto (back) -> user (same IOAS).
    assert_eq!(iommu.device_replace(a, user2), Ok(user2));
    let auto1b = iommu.device_replace(b, ioas[0]).unwrap();
    assert_ne!(auto1b, auto1);
    assert_eq!(iommu.device_replace(a, user1), Ok(user1));
    assert_eq!(iommu.device_replace(c, user1), Ok(user1));

    // Unmap in pieces, remap, unmap again.
    assert_eq!(
        iommu.ioas_unmap(ioas[0], 100 * TWO_MIB, 4 * PAGE),
        Ok(4 * PAGE)
    );
    assert_eq!(
        iommu.ioas_unmap(ioas[0], 64 * TWO_MIB, 4 * TWO_MIB),
        Ok(16 * PAGE + TWO_MIB)
    );
    iommu
        .ioas_map(
            ioas[0],
            Some(64 * TWO_MIB),
            0x6_0000_0000,
            TWO_MIB,
            Prot::RW,
        )
        .unwrap();
    assert_eq!(
        iommu.ioas_unmap(ioas[0], 64 * TWO_MIB, TWO_MIB),
        Ok(TWO_MIB)
    );
    let auto0 = map_auto(iommu, ioas[0]);

    // Detach in an order that ends the group while the user HWPT stays alive.
    iommu.device_detach(c).unwrap();
    iommu.device_detach(a).unwrap();
    iommu.device_detach(b).unwrap();
    assert_eq!(
        iommu.ioas_unmap(ioas[0], 0, u64::MAX),
        Ok(mapped0 - 16 * PAGE - TWO_MIB + auto0)
    );
    assert_eq!(iommu.ioas_unmap(ioas[1], 0, u64::MAX), Ok(mapped1));
    iommu.destroy(user1).unwrap();
    iommu.destroy(user2).unwrap();
}

#[test]
fn memory_returns_to_baseline_after_many_cycles() {
    let iommu = Iommu::new();
    let (a, _) = bind(&iommu, 1, DeviceInfo::default());
    let (b, _) = bind(&iommu, 1, DeviceInfo::default());
    let (c, _) = bind(&iommu, 2, reserving(MSI));
    let ioas = [iommu.ioas_alloc().unwrap(), iommu.ioas_alloc().unwrap()];
    iommu.synchronize().unwrap();
    let base = iommu.stats();
    assert_eq!((base.live_domains, base.live_tables), (0, 0));
    let mut peak = base;
    for round in 0..40 {
        churn(&iommu, [a, b, c], ioas, round, &mut peak);
        assert_back_to_baseline(&iommu, base, round);
    }
    // The counters do count: the rounds held two domains and many table nodes.
    assert!(peak.live_domains >= 2, "{peak:?}");
    assert!(peak.live_tables > 2 * 8, "{peak:?}");
    for id in ioas {
        iommu.destroy(id).unwrap();
    }
    assert_all_freed(&iommu);
}

/// Page-table nodes emptied by unmap are retired and, after `synchronize`, freed or (a
/// bounded few) kept for reuse by their page table, while the domain itself lives on (its root
/// stays). With the domain destroyed, everything is freed.
#[test]
fn table_nodes_emptied_by_unmap_are_freed_after_synchronize() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, DeviceInfo::default());
    let ioas = iommu.ioas_alloc().unwrap();
    let hwpt = iommu.hwpt_alloc(dev, ioas, HwptFlags::empty()).unwrap();
    iommu.device_attach(dev, hwpt).unwrap();
    iommu.synchronize().unwrap();
    let base = iommu.stats();
    assert_eq!(base.live_domains, 1, "{base:?}");
    assert!(base.live_tables >= 1, "{base:?}");
    for round in 0..20 {
        let bytes = map_spread(&iommu, ioas, round) + map_auto(&iommu, ioas);
        let grown = iommu.stats();
        assert!(
            grown.live_tables > base.live_tables + 8,
            "scattered maps allocated no table nodes: {grown:?}"
        );
        let first = h
            .translate(spread_first(round), PAGE, Access::Read)
            .expect("the domain mirrors the maps");
        assert_eq!(first.as_slice()[0].target, SPREAD_TARGET);
        assert_eq!(iommu.ioas_unmap(ioas, 0, u64::MAX), Ok(bytes));
        // The domain lives on; its page table keeps a few emptied nodes for its next maps
        // (so that a 4 KiB map after a 4 KiB unmap allocates nothing), and `synchronize`
        // frees those too: the nodes return exactly to the baseline.
        iommu.synchronize().unwrap();
        let now = iommu.stats();
        assert_eq!(now.live_domains, base.live_domains, "after round {round}");
        assert_eq!(
            now.live_tables, base.live_tables,
            "after round {round}: {now:?}, baseline {base:?}"
        );
    }
    iommu.device_detach(dev).unwrap();
    iommu.destroy(hwpt).unwrap();
    iommu.destroy(ioas).unwrap();
    assert_all_freed(&iommu);
}

/// The same churn while two other threads pin guards without pause (one on a device whose
/// group stays on a domain of its own, one on a device that is never attached): whatever was
/// retired before `synchronize()` is freed when it returns, whatever the readers do after.
#[test]
fn memory_returns_to_baseline_with_readers_pinning_concurrently() {
    let iommu = Iommu::new();
    let (a, _) = bind(&iommu, 1, DeviceInfo::default());
    let (b, _) = bind(&iommu, 1, DeviceInfo::default());
    let (c, _) = bind(&iommu, 2, DeviceInfo::default());
    let (steady, steady_h) = bind(&iommu, 3, DeviceInfo::default());
    let (_idle, idle_h) = bind(&iommu, 4, DeviceInfo::default());
    let ioas = [iommu.ioas_alloc().unwrap(), iommu.ioas_alloc().unwrap()];
    let own = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(own, Some(0x1000), 0x7_0000_0000, PAGE, Prot::RW)
        .unwrap();
    iommu.device_attach(steady, own).unwrap();
    iommu.synchronize().unwrap();
    let base = iommu.stats();
    assert_eq!(base.live_domains, 1, "{base:?}");

    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for h in [&steady_h, &idle_h] {
            let stop = &stop;
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = h.pin();
                    n += u64::from(g.translate(0x1000, PAGE, Access::Read).is_ok());
                }
                n
            });
        }
        let mut peak = base;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for round in 0..15 {
                churn(&iommu, [a, b, c], ioas, round, &mut peak);
                assert_back_to_baseline(&iommu, base, round);
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
        assert!(peak.live_tables > base.live_tables, "{peak:?}");
    });
    assert!(steady_h.translate(0x1000, PAGE, Access::Read).is_ok());
}

/// One 8-byte read at `iova` through a fresh guard at `pasid` (0: untagged): the target.
fn read_at(h: &viommu::Device, pasid: u32, iova: u64) -> Result<u64, FaultKind> {
    h.pin_pasid(pasid)
        .translate(iova, 8, Access::Read)
        .map(|t| t.as_slice()[0].target)
        .map_err(|f| f.kind)
}

/// G9 with nested domains, single-threaded (it runs under valgrind): rounds that allocate an
/// SMMUv3 and a VT-d nested HWPT, attach and replace them at the RID and at PASIDs (also
/// back to the parent), fill their IOTLBs, map and unmap stage 2 under them, invalidate, then
/// detach and destroy them. After each round `synchronize` brings `hwpts`, `live_domains` and
/// `live_tables` back to the baseline; with everything destroyed, everything is freed.
#[test]
fn nested_and_pasid_domains_return_to_baseline() {
    const TABLES_IPA: u64 = 0x4000_0000;
    const TABLES_TARGET: u64 = 0x80_0000_0000;
    const DATA_IPA: u64 = 0x1000_0000;
    const DATA_TARGET: u64 = 0x20_0000_0000;
    /// A stage-2 area mapped and unmapped under the nested domains every round.
    const EXTRA_IPA: u64 = 0x2000_0000;
    const EXTRA_TARGET: u64 = 0x30_0000_0000;
    let iommu = Iommu::new();
    let (dev, h) = bind(
        &iommu,
        1,
        DeviceInfo {
            pasid_bits: 4,
            ..DeviceInfo::default()
        },
    );
    let ioas = iommu.ioas_alloc().unwrap();
    let guest = Guest::new(TABLES_IPA, TABLES_TARGET, 0x10_0000);
    guest.map_tables(&iommu, ioas);
    iommu
        .ioas_map(ioas, Some(DATA_IPA), DATA_TARGET, 16 * PAGE, Prot::RW)
        .unwrap();
    let parent = iommu.hwpt_alloc(dev, ioas, HwptFlags::NEST_PARENT).unwrap();
    iommu.device_attach(dev, parent).unwrap();
    // The guest's tables live in its memory, not the library's: built once. CD `s` maps
    // IOVA 0x1000 to data page `s`; the VT-d table maps it to data page 8.
    let cds = guest.alloc_page();
    let mut arm: Vec<S1Table> = (0..4u64)
        .map(|s| {
            let mut t = S1Table::new(&guest, Fmt::Arm { t0sz: 16 });
            t.map(&guest, 0x1000, DATA_IPA + s * PAGE, PAGE, true);
            write_cd(&guest, cds, s, 16, t.root);
            t
        })
        .collect();
    let mut vt = S1Table::new(&guest, Fmt::Vtd { levels: 4 });
    vt.map(&guest, 0x1000, DATA_IPA + 8 * PAGE, PAGE, true);
    let data = |page: u64| DATA_TARGET + page * PAGE;
    iommu.synchronize().unwrap();
    let base = iommu.stats();
    let mut peak = base;
    for round in 0..25u64 {
        let smmu = iommu
            .hwpt_alloc_nested(
                dev,
                parent,
                Stage1::SmmuV3 {
                    ste: ste_s1(cds, 2, 2),
                },
                guest.table_memory(),
            )
            .unwrap();
        let vtd = iommu
            .hwpt_alloc_nested(
                dev,
                parent,
                Stage1::VtdS1 {
                    pgtbl_addr: vt.root,
                    addr_width: 48,
                },
                guest.table_memory(),
            )
            .unwrap();
        // RID: parent -> SMMUv3 (untagged is CD 0; unattached PASID 2 is CD 2).
        iommu.device_replace(dev, smmu).unwrap();
        assert_eq!(read_at(&h, 0, 0x1000), Ok(data(0)));
        assert_eq!(read_at(&h, 2, 0x1000), Ok(data(2)));
        // PASID 1: attach VT-d, replace to SMMUv3 (its CD 1).
        iommu.device_attach_pasid(dev, 1, vtd).unwrap();
        assert_eq!(read_at(&h, 1, 0x1000), Ok(data(8)));
        iommu.device_replace_pasid(dev, 1, smmu).unwrap();
        assert_eq!(read_at(&h, 1, 0x1000), Ok(data(1)));
        // Stage 2 grows under the nested domains; the guest maps into it and invalidates.
        let iova = 0x10_0000 + (round % 4) * PAGE;
        iommu
            .ioas_map(ioas, Some(EXTRA_IPA), EXTRA_TARGET, 4 * PAGE, Prot::RW)
            .unwrap();
        arm[0].map(&guest, iova, EXTRA_IPA + PAGE, PAGE, true);
        iommu
            .hwpt_invalidate(
                smmu,
                Invalidation::Range {
                    pasid: Some(0),
                    iova,
                    len: PAGE,
                },
            )
            .unwrap();
        assert_eq!(read_at(&h, 0, iova), Ok(EXTRA_TARGET + PAGE));
        let s = iommu.stats();
        peak.live_domains = peak.live_domains.max(s.live_domains);
        peak.live_tables = peak.live_tables.max(s.live_tables);
        peak.hwpts = peak.hwpts.max(s.hwpts);
        // The stage-2 unmap reaches the nested domain (and retires its table nodes); the
        // guest then takes its entry down and invalidates everything.
        assert_eq!(iommu.ioas_unmap(ioas, EXTRA_IPA, 4 * PAGE), Ok(4 * PAGE));
        assert_eq!(read_at(&h, 0, iova), Err(FaultKind::Unmapped));
        arm[0].unmap(&guest, iova, PAGE);
        iommu.hwpt_invalidate(smmu, Invalidation::All).unwrap();
        // RID to VT-d, PASID 1 back to the parent, PASID 2 onto the SMMUv3 HWPT (a domain of
        // its own now, CD 2), a config invalidation of the VT-d HWPT.
        iommu.device_replace(dev, vtd).unwrap();
        assert_eq!(read_at(&h, 0, 0x1000), Ok(data(8)));
        iommu.device_replace_pasid(dev, 1, parent).unwrap();
        assert_eq!(read_at(&h, 1, 0x1000), Err(FaultKind::Unmapped));
        assert_eq!(read_at(&h, 1, DATA_IPA), Ok(data(0)));
        iommu.device_attach_pasid(dev, 2, smmu).unwrap();
        assert_eq!(read_at(&h, 2, 0x1000), Ok(data(2)));
        iommu
            .hwpt_invalidate(vtd, Invalidation::Config { pasid: 0 })
            .unwrap();
        // Every second round the nested HWPTs are left at the PASIDs and the RID, and the
        // detaches come first; else the device goes back to the parent by replace.
        iommu.device_detach_pasid(dev, 1).unwrap();
        iommu.device_detach_pasid(dev, 2).unwrap();
        if round % 2 == 0 {
            iommu.device_detach(dev).unwrap();
            iommu.device_attach(dev, parent).unwrap();
        } else {
            iommu.device_replace(dev, parent).unwrap();
        }
        iommu.destroy(smmu).unwrap();
        iommu.destroy(vtd).unwrap();
        iommu.synchronize().unwrap();
        let now = iommu.stats();
        assert_eq!(
            (now.hwpts, now.live_domains, now.live_tables),
            (base.hwpts, base.live_domains, base.live_tables),
            "after round {round}: {now:?}, baseline {base:?}"
        );
    }
    // The counters do count: two nested domains and the extra stage-2 nodes.
    assert_eq!(peak.hwpts, base.hwpts + 2, "{peak:?}");
    assert_eq!(peak.live_domains, base.live_domains + 2, "{peak:?}");
    assert!(peak.live_tables > base.live_tables, "{peak:?}");
    iommu.device_detach(dev).unwrap();
    iommu.destroy(parent).unwrap();
    iommu.destroy(ioas).unwrap();
    assert_all_freed(&iommu);
    assert_eq!(iommu.stats().hwpts, 0);
}
