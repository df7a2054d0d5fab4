//! The longest pause a library call causes on a DMA thread while 1 GiB domains go away.
//!
//! One DMA thread pins, translates one 512-byte request at a random page of a 1 GiB region,
//! and drops the guard, in a loop; each of the three calls is timed alone with the fast clock
//! ([`crate::clock`]: the TSC on x86-64, a few nanoseconds a reading) into its own histogram
//! (`pin`, `translate`, `drop`). Beside it, a writer thread cycles, as fast as it can:
//!
//! 1. map 1 GiB into the IOAS the device is not on (no domain there yet: bookkeeping only);
//! 2. `device_replace` the device to that IOAS: an auto HWPT is made and populated in
//!    4 KiB pages (the targets are offset by 4 KiB, so no 2 MiB or 1 GiB leaf fits: 262144
//!    leaves in 512 leaf tables), published, and the auto HWPT the device leaves, just as
//!    large, is released;
//! 3. unmap the 1 GiB from the IOAS the device left (no domain there any more);
//! 4. unmap the 1 GiB from the IOAS the device is on: its live domain loses 262144 leaves and
//!    512 tables, retired behind the fence (the reader's requests fault until step 5);
//! 5. map the 1 GiB there again (populating the live domain).
//!
//! The previous read side freed a replaced-away domain in the reader's `drop(DmaGuard)` and
//! ran crossbeam's collection (freeing retired tables) inside pins: milliseconds on the DMA
//! thread. Now nothing may be freed there (G13): the row also gives the frees and allocations
//! the DMA thread made in the measured window, which must be 0.
//!
//! Rows:
//! - `viommu`: as above.
//! - `rwlock-btree`, for context: one `RwLock<BTreeMap>` (one entry a 4 KiB page) that the
//!   reader read-locks ("pin"), looks up ("translate") and unlocks ("drop"); its writer
//!   removes the 1 GiB range under one write lock (`retain`) and maps it back page by page, a
//!   write lock each (as 4 KiB MAP requests arrive). A reader that comes while the range is
//!   being removed waits for the whole removal.
//! - `unsync-radix`, the floor: the same loop with nothing to pin or drop (two clock readings)
//!   and a plain radix walk, beside the same viommu writer (on a context of its own). Whatever
//!   pauses it shows come from the machine (preemption, interrupts), not from a library call;
//!   a busy 2-core machine preempts a spinning thread every few milliseconds.

use super::{Case, CaseResult, DmaThread, Storm};
use crate::alloc::{thread_allocs, thread_frees};
use crate::args::Config;
use crate::baselines::{unsync::UnsyncRadix, Kind, Layout, Translator, PAGE, REQ_LEN};
use crate::clock::{ticks, Clock};
use crate::stats::{nanos, new_hist, record, Dist, Rng};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Instant;
use viommu::{Access, Device, DeviceInfo, GroupId, Iommu, ObjId, Prot};

/// 1 GiB.
pub const GIB: u64 = 1 << 30;
/// Where the 1 GiB region starts (1 GiB aligned).
pub const BIG_IOVA: u64 = 1 << 32;
/// Its targets in the two IOASes: 4 KiB aligned only, so every leaf is a 4 KiB leaf.
pub const BIG_TARGETS: [u64; 2] = [0x100_0000_1000, 0x200_0000_1000];
/// 4 KiB pages in the region.
pub const BIG_PAGES: u64 = GIB / PAGE;
/// A call this long or longer counts in `over_10us`.
const SLOW_NS: u64 = 10_000;

/// A random request in the 1 GiB region: a random page, a random 512-byte slot in it.
#[inline]
fn big_iova(rng: &mut Rng) -> u64 {
    let r = rng.next_u64();
    BIG_IOVA + (r % BIG_PAGES) * PAGE + (r >> 52 & 7) * REQ_LEN
}

/// The viommu writer's context: one device, two IOASes, the device on an auto HWPT of the
/// first, which maps the 1 GiB region.
pub struct BigDomains {
    /// The context.
    pub iommu: Iommu,
    /// The device's ID.
    pub dev_id: ObjId,
    /// Its handle.
    pub dev: Device,
    /// The two IOASes.
    pub ioas: [ObjId; 2],
}

