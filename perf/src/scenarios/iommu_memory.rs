//! `iommu-memory`: 512-byte `Bytes::read_slice` and `write_slice` through rust-vmm vm-memory's
//! `IommuMemory<GuestMemoryMmap, _>`, over viommu's `DeviceIommu` (feature `vm-memory`), through
//! viommu's own `GuestMemory`, `DmaMemory<GuestMemoryMmap>` (`dma-memory`: a pin per access;
//! `dma-memory-pinned`: one `PinnedDmaMemory` per timed block of 16 accesses, as a device
//! pins around one descriptor chain), and over the two uses of vm-memory's documented `RwLock<Iotlb>` pattern
//! ([`crate::baselines::vm_iommu`]): `swap` (prefilled, never misses; a switch swaps a
//! prebuilt IOTLB in under the write lock: the pattern's cheapest switch) and `refill` (a cache
//! in front of a `BTreeMap` domain, emptied by a switch and refilled under the write lock on a
//! miss: what vm-memory's own test IOMMU and vhost-user do). The criterion bench
//! `benches/vm_memory.rs` measures the same designs; this is its throughput part in the suite.
//!
//! Shapes ([`Shape`]): `contiguous` (one 1 MiB mapping, every access at the same IOVA) and
//! `256_pages` (256 separately mapped pages with scattered targets, accessed in turn).
//!
//! Each case is one reader count (1 and 2). For each shape, idle and then under a replace
//! storm, for reads and then writes, the three designs run one after the other: N reader
//! threads access in a loop, timing blocks of 16 accesses with `Instant` (the per-access
//! percentiles); throughput is each reader's accesses over its measured time, summed. Under
//! `storm` the case's own thread switches the device's domain every 10 µs (spinning on the
//! clock): the adapter and `DmaMemory` `device_replace` between two HWPTs allocated on the same
//! IOAS (the same IOVAs to the same memory); `swap` and `refill` do their own switch. The switches counted
//! are those inside the readers' measured window. An access that fails is counted as a fault
//! (every access is mapped in both domains).

use super::{Case, CaseResult, Storm, STORM_PERIOD};
use crate::alloc::thread_allocs;
use crate::args::{Config, Mode};
use crate::baselines::two_domains::new_iommu;
use crate::baselines::vm_iommu::{ram, RefillIommu, Shape, SwapIommu, LEN};
use crate::stats::{nanos, new_hist, record, Dist, Pacer};
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::{Duration, Instant};
use viommu::vm_memory::{DeviceIommu, DmaMemory};
use viommu::{DeviceInfo, GroupId, HwptFlags, Prot};
use vm_memory::{Bytes, GuestAddress, IommuMemory};

/// Accesses per timed block.
const BLOCK: u64 = 16;

/// The designs, in report order.
pub const DESIGNS: [&str; 5] = [
    "viommu",
    "dma-memory",
    "dma-memory-pinned",
    "swap",
    "refill",
];

/// The two accesses.
pub const OPS: [&str; 2] = ["read", "write"];

/// Warm-up and measured time of each row: a fifth of the translate runs' warm-up and a
/// sixteenth of their measurement in quick mode (50 ms: 48 rows a reader count), so the
/// default run grows by a few seconds only; a fifth of each in full mode.
pub fn timing(cfg: &Config) -> (Duration, Duration) {
    match cfg.mode {
        Mode::Quick => (cfg.warmup / 5, cfg.measure / 16),
        Mode::Full => (cfg.warmup / 5, cfg.measure / 5),
    }
}

/// The row label `design/op/shape`, `'static` for the result records.
pub fn label(design: &str, op: &str, shape: Shape) -> &'static str {
    const LABELS: [&str; 20] = [
        "viommu/read/contiguous",
        "dma-memory/read/contiguous",
        "dma-memory-pinned/read/contiguous",
        "swap/read/contiguous",
        "refill/read/contiguous",
        "viommu/write/contiguous",
        "dma-memory/write/contiguous",
        "dma-memory-pinned/write/contiguous",
        "swap/write/contiguous",
        "refill/write/contiguous",
        "viommu/read/256_pages",
        "dma-memory/read/256_pages",
        "dma-memory-pinned/read/256_pages",
        "swap/read/256_pages",
        "refill/read/256_pages",
        "viommu/write/256_pages",
        "dma-memory/write/256_pages",
        "dma-memory-pinned/write/256_pages",
        "swap/write/256_pages",
        "refill/write/256_pages",
    ];
    let want = format!("{design}/{op}/{}", shape.name());
    LABELS
        .iter()
        .find(|l| **l == want)
        .copied()
        .expect("a known iommu-memory row")
}

