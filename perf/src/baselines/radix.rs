//! A plain, unsynchronized radix page table with the same shape as viommu's.
//!
//! 4 KiB granule, 512-entry tables of `u64`, four levels for a 48-bit IOVA; leaves sit at
//! level 0 (4 KiB), level 1 (2 MiB) or level 2 (1 GiB) wherever a mapping is aligned. An entry
//! is `address | flags` with [`VALID`] in bit 0, [`TABLE`] in bit 1, [`READ`] in bit 2 and
//! [`WRITE`] in bit 3; a table entry's address is the child table's own address.
//!
//! The walk uses plain loads and no guard: the table is only ever changed through `&mut self`,
//! so whoever shares it (`&Radix` between threads, or a `Mutex<Radix>`) gets its exclusion
//! from the borrow checker or from the lock. That makes it the cost floor of a page-table
//! translation on this machine: the "unsynchronized limit" of the benchmark suite, and the
//! table under the `Mutex` baseline.
//!
//! This file depends on `std` only: the criterion benches include it with
//! `#[path = "../perf/src/baselines/radix.rs"] mod radix;`.

use std::fmt;

/// Bit 0: the entry is present.
pub const VALID: u64 = 1 << 0;
/// Bit 1: the entry points at a next-level table (else it is a leaf).
pub const TABLE: u64 = 1 << 1;
/// Bit 2: a leaf allows reads.
pub const READ: u64 = 1 << 2;
/// Bit 3: a leaf allows writes.
pub const WRITE: u64 = 1 << 3;

/// log2 of the granule.
pub const PAGE_SHIFT: u32 = 12;
/// The granule: 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Index bits per level.
const LEVEL_BITS: u32 = 9;
/// Entries per table.
const ENTRIES: usize = 1 << LEVEL_BITS;
/// Levels of a 48-bit IOVA space (root = level 3).
pub const LEVELS: u32 = 4;
/// One past the highest IOVA the table covers.
pub const IOVA_LIMIT: u64 = 1 << (PAGE_SHIFT + LEVEL_BITS * LEVELS);
/// Address bits of an entry (bits 12..52).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Permission bits of a leaf.
const PERM_MASK: u64 = READ | WRITE;

/// Bytes one entry at `level` covers (level 0 = 4 KiB).
const fn level_size(level: u32) -> u64 {
    1 << (PAGE_SHIFT + LEVEL_BITS * level)
}

/// The index of `iova` in a table at `level`.
#[inline(always)]
const fn index(iova: u64, level: u32) -> usize {
    ((iova >> (PAGE_SHIFT + LEVEL_BITS * level)) as usize) & (ENTRIES - 1)
}

/// Why a walk or an update failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RadixError {
    /// Nothing is mapped at the IOVA.
    Unmapped(u64),
    /// Mapped, without the permission asked for.
    Permission(u64),
    /// Misaligned or zero-length request, or a range outside the 48-bit space.
    Invalid,
    /// A map over an existing mapping.
    Exists(u64),
    /// An unmap that would cut a larger leaf.
    SplitsLeaf(u64),
}

impl fmt::Display for RadixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RadixError::Unmapped(a) => write!(f, "nothing mapped at {a:#x}"),
            RadixError::Permission(a) => write!(f, "permission denied at {a:#x}"),
            RadixError::Invalid => f.write_str("invalid range"),
            RadixError::Exists(a) => write!(f, "already mapped at {a:#x}"),
            RadixError::SplitsLeaf(a) => write!(f, "unmap would split the leaf at {a:#x}"),
        }
    }
}

impl std::error::Error for RadixError {}

/// One 4 KiB table: 512 entries.
#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

impl Table {
    /// A new, empty table, owned by the caller as a raw pointer (freed by `free_table`).
    fn alloc() -> *mut Table {
        Box::into_raw(Box::new(Table([0; ENTRIES])))
    }
}

/// Frees `table` and, recursively, every table below it at `level`.
///
/// # Safety
///
/// `table` came from [`Table::alloc`], is not freed yet, and nothing uses it or its children
/// afterwards.
unsafe fn free_table(table: *mut Table, level: u32) {
    if level > 0 {
        // SAFETY: the caller hands over a live table that nobody else references.
        let entries = unsafe { &(*table).0 };
        for &e in entries.iter() {
            if e & (VALID | TABLE) == VALID | TABLE {
                // SAFETY: a table entry holds the address of a live child that only this
                // parent references; the parent is being freed, so the child is too.
                unsafe { free_table((e & ADDR_MASK) as *mut Table, level - 1) };
            }
        }
    }
    // SAFETY: `table` came from `Box::into_raw` in `Table::alloc` and is freed exactly once.
    drop(unsafe { Box::from_raw(table) });
}

