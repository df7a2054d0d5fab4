//! Bench of the `vm-memory` feature: 512-byte `Bytes::read_slice`s through
//! `IommuMemory<GuestMemoryMmap, DeviceIommu>` against vm-memory's documented pattern, an
//! `Iommu` whose `translate` is `Iotlb::lookup` on an `RwLock<Iotlb>` read guard (prefilled, so
//! it never misses), and against bypass (no IOMMU: the floor).
//!
//! Two shapes: `contiguous` (one buffer, 512 bytes inside one page, read again and again: one
//! IOTLB entry for the baseline, a reused scratch entry for the adapter) and `256_pages`
//! (256 separately mapped pages with scattered targets, read in turn: 256 IOTLB entries for the
//! baseline, a refilled scratch for the adapter).
//!
//! Two parts, one run:
//!
//! 1. **Criterion, one thread, idle** (group `vm_memory_read512`): the time of one read, for
//!    the adapter, the baseline and bypass, plus the adapter's pin + walk alone.
//! 2. **Throughput, 1 and 2 reader threads, idle and under a replace storm** (printed as a
//!    table after criterion's output; criterion does not measure multi-thread throughput). A
//!    plain timed loop: N reader threads (scoped, started together behind a barrier) each call
//!    `read_slice` in a loop over the shape's request stream until a stop flag is set after
//!    `THROUGHPUT_MS` (after `WARMUP_MS` of unmeasured reading); reads/s is the sum of their
//!    completed reads divided by the measured wall time. Under `storm`, one more thread
//!    switches the device's domain every `STORM_PERIOD` (10 µs; it spins on the clock, since a
//!    10 µs sleep overshoots) for as long as the readers run:
//!    * adapter: the device is attached to one of two HWPTs allocated on the same IOAS (so
//!      both map the same IOVAs to the same memory), and the storm calls `device_replace`
//!      to the other one;
//!    * baseline `swap`: the storm builds the new domain's IOTLB (the same entries) outside the
//!      lock, then takes the write lock and swaps it in, as a cloud-hypervisor-style domain
//!      switch replaces the device's mappings under its write lock; the old IOTLB is dropped
//!      after unlocking. That is the baseline's cheapest switch: its readers wait only for
//!      the swap, and never miss;
//!    * baseline `refill`: vm-memory's documented use of the pattern, the `Iotlb` as a cache in
//!      front of the domain (vm-memory's own test IOMMU, the vhost-user IOTLB): a miss reads
//!      the active domain's mapping (a `BTreeMap`) and inserts it under the write lock; the
//!      storm empties the IOTLB under the write lock and switches the active domain, so the
//!      readers refill what they use after every switch (one entry for `contiguous`, up to
//!      256 for `256_pages`). Idle, it never misses after warm-up (the same cost as `swap`).
//!
//!    Each row prints the three designs' reads/s, the ratios adapter / baseline (higher is
//!    better for the adapter), and the replaces each storm achieved per second. With 2 readers and a
//!    storm on a 2-core machine there are three busy threads on two cores. The machine's load
//!    average at the start is printed with the table.
//!
//! Run with `cargo bench --features vm-memory --bench vm_memory` (about a minute).

use criterion::{black_box, Criterion};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};
use viommu::vm_memory::DeviceIommu;
use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, Prot};
use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryMmap, Iommu as VmIommu, IommuMemory, Iotlb, Permissions,
};

const PAGE: u64 = 4096;
const PAGES: u64 = 256;
const RAM: u64 = PAGES * PAGE;
const IOVA: u64 = 0x1000_0000;
const LEN: usize = 512;
/// The throughput part: unmeasured reading before each measurement, and the measurement.
const WARMUP_MS: u64 = 200;
const THROUGHPUT_MS: u64 = 600;
/// The replace storm's period.
const STORM_PERIOD: Duration = Duration::from_micros(10);

/// vm-memory's documented pattern: an `Iotlb` behind an `RwLock`, looked up under a read guard.
#[derive(Debug, Default)]
struct RwLockIommu {
    iotlb: RwLock<Iotlb>,
}

