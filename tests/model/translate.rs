//! Translations: what the model predicts (the merged chunks, or the fault kinds allowed) and
//! the comparison with what a device handle returns, one-shot and through a guard.

use crate::common::PAGE;
use crate::reference::{end_of, Area, Expect, Model, Outcome, PageOutcome, Route};
use crate::strategies::{At, NestKind, TLen};
use crate::{fail, Check, CHECK_PAGES, TABLES_IPA, TABLES_TARGET};
use viommu::{Access, Chunk, Fault, FaultKind, ObjId, Translation};

/// How a nested translation's substream starts (SPEC "Nesting", SMMUv3 substreams).
enum Ctx {
    Bypass,
    Table(usize),
    Fault(FaultKind),
}

impl Model {
    /// The IOAS whose areas `At::Area` and `TLen` name for device `d` at `pasid`: the one its
    /// domain there is on, or any.
    fn view_ioas(&self, d: usize, pasid: u32) -> Option<ObjId> {
        match self.route(d, pasid) {
            Route::Paging(h) | Route::Nested(h, _) => Some(self.hwpt[&h].ioas),
            Route::Blocked => None,
        }
        .or_else(|| self.ioas.keys().next().copied())
    }

    /// The area of device `d`'s IOAS (or of any IOAS) that an `At::Area` names.
    pub(crate) fn area_for(&self, d: usize, pasid: u32, i: usize) -> Option<(u64, Area)> {
        let ioas = self.view_ioas(d, pasid)?;
        let areas = &self.ioas[&ioas].areas;
        if areas.is_empty() {
            return None;
        }
        let (&a, ar) = areas.iter().nth(i % areas.len()).expect("non-empty");
        Some((a, *ar))
    }

    pub(crate) fn resolve_translate(&self, d: usize, pasid: u32, at: At, len: TLen) -> (u64, u64) {
        let iova = match at {
            At::Raw(v) => v,
            At::Area(i, p, o) => match self.area_for(d, pasid, i) {
                Some((a, ar)) => a + (p % (ar.len / PAGE)) * PAGE + o,
                None => p * PAGE + o,
            },
        };
        let len = match len {
            TLen::Bytes(n) => n,
            TLen::ToAreaEnd(extra) => {
                let ioas = self.view_ioas(d, pasid);
                let area = ioas.and_then(|i| {
                    self.ioas[&i]
                        .areas
                        .range(..=iova)
                        .next_back()
                        .map(|(&a, ar)| (a, *ar))
                });
                match area {
                    Some((a, ar)) if end_of(a, &ar) > u128::from(iova) => {
                        ((end_of(a, &ar) - u128::from(iova)) as u64).saturating_add(extra * PAGE)
                    }
                    _ => PAGE,
                }
            }
            TLen::Span(n) => {
                let ioas = self.view_ioas(d, pasid);
                let last = ioas.and_then(|i| {
                    let areas = &self.ioas[&i].areas;
                    let first = areas.range(..=iova).next_back().map_or(0, |(&a, _)| a);
                    areas
                        .range(first..)
                        .take(n + 1)
                        .last()
                        .map(|(&a, ar)| end_of(a, ar))
                });
                match last {
                    Some(end) if end > u128::from(iova) => (end - u128::from(iova)) as u64,
                    _ => PAGE,
                }
            }
        };
        (iova, len)
    }

