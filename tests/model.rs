//! Model-based property test of the control plane and of translation.
//!
//! Random sequences of control calls run against a real [`Iommu`] and, side by side, against a
//! plain reference model built from `BTreeMap`s that encodes the rules of SPEC.md (its errno
//! table above all). Every result is compared: the errno of every error, the value of every `Ok`
//! (the IOVA of a fixed map, the bytes of an unmap, the HWPT id of an attach or replace), and
//! every translation (the merged chunks, or the fault kind).
//!
//! The universe is small on purpose so that collisions happen: two or three IOASes, four devices
//! in two groups (one device reserves two pages, one reserves part of a page, one has a 2 MiB
//! aperture), IOVAs mostly in the first 48 pages, around the 2 MiB aperture end, and at the top
//! of the 64-bit space.
//!
//! Where SPEC.md leaves a choice to the implementation the model accepts every allowed outcome
//! and then follows the one the implementation took:
//! - a call that breaks several rules may report any of their errnos;
//! - an attach (or replace) to an IOAS whose group has no HWPT there may reuse a live auto HWPT
//!   of that IOAS made for another group, or make a new one;
//! - an automatic map may put its IOVA anywhere that is aligned, free, outside the reserved
//!   ranges and inside the aperture of every device attached to the IOAS (it must succeed when
//!   a naturally aligned hole exists);
//! - a range that ends exactly at 2^64 may or may not count as wrapping;
//! - a HWPT may or may not restrict maps of its IOAS to the aperture of the device it was made
//!   for (SPEC.md names only attached devices; `Error::OutsideAperture` also names domains);
//! - `hwpt_alloc` may or may not enforce the device's reserved ranges (the device is not
//!   attached yet; iommufd enforces them at attach);
//! - a request that is both blocked and past the aperture may fault either way, and a
//!   zero-length request of a device that cannot translate may be empty or fault;
//! - a request past the aperture of the device a HWPT was made for may fault `Aperture` instead
//!   of `Unmapped` or `Permission` when it goes through that HWPT (a domain has an aperture too);
//! - a fault's IOVA is only checked to lie in the request (rounded down to its first page).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use viommu::errno::{
    EADDRINUSE, EBUSY, EDEADLK, EEXIST, EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, EOVERFLOW,
};
use viommu::{
    Access, Chunk, Device, DeviceInfo, Error, Fault, FaultKind, GroupId, HwptFlags, Iommu, ObjId,
    Prot, Translation,
};

const PAGE: u64 = 4096;
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
#[allow(clippy::single_range_in_vec_init)] // a list of one reserved range each, on purpose
fn device_infos() -> Vec<(u32, DeviceInfo)> {
    vec![
        (10, DeviceInfo::default()),
        (
            10,
            DeviceInfo {
                iova_bits: 48,
                reserved: vec![8 * PAGE..10 * PAGE],
            },
        ),
        (
            11,
            DeviceInfo {
                iova_bits: 48,
                reserved: vec![40 * PAGE + 0x100..40 * PAGE + 0x200],
            },
        ),
        (
            11,
            DeviceInfo {
                iova_bits: 21,
                reserved: Vec::new(),
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Target {
    At(u64),
    /// `TBASE + iova`, so that neighbouring areas get contiguous targets and chunks merge.
    FollowIova,
}

#[derive(Clone, Copy, Debug)]
enum UnmapRange {
    /// Exactly the n-th area of the IOAS.
    Area(usize),
    /// From the start of one area to the end of another (covers every area between).
    Span(usize, usize),
    /// A range that cuts the n-th area (or, for a one-page area, reaches past it).
    Cut(usize, u8),
    /// The unmap-all range `(0, u64::MAX)`.
    All,
    Raw(u64, u64),
}

/// An object to attach or replace to.
#[derive(Clone, Copy, Debug)]
enum Pt {
    Ioas(usize),
    Hwpt(usize),
    /// Wrong type.
    Device(usize),
}

#[derive(Clone, Copy, Debug)]
enum AllocDev {
    Device(usize),
    /// Wrong type (or destroyed).
    Ioas(usize),
}

#[derive(Clone, Copy, Debug)]
enum AllocPt {
    Ioas(usize),
    /// Wrong type.
    Device(usize),
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    Ioas(usize),
    Hwpt(usize),
}

#[derive(Clone, Copy, Debug)]
enum At {
    Raw(u64),
    /// (area index in the device's IOAS, page within it, byte offset)
    Area(usize, u64, u64),
}

#[derive(Clone, Copy, Debug)]
enum TLen {
    Bytes(u64),
    /// To the end of the area holding the start, plus this many pages.
    ToAreaEnd(u64),
    /// To the end of the n-th area after the one holding the start (across gaps, if any).
    Span(usize),
}

#[derive(Clone, Copy, Debug)]
enum HeldCall {
    UnmapAll(usize),
    Detach(usize),
    Synchronize,
}

#[derive(Clone, Debug)]
enum Op {
    IoasAlloc,
    Map {
        ioas: usize,
        iova: Option<u64>,
        target: Target,
        len: u64,
        prot: Prot,
    },
    Unmap {
        ioas: usize,
        range: UnmapRange,
    },
    HwptAlloc {
        dev: AllocDev,
        pt: AllocPt,
        flags: u32,
    },
    Attach {
        dev: usize,
        pt: Pt,
    },
    Replace {
        dev: usize,
        pt: Pt,
    },
    Detach {
        dev: usize,
    },
    Destroy {
        victim: Victim,
    },
    Translate {
        dev: usize,
        at: At,
        len: TLen,
        access: Access,
        pinned: bool,
    },
    /// A waiting call made while the calling thread holds a guard of `dev`: EDEADLK.
    WhileHolding {
        dev: usize,
        call: HeldCall,
    },
    CheckAll,
}

fn iova_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => (0u64..48).prop_map(|p| p * PAGE),
        3 => (504u64..520).prop_map(|p| p * PAGE),
        1 => Just(1024 * PAGE),
        1 => (0u64..48).prop_map(|p| p * PAGE + 0x800),
        // The top of the 64-bit space: fits, ends exactly at 2^64, or wraps, depending on len.
        1 => (1u64..6).prop_map(|p| 0u64.wrapping_sub(p * PAGE)),
    ]
}

fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => (0u64..96).prop_map(|p| Target::At(TBASE + p * PAGE)),
        4 => Just(Target::FollowIova),
        1 => Just(Target::At(TBASE + 0x10)),
        1 => (1u64..4).prop_map(|p| Target::At(0u64.wrapping_sub(p * PAGE))),
    ]
}

fn len_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => (1u64..=8).prop_map(|n| n * PAGE),
        1 => Just(512 * PAGE),
        1 => Just(0u64),
        1 => Just(PAGE + 0x800),
    ]
}

