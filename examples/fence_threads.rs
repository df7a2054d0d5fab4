//! Fence cost against registered threads: `T` threads each pin the device once and then sleep
//! (registered, idle) while the main thread times `synchronize` and 4 KiB `ioas_map` +
//! `ioas_unmap` pairs. The suite's `fence-threads` scenario reports the same with percentiles.
//!
//! ```text
//! cargo run --release --example fence_threads -- 1024
//! ```

use std::sync::{Arc, Barrier};
use std::time::Instant;
use viommu::{DeviceInfo, GroupId, Iommu, Prot};

fn main() -> Result<(), viommu::Error> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu.device_bind(GroupId(0), DeviceInfo::default())?;
    let ioas = iommu.ioas_alloc()?;
    iommu.ioas_map(ioas, Some(0x10_0000), 0x8000_0000, 0x1000, Prot::RW)?;
    iommu.device_attach(dev_id, ioas)?;
    let registered = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (dev, registered, done) = (dev.clone(), registered.clone(), done.clone());
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    drop(dev.pin());
                    registered.wait();
                    done.wait();
                })
                .expect("spawn")
        })
        .collect();
    registered.wait();
    // Warm up (the fences that find the idle threads and stop scanning them).
    for _ in 0..1000 {
        iommu.synchronize()?;
    }
    let n = 20_000u32;
    let mut sync_ns: Vec<u64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            iommu.synchronize().expect("synchronize");
            t.elapsed().as_nanos() as u64
        })
        .collect();
    sync_ns.sort_unstable();
    let t = Instant::now();
    for _ in 0..n {
        iommu.ioas_map(ioas, Some(0x20_0000), 0x9000_0000, 0x1000, Prot::RW)?;
        iommu.ioas_unmap(ioas, 0x20_0000, 0x1000)?;
    }
    let pairs = f64::from(n) / t.elapsed().as_secs_f64();
    println!(
        "threads {threads}: synchronize p50 {} ns p99 {} ns; map+unmap {:.0} pairs/s",
        sync_ns[sync_ns.len() / 2],
        sync_ns[sync_ns.len() * 99 / 100],
        pairs
    );
    done.wait();
    for h in handles {
        h.join().expect("join");
    }
    Ok(())
}
