//! What a translation returns: maximal chunks across areas, large leaves, the aperture.

use crate::common::{assert_maps_to, fault, narrow, Fixture, PAGE};
use viommu::{Access, Chunk, DeviceInfo, FaultKind, Prot};

#[test]
fn chunks_are_maximal_across_separately_mapped_areas() {
    // Three areas back to back; the first two have contiguous targets, the third does not.
    let (_iommu, _dev, h, _ioas) = Fixture::new(DeviceInfo::default())
        .map(0x1000, 0x10_0000, 2 * PAGE, Prot::RW)
        .map(0x3000, 0x10_2000, PAGE, Prot::READ)
        .map(0x4000, 0x50_0000, PAGE, Prot::RW)
        .attached()
        .parts();
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
    let two_mib = 2 << 20;
    let (iommu, _dev, h, ioas) = Fixture::new(DeviceInfo::default())
        .map(two_mib, 0x4000_0000, two_mib, Prot::RW)
        .attached()
        .parts();
    assert_maps_to(&h, two_mib, two_mib, Access::Write, 0x4000_0000);
    assert_maps_to(&h, two_mib + 0x12_3456, 0x100, Access::Read, 0x4012_3456);
    assert_eq!(
        fault(&h, 2 * two_mib, PAGE, Access::Read),
        FaultKind::Unmapped
    );
    assert_eq!(iommu.ioas_unmap(ioas, two_mib, two_mib), Ok(two_mib));
    assert_eq!(fault(&h, two_mib, PAGE, Access::Read), FaultKind::Unmapped);
}

#[test]
fn a_request_past_the_aperture_faults_aperture() {
    let (_iommu, _dev, h, _ioas) = Fixture::new(narrow(21))
        .map((2 << 20) - PAGE, 0x4000_0000, PAGE, Prot::RW)
        .attached()
        .parts();
    assert_maps_to(&h, (2 << 20) - PAGE, PAGE, Access::Read, 0x4000_0000);
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
