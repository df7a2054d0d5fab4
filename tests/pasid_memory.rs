//! PASID state returns (G9): after any number of attach/detach cycles of distinct PASIDs,
//! `synchronize` brings the host memory the library holds back to its baseline, also while
//! another thread keeps pinning guards at those PASIDs. Memory is the bytes the test thread
//! allocated and has not freed (a counting allocator; the control plane runs and frees on the
//! calling thread).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use viommu::{Access, DeviceInfo, GroupId, Iommu, Prot};

/// Bytes this thread allocated and has not freed.
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::thread_live_bytes as live;

const IOVA: u64 = 0x10_0000;
const PAGE: u64 = 4096;
const CYCLES: u32 = 20_000;

#[test]
fn pasid_attach_detach_cycles_return_to_baseline() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(IOVA), 0x1_0000_0000, PAGE, Prot::RW)
        .unwrap();
    let info = DeviceInfo {
        pasid_bits: 20,
        ..DeviceInfo::default()
    };
    let (dev, handle) = iommu.device_bind(GroupId(1), info.clone()).unwrap();
    // A group-mate: the group's cell of a PASID is shared by its devices.
    let (mate, mate_handle) = iommu.device_bind(GroupId(1), info).unwrap();
    let hwpt = iommu.device_attach(dev, ioas).unwrap();
    iommu.device_attach(mate, hwpt).unwrap();

    // A DMA thread pins at the PASIDs being cycled the whole time.
    let current = AtomicU32::new(1);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let p = current.load(Ordering::Relaxed);
                for q in [p, p.saturating_sub(1).max(1)] {
                    if let Ok(c) = mate_handle
                        .pin_pasid(q)
                        .translate_chunk(IOVA, 8, Access::Read)
                    {
                        assert_eq!(c.target, 0x1_0000_0000);
                    }
                }
                std::hint::spin_loop();
            }
        });
        let cycle = |p: u32| {
            current.store(p, Ordering::Relaxed);
            iommu.device_attach_pasid(dev, p, hwpt).unwrap();
            iommu.device_attach_pasid(mate, p, hwpt).unwrap();
            assert!(handle
                .pin_pasid(p)
                .translate_chunk(IOVA, 8, Access::Read)
                .is_ok());
            iommu.device_detach_pasid(mate, p).unwrap();
            iommu.device_detach_pasid(dev, p).unwrap();
        };
        // Warm up (the first leaf, the maps' nodes), then take the baseline.
        for p in 1..=8 {
            cycle(p);
        }
        iommu.synchronize().unwrap();
        let base = live();
        for p in 0..CYCLES {
            // Distinct PASIDs, spread over the whole 20-bit space (every leaf).
            cycle(1 + (p * 52_391) % ((1 << 20) - 1));
        }
        iommu.synchronize().unwrap();
        let now = live();
        stop.store(true, Ordering::Relaxed);
        assert!(
            now - base < 4096,
            "{CYCLES} PASID attach/detach cycles kept {} bytes ({} a PASID)",
            now - base,
            (now - base) / CYCLES as isize
        );
    });
}
