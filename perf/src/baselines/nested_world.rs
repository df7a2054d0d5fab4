//! The nested set-up shared by the suite's nested scenarios (`scenarios/nested.rs`), the
//! criterion bench `benches/nested.rs` and the callgrind driver `examples/hot_path.rs` (the
//! last two include this file with `#[path]`).
//!
//! One context, one IOAS (stage 2), one `NEST_PARENT` paging HWPT on it. The IOAS maps the
//! guest's table memory (read-only, 4 KiB leaves) and [`DATA_PAGES`] data pages read-write
//! from [`DATA_IPA`] to [`DATA_TARGET`] (4 KiB aligned, not 2 MiB aligned: every stage-2 walk
//! goes the full four levels, as the suite's paging rows do). A device of group 0 is attached
//! to the parent itself: the paging reference. Stage-1 tables are built by the test guest of
//! `tests/support/stage1.rs` (the architecture's descriptors written directly); the tables
//! the scenarios use map IOVA = IPA (`shift` 0), so a nested translation of IOVA `X` and a
//! paging translation of `X` on the parent end at the same target and walk the same stage-2
//! leaf.

#[path = "../../../tests/support/stage1.rs"]
mod stage1;

use stage1::{ste_s1, write_cd, Fmt, Guest, S1Table, PAGE};
use viommu::{Device, DeviceInfo, GroupId, HwptFlags, Iommu, ObjId, Prot, Stage1};

/// Guest table memory: IPAs from here ...
pub const TABLES_IPA: u64 = 0x4000_0000;
/// ... backed by stage-2 targets from here (4 KiB leaves) ...
pub const TABLES_TARGET: u64 = 0x80_0000_1000;
/// ... this many bytes (256 table pages).
pub const TABLES_SIZE: u64 = 1 << 20;
/// Guest data: IPAs from here map to `DATA_TARGET + (ipa - DATA_IPA)`.
pub const DATA_IPA: u64 = 0x1000_0000;
/// Stage-2 target of [`DATA_IPA`].
pub const DATA_TARGET: u64 = 0x20_0000_1000;
/// Data pages stage 2 maps.
pub const DATA_PAGES: u64 = 512;
/// Pages a stage-1 table of [`NestWorld::nested`] maps, from IOVA [`DATA_IPA`]: more than
/// the 64 entries of the per-thread IOTLB, so a sequential sweep over them always misses
/// (pages `p` and `p + 64` share an IOTLB slot whatever the domain: the slot is the low 6
/// bits of the page number XOR a per-domain constant).
pub const S1_PAGES: u64 = 256;
/// The IOVA the same-IOVA rows translate over and over.
pub const WARM_IOVA: u64 = DATA_IPA + 5 * PAGE + 1024;
/// Bytes a request translates.
pub const REQ: u64 = 512;
/// The PASID the PASID rows use.
pub const PASID: u32 = 5;

/// The stage-1 format of a nested HWPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nest {
    /// ARM SMMUv3: STE → linear CD table → AArch64 4-level table (T0SZ 16).
    SmmuV3,
    /// Intel VT-d first stage, 4 levels (addr_width 48).
    Vtd,
}

impl Nest {
    /// Both formats.
    pub const ALL: [Nest; 2] = [Nest::SmmuV3, Nest::Vtd];

    /// Short name for labels.
    pub fn name(self) -> &'static str {
        match self {
            Nest::SmmuV3 => "smmuv3",
            Nest::Vtd => "vtd",
        }
    }
}

/// The stage-2 target of data IPA `ipa`.
pub fn target_of(ipa: u64) -> u64 {
    DATA_TARGET + (ipa - DATA_IPA)
}

/// The `i`-th IOVA of a sequential sweep over the [`S1_PAGES`] pages (every one an IOTLB
/// miss once the sweep has gone round once).
#[inline]
pub fn sweep_iova(i: u64) -> u64 {
    DATA_IPA + (i % S1_PAGES) * PAGE + 1024
}

