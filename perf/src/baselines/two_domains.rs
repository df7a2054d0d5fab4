//! The viommu set-up shared by the suite's viommu flavours ([`super::viommu_api`]) and the
//! criterion benches (which include this file with `#[path]`): one device bound in group 0
//! (default aperture, nothing reserved), two IOASes, a user HWPT on each (`hwpt_alloc`, so a
//! switch never has to build or populate a domain), and the device attached to the first.

use ::viommu::{Device, DeviceInfo, FenceMode, GroupId, HwptFlags, Iommu, ObjId, Prot};

/// One device of a viommu context with two prebuilt domains; it starts on `hwpt[0]`.
/// The `Iommu` every viommu row measures: the default fence mode, or membarrier with
/// `VIOMMU_FENCE_MODE=asymmetric` in the environment (to compare the two in one build).
pub fn new_iommu() -> Iommu {
    match std::env::var("VIOMMU_FENCE_MODE").as_deref() {
        Ok("asymmetric") => Iommu::with_fence_mode(FenceMode::Asymmetric),
        _ => Iommu::new(),
    }
}

pub struct TwoDomains {
    /// The context.
    pub iommu: Iommu,
    /// The device's ID.
    pub dev_id: ObjId,
    /// The device's data-plane handle.
    pub dev: Device,
    /// The IOAS of each domain.
    pub ioas: [ObjId; 2],
    /// The user HWPT of each domain.
    pub hwpt: [ObjId; 2],
}

impl TwoDomains {
    /// Builds the context; IOAS `d` holds `mappings(d)`, each `(iova, target, len)` mapped
    /// read-write at its fixed IOVA.
    ///
    /// # Panics
    ///
    /// If viommu refuses the set-up (a bug: every call here is valid per the API contract).
    pub fn new<I>(mappings: impl Fn(usize) -> I) -> TwoDomains
    where
        I: IntoIterator<Item = (u64, u64, u64)>,
    {
        let iommu = new_iommu();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(0), DeviceInfo::default())
            .expect("device_bind");
        let mut ioas = [dev_id; 2];
        let mut hwpt = [dev_id; 2];
        for d in 0..2 {
            ioas[d] = iommu.ioas_alloc().expect("ioas_alloc");
            for (iova, target, len) in mappings(d) {
                iommu
                    .ioas_map(ioas[d], Some(iova), target, len, Prot::RW)
                    .expect("ioas_map");
            }
            hwpt[d] = iommu
                .hwpt_alloc(dev_id, ioas[d], HwptFlags::empty())
                .expect("hwpt_alloc");
        }
        iommu.device_attach(dev_id, hwpt[0]).expect("device_attach");
        TwoDomains {
            iommu,
            dev_id,
            dev,
            ioas,
            hwpt,
        }
    }
}
