//! The grace-period protocol's own cases: overlapping guards on one thread against a fence,
//! the retired list against readers, and a batch of deferred unmaps completed by one wait.
#![cfg(viommu_loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use viommu::{FaultKind, Iommu};
use viommu_loom_tests::{
    assert_nothing_live, bind, device_on_page, ioas_with_page, model, page_target, target_of, IOVA,
    PAGE, TARGET,
};

const MAPPED_DATA: u64 = 0xd1a;
const REUSED_DATA: u64 = 0x5e1f;

/// The DMA of a guard that translated into the page: reads the guest memory (loom checks the
/// read against the writer's reuse) and checks the fence has not returned.
fn dma(memory: &UnsafeCell<u64>, fenced: &AtomicBool) {
    // SAFETY: a read; loom checks it for a happens-before edge with the writer's reuse.
    let data = memory.with(|p| unsafe { *p });
    assert_eq!(data, MAPPED_DATA, "DMA reads the mapped page");
    assert!(
        !fenced.load(Ordering::Acquire),
        "the fence returned while a guard that translated into the range lives"
    );
}

/// The writer's side of the unmap models: unmap the page, raise the flag, reuse the page (no
/// DMA may still be in flight to it).
fn unmap_then_reuse(
    iommu: &Iommu,
    ioas: viommu::ObjId,
    memory: &UnsafeCell<u64>,
    fenced: &AtomicBool,
) {
    assert_eq!(iommu.ioas_unmap(ioas, IOVA, PAGE).unwrap(), PAGE);
    fenced.store(true, Ordering::Release);
    // SAFETY: a write; loom checks it against the reader's DMA.
    memory.with_mut(|p| unsafe { *p = REUSED_DATA });
}