fn prot_strategy() -> impl Strategy<Value = Prot> {
    prop_oneof![3 => Just(Prot::RW), 1 => Just(Prot::READ), 1 => Just(Prot::WRITE)]
}

fn pt_strategy() -> impl Strategy<Value = Pt> {
    prop_oneof![
        4 => (0usize..4).prop_map(Pt::Ioas),
        4 => (0usize..8).prop_map(Pt::Hwpt),
        1 => (0usize..4).prop_map(Pt::Device),
    ]
}

fn unmap_strategy() -> impl Strategy<Value = UnmapRange> {
    prop_oneof![
        4 => (0usize..8).prop_map(UnmapRange::Area),
        2 => (0usize..8, 0usize..8).prop_map(|(a, b)| UnmapRange::Span(a, b)),
        2 => (0usize..8, 0u8..3).prop_map(|(a, k)| UnmapRange::Cut(a, k)),
        1 => Just(UnmapRange::All),
        2 => (
            iova_strategy(),
            prop_oneof![
                4 => len_strategy(),
                1 => Just(u64::MAX - (PAGE - 1)),
                1 => Just(u64::MAX),
            ]
        )
            .prop_map(|(i, l)| UnmapRange::Raw(i, l)),
    ]
}

fn translate_strategy() -> impl Strategy<Value = Op> {
    let at = prop_oneof![
        3 => (0u64..56, prop_oneof![Just(0u64), Just(0x10), Just(0xff0)])
            .prop_map(|(p, o)| At::Raw(p * PAGE + o)),
        1 => (500u64..524).prop_map(|p| At::Raw(p * PAGE)),
        1 => prop_oneof![
            Just((1u64 << 48) - PAGE),
            Just(u64::MAX - 0xf),
            Just(1024 * PAGE + 0x123),
        ]
        .prop_map(At::Raw),
        4 => (0usize..8, 0u64..600, prop_oneof![Just(0u64), Just(0x234)])
            .prop_map(|(a, p, o)| At::Area(a, p, o)),
    ];
    let len = prop_oneof![
        6 => prop_oneof![
            Just(0u64),
            Just(1),
            Just(0xff0),
            Just(PAGE),
            Just(2 * PAGE),
            Just(5 * PAGE + 7),
            Just(20 * PAGE),
            Just(600 * PAGE),
        ]
        .prop_map(TLen::Bytes),
        3 => (0u64..3).prop_map(TLen::ToAreaEnd),
        3 => (1usize..4).prop_map(TLen::Span),
    ];
    let access = prop_oneof![Just(Access::Read), Just(Access::Write)];
    (0usize..10, at, len, access, any::<bool>()).prop_map(|(dev, at, len, access, pinned)| {
        Op::Translate {
            dev,
            at,
            len,
            access,
            pinned,
        }
    })
}

