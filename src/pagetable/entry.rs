//! Page-table entries: one `u64` each, installed and cleared with one atomic store.
//!
//! ```text
//!  63                                12 11      4   3   2   1   0
//! +------------------------------------+---------+---+---+---+---+
//! | target page (leaf) / table pointer | 0       | W | R | T | V |
//! +------------------------------------+---------+---+---+---+---+
//! ```
//!
//! * `V` valid: zero entries are empty.
//! * `T` table: the entry points to the next level's table (never set at level 0). Table
//!   pointers are 64-byte aligned, so the pointer is `entry & !0x3f`.
//! * `R`, `W`: the leaf's permissions.
//!
//! A leaf at level `l` maps `1 << (12 + l * LEVEL_BITS)` bytes; its target is aligned to that.

use crate::types::{Access, Prot};

/// One entry, as loaded from or stored to a table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Pte(pub(crate) u64);

const VALID: u64 = 1 << 0;
const TABLE: u64 = 1 << 1;
const READ: u64 = 1 << 2;
const WRITE: u64 = 1 << 3;
const LEAF_ADDR: u64 = !0xfff;
const TABLE_ADDR: u64 = !0x3f;

impl Pte {
    #[cfg(test)]
    pub(crate) const EMPTY: Pte = Pte(0);

    /// A leaf mapping `target` (page aligned) with `prot`.
    pub(crate) fn leaf(target: u64, prot: Prot) -> Pte {
        debug_assert_eq!(target & !LEAF_ADDR, 0);
        let mut e = target | VALID;
        if prot.contains(Prot::READ) {
            e |= READ;
        }
        if prot.contains(Prot::WRITE) {
            e |= WRITE;
        }
        Pte(e)
    }

    /// A pointer to a next-level table (64-byte aligned).
    pub(crate) fn table(ptr: *const u8) -> Pte {
        let addr = ptr as u64;
        debug_assert_eq!(addr & !TABLE_ADDR, 0);
        Pte(addr | TABLE | VALID)
    }

    #[inline]
    pub(crate) fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// True for a valid entry naming a next-level table (one test of two bits).
    #[inline]
    pub(crate) fn is_table_link(self) -> bool {
        self.0 & (VALID | TABLE) == VALID | TABLE
    }

    #[inline]
    pub(crate) fn is_table(self) -> bool {
        self.0 & TABLE != 0
    }

    #[inline]
    pub(crate) fn target(self) -> u64 {
        self.0 & LEAF_ADDR
    }

    #[inline]
    pub(crate) fn table_ptr(self) -> *mut u8 {
        (self.0 & TABLE_ADDR) as usize as *mut u8
    }

    #[inline]
    pub(crate) fn allows(self, access: Access) -> bool {
        let bit = match access {
            Access::Read => READ,
            Access::Write => WRITE,
        };
        self.0 & bit != 0
    }

    #[cfg(test)]
    pub(crate) fn prot(self) -> Prot {
        let mut p = Prot(0);
        if self.0 & READ != 0 {
            p = p | Prot::READ;
        }
        if self.0 & WRITE != 0 {
            p = p | Prot::WRITE;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trips_target_and_permissions() {
        let e = Pte::leaf(0xdead_b000, Prot::READ);
        assert!(e.is_valid() && !e.is_table());
        assert_eq!(e.target(), 0xdead_b000);
        assert!(e.allows(Access::Read) && !e.allows(Access::Write));
        assert_eq!(e.prot(), Prot::READ);
        let w = Pte::leaf(0xffff_ffff_ffff_f000, Prot::RW);
        assert_eq!(w.target(), 0xffff_ffff_ffff_f000);
        assert_eq!(w.prot(), Prot::RW);
    }

    #[test]
    fn empty_is_not_valid() {
        assert!(!Pte::EMPTY.is_valid());
    }
}
