//! Devices: bind, attach, replace, detach, and the one publish they share.
//!
//! Each call works on one *attachment point* of a device: its RID (`pasid` 0: `device_attach`
//! and friends) or one of its PASIDs (`device_attach_pasid` and friends). The protocol is the
//! same for both (plan, populate outside the table lock, check, commit, one publish into the
//! point's cell); what differs is the cell (the group's RID cell or the group's cell for that
//! PASID), how a device is marked attached (its `attached` flag, or its PASID table entry),
//! and the errors the kernel gives.
//!
//! Attach and replace plan under the object table's write lock, taken after the IOAS locks
//! the plan needs ([`with_ioas_locks`]: a plan that finds it needs others runs again with
//! them). When the plan needs a new
//! auto domain, they release the lock, populate the domain as pending ([`super::hwpt`]) and
//! plan again; a plan that still wants a new auto domain of the same shape on the same IOAS
//! commits the one just populated, any other outcome discards it.

use super::hwpt::Pending;
use super::objects::{
    with_ioas_locks, Dest, DeviceObj, GroupCtl, Held, Locking, Obj, Objects, PasidCtl, Released,
};
use super::Iommu;
use crate::device::{Device, DeviceShared};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::group::{ActiveCell, GroupShared};
use crate::ioas::{DeviceLimits, Ioas};
use crate::pasid::PasidTable;
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::types::{DeviceInfo, GroupId, ObjId, MAX_PASID_BITS, PAGE_SIZE};
use std::collections::BTreeMap;

/// What one planning pass of attach or replace ended with.
enum Step {
    Done(ObjId),
    /// Populate a new auto domain of `iova_bits` on `ioas` (whose group members are
    /// `members`), then plan again.
    Populate {
        ioas: Arc<Ioas>,
        iova_bits: u8,
        members: Vec<DeviceLimits>,
        pt: ObjId,
    },
}

/// True if `pending` is a populated domain of this shape on this IOAS.
fn fits(pending: &Option<Pending>, ioas: &Arc<Ioas>, iova_bits: u8) -> bool {
    pending
        .as_ref()
        .is_some_and(|p| Arc::ptr_eq(&p.ioas, ioas) && p.iova_bits == iova_bits)
}

impl Iommu {
    /// The one publish: swaps `domain` into the group's cell at `pasid` (0: the RID; a
    /// PASID's cell is made on its first publish) under a fresh generation, records the HWPT,
    /// and keeps the domain it replaced for retirement.
    pub(super) fn publish(
        &self,
        objects: &mut Objects,
        group: GroupId,
        pasid: u32,
        hwpt: Option<ObjId>,
        domain: Arc<Domain>,
        released: &mut Released,
    ) {
        let grace = &self.shared.grace;
        let generation = grace.next_generation();
        let g = objects.group_mut(group);
        if pasid == 0 {
            released
                .domains
                .push(g.shared.rid.publish(domain, generation));
            g.hwpt = hwpt;
            return;
        }
        let blocked = &self.shared.blocked;
        let p = g.pasids.entry(pasid).or_insert_with(|| PasidCtl {
            cell: Arc::new(ActiveCell::new(blocked.clone(), grace.next_generation())),
            hwpt: None,
        });
        released.domains.push(p.cell.publish(domain, generation));
        p.hwpt = hwpt;
    }

    /// Records that `dev` is attached at `pasid` to `hwpt` (or detached, `None`) and tells its
    /// data plane: the RID's `attached` flag, or the device's PASID table entry (pointing at
    /// the group's cell for the PASID, which an attach published first). What clearing an
    /// entry unlinks goes to `released`, for retirement before the caller's fence.
    pub(super) fn mark_attached(
        objects: &mut Objects,
        dev: ObjId,
        pasid: u32,
        hwpt: Option<ObjId>,
        released: &mut Released,
    ) {
        let device = objects.device(dev).expect("looked up by the caller");
        let cell = match (pasid, hwpt) {
            (0, _) | (_, None) => None,
            (_, Some(_)) => Some(objects.groups[&device.group].pasids[&pasid].cell.clone()),
        };
        let device = objects.device_mut(dev);
        if pasid == 0 {
            device.hwpt = hwpt;
            // ORDERING: Release pairs with the Acquire load in `Device::pin`: the group's
            // domain (published before an attach marks the device) is visible to a reader
            // that sees the device attached. On detach, the fence that follows makes every
            // later guard see the flag down.
            device
                .shared
                .attached
                .store(hwpt.is_some(), Ordering::Release);
        } else {
            match hwpt {
                Some(h) => device.pasids.insert(pasid, h),
                None => device.pasids.remove(&pasid),
            };
            released
                .pasid
                .append(device.shared.pasids.set(pasid, cell.as_ref()));
        }
    }