/// A radix page table: plain loads on the walk, `&mut self` for every change.
pub struct Radix {
    /// The level-3 table; never null.
    root: *mut Table,
    /// Tables currently allocated (root included), for memory accounting.
    tables: usize,
}

// SAFETY: `Radix` owns its tables exclusively (no other pointer to them escapes); sending it
// moves that ownership, like sending a `Box`.
unsafe impl Send for Radix {}
// SAFETY: `&Radix` only reads the tables (`translate`, `walk`); every write goes through
// `&mut Radix`, so shared references never race with a writer.
unsafe impl Sync for Radix {}

impl Default for Radix {
    fn default() -> Self {
        Radix::new()
    }
}

impl Drop for Radix {
    fn drop(&mut self) {
        // SAFETY: the root and its subtree are owned by `self`, which is going away.
        unsafe { free_table(self.root, LEVELS - 1) };
    }
}

/// A deep copy of `table` and every table below it at `level`.
///
/// # Safety
///
/// `table` is live and nobody writes to it or its children during the copy.
unsafe fn clone_table(table: *const Table, level: u32) -> *mut Table {
    let copy = Table::alloc();
    // SAFETY: the caller keeps `table` live and unwritten; `copy` is fresh and ours.
    let (from, to) = unsafe { (&(*table).0, &mut (*copy).0) };
    for (t, &e) in to.iter_mut().zip(from.iter()) {
        *t = if level > 0 && e & (VALID | TABLE) == VALID | TABLE {
            // SAFETY: a table entry holds the address of a live child of `table`.
            let child = unsafe { clone_table((e & ADDR_MASK) as *const Table, level - 1) };
            (child as u64) | (e & !ADDR_MASK)
        } else {
            e
        };
    }
    copy
}

/// A deep copy: every table is duplicated (what a copy-on-write writer publishes).
impl Clone for Radix {
    fn clone(&self) -> Radix {
        Radix {
            // SAFETY: `&self` keeps the tables live and excludes every writer.
            root: unsafe { clone_table(self.root, LEVELS - 1) },
            tables: self.tables,
        }
    }
}

impl fmt::Debug for Radix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Radix")
            .field("tables", &self.tables)
            .finish()
    }
}

impl Radix {
    /// An empty table (one root table).
    pub fn new() -> Radix {
        Radix {
            root: Table::alloc(),
            tables: 1,
        }
    }

    /// Tables currently allocated, the root included.
    pub fn tables(&self) -> usize {
        self.tables
    }

    /// The leaf entry and its page size for `iova`.
    #[inline(always)]
    pub fn walk(&self, iova: u64) -> Result<(u64, u64), RadixError> {
        if iova >= IOVA_LIMIT {
            return Err(RadixError::Unmapped(iova));
        }
        let mut table = self.root as *const Table;
        let mut level = LEVELS - 1;
        loop {
            // SAFETY: `table` is the root or a child reached through a valid table entry; both
            // live as long as `self`, and `&self` excludes every writer.
            let e = unsafe { (*table).0[index(iova, level)] };
            if e & VALID == 0 {
                return Err(RadixError::Unmapped(iova));
            }
            if e & TABLE == 0 {
                return Ok((e, level_size(level)));
            }
            if level == 0 {
                // A table bit at level 0 never gets written; treat it as corrupt = unmapped.
                return Err(RadixError::Unmapped(iova));
            }
            table = (e & ADDR_MASK) as *const Table;
            level -= 1;
        }
    }

    /// Translates `len` bytes at `iova`, needing the leaf permission bits `need` (a
    /// combination of [`READ`] and [`WRITE`]); returns the target of `iova`.
    ///
    /// Every page the range touches is checked; the first target is what the caller gets.
    #[inline(always)]
    pub fn translate(&self, iova: u64, len: u64, need: u64) -> Result<u64, RadixError> {
        let (e, size) = self.walk(iova)?;
        if e & need != need {
            return Err(RadixError::Permission(iova));
        }
        let target = (e & ADDR_MASK & !(size - 1)) | (iova & (size - 1));
        let end = iova.checked_add(len).ok_or(RadixError::Invalid)?;
        let mut next = (iova | (size - 1)).wrapping_add(1);
        while next < end {
            let (e, size) = self.walk(next)?;
            if e & need != need {
                return Err(RadixError::Permission(next));
            }
            next = next.wrapping_add(size);
        }
        Ok(target)
    }

