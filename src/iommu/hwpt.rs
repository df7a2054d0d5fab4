//! Paging HWPTs: `hwpt_alloc`, and the populate step that attach and replace share; identity
//! HWPTs: `hwpt_alloc_identity`.
//!
//! A new domain is populated *before* its call takes the object table's write lock, under its
//! IOAS's lock only (G14): it joins the IOAS's mirror list as pending, so maps and unmaps that
//! come after the populate reach it (G7), and it is committed (given its HWPT id) or discarded
//! under the table lock afterwards.

use super::objects::{wrong_type, HwptObj, Obj, Objects};
use super::Iommu;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::identity::IdentityMap;
use crate::ioas::{Ioas, IoasState};
use crate::sync::{lock, Arc};
use crate::types::{HwptFlags, ObjId, ObjKind};
use std::ops::Range;

/// A populated domain that its call has not committed yet.
pub(super) struct Pending {
    pub(super) ioas: Arc<Ioas>,
    pub(super) iova_bits: u8,
    pub(super) domain: Arc<Domain>,
}

impl Iommu {
    /// Populates a new domain of `iova_bits` from `ioas` (after `check` passes under the IOAS
    /// lock) and adds it to the IOAS's mirror list as pending.
    pub(super) fn prepare_domain(
        &self,
        ioas: Arc<Ioas>,
        iova_bits: u8,
        check: impl FnOnce(&IoasState) -> Result<()>,
    ) -> Result<Pending> {
        let domain = {
            let mut state = lock(&ioas.state);
            if state.destroyed {
                return Err(Error::NoSuchObject { id: ioas.id });
            }
            check(&state)?;
            let domain = state.add_pending(Domain::paging(iova_bits, &self.shared.grace.counters));
            // The budget counts the new domain's tables too: past it, the domain goes (G8).
            if let Err(e) = state.check_tables() {
                state.discard_pending(&domain);
                return Err(e);
            }
            domain
        };
        Ok(Pending {
            ioas,
            iova_bits,
            domain,
        })
    }

    /// Drops a pending domain that was not committed (no device ever saw it).
    pub(super) fn discard(&self, pending: Pending) {
        lock(&pending.ioas.state).discard_pending(&pending.domain);
    }

    /// Commits a pending domain as a HWPT (the caller holds the table's write lock and `state`,
    /// the pending domain's IOAS lock, and checked that an ID is available).
    pub(super) fn commit_hwpt(
        objects: &mut Objects,
        state: &mut IoasState,
        pending: Pending,
        auto: bool,
        nest_parent: bool,
    ) -> ObjId {
        let id = objects.alloc_id();
        state.commit_pending(&pending.domain, id);
        objects.map.insert(
            id,
            Obj::Hwpt(HwptObj {
                ioas: pending.ioas,
                domain: pending.domain,
                auto,
                users: 0,
                nest_parent,
                parent: None,
                children: 0,
            }),
        );
        id
    }