    pub(crate) fn expect_translate(
        &self,
        d: usize,
        pasid: u32,
        iova: u64,
        len: u64,
        access: Access,
    ) -> Expect {
        let aperture = self.devs[d].aperture;
        let start = u128::from(iova);
        let end = start + u128::from(len);
        let outside = end > aperture || start >= aperture;
        let route = self.route(d, pasid);
        let h = match route {
            Route::Blocked => {
                let mut faults = vec![FaultKind::Blocked];
                if outside {
                    faults.push(FaultKind::Aperture);
                }
                return Expect {
                    ok: (len == 0).then(Vec::new),
                    faults,
                    pages: None,
                };
            }
            Route::Paging(h) | Route::Nested(h, _) => h,
        };
        let ioas = self.hwpt[&h].ioas;
        if len == 0 {
            return Expect {
                ok: Some(Vec::new()),
                faults: if outside {
                    vec![FaultKind::Aperture]
                } else {
                    Vec::new()
                },
                pages: None,
            };
        }
        if outside {
            return Expect {
                ok: None,
                faults: vec![FaultKind::Aperture],
                pages: None,
            };
        }
        if let Route::Nested(h, ssid) = route {
            return Expect {
                ok: None,
                faults: Vec::new(),
                pages: Some(self.nested_pages(h, ssid, iova, end, access)),
            };
        }
        let areas = &self.ioas[&ioas].areas;
        // Past the aperture of the device its HWPT was made for, a request that cannot
        // translate may also fault `Aperture` (the domain's aperture; see the module docs).
        let domain_aperture = self.hwpt[&h].made_for;
        let fault = |kind| Expect {
            ok: None,
            faults: if end > domain_aperture {
                vec![kind, FaultKind::Aperture]
            } else {
                vec![kind]
            },
            pages: None,
        };
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut cur = start;
        while cur < end {
            let page = (cur as u64) / PAGE * PAGE;
            let hit = areas
                .range(..=page)
                .next_back()
                .filter(|(&a, ar)| end_of(a, ar) > u128::from(page));
            let Some((&a, ar)) = hit else {
                return fault(FaultKind::Unmapped);
            };
            if !ar.prot.allows(access) {
                return fault(FaultKind::Permission);
            }
            let stop = end.min(end_of(a, ar));
            let target = u128::from(ar.target) + (cur - u128::from(a));
            let n = (stop - cur) as u64;
            match chunks.last_mut() {
                Some(last)
                    if u128::from(last.iova) + u128::from(last.len) == cur
                        && u128::from(last.target) + u128::from(last.len) == target =>
                {
                    last.len += n;
                }
                _ => chunks.push(Chunk {
                    iova: cur as u64,
                    target: target as u64,
                    len: n,
                }),
            }
            cur = stop;
        }
        Expect {
            ok: Some(chunks),
            faults: Vec::new(),
            pages: None,
        }
    }

    /// A read of the guest's tables at IPA `ipa` through the stage 2 of IOAS `ioas` (whose
    /// parent domain ends at `parent_ap`): Ok when it reaches the table memory.
    fn table_read(&self, ioas: ObjId, parent_ap: u128, ipa: u64) -> Result<(), FaultKind> {
        if u128::from(ipa) >= parent_ap {
            return Err(FaultKind::Unmapped);
        }
        let areas = &self.ioas[&ioas].areas;
        let Some((&a, ar)) = areas
            .range(..=ipa)
            .next_back()
            .filter(|(&a, ar)| end_of(a, ar) > u128::from(ipa))
        else {
            return Err(FaultKind::Unmapped);
        };
        if !ar.prot.allows(Access::Read) {
            return Err(FaultKind::Permission);
        }
        // No other map targets the table memory, so only its own mapping reads it.
        if ar.target.wrapping_add(ipa - a) == TABLES_TARGET + (ipa - TABLES_IPA) {
            Ok(())
        } else {
            Err(FaultKind::Unmapped)
        }
    }

    /// Stage 2 of IPA page `ipa` (stage 1 writable: `s1w`) in IOAS `ioas`.
    fn stage2(
        &self,
        ioas: ObjId,
        parent_ap: u128,
        ipa: u64,
        s1w: bool,
        access: Access,
        out: &mut Vec<PageOutcome>,
    ) {
        if u128::from(ipa) >= parent_ap {
            // The parent's page table cannot hold it, whatever the IOAS says.
            out.push(PageOutcome::Fault(FaultKind::Unmapped));
        }
        let areas = &self.ioas[&ioas].areas;
        let hit = areas
            .range(..=ipa)
            .next_back()
            .filter(|(&a, ar)| end_of(a, ar) > u128::from(ipa));
        out.push(match hit {
            None => PageOutcome::Fault(FaultKind::Unmapped),
            Some((&a, ar)) => {
                let allowed = match access {
                    Access::Read => ar.prot.allows(Access::Read),
                    Access::Write => ar.prot.allows(Access::Write) && s1w,
                };
                if allowed {
                    PageOutcome::Ok(ar.target.wrapping_add(ipa - a))
                } else {
                    PageOutcome::Fault(FaultKind::Permission)
                }
            }
        });
    }