impl BigDomains {
    /// Builds the context, the device attached to `ioas[0]` (populated).
    pub fn new() -> BigDomains {
        let iommu = crate::baselines::two_domains::new_iommu();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(0), DeviceInfo::default())
            .expect("device_bind");
        let ioas = [
            iommu.ioas_alloc().expect("ioas_alloc"),
            iommu.ioas_alloc().expect("ioas_alloc"),
        ];
        iommu
            .ioas_map(ioas[0], Some(BIG_IOVA), BIG_TARGETS[0], GIB, Prot::RW)
            .expect("ioas_map 1 GiB");
        iommu.device_attach(dev_id, ioas[0]).expect("device_attach");
        BigDomains {
            iommu,
            dev_id,
            dev,
            ioas,
        }
    }

    /// One writer cycle from the device on `ioas[cur]` to the device on `ioas[1 - cur]`
    /// (steps 1-5 of the module docs); records the replace, the unmap from the live domain
    /// and the map into it.
    fn cycle(&self, cur: usize, h: &mut WriterHists) -> Result<(), String> {
        let other = 1 - cur;
        let e = |what: &str, e: viommu::Error| format!("{what}: {e} (errno {})", e.errno());
        let (i, t) = (self.ioas, BIG_TARGETS);
        self.iommu
            .ioas_map(i[other], Some(BIG_IOVA), t[other], GIB, Prot::RW)
            .map_err(|x| e("ioas_map", x))?;
        let t0 = Instant::now();
        self.iommu
            .device_replace(self.dev_id, i[other])
            .map_err(|x| e("device_replace", x))?;
        let t1 = Instant::now();
        self.iommu
            .ioas_unmap(i[cur], BIG_IOVA, GIB)
            .map_err(|x| e("ioas_unmap (left IOAS)", x))?;
        let t2 = Instant::now();
        self.iommu
            .ioas_unmap(i[other], BIG_IOVA, GIB)
            .map_err(|x| e("ioas_unmap (live domain)", x))?;
        let t3 = Instant::now();
        self.iommu
            .ioas_map(i[other], Some(BIG_IOVA), t[other], GIB, Prot::RW)
            .map_err(|x| e("ioas_map (live domain)", x))?;
        let t4 = Instant::now();
        record(&mut h.replace, nanos(t1 - t0));
        record(&mut h.unmap, nanos(t3 - t2));
        record(&mut h.map, nanos(t4 - t3));
        Ok(())
    }
}

impl Default for BigDomains {
    fn default() -> Self {
        BigDomains::new()
    }
}

/// The writer's latencies.
struct WriterHists {
    replace: Histogram<u64>,
    unmap: Histogram<u64>,
    map: Histogram<u64>,
    cycles: u64,
    errors: u64,
    first_error: Option<String>,
}

impl WriterHists {
    fn new() -> WriterHists {
        WriterHists {
            replace: new_hist(),
            unmap: new_hist(),
            map: new_hist(),
            cycles: 0,
            errors: 0,
            first_error: None,
        }
    }
}

/// What the DMA thread measured.
struct DmaOut {
    pin: Histogram<u64>,
    translate: Histogram<u64>,
    drop: Histogram<u64>,
    iterations: u64,
    over: u64,
    over_unpreempted: u64,
    max_unpreempted: u64,
    faults: u64,
    frees: u64,
    allocs: u64,
    preempted: Option<u64>,
    seconds: f64,
}

/// The calling thread's involuntary context switch count, read from
/// `/proc/thread-self/status` (Linux) into a stack buffer: no heap call, so the DMA thread's
/// free and allocation counts stay the library's.
struct Preemptions {
    file: Option<std::fs::File>,
}

impl Preemptions {
    /// Opens the calling thread's status file (`thread-self` resolves at open).
    fn open() -> Preemptions {
        Preemptions {
            file: std::fs::File::open("/proc/thread-self/status").ok(),
        }
    }

    /// The count now, if the file is readable.
    fn read(&self) -> Option<u64> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 4096];
            let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        }
        #[cfg(not(unix))]
        {
            let _ = &self.file;
            None
        }
    }
}

