//! The event queue's fault reports (`struct virtio_iommu_fault`, virtio 1.3 section
//! 5.13.6.8): what a [`crate::Fault`] on an endpoint looks like to the guest.

use crate::translation::{Fault, FaultKind};
use crate::types::Access;

/// `VIRTIO_IOMMU_FAULT_R_UNKNOWN`: an error no other reason describes.
pub const FAULT_R_UNKNOWN: u8 = 0;
/// `VIRTIO_IOMMU_FAULT_R_DOMAIN`: the endpoint is not attached to a domain.
pub const FAULT_R_DOMAIN: u8 = 1;
/// `VIRTIO_IOMMU_FAULT_R_MAPPING`: the address is not mapped, or not with this permission.
pub const FAULT_R_MAPPING: u8 = 2;

/// `VIRTIO_IOMMU_FAULT_F_READ`.
pub const FAULT_F_READ: u32 = 1 << 0;
/// `VIRTIO_IOMMU_FAULT_F_WRITE`.
pub const FAULT_F_WRITE: u32 = 1 << 1;
/// `VIRTIO_IOMMU_FAULT_F_ADDRESS`: `address` is valid.
pub const FAULT_F_ADDRESS: u32 = 1 << 8;

/// The size of `struct virtio_iommu_fault`.
pub const FAULT_SIZE: usize = 24;

/// One fault report for the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultEvent {
    /// `VIRTIO_IOMMU_FAULT_R_*`.
    pub reason: u8,
    /// `VIRTIO_IOMMU_FAULT_F_*`.
    pub flags: u32,
    /// The endpoint that faulted.
    pub endpoint: u32,
    /// The faulting address (meaningful with `FAULT_F_ADDRESS`).
    pub address: u64,
}

impl FaultEvent {
    /// The report for `fault`, raised by an `access` of `endpoint`. A blocked device is
    /// `R_DOMAIN` (it is not attached); unmapped, permission and aperture faults are
    /// `R_MAPPING`; a kind added later is `R_UNKNOWN`. The address is always reported.
    pub fn new(endpoint: u32, fault: &Fault, access: Access) -> FaultEvent {
        let reason = match fault.kind {
            FaultKind::Blocked => FAULT_R_DOMAIN,
            FaultKind::Unmapped | FaultKind::Permission | FaultKind::Aperture => FAULT_R_MAPPING,
            #[allow(unreachable_patterns)]
            _ => FAULT_R_UNKNOWN,
        };
        let dir = match access {
            Access::Read => FAULT_F_READ,
            Access::Write => FAULT_F_WRITE,
        };
        FaultEvent {
            reason,
            flags: dir | FAULT_F_ADDRESS,
            endpoint,
            address: fault.iova,
        }
    }

    /// The little-endian record: reason, 3 reserved bytes, flags, endpoint, 4 reserved
    /// bytes, address.
    pub fn to_bytes(&self) -> [u8; FAULT_SIZE] {
        let mut b = [0u8; FAULT_SIZE];
        b[0] = self.reason;
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.endpoint.to_le_bytes());
        b[16..24].copy_from_slice(&self.address.to_le_bytes());
        b
    }

    /// Writes the record into an event buffer the driver offered; returns the bytes written
    /// (0 if the buffer is too small: the spec forbids splitting a report).
    pub fn write_to(&self, buf: &mut [u8]) -> usize {
        match buf.get_mut(..FAULT_SIZE) {
            Some(b) => {
                b.copy_from_slice(&self.to_bytes());
                FAULT_SIZE
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_layout() {
        let f = Fault {
            iova: 0x1234_5000,
            kind: FaultKind::Permission,
        };
        let e = FaultEvent::new(9, &f, Access::Write);
        let b = e.to_bytes();
        assert_eq!(b[0], FAULT_R_MAPPING);
        assert_eq!(&b[1..4], &[0; 3]);
        assert_eq!(&b[4..8], &(FAULT_F_WRITE | FAULT_F_ADDRESS).to_le_bytes());
        assert_eq!(&b[8..12], &9u32.to_le_bytes());
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(&b[16..24], &0x1234_5000u64.to_le_bytes());
        let blocked = Fault {
            iova: 0,
            kind: FaultKind::Blocked,
        };
        assert_eq!(
            FaultEvent::new(1, &blocked, Access::Read).reason,
            FAULT_R_DOMAIN
        );
        assert_eq!(e.write_to(&mut [0u8; 23]), 0);
        assert_eq!(e.write_to(&mut [0u8; 32]), 24);
    }
}
