//! The MAP+UNMAP churn of the virtio-iommu map/unmap measurements: its constants and one
//! queue pass's request structs. Shared by `benches/virtio_iommu.rs` and viommu-perf's
//! `virtio_mapunmap` scenario, so the bench and the suite send the same requests. The
//! including module provides `PAGE`, `linux_map` and `linux_unmap`
//! (`tests/support/linux_virtio_iommu.rs`).

// Each includer uses a different part of this module.
#![allow(dead_code)]

use super::{linux_map, linux_unmap, PAGE};
use viommu::virtio_iommu::wire::{MAP_F_READ, MAP_F_WRITE};

/// MAP+UNMAP pairs in one queue pass.
pub const PAIRS: u64 = 32;
pub const DOMAIN: u32 = 1;
pub const ENDPOINT: u32 = 1;
/// The churned IOVAs start here.
pub const CHURN: u64 = 0x10_0000;
/// The DMA thread's page (mapped once, never unmapped).
pub const DMA_IOVA: u64 = 0x1000_0000;
pub const DMA_TARGET: u64 = 0x8000_0000;

/// One pass's request structs: MAP i, UNMAP i, for i in 0..PAIRS.
pub fn pass_requests() -> Vec<Vec<u8>> {
    let rw = MAP_F_READ | MAP_F_WRITE;
    (0..PAIRS)
        .flat_map(|i| {
            let iova = CHURN + i * PAGE;
            [
                linux_map(DOMAIN, iova, 0x4000_0000 + i * PAGE, PAGE, rw),
                linux_unmap(DOMAIN, iova, PAGE),
            ]
        })
        .collect()
}
