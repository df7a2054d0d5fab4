//! Nested translation: a stage-1 table that the guest owns, in guest memory, on top of a
//! paging parent (stage 2) allocated with [`crate::HwptFlags::NEST_PARENT`].
//!
//! A DMA address goes through stage 1 (IOVA → IPA, the parent's input space), then stage 2
//! (IPA → target). Every stage-1 table read is itself an IPA: it is translated through the
//! parent's page table (read permission) and read with the caller's [`TableMemory`]. Two
//! stage-1 formats sit behind one walker interface ([`Walker`]):
//!
//! | format | file | what the walker reads |
//! | --- | --- | --- |
//! | ARM SMMUv3 | `smmuv3.rs` | the STE given at allocation; CDs at DMA time; AArch64 4 KiB-granule tables |
//! | Intel VT-d first stage | `vtd.rs` | x86-64 4- and 5-level tables |
//!
//! # The IOTLB
//!
//! A cold nested walk costs up to five stage-2 walks and as many memory reads, so finished
//! translations are cached per thread ([`iotlb`]): a small direct-mapped table in thread-local
//! storage, keyed by (nested domain, substream, region: the smaller of the two stages' leaves
//! around the IOVA, 4 KiB, 2 MiB or 1 GiB). Nothing shared is written on the
//! DMA path (G11). An entry carries the *stamp* it was filled under: the sum of the nested
//! domain's invalidation count (bumped by `hwpt_invalidate`) and the parent page table's unmap
//! count (bumped by every stage-2 unmap, after it clears). Both only grow, so an entry is
//! stale as soon as either moved; a lookup reads both counts (two shared loads, no write) and
//! uses an entry only if its stamp is the current one. The counts are read *before* a walk, so
//! an entry filled by a walk that raced with an unmap or an invalidation is already stale.
//!
//! `hwpt_invalidate` bumps the count and then fences like an unmap: when it returns, every
//! guard alive at the bump is gone, and every later lookup reads the new count (the fence's
//! store-buffer argument, [`crate::grace`]), so no stale entry is used again and no DMA that
//! used one is still in flight. A stage-2 unmap reaches every nested domain above its IOAS
//! the same way, with no invalidation from the guest.

mod iotlb;
mod smmuv3;
mod vtd;

use crate::domain::Domain;
use crate::pagetable::PageTable;
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::translation::{Chunk, ChunkVec, Fault, FaultKind, Translation};
use crate::types::{Access, PAGE_SIZE};
use std::fmt;

pub(crate) use smmuv3::Ste;
pub(crate) use vtd::VtdTable;

/// The substream ID of untagged DMA ([`crate::Device::pin`]): the data plane's "no PASID",
/// which the control plane calls [`NO_PASID`](crate::types::NO_PASID) (0). Not 0 here, because the walkers take the
/// SSID as the hardware does, and on SMMUv3 SSID 0 is a substream (CD 0) that untagged DMA
/// is not: untagged DMA follows S1DSS when S1CDMax > 0 and passes a bypass STE, where a
/// tagged access faults (`Ste::cd_index`). Real SSIDs have at most 20 bits, so `u32::MAX`
/// is none of them, and no IOTLB entry of a substream can be taken for an untagged one.
pub(crate) const UNTAGGED: u32 = u32::MAX;

/// Reads the memory behind stage-2 targets: how the library reads a guest's stage-1 tables
/// and context descriptors.
///
/// The library calls it on DMA threads, during a translation that misses the IOTLB, with the
/// target of a stage-2 translation of the table's IPA. It must not block, and should not take
/// a lock that a control call may hold. A VMM whose stage-2 targets are guest-physical
/// addresses reads its guest memory there.
pub trait TableMemory: Send + Sync + 'static {
    /// The little-endian `u64` at `target` (8-byte aligned); `None` if `target` is not memory
    /// (the translation faults `Unmapped`).
    fn read_u64(&self, target: u64) -> Option<u64>;
}