/// The DMA loop: `pin`, `translate` through what it returned, drop it; each timed alone.
fn dma_loop<G>(
    clock: &Clock,
    warm_until: Instant,
    until: Instant,
    iova: impl Fn(&mut Rng) -> u64,
    pin: impl Fn() -> G,
    translate: impl Fn(&G, u64) -> Option<u64>,
) -> DmaOut {
    let mut rng = Rng::new(0xd3a_7a05e);
    let mut out = DmaOut {
        pin: new_hist(),
        translate: new_hist(),
        drop: new_hist(),
        iterations: 0,
        over: 0,
        over_unpreempted: 0,
        max_unpreempted: 0,
        faults: 0,
        frees: 0,
        allocs: 0,
        preempted: None,
        seconds: 0.0,
    };
    while Instant::now() < warm_until {
        for _ in 0..64 {
            let g = pin();
            black_box(translate(&g, iova(&mut rng)));
        }
    }
    let preempt = Preemptions::open();
    let pre0 = preempt.read();
    let mut seen = pre0;
    let (frees0, allocs0) = (thread_frees(), thread_allocs());
    let start = Instant::now();
    let mut now = start;
    while now < until {
        for _ in 0..256 {
            let at = iova(&mut rng);
            let c0 = ticks();
            let g = pin();
            let c1 = ticks();
            let r = translate(&g, black_box(at));
            let c2 = ticks();
            drop(g);
            let c3 = ticks();
            let (p, t, d) = (clock.ns(c0, c1), clock.ns(c1, c2), clock.ns(c2, c3));
            record(&mut out.pin, p);
            record(&mut out.translate, t);
            record(&mut out.drop, d);
            let longest = p.max(t).max(d);
            if longest >= SLOW_NS {
                out.over += 1;
                // Attributed to preemption when the thread's involuntary switch count rose
                // since the last check (the check is outside the timed calls).
                let now = preempt.read();
                if now.is_none() || now == seen {
                    out.over_unpreempted += 1;
                    out.max_unpreempted = out.max_unpreempted.max(longest);
                }
                seen = now;
            } else {
                out.max_unpreempted = out.max_unpreempted.max(longest);
            }
            if r.is_none() {
                out.faults += 1;
            }
        }
        out.iterations += 256;
        now = Instant::now();
    }
    out.seconds = (now - start).as_secs_f64();
    out.frees = thread_frees() - frees0;
    out.allocs = thread_allocs() - allocs0;
    out.preempted = match (pre0, preempt.read()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    out
}

/// Runs the viommu writer until `stop`, alternating the device between the two IOASes.
fn viommu_writer(big: &BigDomains, stop: &AtomicBool, warm_until: Instant) -> WriterHists {
    let mut h = WriterHists::new();
    let mut cur = 0;
    // Relaxed: the flag only ends the loop; the join orders what was recorded.
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut cycle = WriterHists::new();
        match big.cycle(cur, &mut cycle) {
            Ok(()) => {
                cur = 1 - cur;
                if started >= warm_until && !stop.load(Ordering::Relaxed) {
                    h.cycles += 1;
                    for (a, b) in [
                        (&mut h.replace, &cycle.replace),
                        (&mut h.unmap, &cycle.unmap),
                        (&mut h.map, &cycle.map),
                    ] {
                        a.add(b).expect("same histogram bounds");
                    }
                }
            }
            Err(e) => {
                h.errors += 1;
                h.first_error.get_or_insert(e);
                if h.errors > 100 {
                    break;
                }
            }
        }
    }
    h
}

/// `RwLock<BTreeMap>` of the region, one entry a 4 KiB page: `iova -> (target, len)`.
type Locked = RwLock<BTreeMap<u64, (u64, u64)>>;

fn btree_full() -> Locked {
    RwLock::new(
        (0..BIG_PAGES)
            .map(|i| (BIG_IOVA + i * PAGE, (BIG_TARGETS[0] + i * PAGE, PAGE)))
            .collect(),
    )
}

fn btree_writer(map: &Locked, stop: &AtomicBool, warm_until: Instant) -> WriterHists {
    let mut h = WriterHists::new();
    // Relaxed: see `viommu_writer`.
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        map.write()
            .expect("poisoned")
            .retain(|&k, _| !(BIG_IOVA..BIG_IOVA + GIB).contains(&k));
        let t1 = Instant::now();
        for i in 0..BIG_PAGES {
            if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
                break;
            }
            map.write()
                .expect("poisoned")
                .insert(BIG_IOVA + i * PAGE, (BIG_TARGETS[0] + i * PAGE, PAGE));
        }
        let t2 = Instant::now();
        if t0 >= warm_until && !stop.load(Ordering::Relaxed) {
            h.cycles += 1;
            record(&mut h.unmap, nanos(t1 - t0));
            record(&mut h.map, nanos(t2 - t1));
        }
    }
    h
}

