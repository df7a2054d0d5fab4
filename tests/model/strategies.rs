//! The operations a case is made of, and the proptest strategies that generate them.

use crate::common::PAGE;
use crate::{GUEST_RAM, TABLES_IPA, TABLES_SIZE, TABLES_TARGET, TBASE};
use proptest::prelude::*;
use viommu::{Access, Prot};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    At(u64),
    /// `TBASE + iova`, so that neighbouring areas get contiguous targets and chunks merge.
    FollowIova,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum UnmapRange {
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
pub(crate) enum Pt {
    Ioas(usize),
    Hwpt(usize),
    /// A live nested HWPT (any HWPT when there is none).
    Nested(usize),
    /// Wrong type.
    Device(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum AllocDev {
    Device(usize),
    /// Wrong type (or destroyed).
    Ioas(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum AllocPt {
    Ioas(usize),
    /// Wrong type.
    Device(usize),
    /// A HWPT without stage-1 data: EOPNOTSUPP (or ENOENT once destroyed).
    Hwpt(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Victim {
    Ioas(usize),
    Hwpt(usize),
    /// A device: EBUSY while attached at its RID or at any PASID; once destroyed, the model
    /// binds a new device with the same info in its place.
    Device(usize),
}

/// The parent of a nested HWPT.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ParentSel {
    /// A live `NEST_PARENT` HWPT (any HWPT when there is none).
    Parent(usize),
    /// Any HWPT (live or dead): plain, nested and dead ones are refused.
    Hwpt(usize),
    Ioas(usize),
    Device(usize),
}

/// The stage-1 data of a nested HWPT (the tables and CD tables are the model's guest's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NestKind {
    /// SMMUv3, S1CDMax 0: one CD, pointing at table 0.
    SmmuOne,
    /// SMMUv3, S1CDMax 2: CDs 0 and 1 point at tables 0 and 1, CD 2 is invalid, CD 3 points
    /// at table 1; untagged DMA per `s1dss` (0 terminate, 1 bypass, 2 CD 0).
    SmmuFour { s1dss: u64 },
    /// VT-d first stage, 4 levels: table 2.
    Vtd,
    /// Stage-1 data the library refuses (EINVAL); the index picks which.
    Invalid(u8),
}

/// The HWPT an invalidation names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum InvSel {
    /// A live nested HWPT (any HWPT when there is none).
    Nested(usize),
    /// Any HWPT (live or dead): a paging one is refused.
    Hwpt(usize),
    Ioas(usize),
    Device(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum At {
    Raw(u64),
    /// (area index in the device's IOAS, page within it, byte offset)
    Area(usize, u64, u64),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum TLen {
    Bytes(u64),
    /// To the end of the area holding the start, plus this many pages.
    ToAreaEnd(u64),
    /// To the end of the n-th area after the one holding the start (across gaps, if any).
    Span(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum HeldCall {
    UnmapAll(usize),
    Detach(usize),
    Synchronize,
    /// `device_detach_pasid(dev, pasid)`.
    DetachPasid(usize, u32),
    Invalidate(InvSel),
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
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
    AttachPasid {
        dev: usize,
        pasid: u32,
        pt: Pt,
    },
    ReplacePasid {
        dev: usize,
        pasid: u32,
        pt: Pt,
    },
    DetachPasid {
        dev: usize,
        pasid: u32,
    },
    /// A translation through `pin_pasid(pasid)` (0: the RID).
    TranslatePasid {
        dev: usize,
        pasid: u32,
        at: At,
        len: TLen,
        access: Access,
    },
    AllocNested {
        dev: AllocDev,
        parent: ParentSel,
        kind: NestKind,
    },
    Invalidate {
        hwpt: InvSel,
        inv: viommu::Invalidation,
    },
    /// The guest maps IOVA page `page` of its stage-1 table `table` to IPA `ipa`, without
    /// invalidating.
    S1Map {
        table: usize,
        page: u64,
        ipa: u64,
        writable: bool,
    },
    /// The guest clears IOVA page `page` of its table `table`, without invalidating.
    S1Unmap {
        table: usize,
        page: u64,
    },
    /// A waiting call made while the calling thread holds a guard of `dev`: EDEADLK.
    WhileHolding {
        dev: usize,
        call: HeldCall,
    },
    CheckAll,
}

pub(crate) fn iova_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => (0u64..48).prop_map(|p| p * PAGE),
        3 => (504u64..520).prop_map(|p| p * PAGE),
        1 => Just(1024 * PAGE),
        1 => (0u64..48).prop_map(|p| p * PAGE + 0x800),
        // The top of the 64-bit space: fits, ends exactly at 2^64, or wraps, depending on len.
        1 => (1u64..6).prop_map(|p| 0u64.wrapping_sub(p * PAGE)),
    ]
}

pub(crate) fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => (0u64..96).prop_map(|p| Target::At(TBASE + p * PAGE)),
        4 => Just(Target::FollowIova),
        1 => Just(Target::At(TBASE + 0x10)),
        1 => (1u64..4).prop_map(|p| Target::At(0u64.wrapping_sub(p * PAGE))),
    ]
}

pub(crate) fn len_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => (1u64..=8).prop_map(|n| n * PAGE),
        1 => Just(512 * PAGE),
        1 => Just(0u64),
        1 => Just(PAGE + 0x800),
    ]
}

pub(crate) fn prot_strategy() -> impl Strategy<Value = Prot> {
    prop_oneof![3 => Just(Prot::RW), 1 => Just(Prot::READ), 1 => Just(Prot::WRITE)]
}

pub(crate) fn pt_strategy() -> impl Strategy<Value = Pt> {
    prop_oneof![
        4 => (0usize..4).prop_map(Pt::Ioas),
        4 => (0usize..8).prop_map(Pt::Hwpt),
        2 => (0usize..8).prop_map(Pt::Nested),
        1 => (0usize..4).prop_map(Pt::Device),
    ]
}

/// Mostly valid PASIDs of the PASID-capable devices (1..=3), sometimes 0, one past the
/// range of the 2-bit devices, or far out.
pub(crate) fn pasid_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![
        10 => 1u32..=3,
        1 => Just(0u32),
        1 => Just(4u32),
        1 => prop_oneof![Just(1u32 << 20), Just(u32::MAX)],
    ]
}

/// Mostly PASID-capable devices (see `Model::pick_pasid_dev`).
pub(crate) fn pasid_dev_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 4usize..12, 1 => 0usize..4]
}

