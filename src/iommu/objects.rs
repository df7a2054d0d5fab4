//! The object table: IDs, HWPTs, devices and groups, and the lookups every call starts with.
//!
//! It lives behind one `RwLock` (`Shared::objects`). Lookups (`ioas_map`, `ioas_unmap`, the
//! first phase of `hwpt_alloc`) read-lock it; calls that change objects write-lock it for
//! bounded work only: never while a domain is populated or a range is cleared, and never
//! while waiting for an IOAS's lock: the IOAS locks a call needs are taken first
//! ([`with_ioas_locks`]) (G14).

use crate::device::DeviceShared;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::group::{ActiveCell, GroupShared};
use crate::ioas::{DeviceLimits, Ioas, IoasState};
use crate::observers::{Notice, ObserverEntry};
use crate::pasid::PasidGarbage;
use crate::sync::{lock, Arc, MutexGuard};
use crate::types::{GroupId, ObjId, ObjKind};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of the table's maps, whose keys are 32-bit IDs: one multiply by an odd
/// constant (the high bits, which the map's control bytes use, are well mixed; the low bits
/// of sequential IDs are distinct). SipHash's flooding resistance buys nothing here: object
/// IDs are the library's own, group numbers the VMM's. With SipHash, the lookup every map and
/// unmap starts with took about 118 instructions (callgrind, `benches/virtio_iommu.rs`).
#[derive(Clone, Copy, Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The table itself.
#[derive(Default)]
pub(super) struct Objects {
    /// The last ID handed out (0: none yet).
    pub(super) last_id: u32,
    pub(super) map: IdMap<ObjId, Obj>,
    pub(super) groups: IdMap<GroupId, GroupCtl>,
    /// Device observers over every device ([`crate::DeviceObserver`]): while none, no call
    /// looks for any.
    pub(super) observed: usize,
}

pub(super) enum Obj {
    Ioas(Arc<Ioas>),
    Hwpt(HwptObj),
    Device(DeviceObj),
}

impl Obj {
    pub(super) fn kind(&self) -> ObjKind {
        match self {
            Obj::Ioas(_) => ObjKind::Ioas,
            Obj::Hwpt(_) => ObjKind::Hwpt,
            Obj::Device(_) => ObjKind::Device,
        }
    }
}

/// A HWPT: a paging domain tied to one IOAS, or a nested domain over a paging parent.
pub(super) struct HwptObj {
    /// The IOAS of the domain (of its parent, for a nested HWPT): attachments register their
    /// apertures and reserved ranges there.
    pub(super) ioas: Arc<Ioas>,
    pub(super) domain: Arc<Domain>,
    /// Made by attaching a device to an IOAS; freed with its last device.
    pub(super) auto: bool,
    /// Attached devices.
    pub(super) users: usize,
    /// Allocated with `HwptFlags::NEST_PARENT` (paging only).
    pub(super) nest_parent: bool,
    /// The parent of a nested HWPT.
    pub(super) parent: Option<ObjId>,
    /// Nested HWPTs built on this one.
    pub(super) children: usize,
}

pub(super) struct DeviceObj {
    pub(super) group: GroupId,
    pub(super) iova_bits: u8,
    /// Page-rounded, inclusive.
    pub(super) reserved: Vec<(u64, u64)>,
    pub(super) shared: Arc<DeviceShared>,
    /// The RID's HWPT.
    pub(super) hwpt: Option<ObjId>,
    pub(super) pasid_bits: u8,
    /// The HWPT of each attached PASID.
    pub(super) pasids: BTreeMap<u32, ObjId>,
    /// Its [`crate::DeviceObserver`]s (G15).
    pub(super) observers: Vec<std::sync::Arc<ObserverEntry>>,
}

impl DeviceObj {
    /// What the attachment at `pasid` (0: the RID) contributes to its IOAS.
    pub(super) fn limits(&self, dev: ObjId, pasid: u32) -> DeviceLimits {
        DeviceLimits {
            dev,
            pasid,
            aperture_last: self.shared.aperture_last,
            reserved: self.reserved.clone(),
        }
    }

    /// The HWPT attached at `pasid` (0: the RID).
    pub(super) fn hwpt_at(&self, pasid: u32) -> Option<ObjId> {
        if pasid == 0 {
            self.hwpt
        } else {
            self.pasids.get(&pasid).copied()
        }
    }

    /// Attachments (RID and PASIDs).
    pub(super) fn attachments(&self) -> usize {
        usize::from(self.hwpt.is_some()) + self.pasids.len()
    }
}

