//! The one place that names concurrency primitives.
//!
//! Everything else in the crate imports atomics, `Arc`, locks, the membarrier call and the
//! active-domain cell from here, so that one cfg switches the whole crate to
//! [loom](https://docs.rs/loom): build with `RUSTFLAGS="--cfg viommu_loom"`
//! (`scripts/loom.sh` does it). The cfg is crate-prefixed so that a workspace-wide `RUSTFLAGS`
//! meant for another crate's loom switch does not flip this one.
//!
//! # The active-domain cell
//!
//! In production a group's active domain lives in an [`arc_swap::ArcSwap`]: the control plane
//! `swap`s in a new domain and gets the old `Arc` back; a reader that misses its per-thread
//! snapshot cache `load`s it once and keeps the address, protected from then on by its
//! guard's grace-period pin rather than by arc-swap's debt slot ([`crate::grace`]). loom cannot
//! see inside arc-swap (its debt lists use atomics loom does not model), and a mutex stand-in
//! would hide exactly the race we want checked. So under `viommu_loom` the cell is a lock-free
//! stand-in loom *can* model: an `AtomicPtr` that owns one `Arc`. Both cells give the same
//! contract: a `swap` is one atomic publish, and the value a reader loaded stays valid while
//! its pin lives because the swapped-out `Arc` is retired, not dropped. What the stand-in
//! cannot check is arc-swap's own internals, which its authors test with Miri and stress runs
//! (`docs/loom.md`).
//!
//! # membarrier
//!
//! The grace-period protocol's asymmetric fence is Linux's `membarrier(2)` (through rustix);
//! without it (other systems, a kernel or sandbox that refuses it, loom, or
//! `VIOMMU_NO_MEMBARRIER` set) readers pay a full fence per pin instead ([`crate::grace`]).
//! Registration is verified with a real barrier; a barrier that fails after that aborts the
//! process (see `membarrier`: no fallback is safe once readers rely on it).

#[cfg(not(viommu_loom))]
pub(crate) use std::sync::{
    atomic::{
        compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    },
    Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(not(viommu_loom))]
pub(crate) use std::thread_local;

#[cfg(viommu_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(viommu_loom)]
pub(crate) use loom::thread_local;

/// A cell whose accesses loom checks for data races; the page table uses one per node to
/// catch a walk of a freed node ([`crate::pagetable`]).
#[cfg(viommu_loom)]
pub(crate) use loom::cell::UnsafeCell as TrackedUnsafeCell;

/// loom has no compiler fence; under loom readers never use the asymmetric protocol (see
/// [`crate::grace`]), so this is never reached with a meaning.
#[cfg(viommu_loom)]
pub(crate) fn compiler_fence(_: Ordering) {}

/// The value of an atomic pointer the caller owns exclusively (`&mut`, in a `Drop`): no
/// ordering, and under loom no scheduling point (an atomic load in a destructor that runs in
/// a different order from one execution to the next would make a model nondeterministic).
#[cfg(not(viommu_loom))]
pub(crate) fn ptr_mut<T>(p: &mut AtomicPtr<T>) -> *mut T {
    *p.get_mut()
}

/// See the other build's `ptr_mut`.
#[cfg(viommu_loom)]
pub(crate) fn ptr_mut<T>(p: &mut AtomicPtr<T>) -> *mut T {
    p.with_mut(|v| *v)
}

/// Locks a mutex, ignoring poisoning: control-plane code never panics while holding a lock
/// (every fallible step is checked before the first mutation), so a poisoned lock can only
/// come from a panic elsewhere, and the state it guards is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Read-locks an `RwLock`, ignoring poisoning (as [`lock`]).
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Write-locks an `RwLock`, ignoring poisoning (as [`lock`]).
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The heavy side of the asymmetric fence: makes every thread of the process that is running
/// now execute a full memory barrier (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`), so that
/// the readers' side can be a compiler fence. Called only by a `Grace` whose readers were told
/// to rely on it, that is after [`register_membarrier`] succeeded.
///
/// It cannot fail then: the kernel refuses the command only when it is unknown or the process
/// is not registered, and registration was verified with a real call of this command. If it
/// fails anyway, no fallback is safe: readers already pinned with a compiler fence only, so
/// a fence that went on would read their slots without the barrier that makes the read
/// meaningful and could free memory a guard still reads; switching the `Grace` to the
/// symmetric protocol helps only pins made after the switch, and the fence could not tell
/// those from earlier ones. Returning an error would hand the same decision to a caller that
/// has no better one, and unwinding would run destructors (retired memory among them) on a
/// broken protocol. So the process aborts, with a message naming the cause.
#[cfg(all(target_os = "linux", not(viommu_loom)))]
pub(crate) fn membarrier() {
    use rustix::thread::{membarrier, MembarrierCommand};
    if let Err(e) = membarrier(MembarrierCommand::PrivateExpedited) {
        eprintln!(
            "viommu: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after a verified \
             registration ({e}); DMA guards rely on it for memory safety, aborting"
        );
        std::process::abort();
    }
}

