//! The IOAS: the authoritative set of IOVA → target mappings ("areas") of one I/O address
//! space, the reserved ranges of the devices attached to it, and the paging domains that
//! mirror it.
//!
//! Every change to the area set is applied to every mirroring domain before the IOAS lock is
//! released, and a new domain is populated under the same lock before it joins the list, so a
//! domain always holds exactly its IOAS's areas (G7). The rules are iommufd's: fixed or
//! automatic IOVAs, `EEXIST` on overlap, areas never split, unmap-all with `(0, u64::MAX)`.

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::pagetable::RetiredTables;
use crate::sync::{Arc, Mutex};
use crate::types::{ObjId, Prot, PAGE_SIZE};
use std::collections::BTreeMap;
use std::ops::Range;

/// One mapping: `start ..= last` (the map key is `start`) to `target ..`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Area {
    pub(crate) last: u64,
    pub(crate) target: u64,
    pub(crate) prot: Prot,
}

/// A page-rounded reserved IOVA range of an attached device, inclusive.
#[derive(Clone, Debug)]
pub(crate) struct Reservation {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) dev: ObjId,
    /// The attachment that brought it: 0 for the RID, else a PASID.
    pub(crate) pasid: u32,
}

/// What an attached device contributes to an IOAS, per attachment: its RID (PASID 0) or one
/// of its PASIDs (a PASID domain obeys the device's aperture and reserved ranges as the RID
/// domain does).
#[derive(Clone)]
pub(crate) struct DeviceLimits {
    pub(crate) dev: ObjId,
    pub(crate) pasid: u32,
    pub(crate) aperture_last: u64,
    pub(crate) reserved: Vec<(u64, u64)>,
}

/// The half-open range `first ..= last` as errors print it (saturating at the top page).
pub(crate) fn span(first: u64, last: u64) -> Range<u64> {
    first..last.saturating_add(1)
}

/// An I/O address space.
pub(crate) struct Ioas {
    pub(crate) id: ObjId,
    pub(crate) state: Mutex<IoasState>,
}

impl Ioas {
    pub(crate) fn new(id: ObjId) -> Ioas {
        Ioas {
            id,
            state: Mutex::new(IoasState::default()),
        }
    }
}

/// The part of an IOAS its lock protects.
#[derive(Default)]
pub(crate) struct IoasState {
    /// Set by `destroy`: a map or unmap that looked the IOAS up just before fails `ENOENT`.
    pub(crate) destroyed: bool,
    pub(crate) areas: BTreeMap<u64, Area>,
    /// Every paging domain built on this IOAS: committed ones by HWPT id, and pending ones
    /// (`None`: populated by an attach or `hwpt_alloc` that has not committed yet).
    pub(crate) domains: Vec<(Option<ObjId>, Arc<Domain>)>,
    pub(crate) reserved: Vec<Reservation>,
    /// Aperture ends of the attached devices, by attachment (device, PASID or 0).
    pub(crate) apertures: Vec<((ObjId, u32), u64)>,
}

impl IoasState {
    /// The last IOVA every attached device and every domain can reach.
    pub(crate) fn limit(&self) -> u64 {
        let devs = self.apertures.iter().map(|&(_, last)| last);
        let doms = self
            .domains
            .iter()
            .filter_map(|(_, d)| d.page_table().map(|pt| pt.aperture_last()));
        devs.chain(doms).min().unwrap_or(u64::MAX)
    }

    /// The first area that overlaps `first ..= last`.
    pub(crate) fn area_overlapping(&self, first: u64, last: u64) -> Option<(u64, Area)> {
        if let Some((&s, a)) = self.areas.range(..=first).next_back() {
            if a.last >= first {
                return Some((s, *a));
            }
        }
        self.areas.range(first..=last).next().map(|(&s, a)| (s, *a))
    }

    fn reserved_overlapping(&self, first: u64, last: u64) -> Option<&Reservation> {
        self.reserved
            .iter()
            .find(|r| r.first <= last && r.last >= first)
    }