pub(super) struct GroupCtl {
    pub(super) shared: Arc<GroupShared>,
    pub(super) devices: Vec<ObjId>,
    /// The HWPT the group is attached to; `None`: the blocked domain.
    pub(super) hwpt: Option<ObjId>,
    /// The cell of every PASID a device of the group has attached; when the last device
    /// detaches, the cell is published blocked and retired (a later attach makes a new one).
    /// Ordered, so that the cells drop in the same order every time (loom replays executions).
    pub(super) pasids: BTreeMap<u32, PasidCtl>,
}

/// One PASID of a group.
pub(super) struct PasidCtl {
    pub(super) cell: Arc<ActiveCell>,
    /// The HWPT the group's PASID is attached to; `None`: the blocked domain.
    pub(super) hwpt: Option<ObjId>,
}

impl GroupCtl {
    /// The HWPT the group is attached to at `pasid` (0: the RID).
    pub(super) fn hwpt_at(&self, pasid: u32) -> Option<ObjId> {
        if pasid == 0 {
            self.hwpt
        } else {
            self.pasids.get(&pasid).and_then(|p| p.hwpt)
        }
    }
}

/// What an attach or replace lands on.
pub(super) enum Dest {
    /// An existing HWPT.
    Hwpt(ObjId),
    /// A new auto HWPT on this IOAS.
    NewAuto(Arc<Ioas>),
}

/// Domains (and PASID state) a call released, retired after its locks
/// ([`super::Iommu::finish`]).
#[derive(Default)]
pub(super) struct Released {
    pub(super) domains: Vec<Arc<Domain>>,
    /// PASID cells and table leaves a detach unlinked.
    pub(super) pasid: PasidGarbage,
    /// A destroyed IOAS: its areas are dropped after every lock is released (G14).
    pub(super) ioas: Option<Arc<Ioas>>,
    /// Invalidations the call owes device observers, delivered after every lock (G15).
    pub(super) notices: Vec<Notice>,
}

impl Objects {
    /// Fails with `ENOSPC` if no ID is left; checked before a call commits, so that a call
    /// that fails never consumes one.
    pub(super) fn check_id_available(&self) -> Result<()> {
        if self.last_id == u32::MAX {
            Err(Error::IdsExhausted)
        } else {
            Ok(())
        }
    }

    /// The next ID; the caller checked [`Objects::check_id_available`] under the same lock.
    pub(super) fn alloc_id(&mut self) -> ObjId {
        debug_assert!(self.last_id < u32::MAX);
        self.last_id += 1;
        ObjId(self.last_id)
    }

    pub(super) fn get(&self, id: ObjId) -> Result<&Obj> {
        self.map.get(&id).ok_or(Error::NoSuchObject { id })
    }

    pub(super) fn ioas(&self, id: ObjId) -> Result<&Arc<Ioas>> {
        match self.get(id)? {
            Obj::Ioas(i) => Ok(i),
            other => Err(wrong_type(id, ObjKind::Ioas, other)),
        }
    }

    /// A HWPT that a device or group names (so it is alive).
    pub(super) fn hwpt(&self, id: ObjId) -> &HwptObj {
        match self.map.get(&id) {
            Some(Obj::Hwpt(h)) => h,
            _ => unreachable!("HWPT {id} referenced by a device or group is alive"),
        }
    }

    pub(super) fn hwpt_mut(&mut self, id: ObjId) -> &mut HwptObj {
        match self.map.get_mut(&id) {
            Some(Obj::Hwpt(h)) => h,
            _ => unreachable!("HWPT {id} referenced by a device or group is alive"),
        }
    }

    pub(super) fn device(&self, id: ObjId) -> Result<&DeviceObj> {
        match self.get(id)? {
            Obj::Device(d) => Ok(d),
            other => Err(wrong_type(id, ObjKind::Device, other)),
        }
    }

    pub(super) fn device_mut(&mut self, id: ObjId) -> &mut DeviceObj {
        match self.map.get_mut(&id) {
            Some(Obj::Device(d)) => d,
            _ => unreachable!("device {id} was just looked up"),
        }
    }

    pub(super) fn group_mut(&mut self, id: GroupId) -> &mut GroupCtl {
        self.groups
            .get_mut(&id)
            .expect("a bound device's group exists")
    }

