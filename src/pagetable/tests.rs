//! Unit tests of the page table: every level, huge leaves, permissions, aperture edges,
//! adjacent ranges, retirement of emptied tables.

use super::*;
use crate::grace::Counters;
use crate::translation::{Chunk, Fault, FaultKind};
use crate::types::{Access, Prot};

const K4: u64 = 4 << 10;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// The counters a table reports to, as `r.counters` (the name the tests read).
struct Owner {
    counters: Arc<Counters>,
}

fn owner() -> Owner {
    Owner {
        counters: Arc::new(Counters::default()),
    }
}

fn table(bits: u8) -> (Owner, PageTable) {
    let r = owner();
    let pt = PageTable::new(bits, r.counters.clone());
    (r, pt)
}

/// Unmaps and frees what it retired at once (no reader exists in these tests).
fn unmap(pt: &PageTable, iova: u64, len: u64) {
    let mut retired = RetiredTables::default();
    pt.unmap(iova, len, &mut retired);
}

fn tr(
    _r: &Owner,
    pt: &PageTable,
    iova: u64,
    len: u64,
    access: Access,
) -> Result<Vec<Chunk>, Fault> {
    Ok(pt.translate(iova, iova + (len - 1), access)?.collect())
}

fn leaf_level(_r: &Owner, pt: &PageTable, iova: u64) -> Option<u32> {
    pt.lookup(iova).map(|(_, l)| l)
}

#[test]
fn levels_follow_the_aperture() {
    assert_eq!(table(48).1.levels, 4);
    assert_eq!(table(39).1.levels, 3);
    assert_eq!(table(64).1.levels, 6);
    assert_eq!(table(13).1.levels, 1);
    assert_eq!(table(48).1.aperture_last(), (1 << 48) - 1);
    assert_eq!(table(64).1.aperture_last(), u64::MAX);
}

#[test]
fn four_k_leaf_at_every_level_of_the_walk() {
    let (r, pt) = table(48);
    // One page in each top-level slot region, so every level allocates tables.
    for (i, iova) in [0u64, 1 << 39, 3 << 30, (1 << 48) - K4]
        .into_iter()
        .enumerate()
    {
        let target = 0x1000_0000 + (i as u64) * K4;
        pt.map(iova, target, K4, Prot::RW);
        assert_eq!(leaf_level(&r, &pt, iova), Some(0));
        let c = tr(&r, &pt, iova + 0x10, 0x20, Access::Read).unwrap();
        assert_eq!(
            c,
            vec![Chunk {
                iova: iova + 0x10,
                target: target + 0x10,
                len: 0x20
            }]
        );
    }
}

#[test]
fn huge_leaves_when_iova_target_and_length_are_aligned() {
    let (r, pt) = table(48);
    pt.map(G1, 4 * G1, G1, Prot::READ);
    assert_eq!(leaf_level(&r, &pt, G1 + 12345), Some(2));
    pt.map(4 * G1, 8 * G1 + M2, M2, Prot::READ);
    assert_eq!(leaf_level(&r, &pt, 4 * G1), Some(1));
    // Target not 2 MiB aligned: 4 KiB leaves.
    pt.map(6 * G1, 0x1000, M2, Prot::READ);
    assert_eq!(leaf_level(&r, &pt, 6 * G1), Some(0));
    assert_eq!(leaf_level(&r, &pt, 6 * G1 + M2 - K4), Some(0));
    // Length 2 MiB + 4 KiB at an aligned spot: one 2 MiB leaf and one 4 KiB leaf.
    pt.map(8 * G1, 16 * G1, M2 + K4, Prot::READ);
    assert_eq!(leaf_level(&r, &pt, 8 * G1), Some(1));
    assert_eq!(leaf_level(&r, &pt, 8 * G1 + M2), Some(0));
    let c = tr(&r, &pt, 8 * G1 + M2 - 8, 16, Access::Read).unwrap();
    assert_eq!(
        c,
        vec![Chunk {
            iova: 8 * G1 + M2 - 8,
            target: 16 * G1 + M2 - 8,
            len: 16
        }]
    );
    // A translation inside a 1 GiB leaf is one chunk.
    let c = tr(&r, &pt, G1 + M2, 3 * M2, Access::Read).unwrap();
    assert_eq!(
        c,
        vec![Chunk {
            iova: G1 + M2,
            target: 4 * G1 + M2,
            len: 3 * M2
        }]
    );
}

