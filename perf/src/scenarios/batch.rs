//! 4 KiB map + unmap pairs with the unmap fences batched, one DMA reader beside.
//!
//! A virtio-iommu front end completes MAP and UNMAP requests from a queue. viommu's
//! `ioas_unmap` waits a grace period per call (G5); `ioas_unmap_deferred` returns a completion
//! instead, and waiting on the last completion of a batch settles every earlier one. This
//! scenario measures the pairs per second a front end gets, with one device attached and a
//! DMA reader thread translating through it all along (so every fence has a live reader to
//! wait for):
//!
//! - `viommu-batch32`: 32 pairs of `ioas_map` + `ioas_unmap_deferred`, then a wait on the last
//!   completion ([`Translator::map_unmap_batch`]); the first completion of the batch is checked
//!   to be complete too (the `errors` column counts those that were not);
//! - `viommu-batch1`: the same with a wait after every pair;
//! - `viommu-unbatched`: `ioas_map` + `ioas_unmap`, the fence inside the call;
//! - `rwlock-btree`: the same map + remove pairs under its write lock, its reader beside.
//!
//! Pairs cycle over 64 scratch slots, outside the reader's pages; a batch's 32 pairs use 32
//! distinct slots. One more page of the same leaf table stays mapped throughout (the anchor),
//! as a guest's other mappings would be: without it, every unmap of viommu would empty the
//! leaf table and its parents and every map allocate them again. `viommu-batch32-cold` runs
//! without the anchor, to show that cost (`mapunmap-4k` has no anchor either). The time of each batch is recorded per pair (`pair`); the unbatched rows
//! also time each call (`map`, `unmap`).

use super::{Case, CaseResult, Storm, Variant};
use crate::args::Config;
use crate::baselines::{Layout, Translator, PAGE, REQ_LEN, SCRATCH_IOVA, SCRATCH_TARGET};
use crate::stats::{nanos, new_hist, record, Dist, Rng};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use viommu::Access;

/// Scratch slots cycled through.
const SLOTS: u64 = 64;
/// A page mapped for the whole run in the scratch slots' leaf table, as a guest's other
/// mappings would be, so that unmapping a slot never empties the table.
const ANCHOR_IOVA: u64 = SCRATCH_IOVA + 100 * PAGE;
const ANCHOR_TARGET: u64 = SCRATCH_TARGET + 100 * PAGE;

/// Runs `case` (its variant says how viommu batches).
pub fn run<T: Translator>(t: &Arc<T>, cfg: &Config, layout: &Layout, case: &Case) -> CaseResult {
    let mut res = CaseResult::new(case, Storm::MapUnmap);
    let batch = case.variant.batch();
    let per_call = batch.unwrap_or(1);
    let mut pair = new_hist();
    let mut map = new_hist();
    let mut unmap = new_hist();
    let stop = AtomicBool::new(false);
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + cfg.control;
    let mut slots = vec![(0u64, 0u64); per_call];
    let anchor = case.variant != Variant::Batch32Cold;
    if anchor {
        if let Err(e) = t.map(0, ANCHOR_IOVA, ANCHOR_TARGET, PAGE) {
            res.writer_errors += 1;
            res.first_writer_error = Some(format!("anchor map: {e}"));
        }
    }
    let (reader_ops, reader_faults, reader_time) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let started = Instant::now();
            let mut rng = Rng::new(0xd3a);
            let (mut ops, mut faults) = (0u64, 0u64);
            // Relaxed: the flag only ends the loop; the join orders the counts.
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let iova = layout.random_iova(&mut rng);
                    if black_box(t.translate(iova, REQ_LEN, Access::Read)).is_err() {
                        faults += 1;
                    }
                }
                ops += 64;
            }
            (ops, faults, started.elapsed().as_secs_f64())
        });
        let mut step = 0u64;
        let mut start = None;
        let mut now = Instant::now();
        while now < until {
            for s in slots.iter_mut() {
                let slot = step % SLOTS;
                step += 1;
                *s = (SCRATCH_IOVA + slot * PAGE, SCRATCH_TARGET + slot * PAGE);
            }
            let t0 = Instant::now();
            let r = match batch {
                Some(_) => t.map_unmap_batch(0, &slots, PAGE),
                None => {
                    let (iova, target) = slots[0];
                    let m = t.map(0, iova, target, PAGE);
                    let t1 = Instant::now();
                    let u = t.unmap(0, iova, PAGE);
                    if t0 >= warm_until {
                        record(&mut map, nanos(t1 - t0));
                        record(&mut unmap, nanos(Instant::now() - t1));
                    }
                    m.and(u).map(|()| 0)
                }
            };
            now = Instant::now();
            match r {
                Ok(0) => {}
                Ok(unsettled) => {
                    res.writer_errors += unsettled;
                    res.first_writer_error.get_or_insert_with(|| {
                        "an earlier completion of the batch was not complete after the last".into()
                    });
                }
                Err(e) => {
                    res.writer_errors += 1;
                    res.first_writer_error.get_or_insert_with(|| e.to_string());
                }
            }
            if t0 >= warm_until {
                start.get_or_insert(t0);
                res.writer_ops += per_call as u64;
                record(&mut pair, nanos(now - t0) / per_call as u64);
            }
            if res.writer_errors > 1000 {
                res.note = Some("stopped after 1000 errors".into());
                break;
            }
        }
        // Relaxed: see the reader.
        stop.store(true, Ordering::Relaxed);
        res.seconds = start.map_or(0.0, |s| (now - s).as_secs_f64());
        reader.join().expect("reader thread panicked")
    });
    if anchor {
        if let Err(e) = t.unmap(0, ANCHOR_IOVA, PAGE) {
            res.writer_errors += 1;
            res.first_writer_error
                .get_or_insert_with(|| format!("anchor unmap: {e}"));
        }
    } else {
        res.note = Some("no anchor page: every pair allocates and retires page tables".into());
    }
    t.quiesce();
    if res.seconds > 0.0 {
        res.writer_ops_per_s = res.writer_ops as f64 / res.seconds;
    }
    if reader_time > 0.0 {
        // Over the whole run, warm-up included: the reader is context, not the measurement.
        res.mops_wall = reader_ops as f64 / reader_time / 1e6;
    }
    res.reader_ops = reader_ops;
    res.faults = reader_faults;
    for (name, h) in [("pair", &pair), ("map", &map), ("unmap", &unmap)] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    res
}