/// The context, its parent HWPT and the paging reference device.
pub struct NestWorld {
    /// The context.
    pub iommu: Iommu,
    /// The stage-2 IOAS.
    pub ioas: ObjId,
    /// The `NEST_PARENT` paging HWPT.
    pub parent: ObjId,
    /// The device (group 0) that allocated the parent and is attached to it.
    pub paging_id: ObjId,
    /// Its handle: translations through the parent, the paging reference.
    pub paging: Device,
    guest: Guest,
}

impl NestWorld {
    /// Builds the context (panics if viommu refuses a valid set-up call: a bug).
    pub fn new(iommu: Iommu) -> NestWorld {
        let guest = Guest::new(TABLES_IPA, TABLES_TARGET, TABLES_SIZE);
        let ioas = iommu.ioas_alloc().expect("ioas_alloc");
        guest.map_tables(&iommu, ioas);
        iommu
            .ioas_map(
                ioas,
                Some(DATA_IPA),
                DATA_TARGET,
                DATA_PAGES * PAGE,
                Prot::RW,
            )
            .expect("ioas_map data");
        let (paging_id, paging) = bind(&iommu, 0);
        let parent = iommu
            .hwpt_alloc(paging_id, ioas, HwptFlags::NEST_PARENT)
            .expect("hwpt_alloc NEST_PARENT");
        iommu
            .device_attach(paging_id, parent)
            .expect("attach to the parent");
        NestWorld {
            iommu,
            ioas,
            parent,
            paging_id,
            paging,
            guest,
        }
    }

    /// A device bound in group `group` (8 PASID bits).
    pub fn bind(&self, group: u32) -> (ObjId, Device) {
        bind(&self.iommu, group)
    }

    /// A nested HWPT of format `fmt` over the parent whose stage 1 maps the [`S1_PAGES`]
    /// pages from IOVA [`DATA_IPA`] to IPA `iova + shift_pages * PAGE`, writable, in 4 KiB
    /// pages. SMMUv3: a linear CD table of 8 CDs (S1CDMax 3, S1DSS 2: untagged DMA uses CD
    /// 0), CD 0 and CD [`PASID`] pointing at the table.
    pub fn nested(&self, fmt: Nest, shift_pages: u64) -> ObjId {
        let s1fmt = match fmt {
            Nest::SmmuV3 => Fmt::Arm { t0sz: 16 },
            Nest::Vtd => Fmt::Vtd { levels: 4 },
        };
        let mut t = S1Table::new(&self.guest, s1fmt);
        t.map(
            &self.guest,
            DATA_IPA,
            DATA_IPA + shift_pages * PAGE,
            S1_PAGES * PAGE,
            true,
        );
        let s1 = match fmt {
            Nest::SmmuV3 => {
                let cd_table = self.guest.alloc_page();
                for cd in [0, u64::from(PASID)] {
                    write_cd(&self.guest, cd_table, cd, 16, t.root);
                }
                Stage1::SmmuV3 {
                    ste: ste_s1(cd_table, 3, 2),
                }
            }
            Nest::Vtd => Stage1::VtdS1 {
                pgtbl_addr: t.root,
                addr_width: 48,
            },
        };
        self.iommu
            .hwpt_alloc_nested(self.paging_id, self.parent, s1, self.guest.table_memory())
            .expect("hwpt_alloc_nested")
    }

    /// A device of its own group `group` attached to `hwpt` at the RID.
    pub fn attached(&self, group: u32, hwpt: ObjId) -> (ObjId, Device) {
        let (id, dev) = self.bind(group);
        self.iommu.device_attach(id, hwpt).expect("device_attach");
        (id, dev)
    }
}

fn bind(iommu: &Iommu, group: u32) -> (ObjId, Device) {
    iommu
        .device_bind(
            GroupId(group),
            DeviceInfo {
                pasid_bits: 8,
                ..DeviceInfo::default()
            },
        )
        .expect("device_bind")
}