    /// `EINVAL` if some area lies outside the device's aperture.
    pub(crate) fn check_fits(&self, dev: &DeviceLimits, pt: ObjId) -> Result<()> {
        // Areas do not overlap, so the one that starts last also ends last.
        match self.areas.last_key_value() {
            Some((&s, a)) if a.last > dev.aperture_last => Err(Error::Incompatible {
                dev: dev.dev,
                pt,
                mapping: span(s, a.last),
                aperture_end: dev.aperture_last.saturating_add(1),
            }),
            _ => Ok(()),
        }
    }

    /// `EADDRINUSE` if one of the device's reserved ranges collides with an area.
    pub(crate) fn check_reserved(&self, dev: &DeviceLimits) -> Result<()> {
        for &(first, last) in &dev.reserved {
            if let Some((s, a)) = self.area_overlapping(first, last) {
                return Err(Error::ReservedInUse {
                    dev: dev.dev,
                    reserved: span(first, last),
                    mapping: span(s, a.last),
                });
            }
        }
        Ok(())
    }

    /// Records an attached device's reservations and aperture (after the checks passed).
    pub(crate) fn add_device(&mut self, dev: &DeviceLimits) {
        self.apertures
            .push(((dev.dev, dev.pasid), dev.aperture_last));
        self.reserved
            .extend(dev.reserved.iter().map(|&(first, last)| Reservation {
                first,
                last,
                dev: dev.dev,
                pasid: dev.pasid,
            }));
    }

    /// Forgets an attachment (a device's RID, `pasid` 0, or one of its PASIDs) that left this
    /// IOAS; the device's other attachments to it keep their reservations.
    pub(crate) fn remove_device(&mut self, dev: ObjId, pasid: u32) {
        self.apertures.retain(|&(a, _)| a != (dev, pasid));
        self.reserved.retain(|r| (r.dev, r.pasid) != (dev, pasid));
    }

    /// Fills `domain` with every area of this IOAS and adds it to the mirror list as
    /// pending, so that maps and unmaps from now on reach it too (G7). Work that grows with
    /// the IOAS, done under this IOAS's lock only (G14).
    pub(crate) fn add_pending(&mut self, domain: Domain) -> Arc<Domain> {
        if let Some(pt) = domain.page_table() {
            for (&start, a) in &self.areas {
                pt.map(start, a.target, a.last - start + 1, a.prot);
            }
        }
        let domain = Arc::new(domain);
        self.domains.push((None, domain.clone()));
        domain
    }

    /// Names a pending domain with its HWPT id (the HWPT's commit).
    pub(crate) fn commit_pending(&mut self, domain: &Arc<Domain>, hwpt: ObjId) {
        for (id, d) in &mut self.domains {
            if id.is_none() && Arc::ptr_eq(d, domain) {
                *id = Some(hwpt);
                return;
            }
        }
        debug_assert!(false, "committing a domain that is not pending");
    }

    /// Drops a pending domain that its call did not commit.
    pub(crate) fn discard_pending(&mut self, domain: &Arc<Domain>) {
        self.domains
            .retain(|(id, d)| id.is_some() || !Arc::ptr_eq(d, domain));
    }

    /// Removes a HWPT's domain from the mirror list.
    pub(crate) fn remove_domain(&mut self, hwpt: ObjId) {
        self.domains.retain(|(id, _)| *id != Some(hwpt));
    }

