//! Isolation (G14): an unrelated group's replace, and a map on a third IOAS, while another
//! IOAS populates a 1 GiB domain.
//!
//! One context, three groups:
//! - group 0: a device with two small prebuilt user HWPTs (64 pages each), replaced back and
//!   forth; this is what is measured (`replace`);
//! - group 1: a device used only to `hwpt_alloc` user HWPTs on a big IOAS that maps 1 GiB in
//!   4 KiB pages (targets offset by 4 KiB: 262144 leaves), destroyed again at once;
//! - group 2: a device attached to a third IOAS, into which the measuring thread maps and
//!   unmaps one 4 KiB page after each replace (`map`, `unmap`; the unmap waits for its fence).
//!
//! In the `viommu` row a second thread runs `hwpt_alloc` + `destroy` on the big IOAS in a
//! loop (`populate`: the `hwpt_alloc` call); the `viommu-alone` row runs the same measuring
//! loop with nothing beside it, as the reference. The measuring thread is paced to one
//! replace + map + unmap per 10 µs.
//!
//! The previous design held the one global lock for the whole populate (3.5 ms for 1 GiB),
//! so an unrelated replace waited behind it: 0.8 µs median became 3.4 ms median, 44 ms p99.

use super::pause::{BIG_IOVA, BIG_TARGETS, GIB};
use super::{Case, CaseResult, Storm, Variant, STORM_PERIOD};
use crate::args::Config;
use crate::baselines::two_domains::TwoDomains;
use crate::baselines::{PAGE, SCRATCH_IOVA, SCRATCH_TARGET};
use crate::stats::{nanos, new_hist, record, Dist, Pacer};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use viommu::{DeviceInfo, GroupId, HwptFlags, Prot};

/// Pages of each of group 0's two small domains.
const SMALL_PAGES: u64 = 64;

/// What the populating thread measured.
struct PopulateOut {
    populate: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs one row of `replace-populate`.
pub fn run(cfg: &Config, case: &Case) -> CaseResult {
    let mut res = CaseResult::new(case, Storm::Replace);
    let f = TwoDomains::new(|d| {
        let base = [0x40_0000_1000u64, 0x80_0000_1000][d];
        (0..SMALL_PAGES).map(move |i| (0x1000_0000 + i * PAGE, base + i * PAGE, PAGE))
    });
    let iommu = &f.iommu;
    let (big_dev, _) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .expect("device_bind");
    let big = iommu.ioas_alloc().expect("ioas_alloc");
    iommu
        .ioas_map(big, Some(BIG_IOVA), BIG_TARGETS[0], GIB, Prot::RW)
        .expect("ioas_map 1 GiB");
    let (third_dev, _) = iommu
        .device_bind(GroupId(2), DeviceInfo::default())
        .expect("device_bind");
    let third = iommu.ioas_alloc().expect("ioas_alloc");
    iommu
        .device_attach(third_dev, third)
        .expect("device_attach");

    let populating = case.variant != Variant::Alone;
    let stop = AtomicBool::new(false);
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + cfg.long;
    let (mut replace, mut map, mut unmap) = (new_hist(), new_hist(), new_hist());
    let p = std::thread::scope(|s| {
        let populater = s.spawn(|| {
            let mut out = PopulateOut {
                populate: new_hist(),
                errors: 0,
                first_error: None,
            };
            // Relaxed: the flag only ends the loop; the join orders what was recorded.
            while populating && !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = iommu.hwpt_alloc(big_dev, big, HwptFlags::empty());
                let t1 = Instant::now();
                match r {
                    Ok(h) => {
                        if t0 >= warm_until {
                            record(&mut out.populate, nanos(t1 - t0));
                        }
                        if let Err(e) = iommu.destroy(h) {
                            out.errors += 1;
                            out.first_error
                                .get_or_insert_with(|| format!("destroy: {e}"));
                        }
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("hwpt_alloc: {e}"));
                        if out.errors > 100 {
                            break;
                        }
                    }
                }
            }
            out
        });
        let mut pacer = Pacer::new(STORM_PERIOD);
        let mut step = 0u64;
        let mut start = None;
        let mut now = Instant::now();
        while now < until {
            pacer.wait();
            step += 1;
            let slot = step % 64;
            let (iova, target) = (SCRATCH_IOVA + slot * PAGE, SCRATCH_TARGET + slot * PAGE);
            let t0 = Instant::now();
            let r = iommu.device_replace(f.dev_id, f.hwpt[(step % 2) as usize]);
            let t1 = Instant::now();
            let m = iommu.ioas_map(third, Some(iova), target, PAGE, Prot::RW);
            let t2 = Instant::now();
            let u = iommu.ioas_unmap(third, iova, PAGE);
            now = Instant::now();
            if t0 >= warm_until {
                start.get_or_insert(t0);
                res.writer_ops += 1;
                record(&mut replace, nanos(t1 - t0));
                record(&mut map, nanos(t2 - t1));
                record(&mut unmap, nanos(now - t2));
            }
            for e in [r.err(), m.err(), u.err()].into_iter().flatten() {
                res.writer_errors += 1;
                res.first_writer_error
                    .get_or_insert_with(|| format!("{e} (errno {})", e.errno()));
            }
        }
        // Relaxed: see the populating thread.
        stop.store(true, Ordering::Relaxed);
        res.seconds = start.map_or(0.0, |s| (now - s).as_secs_f64());
        populater.join().expect("populating thread panicked")
    });
    iommu.synchronize().expect("synchronize");
    if res.seconds > 0.0 {
        res.writer_ops_per_s = res.writer_ops as f64 / res.seconds;
    }
    res.writer_errors += p.errors;
    if let Some(e) = p.first_error {
        res.first_writer_error.get_or_insert(e);
    }
    for (name, h) in [
        ("replace", &replace),
        ("map", &map),
        ("unmap", &unmap),
        ("populate", &p.populate),
    ] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    if !populating {
        res.note = Some("reference: nothing populates beside".into());
    }
    res
}