/// The guest's stage-1 configuration for a nested HWPT ([`crate::Iommu::hwpt_alloc_nested`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage1 {
    /// ARM SMMUv3: the guest's STE, words 0 and 1 (V, Config, S1Fmt, S1ContextPtr, S1CDMax;
    /// S1DSS). See [`crate::docs::nesting`] for the fields read and the values accepted.
    SmmuV3 {
        /// STE words 0 and 1.
        ste: [u64; 2],
    },
    /// Intel VT-d scalable-mode first stage: an x86-64 4-level (`addr_width` 48) or 5-level
    /// (57) table rooted at `pgtbl_addr` (an IPA, 4 KiB aligned).
    VtdS1 {
        /// The IPA of the top-level table.
        pgtbl_addr: u64,
        /// 48 (4-level) or 57 (5-level).
        addr_width: u8,
    },
}

/// What a guest tells its IOMMU it changed in its stage-1 tables
/// ([`crate::Iommu::hwpt_invalidate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// Every cached stage-1 entry and configuration.
    All,
    /// The stage-1 entries of `iova .. iova + len` (`pasid` `None`: of every PASID).
    Range {
        /// The PASID (SSID) whose entries changed, or `None` for all.
        pasid: Option<u32>,
        /// First IOVA.
        iova: u64,
        /// Length in bytes (not zero).
        len: u64,
    },
    /// A context descriptor (SMMUv3) or PASID-table entry the guest changed.
    Config {
        /// Its PASID (SSID).
        pasid: u32,
    },
}

/// A stage-1 format: finds the context of a substream and walks its table.
trait Walker {
    /// The context untagged DMA (`ssid` [`UNTAGGED`]) or substream `ssid` translates with.
    fn context(&self, ssid: u32, rd: &Reader<'_>) -> Result<Context, FaultKind>;
    /// The IPA of the page that `iova` lands on, the size mask of the stage-1 leaf that maps
    /// it (`size - 1`: 4 KiB, 2 MiB or 1 GiB) and whether stage 1 lets it be written.
    fn walk(
        &self,
        ctx: &Context,
        iova: u64,
        rd: &Reader<'_>,
    ) -> Result<(u64, u64, bool), FaultKind>;
}

/// How one substream translates, as its walker found it.
pub(crate) enum Context {
    /// Stage 1 bypassed: IOVA = IPA.
    Bypass,
    /// A table walk from `root`; the format's own parameters in `levels`/`input_bits`.
    Table {
        root: u64,
        /// First level to walk (format-specific numbering).
        level: u32,
        /// IOVA bits the table translates; higher IOVAs fault `Aperture`.
        input_bits: u32,
        /// TTB0 walks disabled (SMMUv3 EPD0): every IOVA is a translation fault.
        disabled: bool,
    },
}

/// Reads guest tables: an IPA through stage 2 (read permission), then [`TableMemory`].
pub(crate) struct Reader<'a> {
    s2: &'a PageTable,
    mem: &'a dyn TableMemory,
}

impl Reader<'_> {
    /// The `u64` at IPA `ipa`. A stage-2 miss or a target that is not memory is `Unmapped`; a
    /// stage-2 leaf without read permission is `Permission`.
    fn read(&self, ipa: u64) -> Result<u64, FaultKind> {
        let (target, readable, _, _) = self.s2.resolve(ipa).ok_or(FaultKind::Unmapped)?;
        if !readable {
            return Err(FaultKind::Permission);
        }
        self.mem.read_u64(target).ok_or(FaultKind::Unmapped)
    }
}

/// A region that both stages map linearly: `iova ..= iova | mask` goes to `target ..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// First IOVA (aligned to `mask + 1`).
    pub(crate) iova: u64,
    /// Where `iova` lands.
    pub(crate) target: u64,
    /// `size - 1`: 4 KiB, 2 MiB or 1 GiB.
    pub(crate) mask: u64,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
}

