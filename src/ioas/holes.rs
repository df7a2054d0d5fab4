//! The hole index of an IOAS: its free IOVA ranges, kept up to date as areas and
//! reservations come and go, so that an automatic IOVA is found in one descent. The tree
//! operations are in `treap.rs`.

use super::treap::{mix, random_salt, Hole, NIL};
use crate::types::PAGE_SIZE;

/// The alignments an automatic IOVA can ask for: 4 KiB, 2 MiB, 1 GiB (the leaf sizes).
pub(super) const ALIGNS: [u64; 3] = [PAGE_SIZE, 1 << 21, 1 << 30];

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
    pub(super) nodes: Vec<Hole>,
    /// Indices of unused nodes.
    pub(super) spare: Vec<u32>,
    pub(super) root: u32,
    /// Mixed into every priority, random for each index: IOVAs (which a guest may choose)
    /// cannot be picked to make the treap deep.
    pub(super) salt: u64,
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
pub(super) fn aligned_room(first: u64, last: u64) -> [u64; 3] {
    ALIGNS.map(|a| match align_up(first, a) {
        Some(s) if s <= last => (last - s).saturating_add(1),
        _ => 0,
    })
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

impl Holes {
    /// The holes around `used` (ranges sorted by first IOVA, possibly overlapping), built in
    /// O(n): the treap is put together left to right with a stack, then its maxima filled in.
    pub(super) fn around(used: impl Iterator<Item = (u64, u64)>) -> Holes {
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
