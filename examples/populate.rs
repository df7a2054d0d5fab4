//! How fast a guest's memory goes into an IOAS: 1 GiB in 4 KiB pages, with 0, 1 and 2 paging
//! domains attached (each domain mirrors every map), in two shapes: one 1 GiB `ioas_map`
//! whose target is only 4 KiB aligned (so every leaf is a 4 KiB page), and 262144 separate
//! 4 KiB `ioas_map` calls. Prints pages per second and the ratio to the one-domain case of the same shape
//! (after a warm-up pass, so that rayon's pool and the allocator are already up).
//!
//! ```text
//! cargo run --release --example populate
//! ```

use std::time::Instant;
use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, Prot};

const GIB: u64 = 1 << 30;
const PAGE: u64 = 4096;
const PAGES: u64 = GIB / PAGE;

/// An IOAS with `domains` user HWPTs on it, each attached to a device of its own group.
fn setup(domains: u32) -> Result<(Iommu, viommu::ObjId), viommu::Error> {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc()?;
    for g in 0..domains {
        let (dev, _) = iommu.device_bind(GroupId(g), DeviceInfo::default())?;
        let hwpt = iommu.hwpt_alloc(dev, ioas, HwptFlags::empty())?;
        iommu.device_attach(dev, hwpt)?;
    }
    Ok((iommu, ioas))
}

/// Pages per second (millions) for both shapes with `domains` domains.
fn measure(domains: u32) -> Result<(f64, f64), viommu::Error> {
    let (iommu, ioas) = setup(domains)?;
    let t = Instant::now();
    // Target 4 KiB past a 2 MiB boundary: no huge leaf fits.
    iommu.ioas_map(ioas, Some(GIB), 0x1_0000_1000, GIB, Prot::RW)?;
    let one = PAGES as f64 / t.elapsed().as_secs_f64() / 1e6;
    iommu.ioas_unmap(ioas, 0, u64::MAX)?;
    let t = Instant::now();
    for i in 0..PAGES {
        iommu.ioas_map(
            ioas,
            Some(GIB + i * PAGE),
            0x1_0000_0000 + i * PAGE,
            PAGE,
            Prot::RW,
        )?;
    }
    let many = PAGES as f64 / t.elapsed().as_secs_f64() / 1e6;
    iommu.ioas_unmap(ioas, 0, u64::MAX)?;
    Ok((one, many))
}

fn main() -> Result<(), viommu::Error> {
    for domains in 1..=2 {
        measure(domains)?; // warm-up
    }
    println!("1 GiB in 4 KiB pages ({PAGES} pages), pages per second (millions)");
    println!(
        "{:<8} {:>16} {:>8} {:>18} {:>8}",
        "domains", "one 1 GiB map", "vs 1", "4 KiB map calls", "vs 1"
    );
    let (base_one, base_many) = measure(1)?;
    for domains in 0..=2 {
        let (one, many) = if domains == 1 {
            (base_one, base_many)
        } else {
            measure(domains)?
        };
        println!(
            "{domains:<8} {one:>16.1} {:>7.2}x {many:>18.2} {:>7.2}x",
            one / base_one,
            many / base_many
        );
    }
    Ok(())
}
