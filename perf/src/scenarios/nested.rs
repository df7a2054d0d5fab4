//! Nested translation (SPEC "Nesting", "PASID"): the IOTLB against the paging walk, and
//! replace storms between nested domains.
//!
//! Set-up: [`NestWorld`] (one `NEST_PARENT` paging HWPT, guest tables built by the test guest
//! of `tests/support/stage1.rs`, stage 1 mapping IOVA = IPA in 4 KiB pages).
//!
//! **`nested-translate`** (one thread). Each row times blocks of 64 translations of 512 bytes
//! with the TSC ([`crate::clock`]) and reports the time per translation (median, p90, p99 of
//! the blocks) and throughput:
//!
//! | row | what is translated | through |
//! | --- | --- | --- |
//! | `paging-same` | IOVA `X` over and over | a device on the parent (stage 2 only) |
//! | `<fmt>-warm` | the same IOVA `X` (an IOTLB hit every time) | a device on a nested HWPT |
//! | `paging-walk` | a sequential sweep over 256 pages | the parent |
//! | `<fmt>-cold` | the same sweep: the 64-entry direct-mapped IOTLB misses every time (pages `p` and `p + 64` share a slot), so every translation is a full nested walk plus the IOTLB's lookup and fill | the nested HWPT |
//! | `<fmt>-uncached` | the same sweep, `DmaGuard::translate_uncached`: the same walk with no IOTLB at all | the nested HWPT |
//!
//! for `<fmt>` SMMUv3 (STE → CD → AArch64 4-level) and VT-d (x86-64 4-level), each in two
//! ways: `oneshot` (`Device::translate`, one pin per translation; uncached: `pin()` +
//! `translate_uncached` + drop) and `guard` (one `pin()` per block of 64). The rows run
//! round-robin, a block each in turn, so every ratio compares blocks measured in the same
//! moments; the same-IOVA rows and the sweep rows run in two separate phases, because a
//! sweep evicts every IOTLB entry (the warm rows would otherwise miss once per block).
//! Ratios: warm against `paging-same` (the target: within 2x), cold against `paging-walk` and
//! against `uncached`.
//!
//! **`nested-replace`**. Readers translate random IOVAs of 64 pages with one-shot
//! translations (`Device::translate` at the RID; `pin_pasid(5)` + translate + drop at the
//! PASID) while a writer replaces, every 10 µs, between two nested HWPTs whose stage 1 map the
//! pages to different IPAs: at the RID `device_replace` between an SMMUv3 and a VT-d HWPT; at
//! PASID 5 `device_replace_pasid` between the same two (the SMMUv3 one serves the PASID from
//! its CD 5). A fault or a target of neither HWPT is counted (must be 0). Each variant runs
//! idle too (no writer), at the same reader counts, so the storm's reader percentiles are
//! given against the idle ones measured in the same run.

use super::readers::{fold_readers, ReaderOut};
use super::{Case, CaseResult, PerOp, Storm, Variant, STORM_PERIOD};
use crate::alloc::{thread_allocs, thread_frees};
use crate::args::{Config, Mode};
use crate::baselines::nested_world::{
    sweep_iova, target_of, Nest, NestWorld, DATA_IPA, PASID, REQ, WARM_IOVA,
};
use crate::baselines::two_domains::new_iommu;
use crate::baselines::PAGE;
use crate::clock::{ticks, Clock};
use crate::stats::{nanos, new_hist, record, Dist, Pacer, Rng};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use viommu::{Access, Device, Fault, FaultKind, ObjId, Translation};

/// Translations per timed block.
const BLOCK: usize = 64;

/// Pages the `nested-replace` readers pick from: idle, their IOTLB entries fit; under a storm
/// the two HWPTs' entries compete for the 64 slots, so translations after a replace may miss.
const REPLACE_PAGES: u64 = 64;

/// Measured time of each phase (`nested-translate`) or case (`nested-replace`): half the
/// translate runs' time in quick mode, to keep the default run short.
fn measure(cfg: &Config) -> Duration {
    match cfg.mode {
        Mode::Quick => cfg.measure / 2,
        Mode::Full => cfg.measure,
    }
}

#[inline(always)]
fn first(r: Result<Translation<'_>, Fault>) -> u64 {
    r.ok().and_then(|mut t| t.next()).map_or(0, |c| c.target)
}

/// How a row translates a block.
type BlockFn<'a> = Box<dyn FnMut(&[u64; BLOCK], &mut [u64; BLOCK]) + 'a>;

