//! Identity HWPTs through the control plane: allocation and its errors, attach / replace /
//! detach at the RID and at a PASID, any-to-any replaces with paging, hitless replace under
//! DMA (G2), the detach fence (G6), rollback (G8) and reclamation (G9).
#![allow(clippy::single_range_in_vec_init)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use viommu::{errno, Access, DeviceInfo, Error, FaultKind, GroupId, HwptFlags, Iommu, Prot};

const RAM: [std::ops::Range<u64>; 2] = [0..0x4000_0000, 0x1_0000_0000..0x1_1000_0000];

#[test]
fn alloc_errors_and_ranges() {
    let iommu = Iommu::new();
    let (dev, _d) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    let before = iommu.stats();
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = [0..0x1000, 9..3];
    for bad in [&[][..], &[5..5][..], &reversed[..]] {
        let e = iommu.hwpt_alloc_identity(dev, bad).unwrap_err();
        assert!(matches!(e, Error::EmptyIdentityRange { .. }), "{e:?}");
        assert_eq!(e.errno(), errno::EINVAL);
    }
    assert_eq!(
        iommu.hwpt_alloc_identity(ioas, &RAM).unwrap_err().errno(),
        errno::EINVAL
    );
    iommu.synchronize().unwrap();
    assert_eq!(
        iommu.stats(),
        before,
        "a failed allocation changes nothing (G8)"
    );
    let id = iommu
        .hwpt_alloc_identity(dev, &[0x2000..0x3000, 0x1000..0x2000, 0x8000..0x9000])
        .unwrap();
    assert_eq!(
        iommu.hwpt_identity_ranges(id).unwrap(),
        vec![0x1000..0x3000, 0x8000..0x9000]
    );
    assert_eq!(iommu.stats().hwpts, 1);
    // Not a nesting parent, and nothing to invalidate.
    let paging = iommu.hwpt_alloc(dev, ioas, HwptFlags::empty()).unwrap();
    assert_eq!(
        iommu.hwpt_identity_ranges(paging).unwrap_err().errno(),
        errno::EINVAL
    );
    iommu.destroy(paging).unwrap();
    iommu.destroy(id).unwrap();
    iommu.synchronize().unwrap();
    assert_eq!(iommu.stats().live_domains, 0, "G9");
}

#[test]
fn attach_replace_detach_rid_and_pasid() {
    let iommu = Iommu::new();
    let info = DeviceInfo {
        pasid_bits: 4,
        ..DeviceInfo::default()
    };
    let (dev_id, dev) = iommu.device_bind(GroupId(1), info).unwrap();
    let id = iommu.hwpt_alloc_identity(dev_id, &RAM).unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x10_0000), 0x7_0000, 0x1000, Prot::READ)
        .unwrap();
    let at = |iova: u64| {
        dev.translate_chunk(iova, 8, Access::Read)
            .map(|c| c.target)
            .map_err(|f| f.kind)
    };
    assert_eq!(at(0x10_0000), Err(FaultKind::Blocked));
    assert_eq!(iommu.device_attach(dev_id, id).unwrap(), id);
    assert_eq!(at(0x10_0000), Ok(0x10_0000));
    assert_eq!(at(0x1_0000_0008), Ok(0x1_0000_0008));
    assert_eq!(at(0x4000_0000), Err(FaultKind::Unmapped));
    assert_eq!(at(u64::MAX - 4), Err(FaultKind::Aperture));
    // A request that leaves its range faults where the range ends.
    let f = dev.translate(0x3fff_fff0, 0x20, Access::Write).unwrap_err();
    assert_eq!((f.iova, f.kind), (0x4000_0000, FaultKind::Unmapped));
    // Identity -> paging (auto HWPT on the IOAS) -> identity.
    let auto = iommu.device_replace(dev_id, ioas).unwrap();
    assert_eq!(at(0x10_0000), Ok(0x7_0000));
    assert_eq!(iommu.device_replace(dev_id, id).unwrap(), id);
    assert_eq!(at(0x10_0000), Ok(0x10_0000));
    assert_ne!(auto, id);
    // Busy while attached.
    assert_eq!(iommu.destroy(id).unwrap_err().errno(), errno::EBUSY);
    // At a PASID.
    iommu.device_attach_pasid(dev_id, 3, id).unwrap();
    let p = dev.pin_pasid(3);
    assert_eq!(
        p.translate_chunk(0x5000, 8, Access::Write).unwrap().target,
        0x5000
    );
    drop(p);
    iommu.device_replace_pasid(dev_id, 3, ioas).unwrap();
    let p = dev.pin_pasid(3);
    assert_eq!(
        p.translate_chunk(0x10_0000, 8, Access::Read)
            .unwrap()
            .target,
        0x7_0000
    );
    drop(p);
    iommu.device_detach_pasid(dev_id, 3).unwrap();
    // The detach fence (G6).
    iommu.device_detach(dev_id).unwrap();
    assert_eq!(at(0x10_0000), Err(FaultKind::Blocked));
    iommu.destroy(id).unwrap();
    iommu.synchronize().unwrap();
}

/// Paging <-> identity under DMA, the paging domain mapping the buffer at its own address:
/// no translation faults or goes elsewhere (G2).
#[test]
fn replace_identity_paging_under_dma_is_hitless() {
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let id = iommu.hwpt_alloc_identity(dev_id, &RAM).unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    const BUF: u64 = 0x20_0000;
    iommu
        .ioas_map(ioas, Some(BUF), BUF, 0x10_0000, Prot::RW)
        .unwrap();
    let paging = iommu.hwpt_alloc(dev_id, ioas, HwptFlags::empty()).unwrap();
    iommu.device_attach(dev_id, id).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let t = {
        let (dev, stop, bad) = (dev.clone(), stop.clone(), bad.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while i < 256 || !stop.load(Ordering::Relaxed) {
                let iova = BUF + (i * 4104) % 0xf_f000;
                match dev.translate(iova, 64, Access::Write) {
                    Ok(t) if t.as_slice()[0].target == iova => {}
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        })
    };
    for _ in 0..20_000 {
        iommu.device_replace(dev_id, paging).unwrap();
        iommu.device_replace(dev_id, id).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 0);
}
