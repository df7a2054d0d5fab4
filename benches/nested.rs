//! Criterion benches of nested translation against the paging translation of the same
//! addresses on the `NEST_PARENT` parent (the set-up of `viommu-perf`'s `nested-translate`,
//! shared with it: `perf/src/baselines/nested_world.rs`, stage 1 mapping IOVA = IPA).
//!
//! | bench | what |
//! | --- | --- |
//! | `paging/same_iova/{oneshot,guard}` | the same IOVA over and over through the parent: the baseline of the warm rows |
//! | `paging/walk/{oneshot,guard}` | a sweep over 256 pages through the parent: the baseline of the cold rows |
//! | `nested/warm_{smmuv3,vtd}/{oneshot,guard}` | the same IOVA through a nested HWPT: an IOTLB hit every time |
//! | `nested/cold_{smmuv3,vtd}/{oneshot,guard}` | the 256-page sweep through the nested HWPT: an IOTLB miss every time (pages `p` and `p + 64` share a slot of the 64-entry direct-mapped IOTLB), so a full nested walk plus the IOTLB's lookup and fill |
//! | `nested/uncached_{smmuv3,vtd}/{oneshot,guard}` | the same sweep with `DmaGuard::translate_uncached`: the walk with no IOTLB |
//!
//! `oneshot`: `Device::translate` (uncached: `pin()` + `translate_uncached` + drop);
//! `guard`: one guard held across the measurement. Run with `cargo bench --bench nested`.

mod common;
#[path = "../perf/src/baselines/nested_world.rs"]
#[allow(dead_code)]
mod nested_world;

use common::{config, first_target};
use criterion::{black_box, Criterion};
use nested_world::{sweep_iova, Nest, NestWorld, REQ, WARM_IOVA};
use viommu::{Access, Device, Iommu};

/// Benches `dev` at `iova(i)` for the i-th iteration, one-shot and through a held guard.
fn both(c: &mut Criterion, group: &str, name: &str, dev: &Device, iova: fn(u64) -> u64) {
    let mut g = c.benchmark_group(group);
    let mut i = 0u64;
    g.bench_function(format!("{name}/oneshot"), |b| {
        b.iter(|| {
            i += 1;
            first_target(dev.translate(black_box(iova(i)), REQ, Access::Read))
        })
    });
    let guard = dev.pin();
    g.bench_function(format!("{name}/guard"), |b| {
        b.iter(|| {
            i += 1;
            first_target(guard.translate(black_box(iova(i)), REQ, Access::Read))
        })
    });
    drop(guard);
    g.finish();
}

/// `translate_uncached` on the sweep, one-shot and through a held guard.
fn uncached(c: &mut Criterion, name: &str, dev: &Device) {
    let one = |g: &viommu::DmaGuard<'_>, iova: u64| {
        g.translate_uncached(black_box(iova), Access::Read)
            .and_then(Result::ok)
            .unwrap_or(0)
    };
    let mut g = c.benchmark_group("nested");
    let mut i = 0u64;
    g.bench_function(format!("{name}/oneshot"), |b| {
        b.iter(|| {
            i += 1;
            one(&dev.pin(), sweep_iova(i))
        })
    });
    let guard = dev.pin();
    g.bench_function(format!("{name}/guard"), |b| {
        b.iter(|| {
            i += 1;
            one(&guard, sweep_iova(i))
        })
    });
    drop(guard);
    g.finish();
}

fn main() {
    let mut c = config(50).configure_from_args();
    let world = NestWorld::new(Iommu::new());
    let devs: Vec<(Nest, Device)> = Nest::ALL
        .iter()
        .enumerate()
        .map(|(k, &fmt)| (fmt, world.attached(1 + k as u32, world.nested(fmt, 0)).1))
        .collect();
    both(&mut c, "paging", "same_iova", &world.paging, |_| WARM_IOVA);
    for (fmt, dev) in &devs {
        let name = format!("warm_{}", fmt.name());
        both(&mut c, "nested", &name, dev, |_| WARM_IOVA);
    }
    both(&mut c, "paging", "walk", &world.paging, sweep_iova);
    for (fmt, dev) in &devs {
        let name = format!("cold_{}", fmt.name());
        both(&mut c, "nested", &name, dev, sweep_iova);
        uncached(&mut c, &format!("uncached_{}", fmt.name()), dev);
    }
    c.final_summary();
}