pub(crate) fn nest_kind_strategy() -> impl Strategy<Value = NestKind> {
    prop_oneof![
        3 => Just(NestKind::SmmuOne),
        3 => (0u64..3).prop_map(|s1dss| NestKind::SmmuFour { s1dss }),
        3 => Just(NestKind::Vtd),
        1 => (0u8..6).prop_map(NestKind::Invalid),
    ]
}

pub(crate) fn invalidation_strategy() -> impl Strategy<Value = viommu::Invalidation> {
    use viommu::Invalidation;
    let pasid = prop_oneof![
        4 => Just(None),
        4 => (0u32..4).prop_map(Some),
        1 => Just(Some(1u32 << 20)),
    ];
    let range = prop_oneof![
        6 => ((0u64..24).prop_map(|p| p * PAGE), (1u64..4).prop_map(|n| n * PAGE)),
        1 => Just((0u64, u64::MAX)),
        1 => Just((0u64, 0u64)),
        // Ends exactly at 2^64, or wraps.
        1 => Just((u64::MAX - PAGE + 1, PAGE)),
        1 => Just((u64::MAX - PAGE + 2, PAGE)),
    ];
    prop_oneof![
        2 => Just(Invalidation::All),
        4 => (pasid, range).prop_map(|(pasid, (iova, len))| Invalidation::Range { pasid, iova, len }),
        2 => prop_oneof![4 => 0u32..4, 1 => Just(1u32 << 20)]
            .prop_map(|pasid| Invalidation::Config { pasid }),
    ]
}