pub(crate) enum Format {
    SmmuV3(Ste),
    Vtd(VtdTable),
}

impl Format {
    /// Checks the guest's stage-1 data (`Err`: what the library cannot accept).
    pub(crate) fn parse(s1: &Stage1) -> Result<Format, &'static str> {
        match *s1 {
            Stage1::SmmuV3 { ste } => Ste::parse(ste).map(Format::SmmuV3),
            Stage1::VtdS1 {
                pgtbl_addr,
                addr_width,
            } => VtdTable::parse(pgtbl_addr, addr_width).map(Format::Vtd),
        }
    }

    fn walker(&self) -> &dyn Walker {
        match self {
            Format::SmmuV3(s) => s,
            Format::Vtd(v) => v,
        }
    }
}

/// A nested domain: the guest's stage 1 over a paging parent's page table.
pub(crate) struct NestedDomain {
    /// Process-wide unique: the IOTLB's tag (a freed domain's address may be reused).
    uid: u64,
    /// Bumped by `hwpt_invalidate`: the stage-1 half of the IOTLB stamp.
    invalidations: AtomicU64,
    /// Keeps the parent's page table (`s2`) alive.
    _parent: Arc<Domain>,
    s2: *const PageTable,
    /// A std `Arc` in every build, loom's included: the caller's memory is not part of any
    /// protocol the models check, and loom's `Arc` cannot hold a trait object.
    mem: std::sync::Arc<dyn TableMemory>,
    format: Format,
}

// SAFETY: `s2` points into `parent`, an `Arc` the domain owns, and is only read through
// `&PageTable` (which is `Sync`); everything else is `Send + Sync`.
unsafe impl Send for NestedDomain {}
// SAFETY: as above.
unsafe impl Sync for NestedDomain {}

impl NestedDomain {
    /// A nested domain over `parent` (a paging domain).
    pub(crate) fn new(
        parent: Arc<Domain>,
        format: Format,
        mem: std::sync::Arc<dyn TableMemory>,
    ) -> Self {
        // Process-wide, never reused (a plain std atomic: it is not part of any protocol).
        static UIDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let s2 = parent
            .page_table()
            .expect("a nested domain's parent is a paging domain")
            as *const PageTable;
        NestedDomain {
            uid: UIDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            invalidations: AtomicU64::new(0),
            _parent: parent,
            s2,
            mem,
            format,
        }
    }

    /// True for an SMMUv3 stage 1, whose CD table serves PASIDs the device has not attached.
    pub(crate) fn serves_substreams(&self) -> bool {
        matches!(self.format, Format::SmmuV3(_))
    }

    #[inline]
    fn s2(&self) -> &PageTable {
        // SAFETY: `s2` points into `self.parent`, which `self` keeps alive.
        unsafe { &*self.s2 }
    }

    /// Makes every cached translation of this domain stale (`hwpt_invalidate`, before its
    /// fence).
    pub(crate) fn invalidate(&self) {
        // ORDERING: [IOTLB] Release pairs with the Acquire load in `stamp`: a lookup that sees the
        // new count also sees what the guest wrote to its tables before invalidating.
        self.invalidations.fetch_add(1, Ordering::Release);
    }

    /// The current IOTLB stamp: the invalidation count plus the parent's unmap count. Both
    /// only grow, so the sum changes whenever either does.
    #[inline]
    fn stamp(&self) -> u64 {
        // ORDERING: [IOTLB] Acquire pairs with the Release increment in `invalidate`.
        let s1 = self.invalidations.load(Ordering::Acquire);
        s1.wrapping_add(self.s2().unmap_generation())
    }

