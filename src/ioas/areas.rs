//! The area set of an IOAS: the authoritative IOVA → target mappings, kept in every
//! mirroring domain as they change.

use super::args::check_range_args;
use super::holes::{Holes, ALIGNS};
use super::{span, IoasState};
use crate::error::{Error, Result};
use crate::pagetable::RetiredTables;
use crate::types::Prot;

/// One mapping: `start ..= last` (the map key is `start`) to `target ..`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Area {
    pub(crate) last: u64,
    pub(crate) target: u64,
    pub(crate) prot: Prot,
}

impl IoasState {
    /// The first area that overlaps `first ..= last`.
    pub(crate) fn area_overlapping(&self, first: u64, last: u64) -> Option<(u64, Area)> {
        if let Some((&s, a)) = self.areas.range(..=first).next_back() {
            if a.last >= first {
                return Some((s, *a));
            }
        }
        self.areas.range(first..=last).next().map(|(&s, a)| (s, *a))
    }

    /// True if an area overlaps `first ..= last`: one lookup (the area starting last at or
    /// before `last` is the only one that can, areas being disjoint).
    #[inline]
    fn any_area_overlaps(&self, first: u64, last: u64) -> bool {
        self.areas
            .range(..=last)
            .next_back()
            .is_some_and(|(_, a)| a.last >= first)
    }

    /// Maps `len` bytes of `target` at `iova` (or at a free IOVA) in the area set and in
    /// every mirroring domain. Arguments were validated by `check_map_args`.
    pub(crate) fn map(
        &mut self,
        iova: Option<u64>,
        target: u64,
        len: u64,
        prot: Prot,
    ) -> Result<u64> {
        let limit = self.limit();
        let iova = match iova {
            Some(iova) => {
                let last = iova + (len - 1);
                if last > limit {
                    return Err(Error::OutsideAperture {
                        range: span(iova, last),
                        aperture_end: limit.saturating_add(1),
                    });
                }
                if self.holes.as_ref().is_some_and(|h| h.contains(iova, last)) {
                    // Free: neither an area nor a reservation is there (one lookup).
                } else if !self.any_area_overlaps(iova, last) && self.reserved.is_empty() {
                    // Free, in one lookup of the area set (no reservations to check).
                } else if let Some(r) = self.reserved_overlapping(iova, last) {
                    return Err(Error::InReservedRange {
                        range: span(iova, last),
                        reserved: span(r.first, r.last),
                    });
                } else if let Some((s, a)) = self.area_overlapping(iova, last) {
                    return Err(Error::Exists {
                        range: span(iova, last),
                        existing: span(s, a.last),
                    });
                }
                iova
            }
            None => self.alloc_iova(target, len, limit)?,
        };
        self.check_budget(iova, target, len)?;
        // The mirrors first: one that refuses leaves nothing to roll back here (G8, G15).
        self.mirrors_map(iova, target, len, prot)?;
        let last = iova + (len - 1);
        self.areas.insert(iova, Area { last, target, prot });
        if let Some(h) = &mut self.holes {
            h.occupy(iova, last);
        }
        self.map_domains(iova, target, len, prot);
        Ok(iova)
    }

    /// Applies a new area to every mirroring domain, one after the other. Filling two
    /// domains from rayon's pool measured no faster on 2 vCPUs (`examples/populate.rs`): the
    /// work is bound by first-touch page faults and cache misses, not by a core. A pending
    /// domain the area does not fit in is spoiled, not narrowed to (see `mirrors.rs`).
    fn map_domains(&mut self, iova: u64, target: u64, len: u64, prot: Prot) {
        let last = iova + (len - 1);
        for m in &mut self.domains {
            let Some(pt) = m.domain.page_table() else {
                continue;
            };
            if m.spoiled {
                continue;
            }
            if last > pt.aperture_last() {
                debug_assert!(m.hwpt.is_none(), "the limit covers committed domains");
                m.spoiled = true;
                continue;
            }
            pt.map(iova, target, len, prot);
        }
    }