pub(crate) fn inv_sel_strategy() -> impl Strategy<Value = InvSel> {
    prop_oneof![
        6 => (0usize..8).prop_map(InvSel::Nested),
        2 => (0usize..8).prop_map(InvSel::Hwpt),
        1 => (0usize..4).prop_map(InvSel::Ioas),
        1 => (0usize..4).prop_map(InvSel::Device),
    ]
}

/// Stage-1 IOVA pages the guest changes: the low window the translations look at, and
/// around the 2 MiB boundary (another last-level table).
pub(crate) fn s1_page_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..24, 1 => 504u64..516]
}

/// The guest's table memory mapped (read-only, mostly) in an IOAS at its fixed IPA.
pub(crate) fn map_tables(ioas: usize, prot: Prot) -> Op {
    Op::Map {
        ioas,
        iova: Some(TABLES_IPA),
        target: Target::At(TABLES_TARGET),
        len: TABLES_SIZE,
        prot,
    }
}

pub(crate) fn nested_ops_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (pasid_dev_strategy(), pasid_strategy(), pt_strategy())
            .prop_map(|(dev, pasid, pt)| Op::AttachPasid { dev, pasid, pt }),
        2 => (pasid_dev_strategy(), pasid_strategy(), pt_strategy())
            .prop_map(|(dev, pasid, pt)| Op::ReplacePasid { dev, pasid, pt }),
        2 => (pasid_dev_strategy(), pasid_strategy())
            .prop_map(|(dev, pasid)| Op::DetachPasid { dev, pasid }),
        3 => (translate_strategy(), pasid_dev_strategy(), prop_oneof![6 => pasid_strategy(), 1 => Just(0u32)])
            .prop_map(|(t, dev, pasid)| match t {
                Op::Translate { at, len, access, .. } => Op::TranslatePasid { dev, pasid, at, len, access },
                _ => unreachable!(),
            }),
        2 => (
            prop_oneof![
                8 => (0usize..4).prop_map(AllocDev::Device),
                1 => (0usize..4).prop_map(AllocDev::Ioas),
            ],
            prop_oneof![
                8 => (0usize..8).prop_map(ParentSel::Parent),
                2 => (0usize..8).prop_map(ParentSel::Hwpt),
                1 => (0usize..4).prop_map(ParentSel::Ioas),
                1 => (0usize..4).prop_map(ParentSel::Device),
            ],
            nest_kind_strategy(),
        )
            .prop_map(|(dev, parent, kind)| Op::AllocNested { dev, parent, kind }),
        2 => (inv_sel_strategy(), invalidation_strategy())
            .prop_map(|(hwpt, inv)| Op::Invalidate { hwpt, inv }),
        3 => (
            0usize..3,
            s1_page_strategy(),
            prop_oneof![
                4 => GUEST_RAM..GUEST_RAM + 32,
                3 => 0u64..48,
                1 => (0u64..TABLES_SIZE / PAGE).prop_map(|p| TABLES_IPA / PAGE + p),
                1 => Just(600u64),
            ]
            .prop_map(|p| p * PAGE),
            prop::bool::weighted(0.7),
        )
            .prop_map(|(table, page, ipa, writable)| Op::S1Map { table, page, ipa, writable }),
        1 => (0usize..3, s1_page_strategy()).prop_map(|(table, page)| Op::S1Unmap { table, page }),
        1 => (0usize..4, prop_oneof![4 => Just(Prot::READ), 1 => Just(Prot::RW), 1 => Just(Prot::WRITE)])
            .prop_map(|(ioas, prot)| map_tables(ioas, prot)),
    ]
}

