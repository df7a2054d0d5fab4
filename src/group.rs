//! Groups: devices that must share one domain.
//!
//! A group's active domain sits behind one [`ActiveCell`]: a [`DomainCell`] (an
//! `arc_swap::ArcSwap` in production) and a *generation*. Every device of the group reads it,
//! so one `swap` switches them all at the same instant (G3), and a replace is that one store:
//! the new domain is complete before it is published (G7). Each PASID the group's devices use
//! has an `ActiveCell` of its own, published the same way ([`crate::pasid`]).
//!
//! The generation names the cell's current publish: a fresh value from the `Iommu`'s counter,
//! stored after every swap, never used by any other publish of any cell of that `Iommu`. DMA
//! threads cache `(generation, domain)` per thread, so a pin that finds the generation
//! unchanged uses its cached domain without touching the cell (see [`crate::device`] for why
//! that is safe); a changed generation sends it to the cell once.

use crate::domain::Domain;
use crate::sync::{Arc, AtomicU64, DomainCell, Ordering};
use crate::types::GroupId;

/// One active-domain cell: the RID's of a group, or one PASID's.
pub(crate) struct ActiveCell {
    active: DomainCell<Domain>,
    generation: AtomicU64,
}

impl ActiveCell {
    /// A cell holding `domain` under `generation` (fresh from the `Iommu`'s counter).
    pub(crate) fn new(domain: Arc<Domain>, generation: u64) -> ActiveCell {
        ActiveCell {
            active: DomainCell::new(domain),
            generation: AtomicU64::new(generation),
        }
    }

    /// Publishes `domain` (one atomic swap, then the new generation) and returns the domain
    /// it replaced, which the caller must retire rather than drop: readers may still use it.
    /// Publishes of one cell are serialized by the control plane's object-table lock.
    pub(crate) fn publish(&self, domain: Arc<Domain>, generation: u64) -> Arc<Domain> {
        let old = self.active.swap(domain);
        // ORDERING: [GENERATION] Release pairs with the Acquire load in `generation`: a reader that
        // sees the new generation then loads the cell and finds the new domain (or a newer one).
        self.generation.store(generation, Ordering::Release);
        old
    }

    /// The current generation.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        // ORDERING: [GENERATION] Acquire pairs with the Release store in `publish`.
        self.generation.load(Ordering::Acquire)
    }

    /// The current domain's address. The caller holds a guard's grace-period pin, taken before
    /// this call, for as long as it uses the address.
    #[inline]
    pub(crate) fn active_ptr(&self) -> *const Domain {
        self.active.load_ptr()
    }
}

/// The part of a group that DMA threads read; shared by the group's `Device` handles.
pub(crate) struct GroupShared {
    pub(crate) id: GroupId,
    /// The RID's (untagged DMA's) cell.
    pub(crate) rid: ActiveCell,
    /// The way of the per-thread snapshot cache this group uses (groups of one `Iommu` take
    /// the ways in turn, so up to `CACHE_WAYS` groups never evict each other); PASID `p` of
    /// the group uses the way `p` after it.
    pub(crate) cache_way: usize,
}

impl GroupShared {
    pub(crate) fn new(id: GroupId, blocked: Arc<Domain>, generation: u64) -> GroupShared {
        GroupShared {
            id,
            rid: ActiveCell::new(blocked, generation),
            cache_way: (generation % crate::grace::CACHE_WAYS as u64) as usize,
        }
    }
}
