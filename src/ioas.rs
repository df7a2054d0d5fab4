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
pub(crate) struct IoasState {
    /// Set by `destroy`: a map or unmap that looked the IOAS up just before fails `ENOENT`.
    pub(crate) destroyed: bool,
    pub(crate) areas: BTreeMap<u64, Area>,
    /// Every paging domain built on this IOAS: committed ones by HWPT id, and pending ones
    /// (`None`: populated by an attach or `hwpt_alloc` that has not committed yet).
    domains: Vec<(Option<ObjId>, Arc<Domain>)>,
    reserved: Vec<Reservation>,
    /// Aperture ends of the attached devices, by attachment (device, PASID or 0).
    apertures: Vec<((ObjId, u32), u64)>,
    /// The free IOVA ranges (everything outside `areas` and `reserved`), for automatic
    /// IOVAs: built by the first automatic map, then kept up to date, so that an IOAS whose
    /// maps all have fixed IOVAs (a virtio-iommu front end's) does not pay for it.
    holes: Option<Holes>,
    /// [`IoasState::limit`], recomputed when a device or a domain comes or goes.
    limit: u64,
}

impl Default for IoasState {
    fn default() -> IoasState {
        IoasState {
            destroyed: false,
            areas: BTreeMap::new(),
            domains: Vec::new(),
            reserved: Vec::new(),
            apertures: Vec::new(),
            holes: None,
            limit: u64::MAX,
        }
    }
}

impl IoasState {
    /// The last IOVA every attached device and every domain can reach.
    pub(crate) fn limit(&self) -> u64 {
        debug_assert_eq!(self.limit, self.compute_limit());
        self.limit
    }

    fn compute_limit(&self) -> u64 {
        let devs = self.apertures.iter().map(|&(_, last)| last);
        let doms = self
            .domains
            .iter()
            .filter_map(|(_, d)| d.page_table().map(|pt| pt.aperture_last()));
        devs.chain(doms).min().unwrap_or(u64::MAX)
    }

    /// Recomputes the cached limit after the device or domain lists changed.
    fn refresh_limit(&mut self) {
        self.limit = self.compute_limit();
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
        for &(first, last) in &dev.reserved {
            debug_assert!(self.area_overlapping(first, last).is_none());
            self.reserved.push(Reservation {
                first,
                last,
                dev: dev.dev,
                pasid: dev.pasid,
            });
            if let Some(h) = &mut self.holes {
                h.occupy(first, last);
            }
        }
        self.refresh_limit();
    }

    /// Forgets an attachment (a device's RID, `pasid` 0, or one of its PASIDs) that left this
    /// IOAS; the device's other attachments to it keep their reservations.
    pub(crate) fn remove_device(&mut self, dev: ObjId, pasid: u32) {
        self.apertures.retain(|&(a, _)| a != (dev, pasid));
        // Free the device's ranges (no area lies in a reserved range), then take back what
        // other devices' reservations still cover (a handful of ranges).
        let mut holes = self.holes.as_mut();
        let mut freed = false;
        self.reserved.retain(|r| {
            if (r.dev, r.pasid) != (dev, pasid) {
                return true;
            }
            if let Some(h) = holes.as_mut() {
                h.release(r.first, r.last);
            }
            freed = true;
            false
        });
        if let (true, Some(h)) = (freed, holes) {
            for r in &self.reserved {
                h.occupy(r.first, r.last);
            }
        }
        self.refresh_limit();
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
        self.refresh_limit();
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
        self.refresh_limit();
    }

    /// Removes a HWPT's domain from the mirror list.
    pub(crate) fn remove_domain(&mut self, hwpt: ObjId) {
        self.domains.retain(|(id, _)| *id != Some(hwpt));
        self.refresh_limit();
    }

