//! rust-vmm vm-memory's `Iotlb` behind an `RwLock`, as its `Iommu` trait documentation
//! describes an implementation.
//!
//! The IOTLB is a cache: a lookup runs under its read lock; a miss looks the range up in the
//! full IOMMU state (here the active domain's `BTreeMap`, behind its own `RwLock`), writes the
//! mapping into the IOTLB under its write lock, and looks up again. A switch changes the
//! active domain and invalidates the whole IOTLB, so readers refill it afterwards. Unmap
//! removes the mapping from the domain and invalidates its range. Map only adds to the domain
//! (an IOTLB need not be told about new mappings; a later miss picks them up).
//!
//! Lock order: domain state, then IOTLB. A refill holds the domain read lock while it writes
//! the IOTLB, so it cannot insert a mapping of a domain that a concurrent switch has already
//! left.

use super::{DomainIdx, Layout, OpError, Translator};
use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard};
use viommu::{Access, FaultKind};
use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use vm_memory::{GuestAddress, Iommu, Iotlb, Permissions};

/// Refill rounds before a lookup gives up (a switch can invalidate between refill and retry).
const MAX_ROUNDS: usize = 8;

/// The full IOMMU state the IOTLB caches.
#[derive(Debug)]
struct Domains {
    active: DomainIdx,
    /// Per domain: iova → (target, len, permissions).
    maps: [BTreeMap<u64, (u64, u64, Permissions)>; 2],
}

/// An `Iommu` built on vm-memory's `Iotlb`.
#[derive(Debug)]
pub struct IotlbIommu {
    iotlb: RwLock<Iotlb>,
    domains: RwLock<Domains>,
}

fn permissions(access: Access) -> Permissions {
    match access {
        Access::Read => Permissions::Read,
        Access::Write => Permissions::Write,
    }
}

impl IotlbIommu {
    /// Both domains from `layout`, domain 0 active, the IOTLB empty (it fills on first use).
    pub fn new(layout: &Layout) -> IotlbIommu {
        let domain = |d| {
            layout
                .mappings(d)
                .map(|(iova, target, len)| (iova, (target, len, Permissions::ReadWrite)))
                .collect()
        };
        IotlbIommu {
            iotlb: RwLock::new(Iotlb::new()),
            domains: RwLock::new(Domains {
                active: 0,
                maps: [domain(0), domain(1)],
            }),
        }
    }

    /// IOTLB lookup with refill from the active domain on a miss.
    fn lookup(
        &self,
        iova: u64,
        len: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<RwLockReadGuard<'_, Iotlb>>, FaultKind> {
        for _ in 0..MAX_ROUNDS {
            let tlb = self.iotlb.read().expect("iotlb lock poisoned");
            let fails = match Iotlb::lookup(tlb, GuestAddress(iova), len, access) {
                Ok(hit) => return Ok(hit),
                Err(fails) => fails,
            };
            // Resolve every failed range from the full state, then retry.
            let domains = self.domains.read().expect("domain lock poisoned");
            let map = &domains.maps[domains.active];
            let mut tlb = self.iotlb.write().expect("iotlb lock poisoned");
            let mut filled = false;
            for r in fails.misses.iter().chain(&fails.access_fails) {
                let (start, end) = (r.base.0, r.base.0 + r.length as u64);
                // The mapping at or below `start`, then every one that begins inside the range.
                let below = map.range(..=start).next_back();
                let inside = map.range(start.saturating_add(1)..end);
                for (&m_iova, &(target, m_len, perm)) in below.into_iter().chain(inside) {
                    if m_iova + m_len > start && m_iova < end && perm.allow(access) {
                        tlb.set_mapping(
                            GuestAddress(m_iova),
                            GuestAddress(target),
                            m_len as usize,
                            perm,
                        )
                        .expect("Iotlb::set_mapping does not fail");
                        filled = true;
                    }
                }
            }
            if !filled {
                return Err(if fails.misses.is_empty() {
                    FaultKind::Permission
                } else {
                    FaultKind::Unmapped
                });
            }
        }
        Err(FaultKind::Unmapped)
    }
}

impl Iommu for IotlbIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        self.lookup(iova.0, length, access)
            .map_err(|kind| IommuError::CannotResolve {
                iova_range: IovaRange { base: iova, length },
                reason: format!("{kind:?}"),
            })
    }
}

impl Translator for IotlbIommu {
    #[inline]
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind> {
        // The same path as `Iommu::translate`, keeping the fault kind instead of a message.
        let mut it = self.lookup(iova, len as usize, permissions(access))?;
        Ok(it.next().map_or(0, |r| r.base.0))
    }

    fn replace(&self, to: DomainIdx) -> Result<(), OpError> {
        let mut domains = self.domains.write().expect("domain lock poisoned");
        domains.active = to;
        self.iotlb
            .write()
            .expect("iotlb lock poisoned")
            .invalidate_all();
        Ok(())
    }

    fn map(&self, dom: DomainIdx, iova: u64, target: u64, len: u64) -> Result<(), OpError> {
        let mut domains = self.domains.write().expect("domain lock poisoned");
        domains.maps[dom].insert(iova, (target, len, Permissions::ReadWrite));
        Ok(())
    }

    fn unmap(&self, dom: DomainIdx, iova: u64, len: u64) -> Result<(), OpError> {
        let mut domains = self.domains.write().expect("domain lock poisoned");
        if domains.maps[dom].remove(&iova).is_none() {
            return Err(OpError::Failed(format!("nothing mapped at {iova:#x}")));
        }
        if domains.active == dom {
            self.iotlb
                .write()
                .expect("iotlb lock poisoned")
                .invalidate_mapping(GuestAddress(iova), len as usize);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines::{IOVA_BASE, PAGE, TARGETS};

    #[test]
    fn the_iommu_trait_translates_and_refills() {
        let t = IotlbIommu::new(&Layout { pages: 4 });
        let it = Iommu::translate(
            &t,
            GuestAddress(IOVA_BASE + 8),
            2 * PAGE as usize,
            Permissions::Read,
        )
        .unwrap();
        let ranges: Vec<_> = it.map(|r| (r.base.0, r.length)).collect();
        // Contiguous targets: the IOTLB merges the refilled pages into one range.
        assert_eq!(ranges, vec![(TARGETS[0] + 8, 2 * PAGE as usize)]);
        assert!(
            Iommu::translate(&t, GuestAddress(IOVA_BASE + 4 * PAGE), 8, Permissions::Read).is_err()
        );
    }
}
