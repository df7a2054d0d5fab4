//! Feature bits and the configuration space (`struct virtio_iommu_config`, virtio 1.3
//! section 5.13.4).

use crate::ioas::Budget;
use crate::types::PAGE_SIZE;
use std::ops::Range;

/// `VIRTIO_IOMMU_F_INPUT_RANGE` (bit 0): `input_range` describes the IOVAs the device maps.
pub const F_INPUT_RANGE: u32 = 0;
/// `VIRTIO_IOMMU_F_DOMAIN_RANGE` (bit 1): `domain_range` describes the valid domain IDs.
pub const F_DOMAIN_RANGE: u32 = 1;
/// `VIRTIO_IOMMU_F_MAP_UNMAP` (bit 2): MAP and UNMAP requests are available.
pub const F_MAP_UNMAP: u32 = 2;
/// `VIRTIO_IOMMU_F_BYPASS` (bit 3), superseded by `BYPASS_CONFIG`; never offered here.
pub const F_BYPASS: u32 = 3;
/// `VIRTIO_IOMMU_F_PROBE` (bit 4): PROBE requests are available.
pub const F_PROBE: u32 = 4;
/// `VIRTIO_IOMMU_F_MMIO` (bit 5): the `VIRTIO_IOMMU_MAP_F_MMIO` flag is available.
pub const F_MMIO: u32 = 5;
/// `VIRTIO_IOMMU_F_BYPASS_CONFIG` (bit 6): the driver-writable `bypass` config field, which
/// decides whether endpoints attached to no domain bypass the IOMMU (an identity HWPT over
/// [`Config::bypass_ranges`]), and `VIRTIO_IOMMU_ATTACH_F_BYPASS`.
pub const F_BYPASS_CONFIG: u32 = 6;

/// The feature bits this device offers: `INPUT_RANGE`, `DOMAIN_RANGE`, `MAP_UNMAP`, `PROBE`,
/// `MMIO` and `BYPASS_CONFIG`. Transport bits (`VIRTIO_F_VERSION_1`, ...) are the queue
/// driver's to add.
pub const OFFERED_FEATURES: u64 = (1 << F_INPUT_RANGE)
    | (1 << F_DOMAIN_RANGE)
    | (1 << F_MAP_UNMAP)
    | (1 << F_PROBE)
    | (1 << F_MMIO)
    | (1 << F_BYPASS_CONFIG);

/// The offset of `bypass` in `struct virtio_iommu_config`.
pub const BYPASS_OFFSET: u64 = 36;

/// The size of `struct virtio_iommu_config`.
pub const CONFIG_SIZE: usize = 40;

/// The device's configuration: what the config space shows and the limits requests are
/// checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Page sizes the device can map; the lowest bit set is the granule. Default: every
    /// power of two from 4 KiB up (`!0xfff`): any 4 KiB-aligned size is one MAP, and viommu
    /// uses 2 MiB and 1 GiB leaves where a mapping is aligned.
    pub page_size_mask: u64,
    /// First and last IOVA (inclusive) a MAP may use. Default `0 ..= 2^48 - 1`, the default
    /// aperture of a viommu device.
    pub input_range: (u64, u64),
    /// First and last domain ID (inclusive). Default `0 ..= u32::MAX`.
    pub domain_range: (u32, u32),
    /// Bytes of `properties` in a PROBE reply. Default 512.
    pub probe_size: u32,
    /// The `bypass` field at boot (and after a system reset): `true` (the default, as QEMU's
    /// `boot-bypass`) lets endpoints that no domain holds do DMA through an identity domain
    /// over `bypass_ranges`, so firmware and a kernel without a virtio-iommu driver can boot
    /// from a device behind this IOMMU; `false` blocks them until the driver attaches them.
    pub boot_bypass: bool,
    /// The guest-physical ranges (half-open) a bypassing endpoint may reach, at the same
    /// address: the VMM's guest RAM and, if it chooses, MMIO windows; everything else faults.
    /// Default: `0 .. 2^48`, every address of a 48-bit machine. Must not be empty.
    pub bypass_ranges: Vec<Range<u64>>,
    /// The budget each domain's IOAS gets ([`crate::Budget`]): a MAP that could take the
    /// domain past it is answered `VIRTIO_IOMMU_S_NOMEM` and changes nothing. Default
    /// [`Config::DEFAULT_BUDGET`]: 2^18 mappings, 512 MiB of page tables, 32 MiB of page
    /// tables per MAP. A guest cannot make a domain without an endpoint, and endpoints are
    /// the VMM's, so the device as a whole is bounded by endpoints times this. A VMM whose
    /// guest needs more (a big guest that maps its RAM with 4 KiB pages through a nested
    /// assigned device, say: 1 TiB of 4 KiB maps takes 2 GiB of tables) raises it here, e.g.
    /// `Config { budget: Budget { max_table_bytes: 4 << 30, ..Config::DEFAULT_BUDGET },
    /// ..Config::default() }`; [`crate::Budget::UNLIMITED`] turns it off.
    pub budget: Budget,
}

