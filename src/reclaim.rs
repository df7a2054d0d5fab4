//! Grace periods and deferred frees: one crossbeam-epoch collector per [`crate::Iommu`].
//!
//! Every `DmaGuard` holds one epoch pin of its `Iommu`'s collector for its whole life. That
//! single pin does two jobs:
//!
//! * **reclamation**: page-table nodes emptied by an unmap are unlinked with one atomic store
//!   and handed to the collector, which frees them once every pin that could have seen them is
//!   gone;
//! * **fences**: [`Reclaim::synchronize`] waits until every pin alive at the call has been
//!   released. `ioas_unmap` (G5), `device_detach` (G6) and `Iommu::synchronize` (G9) are built
//!   on it.
//!
//! # Why a private collector and not crossbeam's global one
//!
//! The global collector is shared with everything else in the process that uses
//! crossbeam-epoch: rayon's and crossbeam-deque's work-stealing deques pin it on every steal,
//! and any other library may hold a long pin. With the global collector our unmap fence would
//! wait for those unrelated pins, and our garbage would queue behind theirs. A collector of our
//! own makes a fence wait for DMA guards of this `Iommu` only, and a thread that holds a guard
//! of one `Iommu` can still unmap in another without deadlock (the `EDEADLK` check is per
//! collector too). The price is a per-thread `LocalHandle` for each collector: it is cached in
//! a small thread-local list, found by comparing one pointer (the common case is one `Iommu` in
//! the process: a one-element list), registered once per thread and collector.
//!
//! # How `synchronize` waits
//!
//! crossbeam-epoch has no "wait for a grace period" call, but it runs deferred functions in
//! FIFO order once the global epoch has advanced twice past them, which needs every pinned
//! participant to have caught up, i.e. every pin older than the deferral to be released. So
//! `synchronize` defers a sentinel that raises a flag, flushes it to the global queue, and
//! repeatedly pins, flushes (which tries to advance the epoch and runs expired bags) and backs
//! off until the flag is up. Every retirement is flushed to the global queue as soon as it is
//! made, so the sentinel sits behind everything retired before the call.

use crate::sync::{backoff, Arc, AtomicBool, AtomicUsize, Collector, EpochGuard};
use crate::sync::{LocalHandle, Ordering};

/// How many collectors' handles a thread keeps cached; the oldest is dropped past this (a
/// dropped handle is re-registered on next use; a guard alive on it keeps it valid).
const HANDLE_CACHE: usize = 8;

// loom's `thread_local!` does not take a `const { }` initializer, so neither do we.
#[allow(clippy::missing_const_for_thread_local)]
mod handles {
    use crate::sync::{thread_local, LocalHandle};
    use std::cell::RefCell;
    thread_local! {
        pub(super) static HANDLES: RefCell<Vec<LocalHandle>> = RefCell::new(Vec::new());
    }
}
use handles::HANDLES;

/// Live-object counters, for [`crate::Stats`] and the leak tests.
#[derive(Default)]
pub(crate) struct Counters {
    /// Paging domains allocated and not yet freed.
    pub(crate) domains: AtomicUsize,
    /// Page-table nodes (roots included) allocated and not yet freed.
    pub(crate) tables: AtomicUsize,
}

/// One `Iommu`'s collector and counters.
pub(crate) struct Reclaim {
    collector: Collector,
    pub(crate) counters: Arc<Counters>,
}

impl Reclaim {
    pub(crate) fn new() -> Reclaim {
        Reclaim {
            collector: Collector::new(),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Runs `f` with this thread's handle for our collector, registering one on first use.
    #[inline]
    fn with_handle<R>(&self, f: impl FnOnce(&LocalHandle) -> R) -> R {
        let mut f = Some(f);
        let fast = HANDLES.try_with(|cell| {
            if let Ok(handles) = cell.try_borrow() {
                if let Some(h) = handles.iter().find(|h| *h.collector() == self.collector) {
                    return Some((f.take().expect("called once"))(h));
                }
            }
            None
        });
        match fast {
            Ok(Some(r)) => r,
            _ => self.with_new_handle(f.take().expect("called once")),
        }
    }

    #[cold]
    fn with_new_handle<R>(&self, f: impl FnOnce(&LocalHandle) -> R) -> R {
        let handle = self.collector.register();
        let r = f(&handle);
        // Cache it for next time if the thread-local is still there (not during thread exit).
        let _ = HANDLES.try_with(|cell| {
            if let Ok(mut handles) = cell.try_borrow_mut() {
                if handles.len() >= HANDLE_CACHE {
                    handles.remove(0);
                }
                handles.push(handle);
            }
        });
        r
    }

    /// Pins the calling thread in this collector.
    #[inline]
    pub(crate) fn pin(&self) -> EpochGuard {
        self.with_handle(|h| h.pin())
    }

    /// True if the calling thread holds a pin of this collector (a `DmaGuard`, outside the
    /// crate's own short internal pins).
    pub(crate) fn is_pinned(&self) -> bool {
        self.with_handle(|h| h.is_pinned())
    }

    /// Waits until every pin of this collector that was alive at the call has been released,
    /// and everything retired before the call has been freed.
    ///
    /// Must not be called while the calling thread is pinned in this collector (it would wait
    /// for itself); the public callers check that first and return `EDEADLK`.
    pub(crate) fn synchronize(&self) {
        let done = Arc::new(AtomicBool::new(false));
        {
            let pin = self.pin();
            let flag = done.clone();
            // ORDERING: Release pairs with the Acquire load in the wait loop below: seeing the
            // flag means the sentinel (and every bag before it) has run.
            pin.defer(move || flag.store(true, Ordering::Release));
            pin.flush();
        }
        let mut step = 0;
        // ORDERING: Acquire pairs with the sentinel's Release store above.
        while !done.load(Ordering::Acquire) {
            {
                let pin = self.pin();
                pin.flush();
            }
            backoff(&mut step);
        }
    }

    /// `synchronize`, then one more grace period: a thread that popped an earlier bag may
    /// still be running its frees when the sentinel runs elsewhere, but it is pinned while it
    /// does, so the second grace period waits for it. After this, everything retired before
    /// the call has been freed, not only handed to the free path (G9).
    pub(crate) fn synchronize_and_drain(&self) {
        self.synchronize();
        self.synchronize();
    }
}

impl Drop for Reclaim {
    /// Runs what is still queued, so an `Iommu` that goes away leaves nothing behind in the
    /// collector (a thread's cached handle would otherwise keep it queued until that thread
    /// exits). No guard can be alive here: every guard borrows a `Device`, which holds us.
    fn drop(&mut self) {
        if !self.is_pinned() {
            self.synchronize_and_drain();
        }
    }
}
