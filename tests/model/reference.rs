//! The reference model: plain `BTreeMap`s of IOASes, HWPTs and devices beside the real
//! [`Iommu`], and the lookups the operations need.

use crate::common::{bind, PAGE};
use crate::stage1::{write_cd, Fmt, Guest, S1Table};
use crate::strategies::*;
use crate::{
    device_infos, fail, Check, GUEST_RAM, TABLES_IPA, TABLES_SIZE, TABLES_TARGET, TWO_POW_64,
};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use viommu::{Chunk, Device, Error, FaultKind, Iommu, ObjId, Prot};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Area {
    pub(crate) len: u64,
    pub(crate) target: u64,
    pub(crate) prot: Prot,
}

#[derive(Default)]
pub(crate) struct IoasM {
    /// iova -> area; areas never overlap.
    pub(crate) areas: BTreeMap<u64, Area>,
}

pub(crate) struct HwptM {
    /// Its IOAS (a nested HWPT's: its parent's).
    pub(crate) ioas: ObjId,
    pub(crate) auto: bool,
    /// Aperture end of the device the HWPT was made for (see the module docs); 2^64 for a
    /// nested HWPT (it has no page table of its own).
    pub(crate) made_for: u128,
    /// Allocated with `HwptFlags::NEST_PARENT`.
    pub(crate) nest_parent: bool,
    /// Live nested HWPTs above it.
    pub(crate) children: usize,
    pub(crate) nested: Option<NestedM>,
}

/// A stage-1 value of an IOVA page: (IPA page, writable), or unmapped.
pub(crate) type S1Value = Option<(u64, bool)>;

pub(crate) struct NestedM {
    pub(crate) parent: ObjId,
    pub(crate) kind: NestKind,
    /// (table, IOVA page) → the values the guest replaced since this HWPT's last
    /// invalidation: the IOTLB may still serve any of them (SPEC "Coherence").
    pub(crate) stale: BTreeMap<(usize, u64), Vec<S1Value>>,
}

impl NestKind {
    /// The guest tables the HWPT's stage 1 walks.
    pub(crate) fn tables(self) -> &'static [usize] {
        match self {
            NestKind::SmmuOne => &[0],
            NestKind::SmmuFour { .. } => &[0, 1],
            NestKind::Vtd => &[2],
            NestKind::Invalid(_) => &[],
        }
    }
}

pub(crate) struct DevM {
    pub(crate) id: ObjId,
    pub(crate) handle: Device,
    pub(crate) group: usize,
    /// Aperture end (exclusive).
    pub(crate) aperture: u128,
    /// Reserved ranges, widened to whole pages.
    pub(crate) reserved: Vec<(u128, u128)>,
    pub(crate) attached: bool,
    pub(crate) pasid_bits: u8,
    /// PASIDs this device has attached.
    pub(crate) pasids: BTreeSet<u32>,
}

impl DevM {
    pub(crate) fn pasid_valid(&self, pasid: u32) -> bool {
        pasid != 0 && u64::from(pasid) < 1u64 << self.pasid_bits
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Ioas,
    Hwpt,
    Device,
    Dead,
}

/// What a translation may return: these chunks, or a fault of one of these kinds; or, when
/// `pages` is set (nested domains), what each page of the request may give.
pub(crate) struct Expect {
    pub(crate) ok: Option<Vec<Chunk>>,
    pub(crate) faults: Vec<FaultKind>,
    pub(crate) pages: Option<Vec<Vec<PageOutcome>>>,
}

/// What one page of a request may translate to: a target page, or a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageOutcome {
    Ok(u64),
    Fault(FaultKind),
}

/// What the last call of an operation returned (for the fixed-sequence test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Errno(i32),
    Fault(FaultKind),
}