    /// Every domain mirroring this IOAS, committed or pending.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &Arc<Domain>> {
        self.domains.iter().map(|(_, d)| d)
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
                if self.holes.as_ref().is_some_and(|h| h.contains(iova, last)) {
                    // Free: neither an area nor a reservation is there (one lookup).
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
            if let Some(h) = &mut self.holes {
                h.release(s, l);
            }
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

/// The alignments an automatic IOVA can ask for: 4 KiB, 2 MiB, 1 GiB (the leaf sizes).
const ALIGNS: [u64; 3] = [PAGE_SIZE, 1 << 21, 1 << 30];

/// No node.
const NIL: u32 = u32::MAX;

/// The free IOVA ranges of an IOAS, maximal and disjoint: the complement of its areas and
/// reserved ranges in `0 ..= u64::MAX` (the aperture's end is applied when allocating).
///
/// A treap ordered by address (an arena of nodes) whose nodes carry, for each alignment of
/// `ALIGNS`, the most bytes a hole holds from its first aligned start, and the largest such
/// value in their subtree: "the lowest hole that holds `len` bytes from an aligned start" is
/// one descent, and every change is O(log n) expected. A hole that only shrinks or grows keeps
/// its node (its place in the order does not change), so a map or unmap inside a large hole
/// mostly edits nodes in place.
pub(crate) struct Holes {
    nodes: Vec<Hole>,
    /// Indices of unused nodes.
    spare: Vec<u32>,
    root: u32,
    /// Mixed into every priority, random for each index: IOVAs (which a guest may choose)
    /// cannot be picked to make the treap deep.
    salt: u64,
}

struct Hole {
    first: u64,
    last: u64,
    /// Heap priority (a salted hash of the first key the node had: the shape of a random
    /// BST).
    prio: u64,
    left: u32,
    right: u32,
    room: [u64; 3],
    /// The largest `room` in this subtree, per alignment.
    best: [u64; 3],
}

impl Default for Holes {
    fn default() -> Holes {
        let mut h = Holes {
            nodes: Vec::new(),
            spare: Vec::new(),
            root: NIL,
            salt: random_salt(),
        };
        h.insert(0, u64::MAX);
        h
    }
}

/// How many bytes `first ..= last` holds from its first start aligned to each of `ALIGNS`
/// (saturating: the whole space counts as `u64::MAX`; 0 if no aligned start lies in it).
fn aligned_room(first: u64, last: u64) -> [u64; 3] {
    ALIGNS.map(|a| match align_up(first, a) {
        Some(s) if s <= last => (last - s).saturating_add(1),
        _ => 0,
    })
}

impl Holes {
    /// The holes around `used` (ranges sorted by first IOVA, possibly overlapping), built in
    /// O(n): the treap is put together left to right with a stack, then its maxima filled in.
    fn around(used: impl Iterator<Item = (u64, u64)>) -> Holes {
        let mut h = Holes {
            nodes: Vec::new(),
            spare: Vec::new(),
            root: NIL,
            salt: random_salt(),
        };
        // The right spine of the tree built so far.
        let mut spine: Vec<u32> = Vec::new();
        let mut push = |h: &mut Holes, first: u64, last: u64| {
            let room = aligned_room(first, last);
            let i = u32::try_from(h.nodes.len()).expect("fewer than 2^32 holes");
            h.nodes.push(Hole {
                first,
                last,
                prio: mix(first ^ h.salt),
                left: NIL,
                right: NIL,
                room,
                best: room,
            });
            let mut below = NIL;
            while let Some(&top) = spine.last() {
                if h.node(top).prio >= h.node(i).prio {
                    break;
                }
                below = top;
                spine.pop();
            }
            h.node_mut(i).left = below;
            if let Some(&top) = spine.last() {
                h.node_mut(top).right = i;
            }
            spine.push(i);
        };
        // The next IOVA not known to be used; `None` once the space is used to its top.
        let mut free = Some(0u64);
        for (first, last) in used {
            let Some(f) = free else { break };
            if first > f {
                push(&mut h, f, first - 1);
            }
            if last >= f {
                free = last.checked_add(1);
            }
        }
        if let Some(f) = free {
            push(&mut h, f, u64::MAX);
        }
        h.root = spine.first().copied().unwrap_or(NIL);
        h.fill_best(h.root);
        h
    }

    /// Computes `best` in subtree `t`, bottom-up.
    fn fill_best(&mut self, t: u32) {
        if t != NIL {
            self.fill_best(self.node(t).left);
            self.fill_best(self.node(t).right);
            self.update(t);
        }
    }

    fn node(&self, t: u32) -> &Hole {
        &self.nodes[t as usize]
    }

    fn node_mut(&mut self, t: u32) -> &mut Hole {
        &mut self.nodes[t as usize]
    }

    fn best(&self, t: u32, class: usize) -> u64 {
        if t == NIL {
            0
        } else {
            self.node(t).best[class]
        }
    }

    /// Recomputes `t`'s `best` from its room and its children's.
    fn update(&mut self, t: u32) {
        let n = self.node(t);
        let (l, r, room) = (n.left, n.right, n.room);
        let best = std::array::from_fn(|k| room[k].max(self.best(l, k)).max(self.best(r, k)));
        self.node_mut(t).best = best;
    }

    /// The hole with the greatest first IOVA `<= x`, or `NIL`.
    fn find_le(&self, x: u64) -> u32 {
        let (mut t, mut found) = (self.root, NIL);
        while t != NIL {
            let n = self.node(t);
            if n.first <= x {
                found = t;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        found
    }

    /// Gives hole `t` new bounds that keep its place in the order, and refreshes the
    /// subtree maxima on its path.
    fn set(&mut self, t: u32, first: u64, last: u64) {
        let n = self.node_mut(t);
        n.first = first;
        n.last = last;
        n.room = aligned_room(first, last);
        self.refresh(self.root, first);
    }

    /// Recomputes `best` on the path from `t` down to the node keyed `key`.
    fn refresh(&mut self, t: u32, key: u64) {
        let n = self.node(t);
        if key < n.first {
            self.refresh(n.left, key);
        } else if key > n.first {
            self.refresh(n.right, key);
        }
        self.update(t);
    }

    /// Splits subtree `t` into the nodes below `key` and the rest.
    fn split(&mut self, t: u32, key: u64) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.node(t).first < key {
            let (a, b) = self.split(self.node(t).right, key);
            self.node_mut(t).right = a;
            self.update(t);
            (t, b)
        } else {
            let (a, b) = self.split(self.node(t).left, key);
            self.node_mut(t).left = b;
            self.update(t);
            (a, t)
        }
    }

    /// Joins two subtrees whose keys are all below, respectively all above, each other's.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.node(a).prio >= self.node(b).prio {
            let r = self.merge(self.node(a).right, b);
            self.node_mut(a).right = r;
            self.update(a);
            a
        } else {
            let l = self.merge(a, self.node(b).left);
            self.node_mut(b).left = l;
            self.update(b);
            b
        }
    }

    /// Adds the hole `first ..= last` (it meets no other).
    fn insert(&mut self, first: u64, last: u64) {
        let room = aligned_room(first, last);
        let node = Hole {
            first,
            last,
            prio: mix(first ^ self.salt),
            left: NIL,
            right: NIL,
            room,
            best: room,
        };
        let i = match self.spare.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 holes")
            }
        };
        self.root = self.insert_at(self.root, i);
    }

    /// Inserts node `i` into subtree `t`; returns the subtree's new root.
    fn insert_at(&mut self, t: u32, i: u32) -> u32 {
        if t == NIL {
            return i;
        }
        let key = self.node(i).first;
        if self.node(i).prio > self.node(t).prio {
            let (a, b) = self.split(t, key);
            let n = self.node_mut(i);
            n.left = a;
            n.right = b;
            self.update(i);
            return i;
        }
        if key < self.node(t).first {
            let l = self.insert_at(self.node(t).left, i);
            self.node_mut(t).left = l;
        } else {
            let r = self.insert_at(self.node(t).right, i);
            self.node_mut(t).right = r;
        }
        self.update(t);
        t
    }

    /// Removes the hole keyed `key` from subtree `t`; returns the subtree's new root.
    fn remove_at(&mut self, t: u32, key: u64) -> u32 {
        debug_assert_ne!(t, NIL, "removing a hole that is not there");
        let n = self.node(t);
        if key == n.first {
            let (l, r) = (n.left, n.right);
            self.spare.push(t);
            return self.merge(l, r);
        }
        if key < n.first {
            let l = self.remove_at(n.left, key);
            self.node_mut(t).left = l;
        } else {
            let r = self.remove_at(n.right, key);
            self.node_mut(t).right = r;
        }
        self.update(t);
        t
    }

    fn remove(&mut self, t: u32) {
        self.root = self.remove_at(self.root, self.node(t).first);
    }

    /// True if `first ..= last` lies inside one hole (is entirely free).
    pub(crate) fn contains(&self, first: u64, last: u64) -> bool {
        let t = self.find_le(first);
        t != NIL && self.node(t).last >= last
    }

    /// Marks `first ..= last` in use (parts of it may be in use already).
    pub(crate) fn occupy(&mut self, first: u64, last: u64) {
        // The holes that meet the range, from the highest down.
        loop {
            let t = self.find_le(last);
            if t == NIL {
                return;
            }
            let (s, l) = (self.node(t).first, self.node(t).last);
            if l < first {
                return;
            }
            match (s < first, l > last) {
                (true, true) => {
                    self.set(t, s, first - 1);
                    self.insert(last + 1, l);
                    return;
                }
                (true, false) => {
                    self.set(t, s, first - 1);
                    return;
                }
                (false, true) => self.set(t, last + 1, l),
                (false, false) => self.remove(t),
            }
        }
    }

    /// Marks `first ..= last` free (parts of it may be free already), merging it with the
    /// holes it meets or touches: the highest of them keeps its node and grows.
    pub(crate) fn release(&mut self, first: u64, last: u64) {
        let (mut lo, mut hi) = (first, last);
        let mut keep = NIL;
        loop {
            let probe = if keep == NIL {
                hi.saturating_add(1)
            } else {
                match self.node(keep).first.checked_sub(1) {
                    Some(p) => p,
                    None => break,
                }
            };
            let t = self.find_le(probe);
            if t == NIL {
                break;
            }
            let (s, l) = (self.node(t).first, self.node(t).last);
            if l.saturating_add(1) < lo {
                break;
            }
            lo = lo.min(s);
            hi = hi.max(l);
            if keep == NIL {
                keep = t;
            } else {
                self.remove(t);
            }
        }
        if keep == NIL {
            self.insert(lo, hi);
        } else {
            self.set(keep, lo, hi);
        }
    }

    /// The lowest start aligned to `ALIGNS[class]` from which `len` bytes are free.
    pub(crate) fn first_fit(&self, class: usize, len: u64) -> Option<u64> {
        if self.best(self.root, class) < len {
            return None;
        }
        let mut t = self.root;
        loop {
            let n = self.node(t);
            if self.best(n.left, class) >= len {
                t = n.left;
            } else if n.room[class] >= len {
                return align_up(n.first, ALIGNS[class]);
            } else {
                // The subtree holds a fit and it is not left or here: it is right.
                t = n.right;
            }
        }
    }
}

