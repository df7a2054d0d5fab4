//! Feature bits and the configuration space (`struct virtio_iommu_config`, virtio 1.3
//! section 5.13.4).

use crate::types::PAGE_SIZE;

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
/// `VIRTIO_IOMMU_F_BYPASS_CONFIG` (bit 6): the `bypass` config field and
/// `VIRTIO_IOMMU_ATTACH_F_BYPASS`. Not offered: viommu has no identity domain yet.
pub const F_BYPASS_CONFIG: u32 = 6;

/// The feature bits this device offers: `INPUT_RANGE`, `DOMAIN_RANGE`, `MAP_UNMAP`, `PROBE`
/// and `MMIO`. Transport bits (`VIRTIO_F_VERSION_1`, ...) are the queue driver's to add.
pub const OFFERED_FEATURES: u64 = (1 << F_INPUT_RANGE)
    | (1 << F_DOMAIN_RANGE)
    | (1 << F_MAP_UNMAP)
    | (1 << F_PROBE)
    | (1 << F_MMIO);

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            page_size_mask: !(PAGE_SIZE - 1),
            input_range: (0, (1 << 48) - 1),
            domain_range: (0, u32::MAX),
            probe_size: 512,
        }
    }
}

impl Config {
    /// The granule: the lowest page size in `page_size_mask`, at least 4 KiB (viommu's).
    pub fn granule(&self) -> u64 {
        let low = self.page_size_mask & self.page_size_mask.wrapping_neg();
        low.max(PAGE_SIZE)
    }

    /// `struct virtio_iommu_config`, little-endian: page_size_mask, input_range (start,
    /// end), domain_range (start, end), probe_size, bypass (always 0: `BYPASS_CONFIG` is not
    /// offered) and 3 reserved bytes.
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[0..8].copy_from_slice(&self.page_size_mask.to_le_bytes());
        b[8..16].copy_from_slice(&self.input_range.0.to_le_bytes());
        b[16..24].copy_from_slice(&self.input_range.1.to_le_bytes());
        b[24..28].copy_from_slice(&self.domain_range.0.to_le_bytes());
        b[28..32].copy_from_slice(&self.domain_range.1.to_le_bytes());
        b[32..36].copy_from_slice(&self.probe_size.to_le_bytes());
        b
    }

    /// A config-space read of `data.len()` bytes at `offset`; bytes past the structure read
    /// as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.to_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
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
        assert_eq!(OFFERED_FEATURES, 0b11_0111);
    }
}
