//! The implementations every scenario runs against, behind one trait.
//!
//! Each implementation serves one device (one endpoint) and owns two domains, 0 and 1, both
//! mapping the same IOVAs ([`Layout`]) to different targets, so a reader can tell which domain
//! translated its request and a switch between the domains must never make a mapped IOVA
//! fault. Domain 0 is active after construction.
//!
//! | kind | translation | switch (replace) |
//! | --- | --- | --- |
//! | `viommu` | `Device::translate` (one pin per translation) | `device_replace` |
//! | `viommu-guard64` | one `Device::pin()` per block of 64, `DmaGuard::translate` | `device_replace` |
//! | `detach+attach` | `Device::translate` | `device_detach` + `device_attach` |
//! | `rwlock-btree` | read locks of an endpoint map and a domain map, `BTreeMap` lookup | write-lock the endpoint map, change the domain id |
//! | `vm-memory-iotlb` | vm-memory's `Iotlb` behind an `RwLock`, misses filled from the domain | invalidate the whole IOTLB |
//! | `mutex-radix` | `Mutex` around a plain radix walk | swap the active table under the mutex |
//! | `crossbeam-epoch` | `crossbeam_epoch::pin()`, one Acquire load, plain radix walk | store the other domain's table pointer (map/unmap: copy-on-write, `defer_destroy`) |
//! | `unsync-radix` | plain radix walk, plain loads, no guard | none: no writer is possible |
//!
//! Scenarios are generic over [`Translator`] (monomorphized by [`with_translator!`]), so no
//! implementation pays for dynamic dispatch.

pub mod btree;
pub mod ch_virtio;
pub mod epoch_radix;
pub mod iotlb;
pub mod mutex_radix;
// Shared with the criterion bench `nested` and `examples/hot_path.rs` (`#[path]` include).
#[allow(dead_code)]
pub mod nested_world;
pub mod two_domains;
// Shared with the criterion benches (`#[path]` include); each user needs only part of it.
#[allow(dead_code)]
pub mod radix;
pub mod unsync;
pub mod viommu_api;
pub mod vm_iommu;

use std::fmt;
use viommu::{Access, FaultKind};

/// Index of one of the two domains (0 or 1).
pub type DomainIdx = usize;

/// 4 KiB.
pub const PAGE: u64 = 4096;
/// 2 MiB.
pub const PAGE_2M: u64 = 2 << 20;
/// Where the readers' pages start (2 MiB aligned).
pub const IOVA_BASE: u64 = 0x1000_0000;
/// Targets of domain 0 and domain 1. Each is 4 KiB aligned but deliberately not 2 MiB
/// aligned, so page tables hold 4 KiB leaves and every walk goes the full four levels.
pub const TARGETS: [u64; 2] = [0x40_0000_1000, 0x80_0000_1000];
/// The IOVA window the map/unmap writers use (1 GiB aligned, far from the readers' pages).
pub const SCRATCH_IOVA: u64 = 1 << 40;
/// Where scratch mappings point (1 GiB aligned, so 2 MiB scratch mappings get 2 MiB leaves).
pub const SCRATCH_TARGET: u64 = 0xc0_0000_0000;
/// Bytes each reader request translates (inside one page).
pub const REQ_LEN: u64 = 512;

/// What the two domains map: `pages` 4 KiB pages from [`IOVA_BASE`], one map call a page
/// (as a guest's DMA API maps buffer by buffer), domain `d` pointing at `TARGETS[d]`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// 4 KiB pages mapped in each domain.
    pub pages: u64,
}

impl Layout {
    /// The map calls of domain `d`: `(iova, target, len)`.
    pub fn mappings(&self, d: DomainIdx) -> impl Iterator<Item = (u64, u64, u64)> {
        let target = TARGETS[d];
        (0..self.pages).map(move |i| (IOVA_BASE + i * PAGE, target + i * PAGE, PAGE))
    }

    /// A random request IOVA: a random page, a random 512-byte-aligned offset inside it.
    #[inline]
    pub fn random_iova(&self, rng: &mut crate::stats::Rng) -> u64 {
        let r = rng.next_u64();
        let page = ((u128::from(r) * u128::from(self.pages)) >> 64) as u64;
        IOVA_BASE + page * PAGE + (r & (PAGE - REQ_LEN) & !(REQ_LEN - 1))
    }

    /// Which domain translated `iova` to `target`, if any did.
    #[inline]
    pub fn domain_of(&self, iova: u64, target: u64) -> Option<DomainIdx> {
        let off = iova.wrapping_sub(IOVA_BASE);
        if target == TARGETS[0].wrapping_add(off) {
            Some(0)
        } else if target == TARGETS[1].wrapping_add(off) {
            Some(1)
        } else {
            None
        }
    }
}

