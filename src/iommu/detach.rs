//! `device_detach` and `device_detach_pasid`: one publish (when the last device of the group
//! leaves the point), then the fence (G6).
//!
//! The detached attachment's IOAS lock is taken before the object table's write lock
//! ([`with_ioas_locks`]), so a detach never waits for a map on its IOAS while holding the
//! table (G14).

use super::objects::{with_ioas_locks, Held, Locking, Released};
use super::Iommu;
use crate::error::{Error, Result};
use crate::grace::Garbage;
use crate::types::ObjId;

impl Iommu {
    /// Detaches a device. Its translations fault `Blocked` from now on; when it was the last
    /// attached device of its group, the group moves to the blocked domain (the other devices
    /// keep translating otherwise). When this returns, no guard of the device made before the
    /// call is alive (G6). The device's PASIDs stay attached.
    ///
    /// `ENOENT` / `EINVAL` for a `dev` that is not a device, `EINVAL` if it is not attached
    /// (these come first: such a call would not wait); `EDEADLK` if the calling thread holds
    /// a guard of this `Iommu`.
    pub fn device_detach(&self, dev: ObjId) -> Result<()> {
        self.check_attached(dev, 0)?;
        self.check_not_pinned("device_detach")?;
        self.detach(dev, 0)
    }

    /// Detaches PASID `pasid` of a device. From now on its `pin_pasid(pasid)` guards no longer
    /// use the HWPT that was attached there: they fault `Blocked`, unless the device's RID is
    /// attached to an SMMUv3 nested HWPT, whose CD `pasid` they then use (the guest owns the
    /// CD table, as on real SMMUv3). When it was the last device of its group with that PASID
    /// attached, the group's PASID cell moves to the blocked domain. When this returns, no
    /// guard of the device made before the call is alive (G6). The RID and the device's other
    /// PASIDs are untouched.
    ///
    /// `ENOENT` / `EINVAL` for a `dev` that is not a device, `EINVAL` for an invalid PASID or
    /// one the device does not have attached (these come first: such a call would not wait);
    /// `EDEADLK` if the calling thread holds a guard of this `Iommu`.
    pub fn device_detach_pasid(&self, dev: ObjId, pasid: u32) -> Result<()> {
        self.check_pasid(dev, pasid)?;
        self.check_attached(dev, pasid)?;
        self.check_not_pinned("device_detach_pasid")?;
        self.detach(dev, pasid)
    }

    /// `ENOENT` / `EINVAL` unless `dev` is a device attached at `pasid` (0: the RID).
    fn check_attached(&self, dev: ObjId, pasid: u32) -> Result<()> {
        let objects = self.objects();
        match objects.device(dev)?.hwpt_at(pasid) {
            Some(_) => Ok(()),
            None if pasid == 0 => Err(Error::NotAttached { dev }),
            None => Err(Error::PasidNotAttached { dev, pasid }),
        }
    }

    /// Detaches `dev` at `pasid` (0: the RID), then fences.
    fn detach(&self, dev: ObjId, pasid: u32) -> Result<()> {
        let mut released = Released::default();
        with_ioas_locks(|held| self.detach_step(dev, pasid, &mut released, held))?;
        // Observers first, with no lock held (G14), so that their replies overlap the fence.
        let acks = crate::observers::deliver(std::mem::take(&mut released.notices));
        let grace = &self.shared.grace;
        for domain in released.domains {
            grace.retire(Garbage::Domain(domain));
        }
        if !released.pasid.is_empty() {
            grace.retire(Garbage::Pasid(released.pasid));
        }
        // The fence: after the attached flag was cleared (or the PASID entry, and what it
        // alone kept, unlinked) and the domains retired, so it covers all of them.
        grace.synchronize();
        grace.collect();
        acks.wait()
    }

    fn detach_step(
        &self,
        dev: ObjId,
        pasid: u32,
        released: &mut Released,
        held: &mut Held<'_>,
    ) -> Result<Locking<()>> {
        let mut guard = self.objects_mut();
        let objects = &mut *guard;
        let device = objects.device(dev)?;
        let Some(hwpt) = device.hwpt_at(pasid) else {
            return Err(if pasid == 0 {
                Error::NotAttached { dev }
            } else {
                Error::PasidNotAttached { dev, pasid }
            });
        };
        let gid = device.group;
        let ioas = objects.hwpt(hwpt).ioas.clone();
        // The IOAS's lock before the table's (G14): if it is not held, run again with it.
        let Some(state) = held.get(&ioas) else {
            return Ok(Locking::Relock(vec![ioas]));
        };
        // The flag down or the entry cleared; the fence that `detach` waits for after this
        // call makes every later guard see it.
        Self::mark_attached(objects, dev, pasid, None, released);
        objects.move_notices(dev, pasid, &mut released.notices);
        state.remove_device(dev, pasid);
        let still_attached = objects.groups[&gid].devices.iter().any(|m| {
            objects
                .device(*m)
                .is_ok_and(|md| md.hwpt_at(pasid).is_some())
        });
        if !still_attached {
            let blocked = self.shared.blocked.clone();
            self.publish(objects, gid, pasid, None, blocked, released);
            if pasid != 0 {
                // No device of the group can reach the PASID's cell any more (every entry
                // for it is cleared): it goes with the fence, a later attach makes a new one.
                if let Some(p) = objects.group_mut(gid).pasids.remove(&pasid) {
                    released.pasid.push_cell(p.cell);
                }
            }
        }
        let left = objects.hwpt_mut(hwpt);
        left.users -= 1;
        if left.auto && left.users == 0 {
            objects.free_auto_hwpt(hwpt, state, released);
        }
        Ok(Locking::Done(()))
    }
}
