//! Nested domains: a nested walk against a stage-2 unmap of the page its table lives in, and
//! `hwpt_invalidate` against a nested translation (the IOTLB's coherence rules, SPEC
//! "Nesting").
//!
//! The guest's stage 1 is a VT-d first-stage table in one page whose entry 0 points back at
//! the page itself, so a 4-level walk of IOVA `0x1000` reads entry 0 three times (levels 3
//! down to 1) and entry 1 (the leaf) once: four table reads, each an IPA translated through
//! stage 2, and then the stage-2 translation of the output.
#![cfg(viommu_loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use viommu::{FaultKind, HwptFlags, Invalidation, Iommu, ObjId, Prot, Stage1};
use viommu_loom_tests::{assert_nothing_live, bind, model, page_target, TablePage, IOVA, PAGE};

/// The IPA of the guest's table page, and its stage-2 target.
const TABLE_IPA: u64 = 0x2000;
const TABLE_TARGET: u64 = 0x20_0000;
/// Two data pages: IPAs and stage-2 targets.
const DATA_A: u64 = 0x3000;
const TARGET_A: u64 = 0x30_0000;
const DATA_B: u64 = 0x4000;
const TARGET_B: u64 = 0x40_0000;

/// A VT-d present + writable entry naming `addr`.
fn entry(addr: u64) -> u64 {
    addr | 0b11
}

/// A device on a nested VT-d HWPT whose table page maps `IOVA` to `DATA_A`; the parent's IOAS
/// maps the table page (read-only) and both data pages. Returns `(dev_id, dev, ioas, parent,
/// nested, table)`.
fn nested_world(
    iommu: &Iommu,
) -> (
    ObjId,
    viommu::Device,
    ObjId,
    ObjId,
    ObjId,
    std::sync::Arc<TablePage>,
) {
    let (dev_id, dev) = bind(iommu, 1);
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(TABLE_IPA), TABLE_TARGET, PAGE, Prot::READ)
        .unwrap();
    for (ipa, target) in [(DATA_A, TARGET_A), (DATA_B, TARGET_B)] {
        iommu
            .ioas_map(ioas, Some(ipa), target, PAGE, Prot::RW)
            .unwrap();
    }
    let parent = iommu
        .hwpt_alloc(dev_id, ioas, HwptFlags::NEST_PARENT)
        .unwrap();
    let table = std::sync::Arc::new(TablePage::new(
        TABLE_TARGET,
        [entry(TABLE_IPA), entry(DATA_A)],
    ));
    let s1 = Stage1::VtdS1 {
        pgtbl_addr: TABLE_IPA,
        addr_width: 48,
    };
    let nested = iommu
        .hwpt_alloc_nested(dev_id, parent, s1, table.clone())
        .unwrap();
    iommu.device_attach(dev_id, nested).unwrap();
    (dev_id, dev, ioas, parent, nested, table)
}

fn teardown(iommu: &Iommu, dev_id: ObjId, parent: ObjId, nested: ObjId) {
    iommu.device_detach(dev_id).unwrap();
    iommu.destroy(nested).unwrap();
    iommu.destroy(parent).unwrap();
    assert_nothing_live(iommu);
}

/// G5 for a table page: the host unmaps the page the guest's stage-1 table lives in, then
/// (after `ioas_unmap` returns) raises a flag and reuses the page. A reader translates twice:
///
/// * a walk never reads the table page after its reuse (loom checks the tracked read in
///   `TablePage::read_u64` against `reuse`), and a guard that translated through it is gone
///   before `ioas_unmap` returns;
/// * a guard made after the reader saw the flag faults `Unmapped`, even though the reader's
///   IOTLB may hold the translation from its first guard: the unmap made it stale.
#[test]
fn nested_walk_vs_stage2_unmap_of_table_page() {
    model("nested_walk_vs_stage2_unmap_of_table_page", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas, parent, nested, table) = nested_world(&iommu);
        let unmapped = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, unmapped) = (dev.clone(), unmapped.clone());
            thread::spawn(move || {
                {
                    let guard = dev.pin();
                    match page_target(&guard, IOVA) {
                        Ok(target) => {
                            assert_eq!(target, TARGET_A);
                            assert!(
                                !unmapped.load(Ordering::Acquire),
                                "ioas_unmap returned while a guard that walked the table lives"
                            );
                        }
                        Err(kind) => assert_eq!(kind, FaultKind::Unmapped),
                    }
                }
                let after = unmapped.load(Ordering::Acquire);
                let guard = dev.pin();
                let r = page_target(&guard, IOVA);
                if after {
                    assert_eq!(
                        r,
                        Err(FaultKind::Unmapped),
                        "a guard made after the table page's unmap used a stale translation"
                    );
                } else {
                    assert!(r == Ok(TARGET_A) || r == Err(FaultKind::Unmapped), "{r:x?}");
                }
            })
        };
        iommu.ioas_unmap(ioas, TABLE_IPA, PAGE).unwrap();
        unmapped.store(true, Ordering::Release);
        table.reuse();
        reader.join().unwrap();
        teardown(&iommu, dev_id, parent, nested);
    });
}

/// The coherence rule of `hwpt_invalidate`: the guest points its leaf at another page,
/// invalidates, raises a flag when the call returns and reuses the old page. A reader
/// translates twice:
///
/// * a guard that got the old page accesses it (loom checks the access against the reuse)
///   and never sees the flag: (b) no guard that might have used the old entry is alive
///   after the call;
/// * a guard made after the reader saw the flag gets the new page, even though its IOTLB may
///   hold the old entry: (a) no translation uses an entry the invalidation covers.
#[test]
fn hwpt_invalidate_vs_nested_translate() {
    model("hwpt_invalidate_vs_nested_translate", || {
        let iommu = Iommu::new();
        let (dev_id, dev, _ioas, parent, nested, table) = nested_world(&iommu);
        let old_page = Arc::new(UnsafeCell::new(0u64));
        let invalidated = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, old_page, invalidated) = (dev.clone(), old_page.clone(), invalidated.clone());
            thread::spawn(move || {
                {
                    let guard = dev.pin();
                    let r = page_target(&guard, IOVA);
                    if r == Ok(TARGET_A) {
                        // The DMA itself.
                        // SAFETY: a read; loom checks it against the guest's reuse.
                        old_page.with(|p| unsafe { *p });
                        assert!(
                            !invalidated.load(Ordering::Acquire),
                            "hwpt_invalidate returned while a guard that used the old entry lives"
                        );
                    } else {
                        assert_eq!(r, Ok(TARGET_B));
                    }
                }
                let after = invalidated.load(Ordering::Acquire);
                let guard = dev.pin();
                let r = page_target(&guard, IOVA);
                if after {
                    assert_eq!(
                        r,
                        Ok(TARGET_B),
                        "a stale IOTLB entry outlived the invalidation"
                    );
                } else {
                    assert!(r == Ok(TARGET_A) || r == Ok(TARGET_B), "{r:x?}");
                }
            })
        };
        table.set(1, entry(DATA_B));
        let inv = Invalidation::Range {
            pasid: None,
            iova: IOVA,
            len: PAGE,
        };
        iommu.hwpt_invalidate(nested, inv).unwrap();
        invalidated.store(true, Ordering::Release);
        // SAFETY: a write; loom checks it against the reader's DMA.
        old_page.with_mut(|p| unsafe { *p = 1 });
        reader.join().unwrap();
        teardown(&iommu, dev_id, parent, nested);
    });
}