/// A random 64-bit value (from std's per-process random hash keys).
fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// SplitMix64's finalizer: a well-spread priority from a key.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(all(test, not(viommu_loom)))]
mod tests {
    //! The hole index against a bitmap, with ranges that overlap in every way (reservations
    //! of several devices do), and its treap's invariants after every step.

    use super::*;
    use proptest::prelude::*;

    /// The model's unit: 1 MiB, so 2 MiB and 1 GiB alignments are slots 2 and 1024 apart.
    const UNIT: u64 = 1 << 20;
    /// Slots the operations touch (4 GiB); everything above stays free.
    const SLOTS: usize = 4096;

    impl Holes {
        /// In-order holes, checking the treap on the way: keys ordered, heap on `prio`,
        /// `best` the maximum of its subtree.
        fn walk(&self, t: u32, out: &mut Vec<(u64, u64)>) -> [u64; 3] {
            if t == NIL {
                return [0; 3];
            }
            let n = self.node(t);
            for c in [n.left, n.right] {
                if c != NIL {
                    assert!(self.node(c).prio <= n.prio, "heap order");
                }
            }
            let l = self.walk(n.left, out);
            out.push((n.first, n.last));
            let r = self.walk(n.right, out);
            assert_eq!(n.room, aligned_room(n.first, n.last));
            let best = std::array::from_fn(|k| n.room[k].max(l[k]).max(r[k]));
            assert_eq!(n.best, best, "subtree maxima");
            best
        }

