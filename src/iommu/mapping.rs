//! IOASes: allocation, map, unmap (with its fence, G5) and the deferred unmap whose fences a
//! front end batches.

use super::objects::Obj;
use super::Iommu;
use crate::error::{Error, Result};
use crate::grace::{Garbage, Grace, Ticket};
use crate::ioas::{check_range_args, Budget, BudgetUsage, Ioas};
use crate::observers::{deliver, Acks};
use crate::pagetable::RetiredTables;
use crate::sync::{lock, Arc};
use crate::types::{ObjId, Prot};
use std::fmt;

/// The fence of an unmap that returned before it: see [`Iommu::ioas_unmap_deferred`].
///
/// Completes once every `DmaGuard` that might have translated into the unmapped range has been
/// dropped (G5 then holds for the range) and every device observer told of the unmap has
/// acknowledged (G15). Many completions are settled by one grace period: waiting for the last
/// of a batch completes the ones before it.
#[must_use = "an unmap's fence has completed only once `wait` returns or `is_complete` is true"]
pub struct UnmapCompletion {
    grace: Arc<Grace>,
    ticket: Ticket,
    bytes: u64,
    /// The device observers' acknowledgments still to come.
    acks: Acks,
}

impl UnmapCompletion {
    /// The bytes the unmap removed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True once the fence has completed and every device observer has answered (or can no
    /// longer). Never waits (one bump of the epoch and one pass over the guard slots at most).
    pub fn is_complete(&self) -> bool {
        self.grace.is_done(self.ticket) && self.acks.settled()
    }

    /// Waits for the fence and frees what it covered; returns the bytes unmapped. It waits
    /// only for the guards that were alive when the unmap cleared the range: a guard made
    /// after `ioas_unmap_deferred` returned never delays it. `EDEADLK` if the fence has not
    /// completed and the calling thread holds a guard of this `Iommu` made before the unmap.
    /// `ETIMEDOUT` if a device observer did not acknowledge within its deadline
    /// ([`Iommu::device_add_observer_with_deadline`]; the range is unmapped all the same).
    pub fn wait(self) -> Result<u64> {
        if !self.grace.is_done(self.ticket) {
            if self.grace.is_pinned_before(self.ticket) {
                return Err(Error::Deadlock {
                    call: "UnmapCompletion::wait",
                });
            }
            self.grace.wait_for(self.ticket);
        }
        self.grace.collect();
        self.acks.wait()?;
        Ok(self.bytes)
    }
}

impl fmt::Debug for UnmapCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnmapCompletion")
            .field("bytes", &self.bytes)
            .field("complete", &self.is_complete())
            .finish()
    }
}

impl Iommu {
    /// Allocates an empty IOAS. `ENOSPC` when object IDs are exhausted.
    pub fn ioas_alloc(&self) -> Result<ObjId> {
        let mut objects = self.objects_mut();
        objects.check_id_available()?;
        let id = objects.alloc_id();
        objects.map.insert(id, Obj::Ioas(Arc::new(Ioas::new(id))));
        Ok(id)
    }

    /// Sets what maps may make the library allocate for `ioas` ([`Budget`]): past it,
    /// [`Iommu::ioas_map`] fails with `ENOMEM` ([`Error::BudgetExceeded`]) and changes
    /// nothing, and so does an attach or `hwpt_alloc` whose new domain would take the IOAS's
    /// page tables past it. What the IOAS already uses stays. A new IOAS's budget is
    /// unlimited. `ENOENT` / `EINVAL` if `ioas` is not an IOAS.
    pub fn ioas_set_budget(&self, ioas: ObjId, budget: Budget) -> Result<()> {
        let ioas = self.lookup_ioas(ioas)?;
        let mut state = lock(&ioas.state);
        if state.destroyed {
            return Err(Error::NoSuchObject { id: ioas.id });
        }
        state.set_budget(budget);
        Ok(())
    }

    /// What `ioas` uses of its budget now: areas, and page-table bytes over its domains.
    pub fn ioas_usage(&self, ioas: ObjId) -> Result<BudgetUsage> {
        let ioas = self.lookup_ioas(ioas)?;
        let state = lock(&ioas.state);
        if state.destroyed {
            return Err(Error::NoSuchObject { id: ioas.id });
        }
        Ok(state.usage())
    }

    /// The IOAS named `id` (a read-locked lookup: never waits behind a populate).
    pub(super) fn lookup_ioas(&self, id: ObjId) -> Result<Arc<Ioas>> {
        self.objects().ioas(id).cloned()
    }

