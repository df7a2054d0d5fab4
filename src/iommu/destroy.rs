//! `destroy`: IOASes, user HWPTs and detached devices.

use super::objects::{with_ioas_locks, Held, Locking, Obj, Released};
use super::Iommu;
use crate::error::{Error, Result};
use crate::types::{ObjId, ObjKind};

impl Iommu {
    /// Destroys an IOAS, a user HWPT or a detached device. `EBUSY` while the object is in use
    /// (an IOAS with HWPTs, a HWPT with devices or nested children, a device attached at its
    /// RID or at any PASID)
    /// and for auto HWPTs. The ID is gone when this returns; a HWPT's domain is freed once no
    /// guard can use it (G9).
    pub fn destroy(&self, id: ObjId) -> Result<()> {
        let mut released = Released::default();
        with_ioas_locks(|held| self.destroy_step(id, &mut released, held))?;
        self.finish(released);
        Ok(())
    }

    /// The IOAS's lock (of the IOAS, or of a paging HWPT's) is taken before the table's
    /// (G14); a destroyed IOAS's areas are dropped after both ([`Released`]).
    fn destroy_step(
        &self,
        id: ObjId,
        released: &mut Released,
        held: &mut Held<'_>,
    ) -> Result<Locking<()>> {
        let mut guard = self.objects_mut();
        let objects = &mut *guard;
        match objects.get(id)?.kind() {
            ObjKind::Ioas => {
                let ioas = objects.ioas(id)?.clone();
                let Some(state) = held.get(&ioas) else {
                    return Ok(Locking::Relock(vec![ioas]));
                };
                let users = state.hwpt_count();
                if users > 0 {
                    return Err(Error::Busy {
                        id,
                        kind: ObjKind::Ioas,
                        users,
                    });
                }
                // A map or unmap that looked the IOAS up just before fails `ENOENT`; a pending
                // domain's call finds it gone and discards the domain.
                state.destroyed = true;
                if let Some(Obj::Ioas(ioas)) = objects.map.remove(&id) {
                    released.ioas = Some(ioas);
                }
            }
            ObjKind::Hwpt => {
                let hwpt = objects.hwpt(id);
                if hwpt.auto {
                    return Err(Error::AutoHwpt { id });
                }
                // Attached devices, or nested HWPTs built on it.
                let users = hwpt.users + hwpt.children;
                if users > 0 {
                    return Err(Error::Busy {
                        id,
                        kind: ObjKind::Hwpt,
                        users,
                    });
                }
                match hwpt.parent {
                    // A nested domain mirrors nothing: its parent loses a child.
                    Some(parent) => objects.hwpt_mut(parent).children -= 1,
                    None => {
                        let ioas = hwpt.ioas.clone();
                        let Some(state) = held.get(&ioas) else {
                            return Ok(Locking::Relock(vec![ioas]));
                        };
                        state.remove_domain(id);
                    }
                }
                if let Some(Obj::Hwpt(h)) = objects.map.remove(&id) {
                    released.domains.push(h.domain);
                }
            }
            ObjKind::Device => {
                let device = objects.device(id)?;
                // Attached at the RID or at any PASID.
                let users = device.attachments();
                if users > 0 {
                    return Err(Error::Busy {
                        id,
                        kind: ObjKind::Device,
                        users,
                    });
                }
                let gid = device.group;
                if let Some(Obj::Device(d)) = objects.map.remove(&id) {
                    // Its observers go with it.
                    objects.observed -= d.observers.len();
                    self.note_observed(objects.observed);
                }
                let group = objects.group_mut(gid);
                group.devices.retain(|m| *m != id);
                if group.devices.is_empty() {
                    objects.groups.remove(&gid);
                }
            }
        }
        Ok(Locking::Done(()))
    }
}
