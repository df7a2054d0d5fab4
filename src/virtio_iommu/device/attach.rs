//! ATTACH and DETACH: an endpoint joins a domain (created by its first ATTACH; a bypass
//! domain with `ATTACH_F_BYPASS`), moves to another one hitlessly, or leaves it (back to
//! bypass hitlessly when `bypass` is on).

use super::{status_of, DomainState, VirtioIommu};
use crate::virtio_iommu::batch::Fence;
use crate::virtio_iommu::config::F_BYPASS_CONFIG;
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
        let bypass = flags & ATTACH_F_BYPASS != 0;
        if bypass && !self.has(F_BYPASS_CONFIG) {
            // The flag exists only with the feature: without it, an unknown flag.
            return (Status::Inval, None);
        }
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return (Status::NoEnt, None);
        };
        if !self.domain_in_range(domain) {
            return (Status::Range, None);
        }
        let (dev, group, old, moving) = (ep.dev, ep.group, ep.domain, ep.attached());
        if let Some(d) = self.domains.get(&domain) {
            // An existing domain is a bypass domain or not, whatever the request says
            // (spec: INVAL when the flag differs).
            if d.bypass != bypass {
                return (Status::Inval, None);
            }
        }
        if old == Some(domain) {
            return (Status::Ok, None);
        }
        // Endpoints of one viommu group share a domain: moving one would move the others
        // (a replace is group-wide), so that is refused (spec: UNSUPP).
        if moving {
            let mates = self
                .endpoints
                .iter()
                .any(|(&id, e)| id != endpoint && e.group == group && e.attached());
            if mates {
                return (Status::Unsupp, None);
            }
        }
        let (ioas, created) = match self.domains.get(&domain) {
            Some(d) => (d.ioas, false),
            None if bypass => match self.identity_for(dev) {
                Ok(id) => (id, false),
                Err(e) => return (status_of(&e), None),
            },
            // A new domain gets the configured budget before any MAP can reach it.
            None => match self.iommu.ioas_alloc() {
                Ok(id) => match self.iommu.ioas_set_budget(id, self.config.budget) {
                    Ok(()) => (id, true),
                    Err(e) => {
                        let _ = self.iommu.destroy(id);
                        return (status_of(&e), None);
                    }
                },
                Err(e) => return (status_of(&e), None),
            },
        };
        // From bypass or another domain: one publish, hitless.
        let result = if moving {
            self.iommu.device_replace(dev, ioas)
        } else {
            self.iommu.device_attach(dev, ioas)
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
                bypass,
                endpoints: BTreeSet::new(),
                mappings: BTreeMap::new(),
            })
            .endpoints
            .insert(endpoint);
        if let Some(e) = self.endpoints.get_mut(&endpoint) {
            e.domain = Some(domain);
            e.bypassing = false;
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
        // Back to bypass in one hitless replace when `bypass` is on, else blocked.
        if let Err(e) = self.unattach(endpoint) {
            return (status_of(&e), None);
        }
        (Status::Ok, self.leave_domain(endpoint, domain))
    }
}