/// A case: a few fixed maps into the two first IOASes (mostly with targets that follow the IOVA, so
/// that neighbouring areas merge into one chunk), then random operations.
fn case_strategy() -> impl Strategy<Value = Vec<Op>> {
    let prelude_map = (
        0usize..2,
        0u64..48,
        1u64..=6,
        prop::bool::weighted(0.8),
        prot_strategy(),
    )
        .prop_map(|(ioas, page, pages, follow, prot)| Op::Map {
            ioas,
            iova: Some(page * PAGE),
            target: if follow {
                Target::FollowIova
            } else {
                Target::At(TBASE + (page + 7) * PAGE)
            },
            len: pages * PAGE,
            prot,
        });
    (
        prop::collection::vec(prelude_map, 0..12),
        prop::collection::vec(op_strategy(), 1..40),
    )
        .prop_map(|(mut prelude, ops)| {
            prelude.extend(ops);
            prelude
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::IoasAlloc),
        8 => (
            0usize..4,
            prop::option::weighted(0.8, iova_strategy()),
            target_strategy(),
            len_strategy(),
            prot_strategy(),
        )
            .prop_map(|(ioas, iova, target, len, prot)| Op::Map {
                ioas,
                iova,
                target,
                len,
                prot,
            }),
        4 => (0usize..4, unmap_strategy()).prop_map(|(ioas, range)| Op::Unmap { ioas, range }),
        2 => (
            prop_oneof![
                6 => (0usize..4).prop_map(AllocDev::Device),
                1 => (0usize..4).prop_map(AllocDev::Ioas),
            ],
            prop_oneof![
                6 => (0usize..4).prop_map(AllocPt::Ioas),
                1 => (0usize..4).prop_map(AllocPt::Device),
            ],
            prop_oneof![4 => Just(0u32), 2 => Just(1u32), 1 => Just(1u32 << 7)],
        )
            .prop_map(|(dev, pt, flags)| Op::HwptAlloc { dev, pt, flags }),
        10 => (0usize..10, pt_strategy()).prop_map(|(dev, pt)| Op::Attach { dev, pt }),
        6 => (0usize..20, pt_strategy()).prop_map(|(dev, pt)| Op::Replace { dev, pt }),
        2 => (0usize..20).prop_map(|dev| Op::Detach { dev }),
        2 => prop_oneof![
            (0usize..4).prop_map(Victim::Ioas),
            (0usize..8).prop_map(Victim::Hwpt),
        ]
        .prop_map(|victim| Op::Destroy { victim }),
        8 => translate_strategy(),
        1 => (
            0usize..4,
            prop_oneof![
                (0usize..4).prop_map(HeldCall::UnmapAll),
                (0usize..4).prop_map(HeldCall::Detach),
                Just(HeldCall::Synchronize),
            ],
        )
            .prop_map(|(dev, call)| Op::WhileHolding { dev, call }),
        1 => Just(Op::CheckAll),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Area {
    len: u64,
    target: u64,
    prot: Prot,
}

#[derive(Default)]
struct IoasM {
    /// iova -> area; areas never overlap.
    areas: BTreeMap<u64, Area>,
}

struct HwptM {
    ioas: ObjId,
    auto: bool,
    /// Aperture end of the device the HWPT was made for (see the module docs).
    made_for: u128,
}

struct DevM {
    id: ObjId,
    handle: Device,
    group: usize,
    /// Aperture end (exclusive).
    aperture: u128,
    /// Reserved ranges, widened to whole pages.
    reserved: Vec<(u128, u128)>,
    attached: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ioas,
    Hwpt,
    Device,
    Dead,
}

/// What a translation may return: these chunks, or a fault of one of these kinds.
struct Expect {
    ok: Option<Vec<Chunk>>,
    faults: Vec<FaultKind>,
}

/// What the last call of an operation returned (for the fixed-sequence test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Errno(i32),
    Fault(FaultKind),
}

struct Model {
    iommu: Iommu,
    last: Cell<Option<Outcome>>,
    ioas: BTreeMap<ObjId, IoasM>,
    hwpt: BTreeMap<ObjId, HwptM>,
    devs: Vec<DevM>,
    /// The HWPT of each group, while any of its devices is attached.
    group_hwpt: Vec<Option<ObjId>>,
    /// Every IOAS / HWPT id ever returned, in order (live or dead), for picking.
    ioas_seen: Vec<ObjId>,
    hwpt_seen: Vec<ObjId>,
    dead: BTreeSet<ObjId>,
}

fn end_of(iova: u64, area: &Area) -> u128 {
    u128::from(iova) + u128::from(area.len)
}

/// Areas that intersect `[start, end)`.
fn areas_in(areas: &BTreeMap<u64, Area>, start: u128, end: u128) -> Vec<(u64, Area)> {
    areas
        .iter()
        .filter(|(&a, ar)| u128::from(a) < end && end_of(a, ar) > start)
        .map(|(&a, ar)| (a, *ar))
        .collect()
}

fn max_area_end(areas: &BTreeMap<u64, Area>) -> u128 {
    areas
        .iter()
        .map(|(&a, ar)| end_of(a, ar))
        .max()
        .unwrap_or(0)
}

fn reserved_collides(dev: &DevM, areas: &BTreeMap<u64, Area>) -> bool {
    dev.reserved
        .iter()
        .any(|&(s, e)| !areas_in(areas, s, e).is_empty())
}

fn check_errno(e: &Error, errs: &[i32], ok: bool, ctx: &str) -> Check {
    if errs.contains(&e.errno()) {
        Ok(())
    } else {
        fail(format!(
            "{ctx}: got {e:?} (errno {}), model expects {} errno in {errs:?}",
            e.errno(),
            if ok { "Ok or an" } else { "an" }
        ))
    }
}

impl Model {
    fn new() -> Model {
        let iommu = Iommu::new();
        let mut devs = Vec::new();
        for (group, info) in device_infos() {
            let aperture = 1u128 << info.iova_bits;
            let reserved = info
                .reserved
                .iter()
                .map(|r| {
                    (
                        u128::from(r.start / PAGE * PAGE),
                        u128::from(r.end.div_ceil(PAGE) * PAGE),
                    )
                })
                .collect();
            let (id, handle) = iommu
                .device_bind(GroupId(group), info)
                .expect("device_bind");
            devs.push(DevM {
                id,
                handle,
                group: (group - 10) as usize,
                aperture,
                reserved,
                attached: false,
            });
        }
        let first = iommu.ioas_alloc().expect("ioas_alloc");
        let second = iommu.ioas_alloc().expect("ioas_alloc");
        assert_ne!(first, second);
        let mut ioas = BTreeMap::new();
        ioas.insert(first, IoasM::default());
        ioas.insert(second, IoasM::default());
        Model {
            iommu,
            last: Cell::new(None),
            ioas,
            hwpt: BTreeMap::new(),
            devs,
            group_hwpt: vec![None, None],
            ioas_seen: vec![first, second],
            hwpt_seen: Vec::new(),
            dead: BTreeSet::new(),
        }
    }

    /// Records the outcome of a control call.
    fn note<T>(&self, r: viommu::Result<T>) -> viommu::Result<T> {
        self.last.set(Some(match &r {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Errno(e.errno()),
        }));
        r
    }

    // --- lookups ---------------------------------------------------------------------------

    fn kind(&self, id: ObjId) -> Option<Kind> {
        if self.ioas.contains_key(&id) {
            Some(Kind::Ioas)
        } else if self.hwpt.contains_key(&id) {
            Some(Kind::Hwpt)
        } else if self.devs.iter().any(|d| d.id == id) {
            Some(Kind::Device)
        } else if self.dead.contains(&id) {
            Some(Kind::Dead)
        } else {
            None
        }
    }

    fn require_fresh(&self, id: ObjId, ctx: &str) -> Check {
        match self.kind(id) {
            None => Ok(()),
            Some(k) => fail(format!(
                "{ctx}: returned id {id:?} is not new (model knows it as {k:?}; ids are never reused)"
            )),
        }
    }

    /// Indices below 3 pick a live IOAS, 3 a destroyed one (when there is one).
    fn pick_ioas(&self, i: usize) -> Option<ObjId> {
        let live: Vec<ObjId> = self.ioas.keys().copied().collect();
        let dead: Vec<ObjId> = self
            .ioas_seen
            .iter()
            .copied()
            .filter(|id| self.dead.contains(id))
            .collect();
        if (i >= 3 || live.is_empty()) && !dead.is_empty() {
            Some(dead[i % dead.len()])
        } else if !live.is_empty() {
            Some(live[i % live.len()])
        } else {
            None
        }
    }

    /// Indices below 6 pick a live HWPT, others a freed or destroyed one (when there is one).
    fn pick_hwpt(&self, i: usize) -> Option<ObjId> {
        let live: Vec<ObjId> = self.hwpt.keys().copied().collect();
        let dead: Vec<ObjId> = self
            .hwpt_seen
            .iter()
            .copied()
            .filter(|id| self.dead.contains(id))
            .collect();
        if (i >= 6 || live.is_empty()) && !dead.is_empty() {
            Some(dead[i % dead.len()])
        } else if !live.is_empty() {
            Some(live[i % live.len()])
        } else {
            None
        }
    }

    /// Indices 0..4 name a device; larger ones pick one that is (for `attached`) or is not
    /// attached, when there is one, so that most calls do more than fail.
    fn pick_dev(&self, i: usize, attached: bool) -> usize {
        let n = self.devs.len();
        if i < n {
            return i;
        }
        let fits: Vec<usize> = (0..n)
            .filter(|&d| self.devs[d].attached == attached)
            .collect();
        if fits.is_empty() {
            i % n
        } else {
            fits[i % fits.len()]
        }
    }

    fn resolve_pt(&self, pt: Pt) -> Option<ObjId> {
        match pt {
            Pt::Ioas(i) => self.pick_ioas(i),
            Pt::Hwpt(i) => self.pick_hwpt(i).or_else(|| self.pick_ioas(i)),
            Pt::Device(i) => Some(self.devs[i % self.devs.len()].id),
        }
    }

    fn dev_hwpt(&self, d: usize) -> Option<ObjId> {
        let dev = &self.devs[d];
        if dev.attached {
            self.group_hwpt[dev.group]
        } else {
            None
        }
    }

    fn dev_ioas(&self, d: usize) -> Option<ObjId> {
        self.dev_hwpt(d).map(|h| self.hwpt[&h].ioas)
    }

    /// Devices attached (through any HWPT) to `ioas`.
    fn attached_to(&self, ioas: ObjId) -> Vec<usize> {
        (0..self.devs.len())
            .filter(|&d| self.dev_ioas(d) == Some(ioas))
            .collect()
    }

    fn device_limit(&self, ioas: ObjId) -> u128 {
        self.attached_to(ioas)
            .into_iter()
            .map(|d| self.devs[d].aperture)
            .min()
            .unwrap_or(TWO_POW_64)
    }

    fn domain_limit(&self, ioas: ObjId) -> u128 {
        self.hwpt
            .values()
            .filter(|h| h.ioas == ioas)
            .map(|h| h.made_for)
            .min()
            .unwrap_or(TWO_POW_64)
    }

    fn reserved_of(&self, ioas: ObjId) -> Vec<(u128, u128)> {
        self.attached_to(ioas)
            .into_iter()
            .flat_map(|d| self.devs[d].reserved.iter().copied())
            .collect()
    }

    fn group_users(&self, h: ObjId) -> usize {
        self.group_hwpt.iter().filter(|g| **g == Some(h)).count()
    }

    /// True if `[0, limit)` holds a free hole of `len` bytes aligned to `align`.
    fn hole_exists(&self, ioas: ObjId, len: u64, align: u128, limit: u128) -> bool {
        let mut used: Vec<(u128, u128)> = self.ioas[&ioas]
            .areas
            .iter()
            .map(|(&a, ar)| (u128::from(a), end_of(a, ar)))
            .collect();
        used.extend(self.reserved_of(ioas));
        used.sort_unstable();
        let mut free_from = 0u128;
        let fits = |from: u128, to: u128| {
            let start = from.div_ceil(align) * align;
            start + u128::from(len) <= to.min(limit)
        };
        for (s, e) in used {
            if fits(free_from, s) {
                return true;
            }
            free_from = free_from.max(e);
        }
        fits(free_from, limit)
    }

    fn free_if_unused(&mut self, h: ObjId) {
        if self.hwpt[&h].auto && self.group_users(h) == 0 {
            self.hwpt.remove(&h);
            self.dead.insert(h);
        }
    }

    /// An attach or replace to IOAS `ioas` returned `h` where the model allows any live auto
    /// HWPT of that IOAS or a new one.
    fn adopt_auto(&mut self, h: ObjId, ioas: ObjId, made_for: u128, ctx: &str) -> Check {
        if let Some(hw) = self.hwpt.get(&h) {
            if !(hw.auto && hw.ioas == ioas) {
                return fail(format!(
                    "{ctx}: returned {h:?}, a live HWPT that is not an auto HWPT of {ioas:?}"
                ));
            }
            return Ok(());
        }
        self.require_fresh(h, ctx)?;
        self.hwpt.insert(
            h,
            HwptM {
                ioas,
                auto: true,
                made_for,
            },
        );
        self.hwpt_seen.push(h);
        Ok(())
    }

    // --- operations ------------------------------------------------------------------------

    fn apply(&mut self, op: &Op) -> Check {
        let ctx = format!("{op:?}");
        match *op {
            Op::IoasAlloc => self.op_ioas_alloc(&ctx),
            Op::Map {
                ioas,
                iova,
                target,
                len,
                prot,
            } => self.op_map(ioas, iova, target, len, prot, &ctx),
            Op::Unmap { ioas, range } => self.op_unmap(ioas, range, &ctx),
            Op::HwptAlloc { dev, pt, flags } => self.op_hwpt_alloc(dev, pt, flags, &ctx),
            Op::Attach { dev, pt } => self.op_attach(self.pick_dev(dev, false), pt, &ctx),
            Op::Replace { dev, pt } => self.op_replace(self.pick_dev(dev, true), pt, &ctx),
            Op::Detach { dev } => self.op_detach(self.pick_dev(dev, true), &ctx),
            Op::Destroy { victim } => self.op_destroy(victim, &ctx),
            Op::Translate {
                dev,
                at,
                len,
                access,
                pinned,
            } => self.op_translate(self.pick_dev(dev, true), at, len, access, pinned, &ctx),
            Op::WhileHolding { dev, call } => {
                self.op_while_holding(dev % self.devs.len(), call, &ctx)
            }
            Op::CheckAll => self.check_all(&ctx),
        }
    }

    fn op_ioas_alloc(&mut self, ctx: &str) -> Check {
        if self.ioas.len() >= MAX_IOAS {
            return Ok(());
        }
        match self.note(self.iommu.ioas_alloc()) {
            Ok(id) => {
                self.require_fresh(id, ctx)?;
                self.ioas.insert(id, IoasM::default());
                self.ioas_seen.push(id);
                Ok(())
            }
            Err(e) => fail(format!("{ctx}: {e:?}")),
        }
    }

    fn op_map(
        &mut self,
        sel: usize,
        iova: Option<u64>,
        target: Target,
        len: u64,
        prot: Prot,
        ctx: &str,
    ) -> Check {
        let Some(ioas) = self.pick_ioas(sel) else {
            return Ok(());
        };
        let target = match target {
            Target::At(t) => t,
            Target::FollowIova => TBASE.wrapping_add(iova.unwrap_or(200 * PAGE)),
        };
        let ctx = &format!("{ctx} on {ioas:?} (target {target:#x})");
        let mut errs = Vec::new();
        let mut ok = true;
        let live = match self.kind(ioas) {
            Some(Kind::Ioas) => true,
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                ok = false;
                false
            }
            k => return fail(format!("{ctx}: picked {k:?}")),
        };
        let aligned =
            target % PAGE == 0 && len % PAGE == 0 && !matches!(iova, Some(v) if v % PAGE != 0);
        if !aligned || len == 0 {
            errs.push(EINVAL);
            ok = false;
        }
        let t_end = u128::from(target) + u128::from(len);
        if t_end > TWO_POW_64 {
            errs.push(EOVERFLOW);
            ok = false;
        } else if t_end == TWO_POW_64 {
            errs.push(EOVERFLOW);
        }
        let basic_ok = ok;
        match iova {
            Some(v) => {
                let start = u128::from(v);
                let end = start + u128::from(len);
                if end > TWO_POW_64 {
                    errs.push(EOVERFLOW);
                    ok = false;
                } else if end == TWO_POW_64 {
                    errs.push(EOVERFLOW);
                }
                if live && aligned && len > 0 && end <= TWO_POW_64 {
                    if !areas_in(&self.ioas[&ioas].areas, start, end).is_empty() {
                        errs.push(EEXIST);
                        ok = false;
                    }
                    if self
                        .reserved_of(ioas)
                        .iter()
                        .any(|&(s, e)| s < end && start < e)
                    {
                        errs.push(EINVAL);
                        ok = false;
                    }
                    if end > self.device_limit(ioas) {
                        errs.push(EOVERFLOW);
                        ok = false;
                    } else if end > self.domain_limit(ioas) {
                        errs.push(EOVERFLOW);
                    }
                }
            }
            None => {
                if live && basic_ok {
                    let dev_limit = self.device_limit(ioas);
                    let natural = u128::from(1u64 << (63 - len.leading_zeros()).min(30));
                    let limit = dev_limit.min(self.domain_limit(ioas));
                    if !self.hole_exists(ioas, len, u128::from(PAGE), dev_limit) {
                        errs.push(ENOSPC);
                        ok = false;
                    } else if !self.hole_exists(ioas, len, natural, limit) {
                        errs.push(ENOSPC);
                    }
                }
            }
        }
        match self.note(self.iommu.ioas_map(ioas, iova, target, len, prot)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(got) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({got:#x}), model expects errno in {errs:?}"
                    ));
                }
                match iova {
                    Some(v) if v != got => {
                        return fail(format!("{ctx}: fixed map at {v:#x} returned {got:#x}"));
                    }
                    Some(_) => {}
                    None => {
                        let start = u128::from(got);
                        let end = start + u128::from(len);
                        let bad = got % PAGE != 0
                            || end > self.device_limit(ioas)
                            || !areas_in(&self.ioas[&ioas].areas, start, end).is_empty()
                            || self
                                .reserved_of(ioas)
                                .iter()
                                .any(|&(s, e)| s < end && start < e);
                        if bad {
                            return fail(format!(
                                "{ctx}: automatic map returned {got:#x}, which is misaligned, \
                                 in use, reserved or outside an attached device's aperture"
                            ));
                        }
                    }
                }
                self.ioas
                    .get_mut(&ioas)
                    .expect("live")
                    .areas
                    .insert(got, Area { len, target, prot });
                Ok(())
            }
        }
    }

    fn resolve_unmap(&self, ioas: ObjId, range: UnmapRange) -> (u64, u64) {
        let areas: Vec<(u64, Area)> = self
            .ioas
            .get(&ioas)
            .map(|m| m.areas.iter().map(|(&a, ar)| (a, *ar)).collect())
            .unwrap_or_default();
        let nth = |i: usize| areas[i % areas.len()];
        match range {
            UnmapRange::All => (0, u64::MAX),
            UnmapRange::Raw(i, l) => (i, l),
            _ if areas.is_empty() => (0, PAGE),
            UnmapRange::Area(i) => (nth(i).0, nth(i).1.len),
            UnmapRange::Span(i, j) => {
                let (i, j) = (i % areas.len(), j % areas.len());
                let (a, b) = (nth(i.min(j)), nth(i.max(j)));
                (a.0, (b.0 - a.0).wrapping_add(b.1.len))
            }
            UnmapRange::Cut(i, k) => {
                let (a, ar) = nth(i);
                match (k, ar.len > PAGE) {
                    (0, true) => (a + PAGE, ar.len - PAGE),
                    (1, true) => (a, ar.len - PAGE),
                    (2, true) => (a.saturating_sub(PAGE), 2 * PAGE),
                    _ => (a, ar.len.wrapping_add(PAGE)),
                }
            }
        }
    }

    fn op_unmap(&mut self, sel: usize, range: UnmapRange, ctx: &str) -> Check {
        let Some(ioas) = self.pick_ioas(sel) else {
            return Ok(());
        };
        let (iova, len) = self.resolve_unmap(ioas, range);
        let ctx = &format!("{ctx} on {ioas:?} = ({iova:#x}, {len:#x})");
        let mut errs = Vec::new();
        let mut ok = true;
        let live = self.ioas.contains_key(&ioas);
        if !live {
            errs.push(ENOENT);
            ok = false;
        }
        let mut removed: Vec<u64> = Vec::new();
        if iova == 0 && len == u64::MAX {
            if live {
                removed = self.ioas[&ioas].areas.keys().copied().collect();
            }
        } else {
            let start = u128::from(iova);
            let end = start + u128::from(len);
            let basic = iova % PAGE == 0 && len % PAGE == 0 && len != 0;
            if !basic {
                errs.push(EINVAL);
                ok = false;
            }
            if end > TWO_POW_64 {
                errs.push(EOVERFLOW);
                ok = false;
            } else if end == TWO_POW_64 {
                errs.push(EOVERFLOW);
            }
            if live && basic && end <= TWO_POW_64 {
                let hits = areas_in(&self.ioas[&ioas].areas, start, end);
                if hits.is_empty()
                    || hits
                        .iter()
                        .any(|(a, ar)| u128::from(*a) < start || end_of(*a, ar) > end)
                {
                    errs.push(ENOENT);
                    ok = false;
                }
                removed = hits.iter().map(|(a, _)| *a).collect();
            }
        }
        match self.note(self.iommu.ioas_unmap(ioas, iova, len)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(bytes) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({bytes:#x}), model expects errno in {errs:?}"
                    ));
                }
                let areas = &mut self.ioas.get_mut(&ioas).expect("live").areas;
                let want: u64 = removed.iter().map(|a| areas[a].len).sum();
                if bytes != want {
                    return fail(format!(
                        "{ctx}: unmapped {bytes:#x} bytes, model expects {want:#x}"
                    ));
                }
                for a in removed {
                    areas.remove(&a);
                }
                Ok(())
            }
        }
    }

    fn op_hwpt_alloc(&mut self, dev: AllocDev, pt: AllocPt, flags: u32, ctx: &str) -> Check {
        let (dev_id, dev_idx) = match dev {
            AllocDev::Device(i) => {
                let i = i % self.devs.len();
                (self.devs[i].id, Some(i))
            }
            AllocDev::Ioas(i) => match self.pick_ioas(i) {
                Some(id) => (id, None),
                None => return Ok(()),
            },
        };
        let pt_id = match pt {
            AllocPt::Ioas(i) => match self.pick_ioas(i) {
                Some(id) => id,
                None => return Ok(()),
            },
            AllocPt::Device(i) => self.devs[i % self.devs.len()].id,
        };
        let ctx = &format!("{ctx} = hwpt_alloc({dev_id:?}, {pt_id:?}, {flags:#x})");
        let mut errs = Vec::new();
        let mut ok = true;
        if dev_idx.is_none() {
            errs.push(if self.kind(dev_id) == Some(Kind::Dead) {
                ENOENT
            } else {
                EINVAL
            });
            ok = false;
        }
        let pt_live = match self.kind(pt_id) {
            Some(Kind::Ioas) => true,
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                ok = false;
                false
            }
            _ => {
                errs.push(EINVAL);
                ok = false;
                false
            }
        };
        if flags & !HwptFlags::NEST_PARENT.bits() != 0 {
            errs.push(EOPNOTSUPP);
            ok = false;
        }
        if let (Some(d), true) = (dev_idx, pt_live) {
            let areas = &self.ioas[&pt_id].areas;
            if max_area_end(areas) > self.devs[d].aperture {
                errs.push(EINVAL);
                ok = false;
            }
            if reserved_collides(&self.devs[d], areas) {
                errs.push(EADDRINUSE);
            }
        }
        match self.note(
            self.iommu
                .hwpt_alloc(dev_id, pt_id, HwptFlags::from_bits_retain(flags)),
        ) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(h) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({h:?}), model expects errno in {errs:?}"
                    ));
                }
                self.require_fresh(h, ctx)?;
                let made_for = self.devs[dev_idx.expect("ok")].aperture;
                self.hwpt.insert(
                    h,
                    HwptM {
                        ioas: pt_id,
                        auto: false,
                        made_for,
                    },
                );
                self.hwpt_seen.push(h);
                Ok(())
            }
        }
    }

    /// Checks of the object an attach or replace names: its IOAS, or `None` after pushing the
    /// errno of a destroyed or wrong-typed id.
    fn pt_target(&self, pt_id: ObjId, errs: &mut Vec<i32>) -> Option<(Kind, ObjId)> {
        match self.kind(pt_id) {
            Some(Kind::Ioas) => Some((Kind::Ioas, pt_id)),
            Some(Kind::Hwpt) => Some((Kind::Hwpt, self.hwpt[&pt_id].ioas)),
            Some(Kind::Dead) => {
                errs.push(ENOENT);
                None
            }
            _ => {
                errs.push(EINVAL);
                None
            }
        }
    }

    /// True if a group on HWPT `cur` asking for `pt_id` (of kind `kind`) is already there.
    fn is_current(&self, cur: ObjId, kind: Kind, pt_id: ObjId) -> bool {
        match kind {
            Kind::Hwpt => pt_id == cur,
            _ => self.hwpt[&cur].auto && self.hwpt[&cur].ioas == pt_id,
        }
    }

    /// Pushes EINVAL / EADDRINUSE if any of `devs` cannot live on IOAS `target`.
    fn fit_errors(&self, devs: &[usize], target: ObjId, errs: &mut Vec<i32>) -> bool {
        let areas = &self.ioas[&target].areas;
        let mut fits = true;
        for &d in devs {
            if max_area_end(areas) > self.devs[d].aperture {
                errs.push(EINVAL);
                fits = false;
            }
            if reserved_collides(&self.devs[d], areas) {
                errs.push(EADDRINUSE);
                fits = false;
            }
        }
        fits
    }

    fn op_attach(&mut self, d: usize, pt: Pt, ctx: &str) -> Check {
        let Some(pt_id) = self.resolve_pt(pt) else {
            return Ok(());
        };
        let dev_id = self.devs[d].id;
        let group = self.devs[d].group;
        let ctx = &format!("{ctx} = device_attach({dev_id:?}, {pt_id:?})");
        let mut errs = Vec::new();
        let mut ok = true;
        let target = self.pt_target(pt_id, &mut errs);
        if target.is_none() {
            ok = false;
        }
        let cur = self.group_hwpt[group];
        if self.devs[d].attached {
            errs.push(EINVAL);
            ok = false;
        }
        if let Some((kind, t)) = target {
            if let Some(cur) = cur {
                if !self.is_current(cur, kind, pt_id) {
                    errs.push(EINVAL);
                    ok = false;
                }
            }
            if !self.fit_errors(&[d], t, &mut errs) {
                ok = false;
            }
        }
        match self.note(self.iommu.device_attach(dev_id, pt_id)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(h) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({h:?}), model expects errno in {errs:?}"
                    ));
                }
                let (kind, _) = target.expect("ok");
                let want = match (cur, kind) {
                    (Some(c), _) => Some(c),
                    (None, Kind::Hwpt) => Some(pt_id),
                    (None, _) => None,
                };
                match want {
                    Some(want) if h != want => {
                        return fail(format!(
                            "{ctx}: returned HWPT {h:?}, model expects {want:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        let made_for = self.devs[d].aperture;
                        self.adopt_auto(h, pt_id, made_for, ctx)?;
                    }
                }
                self.devs[d].attached = true;
                self.group_hwpt[group] = Some(h);
                Ok(())
            }
        }
    }

    fn op_replace(&mut self, d: usize, pt: Pt, ctx: &str) -> Check {
        let Some(pt_id) = self.resolve_pt(pt) else {
            return Ok(());
        };
        let dev_id = self.devs[d].id;
        let group = self.devs[d].group;
        let ctx = &format!("{ctx} = device_replace({dev_id:?}, {pt_id:?})");
        let mut errs = Vec::new();
        let mut ok = true;
        let target = self.pt_target(pt_id, &mut errs);
        if target.is_none() {
            ok = false;
        }
        let cur = self.group_hwpt[group];
        let mut noop = false;
        if !self.devs[d].attached {
            errs.push(EINVAL);
            ok = false;
        } else if let Some((kind, t)) = target {
            let cur = cur.expect("an attached device's group has a HWPT");
            noop = self.is_current(cur, kind, pt_id);
            if !noop {
                let moving: Vec<usize> = (0..self.devs.len())
                    .filter(|&m| self.devs[m].group == group && self.devs[m].attached)
                    .collect();
                if !self.fit_errors(&moving, t, &mut errs) {
                    ok = false;
                }
            }
        }
        match self.note(self.iommu.device_replace(dev_id, pt_id)) {
            Err(e) => check_errno(&e, &errs, ok, ctx),
            Ok(h) => {
                if !ok {
                    return fail(format!(
                        "{ctx}: got Ok({h:?}), model expects errno in {errs:?}"
                    ));
                }
                let cur = cur.expect("attached");
                let (kind, _) = target.expect("ok");
                if noop {
                    if h != cur {
                        return fail(format!(
                            "{ctx}: replace to the current HWPT returned {h:?}, expected {cur:?}"
                        ));
                    }
                    return Ok(());
                }
                if kind == Kind::Hwpt {
                    if h != pt_id {
                        return fail(format!("{ctx}: returned {h:?}, expected {pt_id:?}"));
                    }
                } else {
                    let made_for = self.devs[d].aperture;
                    self.adopt_auto(h, pt_id, made_for, ctx)?;
                }
                self.group_hwpt[group] = Some(h);
                self.free_if_unused(cur);
                Ok(())
            }
        }
    }

    fn op_detach(&mut self, d: usize, ctx: &str) -> Check {
        let dev_id = self.devs[d].id;
        let group = self.devs[d].group;
        let ctx = &format!("{ctx} = device_detach({dev_id:?})");
        let attached = self.devs[d].attached;
        match self.note(self.iommu.device_detach(dev_id)) {
            Err(e) => check_errno(&e, if attached { &[] } else { &[EINVAL] }, attached, ctx),
            Ok(()) if !attached => fail(format!("{ctx}: got Ok, model expects EINVAL")),
            Ok(()) => {
                self.devs[d].attached = false;
                let cur = self.group_hwpt[group].expect("attached");
                if !self.devs.iter().any(|m| m.group == group && m.attached) {
                    self.group_hwpt[group] = None;
                    self.free_if_unused(cur);
                }
                Ok(())
            }
        }
    }

    fn op_destroy(&mut self, victim: Victim, ctx: &str) -> Check {
        let id = match victim {
            Victim::Ioas(i) => self.pick_ioas(i),
            Victim::Hwpt(i) => self.pick_hwpt(i),
        };
        let Some(id) = id else {
            return Ok(());
        };
        let ctx = &format!("{ctx} = destroy({id:?})");
        let errno = match self.kind(id) {
            Some(Kind::Dead) => Some(ENOENT),
            Some(Kind::Ioas) if self.hwpt.values().any(|h| h.ioas == id) => Some(EBUSY),
            Some(Kind::Hwpt) if self.hwpt[&id].auto || self.group_users(id) > 0 => Some(EBUSY),
            Some(Kind::Ioas | Kind::Hwpt) => None,
            k => return fail(format!("{ctx}: picked {k:?}")),
        };
        match (self.note(self.iommu.destroy(id)), errno) {
            (Err(e), Some(want)) => check_errno(&e, &[want], false, ctx),
            (Err(e), None) => check_errno(&e, &[], true, ctx),
            (Ok(()), Some(want)) => fail(format!("{ctx}: got Ok, model expects errno {want}")),
            (Ok(()), None) => {
                self.ioas.remove(&id);
                self.hwpt.remove(&id);
                self.dead.insert(id);
                Ok(())
            }
        }
    }

    /// The area of device `d`'s IOAS (or of any IOAS) that an `At::Area` names.
    fn area_for(&self, d: usize, i: usize) -> Option<(u64, Area)> {
        let ioas = self
            .dev_ioas(d)
            .or_else(|| self.ioas.keys().next().copied())?;
        let areas = &self.ioas[&ioas].areas;
        if areas.is_empty() {
            return None;
        }
        let (&a, ar) = areas.iter().nth(i % areas.len()).expect("non-empty");
        Some((a, *ar))
    }

    fn resolve_translate(&self, d: usize, at: At, len: TLen) -> (u64, u64) {
        let iova = match at {
            At::Raw(v) => v,
            At::Area(i, p, o) => match self.area_for(d, i) {
                Some((a, ar)) => a + (p % (ar.len / PAGE)) * PAGE + o,
                None => p * PAGE + o,
            },
        };
        let len = match len {
            TLen::Bytes(n) => n,
            TLen::ToAreaEnd(extra) => {
                let ioas = self
                    .dev_ioas(d)
                    .or_else(|| self.ioas.keys().next().copied());
                let area = ioas.and_then(|i| {
                    self.ioas[&i]
                        .areas
                        .range(..=iova)
                        .next_back()
                        .map(|(&a, ar)| (a, *ar))
                });
                match area {
                    Some((a, ar)) if end_of(a, &ar) > u128::from(iova) => {
                        ((end_of(a, &ar) - u128::from(iova)) as u64).saturating_add(extra * PAGE)
                    }
                    _ => PAGE,
                }
            }
            TLen::Span(n) => {
                let ioas = self
                    .dev_ioas(d)
                    .or_else(|| self.ioas.keys().next().copied());
                let last = ioas.and_then(|i| {
                    let areas = &self.ioas[&i].areas;
                    let first = areas.range(..=iova).next_back().map_or(0, |(&a, _)| a);
                    areas
                        .range(first..)
                        .take(n + 1)
                        .last()
                        .map(|(&a, ar)| end_of(a, ar))
                });
                match last {
                    Some(end) if end > u128::from(iova) => (end - u128::from(iova)) as u64,
                    _ => PAGE,
                }
            }
        };
        (iova, len)
    }

    fn expect_translate(&self, d: usize, iova: u64, len: u64, access: Access) -> Expect {
        let aperture = self.devs[d].aperture;
        let start = u128::from(iova);
        let end = start + u128::from(len);
        let outside = end > aperture || start >= aperture;
        let Some(ioas) = self.dev_ioas(d) else {
            let mut faults = vec![FaultKind::Blocked];
            if outside {
                faults.push(FaultKind::Aperture);
            }
            return Expect {
                ok: (len == 0).then(Vec::new),
                faults,
            };
        };
        if len == 0 {
            return Expect {
                ok: Some(Vec::new()),
                faults: if outside {
                    vec![FaultKind::Aperture]
                } else {
                    Vec::new()
                },
            };
        }
        if outside {
            return Expect {
                ok: None,
                faults: vec![FaultKind::Aperture],
            };
        }
        let areas = &self.ioas[&ioas].areas;
        // Past the aperture of the device its HWPT was made for, a request that cannot
        // translate may also fault `Aperture` (the domain's aperture; see the module docs).
        let domain_aperture = self.hwpt[&self.dev_hwpt(d).expect("attached")].made_for;
        let fault = |kind| Expect {
            ok: None,
            faults: if end > domain_aperture {
                vec![kind, FaultKind::Aperture]
            } else {
                vec![kind]
            },
        };
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut cur = start;
        while cur < end {
            let page = (cur as u64) / PAGE * PAGE;
            let hit = areas
                .range(..=page)
                .next_back()
                .filter(|(&a, ar)| end_of(a, ar) > u128::from(page));
            let Some((&a, ar)) = hit else {
                return fault(FaultKind::Unmapped);
            };
            if !ar.prot.allows(access) {
                return fault(FaultKind::Permission);
            }
            let stop = end.min(end_of(a, ar));
            let target = u128::from(ar.target) + (cur - u128::from(a));
            let n = (stop - cur) as u64;
            match chunks.last_mut() {
                Some(last)
                    if u128::from(last.iova) + u128::from(last.len) == cur
                        && u128::from(last.target) + u128::from(last.len) == target =>
                {
                    last.len += n;
                }
                _ => chunks.push(Chunk {
                    iova: cur as u64,
                    target: target as u64,
                    len: n,
                }),
            }
            cur = stop;
        }
        Expect {
            ok: Some(chunks),
            faults: Vec::new(),
        }
    }

    fn compare(
        exp: &Expect,
        got: Result<Translation<'_>, Fault>,
        iova: u64,
        len: u64,
        ctx: &str,
    ) -> Check {
        match got {
            Ok(t) => {
                let n = t.len();
                let chunks: Vec<Chunk> = t.collect();
                if n != chunks.len() {
                    return fail(format!(
                        "{ctx}: Translation::len() said {n}, iterator yielded {}",
                        chunks.len()
                    ));
                }
                match &exp.ok {
                    Some(want) if *want == chunks => Ok(()),
                    _ => fail(format!(
                        "{ctx}: translated to {chunks:x?}, model expects chunks {:x?} or a fault in {:?}",
                        exp.ok, exp.faults
                    )),
                }
            }
            Err(f) => {
                if !exp.faults.contains(&f.kind) {
                    return fail(format!(
                        "{ctx}: faulted {f:?}, model expects chunks {:x?} or a fault in {:?}",
                        exp.ok, exp.faults
                    ));
                }
                let lo = iova / PAGE * PAGE;
                let hi = u128::from(iova) + u128::from(len);
                if matches!(f.kind, FaultKind::Unmapped | FaultKind::Permission)
                    && (f.iova < lo || u128::from(f.iova) >= hi)
                {
                    return fail(format!(
                        "{ctx}: fault {f:?} names an IOVA outside the request"
                    ));
                }
                Ok(())
            }
        }
    }

    fn translate_and_compare(
        &self,
        d: usize,
        iova: u64,
        len: u64,
        access: Access,
        pinned: bool,
        ctx: &str,
    ) -> Check {
        let exp = self.expect_translate(d, iova, len, access);
        let ctx = &format!(
            "{ctx}: translate(dev {:?}, {iova:#x}, {len:#x}, {access:?}, pinned {pinned})",
            self.devs[d].id
        );
        let handle = &self.devs[d].handle;
        self.last
            .set(Some(match handle.translate(iova, len, access) {
                Ok(_) => Outcome::Ok,
                Err(f) => Outcome::Fault(f.kind),
            }));
        if pinned {
            let guard = handle.pin();
            Self::compare(&exp, guard.translate(iova, len, access), iova, len, ctx)?;
            Self::compare(&exp, guard.translate(iova, len, access), iova, len, ctx)
        } else {
            Self::compare(&exp, handle.translate(iova, len, access), iova, len, ctx)
        }
    }

    fn op_translate(
        &self,
        d: usize,
        at: At,
        len: TLen,
        access: Access,
        pinned: bool,
        ctx: &str,
    ) -> Check {
        let (iova, len) = self.resolve_translate(d, at, len);
        self.translate_and_compare(d, iova, len, access, pinned, ctx)
    }

    fn op_while_holding(&mut self, d: usize, call: HeldCall, ctx: &str) -> Check {
        let guard = self.devs[d].handle.pin();
        let (res, errs) = match call {
            HeldCall::UnmapAll(i) => {
                let Some(ioas) = self.pick_ioas(i) else {
                    return Ok(());
                };
                let errs = if self.ioas.contains_key(&ioas) {
                    vec![EDEADLK]
                } else {
                    vec![EDEADLK, ENOENT]
                };
                (self.iommu.ioas_unmap(ioas, 0, u64::MAX).map(drop), errs)
            }
            HeldCall::Detach(j) => {
                let j = j % self.devs.len();
                let errs = if self.devs[j].attached {
                    vec![EDEADLK]
                } else {
                    vec![EDEADLK, EINVAL]
                };
                (self.iommu.device_detach(self.devs[j].id), errs)
            }
            HeldCall::Synchronize => (self.iommu.synchronize(), vec![EDEADLK]),
        };
        drop(guard);
        match self.note(res) {
            Err(e) => check_errno(&e, &errs, false, ctx),
            Ok(()) => fail(format!(
                "{ctx}: succeeded while the thread held a DmaGuard, model expects {errs:?}"
            )),
        }
    }

    /// Translates every check page (read and write) and every area of each device's IOAS.
    fn check_all(&self, ctx: &str) -> Check {
        for d in 0..self.devs.len() {
            if self.dev_hwpt(d).is_none() {
                // Blocked everywhere: a few pages, in and past the narrow aperture, suffice.
                for p in [0, 9, 40, 511, 512, 1024] {
                    self.translate_and_compare(d, p * PAGE, PAGE, Access::Read, false, ctx)?;
                }
                continue;
            }
            for range in CHECK_PAGES {
                for p in range.clone() {
                    for access in [Access::Read, Access::Write] {
                        self.translate_and_compare(d, p * PAGE, PAGE, access, false, ctx)?;
                    }
                }
            }
            if let Some(ioas) = self.dev_ioas(d) {
                // Every area, and every run of back-to-back areas in one request (chunks merge
                // where targets are contiguous and split where they are not).
                let mut run: Option<(u64, u128)> = None;
                for (&a, ar) in &self.ioas[&ioas].areas {
                    let len = ar.len.min(64 * PAGE);
                    self.translate_and_compare(d, a, len, Access::Read, true, ctx)?;
                    run = match run {
                        Some((s, e)) if e == u128::from(a) => Some((s, end_of(a, ar))),
                        Some((s, e)) => {
                            self.translate_run(d, s, e, ctx)?;
                            Some((a, end_of(a, ar)))
                        }
                        None => Some((a, end_of(a, ar))),
                    };
                }
                if let Some((s, e)) = run {
                    self.translate_run(d, s, e, ctx)?;
                }
            }
        }
        Ok(())
    }

    fn translate_run(&self, d: usize, start: u64, end: u128, ctx: &str) -> Check {
        let len = (end - u128::from(start)).min(u128::from(1024 * PAGE)) as u64;
        for access in [Access::Read, Access::Write] {
            self.translate_and_compare(d, start, len, access, false, ctx)?;
        }
        Ok(())
    }

    /// End of a case: everything translates as modelled, every dead id is ENOENT, and
    /// unmap-all of every IOAS returns the bytes the model holds.
    fn finish(&mut self) -> Check {
        self.check_all("final check")?;
        for &id in &self.dead {
            match self.note(self.iommu.destroy(id)) {
                Err(e) if e.errno() == ENOENT => {}
                other => {
                    return fail(format!(
                        "destroy of dead id {id:?}: got {other:?}, expected ENOENT"
                    ))
                }
            }
        }
        for (&id, m) in &self.ioas {
            let want: u64 = m.areas.values().map(|a| a.len).sum();
            match self.note(self.iommu.ioas_unmap(id, 0, u64::MAX)) {
                Ok(got) if got == want => {}
                other => {
                    return fail(format!(
                        "final unmap-all of {id:?}: got {other:?}, model expects Ok({want:#x})"
                    ))
                }
            }
        }
        Ok(())
    }
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
/// SPEC.md gives it: the model must predict it and the implementation must return it, so a
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