impl VmIommu for RwLockIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        Iotlb::lookup(self.iotlb.read().unwrap(), iova, length, access).map_err(|_| {
            IommuError::CannotResolve {
                iova_range: IovaRange { base: iova, length },
                reason: "miss".into(),
            }
        })
    }
}

/// vm-memory's documented pattern with its data source: the `Iotlb` is a cache in front of
/// the device's domain (as `vm_memory::iommu`'s own test IOMMU, and the vhost-user IOTLB, use
/// it): `translate` looks up under the read guard; on a miss it reads the mapping from the
/// active domain (a cloud-hypervisor-style `BTreeMap` of mappings) and inserts it under the
/// write lock, then looks up again. A domain switch empties the IOTLB under the write lock and
/// makes the other domain active, so readers refill what they use.
#[derive(Debug)]
struct RefillIommu {
    iotlb: RwLock<Iotlb>,
    /// Two domains with the same mappings, IOVA -> (target, len); `active` names the current
    /// one (changed under the IOTLB's write lock).
    domains: [BTreeMap<u64, (u64, u64)>; 2],
    active: AtomicUsize,
}

impl RefillIommu {
    fn new(shape: &str) -> RefillIommu {
        let domain: BTreeMap<u64, (u64, u64)> = mappings(shape)
            .into_iter()
            .map(|(iova, target, len)| (iova, (target, len)))
            .collect();
        RefillIommu {
            iotlb: RwLock::new(Iotlb::new()),
            domains: [domain.clone(), domain],
            active: AtomicUsize::new(0),
        }
    }

    /// The domain switch: the IOTLB emptied, the other domain active.
    fn switch(&self) {
        let mut iotlb = self.iotlb.write().unwrap();
        iotlb.invalidate_all();
        self.active.fetch_xor(1, Ordering::Relaxed);
    }
}

impl VmIommu for RefillIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        let miss = |base: GuestAddress| IommuError::CannotResolve {
            iova_range: IovaRange { base, length },
            reason: "not mapped".into(),
        };
        loop {
            let fails = match Iotlb::lookup(self.iotlb.read().unwrap(), iova, length, access) {
                Ok(hit) => return Ok(hit),
                Err(fails) => fails,
            };
            let Some(missed) = fails.misses.first() else {
                return Err(miss(iova));
            };
            let mut iotlb = self.iotlb.write().unwrap();
            // The active domain, read under the write lock so a switch cannot slip between.
            let domain = &self.domains[self.active.load(Ordering::Relaxed)];
            let at = missed.base.0;
            let Some((&start, &(target, len))) = domain.range(..=at).next_back() else {
                return Err(miss(missed.base));
            };
            if at >= start + len {
                return Err(miss(missed.base));
            }
            iotlb
                .set_mapping(
                    GuestAddress(start),
                    GuestAddress(target),
                    len as usize,
                    Permissions::ReadWrite,
                )
                .map_err(|_| miss(missed.base))?;
        }
    }
}

/// The target page of IOVA page `i` in the `256_pages` shape: scattered, so no two neighbours
/// are contiguous.
fn scattered(i: u64) -> u64 {
    ((i * 97) % PAGES) * PAGE
}

fn ram() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
}