    /// `EINVAL` unless `pasid` is one of `dev`'s PASIDs (not 0, below `1 << pasid_bits`).
    pub(super) fn check_pasid(&self, dev: ObjId, pasid: u32) -> Result<()> {
        let objects = self.objects();
        let device = objects.device(dev)?;
        if device.shared.pasids.in_range(pasid) {
            Ok(())
        } else {
            Err(Error::InvalidPasid {
                dev,
                pasid,
                pasid_bits: device.pasid_bits,
            })
        }
    }

    /// Runs a planning loop: `step` plans (and commits, when it can) under the table lock,
    /// with the IOAS locks it asked for taken before it ([`with_ioas_locks`]); a `Populate`
    /// answer is served outside every lock, then `step` runs again.
    fn plan_and_commit(
        &self,
        mut step: impl FnMut(
            &mut Option<Pending>,
            &mut Released,
            &mut Held<'_>,
        ) -> Result<Locking<Step>>,
    ) -> Result<ObjId> {
        let mut released = Released::default();
        let mut pending: Option<Pending> = None;
        let result = loop {
            match with_ioas_locks(|held| step(&mut pending, &mut released, held)) {
                Ok(Step::Done(id)) => break Ok(id),
                Ok(Step::Populate {
                    ioas,
                    iova_bits,
                    members,
                    pt,
                }) => {
                    if let Some(p) = pending.take() {
                        self.discard(p);
                    }
                    let check = |state: &crate::ioas::IoasState| {
                        for m in &members {
                            state.check_fits(m, pt)?;
                            state.check_reserved(m)?;
                        }
                        Ok(())
                    };
                    match self.prepare_domain(ioas, iova_bits, check) {
                        Ok(p) => pending = Some(p),
                        Err(e) => break Err(e),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if let Some(p) = pending.take() {
            self.discard(p);
        }
        let notices = std::mem::take(&mut released.notices);
        self.finish(released);
        // After every lock (G14): the devices a replace moved (G15).
        let acks = crate::observers::deliver(notices).wait();
        result.and_then(|id| acks.map(|()| id))
    }

    /// Binds a device into `group` (created on first use). The device starts detached: its
    /// translations fault `Blocked` until it is attached.
    ///
    /// `EINVAL` if `info.iova_bits` is outside 13 ..= 64, `info.pasid_bits` above 20 or a
    /// reserved range is empty;
    /// `ENOSPC` when object IDs are exhausted.
    pub fn device_bind(&self, group: GroupId, info: DeviceInfo) -> Result<(ObjId, Device)> {
        if !(13..=64).contains(&info.iova_bits) {
            return Err(Error::InvalidIovaBits {
                bits: info.iova_bits,
            });
        }
        if info.pasid_bits > MAX_PASID_BITS {
            return Err(Error::InvalidPasidBits {
                bits: info.pasid_bits,
            });
        }
        let mut reserved = Vec::with_capacity(info.reserved.len());
        for r in &info.reserved {
            if r.start >= r.end {
                return Err(Error::EmptyReservedRange { range: r.clone() });
            }
            reserved.push((r.start & !(PAGE_SIZE - 1), (r.end - 1) | (PAGE_SIZE - 1)));
        }
        let aperture_last = if info.iova_bits == 64 {
            u64::MAX
        } else {
            (1u64 << info.iova_bits) - 1
        };
        let grace = &self.shared.grace;
        let mut objects = self.objects_mut();
        objects.check_id_available()?;
        let id = objects.alloc_id();
        let blocked = &self.shared.blocked;
        let g = objects.groups.entry(group).or_insert_with(|| GroupCtl {
            shared: Arc::new(GroupShared::new(
                group,
                blocked.clone(),
                grace.next_generation(),
            )),
            devices: Vec::new(),
            hwpt: None,
            pasids: BTreeMap::new(),
        });
        g.devices.push(id);
        let shared = Arc::new(DeviceShared {
            id,
            grace: grace.clone(),
            group: g.shared.clone(),
            attached: AtomicBool::new(false),
            aperture_last,
            pasids: PasidTable::new(info.pasid_bits),
        });
        let device = Device {
            inner: shared.clone(),
        };
        objects.map.insert(
            id,
            Obj::Device(DeviceObj {
                group,
                iova_bits: info.iova_bits,
                reserved,
                shared,
                hwpt: None,
                pasid_bits: info.pasid_bits,
                pasids: BTreeMap::new(),
                observers: Vec::new(),
            }),
        );
        Ok((id, device))
    }

    /// Attaches a detached device to `pt`: a HWPT, or an IOAS (the group's auto HWPT on it,
    /// an existing auto HWPT of that IOAS, or a new one). Returns the HWPT id.
    ///
    /// If the device's group is already attached, the device joins the group's HWPT;
    /// asking for another one is `EINVAL` (move the group with [`Iommu::device_replace`]).
    pub fn device_attach(&self, dev: ObjId, pt: ObjId) -> Result<ObjId> {
        self.plan_and_commit(|pending, released, held| {
            self.attach_step(dev, 0, pt, pending, released, held)
        })
    }

    /// Attaches PASID `pasid` of `dev` to `pt` (a HWPT, or an IOAS for an auto HWPT, as for
    /// the RID); returns the HWPT id. From the publish on, [`crate::Device::pin_pasid`] with
    /// that PASID translates through it. The domain obeys the device's aperture and reserved
    /// ranges as the RID's does.
    ///
    /// `EINVAL` for PASID 0 or one at or above `1 << pasid_bits`; `EBUSY` if the device already
    /// has `pasid` attached (even to the same HWPT: use [`Iommu::device_replace_pasid`]). If
    /// another device of the group has `pasid` attached, this device joins it when `pt` is the
    /// same HWPT, else `EINVAL`.
    pub fn device_attach_pasid(&self, dev: ObjId, pasid: u32, pt: ObjId) -> Result<ObjId> {
        self.check_pasid(dev, pasid)?;
        self.plan_and_commit(|pending, released, held| {
            self.attach_step(dev, pasid, pt, pending, released, held)
        })
    }

    fn attach_step(
        &self,
        dev: ObjId,
        pasid: u32,
        pt: ObjId,
        pending: &mut Option<Pending>,
        released: &mut Released,
        held: &mut Held<'_>,
    ) -> Result<Locking<Step>> {
        let mut guard = self.objects_mut();
        let objects = &mut *guard;
        let device = objects.device(dev)?;
        if let Some(hwpt) = device.hwpt_at(pasid) {
            return Err(if pasid == 0 {
                Error::AlreadyAttached { dev, hwpt }
            } else {
                Error::PasidBusy { dev, pasid, hwpt }
            });
        }
        let (gid, bits, limits) = (device.group, device.iova_bits, device.limits(dev, pasid));
        let group_hwpt = objects.groups[&gid].hwpt_at(pasid);
        let dest = match (objects.get(pt)?, group_hwpt) {
            // A device joins its group's auto HWPT on that IOAS, whatever its shape.
            (Obj::Ioas(i), Some(g)) if objects.hwpt(g).auto && objects.hwpt(g).ioas.id == i.id => {
                Dest::Hwpt(g)
            }
            _ => objects.dest(pt, limits.aperture_last)?,
        };
        // A device joins its group's HWPT; anything else is a replace's job.
        if let Some(current) = group_hwpt {
            let joins = match &dest {
                Dest::Hwpt(h) => *h == current,
                Dest::NewAuto(_) => false,
            };
            if !joins {
                return Err(if pasid == 0 {
                    Error::GroupOnOtherHwpt {
                        group: gid,
                        current,
                        requested: pt,
                    }
                } else {
                    Error::PasidOnOtherHwpt {
                        group: gid,
                        pasid,
                        current,
                        requested: pt,
                    }
                });
            }
        }
        let ioas = match &dest {
            Dest::Hwpt(h) => objects.hwpt(*h).ioas.clone(),
            Dest::NewAuto(i) => {
                objects.check_id_available()?;
                if !fits(pending, i, bits) {
                    return Ok(Locking::Done(Step::Populate {
                        ioas: i.clone(),
                        iova_bits: bits,
                        members: vec![limits],
                        pt,
                    }));
                }
                i.clone()
            }
        };
        // The IOAS's lock is taken before the table's (G14): if it is not held, run again
        // with it.
        let Some(state) = held.get(&ioas) else {
            return Ok(Locking::Relock(vec![ioas]));
        };
        if let (Dest::NewAuto(_), Some(p)) = (&dest, pending.as_ref()) {
            if !state.pending_intact(&p.domain) {
                // A map went past the new domain's aperture: populate again (its check sees
                // the map now).
                return Ok(Locking::Done(Step::Populate {
                    ioas: ioas.clone(),
                    iova_bits: bits,
                    members: vec![limits],
                    pt,
                }));
            }
        }
        state.check_fits(&limits, pt)?;
        state.check_reserved(&limits)?;
        // Commit: nothing below can fail.
        let hwpt = match dest {
            Dest::Hwpt(h) => h,
            Dest::NewAuto(_) => {
                let p = pending.take().expect("checked by `fits`");
                Self::commit_hwpt(objects, state, p, true, false)
            }
        };
        state.add_device(&limits);
        let target = objects.hwpt_mut(hwpt);
        target.users += 1;
        let domain = target.domain.clone();
        if objects.groups[&gid].hwpt_at(pasid).is_none() {
            self.publish(objects, gid, pasid, Some(hwpt), domain, released);
        }
        // After the publish: a reader that sees the device attached sees the domain.
        Self::mark_attached(objects, dev, pasid, Some(hwpt), released);
        Ok(Locking::Done(Step::Done(hwpt)))
    }

    /// Moves an attached device's whole group to `pt` (a HWPT, or an IOAS for its auto
    /// HWPT) in one atomic publish; DMA never sees a blocked or half-built domain (G2, G3),
    /// from any domain to any other (G4). Replacing to the current HWPT is a no-op. Returns
    /// the new HWPT id.
    pub fn device_replace(&self, dev: ObjId, pt: ObjId) -> Result<ObjId> {
        self.plan_and_commit(|pending, released, held| {
            self.replace_step(dev, 0, pt, pending, released, held)
        })
    }

    /// Moves PASID `pasid` of an attached device, for every device of its group that has it
    /// attached, to `pt` in one atomic publish, hitless as [`Iommu::device_replace`] (G2, G3,
    /// G4). Replacing to the current HWPT is a no-op. Returns the new HWPT id.
    ///
    /// `EINVAL` for an invalid PASID (as attach) or one the device does not have attached.
    pub fn device_replace_pasid(&self, dev: ObjId, pasid: u32, pt: ObjId) -> Result<ObjId> {
        self.check_pasid(dev, pasid)?;
        self.plan_and_commit(|pending, released, held| {
            self.replace_step(dev, pasid, pt, pending, released, held)
        })
    }

    fn replace_step(
        &self,
        dev: ObjId,
        pasid: u32,
        pt: ObjId,
        pending: &mut Option<Pending>,
        released: &mut Released,
        held: &mut Held<'_>,
    ) -> Result<Locking<Step>> {
        let mut guard = self.objects_mut();
        let objects = &mut *guard;
        let device = objects.device(dev)?;
        let Some(old) = device.hwpt_at(pasid) else {
            return Err(if pasid == 0 {
                Error::NotAttached { dev }
            } else {
                Error::PasidNotAttached { dev, pasid }
            });
        };
        let gid = device.group;
        let members: Vec<DeviceLimits> = objects.groups[&gid]
            .devices
            .iter()
            .filter_map(|&m| match objects.device(m) {
                Ok(md) if md.hwpt_at(pasid) == Some(old) => Some(md.limits(m, pasid)),
                _ => None,
            })
            .collect();
        let widest = members.iter().map(|m| m.aperture_last).max().unwrap_or(0);
        // A new auto domain is shaped for the group's widest attached device.
        let bits = widest.checked_add(1).map_or(64, u64::trailing_zeros) as u8;
        let dest = match objects.get(pt)? {
            Obj::Ioas(i) if objects.hwpt(old).auto && objects.hwpt(old).ioas.id == i.id => {
                Dest::Hwpt(old)
            }
            _ => objects.dest(pt, widest)?,
        };
        if let Dest::Hwpt(h) = dest {
            if h == old {
                return Ok(Locking::Done(Step::Done(old)));
            }
        }
        let old_ioas = objects.hwpt(old).ioas.clone();
        let new_ioas = match &dest {
            Dest::Hwpt(h) => objects.hwpt(*h).ioas.clone(),
            Dest::NewAuto(i) => {
                objects.check_id_available()?;
                if !fits(pending, i, bits) {
                    let same = Arc::ptr_eq(i, &old_ioas);
                    return Ok(Locking::Done(Step::Populate {
                        ioas: i.clone(),
                        iova_bits: bits,
                        // Within one IOAS the members are already there.
                        members: if same { Vec::new() } else { members },
                        pt,
                    }));
                }
                i.clone()
            }
        };
        let same_ioas = old_ioas.id == new_ioas.id;
        // Both IOAS locks are taken before the table's (G14): if they are not held, run
        // again with them.
        let Some((new_state, mut old_state)) = held.get_two(&new_ioas, &old_ioas) else {
            return Ok(Locking::Relock(vec![new_ioas, old_ioas]));
        };
        if let (Dest::NewAuto(_), Some(p)) = (&dest, pending.as_ref()) {
            if !new_state.pending_intact(&p.domain) {
                // A map went past the new domain's aperture: populate again.
                return Ok(Locking::Done(Step::Populate {
                    ioas: new_ioas.clone(),
                    iova_bits: bits,
                    members: if same_ioas { Vec::new() } else { members },
                    pt,
                }));
            }
        }
        if !same_ioas {
            // The group's devices must fit the new IOAS, and their reserved ranges must be
            // free there (they are enforced before the publish, G7).
            for m in &members {
                new_state.check_fits(m, pt)?;
                new_state.check_reserved(m)?;
            }
        }
        // Commit: nothing below can fail.
        let new = match dest {
            Dest::Hwpt(h) => h,
            Dest::NewAuto(_) => {
                let p = pending.take().expect("checked by `fits`");
                Self::commit_hwpt(objects, new_state, p, true, false)
            }
        };
        if !same_ioas {
            for m in &members {
                new_state.add_device(m);
            }
        }
        let domain = objects.hwpt(new).domain.clone();
        // The publish: one store switches every device of the group (G3).
        self.publish(objects, gid, pasid, Some(new), domain, released);
        // Reserved ranges leave the old IOAS only after the switch (G7).
        if let Some(old_state) = old_state.as_deref_mut() {
            for m in &members {
                old_state.remove_device(m.dev, pasid);
            }
        }
        for m in &members {
            // The data plane is already on the new domain through the cell; this only
            // records the HWPT (a PASID entry keeps pointing at the same cell).
            Self::mark_attached(objects, m.dev, pasid, Some(new), released);
            objects.move_notices(m.dev, pasid, &mut released.notices);
        }
        let n = members.len();
        objects.hwpt_mut(new).users += n;
        let old_hwpt = objects.hwpt_mut(old);
        old_hwpt.users -= n;
        if old_hwpt.auto && old_hwpt.users == 0 {
            let state = old_state.unwrap_or(new_state);
            objects.free_auto_hwpt(old, state, released);
        }
        Ok(Locking::Done(Step::Done(new)))
    }
}