#[test]
fn permissions_live_in_the_entry() {
    let (r, pt) = table(48);
    pt.map(0, 0x10_0000, K4, Prot::READ);
    pt.map(K4, 0x20_0000, K4, Prot::WRITE);
    assert!(tr(&r, &pt, 0, K4, Access::Read).is_ok());
    assert_eq!(
        tr(&r, &pt, 0, K4, Access::Write).unwrap_err(),
        Fault {
            iova: 0,
            kind: FaultKind::Permission
        }
    );
    assert!(tr(&r, &pt, K4, K4, Access::Write).is_ok());
    assert_eq!(
        tr(&r, &pt, 0x800, K4, Access::Read).unwrap_err(),
        Fault {
            iova: K4,
            kind: FaultKind::Permission
        }
    );
}

#[test]
fn aperture_edges() {
    let (r, pt) = table(39);
    let last_page = (1u64 << 39) - K4;
    pt.map(last_page, 0x5000, K4, Prot::RW);
    assert!(tr(&r, &pt, last_page, K4, Access::Read).is_ok());
    assert_eq!(
        tr(&r, &pt, last_page, 2 * K4, Access::Read).unwrap_err(),
        Fault {
            iova: 1 << 39,
            kind: FaultKind::Aperture
        }
    );
    assert_eq!(
        tr(&r, &pt, 1 << 40, K4, Access::Read).unwrap_err(),
        Fault {
            iova: 1 << 40,
            kind: FaultKind::Aperture
        }
    );
    // 64-bit table: the very last page is mappable.
    let (r, pt) = table(64);
    pt.map(u64::MAX - (K4 - 1), 0x7000, K4, Prot::READ);
    let c = tr(&r, &pt, u64::MAX - 15, 16, Access::Read).unwrap();
    assert_eq!(c[0].target, 0x7000 + K4 - 16);
}

#[test]
fn adjacent_ranges_merge_when_targets_are_contiguous() {
    let (r, pt) = table(48);
    // Two separately mapped areas, contiguous in both IOVA and target: one chunk.
    pt.map(0x10_0000, 0xa000_0000, 2 * K4, Prot::RW);
    pt.map(0x10_2000, 0xa000_2000, K4, Prot::RW);
    // Then a discontiguous neighbour.
    pt.map(0x10_3000, 0xb000_0000, K4, Prot::RW);
    let c = tr(&r, &pt, 0x10_0800, 3 * K4, Access::Read).unwrap();
    assert_eq!(
        c,
        vec![
            Chunk {
                iova: 0x10_0800,
                target: 0xa000_0800,
                len: 0x2800
            },
            Chunk {
                iova: 0x10_3000,
                target: 0xb000_0000,
                len: 0x800
            },
        ]
    );
    // A hole faults at its first byte.
    assert_eq!(
        tr(&r, &pt, 0x10_3000, 2 * K4, Access::Read).unwrap_err(),
        Fault {
            iova: 0x10_4000,
            kind: FaultKind::Unmapped
        }
    );
}