/// `(name, offset of request k)`: the shapes' request streams.
fn requests(shape: &str, k: u64) -> u64 {
    match shape {
        "contiguous" => 0x100,
        _ => (k % PAGES) * PAGE + 0x100,
    }
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("vm_memory_read512");
    for shape in ["contiguous", "256_pages"] {
        // The adapter.
        let iommu = Iommu::new();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .unwrap();
        let ioas = iommu.ioas_alloc().unwrap();
        // The baseline's IOTLB, filled with the same mappings.
        let baseline = RwLockIommu::default();
        if shape == "contiguous" {
            iommu.ioas_map(ioas, Some(IOVA), 0, RAM, Prot::RW).unwrap();
            baseline
                .iotlb
                .write()
                .unwrap()
                .set_mapping(
                    GuestAddress(IOVA),
                    GuestAddress(0),
                    RAM as usize,
                    Permissions::ReadWrite,
                )
                .unwrap();
        } else {
            for i in 0..PAGES {
                let (iova, target) = (IOVA + i * PAGE, scattered(i));
                iommu
                    .ioas_map(ioas, Some(iova), target, PAGE, Prot::RW)
                    .unwrap();
                baseline
                    .iotlb
                    .write()
                    .unwrap()
                    .set_mapping(
                        GuestAddress(iova),
                        GuestAddress(target),
                        PAGE as usize,
                        Permissions::ReadWrite,
                    )
                    .unwrap();
            }
        }
        iommu.device_attach(dev_id, ioas).unwrap();
        let ours = IommuMemory::new(ram(), DeviceIommu::new(dev), true, ());
        let theirs = IommuMemory::new(ram(), baseline, true, ());
        let bypass = IommuMemory::new(ram(), RwLockIommu::default(), false, ());
        let mut buf = [0u8; LEN];

        let mut k = 0u64;
        g.bench_function(format!("viommu/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(IOVA + requests(shape, k));
                ours.read_slice(black_box(&mut buf), black_box(at)).unwrap();
            })
        });
        g.bench_function(format!("rwlock_iotlb/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(IOVA + requests(shape, k));
                theirs
                    .read_slice(black_box(&mut buf), black_box(at))
                    .unwrap();
            })
        });
        g.bench_function(format!("bypass/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(requests(shape, k));
                bypass
                    .read_slice(black_box(&mut buf), black_box(at))
                    .unwrap();
            })
        });
        // Where the adapter's time goes: the pin + walk alone.
        let dev = ours.iommu().device().clone();
        g.bench_function(format!("pin_walk_only/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = IOVA + requests(shape, k);
                let dma = dev.pin();
                let t = dma
                    .translate(black_box(at & !(PAGE - 1)), PAGE, viommu::Access::Read)
                    .unwrap();
                black_box(t.as_slice()[0].target);
            })
        });
    }
    g.finish();
}

/// The `(iova, target, len)` mappings of a shape.
fn mappings(shape: &str) -> Vec<(u64, u64, u64)> {
    if shape == "contiguous" {
        vec![(IOVA, 0, RAM)]
    } else {
        (0..PAGES)
            .map(|i| (IOVA + i * PAGE, scattered(i), PAGE))
            .collect()
    }
}

/// A prefilled IOTLB with a shape's mappings.
fn iotlb(shape: &str) -> Iotlb {
    let mut t = Iotlb::new();
    for (iova, target, len) in mappings(shape) {
        t.set_mapping(
            GuestAddress(iova),
            GuestAddress(target),
            len as usize,
            Permissions::ReadWrite,
        )
        .unwrap();
    }
    t
}

/// Waits for the storm's next deadline by spinning on the clock, unless the run is over.
fn spin_until(deadline: Instant, stop: &AtomicBool) -> bool {
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::hint::spin_loop();
    }
    !stop.load(Ordering::Relaxed)
}