impl Default for Config {
    // A list of ranges that holds one range by default.
    #[allow(clippy::single_range_in_vec_init)]
    fn default() -> Self {
        Config {
            page_size_mask: !(PAGE_SIZE - 1),
            input_range: (0, (1 << 48) - 1),
            domain_range: (0, u32::MAX),
            probe_size: 512,
            boot_bypass: true,
            bypass_ranges: vec![0..1 << 48],
            budget: Config::DEFAULT_BUDGET,
        }
    }
}

impl Config {
    /// The default [`Config::budget`]. Page tables: 512 MiB, so a guest's MAP requests are
    /// refused before the tables they make reach 1 GiB (tables an unmap emptied and the few a
    /// page table pools are within it or bounded apart: 24 tables a domain). One MAP may add
    /// at most 32 MiB of tables, about 60 ms of work on the queue thread (building 16 MiB of
    /// tables took 33 ms): enough for 16 GiB of IOVA with 4 KiB leaves in one request, or
    /// 8 TiB with 2 MiB leaves. Mappings: 2^18, VFIO's `dma_entry_limit` (65535) times four,
    /// which a strict-mode guest's in-flight DMA stays far below; they take about 100 bytes
    /// each (the area index, the page-table leaves aside).
    pub const DEFAULT_BUDGET: Budget = Budget {
        max_areas: 1 << 18,
        max_table_bytes: 512 << 20,
        max_map_table_bytes: 32 << 20,
    };

    /// The granule: the lowest page size in `page_size_mask`, at least 4 KiB (viommu's).
    pub fn granule(&self) -> u64 {
        let low = self.page_size_mask & self.page_size_mask.wrapping_neg();
        low.max(PAGE_SIZE)
    }

    /// `struct virtio_iommu_config` at boot, little-endian: page_size_mask, input_range
    /// (start, end), domain_range (start, end), probe_size, bypass (`boot_bypass`) and 3
    /// reserved bytes. The device's live `bypass` is [`crate::virtio_iommu::VirtioIommu::read_config`]'s.
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[0..8].copy_from_slice(&self.page_size_mask.to_le_bytes());
        b[8..16].copy_from_slice(&self.input_range.0.to_le_bytes());
        b[16..24].copy_from_slice(&self.input_range.1.to_le_bytes());
        b[24..28].copy_from_slice(&self.domain_range.0.to_le_bytes());
        b[28..32].copy_from_slice(&self.domain_range.1.to_le_bytes());
        b[32..36].copy_from_slice(&self.probe_size.to_le_bytes());
        b[BYPASS_OFFSET as usize] = u8::from(self.boot_bypass);
        b
    }

    /// A config-space read of `data.len()` bytes at `offset` of [`Config::to_bytes`]; bytes
    /// past the structure read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        read_bytes(&self.to_bytes(), offset, data);
    }
}

/// A read of `data.len()` bytes at `offset` of `bytes`; bytes past them read as zero.
pub(crate) fn read_bytes(bytes: &[u8], offset: u64, data: &mut [u8]) {
    for (i, d) in data.iter_mut().enumerate() {
        *d = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| bytes.get(o))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout() {
        let c = Config {
            page_size_mask: 0x1000,
            input_range: (0x1000, 0xffff_ffff),
            domain_range: (1, 100),
            probe_size: 256,
            boot_bypass: false,
            ..Config::default()
        };
        let b = c.to_bytes();
        assert_eq!(&b[0..8], &0x1000u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x1000u64.to_le_bytes());
        assert_eq!(&b[16..24], &0xffff_ffffu64.to_le_bytes());
        assert_eq!(&b[24..28], &1u32.to_le_bytes());
        assert_eq!(&b[28..32], &100u32.to_le_bytes());
        assert_eq!(&b[32..36], &256u32.to_le_bytes());
        assert_eq!(&b[36..40], &[0; 4]);
        let mut d = [0xffu8; 6];
        c.read(36, &mut d);
        assert_eq!(d, [0; 6]);
        c.read(u64::MAX, &mut d);
        assert_eq!(d, [0; 6]);
        assert_eq!(Config::default().granule(), 4096);
        assert_eq!(OFFERED_FEATURES, 0b111_0111);
        // QEMU's qtest reads bypass == 1 with boot-bypass on (its default).
        let mut d = [0u8; 1];
        Config::default().read(BYPASS_OFFSET, &mut d);
        assert_eq!(d, [1]);
    }
}
