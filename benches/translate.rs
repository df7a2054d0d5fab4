//! Criterion benches of the data plane: pinning, translating through a guard, the page-table
//! walk at each leaf size, and one-shot translation against two references (an uncontended
//! `RwLock<BTreeMap>` lookup and the plain unsynchronized radix walk of `perf/`), alone and
//! with a second thread translating or replacing at the same time.
//!
//! Run with `cargo bench --bench translate`; `docs/benchmarks.md` says what each group
//! measures. The latency suite with percentiles and ratio targets is `viommu-perf`.

mod common;

use common::{chunk_target, config, first_target, with_background, TwoDomains, MIB2, PAGE};
use criterion::measurement::WallTime;
use criterion::{black_box, BenchmarkGroup, BenchmarkId, Criterion};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use viommu::Access;

#[path = "../perf/src/baselines/radix.rs"]
#[allow(dead_code)]
mod radix;

const GIB: u64 = 1 << 30;
/// 4 KiB mappings: 256 pages whose target is not 2 MiB aligned, so the walk ends at level 0.
const IOVA_4K: u64 = 0x1000_0000;
const TARGET_4K: u64 = 0x40_0000_1000;
const PAGES_4K: u64 = 256;
/// One 2 MiB leaf (target 2 MiB aligned, not 1 GiB aligned).
const IOVA_2M: u64 = 0x4000_0000;
const TARGET_2M: u64 = 0x50_0020_0000;
/// One 1 GiB leaf.
const IOVA_1G: u64 = 0x80_0000_0000;
const TARGET_1G: u64 = 0x60_0000_0000;
/// Bytes a request translates.
const LEN: u64 = 512;

/// `(iova, target, len)` of every mapping.
fn mappings() -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = (0..PAGES_4K)
        .map(|i| (IOVA_4K + i * PAGE, TARGET_4K + i * PAGE, PAGE))
        .collect();
    v.push((IOVA_2M, TARGET_2M, MIB2));
    v.push((IOVA_1G, TARGET_1G, GIB));
    v
}

/// One device on a user HWPT of an IOAS holding every mapping above, plus a second HWPT (of
/// a second IOAS with the same mappings) to replace to.
fn fixture() -> TwoDomains {
    TwoDomains::new(|_| mappings())
}

/// The same mappings as a plain radix table.
fn radix_table() -> radix::Radix {
    let mut r = radix::Radix::new();
    for (iova, target, len) in mappings() {
        r.map(iova, target, len, radix::READ | radix::WRITE)
            .expect("radix map");
    }
    r
}

/// The same mappings as a `RwLock<BTreeMap>` keyed by IOVA: `(target, len, permissions)`.
fn btree_table() -> RwLock<BTreeMap<u64, (u64, u64, u64)>> {
    RwLock::new(
        mappings()
            .into_iter()
            .map(|(iova, target, len)| (iova, (target, len, radix::READ | radix::WRITE)))
            .collect(),
    )
}

/// Translates `LEN` bytes at `iova` for reading, as the others do: every mapping the request
/// touches must exist and allow the access (the suite's `rwlock-btree` does the same, under a
/// second lock for its endpoint map); returns the target of `iova`.
fn btree_lookup(t: &RwLock<BTreeMap<u64, (u64, u64, u64)>>, iova: u64) -> Option<u64> {
    let m = t.read().expect("poisoned");
    let end = iova.checked_add(LEN)?;
    let mut at = iova;
    let mut first = None;
    while at < end {
        let (&start, &(target, len, perm)) = m.range(..=at).next_back()?;
        if at - start >= len || perm & radix::READ == 0 {
            return None;
        }
        first.get_or_insert(target + (at - start));
        at = start + len;
    }
    first
}

/// Request IOVAs cycling through the 4 KiB pages.
fn iova_4k(i: u64) -> u64 {
    IOVA_4K + (i.wrapping_mul(97) % PAGES_4K) * PAGE + 1024
}

fn pin(c: &mut Criterion) {
    let f = fixture();
    c.bench_function("pin", |b| b.iter(|| drop(black_box(f.dev.pin()))));
}

fn guard_hit(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("guard_translate");
    {
        let guard = f.dev.pin();
        let mut i = 0u64;
        // `translate_chunk`: the fastest correct call for a request inside one page.
        bench_cycling(&mut g, "hit_4k", &mut i, |iova| {
            chunk_target(guard.translate_chunk(iova, LEN, Access::Read))
        });
        // `translate`: the chunk list.
        bench_cycling(&mut g, "hit_4k_list", &mut i, |iova| {
            first_target(guard.translate(iova, LEN, Access::Read))
        });
    }
    for (name, iova) in [
        ("4K", IOVA_4K + 1024),
        ("2M", IOVA_2M + 12345 * 64),
        ("1G", IOVA_1G + (7 << 20)),
    ] {
        let guard = f.dev.pin();
        g.bench_with_input(BenchmarkId::new("walk", name), &iova, |b, &iova| {
            b.iter(|| chunk_target(guard.translate_chunk(black_box(iova), LEN, Access::Read)))
        });
    }
    g.finish();
}