    /// What each page of `[iova, end)` may give through nested HWPT `h` at substream `ssid`:
    /// the guest's stage 1 (its reference, plus the values replaced since the HWPT's last
    /// invalidation) composed with the parent IOAS's areas.
    pub(crate) fn nested_pages(
        &self,
        h: ObjId,
        ssid: Option<u32>,
        iova: u64,
        end: u128,
        access: Access,
    ) -> Vec<Vec<PageOutcome>> {
        let hw = &self.hwpt[&h];
        let n = hw.nested.as_ref().expect("nested");
        let ioas = hw.ioas;
        let parent_ap = self.hwpt[&n.parent].made_for;
        let smmu = |cd_table: u64, cd_max: u32, s1dss: u64, cds: &[Option<usize>]| {
            let index = match ssid {
                None if cd_max == 0 => Some(0),
                None => match s1dss {
                    0 => return Ctx::Fault(FaultKind::Blocked),
                    1 => None,
                    _ => Some(0),
                },
                Some(s) if u64::from(s) >= 1 << cd_max => return Ctx::Fault(FaultKind::Blocked),
                Some(s) => Some(s as usize),
            };
            let Some(i) = index else {
                return Ctx::Bypass;
            };
            if let Err(k) = self.table_read(ioas, parent_ap, cd_table + 64 * i as u64) {
                return Ctx::Fault(k);
            }
            match cds[i] {
                Some(t) => Ctx::Table(t),
                None => Ctx::Fault(FaultKind::Blocked),
            }
        };
        let ctx = match n.kind {
            NestKind::SmmuOne => smmu(self.cd_one, 0, 0, &[Some(0)]),
            NestKind::SmmuFour { s1dss } => {
                smmu(self.cd_four, 2, s1dss, &[Some(0), Some(1), None, Some(1)])
            }
            NestKind::Vtd => Ctx::Table(2),
            NestKind::Invalid(_) => unreachable!("never allocated"),
        };
        let first = iova / PAGE;
        let last = ((end - 1) / u128::from(PAGE)) as u64;
        (first..=last)
            .map(|p| {
                let page = p * PAGE;
                let mut out = Vec::new();
                match ctx {
                    Ctx::Fault(k) => out.push(PageOutcome::Fault(k)),
                    Ctx::Bypass => self.stage2(ioas, parent_ap, page, true, access, &mut out),
                    // Not canonical for the 48-bit VT-d width.
                    Ctx::Table(2) if page >= 1 << 47 => {
                        out.push(PageOutcome::Fault(FaultKind::Aperture))
                    }
                    Ctx::Table(t) => match self.table_read(ioas, parent_ap, self.s1[t].root) {
                        Err(k) => out.push(PageOutcome::Fault(k)),
                        Ok(()) => {
                            let now = self.s1[t].reference.get(&page).copied();
                            let stale = n.stale.get(&(t, page)).into_iter().flatten();
                            for v in std::iter::once(&now).chain(stale) {
                                match *v {
                                    None => out.push(PageOutcome::Fault(FaultKind::Unmapped)),
                                    Some((ipa, w)) => {
                                        self.stage2(ioas, parent_ap, ipa, w, access, &mut out)
                                    }
                                }
                            }
                        }
                    },
                }
                out.dedup();
                out
            })
            .collect()
    }

    /// Compares a translation with per-page expectations: chunks must cover the request, be
    /// maximal, and give every page a target it may have; a fault must name a page that may
    /// fault so, after pages that may all translate.
    fn compare_pages(
        pages: &[Vec<PageOutcome>],
        got: Result<Translation<'_>, Fault>,
        iova: u64,
        len: u64,
        ctx: &str,
    ) -> Check {
        let first = iova / PAGE;
        let show = || format!("model expects per page (from page {first:#x}) {pages:x?}");
        let may_ok = |k: usize| pages[k].iter().any(|o| matches!(o, PageOutcome::Ok(_)));
        match got {
            Ok(t) => {
                let n = t.len();
                let chunks: Vec<Chunk> = t.collect();
                if n != chunks.len() {
                    return fail(format!(
                        "{ctx}: Translation::len() said {n}, iterator yielded {}",
                        chunks.len()
                    ));
                }
                let bad = |why: &str| {
                    fail(format!(
                        "{ctx}: translated to {chunks:x?}: {why}; {}",
                        show()
                    ))
                };
                let mut cur = u128::from(iova);
                for (i, c) in chunks.iter().enumerate() {
                    if u128::from(c.iova) != cur || c.len == 0 {
                        return bad("chunks do not cover the request in order");
                    }
                    if i > 0 {
                        let prev = &chunks[i - 1];
                        if u128::from(prev.target) + u128::from(prev.len) == u128::from(c.target) {
                            return bad(
                                "neighbouring chunks with contiguous targets (not maximal)",
                            );
                        }
                    }
                    let stop = u128::from(c.iova) + u128::from(c.len);
                    while cur < stop {
                        let off = (cur - u128::from(c.iova)) as u64;
                        let target = c.target.wrapping_add(off);
                        let k = ((cur as u64) / PAGE - first) as usize;
                        if k >= pages.len()
                            || target % PAGE != (cur as u64) % PAGE
                            || !pages[k].contains(&PageOutcome::Ok(target / PAGE * PAGE))
                        {
                            return bad(&format!("IOVA {cur:#x} to {target:#x} is not allowed"));
                        }
                        cur = (cur / u128::from(PAGE) + 1) * u128::from(PAGE);
                    }
                    cur = stop;
                }
                if cur != u128::from(iova) + u128::from(len) {
                    return bad("chunks do not cover the request");
                }
                Ok(())
            }
            Err(f) => {
                let k = (f.iova / PAGE).wrapping_sub(first) as usize;
                let in_request =
                    f.iova >= iova && u128::from(f.iova) < u128::from(iova) + u128::from(len);
                if !in_request
                    || k >= pages.len()
                    || !pages[k].contains(&PageOutcome::Fault(f.kind))
                    || !(0..k).all(may_ok)
                {
                    return fail(format!("{ctx}: faulted {f:x?}; {}", show()));
                }
                Ok(())
            }
        }
    }

