//! A counting global allocator: live bytes, peak bytes, and allocations and frees per thread.
//!
//! It wraps `System` and keeps three numbers: the bytes currently allocated by the whole
//! process, the highest value that reached since the last [`reset_peak`], and, per thread, how
//! many allocations (and reallocations) and frees that thread made. The first two show leaks
//! (memory that does not come back after a million replace cycles); the others show whether
//! a translation allocates on its hot path, and whether a DMA thread ever frees (G13).
//!
//! The counters are plain relaxed atomics: they are statistics read after the threads that
//! changed them were joined (the join orders everything), never synchronization.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The allocator; install with `#[global_allocator]`.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread. `const` initialization: no lazy allocation of its own.
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Frees made by this thread (a reallocation counts as an allocation only).
    static THREAD_FREES: Cell<u64> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(now, Relaxed);
    // `try_with`: during thread teardown the slot may be gone; the count is then skipped.
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Relaxed);
}

fn freed(bytes: usize) {
    shrank(bytes);
    // `try_with`: see `grew`.
    let _ = THREAD_FREES.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the bookkeeping only touches atomics and a
// const-initialized thread-local `Cell`, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (hence by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        freed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Bytes currently allocated by the process.
pub fn live_bytes() -> usize {
    LIVE.load(Relaxed)
}

/// The highest live byte count since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Relaxed)
}

/// Starts a new peak measurement from the current live count.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// Allocations made so far by the calling thread.
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.with(|c| c.get())
}

/// Frees made so far by the calling thread.
pub fn thread_frees() -> u64 {
    THREAD_FREES.with(|c| c.get())
}
