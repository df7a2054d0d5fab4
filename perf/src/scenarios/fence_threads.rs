//! `fence-threads`: what registered threads cost the control plane's fences.
//!
//! `n` threads (64 KiB stacks) each pin the one device once, which registers them with the
//! context, and then sleep on a barrier: idle participants, as the I/O threads of an emulator
//! that did some DMA once and now wait. In the pinning row, 2 of the `n` (1 when `n` is 1)
//! instead pin and translate in a loop until the row ends. The main thread then times
//! `synchronize` (after a warm-up of 1000 fences, which lets the fences find the idle
//! threads), one call at a time, for half the row, and 4 KiB `ioas_map` + `ioas_unmap` pairs
//! on the device's IOAS (each unmap fences) for the other half.
//!
//! What it shows: whether a fence's cost grows with the threads that ever pinned or only
//! with the threads that are pinning now. `examples/fence_threads.rs` is the minimal form.

use super::{Case, CaseResult, Storm, Variant};
use crate::args::Config;
use crate::baselines::two_domains::new_iommu;
use crate::baselines::{PAGE, SCRATCH_IOVA, SCRATCH_TARGET};
use crate::stats::{nanos, new_hist, record, Dist};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;
use viommu::{Access, DeviceInfo, GroupId, Prot};

/// Registered threads, one row each (and one pinning row each).
pub const COUNTS: [usize; 4] = [1, 16, 256, 1024];

/// Fences before the measured ones.
const WARMUP_FENCES: u32 = 1000;

/// Where the device's one mapped page sits, and what it maps to.
const DMA_IOVA: u64 = 0x10_0000;
const DMA_TARGET: u64 = 0x8000_0000;

/// Runs one row: `case.readers` registered threads, idle or (`Variant::Pinning`) with 2 of
/// them pinning in a loop.
pub fn run(cfg: &Config, case: &Case) -> CaseResult {
    let n = case.readers.max(1);
    let pinning = if case.variant == Variant::Pinning {
        n.min(2)
    } else {
        0
    };
    let mut res = CaseResult::new(case, Storm::None);
    res.readers = pinning;
    res.registered_threads = n;

    let iommu = new_iommu();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(0), DeviceInfo::default())
        .expect("device_bind");
    let ioas = iommu.ioas_alloc().expect("ioas_alloc");
    iommu
        .ioas_map(ioas, Some(DMA_IOVA), DMA_TARGET, PAGE, Prot::RW)
        .expect("ioas_map");
    iommu.device_attach(dev_id, ioas).expect("device_attach");

    let registered = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(Barrier::new(n + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (dev, registered, done, stop) =
                (dev.clone(), registered.clone(), done.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("registered-{i}"))
                .stack_size(64 << 10)
                .spawn(move || {
                    drop(dev.pin());
                    registered.wait();
                    let mut ops = 0u64;
                    if i < pinning {
                        // Relaxed: the flag only ends the loop.
                        while !stop.load(Ordering::Relaxed) {
                            let g = dev.pin();
                            black_box(g.translate_chunk(DMA_IOVA, 512, Access::Read).is_ok());
                            drop(g);
                            ops += 1;
                        }
                    }
                    done.wait();
                    ops
                })
                .expect("spawn a registered thread")
        })
        .collect();
    registered.wait();

    for _ in 0..WARMUP_FENCES {
        iommu.synchronize().expect("synchronize");
    }
    let half = cfg.scaled / 2;
    let mut sync = new_hist();
    let start = Instant::now();
    let until = start + half;
    let mut now = start;
    while now < until {
        let t0 = Instant::now();
        iommu.synchronize().expect("synchronize");
        now = Instant::now();
        record(&mut sync, nanos(now - t0));
    }
    let mut pair = new_hist();
    let mut pairs = 0u64;
    let mut errors = 0u64;
    let pairs_start = now;
    let until = pairs_start + half;
    while now < until {
        let t0 = Instant::now();
        let m = iommu.ioas_map(ioas, Some(SCRATCH_IOVA), SCRATCH_TARGET, PAGE, Prot::RW);
        let u = iommu.ioas_unmap(ioas, SCRATCH_IOVA, PAGE);
        now = Instant::now();
        record(&mut pair, nanos(now - t0));
        pairs += 1;
        errors += u64::from(m.is_err() || u.is_err());
    }
    let pair_secs = (now - pairs_start).as_secs_f64();

    // Relaxed: the barrier orders the rest.
    stop.store(true, Ordering::Relaxed);
    done.wait();
    let reader_ops: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("registered thread panicked"))
        .sum();

    res.seconds = (now - start).as_secs_f64();
    res.reader_ops = reader_ops;
    res.mops = reader_ops as f64 / res.seconds.max(1e-9) / 1e6;
    res.mops_wall = res.mops;
    res.writer_ops = pairs;
    res.writer_ops_per_s = pairs as f64 / pair_secs.max(1e-9);
    res.writer_errors = errors;
    if errors > 0 {
        res.first_writer_error = Some("ioas_map or ioas_unmap failed".into());
    }
    for (name, h) in [("synchronize", &sync), ("pair", &pair)] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    res
}
