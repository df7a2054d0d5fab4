//! Model-based property test of the control plane and of translation.
//!
//! Random sequences of control calls run against a real [`Iommu`] and, side by side, against a
//! plain reference model built from `BTreeMap`s that encodes the rules of the API contract
//! (its errno table above all: the variants of `viommu::Error` and `Error::errno`). Every result is compared: the errno of every error, the value of every `Ok`
//! (the IOVA of a fixed map, the bytes of an unmap, the HWPT id of an attach or replace), and
//! every translation (the merged chunks, or the fault kind).
//!
//! The universe is small on purpose so that collisions happen: two or three IOASes, four devices
//! in two groups (one device reserves two pages, one reserves part of a page, one has a 2 MiB
//! aperture), IOVAs mostly in the first 48 pages, around the 2 MiB aperture end, and at the top
//! of the 64-bit space.
//!
//! Where the contract leaves a choice to the implementation the model accepts every allowed outcome
//! and then follows the one the implementation took:
//! - a call that breaks several rules may report any of their errnos;
//! - an attach (or replace) to an IOAS whose group has no HWPT there may reuse a live auto HWPT
//!   of that IOAS made for another group, or make a new one;
//! - an automatic map may put its IOVA anywhere that is aligned, free, outside the reserved
//!   ranges and inside the aperture of every device attached to the IOAS (it must succeed when
//!   a naturally aligned hole exists);
//! - a range that ends exactly at 2^64 may or may not count as wrapping;
//! - a HWPT may or may not restrict maps of its IOAS to the aperture of the device it was made
//!   for (the contract names only attached devices; `Error::OutsideAperture` also names domains);
//! - `hwpt_alloc` may or may not enforce the device's reserved ranges (the device is not
//!   attached yet; iommufd enforces them at attach);
//! - a request that is both blocked and past the aperture may fault either way, and a
//!   zero-length request of a device that cannot translate may be empty or fault;
//! - a request past the aperture of the device a HWPT was made for may fault `Aperture` instead
//!   of `Unmapped` or `Permission` when it goes through that HWPT (a domain has an aperture too);
//! - a fault's IOVA is only checked to lie in the request (rounded down to its first page).
//!
//! PASIDs and nesting: devices 0 and 1 (one group) have PASIDs 1..=3 and device 3 has PASID 1;
//! the model keeps each device's attached PASIDs and the HWPT of each (group, PASID), and
//! counts PASID attachments as HWPT users. The guest (`stage1.rs`) owns three stage-1 tables
//! (two AArch64, one VT-d) and two SMMUv3 CD tables in one block of table memory that the
//! cases map read-only at a fixed IPA range of an IOAS (and may unmap or remap: a table read
//! then faults as its stage 2 says). A nested translation is expected page by page: the
//! guest's reference composed with the areas of the parent's IOAS. Where the contract allows
//! several outcomes the model accepts each of them:
//! - after the guest changes a stage-1 page without invalidating, a nested HWPT that walks
//!   that table may translate the page by the old or the new value until the HWPT is
//!   invalidated (any kind: every one drops every cached entry); afterwards only the new one;
//! - a stage-1 output past the parent domain's aperture may miss stage 2 (`Unmapped`).

//!
//! The test target is split by concern:
//! - `strategies`: the operations and the proptest strategies that generate them;
//! - `reference`: the model's state and its lookups;
//! - `control`: each control call, run on both sides and compared (errno or value);
//! - `nested`: the PASID calls, `hwpt_alloc_nested`, `hwpt_invalidate` and the guest's
//!   stage-1 changes;
//! - `translate`: the translations the model predicts, and their comparison.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/stage1.rs"]
mod stage1;

mod control;
mod nested;
mod reference;
mod strategies;
mod translate;

use common::{narrow, reserving, PAGE};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reference::{Model, Outcome};
use strategies::{
    case_strategy, AllocDev, AllocPt, At, HeldCall, Op, Pt, TLen, Target, UnmapRange, Victim,
};
use viommu::errno::{EADDRINUSE, EBUSY, EDEADLK, EEXIST, EINVAL, ENOENT, EOPNOTSUPP};
use viommu::{Access, DeviceInfo, FaultKind, Prot};

