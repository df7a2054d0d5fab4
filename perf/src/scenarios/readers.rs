//! Reader threads translating random mapped IOVAs, with an optional writer beside them.
//!
//! Readers run on a rayon pool of exactly `readers` threads (`broadcast`: one reader per
//! pool thread, all at once). Each reader warms up, then loops until the deadline:
//!
//! 1. draws 64 random request IOVAs (outside the timed region);
//! 2. times the block of 64 translations with two `Instant` reads and records the time per
//!    translation in the `translate_block64` histogram, so the clock's own cost (tens of
//!    nanoseconds) is spread over 64 translations instead of dominating each one;
//! 3. checks the 64 results: a fault is counted (every request is mapped in both domains),
//!    and so is a target that belongs to neither domain;
//! 4. times one more translation alone into `translate_single`, which keeps the tail of
//!    individual translations (a reader stuck behind a writer's lock) visible; its values
//!    include one clock read.
//!
//! The writer (a replace storm or a map/unmap storm, one operation per 10 µs, paced by
//! spinning on `Instant`) is a plain thread beside the pool; it records the latency of every
//! operation it makes in the measured window.

use super::{Case, CaseResult, Storm, STORM_PERIOD};
use crate::alloc::{thread_allocs, thread_frees};
use crate::args::Config;
use crate::baselines::{Layout, Translator, PAGE, REQ_LEN, SCRATCH_IOVA, SCRATCH_TARGET};
use crate::stats::{nanos, new_hist, record, Dist, Pacer, Rng};
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use viommu::{Access, FaultKind};

/// Translations per timed block.
pub const BLOCK: usize = 64;

/// Scratch slots the map/unmap storm cycles through.
const SCRATCH_SLOTS: u64 = 64;

/// What one reader measured (also the nested scenarios' readers).
pub(super) struct ReaderOut {
    pub(super) ops: u64,
    pub(super) block_ops: u64,
    pub(super) block_ns: u64,
    pub(super) faults: u64,
    pub(super) wrong: u64,
    pub(super) allocs: u64,
    pub(super) frees: u64,
    pub(super) elapsed: Duration,
    pub(super) block: Histogram<u64>,
    pub(super) single: Histogram<u64>,
}

/// Adds the readers' counts to `res` (throughput from the timed blocks and from the wall
/// time, faults, wrong targets, allocations per translation, the writer's rate from
/// `writer_ops`, frees per translation: a reclamation scheme that frees retired memory on the
/// reader threads shows here) and returns their merged histograms: (blocks of 64, single translations).
pub(super) fn fold_readers(
    res: &mut CaseResult,
    outs: &[ReaderOut],
    writer_ops: u64,
) -> (Histogram<u64>, Histogram<u64>) {
    let (mut block, mut single) = (new_hist(), new_hist());
    let (mut allocs, mut frees) = (0, 0);
    let mut wall = 0.0f64;
    for o in outs {
        res.reader_ops += o.ops;
        res.faults += o.faults;
        res.wrong += o.wrong;
        allocs += o.allocs;
        frees += o.frees;
        if o.block_ns > 0 {
            res.mops += o.block_ops as f64 / o.block_ns as f64 * 1e3;
        }
        wall = wall.max(o.elapsed.as_secs_f64());
        block.add(&o.block).expect("same histogram bounds");
        single.add(&o.single).expect("same histogram bounds");
    }
    res.seconds = wall;
    if wall > 0.0 {
        res.mops_wall = res.reader_ops as f64 / wall / 1e6;
        res.writer_ops_per_s = writer_ops as f64 / wall;
    }
    res.allocs_per_op = allocs as f64 / res.reader_ops.max(1) as f64;
    res.frees_per_op = frees as f64 / res.reader_ops.max(1) as f64;
    res.writer_ops = writer_ops;
    (block, single)
}

/// What the writer measured.
struct WriterOut {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    replace: Histogram<u64>,
    map: Histogram<u64>,
    unmap: Histogram<u64>,
}

#[inline]
fn tally(layout: &Layout, iova: u64, r: Result<u64, FaultKind>, faults: &mut u64, wrong: &mut u64) {
    match r {
        Ok(target) => {
            if layout.domain_of(iova, target).is_none() {
                *wrong += 1;
            }
        }
        Err(_) => *faults += 1,
    }
}