    /// Finds the lowest free IOVA for `len` bytes, aligned like `target` up to 1 GiB (so that
    /// huge leaves stay possible), avoiding areas, reserved ranges and the aperture's end.
    /// O(log n) in the number of holes ([`Holes::first_fit`]); the first call builds the
    /// index in O(n log n).
    fn alloc_iova(&mut self, target: u64, len: u64, limit: u64) -> Result<u64> {
        let mut class = 0;
        for (k, &size) in ALIGNS.iter().enumerate().skip(1) {
            if target % size == 0 && len >= size {
                class = k;
            }
        }
        let align = ALIGNS[class];
        // The lowest hole that holds `len` bytes from an aligned start; a later one starts
        // higher, so if this one's start runs past the limit, every one does.
        let (areas, reserved) = (&self.areas, &self.reserved);
        let holes = self.holes.get_or_insert_with(|| {
            // Areas come sorted; the few reservations are sorted here and merged in.
            let mut res: Vec<(u64, u64)> = reserved.iter().map(|r| (r.first, r.last)).collect();
            res.sort_unstable();
            let mut res = res.into_iter().peekable();
            let mut areas = areas.iter().map(|(&s, a)| (s, a.last)).peekable();
            Holes::around(std::iter::from_fn(|| match (areas.peek(), res.peek()) {
                (Some(a), Some(r)) if r < a => res.next(),
                (Some(_), _) => areas.next(),
                (None, _) => res.next(),
            }))
        });
        holes
            .first_fit(class, len)
            .filter(|&start| start.checked_add(len - 1).is_some_and(|l| l <= limit))
            .ok_or(Error::NoSpace { len, align })
    }

    /// Removes the areas inside `iova .. iova + len` from the set and from every domain.
    /// `(0, u64::MAX)` removes everything. Returns the bytes unmapped.
    pub(crate) fn unmap(
        &mut self,
        iova: u64,
        len: u64,
        retired: &mut RetiredTables,
    ) -> Result<u64> {
        let all = iova == 0 && len == u64::MAX;
        let (first, last) = if all {
            (0, u64::MAX)
        } else {
            check_range_args("unmap", iova, None, len)?;
            (iova, iova + (len - 1))
        };
        // The common case, the range is exactly one area: one search, found and removed.
        if let std::collections::btree_map::Entry::Occupied(e) = self.areas.entry(first) {
            if e.get().last == last {
                e.remove();
                return Ok(self.unmap_removed(first, last, retired));
            }
        }
        // Check every area in the range first (nothing changes on `SplitsArea`), then remove
        // them one by one: no list to allocate.
        let Some((from, _)) = self.area_overlapping(first, last) else {
            return if all {
                Ok(0)
            } else {
                Err(Error::NotMapped {
                    range: span(first, last),
                })
            };
        };
        let mut count = 0usize;
        let mut one = (from, from);
        for (&s, a) in self.areas.range(from..=last) {
            if s < first || a.last > last {
                return Err(Error::SplitsArea {
                    range: span(first, last),
                    area: span(s, a.last),
                });
            }
            count += 1;
            one = (s, a.last);
        }
        let mut bytes = 0u64;
        for _ in 0..count {
            let (s, l) = if count == 1 {
                // The common case: one area, found above; no second search.
                one
            } else {
                self.areas
                    .range(from..=last)
                    .next()
                    .map(|(&s, a)| (s, a.last))
                    .expect("counted above")
            };
            self.areas.remove(&s);
            bytes = bytes.saturating_add(self.unmap_removed(s, l, retired));
        }
        Ok(bytes)
    }

    /// Finishes the unmap of an area `s ..= l` just taken out of the area set: frees its hole
    /// and clears it from every mirroring domain. Returns its length.
    fn unmap_removed(&mut self, s: u64, l: u64, retired: &mut RetiredTables) -> u64 {
        if let Some(h) = &mut self.holes {
            h.release(s, l);
        }
        let n = l - s + 1;
        for d in self.mirrors() {
            if let Some(pt) = d.page_table() {
                pt.unmap(s, n, retired);
            }
        }
        self.mirrors_unmap(s, n);
        n
    }
}
