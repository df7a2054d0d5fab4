//! The control plane: the object table and every call that changes it.
//!
//! # Locks
//!
//! Two kinds, always taken in this order (G10):
//!
//! 1. `ctl`, the object table: IDs, HWPT users, group membership. Taken by every call that
//!    looks up or changes objects; held for the whole of attach, replace, detach, destroy and
//!    `hwpt_alloc`, and only for the look-up in `ioas_map` and `ioas_unmap`.
//! 2. IOAS locks, at most two at once, in ID order. The page tables' writer mutexes nest
//!    inside their IOAS's lock.
//!
//! No lock is held while waiting for a grace period (the unmap and detach fences run after
//! every lock is released), and no lock is taken on the data plane.
//!
//! # Rollback (G8)
//!
//! Every call checks everything that can fail before it changes anything; the commit steps
//! after the checks cannot fail. So a failed call leaves every object as it was, with nothing
//! to undo.
//!
//! # Dropping references
//!
//! A call collects the `Arc`s it releases (old domains, freed HWPTs) in a local `Released`
//! list that is dropped after every lock is released, so a domain's teardown never runs
//! under a lock.

use crate::device::{Device, DeviceShared};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::group::GroupShared;
use crate::ioas::{check_range_args, DeviceLimits, Ioas, IoasState};
use crate::reclaim::Reclaim;
use crate::sync::{lock, Arc, AtomicBool, Mutex, MutexGuard, Ordering};
use crate::types::{DeviceInfo, GroupId, HwptFlags, ObjId, ObjKind, Prot, PAGE_SIZE};
use std::collections::HashMap;
use std::fmt;

/// The IOMMU context: owns the object table. `Clone` shares it.
#[derive(Clone)]
pub struct Iommu {
    shared: Arc<Shared>,
}

struct Shared {
    ctl: Mutex<Ctl>,
    reclaim: Arc<Reclaim>,
    blocked: Arc<Domain>,
}

/// Counts of live objects and of the memory behind them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// IOASes with a live ID.
    pub ioas: usize,
    /// HWPTs (user and auto) with a live ID.
    pub hwpts: usize,
    /// Bound devices with a live ID.
    pub devices: usize,
    /// Groups with at least one bound device.
    pub groups: usize,
    /// Paging domains whose memory is still allocated (a domain replaced away lives on until
    /// the last guard that saw it is dropped).
    pub live_domains: usize,
    /// Page-table nodes (roots included) allocated and not yet freed (retired nodes wait for
    /// a grace period).
    pub live_tables: usize,
}

#[derive(Default)]
struct Ctl {
    next_id: u32,
    objects: HashMap<ObjId, Obj>,
    groups: HashMap<GroupId, GroupCtl>,
}

enum Obj {
    Ioas(Arc<Ioas>),
    Hwpt(HwptObj),
    Device(DeviceObj),
}

impl Obj {
    fn kind(&self) -> ObjKind {
        match self {
            Obj::Ioas(_) => ObjKind::Ioas,
            Obj::Hwpt(_) => ObjKind::Hwpt,
            Obj::Device(_) => ObjKind::Device,
        }
    }
}

/// A paging HWPT: a domain tied to one IOAS.
struct HwptObj {
    ioas: Arc<Ioas>,
    domain: Arc<Domain>,
    /// Made by attaching a device to an IOAS; freed with its last device.
    auto: bool,
    /// Attached devices.
    users: usize,
}

struct DeviceObj {
    group: GroupId,
    iova_bits: u8,
    /// Page-rounded, inclusive.
    reserved: Vec<(u64, u64)>,
    shared: Arc<DeviceShared>,
    hwpt: Option<ObjId>,
}

impl DeviceObj {
    fn limits(&self, dev: ObjId) -> DeviceLimits {
        DeviceLimits {
            dev,
            aperture_last: self.shared.aperture_last,
            reserved: self.reserved.clone(),
        }
    }
}

struct GroupCtl {
    shared: Arc<GroupShared>,
    devices: Vec<ObjId>,
    /// The HWPT the group is attached to; `None`: the blocked domain.
    hwpt: Option<ObjId>,
}

/// What an attach or replace lands on.
enum Dest {
    /// An existing HWPT.
    Hwpt(ObjId),
    /// A new auto HWPT on this IOAS.
    NewAuto(Arc<Ioas>),
}

/// References released by a call, dropped after its locks.
#[derive(Default)]
struct Released {
    domains: Vec<Arc<Domain>>,
    ioases: Vec<Arc<Ioas>>,
}