/// A control operation that failed or that an implementation cannot do.
#[derive(Debug)]
pub enum OpError {
    /// This implementation has no such operation (the unsynchronized table has no writer).
    Unsupported,
    /// The operation failed.
    Failed(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Unsupported => f.write_str("not supported by this baseline"),
            OpError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for OpError {}

/// One device's translation and the control operations the scenarios drive.
pub trait Translator: Send + Sync + 'static {
    /// Translates `len` bytes at `iova` for `access`; returns the target of `iova`.
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind>;

    /// Translates a block of requests, one result each. The default calls [`translate`] per
    /// request; an implementation with a cheaper batched form overrides it.
    ///
    /// [`translate`]: Translator::translate
    #[inline]
    fn translate_block(
        &self,
        iovas: &[u64],
        len: u64,
        access: Access,
        out: &mut [Result<u64, FaultKind>],
    ) {
        translate_each(self, iovas, len, access, out);
    }

    /// Switches the device to domain `to`.
    fn replace(&self, to: DomainIdx) -> Result<(), OpError>;

    /// Maps `len` bytes at `iova` to `target` (read + write) in domain `dom`.
    fn map(&self, dom: DomainIdx, iova: u64, target: u64, len: u64) -> Result<(), OpError>;

    /// Unmaps `len` bytes at `iova` from domain `dom`; returns when the implementation's
    /// fence (if it has one) says no reader can still use the old translation.
    fn unmap(&self, dom: DomainIdx, iova: u64, len: u64) -> Result<(), OpError>;

    /// Maps and unmaps each `(iova, target)` of `slots` in turn, `len` bytes each, in domain
    /// `dom`, and returns once every unmap's fence has completed. viommu unmaps with
    /// `ioas_unmap_deferred` and waits on the last completion only (one grace period for the
    /// batch), as a front end completing a queue of UNMAP requests does; the others map and
    /// unmap each pair in turn, which is all they can do.
    ///
    /// Returns how many earlier unmaps of the batch were not complete once the last one was
    /// (0 unless batching is broken).
    fn map_unmap_batch(
        &self,
        dom: DomainIdx,
        slots: &[(u64, u64)],
        len: u64,
    ) -> Result<u64, OpError> {
        for &(iova, target) in slots {
            self.map(dom, iova, target, len)?;
            self.unmap(dom, iova, len)?;
        }
        Ok(0)
    }

    /// Frees whatever the implementation retired but has not freed yet (viommu:
    /// `Iommu::synchronize`), so a memory measurement sees only live state.
    fn quiesce(&self) {}
}

/// One [`Translator::translate`] per request: the default [`Translator::translate_block`],
/// callable by an implementation that overrides it for some configurations only.
#[inline]
pub fn translate_each<T: Translator + ?Sized>(
    t: &T,
    iovas: &[u64],
    len: u64,
    access: Access,
    out: &mut [Result<u64, FaultKind>],
) {
    for (o, &iova) in out.iter_mut().zip(iovas) {
        *o = t.translate(iova, len, access);
    }
}

/// The implementations, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// viommu: one-shot `Device::translate`, `device_replace`.
    Viommu,
    /// viommu: one `DmaGuard` per block of 64 translations.
    ViommuGuard,
    /// viommu switched with `device_detach` + `device_attach` instead of `device_replace`.
    DetachAttach,
    /// `RwLock`ed endpoint and domain `BTreeMap`s.
    RwLockBTree,
    /// vm-memory's `Iotlb` behind an `RwLock`.
    Iotlb,
    /// A `Mutex` around the plain radix table.
    MutexRadix,
    /// The plain radix table published through crossbeam-epoch (copy-on-write writers).
    Epoch,
    /// The plain radix walk with no synchronization (no writer).
    Unsync,
}

impl Kind {
    /// Every implementation, in report order.
    pub const ALL: [Kind; 8] = [
        Kind::Viommu,
        Kind::ViommuGuard,
        Kind::DetachAttach,
        Kind::RwLockBTree,
        Kind::Iotlb,
        Kind::MutexRadix,
        Kind::Epoch,
        Kind::Unsync,
    ];

    /// The name tables and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Viommu => "viommu",
            Kind::ViommuGuard => "viommu-guard64",
            Kind::DetachAttach => "detach+attach",
            Kind::RwLockBTree => "rwlock-btree",
            Kind::Iotlb => "vm-memory-iotlb",
            Kind::MutexRadix => "mutex-radix",
            Kind::Epoch => "crossbeam-epoch",
            Kind::Unsync => "unsync-radix",
        }
    }

    /// False for the implementation that cannot have a concurrent writer.
    pub fn has_writer(self) -> bool {
        self != Kind::Unsync
    }
}