    /// Allocates a user paging HWPT on the IOAS `pt`, shaped for `dev` (its aperture); it is
    /// filled with every mapping of the IOAS before this returns.
    ///
    /// With [`HwptFlags::NEST_PARENT`] the HWPT may be the parent (stage 2) of nested HWPTs
    /// ([`Iommu::hwpt_alloc_nested`]). A HWPT as `pt` is `EOPNOTSUPP`, as in iommufd without
    /// stage-1 data: nested HWPTs are made with `hwpt_alloc_nested`.
    pub fn hwpt_alloc(&self, dev: ObjId, pt: ObjId, flags: HwptFlags) -> Result<ObjId> {
        if flags.unknown_bits() != 0 {
            return Err(Error::UnknownHwptFlags {
                bits: flags.unknown_bits(),
            });
        }
        let (ioas, bits, limits) = {
            let objects = self.objects();
            let device = objects.device(dev)?;
            let (bits, limits) = (device.iova_bits, device.limits(dev, 0));
            let ioas = match objects.get(pt)? {
                Obj::Ioas(i) => i.clone(),
                Obj::Hwpt(_) => {
                    return Err(Error::Unsupported(
                        "a HWPT as parent needs stage-1 data: use hwpt_alloc_nested",
                    ))
                }
                other => return Err(wrong_type(pt, ObjKind::Ioas, other)),
            };
            objects.check_id_available()?;
            (ioas, bits, limits)
        };
        let pending = self.prepare_domain(ioas, bits, |state| state.check_fits(&limits, pt))?;
        let ioas = pending.ioas.clone();
        let mut state = lock(&ioas.state);
        if !state.pending_intact(&pending.domain) {
            // A map went past the new domain's aperture: populate again, whose check sees it.
            drop(state);
            self.discard(pending);
            return self.hwpt_alloc(dev, pt, flags);
        }
        // The IOAS's lock before the table's (G10, G14).
        let mut objects = self.objects_mut();
        // Re-checked under the write lock: the IOAS may have been destroyed, or the last ID
        // taken, while the domain was populated.
        let still = match objects.ioas(pt) {
            Ok(i) if Arc::ptr_eq(i, &pending.ioas) => objects.check_id_available(),
            _ => Err(Error::NoSuchObject { id: pt }),
        };
        if let Err(e) = still {
            drop(objects);
            state.discard_pending(&pending.domain);
            return Err(e);
        }
        let nest_parent = flags.contains(HwptFlags::NEST_PARENT);
        Ok(Self::commit_hwpt(
            &mut objects,
            &mut state,
            pending,
            false,
            nest_parent,
        ))
    }

    /// Allocates an identity HWPT: a domain that translates every IOVA inside `ranges` to the
    /// same address, with read and write allowed, and faults `Unmapped` outside them (the
    /// kernel's identity domain, what a device in bypass sees). `ranges` are half-open, in any
    /// order; overlapping and touching ranges are merged. A VMM gives its guest RAM and, if it
    /// chooses, MMIO windows. Like any HWPT, devices are attached to it, replaced to and from
    /// it (hitless, G2) and detached, at the RID and at PASIDs; `dev` must be a bound device,
    /// as for [`Iommu::hwpt_alloc`], though any device may attach (the domain has no aperture
    /// of its own: each device's applies). Its mappings never change: it belongs to no IOAS,
    /// and cannot be a nesting parent.
    ///
    /// `EINVAL` for an empty range (or none at all); `ENOENT` / `EINVAL` if `dev` is not a
    /// bound device; `ENOSPC` when object IDs are exhausted.
    pub fn hwpt_alloc_identity(&self, dev: ObjId, ranges: &[Range<u64>]) -> Result<ObjId> {
        if ranges.is_empty() {
            return Err(Error::EmptyIdentityRange { range: 0..0 });
        }
        if let Some(r) = ranges.iter().find(|r| r.start >= r.end) {
            return Err(Error::EmptyIdentityRange { range: r.clone() });
        }
        // Built before the table lock: the lock is held for the ID and the insert only (G14).
        let domain = Arc::new(Domain::identity(
            IdentityMap::new(ranges),
            &self.shared.grace.counters,
        ));
        let mut objects = self.objects_mut();
        objects.device(dev)?;
        objects.check_id_available()?;
        let id = objects.alloc_id();
        objects.map.insert(
            id,
            Obj::Hwpt(HwptObj {
                // Its own IOAS, empty forever and named by no ID: attachments register their
                // apertures and reserved ranges there as on any HWPT, and nothing can map.
                ioas: Arc::new(Ioas::new(id)),
                domain,
                auto: false,
                users: 0,
                nest_parent: false,
                parent: None,
                children: 0,
            }),
        );
        Ok(id)
    }

    /// The ranges of an identity HWPT (merged, in address order); `EINVAL` for another kind of
    /// HWPT, `ENOENT` for no object.
    pub fn hwpt_identity_ranges(&self, hwpt: ObjId) -> Result<Vec<Range<u64>>> {
        let objects = self.objects();
        match objects.get(hwpt)? {
            Obj::Hwpt(h) => h
                .domain
                .as_identity()
                .map(IdentityMap::ranges)
                .ok_or(Error::InvalidArgument("not an identity HWPT")),
            other => Err(wrong_type(hwpt, ObjKind::Hwpt, other)),
        }
    }
}