    /// The oldest auto HWPT of `ioas` whose domain reaches at least `aperture_last`: a
    /// compatible one. A narrower auto domain is not reused for a wider device, whose maps it
    /// would otherwise limit (and keep limiting after the narrow device left).
    pub(super) fn auto_hwpt_of(&self, ioas: ObjId, aperture_last: u64) -> Option<ObjId> {
        let mut found: Option<ObjId> = None;
        for (&id, o) in &self.map {
            if let Obj::Hwpt(h) = o {
                let reaches = h
                    .domain
                    .page_table()
                    .is_some_and(|pt| pt.aperture_last() >= aperture_last);
                if h.auto && h.ioas.id == ioas && reaches && found.is_none_or(|f| id < f) {
                    found = Some(id);
                }
            }
        }
        found
    }

    /// Resolves the `pt` of attach/replace for devices reaching `aperture_last`: an IOAS
    /// (a compatible auto HWPT, found or to be made) or a HWPT.
    pub(super) fn dest(&self, pt: ObjId, aperture_last: u64) -> Result<Dest> {
        match self.get(pt)? {
            Obj::Hwpt(_) => Ok(Dest::Hwpt(pt)),
            Obj::Ioas(i) => Ok(match self.auto_hwpt_of(i.id, aperture_last) {
                Some(h) => Dest::Hwpt(h),
                None => Dest::NewAuto(i.clone()),
            }),
            other => Err(wrong_type(pt, ObjKind::Hwpt, other)),
        }
    }

    /// Frees an auto HWPT whose last device left: its ID is gone now, its domain leaves the
    /// IOAS's mirror list (the caller holds that IOAS's lock as `state`).
    pub(super) fn free_auto_hwpt(
        &mut self,
        id: ObjId,
        state: &mut IoasState,
        released: &mut Released,
    ) {
        if let Some(Obj::Hwpt(h)) = self.map.remove(&id) {
            debug_assert!(h.auto && h.users == 0);
            state.remove_domain(id);
            released.domains.push(h.domain);
        }
    }
}

pub(super) fn wrong_type(id: ObjId, expected: ObjKind, found: &Obj) -> Error {
    Error::WrongType {
        id,
        expected,
        found: found.kind(),
    }
}

/// What a step run under [`with_ioas_locks`] answers: done, or which IOASes it needs locked
/// (it found that it needs others than those held: run it again with these).
pub(super) enum Locking<T> {
    Done(T),
    Relock(Vec<Arc<Ioas>>),
}

/// The IOAS locks a step holds, taken in ID order before the object table's lock (G10): no
/// call waits for an IOAS's lock while it holds the table's lock (G14).
pub(super) struct Held<'a> {
    guards: Vec<(ObjId, MutexGuard<'a, IoasState>)>,
}

impl Held<'_> {
    /// The state of `ioas`, if its lock is held.
    pub(super) fn get(&mut self, ioas: &Ioas) -> Option<&mut IoasState> {
        self.guards
            .iter_mut()
            .find(|(id, _)| *id == ioas.id)
            .map(|(_, g)| &mut **g)
    }

    /// The states of `a` and of `b` (`None` for `b` when it is `a`), if both locks are held.
    pub(super) fn get_two(
        &mut self,
        a: &Ioas,
        b: &Ioas,
    ) -> Option<(&mut IoasState, Option<&mut IoasState>)> {
        let ia = self.guards.iter().position(|(id, _)| *id == a.id)?;
        let ib = self.guards.iter().position(|(id, _)| *id == b.id)?;
        if ia == ib {
            return Some((&mut *self.guards[ia].1, None));
        }
        let (lo, hi) = self.guards.split_at_mut(ia.max(ib));
        let (x, y) = (&mut *lo[ia.min(ib)].1, &mut *hi[0].1);
        Some(if ia < ib { (x, Some(y)) } else { (y, Some(x)) })
    }
}

/// Runs `step` with the IOAS locks it asks for held (none at first), in ID order, until it
/// is done. `step` takes the object table's lock itself, after them; when the objects it
/// finds need other IOASes than those held, it answers [`Locking::Relock`] (releasing the
/// table's lock) and runs again with those: the object graph changed in between, or this is
/// the first pass.
pub(super) fn with_ioas_locks<T>(
    mut step: impl FnMut(&mut Held<'_>) -> Result<Locking<T>>,
) -> Result<T> {
    let mut want: Vec<Arc<Ioas>> = Vec::new();
    loop {
        want.sort_by_key(|i| i.id);
        want.dedup_by_key(|i| i.id);
        let answer = {
            let mut held = Held {
                guards: want.iter().map(|i| (i.id, lock(&i.state))).collect(),
            };
            step(&mut held)?
        };
        match answer {
            Locking::Done(t) => return Ok(t),
            Locking::Relock(ioases) => want = ioases,
        }
    }
}
