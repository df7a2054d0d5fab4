//! A test guest for nested translation: the memory its stage-1 tables live in, builders for
//! SMMUv3 (STE, linear CD table, AArch64 4 KiB tables) and VT-d first-stage (4- and 5-level)
//! tables, and the reference each table builder keeps of what it mapped.
//!
//! The builders write descriptors from the architecture documents directly; the reference is a
//! plain map from IOVA page to (IPA page, writable), so a test compares the library's walk
//! against what the guest meant, not against a second walker.
//!
//! Layout: guest table memory is `size` bytes of stage-2 targets from `target_base`, seen by
//! the guest at IPAs from `ipa_base`; the test maps that IPA range in the parent's IOAS
//! ([`Guest::map_tables`]).

// Every test target uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use viommu::{Iommu, ObjId, Prot, TableMemory};

pub const PAGE: u64 = 4096;

/// The layout the nesting tests share (the model test uses its own, inside its small IOASes).
pub mod layout {
    /// Guest table memory: IPAs from here (4 MiB) ...
    pub const TABLES_IPA: u64 = 0x4000_0000;
    /// ... backed by stage-2 targets from here.
    pub const TABLES_TARGET: u64 = 0x80_0000_0000;
    pub const TABLES_SIZE: u64 = 0x40_0000;
    /// Guest data: IPAs from here (16 MiB) map to `DATA_TARGET + (ipa - DATA_IPA)`.
    pub const DATA_IPA: u64 = 0x1000_0000;
    pub const DATA_TARGET: u64 = 0x20_0000_0000;
    pub const DATA_SIZE: u64 = 0x100_0000;
}

/// Guest memory that holds stage-1 tables: 8-byte words at stage-2 targets
/// `base .. base + size`.
pub struct GuestMemory {
    base: u64,
    words: Vec<AtomicU64>,
}