pub(crate) struct Model {
    pub(crate) iommu: Iommu,
    pub(crate) last: Cell<Option<Outcome>>,
    pub(crate) ioas: BTreeMap<ObjId, IoasM>,
    pub(crate) hwpt: BTreeMap<ObjId, HwptM>,
    pub(crate) devs: Vec<DevM>,
    /// The HWPT of each group, while any of its devices is attached.
    pub(crate) group_hwpt: Vec<Option<ObjId>>,
    /// Every IOAS / HWPT id ever returned, in order (live or dead), for picking.
    pub(crate) ioas_seen: Vec<ObjId>,
    pub(crate) hwpt_seen: Vec<ObjId>,
    pub(crate) dead: BTreeSet<ObjId>,
    /// The HWPT of each (group, PASID), while any device of the group has the PASID attached.
    pub(crate) group_pasid: BTreeMap<(usize, u32), ObjId>,
    /// The guest: its table memory, three stage-1 tables (0 and 1 AArch64, 2 VT-d, each with
    /// its reference) and two SMMUv3 CD tables (one CD; four CDs).
    pub(crate) guest: Guest,
    pub(crate) s1: Vec<S1Table>,
    pub(crate) cd_one: u64,
    pub(crate) cd_four: u64,
}

/// Where a translation at (device, PASID) goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    Blocked,
    Paging(ObjId),
    /// A nested HWPT, with the substream (`None`: untagged).
    Nested(ObjId, Option<u32>),
}

pub(crate) fn end_of(iova: u64, area: &Area) -> u128 {
    u128::from(iova) + u128::from(area.len)
}

/// Areas that intersect `[start, end)`.
pub(crate) fn areas_in(areas: &BTreeMap<u64, Area>, start: u128, end: u128) -> Vec<(u64, Area)> {
    areas
        .iter()
        .filter(|(&a, ar)| u128::from(a) < end && end_of(a, ar) > start)
        .map(|(&a, ar)| (a, *ar))
        .collect()
}

pub(crate) fn max_area_end(areas: &BTreeMap<u64, Area>) -> u128 {
    areas
        .iter()
        .map(|(&a, ar)| end_of(a, ar))
        .max()
        .unwrap_or(0)
}

pub(crate) fn reserved_collides(dev: &DevM, areas: &BTreeMap<u64, Area>) -> bool {
    dev.reserved
        .iter()
        .any(|&(s, e)| !areas_in(areas, s, e).is_empty())
}

pub(crate) fn check_errno(e: &Error, errs: &[i32], ok: bool, ctx: &str) -> Check {
    if errs.contains(&e.errno()) {
        Ok(())
    } else {
        fail(format!(
            "{ctx}: got {e:?} (errno {}), model expects {} errno in {errs:?}",
            e.errno(),
            if ok { "Ok or an" } else { "an" }
        ))
    }
}

impl Model {
    pub(crate) fn new() -> Model {
        let iommu = Iommu::new();
        let mut devs = Vec::new();
        for (group, info) in device_infos() {
            let aperture = 1u128 << info.iova_bits;
            let reserved = info
                .reserved
                .iter()
                .map(|r| {
                    (
                        u128::from(r.start / PAGE * PAGE),
                        u128::from(r.end.div_ceil(PAGE) * PAGE),
                    )
                })
                .collect();
            let pasid_bits = info.pasid_bits;
            let (id, handle) = bind(&iommu, group, info);
            devs.push(DevM {
                id,
                handle,
                group: (group - 10) as usize,
                aperture,
                reserved,
                attached: false,
                pasid_bits,
                pasids: BTreeSet::new(),
            });
        }
        let first = iommu.ioas_alloc().expect("ioas_alloc");
        let second = iommu.ioas_alloc().expect("ioas_alloc");
        assert_ne!(first, second);
        let mut ioas = BTreeMap::new();
        ioas.insert(first, IoasM::default());
        ioas.insert(second, IoasM::default());
        let (guest, s1, cd_one, cd_four) = guest_setup();
        Model {
            iommu,
            last: Cell::new(None),
            ioas,
            hwpt: BTreeMap::new(),
            devs,
            group_hwpt: vec![None, None],
            ioas_seen: vec![first, second],
            hwpt_seen: Vec::new(),
            dead: BTreeSet::new(),
            group_pasid: BTreeMap::new(),
            guest,
            s1,
            cd_one,
            cd_four,
        }
    }

    /// Records the outcome of a control call.
    pub(crate) fn note<T>(&self, r: viommu::Result<T>) -> viommu::Result<T> {
        self.last.set(Some(match &r {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Errno(e.errno()),
        }));
        r
    }

    // --- lookups ---------------------------------------------------------------------------

