//! Support code for viommu's loom models; the models themselves live in `tests/`.
//!
//! Everything here exists only under `--cfg viommu_loom` (`scripts/loom.sh` sets it), so a
//! normal `cargo test --workspace` builds this crate to nothing. See `docs/loom.md` for what
//! the models check and how to run them.

#![cfg(viommu_loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use viommu::{Access, Device, DeviceInfo, FaultKind, GroupId, Iommu, ObjId, Prot, Stats};

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set. loom's own default is
/// unbounded, which no model here finishes in reasonable time.
pub const DEFAULT_PREEMPTIONS: usize = 3;

/// Scheduling points allowed in one execution when `LOOM_MAX_BRANCHES` is not set. Every
/// atomic operation is one, set-up and teardown included, and a model here runs a few
/// thousand (each control call pins, locks and walks tables; each fence spins on the epoch);
/// loom's default of 1000 is sized for smaller models. A livelocked spin still hits it.
pub const DEFAULT_BRANCHES: usize = 20_000;

/// Address width of every model's devices: 16 bits are two levels of loom-sized (4-entry)
/// tables, each level-1 entry covering four 4 KiB pages (16 KiB).
pub const IOVA_BITS: u8 = 16;

/// One 4 KiB page.
pub const PAGE: u64 = 0x1000;

/// The page most models map, and where it goes.
pub const IOVA: u64 = 0x1000;
/// See [`IOVA`].
pub const TARGET: u64 = 0x10_0000;

/// Runs `f` under loom's model checker with the preemption bound from `LOOM_MAX_PREEMPTIONS`
/// (default [`DEFAULT_PREEMPTIONS`]), and prints how many executions it explored.
pub fn model<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = DEFAULT_BRANCHES;
    }
    let bound = builder.preemption_bound;
    // A plain std counter: it lives outside the model and is not part of what loom explores.
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let count = executions.clone();
    let start = Instant::now();
    builder.check(move || {
        count.fetch_add(1, Ordering::Relaxed);
        f();
    });
    println!(
        "loom model {name}: {} executions, preemption bound {}, {:.1?}",
        executions.load(Ordering::Relaxed),
        bound.map_or_else(|| "none".to_string(), |b| b.to_string()),
        start.elapsed(),
    );
}

/// A loom-sized device: an [`IOVA_BITS`] aperture, nothing reserved.
pub fn info() -> DeviceInfo {
    DeviceInfo {
        iova_bits: IOVA_BITS,
        ..DeviceInfo::default()
    }
}

/// Binds a loom-sized device ([`info`]) into group `group`.
pub fn bind(iommu: &Iommu, group: u32) -> (ObjId, Device) {
    iommu.device_bind(GroupId(group), info()).unwrap()
}

/// A new IOAS that maps the page at `iova` to `target`, read-write.
pub fn ioas_with_page(iommu: &Iommu, iova: u64, target: u64) -> ObjId {
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(iova), target, PAGE, Prot::RW)
        .unwrap();
    ioas
}

/// The set-up of most models: a loom-sized device of group 1 attached (through an auto HWPT)
/// to a new IOAS that maps the page at `iova` to `target`. Returns `(dev_id, dev, ioas)`.
pub fn device_on_page(iommu: &Iommu, iova: u64, target: u64) -> (ObjId, Device, ObjId) {
    let (dev_id, dev) = bind(iommu, 1);
    let ioas = ioas_with_page(iommu, iova, target);
    iommu.device_attach(dev_id, ioas).unwrap();
    (dev_id, dev, ioas)
}

/// A device's view of one page: the target it translates to for a read, or the fault kind.
pub fn target_of(dev: &Device, iova: u64) -> Result<u64, FaultKind> {
    let guard = dev.pin();
    page_target(&guard, iova)
}

/// One page through an existing guard: the single chunk's target, or the fault kind. Panics
/// if the translation is not exactly one whole page (a torn or merged result).
pub fn page_target(guard: &viommu::DmaGuard<'_>, iova: u64) -> Result<u64, FaultKind> {
    match guard.translate(iova, PAGE, Access::Read) {
        Ok(t) => {
            let chunks = t.as_slice();
            assert_eq!(
                chunks.len(),
                1,
                "one page translates to one chunk: {chunks:?}"
            );
            assert_eq!(
                chunks[0].iova, iova,
                "chunk starts at the request: {chunks:?}"
            );
            assert_eq!(chunks[0].len, PAGE, "chunk covers the page: {chunks:?}");
            Ok(chunks[0].target)
        }
        Err(f) => {
            assert_eq!(f.iova, iova, "fault names the requested page: {f:?}");
            Err(f.kind)
        }
    }
}