/// Registers the process for private expedited membarrier (once; idempotent) and verifies the
/// registration with one real barrier. True if both succeeded, in which case [`membarrier`]
/// works from now on; false (the symmetric protocol is used) if the kernel refused either, or
/// `VIOMMU_NO_MEMBARRIER` is set.
#[cfg(all(target_os = "linux", not(viommu_loom)))]
pub(crate) fn register_membarrier() -> bool {
    use rustix::thread::{membarrier, MembarrierCommand};
    use std::sync::OnceLock;
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        if std::env::var_os("VIOMMU_NO_MEMBARRIER").is_some() {
            return false;
        }
        membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
            && membarrier(MembarrierCommand::PrivateExpedited).is_ok()
    })
}

/// Without Linux's membarrier (other systems, and loom, which cannot model it) readers use
/// the symmetric protocol.
#[cfg(not(all(target_os = "linux", not(viommu_loom))))]
pub(crate) fn register_membarrier() -> bool {
    false
}

/// Never called: without membarrier no `Grace` is asymmetric.
#[cfg(not(all(target_os = "linux", not(viommu_loom))))]
pub(crate) fn membarrier() {
    unreachable!("membarrier without a registration")
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
    use std::sync::Arc;

    use std::sync::atomic::{AtomicPtr, Ordering};

    /// A group's active-domain cell (production: arc-swap, which owns the value, plus the
    /// value's address for readers).
    ///
    /// Readers never take arc-swap's own protection (its debt slot is two locked
    /// instructions and a thread-local lookup, and dropping its guard may free the value on
    /// the reader's thread): they hold a grace-period pin instead, and read the address that
    /// `swap` stores after publishing, one `Acquire` load. That is also the shape of the loom
    /// stand-in below, so the models check the reader's load as it ships.
    pub(crate) struct DomainCell<T> {
        owner: arc_swap::ArcSwap<T>,
        ptr: AtomicPtr<T>,
    }

    impl<T> DomainCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            let ptr = AtomicPtr::new(Arc::as_ptr(&value) as *mut T);
            DomainCell {
                owner: arc_swap::ArcSwap::new(value),
                ptr,
            }
        }

        /// The current value's address. The caller must hold a grace-period pin (a
        /// `DmaGuard`'s slot) taken before this call: the control plane keeps a value it
        /// swapped out alive until every such pin is gone ([`crate::grace`]).
        #[inline(always)]
        pub(crate) fn load_ptr(&self) -> *const T {
            // ORDERING: [CELL] Acquire pairs with the Release store in `swap`: the reader sees the
            // new value fully built (populated before publish, G7).
            self.ptr.load(Ordering::Acquire)
        }

        /// One atomic publish; returns the value it replaced. Publishes of one cell are
        /// serialized by the caller (the object-table lock), so the address store follows
        /// the swap in the same order for every publish.
        pub(crate) fn swap(&self, new: Arc<T>) -> Arc<T> {
            let addr = Arc::as_ptr(&new) as *mut T;
            let old = self.owner.swap(new);
            // ORDERING: [CELL] Release pairs with the Acquire load in `load_ptr` (and
            // the group's generation store that follows is Release too, so a reader that sees the
            // new generation loads this address or a newer one).
            self.ptr.store(addr, Ordering::Release);
            old
        }
    }
}

#[cfg(viommu_loom)]
mod cell {
    use super::{Arc, AtomicPtr, Ordering};

    /// A group's active-domain cell (loom: an atomic pointer that owns one `Arc`). loom cannot
    /// see inside arc-swap; this stand-in has the same contract as the production cell: one
    /// atomic publish, and a reader's pointer stays valid under its grace-period pin because
    /// the control plane keeps the swapped-out `Arc` until the pin is gone.
    pub(crate) struct DomainCell<T> {
        ptr: AtomicPtr<T>,
    }

    impl<T> DomainCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            DomainCell {
                ptr: AtomicPtr::new(Arc::into_raw(value) as *mut T),
            }
        }

        pub(crate) fn load_ptr(&self) -> *const T {
            // ORDERING: [CELL] Acquire pairs with the AcqRel swap in `swap`: the reader sees the
            // new domain fully built (populated before publish, G7).
            self.ptr.load(Ordering::Acquire)
        }

        pub(crate) fn swap(&self, new: Arc<T>) -> Arc<T> {
            // ORDERING: [CELL] AcqRel: Release publishes the new domain's contents to `load_ptr`'s
            // Acquire; Acquire orders our use of the old value after its own publication.
            let old = self
                .ptr
                .swap(Arc::into_raw(new) as *mut T, Ordering::AcqRel);
            // SAFETY: `old` came from `Arc::into_raw` (in `new` or an earlier `swap`) and the
            // cell owned that reference; ownership passes to the caller.
            unsafe { Arc::from_raw(old) }
        }
    }

    impl<T> Drop for DomainCell<T> {
        fn drop(&mut self) {
            // `&mut self`: the latest value, with no ordering needed.
            let ptr = self.ptr.with_mut(|p| *p);
            // SAFETY: the cell owns one reference to its current value; `&mut self` means no
            // reader loads from it any more.
            drop(unsafe { Arc::from_raw(ptr) });
        }
    }
}

pub(crate) use cell::DomainCell;
