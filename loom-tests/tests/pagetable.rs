//! The page table's publish and retire protocols, through the public API.
#![cfg(viommu_loom)]

use loom::thread;
use viommu::{FaultKind, Iommu, Prot};
use viommu_loom_tests::{
    assert_live, assert_nothing_live, device_on_page, model, page_target, settled, PAGE,
};

/// With 16-bit IOVAs under loom, a level-1 entry covers 16 KiB: pages 0x0000..0x3fff share one
/// leaf table, 0x4000..0x7fff the next.
const SPAN: u64 = 4 * PAGE;

/// A two-page map (0x3000 into an existing leaf table, 0x4000 into a new one) races a reader
/// that translates both pages and their mapped neighbour 0x2000. Each page is seen whole
/// (exactly its target, one full chunk) or not at all (`Unmapped`); the neighbour is never
/// disturbed. The reader's walk into the new table is checked by loom: its entries must have
/// been initialized before the reader can see the link.
#[test]
fn map_vs_translate() {
    const NEIGHBOUR: u64 = 0x2000;
    const FIRST: u64 = 0x3000;
    const SECOND: u64 = 0x4000;
    const NEIGHBOUR_TARGET: u64 = 0x10_0000;
    const TARGET: u64 = 0x20_0000;
    model("map_vs_translate", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, NEIGHBOUR, NEIGHBOUR_TARGET);

        let reader = {
            let dev = dev.clone();
            thread::spawn(move || {
                let guard = dev.pin();
                for (iova, target) in [(SECOND, TARGET + PAGE), (FIRST, TARGET)] {
                    let r = page_target(&guard, iova);
                    assert!(
                        r == Ok(target) || r == Err(FaultKind::Unmapped),
                        "page {iova:#x} is whole or absent: {r:x?}"
                    );
                }
                assert_eq!(page_target(&guard, NEIGHBOUR), Ok(NEIGHBOUR_TARGET));
            })
        };
        iommu
            .ioas_map(ioas, Some(FIRST), TARGET, 2 * PAGE, Prot::RW)
            .unwrap();
        reader.join().unwrap();

        let guard = dev.pin();
        assert_eq!(page_target(&guard, FIRST), Ok(TARGET));
        assert_eq!(page_target(&guard, SECOND), Ok(TARGET + PAGE));
        drop(guard);
        let s = settled(&iommu);
        assert_eq!(s.live_tables, 3, "root and two leaf tables: {s:?}");
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// A reader holds a guard and translates the only mapping under a leaf table while the writer
/// unmaps it, which empties that table and retires it. The reader sees the target or
/// `Unmapped`; if it reached the mapping (so it walked through the table), the table is not
/// freed while its guard lives: the live page-table count (decremented when a retired table is
/// freed) still includes it. After a grace period the table is freed.
#[test]
fn retire_vs_walk() {
    const IOVA: u64 = SPAN; // alone in the second leaf table
    const TARGET: u64 = 0x30_0000;
    model("retire_vs_walk", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        assert_eq!(iommu.stats().live_tables, 2);

        let reader = {
            let (dev, iommu) = (dev.clone(), iommu.clone());
            thread::spawn(move || {
                let guard = dev.pin();
                let first = page_target(&guard, IOVA);
                assert!(
                    first == Ok(TARGET) || first == Err(FaultKind::Unmapped),
                    "{first:x?}"
                );
                if first.is_ok() {
                    let s = iommu.stats();
                    assert_eq!(s.live_tables, 2, "a table the guard walked is freed: {s:?}");
                }
                let again = page_target(&guard, IOVA);
                assert!(
                    again == Ok(TARGET) || again == Err(FaultKind::Unmapped),
                    "{again:x?}"
                );
            })
        };
        assert_eq!(iommu.ioas_unmap(ioas, IOVA, PAGE).unwrap(), PAGE);
        reader.join().unwrap();

        assert_live(&iommu, (1, 1), "only the root is left");
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}