    /// HWPTs built on this IOAS (pending domains do not count: their call may still fail).
    pub(crate) fn hwpt_count(&self) -> usize {
        self.domains.iter().filter(|(id, _)| id.is_some()).count()
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
                if let Some(r) = self.reserved_overlapping(iova, last) {
                    return Err(Error::InReservedRange {
                        range: span(iova, last),
                        reserved: span(r.first, r.last),
                    });
                }
                if let Some((s, a)) = self.area_overlapping(iova, last) {
                    return Err(Error::Exists {
                        range: span(iova, last),
                        existing: span(s, a.last),
                    });
                }
                iova
            }
            None => self.alloc_iova(target, len, limit)?,
        };
        let last = iova + (len - 1);
        self.areas.insert(iova, Area { last, target, prot });
        self.map_domains(iova, target, len, prot);
        Ok(iova)
    }

    /// Applies a new area to every mirroring domain, one after the other. Filling two
    /// domains from rayon's pool measured no faster on 2 vCPUs (`examples/populate.rs`): the
    /// work is bound by first-touch page faults and cache misses, not by a core.
    fn map_domains(&self, iova: u64, target: u64, len: u64, prot: Prot) {
        for (_, d) in &self.domains {
            if let Some(pt) = d.page_table() {
                pt.map(iova, target, len, prot);
            }
        }
    }

    /// Finds the lowest free IOVA for `len` bytes, aligned like `target` up to 1 GiB (so that
    /// huge leaves stay possible), avoiding areas, reserved ranges and the aperture's end.
    fn alloc_iova(&self, target: u64, len: u64, limit: u64) -> Result<u64> {
        let mut align = PAGE_SIZE;
        for size in [1u64 << 21, 1u64 << 30] {
            if target % size == 0 && len >= size {
                align = size;
            }
        }
        let mut obstacles: Vec<(u64, u64)> = self
            .areas
            .iter()
            .map(|(&s, a)| (s, a.last))
            .chain(self.reserved.iter().map(|r| (r.first, r.last)))
            .collect();
        obstacles.sort_unstable();
        let mut cursor: u64 = 0;
        let fits = |start: u64| start.checked_add(len - 1).filter(|&l| l <= limit);
        for (first, last) in obstacles {
            if let Some(start) = align_up(cursor, align) {
                if let Some(end) = fits(start) {
                    if end < first {
                        return Ok(start);
                    }
                }
            }
            if last == u64::MAX {
                return Err(Error::NoSpace { len, align });
            }
            cursor = cursor.max(last + 1);
        }
        align_up(cursor, align)
            .filter(|&s| fits(s).is_some())
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
        let mut hit = Vec::new();
        if let Some((s, a)) = self.area_overlapping(first, last) {
            for (&s, a) in self.areas.range(s..=last) {
                if s < first || a.last > last {
                    return Err(Error::SplitsArea {
                        range: span(first, last),
                        area: span(s, a.last),
                    });
                }
                hit.push((s, a.last));
            }
            debug_assert_eq!(hit.first().map(|h| h.0), Some(s));
            let _ = a;
        }
        if hit.is_empty() {
            return if all {
                Ok(0)
            } else {
                Err(Error::NotMapped {
                    range: span(first, last),
                })
            };
        }
        let mut bytes = 0u64;
        for &(s, l) in &hit {
            self.areas.remove(&s);
            let n = l - s + 1;
            bytes = bytes.saturating_add(n);
            for (_, d) in &self.domains {
                if let Some(pt) = d.page_table() {
                    pt.unmap(s, n, retired);
                }
            }
        }
        Ok(bytes)
    }
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// Validates a map or unmap's own arguments (no state needed): non-zero, 4 KiB aligned, no
/// wrap-around.
pub(crate) fn check_range_args(
    what: &'static str,
    iova: u64,
    target: Option<u64>,
    len: u64,
) -> Result<()> {
    if len == 0 {
        return Err(Error::ZeroLength { what });
    }
    if iova % PAGE_SIZE != 0 {
        return Err(Error::Misaligned {
            what: "iova",
            value: iova,
        });
    }
    if let Some(t) = target {
        if t % PAGE_SIZE != 0 {
            return Err(Error::Misaligned {
                what: "target",
                value: t,
            });
        }
    }
    if len % PAGE_SIZE != 0 {
        return Err(Error::Misaligned {
            what: "length",
            value: len,
        });
    }
    if iova.checked_add(len - 1).is_none() {
        return Err(Error::Overflow {
            what: "iova",
            start: iova,
            len,
        });
    }
    if let Some(t) = target {
        if t.checked_add(len - 1).is_none() {
            return Err(Error::Overflow {
                what: "target",
                start: t,
                len,
            });
        }
    }
    Ok(())
}
