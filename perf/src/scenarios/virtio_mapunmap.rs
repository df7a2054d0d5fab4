//! `virtio-iommu-mapunmap`: MAP+UNMAP request pairs served per second through viommu's
//! virtio-iommu device model (feature `virtio-iommu`), one queue pass of 32 pairs at a time,
//! against a cloud-hypervisor-style device ([`crate::baselines::ch_virtio`]) serving the same
//! request bytes. The criterion bench `benches/virtio_iommu.rs` measures the same thing per
//! pass; this is it in the suite, with per-pair percentiles.
//!
//! A pass is 32 pairs, MAP then UNMAP of one 4 KiB page each (IOVAs `0x10_0000 ..`), as the
//! Linux driver sends them in lazy mode; the request bytes are the driver's structs
//! (`tests/support/linux_virtio_iommu.rs`), copied fresh into the pass's buffers before each
//! pass for both designs.
//!
//! * `viommu`: `VirtioIommu::process_batch` over an `Iommu`: each MAP an `ioas_map`, each
//!   UNMAP an `ioas_unmap_deferred`; the pass waits once, for its last UNMAP's grace period,
//!   before its replies are released, so when it returns no DMA is in flight to any page it
//!   unmapped.
//! * `ch-style`: each request parsed and served under the one `RwLock`'s write lock. Nothing
//!   waits for DMA in flight.
//!
//! Layouts: `dense`, where a page next to the churned ones stays mapped (a guest's IOVA
//! allocator keeps its mappings together), and `sparse`, where each UNMAP empties the leaf page
//! table its MAP filled. Each runs with no DMA (`readers` is 0) and with one DMA thread
//! (`readers` is 1) translating a page of the same domain, outside the churned range, in a
//! loop: what viommu's fences wait for and what contends with the `ch-style` write lock. Each
//! pass is timed; `pair` is a pass's time over its 32 pairs. Every reply's status is checked
//! (a non-OK status counts as a writer error).

use super::{Case, CaseResult, Storm};
use crate::args::Config;
use crate::baselines::ch_virtio::linux::{linux_attach, linux_map, linux_unmap};
use crate::baselines::ch_virtio::{status, ChStyle};
use crate::baselines::two_domains::new_iommu;
use crate::baselines::PAGE;
use crate::stats::{nanos, new_hist, record, Dist};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use viommu::virtio_iommu::wire::{MAP_F_READ, MAP_F_WRITE};
use viommu::virtio_iommu::{Config as VirtioConfig, RequestBuffers, VirtioIommu};
use viommu::{Access, DeviceInfo, GroupId};

/// The churn's constants and requests, the same in the bench and the suite.
#[path = "../../../tests/support/virtio_mapunmap.rs"]
mod churn;
pub use churn::PAIRS;
use churn::{pass_requests, CHURN, DMA_IOVA, DMA_TARGET, DOMAIN, ENDPOINT};

/// The rows of a case, in run order: `(design, dense)`.
const ROWS: [(&str, bool); 4] = [
    ("viommu", true),
    ("ch-style", true),
    ("viommu", false),
    ("ch-style", false),
];

/// Warm-up and measured time of each row: a fifth of the translate runs' warm-up and a sixth
/// of the control runs' measurement (100 ms in quick mode, 500 ms in full).
fn timing(cfg: &Config) -> (Duration, Duration) {
    (cfg.warmup / 5, cfg.control / 6)
}

/// The row label `design/layout`.
pub fn label(design: &str, dense: bool) -> &'static str {
    match (design, dense) {
        ("viommu", true) => "viommu/dense",
        ("viommu", false) => "viommu/sparse",
        (_, true) => "ch-style/dense",
        (_, false) => "ch-style/sparse",
    }
}

/// The anchor of `dense`: a page next to the churned ones, mapped for the whole run.
fn anchor() -> Vec<u8> {
    linux_map(DOMAIN, CHURN + PAIRS * PAGE, DMA_TARGET, PAGE, MAP_F_READ)
}

