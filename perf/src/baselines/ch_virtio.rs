//! The baseline of `virtio-iommu-mapunmap`: the design of cloud-hypervisor's virtio-iommu
//! device (moved from the criterion bench `benches/virtio_iommu.rs`, which keeps its own copy):
//! per domain a `BTreeMap` of mappings, all domains behind one `RwLock`; MAP and UNMAP take
//! the write lock, a DMA translation takes the read lock for its lookup. Nothing waits for DMA
//! in flight: an UNMAP completes while a device may still be writing to the page it unmapped.
//!
//! It serves the same request bytes as viommu's `VirtioIommu`: the Linux driver's structs
//! (`tests/support/linux_virtio_iommu.rs`, included here).

use std::collections::BTreeMap;
use std::sync::RwLock;

#[path = "../../../tests/support/linux_virtio_iommu.rs"]
pub mod linux;

/// `VIRTIO_IOMMU_T_MAP`.
const T_MAP: u8 = 3;
/// `VIRTIO_IOMMU_T_UNMAP`.
const T_UNMAP: u8 = 4;
/// `VIRTIO_IOMMU_S_OK`.
const S_OK: u8 = 0;
/// `VIRTIO_IOMMU_S_INVAL`.
const S_INVAL: u8 = 2;

/// One domain's mappings: IOVA -> (physical address, length).
type Mappings = BTreeMap<u64, (u64, u64)>;

/// The cloud-hypervisor-style device: domains of `BTreeMap`s behind one `RwLock`.
#[derive(Debug, Default)]
pub struct ChStyle {
    domains: RwLock<BTreeMap<u32, Mappings>>,
}

/// The status byte of a served request struct (its last 4 bytes are the tail).
pub fn status(req: &[u8]) -> u8 {
    req[req.len() - 4]
}

impl ChStyle {
    /// Serves one MAP or UNMAP request struct in place (the tail's status byte), as the
    /// device's request handler parses it: head, then the type's fields, little-endian.
    pub fn handle(&self, req: &mut [u8]) {
        let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let domain = le32(req, 4);
        let (start, end) = (le64(req, 8), le64(req, 16));
        let ok = match req[0] {
            T_MAP => {
                let phys = le64(req, 24);
                let mut domains = self.domains.write().expect("domain lock poisoned");
                let maps = domains.entry(domain).or_default();
                let overlaps = maps
                    .range(..=end)
                    .next_back()
                    .is_some_and(|(&s, &(_, len))| s + len > start);
                if !overlaps {
                    maps.insert(start, (phys, end - start + 1));
                }
                !overlaps
            }
            T_UNMAP => {
                let mut domains = self.domains.write().expect("domain lock poisoned");
                match domains.get_mut(&domain) {
                    Some(maps) => {
                        let gone: Vec<u64> = maps.range(start..=end).map(|(&s, _)| s).collect();
                        for s in gone {
                            maps.remove(&s);
                        }
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        let tail = req.len() - 4;
        req[tail] = if ok { S_OK } else { S_INVAL };
    }

    /// A DMA translation in `domain`: the read lock for one lookup.
    pub fn translate(&self, domain: u32, iova: u64) -> Option<u64> {
        let domains = self.domains.read().expect("domain lock poisoned");
        let maps = domains.get(&domain)?;
        let (&s, &(phys, len)) = maps.range(..=iova).next_back()?;
        (iova < s + len).then(|| phys + (iova - s))
    }
}

#[cfg(test)]
mod tests {
    use super::linux::{linux_map, linux_unmap};
    use super::*;

    #[test]
    fn map_translate_unmap() {
        let ch = ChStyle::default();
        let mut m = linux_map(1, 0x1000, 0x8000, 0x1000, 3);
        ch.handle(&mut m);
        assert_eq!(status(&m), S_OK);
        let mut again = m.clone();
        ch.handle(&mut again);
        assert_eq!(status(&again), S_INVAL, "overlapping MAP");
        assert_eq!(ch.translate(1, 0x1010), Some(0x8010));
        let mut u = linux_unmap(1, 0x1000, 0x1000);
        ch.handle(&mut u);
        assert_eq!(status(&u), S_OK);
        assert_eq!(ch.translate(1, 0x1010), None);
    }
}
