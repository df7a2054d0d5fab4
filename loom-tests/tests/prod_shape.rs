//! The page table in its production shape: emptied tables kept linked for the next map, and
//! unlinked tables pooled for reuse. The other models run with neither (every unmap prunes at
//! once and every retired table is freed, so the live-table count shows a premature free);
//! these set the production values at the start of each model
//! (`viommu::loom_page_table_shape`, which holds them for the calling thread, where loom runs
//! all of the model's threads).
#![cfg(viommu_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use viommu::loom_page_table_shape as shape;
use viommu::{FaultKind, Iommu, Prot};
use viommu_loom_tests::{
    assert_after_fence, assert_nothing_live, device_on_page, model, page_target, settled, PAGE,
};

/// With 16-bit IOVAs under loom, a level-1 entry covers 16 KiB (one leaf table).
const SPAN: u64 = 4 * PAGE;
/// Alone in the second leaf table.
const X: u64 = SPAN;
const X_TARGET: u64 = 0x30_0000;

/// Emptied tables kept (production), no pool: a kept table is reused in place.
fn kept_shape() {
    shape::set(shape::PRODUCTION_EMPTY_LIMIT, 0);
}

/// A reader pins and translates `X` while the writer unmaps it, which empties its leaf table
/// and, in the production shape, keeps the table linked; then the writer maps `X + PAGE` into
/// that kept table. The reader sees each page whole or absent; a guard made after the unmap
/// returned faults `X` (the kept table's entry is cleared, not just its table kept); after
/// everything the kept table is the one in use (two live tables, no retire, no new table).
#[test]
fn kept_table_vs_walk() {
    const Y: u64 = X + PAGE;
    const Y_TARGET: u64 = 0x40_0000;
    model("kept_table_vs_walk", || {
        kept_shape();
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, X, X_TARGET);
        let unmapped = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, unmapped) = (dev.clone(), unmapped.clone());
            thread::spawn(move || {
                {
                    let guard = dev.pin();
                    let r = page_target(&guard, X);
                    assert!(r == Ok(X_TARGET) || r == Err(FaultKind::Unmapped), "{r:x?}");
                    let r = page_target(&guard, Y);
                    assert!(r == Ok(Y_TARGET) || r == Err(FaultKind::Unmapped), "{r:x?}");
                }
                let after = unmapped.load(Ordering::Acquire);
                let r = page_target(&dev.pin(), X);
                assert_after_fence(r, after, X_TARGET, FaultKind::Unmapped, "unmap");
            })
        };
        assert_eq!(iommu.ioas_unmap(ioas, X, PAGE).unwrap(), PAGE);
        unmapped.store(true, Ordering::Release);
        assert_eq!(
            iommu.stats().live_tables,
            2,
            "the emptied table stays linked"
        );
        iommu
            .ioas_map(ioas, Some(Y), Y_TARGET, PAGE, Prot::RW)
            .unwrap();
        reader.join().unwrap();

        let guard = dev.pin();
        assert_eq!(page_target(&guard, X), Err(FaultKind::Unmapped));
        assert_eq!(page_target(&guard, Y), Ok(Y_TARGET));
        drop(guard);
        assert_eq!(iommu.stats().live_tables, 2, "the kept table is reused");
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// The writer unmaps `X`, leaving its leaf table linked and empty, then maps a 16 KiB range
/// aligned for a level-1 leaf over it: the leaf cannot replace the kept table's link, so the
/// map goes inside the table, one level down. A reader translating two of its pages sees each
/// whole (at its own offset of the target) or absent, never the old `X` target after a guard
/// made once the map returned.
#[test]
fn large_leaf_over_kept_table_vs_walk() {
    const BIG_TARGET: u64 = 0x80_0000; // 16 KiB aligned: a level-1 leaf would fit
    model("large_leaf_over_kept_table_vs_walk", || {
        kept_shape();
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, X, X_TARGET);
        assert_eq!(iommu.ioas_unmap(ioas, X, PAGE).unwrap(), PAGE);
        let mapped = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, mapped) = (dev.clone(), mapped.clone());
            thread::spawn(move || {
                let after = mapped.load(Ordering::Acquire);
                let guard = dev.pin();
                for off in [0, 3 * PAGE] {
                    let r = page_target(&guard, X + off);
                    if after {
                        assert_eq!(r, Ok(BIG_TARGET + off), "a guard made after the map");
                    } else {
                        assert!(
                            r == Ok(BIG_TARGET + off) || r == Err(FaultKind::Unmapped),
                            "page {off:#x}: {r:x?}"
                        );
                    }
                }
            })
        };
        iommu
            .ioas_map(ioas, Some(X), BIG_TARGET, SPAN, Prot::RW)
            .unwrap();
        mapped.store(true, Ordering::Release);
        reader.join().unwrap();

        let s = settled(&iommu);
        assert_eq!(s.live_tables, 2, "the map went into the kept table: {s:?}");
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// Pool reuse (production pool, every emptied table pruned at once): the writer unmaps `X`
/// with a deferred fence (its leaf table is unlinked and retired, and goes to the pool only
/// after its grace period), then at once maps `Z`, in another leaf table at the same index,
/// which needs a new table. A reader that pinned before the unmap and walked into `X`'s old
/// table sees `X`'s target or nothing, never `Z`'s: a pool that handed the retired table back
/// before its grace period would let the map write `Z`'s leaf into the table the reader is
/// still walking.
#[test]
fn pool_reuse_vs_walk() {
    const Z: u64 = X + SPAN; // the third leaf table, same index as X
    const Z_TARGET: u64 = 0x50_0000;
    model("pool_reuse_vs_walk", || {
        shape::set(0, shape::PRODUCTION_POOL_TABLES);
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, X, X_TARGET);

        let reader = {
            let dev = dev.clone();
            thread::spawn(move || {
                let guard = dev.pin();
                for _ in 0..2 {
                    let r = page_target(&guard, X);
                    assert!(r == Ok(X_TARGET) || r == Err(FaultKind::Unmapped), "{r:x?}");
                }
            })
        };
        let done = iommu.ioas_unmap_deferred(ioas, X, PAGE).unwrap();
        iommu
            .ioas_map(ioas, Some(Z), Z_TARGET, PAGE, Prot::RW)
            .unwrap();
        reader.join().unwrap();
        assert_eq!(done.wait().unwrap(), PAGE);

        let guard = dev.pin();
        assert_eq!(page_target(&guard, X), Err(FaultKind::Unmapped));
        assert_eq!(page_target(&guard, Z), Ok(Z_TARGET));
        drop(guard);
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}