/// Runs one row of `dma-pause`.
pub fn run(cfg: &Config, case: &Case) -> CaseResult {
    let mut res = CaseResult::new(case, Storm::Replace);
    let clock = Clock::calibrate();
    let stop = AtomicBool::new(false);
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + cfg.long;
    let (d, w) = match case.kind {
        Kind::RwLockBTree => {
            let map = btree_full();
            std::thread::scope(|s| {
                let writer = s.spawn(|| btree_writer(&map, &stop, warm_until));
                let d = dma_loop(
                    &clock,
                    warm_until,
                    until,
                    big_iova,
                    || map.read().expect("poisoned"),
                    |m, iova| {
                        let (&start, &(target, len)) = m.range(..=iova).next_back()?;
                        (iova - start + REQ_LEN <= len).then_some(target + (iova - start))
                    },
                );
                // Relaxed: see `viommu_writer`.
                stop.store(true, Ordering::Relaxed);
                (d, writer.join().expect("writer panicked"))
            })
        }
        Kind::Unsync => {
            let layout = Layout { pages: cfg.pages };
            let table = UnsyncRadix::new(&layout);
            let big = BigDomains::new();
            std::thread::scope(|s| {
                let writer = s.spawn(|| viommu_writer(&big, &stop, warm_until));
                let d = dma_loop(
                    &clock,
                    warm_until,
                    until,
                    |rng| layout.random_iova(rng),
                    || (),
                    |(), iova| table.translate(iova, REQ_LEN, Access::Read).ok(),
                );
                // Relaxed: see `viommu_writer`.
                stop.store(true, Ordering::Relaxed);
                (d, writer.join().expect("writer panicked"))
            })
        }
        _ => {
            let big = BigDomains::new();
            let r = std::thread::scope(|s| {
                let writer = s.spawn(|| viommu_writer(&big, &stop, warm_until));
                let d = dma_loop(
                    &clock,
                    warm_until,
                    until,
                    big_iova,
                    || big.dev.pin(),
                    |g, iova| {
                        let mut t = g.translate(iova, REQ_LEN, Access::Read).ok()?;
                        t.next().map(|c| c.target)
                    },
                );
                // Relaxed: see `viommu_writer`.
                stop.store(true, Ordering::Relaxed);
                (d, writer.join().expect("writer panicked"))
            });
            big.iommu.synchronize().expect("synchronize");
            r
        }
    };
    res.seconds = d.seconds;
    res.reader_ops = d.iterations;
    res.faults = d.faults;
    res.writer_ops = w.cycles;
    if d.seconds > 0.0 {
        res.writer_ops_per_s = w.cycles as f64 / d.seconds;
        res.mops_wall = d.iterations as f64 / d.seconds / 1e6;
    }
    res.writer_errors = w.errors;
    res.first_writer_error = w.first_error;
    res.allocs_per_op = d.allocs as f64 / d.iterations.max(1) as f64;
    res.dma = Some(DmaThread {
        iterations: d.iterations,
        over_10us: d.over,
        over_10us_unpreempted: d.over_unpreempted,
        max_unpreempted_ns: d.max_unpreempted,
        frees: d.frees,
        allocs: d.allocs,
        preempted: d.preempted,
        clock_ns: clock.pair_ns(),
        clock: clock.name,
    });
    for (name, h) in [
        ("pin", &d.pin),
        ("translate", &d.translate),
        ("drop", &d.drop),
        ("replace", &w.replace),
        ("unmap", &w.unmap),
        ("map", &w.map),
    ] {
        if let Some(x) = Dist::of(h) {
            res.latency.insert(name, x);
        }
    }
    if case.kind == Kind::Unsync {
        res.note = Some("floor: no pin or drop, a plain walk; the viommu writer beside".into());
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_requests_stay_in_the_region_and_one_page() {
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let iova = big_iova(&mut rng);
            assert!((BIG_IOVA..BIG_IOVA + GIB).contains(&iova));
            assert!(iova % PAGE + REQ_LEN <= PAGE);
        }
    }

    #[test]
    fn a_writer_cycle_moves_the_device_and_keeps_it_translating() {
        let big = BigDomains::new();
        let at = BIG_IOVA + 12345 * PAGE;
        let target = |b: &BigDomains| {
            b.dev
                .translate(at, 8, Access::Read)
                .ok()
                .and_then(|mut t| t.next())
                .map(|c| c.target)
        };
        assert_eq!(target(&big), Some(BIG_TARGETS[0] + 12345 * PAGE));
        let mut h = WriterHists::new();
        big.cycle(0, &mut h).unwrap();
        assert_eq!(target(&big), Some(BIG_TARGETS[1] + 12345 * PAGE));
        big.cycle(1, &mut h).unwrap();
        assert_eq!(target(&big), Some(BIG_TARGETS[0] + 12345 * PAGE));
        assert_eq!(h.replace.len(), 2);
        big.iommu.synchronize().unwrap();
        let s = big.iommu.stats();
        assert_eq!(s.live_domains, 1, "{s:?}");
    }
}