#[test]
fn unmap_keeps_emptied_tables_linked_and_prune_retires_them() {
    let (r, pt) = table(48);
    let tables = || r.counters.tables.load(Ordering::Relaxed);
    let base = tables();
    assert_eq!(base, 1);
    pt.map(5 << 39, 0x1000, 4 * K4, Prot::RW);
    pt.map((5 << 39) + G1, 2 * G1, G1, Prot::RW);
    assert_eq!(tables(), base + 3); // L3, L2, L1 tables
    let mut retired = RetiredTables::default();
    pt.unmap(5 << 39, 4 * K4, &mut retired);
    assert!(tr(&r, &pt, 5 << 39, K4, Access::Read).is_err());
    assert!(tr(&r, &pt, (5 << 39) + G1, K4, Access::Read).is_ok());
    pt.unmap((5 << 39) + G1, G1, &mut retired);
    // The emptied tables stay linked (nothing retired) ...
    assert!(retired.is_empty());
    assert_eq!(tables(), base + 3);
    // ... so a map in the same region allocates nothing.
    for _ in 0..100 {
        pt.map(5 << 39, 0x7000, K4, Prot::RW);
        assert_eq!(tables(), base + 3);
        assert_eq!(
            tr(&r, &pt, 5 << 39, K4, Access::Read).unwrap()[0].target,
            0x7000
        );
        pt.unmap(5 << 39, K4, &mut retired);
        assert!(retired.is_empty());
    }
    // A prune unlinks every empty table, bottom-up (the L1 table, then the L2 it emptied, then
    // the L3): they go to the pool after their grace period (here: at once), still counted.
    pt.prune(&mut retired);
    assert!(!retired.is_empty());
    drop(retired);
    assert_eq!(tables(), base + 3, "emptied tables pooled");
    // The next map that needs tables takes them from there.
    pt.map(7 << 39, 0x5000, K4, Prot::RW);
    assert_eq!(tables(), base + 3);
    assert!(tr(&r, &pt, 7 << 39, K4, Access::Read).is_ok());
    unmap(&pt, 7 << 39, K4);
    // Neighbours on both sides of an unmapped page stay.
    pt.map(0, 0x1000, 3 * K4, Prot::RW);
    unmap(&pt, 0, 3 * K4);
    pt.map(0, 0x1000, K4, Prot::RW);
    pt.map(K4, 0x9000, K4, Prot::RW);
    pt.map(2 * K4, 0x3000, K4, Prot::RW);
    unmap(&pt, K4, K4);
    assert!(tr(&r, &pt, 0, K4, Access::Read).is_ok());
    assert!(tr(&r, &pt, K4, K4, Access::Read).is_err());
    assert!(tr(&r, &pt, 2 * K4, K4, Access::Read).is_ok());
}

/// Up to `EMPTY_LIMIT` emptied tables stay linked; the unmap that empties one more prunes
/// them all. A table refilled by a map stops counting.
#[test]
fn emptied_tables_past_the_limit_are_pruned() {
    let (r, pt) = table(48);
    let tables = || r.counters.tables.load(Ordering::Relaxed);
    // One page per 2 MiB: an L0 table each, under one L1 (under one L2, under the root).
    let at = |i: u64| i * M2;
    for i in 0..=EMPTY_LIMIT as u64 {
        pt.map(at(i), 0x1000, K4, Prot::RW);
    }
    let full = tables();
    assert_eq!(full, 3 + EMPTY_LIMIT + 1);
    let mut retired = RetiredTables::default();
    // Empty EMPTY_LIMIT L0 tables, refilling the first one on the way: it stops counting.
    pt.unmap(at(0), K4, &mut retired);
    pt.map(at(0), 0x2000, K4, Prot::RW);
    for i in 1..EMPTY_LIMIT as u64 {
        pt.unmap(at(i), K4, &mut retired);
    }
    assert!(retired.is_empty(), "{} empty tables kept", EMPTY_LIMIT - 1);
    pt.unmap(at(0), K4, &mut retired);
    assert!(retired.is_empty(), "{EMPTY_LIMIT} empty tables kept");
    // One more: all of them are unlinked.
    pt.unmap(at(EMPTY_LIMIT as u64), K4, &mut retired);
    assert!(!retired.is_empty());
    drop(retired);
    // Every L0 table and the L1 and L2 they emptied are gone from the tree (pooled or freed).
    assert_eq!(tables(), 1 + POOL_TABLES.min(EMPTY_LIMIT + 3));
    for i in 0..=EMPTY_LIMIT as u64 {
        assert!(tr(&r, &pt, at(i), K4, Access::Read).is_err());
    }
}

#[test]
fn drop_frees_every_table() {
    let r = owner();
    {
        let pt = PageTable::new(48, r.counters.clone());
        pt.map(0, 0, 64 * M2 + 5 * K4, Prot::RW);
        pt.map(1 << 40, 0x1000, 3 * K4, Prot::RW);
        assert!(r.counters.tables.load(Ordering::Relaxed) > 4);
    }
    assert_eq!(r.counters.tables.load(Ordering::Relaxed), 0);
}

