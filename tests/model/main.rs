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
//! The test target is split by concern:
//! - `strategies`: the operations and the proptest strategies that generate them;
//! - `reference`: the model's state and its lookups;
//! - `control`: each control call, run on both sides and compared (errno or value);
//! - `translate`: the translations the model predicts, and their comparison.

#[path = "../common/mod.rs"]
mod common;

mod control;
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
fn device_infos() -> Vec<(u32, DeviceInfo)> {
    vec![
        (10, DeviceInfo::default()),
        (10, reserving(8 * PAGE..10 * PAGE)),
        (11, reserving(40 * PAGE + 0x100..40 * PAGE + 0x200)),
        (11, narrow(21)),
    ]
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
