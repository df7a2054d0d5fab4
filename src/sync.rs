//! The one place that names concurrency primitives.
//!
//! Everything else in the crate imports atomics, `Arc`, `Mutex`, the epoch collector and the
//! active-domain cell from here, so that one cfg switches the whole crate to
//! [loom](https://docs.rs/loom): build with `RUSTFLAGS="--cfg viommu_loom --cfg crossbeam_loom"`
//! (`scripts/loom.sh` does it). The cfg is crate-prefixed so that a workspace-wide `RUSTFLAGS`
//! meant for another crate's loom switch does not flip this one.
//!
//! # The active-domain cell
//!
//! In production a group's active domain lives in an [`arc_swap::ArcSwap`]: readers take a
//! debt-slot `load()` (thread-local writes only), the control plane `swap`s in a new domain
//! and gets the old `Arc` back. loom cannot see inside arc-swap (its debt lists use atomics loom
//! does not model), and a mutex stand-in would hide exactly the race we want checked. So under
//! `viommu_loom` the cell is a lock-free stand-in loom *can* model: a crossbeam-epoch
//! `Atomic<Arc<T>>`. Readers load it under their epoch pin; `swap` exchanges the pointer and
//! defers the old box (and so the cell's `Arc`) past a grace period. Both cells give the same
//! contract: a reader's snapshot stays valid and unchanged for as long as its `DmaGuard`
//! lives, and a `swap` is one atomic publish. What the stand-in cannot check is arc-swap's
//! own internals, which its authors test with Miri and stress runs (`docs/loom.md`).

#[cfg(not(viommu_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};
#[cfg(not(viommu_loom))]
pub(crate) use std::thread_local;

#[cfg(viommu_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};
#[cfg(viommu_loom)]
pub(crate) use loom::thread_local;

pub(crate) use crossbeam_epoch::{Collector, Guard as EpochGuard, LocalHandle};

/// Locks a mutex, ignoring poisoning: control-plane code never panics while holding a lock
/// (every fallible step is checked before the first mutation), so a poisoned lock can only
/// come from a panic elsewhere, and the state it guards is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One step of a wait loop: spin briefly, then yield, then sleep in growing steps so that a
/// fence waiting for a long-held guard does not steal a core from the DMA thread holding it.
/// Under loom every step is a `yield_now`, which loom needs to explore a spin loop.
pub(crate) fn backoff(step: &mut u32) {
    *step = step.saturating_add(1);
    #[cfg(viommu_loom)]
    {
        loom::thread::yield_now();
    }
    #[cfg(not(viommu_loom))]
    {
        if *step <= 6 {
            for _ in 0..(1u32 << *step) {
                std::hint::spin_loop();
            }
        } else if *step <= 64 {
            std::thread::yield_now();
        } else {
            let micros = u64::from((*step - 64).min(10)) * 50;
            std::thread::sleep(std::time::Duration::from_micros(micros));
        }
    }
}

#[cfg(not(viommu_loom))]
mod cell {
    use super::EpochGuard;
    use std::sync::Arc;

    /// A group's active-domain cell (production: arc-swap).
    pub(crate) struct DomainCell<T>(arc_swap::ArcSwap<T>);

    /// A reader's snapshot of the cell; valid while it lives.
    pub(crate) type DomainRef<T> = arc_swap::Guard<Arc<T>>;

    impl<T> DomainCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            DomainCell(arc_swap::ArcSwap::new(value))
        }

        /// One snapshot. The caller holds `_pin` for as long as it keeps the snapshot (the
        /// loom stand-in needs it; arc-swap's debt slot protects the value by itself).
        #[inline]
        pub(crate) fn load(&self, _pin: &EpochGuard) -> DomainRef<T> {
            self.0.load()
        }

        /// One atomic publish; returns the value it replaced.
        pub(crate) fn swap(&self, new: Arc<T>, _pin: &EpochGuard) -> Arc<T> {
            self.0.swap(new)
        }
    }
}

#[cfg(viommu_loom)]
mod cell {
    use super::{Arc, EpochGuard, Ordering};
    use crossbeam_epoch::{Atomic, Owned};

    /// A group's active-domain cell (loom: an epoch-protected atomic pointer).
    pub(crate) struct DomainCell<T> {
        ptr: Atomic<Arc<T>>,
    }

    /// A reader's snapshot: a pointer into the cell's current box, valid while the epoch pin
    /// that was passed to `load` lives (the `DmaGuard` holds both, and drops this first).
    pub(crate) struct DomainRef<T>(*const T);

    impl<T> std::ops::Deref for DomainRef<T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the pointer came from `load` under an epoch pin that the owner of this
            // snapshot keeps alive for at least as long as the snapshot; `swap` frees the box
            // only after a grace period, so the `Arc` it holds (and its `T`) is still alive.
            unsafe { &*self.0 }
        }
    }

    impl<T> DomainCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            DomainCell {
                ptr: Atomic::new(value),
            }
        }

        pub(crate) fn load(&self, pin: &EpochGuard) -> DomainRef<T> {
            // ORDERING: Acquire pairs with the AcqRel swap in `swap`, so the reader sees the
            // new domain fully built (populated before publish, G7).
            let shared = self.ptr.load(Ordering::Acquire, pin);
            // SAFETY: the cell is never null (built with a value, swapped only for values),
            // and the box is not freed before `pin` is released.
            let arc: &Arc<T> = unsafe { shared.deref() };
            DomainRef(Arc::as_ptr(arc))
        }

        pub(crate) fn swap(&self, new: Arc<T>, pin: &EpochGuard) -> Arc<T> {
            // ORDERING: AcqRel: Release publishes the new domain's contents to readers'
            // Acquire loads in `load`; Acquire orders our use of the old box after its
            // publication.
            let old = self.ptr.swap(Owned::new(new), Ordering::AcqRel, pin);
            // SAFETY: `old` was the cell's value, so it is a live box; readers may still hold
            // pointers into it, hence the deferred destroy below rather than a drop here.
            let out = unsafe { old.deref() }.clone();
            // SAFETY: `old` is unlinked from the cell by the swap above; only readers pinned
            // before the swap can see it, and the collector frees it after they unpin.
            unsafe { pin.defer_destroy(old) };
            // Into the global queue now, so a `synchronize` from any thread waits for it.
            pin.flush();
            out
        }
    }

    impl<T> Drop for DomainCell<T> {
        fn drop(&mut self) {
            // SAFETY: `&mut self`: no reader can be loading from this cell any more (every
            // reader holds the Arc that owns the cell), so the current box can go now.
            unsafe {
                let guard = crossbeam_epoch::unprotected();
                drop(self.ptr.load(Ordering::Relaxed, guard).into_owned());
            }
        }
    }
}

pub(crate) use cell::{DomainCell, DomainRef};
