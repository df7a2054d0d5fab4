//! The counting global allocator the tests and the perf suite share (tests include it with
//! `#[path = "support/counting_alloc.rs"] mod counting_alloc;`, viommu-perf as its `alloc`
//! module). Including the module installs it as the `#[global_allocator]`.
//!
//! It wraps `System` and keeps, for the whole process, the bytes currently allocated and the
//! most that reached since the last [`reset_peak`]; and per thread, how many allocations (and
//! reallocations) and frees that thread made, and the bytes it allocated and has not freed
//! (with its own peak, [`thread_reset_peak`]). The process numbers show leaks (memory that
//! does not come back after a million replace cycles); the thread numbers show whether a
//! translation allocates on its hot path, whether a DMA thread ever frees (G13), and how much
//! a control call holds while it runs.
//!
//! The process counters are plain relaxed atomics: statistics read after the threads that
//! changed them were joined (the join orders everything), never synchronization. The thread
//! counters are const-initialized thread-local `Cell`s with no destructor: touching them never
//! allocates or recurses, and during thread teardown (`try_with` fails) a count is skipped.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The allocator, installed by this module.
pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations (and reallocations) made by this thread.
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Frees made by this thread (a reallocation counts as an allocation only).
    static THREAD_FREES: Cell<u64> = const { Cell::new(0) };
    /// Bytes this thread has allocated and not freed (negative if it freed others' memory).
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
    /// The most `THREAD_LIVE` reached since `thread_reset_peak`.
    static THREAD_PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Accounts a change of `old` bytes into `new` bytes (an allocation: `old == 0`; a free:
/// `new == 0`, `count_free`).
fn account(old: usize, new: usize, count_free: bool) {
    if new >= old {
        let now = LIVE.fetch_add(new - old, Relaxed) + (new - old);
        PEAK.fetch_max(now, Relaxed);
    } else {
        LIVE.fetch_sub(old - new, Relaxed);
    }
    if count_free {
        let _ = THREAD_FREES.try_with(|c| c.set(c.get() + 1));
    } else {
        let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    }
    let _ = THREAD_LIVE.try_with(|l| {
        let now = l.get() + new as isize - old as isize;
        l.set(now);
        let _ = THREAD_PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the bookkeeping only touches atomics and
// const-initialized thread-local `Cell`s, none of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(0, layout.size(), false);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(0, layout.size(), false);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (hence by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        account(layout.size(), 0, true);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(layout.size(), new_size, false);
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

/// Allocations (and reallocations) made so far by the calling thread.
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.with(Cell::get)
}

/// Frees made so far by the calling thread.
pub fn thread_frees() -> u64 {
    THREAD_FREES.with(Cell::get)
}

/// Allocations and frees made so far by the calling thread.
pub fn thread_heap_ops() -> u64 {
    thread_allocs() + thread_frees()
}

/// Bytes the calling thread has allocated and not freed.
pub fn thread_live_bytes() -> isize {
    THREAD_LIVE.with(Cell::get)
}

/// Starts a peak measurement on the calling thread; returns its live bytes now, the base that
/// [`thread_peak_since`] measures from.
pub fn thread_reset_peak() -> isize {
    let live = thread_live_bytes();
    THREAD_PEAK.with(|p| p.set(live));
    live
}

/// The most the calling thread held above `start` (from [`thread_reset_peak`]) since then.
pub fn thread_peak_since(start: isize) -> isize {
    THREAD_PEAK.with(Cell::get) - start
}
