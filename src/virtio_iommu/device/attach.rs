//! ATTACH and DETACH: an endpoint joins a domain (created by its first ATTACH), moves to
//! another one hitlessly, or leaves it.

use super::{status_of, DomainState, VirtioIommu};
use crate::virtio_iommu::batch::Fence;
use crate::virtio_iommu::wire::{Status, ATTACH_F_BYPASS};
use std::collections::{BTreeMap, BTreeSet};

impl VirtioIommu {
    pub(super) fn attach(
        &mut self,
        domain: u32,
        endpoint: u32,
        flags: u32,
        reserved_set: bool,
    ) -> (Status, Option<Fence>) {
        if reserved_set || flags & !ATTACH_F_BYPASS != 0 {
            return (Status::Inval, None);
        }
        if flags & ATTACH_F_BYPASS != 0 {
            // A virtio 1.3 flag this device knows but cannot honour: no identity domain.
            return (Status::Unsupp, None);
        }
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return (Status::NoEnt, None);
        };
        if !self.domain_in_range(domain) {
            return (Status::Range, None);
        }
        let (dev, group, old) = (ep.dev, ep.group, ep.domain);
        if old == Some(domain) {
            return (Status::Ok, None);
        }
        // Endpoints of one viommu group share a domain: moving one would move the others
        // (a replace is group-wide), so that is refused (spec: UNSUPP).
        if old.is_some() {
            let mates = self
                .endpoints
                .iter()
                .any(|(&id, e)| id != endpoint && e.group == group && e.domain.is_some());
            if mates {
                return (Status::Unsupp, None);
            }
        }
        let (ioas, created) = match self.domains.get(&domain) {
            Some(d) => (d.ioas, false),
            None => match self.iommu.ioas_alloc() {
                Ok(id) => (id, true),
                Err(e) => return (status_of(&e), None),
            },
        };
        let result = match old {
            Some(_) => self.iommu.device_replace(dev, ioas),
            None => self.iommu.device_attach(dev, ioas),
        };
        if let Err(e) = result {
            if created {
                // Rollback: the new IOAS has no HWPT and no mapping.
                let _ = self.iommu.destroy(ioas);
            }
            return (status_of(&e), None);
        }
        self.domains
            .entry(domain)
            .or_insert_with(|| DomainState {
                ioas,
                endpoints: BTreeSet::new(),
                mappings: BTreeMap::new(),
            })
            .endpoints
            .insert(endpoint);
        if let Some(e) = self.endpoints.get_mut(&endpoint) {
            e.domain = Some(domain);
        }
        // Behaves as DETACH then ATTACH (spec), without the blocked window: the old domain
        // loses the endpoint and ceases to exist if that was its last.
        let fence = old.and_then(|o| self.leave_domain(endpoint, o));
        (Status::Ok, fence)
    }

    pub(super) fn detach(&mut self, domain: u32, endpoint: u32) -> (Status, Option<Fence>) {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return (Status::NoEnt, None);
        };
        if ep.domain != Some(domain) {
            // The domain does not exist, or the endpoint is not attached to it (spec: MAY
            // INVAL).
            return (Status::Inval, None);
        }
        if let Err(e) = self.iommu.device_detach(ep.dev) {
            return (status_of(&e), None);
        }
        (Status::Ok, self.leave_domain(endpoint, domain))
    }
}
