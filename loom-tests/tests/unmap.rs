//! The unmap fence (G5) against DMA translation.
#![cfg(viommu_loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use viommu::{FaultKind, Iommu};
use viommu_loom_tests::{
    assert_after_fence, assert_live, assert_nothing_live, device_on_page, model, page_target, IOVA,
    PAGE, TARGET,
};

/// What the guest page holds while it is mapped, and after the guest reuses it.
const MAPPED_DATA: u64 = 0xd1a;
const REUSED_DATA: u64 = 0x5e1f;

/// G5: the writer unmaps a page, then (after `ioas_unmap` returns) raises a flag and reuses
/// the page's memory for something else. The reader pins and translates:
///
/// * a guard that translated into the page reads the page's memory: the read never races the
///   reuse (loom checks the `UnsafeCell` accesses for a happens-before edge) and sees the
///   mapped data, and the flag is still down while the guard lives;
/// * a guard made after the reader saw the flag (Acquire, pairing with the writer's Release)
///   faults `Unmapped`.
#[test]
fn unmap_vs_translate() {
    model("unmap_vs_translate", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        let memory = Arc::new(UnsafeCell::new(MAPPED_DATA));
        let unmapped = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, memory, unmapped) = (dev.clone(), memory.clone(), unmapped.clone());
            thread::spawn(move || {
                {
                    let guard = dev.pin();
                    match page_target(&guard, IOVA) {
                        Ok(target) => {
                            assert_eq!(target, TARGET);
                            // The DMA itself: the guard keeps the page ours while it lives.
                            // SAFETY: a read; loom checks it against the writer's reuse.
                            let data = memory.with(|p| unsafe { *p });
                            assert_eq!(data, MAPPED_DATA, "DMA reads the mapped page");
                            assert!(
                                !unmapped.load(Ordering::Acquire),
                                "ioas_unmap returned while a guard that translated into the range lives"
                            );
                        }
                        Err(kind) => assert_eq!(kind, FaultKind::Unmapped),
                    }
                }
                let after = unmapped.load(Ordering::Acquire);
                let guard = dev.pin();
                let r = page_target(&guard, IOVA);
                assert_after_fence(r, after, TARGET, FaultKind::Unmapped, "unmap");
            })
        };
        assert_eq!(iommu.ioas_unmap(ioas, IOVA, PAGE).unwrap(), PAGE);
        unmapped.store(true, Ordering::Release);
        // The guest reuses the page: no DMA may still be in flight to it.
        // SAFETY: a write; loom checks it against the reader's DMA.
        memory.with_mut(|p| unsafe { *p = REUSED_DATA });
        reader.join().unwrap();

        assert_live(&iommu, (1, 1), "the leaf table is freed");
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}