/// One row of `nested-translate`.
struct Probe<'a> {
    label: &'static str,
    /// The row whose median this one is compared with, and the other one (cold rows).
    vs: Option<&'static str>,
    vs2: Option<&'static str>,
    sweep: bool,
    run: BlockFn<'a>,
    cursor: u64,
    ticks: Vec<u64>,
    faults: u64,
    wrong: u64,
    /// The row translates through an identity domain: every target is its IOVA.
    identity: bool,
}

impl<'a> Probe<'a> {
    fn new(label: &'static str, sweep: bool, run: BlockFn<'a>) -> Probe<'a> {
        Probe {
            label,
            vs: None,
            vs2: None,
            sweep,
            run,
            cursor: 0,
            ticks: Vec::with_capacity(1 << 16),
            faults: 0,
            wrong: 0,
            identity: false,
        }
    }

    /// Marks the row as an identity domain's (targets are the IOVAs themselves).
    fn identity(mut self) -> Self {
        self.identity = true;
        self
    }

    fn vs(mut self, a: &'static str, b: Option<&'static str>) -> Self {
        self.vs = Some(a);
        self.vs2 = b;
        self
    }

    /// One block: the IOVAs are drawn, then the block is timed, then checked.
    fn block(&mut self, record_it: bool) {
        let mut iovas = [WARM_IOVA; BLOCK];
        if self.sweep {
            for x in iovas.iter_mut() {
                *x = sweep_iova(self.cursor);
                self.cursor += 1;
            }
        }
        let mut out = [0u64; BLOCK];
        let t0 = ticks();
        (self.run)(&iovas, &mut out);
        let t1 = ticks();
        if record_it {
            self.ticks.push(t1.wrapping_sub(t0));
            for (&i, &o) in iovas.iter().zip(out.iter()) {
                if o == 0 {
                    self.faults += 1;
                } else if o != if self.identity { i } else { target_of(i) } {
                    self.wrong += 1;
                }
            }
        }
    }
}

/// The labels, `'static` for the result records.
fn label(api: &str, row: &str) -> &'static str {
    const LABELS: [&str; 20] = [
        "oneshot/identity-same",
        "oneshot/identity-walk",
        "guard/identity-same",
        "guard/identity-walk",
        "oneshot/paging-same",
        "oneshot/smmuv3-warm",
        "oneshot/vtd-warm",
        "oneshot/paging-walk",
        "oneshot/smmuv3-cold",
        "oneshot/smmuv3-uncached",
        "oneshot/vtd-cold",
        "oneshot/vtd-uncached",
        "guard/paging-same",
        "guard/smmuv3-warm",
        "guard/vtd-warm",
        "guard/paging-walk",
        "guard/smmuv3-cold",
        "guard/smmuv3-uncached",
        "guard/vtd-cold",
        "guard/vtd-uncached",
    ];
    let want = format!("{api}/{row}");
    LABELS
        .iter()
        .find(|l| **l == want)
        .copied()
        .expect("a known nested-translate row")
}

/// A paging or nested row through `dev`: one-shot or a guard per block.
fn xlate<'a>(dev: &'a Device, guard: bool) -> BlockFn<'a> {
    if guard {
        Box::new(move |iovas, out| {
            let g = dev.pin();
            for (o, &i) in out.iter_mut().zip(iovas) {
                *o = first(g.translate(black_box(i), REQ, Access::Read));
            }
        })
    } else {
        Box::new(move |iovas, out| {
            for (o, &i) in out.iter_mut().zip(iovas) {
                *o = first(dev.translate(black_box(i), REQ, Access::Read));
            }
        })
    }
}

/// An uncached row through `dev`.
fn uncached<'a>(dev: &'a Device, guard: bool) -> BlockFn<'a> {
    let one = |g: &viommu::DmaGuard<'_>, i: u64| {
        g.translate_uncached(black_box(i), Access::Read)
            .and_then(Result::ok)
            .unwrap_or(0)
    };
    if guard {
        Box::new(move |iovas, out| {
            let g = dev.pin();
            for (o, &i) in out.iter_mut().zip(iovas) {
                *o = one(&g, i);
            }
        })
    } else {
        Box::new(move |iovas, out| {
            for (o, &i) in out.iter_mut().zip(iovas) {
                *o = one(&dev.pin(), i);
            }
        })
    }
}

