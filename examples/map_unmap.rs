//! The 4 KiB map path under a profiler: `N` pairs of `ioas_map` + `ioas_unmap` of the same
//! page with one device attached (one domain), and, with `auto` as the first argument,
//! `N` automatic maps into an IOAS that already holds 10 000 areas.
//!
//! ```text
//! cargo build --release --example map_unmap
//! valgrind --tool=callgrind --dump-instr=no target/release/examples/map_unmap 100000
//! callgrind_annotate callgrind.out.<pid>
//! ```
//!
//! Instructions per pair = (total - total with N = 0) / N.

use viommu::{DeviceInfo, GroupId, Iommu, Prot};

const PAGE: u64 = 4096;

fn main() -> Result<(), viommu::Error> {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_default();
    let auto = first == "auto";
    let n: u64 = if auto { args.next() } else { Some(first) }
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc()?;
    let (dev, _handle) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
    iommu.device_attach(dev, ioas)?;
    if auto {
        // 10 000 scattered areas, each followed by a one-page hole.
        for i in 0..10_000u64 {
            iommu.ioas_map(ioas, Some((1 << 30) + i * 2 * PAGE), 0x1000, PAGE, Prot::RW)?;
        }
        for i in 0..n {
            let at = iommu.ioas_map(ioas, None, 0x10_0000_0000 + i * PAGE, PAGE, Prot::RW)?;
            std::hint::black_box(at);
        }
    } else {
        let iova = 1 << 30;
        for _ in 0..n {
            iommu.ioas_map(ioas, Some(iova), 0x1_0000_0000, PAGE, Prot::RW)?;
            iommu.ioas_unmap(ioas, iova, PAGE)?;
        }
    }
    Ok(())
}
