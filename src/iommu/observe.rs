//! Observers (G15): registering mirrors and device observers, and finding which device
//! observers a call owes an invalidation ([`crate::observers`]).
//!
//! A call collects its [`Notice`]s under the locks that make its change (so the set of
//! devices it affects cannot move under it), and delivers them after releasing every lock:
//! no observer is called while the object table's lock is held (G14).

use super::objects::{Obj, Objects};
use super::Iommu;
use crate::error::{Error, Result};
use crate::observers::{
    DeviceObserver, IoasMirror, Notice, ObserverEntry, ObserverId, DEFAULT_OBSERVER_DEADLINE,
};
use crate::sync::lock;
use crate::types::ObjId;
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Every IOVA: what a detach or a replace invalidates, and a stage-2 unmap under a nested
/// domain (whose stage-1 IOVAs map to IPAs the library does not track).
pub(super) const ALL: RangeInclusive<u64> = 0..=u64::MAX;

impl Iommu {
    /// Adds a mirror to `ioas`: it is first told every current area as a map (in IOVA order,
    /// under the IOAS's lock, so no map or unmap comes between), then every map and unmap of
    /// the IOAS, in order, from inside those calls. `ioas_unmap` returns only after the
    /// mirror's `unmap` returned; a mirror that refuses a map fails the `ioas_map` with its
    /// errno and nothing changed (G8). Destroying the IOAS tells the mirror to unmap every
    /// remaining area, and removes it. (`mirror` is a `std::sync::Arc` in every build.)
    ///
    /// A mirror is called under the IOAS's lock (never under the object table's): it must not
    /// call a control call on the same IOAS.
    ///
    /// `ENOENT` / `EINVAL` if `ioas` is not an IOAS; the mirror's errno
    /// ([`Error::MirrorRefused`]) if it refuses a replayed area (it is then told to unmap
    /// those it accepted, and not added).
    pub fn ioas_add_mirror(&self, ioas: ObjId, mirror: Arc<dyn IoasMirror>) -> Result<ObserverId> {
        let ioas = self.lookup_ioas(ioas)?;
        let mut state = lock(&ioas.state);
        if state.destroyed {
            return Err(Error::NoSuchObject { id: ioas.id });
        }
        let id = self.next_observer_id();
        state.add_mirror(id, mirror)?;
        Ok(id)
    }

    /// Adds an observer to `dev`, with [`DEFAULT_OBSERVER_DEADLINE`] (1 s):
    /// see [`Iommu::device_add_observer_with_deadline`].
    pub fn device_add_observer(
        &self,
        dev: ObjId,
        observer: Arc<dyn DeviceObserver>,
    ) -> Result<ObserverId> {
        self.device_add_observer_with_deadline(dev, observer, DEFAULT_OBSERVER_DEADLINE)
    }

    /// Adds an observer to `dev`: from now on, every call that can change a translation of
    /// `dev` invalidates it (after the change, with no lock held) and waits up to `deadline`
    /// for its acknowledgment before returning (G15):
    ///
    /// | call | `pasid` | `iovas` |
    /// | --- | --- | --- |
    /// | `ioas_unmap` (and its `UnmapCompletion`) of the IOAS of a paging domain `dev` is attached to | the attachment's (`None`: the RID) | the unmapped range (`0..=u64::MAX` for unmap-all) |
    /// | the same, for a nested domain over that IOAS (a stage-2 unmap) | the attachment's | `0..=u64::MAX` (stage-1 IOVAs map to IPAs the library does not track) |
    /// | `hwpt_invalidate` of a nested domain `dev` is attached to | the attachment's | the invalidated range (`0..=u64::MAX` for `All` and `Config`) |
    /// | `device_replace` / `device_detach` moving `dev`'s RID | `None` | `0..=u64::MAX` |
    /// | `device_replace_pasid` / `device_detach_pasid` | `Some(pasid)` | `0..=u64::MAX` |
    ///
    /// A replace tells every device of the group it moves; a detach only the detached device.
    /// An observer that does not acknowledge in time (or drops its token) makes the call
    /// fail with `ETIMEDOUT` ([`Error::ObserverTimedOut`]) after the change was made, and is
    /// marked failed: no later call tells it or waits for it (remove it and add it again).
    /// (`observer` is a `std::sync::Arc` in every build.)
    ///
    /// `ENOENT` / `EINVAL` if `dev` is not a device.
    pub fn device_add_observer_with_deadline(
        &self,
        dev: ObjId,
        observer: Arc<dyn DeviceObserver>,
        deadline: Duration,
    ) -> Result<ObserverId> {
        let mut objects = self.objects_mut();
        objects.device(dev)?;
        let id = self.next_observer_id();
        let entry = Arc::new(ObserverEntry::new(id, observer, deadline));
        objects.device_mut(dev).observers.push(entry);
        objects.observed += 1;
        self.note_observed(objects.observed);
        Ok(id)
    }