    /// Translates `iova ..= last` (inside the device's aperture) for substream `ssid`.
    /// Called under a guard's pin, which keeps this domain, its parent's tables and every
    /// table node a walk reaches alive.
    pub(crate) fn translate(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        ssid: u32,
    ) -> Result<Translation<'static>, Fault> {
        // Read before any walk: an entry filled under this stamp by a walk that raced with an
        // unmap or an invalidation is stale by the time the count moved.
        let stamp = self.stamp();
        let mut chunks = ChunkVec::new();
        let mut ctx: Option<Context> = None;
        let mut cur = iova;
        loop {
            let page = cur & !(PAGE_SIZE - 1);
            let leaf = match iotlb::lookup(self.uid, ssid, page, stamp) {
                Some(hit) => hit,
                None => {
                    let leaf = self
                        .fill(page, ssid, &mut ctx)
                        .map_err(|kind| Fault { iova: cur, kind })?;
                    iotlb::insert(self.uid, ssid, stamp, &leaf);
                    leaf
                }
            };
            let allowed = match access {
                Access::Read => leaf.readable,
                Access::Write => leaf.writable,
            };
            if !allowed {
                return Err(Fault {
                    iova: cur,
                    kind: FaultKind::Permission,
                });
            }
            // The whole leaf is linear: the request runs through it in one step.
            let end = (leaf.iova | leaf.mask).min(last);
            let len = end - cur + 1;
            let target = leaf.target | (cur & leaf.mask);
            match chunks.last_mut() {
                Some(c) if c.target.checked_add(c.len) == Some(target) => c.len += len,
                _ => chunks.push(Chunk {
                    iova: cur,
                    target,
                    len,
                }),
            }
            if end == last {
                return Ok(Translation::new(chunks));
            }
            cur = end + 1;
        }
    }

    /// A full walk of the page at `page`: stage-1 context (found once per request), stage-1
    /// table, stage 2 of the result. Returns the largest region around `page` that both
    /// stages map linearly (the smaller of the two leaves) and its permissions (both stages
    /// combined).
    #[cold]
    #[inline(never)]
    fn fill(&self, page: u64, ssid: u32, ctx: &mut Option<Context>) -> Result<Leaf, FaultKind> {
        let rd = Reader {
            s2: self.s2(),
            mem: &*self.mem,
        };
        let walker = self.format.walker();
        let ctx = match ctx {
            Some(c) => c,
            None => ctx.insert(walker.context(ssid, &rd)?),
        };
        let (ipa, s1_mask, s1_writable) = match ctx {
            // Stage 1 off: the stage-2 leaf alone bounds the region.
            Context::Bypass => (page, u64::MAX, true),
            Context::Table { .. } => walker.walk(ctx, page, &rd)?,
        };
        let (target, readable, writable, s2_mask) =
            self.s2().resolve(ipa).ok_or(FaultKind::Unmapped)?;
        // Both masks are `2^k - 1` with k >= 12, and both leaves are aligned to their size in
        // IOVA, IPA and target space alike, so the smaller one lies linearly inside the larger.
        // The IOTLB keeps regions of 4 KiB, 2 MiB and 1 GiB: the largest that fits.
        let mask = iotlb::region_mask(s1_mask.min(s2_mask));
        Ok(Leaf {
            iova: page & !mask,
            target: (target & !(PAGE_SIZE - 1)) - (page & mask),
            mask,
            readable,
            writable: writable && s1_writable,
        })
    }

    /// A translation with no IOTLB (every page walked): the baseline the benchmarks compare
    /// the cache against.
    #[doc(hidden)]
    pub(crate) fn translate_uncached(
        &self,
        iova: u64,
        access: Access,
        ssid: u32,
    ) -> Result<u64, FaultKind> {
        let leaf = self.fill(iova & !(PAGE_SIZE - 1), ssid, &mut None)?;
        let allowed = match access {
            Access::Read => leaf.readable,
            Access::Write => leaf.writable,
        };
        if !allowed {
            return Err(FaultKind::Permission);
        }
        Ok(leaf.target | (iova & leaf.mask))
    }
}

impl fmt::Debug for NestedDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NestedDomain")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}
