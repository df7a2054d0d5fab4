//! A small device emulator: DMA threads translate a ring of buffers through their device
//! while a control thread plays the guest, replacing the device's domain back and forth
//! (user HWPT ↔ auto HWPT on another IOAS) and remapping a scratch window.
//!
//! ```text
//! cargo run --release --example emulator [-- --seconds N --threads N]
//! ```
//!
//! It prints translations done, faults seen (must be 0: every buffer is mapped in both
//! domains) and replaces made.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use viommu::{Access, DeviceInfo, GroupId, HwptFlags, Iommu, Prot};

const PAGE: u64 = 4096;
const BUFFERS: u64 = 256;
const RING_IOVA: u64 = 0x1000_0000;
const SCRATCH_IOVA: u64 = 0x4000_0000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = args::arg("--seconds", 3);
    let threads = args::arg("--threads", 2).max(1);

    let iommu = Iommu::new();
    let (dev_id, dev) = iommu.device_bind(GroupId(7), DeviceInfo::default())?;

    // Two address spaces holding the same ring at different targets (say, before and
    // after the guest moved its buffers), plus a user HWPT on the first.
    let ioas_a = iommu.ioas_alloc()?;
    let ioas_b = iommu.ioas_alloc()?;
    iommu.ioas_map(
        ioas_a,
        Some(RING_IOVA),
        0x8000_0000,
        BUFFERS * PAGE,
        Prot::RW,
    )?;
    iommu.ioas_map(
        ioas_b,
        Some(RING_IOVA),
        0xc000_0000,
        BUFFERS * PAGE,
        Prot::RW,
    )?;
    let hwpt_a = iommu.hwpt_alloc(dev_id, ioas_a, HwptFlags::empty())?;
    iommu.device_attach(dev_id, hwpt_a)?;

    let stop = Arc::new(AtomicBool::new(false));
    let translations = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..threads)
        .map(|t| {
            let (dev, stop) = (dev.clone(), stop.clone());
            let (translations, faults) = (translations.clone(), faults.clone());
            std::thread::spawn(move || {
                let (mut done, mut bad) = (0u64, 0u64);
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    // One guard per descriptor batch, as a virtqueue handler would.
                    let dma = dev.pin();
                    for _ in 0..16 {
                        let iova = RING_IOVA + (i % BUFFERS) * PAGE + 64;
                        match dma.translate(iova, 512, Access::Write) {
                            Ok(t) if t.len() == 1 => done += 1,
                            _ => bad += 1,
                        }
                        i = i.wrapping_add(7);
                    }
                }
                translations.fetch_add(done, Ordering::Relaxed);
                faults.fetch_add(bad, Ordering::Relaxed);
            })
        })
        .collect();

    // The guest: replace storm plus scratch map/unmap churn.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut replaces = 0u64;
    let mut remaps = 0u64;
    let mut on_a = true;
    while Instant::now() < deadline {
        if on_a {
            iommu.device_replace(dev_id, ioas_b)?; // the auto HWPT of ioas_b
        } else {
            iommu.device_replace(dev_id, hwpt_a)?;
        }
        on_a = !on_a;
        replaces += 1;
        if replaces % 64 == 0 {
            iommu.ioas_map(
                ioas_a,
                Some(SCRATCH_IOVA),
                0x7000_0000,
                16 * PAGE,
                Prot::READ,
            )?;
            iommu.ioas_unmap(ioas_a, SCRATCH_IOVA, 16 * PAGE)?;
            remaps += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader thread");
    }
    iommu.device_detach(dev_id)?;
    iommu.synchronize()?;

    let stats = iommu.stats();
    println!("viommu emulator: {threads} DMA thread(s), {seconds} s");
    println!(
        "  translations done : {}",
        translations.load(Ordering::Relaxed)
    );
    println!("  faults seen       : {}", faults.load(Ordering::Relaxed));
    println!("  replaces made     : {replaces}");
    println!("  map/unmap cycles  : {remaps}");
    println!(
        "  live after detach : {} domain(s), {} page-table node(s)",
        stats.live_domains, stats.live_tables
    );
    if faults.load(Ordering::Relaxed) != 0 {
        return Err("DMA faulted during replace".into());
    }
    Ok(())
}

/// `--name value` options (shared by the examples).
#[path = "support/args.rs"]
mod args;