/// Benches `at` on request IOVAs cycling through the 4 KiB pages; `i` counts on across calls.
fn bench_cycling<R>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    i: &mut u64,
    at: impl Fn(u64) -> R,
) {
    g.bench_function(name, |b| {
        b.iter(|| {
            *i += 1;
            at(black_box(iova_4k(*i)))
        })
    });
}

fn one_shot(c: &mut Criterion) {
    let f = fixture();
    let bt = btree_table();
    let rx = radix_table();
    let mut g = c.benchmark_group("one_shot");
    let mut i = 0u64;
    bench_cycling(&mut g, "viommu_device_translate", &mut i, |iova| {
        chunk_target(f.dev.translate_chunk(iova, LEN, Access::Read))
    });
    bench_cycling(&mut g, "viommu_device_translate_list", &mut i, |iova| {
        first_target(f.dev.translate(iova, LEN, Access::Read))
    });
    let mx = std::sync::Mutex::new(radix_table());
    bench_cycling(&mut g, "mutex_radix", &mut i, |iova| {
        mx.lock()
            .expect("poisoned")
            .translate(iova, LEN, radix::READ)
    });
    bench_cycling(&mut g, "rwlock_btree", &mut i, |iova| {
        btree_lookup(&bt, iova)
    });
    bench_cycling(&mut g, "plain_radix", &mut i, |iova| {
        rx.translate(iova, LEN, radix::READ)
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let f = fixture();
    let bt = btree_table();
    let viommu_at = |iova| chunk_target(f.dev.translate_chunk(iova, LEN, Access::Read));
    let btree_at = |iova| btree_lookup(&bt, iova);
    let mut g = c.benchmark_group("contended");
    let mut i = 0u64;
    // A second thread translating through the same device.
    with_background(
        || {
            for k in 0..64 {
                black_box(viommu_at(iova_4k(k)));
            }
        },
        || bench_cycling(&mut g, "viommu_translate/reader_beside", &mut i, viommu_at),
    );
    with_background(
        || {
            for k in 0..64 {
                black_box(btree_at(iova_4k(k)));
            }
        },
        || bench_cycling(&mut g, "rwlock_btree/reader_beside", &mut i, btree_at),
    );
    // A second thread switching the device between its two domains as fast as it can.
    let flip = AtomicBool::new(false);
    with_background(
        || {
            let to = usize::from(!flip.fetch_xor(true, Ordering::Relaxed));
            f.iommu
                .device_replace(f.dev_id, f.hwpt[to])
                .expect("replace");
        },
        || {
            bench_cycling(
                &mut g,
                "viommu_translate/replacer_beside",
                &mut i,
                viommu_at,
            )
        },
    );
    // The lock-based equivalent of a replace: a writer taking the write lock.
    with_background(
        || {
            let mut m = bt.write().expect("poisoned");
            let v = m.get(&IOVA_2M).copied().expect("mapped");
            m.insert(IOVA_2M, v);
        },
        || bench_cycling(&mut g, "rwlock_btree/writer_beside", &mut i, btree_at),
    );
    g.finish();
}

fn main() {
    let mut c = config(50).configure_from_args();
    pin(&mut c);
    guard_hit(&mut c);
    one_shot(&mut c);
    contended(&mut c);
    pin_pasid(&mut c);
    c.final_summary();
}

/// `pin_pasid` against `pin`: one device (20-bit PASIDs) whose RID and PASIDs 5 and 70000
/// (a deeper leaf of its table) are on the same user HWPT, so the two paths differ only in how
/// they find the cell. The contract's target: a PASID pin costs at most 20% more than a RID
/// pin. Also each followed by one 4 KiB translation.
fn pin_pasid(c: &mut Criterion) {
    use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, Prot};
    let iommu = Iommu::new();
    let info = DeviceInfo {
        pasid_bits: 20,
        ..DeviceInfo::default()
    };
    let (dev_id, dev) = iommu.device_bind(GroupId(1), info).expect("bind");
    let ioas = iommu.ioas_alloc().expect("ioas");
    for (iova, target, len) in mappings() {
        iommu
            .ioas_map(ioas, Some(iova), target, len, Prot::RW)
            .expect("map");
    }
    let hwpt = iommu
        .hwpt_alloc(dev_id, ioas, HwptFlags::empty())
        .expect("hwpt");
    iommu.device_attach(dev_id, hwpt).expect("attach");
    for p in [5, 70_000] {
        iommu
            .device_attach_pasid(dev_id, p, hwpt)
            .expect("attach pasid");
    }
    let mut g = c.benchmark_group("pin_pasid");
    g.bench_function("rid_pin", |b| b.iter(|| drop(black_box(dev.pin()))));
    g.bench_function("pasid_pin", |b| {
        b.iter(|| drop(black_box(dev.pin_pasid(black_box(5)))))
    });
    g.bench_function("pasid_pin_deep", |b| {
        b.iter(|| drop(black_box(dev.pin_pasid(black_box(70_000)))))
    });
    let mut i = 0u64;
    bench_cycling(&mut g, "rid_pin_translate", &mut i, |iova| {
        chunk_target(dev.pin().translate_chunk(iova, LEN, Access::Read))
    });
    bench_cycling(&mut g, "pasid_pin_translate", &mut i, |iova| {
        chunk_target(dev.pin_pasid(5).translate_chunk(iova, LEN, Access::Read))
    });
    g.finish();
}