    pub(crate) fn kind(&self, id: ObjId) -> Option<Kind> {
        if self.ioas.contains_key(&id) {
            Some(Kind::Ioas)
        } else if self.hwpt.contains_key(&id) {
            Some(Kind::Hwpt)
        } else if self.devs.iter().any(|d| d.id == id) {
            Some(Kind::Device)
        } else if self.dead.contains(&id) {
            Some(Kind::Dead)
        } else {
            None
        }
    }

    pub(crate) fn require_fresh(&self, id: ObjId, ctx: &str) -> Check {
        match self.kind(id) {
            None => Ok(()),
            Some(k) => fail(format!(
                "{ctx}: returned id {id:?} is not new (model knows it as {k:?}; ids are never reused)"
            )),
        }
    }

    /// Indices below 3 pick a live IOAS, 3 a destroyed one (when there is one).
    /// The `dev` argument of an allocating call: a device (its ID and index) or, for the
    /// wrong-type cases, a live IOAS (`None` when there is none to pick).
    pub(crate) fn pick_alloc_dev(&self, dev: AllocDev) -> Option<(ObjId, Option<usize>)> {
        match dev {
            AllocDev::Device(i) => {
                let i = i % self.devs.len();
                Some((self.devs[i].id, Some(i)))
            }
            AllocDev::Ioas(i) => self.pick_ioas(i).map(|id| (id, None)),
        }
    }

    pub(crate) fn pick_ioas(&self, i: usize) -> Option<ObjId> {
        self.pick(self.ioas.keys().copied().collect(), &self.ioas_seen, i, 3)
    }

    /// Indices below 6 pick a live HWPT, others a freed or destroyed one (when there is one).
    pub(crate) fn pick_hwpt(&self, i: usize) -> Option<ObjId> {
        self.pick(self.hwpt.keys().copied().collect(), &self.hwpt_seen, i, 6)
    }

    /// Indices below `live_below` pick one of `live`, others one of the dead ids in `seen`
    /// (falling back to the other kind when one list is empty).
    fn pick(&self, live: Vec<ObjId>, seen: &[ObjId], i: usize, live_below: usize) -> Option<ObjId> {
        let dead: Vec<ObjId> = seen
            .iter()
            .copied()
            .filter(|id| self.dead.contains(id))
            .collect();
        if (i >= live_below || live.is_empty()) && !dead.is_empty() {
            Some(dead[i % dead.len()])
        } else if !live.is_empty() {
            Some(live[i % live.len()])
        } else {
            None
        }
    }

    /// Indices 0..4 name a device; larger ones pick one that is (for `attached`) or is not
    /// attached, when there is one, so that most calls do more than fail.
    pub(crate) fn pick_dev(&self, i: usize, attached: bool) -> usize {
        let n = self.devs.len();
        if i < n {
            return i;
        }
        let fits: Vec<usize> = (0..n)
            .filter(|&d| self.devs[d].attached == attached)
            .collect();
        if fits.is_empty() {
            i % n
        } else {
            fits[i % fits.len()]
        }
    }

    pub(crate) fn resolve_pt(&self, pt: Pt) -> Option<ObjId> {
        match pt {
            Pt::Ioas(i) => self.pick_ioas(i),
            Pt::Hwpt(i) => self.pick_hwpt(i).or_else(|| self.pick_ioas(i)),
            Pt::Nested(i) => self
                .pick_among(self.nested_hwpts(), i)
                .or_else(|| self.pick_hwpt(i))
                .or_else(|| self.pick_ioas(i)),
            Pt::Device(i) => Some(self.devs[i % self.devs.len()].id),
        }
    }

    pub(crate) fn pick_among(&self, ids: Vec<ObjId>, i: usize) -> Option<ObjId> {
        (!ids.is_empty()).then(|| ids[i % ids.len()])
    }

    /// Indices 0..4 name a device and take `pasid` as given; larger ones pick one of the
    /// attached (device, PASID) pairs when there is one (so that most replace, detach and
    /// translate calls at a PASID find something there), else a device with PASIDs.
    pub(crate) fn pick_attached_pasid(&self, i: usize, pasid: u32) -> (usize, u32) {
        if i >= self.devs.len() {
            let pairs: Vec<(usize, u32)> = (0..self.devs.len())
                .flat_map(|d| self.devs[d].pasids.iter().map(move |&p| (d, p)))
                .collect();
            if !pairs.is_empty() {
                return pairs[(i + pasid as usize) % pairs.len()];
            }
        }
        (self.pick_pasid_dev(i), pasid)
    }