/// G5 and G12 with overlapping guards: the reader pins `a`, translates, pins `b` while `a`
/// lives, drops `a`, and translates through `b`. Each guard's epoch is its own: the fence must
/// wait for whichever of them might have translated into the page (and may skip a guard made
/// after it began). The writer unmaps, raises the flag and reuses the page.
#[test]
fn overlapping_guards_vs_unmap() {
    model("overlapping_guards_vs_unmap", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        let memory = Arc::new(UnsafeCell::new(MAPPED_DATA));
        let fenced = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, memory, fenced) = (dev.clone(), memory.clone(), fenced.clone());
            thread::spawn(move || {
                let a = dev.pin();
                if page_target(&a, IOVA).is_ok() {
                    dma(&memory, &fenced);
                }
                let b = dev.pin();
                drop(a);
                match page_target(&b, IOVA) {
                    Ok(target) => {
                        assert_eq!(target, TARGET);
                        dma(&memory, &fenced);
                    }
                    Err(kind) => assert_eq!(kind, FaultKind::Unmapped),
                }
                drop(b);
            })
        };
        unmap_then_reuse(&iommu, ioas, &memory, &fenced);
        reader.join().unwrap();
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// G13 and G9: the retired list against readers. The reader holds a guard on the group's
/// auto domain (its only HWPT on `ioas1`) and overlaps a second guard; the writer replaces the
/// group to `ioas2` (the auto HWPT and its domain are retired, not freed) and runs `reclaim`
/// (which frees only what no guard can see) concurrently. A guard that saw the old domain
/// keeps translating through it, whole, until it drops; the old domain is freed only after.
#[test]
fn retired_domain_vs_overlapping_guards() {
    model("retired_domain_vs_overlapping_guards", || {
        let iommu = Iommu::new();
        let (dev_id, dev, _ioas1) = device_on_page(&iommu, IOVA, TARGET);
        let ioas2 = ioas_with_page(&iommu, IOVA, TARGET + PAGE);

        let reader = {
            let dev = dev.clone();
            thread::spawn(move || {
                let a = dev.pin();
                let first = page_target(&a, IOVA).unwrap();
                let b = dev.pin();
                // G1: one guard, one domain, however long it lives.
                assert_eq!(page_target(&a, IOVA).unwrap(), first);
                drop(a);
                let second = page_target(&b, IOVA).unwrap();
                assert!(second == TARGET || second == TARGET + PAGE, "{second:#x}");
                assert_eq!(page_target(&b, IOVA).unwrap(), second);
            })
        };
        iommu.device_replace(dev_id, ioas2).unwrap();
        iommu.reclaim();
        reader.join().unwrap();
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// Batched fences: two deferred unmaps, one wait on the second completes both (G5 for both
/// pages). The reader translates either page and reads its memory.
#[test]
fn batched_unmap_completions() {
    model("batched_unmap_completions", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        iommu
            .ioas_map(
                ioas,
                Some(IOVA + PAGE),
                TARGET + PAGE,
                PAGE,
                viommu::Prot::RW,
            )
            .unwrap();
        let memory = Arc::new([UnsafeCell::new(MAPPED_DATA), UnsafeCell::new(MAPPED_DATA)]);
        let fenced = Arc::new(AtomicBool::new(false));

        let reader = {
            let (dev, memory, fenced) = (dev.clone(), memory.clone(), fenced.clone());
            thread::spawn(move || {
                let guard = dev.pin();
                for (i, iova) in [IOVA, IOVA + PAGE].into_iter().enumerate() {
                    match page_target(&guard, iova) {
                        Ok(_) => dma(&memory[i], &fenced),
                        Err(kind) => assert_eq!(kind, FaultKind::Unmapped),
                    }
                }
            })
        };
        let first = iommu.ioas_unmap_deferred(ioas, IOVA, PAGE).unwrap();
        let second = iommu.ioas_unmap_deferred(ioas, IOVA + PAGE, PAGE).unwrap();
        assert_eq!(second.wait().unwrap(), PAGE);
        assert!(first.is_complete(), "a later wait completes the batch");
        fenced.store(true, Ordering::Release);
        for cell in memory.iter() {
            // SAFETY: a write; loom checks it against the reader's DMA.
            cell.with_mut(|p| unsafe { *p = REUSED_DATA });
        }
        reader.join().unwrap();
        assert_eq!(first.wait().unwrap(), PAGE);
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// A guard made by a thread's first pin of an `Iommu` (registration) against a concurrent
/// fence: the fence's snapshot of participants may miss the new one, which must then see the
/// unmap.
#[test]
fn first_pin_vs_unmap() {
    model("first_pin_vs_unmap", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        let (_dev2_id, _dev2) = bind(&iommu, 2);
        let memory = Arc::new(UnsafeCell::new(MAPPED_DATA));
        let fenced = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dev, memory, fenced) = (dev.clone(), memory.clone(), fenced.clone());
            thread::spawn(move || {
                let guard = dev.pin();
                match page_target(&guard, IOVA) {
                    Ok(_) => dma(&memory, &fenced),
                    Err(kind) => assert_eq!(kind, FaultKind::Unmapped),
                }
            })
        };
        unmap_then_reuse(&iommu, ioas, &memory, &fenced);
        reader.join().unwrap();
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// The per-thread domain cache against a replace: a guard made after `device_replace`
/// returned (the reader saw the flag) translates through the new domain, even when the
/// thread's cache holds a snapshot taken while the replace was under way.
#[test]
fn cached_snapshot_vs_replace() {
    model("cached_snapshot_vs_replace", || {
        let iommu = Iommu::new();
        let (dev_id, dev, _ioas1) = device_on_page(&iommu, IOVA, TARGET);
        let ioas2 = ioas_with_page(&iommu, IOVA, TARGET + PAGE);
        let replaced = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dev, replaced) = (dev.clone(), replaced.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    let after = replaced.load(Ordering::Acquire);
                    let target = target_of(&dev, IOVA).unwrap();
                    if after {
                        assert_eq!(target, TARGET + PAGE, "a guard made after the replace");
                    } else {
                        assert!(target == TARGET || target == TARGET + PAGE, "{target:#x}");
                    }
                }
            })
        };
        iommu.device_replace(dev_id, ioas2).unwrap();
        replaced.store(true, Ordering::Release);
        reader.join().unwrap();
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// Spins (yielding to loom) until `flag` is set.
fn spin_until(flag: &AtomicBool) {
    while !flag.load(Ordering::Acquire) {
        thread::yield_now();
    }
}

/// The scan set's models: the reader registers and goes idle; the writer's `synchronize`
/// delists it (every idle participant is delisted under loom), then the writer unmaps and
/// reuses the page. The reader pins again, translates and reads the page: after the delist
/// (`after_delist`: the relist path against the unmap's fence) or racing it (a pin against
/// its participant's removal: either the delisting fence sees the pinned slot and keeps it
/// listed, or the pin sees itself delisted and lists itself again before its loads). Either
/// way the unmap's fence waits for the guard or the guard sees the unmap.
fn delist_model(name: &'static str, after_delist: bool) {
    model(name, move || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        let memory = Arc::new(UnsafeCell::new(MAPPED_DATA));
        let fenced = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let delisted = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dev, memory, fenced) = (dev.clone(), memory.clone(), fenced.clone());
            let (idle, delisted) = (idle.clone(), delisted.clone());
            thread::spawn(move || {
                drop(dev.pin());
                idle.store(true, Ordering::Release);
                if after_delist {
                    spin_until(&delisted);
                }
                let guard = dev.pin();
                match page_target(&guard, IOVA) {
                    Ok(_) => dma(&memory, &fenced),
                    Err(kind) => assert_eq!(kind, FaultKind::Unmapped),
                }
            })
        };
        spin_until(&idle);
        iommu.synchronize().unwrap();
        delisted.store(true, Ordering::Release);
        unmap_then_reuse(&iommu, ioas, &memory, &fenced);
        reader.join().unwrap();
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}

/// The relist path against a fence: the reader pins again only after the delist.
#[test]
fn delisted_pin_vs_unmap() {
    delist_model("delisted_pin_vs_unmap", true);
}

/// A pin racing its participant's removal from the scan set.
#[test]
fn pin_vs_delist() {
    delist_model("pin_vs_delist", false);
}

/// G12 for a deferred unmap's wait: it waits for the guards alive when the unmap took its
/// ticket, never for one made after. The reader holds a guard from before the unmap (the wait
/// must wait for it), pins a second guard after the unmap, lets the writer start waiting,
/// drops the first, and holds the second until the wait has returned. A wait that also
/// waited for the newer guard would never return (loom reports the livelock).
#[test]
fn deferred_wait_vs_newer_guard() {
    model("deferred_wait_vs_newer_guard", || {
        let iommu = Iommu::new();
        let (dev_id, dev, ioas) = device_on_page(&iommu, IOVA, TARGET);
        let old_pinned = Arc::new(AtomicBool::new(false));
        let unmapped = Arc::new(AtomicBool::new(false));
        let new_pinned = Arc::new(AtomicBool::new(false));
        let waited = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dev, old_pinned, unmapped, new_pinned, waited) = (
                dev.clone(),
                old_pinned.clone(),
                unmapped.clone(),
                new_pinned.clone(),
                waited.clone(),
            );
            thread::spawn(move || {
                let older = dev.pin();
                old_pinned.store(true, Ordering::Release);
                spin_until(&unmapped);
                let newer = dev.pin();
                assert_eq!(page_target(&newer, IOVA), Err(FaultKind::Unmapped));
                new_pinned.store(true, Ordering::Release);
                // Dropped while the writer may already wait for it.
                drop(older);
                spin_until(&waited);
                drop(newer);
            })
        };
        spin_until(&old_pinned);
        let completion = iommu.ioas_unmap_deferred(ioas, IOVA, PAGE).unwrap();
        unmapped.store(true, Ordering::Release);
        spin_until(&new_pinned);
        assert_eq!(completion.wait().unwrap(), PAGE);
        waited.store(true, Ordering::Release);
        reader.join().unwrap();
        iommu.device_detach(dev_id).unwrap();
        assert_nothing_live(&iommu);
    });
}
