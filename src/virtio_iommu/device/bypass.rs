//! Bypass (`VIRTIO_IOMMU_F_BYPASS_CONFIG`): the driver-writable `bypass` config field, the
//! identity HWPT that endpoints attached to no domain use while it is 1, and the resets that
//! keep it (device reset) or restore the VMM's boot default (system reset).
//!
//! An endpoint in bypass is attached, in viommu, to one identity HWPT over
//! [`crate::virtio_iommu::Config::bypass_ranges`], shared by every bypassing endpoint and by
//! the bypass domains of `ATTACH_F_BYPASS`. Leaving bypass for a domain (ATTACH) and coming
//! back (DETACH with `bypass` on) are each one `device_replace`: DMA in flight never faults.

use super::VirtioIommu;
use crate::error::Error;
use crate::types::ObjId;
use crate::virtio_iommu::config::{read_bytes, BYPASS_OFFSET, F_BYPASS_CONFIG, OFFERED_FEATURES};

impl VirtioIommu {
    /// A read of the configuration space (see [`crate::virtio_iommu::Config::read`]), with
    /// the live `bypass` field.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut bytes = self.config.to_bytes();
        bytes[BYPASS_OFFSET as usize] = u8::from(self.bypass);
        read_bytes(&bytes, offset, data);
    }

    /// A driver's write to the configuration space. Only `bypass` is writable, and only once
    /// the driver has acknowledged `BYPASS_CONFIG` ([`VirtioIommu::ack_features`]); other
    /// bytes, other values than 0 and 1, and writes before that are ignored. A write takes
    /// effect before this returns: every endpoint attached to no domain enters bypass (1) or
    /// leaves it (0: blocked, with the detach fence held, so no DMA of it through the identity
    /// domain is in flight when this returns).
    ///
    /// `EDEADLK` if the calling thread holds a guard of the `Iommu` (the field is then set,
    /// and the endpoints that could not leave bypass are left by the next write or reset).
    pub fn write_config(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let Some(i) = BYPASS_OFFSET.checked_sub(offset) else {
            return Ok(());
        };
        let Some(&value) = usize::try_from(i).ok().and_then(|i| data.get(i)) else {
            return Ok(());
        };
        if !self.acked || !self.has(F_BYPASS_CONFIG) || value > 1 {
            return Ok(());
        }
        self.set_bypass(value == 1)
    }

    /// The live `bypass` field.
    pub fn bypass(&self) -> bool {
        self.bypass
    }

    /// The identity HWPT that bypassing endpoints and bypass domains use, if allocated.
    pub fn identity_hwpt(&self) -> Option<ObjId> {
        self.identity
    }

    /// Sets `bypass` and moves every endpoint attached to no domain accordingly.
    fn set_bypass(&mut self, on: bool) -> Result<(), Error> {
        self.bypass = on;
        let idle: Vec<u32> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.domain.is_none() && e.bypassing != on)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            if on {
                self.enter_bypass(id)?;
            } else if let Some(ep) = self.endpoints.get_mut(&id) {
                self.iommu.device_detach(ep.dev)?;
                ep.bypassing = false;
            }
        }
        Ok(())
    }

    /// The identity HWPT, allocated (for `dev`'s sake: any device can attach it) on first use.
    pub(super) fn identity_for(&mut self, dev: ObjId) -> Result<ObjId, Error> {
        if let Some(id) = self.identity {
            return Ok(id);
        }
        let id = self
            .iommu
            .hwpt_alloc_identity(dev, &self.config.bypass_ranges)?;
        self.identity = Some(id);
        Ok(id)
    }

    /// Attaches a detached endpoint attached to no domain to the identity HWPT. An endpoint
    /// whose viommu group is attached elsewhere (a group-mate in a domain) stays blocked:
    /// a group shares one domain.
    pub(super) fn enter_bypass(&mut self, endpoint: u32) -> Result<(), Error> {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return Ok(());
        };
        let (dev, group) = (ep.dev, ep.group);
        let mates_elsewhere = self
            .endpoints
            .values()
            .any(|e| e.group == group && e.dev != dev && e.domain.is_some());
        if ep.attached() || mates_elsewhere {
            return Ok(());
        }
        let identity = self.identity_for(dev)?;
        self.iommu.device_attach(dev, identity)?;
        if let Some(ep) = self.endpoints.get_mut(&endpoint) {
            ep.bypassing = true;
        }
        Ok(())
    }

    /// Takes an endpoint out of its domain in viommu: with `bypass` on (and no group-mate
    /// still attached, which the group's domain must keep serving), one hitless replace to
    /// the identity HWPT; otherwise a detach, which fences. The books are the caller's.
    pub(super) fn unattach(&mut self, endpoint: u32) -> Result<(), Error> {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return Ok(());
        };
        let (dev, group) = (ep.dev, ep.group);
        let mates = self
            .endpoints
            .values()
            .any(|e| e.group == group && e.dev != dev && e.attached());
        if self.bypass && !mates {
            let identity = self.identity_for(dev)?;
            self.iommu.device_replace(dev, identity)?;
            if let Some(ep) = self.endpoints.get_mut(&endpoint) {
                ep.bypassing = true;
            }
            return Ok(());
        }
        self.iommu.device_detach(dev)
    }

    /// Device reset: every endpoint leaves its domain and every domain is freed (waiting for
    /// their fences); negotiated features return to the offered set. `bypass` keeps its value
    /// (spec: it does not change on device reset), so with it on the endpoints are in bypass
    /// afterwards, moved there hitlessly. A queue pass still waiting for its fences is
    /// forgotten (the driver resets its queues with the device).
    pub fn reset(&mut self) -> Result<(), Error> {
        #[cfg(feature = "virtio-iommu-queue")]
        {
            self.stalled = None;
        }
        let attached: Vec<(u32, u32)> = self
            .endpoints
            .iter()
            .filter_map(|(&id, ep)| ep.domain.map(|d| (id, d)))
            .collect();
        let mut fences = Vec::new();
        for (id, d) in attached {
            self.unattach(id)?;
            fences.extend(self.leave_domain(id, d));
        }
        for f in fences.into_iter().rev() {
            f.wait(&self.iommu)?;
        }
        self.negotiated = OFFERED_FEATURES;
        self.acked = false;
        let bypass = self.bypass;
        self.set_bypass(bypass)
    }

    /// System reset: `bypass` returns to [`crate::virtio_iommu::Config::boot_bypass`], then a
    /// device reset ([`VirtioIommu::reset`]).
    pub fn system_reset(&mut self) -> Result<(), Error> {
        let boot = self.config.boot_bypass;
        self.set_bypass(boot)?;
        self.reset()
    }
}