#[test]
fn the_pool_is_bounded_and_freed_with_its_table() {
    let r = owner();
    {
        let pt = PageTable::new(48, r.counters.clone());
        // 20 pages a GiB apart: one L1 table each, below one L2 table (and the L3 root).
        for i in 0..20u64 {
            pt.map(i * G1, 0x1000, K4, Prot::RW);
        }
        // Root, one L2, and an L1 and an L0 table a page.
        assert_eq!(r.counters.tables.load(Ordering::Relaxed), 1 + 1 + 20 + 20);
        unmap(&pt, 0, 20 * G1);
        // 41 tables emptied: POOL_TABLES kept, the rest freed.
        assert_eq!(r.counters.tables.load(Ordering::Relaxed), 1 + POOL_TABLES);
        // A retired list that outlives its page table frees its nodes.
        pt.map(0, 0x1000, K4, Prot::RW);
        let mut retired = RetiredTables::default();
        pt.unmap(0, K4, &mut retired);
        pt.prune(&mut retired);
        assert!(!retired.is_empty());
        drop(pt);
        assert_eq!(r.counters.tables.load(Ordering::Relaxed), 3);
        drop(retired);
    }
    assert_eq!(r.counters.tables.load(Ordering::Relaxed), 0);
}

/// A large leaf over a region whose emptied table an unmap left linked goes into that table
/// (one level down), never over the link (which would lose the table).
#[test]
fn a_large_map_over_a_kept_empty_table_maps_inside_it() {
    let r = owner();
    {
        let pt = PageTable::new(48, r.counters.clone());
        let tables = || r.counters.tables.load(Ordering::Relaxed);
        pt.map(M2, 0x1000, K4, Prot::RW);
        pt.map(G1, 0x1000, K4, Prot::RW);
        let mut retired = RetiredTables::default();
        pt.unmap(M2, K4, &mut retired);
        pt.unmap(G1, K4, &mut retired);
        assert!(retired.is_empty());
        let before = tables();
        // 2 MiB where an empty L0 table is linked; 1 GiB where an empty L1 table (with an
        // empty L0 below) is linked.
        pt.map(M2, 0x4000_0000, M2, Prot::RW);
        pt.map(G1, 0x8000_0000, G1, Prot::READ);
        assert_eq!(tables(), before, "no table allocated, none lost");
        let c = tr(&r, &pt, M2 + 0x1234, 4, Access::Write).unwrap();
        assert_eq!(c[0].target, 0x4000_1234);
        let c = tr(&r, &pt, G1 + M2 + 8, 4, Access::Read).unwrap();
        assert_eq!(c[0].target, 0x8020_0008);
        pt.unmap(M2, M2, &mut retired);
        pt.unmap(G1, G1, &mut retired);
        pt.prune(&mut retired);
        drop(retired);
    }
    assert_eq!(
        r.counters.tables.load(Ordering::Relaxed),
        0,
        "every table freed"
    );
}

proptest::proptest! {
    /// `tables_bound` bounds what a map adds, and `owned_tables` counts exactly the root and
    /// the linked tables (the budget of an IOAS reads both, [`crate::Budget`]).
    #[test]
    fn tables_bound_bounds_what_a_map_adds(
        maps in proptest::collection::vec((0u64..1 << 24, 0u64..1 << 24, 1u64..1 << 12, 0u64..2), 1..6),
        bits in proptest::sample::select(vec![39u8, 48]),
    ) {
        let (r, pt) = table(bits);
        let mut used: Vec<(u64, u64)> = Vec::new();
        for (page, tpage, pages, huge) in maps {
            // Half the maps congruent modulo 1 GiB (huge leaves possible), half not.
            let iova = page * K4 + huge * G1;
            let target = if huge == 1 { iova + 3 * G1 } else { tpage * K4 };
            let len = pages * K4 * if huge == 1 { 512 } else { 1 };
            let last = iova + len - 1;
            if used.iter().any(|&(s, l)| s <= last && l >= iova) {
                continue;
            }
            used.push((iova, last));
            let before = pt.owned_tables();
            let bound = pt.tables_bound(iova, target, len);
            pt.map(iova, target, len, Prot::RW);
            let after = pt.owned_tables();
            proptest::prop_assert!(after - before <= bound, "{after} - {before} > {bound}");
            proptest::prop_assert_eq!(
                after as usize,
                r.counters.tables.load(Ordering::Relaxed)
            );
        }
        for (s, l) in used {
            unmap(&pt, s, l - s + 1);
        }
        let mut retired = RetiredTables::default();
        pt.prune(&mut retired);
        proptest::prop_assert_eq!(pt.owned_tables(), 1);
    }
}
