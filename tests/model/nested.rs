//! PASID attachments and nesting, run on both sides and compared: `device_attach_pasid`,
//! `device_replace_pasid`, `device_detach_pasid`, `hwpt_alloc_nested`, `hwpt_invalidate`,
//! and the guest's own stage-1 changes (made without invalidating).

use crate::common::PAGE;
use crate::reference::{check_errno, HwptM, Kind, Model, NestedM, Route, S1Value};
use crate::stage1::ste_s1;
use crate::strategies::{AllocDev, InvSel, NestKind, ParentSel, Pt};
use crate::{fail, Check, TWO_POW_64};
use viommu::errno::{EBUSY, EINVAL, ENOENT, EOVERFLOW};
use viommu::{Access, Invalidation, ObjId, Stage1};

impl Model {
    /// PASID calls of device `d` at `pasid`: EINVAL unless `pasid` is in the device's range.
    fn pasid_errors(&self, d: usize, pasid: u32, errs: &mut Vec<i32>) -> bool {
        if self.devs[d].pasid_valid(pasid) {
            true
        } else {
            errs.push(EINVAL);
            false
        }
    }

    pub(crate) fn op_attach_pasid(&mut self, d: usize, pasid: u32, pt: Pt, ctx: &str) -> Check {
        let Some(mut c) = self.pt_call(d, pt, "device_attach_pasid", ctx) else {
            return Ok(());
        };
        let group = c.group;
        let key = (group, pasid);
        let cur = self.group_pasid.get(&key).copied();
        c.ctx = format!("{} at PASID {pasid}", c.ctx);
        if !self.pasid_errors(d, pasid, &mut c.errs) {
            c.ok = false;
        } else if self.devs[d].pasids.contains(&pasid) {
            // Attached already: EBUSY, even to the same HWPT.
            c.errs.push(EBUSY);
            c.ok = false;
        }
        // Another device of the group has it: join the same HWPT, else EINVAL.
        if !self.join_errors(d, cur, c.target, c.pt_id, &mut c.errs) {
            c.ok = false;
        }
        let r = self.iommu.device_attach_pasid(c.dev_id, pasid, c.pt_id);
        let Some(h) = c.outcome(self.note(r))? else {
            return Ok(());
        };
        self.check_attached(d, h, cur, c.target, c.pt_id, &c.ctx)?;
        self.devs[d].pasids.insert(pasid);
        self.group_pasid.insert(key, h);
        Ok(())
    }