impl Ctl {
    fn alloc_id(&mut self) -> ObjId {
        self.next_id += 1;
        ObjId(self.next_id)
    }

    fn get(&self, id: ObjId) -> Result<&Obj> {
        self.objects.get(&id).ok_or(Error::NoSuchObject { id })
    }

    fn ioas(&self, id: ObjId) -> Result<&Arc<Ioas>> {
        match self.get(id)? {
            Obj::Ioas(i) => Ok(i),
            other => Err(wrong_type(id, ObjKind::Ioas, other)),
        }
    }

    fn hwpt(&self, id: ObjId) -> &HwptObj {
        match self.objects.get(&id) {
            Some(Obj::Hwpt(h)) => h,
            _ => unreachable!("HWPT {id} referenced by a device or group is alive"),
        }
    }

    fn hwpt_mut(&mut self, id: ObjId) -> &mut HwptObj {
        match self.objects.get_mut(&id) {
            Some(Obj::Hwpt(h)) => h,
            _ => unreachable!("HWPT {id} referenced by a device or group is alive"),
        }
    }

    fn device(&self, id: ObjId) -> Result<&DeviceObj> {
        match self.get(id)? {
            Obj::Device(d) => Ok(d),
            other => Err(wrong_type(id, ObjKind::Device, other)),
        }
    }

    fn device_mut(&mut self, id: ObjId) -> &mut DeviceObj {
        match self.objects.get_mut(&id) {
            Some(Obj::Device(d)) => d,
            _ => unreachable!("device {id} was just looked up"),
        }
    }

