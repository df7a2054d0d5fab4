//! Stress tests of the two nested replaces that SPEC requires to be hitless (G2), with DMA
//! reader threads translating continuously while the test thread replaces:
//!
//! * *vPASID*: the RID of a device moves between SMMUv3 nested HWPTs whose CD table has one
//!   entry (S1CDMax 0) and ones whose CD table has 2^[`CD_BITS`] entries. CD 0 is the same in
//!   both, so untagged DMA never faults; SSIDs 1.. (`pin_pasid`, served by the RID's CD table)
//!   fault `Blocked` on the one-entry table and translate through their own CD on the other.
//! * *S2 → S1*: a device (or one of its PASIDs) moves between the `NEST_PARENT` paging HWPT
//!   (IOVA = IPA), an SMMUv3 nested HWPT and a VT-d nested HWPT above it, through every pair.
//!   Both stage 1s map a window as an identity, which must never fault and always translate
//!   to its stage-2 target; one more page maps to a different IPA in each domain, so that
//!   every guard shows which domain it used.
//!
//! Every reader checks every translated target and classifies every fault. The writer keeps
//! two `SeqCst` counters around each replace (`begun` before it, `done` after it returns); a
//! reader that reads `done` = d before it pins and `begun` = d after its last translation
//! knows that its guard used exactly replace d's domain (none began while it pinned), so it
//! checks the exact outcome there, and one of the legal outcomes otherwise.
//!
//! The tests run one at a time (a lock), each until it reaches its share of the file's
//! floors: [`TRANSLATIONS`] translations and [`REPLACES`] replaces in all (asserted per test
//! and, for the sum, at compile time).

mod common;
#[path = "support/stage1.rs"]
mod stage1;

use common::{bind, spin_for, StopOnDrop};
use stage1::{ste_s1, write_cd, Fmt, Guest, S1Table, PAGE};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};
use viommu::{
    Access, Chunk, Device, DeviceInfo, Fault, FaultKind, HwptFlags, Iommu, ObjId, Stage1,
};

use stage1::layout::*;
const MIB: u64 = 0x10_0000;

/// The floors of the whole file: translations and replaces of the seed-case tests together.
const TRANSLATIONS: u64 = 1_000_000;
const REPLACES: u64 = 100_000;
/// Each test's share.
const VPASID: Floor = Floor {
    translations: 400_000,
    replaces: 40_000,
};
const S2_S1: Floor = Floor {
    translations: 350_000,
    replaces: 35_000,
};
const S2_S1_PASID: Floor = Floor {
    translations: 250_000,
    replaces: 25_000,
};
const _: () = assert!(
    VPASID.translations + S2_S1.translations + S2_S1_PASID.translations >= TRANSLATIONS
        && VPASID.replaces + S2_S1.replaces + S2_S1_PASID.replaces >= REPLACES
);
/// A test that has not reached its floor by then fails (a writer or readers starved).
const LIMIT: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: each wants both cores for its three threads.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stage-2 target of a data IPA.
fn s2(ipa: u64) -> u64 {
    assert!((DATA_IPA..DATA_IPA + DATA_SIZE).contains(&ipa));
    DATA_TARGET + (ipa - DATA_IPA)
}

// ---------------------------------------------------------------------------------------
// The harness: one writer, two readers, the replace clock, the readers' logs.

#[derive(Clone, Copy, Debug)]
struct Floor {
    translations: u64,
    replaces: u64,
}

/// The writer's replace counters (see the module docs).
struct Clock {
    /// Replace k has begun.
    begun: AtomicU64,
    /// Replace k has returned.
    done: AtomicU64,
}

impl Clock {
    /// Read before pinning.
    fn before(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Read after the guard's last translation: `Some(k)` if the guard used replace k's
    /// domain for certain (`d0` from [`Clock::before`]).
    fn exactly(&self, d0: u64) -> Option<u64> {
        (self.begun.load(Ordering::SeqCst) == d0).then_some(d0)
    }
}

/// What one reader saw.
#[derive(Default, Debug)]
struct Log {
    translations: u64,
    guards: u64,
    /// Faults that must not happen (the IOVA translated the same before and after).
    faults: u64,
    /// Translations to a target that is not a legal outcome, or guards that mixed domains.
    wrong: u64,
    first_bad: Option<String>,
    /// Legal outcomes by kind (test-specific).
    outcomes: [u64; 4],
    /// Guards whose domain was determined, and checked exactly.
    exact: u64,
}

impl Log {
    fn fault(&mut self, what: impl FnOnce() -> String) {
        self.faults += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some(what());
        }
    }