/// Builds the [`Translator`] of `$kind` over `$layout` as `$t: Arc<Concrete>` and evaluates
/// `$body` with it; each arm is compiled for its concrete type.
macro_rules! with_translator {
    ($kind:expr, $layout:expr, |$t:ident| $body:expr) => {{
        use std::sync::Arc;
        use $crate::baselines::{
            btree, epoch_radix, iotlb, mutex_radix, unsync, viommu_api as vi, Kind,
        };
        let layout: &$crate::baselines::Layout = $layout;
        let kind: Kind = $kind;
        match kind {
            Kind::Viommu | Kind::ViommuGuard | Kind::DetachAttach => {
                let flavor = vi::Flavor::of(kind).expect("a viommu kind");
                let $t = Arc::new(vi::ViommuTranslator::new(layout, flavor));
                $body
            }
            Kind::RwLockBTree => {
                let $t = Arc::new(btree::RwLockBTree::new(layout));
                $body
            }
            Kind::Iotlb => {
                let $t = Arc::new(iotlb::IotlbIommu::new(layout));
                $body
            }
            Kind::MutexRadix => {
                let $t = Arc::new(mutex_radix::MutexRadix::new(layout));
                $body
            }
            Kind::Epoch => {
                let $t = Arc::new(epoch_radix::EpochRadix::new(layout));
                $body
            }
            Kind::Unsync => {
                let $t = Arc::new(unsync::UnsyncRadix::new(layout));
                $body
            }
        }
    }};
}
pub(crate) use with_translator;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Rng;
    use std::sync::Arc;

    fn check<T: Translator>(t: Arc<T>, kind: Kind, layout: &Layout) {
        let name = kind.name();
        let iova = IOVA_BASE + 3 * PAGE + 512;
        assert_eq!(
            t.translate(iova, REQ_LEN, Access::Read),
            Ok(TARGETS[0] + 3 * PAGE + 512),
            "{name}"
        );
        // A request that spans two mapped pages.
        assert_eq!(
            t.translate(IOVA_BASE + PAGE - 8, 16, Access::Write),
            Ok(TARGETS[0] + PAGE - 8),
            "{name}"
        );
        let past = IOVA_BASE + layout.pages * PAGE;
        assert_eq!(
            t.translate(past, 8, Access::Read),
            Err(FaultKind::Unmapped),
            "{name}"
        );
        let mut out = [Ok(0); 4];
        t.translate_block(&[iova, past, iova, iova], 8, Access::Read, &mut out);
        assert_eq!(out[1], Err(FaultKind::Unmapped), "{name}");
        assert_eq!(out[3], Ok(TARGETS[0] + 3 * PAGE + 512), "{name}");
        let mut rng = Rng::new(7);
        for _ in 0..100 {
            let iova = layout.random_iova(&mut rng);
            assert!(iova % REQ_LEN == 0 && (iova % PAGE) + REQ_LEN <= PAGE);
            let target = t.translate(iova, REQ_LEN, Access::Read).unwrap();
            assert_eq!(layout.domain_of(iova, target), Some(0), "{name}");
        }
        if !kind.has_writer() {
            assert!(matches!(t.replace(1), Err(OpError::Unsupported)));
            assert!(matches!(
                t.map(0, SCRATCH_IOVA, SCRATCH_TARGET, PAGE),
                Err(OpError::Unsupported)
            ));
            return;
        }
        t.replace(1).unwrap();
        assert_eq!(
            t.translate(iova, REQ_LEN, Access::Read),
            Ok(TARGETS[1] + 3 * PAGE + 512),
            "{name}"
        );
        t.replace(0).unwrap();
        for len in [PAGE, PAGE_2M] {
            t.map(0, SCRATCH_IOVA, SCRATCH_TARGET, len).unwrap();
            assert_eq!(
                t.translate(SCRATCH_IOVA + len - 8, 8, Access::Read),
                Ok(SCRATCH_TARGET + len - 8),
                "{name}"
            );
            t.unmap(0, SCRATCH_IOVA, len).unwrap();
            assert_eq!(
                t.translate(SCRATCH_IOVA, 8, Access::Read),
                Err(FaultKind::Unmapped),
                "{name}"
            );
        }
        let slots: Vec<(u64, u64)> = (0..3)
            .map(|i| (SCRATCH_IOVA + i * PAGE, SCRATCH_TARGET + i * PAGE))
            .collect();
        assert_eq!(t.map_unmap_batch(0, &slots, PAGE).unwrap(), 0, "{name}");
        assert_eq!(
            t.translate(SCRATCH_IOVA + PAGE, 8, Access::Read),
            Err(FaultKind::Unmapped),
            "{name}"
        );
        t.quiesce();
    }

    #[test]
    fn every_baseline_translates_switches_maps_and_unmaps() {
        let layout = Layout { pages: 64 };
        for kind in Kind::ALL {
            with_translator!(kind, &layout, |t| check(t, kind, &layout));
        }
    }
}
