//! Map + unmap throughput and latency with no readers.
//!
//! One thread maps `len` bytes (4 KiB or 2 MiB, IOVA and target aligned to `len`, so page
//! tables use leaves of that size) at one of 64 scratch slots of the active domain and unmaps
//! it again, as fast as it can, for the configured time. Each call is timed alone; the
//! result is the map and unmap latency distributions and pairs per second.

use super::{Case, CaseResult, Storm};
use crate::args::Config;
use crate::baselines::{Translator, SCRATCH_IOVA, SCRATCH_TARGET};
use crate::stats::{nanos, new_hist, record, Dist};
use std::sync::Arc;
use std::time::Instant;

/// Scratch slots cycled through.
const SLOTS: u64 = 64;

/// Runs `case` with mappings of `len` bytes.
pub fn run<T: Translator>(t: &Arc<T>, cfg: &Config, case: &Case, len: u64) -> CaseResult {
    let mut res = CaseResult::new(case, Storm::None);
    let mut map = new_hist();
    let mut unmap = new_hist();
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + cfg.control;
    let mut step = 0u64;
    let mut start = None;
    let mut now = Instant::now();
    while now < until {
        let slot = step % SLOTS;
        step += 1;
        let (iova, target) = (SCRATCH_IOVA + slot * len, SCRATCH_TARGET + slot * len);
        let t0 = Instant::now();
        let m = t.map(0, iova, target, len);
        let t1 = Instant::now();
        let u = t.unmap(0, iova, len);
        now = Instant::now();
        for r in [m, u] {
            if let Err(e) = r {
                res.writer_errors += 1;
                res.first_writer_error.get_or_insert_with(|| e.to_string());
            }
        }
        if t0 >= warm_until {
            start.get_or_insert(t0);
            res.writer_ops += 1;
            record(&mut map, nanos(t1 - t0));
            record(&mut unmap, nanos(now - t1));
        }
        if res.writer_errors > 1000 {
            res.note = Some("stopped after 1000 errors".into());
            break;
        }
    }
    t.quiesce();
    res.seconds = start.map_or(0.0, |s| (now - s).as_secs_f64());
    if res.seconds > 0.0 {
        res.writer_ops_per_s = res.writer_ops as f64 / res.seconds;
    }
    for (name, h) in [("map", &map), ("unmap", &unmap)] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    res
}
