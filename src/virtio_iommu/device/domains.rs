//! The domains the guest sees: queries, and the end of a domain when its last endpoint
//! leaves it (its mappings go, with a fence, and its IOAS is destroyed).

use super::VirtioIommu;
use crate::types::ObjId;
use crate::virtio_iommu::batch::Fence;

/// One mapping, as one MAP request made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    /// First IOVA.
    pub virt_start: u64,
    /// Last IOVA (inclusive).
    pub virt_end: u64,
    /// First physical address.
    pub phys_start: u64,
    /// The MAP flags (`VIRTIO_IOMMU_MAP_F_*`).
    pub flags: u32,
}

impl VirtioIommu {
    /// The IDs of the domains that exist (each has at least one endpoint).
    pub fn domains(&self) -> Vec<u32> {
        self.domains.keys().copied().collect()
    }

    /// The IOAS behind a domain; `None` for a bypass domain (see
    /// [`VirtioIommu::identity_hwpt`]).
    pub fn domain_ioas(&self, domain: u32) -> Option<ObjId> {
        let d = self.domains.get(&domain)?;
        (!d.bypass).then_some(d.ioas)
    }

    /// True if `domain` exists and is a bypass domain (made by `ATTACH_F_BYPASS`).
    pub fn domain_is_bypass(&self, domain: u32) -> bool {
        self.domains.get(&domain).is_some_and(|d| d.bypass)
    }

    /// The endpoints attached to a domain.
    pub fn domain_endpoints(&self, domain: u32) -> Vec<u32> {
        self.domains
            .get(&domain)
            .map(|d| d.endpoints.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The mappings of a domain, in IOVA order.
    pub fn domain_mappings(&self, domain: u32) -> Vec<MappingInfo> {
        self.domains
            .get(&domain)
            .map(|d| {
                d.mappings
                    .iter()
                    .map(|(&s, &(e, p, f))| MappingInfo {
                        virt_start: s,
                        virt_end: e,
                        phys_start: p,
                        flags: f,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes `endpoint` out of `domain`'s books (viommu has already moved it); frees the
    /// domain if it has no endpoint left, returning the fence of its mappings' removal.
    pub(super) fn leave_domain(&mut self, endpoint: u32, domain: u32) -> Option<Fence> {
        if let Some(e) = self.endpoints.get_mut(&endpoint) {
            if e.domain == Some(domain) {
                e.domain = None;
            }
        }
        let d = self.domains.get_mut(&domain)?;
        d.endpoints.remove(&endpoint);
        if !d.endpoints.is_empty() {
            return None;
        }
        let d = self.domains.remove(&domain)?;
        if d.bypass {
            // The identity HWPT is shared and stays; a bypass domain has no mappings.
            return None;
        }
        // "After all endpoints have been successfully detached from a domain, it ceases to
        // exist": its mappings go, with an unmap fence so that the guest may reuse their
        // pages once the request completes (a replaced-away endpoint may still have DMA in
        // flight through them).
        let fence = if d.mappings.is_empty() {
            None
        } else {
            match self.iommu.ioas_unmap_deferred(d.ioas, 0, u64::MAX) {
                Ok(c) => Some(Fence::Unmap(c)),
                Err(_) => Some(Fence::Synchronize),
            }
        };
        // Its HWPTs went with their last device; nothing else refers to the IOAS.
        let _ = self.iommu.destroy(d.ioas);
        fence
    }
}
