//! Nested HWPTs: `hwpt_alloc_nested` and `hwpt_invalidate` ([`crate::nested`]).
//!
//! A nested HWPT is attached, replaced and destroyed like any HWPT (`attach.rs`,
//! `destroy.rs`); it records its parent's IOAS as its own, so an attachment registers the
//! device's aperture and reserved ranges on the parent's IOAS, as iommufd does.

use super::objects::{wrong_type, HwptObj, Obj};
use super::Iommu;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::nested::{Format, Invalidation, NestedDomain, Stage1, TableMemory};
use crate::sync::Arc;
use crate::types::{ObjId, ObjKind, MAX_PASID_BITS};

impl Iommu {
    /// Allocates a nested HWPT: the guest's stage 1 `s1` over `parent`, a paging HWPT
    /// allocated with [`crate::HwptFlags::NEST_PARENT`]. Stage-1 tables (and SMMUv3 CDs) are
    /// IPAs, translated through the parent and read with `mem` when DMA needs them; nothing is
    /// read here, and nothing is cached yet. (`mem` is a `std::sync::Arc` in every build.)
    ///
    /// `ENOENT` for an unknown `dev` or `parent`; `EINVAL` if `dev` is not a device, if
    /// `parent` is not a HWPT, is nested, or lacks `NEST_PARENT`, and for stage-1 data the
    /// library cannot accept ([`Error::InvalidStage1`]); `ENOSPC` when IDs are exhausted.
    pub fn hwpt_alloc_nested(
        &self,
        dev: ObjId,
        parent: ObjId,
        s1: Stage1,
        mem: std::sync::Arc<dyn TableMemory>,
    ) -> Result<ObjId> {
        let mut objects = self.objects_mut();
        objects.device(dev)?;
        let p = match objects.get(parent)? {
            Obj::Hwpt(h) => h,
            other => return Err(wrong_type(parent, ObjKind::Hwpt, other)),
        };
        if p.parent.is_some() {
            return Err(Error::NotNestParent {
                parent,
                why: "it is a nested HWPT",
            });
        }
        if !p.nest_parent {
            return Err(Error::NotNestParent {
                parent,
                why: "it was not allocated with HwptFlags::NEST_PARENT",
            });
        }
        let format = Format::parse(&s1).map_err(|reason| Error::InvalidStage1 { reason })?;
        objects.check_id_available()?;
        // Commit: nothing below can fail.
        let (ioas, parent_domain) = (p.ioas.clone(), p.domain.clone());
        let domain = Arc::new(Domain::nested(
            NestedDomain::new(parent_domain, format, mem),
            &self.shared.grace.counters,
        ));
        let id = objects.alloc_id();
        objects.map.insert(
            id,
            Obj::Hwpt(HwptObj {
                ioas,
                domain,
                auto: false,
                users: 0,
                nest_parent: false,
                parent: Some(parent),
                children: 0,
            }),
        );
        objects.hwpt_mut(parent).children += 1;
        Ok(id)
    }

    /// The guest changed its stage-1 tables or configuration: drops what `inv` covers from
    /// the IOTLB, then fences. When this returns, (a) no translation uses an entry cached
    /// before the call that `inv` covers, and (b) no guard that might have used one is still
    /// alive, so the guest may free or reuse the pages its old entries named (as G5).
    ///
    /// Every invalidation currently drops every cached entry of the HWPT (more than `Range`
    /// or `Config` need; never less).
    ///
    /// `ENOENT` for an unknown ID; `EINVAL` for an object that is not a HWPT, a paging HWPT,
    /// a zero-length range or a PASID above 20 bits; `EOVERFLOW` for a range that wraps;
    /// `EDEADLK` if the calling thread holds a guard of this `Iommu`.
    pub fn hwpt_invalidate(&self, hwpt: ObjId, inv: Invalidation) -> Result<()> {
        // Argument errors first: a call that makes them never waits.
        check_invalidation(&inv)?;
        let (domain, notices) = {
            let objects = self.objects();
            let h = match objects.get(hwpt)? {
                Obj::Hwpt(h) => h,
                other => return Err(wrong_type(hwpt, ObjKind::Hwpt, other)),
            };
            if h.parent.is_none() {
                return Err(Error::NotNested { id: hwpt });
            }
            let iovas = match inv {
                Invalidation::Range { iova, len, .. } => iova..=iova + (len - 1),
                _ => super::observe::ALL,
            };
            let mut notices = Vec::new();
            objects.notices_where(|h| (h == hwpt).then(|| iovas.clone()), &mut notices);
            (h.domain.clone(), notices)
        };
        self.check_not_pinned("hwpt_invalidate")?;
        domain
            .as_nested()
            .expect("a HWPT with a parent is nested")
            .invalidate();
        // The observers after the IOTLB drop, with no lock held (G14, G15).
        let acks = crate::observers::deliver(notices);
        // The fence: every guard alive at the bump is gone when it returns; every later
        // lookup sees the new count (`crate::nested`).
        let grace = &self.shared.grace;
        grace.synchronize();
        // If the HWPT was destroyed meanwhile, this is the last reference: dropping it here is
        // safe, because every retire of it was before the fence that just ended (no guard can
        // reach it), and it is the control plane's thread.
        drop(domain);
        grace.collect();
        acks.wait()
    }
}

fn check_invalidation(inv: &Invalidation) -> Result<()> {
    let max = 1u32 << MAX_PASID_BITS;
    match *inv {
        Invalidation::All => Ok(()),
        Invalidation::Range { pasid, iova, len } => {
            if let Some(p) = pasid.filter(|&p| p >= max) {
                return Err(Error::PasidOutOfRange { pasid: p });
            }
            if len == 0 {
                return Err(Error::ZeroLength {
                    what: "invalidation",
                });
            }
            if iova.checked_add(len - 1).is_none() {
                return Err(Error::Overflow {
                    what: "iova",
                    start: iova,
                    len,
                });
            }
            Ok(())
        }
        Invalidation::Config { pasid } if pasid >= max => Err(Error::PasidOutOfRange { pasid }),
        Invalidation::Config { .. } => Ok(()),
    }
}