/// Runs `pass` (which serves the buffers in place) back to back for `warm` + `measure`, with
/// `dma` looping on another thread if `with_dma`; fills `res`.
fn drive<P, D>(res: &mut CaseResult, (warm, measure): (Duration, Duration), mut pass: P, dma: D)
where
    P: FnMut(&mut [Vec<u8>]),
    D: Fn() + Sync,
{
    let template = pass_requests();
    let mut bufs = template.clone();
    let mut pair = new_hist();
    let stop = AtomicBool::new(false);
    let with_dma = res.readers > 0;
    let dma_ops = std::thread::scope(|s| {
        let dma_thread = with_dma.then(|| {
            let (stop, dma) = (&stop, &dma);
            s.spawn(move || {
                let t0 = Instant::now();
                let mut n = 0u64;
                // At least one access, however late the thread is scheduled (on a loaded
                // machine a short run can end before it starts). Relaxed: the flag only ends
                // the loop; the join orders the count.
                loop {
                    dma();
                    n += 1;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                (n, t0.elapsed().as_secs_f64())
            })
        });
        let warm_until = Instant::now() + warm;
        let until = warm_until + measure;
        let mut start = None;
        let mut now = Instant::now();
        while now < until {
            for (b, t) in bufs.iter_mut().zip(&template) {
                b.copy_from_slice(t);
            }
            let t0 = Instant::now();
            pass(&mut bufs);
            now = Instant::now();
            let bad = bufs.iter().filter(|r| status(r) != 0).count() as u64;
            if t0 >= warm_until {
                start.get_or_insert(t0);
                res.writer_ops += PAIRS;
                record(&mut pair, nanos(now - t0) / PAIRS);
                if bad > 0 {
                    res.writer_errors += bad;
                    res.first_writer_error.get_or_insert_with(|| {
                        format!(
                            "a reply with status {}",
                            bufs.iter().map(|r| status(r)).max().unwrap_or(0)
                        )
                    });
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        res.seconds = start.map_or(0.0, |s| (now - s).as_secs_f64());
        dma_thread.map(|h| h.join().expect("DMA thread panicked"))
    });
    if res.seconds > 0.0 {
        res.writer_ops_per_s = res.writer_ops as f64 / res.seconds;
    }
    if let Some((n, secs)) = dma_ops {
        // Over the whole run, warm-up included: the DMA thread is context, not the measurement.
        res.reader_ops = n;
        res.mops_wall = n as f64 / secs.max(1e-9) / 1e6;
        res.mops = res.mops_wall;
    }
    if let Some(d) = Dist::of(&pair) {
        res.latency.insert("pair", d);
    }
}

/// viommu's row: a `VirtioIommu` with one endpoint attached to `DOMAIN`.
fn run_viommu(res: &mut CaseResult, times: (Duration, Duration), dense: bool) {
    let iommu = new_iommu();
    let mut v = VirtioIommu::new(iommu.clone(), VirtioConfig::default());
    let (_, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .expect("device_bind");
    v.add_endpoint(ENDPOINT, &dev, Vec::new())
        .expect("add_endpoint");
    let mut setup = vec![
        linux_attach(DOMAIN, ENDPOINT),
        linux_map(DOMAIN, DMA_IOVA, DMA_TARGET, PAGE, MAP_F_READ | MAP_F_WRITE),
    ];
    if dense {
        setup.push(anchor());
    }
    for req in &mut setup {
        let mut r = [RequestBuffers::from_struct(req).expect("request struct")];
        v.process_batch(&mut r).expect("process_batch");
        assert_eq!(status(req), 0, "set-up request failed");
    }
    let dma = || {
        let g = dev.pin();
        let t = g
            .translate(DMA_IOVA, 512, Access::Write)
            .expect("DMA page mapped");
        black_box(t.as_slice()[0].target);
    };
    let pass = |bufs: &mut [Vec<u8>]| {
        let mut reqs: Vec<RequestBuffers<'_>> = bufs
            .iter_mut()
            .map(|r| RequestBuffers::from_struct(r).expect("request struct"))
            .collect();
        if v.process_batch(&mut reqs).is_err() {
            // Leave a failing status so the pass counts as errors.
            drop(reqs);
            for b in bufs.iter_mut() {
                let tail = b.len() - 4;
                b[tail] = 0xff;
            }
        }
    };
    drive(res, times, pass, dma);
    drop(v);
    iommu.synchronize().expect("synchronize");
}

/// The cloud-hypervisor-style row.
fn run_ch(res: &mut CaseResult, times: (Duration, Duration), dense: bool) {
    let ch = ChStyle::default();
    let mut setup = vec![linux_map(
        DOMAIN,
        DMA_IOVA,
        DMA_TARGET,
        PAGE,
        MAP_F_READ | MAP_F_WRITE,
    )];
    if dense {
        setup.push(anchor());
    }
    for req in &mut setup {
        ch.handle(req);
        assert_eq!(status(req), 0, "set-up request failed");
    }
    let dma = || {
        black_box(ch.translate(DOMAIN, DMA_IOVA).expect("DMA page mapped"));
    };
    let pass = |bufs: &mut [Vec<u8>]| {
        for r in bufs.iter_mut() {
            ch.handle(r);
        }
    };
    drive(res, times, pass, dma);
}

/// Runs every row of the case (its reader count is the number of DMA threads, 0 or 1).
pub fn run(cfg: &Config, case: &Case) -> Vec<CaseResult> {
    let times = timing(cfg);
    ROWS.iter()
        .map(|&(design, dense)| {
            let mut res = CaseResult::new(case, Storm::MapUnmap);
            res.baseline = label(design, dense);
            if design == "viommu" {
                run_viommu(&mut res, times, dense);
            } else {
                run_ch(&mut res, times, dense);
            }
            res
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_designs_serve_a_pass() {
        let case = Case {
            scenario: super::super::Scenario::VirtioIommuMapUnmap,
            kind: crate::baselines::Kind::Viommu,
            readers: 1,
            variant: super::super::Variant::Plain,
        };
        let times = (Duration::ZERO, Duration::from_millis(5));
        for dense in [true, false] {
            for design in ["viommu", "ch-style"] {
                let mut res = CaseResult::new(&case, Storm::MapUnmap);
                if design == "viommu" {
                    run_viommu(&mut res, times, dense);
                } else {
                    run_ch(&mut res, times, dense);
                }
                assert!(res.writer_ops >= PAIRS, "{design} {dense}");
                assert_eq!(
                    res.writer_errors, 0,
                    "{design} {dense}: {:?}",
                    res.first_writer_error
                );
                assert!(res.reader_ops > 0);
            }
        }
    }
}
