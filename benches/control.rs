//! Criterion benches of the control plane: replace publish (and detach + attach for
//! comparison), and map + unmap of 4 KiB and 2 MiB pages, alone and with a second thread
//! translating through the device at the same time (so `ioas_unmap`'s fence has a reader to
//! wait for).
//!
//! Run with `cargo bench --bench control`; `docs/benchmarks.md` says what each group
//! measures. The latency suite with percentiles and ratio targets is `viommu-perf`.

use criterion::{black_box, BenchmarkId, Criterion};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use viommu::{Access, Device, DeviceInfo, GroupId, HwptFlags, Iommu, ObjId, Prot};

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;
/// The readers' pages: 256 × 4 KiB, target not 2 MiB aligned (4 KiB leaves).
const IOVA_BASE: u64 = 0x1000_0000;
const TARGETS: [u64; 2] = [0x40_0000_1000, 0x80_0000_1000];
const PAGES: u64 = 256;
/// Where map/unmap benches put their mapping (1 GiB aligned, as is its target).
const SCRATCH_IOVA: u64 = 1 << 40;
const SCRATCH_TARGET: u64 = 0xc0_0000_0000;

/// One device on domain 0 of two prebuilt user HWPTs (two IOASes mapping the same IOVAs to
/// different targets).
struct Fixture {
    iommu: Iommu,
    dev_id: ObjId,
    dev: Device,
    ioas: [ObjId; 2],
    hwpt: [ObjId; 2],
}

impl Fixture {
    fn new() -> Fixture {
        let iommu = Iommu::new();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(0), DeviceInfo::default())
            .expect("bind");
        let mut ioas = [dev_id; 2];
        let mut hwpt = [dev_id; 2];
        for d in 0..2 {
            ioas[d] = iommu.ioas_alloc().expect("ioas");
            for i in 0..PAGES {
                iommu
                    .ioas_map(
                        ioas[d],
                        Some(IOVA_BASE + i * PAGE),
                        TARGETS[d] + i * PAGE,
                        PAGE,
                        Prot::RW,
                    )
                    .expect("map");
            }
            hwpt[d] = iommu
                .hwpt_alloc(dev_id, ioas[d], HwptFlags::empty())
                .expect("hwpt");
        }
        iommu.device_attach(dev_id, hwpt[0]).expect("attach");
        Fixture {
            iommu,
            dev_id,
            dev,
            ioas,
            hwpt,
        }
    }

    /// One translation of a mapped page, as a busy DMA thread makes.
    fn translate_some(&self, k: u64) -> u64 {
        let iova = IOVA_BASE + (k % PAGES) * PAGE;
        self.dev
            .translate(iova, 512, Access::Read)
            .ok()
            .and_then(|mut t| t.next())
            .map_or(0, |c| c.target)
    }
}

/// Runs `body` while a second thread translates through `f`'s device in a loop.
fn with_reader<R>(f: &Fixture, body: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0u64;
            // Relaxed: the flag only ends the loop.
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                black_box(f.translate_some(k));
            }
        });
        let r = body();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

fn replace(c: &mut Criterion) {
    let f = Fixture::new();
    let mut g = c.benchmark_group("replace");
    for contended in [false, true] {
        let label = if contended { "reader_beside" } else { "alone" };
        let mut to = 0usize;
        let mut run = |g: &mut criterion::BenchmarkGroup<'_, _>| {
            g.bench_function(BenchmarkId::new("device_replace", label), |b| {
                b.iter(|| {
                    to ^= 1;
                    f.iommu
                        .device_replace(f.dev_id, f.hwpt[to])
                        .expect("replace")
                })
            });
            g.bench_function(BenchmarkId::new("detach_attach", label), |b| {
                b.iter(|| {
                    to ^= 1;
                    f.iommu.device_detach(f.dev_id).expect("detach");
                    f.iommu.device_attach(f.dev_id, f.hwpt[to]).expect("attach")
                })
            });
        };
        if contended {
            with_reader(&f, || run(&mut g));
        } else {
            run(&mut g);
        }
    }
    g.finish();
}

fn map_unmap(c: &mut Criterion) {
    let f = Fixture::new();
    let mut g = c.benchmark_group("map_unmap");
    for (size, len) in [("4K", PAGE), ("2M", MIB2)] {
        for contended in [false, true] {
            let label = format!(
                "{size}/{}",
                if contended { "reader_beside" } else { "alone" }
            );
            let run = |g: &mut criterion::BenchmarkGroup<'_, _>| {
                g.bench_function(BenchmarkId::new("pair", &label), |b| {
                    b.iter(|| {
                        f.iommu
                            .ioas_map(f.ioas[0], Some(SCRATCH_IOVA), SCRATCH_TARGET, len, Prot::RW)
                            .expect("map");
                        f.iommu
                            .ioas_unmap(f.ioas[0], SCRATCH_IOVA, len)
                            .expect("unmap")
                    })
                });
            };
            if contended {
                with_reader(&f, || run(&mut g));
            } else {
                run(&mut g);
            }
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

fn main() {
    let mut c = config().configure_from_args();
    replace(&mut c);
    map_unmap(&mut c);
    c.final_summary();
}
