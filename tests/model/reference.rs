//! The reference model: plain `BTreeMap`s of IOASes, HWPTs and devices beside the real
//! [`Iommu`], and the lookups the operations need.

use crate::common::{bind, PAGE};
use crate::strategies::*;
use crate::{device_infos, fail, Check, TWO_POW_64};
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
    pub(crate) ioas: ObjId,
    pub(crate) auto: bool,
    /// Aperture end of the device the HWPT was made for (see the module docs).
    pub(crate) made_for: u128,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Ioas,
    Hwpt,
    Device,
    Dead,
}

/// What a translation may return: these chunks, or a fault of one of these kinds.
pub(crate) struct Expect {
    pub(crate) ok: Option<Vec<Chunk>>,
    pub(crate) faults: Vec<FaultKind>,
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
            let (id, handle) = bind(&iommu, group, info);
            devs.push(DevM {
                id,
                handle,
                group: (group - 10) as usize,
                aperture,
                reserved,
                attached: false,
            });
        }
        let first = iommu.ioas_alloc().expect("ioas_alloc");
        let second = iommu.ioas_alloc().expect("ioas_alloc");
        assert_ne!(first, second);
        let mut ioas = BTreeMap::new();
        ioas.insert(first, IoasM::default());
        ioas.insert(second, IoasM::default());
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
            Pt::Device(i) => Some(self.devs[i % self.devs.len()].id),
        }
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

    /// Devices attached (through any HWPT) to `ioas`.
    pub(crate) fn attached_to(&self, ioas: ObjId) -> Vec<usize> {
        (0..self.devs.len())
            .filter(|&d| self.dev_ioas(d) == Some(ioas))
            .collect()
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

    pub(crate) fn group_users(&self, h: ObjId) -> usize {
        self.group_hwpt.iter().filter(|g| **g == Some(h)).count()
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

    pub(crate) fn free_if_unused(&mut self, h: ObjId) {
        if self.hwpt[&h].auto && self.group_users(h) == 0 {
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
            },
        );
        self.hwpt_seen.push(h);
        Ok(())
    }
}