/// Reads/s of `readers` threads calling `read` (with the request count) while `storm` (if any)
/// runs on one more thread, and the storm's replaces/s. See the module docs.
fn throughput<R, S>(readers: usize, read: R, storm: Option<S>) -> (f64, f64)
where
    R: Fn(u64) + Sync,
    S: FnMut() + Send,
{
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let start = Barrier::new(readers + 1 + usize::from(storm.is_some()));
    thread::scope(|s| {
        let storm = storm.map(|mut switch| {
            let (stop, start) = (&stop, &start);
            s.spawn(move || {
                start.wait();
                let t0 = Instant::now();
                let mut next = t0;
                let mut n = 0u64;
                loop {
                    next += STORM_PERIOD;
                    if !spin_until(next, stop) {
                        break;
                    }
                    switch();
                    n += 1;
                }
                n as f64 / t0.elapsed().as_secs_f64()
            })
        });
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let (stop, measuring, start, read) = (&stop, &measuring, &start, &read);
                s.spawn(move || {
                    start.wait();
                    let mut k = r as u64 * 31;
                    while !measuring.load(Ordering::Relaxed) {
                        k += 1;
                        read(k);
                    }
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        read(k);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        start.wait();
        thread::sleep(Duration::from_millis(WARMUP_MS));
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        thread::sleep(Duration::from_millis(THROUGHPUT_MS));
        stop.store(true, Ordering::Relaxed);
        let reads: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let secs = t0.elapsed().as_secs_f64();
        let replaces = storm.map_or(0.0, |h| h.join().unwrap());
        (reads as f64 / secs, replaces)
    })
}

fn throughput_table() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "vm_memory throughput: 512-byte read_slice, {THROUGHPUT_MS} ms per case, storm period \
         {STORM_PERIOD:?}; {cores} cores, load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<11} {:>7} {:>6} {:>13} {:>13} {:>7} {:>13} {:>7} {:>13} {:>13} {:>13}",
        "shape",
        "readers",
        "load",
        "viommu r/s",
        "swap r/s",
        "ratio",
        "refill r/s",
        "ratio",
        "viommu rep/s",
        "swap rep/s",
        "refill rep/s"
    );
    for shape in ["contiguous", "256_pages"] {
        let iommu = Iommu::new();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .unwrap();
        let ioas = iommu.ioas_alloc().unwrap();
        for (iova, target, len) in mappings(shape) {
            iommu
                .ioas_map(ioas, Some(iova), target, len, Prot::RW)
                .unwrap();
        }
        let hwpts = [
            iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty()).unwrap(),
            iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty()).unwrap(),
        ];
        iommu.device_attach(dev_id, hwpts[0]).unwrap();
        let ours = IommuMemory::new(ram(), DeviceIommu::new(dev), true, ());
        let theirs = IommuMemory::new(
            ram(),
            RwLockIommu {
                iotlb: RwLock::new(iotlb(shape)),
            },
            true,
            (),
        );
        let refill = IommuMemory::new(ram(), RefillIommu::new(shape), true, ());
        let read_refill = |k: u64| {
            let mut buf = [0u8; LEN];
            let at = GuestAddress(IOVA + requests(shape, k));
            refill
                .read_slice(black_box(&mut buf), black_box(at))
                .unwrap();
        };
        let read_ours = |k: u64| {
            let mut buf = [0u8; LEN];
            let at = GuestAddress(IOVA + requests(shape, k));
            ours.read_slice(black_box(&mut buf), black_box(at)).unwrap();
        };
        let read_theirs = |k: u64| {
            let mut buf = [0u8; LEN];
            let at = GuestAddress(IOVA + requests(shape, k));
            theirs
                .read_slice(black_box(&mut buf), black_box(at))
                .unwrap();
        };
        for readers in [1, 2] {
            for storm in [false, true] {
                let mut current = 0;
                let replace = || {
                    current ^= 1;
                    iommu.device_replace(dev_id, hwpts[current]).unwrap();
                };
                let (ours_rps, ours_rep) = throughput(readers, read_ours, storm.then_some(replace));
                let swap = || {
                    let mut fresh = iotlb(shape);
                    std::mem::swap(&mut *theirs.iommu().iotlb.write().unwrap(), &mut fresh);
                    drop(fresh);
                };
                let (theirs_rps, theirs_rep) =
                    throughput(readers, read_theirs, storm.then_some(swap));
                let switch = || refill.iommu().switch();
                let (refill_rps, refill_rep) =
                    throughput(readers, read_refill, storm.then_some(switch));
                println!(
                    "{:<11} {:>7} {:>6} {:>13.0} {:>13.0} {:>6.2}x {:>13.0} {:>6.2}x {:>13.0} {:>13.0} {:>13.0}",
                    shape,
                    readers,
                    if storm { "storm" } else { "idle" },
                    ours_rps,
                    theirs_rps,
                    ours_rps / theirs_rps,
                    refill_rps,
                    ours_rps / refill_rps,
                    ours_rep,
                    theirs_rep,
                    refill_rep
                );
            }
        }
    }
}

fn main() {
    // The other benches' settings (benches/common): short warm-up and measurement.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    read(&mut c);
    c.final_summary();
    throughput_table();
}