/// What a guard made after a reader looked at a fence's flag sees (`r`): with the flag up
/// (`fenced`: the fencing call, `what`, had returned) exactly `fault`; before, the old `target`
/// or `fault`.
#[track_caller]
pub fn assert_after_fence(
    r: Result<u64, FaultKind>,
    fenced: bool,
    target: u64,
    fault: FaultKind,
    what: &str,
) {
    if fenced {
        assert_eq!(r, Err(fault), "a guard made after {what} returned");
    } else {
        assert!(r == Ok(target) || r == Err(fault), "{r:x?}");
    }
}

/// Waits for every guard and frees everything retired, then returns the counts.
pub fn settled(iommu: &Iommu) -> Stats {
    iommu
        .synchronize()
        .expect("no guard held by the model thread");
    iommu.stats()
}

/// After a grace period, asserts that `(live_domains, live_tables)` is `want`; `what` says why.
#[track_caller]
pub fn assert_live(iommu: &Iommu, want: (usize, usize), what: &str) {
    let s = settled(iommu);
    assert_eq!((s.live_domains, s.live_tables), want, "{what}: {s:?}");
}

/// Asserts that nothing is left: no paging domain and no page-table node is still allocated.
/// Call after every device is detached and every HWPT destroyed.
pub fn assert_nothing_live(iommu: &Iommu) {
    let s = settled(iommu);
    assert_eq!(s.hwpts, 0, "every HWPT is gone: {s:?}");
    assert_eq!(s.live_domains, 0, "every domain is freed: {s:?}");
    assert_eq!(s.live_tables, 0, "every page-table node is freed: {s:?}");
}

/// A guest's stage-1 table page for the nesting models: `WORDS` little-endian words at the
/// stage-2 target `base`, read by the library through [`viommu::TableMemory`].
///
/// The words are atomics (a guest writes its tables while DMA walks them, as real guest
/// memory allows), read `Relaxed` so that only the library's own orderings can make a
/// guest's write visible to a walk. Every read also touches `page`, a loom-tracked cell, so
/// that a walk reading the page after the guest reused it ([`TablePage::reuse`]) without a
/// happens-before edge is a loom failure.
pub struct TablePage {
    base: u64,
    words: [loom::sync::atomic::AtomicU64; TablePage::WORDS],
    page: loom::cell::UnsafeCell<u64>,
}

// SAFETY: `page` is only accessed through loom's `with`/`with_mut`, which loom checks for
// races (that is the point); the words are atomics.
unsafe impl Sync for TablePage {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for TablePage {}

impl TablePage {
    /// Words in the page.
    pub const WORDS: usize = 2;

    /// A page at stage-2 target `base` holding `words`.
    pub fn new(base: u64, words: [u64; TablePage::WORDS]) -> TablePage {
        TablePage {
            base,
            words: words.map(loom::sync::atomic::AtomicU64::new),
            page: loom::cell::UnsafeCell::new(0),
        }
    }

    /// The guest writes word `index` (`Relaxed`, as above).
    pub fn set(&self, index: usize, value: u64) {
        self.words[index].store(value, loom::sync::atomic::Ordering::Relaxed);
    }

    /// The guest reuses the page for something else (a tracked write).
    pub fn reuse(&self) {
        // SAFETY: a write through loom's cell; loom checks it against every walk's read.
        self.page.with_mut(|p| unsafe { *p += 1 });
    }
}

impl viommu::TableMemory for TablePage {
    fn read_u64(&self, target: u64) -> Option<u64> {
        let index = usize::try_from(target.checked_sub(self.base)? / 8).ok()?;
        let word = self.words.get(index)?;
        // SAFETY: a read through loom's cell; loom checks it against `reuse`.
        self.page.with(|p| unsafe { *p });
        Some(word.load(loom::sync::atomic::Ordering::Relaxed))
    }
}
