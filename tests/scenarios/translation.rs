//! What a translation returns: maximal chunks across areas, large leaves, the aperture.

use crate::common::{bind, chunks, fault, narrow, one, PAGE};
use viommu::{Access, Chunk, DeviceInfo, FaultKind, Iommu, Prot};

#[test]
fn chunks_are_maximal_across_separately_mapped_areas() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, DeviceInfo::default());
    let ioas = iommu.ioas_alloc().unwrap();
    // Three areas back to back; the first two have contiguous targets, the third does not.
    iommu
        .ioas_map(ioas, Some(0x1000), 0x10_0000, 2 * PAGE, Prot::RW)
        .unwrap();
    iommu
        .ioas_map(ioas, Some(0x3000), 0x10_2000, PAGE, Prot::READ)
        .unwrap();
    iommu
        .ioas_map(ioas, Some(0x4000), 0x50_0000, PAGE, Prot::RW)
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    let t = h.translate(0x1010, 4 * PAGE - 0x20, Access::Read).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.collect::<Vec<_>>(),
        vec![
            Chunk {
                iova: 0x1010,
                target: 0x10_0010,
                len: 3 * PAGE - 0x10
            },
            Chunk {
                iova: 0x4000,
                target: 0x50_0000,
                len: PAGE - 0x10
            },
        ]
    );
    // A write stops at the read-only page.
    assert_eq!(
        fault(&h, 0x1000, 4 * PAGE, Access::Write),
        FaultKind::Permission
    );
    let f = h.translate(0x1000, 4 * PAGE, Access::Write).unwrap_err();
    assert_eq!(f.iova, 0x3000);
    // A zero-length request is an empty translation.
    assert_eq!(h.translate(0x1000, 0, Access::Read).unwrap().len(), 0);
    // A hole faults with its IOVA.
    let f = h.translate(0x4000, 2 * PAGE, Access::Read).unwrap_err();
    assert_eq!((f.kind, f.iova), (FaultKind::Unmapped, 0x5000));
}

#[test]
fn a_two_megabyte_mapping_translates_as_one_chunk() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, DeviceInfo::default());
    let ioas = iommu.ioas_alloc().unwrap();
    let two_mib = 2 << 20;
    iommu
        .ioas_map(ioas, Some(two_mib), 0x4000_0000, two_mib, Prot::RW)
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    assert_eq!(
        chunks(&h, two_mib, two_mib, Access::Write),
        one(two_mib, 0x4000_0000, two_mib)
    );
    assert_eq!(
        chunks(&h, two_mib + 0x12_3456, 0x100, Access::Read),
        one(two_mib + 0x12_3456, 0x4012_3456, 0x100)
    );
    assert_eq!(
        fault(&h, 2 * two_mib, PAGE, Access::Read),
        FaultKind::Unmapped
    );
    assert_eq!(iommu.ioas_unmap(ioas, two_mib, two_mib), Ok(two_mib));
    assert_eq!(fault(&h, two_mib, PAGE, Access::Read), FaultKind::Unmapped);
}

#[test]
fn a_request_past_the_aperture_faults_aperture() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, narrow(21));
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some((2 << 20) - PAGE), 0x4000_0000, PAGE, Prot::RW)
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    assert_eq!(
        chunks(&h, (2 << 20) - PAGE, PAGE, Access::Read),
        one((2 << 20) - PAGE, 0x4000_0000, PAGE)
    );
    assert_eq!(
        fault(&h, (2 << 20) - PAGE, PAGE + 1, Access::Read),
        FaultKind::Aperture
    );
    assert_eq!(fault(&h, 2 << 20, PAGE, Access::Read), FaultKind::Aperture);
    assert_eq!(
        fault(&h, u64::MAX - 0xf, 0x100, Access::Read),
        FaultKind::Aperture
    );
}