    fn wrong(&mut self, what: impl FnOnce() -> String) {
        self.wrong += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some(what());
        }
    }

    /// One translation of `len` bytes at `iova` through `g` that must be one chunk at
    /// `target`; a fault counts as a fault, anything else as wrong.
    fn expect(
        &mut self,
        g: &viommu::DmaGuard<'_>,
        iova: u64,
        len: u64,
        access: Access,
        target: u64,
    ) {
        match self.translate(g, iova, len, access) {
            Ok(c) if c == (Chunk { iova, target, len }) => {}
            Ok(c) => self.wrong(|| format!("{iova:#x}: {c:x?}, want target {target:#x}")),
            Err(f) => self.fault(|| format!("{iova:#x} ({access:?}): {f:x?}")),
        }
    }

    /// One translation (counted); a translation of more than one chunk is wrong here (every
    /// request of these tests lies in physically contiguous pages).
    fn translate(
        &mut self,
        g: &viommu::DmaGuard<'_>,
        iova: u64,
        len: u64,
        access: Access,
    ) -> Result<Chunk, Fault> {
        self.translations += 1;
        let t = g.translate(iova, len, access)?;
        let s = t.as_slice();
        if s.len() != 1 {
            self.wrong(|| format!("{iova:#x}: {s:x?} is not one chunk"));
        }
        Ok(s[0])
    }
}

/// What a run did.
struct Run {
    logs: Vec<Log>,
    replaces: u64,
    elapsed: Duration,
}

impl Run {
    fn translations(&self) -> u64 {
        self.logs.iter().map(|l| l.translations).sum()
    }

    fn outcomes(&self) -> [u64; 4] {
        let mut o = [0; 4];
        for l in &self.logs {
            for (a, b) in o.iter_mut().zip(l.outcomes) {
                *a += b;
            }
        }
        o
    }

    /// Prints the counts and asserts the floor, no fault and no wrong translation.
    #[track_caller]
    fn check(&self, name: &str, floor: Floor, outcome_names: &[&str]) {
        let mut line = format!(
            "{name}: {} translations, {} replaces in {:.2?}; outcomes",
            self.translations(),
            self.replaces,
            self.elapsed
        );
        for (n, c) in outcome_names.iter().zip(self.outcomes()) {
            let _ = write!(line, " {n} {c}");
        }
        let exact: u64 = self.logs.iter().map(|l| l.exact).sum();
        let _ = write!(line, "; {exact} guards checked exactly");
        println!("{line}");
        for (i, log) in self.logs.iter().enumerate() {
            assert_eq!(
                (log.faults, log.wrong),
                (0, 0),
                "{name}, reader {i}: {} faults, {} wrong translations; first: {}",
                log.faults,
                log.wrong,
                log.first_bad.as_deref().unwrap_or("-")
            );
            assert!(log.guards > 0, "{name}: reader {i} made no guard");
        }
        assert!(
            self.translations() >= floor.translations && self.replaces >= floor.replaces,
            "{name}: floor {floor:?} not reached within {LIMIT:?}: {} translations, {} replaces",
            self.translations(),
            self.replaces
        );
        assert!(exact > 0, "{name}: no guard was checked exactly");
    }
}