/// Base of the targets the test maps to (1 GiB, so 2 MiB aligned).
const TBASE: u64 = 0x4000_0000;
/// The guest's stage-1 table memory: IPAs `TABLES_IPA ..+ TABLES_SIZE` (pages 256..288, inside
/// every aperture and clear of the IOVAs the other operations pick) ...
const TABLES_IPA: u64 = 256 * PAGE;
const TABLES_SIZE: u64 = 32 * PAGE;
/// ... at stage-2 targets from here (no other map targets this range).
const TABLES_TARGET: u64 = 0x80_0000_0000;
/// First IPA page of the guest RAM the stage-1 tables mostly map to (32 pages, the first 16
/// read-write and the last 16 read-only when the prelude maps them).
const GUEST_RAM: u64 = 64;
const TWO_POW_64: u128 = 1 << 64;
/// The model never holds more live IOASes than this.
const MAX_IOAS: usize = 3;
/// Pages every device translates in a full check (window, around 2 MiB, a 2 MiB-aligned spot).
const CHECK_PAGES: &[std::ops::Range<u64>] = &[0..56, 500..524, 1023..1026, 1535..1537];

type Check = Result<(), TestCaseError>;

fn fail<T>(msg: String) -> Result<T, TestCaseError> {
    Err(TestCaseError::fail(msg))
}

/// The devices of every case: (group, info). Groups 10 and 11 map to model groups 0 and 1.
/// Devices 0 and 1 (one group) have 2-bit PASIDs (1..=3), device 3 (the narrow one) 1-bit
/// PASIDs (1), device 2 none.
fn device_infos() -> Vec<(u32, DeviceInfo)> {
    vec![
        (10, with_pasids(DeviceInfo::default(), 2)),
        (10, with_pasids(reserving(8 * PAGE..10 * PAGE), 2)),
        (11, reserving(40 * PAGE + 0x100..40 * PAGE + 0x200)),
        (11, with_pasids(narrow(21), 1)),
    ]
}

fn with_pasids(info: DeviceInfo, pasid_bits: u8) -> DeviceInfo {
    DeviceInfo { pasid_bits, ..info }
}

fn run(ops: &[Op]) -> Check {
    let mut model = Model::new();
    for (n, op) in ops.iter().enumerate() {
        model
            .apply(op)
            .map_err(|e| TestCaseError::fail(format!("op #{n}: {e}")))?;
    }
    model.finish()
}

proptest! {
    // 256 cases (proptest's default; `PROPTEST_CASES` raises it for a longer hunt).
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn control_plane_and_translation_match_the_reference_model(ops in case_strategy()) {
        run(&ops)?;
    }
}

