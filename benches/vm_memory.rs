//! Bench of the `vm-memory` feature: 512-byte `Bytes::read_slice`s through
//! `IommuMemory<GuestMemoryMmap, DeviceIommu>` and through `DmaMemory<GuestMemoryMmap>`
//! (`dma_memory`: a pin per read; `dma_memory_pinned`: reads under one held
//! `PinnedDmaMemory`, as inside a descriptor chain) against vm-memory's documented pattern, an
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
//!    `DmaMemory` runs as the adapter does (the same device, the same storm), in its own
//!    columns with its ratio to `refill`.
//!
//!    Each row prints the designs' reads/s, the ratios adapter / baseline (higher is
//!    better for the adapter), and the replaces each storm achieved per second. With 2 readers and a
//!    storm on a 2-core machine there are three busy threads on two cores. The machine's load
//!    average at the start is printed with the table.
//!
//! Run with `cargo bench --features vm-memory --bench vm_memory` (about a minute).

use criterion::{black_box, Criterion};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use viommu::vm_memory::{DeviceIommu, DmaMemory};
use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, Prot};
use vm_memory::{Bytes, GuestAddress, IommuMemory};

/// The baselines, the shapes and the guest memory: the latency suite's own
/// (`perf/src/baselines/vm_iommu.rs`), so the bench and the suite measure the same designs.
#[path = "../perf/src/baselines/vm_iommu.rs"]
#[allow(dead_code, unused_imports)]
mod vm_iommu;
use vm_iommu::{ram, RefillIommu, Shape, SwapIommu, IOVA, LEN, PAGE};

/// The throughput part: unmeasured reading before each measurement, and the measurement.
const WARMUP_MS: u64 = 200;
const THROUGHPUT_MS: u64 = 600;
/// The replace storm's period.
const STORM_PERIOD: Duration = Duration::from_micros(10);

/// A device attached to one of two user HWPTs on an IOAS holding `shape`'s mappings (both map
/// the same IOVAs to the same memory). Returns the `Iommu`, the device ID, the two HWPTs and
/// the adapter over the device.
fn adapter(
    shape: Shape,
) -> (
    Iommu,
    viommu::ObjId,
    [viommu::ObjId; 2],
    IommuMemory<vm_memory::GuestMemoryMmap, DeviceIommu>,
) {
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    for (iova, target, len) in shape.mappings() {
        iommu
            .ioas_map(ioas, Some(iova), target, len, Prot::RW)
            .unwrap();
    }
    let hwpts = [
        iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty()).unwrap(),
        iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty()).unwrap(),
    ];
    iommu.device_attach(dev_id, hwpts[0]).unwrap();
    let mem = IommuMemory::new(ram(), DeviceIommu::new(dev), true, ());
    (iommu, dev_id, hwpts, mem)
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("vm_memory_read512");
    for shape in Shape::ALL {
        let name = shape.name();
        let (_iommu, _dev, _hwpts, ours) = adapter(shape);
        let theirs = IommuMemory::new(ram(), SwapIommu::new(shape), true, ());
        let bypass = IommuMemory::new(ram(), SwapIommu::new(shape), false, ());
        let mut buf = [0u8; LEN];

        let mut k = 0u64;
        g.bench_function(format!("viommu/{name}"), |b| {
            b.iter(|| {
                k += 1;
                ours.read_slice(black_box(&mut buf), black_box(shape.request(k)))
                    .unwrap();
            })
        });
        g.bench_function(format!("rwlock_iotlb/{name}"), |b| {
            b.iter(|| {
                k += 1;
                theirs
                    .read_slice(black_box(&mut buf), black_box(shape.request(k)))
                    .unwrap();
            })
        });
        g.bench_function(format!("bypass/{name}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(shape.request(k).0 - IOVA);
                bypass
                    .read_slice(black_box(&mut buf), black_box(at))
                    .unwrap();
            })
        });
        let dev = ours.iommu().device().clone();
        let dma = DmaMemory::new(ram(), dev.clone());
        g.bench_function(format!("dma_memory/{name}"), |b| {
            b.iter(|| {
                k += 1;
                dma.read_slice(black_box(&mut buf), black_box(shape.request(k)))
                    .unwrap();
            })
        });
        g.bench_function(format!("dma_memory_pinned/{name}"), |b| {
            let chain = dma.pin();
            b.iter(|| {
                k += 1;
                chain
                    .read_slice(black_box(&mut buf), black_box(shape.request(k)))
                    .unwrap();
            })
        });
        // Where the adapter's time goes: the pin + walk alone.
        g.bench_function(format!("pin_walk_only/{name}"), |b| {
            b.iter(|| {
                k += 1;
                let at = shape.request(k).0;
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
        "{:<11} {:>7} {:>6} {:>13} {:>7} {:>13} {:>13} {:>7} {:>13} {:>7} {:>13} {:>13} {:>13}",
        "shape",
        "readers",
        "load",
        "dma_mem r/s",
        "/refill",
        "viommu r/s",
        "swap r/s",
        "ratio",
        "refill r/s",
        "ratio",
        "viommu rep/s",
        "swap rep/s",
        "refill rep/s"
    );
    for shape in Shape::ALL {
        let name = shape.name();
        let (iommu, dev_id, hwpts, ours) = adapter(shape);
        let theirs = IommuMemory::new(ram(), SwapIommu::new(shape), true, ());
        let refill = IommuMemory::new(ram(), RefillIommu::new(shape), true, ());
        let dma = DmaMemory::new(ram(), ours.iommu().device().clone());
        let read_dma = |k: u64| {
            let mut buf = [0u8; LEN];
            dma.read_slice(black_box(&mut buf), black_box(shape.request(k)))
                .unwrap();
        };
        let read_ours = |k: u64| {
            let mut buf = [0u8; LEN];
            ours.read_slice(black_box(&mut buf), black_box(shape.request(k)))
                .unwrap();
        };
        let read_theirs = |k: u64| {
            let mut buf = [0u8; LEN];
            theirs
                .read_slice(black_box(&mut buf), black_box(shape.request(k)))
                .unwrap();
        };
        let read_refill = |k: u64| {
            let mut buf = [0u8; LEN];
            refill
                .read_slice(black_box(&mut buf), black_box(shape.request(k)))
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
                let mut current = 0;
                let replace = || {
                    current ^= 1;
                    iommu.device_replace(dev_id, hwpts[current]).unwrap();
                };
                let (dma_rps, _) = throughput(readers, read_dma, storm.then_some(replace));
                let swap = || theirs.iommu().switch();
                let (theirs_rps, theirs_rep) =
                    throughput(readers, read_theirs, storm.then_some(swap));
                let switch = || refill.iommu().switch();
                let (refill_rps, refill_rep) =
                    throughput(readers, read_refill, storm.then_some(switch));
                println!(
                    "{:<11} {:>7} {:>6} {:>13.0} {:>6.2}x {:>13.0} {:>13.0} {:>6.2}x {:>13.0} {:>6.2}x {:>13.0} {:>13.0} {:>13.0}",
                    name,
                    readers,
                    if storm { "storm" } else { "idle" },
                    dma_rps,
                    dma_rps / refill_rps,
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