fn reader<T: Translator>(
    t: &T,
    layout: &Layout,
    seed: u64,
    warm_until: Instant,
    until: Instant,
) -> ReaderOut {
    let mut rng = Rng::new(seed);
    let mut iovas = [0u64; BLOCK];
    let mut out = [Ok(0u64); BLOCK];
    let mut block = new_hist();
    let mut single = new_hist();
    let (mut ops, mut block_ops, mut block_ns, mut faults, mut wrong) = (0, 0, 0, 0, 0);

    // Warm caches, lazily built state (an IOTLB, epoch registration) and the branch
    // predictors; nothing recorded.
    while Instant::now() < warm_until {
        for x in iovas.iter_mut() {
            *x = layout.random_iova(&mut rng);
        }
        t.translate_block(&iovas, REQ_LEN, Access::Read, &mut out);
        black_box(&out);
    }

    let allocs_before = thread_allocs();
    let frees_before = thread_frees();
    let start = Instant::now();
    let mut now = start;
    while now < until {
        for x in iovas.iter_mut() {
            *x = layout.random_iova(&mut rng);
        }
        let t0 = Instant::now();
        t.translate_block(&iovas, REQ_LEN, Access::Read, &mut out);
        let t1 = Instant::now();
        let ns = nanos(t1 - t0);
        record(&mut block, ns / BLOCK as u64);
        block_ns += ns;
        block_ops += BLOCK as u64;
        for (&iova, &r) in iovas.iter().zip(out.iter()) {
            tally(layout, iova, r, &mut faults, &mut wrong);
        }

        let iova = layout.random_iova(&mut rng);
        let t2 = Instant::now();
        let r = black_box(t.translate(black_box(iova), REQ_LEN, Access::Read));
        now = Instant::now();
        record(&mut single, nanos(now - t2));
        tally(layout, iova, r, &mut faults, &mut wrong);
        ops += BLOCK as u64 + 1;
    }
    ReaderOut {
        ops,
        block_ops,
        block_ns,
        faults,
        wrong,
        allocs: thread_allocs() - allocs_before,
        frees: thread_frees() - frees_before,
        elapsed: now - start,
        block,
        single,
    }
}

fn writer<T: Translator>(
    t: &T,
    storm: Storm,
    stop: &AtomicBool,
    warm_until: Instant,
    until: Instant,
) -> WriterOut {
    let mut w = WriterOut {
        ops: 0,
        errors: 0,
        first_error: None,
        replace: new_hist(),
        map: new_hist(),
        unmap: new_hist(),
    };
    if storm == Storm::None {
        return w;
    }
    let fail = |w: &mut WriterOut, e: crate::baselines::OpError| {
        w.errors += 1;
        w.first_error.get_or_insert_with(|| e.to_string());
    };
    let mut pacer = Pacer::new(STORM_PERIOD);
    let mut step: u64 = 0;
    // Relaxed: the flag only ends the loop; the join orders what the writer recorded.
    while !stop.load(Ordering::Relaxed) {
        pacer.wait();
        step += 1;
        match storm {
            Storm::None => unreachable!("returned above"),
            Storm::Replace => {
                let to = (step % 2) as usize;
                let t0 = Instant::now();
                let r = t.replace(to);
                let t1 = Instant::now();
                if t0 >= warm_until && t1 <= until {
                    w.ops += 1;
                    record(&mut w.replace, nanos(t1 - t0));
                }
                if let Err(e) = r {
                    fail(&mut w, e);
                }
            }
            Storm::MapUnmap => {
                let slot = step % SCRATCH_SLOTS;
                let iova = SCRATCH_IOVA + slot * PAGE;
                let target = SCRATCH_TARGET + slot * PAGE;
                let t0 = Instant::now();
                let m = t.map(0, iova, target, PAGE);
                let t1 = Instant::now();
                let u = t.unmap(0, iova, PAGE);
                let t2 = Instant::now();
                if t0 >= warm_until && t2 <= until {
                    w.ops += 1;
                    record(&mut w.map, nanos(t1 - t0));
                    record(&mut w.unmap, nanos(t2 - t1));
                }
                for r in [m, u] {
                    if let Err(e) = r {
                        fail(&mut w, e);
                    }
                }
            }
        }
    }
    // Leave domain 0 active and the scratch window empty, whatever step we stopped at.
    if storm == Storm::Replace && step % 2 == 1 {
        let _ = t.replace(0);
    }
    w
}

/// True for the scenarios whose readers run beside a writer.
fn storm_asked(scenario: super::Scenario) -> bool {
    !matches!(
        scenario,
        super::Scenario::TranslateIdle | super::Scenario::Translate256
    )
}

/// Runs `case` with `storm` beside the readers.
pub fn run<T: Translator>(
    t: &Arc<T>,
    cfg: &Config,
    layout: &Layout,
    case: &Case,
    storm: Storm,
) -> CaseResult {
    let mut res = CaseResult::new(case, storm);
    if !case.kind.has_writer() && storm_asked(case.scenario) {
        res.note = Some("no writer possible: measured idle, as the reference".into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(case.readers)
        .thread_name(|i| format!("reader-{i}"))
        .build()
        .expect("reader pool");
    let stop = AtomicBool::new(false);
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + cfg.measure;
    let (outs, w) = std::thread::scope(|s| {
        let writer = s.spawn(|| writer(&**t, storm, &stop, warm_until, until));
        let outs = pool
            .broadcast(|ctx| reader(&**t, layout, 0x5eed + ctx.index() as u64, warm_until, until));
        // Relaxed: see `writer`.
        stop.store(true, Ordering::Relaxed);
        (outs, writer.join().expect("writer thread panicked"))
    });

    let (block, single) = fold_readers(&mut res, &outs, w.ops);
    res.writer_errors = w.errors;
    res.first_writer_error = w.first_error;
    for (name, h) in [
        ("translate_block64", &block),
        ("translate_single", &single),
        ("replace", &w.replace),
        ("map", &w.map),
        ("unmap", &w.unmap),
    ] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    res
}