/// A fixed sequence through the rules the random test relies on, each step with the outcome
/// the contract gives it: the model must predict it and the implementation must return it, so a
/// broken model or harness shows up here first with a readable failure.
#[test]
fn model_replays_a_fixed_sequence() {
    use Op::*;
    use Outcome::{Errno, Fault};
    let map = |iova: u64, pages: u64, prot| Map {
        ioas: 0,
        iova: Some(iova * PAGE),
        target: Target::FollowIova,
        len: pages * PAGE,
        prot,
    };
    let translate = |dev, iova, len, access| Translate {
        dev,
        at: At::Raw(iova),
        len: TLen::Bytes(len),
        access,
        pinned: true,
    };
    let steps = vec![
        (map(0, 4, Prot::RW), Outcome::Ok),
        (map(4, 2, Prot::READ), Outcome::Ok),
        (map(2, 1, Prot::RW), Errno(EEXIST)),
        // Fine while D1 (which reserves pages 8 and 9) is not attached ...
        (map(8, 1, Prot::RW), Outcome::Ok),
        // ... but then D1 cannot attach.
        (
            Attach {
                dev: 1,
                pt: Pt::Ioas(0),
            },
            Errno(EADDRINUSE),
        ),
        (
            Unmap {
                ioas: 0,
                range: UnmapRange::Raw(8 * PAGE, PAGE),
            },
            Outcome::Ok,
        ),
        (
            Attach {
                dev: 0,
                pt: Pt::Ioas(0),
            },
            Outcome::Ok,
        ),
        // Same group, same IOAS: the same auto HWPT (the model checks the id).
        (
            Attach {
                dev: 1,
                pt: Pt::Ioas(0),
            },
            Outcome::Ok,
        ),
        (
            Attach {
                dev: 1,
                pt: Pt::Ioas(0),
            },
            Errno(EINVAL),
        ),
        (
            Attach {
                dev: 1,
                pt: Pt::Ioas(1),
            },
            Errno(EINVAL),
        ),
        (map(8, 1, Prot::RW), Errno(EINVAL)),
        (
            Map {
                ioas: 0,
                iova: Some(0x10_0800),
                target: Target::FollowIova,
                len: PAGE,
                prot: Prot::RW,
            },
            Errno(EINVAL),
        ),
        (
            Unmap {
                ioas: 0,
                range: UnmapRange::Cut(0, 0),
            },
            Errno(ENOENT),
        ),
        // One chunk across the two areas (targets follow the IOVA).
        (
            translate(0, 0x10, 6 * PAGE - 0x10, Access::Read),
            Outcome::Ok,
        ),
        (
            translate(0, 0, 6 * PAGE, Access::Write),
            Fault(FaultKind::Permission),
        ),
        (
            translate(0, 6 * PAGE, PAGE, Access::Read),
            Fault(FaultKind::Unmapped),
        ),
        (
            translate(3, 0, PAGE, Access::Read),
            Fault(FaultKind::Blocked),
        ),
        (
            translate(0, 1 << 48, PAGE, Access::Read),
            Fault(FaultKind::Aperture),
        ),
        (Detach { dev: 0 }, Outcome::Ok),
        (
            translate(0, 0, PAGE, Access::Read),
            Fault(FaultKind::Blocked),
        ),
        (translate(1, 0, PAGE, Access::Read), Outcome::Ok),
        (
            Replace {
                dev: 0,
                pt: Pt::Ioas(0),
            },
            Errno(EINVAL),
        ),
        (Detach { dev: 0 }, Errno(EINVAL)),
        (
            HwptAlloc {
                dev: AllocDev::Device(2),
                pt: AllocPt::Ioas(0),
                flags: 0,
            },
            Outcome::Ok,
        ),
        (
            HwptAlloc {
                dev: AllocDev::Device(2),
                pt: AllocPt::Ioas(0),
                flags: 1 << 7,
            },
            Errno(EOPNOTSUPP),
        ),
        // The group moves to the user HWPT; its auto HWPT is freed ...
        (
            Replace {
                dev: 1,
                pt: Pt::Hwpt(1),
            },
            Outcome::Ok,
        ),
        // ... so replacing back to it (the only dead HWPT) is ENOENT.
        (
            Replace {
                dev: 1,
                pt: Pt::Hwpt(6),
            },
            Errno(ENOENT),
        ),
        (
            Destroy {
                victim: Victim::Hwpt(6),
            },
            Errno(ENOENT),
        ),
        (
            Destroy {
                victim: Victim::Hwpt(0),
            },
            Errno(EBUSY),
        ),
        (
            Destroy {
                victim: Victim::Ioas(0),
            },
            Errno(EBUSY),
        ),
        (
            WhileHolding {
                dev: 1,
                call: HeldCall::Synchronize,
            },
            Errno(EDEADLK),
        ),
        (
            WhileHolding {
                dev: 3,
                call: HeldCall::UnmapAll(0),
            },
            Errno(EDEADLK),
        ),
        (
            WhileHolding {
                dev: 3,
                call: HeldCall::Detach(1),
            },
            Errno(EDEADLK),
        ),
        (
            Unmap {
                ioas: 0,
                range: UnmapRange::Span(0, 1),
            },
            Outcome::Ok,
        ),
        (
            Unmap {
                ioas: 0,
                range: UnmapRange::Raw(0, PAGE),
            },
            Errno(ENOENT),
        ),
        (
            Unmap {
                ioas: 0,
                range: UnmapRange::All,
            },
            Outcome::Ok,
        ),
        (Detach { dev: 1 }, Outcome::Ok),
        (
            Destroy {
                victim: Victim::Hwpt(0),
            },
            Outcome::Ok,
        ),
        (
            Destroy {
                victim: Victim::Ioas(0),
            },
            Outcome::Ok,
        ),
        (CheckAll, Outcome::Ok),
    ];
    let mut model = Model::new();
    for (n, (op, want)) in steps.iter().enumerate() {
        model.last.set(None);
        if let Err(e) = model.apply(op) {
            panic!("step #{n}: {e}");
        }
        if !matches!(op, CheckAll) {
            assert_eq!(model.last.get(), Some(*want), "step #{n}: {op:?}");
        }
    }
    if let Err(e) = model.finish() {
        panic!("{e}");
    }
}