        fn holes(&self) -> Vec<(u64, u64)> {
            let mut out = Vec::new();
            self.walk(self.root, &mut out);
            out
        }
    }

    /// The holes a bitmap of used slots describes (the space above `SLOTS` is free).
    fn expected(used: &[bool]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &u) in used.iter().enumerate() {
            match (u, start) {
                (false, None) => start = Some(i as u64 * UNIT),
                (true, Some(s)) => {
                    out.push((s, i as u64 * UNIT - 1));
                    start = None;
                }
                _ => {}
            }
        }
        out.push((start.unwrap_or(SLOTS as u64 * UNIT), u64::MAX));
        out
    }

    /// The lowest aligned start with `len` free bytes, by brute force.
    fn brute_fit(used: &[bool], class: usize, len: u64) -> Option<u64> {
        let step = (ALIGNS[class] / UNIT).max(1) as usize;
        let n = len.div_ceil(UNIT) as usize;
        (0..=SLOTS)
            .step_by(step)
            .find(|&s| (s..s + n).all(|i| i >= SLOTS || !used[i]))
            .map(|s| s as u64 * UNIT)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn holes_match_a_bitmap(
            ops in prop::collection::vec((any::<bool>(), 0usize..SLOTS, 1usize..300), 1..120),
            fits in prop::collection::vec((0usize..3, 1u64..3000), 4),
        ) {
            let mut h = Holes::default();
            let mut used = vec![false; SLOTS];
            for &(occupy, at, n) in &ops {
                let end = (at + n).min(SLOTS);
                let (first, last) = (at as u64 * UNIT, end as u64 * UNIT - 1);
                if occupy {
                    h.occupy(first, last);
                } else {
                    h.release(first, last);
                }
                used[at..end].iter_mut().for_each(|u| *u = occupy);
                prop_assert_eq!(h.holes(), expected(&used));
                // Built at once from the used ranges, the index is the same.
                let runs = expected(&used);
                let mut gaps = Vec::new();
                let mut next = 0u64;
                for &(f, l) in &runs {
                    if f > next {
                        gaps.push((next, f - 1));
                    }
                    next = l.wrapping_add(1);
                }
                prop_assert_eq!(Holes::around(gaps.into_iter()).holes(), runs);
                prop_assert_eq!(
                    h.contains(first, last),
                    !occupy || (first..=last).is_empty()
                );
                for &(class, units) in &fits {
                    let len = units * UNIT;
                    prop_assert_eq!(h.first_fit(class, len), brute_fit(&used, class, len));
                }
            }
        }
    }

    #[test]
    fn the_whole_space_is_one_hole_and_can_be_taken_and_given_back() {
        let mut h = Holes::default();
        assert_eq!(h.holes(), vec![(0, u64::MAX)]);
        // Its room saturates at u64::MAX: any length fits, at 0.
        assert_eq!(h.first_fit(2, !(PAGE_SIZE - 1)), Some(0));
        // Without the first page, the lowest 1 GiB-aligned start is 1 GiB, which holds
        // 2^64 - 1 GiB and not a page more.
        h.occupy(0, PAGE_SIZE - 1);
        let room = u64::MAX - (1 << 30) + 1;
        assert_eq!(h.first_fit(2, room + PAGE_SIZE), None);
        assert_eq!(h.first_fit(2, room), Some(1 << 30));
        assert_eq!(h.first_fit(0, PAGE_SIZE), Some(PAGE_SIZE));
        h.occupy(0, u64::MAX);
        assert_eq!(h.holes(), vec![]);
        assert_eq!(h.first_fit(0, PAGE_SIZE), None);
        h.release(u64::MAX - (PAGE_SIZE - 1), u64::MAX);
        assert_eq!(h.first_fit(0, PAGE_SIZE), Some(u64::MAX - (PAGE_SIZE - 1)));
        assert_eq!(h.first_fit(1, PAGE_SIZE), None);
        h.release(0, u64::MAX - PAGE_SIZE);
        assert_eq!(h.holes(), vec![(0, u64::MAX)]);
        // Built around nothing, around everything, around overlapping ranges.
        assert_eq!(
            Holes::around(std::iter::empty()).holes(),
            vec![(0, u64::MAX)]
        );
        assert_eq!(Holes::around([(0, u64::MAX)].into_iter()).holes(), vec![]);
        let used = [
            (0x1000, 0x4fff),
            (0x2000, 0x2fff),
            (0x3000, 0x7fff),
            (0x9000, u64::MAX),
        ];
        assert_eq!(
            Holes::around(used.into_iter()).holes(),
            vec![(0, 0xfff), (0x8000, 0x8fff)]
        );
    }
}
