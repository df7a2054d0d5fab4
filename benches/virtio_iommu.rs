//! Bench of the `virtio-iommu` feature: MAP+UNMAP request pairs served per second, with the
//! completions of one queue pass batched (one grace period for the pass's UNMAPs), against a
//! cloud-hypervisor-style device that serves the same request bytes.
//!
//! A pass is `PAIRS` pairs, MAP then UNMAP of one 4 KiB page each (IOVAs `0x10_0000 ..`), as
//! the Linux driver sends them in lazy mode; the request bytes are `drivers/iommu/
//! virtio-iommu.c`'s structs (`tests/support/linux_virtio_iommu.rs`), copied fresh into the
//! pass's buffers each iteration for both designs.
//!
//! * `viommu`: `VirtioIommu::process_batch` over an `Iommu`: each MAP is an `ioas_map`, each
//!   UNMAP an `ioas_unmap_deferred`; the pass waits once, for its last UNMAP's grace period,
//!   before its replies are released. When the pass returns, no DMA is in flight to any page
//!   it unmapped.
//! * `ch_style`: the design of cloud-hypervisor's virtio-iommu: per domain a `BTreeMap` of
//!   mappings, all domains behind one `RwLock`; MAP and UNMAP take the write lock, a
//!   translation takes the read lock for its lookup. Nothing waits for DMA in flight (an UNMAP
//!   completes while a device may still be writing to the page it unmapped).
//!
//! Two layouts: `dense`, where a page next to the churned ones stays mapped (as a guest's IOVA
//! allocator keeps its mappings together), and `sparse`, where each UNMAP empties the leaf
//! page table its MAP filled.
//!
//! Each design runs with no DMA and with one DMA thread translating a page of the same domain
//! (outside the churned range) in a loop, which is what the `viommu` fences wait for and what
//! contends with the `ch_style` write lock. On a 2-core machine the bench thread and the DMA
//! thread have a core each.
//!
//! Run with `cargo bench --features virtio-iommu --bench virtio_iommu`; criterion reports the
//! time of one pass of `PAIRS` pairs (pairs/s = `PAIRS` / time).

use criterion::{black_box, Criterion};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use viommu::virtio_iommu::wire::{MAP_F_READ, MAP_F_WRITE};
use viommu::virtio_iommu::{Config, RequestBuffers, VirtioIommu};
use viommu::{Access, DeviceInfo, GroupId, Iommu};

/// The cloud-hypervisor-style device: the latency suite's own
/// (`perf/src/baselines/ch_virtio.rs`, with the Linux driver's request structs), so the bench
/// and the suite measure the same design.
#[path = "../perf/src/baselines/ch_virtio.rs"]
#[allow(dead_code, unused_imports)]
mod ch_virtio;
use ch_virtio::linux::{linux_attach, linux_map, linux_unmap};
use ch_virtio::{status, ChStyle};

const PAGE: u64 = 4096;
/// The churn's constants and requests, the same in the bench and the suite.
#[path = "../tests/support/virtio_mapunmap.rs"]
mod churn;
use churn::PAIRS;
use churn::{pass_requests, CHURN, DMA_IOVA, DMA_TARGET, DOMAIN, ENDPOINT};

/// Runs `dma` in a loop on another thread while `f` runs (if `with_dma`).
fn with_dma_thread<D, F>(with_dma: bool, dma: D, f: F)
where
    D: Fn() + Send + Sync,
    F: FnOnce(),
{
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        if with_dma {
            let (stop, dma) = (&stop, &dma);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    dma();
                }
            });
        }
        f();
        stop.store(true, Ordering::Relaxed);
    });
}

fn bench(c: &mut Criterion) {
    let template = pass_requests();
    let mut g = c.benchmark_group(format!("virtio_iommu_pass{PAIRS}"));
    for (dense, with_dma) in [(true, false), (true, true), (false, false), (false, true)] {
        let name = format!(
            "{}/{}",
            if dense { "dense" } else { "sparse" },
            if with_dma { "1_dma_thread" } else { "no_dma" }
        );
        // `dense`: a page next to the churned ones stays mapped (a guest's IOVA allocator
        // keeps its mappings together), so their leaf table is never emptied.
        let anchor = |handle: &mut dyn FnMut(&mut [u8])| {
            if dense {
                let mut a = linux_map(DOMAIN, CHURN + PAIRS * PAGE, DMA_TARGET, PAGE, MAP_F_READ);
                handle(&mut a);
                assert_eq!(status(&a), 0);
            }
        };
        // viommu.
        let iommu = Iommu::new();
        let mut v = VirtioIommu::new(iommu.clone(), Config::default());
        let (_, dev) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .unwrap();
        v.add_endpoint(ENDPOINT, &dev, Vec::new()).unwrap();
        let mut attach = linux_attach(DOMAIN, ENDPOINT);
        let mut map = linux_map(DOMAIN, DMA_IOVA, DMA_TARGET, PAGE, MAP_F_READ | MAP_F_WRITE);
        for req in [&mut attach, &mut map] {
            let mut r = [RequestBuffers::from_struct(req).unwrap()];
            v.process_batch(&mut r).unwrap();
            assert_eq!(status(req), 0);
        }
        anchor(&mut |req| {
            let mut r = [RequestBuffers::from_struct(req).unwrap()];
            v.process_batch(&mut r).unwrap();
        });
        let dev = Arc::new(dev);
        let dma = {
            let dev = dev.clone();
            move || {
                let g = dev.pin();
                let t = g.translate(DMA_IOVA, 512, Access::Write).unwrap();
                black_box(t.as_slice()[0].target);
            }
        };
        let mut bufs = template.clone();
        with_dma_thread(with_dma, dma, || {
            g.bench_function(format!("viommu/{name}"), |b| {
                b.iter(|| {
                    for (buf, t) in bufs.iter_mut().zip(&template) {
                        buf.copy_from_slice(t);
                    }
                    let mut pass: Vec<RequestBuffers<'_>> = bufs
                        .iter_mut()
                        .map(|r| RequestBuffers::from_struct(r).unwrap())
                        .collect();
                    v.process_batch(&mut pass).unwrap();
                    drop(pass);
                    debug_assert!(bufs.iter().all(|r| status(r) == 0));
                    black_box(status(&bufs[bufs.len() - 1]));
                })
            });
        });

        // cloud-hypervisor style.
        let ch = Arc::new(ChStyle::default());
        let mut map = linux_map(DOMAIN, DMA_IOVA, DMA_TARGET, PAGE, MAP_F_READ | MAP_F_WRITE);
        ch.handle(&mut map);
        assert_eq!(status(&map), 0);
        anchor(&mut |req| ch.handle(req));
        let dma = {
            let ch = ch.clone();
            move || {
                black_box(ch.translate(DOMAIN, DMA_IOVA).unwrap());
            }
        };
        let mut bufs = template.clone();
        with_dma_thread(with_dma, dma, || {
            g.bench_function(format!("ch_style/{name}"), |b| {
                b.iter(|| {
                    for (buf, t) in bufs.iter_mut().zip(&template) {
                        buf.copy_from_slice(t);
                    }
                    for r in bufs.iter_mut() {
                        ch.handle(r);
                    }
                    debug_assert!(bufs.iter().all(|r| status(r) == 0));
                    black_box(status(&bufs[bufs.len() - 1]));
                })
            });
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