/// A fixed sequence through the PASID and nesting rules, each step with the outcomes the
/// contract allows (one, except where the IOTLB may serve a stage-1 entry the guest changed
/// without invalidating: the old or the new result).
#[test]
fn model_replays_pasid_and_nested_sequence() {
    use strategies::{map_tables, InvSel, NestKind, ParentSel};
    use viommu::errno::EOVERFLOW;
    use viommu::Invalidation;
    use Op::*;
    use Outcome::{Errno, Fault};
    const OK: &[Outcome] = &[Outcome::Ok];
    const BLOCKED: Outcome = Fault(FaultKind::Blocked);
    const UNMAPPED: Outcome = Fault(FaultKind::Unmapped);
    const PERMISSION: Outcome = Fault(FaultKind::Permission);
    let map = |iova_page: u64, pages: u64, prot| Map {
        ioas: 0,
        iova: Some(iova_page * PAGE),
        target: Target::FollowIova,
        len: pages * PAGE,
        prot,
    };
    let unmap = |iova: u64, len: u64| Unmap {
        ioas: 0,
        range: UnmapRange::Raw(iova, len),
    };
    let at = |dev, pasid, page: u64, access| TranslatePasid {
        dev,
        pasid,
        at: At::Raw(page * PAGE),
        len: TLen::Bytes(PAGE),
        access,
    };
    let rd = Access::Read;
    let wr = Access::Write;
    let attach_pasid = |dev, pasid, pt| AttachPasid { dev, pasid, pt };
    let alloc_nested = |parent, kind| AllocNested {
        dev: AllocDev::Device(0),
        parent,
        kind,
    };
    let invalidate = |hwpt, inv| Invalidate { hwpt, inv };
    let range = |pasid, iova, len| Invalidation::Range { pasid, iova, len };
    let destroy_hwpt = |i| Destroy {
        victim: Victim::Hwpt(i),
    };
    let steps: Vec<(Op, &[Outcome])> = vec![
        // Stage 2: the guest's tables (read-only), its RAM, and pages 0..4.
        (map_tables(0, Prot::READ), OK),
        (map(GUEST_RAM, 16, Prot::RW), OK),
        (map(GUEST_RAM + 16, 16, Prot::READ), OK),
        (map(0, 4, Prot::RW), OK),
        // PASID numbers: none on device 2; 0 and past the range on device 0.
        (attach_pasid(2, 1, Pt::Ioas(0)), &[Errno(EINVAL)]),
        (attach_pasid(0, 0, Pt::Ioas(0)), &[Errno(EINVAL)]),
        (attach_pasid(0, 4, Pt::Ioas(0)), &[Errno(EINVAL)]),
        (attach_pasid(0, 1, Pt::Ioas(0)), OK),
        (at(0, 1, 0, rd), OK),
        (at(0, 2, 0, rd), &[BLOCKED]),
        (at(0, 0, 0, rd), &[BLOCKED]),
        // Attached already: EBUSY, even to the same IOAS.
        (attach_pasid(0, 1, Pt::Ioas(0)), &[Errno(EBUSY)]),
        // Device 1 (same group) joins PASID 1 only on the same HWPT.
        (attach_pasid(1, 1, Pt::Ioas(1)), &[Errno(EINVAL)]),
        (attach_pasid(1, 1, Pt::Hwpt(0)), OK),
        (at(1, 1, 0, wr), OK),
        // Device 1's reserved pages 8 and 9 hold on the IOAS through its PASID.
        (map(8, 1, Prot::RW), &[Errno(EINVAL)]),
        (
            Destroy {
                victim: Victim::Device(0),
            },
            &[Errno(EBUSY)],
        ),
        (destroy_hwpt(0), &[Errno(EBUSY)]),
        (
            ReplacePasid {
                dev: 0,
                pasid: 2,
                pt: Pt::Ioas(0),
            },
            &[Errno(EINVAL)],
        ),
        (DetachPasid { dev: 0, pasid: 3 }, &[Errno(EINVAL)]),
        // Replace to the current HWPT: a no-op (the model checks the id).
        (
            ReplacePasid {
                dev: 0,
                pasid: 1,
                pt: Pt::Ioas(0),
            },
            OK,
        ),
        // Nesting: a NEST_PARENT HWPT (live HWPT 1), and parents that are not.
        (
            HwptAlloc {
                dev: AllocDev::Device(0),
                pt: AllocPt::Ioas(0),
                flags: 1,
            },
            OK,
        ),
        (
            HwptAlloc {
                dev: AllocDev::Device(0),
                pt: AllocPt::Hwpt(1),
                flags: 0,
            },
            &[Errno(EOPNOTSUPP)],
        ),
        (
            alloc_nested(ParentSel::Hwpt(0), NestKind::Vtd),
            &[Errno(EINVAL)],
        ),
        (
            alloc_nested(ParentSel::Ioas(0), NestKind::Vtd),
            &[Errno(EINVAL)],
        ),
        (
            alloc_nested(ParentSel::Parent(0), NestKind::Invalid(0)),
            &[Errno(EINVAL)],
        ),
        (
            alloc_nested(ParentSel::Parent(0), NestKind::Invalid(4)),
            &[Errno(EINVAL)],
        ),
        // Nested A (SMMUv3, four CDs, untagged DMA on CD 0) and B (VT-d): live HWPTs 2, 3.
        (
            alloc_nested(ParentSel::Parent(0), NestKind::SmmuFour { s1dss: 2 }),
            OK,
        ),
        (alloc_nested(ParentSel::Parent(0), NestKind::Vtd), OK),
        (
            alloc_nested(ParentSel::Hwpt(2), NestKind::Vtd),
            &[Errno(EINVAL)],
        ),
        (destroy_hwpt(1), &[Errno(EBUSY)]),
        // The RID on A: table 0 page 0 is read-only at stage 1.
        (
            Attach {
                dev: 0,
                pt: Pt::Nested(0),
            },
            OK,
        ),
        (at(0, 0, 0, rd), OK),
        (at(0, 0, 0, wr), &[PERMISSION]),
        (at(0, 0, 1, wr), OK),
        // Stage 1 maps page 8 to IPA page 5, which stage 2 does not map.
        (at(0, 0, 8, rd), &[UNMAPPED]),
        (at(0, 0, 9, rd), &[UNMAPPED]),
        // Page 10 reads the table memory itself (read-only at stage 2).
        (at(0, 0, 10, rd), OK),
        (at(0, 0, 10, wr), &[PERMISSION]),
        // PASID 1 has its own domain; 2 and 3 fall back to A's CDs (2 invalid; 3: table 1),
        // for device 0 only (device 1 is not attached at its RID).
        (at(0, 1, 0, wr), OK),
        (at(0, 2, 2, rd), &[BLOCKED]),
        (at(0, 3, 2, rd), OK),
        (at(1, 3, 2, rd), &[BLOCKED]),
        // The guest clears table 0 page 1 without invalidating: old or new ...
        (S1Unmap { table: 0, page: 1 }, OK),
        (at(0, 0, 1, rd), &[Outcome::Ok, UNMAPPED]),
        // ... and the new one once A is invalidated (any kind drops every entry).
        (invalidate(InvSel::Nested(1), Invalidation::All), OK),
        (at(0, 0, 1, rd), &[Outcome::Ok, UNMAPPED]),
        (invalidate(InvSel::Nested(0), range(Some(0), 0, PAGE)), OK),
        (at(0, 0, 1, rd), &[UNMAPPED]),
        (
            S1Map {
                table: 0,
                page: 1,
                ipa: (GUEST_RAM + 20) * PAGE,
                writable: true,
            },
            OK,
        ),
        (at(0, 0, 1, rd), &[Outcome::Ok, UNMAPPED]),
        (
            invalidate(InvSel::Nested(0), Invalidation::Config { pasid: 3 }),
            OK,
        ),
        // Stage 2 read-only.
        (at(0, 0, 1, wr), &[PERMISSION]),
        // Invalidation errors.
        (
            invalidate(InvSel::Hwpt(1), Invalidation::All),
            &[Errno(EINVAL)],
        ),
        (
            invalidate(InvSel::Ioas(0), Invalidation::All),
            &[Errno(EINVAL)],
        ),
        (
            invalidate(InvSel::Nested(0), range(None, 0, 0)),
            &[Errno(EINVAL)],
        ),
        (
            invalidate(InvSel::Nested(0), range(None, u64::MAX - PAGE + 2, PAGE)),
            &[Errno(EOVERFLOW)],
        ),
        (
            invalidate(InvSel::Nested(0), range(Some(1 << 20), 0, PAGE)),
            &[Errno(EINVAL)],
        ),
        (
            invalidate(InvSel::Nested(0), Invalidation::Config { pasid: 1 << 20 }),
            &[Errno(EINVAL)],
        ),
        (
            WhileHolding {
                dev: 0,
                call: HeldCall::Invalidate(InvSel::Nested(0)),
            },
            &[Errno(EDEADLK)],
        ),
        (
            WhileHolding {
                dev: 1,
                call: HeldCall::DetachPasid(0, 1),
            },
            &[Errno(EDEADLK)],
        ),
        // PASID 1 of the group moves to B (both devices), and its auto HWPT is freed.
        (
            ReplacePasid {
                dev: 1,
                pasid: 1,
                pt: Pt::Nested(1),
            },
            OK,
        ),
        (at(0, 1, 0, rd), OK),
        (at(1, 1, 4, wr), &[PERMISSION]),
        (at(1, 1, 6, rd), &[UNMAPPED]),
        // Non-canonical for VT-d's 48-bit width, inside the device's aperture.
        (at(1, 1, (1 << 35) + 1, rd), &[Fault(FaultKind::Aperture)]),
        (destroy_hwpt(6), &[Errno(ENOENT)]),
        (destroy_hwpt(1), &[Errno(EBUSY)]),
        (destroy_hwpt(2), &[Errno(EBUSY)]),
        // Stage-2 changes need no invalidation: the RAM under B's page 0, then the tables.
        (at(0, 1, 0, rd), OK),
        (unmap(GUEST_RAM * PAGE, 16 * PAGE), OK),
        (at(0, 1, 0, rd), &[UNMAPPED]),
        (map(GUEST_RAM, 16, Prot::RW), OK),
        (at(0, 1, 0, wr), OK),
        (at(0, 0, 0, rd), OK),
        (unmap(TABLES_IPA, TABLES_SIZE), OK),
        (at(0, 0, 0, rd), &[UNMAPPED]),
        (at(0, 1, 0, rd), &[UNMAPPED]),
        (map_tables(0, Prot::WRITE), OK),
        (at(0, 0, 0, rd), &[PERMISSION]),
        (unmap(TABLES_IPA, TABLES_SIZE), OK),
        (map_tables(0, Prot::READ), OK),
        (at(0, 0, 0, rd), OK),
        // The RID leaves: PASID 1 stays on B, PASID 3 has nothing to fall back to.
        (Detach { dev: 0 }, OK),
        (at(0, 3, 2, rd), &[BLOCKED]),
        (at(0, 1, 0, rd), OK),
        // Live HWPTs now: the parent, A, B.
        (destroy_hwpt(1), OK),
        (destroy_hwpt(1), &[Errno(EBUSY)]),
        (DetachPasid { dev: 0, pasid: 1 }, OK),
        (at(0, 1, 0, rd), &[BLOCKED]),
        (at(1, 1, 0, rd), OK),
        (DetachPasid { dev: 1, pasid: 1 }, OK),
        (destroy_hwpt(0), &[Errno(EBUSY)]),
        (destroy_hwpt(1), OK),
        (destroy_hwpt(0), OK),
        (
            Destroy {
                victim: Victim::Device(0),
            },
            OK,
        ),
        (CheckAll, OK),
    ];
    let mut model = Model::new();
    for (n, (op, want)) in steps.iter().enumerate() {
        model.last.set(None);
        if let Err(e) = model.apply(op) {
            panic!("step #{n}: {e}");
        }
        let got = model.last.get();
        assert!(
            matches!(op, CheckAll) || got.is_some_and(|g| want.contains(&g)),
            "step #{n}: {op:?}: got {got:?}, want one of {want:?}"
        );
    }
    if let Err(e) = model.finish() {
        panic!("{e}");
    }
}
