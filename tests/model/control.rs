//! Each control call run on the real `Iommu` and on the model: the model works out the errnos
//! (or the value) the contract allows, then follows what the implementation did.

use crate::common::bind;
use crate::common::PAGE;
use crate::reference::{
    areas_in, check_errno, end_of, max_area_end, reserved_collides, Area, HwptM, IoasM, Kind, Model,
};
use crate::strategies::{AllocDev, AllocPt, HeldCall, Op, Pt, Target, UnmapRange, Victim};
use crate::{fail, Check, MAX_IOAS, TBASE, TWO_POW_64};
use proptest::test_runner::TestCaseError;
use viommu::errno::{
    EADDRINUSE, EBUSY, EDEADLK, EEXIST, EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, EOVERFLOW,
};
use viommu::{HwptFlags, ObjId, Prot};

/// See [`Model::pt_call`].
pub(crate) struct PtCall {
    pub(crate) pt_id: ObjId,
    pub(crate) dev_id: ObjId,
    pub(crate) group: usize,
    pub(crate) ctx: String,
    /// The errnos the call may return so far.
    pub(crate) errs: Vec<i32>,
    /// Whether the call may succeed so far.
    pub(crate) ok: bool,
    /// The kind of the object the call names, and its IOAS.
    pub(crate) target: Option<(Kind, ObjId)>,
    /// The group's HWPT before the call.
    pub(crate) cur: Option<ObjId>,
}

impl PtCall {
    /// The outcome of the call: `None` after an error the model allows, the new HWPT after a
    /// success it allows, a test failure otherwise.
    pub(crate) fn outcome(&self, r: viommu::Result<ObjId>) -> Result<Option<ObjId>, TestCaseError> {
        match r {
            Err(e) => check_errno(&e, &self.errs, self.ok, &self.ctx).map(|()| None),
            Ok(h) if !self.ok => fail(format!(
                "{}: got Ok({h:?}), model expects errno in {:?}",
                self.ctx, self.errs
            )),
            Ok(h) => Ok(Some(h)),
        }
    }
}

impl Model {
    // --- operations ------------------------------------------------------------------------

    pub(crate) fn apply(&mut self, op: &Op) -> Check {
        let ctx = format!("{op:?}");
        match *op {
            Op::IoasAlloc => self.op_ioas_alloc(&ctx),
            Op::Map {
                ioas,
                iova,
                target,
                len,
                prot,
            } => self.op_map(ioas, iova, target, len, prot, &ctx),
            Op::Unmap { ioas, range } => self.op_unmap(ioas, range, &ctx),
            Op::HwptAlloc { dev, pt, flags } => self.op_hwpt_alloc(dev, pt, flags, &ctx),
            Op::Attach { dev, pt } => self.op_attach(self.pick_dev(dev, false), pt, &ctx),
            Op::Replace { dev, pt } => self.op_replace(self.pick_dev(dev, true), pt, &ctx),
            Op::Detach { dev } => self.op_detach(self.pick_dev(dev, true), &ctx),
            Op::Destroy { victim } => self.op_destroy(victim, &ctx),
            Op::Translate {
                dev,
                at,
                len,
                access,
                pinned,
            } => self.op_translate(self.pick_dev(dev, true), at, len, access, pinned, &ctx),
            Op::AttachPasid { dev, pasid, pt } => {
                self.op_attach_pasid(self.pick_pasid_dev(dev), pasid, pt, &ctx)
            }
            Op::ReplacePasid { dev, pasid, pt } => {
                let (d, p) = self.pick_attached_pasid(dev, pasid);
                self.op_replace_pasid(d, p, pt, &ctx)
            }
            Op::DetachPasid { dev, pasid } => {
                let (d, p) = self.pick_attached_pasid(dev, pasid);
                self.op_detach_pasid(d, p, &ctx)
            }
            Op::TranslatePasid {
                dev,
                pasid,
                at,
                len,
                access,
            } => {
                let (d, p) = self.pick_attached_pasid(dev, pasid);
                self.op_translate_pasid(d, p, at, len, access, &ctx)
            }
            Op::AllocNested { dev, parent, kind } => self.op_alloc_nested(dev, parent, kind, &ctx),
            Op::Invalidate { hwpt, inv } => self.op_invalidate(hwpt, inv, &ctx),
            Op::S1Map {
                table,
                page,
                ipa,
                writable,
            } => self.op_s1_change(table, page, Some((ipa, writable)), &ctx),
            Op::S1Unmap { table, page } => self.op_s1_change(table, page, None, &ctx),
            Op::WhileHolding { dev, call } => {
                self.op_while_holding(dev % self.devs.len(), call, &ctx)
            }
            Op::CheckAll => self.check_all(&ctx),
        }
    }