/// Runs `probes` round-robin: warm-up, then blocks until `until`.
fn round_robin(probes: &mut [Probe<'_>], warm: Duration, measure: Duration) -> f64 {
    let warm_until = Instant::now() + warm;
    while Instant::now() < warm_until {
        for p in probes.iter_mut() {
            p.block(false);
        }
    }
    let start = Instant::now();
    let until = start + measure;
    while Instant::now() < until {
        for _ in 0..16 {
            for p in probes.iter_mut() {
                p.block(true);
            }
        }
    }
    start.elapsed().as_secs_f64()
}

/// Runs `nested-translate`: one result per row.
pub fn run_translate(cfg: &Config, case: &Case) -> Vec<CaseResult> {
    let clock = Clock::calibrate();
    let world = NestWorld::new(new_iommu());
    let devs: Vec<(Nest, Device)> = Nest::ALL
        .iter()
        .enumerate()
        .map(|(i, &fmt)| {
            let hwpt = world.nested(fmt, 0);
            (fmt, world.attached(1 + i as u32, hwpt).1)
        })
        .collect();
    let paging = &world.paging;
    // An identity HWPT over the whole stage-2 input range: the same IOVAs translate to
    // themselves, with no walk (the cheapest domain there is).
    let (id_dev_id, identity) = world.bind(1 + Nest::ALL.len() as u32);
    let whole = std::slice::from_ref(&(0..1u64 << 40));
    let id_hwpt = world
        .iommu
        .hwpt_alloc_identity(id_dev_id, whole)
        .expect("hwpt_alloc_identity");
    world
        .iommu
        .device_attach(id_dev_id, id_hwpt)
        .expect("device_attach");
    let mut out = Vec::new();
    for sweep in [false, true] {
        let mut probes: Vec<Probe<'_>> = Vec::new();
        for (api, guard) in [("oneshot", false), ("guard", true)] {
            let paging_row = label(api, if sweep { "paging-walk" } else { "paging-same" });
            probes.push(Probe::new(paging_row, sweep, xlate(paging, guard)));
            let id_row = label(
                api,
                if sweep {
                    "identity-walk"
                } else {
                    "identity-same"
                },
            );
            probes.push(
                Probe::new(id_row, sweep, xlate(&identity, guard))
                    .identity()
                    .vs(paging_row, None),
            );
            for (fmt, dev) in &devs {
                let n = fmt.name();
                if sweep {
                    let unc = label(api, &format!("{n}-uncached"));
                    probes.push(
                        Probe::new(label(api, &format!("{n}-cold")), true, xlate(dev, guard))
                            .vs(paging_row, Some(unc)),
                    );
                    probes.push(Probe::new(unc, true, uncached(dev, guard)).vs(paging_row, None));
                } else {
                    probes.push(
                        Probe::new(label(api, &format!("{n}-warm")), false, xlate(dev, guard))
                            .vs(paging_row, None),
                    );
                }
            }
        }
        let secs = round_robin(&mut probes, cfg.warmup, measure(cfg));
        for p in &probes {
            out.push(result_of(case, &clock, p, secs));
        }
    }
    // The comparisons, now that every median is known.
    let medians: Vec<(&'static str, f64)> = out
        .iter()
        .map(|r| (r.baseline, r.per_op.as_ref().map_or(0.0, |p| p.p50_ns)))
        .collect();
    let median_of = |l: &str| medians.iter().find(|(x, _)| *x == l).map(|m| m.1);
    for r in &mut out {
        let Some(p) = r.per_op.as_mut() else { continue };
        for &against in &p.compare {
            if let Some(m) = median_of(against).filter(|&m| m > 0.0) {
                p.ratios.push((against, p.p50_ns / m));
            }
        }
    }
    world.iommu.synchronize().expect("synchronize");
    out
}

fn result_of(case: &Case, clock: &Clock, p: &Probe<'_>, secs: f64) -> CaseResult {
    let mut res = CaseResult::new(case, Storm::None);
    res.baseline = p.label;
    res.seconds = secs;
    let blocks = p.ticks.len() as u64;
    res.reader_ops = blocks * BLOCK as u64;
    res.faults = p.faults;
    res.wrong = p.wrong;
    let mut per_op: Vec<f64> = p
        .ticks
        .iter()
        .map(|&t| clock.ns(0, t) as f64 / BLOCK as f64)
        .collect();
    let total_ns: f64 = per_op.iter().sum::<f64>() * BLOCK as f64;
    if total_ns > 0.0 {
        res.mops = res.reader_ops as f64 / total_ns * 1e3;
    }
    let mut h = new_hist();
    for &x in &per_op {
        record(&mut h, x.round() as u64);
    }
    if let Some(d) = Dist::of(&h) {
        res.latency.insert("translate_block64", d);
    }
    per_op.sort_by(f64::total_cmp);
    let q = |f: f64| {
        per_op
            .get(((per_op.len() as f64 - 1.0) * f).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    res.per_op = Some(PerOp {
        blocks,
        p50_ns: q(0.5),
        p90_ns: q(0.9),
        p99_ns: q(0.99),
        compare: [p.vs, p.vs2].into_iter().flatten().collect(),
        ratios: Vec::new(),
    });
    res
}

// ---------------------------------------------------------------------------------------
// nested-replace

/// The two HWPTs a storm switches between and how readers reach them.
struct ReplaceWorld {
    world: NestWorld,
    dev_id: ObjId,
    dev: Device,
    /// 0: at the RID; else the PASID.
    pasid: u32,
    hwpt: [ObjId; 2],
}

/// Stage-1 shift of the second HWPT (its pages land on other IPAs, so a reader can tell
/// which HWPT translated).
const SHIFT: u64 = 256;

impl ReplaceWorld {
    fn new(pasid: u32) -> ReplaceWorld {
        let world = NestWorld::new(new_iommu());
        let hwpt = [
            world.nested(Nest::SmmuV3, 0),
            world.nested(Nest::Vtd, SHIFT),
        ];
        let (dev_id, dev) = world.bind(1);
        if pasid == 0 {
            world
                .iommu
                .device_attach(dev_id, hwpt[0])
                .expect("device_attach");
        } else {
            world
                .iommu
                .device_attach_pasid(dev_id, pasid, hwpt[0])
                .expect("device_attach_pasid");
        }
        ReplaceWorld {
            world,
            dev_id,
            dev,
            pasid,
            hwpt,
        }
    }

    fn replace(&self, to: usize) -> viommu::Result<ObjId> {
        if self.pasid == 0 {
            self.world.iommu.device_replace(self.dev_id, self.hwpt[to])
        } else {
            self.world
                .iommu
                .device_replace_pasid(self.dev_id, self.pasid, self.hwpt[to])
        }
    }

    #[inline]
    fn translate(&self, iova: u64) -> Result<u64, FaultKind> {
        let r = if self.pasid == 0 {
            self.dev.translate(iova, REQ, Access::Read)
        } else {
            let g = self.dev.pin_pasid(self.pasid);
            return match g.translate(iova, REQ, Access::Read) {
                Ok(mut t) => Ok(t.next().map_or(0, |c| c.target)),
                Err(f) => Err(f.kind),
            };
        };
        match r {
            Ok(mut t) => Ok(t.next().map_or(0, |c| c.target)),
            Err(f) => Err(f.kind),
        }
    }
}

/// A random reader IOVA.
#[inline]
fn replace_iova(rng: &mut Rng) -> u64 {
    let r = rng.next_u64();
    DATA_IPA + (r % REPLACE_PAGES) * PAGE + (r >> 61) * REQ
}

/// True if `target` is what one of the two HWPTs gives for `iova`.
#[inline]
fn expected(iova: u64, target: u64) -> bool {
    target == target_of(iova) || target == target_of(iova + SHIFT * PAGE)
}

fn reader(w: &ReplaceWorld, seed: u64, warm_until: Instant, until: Instant) -> ReaderOut {
    let mut rng = Rng::new(seed);
    let mut iovas = [0u64; BLOCK];
    let mut out = [Ok(0u64); BLOCK];
    let mut o = ReaderOut {
        ops: 0,
        block_ops: 0,
        block_ns: 0,
        faults: 0,
        wrong: 0,
        allocs: 0,
        frees: 0,
        elapsed: Duration::ZERO,
        block: new_hist(),
        single: new_hist(),
    };
    let tally = |o: &mut ReaderOut, iova: u64, r: Result<u64, FaultKind>| match r {
        Ok(t) if expected(iova, t) => {}
        Ok(_) => o.wrong += 1,
        Err(_) => o.faults += 1,
    };
    while Instant::now() < warm_until {
        for x in iovas.iter_mut() {
            *x = replace_iova(&mut rng);
        }
        for (r, &i) in out.iter_mut().zip(iovas.iter()) {
            *r = w.translate(black_box(i));
        }
        black_box(&out);
    }
    let allocs = thread_allocs();
    let frees = thread_frees();
    let start = Instant::now();
    let mut now = start;
    while now < until {
        for x in iovas.iter_mut() {
            *x = replace_iova(&mut rng);
        }
        let t0 = Instant::now();
        for (r, &i) in out.iter_mut().zip(iovas.iter()) {
            *r = w.translate(black_box(i));
        }
        let ns = nanos(t0.elapsed());
        record(&mut o.block, ns / BLOCK as u64);
        o.block_ns += ns;
        o.block_ops += BLOCK as u64;
        for (&i, &r) in iovas.iter().zip(out.iter()) {
            tally(&mut o, i, r);
        }
        let i = replace_iova(&mut rng);
        let t2 = Instant::now();
        let r = black_box(w.translate(black_box(i)));
        now = Instant::now();
        record(&mut o.single, nanos(now - t2));
        tally(&mut o, i, r);
        o.ops += BLOCK as u64 + 1;
    }
    o.allocs = thread_allocs() - allocs;
    o.frees = thread_frees() - frees;
    o.elapsed = now - start;
    o
}

/// Runs one row of `nested-replace`.
pub fn run_replace(cfg: &Config, case: &Case) -> CaseResult {
    let (pasid, storm) = match case.variant {
        Variant::NestRidIdle => (0, Storm::None),
        Variant::NestRidStorm => (0, Storm::Replace),
        Variant::NestPasidIdle => (PASID, Storm::None),
        Variant::NestPasidStorm => (PASID, Storm::Replace),
        v => unreachable!("not a nested-replace row: {v:?}"),
    };
    let mut res = CaseResult::new(case, storm);
    let w = ReplaceWorld::new(pasid);
    let stop = AtomicBool::new(false);
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + measure(cfg);
    let mut replace_h = new_hist();
    let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
    let outs: Vec<ReaderOut> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..case.readers)
            .map(|k| {
                let w = &w;
                s.spawn(move || reader(w, 0x5eed + k as u64, warm_until, until))
            })
            .collect();
        if storm == Storm::Replace {
            let mut pacer = Pacer::new(STORM_PERIOD);
            let mut step = 0u64;
            // Relaxed: the flag only ends the loop.
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                pacer.wait();
                step += 1;
                let t0 = Instant::now();
                let r = w.replace((step % 2) as usize);
                let t1 = Instant::now();
                if t0 >= warm_until && t1 <= until {
                    ops += 1;
                    record(&mut replace_h, nanos(t1 - t0));
                }
                if let Err(e) = r {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{e} (errno {})", e.errno()));
                    if errors > 100 {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        readers
            .into_iter()
            .map(|r| r.join().expect("reader panicked"))
            .collect()
    });
    let (block, single) = fold_readers(&mut res, &outs, ops);
    res.writer_errors = errors;
    res.first_writer_error = first_error;
    for (name, h) in [
        ("translate_block64", &block),
        ("translate_single", &single),
        ("replace", &replace_h),
    ] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    drop(w);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines::nested_world::S1_PAGES;

    #[test]
    fn sweep_iovas_always_miss_a_64_entry_direct_mapped_iotlb() {
        // Pages whose numbers agree in the low 6 bits share a slot (whatever the domain's
        // constant). Between two visits of a page, another page of its slot comes.
        let page = |i: u64| sweep_iova(i) / PAGE;
        for i in 0..1000 {
            assert!((DATA_IPA..DATA_IPA + S1_PAGES * PAGE).contains(&sweep_iova(i)));
            let next = (i + 1..).find(|&j| page(j) == page(i)).unwrap();
            assert!(
                (i + 1..next).any(|j| page(j) != page(i) && page(j) % 64 == page(i) % 64),
                "{i}"
            );
        }
    }

    #[test]
    fn both_formats_translate_like_the_parent() {
        let world = NestWorld::new(new_iommu());
        for (k, fmt) in Nest::ALL.into_iter().enumerate() {
            let (_, dev) = world.attached(1 + k as u32, world.nested(fmt, 0));
            for i in [0, 1, 63, 64, 255] {
                let iova = sweep_iova(i);
                let t = first(dev.translate(iova, REQ, Access::Read));
                assert_eq!(t, target_of(iova), "{fmt:?} {iova:#x}");
                assert_eq!(first(world.paging.translate(iova, REQ, Access::Read)), t);
                let g = dev.pin();
                assert_eq!(
                    g.translate_uncached(iova, Access::Read).unwrap().unwrap(),
                    t
                );
            }
        }
    }

    #[test]
    fn replace_worlds_switch_and_translate() {
        for pasid in [0, PASID] {
            let w = ReplaceWorld::new(pasid);
            let iova = DATA_IPA + 7 * PAGE;
            assert_eq!(w.translate(iova), Ok(target_of(iova)));
            w.replace(1).unwrap();
            assert_eq!(w.translate(iova), Ok(target_of(iova + SHIFT * PAGE)));
            w.replace(0).unwrap();
            assert_eq!(w.translate(iova), Ok(target_of(iova)));
        }
    }
}
