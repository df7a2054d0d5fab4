//! Set-up shared by the virtio-iommu tests: a device model with endpoints bound to an
//! `Iommu`, the target a device's DMA lands on, and the wait for an unmap to take effect.
//! Included with `#[path = "support/virtio_iommu_setup.rs"] mod setup;`.

// Every test target uses a different part of this module.
#![allow(dead_code)]

use std::thread;
use std::time::Duration;
use viommu::virtio_iommu::{Config, VirtioIommu};
use viommu::{Access, Device, DeviceInfo, FaultKind, GroupId, Iommu};

/// A device model with `n` endpoints (IDs 1 ..= n), each its own group, nothing reserved.
pub fn setup(n: u32, config: Config) -> (VirtioIommu, Vec<Device>) {
    let iommu = Iommu::new();
    let mut v = VirtioIommu::new(iommu.clone(), config);
    let mut devs = Vec::new();
    for ep in 1..=n {
        let (_, dev) = iommu
            .device_bind(GroupId(ep), DeviceInfo::default())
            .unwrap();
        v.add_endpoint(ep, &dev, Vec::new()).unwrap();
        devs.push(dev);
    }
    (v, devs)
}

/// Where one byte of `access` at `iova` lands, or the fault.
pub fn target(dev: &Device, iova: u64, access: Access) -> Result<u64, FaultKind> {
    dev.translate(iova, 1, access)
        .map(|t| t.as_slice()[0].target)
        .map_err(|f| f.kind)
}

/// Polls (up to a second) until a read at `iova` faults `Unmapped`; false if it never does.
pub fn becomes_unmapped(dev: &Device, iova: u64) -> bool {
    for _ in 0..1000 {
        if target(dev, iova, Access::Read) == Err(FaultKind::Unmapped) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}
