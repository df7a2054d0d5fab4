//! Criterion bench of the `vm-memory` feature: a 512-byte `Bytes::read_slice` through
//! `IommuMemory<GuestMemoryMmap, DeviceIommu>` against vm-memory's documented pattern, an
//! `Iommu` whose `translate` is `Iotlb::lookup` on an `RwLock<Iotlb>` read guard (prefilled, so
//! it never misses), and against bypass (no IOMMU: the floor). One thread, idle.
//!
//! Two shapes: `contiguous` (one buffer, 512 bytes inside one page, read again and again: one
//! IOTLB entry for the baseline, a reused scratch entry for the adapter) and `256_pages`
//! (256 separately mapped pages with scattered targets, read in turn: 256 IOTLB entries for the
//! baseline, a refilled scratch for the adapter).
//!
//! Run with `cargo bench --features vm-memory --bench vm_memory`.

use criterion::{black_box, Criterion};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;
use viommu::vm_memory::DeviceIommu;
use viommu::{DeviceInfo, GroupId, Iommu, Prot};
use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryMmap, Iommu as VmIommu, IommuMemory, Iotlb, Permissions,
};

const PAGE: u64 = 4096;
const PAGES: u64 = 256;
const RAM: u64 = PAGES * PAGE;
const IOVA: u64 = 0x1000_0000;
const LEN: usize = 512;

/// vm-memory's documented pattern: an `Iotlb` behind an `RwLock`, looked up under a read guard.
#[derive(Debug, Default)]
struct RwLockIommu {
    iotlb: RwLock<Iotlb>,
}

impl VmIommu for RwLockIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        Iotlb::lookup(self.iotlb.read().unwrap(), iova, length, access).map_err(|_| {
            IommuError::CannotResolve {
                iova_range: IovaRange { base: iova, length },
                reason: "miss".into(),
            }
        })
    }
}

/// The target page of IOVA page `i` in the `256_pages` shape: scattered, so no two neighbours
/// are contiguous.
fn scattered(i: u64) -> u64 {
    ((i * 97) % PAGES) * PAGE
}

fn ram() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
}

/// `(name, offset of request k)`: the shapes' request streams.
fn requests(shape: &str, k: u64) -> u64 {
    match shape {
        "contiguous" => 0x100,
        _ => (k % PAGES) * PAGE + 0x100,
    }
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("vm_memory_read512");
    for shape in ["contiguous", "256_pages"] {
        // The adapter.
        let iommu = Iommu::new();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .unwrap();
        let ioas = iommu.ioas_alloc().unwrap();
        // The baseline's IOTLB, filled with the same mappings.
        let baseline = RwLockIommu::default();
        if shape == "contiguous" {
            iommu.ioas_map(ioas, Some(IOVA), 0, RAM, Prot::RW).unwrap();
            baseline
                .iotlb
                .write()
                .unwrap()
                .set_mapping(
                    GuestAddress(IOVA),
                    GuestAddress(0),
                    RAM as usize,
                    Permissions::ReadWrite,
                )
                .unwrap();
        } else {
            for i in 0..PAGES {
                let (iova, target) = (IOVA + i * PAGE, scattered(i));
                iommu
                    .ioas_map(ioas, Some(iova), target, PAGE, Prot::RW)
                    .unwrap();
                baseline
                    .iotlb
                    .write()
                    .unwrap()
                    .set_mapping(
                        GuestAddress(iova),
                        GuestAddress(target),
                        PAGE as usize,
                        Permissions::ReadWrite,
                    )
                    .unwrap();
            }
        }
        iommu.device_attach(dev_id, ioas).unwrap();
        let ours = IommuMemory::new(ram(), DeviceIommu::new(dev), true, ());
        let theirs = IommuMemory::new(ram(), baseline, true, ());
        let bypass = IommuMemory::new(ram(), RwLockIommu::default(), false, ());
        let mut buf = [0u8; LEN];

        let mut k = 0u64;
        g.bench_function(format!("viommu/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(IOVA + requests(shape, k));
                ours.read_slice(black_box(&mut buf), black_box(at)).unwrap();
            })
        });
        g.bench_function(format!("rwlock_iotlb/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(IOVA + requests(shape, k));
                theirs
                    .read_slice(black_box(&mut buf), black_box(at))
                    .unwrap();
            })
        });
        g.bench_function(format!("bypass/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = GuestAddress(requests(shape, k));
                bypass
                    .read_slice(black_box(&mut buf), black_box(at))
                    .unwrap();
            })
        });
        // Where the adapter's time goes: the pin + walk alone.
        let dev = ours.iommu().device().clone();
        g.bench_function(format!("pin_walk_only/{shape}"), |b| {
            b.iter(|| {
                k += 1;
                let at = IOVA + requests(shape, k);
                let dma = dev.pin();
                let t = dma
                    .translate(black_box(at & !(PAGE - 1)), PAGE, viommu::Access::Read)
                    .unwrap();
                black_box(t.as_slice()[0].target);
            })
        });
    }
    g.finish();
}

fn main() {
    // The other benches' settings (benches/common): short warm-up and measurement.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    read(&mut c);
    c.final_summary();
}