pub(crate) fn unmap_strategy() -> impl Strategy<Value = UnmapRange> {
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

pub(crate) fn translate_strategy() -> impl Strategy<Value = Op> {
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
pub(crate) fn case_strategy() -> impl Strategy<Value = Vec<Op>> {
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
    // Often: the guest's tables mapped in IOAS 0 (and 1), a NEST_PARENT HWPT on IOAS 0 and a
    // nested HWPT above it, so that the random operations find nesting set up.
    let nest_prelude = (
        prop::bool::weighted(0.6),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.4),
        0usize..4,
        nest_kind_strategy(),
        prop::option::weighted(
            0.5,
            (
                4usize..12,
                1u32..=3,
                prop_oneof![(0usize..2).prop_map(Pt::Ioas), Just(Pt::Nested(0))],
            ),
        ),
    )
        .prop_map(|(tables0, tables1, nest, dev, kind, pasid_attach)| {
            let mut ops = Vec::new();
            if tables0 {
                ops.push(map_tables(0, Prot::READ));
            }
            if tables1 {
                ops.push(map_tables(1, Prot::READ));
            }
            if nest {
                for (page, prot) in [(GUEST_RAM, Prot::RW), (GUEST_RAM + 16, Prot::READ)] {
                    ops.push(Op::Map {
                        ioas: 0,
                        iova: Some(page * PAGE),
                        target: Target::FollowIova,
                        len: 16 * PAGE,
                        prot,
                    });
                }
                ops.push(Op::HwptAlloc {
                    dev: AllocDev::Device(dev),
                    pt: AllocPt::Ioas(0),
                    flags: 1,
                });
                ops.push(Op::AllocNested {
                    dev: AllocDev::Device(dev),
                    parent: ParentSel::Parent(0),
                    kind,
                });
            }
            if let Some((dev, pasid, pt)) = pasid_attach {
                ops.push(Op::AttachPasid { dev, pasid, pt });
            }
            ops
        });
    (
        prop::collection::vec(prelude_map, 0..12),
        nest_prelude,
        prop::collection::vec(op_strategy(), 1..40),
    )
        .prop_map(|(mut prelude, nest, ops)| {
            prelude.extend(nest);
            prelude.extend(ops);
            prelude
        })
}

pub(crate) fn op_strategy() -> impl Strategy<Value = Op> {
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
                1 => (0usize..8).prop_map(AllocPt::Hwpt),
            ],
            prop_oneof![4 => Just(0u32), 2 => Just(1u32), 1 => Just(1u32 << 7)],
        )
            .prop_map(|(dev, pt, flags)| Op::HwptAlloc { dev, pt, flags }),
        10 => (0usize..10, pt_strategy()).prop_map(|(dev, pt)| Op::Attach { dev, pt }),
        6 => (0usize..20, pt_strategy()).prop_map(|(dev, pt)| Op::Replace { dev, pt }),
        2 => (0usize..20).prop_map(|dev| Op::Detach { dev }),
        2 => prop_oneof![
            3 => (0usize..4).prop_map(Victim::Ioas),
            3 => (0usize..8).prop_map(Victim::Hwpt),
            1 => (0usize..4).prop_map(Victim::Device),
        ]
        .prop_map(|victim| Op::Destroy { victim }),
        8 => translate_strategy(),
        1 => (
            0usize..4,
            prop_oneof![
                (0usize..4).prop_map(HeldCall::UnmapAll),
                (0usize..4).prop_map(HeldCall::Detach),
                Just(HeldCall::Synchronize),
                (0usize..4, pasid_strategy()).prop_map(|(d, p)| HeldCall::DetachPasid(d, p)),
                inv_sel_strategy().prop_map(HeldCall::Invalidate),
            ],
        )
            .prop_map(|(dev, call)| Op::WhileHolding { dev, call }),
        1 => Just(Op::CheckAll),
        14 => nested_ops_strategy(),
    ]
}