    pub(crate) fn op_ioas_alloc(&mut self, ctx: &str) -> Check {
        if self.ioas.len() >= MAX_IOAS {
            return Ok(());
        }
        match self.note(self.iommu.ioas_alloc()) {
            Ok(id) => {
                self.require_fresh(id, ctx)?;
                self.ioas.insert(id, IoasM::default());
                self.ioas_seen.push(id);
                Ok(())
            }
            Err(e) => fail(format!("{ctx}: {e:?}")),
        }
    }

    pub(crate) fn op_map(
        &mut self,
        sel: usize,
        iova: Option<u64>,
        target: Target,
        len: u64,
        prot: Prot,
        ctx: &str,
    ) -> Check {
        let Some(ioas) = self.pick_ioas(sel) else {
            return Ok(());
        };
        let target = match target {
            Target::At(t) => t,
            Target::FollowIova => TBASE.wrapping_add(iova.unwrap_or(200 * PAGE)),
        };
        let ctx = &format!("{ctx} on {ioas:?} (target {target:#x})");
        let mut errs = Vec::new();
        let mut ok = true;
        let live = match self.kind(ioas) {
            Some(Kind::Ioas) => true,
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                ok = false;
                false
            }
            k => return fail(format!("{ctx}: picked {k:?}")),
        };
        let aligned =
            target % PAGE == 0 && len % PAGE == 0 && !matches!(iova, Some(v) if v % PAGE != 0);
        if !aligned || len == 0 {
            errs.push(EINVAL);
            ok = false;
        }
        let t_end = u128::from(target) + u128::from(len);
        if t_end > TWO_POW_64 {
            errs.push(EOVERFLOW);
            ok = false;
        } else if t_end == TWO_POW_64 {
            errs.push(EOVERFLOW);
        }
        let basic_ok = ok;
        match iova {
            Some(v) => {
                let start = u128::from(v);
                let end = start + u128::from(len);
                if end > TWO_POW_64 {
                    errs.push(EOVERFLOW);
                    ok = false;
                } else if end == TWO_POW_64 {
                    errs.push(EOVERFLOW);
                }
                if live && aligned && len > 0 && end <= TWO_POW_64 {
                    if !areas_in(&self.ioas[&ioas].areas, start, end).is_empty() {
                        errs.push(EEXIST);
                        ok = false;
                    }
                    if self
                        .reserved_of(ioas)
                        .iter()
                        .any(|&(s, e)| s < end && start < e)
                    {
                        errs.push(EINVAL);
                        ok = false;
                    }
                    if end > self.device_limit(ioas) {
                        errs.push(EOVERFLOW);
                        ok = false;
                    } else if end > self.domain_limit(ioas) {
                        errs.push(EOVERFLOW);
                    }
                }
            }
            None => {
                if live && basic_ok {
                    let dev_limit = self.device_limit(ioas);
                    let natural = u128::from(1u64 << (63 - len.leading_zeros()).min(30));
                    let limit = dev_limit.min(self.domain_limit(ioas));
                    if !self.hole_exists(ioas, len, u128::from(PAGE), dev_limit) {
                        errs.push(ENOSPC);
                        ok = false;
                    } else if !self.hole_exists(ioas, len, natural, limit) {
                        errs.push(ENOSPC);
                    }
                }
            }
        }
        match self.note(self.iommu.ioas_map(ioas, iova, target, len, prot)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(got) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({got:#x}), model expects errno in {errs:?}"
                    ));
                }
                match iova {
                    Some(v) if v != got => {
                        return fail(format!("{ctx}: fixed map at {v:#x} returned {got:#x}"));
                    }
                    Some(_) => {}
                    None => {
                        let start = u128::from(got);
                        let end = start + u128::from(len);
                        let bad = got % PAGE != 0
                            || end > self.device_limit(ioas)
                            || !areas_in(&self.ioas[&ioas].areas, start, end).is_empty()
                            || self
                                .reserved_of(ioas)
                                .iter()
                                .any(|&(s, e)| s < end && start < e);
                        if bad {
                            return fail(format!(
                                "{ctx}: automatic map returned {got:#x}, which is misaligned, \
                                 in use, reserved or outside an attached device's aperture"
                            ));
                        }
                    }
                }
                self.ioas
                    .get_mut(&ioas)
                    .expect("live")
                    .areas
                    .insert(got, Area { len, target, prot });
                Ok(())
            }
        }
    }

    pub(crate) fn resolve_unmap(&self, ioas: ObjId, range: UnmapRange) -> (u64, u64) {
        let areas: Vec<(u64, Area)> = self
            .ioas
            .get(&ioas)
            .map(|m| m.areas.iter().map(|(&a, ar)| (a, *ar)).collect())
            .unwrap_or_default();
        let nth = |i: usize| areas[i % areas.len()];
        match range {
            UnmapRange::All => (0, u64::MAX),
            UnmapRange::Raw(i, l) => (i, l),
            _ if areas.is_empty() => (0, PAGE),
            UnmapRange::Area(i) => (nth(i).0, nth(i).1.len),
            UnmapRange::Span(i, j) => {
                let (i, j) = (i % areas.len(), j % areas.len());
                let (a, b) = (nth(i.min(j)), nth(i.max(j)));
                (a.0, (b.0 - a.0).wrapping_add(b.1.len))
            }
            UnmapRange::Cut(i, k) => {
                let (a, ar) = nth(i);
                match (k, ar.len > PAGE) {
                    (0, true) => (a + PAGE, ar.len - PAGE),
                    (1, true) => (a, ar.len - PAGE),
                    (2, true) => (a.saturating_sub(PAGE), 2 * PAGE),
                    _ => (a, ar.len.wrapping_add(PAGE)),
                }
            }
        }
    }

    pub(crate) fn op_unmap(&mut self, sel: usize, range: UnmapRange, ctx: &str) -> Check {
        let Some(ioas) = self.pick_ioas(sel) else {
            return Ok(());
        };
        let (iova, len) = self.resolve_unmap(ioas, range);
        let ctx = &format!("{ctx} on {ioas:?} = ({iova:#x}, {len:#x})");
        let mut errs = Vec::new();
        let mut ok = true;
        let live = self.ioas.contains_key(&ioas);
        if !live {
            errs.push(ENOENT);
            ok = false;
        }
        let mut removed: Vec<u64> = Vec::new();
        if iova == 0 && len == u64::MAX {
            if live {
                removed = self.ioas[&ioas].areas.keys().copied().collect();
            }
        } else {
            let start = u128::from(iova);
            let end = start + u128::from(len);
            let basic = iova % PAGE == 0 && len % PAGE == 0 && len != 0;
            if !basic {
                errs.push(EINVAL);
                ok = false;
            }
            if end > TWO_POW_64 {
                errs.push(EOVERFLOW);
                ok = false;
            } else if end == TWO_POW_64 {
                errs.push(EOVERFLOW);
            }
            if live && basic && end <= TWO_POW_64 {
                let hits = areas_in(&self.ioas[&ioas].areas, start, end);
                if hits.is_empty()
                    || hits
                        .iter()
                        .any(|(a, ar)| u128::from(*a) < start || end_of(*a, ar) > end)
                {
                    errs.push(ENOENT);
                    ok = false;
                }
                removed = hits.iter().map(|(a, _)| *a).collect();
            }
        }
        match self.note(self.iommu.ioas_unmap(ioas, iova, len)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(bytes) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({bytes:#x}), model expects errno in {errs:?}"
                    ));
                }
                let areas = &mut self.ioas.get_mut(&ioas).expect("live").areas;
                let want: u64 = removed.iter().map(|a| areas[a].len).sum();
                if bytes != want {
                    return fail(format!(
                        "{ctx}: unmapped {bytes:#x} bytes, model expects {want:#x}"
                    ));
                }
                for a in removed {
                    areas.remove(&a);
                }
                Ok(())
            }
        }
    }

    pub(crate) fn op_hwpt_alloc(
        &mut self,
        dev: AllocDev,
        pt: AllocPt,
        flags: u32,
        ctx: &str,
    ) -> Check {
        let Some((dev_id, dev_idx)) = self.pick_alloc_dev(dev) else {
            return Ok(());
        };
        let pt_id = match pt {
            AllocPt::Ioas(i) => match self.pick_ioas(i) {
                Some(id) => id,
                None => return Ok(()),
            },
            AllocPt::Device(i) => self.devs[i % self.devs.len()].id,
            AllocPt::Hwpt(i) => match self.pick_hwpt(i) {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        let ctx = &format!("{ctx} = hwpt_alloc({dev_id:?}, {pt_id:?}, {flags:#x})");
        let mut errs = Vec::new();
        let mut ok = true;
        if dev_idx.is_none() {
            errs.push(if self.kind(dev_id) == Some(Kind::Dead) {
                ENOENT
            } else {
                EINVAL
            });
            ok = false;
        }
        let pt_live = match self.kind(pt_id) {
            Some(Kind::Ioas) => true,
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                ok = false;
                false
            }
            // A HWPT as `pt` needs stage-1 data (docs/nesting.md "Errors").
            Some(Kind::Hwpt) => {
                errs.push(EOPNOTSUPP);
                ok = false;
                false
            }
            _ => {
                errs.push(EINVAL);
                ok = false;
                false
            }
        };
        if flags & !HwptFlags::NEST_PARENT.bits() != 0 {
            errs.push(EOPNOTSUPP);
            ok = false;
        }
        if let (Some(d), true) = (dev_idx, pt_live) {
            let areas = &self.ioas[&pt_id].areas;
            if max_area_end(areas) > self.devs[d].aperture {
                errs.push(EINVAL);
                ok = false;
            }
            if reserved_collides(&self.devs[d], areas) {
                errs.push(EADDRINUSE);
            }
        }
        match self.note(
            self.iommu
                .hwpt_alloc(dev_id, pt_id, HwptFlags::from_bits_retain(flags)),
        ) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(h) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({h:?}), model expects errno in {errs:?}"
                    ));
                }
                self.require_fresh(h, ctx)?;
                let made_for = self.devs[dev_idx.expect("ok")].aperture;
                self.hwpt.insert(
                    h,
                    HwptM {
                        ioas: pt_id,
                        auto: false,
                        made_for,
                        nest_parent: flags & HwptFlags::NEST_PARENT.bits() != 0,
                        children: 0,
                        nested: None,
                    },
                );
                self.hwpt_seen.push(h);
                Ok(())
            }
        }
    }

    /// Checks of the object an attach or replace names: its IOAS, or `None` after pushing the
    /// errno of a destroyed or wrong-typed id.
    pub(crate) fn pt_target(&self, pt_id: ObjId, errs: &mut Vec<i32>) -> Option<(Kind, ObjId)> {
        match self.kind(pt_id) {
            Some(Kind::Ioas) => Some((Kind::Ioas, pt_id)),
            Some(Kind::Hwpt) => Some((Kind::Hwpt, self.hwpt[&pt_id].ioas)),
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                None
            }
            _ => {
                errs.push(EINVAL);
                None
            }
        }
    }

    /// The start an attach and a replace (`call`) of device `d` to `pt` share: the IDs, the
    /// context, the checks of the object `pt` names and the group's HWPT. `None` when there is
    /// nothing to pick.
    pub(crate) fn pt_call(&self, d: usize, pt: Pt, call: &str, ctx: &str) -> Option<PtCall> {
        let pt_id = self.resolve_pt(pt)?;
        let dev_id = self.devs[d].id;
        let group = self.devs[d].group;
        let ctx = format!("{ctx} = {call}({dev_id:?}, {pt_id:?})");
        let mut errs = Vec::new();
        let target = self.pt_target(pt_id, &mut errs);
        Some(PtCall {
            pt_id,
            dev_id,
            group,
            ctx,
            errs,
            ok: target.is_some(),
            target,
            cur: self.group_hwpt[group],
        })
    }

    /// True if a group on HWPT `cur` asking for `pt_id` (of kind `kind`) is already there.
    pub(crate) fn is_current(&self, cur: ObjId, kind: Kind, pt_id: ObjId) -> bool {
        match kind {
            Kind::Hwpt => pt_id == cur,
            _ => self.hwpt[&cur].auto && self.hwpt[&cur].ioas == pt_id,
        }
    }

    /// Pushes EINVAL / EADDRINUSE if any of `devs` cannot live on IOAS `target`.
    pub(crate) fn fit_errors(&self, devs: &[usize], target: ObjId, errs: &mut Vec<i32>) -> bool {
        let areas = &self.ioas[&target].areas;
        let mut fits = true;
        for &d in devs {
            if max_area_end(areas) > self.devs[d].aperture {
                errs.push(EINVAL);
                fits = false;
            }
            if reserved_collides(&self.devs[d], areas) {
                errs.push(EADDRINUSE);
                fits = false;
            }
        }
        fits
    }

    /// The errors of attaching device `d` (at the RID or a PASID) to `target` where its group
    /// is on `cur`: EINVAL to join another HWPT than the group's, and the fit errors of the
    /// target IOAS. False if there is any.
    pub(crate) fn join_errors(
        &self,
        d: usize,
        cur: Option<ObjId>,
        target: Option<(Kind, ObjId)>,
        pt_id: ObjId,
        errs: &mut Vec<i32>,
    ) -> bool {
        let Some((kind, t)) = target else {
            return true;
        };
        let mut ok = true;
        if cur.is_some_and(|cur| !self.is_current(cur, kind, pt_id)) {
            errs.push(EINVAL);
            ok = false;
        }
        self.fit_errors(&[d], t, errs) && ok
    }

    /// After a successful attach of device `d` (at the RID or a PASID) that returned HWPT `h`:
    /// it must be the group's current HWPT, or the HWPT asked for; otherwise it is an auto
    /// HWPT, which the model adopts.
    pub(crate) fn check_attached(
        &mut self,
        d: usize,
        h: ObjId,
        cur: Option<ObjId>,
        target: Option<(Kind, ObjId)>,
        pt_id: ObjId,
        ctx: &str,
    ) -> Check {
        let (kind, _) = target.expect("a successful attach had a target");
        let want = match (cur, kind) {
            (Some(c), _) => Some(c),
            (None, Kind::Hwpt) => Some(pt_id),
            (None, _) => None,
        };
        match want {
            Some(want) if h != want => fail(format!(
                "{ctx}: returned HWPT {h:?}, model expects {want:?}"
            )),
            Some(_) => Ok(()),
            None => {
                let made_for = self.devs[d].aperture;
                self.adopt_auto(h, pt_id, made_for, ctx)
            }
        }
    }

    pub(crate) fn op_attach(&mut self, d: usize, pt: Pt, ctx: &str) -> Check {
        let Some(mut c) = self.pt_call(d, pt, "device_attach", ctx) else {
            return Ok(());
        };
        let (pt_id, dev_id, group, cur, target) = (c.pt_id, c.dev_id, c.group, c.cur, c.target);
        if self.devs[d].attached {
            c.errs.push(EINVAL);
            c.ok = false;
        }
        if !self.join_errors(d, cur, target, pt_id, &mut c.errs) {
            c.ok = false;
        }
        let Some(h) = c.outcome(self.note(self.iommu.device_attach(dev_id, pt_id)))? else {
            return Ok(());
        };
        self.check_attached(d, h, cur, target, pt_id, &c.ctx)?;
        self.devs[d].attached = true;
        self.group_hwpt[group] = Some(h);
        Ok(())
    }

    pub(crate) fn op_replace(&mut self, d: usize, pt: Pt, ctx: &str) -> Check {
        let Some(mut c) = self.pt_call(d, pt, "device_replace", ctx) else {
            return Ok(());
        };
        let (pt_id, dev_id, group, cur, target) = (c.pt_id, c.dev_id, c.group, c.cur, c.target);
        let mut noop = false;
        if !self.devs[d].attached {
            c.errs.push(EINVAL);
            c.ok = false;
        } else if let Some((kind, t)) = target {
            let cur = cur.expect("an attached device's group has a HWPT");
            noop = self.is_current(cur, kind, pt_id);
            if !noop {
                let moving: Vec<usize> = (0..self.devs.len())
                    .filter(|&m| self.devs[m].group == group && self.devs[m].attached)
                    .collect();
                if !self.fit_errors(&moving, t, &mut c.errs) {
                    c.ok = false;
                }
            }
        }
        let Some(h) = c.outcome(self.note(self.iommu.device_replace(dev_id, pt_id)))? else {
            return Ok(());
        };
        let cur = cur.expect("attached");
        let (kind, _) = target.expect("ok");
        if noop {
            if h != cur {
                return fail(format!(
                    "{}: replace to the current HWPT returned {h:?}, expected {cur:?}",
                    c.ctx
                ));
            }
            return Ok(());
        }
        if kind == Kind::Hwpt {
            if h != pt_id {
                return fail(format!("{}: returned {h:?}, expected {pt_id:?}", c.ctx));
            }
        } else {
            let made_for = self.devs[d].aperture;
            self.adopt_auto(h, pt_id, made_for, &c.ctx)?;
        }
        self.group_hwpt[group] = Some(h);
        self.free_if_unused(cur);
        Ok(())
    }

    pub(crate) fn op_detach(&mut self, d: usize, ctx: &str) -> Check {
        let dev_id = self.devs[d].id;
        let group = self.devs[d].group;
        let ctx = &format!("{ctx} = device_detach({dev_id:?})");
        let attached = self.devs[d].attached;
        match self.note(self.iommu.device_detach(dev_id)) {
            Err(e) => check_errno(&e, if attached { &[] } else { &[EINVAL] }, attached, ctx),
            Ok(()) if !attached => fail(format!("{ctx}: got Ok, model expects EINVAL")),
            Ok(()) => {
                self.devs[d].attached = false;
                let cur = self.group_hwpt[group].expect("attached");
                if !self.devs.iter().any(|m| m.group == group && m.attached) {
                    self.group_hwpt[group] = None;
                    self.free_if_unused(cur);
                }
                Ok(())
            }
        }
    }

    pub(crate) fn op_destroy(&mut self, victim: Victim, ctx: &str) -> Check {
        let id = match victim {
            Victim::Ioas(i) => self.pick_ioas(i),
            Victim::Hwpt(i) => self.pick_hwpt(i),
            Victim::Device(i) => return self.op_destroy_device(i % self.devs.len(), ctx),
        };
        let Some(id) = id else {
            return Ok(());
        };
        let ctx = &format!("{ctx} = destroy({id:?})");
        let errno = match self.kind(id) {
            Some(Kind::Dead) => Some(ENOENT),
            Some(Kind::Ioas) if self.hwpt.values().any(|h| h.ioas == id) => Some(EBUSY),
            Some(Kind::Hwpt)
                if self.hwpt[&id].auto || self.users(id) > 0 || self.hwpt[&id].children > 0 =>
            {
                Some(EBUSY)
            }
            Some(Kind::Ioas | Kind::Hwpt) => None,
            k => return fail(format!("{ctx}: picked {k:?}")),
        };
        match (self.note(self.iommu.destroy(id)), errno) {
            (Err(e), Some(want)) => check_errno(&e, &[want], false, ctx),
            (Err(e), None) => check_errno(&e, &[], true, ctx),
            (Ok(()), Some(want)) => fail(format!("{ctx}: got Ok, model expects errno {want}")),
            (Ok(()), None) => {
                self.ioas.remove(&id);
                if let Some(parent) = self
                    .hwpt
                    .remove(&id)
                    .and_then(|h| h.nested)
                    .map(|n| n.parent)
                {
                    self.hwpt
                        .get_mut(&parent)
                        .expect("a parent outlives its children")
                        .children -= 1;
                }
                self.dead.insert(id);
                Ok(())
            }
        }
    }

    /// `destroy(dev)`: EBUSY while the device is attached at its RID or at any PASID. Once
    /// destroyed, a device with the same info is bound in its place (a new id).
    pub(crate) fn op_destroy_device(&mut self, d: usize, ctx: &str) -> Check {
        let dev = &self.devs[d];
        let busy = dev.attached || !dev.pasids.is_empty();
        let ctx = &format!("{ctx} = destroy({:?})", dev.id);
        match self.note(self.iommu.destroy(dev.id)) {
            Err(e) => check_errno(&e, if busy { &[EBUSY] } else { &[] }, !busy, ctx),
            Ok(()) if busy => fail(format!("{ctx}: got Ok, model expects EBUSY")),
            Ok(()) => {
                let (group, info) = crate::device_infos().swap_remove(d);
                let (id, handle) = bind(&self.iommu, group, info);
                self.require_fresh(id, ctx)?;
                let old = std::mem::replace(&mut self.devs[d].id, id);
                self.devs[d].handle = handle;
                self.dead.insert(old);
                Ok(())
            }
        }
    }

    pub(crate) fn op_while_holding(&mut self, d: usize, call: HeldCall, ctx: &str) -> Check {
        let guard = self.devs[d].handle.pin();
        let (res, errs) = match call {
            HeldCall::UnmapAll(i) => {
                let Some(ioas) = self.pick_ioas(i) else {
                    return Ok(());
                };
                let errs = if self.ioas.contains_key(&ioas) {
                    vec![EDEADLK]
                } else {
                    vec![EDEADLK, ENOENT]
                };
                (self.iommu.ioas_unmap(ioas, 0, u64::MAX).map(drop), errs)
            }
            HeldCall::Detach(j) => {
                let j = j % self.devs.len();
                let errs = if self.devs[j].attached {
                    vec![EDEADLK]
                } else {
                    vec![EDEADLK, EINVAL]
                };
                (self.iommu.device_detach(self.devs[j].id), errs)
            }
            HeldCall::Synchronize => (self.iommu.synchronize(), vec![EDEADLK]),
            HeldCall::DetachPasid(j, p) => {
                let j = j % self.devs.len();
                let errs = if self.devs[j].pasids.contains(&p) {
                    vec![EDEADLK]
                } else {
                    vec![EDEADLK, EINVAL]
                };
                (self.iommu.device_detach_pasid(self.devs[j].id, p), errs)
            }
            HeldCall::Invalidate(sel) => {
                let Some(id) = self.resolve_inv(sel) else {
                    return Ok(());
                };
                let errs = match self.kind(id) {
                    Some(Kind::Hwpt) if self.hwpt[&id].nested.is_some() => vec![EDEADLK],
                    Some(Kind::Dead) => vec![EDEADLK, ENOENT],
                    _ => vec![EDEADLK, EINVAL],
                };
                (
                    self.iommu.hwpt_invalidate(id, viommu::Invalidation::All),
                    errs,
                )
            }
        };
        drop(guard);
        match self.note(res) {
            Err(e) => check_errno(&e, &errs, false, ctx),
            Ok(()) => fail(format!(
                "{ctx}: succeeded while the thread held a DmaGuard, model expects {errs:?}"
            )),
        }
    }

    /// End of a case: everything translates as modelled, every dead id is ENOENT, and
    /// unmap-all of every IOAS returns the bytes the model holds.
    pub(crate) fn finish(&mut self) -> Check {
        self.check_all("final check")?;
        for &id in &self.dead {
            match self.note(self.iommu.destroy(id)) {
                Err(e) if e.errno() == ENOENT => {}
                other => {
                    return fail(format!(
                        "destroy of dead id {id:?}: got {other:?}, expected ENOENT"
                    ))
                }
            }
        }
        for (&id, m) in &self.ioas {
            let want: u64 = m.areas.values().map(|a| a.len).sum();
            match self.note(self.iommu.ioas_unmap(id, 0, u64::MAX)) {
                Ok(got) if got == want => {}
                other => {
                    return fail(format!(
                        "final unmap-all of {id:?}: got {other:?}, model expects Ok({want:#x})"
                    ))
                }
            }
        }
        Ok(())
    }
}