/// One access of request `k`: a 512-byte read or write; false if it failed.
#[inline]
fn access<M: Bytes<GuestAddress>>(mem: &M, shape: Shape, write: bool, k: u64) -> bool {
    let at = shape.request(k);
    if write {
        let buf = [k as u8; LEN];
        mem.write_slice(black_box(&buf), black_box(at)).is_ok()
    } else {
        let mut buf = [0u8; LEN];
        let ok = mem.read_slice(black_box(&mut buf), black_box(at)).is_ok();
        black_box(&buf);
        ok
    }
}

/// What one reader thread measured.
struct ReaderOut {
    ops: u64,
    faults: u64,
    allocs: u64,
    secs: f64,
    hist: Histogram<u64>,
}

/// [`BLOCK`] accesses of `one`, requests `k + 1 ..= k + BLOCK`: the faults.
#[inline(always)]
fn block_of<F: Fn(u64) -> bool>(one: F, k: u64) -> u64 {
    let mut faults = 0;
    for i in 1..=BLOCK {
        faults += u64::from(!one(k + i));
    }
    faults
}

/// `block(k)` runs the accesses of requests `k + 1 ..= k + BLOCK` and returns their faults.
fn reader<F: Fn(u64) -> u64>(
    block: &F,
    seed: u64,
    warm_until: Instant,
    until: Instant,
) -> ReaderOut {
    let mut k = seed * 31;
    while Instant::now() < warm_until {
        black_box(block(k));
        k += BLOCK;
    }
    let mut o = ReaderOut {
        ops: 0,
        faults: 0,
        allocs: 0,
        secs: 0.0,
        hist: new_hist(),
    };
    let allocs = thread_allocs();
    let start = Instant::now();
    let mut now = start;
    while now < until {
        let t0 = now;
        o.faults += block(k);
        k += BLOCK;
        now = Instant::now();
        record(&mut o.hist, nanos(now - t0) / BLOCK);
        o.ops += BLOCK;
    }
    o.allocs = thread_allocs() - allocs;
    o.secs = (now - start).as_secs_f64();
    o
}

/// Runs `readers` threads of `block` (see [`reader`]) for `warm` + `measure`, with `storm` (if
/// any) switching every [`STORM_PERIOD`] on the calling thread, into `res`.
fn measure<F, S>(
    res: &mut CaseResult,
    readers: usize,
    (warm, measure): (Duration, Duration),
    block: &F,
    storm: Option<S>,
) where
    F: Fn(u64) -> u64 + Sync,
    S: FnMut() -> Result<(), String>,
{
    let warm_until = Instant::now() + warm;
    let until = warm_until + measure;
    let mut switches = 0u64;
    let outs: Vec<ReaderOut> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|r| s.spawn(move || reader(block, r as u64, warm_until, until)))
            .collect();
        if let Some(mut switch) = storm {
            let mut pacer = Pacer::new(STORM_PERIOD);
            while Instant::now() < until {
                pacer.wait();
                let t0 = Instant::now();
                let r = switch();
                if t0 >= warm_until && t0 < until {
                    switches += 1;
                }
                if let Err(e) = r {
                    res.writer_errors += 1;
                    res.first_writer_error.get_or_insert(e);
                    if res.writer_errors > 100 {
                        break;
                    }
                }
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("reader panicked"))
            .collect()
    });
    let mut hist = new_hist();
    let mut allocs = 0;
    for o in &outs {
        res.reader_ops += o.ops;
        res.faults += o.faults;
        allocs += o.allocs;
        if o.secs > 0.0 {
            res.mops += o.ops as f64 / o.secs / 1e6;
        }
        res.seconds = res.seconds.max(o.secs);
        hist.add(&o.hist).expect("same bounds");
    }
    if res.seconds > 0.0 {
        res.mops_wall = res.reader_ops as f64 / res.seconds / 1e6;
        res.writer_ops_per_s = switches as f64 / res.seconds;
    }
    res.writer_ops = switches;
    res.allocs_per_op = allocs as f64 / res.reader_ops.max(1) as f64;
    if let Some(d) = Dist::of(&hist) {
        res.latency.insert("access", d);
    }
}

