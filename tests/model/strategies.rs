//! The operations a case is made of, and the proptest strategies that generate them.

use crate::common::PAGE;
use crate::TBASE;
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
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Victim {
    Ioas(usize),
    Hwpt(usize),
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
        1 => (0usize..4).prop_map(Pt::Device),
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
    (
        prop::collection::vec(prelude_map, 0..12),
        prop::collection::vec(op_strategy(), 1..40),
    )
        .prop_map(|(mut prelude, ops)| {
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