/// Runs `readers` (one iteration a call: `(iteration, clock, log)`) on two threads while this
/// thread calls `replace(k)` for k = 1, 2, ... between the clock's stores, until `floor` is
/// reached (or [`LIMIT`] passed).
fn drive<R>(floor: Floor, readers: [R; 2], mut replace: impl FnMut(u64)) -> Run
where
    R: FnMut(u64, &Clock, &mut Log) + Send,
{
    let clock = Clock {
        begun: AtomicU64::new(0),
        done: AtomicU64::new(0),
    };
    let stop = AtomicBool::new(false);
    // The readers' translations so far, published every few hundred iterations.
    let progress = AtomicU64::new(0);
    let mut jitter = Rng::new(0x853c_49e6_748f_ea9b);
    let start = Instant::now();
    thread::scope(|s| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|mut reader| {
                let (clock, stop, progress) = (&clock, &stop, &progress);
                s.spawn(move || {
                    let mut log = Log::default();
                    let mut published = 0;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        reader(i, clock, &mut log);
                        i += 1;
                        if i % 256 == 0 {
                            progress.fetch_add(log.translations - published, Ordering::Relaxed);
                            published = log.translations;
                        }
                    }
                    log
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        let mut k = 0u64;
        loop {
            if k >= floor.replaces && progress.load(Ordering::Relaxed) >= floor.translations {
                break;
            }
            if k % 1024 == 0 && start.elapsed() > LIMIT {
                break;
            }
            k += 1;
            clock.begun.store(k, Ordering::SeqCst);
            replace(k);
            clock.done.store(k, Ordering::SeqCst);
            // Stay in the new domain for a random 0 - 3 us: readers then finish guards
            // between replaces (the exact checks), and the writer's period cannot lock onto
            // the readers' (a reader whose loop takes two replaces would see every other
            // domain only).
            spin_for(Duration::from_nanos(jitter.next_u64() % 3000));
        }
        stop.store(true, Ordering::Relaxed);
        Run {
            logs: handles.into_iter().map(|h| h.join().unwrap()).collect(),
            replaces: k,
            elapsed: start.elapsed(),
        }
    })
}

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// A device with 8 PASID bits and a peer in its group, on nothing yet; an IOAS mapping the
/// guest's tables (read-only) and data; the `NEST_PARENT` paging HWPT on it.
struct World {
    iommu: Iommu,
    dev: ObjId,
    peer: ObjId,
    h: [Device; 2],
    parent: ObjId,
    guest: Guest,
}

fn world() -> World {
    let iommu = Iommu::new();
    let info = || DeviceInfo {
        pasid_bits: 8,
        ..DeviceInfo::default()
    };
    let (dev, h) = bind(&iommu, 1, info());
    let (peer, peer_h) = bind(&iommu, 1, info());
    let guest = Guest::new(TABLES_IPA, TABLES_TARGET, TABLES_SIZE);
    let ioas = guest.parent_ioas(&iommu, (DATA_IPA, DATA_TARGET, DATA_SIZE));
    let parent = iommu.hwpt_alloc(dev, ioas, HwptFlags::NEST_PARENT).unwrap();
    World {
        iommu,
        dev,
        peer,
        h: [h, peer_h],
        parent,
        guest,
    }
}

impl World {
    fn nested(&self, s1: Stage1) -> ObjId {
        self.iommu
            .hwpt_alloc_nested(self.dev, self.parent, s1, self.guest.table_memory())
            .unwrap()
    }
}

/// A random 4-aligned offset for a `len`-byte request inside `pages` pages, and an access.
fn piece(rng: &mut Rng, pages: u64, len: u64) -> (u64, Access) {
    let r = rng.next_u64();
    let off = (r % (pages * PAGE - len)) & !3;
    let access = if r & (1 << 40) == 0 {
        Access::Read
    } else {
        Access::Write
    };
    (off, access)
}

// ---------------------------------------------------------------------------------------
// Seed case 1: vPASID.

/// The large CD tables have 2^CD_BITS entries.
const CD_BITS: u32 = 4;
const CDS: u64 = 1 << CD_BITS;
/// The window every CD's table maps: CD `s` maps it to data IPA `s` MiB.
const WINDOW: u64 = 0x10_0000;
const WINDOW_PAGES: u64 = 4;

/// The target of `WINDOW + off` through CD `s`.
fn via_cd(s: u64, off: u64) -> u64 {
    s2(DATA_IPA + s * MIB + off)
}

/// The RID of a device (and its group peer) moves between two SMMUv3 nested HWPTs with one
/// CD and two with 2^CD_BITS CDs (all four over the same CD 0 table), around and around.
/// Untagged DMA never faults and always translates through CD 0. SSIDs 1 .. 2^CD_BITS fault
/// `Blocked` (both requests of a guard alike) or translate through their own CD (both alike);
/// where the guard's domain is known, exactly the one it must; SSID 2^CD_BITS (inside the
/// device's PASID range, outside every CD table) always faults `Blocked`. Both outcomes of
/// the SSIDs occur.
#[test]
fn vpasid_cd_table_growth_is_hitless() {
    let _serial = serial();
    let w = world();
    let g = &w.guest;
    // One table per CD, each mapping the window somewhere else.
    let tables: Vec<S1Table> = (0..CDS)
        .map(|s| {
            let mut t = S1Table::new(g, Fmt::Arm { t0sz: 16 });
            t.map(g, WINDOW, DATA_IPA + s * MIB, WINDOW_PAGES * PAGE, true);
            t
        })
        .collect();
    let small_cds = g.alloc_page();
    write_cd(g, small_cds, 0, 16, tables[0].root);
    let big_cds = g.alloc_page();
    for (s, t) in tables.iter().enumerate() {
        write_cd(g, big_cds, s as u64, 16, t.root);
    }
    // S1DSS 0 (terminate) on the one-CD STE: ignored without substreams, untagged uses CD 0.
    let small = [0, 1].map(|_| {
        w.nested(Stage1::SmmuV3 {
            ste: ste_s1(small_cds, 0, 0),
        })
    });
    let big = [0, 1].map(|_| {
        w.nested(Stage1::SmmuV3 {
            ste: ste_s1(big_cds, CD_BITS, 2),
        })
    });
    // Replace k goes to plan[k % 4]: big (odd k) and small (even k) alternate.
    let plan = [small[0], big[0], small[1], big[1]];
    let is_big = |k: u64| k % 2 == 1;
    w.iommu.device_attach(w.dev, plan[0]).unwrap();
    w.iommu.device_attach(w.peer, plan[0]).unwrap();

    const UNTAGGED: usize = 0;
    const BLOCKED: usize = 1;
    const TRANSLATED: usize = 2;
    const OUT_OF_RANGE: usize = 3;
    let reader = |h: &Device, seed: u64| {
        let h = h.clone();
        let mut rng = Rng::new(seed);
        move |i: u64, clock: &Clock, log: &mut Log| {
            // Untagged: always CD 0, whatever the domain.
            let gu = h.pin();
            log.guards += 1;
            let (off, access) = piece(&mut rng, WINDOW_PAGES, 256);
            log.expect(&gu, WINDOW + off, 256, access, via_cd(0, off));
            log.outcomes[UNTAGGED] += 1;
            drop(gu);
            // SSID s in 1 ..= CDS: two requests under one guard.
            let s = 1 + i % CDS;
            let d0 = clock.before();
            let gs = h.pin_pasid(s as u32);
            log.guards += 1;
            let offs = [
                piece(&mut rng, WINDOW_PAGES, 64),
                piece(&mut rng, WINDOW_PAGES, 64),
            ];
            let r = offs.map(|(off, access)| (off, log.translate(&gs, WINDOW + off, 64, access)));
            let exactly = clock.exactly(d0);
            drop(gs);
            let blocked = r.iter().all(|(off, x)| {
                matches!(x, Err(f) if f.kind == FaultKind::Blocked && f.iova == WINDOW + off)
            });
            let translated = r
                .iter()
                .all(|(off, x)| matches!(x, Ok(c) if c.target == via_cd(s, *off) && c.len == 64));
            let what = || format!("SSID {s}, replace {d0}.., exactly {exactly:?}: {r:x?}");
            if s == CDS {
                if blocked {
                    log.outcomes[OUT_OF_RANGE] += 1;
                } else {
                    log.wrong(what);
                }
                return;
            }
            let legal = match exactly {
                Some(k) => {
                    log.exact += 1;
                    if is_big(k) {
                        translated
                    } else {
                        blocked
                    }
                }
                None => blocked || translated,
            };
            if !legal {
                // A fault where only a translation was legal is a fault; anything else
                // (a wrong target, a guard that mixed domains) is wrong.
                if r.iter().all(|(_, x)| x.is_err()) && exactly.is_some_and(is_big) {
                    log.fault(what);
                } else {
                    log.wrong(what);
                }
            } else if blocked {
                log.outcomes[BLOCKED] += 1;
            } else {
                log.outcomes[TRANSLATED] += 1;
            }
        }
    };
    let run = drive(
        VPASID,
        [
            reader(&w.h[0], 0x9e37_79b9_7f4a_7c15),
            reader(&w.h[1], 0x2545_f491_4f6c_dd1d),
        ],
        |k| {
            let to = plan[(k % 4) as usize];
            assert_eq!(w.iommu.device_replace(w.dev, to), Ok(to));
        },
    );
    run.check(
        "vPASID",
        VPASID,
        &[
            "untagged",
            "SSID blocked",
            "SSID translated",
            "SSID >= 2^N blocked",
        ],
    );
    let o = run.outcomes();
    assert!(
        o[BLOCKED] > 0 && o[TRANSLATED] > 0,
        "both SSID outcomes must occur: {o:?}"
    );
    // The last replace holds for both devices.
    let last_big = is_big(run.replaces);
    for h in &w.h {
        let r = h
            .pin_pasid(3)
            .translate(WINDOW, 8, Access::Read)
            .map(|t| t.as_slice()[0].target);
        let want = if last_big {
            Ok(via_cd(3, 0))
        } else {
            Err(FaultKind::Blocked)
        };
        assert_eq!(r.map_err(|f| f.kind), want);
    }
}

// ---------------------------------------------------------------------------------------
// Seed case 2: S2 → S1.

/// The window every domain translates alike: IOVA = IPA through stage 1, so the stage-2 target
/// of the IPA in each.
const SAME: u64 = DATA_IPA + 4 * MIB;
const SAME_PAGES: u64 = 8;
/// A page every domain translates differently: the parent IOVA = IPA; the SMMUv3 HWPT's CD 0
/// to `SMMU_CD0`, its CD [`PASID`] to `SMMU_CDP`; the VT-d HWPT to `VTD`.
const DIFF: u64 = DATA_IPA + 8 * MIB;
const SMMU_CD0: u64 = DATA_IPA + 9 * MIB;
const SMMU_CDP: u64 = DATA_IPA + 10 * MIB;
const VTD: u64 = DATA_IPA + 11 * MIB;
/// The PASID of the PASID variant (below 2^3: the SMMUv3 HWPT has 8 CDs).
const PASID: u32 = 5;

/// Domains of the S2 → S1 tests.
const PARENT: usize = 0;
const SMMU: usize = 1;
const VT_D: usize = 2;
/// Replace k goes to `CYCLE[k % 6]` (the cycle starts on the parent): every ordered pair of
/// the three domains once a cycle.
const CYCLE: [usize; 6] = [PARENT, SMMU, VT_D, PARENT, VT_D, SMMU];

/// The three domains of the S2 → S1 tests: `[parent, smmu, vtd]`.
fn s2_s1_domains(w: &World) -> [ObjId; 3] {
    let g = &w.guest;
    let identity = |fmt: Fmt, diff: u64| {
        let mut t = S1Table::new(g, fmt);
        t.map(g, SAME, SAME, SAME_PAGES * PAGE, true);
        t.map(g, DIFF, diff, PAGE, true);
        t
    };
    let cd0 = identity(Fmt::Arm { t0sz: 16 }, SMMU_CD0);
    let cdp = identity(Fmt::Arm { t0sz: 16 }, SMMU_CDP);
    let cds = g.alloc_page();
    write_cd(g, cds, 0, 16, cd0.root);
    write_cd(g, cds, u64::from(PASID), 16, cdp.root);
    let smmu = w.nested(Stage1::SmmuV3 {
        ste: ste_s1(cds, 3, 2),
    });
    let vt = identity(Fmt::Vtd { levels: 4 }, VTD);
    let vtd = w.nested(Stage1::VtdS1 {
        pgtbl_addr: vt.root,
        addr_width: 48,
    });
    [w.parent, smmu, vtd]
}

/// The reader of the S2 → S1 tests: through `pin_pasid(pasid)` of `h`, the whole `SAME`
/// window (one chunk at its stage-2 target), a random piece of it and the `DIFF` page under
/// one guard. `DIFF` must translate to one of the three domains' targets, and to the right one
/// where the guard's domain is known. With `rid` (`Some`: a device whose RID stays on the
/// parent), one untagged request there must always be IOVA = IPA.
fn s2_s1_reader(
    h: &Device,
    pasid: u32,
    rid: Option<&Device>,
    seed: u64,
) -> impl FnMut(u64, &Clock, &mut Log) + Send {
    let h = h.clone();
    let rid = rid.cloned();
    let mut rng = Rng::new(seed);
    let diff_cd = if pasid == 0 { SMMU_CD0 } else { SMMU_CDP };
    let diff = [DIFF, diff_cd, VTD].map(s2);
    move |_: u64, clock: &Clock, log: &mut Log| {
        let d0 = clock.before();
        let g = h.pin_pasid(pasid);
        log.guards += 1;
        log.expect(&g, SAME, SAME_PAGES * PAGE, Access::Read, s2(SAME));
        let (off, access) = piece(&mut rng, SAME_PAGES, 512);
        log.expect(&g, SAME + off, 512, access, s2(SAME) + off);
        let (off, access) = piece(&mut rng, 1, 16);
        let r = log.translate(&g, DIFF + off, 16, access);
        let exactly = clock.exactly(d0);
        drop(g);
        let what = || format!("DIFF + {off:#x}, replace {d0}.., exactly {exactly:?}: {r:x?}");
        match r {
            Ok(c) => match diff.iter().position(|&t| c.target == t + off) {
                Some(d) => {
                    log.outcomes[d] += 1;
                    if let Some(k) = exactly {
                        log.exact += 1;
                        if d != CYCLE[(k % 6) as usize] {
                            log.wrong(what);
                        }
                    }
                }
                None => log.wrong(what),
            },
            Err(_) => log.fault(what),
        }
        if let Some(rid) = &rid {
            let g = rid.pin();
            log.guards += 1;
            log.expect(&g, DIFF, 64, Access::Write, s2(DIFF));
        }
    }
}

const DOMAIN_NAMES: [&str; 3] = ["parent (IOVA = IPA)", "SMMUv3", "VT-d"];

/// Seed case 2 at the RID, for a device and its group peer: parent → SMMUv3 → VT-d → parent →
/// VT-d → SMMUv3 → parent ..., every pair both ways. The identity window never faults and
/// always translates to its stage-2 target; the `DIFF` page names the domain of every guard.
#[test]
fn s2_to_s1_replace_is_hitless() {
    let _serial = serial();
    let w = world();
    let d = s2_s1_domains(&w);
    w.iommu.device_attach(w.dev, w.parent).unwrap();
    w.iommu.device_attach(w.peer, w.parent).unwrap();
    let run = drive(
        S2_S1,
        [
            s2_s1_reader(&w.h[0], 0, None, 0x9e37_79b9_7f4a_7c15),
            s2_s1_reader(&w.h[1], 0, None, 0x2545_f491_4f6c_dd1d),
        ],
        |k| {
            let to = d[CYCLE[(k % 6) as usize]];
            assert_eq!(w.iommu.device_replace(w.dev, to), Ok(to));
        },
    );
    run.check("S2 -> S1 (RID)", S2_S1, &DOMAIN_NAMES);
    assert!(
        run.outcomes()[..3].iter().all(|&n| n > 0),
        "{:?}",
        run.outcomes()
    );
}

/// Seed case 2 at PASID [`PASID`] (`device_replace_pasid`), which the device and its group
/// peer both have attached; the writer replaces from either. The SMMUv3 HWPT translates the
/// PASID with its CD [`PASID`]. The device's RID stays on the parent throughout and keeps
/// translating IOVA = IPA.
#[test]
fn s2_to_s1_pasid_replace_is_hitless() {
    let _serial = serial();
    let w = world();
    let d = s2_s1_domains(&w);
    w.iommu.device_attach(w.dev, w.parent).unwrap();
    w.iommu.device_attach_pasid(w.dev, PASID, w.parent).unwrap();
    w.iommu
        .device_attach_pasid(w.peer, PASID, w.parent)
        .unwrap();
    let run = drive(
        S2_S1_PASID,
        [
            s2_s1_reader(&w.h[0], PASID, Some(&w.h[0]), 0x9e37_79b9_7f4a_7c15),
            s2_s1_reader(&w.h[1], PASID, None, 0x2545_f491_4f6c_dd1d),
        ],
        |k| {
            let to = d[CYCLE[(k % 6) as usize]];
            let from = if k % 2 == 0 { w.dev } else { w.peer };
            assert_eq!(w.iommu.device_replace_pasid(from, PASID, to), Ok(to));
        },
    );
    run.check("S2 -> S1 (PASID)", S2_S1_PASID, &DOMAIN_NAMES);
    assert!(
        run.outcomes()[..3].iter().all(|&n| n > 0),
        "{:?}",
        run.outcomes()
    );
}