    pub(crate) fn compare(
        exp: &Expect,
        got: Result<Translation<'_>, Fault>,
        iova: u64,
        len: u64,
        ctx: &str,
    ) -> Check {
        if let Some(pages) = &exp.pages {
            return Self::compare_pages(pages, got, iova, len, ctx);
        }
        match got {
            Ok(t) => {
                let n = t.len();
                let chunks: Vec<Chunk> = t.collect();
                if n != chunks.len() {
                    return fail(format!(
                        "{ctx}: Translation::len() said {n}, iterator yielded {}",
                        chunks.len()
                    ));
                }
                match &exp.ok {
                    Some(want) if *want == chunks => Ok(()),
                    _ => fail(format!(
                        "{ctx}: translated to {chunks:x?}, model expects chunks {:x?} or a fault in {:?}",
                        exp.ok, exp.faults
                    )),
                }
            }
            Err(f) => {
                if !exp.faults.contains(&f.kind) {
                    return fail(format!(
                        "{ctx}: faulted {f:?}, model expects chunks {:x?} or a fault in {:?}",
                        exp.ok, exp.faults
                    ));
                }
                let lo = iova / PAGE * PAGE;
                let hi = u128::from(iova) + u128::from(len);
                if matches!(f.kind, FaultKind::Unmapped | FaultKind::Permission)
                    && (f.iova < lo || u128::from(f.iova) >= hi)
                {
                    return fail(format!(
                        "{ctx}: fault {f:?} names an IOVA outside the request"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Translates through `pin_pasid(pasid)` (twice through one guard: G1).
    pub(crate) fn translate_pasid_and_compare(
        &self,
        d: usize,
        pasid: u32,
        iova: u64,
        len: u64,
        access: Access,
        ctx: &str,
    ) -> Check {
        let exp = self.expect_translate(d, pasid, iova, len, access);
        let ctx = &format!(
            "{ctx}: pin_pasid({pasid}).translate(dev {:?}, {iova:#x}, {len:#x}, {access:?}) via {:?}",
            self.devs[d].id,
            self.route(d, pasid)
        );
        let guard = self.devs[d].handle.pin_pasid(pasid);
        let first = guard.translate(iova, len, access);
        self.last.set(Some(match &first {
            Ok(_) => Outcome::Ok,
            Err(f) => Outcome::Fault(f.kind),
        }));
        Self::compare(&exp, first, iova, len, ctx)?;
        Self::compare(&exp, guard.translate(iova, len, access), iova, len, ctx)
    }

    pub(crate) fn op_translate_pasid(
        &self,
        d: usize,
        pasid: u32,
        at: At,
        len: TLen,
        access: Access,
        ctx: &str,
    ) -> Check {
        let (iova, len) = self.resolve_translate(d, pasid, at, len);
        self.translate_pasid_and_compare(d, pasid, iova, len, access, ctx)
    }

    pub(crate) fn translate_and_compare(
        &self,
        d: usize,
        iova: u64,
        len: u64,
        access: Access,
        pinned: bool,
        ctx: &str,
    ) -> Check {
        let exp = self.expect_translate(d, 0, iova, len, access);
        let ctx = &format!(
            "{ctx}: translate(dev {:?}, {iova:#x}, {len:#x}, {access:?}, pinned {pinned}) via {:?}",
            self.devs[d].id,
            self.route(d, 0)
        );
        let handle = &self.devs[d].handle;
        self.last
            .set(Some(match handle.translate(iova, len, access) {
                Ok(_) => Outcome::Ok,
                Err(f) => Outcome::Fault(f.kind),
            }));
        if pinned {
            let guard = handle.pin();
            Self::compare(&exp, guard.translate(iova, len, access), iova, len, ctx)?;
            Self::compare(&exp, guard.translate(iova, len, access), iova, len, ctx)
        } else {
            Self::compare(&exp, handle.translate(iova, len, access), iova, len, ctx)
        }
    }

    pub(crate) fn op_translate(
        &self,
        d: usize,
        at: At,
        len: TLen,
        access: Access,
        pinned: bool,
        ctx: &str,
    ) -> Check {
        let (iova, len) = self.resolve_translate(d, 0, at, len);
        self.translate_and_compare(d, iova, len, access, pinned, ctx)
    }

    /// Translates every check page (read and write) and every area of each device's IOAS.
    pub(crate) fn check_all(&self, ctx: &str) -> Check {
        for d in 0..self.devs.len() {
            if self.dev_hwpt(d).is_none() {
                // Blocked everywhere: a few pages, in and past the narrow aperture, suffice.
                for p in [0, 9, 40, 511, 512, 1024] {
                    self.translate_and_compare(d, p * PAGE, PAGE, Access::Read, false, ctx)?;
                }
                continue;
            }
            for range in CHECK_PAGES {
                for p in range.clone() {
                    for access in [Access::Read, Access::Write] {
                        self.translate_and_compare(d, p * PAGE, PAGE, access, false, ctx)?;
                    }
                }
            }
            if let Route::Nested(..) = self.route(d, 0) {
                // The guest's stage-1 windows, whole.
                for (p, n) in [(0u64, 24u64), (504, 12)] {
                    self.translate_run(d, p * PAGE, u128::from((p + n) * PAGE), ctx)?;
                }
            } else if let Some(ioas) = self.dev_ioas(d) {
                // Every area, and every run of back-to-back areas in one request (chunks merge
                // where targets are contiguous and split where they are not).
                let mut run: Option<(u64, u128)> = None;
                for (&a, ar) in &self.ioas[&ioas].areas {
                    let len = ar.len.min(64 * PAGE);
                    self.translate_and_compare(d, a, len, Access::Read, true, ctx)?;
                    run = match run {
                        Some((s, e)) if e == u128::from(a) => Some((s, end_of(a, ar))),
                        Some((s, e)) => {
                            self.translate_run(d, s, e, ctx)?;
                            Some((a, end_of(a, ar)))
                        }
                        None => Some((a, end_of(a, ar))),
                    };
                }
                if let Some((s, e)) = run {
                    self.translate_run(d, s, e, ctx)?;
                }
            }
        }
        self.check_pasids(ctx)
    }

    /// Every PASID of every PASID-capable device (and the first one past its range): the
    /// stage-1 window page by page, and whole.
    fn check_pasids(&self, ctx: &str) -> Check {
        for d in 0..self.devs.len() {
            let bits = self.devs[d].pasid_bits;
            if bits == 0 {
                continue;
            }
            for pasid in 1..=(1u32 << bits) {
                if matches!(self.route(d, pasid), Route::Blocked) {
                    self.translate_pasid_and_compare(d, pasid, 0, PAGE, Access::Read, ctx)?;
                    continue;
                }
                for p in 0..24u64 {
                    for access in [Access::Read, Access::Write] {
                        self.translate_pasid_and_compare(d, pasid, p * PAGE, PAGE, access, ctx)?;
                    }
                }
                for (p, n) in [(0u64, 24u64), (504, 12)] {
                    self.translate_pasid_and_compare(
                        d,
                        pasid,
                        p * PAGE,
                        n * PAGE,
                        Access::Read,
                        ctx,
                    )?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn translate_run(&self, d: usize, start: u64, end: u128, ctx: &str) -> Check {
        let len = (end - u128::from(start)).min(u128::from(1024 * PAGE)) as u64;
        for access in [Access::Read, Access::Write] {
            self.translate_and_compare(d, start, len, access, false, ctx)?;
        }
        Ok(())
    }
}
