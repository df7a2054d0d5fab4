//! What the criterion benches share (`mod common;` in each): the viommu set-up of the perf
//! suite, the background-thread harness and the criterion configuration.

// Each bench uses part of this module.
#![allow(dead_code)]

use criterion::Criterion;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "../../perf/src/baselines/two_domains.rs"]
mod two_domains;
// Not every bench uses it (`nested` has a set-up of its own).
#[allow(unused_imports)]
pub use two_domains::TwoDomains;

/// 4 KiB.
pub const PAGE: u64 = 4096;
/// 2 MiB.
pub const MIB2: u64 = 2 << 20;

/// The target of a translation's first chunk, 0 for a fault or an empty translation.
pub fn first_target(t: Result<viommu::Translation<'_>, viommu::Fault>) -> u64 {
    t.ok().and_then(|mut t| t.next()).map_or(0, |c| c.target)
}

/// The target of a chunk, 0 for a fault.
pub fn chunk_target(c: Result<viommu::Chunk, viommu::Fault>) -> u64 {
    c.map_or(0, |c| c.target)
}

/// Runs `body` while a second thread runs `background` in a loop.
pub fn with_background<R>(mut background: impl FnMut() + Send, body: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Relaxed: the flag only ends the loop.
            while !stop.load(Ordering::Relaxed) {
                background();
            }
        });
        let r = body();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// The benches' criterion settings: short warm-up and measurement, `sample_size` samples.
pub fn config(sample_size: usize) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(sample_size)
}
