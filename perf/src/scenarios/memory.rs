//! Live heap after many replace cycles and map/unmap cycles.
//!
//! The counting global allocator ([`crate::alloc`]) gives the process's live heap bytes. For
//! each implementation: build it, warm it (a few replaces, translations, a quiesce), start
//! one reader translating throughout (so reclamation has to wait for it), and read the live
//! count. Then make the planned replace calls (alternating domains), pause the reader,
//! quiesce (viommu: `synchronize`, which frees everything retired before it) and read the
//! count again; then the same for 4 KiB map + unmap pairs. A leak shows as growth; viommu's
//! target is to be back within 1 MiB of where it started.
//!
//! The reader is paused, not stopped, for each reading, so its thread's own bookkeeping (its
//! epoch registration, its stack of thread-locals) stays the same between readings.
//! The replace loop stops early at the configured time cap (the detach + attach flavour waits
//! for a grace period on each detach); the report gives the count actually made.

use super::{Case, CaseResult, MemoryResult, Storm};
use crate::alloc::{live_bytes, peak_bytes, reset_peak};
use crate::args::Config;
use crate::baselines::{Translator, PAGE, SCRATCH_IOVA, SCRATCH_TARGET};
use crate::stats::Rng;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use viommu::Access;

/// Reader requests (the low two bits of the control word).
const RUN: u64 = 0;
const PAUSE: u64 = 1;
const EXIT: u64 = 2;

/// Runs the memory check of `case.kind`.
pub fn run<T: Translator>(t: &Arc<T>, cfg: &Config, case: &Case) -> CaseResult {
    let mut res = CaseResult::new(case, Storm::Replace);
    let layout = crate::baselines::Layout { pages: cfg.pages };
    for i in 0..100 {
        let _ = t.replace((i + 1) % 2);
    }
    for slot in 0..64 {
        let (iova, target) = (SCRATCH_IOVA + slot * PAGE, SCRATCH_TARGET + slot * PAGE);
        let _ = t.map(0, iova, target, PAGE);
        let _ = t.unmap(0, iova, PAGE);
    }

    // The controller's request: `generation * 4 + RUN | PAUSE | EXIT`.
    let ctrl = AtomicU64::new(RUN);
    // The generation of the last pause the reader has parked for.
    let parked = AtomicU64::new(0);
    let ops = AtomicU64::new(0);
    let faults = AtomicU64::new(0);
    let mut m = MemoryResult {
        replaces: 0,
        replaces_planned: cfg.memory_replaces,
        replace_seconds: 0.0,
        map_unmaps: 0,
        live_before: 0,
        live_after_replaces: 0,
        live_after_maps: 0,
        peak: 0,
        reader_ops: 0,
        reader_faults: 0,
    };
    let mut errors = 0u64;
    let mut first_error = None;

    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng::new(99);
            loop {
                // Acquire: pairs with the controller's Release stores of `ctrl`.
                let c = ctrl.load(Ordering::Acquire);
                match c & 3 {
                    RUN => {
                        let iova = layout.random_iova(&mut rng);
                        if black_box(t.translate(iova, 512, Access::Read)).is_err() {
                            faults.fetch_add(1, Ordering::Relaxed);
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    PAUSE => {
                        // Release: the controller's Acquire load of `parked` then knows no
                        // translation of this reader is in flight.
                        parked.store(c >> 2, Ordering::Release);
                        std::hint::spin_loop();
                    }
                    _ => break,
                }
            }
        });

        // Pauses the reader and waits until it is parked (no translation in flight).
        let mut generation = 0u64;
        let mut pause = || {
            generation += 1;
            ctrl.store(generation << 2 | PAUSE, Ordering::Release);
            while parked.load(Ordering::Acquire) != generation {
                std::hint::spin_loop();
            }
        };
        let resume = || ctrl.store(RUN, Ordering::Release);

        // Let the reader register and warm up, then take the baseline.
        while ops.load(Ordering::Relaxed) < 10_000 {
            std::hint::spin_loop();
        }
        pause();
        t.quiesce();
        m.live_before = live_bytes() as u64;
        reset_peak();
        resume();

        let start = Instant::now();
        let cap = start + cfg.memory_cap;
        while m.replaces < cfg.memory_replaces {
            if let Err(e) = t.replace(((m.replaces + 1) % 2) as usize) {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            m.replaces += 1;
            if m.replaces % 256 == 0 && Instant::now() >= cap {
                break;
            }
        }
        if m.replaces % 2 == 1 {
            let _ = t.replace(0);
        }
        m.replace_seconds = start.elapsed().as_secs_f64();
        pause();
        t.quiesce();
        m.live_after_replaces = live_bytes() as u64;
        resume();

        let cap = Instant::now() + cfg.memory_cap;
        while m.map_unmaps < cfg.memory_maps {
            let slot = m.map_unmaps % 64;
            let (iova, target) = (SCRATCH_IOVA + slot * PAGE, SCRATCH_TARGET + slot * PAGE);
            for r in [t.map(0, iova, target, PAGE), t.unmap(0, iova, PAGE)] {
                if let Err(e) = r {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
            m.map_unmaps += 1;
            if m.map_unmaps % 256 == 0 && Instant::now() >= cap {
                break;
            }
        }
        pause();
        t.quiesce();
        m.live_after_maps = live_bytes() as u64;
        m.peak = peak_bytes() as u64;
        ctrl.store(EXIT, Ordering::Release);
    });

    m.reader_ops = ops.load(Ordering::Relaxed);
    m.reader_faults = faults.load(Ordering::Relaxed);
    res.faults = m.reader_faults;
    res.reader_ops = m.reader_ops;
    res.writer_ops = m.replaces;
    res.writer_errors = errors;
    res.first_writer_error = first_error;
    res.seconds = m.replace_seconds;
    if m.replaces < m.replaces_planned {
        res.note = Some(format!(
            "time cap of {:.0}s reached after {} of {} replaces",
            cfg.memory_cap.as_secs_f64(),
            m.replaces,
            m.replaces_planned
        ));
    }
    res.memory = Some(m);
    res
}