    /// The oldest auto HWPT of `ioas` whose domain reaches at least `aperture_last`: a
    /// compatible one. A narrower auto domain is not reused for a wider device, whose maps it
    /// would otherwise limit (and keep limiting after the narrow device left).
    fn auto_hwpt_of(&self, ioas: ObjId, aperture_last: u64) -> Option<ObjId> {
        let mut found: Option<ObjId> = None;
        for (&id, o) in &self.objects {
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
    fn dest(&self, pt: ObjId, aperture_last: u64) -> Result<Dest> {
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
    /// IOAS's mirror list (the caller holds that IOAS's lock as `st`).
    fn free_auto_hwpt(&mut self, id: ObjId, st: &mut IoasState, released: &mut Released) {
        if let Some(Obj::Hwpt(h)) = self.objects.remove(&id) {
            debug_assert!(h.auto && h.users == 0);
            st.domains.retain(|(d, _)| *d != id);
            released.domains.push(h.domain);
            released.ioases.push(h.ioas);
        }
    }
}

fn wrong_type(id: ObjId, expected: ObjKind, found: &Obj) -> Error {
    Error::WrongType {
        id,
        expected,
        found: found.kind(),
    }
}

/// Locks one or two IOASes in ID order. Returns (first's state, second's state if distinct).
fn lock_two<'a>(
    a: &'a Ioas,
    b: &'a Ioas,
) -> (MutexGuard<'a, IoasState>, Option<MutexGuard<'a, IoasState>>) {
    if a.id == b.id {
        (lock(&a.state), None)
    } else if a.id < b.id {
        let ga = lock(&a.state);
        let gb = lock(&b.state);
        (ga, Some(gb))
    } else {
        let gb = lock(&b.state);
        let ga = lock(&a.state);
        (ga, Some(gb))
    }
}

impl Default for Iommu {
    fn default() -> Self {
        Iommu::new()
    }
}

impl Iommu {
    /// A new, empty IOMMU context.
    pub fn new() -> Iommu {
        Iommu {
            shared: Arc::new(Shared {
                ctl: Mutex::new(Ctl::default()),
                reclaim: Arc::new(Reclaim::new()),
                blocked: Arc::new(Domain::blocked()),
            }),
        }
    }

    fn ctl(&self) -> MutexGuard<'_, Ctl> {
        lock(&self.shared.ctl)
    }

    fn check_not_pinned(&self, call: &'static str) -> Result<()> {
        if self.shared.reclaim.is_pinned() {
            Err(Error::Deadlock { call })
        } else {
            Ok(())
        }
    }

    /// Makes a HWPT on `ioas` (locked as `st`): a new domain for `iova_bits`, populated with
    /// every area before it joins the IOAS's mirror list (G7), and its ID.
    fn add_hwpt(
        &self,
        ctl: &mut Ctl,
        st: &mut IoasState,
        ioas: Arc<Ioas>,
        iova_bits: u8,
        auto: bool,
    ) -> ObjId {
        let empty = Domain::paging(iova_bits, &self.shared.reclaim.counters);
        let domain = Arc::new(st.build_domain(iova_bits, empty));
        let id = ctl.alloc_id();
        st.domains.push((id, domain.clone()));
        ctl.objects.insert(
            id,
            Obj::Hwpt(HwptObj {
                ioas,
                domain,
                auto,
                users: 0,
            }),
        );
        id
    }

    /// Binds a device into `group` (created on first use). The device starts detached: its
    /// translations fault `Blocked` until it is attached.
    ///
    /// `EINVAL` if `info.iova_bits` is outside 13 ..= 64 or a reserved range is empty.
    pub fn device_bind(&self, group: GroupId, info: DeviceInfo) -> Result<(ObjId, Device)> {
        if !(13..=64).contains(&info.iova_bits) {
            return Err(Error::InvalidArgument(
                "DeviceInfo::iova_bits must be in 13..=64",
            ));
        }
        let mut reserved = Vec::with_capacity(info.reserved.len());
        for r in &info.reserved {
            if r.start >= r.end {
                return Err(Error::InvalidArgument("a reserved range is empty"));
            }
            reserved.push((r.start & !(PAGE_SIZE - 1), (r.end - 1) | (PAGE_SIZE - 1)));
        }
        let aperture_last = if info.iova_bits == 64 {
            u64::MAX
        } else {
            (1u64 << info.iova_bits) - 1
        };
        let mut ctl = self.ctl();
        let id = ctl.alloc_id();
        let blocked = &self.shared.blocked;
        let g = ctl.groups.entry(group).or_insert_with(|| GroupCtl {
            shared: Arc::new(GroupShared::new(group, blocked.clone())),
            devices: Vec::new(),
            hwpt: None,
        });
        g.devices.push(id);
        let shared = Arc::new(DeviceShared {
            id,
            reclaim: self.shared.reclaim.clone(),
            group: g.shared.clone(),
            attached: AtomicBool::new(false),
            aperture_last,
        });
        let device = Device {
            inner: shared.clone(),
        };
        ctl.objects.insert(
            id,
            Obj::Device(DeviceObj {
                group,
                iova_bits: info.iova_bits,
                reserved,
                shared,
                hwpt: None,
            }),
        );
        Ok((id, device))
    }

    /// Allocates an empty IOAS.
    pub fn ioas_alloc(&self) -> Result<ObjId> {
        let mut ctl = self.ctl();
        let id = ctl.alloc_id();
        ctl.objects.insert(id, Obj::Ioas(Arc::new(Ioas::new(id))));
        Ok(id)
    }

    /// Maps `len` bytes at `target` into `ioas`, at `iova` or (with `None`) at a free IOVA
    /// aligned for huge leaves; returns the IOVA. Every domain of the IOAS holds the mapping
    /// when this returns.
    pub fn ioas_map(
        &self,
        ioas: ObjId,
        iova: Option<u64>,
        target: u64,
        len: u64,
        prot: Prot,
    ) -> Result<u64> {
        let ioas = self.ctl().ioas(ioas)?.clone();
        check_range_args("map", iova.unwrap_or(0), Some(target), len)?;
        if prot.bits() == 0 {
            return Err(Error::InvalidArgument(
                "a mapping needs READ, WRITE or both",
            ));
        }
        let mut st = lock(&ioas.state);
        if st.destroyed {
            return Err(Error::NoSuchObject { id: ioas.id });
        }
        st.map(iova, target, len, prot)
    }

    /// Unmaps every area inside `iova .. iova + len` (whole areas only; `(0, u64::MAX)`
    /// unmaps everything) and returns the bytes unmapped. When it returns, no DMA guard that
    /// could have translated into the range is alive (G5).
    pub fn ioas_unmap(&self, ioas: ObjId, iova: u64, len: u64) -> Result<u64> {
        self.check_not_pinned("ioas_unmap")?;
        let ioas = self.ctl().ioas(ioas)?.clone();
        let bytes = {
            let mut st = lock(&ioas.state);
            if st.destroyed {
                return Err(Error::NoSuchObject { id: ioas.id });
            }
            let pin = self.shared.reclaim.pin();
            let bytes = st.unmap(iova, len, &pin)?;
            pin.flush();
            bytes
        };
        if bytes > 0 {
            self.shared.reclaim.synchronize();
        }
        Ok(bytes)
    }

    /// Allocates a user paging HWPT on the IOAS `pt`, shaped for `dev` (its aperture); it is
    /// filled with every mapping of the IOAS before this returns.
    ///
    /// A HWPT as `pt` (a nested stage-1 on a parent) is `EOPNOTSUPP` in this version.
    pub fn hwpt_alloc(&self, dev: ObjId, pt: ObjId, flags: HwptFlags) -> Result<ObjId> {
        if flags.unknown_bits() != 0 {
            return Err(Error::Unsupported("unknown HWPT flag bits"));
        }
        let mut ctl = self.ctl();
        let d = ctl.device(dev)?;
        let (bits, limits) = (d.iova_bits, d.limits(dev));
        let ioas = match ctl.get(pt)? {
            Obj::Ioas(i) => i.clone(),
            Obj::Hwpt(_) => {
                return Err(Error::Unsupported(
                    "nested HWPTs (a HWPT as parent) are not supported yet",
                ))
            }
            other => return Err(wrong_type(pt, ObjKind::Ioas, other)),
        };
        let mut st = lock(&ioas.state);
        st.check_fits(&limits, pt)?;
        Ok(self.add_hwpt(&mut ctl, &mut st, ioas.clone(), bits, false))
    }

    /// Attaches a detached device to `pt`: a HWPT, or an IOAS (the group's auto HWPT on it,
    /// an existing auto HWPT of that IOAS, or a new one). Returns the HWPT id.
    ///
    /// If the device's group is already attached, the device joins the group's HWPT;
    /// asking for another one is `EINVAL` (move the group with [`Iommu::device_replace`]).
    pub fn device_attach(&self, dev: ObjId, pt: ObjId) -> Result<ObjId> {
        let mut released = Released::default();
        let result = self.attach_locked(dev, pt, &mut released);
        drop(released);
        result
    }

    fn attach_locked(&self, dev: ObjId, pt: ObjId, released: &mut Released) -> Result<ObjId> {
        let mut guard = self.ctl();
        let ctl = &mut *guard;
        let d = ctl.device(dev)?;
        if let Some(hwpt) = d.hwpt {
            return Err(Error::AlreadyAttached { dev, hwpt });
        }
        let (gid, bits, limits) = (d.group, d.iova_bits, d.limits(dev));
        let group_hwpt = ctl.groups[&gid].hwpt;
        let dest = match (ctl.get(pt)?, group_hwpt) {
            // A device joins its group's auto HWPT on that IOAS, whatever its shape.
            (Obj::Ioas(i), Some(g)) if ctl.hwpt(g).auto && ctl.hwpt(g).ioas.id == i.id => {
                Dest::Hwpt(g)
            }
            _ => ctl.dest(pt, limits.aperture_last)?,
        };
        // A device joins its group's HWPT; anything else is a replace's job.
        if let Some(current) = group_hwpt {
            let joins = match &dest {
                Dest::Hwpt(h) => *h == current,
                Dest::NewAuto(_) => false,
            };
            if !joins {
                return Err(Error::GroupOnOtherHwpt {
                    group: gid,
                    current,
                    requested: pt,
                });
            }
        }
        let ioas = match &dest {
            Dest::Hwpt(h) => ctl.hwpt(*h).ioas.clone(),
            Dest::NewAuto(i) => i.clone(),
        };
        let mut st = lock(&ioas.state);
        st.check_fits(&d.limits(dev), pt)?;
        st.check_reserved(&d.limits(dev))?;
        // Commit: nothing below can fail.
        let hwpt = match dest {
            Dest::Hwpt(h) => h,
            Dest::NewAuto(i) => self.add_hwpt(ctl, &mut st, i, bits, true),
        };
        st.add_device(&limits);
        drop(st);
        let h = ctl.hwpt_mut(hwpt);
        h.users += 1;
        let domain = h.domain.clone();
        let g = ctl
            .groups
            .get_mut(&gid)
            .expect("a bound device's group exists");
        if g.hwpt.is_none() {
            let pin = self.shared.reclaim.pin();
            released.domains.push(g.shared.active.swap(domain, &pin));
            g.hwpt = Some(hwpt);
        }
        let d = ctl.device_mut(dev);
        d.hwpt = Some(hwpt);
        // ORDERING: Release pairs with the Acquire load in `Device::pin`: the group's domain
        // (published above) is visible to a reader that sees the device attached.
        d.shared.attached.store(true, Ordering::Release);
        Ok(hwpt)
    }

    /// Moves an attached device's whole group to `pt` (a HWPT, or an IOAS for its auto
    /// HWPT) in one atomic publish; DMA never sees a blocked or half-built domain (G2, G3),
    /// from any domain to any other (G4). Replacing to the current HWPT is a no-op. Returns
    /// the new HWPT id.
    pub fn device_replace(&self, dev: ObjId, pt: ObjId) -> Result<ObjId> {
        let mut released = Released::default();
        let result = self.replace_locked(dev, pt, &mut released);
        // The old HWPT's reference goes only now, with every lock released.
        drop(released);
        result
    }

    fn replace_locked(&self, dev: ObjId, pt: ObjId, released: &mut Released) -> Result<ObjId> {
        let mut guard = self.ctl();
        let ctl = &mut *guard;
        let d = ctl.device(dev)?;
        let Some(old) = d.hwpt else {
            return Err(Error::NotAttached { dev });
        };
        let gid = d.group;
        let members: Vec<DeviceLimits> = ctl.groups[&gid]
            .devices
            .iter()
            .filter_map(|&m| match ctl.device(m) {
                Ok(md) if md.hwpt == Some(old) => Some(md.limits(m)),
                _ => None,
            })
            .collect();
        let widest = members.iter().map(|m| m.aperture_last).max().unwrap_or(0);
        // A new auto domain is shaped for the group's widest attached device.
        let bits = widest.checked_add(1).map_or(64, u64::trailing_zeros) as u8;
        let dest = match ctl.get(pt)? {
            Obj::Ioas(i) if ctl.hwpt(old).auto && ctl.hwpt(old).ioas.id == i.id => Dest::Hwpt(old),
            _ => ctl.dest(pt, widest)?,
        };
        if let Dest::Hwpt(h) = dest {
            if h == old {
                return Ok(old);
            }
        }
        let old_ioas = ctl.hwpt(old).ioas.clone();
        let new_ioas = match &dest {
            Dest::Hwpt(h) => ctl.hwpt(*h).ioas.clone(),
            Dest::NewAuto(i) => i.clone(),
        };
        let same_ioas = old_ioas.id == new_ioas.id;
        let (mut st_new, mut st_old) = lock_two(&new_ioas, &old_ioas);
        if !same_ioas {
            // The group's devices must fit the new IOAS, and their reserved ranges must be
            // free there (they are enforced before the publish, G7).
            for m in &members {
                st_new.check_fits(m, pt)?;
                st_new.check_reserved(m)?;
            }
        }
        // Commit: nothing below can fail.
        let new = match dest {
            Dest::Hwpt(h) => h,
            Dest::NewAuto(i) => self.add_hwpt(ctl, &mut st_new, i, bits, true),
        };
        if !same_ioas {
            for m in &members {
                st_new.add_device(m);
            }
        }
        let domain = ctl.hwpt(new).domain.clone();
        {
            let pin = self.shared.reclaim.pin();
            let g = ctl
                .groups
                .get_mut(&gid)
                .expect("a bound device's group exists");
            // The publish: one store switches every device of the group (G3).
            released.domains.push(g.shared.active.swap(domain, &pin));
            g.hwpt = Some(new);
        }
        // Reserved ranges leave the old IOAS only after the switch (G7).
        if let Some(st_old) = st_old.as_mut() {
            for m in &members {
                st_old.remove_device(m.dev);
            }
        }
        for m in &members {
            ctl.device_mut(m.dev).hwpt = Some(new);
        }
        let n = members.len();
        ctl.hwpt_mut(new).users += n;
        let o = ctl.hwpt_mut(old);
        o.users -= n;
        if o.auto && o.users == 0 {
            let st = st_old.as_deref_mut().unwrap_or(&mut st_new);
            ctl.free_auto_hwpt(old, st, released);
        }
        Ok(new)
    }

    /// Detaches a device. Its translations fault `Blocked` from now on; when it was the last
    /// attached device of its group, the group moves to the blocked domain (the other devices
    /// keep translating otherwise). When this returns, no guard of the device made before the
    /// call is alive (G6).
    pub fn device_detach(&self, dev: ObjId) -> Result<()> {
        self.check_not_pinned("device_detach")?;
        let mut released = Released::default();
        self.detach_locked(dev, &mut released)?;
        drop(released);
        self.shared.reclaim.synchronize();
        Ok(())
    }

    fn detach_locked(&self, dev: ObjId, released: &mut Released) -> Result<()> {
        let mut guard = self.ctl();
        let ctl = &mut *guard;
        let d = ctl.device(dev)?;
        let Some(hwpt) = d.hwpt else {
            return Err(Error::NotAttached { dev });
        };
        let gid = d.group;
        let ioas = ctl.hwpt(hwpt).ioas.clone();
        let mut st = lock(&ioas.state);
        let d = ctl.device_mut(dev);
        // ORDERING: Release pairs with the Acquire load in `Device::pin`; the grace period
        // that `device_detach` waits for after this call makes every later guard see it.
        d.shared.attached.store(false, Ordering::Release);
        d.hwpt = None;
        st.remove_device(dev);
        let still_attached = ctl.groups[&gid]
            .devices
            .iter()
            .any(|m| ctl.device(*m).is_ok_and(|md| md.hwpt.is_some()));
        if !still_attached {
            let pin = self.shared.reclaim.pin();
            let g = ctl
                .groups
                .get_mut(&gid)
                .expect("a bound device's group exists");
            released
                .domains
                .push(g.shared.active.swap(self.shared.blocked.clone(), &pin));
            g.hwpt = None;
        }
        let h = ctl.hwpt_mut(hwpt);
        h.users -= 1;
        if h.auto && h.users == 0 {
            ctl.free_auto_hwpt(hwpt, &mut st, released);
        }
        Ok(())
    }

    /// Destroys an IOAS, a user HWPT or a detached device. `EBUSY` while the object is in use
    /// (an IOAS with HWPTs, a HWPT with devices, an attached device) and for auto HWPTs.
    pub fn destroy(&self, id: ObjId) -> Result<()> {
        let mut released = Released::default();
        {
            let mut guard = self.ctl();
            let ctl = &mut *guard;
            match ctl.get(id)?.kind() {
                ObjKind::Ioas => {
                    let ioas = ctl.ioas(id)?.clone();
                    let mut st = lock(&ioas.state);
                    if !st.domains.is_empty() {
                        return Err(Error::Busy {
                            id,
                            kind: ObjKind::Ioas,
                            users: st.domains.len(),
                        });
                    }
                    st.destroyed = true;
                    drop(st);
                    ctl.objects.remove(&id);
                    released.ioases.push(ioas);
                }
                ObjKind::Hwpt => {
                    let h = ctl.hwpt(id);
                    if h.auto {
                        return Err(Error::AutoHwpt { id });
                    }
                    if h.users > 0 {
                        return Err(Error::Busy {
                            id,
                            kind: ObjKind::Hwpt,
                            users: h.users,
                        });
                    }
                    let ioas = h.ioas.clone();
                    lock(&ioas.state).domains.retain(|(d, _)| *d != id);
                    if let Some(Obj::Hwpt(h)) = ctl.objects.remove(&id) {
                        released.domains.push(h.domain);
                        released.ioases.push(h.ioas);
                    }
                }
                ObjKind::Device => {
                    let d = ctl.device(id)?;
                    if d.hwpt.is_some() {
                        return Err(Error::Busy {
                            id,
                            kind: ObjKind::Device,
                            users: 1,
                        });
                    }
                    let gid = d.group;
                    ctl.objects.remove(&id);
                    let g = ctl
                        .groups
                        .get_mut(&gid)
                        .expect("a bound device's group exists");
                    g.devices.retain(|m| *m != id);
                    if g.devices.is_empty() {
                        ctl.groups.remove(&gid);
                    }
                }
            }
        }
        drop(released);
        Ok(())
    }

    /// Waits until every `DmaGuard` of this `Iommu` alive at the call has been dropped, then
    /// frees what was retired before the call (G9). `EDEADLK` from a thread holding a guard.
    pub fn synchronize(&self) -> Result<()> {
        self.check_not_pinned("synchronize")?;
        self.shared.reclaim.synchronize_and_drain();
        Ok(())
    }

    /// Live objects and memory, for accounting and leak checks.
    pub fn stats(&self) -> Stats {
        let ctl = self.ctl();
        let mut s = Stats {
            groups: ctl.groups.len(),
            ..Stats::default()
        };
        for o in ctl.objects.values() {
            match o {
                Obj::Ioas(_) => s.ioas += 1,
                Obj::Hwpt(_) => s.hwpts += 1,
                Obj::Device(_) => s.devices += 1,
            }
        }
        let c = &self.shared.reclaim.counters;
        s.live_domains = c.domains.load(Ordering::Relaxed);
        s.live_tables = c.tables.load(Ordering::Relaxed);
        s
    }
}

impl fmt::Debug for Iommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iommu")
            .field("stats", &self.stats())
            .finish()
    }
}
