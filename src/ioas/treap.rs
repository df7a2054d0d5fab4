//! The augmented treap under [`Holes`]: an arena of nodes ordered by first IOVA and
//! heap-ordered by a salted priority, each carrying the largest aligned room in its subtree;
//! the O(log n) primitives (lookup, split, merge, insert, remove, resize in place) that the
//! hole index is made of.

use super::holes::{aligned_room, Holes};

/// No node.
pub(super) const NIL: u32 = u32::MAX;

pub(super) struct Hole {
    pub(super) first: u64,
    pub(super) last: u64,
    /// Heap priority (a salted hash of the first key the node had: the shape of a random
    /// BST).
    pub(super) prio: u64,
    pub(super) left: u32,
    pub(super) right: u32,
    pub(super) room: [u64; 3],
    /// The largest `room` in this subtree, per alignment.
    pub(super) best: [u64; 3],
}

impl Holes {
    /// Computes `best` in subtree `t`, bottom-up.
    pub(super) fn fill_best(&mut self, t: u32) {
        if t != NIL {
            self.fill_best(self.node(t).left);
            self.fill_best(self.node(t).right);
            self.update(t);
        }
    }

    pub(super) fn node(&self, t: u32) -> &Hole {
        &self.nodes[t as usize]
    }

    pub(super) fn node_mut(&mut self, t: u32) -> &mut Hole {
        &mut self.nodes[t as usize]
    }

    pub(super) fn best(&self, t: u32, class: usize) -> u64 {
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
    pub(super) fn find_le(&self, x: u64) -> u32 {
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
    pub(super) fn set(&mut self, t: u32, first: u64, last: u64) {
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
    pub(super) fn insert(&mut self, first: u64, last: u64) {
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

    pub(super) fn remove(&mut self, t: u32) {
        self.root = self.remove_at(self.root, self.node(t).first);
    }
}

/// A random 64-bit value (from std's per-process random hash keys).
pub(super) fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// SplitMix64's finalizer: a well-spread priority from a key.
pub(super) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
