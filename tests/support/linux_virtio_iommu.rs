//! The Linux driver's virtio-iommu request structs, byte for byte as
//! `drivers/iommu/virtio-iommu.c` fills them; shared by the virtio-iommu tests (included with
//! `#[path]` so that only the tests that use them compile them).

/// `struct virtio_iommu_req_attach` as `viommu_attach_dev` fills it.
pub fn linux_attach(domain: u32, endpoint: u32) -> Vec<u8> {
    let mut b = vec![0u8; 24];
    b[0] = 1;
    b[4..8].copy_from_slice(&domain.to_le_bytes());
    b[8..12].copy_from_slice(&endpoint.to_le_bytes());
    b
}

/// `struct virtio_iommu_req_map` as `viommu_map_pages` fills it.
pub fn linux_map(domain: u32, iova: u64, paddr: u64, size: u64, flags: u32) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    b[0] = 3;
    b[4..8].copy_from_slice(&domain.to_le_bytes());
    b[8..16].copy_from_slice(&iova.to_le_bytes());
    b[16..24].copy_from_slice(&(iova + size - 1).to_le_bytes());
    b[24..32].copy_from_slice(&paddr.to_le_bytes());
    b[32..36].copy_from_slice(&flags.to_le_bytes());
    b
}

/// `struct virtio_iommu_req_unmap` as `viommu_unmap_pages` fills it.
pub fn linux_unmap(domain: u32, iova: u64, size: u64) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    b[0] = 4;
    b[4..8].copy_from_slice(&domain.to_le_bytes());
    b[8..16].copy_from_slice(&iova.to_le_bytes());
    b[16..24].copy_from_slice(&(iova + size - 1).to_le_bytes());
    b
}