    pub(crate) fn op_replace_pasid(&mut self, d: usize, pasid: u32, pt: Pt, ctx: &str) -> Check {
        let Some(mut c) = self.pt_call(d, pt, "device_replace_pasid", ctx) else {
            return Ok(());
        };
        let group = c.group;
        let key = (group, pasid);
        c.ctx = format!("{} at PASID {pasid}", c.ctx);
        let mut noop = false;
        if !self.pasid_errors(d, pasid, &mut c.errs) || !self.devs[d].pasids.contains(&pasid) {
            c.errs.push(EINVAL);
            c.ok = false;
        } else if let Some((kind, t)) = c.target {
            noop = self.is_current(self.group_pasid[&key], kind, c.pt_id);
            if !noop {
                // Every device of the group with this PASID moves.
                let moving: Vec<usize> = (0..self.devs.len())
                    .filter(|&m| {
                        self.devs[m].group == group && self.devs[m].pasids.contains(&pasid)
                    })
                    .collect();
                if !self.fit_errors(&moving, t, &mut c.errs) {
                    c.ok = false;
                }
            }
        }
        let r = self.iommu.device_replace_pasid(c.dev_id, pasid, c.pt_id);
        let Some(h) = c.outcome(self.note(r))? else {
            return Ok(());
        };
        let cur = self.group_pasid[&key];
        let (kind, _) = c.target.expect("ok");
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
            if h != c.pt_id {
                return fail(format!("{}: returned {h:?}, expected {:?}", c.ctx, c.pt_id));
            }
        } else {
            let made_for = self.devs[d].aperture;
            self.adopt_auto(h, c.pt_id, made_for, &c.ctx)?;
        }
        self.group_pasid.insert(key, h);
        self.free_if_unused(cur);
        Ok(())
    }

    pub(crate) fn op_detach_pasid(&mut self, d: usize, pasid: u32, ctx: &str) -> Check {
        let dev_id = self.devs[d].id;
        let group = self.devs[d].group;
        let ctx = &format!("{ctx} = device_detach_pasid({dev_id:?}, {pasid})");
        let attached = self.devs[d].pasids.contains(&pasid);
        match self.note(self.iommu.device_detach_pasid(dev_id, pasid)) {
            Err(e) => check_errno(&e, if attached { &[] } else { &[EINVAL] }, attached, ctx),
            Ok(()) if !attached => fail(format!("{ctx}: got Ok, model expects EINVAL")),
            Ok(()) => {
                self.devs[d].pasids.remove(&pasid);
                let key = (group, pasid);
                let cur = self.group_pasid[&key];
                if !self
                    .devs
                    .iter()
                    .any(|m| m.group == group && m.pasids.contains(&pasid))
                {
                    self.group_pasid.remove(&key);
                    self.free_if_unused(cur);
                }
                Ok(())
            }
        }
    }

    /// The stage-1 data of `kind`, pointing at the model's guest tables.
    fn stage1_of(&self, kind: NestKind) -> Stage1 {
        let vtd = |pgtbl_addr, addr_width| Stage1::VtdS1 {
            pgtbl_addr,
            addr_width,
        };
        match kind {
            NestKind::SmmuOne => Stage1::SmmuV3 {
                ste: ste_s1(self.cd_one, 0, 0),
            },
            NestKind::SmmuFour { s1dss } => Stage1::SmmuV3 {
                ste: ste_s1(self.cd_four, 2, s1dss),
            },
            NestKind::Vtd => vtd(self.s1[2].root, 48),
            NestKind::Invalid(i) => match i % 6 {
                // Config "stage 2 only" (host-owned).
                0 => Stage1::SmmuV3 {
                    ste: [1 | (0b110 << 1), 0],
                },
                // A RES0 bit of word 0.
                1 => Stage1::SmmuV3 {
                    ste: [ste_s1(self.cd_one, 0, 0)[0] | (1 << 52), 0],
                },
                // S1CDMax above 20.
                2 => Stage1::SmmuV3 {
                    ste: ste_s1(self.cd_four, 21, 2),
                },
                // S1DSS 0b11 with substreams.
                3 => Stage1::SmmuV3 {
                    ste: ste_s1(self.cd_four, 2, 3),
                },
                4 => vtd(self.s1[2].root, 39),
                _ => vtd(self.s1[2].root + 8, 48),
            },
        }
    }

    pub(crate) fn op_alloc_nested(
        &mut self,
        dev: AllocDev,
        parent: ParentSel,
        kind: NestKind,
        ctx: &str,
    ) -> Check {
        let Some((dev_id, dev_idx)) = self.pick_alloc_dev(dev) else {
            return Ok(());
        };
        let parent_id = match parent {
            ParentSel::Parent(i) => self
                .pick_among(self.parent_hwpts(), i)
                .or_else(|| self.pick_hwpt(i)),
            ParentSel::Hwpt(i) => self.pick_hwpt(i),
            ParentSel::Ioas(i) => self.pick_ioas(i),
            ParentSel::Device(i) => Some(self.devs[i % self.devs.len()].id),
        };
        let Some(parent_id) = parent_id else {
            return Ok(());
        };
        let s1 = self.stage1_of(kind);
        let ctx = &format!("{ctx} = hwpt_alloc_nested({dev_id:?}, {parent_id:?}, {s1:x?})");
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
        match self.kind(parent_id) {
            Some(Kind::Hwpt) if self.hwpt[&parent_id].nest_parent => {}
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                ok = false;
            }
            _ => {
                errs.push(EINVAL);
                ok = false;
            }
        }
        if matches!(kind, NestKind::Invalid(_)) {
            errs.push(EINVAL);
            ok = false;
        }
        let mem = self.guest.table_memory();
        match self.note(self.iommu.hwpt_alloc_nested(dev_id, parent_id, s1, mem)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(h) if !ok => fail(format!(
                "{ctx}: got Ok({h:?}), model expects errno in {errs:?}"
            )),
            Ok(h) => {
                self.require_fresh(h, ctx)?;
                let p = self.hwpt.get_mut(&parent_id).expect("live parent");
                p.children += 1;
                let ioas = p.ioas;
                self.hwpt.insert(
                    h,
                    HwptM {
                        ioas,
                        auto: false,
                        made_for: TWO_POW_64,
                        nest_parent: false,
                        children: 0,
                        nested: Some(NestedM {
                            parent: parent_id,
                            kind,
                            stale: Default::default(),
                        }),
                    },
                );
                self.hwpt_seen.push(h);
                Ok(())
            }
        }
    }

    pub(crate) fn resolve_inv(&self, sel: InvSel) -> Option<ObjId> {
        match sel {
            InvSel::Nested(i) => self
                .pick_among(self.nested_hwpts(), i)
                .or_else(|| self.pick_hwpt(i)),
            InvSel::Hwpt(i) => self.pick_hwpt(i),
            InvSel::Ioas(i) => self.pick_ioas(i),
            InvSel::Device(i) => Some(self.devs[i % self.devs.len()].id),
        }
    }

    /// `hwpt_invalidate` (docs/nesting.md "Errors"); on success every value the HWPT's IOTLB
    /// might still serve is gone (every `Invalidation` drops every cached entry).
    pub(crate) fn op_invalidate(&mut self, sel: InvSel, inv: Invalidation, ctx: &str) -> Check {
        let Some(id) = self.resolve_inv(sel) else {
            return Ok(());
        };
        let ctx = &format!("{ctx} = hwpt_invalidate({id:?})");
        let mut errs = Vec::new();
        let mut ok = true;
        match self.kind(id) {
            Some(Kind::Hwpt) if self.hwpt[&id].nested.is_some() => {}
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                ok = false;
            }
            _ => {
                errs.push(EINVAL);
                ok = false;
            }
        }
        let pasid_bad = |p: u32| p >= 1 << 20;
        match inv {
            Invalidation::Range { pasid, iova, len } => {
                if pasid.is_some_and(pasid_bad) || len == 0 {
                    errs.push(EINVAL);
                    ok = false;
                }
                let end = u128::from(iova) + u128::from(len);
                if end > TWO_POW_64 {
                    errs.push(EOVERFLOW);
                    ok = false;
                } else if end == TWO_POW_64 {
                    errs.push(EOVERFLOW);
                }
            }
            Invalidation::Config { pasid } if pasid_bad(pasid) => {
                errs.push(EINVAL);
                ok = false;
            }
            _ => {}
        }
        match self.note(self.iommu.hwpt_invalidate(id, inv)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(()) if !ok => fail(format!("{ctx}: got Ok, model expects errno in {errs:?}")),
            Ok(()) => {
                let n = self.hwpt.get_mut(&id).and_then(|h| h.nested.as_mut());
                n.expect("nested").stale.clear();
                Ok(())
            }
        }
    }

    /// The guest changes IOVA page `page` of its table `table` (to `new`, or unmapped) and
    /// does not invalidate: every live nested HWPT that walks the table may go on serving the
    /// old value until it is invalidated.
    ///
    /// The page is translated through every nested route before and after the change (the
    /// first fills the IOTLB, so the second may well be served the old value).
    pub(crate) fn op_s1_change(
        &mut self,
        table: usize,
        page: u64,
        new: S1Value,
        ctx: &str,
    ) -> Check {
        let t = table % self.s1.len();
        let iova = page * PAGE;
        self.probe_nested(iova, ctx)?;
        let old = self.s1[t].reference.get(&iova).copied();
        match new {
            Some((ipa, writable)) => self.s1[t].map(&self.guest, iova, ipa, PAGE, writable),
            None => self.s1[t].unmap(&self.guest, iova, PAGE),
        }
        for h in self.hwpt.values_mut() {
            if let Some(n) = h.nested.as_mut() {
                if n.kind.tables().contains(&t) {
                    n.stale.entry((t, iova)).or_default().push(old);
                }
            }
        }
        self.probe_nested(iova, ctx)?;
        self.last.set(Some(crate::reference::Outcome::Ok));
        Ok(())
    }

    /// Translates page `iova` (read and write) for every (device, PASID) on a nested route.
    fn probe_nested(&self, iova: u64, ctx: &str) -> Check {
        for d in 0..self.devs.len() {
            for pasid in 0..=(1u32 << self.devs[d].pasid_bits) - 1 {
                if let Route::Nested(..) = self.route(d, pasid) {
                    for access in [Access::Read, Access::Write] {
                        self.translate_pasid_and_compare(d, pasid, iova, PAGE, access, ctx)?;
                    }
                }
            }
        }
        Ok(())
    }
}