    /// Indices 0..4 name a device; larger ones pick one with PASIDs (devices 0, 1 and 3).
    pub(crate) fn pick_pasid_dev(&self, i: usize) -> usize {
        let n = self.devs.len();
        if i < n {
            return i;
        }
        let fits: Vec<usize> = (0..n).filter(|&d| self.devs[d].pasid_bits > 0).collect();
        fits[i % fits.len()]
    }

    pub(crate) fn dev_hwpt(&self, d: usize) -> Option<ObjId> {
        let dev = &self.devs[d];
        if dev.attached {
            self.group_hwpt[dev.group]
        } else {
            None
        }
    }

    pub(crate) fn dev_ioas(&self, d: usize) -> Option<ObjId> {
        self.dev_hwpt(d).map(|h| self.hwpt[&h].ioas)
    }

    /// The IOASes device `d` is attached to, at its RID or at any PASID (a nested HWPT's is
    /// its parent's).
    pub(crate) fn dev_ioases(&self, d: usize) -> Vec<ObjId> {
        let dev = &self.devs[d];
        let mut v: Vec<ObjId> = self.dev_ioas(d).into_iter().collect();
        for p in &dev.pasids {
            v.push(self.hwpt[&self.group_pasid[&(dev.group, *p)]].ioas);
        }
        v
    }

    /// Devices attached (through any HWPT, at the RID or at a PASID) to `ioas`.
    pub(crate) fn attached_to(&self, ioas: ObjId) -> Vec<usize> {
        (0..self.devs.len())
            .filter(|&d| self.dev_ioases(d).contains(&ioas))
            .collect()
    }

    /// Where a translation of device `d` at `pasid` (0: the RID) goes (SPEC "PASID").
    pub(crate) fn route(&self, d: usize, pasid: u32) -> Route {
        let dev = &self.devs[d];
        let through = |h: ObjId, ssid: Option<u32>| {
            if self.hwpt[&h].nested.is_some() {
                Route::Nested(h, ssid)
            } else {
                Route::Paging(h)
            }
        };
        if pasid == 0 {
            return match self.dev_hwpt(d) {
                Some(h) => through(h, None),
                None => Route::Blocked,
            };
        }
        if !dev.pasid_valid(pasid) {
            return Route::Blocked;
        }
        if dev.pasids.contains(&pasid) {
            return through(self.group_pasid[&(dev.group, pasid)], Some(pasid));
        }
        // The RID's SMMUv3 CD table serves PASIDs the device has not attached.
        match self.dev_hwpt(d) {
            Some(h) => match &self.hwpt[&h].nested {
                Some(n) if matches!(n.kind, NestKind::SmmuOne | NestKind::SmmuFour { .. }) => {
                    Route::Nested(h, Some(pasid))
                }
                _ => Route::Blocked,
            },
            None => Route::Blocked,
        }
    }

    pub(crate) fn device_limit(&self, ioas: ObjId) -> u128 {
        self.attached_to(ioas)
            .into_iter()
            .map(|d| self.devs[d].aperture)
            .min()
            .unwrap_or(TWO_POW_64)
    }

    pub(crate) fn domain_limit(&self, ioas: ObjId) -> u128 {
        self.hwpt
            .values()
            .filter(|h| h.ioas == ioas)
            .map(|h| h.made_for)
            .min()
            .unwrap_or(TWO_POW_64)
    }

    pub(crate) fn reserved_of(&self, ioas: ObjId) -> Vec<(u128, u128)> {
        self.attached_to(ioas)
            .into_iter()
            .flat_map(|d| self.devs[d].reserved.iter().copied())
            .collect()
    }

    /// Attachments of HWPT `h`: groups whose RID is on it, (group, PASID)s on it.
    pub(crate) fn users(&self, h: ObjId) -> usize {
        self.group_hwpt.iter().filter(|g| **g == Some(h)).count()
            + self.group_pasid.values().filter(|g| **g == h).count()
    }