/// Runs every row of the case's reader count: one result per shape, storm, access and design.
pub fn run(cfg: &Config, case: &Case) -> Vec<CaseResult> {
    let times = timing(cfg);
    let mut out = Vec::new();
    for shape in Shape::ALL {
        // The adapter: one device on one of two HWPTs of the same IOAS.
        let iommu = new_iommu();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .expect("device_bind");
        let ioas = iommu.ioas_alloc().expect("ioas_alloc");
        for (iova, target, len) in shape.mappings() {
            iommu
                .ioas_map(ioas, Some(iova), target, len, Prot::RW)
                .expect("ioas_map");
        }
        let hwpts = [0, 1].map(|_| {
            iommu
                .hwpt_alloc(dev_id, ioas, HwptFlags::empty())
                .expect("hwpt_alloc")
        });
        iommu
            .device_attach(dev_id, hwpts[0])
            .expect("device_attach");
        let ours = IommuMemory::new(ram(), DeviceIommu::new(dev.clone()), true, ());
        let dma = DmaMemory::new(ram(), dev);
        let swap = IommuMemory::new(ram(), SwapIommu::new(shape), true, ());
        let refill = IommuMemory::new(ram(), RefillIommu::new(shape), true, ());
        let mut current = 0;
        for storm in [Storm::None, Storm::Replace] {
            let stormy = storm == Storm::Replace;
            for op in OPS {
                let write = op == "write";
                for design in DESIGNS {
                    let mut res = CaseResult::new(case, storm);
                    res.baseline = label(design, op, shape);
                    let replace = || {
                        current ^= 1;
                        iommu
                            .device_replace(dev_id, hwpts[current])
                            .map(|_| ())
                            .map_err(|e| format!("{e} (errno {})", e.errno()))
                    };
                    match design {
                        "viommu" => {
                            let one = |k| block_of(|k| access(&ours, shape, write, k), k);
                            measure(
                                &mut res,
                                case.readers,
                                times,
                                &one,
                                stormy.then_some(replace),
                            );
                        }
                        "dma-memory" => {
                            let one = |k| block_of(|k| access(&dma, shape, write, k), k);
                            measure(
                                &mut res,
                                case.readers,
                                times,
                                &one,
                                stormy.then_some(replace),
                            );
                        }
                        "dma-memory-pinned" => {
                            // One pin around the block, as around a descriptor chain.
                            let one = |k| {
                                let chain = dma.pin();
                                block_of(|k| access(&chain, shape, write, k), k)
                            };
                            measure(
                                &mut res,
                                case.readers,
                                times,
                                &one,
                                stormy.then_some(replace),
                            );
                        }
                        "swap" => {
                            let one = |k| block_of(|k| access(&swap, shape, write, k), k);
                            let switch = || {
                                swap.iommu().switch();
                                Ok(())
                            };
                            measure(
                                &mut res,
                                case.readers,
                                times,
                                &one,
                                stormy.then_some(switch),
                            );
                        }
                        _ => {
                            let one = |k| block_of(|k| access(&refill, shape, write, k), k);
                            let switch = || {
                                refill.iommu().switch();
                                Ok(())
                            };
                            measure(
                                &mut res,
                                case.readers,
                                times,
                                &one,
                                stormy.then_some(switch),
                            );
                        }
                    }
                    out.push(res);
                }
            }
        }
        drop(ours);
        drop(dma);
        iommu.synchronize().expect("synchronize");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_known() {
        for shape in Shape::ALL {
            for op in OPS {
                for d in DESIGNS {
                    assert_eq!(label(d, op, shape), format!("{d}/{op}/{}", shape.name()));
                }
            }
        }
    }

    #[test]
    fn adapter_and_baselines_agree_through_iommu_memory() {
        for shape in Shape::ALL {
            let iommu = new_iommu();
            let (dev_id, dev) = iommu
                .device_bind(GroupId(1), DeviceInfo::default())
                .unwrap();
            let ioas = iommu.ioas_alloc().unwrap();
            for (iova, target, len) in shape.mappings() {
                iommu
                    .ioas_map(ioas, Some(iova), target, len, Prot::RW)
                    .unwrap();
            }
            let h = [0, 1].map(|_| iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty()).unwrap());
            iommu.device_attach(dev_id, h[0]).unwrap();
            let ours = IommuMemory::new(ram(), DeviceIommu::new(dev.clone()), true, ());
            let dma = DmaMemory::new(ram(), dev);
            for k in [0, 5, 200] {
                assert!(access(&ours, shape, true, k));
                assert!(access(&dma, shape, true, k));
                iommu.device_replace(dev_id, h[(k % 2) as usize]).unwrap();
                let mut buf = [0u8; LEN];
                ours.read_slice(&mut buf, shape.request(k)).unwrap();
                assert_eq!(buf, [k as u8; LEN]);
                dma.pin().read_slice(&mut buf, shape.request(k)).unwrap();
                assert_eq!(buf, [k as u8; LEN]);
            }
        }
    }
}
