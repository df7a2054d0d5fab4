//! Criterion benches of the control plane: replace publish (and detach + attach for
//! comparison), map + unmap of 4 KiB and 2 MiB pages, alone and with a second thread
//! translating through the device at the same time (so `ioas_unmap`'s fence has a reader to
//! wait for), map + unmap with the unmap fences batched by 32 (`ioas_unmap_deferred`),
//! `Device::pin` on one thread that serves nine `Iommu`s in turn, the fence alone
//! (`synchronize`), and automatic IOVA allocation among 10 000 areas.
//!
//! Run with `cargo bench --bench control`; `docs/benchmarks.md` says what each group
//! measures. The latency suite with percentiles and ratio targets is `viommu-perf`.

mod common;

use common::{config, first_target, with_background, TwoDomains, MIB2, PAGE};
use criterion::{black_box, BenchmarkId, Criterion};
use std::time::{Duration, Instant};
use viommu::{Access, DeviceInfo, GroupId, Iommu, Prot, UnmapCompletion};

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

/// Unmaps whose fences share one wait in `map_unmap_batched`.
const BATCH: u64 = 32;
/// A page kept mapped beside the batched slots (in the same leaf table), as a guest's other
/// mappings are, so that an unmap never empties the table (the suite's `mapunmap-batch` does
/// the same).
const ANCHOR_IOVA: u64 = SCRATCH_IOVA + 100 * PAGE;

/// `iters` pairs of 4 KiB `ioas_map` + `ioas_unmap_deferred` on 32 distinct slots, waiting on
/// the last completion of every 32 (and of the last, partial batch); returns the time taken.
fn batched_pairs(f: &TwoDomains, iters: u64) -> Duration {
    let start = Instant::now();
    let mut last: Option<UnmapCompletion> = None;
    for i in 0..iters {
        let slot = i % BATCH;
        let (iova, target) = (SCRATCH_IOVA + slot * PAGE, SCRATCH_TARGET + slot * PAGE);
        f.iommu
            .ioas_map(f.ioas[0], Some(iova), target, PAGE, Prot::RW)
            .expect("map");
        let c = f
            .iommu
            .ioas_unmap_deferred(f.ioas[0], iova, PAGE)
            .expect("unmap_deferred");
        if slot == BATCH - 1 {
            drop(last.take());
            c.wait().expect("wait");
        } else {
            last = Some(c);
        }
    }
    if let Some(c) = last {
        c.wait().expect("wait");
    }
    start.elapsed()
}

fn map_unmap_batched(c: &mut Criterion) {
    let f = fixture();
    f.iommu
        .ioas_map(
            f.ioas[0],
            Some(ANCHOR_IOVA),
            SCRATCH_TARGET + 100 * PAGE,
            PAGE,
            Prot::RW,
        )
        .expect("anchor map");
    let mut g = c.benchmark_group("map_unmap_batched");
    for contended in [false, true] {
        let label = if contended { "reader_beside" } else { "alone" };
        let run = |g: &mut criterion::BenchmarkGroup<'_, _>| {
            g.bench_function(BenchmarkId::new("deferred32_per_pair/4K", label), |b| {
                b.iter_custom(|iters| batched_pairs(&f, iters))
            });
            g.bench_function(BenchmarkId::new("unbatched_pair/4K", label), |b| {
                b.iter(|| {
                    f.iommu
                        .ioas_map(
                            f.ioas[0],
                            Some(SCRATCH_IOVA),
                            SCRATCH_TARGET,
                            PAGE,
                            Prot::RW,
                        )
                        .expect("map");
                    f.iommu
                        .ioas_unmap(f.ioas[0], SCRATCH_IOVA, PAGE)
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
    g.finish();
}

/// `Iommu`s one thread serves in `pin_many_iommus`: one more than the 8-way handle cache the
/// previous read side kept per thread, which then re-registered a handle on every pin.
const IOMMUS: usize = 9;

fn pin_many_iommus(c: &mut Criterion) {
    let fs: Vec<TwoDomains> = (0..IOMMUS)
        .map(|_| TwoDomains::new(|d| [(IOVA_BASE, TARGETS[d], PAGE)]))
        .collect();
    let mut g = c.benchmark_group("pin_iommus");
    g.bench_function("one", |b| b.iter(|| drop(black_box(fs[0].dev.pin()))));
    let mut i = 0usize;
    g.bench_function(format!("round_robin_{IOMMUS}"), |b| {
        b.iter(|| {
            i = (i + 1) % IOMMUS;
            drop(black_box(fs[i].dev.pin()))
        })
    });
    g.finish();
}

fn main() {
    let mut c = config(30).configure_from_args();
    replace(&mut c);
    map_unmap(&mut c);
    map_unmap_batched(&mut c);
    pin_many_iommus(&mut c);
    fences(&mut c);
    auto_map(&mut c);
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

/// Automatic IOVA allocation (`ioas_map(ioas, None, ..)`) in an IOAS that already holds
/// 10 000 one-page areas with a one-page hole after each: a two-page map must pass every
/// small hole. No domain is attached, so this is the allocator and the area set alone. Only
/// the maps are timed, in batches of 100 that are unmapped (untimed) before the next batch, so
/// the IOAS stays at 10 000 areas.
fn auto_map(c: &mut Criterion) {
    const AREAS: u64 = 10_000;
    const BATCH: u64 = 100;
    let iommu = viommu::Iommu::new();
    let ioas = iommu.ioas_alloc().expect("ioas_alloc");
    for i in 0..AREAS {
        iommu
            .ioas_map(ioas, Some(i * 2 * PAGE), SCRATCH_TARGET, PAGE, Prot::RW)
            .expect("map");
    }
    let mut g = c.benchmark_group("auto_map");
    g.bench_function(BenchmarkId::new("two_pages", "10k_areas"), |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut done = 0;
            let mut placed = Vec::with_capacity(BATCH as usize);
            while done < iters {
                let n = BATCH.min(iters - done);
                let t = std::time::Instant::now();
                for _ in 0..n {
                    placed.push(
                        iommu
                            .ioas_map(ioas, None, SCRATCH_TARGET, 2 * PAGE, Prot::RW)
                            .expect("auto map"),
                    );
                }
                total += t.elapsed();
                for iova in placed.drain(..) {
                    iommu.ioas_unmap(ioas, iova, 2 * PAGE).expect("unmap");
                }
                done += n;
            }
            black_box(total)
        })
    });
    g.finish();
}