    /// Maps `len` bytes at `target` into `ioas`, at `iova` or (with `None`) at a free IOVA
    /// aligned for huge leaves; returns the IOVA. Every domain of the IOAS holds the mapping
    /// when this returns.
    ///
    /// `ENOMEM` if the map could take the IOAS past its budget ([`Iommu::ioas_set_budget`]);
    /// nothing changes then.
    pub fn ioas_map(
        &self,
        ioas: ObjId,
        iova: Option<u64>,
        target: u64,
        len: u64,
        prot: Prot,
    ) -> Result<u64> {
        let ioas = self.lookup_ioas(ioas)?;
        check_range_args("map", iova.unwrap_or(0), Some(target), len)?;
        if prot.bits() == 0 {
            return Err(Error::NoPermission { prot });
        }
        let mut state = lock(&ioas.state);
        if state.destroyed {
            return Err(Error::NoSuchObject { id: ioas.id });
        }
        state.map(iova, target, len, prot)
    }

    /// Unmaps every area inside `iova .. iova + len` (whole areas only; `(0, u64::MAX)`
    /// unmaps everything) and returns the bytes unmapped. When it returns, no DMA guard that
    /// could have translated into the range is alive (G5), and the page-table nodes it emptied
    /// are freed. Every mirror of the IOAS has been told to unmap each removed area, and every
    /// observer of a device attached to a domain on the IOAS has acknowledged its invalidation
    /// (G15; `ETIMEDOUT` if one did not in time: the range is unmapped all the same).
    ///
    /// `ENOENT` / `EINVAL` for an `ioas` that is not an IOAS and `EINVAL` / `EOVERFLOW` for a
    /// malformed range come first; then `EDEADLK` if the calling thread holds a guard of this
    /// `Iommu`.
    pub fn ioas_unmap(&self, ioas: ObjId, iova: u64, len: u64) -> Result<u64> {
        // Argument errors first (`ENOENT`, `EINVAL`): a call that makes them never waits.
        let ioas = self.lookup_ioas(ioas)?;
        if !(iova == 0 && len == u64::MAX) {
            check_range_args("unmap", iova, None, len)?;
        }
        self.check_not_pinned("ioas_unmap")?;
        let (bytes, ticket, acks) = self.unmap_begin(ioas, iova, len)?;
        if bytes > 0 {
            let grace = &self.shared.grace;
            grace.wait_for(ticket);
            grace.collect();
        }
        acks.wait()?;
        Ok(bytes)
    }

    /// [`Iommu::ioas_unmap`] without waiting for the fence: the range is gone from every domain
    /// when this returns (no guard made from now on translates into it), and the returned
    /// completion says when the guards that might have translated into it are gone too.
    ///
    /// A front end that completes a queue of UNMAP requests unmaps them all this way and waits
    /// for the last completion: one grace period for the batch. Never `EDEADLK` (it does not
    /// wait); [`UnmapCompletion::wait`] may be.
    pub fn ioas_unmap_deferred(&self, ioas: ObjId, iova: u64, len: u64) -> Result<UnmapCompletion> {
        let (bytes, ticket, acks) = self.unmap_begin(self.lookup_ioas(ioas)?, iova, len)?;
        Ok(UnmapCompletion {
            grace: self.shared.grace.clone(),
            ticket,
            bytes,
            acks,
        })
    }

    /// Clears the range from the IOAS, its domains and its mirrors, tells the device
    /// observers, and starts its fence.
    fn unmap_begin(&self, ioas: Arc<Ioas>, iova: u64, len: u64) -> Result<(u64, Ticket, Acks)> {
        let mut retired = RetiredTables::default();
        let (bytes, notices) = {
            let mut state = lock(&ioas.state);
            if state.destroyed {
                return Err(Error::NoSuchObject { id: ioas.id });
            }
            let bytes = state.unmap(iova, len, &mut retired)?;
            // Under the IOAS's lock (taken before the table's, G10): no device can move on or
            // off the IOAS meanwhile, so every device that could have seen the range is found.
            let notices = if bytes > 0 && self.any_observed() {
                let last = if len == u64::MAX {
                    u64::MAX
                } else {
                    iova + (len - 1)
                };
                self.objects().unmap_notices(ioas.id, iova..=last)
            } else {
                Vec::new()
            };
            (bytes, notices)
        };
        // After every lock (G14); their replies overlap the fence.
        let acks = deliver(notices);
        let grace = &self.shared.grace;
        // After the clear: guards made from now on do not see the old entries.
        let ticket = grace.ticket();
        if !retired.is_empty() {
            grace.retire_under(ticket, Garbage::Tables(retired));
        }
        Ok((bytes, ticket, acks))
    }
}
