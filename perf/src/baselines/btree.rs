//! `RwLock<BTreeMap>` domains, the way cloud-hypervisor's virtio-iommu device keeps them.
//!
//! Two maps, each behind its own `RwLock`: endpoints (endpoint id → domain id) and domains
//! (domain id → `BTreeMap<iova, mapping>`), one entry a map request. A translation holds the
//! read lock of the endpoint map while it takes the read lock of the domain map, then finds
//! the mapping that starts at or below the IOVA (`range(..=iova).next_back()`). A switch
//! write-locks the endpoint map and changes the endpoint's domain id; map and unmap
//! write-lock the domain map.

use super::{DomainIdx, Layout, OpError, Translator};
use std::collections::BTreeMap;
use std::sync::RwLock;
use viommu::{Access, FaultKind, Prot};

/// The one endpoint this instance serves.
const ENDPOINT: u32 = 0;

/// One map request's worth of translation.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    gpa: u64,
    size: u64,
    prot: Prot,
}

/// The endpoint and domain maps.
pub struct RwLockBTree {
    endpoints: RwLock<BTreeMap<u32, u32>>,
    domains: RwLock<BTreeMap<u32, BTreeMap<u64, Mapping>>>,
}

/// Domain ids as the guest would pick them (never 0).
fn domain_id(d: DomainIdx) -> u32 {
    d as u32 + 1
}

impl RwLockBTree {
    /// Both domains filled from `layout`; the endpoint on domain 0.
    pub fn new(layout: &Layout) -> RwLockBTree {
        let mut domains = BTreeMap::new();
        for d in 0..2 {
            let m: BTreeMap<u64, Mapping> = layout
                .mappings(d)
                .map(|(iova, gpa, size)| {
                    (
                        iova,
                        Mapping {
                            gpa,
                            size,
                            prot: Prot::RW,
                        },
                    )
                })
                .collect();
            domains.insert(domain_id(d), m);
        }
        RwLockBTree {
            endpoints: RwLock::new(BTreeMap::from([(ENDPOINT, domain_id(0))])),
            domains: RwLock::new(domains),
        }
    }
}

impl Translator for RwLockBTree {
    #[inline]
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind> {
        let endpoints = self.endpoints.read().expect("endpoint lock poisoned");
        let Some(domain) = endpoints.get(&ENDPOINT) else {
            return Err(FaultKind::Blocked);
        };
        let domains = self.domains.read().expect("domain lock poisoned");
        let Some(mappings) = domains.get(domain) else {
            return Err(FaultKind::Blocked);
        };
        let end = iova.checked_add(len).ok_or(FaultKind::Aperture)?;
        let mut at = iova;
        let mut first = None;
        while at < end {
            let Some((&start, m)) = mappings.range(..=at).next_back() else {
                return Err(FaultKind::Unmapped);
            };
            if at - start >= m.size {
                return Err(FaultKind::Unmapped);
            }
            if !m.prot.allows(access) {
                return Err(FaultKind::Permission);
            }
            first.get_or_insert(m.gpa + (at - start));
            at = start + m.size;
        }
        Ok(first.unwrap_or(0))
    }

    fn replace(&self, to: DomainIdx) -> Result<(), OpError> {
        self.endpoints
            .write()
            .expect("endpoint lock poisoned")
            .insert(ENDPOINT, domain_id(to));
        Ok(())
    }

    fn map(&self, dom: DomainIdx, iova: u64, target: u64, len: u64) -> Result<(), OpError> {
        let mut domains = self.domains.write().expect("domain lock poisoned");
        let m = domains
            .get_mut(&domain_id(dom))
            .ok_or_else(|| OpError::Failed("no such domain".into()))?;
        m.insert(
            iova,
            Mapping {
                gpa: target,
                size: len,
                prot: Prot::RW,
            },
        );
        Ok(())
    }

    fn unmap(&self, dom: DomainIdx, iova: u64, _len: u64) -> Result<(), OpError> {
        let mut domains = self.domains.write().expect("domain lock poisoned");
        domains
            .get_mut(&domain_id(dom))
            .and_then(|m| m.remove(&iova))
            .map(drop)
            .ok_or_else(|| OpError::Failed(format!("nothing mapped at {iova:#x}")))
    }
}