impl GuestMemory {
    pub fn new(base: u64, size: u64) -> Arc<GuestMemory> {
        Arc::new(GuestMemory {
            base,
            words: (0..size / 8).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn word(&self, target: u64) -> Option<&AtomicU64> {
        if target % 8 != 0 {
            return None;
        }
        let off = target.checked_sub(self.base)?;
        self.words.get(usize::try_from(off / 8).ok()?)
    }

    pub fn write(&self, target: u64, value: u64) {
        self.word(target)
            .expect("write inside guest memory")
            .store(value, Ordering::Release);
    }
}

impl TableMemory for GuestMemory {
    fn read_u64(&self, target: u64) -> Option<u64> {
        self.word(target).map(|w| w.load(Ordering::Acquire))
    }
}

/// The guest side: allocates table pages in its IPA space and writes them.
pub struct Guest {
    pub mem: Arc<GuestMemory>,
    pub ipa_base: u64,
    pub target_base: u64,
    pub size: u64,
    next: Mutex<u64>,
}

impl Guest {
    /// Guest table memory of `size` bytes at targets from `target_base`, IPAs from `ipa_base`.
    pub fn new(ipa_base: u64, target_base: u64, size: u64) -> Guest {
        Guest {
            mem: GuestMemory::new(target_base, size),
            ipa_base,
            target_base,
            size,
            next: Mutex::new(ipa_base),
        }
    }

    /// The memory as the library takes it.
    pub fn table_memory(&self) -> Arc<dyn TableMemory> {
        self.mem.clone()
    }

    /// Maps the guest's table memory (read-only: the IOMMU only reads it) in `ioas`.
    pub fn map_tables(&self, iommu: &Iommu, ioas: ObjId) {
        iommu
            .ioas_map(
                ioas,
                Some(self.ipa_base),
                self.target_base,
                self.size,
                Prot::READ,
            )
            .expect("map the guest's table memory");
    }

    /// A new IOAS for a nesting parent: the guest's table memory (read-only) and the data
    /// range `(ipa, target, len)` (read-write).
    pub fn parent_ioas(&self, iommu: &Iommu, data: (u64, u64, u64)) -> ObjId {
        let ioas = iommu.ioas_alloc().expect("ioas_alloc");
        self.map_tables(iommu, ioas);
        let (ipa, target, len) = data;
        iommu
            .ioas_map(ioas, Some(ipa), target, len, Prot::RW)
            .expect("map the guest's data");
        ioas
    }

    /// A zeroed page of table memory (its IPA).
    pub fn alloc_page(&self) -> u64 {
        let mut next = self.next.lock().unwrap();
        let ipa = *next;
        assert!(
            ipa + PAGE <= self.ipa_base + self.size,
            "guest table memory full"
        );
        *next += PAGE;
        ipa
    }

    pub fn write(&self, ipa: u64, value: u64) {
        self.mem
            .write(ipa - self.ipa_base + self.target_base, value);
    }

    pub fn read(&self, ipa: u64) -> u64 {
        self.mem
            .read_u64(ipa - self.ipa_base + self.target_base)
            .expect("read inside guest memory")
    }
}

/// A stage-1 table format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fmt {
    /// AArch64, 4 KiB granule, input size 64 - t0sz bits.
    Arm { t0sz: u32 },
    /// x86-64 first stage, 4 or 5 levels.
    Vtd { levels: u32 },
}

impl Fmt {
    /// Levels (counting from the leaf level, 0) walked: the top level's number.
    fn top(self) -> u32 {
        match self {
            Fmt::Arm { t0sz } => {
                let bits = 64 - t0sz;
                (bits - 12).div_ceil(9) - 1
            }
            Fmt::Vtd { levels } => levels - 1,
        }
    }

    fn table_desc(self, next: u64) -> u64 {
        match self {
            // Valid + table.
            Fmt::Arm { .. } => next | 0b11,
            // Present + R/W (the leaf decides).
            Fmt::Vtd { .. } => next | 0b11,
        }
    }

    /// A leaf at `level` (0: 4 KiB, 1: 2 MiB, 2: 1 GiB).
    fn leaf_desc(self, ipa: u64, level: u32, writable: bool) -> u64 {
        match self {
            Fmt::Arm { .. } => {
                // Page (0b11) at level 3 in ARM numbering, block (0b01) above; AF set;
                // AP[2] for read-only.
                let kind = if level == 0 { 0b11 } else { 0b01 };
                ipa | kind | (1 << 10) | if writable { 0 } else { 1 << 7 }
            }
            Fmt::Vtd { .. } => {
                let ps = if level == 0 { 0 } else { 1 << 7 };
                ipa | 1 | if writable { 2 } else { 0 } | ps
            }
        }
    }
}

/// A stage-1 table the guest builds, with the reference of what it maps.
pub struct S1Table {
    pub fmt: Fmt,
    pub root: u64,
    /// IOVA page → (IPA page, writable).
    pub reference: BTreeMap<u64, (u64, bool)>,
}

impl S1Table {
    pub fn new(guest: &Guest, fmt: Fmt) -> S1Table {
        S1Table {
            fmt,
            root: guest.alloc_page(),
            reference: BTreeMap::new(),
        }
    }

    /// Maps `len` bytes at `iova` to `ipa` with leaves of `level` (0: 4 KiB pages, 1: 2 MiB
    /// blocks, 2: 1 GiB blocks; all three aligned to that size).
    pub fn map_level(
        &mut self,
        guest: &Guest,
        iova: u64,
        ipa: u64,
        len: u64,
        writable: bool,
        level: u32,
    ) {
        let size = 1u64 << (12 + 9 * level);
        assert!(iova % size == 0 && ipa % size == 0 && len % size == 0);
        let mut off = 0;
        while off < len {
            let slot = self.slot(guest, iova + off, level);
            guest.write(slot, self.fmt.leaf_desc(ipa + off, level, writable));
            for p in (0..size).step_by(PAGE as usize) {
                self.reference
                    .insert(iova + off + p, (ipa + off + p, writable));
            }
            off += size;
        }
    }

    /// Maps `len` bytes at `iova` to `ipa` with 4 KiB pages.
    pub fn map(&mut self, guest: &Guest, iova: u64, ipa: u64, len: u64, writable: bool) {
        self.map_level(guest, iova, ipa, len, writable, 0);
    }

    /// Clears the 4 KiB leaves of `iova .. iova + len` (no invalidation: the caller decides).
    pub fn unmap(&mut self, guest: &Guest, iova: u64, len: u64) {
        for page in (iova..iova + len).step_by(PAGE as usize) {
            let slot = self.slot(guest, page, 0);
            guest.write(slot, 0);
            self.reference.remove(&page);
        }
    }

    /// The IPA of the entry for `iova` at `level`, making tables on the way.
    fn slot(&self, guest: &Guest, iova: u64, level: u32) -> u64 {
        let mut table = self.root;
        let mut l = self.fmt.top();
        loop {
            let index = (iova >> (12 + 9 * l)) & 0x1ff;
            let slot = table + index * 8;
            if l == level {
                return slot;
            }
            let e = guest.read(slot);
            table = if e & 1 == 0 {
                let next = guest.alloc_page();
                guest.write(slot, self.fmt.table_desc(next));
                next
            } else {
                e & 0x000f_ffff_ffff_f000
            };
            l -= 1;
        }
    }

    /// What the guest meant `iova` to translate to: (IPA, writable).
    pub fn expect(&self, iova: u64) -> Option<(u64, bool)> {
        self.reference
            .get(&(iova & !(PAGE - 1)))
            .map(|&(ipa, w)| (ipa | (iova & (PAGE - 1)), w))
    }
}

/// SMMUv3 CD word 0 for a valid AArch64 4 KiB-granule CD with `t0sz`.
pub fn cd_word0(t0sz: u32, asid: u16) -> u64 {
    u64::from(t0sz) | (1 << 31) | (1 << 41) | (u64::from(asid) << 48)
}

/// Writes CD `index` of the linear CD table at `cd_table` (an IPA).
pub fn write_cd(guest: &Guest, cd_table: u64, index: u64, t0sz: u32, ttb0: u64) {
    let cd = cd_table + index * 64;
    guest.write(cd + 8, ttb0);
    guest.write(cd, cd_word0(t0sz, index as u16));
}

/// Clears CD `index` (V = 0).
pub fn clear_cd(guest: &Guest, cd_table: u64, index: u64) {
    guest.write(cd_table + index * 64, 0);
}

/// STE words for stage-1 translation through the linear CD table at `cd_table` with
/// 2^`cd_max` CDs and `s1dss`.
pub fn ste_s1(cd_table: u64, cd_max: u32, s1dss: u64) -> [u64; 2] {
    [
        1 | (0b101 << 1) | (cd_table & 0x000f_ffff_ffff_ffc0) | (u64::from(cd_max) << 59),
        s1dss,
    ]
}

/// STE words for stage-1 bypass (stage 2 only).
pub fn ste_bypass() -> [u64; 2] {
    [1 | (0b100 << 1), 0]
}

/// STE words for abort.
pub fn ste_abort() -> [u64; 2] {
    [1, 0]
}