    /// Maps `len` bytes at `iova` to `target` with the permission bits `perm`, using the
    /// largest leaves alignment allows. Nothing is changed on error.
    pub fn map(&mut self, iova: u64, target: u64, len: u64, perm: u64) -> Result<(), RadixError> {
        let aligned = |v: u64| v % PAGE_SIZE == 0;
        if len == 0 || !aligned(iova) || !aligned(target) || !aligned(len) {
            return Err(RadixError::Invalid);
        }
        let end = iova.checked_add(len).ok_or(RadixError::Invalid)?;
        let target_end = target.checked_add(len).ok_or(RadixError::Invalid)?;
        if end > IOVA_LIMIT || target_end > ADDR_MASK + 1 {
            return Err(RadixError::Invalid);
        }
        // Check first, so a failure leaves the table as it was.
        let mut at = iova;
        while at < end {
            let size = Self::leaf_size(at, target + (at - iova), end - at);
            if self.any_mapped(at, size) {
                return Err(RadixError::Exists(at));
            }
            at += size;
        }
        let mut at = iova;
        while at < end {
            let size = Self::leaf_size(at, target + (at - iova), end - at);
            self.install(at, target + (at - iova), size, perm & PERM_MASK);
            at += size;
        }
        Ok(())
    }

    /// Unmaps `len` bytes at `iova`; returns the bytes that were mapped. Tables left empty
    /// are freed at once (the caller's `&mut` guarantees no walk is inside them).
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<u64, RadixError> {
        if len == 0 || iova % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return Err(RadixError::Invalid);
        }
        let end = iova.checked_add(len).ok_or(RadixError::Invalid)?;
        if end > IOVA_LIMIT {
            return Err(RadixError::Invalid);
        }
        // Refuse to cut a large leaf, before changing anything.
        let mut at = iova;
        while at < end {
            match self.walk(at) {
                Ok((_, size)) => {
                    if at % size != 0 || end - at < size {
                        return Err(RadixError::SplitsLeaf(at));
                    }
                    at += size;
                }
                Err(_) => at += PAGE_SIZE,
            }
        }
        let mut unmapped = 0;
        let mut at = iova;
        while at < end {
            match self.clear(at) {
                Some(size) => {
                    unmapped += size;
                    at += size;
                }
                None => at += PAGE_SIZE,
            }
        }
        Ok(unmapped)
    }

    /// The largest leaf usable at `iova` for `target` with `left` bytes to go.
    fn leaf_size(iova: u64, target: u64, left: u64) -> u64 {
        for level in (0..3).rev() {
            let size = level_size(level);
            if iova % size == 0 && target % size == 0 && left >= size {
                return size;
            }
        }
        PAGE_SIZE
    }

    /// True if anything is mapped in `[iova, iova + size)` (`size` a leaf size, aligned).
    fn any_mapped(&self, iova: u64, size: u64) -> bool {
        let mut table = self.root as *const Table;
        let mut level = LEVELS - 1;
        loop {
            // SAFETY: as in `walk`: live tables, no writer while `&self` exists.
            let e = unsafe { (*table).0[index(iova, level)] };
            if e & VALID == 0 {
                return false;
            }
            if e & TABLE == 0 || level_size(level) == size {
                // A leaf covering the range, or a table (or leaf) exactly at the leaf size:
                // a non-empty table there means something is mapped below.
                return true;
            }
            table = (e & ADDR_MASK) as *const Table;
            level -= 1;
        }
    }

    /// Writes a leaf of `size` at `iova`, allocating tables on the way.
    fn install(&mut self, iova: u64, target: u64, size: u64, perm: u64) {
        let mut table = self.root;
        let mut level = LEVELS - 1;
        while level_size(level) != size {
            let i = index(iova, level);
            // SAFETY: `table` is live and `&mut self` excludes every other access.
            let slot = unsafe { &mut (*table).0[i] };
            if *slot & VALID == 0 {
                let child = Table::alloc();
                self.tables += 1;
                *slot = child as u64 | VALID | TABLE;
            }
            table = (*slot & ADDR_MASK) as *mut Table;
            level -= 1;
        }
        // SAFETY: as above.
        unsafe { (*table).0[index(iova, level)] = target | perm | VALID };
    }

    /// Clears the leaf at `iova` (if any), freeing tables it leaves empty; returns its size.
    fn clear(&mut self, iova: u64) -> Option<u64> {
        let mut path: [(*mut Table, usize); LEVELS as usize] =
            [(std::ptr::null_mut(), 0); LEVELS as usize];
        let mut table = self.root;
        let mut level = LEVELS - 1;
        let size = loop {
            let i = index(iova, level);
            path[level as usize] = (table, i);
            // SAFETY: `table` is live and `&mut self` excludes every other access.
            let e = unsafe { (*table).0[i] };
            if e & VALID == 0 {
                return None;
            }
            if e & TABLE == 0 {
                // SAFETY: as above.
                unsafe { (*table).0[i] = 0 };
                break level_size(level);
            }
            table = (e & ADDR_MASK) as *mut Table;
            level -= 1;
        };
        // Free emptied tables bottom-up (never the root).
        for l in level..LEVELS - 1 {
            let (t, _) = path[l as usize];
            // SAFETY: `t` is a live non-root table on the path just walked.
            let empty = unsafe { (*t).0.iter().all(|&e| e == 0) };
            if !empty {
                break;
            }
            let (parent, pi) = path[(l + 1) as usize];
            // SAFETY: `parent` is live; clearing its entry unlinks `t`, the only reference.
            unsafe { (*parent).0[pi] = 0 };
            // SAFETY: `t` is now unreachable and empty (so it has no children), allocated by
            // `Table::alloc`.
            unsafe { free_table(t, 0) };
            self.tables -= 1;
        }
        Some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: u64 = READ | WRITE;

    #[test]
    fn map_translate_unmap_4k() {
        let mut r = Radix::new();
        r.map(0x1000, 0x5000_1000, 3 * PAGE_SIZE, RW).unwrap();
        assert_eq!(r.translate(0x1000, 8, READ), Ok(0x5000_1000));
        assert_eq!(r.translate(0x2ff0, 0x20, READ), Ok(0x5000_2ff0));
        assert_eq!(
            r.translate(0x4000, 8, READ),
            Err(RadixError::Unmapped(0x4000))
        );
        assert_eq!(
            r.translate(0x3ff0, 0x20, READ),
            Err(RadixError::Unmapped(0x4000))
        );
        assert_eq!(r.tables(), 4);
        assert_eq!(r.unmap(0x1000, 3 * PAGE_SIZE), Ok(3 * PAGE_SIZE));
        assert_eq!(r.tables(), 1);
        assert_eq!(
            r.translate(0x1000, 8, READ),
            Err(RadixError::Unmapped(0x1000))
        );
    }

    #[test]
    fn large_leaves() {
        let mut r = Radix::new();
        let g = level_size(2);
        let m = level_size(1);
        r.map(g, 3 * g, g + m + PAGE_SIZE, RW).unwrap();
        // One 1G leaf, one 2M leaf, one 4K leaf: root + L2 + L1 + L0.
        assert_eq!(r.tables(), 4);
        assert_eq!(r.walk(g + 5).unwrap().1, g);
        assert_eq!(r.walk(2 * g + 5).unwrap().1, m);
        assert_eq!(r.walk(2 * g + m).unwrap().1, PAGE_SIZE);
        assert_eq!(r.translate(2 * g + 7, 1, READ), Ok(4 * g + 7));
        assert_eq!(r.unmap(g, PAGE_SIZE), Err(RadixError::SplitsLeaf(g)));
        assert_eq!(r.unmap(g, g + m + PAGE_SIZE), Ok(g + m + PAGE_SIZE));
        assert_eq!(r.tables(), 1);
    }

    #[test]
    fn permissions_and_overlap() {
        let mut r = Radix::new();
        r.map(0, 0x10_0000, PAGE_SIZE, READ).unwrap();
        assert_eq!(r.translate(0, 4, WRITE), Err(RadixError::Permission(0)));
        assert_eq!(
            r.map(0, 0x20_0000, PAGE_SIZE, RW),
            Err(RadixError::Exists(0))
        );
        assert_eq!(r.map(0, 0, 2 * PAGE_SIZE, RW), Err(RadixError::Exists(0)));
        assert_eq!(r.map(3, 0, PAGE_SIZE, RW), Err(RadixError::Invalid));
        assert_eq!(r.unmap(PAGE_SIZE, PAGE_SIZE), Ok(0));
    }
}
