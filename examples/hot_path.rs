//! The data plane under a profiler: `N` iterations of one hot operation on one device whose
//! user HWPT maps 256 pages (the criterion benches' set-up). Modes: `pin` (pin + drop),
//! `pin_pasid` (the same at PASID 5), `guard` (translate through one held guard), `oneshot`
//! (`Device::translate`); `radix` and `mutex_radix` are the references (the suite's plain
//! radix walk of the same pages, bare and under a `Mutex`).
//!
//! Nested modes (the set-up of `viommu-perf`'s `nested-translate`, VT-d first stage over a
//! `NEST_PARENT` parent, stage 1 mapping IOVA = IPA): `paging_same` / `paging_same_guard`
//! (one IOVA over and over through the parent, one-shot / one held guard), `nested_warm` /
//! `nested_warm_guard` (the same IOVA through the nested HWPT: an IOTLB hit), `nested_cold`
//! (a 256-page sweep, an IOTLB miss every time, one-shot) and `nested_uncached` (the same
//! sweep, `pin` + `translate_uncached` + drop); `nested_setup` is their set-up alone.
//!
//! ```text
//! cargo build --release --example hot_path
//! valgrind --tool=callgrind target/release/examples/hot_path pin 1000000
//! valgrind --tool=callgrind target/release/examples/hot_path pin 0      # the set-up alone
//! ```
//!
//! Instructions per operation = (total - total with N = 0) / N.

#[path = "../perf/src/baselines/radix.rs"]
#[allow(dead_code)]
mod radix;

#[path = "../perf/src/baselines/nested_world.rs"]
#[allow(dead_code)]
mod nested_world;

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
    if mode.starts_with("paging_same") || mode.starts_with("nested_") {
        println!("{}", nested(&mode, n));
        return Ok(());
    }
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
        "radix" | "mutex_radix" => {
            // The references: the plain radix walk of the same 256 pages, bare and under a
            // `Mutex` (lock, walk, unlock).
            let mut r = radix::Radix::new();
            for i in 0..PAGES {
                r.map(
                    IOVA + i * PAGE,
                    0x40_0000_1000 + i * PAGE,
                    PAGE,
                    radix::READ | radix::WRITE,
                )
                .expect("radix map");
            }
            if mode == "radix" {
                for i in 0..n {
                    acc ^= r
                        .translate(black_box(iova(i)), 512, radix::READ)
                        .unwrap_or(0);
                }
            } else {
                let m = std::sync::Mutex::new(r);
                for i in 0..n {
                    let t = m.lock().expect("poisoned");
                    acc ^= t
                        .translate(black_box(iova(i)), 512, radix::READ)
                        .unwrap_or(0);
                }
            }
        }
        "pin" => (0..n).for_each(|_| drop(black_box(dev.pin()))),
        "pin_pasid" => (0..n).for_each(|_| drop(black_box(dev.pin_pasid(black_box(5))))),
        "guard" => {
            let guard = dev.pin();
            for i in 0..n {
                acc ^= first(guard.translate(black_box(iova(i)), 512, Access::Read));
            }
        }
        "guard_chunk" => {
            let guard = dev.pin();
            for i in 0..n {
                acc ^= guard
                    .translate_chunk(black_box(iova(i)), 512, Access::Read)
                    .map_or(0, |c| c.target);
            }
        }
        "oneshot_chunk" => {
            for i in 0..n {
                acc ^= dev
                    .translate_chunk(black_box(iova(i)), 512, Access::Read)
                    .map_or(0, |c| c.target);
            }
        }
        "oneshot" => {
            for i in 0..n {
                acc ^= first(dev.translate(black_box(iova(i)), 512, Access::Read));
            }
        }
        other => eprintln!(
            "hot_path: unknown mode {other:?} (pin, pin_pasid, guard, oneshot, radix, mutex_radix)"
        ),
    }
    println!("{acc}");
    Ok(())
}

/// The nested modes; returns the XOR of the targets.
fn nested(mode: &str, n: u64) -> u64 {
    use nested_world::{sweep_iova, Nest, NestWorld, REQ, WARM_IOVA};
    let world = NestWorld::new(Iommu::new());
    let (_, dev) = world.attached(1, world.nested(Nest::Vtd, 0));
    let first = |t: Result<viommu::Translation<'_>, viommu::Fault>| {
        t.ok().and_then(|mut t| t.next()).map_or(0, |c| c.target)
    };
    let mut acc = 0u64;
    match mode {
        "paging_same" => {
            for _ in 0..n {
                acc ^= first(
                    world
                        .paging
                        .translate(black_box(WARM_IOVA), REQ, Access::Read),
                );
            }
        }
        "paging_same_guard" => {
            let g = world.paging.pin();
            for _ in 0..n {
                acc ^= first(g.translate(black_box(WARM_IOVA), REQ, Access::Read));
            }
        }
        "nested_warm" => {
            for _ in 0..n {
                acc ^= first(dev.translate(black_box(WARM_IOVA), REQ, Access::Read));
            }
        }
        "nested_warm_guard" => {
            let g = dev.pin();
            for _ in 0..n {
                acc ^= first(g.translate(black_box(WARM_IOVA), REQ, Access::Read));
            }
        }
        "nested_cold" => {
            for i in 0..n {
                acc ^= first(dev.translate(black_box(sweep_iova(i)), REQ, Access::Read));
            }
        }
        "nested_uncached" => {
            for i in 0..n {
                let g = dev.pin();
                acc ^= g
                    .translate_uncached(black_box(sweep_iova(i)), Access::Read)
                    .and_then(Result::ok)
                    .unwrap_or(0);
            }
        }
        "nested_setup" => {}
        other => eprintln!(
            "hot_path: unknown mode {other:?} (paging_same[_guard], nested_warm[_guard], \
             nested_cold, nested_uncached, nested_setup)"
        ),
    }
    acc
}
