//! Translations: what the model predicts (the merged chunks, or the fault kinds allowed) and
//! the comparison with what a device handle returns, one-shot and through a guard.

use crate::common::PAGE;
use crate::reference::{end_of, Area, Expect, Model, Outcome};
use crate::strategies::{At, TLen};
use crate::{fail, Check, CHECK_PAGES};
use viommu::{Access, Chunk, Fault, FaultKind, ObjId, Translation};

impl Model {
    /// The IOAS whose areas `At::Area` and `TLen` name for device `d`: its own, or any.
    fn view_ioas(&self, d: usize) -> Option<ObjId> {
        self.dev_ioas(d)
            .or_else(|| self.ioas.keys().next().copied())
    }

    /// The area of device `d`'s IOAS (or of any IOAS) that an `At::Area` names.
    pub(crate) fn area_for(&self, d: usize, i: usize) -> Option<(u64, Area)> {
        let ioas = self.view_ioas(d)?;
        let areas = &self.ioas[&ioas].areas;
        if areas.is_empty() {
            return None;
        }
        let (&a, ar) = areas.iter().nth(i % areas.len()).expect("non-empty");
        Some((a, *ar))
    }

    pub(crate) fn resolve_translate(&self, d: usize, at: At, len: TLen) -> (u64, u64) {
        let iova = match at {
            At::Raw(v) => v,
            At::Area(i, p, o) => match self.area_for(d, i) {
                Some((a, ar)) => a + (p % (ar.len / PAGE)) * PAGE + o,
                None => p * PAGE + o,
            },
        };
        let len = match len {
            TLen::Bytes(n) => n,
            TLen::ToAreaEnd(extra) => {
                let ioas = self.view_ioas(d);
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
                let ioas = self.view_ioas(d);
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

    pub(crate) fn expect_translate(&self, d: usize, iova: u64, len: u64, access: Access) -> Expect {
        let aperture = self.devs[d].aperture;
        let start = u128::from(iova);
        let end = start + u128::from(len);
        let outside = end > aperture || start >= aperture;
        let Some(ioas) = self.dev_ioas(d) else {
            let mut faults = vec![FaultKind::Blocked];
            if outside {
                faults.push(FaultKind::Aperture);
            }
            return Expect {
                ok: (len == 0).then(Vec::new),
                faults,
            };
        };
        if len == 0 {
            return Expect {
                ok: Some(Vec::new()),
                faults: if outside {
                    vec![FaultKind::Aperture]
                } else {
                    Vec::new()
                },
            };
        }
        if outside {
            return Expect {
                ok: None,
                faults: vec![FaultKind::Aperture],
            };
        }
        let areas = &self.ioas[&ioas].areas;
        // Past the aperture of the device its HWPT was made for, a request that cannot
        // translate may also fault `Aperture` (the domain's aperture; see the module docs).
        let domain_aperture = self.hwpt[&self.dev_hwpt(d).expect("attached")].made_for;
        let fault = |kind| Expect {
            ok: None,
            faults: if end > domain_aperture {
                vec![kind, FaultKind::Aperture]
            } else {
                vec![kind]
            },
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
        }
    }

    pub(crate) fn compare(
        exp: &Expect,
        got: Result<Translation<'_>, Fault>,
        iova: u64,
        len: u64,
        ctx: &str,
    ) -> Check {
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

    pub(crate) fn translate_and_compare(
        &self,
        d: usize,
        iova: u64,
        len: u64,
        access: Access,
        pinned: bool,
        ctx: &str,
    ) -> Check {
        let exp = self.expect_translate(d, iova, len, access);
        let ctx = &format!(
            "{ctx}: translate(dev {:?}, {iova:#x}, {len:#x}, {access:?}, pinned {pinned})",
            self.devs[d].id
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
        let (iova, len) = self.resolve_translate(d, at, len);
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
            if let Some(ioas) = self.dev_ioas(d) {
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
