//! Nested HWPTs: the intents of the iommufd selftest `alloc_hwpt_nested`
//! (`tools/testing/selftests/iommu/iommufd.c`), every nesting row of the errno table with
//! nothing changed after it, both stage-1 formats walked against the guest's own reference
//! (SMMUv3: STE, CDs, S1DSS, substreams; VT-d: 4 and 5 levels, large pages, canonical
//! addresses), the coherence rules (IOTLB invalidation and its fence, stage-2 unmap reaching
//! nested domains), replace between paging and nested domains at the RID and at a PASID, and
//! reclamation.

mod common;
#[path = "support/stage1.rs"]
mod stage1;

use common::{bind, err, within};
use stage1::{clear_cd, ste_abort, ste_bypass, ste_s1, write_cd, Fmt, Guest, S1Table, PAGE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use viommu::errno::{EBUSY, EDEADLK, EINVAL, ENOENT, EOPNOTSUPP, EOVERFLOW};
use viommu::{
    Access, Device, DeviceInfo, Error, FaultKind, FenceMode, HwptFlags, Invalidation, Iommu, ObjId,
    Prot, Stage1,
};

use stage1::layout::*;

/// A device on a `NEST_PARENT` paging HWPT whose IOAS maps the guest's tables and data.
struct World {
    iommu: Iommu,
    dev: ObjId,
    h: Device,
    ioas: ObjId,
    parent: ObjId,
    guest: Guest,
}

fn world() -> World {
    world_in(FenceMode::default())
}

fn world_in(mode: FenceMode) -> World {
    let iommu = Iommu::with_fence_mode(mode);
    let (dev, h) = bind(
        &iommu,
        1,
        DeviceInfo {
            pasid_bits: 8,
            ..DeviceInfo::default()
        },
    );
    let guest = Guest::new(TABLES_IPA, TABLES_TARGET, TABLES_SIZE);
    let ioas = guest.parent_ioas(&iommu, (DATA_IPA, DATA_TARGET, DATA_SIZE));
    let parent = iommu.hwpt_alloc(dev, ioas, HwptFlags::NEST_PARENT).unwrap();
    World {
        iommu,
        dev,
        h,
        ioas,
        parent,
        guest,
    }
}

/// Stage-2 target of a data IPA.
fn s2(ipa: u64) -> u64 {
    DATA_TARGET + (ipa - DATA_IPA)
}

impl World {
    fn nested(&self, s1: Stage1) -> viommu::Result<ObjId> {
        self.iommu
            .hwpt_alloc_nested(self.dev, self.parent, s1, self.guest.table_memory())
    }

    /// An SMMUv3 nested HWPT with 2^`cd_max` CDs, CD 0 .. `cds` pointing at fresh tables
    /// (returned); S1DSS 2 (untagged DMA uses CD 0).
    fn smmu(&self, cd_max: u32, cds: u64) -> (ObjId, u64, Vec<S1Table>) {
        let cd_table = self.guest.alloc_page();
        let tables: Vec<S1Table> = (0..cds)
            .map(|i| {
                let t = S1Table::new(&self.guest, Fmt::Arm { t0sz: 16 });
                write_cd(&self.guest, cd_table, i, 16, t.root);
                t
            })
            .collect();
        let id = self
            .nested(Stage1::SmmuV3 {
                ste: ste_s1(cd_table, cd_max, 2),
            })
            .unwrap();
        (id, cd_table, tables)
    }

    fn vtd(&self, levels: u32) -> (ObjId, S1Table) {
        let t = S1Table::new(&self.guest, Fmt::Vtd { levels });
        let id = self
            .nested(Stage1::VtdS1 {
                pgtbl_addr: t.root,
                addr_width: if levels == 5 { 57 } else { 48 },
            })
            .unwrap();
        (id, t)
    }
}

/// One 4-byte access through a fresh guard at `pasid` (0: untagged).
fn at(h: &Device, pasid: u32, iova: u64, access: Access) -> Result<u64, FaultKind> {
    let g = h.pin_pasid(pasid);
    match g.translate(iova, 4, access) {
        Ok(t) => Ok(t.as_slice()[0].target),
        Err(f) => {
            assert_eq!(f.iova, iova);
            Err(f.kind)
        }
    }
}

fn read(h: &Device, iova: u64) -> Result<u64, FaultKind> {
    at(h, 0, iova, Access::Read)
}

fn counts(iommu: &Iommu) -> viommu::Stats {
    iommu.synchronize().unwrap();
    iommu.stats()
}

// ---------------------------------------------------------------------------------------
// The selftest's `alloc_hwpt_nested` intents and the errno rows.

/// Parents must be paging HWPTs allocated with `NEST_PARENT`: an IOAS, a device, a plain
/// paging HWPT and a nested HWPT are `EINVAL`, unknown IDs `ENOENT`; a HWPT as `pt` of
/// `hwpt_alloc` is `EOPNOTSUPP` (no stage-1 data). Nothing changes on any failure.
#[test]
fn nested_parent_rules() {
    let w = world();
    let plain = w
        .iommu
        .hwpt_alloc(w.dev, w.ioas, HwptFlags::empty())
        .unwrap();
    let (nested, _, _) = w.smmu(0, 1);
    let gone = w.iommu.ioas_alloc().unwrap();
    w.iommu.destroy(gone).unwrap();
    let before = counts(&w.iommu);
    let s1 = Stage1::SmmuV3 { ste: ste_bypass() };
    let mem = w.guest.table_memory();
    let cases: Vec<(ObjId, ObjId, i32)> = vec![
        (w.dev, w.ioas, EINVAL),
        (w.dev, w.dev, EINVAL),
        (w.dev, plain, EINVAL),
        (w.dev, nested, EINVAL),
        (w.dev, gone, ENOENT),
        (gone, w.parent, ENOENT),
        (w.ioas, w.parent, EINVAL),
    ];
    for (dev, parent, errno) in cases {
        let e = err(
            w.iommu.hwpt_alloc_nested(dev, parent, s1, mem.clone()),
            errno,
        );
        if parent == plain || parent == nested {
            assert!(matches!(e, Error::NotNestParent { .. }), "{e:?}");
        }
    }
    err(
        w.iommu.hwpt_alloc(w.dev, w.parent, HwptFlags::empty()),
        EOPNOTSUPP,
    );
    assert_eq!(counts(&w.iommu), before);
    // The kernel's flow: the child goes first.
    let e = err(w.iommu.destroy(w.parent), EBUSY);
    assert!(matches!(e, Error::Busy { users: 1, .. }), "{e:?}");
    w.iommu.destroy(nested).unwrap();
    err(w.iommu.destroy(nested), ENOENT);
    w.iommu.destroy(w.parent).unwrap();
    w.iommu.destroy(plain).unwrap();
    w.iommu.destroy(w.ioas).unwrap();
}

/// Stage-1 data the library cannot accept is `EINVAL` and allocates nothing; what it must
/// accept (V = 0, abort, bypass, S1Fmt with one CD) is accepted.
#[test]
fn stage1_data_rules() {
    let w = world();
    let before = counts(&w.iommu);
    let cd = TABLES_IPA;
    let refused: Vec<Stage1> = vec![
        // Config: reserved, stage 2 only, nested (host-owned).
        Stage1::SmmuV3 {
            ste: [1 | (0b001 << 1), 0],
        },
        Stage1::SmmuV3 {
            ste: [1 | (0b110 << 1), 0],
        },
        Stage1::SmmuV3 {
            ste: [1 | (0b111 << 1), 0],
        },
        // Reserved bits of word 0 (58:52), of word 1.
        Stage1::SmmuV3 {
            ste: [ste_s1(cd, 0, 0)[0] | (1 << 52), 0],
        },
        Stage1::SmmuV3 {
            ste: [ste_s1(cd, 0, 0)[0], 1 << 40],
        },
        // Two-level CD tables (S1Fmt 1, 2) with more than one CD; S1CDMax above 20.
        Stage1::SmmuV3 {
            ste: [ste_s1(cd, 4, 2)[0] | (1 << 4), 2],
        },
        Stage1::SmmuV3 {
            ste: [ste_s1(cd, 4, 2)[0] | (2 << 4), 2],
        },
        Stage1::SmmuV3 {
            ste: ste_s1(cd, 21, 2),
        },
        // S1DSS 0b11 (reserved) with substreams.
        Stage1::SmmuV3 {
            ste: ste_s1(cd, 2, 3),
        },
        // VT-d: widths other than 48 and 57; a misaligned or too-wide table address.
        Stage1::VtdS1 {
            pgtbl_addr: cd,
            addr_width: 39,
        },
        Stage1::VtdS1 {
            pgtbl_addr: cd,
            addr_width: 64,
        },
        Stage1::VtdS1 {
            pgtbl_addr: cd + 8,
            addr_width: 48,
        },
        Stage1::VtdS1 {
            pgtbl_addr: 1 << 52,
            addr_width: 48,
        },
    ];
    for s1 in refused {
        let e = err(w.nested(s1), EINVAL);
        assert!(matches!(e, Error::InvalidStage1 { .. }), "{s1:?}: {e:?}");
    }
    assert_eq!(counts(&w.iommu), before);
    let accepted = [
        Stage1::SmmuV3 { ste: [0, 0] },
        // V = 0 with garbage: the kernel clears it.
        Stage1::SmmuV3 {
            ste: [0xffff_0000_0000_0000, u64::MAX],
        },
        Stage1::SmmuV3 { ste: ste_abort() },
        Stage1::SmmuV3 { ste: ste_bypass() },
        Stage1::SmmuV3 {
            ste: [ste_s1(cd, 0, 0)[0] | (2 << 4), 3],
        },
        Stage1::SmmuV3 {
            ste: ste_s1(cd, 20, 1),
        },
        Stage1::VtdS1 {
            pgtbl_addr: cd,
            addr_width: 57,
        },
    ];
    for s1 in accepted {
        w.nested(s1).unwrap_or_else(|e| panic!("{s1:?}: {e}"));
    }
}

/// `hwpt_invalidate`: `ENOENT` unknown, `EINVAL` on an IOAS, a device or a paging HWPT, a
/// zero-length range or a PASID above 20 bits, `EOVERFLOW` for a wrapping range, `EDEADLK`
/// with a guard held; a good call on a nested HWPT succeeds.
#[test]
fn invalidate_rules() {
    let w = world();
    let (nested, _, _) = w.smmu(0, 1);
    let all = Invalidation::All;
    let gone = w.iommu.ioas_alloc().unwrap();
    w.iommu.destroy(gone).unwrap();
    err(w.iommu.hwpt_invalidate(gone, all), ENOENT);
    for id in [w.ioas, w.dev] {
        err(w.iommu.hwpt_invalidate(id, all), EINVAL);
    }
    let e = err(w.iommu.hwpt_invalidate(w.parent, all), EINVAL);
    assert!(matches!(e, Error::NotNested { .. }), "{e:?}");
    let bad = [
        (
            Invalidation::Range {
                pasid: None,
                iova: 0,
                len: 0,
            },
            EINVAL,
        ),
        (
            Invalidation::Range {
                pasid: Some(1 << 20),
                iova: 0,
                len: PAGE,
            },
            EINVAL,
        ),
        (Invalidation::Config { pasid: 1 << 20 }, EINVAL),
        (
            Invalidation::Range {
                pasid: None,
                iova: u64::MAX - PAGE + 2,
                len: PAGE,
            },
            EOVERFLOW,
        ),
    ];
    for (inv, errno) in bad {
        err(w.iommu.hwpt_invalidate(nested, inv), errno);
    }
    for inv in [
        all,
        Invalidation::Range {
            pasid: Some(3),
            iova: 0,
            len: u64::MAX,
        },
        Invalidation::Range {
            pasid: None,
            iova: u64::MAX - PAGE + 1,
            len: PAGE,
        },
        Invalidation::Config { pasid: 0 },
    ] {
        w.iommu.hwpt_invalidate(nested, inv).unwrap();
    }
    let g = w.h.pin();
    err(w.iommu.hwpt_invalidate(nested, all), EDEADLK);
    drop(g);
    w.iommu.hwpt_invalidate(nested, all).unwrap();
}

/// A nested allocation that fails its checks consumes no ID (IDs are allocated at commit;
/// `ENOSPC` on exhaustion is covered with the other allocating calls in the unit tests).
#[test]
fn failed_nested_alloc_consumes_no_id() {
    let w = world();
    let before = w
        .nested(Stage1::SmmuV3 { ste: ste_bypass() })
        .unwrap()
        .get();
    err(
        w.nested(Stage1::VtdS1 {
            pgtbl_addr: 1,
            addr_width: 48,
        }),
        EINVAL,
    );
    err(
        w.nested(Stage1::SmmuV3 {
            ste: [1 | (0b110 << 1), 0],
        }),
        EINVAL,
    );
    let after = w
        .nested(Stage1::SmmuV3 { ste: ste_bypass() })
        .unwrap()
        .get();
    assert_eq!(after, before + 1);
}

// ---------------------------------------------------------------------------------------
// Walks.

/// SMMUv3: pages and blocks through stage 1 and stage 2, AP[2] read-only, an unmapped
/// stage-1 page, a stage-1 output that stage 2 does not map, and the 48-bit input limit.
#[test]
fn smmuv3_walk_matches_the_guest() {
    let w = world();
    let (nested, _, mut t) = w.smmu(0, 1);
    let t0 = &mut t[0];
    t0.map(&w.guest, 0x1_0000, DATA_IPA + 0x5000, 2 * PAGE, true);
    t0.map(&w.guest, 0x8000_0000, DATA_IPA + 0x9000, PAGE, false);
    t0.map_level(
        &w.guest,
        0x4020_0000,
        DATA_IPA + 0x20_0000,
        0x20_0000,
        true,
        1,
    );
    // Stage 1 maps it; stage 2 does not.
    t0.map(&w.guest, 0x2_0000, 0x7000_0000, PAGE, true);
    w.iommu.device_attach(w.dev, nested).unwrap();
    for iova in [
        0x1_0000,
        0x1_1ffc,
        0x8000_0010,
        0x4020_0000,
        0x403f_f000,
        0x4031_2344,
    ] {
        let (ipa, _) = t0.expect(iova).unwrap();
        assert_eq!(read(&w.h, iova), Ok(s2(ipa)), "{iova:#x}");
    }
    assert_eq!(
        at(&w.h, 0, 0x1_0000, Access::Write),
        Ok(s2(DATA_IPA + 0x5000))
    );
    assert_eq!(
        at(&w.h, 0, 0x8000_0000, Access::Write),
        Err(FaultKind::Permission)
    );
    assert_eq!(read(&w.h, 0x3_0000), Err(FaultKind::Unmapped));
    assert_eq!(read(&w.h, 0x2_0000), Err(FaultKind::Unmapped));
    // Two pages in one request: contiguous IPAs and targets make one chunk.
    let g = w.h.pin();
    let c: Vec<_> = g.translate(0x1_0800, PAGE, Access::Read).unwrap().collect();
    assert_eq!(c.len(), 1, "{c:x?}");
    assert_eq!((c[0].target, c[0].len), (s2(DATA_IPA + 0x5800), PAGE));
    // A fault names the first IOVA that failed.
    let f = g.translate(0x1_1000, 2 * PAGE, Access::Read).unwrap_err();
    assert_eq!((f.iova, f.kind), (0x1_2000, FaultKind::Unmapped));
    drop(g);
}

/// SMMUv3 input size: with T0SZ 25 (39-bit input, a 3-level walk) an IOVA at 2^39 faults
/// `Aperture`; the walk starts at level 1.
#[test]
fn smmuv3_t0sz_sets_the_input_range() {
    let w = world();
    let cd_table = w.guest.alloc_page();
    let mut t = S1Table::new(&w.guest, Fmt::Arm { t0sz: 25 });
    write_cd(&w.guest, cd_table, 0, 25, t.root);
    t.map(&w.guest, 0x7f_ffff_f000, DATA_IPA, PAGE, true);
    let nested = w
        .nested(Stage1::SmmuV3 {
            ste: ste_s1(cd_table, 0, 0),
        })
        .unwrap();
    w.iommu.device_attach(w.dev, nested).unwrap();
    assert_eq!(read(&w.h, 0x7f_ffff_f000), Ok(s2(DATA_IPA)));
    assert_eq!(read(&w.h, 0x80_0000_0000), Err(FaultKind::Aperture));
}

/// CDs are read at DMA time: an STE whose CD table is still empty faults `Blocked`, and the
/// same domain translates once the guest fills the CD (and invalidates the config). Invalid
/// and unsupported CDs (V = 0, AA64 = 0, TG0 other than 4 KiB, EPD0) block their substream.
#[test]
fn smmuv3_cds_are_read_when_dma_uses_them() {
    let w = world();
    let cd_table = w.guest.alloc_page();
    let nested = w
        .nested(Stage1::SmmuV3 {
            ste: ste_s1(cd_table, 2, 2),
        })
        .unwrap();
    w.iommu.device_attach(w.dev, nested).unwrap();
    assert_eq!(read(&w.h, 0x1000), Err(FaultKind::Blocked));
    let mut t = S1Table::new(&w.guest, Fmt::Arm { t0sz: 16 });
    t.map(&w.guest, 0x1000, DATA_IPA, PAGE, true);
    write_cd(&w.guest, cd_table, 0, 16, t.root);
    w.iommu
        .hwpt_invalidate(nested, Invalidation::Config { pasid: 0 })
        .unwrap();
    assert_eq!(read(&w.h, 0x1000), Ok(s2(DATA_IPA)));
    // Substream 1's CD, then broken variants of it.
    write_cd(&w.guest, cd_table, 1, 16, t.root);
    assert_eq!(at(&w.h, 1, 0x1000, Access::Read), Ok(s2(DATA_IPA)));
    let cd1 = cd_table + 64;
    let good = w.guest.read(cd1);
    for (what, word0) in [
        ("V = 0", good & !(1 << 31)),
        ("AA64 = 0", good & !(1 << 41)),
        ("TG0 64 KiB", good | (1 << 6)),
        ("T0SZ 12", (good & !0x3f) | 12),
        ("T0SZ 40", (good & !0x3f) | 40),
    ] {
        w.guest.write(cd1, word0);
        w.iommu
            .hwpt_invalidate(nested, Invalidation::Config { pasid: 1 })
            .unwrap();
        assert_eq!(
            at(&w.h, 1, 0x1000, Access::Read),
            Err(FaultKind::Blocked),
            "{what}"
        );
    }
    // EPD0: TTB0 walks disabled, a translation fault.
    w.guest.write(cd1, good | (1 << 14));
    w.iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
    assert_eq!(at(&w.h, 1, 0x1000, Access::Read), Err(FaultKind::Unmapped));
    clear_cd(&w.guest, cd_table, 1);
    w.iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
    assert_eq!(at(&w.h, 1, 0x1000, Access::Read), Err(FaultKind::Blocked));
    // Substream 0 untouched throughout.
    assert_eq!(read(&w.h, 0x1000), Ok(s2(DATA_IPA)));
}

/// Untagged DMA per S1DSS when there are substreams (terminate, bypass, CD 0) and with one
/// CD; SSIDs at or above 2^S1CDMax fault `Blocked`; abort and V = 0 block everything; bypass
/// is stage 2 only, and blocks tagged DMA.
#[test]
fn smmuv3_substreams_and_configs() {
    let w = world();
    let cd_table = w.guest.alloc_page();
    let mut t = S1Table::new(&w.guest, Fmt::Arm { t0sz: 16 });
    t.map(&w.guest, DATA_IPA, DATA_IPA + 0x3000, PAGE, true);
    for i in 0..4 {
        write_cd(&w.guest, cd_table, i, 16, t.root);
    }
    let via_cd = Ok(s2(DATA_IPA + 0x3000));
    let bypassed = Ok(s2(DATA_IPA));
    type Outcome = Result<u64, FaultKind>;
    let cases: [([u64; 2], Outcome, Outcome, Outcome); 6] = [
        // (STE, untagged, SSID 3, SSID 4)
        (
            ste_s1(cd_table, 2, 0),
            Err(FaultKind::Blocked),
            via_cd,
            Err(FaultKind::Blocked),
        ),
        (
            ste_s1(cd_table, 2, 1),
            bypassed,
            via_cd,
            Err(FaultKind::Blocked),
        ),
        (
            ste_s1(cd_table, 2, 2),
            via_cd,
            via_cd,
            Err(FaultKind::Blocked),
        ),
        (
            ste_s1(cd_table, 0, 0),
            via_cd,
            Err(FaultKind::Blocked),
            Err(FaultKind::Blocked),
        ),
        (
            ste_abort(),
            Err(FaultKind::Blocked),
            Err(FaultKind::Blocked),
            Err(FaultKind::Blocked),
        ),
        (
            ste_bypass(),
            bypassed,
            Err(FaultKind::Blocked),
            Err(FaultKind::Blocked),
        ),
    ];
    let mut first = true;
    for (ste, untagged, ssid3, ssid4) in cases {
        let nested = w.nested(Stage1::SmmuV3 { ste }).unwrap();
        if first {
            w.iommu.device_attach(w.dev, nested).unwrap();
            first = false;
        } else {
            w.iommu.device_replace(w.dev, nested).unwrap();
        }
        let what = format!("{ste:x?}");
        assert_eq!(read(&w.h, DATA_IPA), untagged, "{what} untagged");
        assert_eq!(at(&w.h, 3, DATA_IPA, Access::Read), ssid3, "{what} ssid 3");
        assert_eq!(at(&w.h, 4, DATA_IPA, Access::Read), ssid4, "{what} ssid 4");
    }
    // PASIDs outside the device's range block whatever the CD table holds.
    assert_eq!(
        at(&w.h, 256, DATA_IPA, Access::Read),
        Err(FaultKind::Blocked)
    );
}

/// A PASID attached to its own domain uses it, not the RID's CD table; detaching it falls
/// back to the CD again. A VT-d nested RID serves no PASIDs.
#[test]
fn pasid_domains_take_precedence_over_the_cd_table() {
    let w = world();
    let (smmu, _, mut t) = w.smmu(3, 4);
    t[2].map(&w.guest, 0x5000, DATA_IPA + 0x2000, PAGE, true);
    w.iommu.device_attach(w.dev, smmu).unwrap();
    assert_eq!(at(&w.h, 2, 0x5000, Access::Read), Ok(s2(DATA_IPA + 0x2000)));
    let (vtd, mut vt) = w.vtd(4);
    vt.map(&w.guest, 0x5000, DATA_IPA + 0x7000, PAGE, false);
    w.iommu.device_attach_pasid(w.dev, 2, vtd).unwrap();
    assert_eq!(at(&w.h, 2, 0x5000, Access::Read), Ok(s2(DATA_IPA + 0x7000)));
    assert_eq!(
        at(&w.h, 2, 0x5000, Access::Write),
        Err(FaultKind::Permission)
    );
    w.iommu.device_detach_pasid(w.dev, 2).unwrap();
    assert_eq!(at(&w.h, 2, 0x5000, Access::Read), Ok(s2(DATA_IPA + 0x2000)));
    // The RID on a VT-d nested HWPT: its table serves untagged DMA only.
    w.iommu.device_replace(w.dev, vtd).unwrap();
    assert_eq!(read(&w.h, 0x5000), Ok(s2(DATA_IPA + 0x7000)));
    assert_eq!(at(&w.h, 2, 0x5000, Access::Read), Err(FaultKind::Blocked));
    // A detached RID serves nothing.
    w.iommu.device_detach(w.dev).unwrap();
    assert_eq!(at(&w.h, 2, 0x5000, Access::Read), Err(FaultKind::Blocked));
}

/// VT-d first stage, 4 and 5 levels: 4 KiB, 2 MiB and 1 GiB pages, R/W needed at every
/// level for a write, non-present entries, and canonical addresses (upper half translates
/// through the top index; non-canonical IOVAs fault `Aperture`).
#[test]
fn vtd_walk_matches_the_guest() {
    for levels in [4, 5] {
        let iommu_bits = 64;
        let w = world();
        // A 64-bit device so that upper-half IOVAs reach the walker.
        let (dev64, h64) = bind(
            &w.iommu,
            2,
            DeviceInfo {
                iova_bits: iommu_bits,
                ..DeviceInfo::default()
            },
        );
        let (nested, mut t) = w.vtd(levels);
        t.map(&w.guest, 0x3000, DATA_IPA + 0x1000, PAGE, true);
        t.map_level(&w.guest, 0x4000_0000, 0, 0x4000_0000, true, 2);
        t.map_level(
            &w.guest,
            0x60_0000,
            DATA_IPA + 0x40_0000,
            0x20_0000,
            false,
            1,
        );
        let width = if levels == 5 { 57 } else { 48 };
        let upper = !0u64 << (width - 1); // the lowest canonical upper-half IOVA
        t.map(&w.guest, upper, DATA_IPA + 0x8000, PAGE, true);
        w.iommu.device_attach(dev64, nested).unwrap();
        for iova in [
            0x3000,
            0x3ffc,
            0x4000_0000 + DATA_IPA + 0x10,
            0x60_0000,
            0x7f_f008,
            upper,
        ] {
            let (ipa, _) = t.expect(iova).unwrap();
            assert_eq!(read(&h64, iova), Ok(s2(ipa)), "{levels} levels, {iova:#x}");
        }
        assert_eq!(
            at(&h64, 0, 0x60_0000, Access::Write),
            Err(FaultKind::Permission)
        );
        assert_eq!(read(&h64, 0x5000), Err(FaultKind::Unmapped));
        let noncanonical = 1u64 << (width - 1);
        assert_eq!(read(&h64, noncanonical), Err(FaultKind::Aperture));
        // An intermediate entry without R/W makes the leaf read-only.
        let top = t.root + ((0x3000u64 >> (12 + 9 * (levels - 1))) & 0x1ff) * 8;
        let e = w.guest.read(top);
        w.guest.write(top, e & !2);
        w.iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
        assert_eq!(
            at(&h64, 0, 0x3000, Access::Write),
            Err(FaultKind::Permission)
        );
        assert_eq!(read(&h64, 0x3000), Ok(s2(DATA_IPA + 0x1000)));
    }
}

/// Stage-2 faults of a nested walk: a table page that stage 2 does not map is `Unmapped`; one
/// mapped write-only (no read permission for the walker) is `Permission`.
#[test]
fn stage2_faults_of_table_reads() {
    let w = world();
    let (nested, mut t) = w.vtd(4);
    t.map(&w.guest, 0x3000, DATA_IPA, PAGE, true);
    w.iommu.device_attach(w.dev, nested).unwrap();
    assert_eq!(read(&w.h, 0x3000), Ok(s2(DATA_IPA)));
    // Move the tables' stage-2 mapping away: no invalidation by the guest is needed.
    w.iommu.ioas_unmap(w.ioas, TABLES_IPA, TABLES_SIZE).unwrap();
    assert_eq!(read(&w.h, 0x3000), Err(FaultKind::Unmapped));
    w.iommu
        .ioas_map(
            w.ioas,
            Some(TABLES_IPA),
            TABLES_TARGET,
            TABLES_SIZE,
            Prot::WRITE,
        )
        .unwrap();
    assert_eq!(read(&w.h, 0x3000), Err(FaultKind::Permission));
    w.iommu.ioas_unmap(w.ioas, TABLES_IPA, TABLES_SIZE).unwrap();
    w.guest.map_tables(&w.iommu, w.ioas);
    assert_eq!(read(&w.h, 0x3000), Ok(s2(DATA_IPA)));
}

// ---------------------------------------------------------------------------------------
// Coherence.

/// The IOTLB serves a changed stage-1 entry until the guest invalidates (as hardware would),
/// and never after: `Range`, `Config` and `All` each drop it.
#[test]
fn guest_changes_need_an_invalidation() {
    let w = world();
    let (nested, _, mut t) = w.smmu(0, 1);
    t[0].map(&w.guest, 0x1000, DATA_IPA, PAGE, true);
    w.iommu.device_attach(w.dev, nested).unwrap();
    let invs = [
        Invalidation::Range {
            pasid: None,
            iova: 0x1000,
            len: PAGE,
        },
        Invalidation::Range {
            pasid: Some(0),
            iova: 0,
            len: u64::MAX,
        },
        Invalidation::Config { pasid: 0 },
        Invalidation::All,
    ];
    for (i, inv) in invs.into_iter().enumerate() {
        let old = DATA_IPA + (i as u64) * PAGE;
        let new = old + PAGE;
        assert_eq!(read(&w.h, 0x1000), Ok(s2(old)));
        t[0].map(&w.guest, 0x1000, new, PAGE, true);
        // Cached: the walk is not repeated (this thread filled the entry).
        assert_eq!(
            read(&w.h, 0x1000),
            Ok(s2(old)),
            "{inv:?}: served from the IOTLB"
        );
        w.iommu.hwpt_invalidate(nested, inv).unwrap();
        assert_eq!(read(&w.h, 0x1000), Ok(s2(new)), "{inv:?}");
    }
}

/// A stage-2 unmap reaches every nested domain above the IOAS with no guest invalidation,
/// whatever their IOTLBs hold (G5 for nested domains).
#[test]
fn stage2_unmap_reaches_nested_domains() {
    let w = world();
    let (_, g2) = bind(&w.iommu, 2, DeviceInfo::default());
    let (smmu, _, mut t) = w.smmu(0, 1);
    let (vtd, mut vt) = w.vtd(4);
    t[0].map(&w.guest, 0x1000, DATA_IPA + 0x8000, PAGE, true);
    vt.map(&w.guest, 0x1000, DATA_IPA + 0x8000, PAGE, true);
    w.iommu.device_attach(w.dev, smmu).unwrap();
    let dev2 = g2.id();
    w.iommu.device_attach(dev2, vtd).unwrap();
    assert_eq!(read(&w.h, 0x1000), Ok(s2(DATA_IPA + 0x8000)));
    assert_eq!(read(&g2, 0x1000), Ok(s2(DATA_IPA + 0x8000)));
    w.iommu.ioas_unmap(w.ioas, DATA_IPA, DATA_SIZE).unwrap();
    assert_eq!(read(&w.h, 0x1000), Err(FaultKind::Unmapped));
    assert_eq!(read(&g2, 0x1000), Err(FaultKind::Unmapped));
    w.iommu
        .ioas_map(
            w.ioas,
            Some(DATA_IPA),
            0x30_0000_0000,
            DATA_SIZE,
            Prot::READ,
        )
        .unwrap();
    assert_eq!(read(&w.h, 0x1000), Ok(0x30_0000_8000));
    assert_eq!(
        at(&g2, 0, 0x1000, Access::Write),
        Err(FaultKind::Permission)
    );
}

/// `hwpt_invalidate` fences: it waits for a guard alive when it began (on another thread) and
/// returns once that guard is dropped; a guard made after it began does not delay it.
#[test]
fn invalidate_waits_for_guards() {
    invalidate_waits_for_guards_in(FenceMode::Symmetric);
    invalidate_waits_for_guards_in(FenceMode::Asymmetric);
}

fn invalidate_waits_for_guards_in(mode: FenceMode) {
    let w = Arc::new(world_in(mode));
    let (nested, _, mut t) = w.smmu(0, 1);
    t[0].map(&w.guest, 0x1000, DATA_IPA, PAGE, true);
    w.iommu.device_attach(w.dev, nested).unwrap();
    let pinned = Arc::new(Barrier::new(2));
    let release = Arc::new(AtomicBool::new(false));
    let reader = {
        let (w, pinned, release) = (w.clone(), pinned.clone(), release.clone());
        thread::spawn(move || {
            let g = w.h.pin();
            g.translate(0x1000, 4, Access::Read).unwrap();
            pinned.wait();
            while !release.load(Ordering::Acquire) {
                thread::yield_now();
            }
            drop(g);
        })
    };
    pinned.wait();
    let done = Arc::new(AtomicBool::new(false));
    let inv = {
        let (w, done) = (w.clone(), done.clone());
        thread::spawn(move || {
            w.iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
            done.store(true, Ordering::Release);
        })
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
        !done.load(Ordering::Acquire),
        "returned while an older guard was alive"
    );
    // A new guard on this thread does not hold it up once the old one goes.
    let g = w.h.pin();
    release.store(true, Ordering::Release);
    within(Duration::from_secs(10), "hwpt_invalidate", move || {
        inv.join().unwrap()
    });
    drop(g);
    reader.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// Replace and reclamation.

/// G4 with nested domains: paging parent → nested → nested → paging, at the RID and at a
/// PASID, each a translation of the new domain right after the publish; replace to the
/// current nested HWPT is a no-op; a nested HWPT with devices is `EBUSY` to destroy.
#[test]
fn replace_between_paging_and_nested() {
    let w = world();
    // At PASID `p`, an SMMUv3 nested HWPT translates with its CD `p` (the DMA carries SSID
    // `p`); a VT-d one with its table.
    let (a, _, mut ta) = w.smmu(3, 8);
    let (b, mut tb) = w.vtd(4);
    ta[0].map(&w.guest, DATA_IPA, DATA_IPA + 0x1000, PAGE, true);
    ta[5].map(&w.guest, DATA_IPA, DATA_IPA + 0x1000, PAGE, true);
    tb.map(&w.guest, DATA_IPA, DATA_IPA + 0x2000, PAGE, true);
    for pasid in [0, 5] {
        let attach = |pt| {
            if pasid == 0 {
                w.iommu.device_attach(w.dev, pt)
            } else {
                w.iommu.device_attach_pasid(w.dev, pasid, pt)
            }
        };
        let replace = |pt| {
            if pasid == 0 {
                w.iommu.device_replace(w.dev, pt)
            } else {
                w.iommu.device_replace_pasid(w.dev, pasid, pt)
            }
        };
        attach(w.parent).unwrap();
        let r = |_: ()| at(&w.h, pasid, DATA_IPA, Access::Read);
        assert_eq!(r(()), Ok(s2(DATA_IPA)), "pasid {pasid}: IOVA = IPA");
        assert_eq!(replace(a).unwrap(), a);
        assert_eq!(r(()), Ok(s2(DATA_IPA + 0x1000)));
        assert_eq!(replace(a).unwrap(), a);
        err(w.iommu.destroy(a), EBUSY);
        assert_eq!(replace(b).unwrap(), b);
        assert_eq!(r(()), Ok(s2(DATA_IPA + 0x2000)));
        assert_eq!(replace(w.parent).unwrap(), w.parent);
        assert_eq!(r(()), Ok(s2(DATA_IPA)));
        if pasid == 0 {
            w.iommu.device_detach(w.dev).unwrap();
        } else {
            w.iommu.device_detach_pasid(w.dev, pasid).unwrap();
        }
    }
}

/// Nested domains (and the parents they keep alive) are freed once destroyed and no guard
/// can see them: memory returns to its baseline after many cycles.
#[test]
fn nested_cycles_return_to_baseline() {
    let w = world();
    w.iommu.device_attach(w.dev, w.parent).unwrap();
    let baseline = counts(&w.iommu);
    let mut t = S1Table::new(&w.guest, Fmt::Vtd { levels: 4 });
    t.map(&w.guest, 0x1000, DATA_IPA, PAGE, true);
    for i in 0..200 {
        let n = w
            .nested(Stage1::VtdS1 {
                pgtbl_addr: t.root,
                addr_width: 48,
            })
            .unwrap();
        if i % 2 == 0 {
            w.iommu.device_attach_pasid(w.dev, 1, n).unwrap();
        } else {
            w.iommu.device_replace(w.dev, n).unwrap();
        }
        assert_eq!(
            at(&w.h, if i % 2 == 0 { 1 } else { 0 }, 0x1000, Access::Read),
            Ok(s2(DATA_IPA))
        );
        if i % 2 == 0 {
            w.iommu.device_detach_pasid(w.dev, 1).unwrap();
        } else {
            w.iommu.device_replace(w.dev, w.parent).unwrap();
        }
        w.iommu.destroy(n).unwrap();
    }
    let end = counts(&w.iommu);
    assert_eq!(end.live_domains, baseline.live_domains);
    assert_eq!(end.live_tables, baseline.live_tables);
    assert_eq!(end.hwpts, baseline.hwpts);
    // The parent outlives a destroyed child only as long as a guard could see it.
    w.iommu.device_detach(w.dev).unwrap();
    let n = w.nested(Stage1::SmmuV3 { ste: ste_bypass() }).unwrap();
    w.iommu.destroy(n).unwrap();
    w.iommu.destroy(w.parent).unwrap();
    let s = counts(&w.iommu);
    assert_eq!(s.live_domains, 0, "{s:?}");
}

// ---------------------------------------------------------------------------------------
// A guest's garbage.

mod garbage {
    use super::*;
    use proptest::prelude::*;

    /// Pages of table memory a case builds its tables in (root or CD table first).
    const TABLE_PAGES: u64 = 8;

    /// A word a guest might write: an address of one of the table pages (so walks go deep,
    /// and loop) or of guest data, with random flag bits; or anything at all.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => (0..TABLE_PAGES, any::<u16>())
                .prop_map(|(p, flags)| (TABLES_IPA + p * PAGE) | u64::from(flags & 0xfff)),
            2 => (0..DATA_SIZE / PAGE, any::<u16>(), any::<bool>())
                .prop_map(|(p, flags, hi)| (DATA_IPA + p * PAGE) | u64::from(flags & 0xfff)
                    | if hi { 1 << 62 } else { 0 }),
            1 => any::<u64>(),
            1 => Just(0u64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever a guest writes over its STE, CDs and tables, translation never panics,
        /// every success lands in memory stage 2 maps (writes in writable memory only), and
        /// every fault names an IOVA of the request: the walkers trust nothing they read
        /// (tables that point at themselves, blocks where tables belong, reserved values,
        /// addresses outside memory). Each case builds valid tables mapping 16 pages, then
        /// overwrites random words of them; over the 256 cases about one translation in six
        /// succeeds (counted when the test was written), so both paths are exercised.
        #[test]
        fn walks_of_corrupted_tables_never_panic(
            vtd in any::<bool>(),
            ste in (any::<u64>(), any::<u64>(), any::<bool>()),
            corrupt in proptest::collection::vec((0..TABLE_PAGES * PAGE / 8, word()), 0..24),
            iovas in proptest::collection::vec(
                prop_oneof![4 => 0..16 * PAGE, 2 => 0..1u64 << 40, 1 => any::<u64>()], 1..16),
            ssids in proptest::collection::vec(
                prop_oneof![2 => Just(0u32), 2 => 1u32..4, 1 => 0u32..300], 1..4),
        ) {
            let w = world();
            let s1 = if vtd {
                let (_, mut t) = (0, S1Table::new(&w.guest, Fmt::Vtd { levels: 4 }));
                t.map(&w.guest, 0, DATA_IPA, 16 * PAGE, true);
                Stage1::VtdS1 { pgtbl_addr: t.root, addr_width: 48 }
            } else {
                let cd_table = w.guest.alloc_page();
                let mut t = S1Table::new(&w.guest, Fmt::Arm { t0sz: 16 });
                t.map(&w.guest, 0, DATA_IPA, 16 * PAGE, true);
                for i in 0..4 {
                    write_cd(&w.guest, cd_table, i, 16, t.root);
                }
                if ste.2 {
                    Stage1::SmmuV3 { ste: ste_s1(cd_table, (ste.1 % 3) as u32, ste.1 % 3) }
                } else {
                    Stage1::SmmuV3 { ste: [ste.0, ste.1] }
                }
            };
            for (i, v) in &corrupt {
                w.guest.write(TABLES_IPA + i * 8, *v);
            }
            let Ok(nested) = w.nested(s1) else {
                return Ok(());
            };
            w.iommu.device_attach(w.dev, nested).unwrap();
            for &iova in &iovas {
                for &ssid in &ssids {
                    let g = w.h.pin_pasid(ssid);
                    for access in [Access::Read, Access::Write] {
                        match g.translate(iova, 8, access) {
                            Ok(t) => {
                                for c in t {
                                    let in_data = c.target >= DATA_TARGET
                                        && c.target + c.len <= DATA_TARGET + DATA_SIZE;
                                    let in_tables = c.target >= TABLES_TARGET
                                        && c.target + c.len <= TABLES_TARGET + TABLES_SIZE;
                                    prop_assert!(in_data || in_tables, "{c:x?}");
                                    prop_assert!(
                                        access == Access::Read || in_data,
                                        "table memory is read-only at stage 2: {c:x?}"
                                    );
                                }
                            }
                            Err(f) => prop_assert!(
                                f.iova >= iova && f.iova <= iova.saturating_add(7),
                                "{f:?}"
                            ),
                        }
                    }
                }
            }
        }
    }
}

/// The IOTLB keeps the region both stages map linearly: a buffer inside a 2 MiB stage-1 block
/// over 2 MiB stage-2 leaves is one walk, then no table read for any page of it, and a long
/// request through it is one chunk; over 4 KiB stage-1 pages each page is its own entry.
#[test]
fn a_block_mapping_is_one_iotlb_entry() {
    use std::sync::atomic::AtomicU64;
    struct Counting {
        inner: Arc<stage1::GuestMemory>,
        reads: AtomicU64,
    }
    impl viommu::TableMemory for Counting {
        fn read_u64(&self, target: u64) -> Option<u64> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.read_u64(target)
        }
    }
    let w = world();
    let mem = Arc::new(Counting {
        inner: w.guest.mem.clone(),
        reads: AtomicU64::new(0),
    });
    let cd_table = w.guest.alloc_page();
    let mut t = S1Table::new(&w.guest, Fmt::Arm { t0sz: 16 });
    write_cd(&w.guest, cd_table, 0, 16, t.root);
    // 2 MiB block at 0x4000_0000; 4 KiB pages at 0x8000_0000 (the same IPAs).
    t.map_level(&w.guest, 0x4000_0000, DATA_IPA, 0x20_0000, true, 1);
    t.map(&w.guest, 0x8000_0000, DATA_IPA, 0x20_0000, true);
    let nested = w
        .iommu
        .hwpt_alloc_nested(
            w.dev,
            w.parent,
            Stage1::SmmuV3 {
                ste: ste_s1(cd_table, 0, 0),
            },
            mem.clone(),
        )
        .unwrap();
    w.iommu.device_attach(w.dev, nested).unwrap();
    let reads = || mem.reads.load(Ordering::Relaxed);
    let g = w.h.pin();
    let c: Vec<_> = g
        .translate(0x4000_0000, 0x10_0000, Access::Write)
        .unwrap()
        .collect();
    assert_eq!(c.len(), 1, "{c:x?}");
    assert_eq!((c[0].target, c[0].len), (s2(DATA_IPA), 0x10_0000));
    let after_first = reads();
    assert!(after_first > 0);
    // Every other page of the block: served by the one entry.
    for off in (0..0x20_0000).step_by(0x1_1000) {
        let c: Vec<_> = g
            .translate(0x4000_0000 + off, 8, Access::Read)
            .unwrap()
            .collect();
        assert_eq!(c[0].target, s2(DATA_IPA + off));
    }
    assert_eq!(reads(), after_first, "the block was walked once");
    // The same memory through 4 KiB pages: one walk a page (no entry covers two).
    let before = reads();
    let c: Vec<_> = g
        .translate(0x8000_0000, 4 * PAGE, Access::Read)
        .unwrap()
        .collect();
    assert_eq!(c.len(), 1, "contiguous pages merge into one chunk: {c:x?}");
    let per_page = (reads() - before) / 4;
    assert!(per_page > 0, "each page walked");
    drop(g);
    // A guest change inside the block is seen after an invalidation (the entry covers it).
    t.map_level(
        &w.guest,
        0x4000_0000,
        DATA_IPA + 0x20_0000,
        0x20_0000,
        true,
        1,
    );
    w.iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
    assert_eq!(read(&w.h, 0x4012_3000), Ok(s2(DATA_IPA + 0x32_3000)));
}
