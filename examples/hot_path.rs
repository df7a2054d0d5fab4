//! The data plane under a profiler: `N` iterations of one hot operation on one device whose
//! user HWPT maps 256 pages (the criterion benches' set-up). Modes: `pin` (pin + drop),
//! `pin_pasid` (the same at PASID 5), `guard` (translate through one held guard), `oneshot`
//! (`Device::translate`).
//!
//! ```text
//! cargo build --release --example hot_path
//! valgrind --tool=callgrind target/release/examples/hot_path pin 1000000
//! valgrind --tool=callgrind target/release/examples/hot_path pin 0      # the set-up alone
//! ```
//!
//! Instructions per operation = (total - total with N = 0) / N.

use std::hint::black_box;
use viommu::{Access, DeviceInfo, GroupId, HwptFlags, Iommu, Prot};

const PAGE: u64 = 4096;
const PAGES: u64 = 256;
const IOVA: u64 = 0x1000_0000;

fn main() -> Result<(), viommu::Error> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "pin".to_string());
    let n: u64 = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let iommu = Iommu::new();
    let info = DeviceInfo {
        pasid_bits: 8,
        ..DeviceInfo::default()
    };
    let (dev_id, dev) = iommu.device_bind(GroupId(0), info)?;
    let ioas = iommu.ioas_alloc()?;
    for i in 0..PAGES {
        iommu.ioas_map(
            ioas,
            Some(IOVA + i * PAGE),
            0x40_0000_1000 + i * PAGE,
            PAGE,
            Prot::RW,
        )?;
    }
    let hwpt = iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty())?;
    iommu.device_attach(dev_id, hwpt)?;
    iommu.device_attach_pasid(dev_id, 5, hwpt)?;
    let iova = |i: u64| IOVA + (i.wrapping_mul(97) % PAGES) * PAGE + 1024;
    let first = |t: Result<viommu::Translation<'_>, viommu::Fault>| {
        t.ok().and_then(|mut t| t.next()).map_or(0, |c| c.target)
    };
    let mut acc = 0u64;
    match mode.as_str() {
        "pin" => (0..n).for_each(|_| drop(black_box(dev.pin()))),
        "pin_pasid" => (0..n).for_each(|_| drop(black_box(dev.pin_pasid(black_box(5))))),
        "guard" => {
            let guard = dev.pin();
            for i in 0..n {
                acc ^= first(guard.translate(black_box(iova(i)), 512, Access::Read));
            }
        }
        "oneshot" => {
            for i in 0..n {
                acc ^= first(dev.translate(black_box(iova(i)), 512, Access::Read));
            }
        }
        other => eprintln!("hot_path: unknown mode {other:?} (pin, pin_pasid, guard, oneshot)"),
    }
    println!("{acc}");
    Ok(())
}