    /// Removes a mirror or a device observer: no call tells it anything after this returns
    /// (a call that collected it before may still). `ENOENT` ([`Error::NoSuchObserver`]) if
    /// `id` names none (never added, removed, or its IOAS or device was destroyed).
    pub fn remove_observer(&self, id: ObserverId) -> Result<()> {
        {
            let mut objects = self.objects_mut();
            let objects = &mut *objects;
            for o in objects.map.values_mut() {
                if let Obj::Device(d) = o {
                    if let Some(i) = d.observers.iter().position(|e| e.id == id) {
                        d.observers.remove(i);
                        objects.observed -= 1;
                        self.note_observed(objects.observed);
                        return Ok(());
                    }
                }
            }
        }
        for ioas in self.ioases() {
            if lock(&ioas.state).remove_mirror(id) {
                return Ok(());
            }
        }
        Err(Error::NoSuchObserver { id })
    }

    /// True if the device observer `id` missed a deadline and is no longer told anything
    /// (false for a mirror). `ENOENT` if `id` names no observer.
    pub fn observer_failed(&self, id: ObserverId) -> Result<bool> {
        {
            let objects = self.objects();
            for o in objects.map.values() {
                if let Obj::Device(d) = o {
                    if let Some(e) = d.observers.iter().find(|e| e.id == id) {
                        return Ok(e.failed());
                    }
                }
            }
        }
        for ioas in self.ioases() {
            if lock(&ioas.state).has_mirror(id) {
                return Ok(false);
            }
        }
        Err(Error::NoSuchObserver { id })
    }

    /// Publishes the table's count of device observers (called under its write lock).
    pub(super) fn note_observed(&self, n: usize) {
        // Relaxed: a registration that happened before an unmap began is seen by its load
        // (coherence); one racing the unmap may be missed, as documented on the field.
        self.shared.observed.store(n, Relaxed);
    }

    /// True if some device has an observer (see [`Iommu::note_observed`]).
    pub(super) fn any_observed(&self) -> bool {
        // Relaxed: as in `note_observed`.
        self.shared.observed.load(Relaxed) != 0
    }

    fn next_observer_id(&self) -> ObserverId {
        // Relaxed: only uniqueness matters.
        ObserverId(self.shared.next_observer.fetch_add(1, Relaxed) + 1)
    }
}

impl Objects {
    /// The notices owed to the observers of every device attached (at its RID or a PASID) to
    /// a HWPT for which `range` answers a range.
    pub(super) fn notices_where(
        &self,
        mut range: impl FnMut(ObjId) -> Option<RangeInclusive<u64>>,
        out: &mut Vec<Notice>,
    ) {
        if self.observed == 0 {
            return;
        }
        for (&dev, o) in &self.map {
            let Obj::Device(d) = o else { continue };
            if d.observers.is_empty() {
                continue;
            }
            let points = d.hwpt.map(|h| (None, h));
            let points = points
                .into_iter()
                .chain(d.pasids.iter().map(|(&p, &h)| (Some(p), h)));
            for (pasid, hwpt) in points {
                if let Some(iovas) = range(hwpt) {
                    push(d.observers.iter(), dev, pasid, iovas, out);
                }
            }
        }
    }

    /// The notices owed to the observers of every device attached to a HWPT on `ioas` whose
    /// range `first ..= last` was unmapped: that range for a paging domain, every IOVA for a
    /// nested one.
    pub(super) fn unmap_notices(&self, ioas: ObjId, iovas: RangeInclusive<u64>) -> Vec<Notice> {
        let mut out = Vec::new();
        self.notices_where(
            |hwpt| {
                let h = self.hwpt(hwpt);
                (h.ioas.id == ioas).then(|| match h.parent {
                    Some(_) => ALL,
                    None => iovas.clone(),
                })
            },
            &mut out,
        );
        out
    }

    /// The notices owed to `dev`'s observers when its attachment at `pasid` (0: the RID)
    /// moves: every IOVA.
    pub(super) fn move_notices(&self, dev: ObjId, pasid: u32, out: &mut Vec<Notice>) {
        if let Ok(d) = self.device(dev) {
            let pasid = (pasid != 0).then_some(pasid);
            push(d.observers.iter(), dev, pasid, ALL, out);
        }
    }
}

fn push<'a>(
    entries: impl Iterator<Item = &'a Arc<ObserverEntry>>,
    dev: ObjId,
    pasid: Option<u32>,
    iovas: RangeInclusive<u64>,
    out: &mut Vec<Notice>,
) {
    for e in entries.filter(|e| !e.failed()) {
        out.push(Notice {
            entry: e.clone(),
            dev,
            pasid,
            iovas: iovas.clone(),
        });
    }
}