    /// True if `[0, limit)` holds a free hole of `len` bytes aligned to `align`.
    pub(crate) fn hole_exists(&self, ioas: ObjId, len: u64, align: u128, limit: u128) -> bool {
        let mut used: Vec<(u128, u128)> = self.ioas[&ioas]
            .areas
            .iter()
            .map(|(&a, ar)| (u128::from(a), end_of(a, ar)))
            .collect();
        used.extend(self.reserved_of(ioas));
        used.sort_unstable();
        let mut free_from = 0u128;
        let fits = |from: u128, to: u128| {
            let start = from.div_ceil(align) * align;
            start + u128::from(len) <= to.min(limit)
        };
        for (s, e) in used {
            if fits(free_from, s) {
                return true;
            }
            free_from = free_from.max(e);
        }
        fits(free_from, limit)
    }

    /// Live nested HWPTs, and live `NEST_PARENT` HWPTs.
    pub(crate) fn nested_hwpts(&self) -> Vec<ObjId> {
        self.hwpt
            .iter()
            .filter(|(_, h)| h.nested.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    pub(crate) fn parent_hwpts(&self) -> Vec<ObjId> {
        self.hwpt
            .iter()
            .filter(|(_, h)| h.nest_parent)
            .map(|(&id, _)| id)
            .collect()
    }

    pub(crate) fn free_if_unused(&mut self, h: ObjId) {
        if self.hwpt[&h].auto && self.users(h) == 0 {
            self.hwpt.remove(&h);
            self.dead.insert(h);
        }
    }

    /// An attach or replace to IOAS `ioas` returned `h` where the model allows any live auto
    /// HWPT of that IOAS or a new one.
    pub(crate) fn adopt_auto(&mut self, h: ObjId, ioas: ObjId, made_for: u128, ctx: &str) -> Check {
        if let Some(hw) = self.hwpt.get(&h) {
            if !(hw.auto && hw.ioas == ioas) {
                return fail(format!(
                    "{ctx}: returned {h:?}, a live HWPT that is not an auto HWPT of {ioas:?}"
                ));
            }
            return Ok(());
        }
        self.require_fresh(h, ctx)?;
        self.hwpt.insert(
            h,
            HwptM {
                ioas,
                auto: true,
                made_for,
                nest_parent: false,
                children: 0,
                nested: None,
            },
        );
        self.hwpt_seen.push(h);
        Ok(())
    }
}

/// The guest of every case: its table memory, tables 0 and 1 (AArch64, 48-bit input) and 2
/// (VT-d, 4 levels) with a few mappings each (into the guest RAM the prelude may map, into
/// the IPA pages the other operations map, into the table memory itself, and around the
/// 2 MiB boundary), and the two CD tables.
fn guest_setup() -> (Guest, Vec<S1Table>, u64, u64) {
    let guest = Guest::new(TABLES_IPA, TABLES_TARGET, TABLES_SIZE);
    let cd_one = guest.alloc_page();
    let cd_four = guest.alloc_page();
    let arm = Fmt::Arm { t0sz: 16 };
    let mut s1 = vec![
        S1Table::new(&guest, arm),
        S1Table::new(&guest, arm),
        S1Table::new(&guest, Fmt::Vtd { levels: 4 }),
    ];
    write_cd(&guest, cd_one, 0, 16, s1[0].root);
    write_cd(&guest, cd_four, 0, 16, s1[0].root);
    write_cd(&guest, cd_four, 1, 16, s1[1].root);
    // CD 2 stays invalid (V = 0).
    write_cd(&guest, cd_four, 3, 16, s1[1].root);
    for p in 0..8u64 {
        s1[0].map(&guest, p * PAGE, (GUEST_RAM + p) * PAGE, PAGE, p % 3 != 0);
    }
    s1[0].map(&guest, 8 * PAGE, 5 * PAGE, PAGE, true);
    s1[0].map(&guest, 10 * PAGE, TABLES_IPA, PAGE, true);
    for p in 2..12u64 {
        s1[1].map(&guest, p * PAGE, (GUEST_RAM - 4 + 2 * p) * PAGE, PAGE, true);
    }
    for p in 508..514u64 {
        s1[1].map(&guest, p * PAGE, (p - 468) * PAGE, PAGE, p % 2 == 0);
    }
    for p in 0..6u64 {
        s1[2].map(&guest, p * PAGE, (GUEST_RAM + 12 + p) * PAGE, PAGE, p != 4);
    }
    s1[2].map(&guest, 511 * PAGE, 20 * PAGE, PAGE, true);
    s1[2].map(&guest, 512 * PAGE, 21 * PAGE, PAGE, true);
    (guest, s1, cd_one, cd_four)
}
