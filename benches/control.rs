//! Criterion benches of the control plane: replace publish (and detach + attach for
//! comparison), and map + unmap of 4 KiB and 2 MiB pages, alone and with a second thread
//! translating through the device at the same time (so `ioas_unmap`'s fence has a reader to
//! wait for).
//!
//! Run with `cargo bench --bench control`; `docs/benchmarks.md` says what each group
//! measures. The latency suite with percentiles and ratio targets is `viommu-perf`.

mod common;

use common::{config, first_target, with_background, TwoDomains, MIB2, PAGE};
use criterion::{black_box, BenchmarkId, Criterion};
use viommu::{Access, DeviceInfo, GroupId, Iommu, Prot};

/// The readers' pages: 256 × 4 KiB, target not 2 MiB aligned (4 KiB leaves).
const IOVA_BASE: u64 = 0x1000_0000;
const TARGETS: [u64; 2] = [0x40_0000_1000, 0x80_0000_1000];
const PAGES: u64 = 256;
/// Where map/unmap benches put their mapping (1 GiB aligned, as is its target).
const SCRATCH_IOVA: u64 = 1 << 40;
const SCRATCH_TARGET: u64 = 0xc0_0000_0000;

/// One device on domain 0 of two prebuilt user HWPTs (two IOASes mapping the same IOVAs to
/// different targets).
fn fixture() -> TwoDomains {
    TwoDomains::new(|d| {
        (0..PAGES).map(move |i| (IOVA_BASE + i * PAGE, TARGETS[d] + i * PAGE, PAGE))
    })
}

/// One translation of a mapped page, as a busy DMA thread makes.
fn translate_some(f: &TwoDomains, k: u64) -> u64 {
    let iova = IOVA_BASE + (k % PAGES) * PAGE;
    first_target(f.dev.translate(iova, 512, Access::Read))
}

/// Runs `body` while a second thread translates through `f`'s device in a loop.
fn with_reader<R>(f: &TwoDomains, body: impl FnOnce() -> R) -> R {
    let mut k = 0u64;
    with_background(
        || {
            k += 1;
            black_box(translate_some(f, k));
        },
        body,
    )
}

fn replace(c: &mut Criterion) {
    let f = fixture();
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
    let f = fixture();
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

fn main() {
    let mut c = config(30).configure_from_args();
    replace(&mut c);
    map_unmap(&mut c);
    fences(&mut c);
    c.final_summary();
}

/// The fence alone: `synchronize()` with no guard alive (the membarrier or fence cost plus a
/// pass over the guard slots), and with a reader thread pinning and unpinning beside it.
fn fences(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let iommu = Iommu::new();
    let (_, dev) = iommu
        .device_bind(GroupId(9), DeviceInfo::default())
        .expect("bind");
    let mut g = c.benchmark_group("fence");
    g.bench_function("synchronize/idle", |b| {
        b.iter(|| iommu.synchronize().expect("no guard held"))
    });
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Relaxed: the flag only ends the loop.
            while !stop.load(Ordering::Relaxed) {
                drop(std::hint::black_box(dev.pin()));
            }
        });
        g.bench_function("synchronize/reader_beside", |b| {
            b.iter(|| iommu.synchronize().expect("no guard held"))
        });
        stop.store(true, Ordering::Relaxed);
    });
    g.finish();
}
