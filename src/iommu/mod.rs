//! The control plane: the object table and every call that changes it.
//!
//! | file | what |
//! | --- | --- |
//! | `objects.rs` | the object table (IDs, HWPTs, devices, groups) and its lookups |
//! | `mapping.rs` | IOASes: `ioas_alloc`, `ioas_map`, `ioas_unmap` and the deferred unmap |
//! | `hwpt.rs` | paging HWPTs: `hwpt_alloc`, and populating a domain outside the table lock |
//! | `attach.rs` | `device_bind`, `device_attach`, `device_replace`, publish |
//! | `detach.rs` | `device_detach`, `device_detach_pasid` |
//! | `nested.rs` | nested HWPTs: `hwpt_alloc_nested`, `hwpt_invalidate` |
//! | `destroy.rs` | `destroy` |
//! | `observe.rs` | mirrors and device observers (G15): registration, who is owed an invalidation |
//!
//! # Locks
//!
//! Taken in this order, never the other way (G10):
//!
//! 1. IOAS locks, at most two at once, in ID order. The page tables' writer mutexes nest
//!    inside their IOAS's lock.
//! 2. `objects`, an `RwLock` over the object table. Read-locked for lookups (map, unmap);
//!    write-locked for bounded work only: checks and commits of attach, replace, detach,
//!    destroy, bind and the ID step of `hwpt_alloc`. Nothing waits for an IOAS's lock while
//!    holding it: a call that changes objects on an IOAS takes that IOAS's lock first, then
//!    the table's, and re-plans if the table says it needs another IOAS
//!    (`objects::with_ioas_locks`). So a map, a populate or a large unmap on one IOAS never
//!    delays a call on another (G14).
//! 3. The grace domain's registry and retired-list mutexes (leaf locks: nothing is taken
//!    under them).
//!
//! Work that grows with an IOAS (populating a new domain, clearing a large range) holds only
//! that IOAS's lock (G14): a new domain is populated first, as a *pending* member of its
//! IOAS's mirror list, and committed under the table lock afterwards; if the state changed in
//! between, the call re-plans. No lock is held while waiting for a grace period, and no lock
//! is taken on the data plane.
//!
//! # Rollback (G8)
//!
//! Every call checks everything that can fail before it changes anything visible; the commit
//! steps after the checks cannot fail. A pending domain that is not committed is discarded.
//! IDs are allocated in the commit step, so a failed call never consumes one.
//!
//! # Releasing domains
//!
//! A call collects the domains it releases (swapped out of a group, freed auto HWPTs,
//! destroyed HWPTs) and, after every lock is released, retires them to the grace domain
//! ([`crate::grace`]): a DMA guard may still use them. [`Iommu::finish`] also frees what is
//! due, so a domain's teardown never runs under a lock nor on a DMA thread.

mod attach;
mod destroy;
mod detach;
mod hwpt;
mod mapping;
mod nested;
mod objects;
mod observe;

pub use mapping::UnmapCompletion;

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::grace::{FenceMode, Garbage, Grace};
use crate::sync::{read, write, Arc, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};
use objects::{Obj, Objects, Released};
use std::fmt;

/// The IOMMU context: owns the object table. `Clone` shares it.
#[derive(Clone)]
pub struct Iommu {
    shared: Arc<Shared>,
}

struct Shared {
    objects: RwLock<Objects>,
    grace: Arc<Grace>,
    blocked: Arc<Domain>,
    /// The last [`crate::ObserverId`] handed out.
    next_observer: std::sync::atomic::AtomicU64,
    /// A copy of the object table's count of device observers, written under its write lock:
    /// an unmap reads it to skip the table (a read lock and a scan) when no device has any.
    /// An observer sees the unmaps that begin after its registration returned.
    observed: std::sync::atomic::AtomicUsize,
}

/// Counts of live objects and of the memory behind them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// IOASes with a live ID.
    pub ioas: usize,
    /// HWPTs (user and auto) with a live ID.
    pub hwpts: usize,
    /// Bound devices with a live ID.
    pub devices: usize,
    /// Groups with at least one bound device.
    pub groups: usize,
    /// Paging and nested domains whose memory is still allocated (a domain replaced away
    /// lives on until a control call finds its grace period over).
    pub live_domains: usize,
    /// Page-table nodes (roots included) allocated and not yet freed (retired nodes wait for
    /// a grace period).
    pub live_tables: usize,
    /// Retired objects (domains, batches of page-table nodes) waiting for their grace period.
    pub retired: usize,
}

impl Default for Iommu {
    fn default() -> Self {
        Iommu::new()
    }
}

impl Iommu {
    /// A new, empty IOMMU context, with the default [`FenceMode`] (symmetric).
    pub fn new() -> Iommu {
        Iommu::with_fence_mode(FenceMode::default())
    }

    /// A new, empty IOMMU context whose fences and pins share their barrier as `mode` says
    /// (see [`FenceMode`]).
    pub fn with_fence_mode(mode: FenceMode) -> Iommu {
        Iommu {
            shared: Arc::new(Shared {
                objects: RwLock::new(Objects::default()),
                grace: Arc::new(Grace::new(mode)),
                blocked: Arc::new(Domain::blocked()),
                next_observer: std::sync::atomic::AtomicU64::new(0),
                observed: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    fn objects(&self) -> RwLockReadGuard<'_, Objects> {
        read(&self.shared.objects)
    }

    fn objects_mut(&self) -> RwLockWriteGuard<'_, Objects> {
        write(&self.shared.objects)
    }

    /// `EDEADLK` if the calling thread holds a guard of this `Iommu`: a fence would wait for
    /// it (G12).
    fn check_not_pinned(&self, call: &'static str) -> Result<()> {
        if self.shared.grace.is_pinned() {
            Err(Error::Deadlock { call })
        } else {
            Ok(())
        }
    }

    /// The end of every call that released domains, with every lock released: retires them
    /// and frees whatever is due.
    fn finish(&self, released: Released) {
        let grace = &self.shared.grace;
        for domain in released.domains {
            grace.retire(Garbage::Domain(domain));
        }
        if !released.pasid.is_empty() {
            grace.retire(Garbage::Pasid(released.pasid));
        }
        // A destroyed IOAS's mirrors are told its areas left, under its lock only; its areas
        // are freed here, with no other lock held (G14).
        if let Some(ioas) = &released.ioas {
            crate::sync::lock(&ioas.state).drain_mirrors();
        }
        drop(released.ioas);
        grace.maintain();
    }

    /// Waits until every `DmaGuard` of this `Iommu` alive at the call has been dropped, then
    /// frees what was retired before the call (G9). `EDEADLK` from a thread holding a guard.
    pub fn synchronize(&self) -> Result<()> {
        self.check_not_pinned("synchronize")?;
        let grace = &self.shared.grace;
        // Empty tables that unmaps left linked are unlinked first, so this call's grace
        // period covers them too.
        self.prune_tables();
        grace.synchronize();
        grace.collect();
        grace.wait_for_frees();
        self.release_table_pools();
        Ok(())
    }

    /// Every live IOAS, for the calls that visit each one's domains.
    fn ioases(&self) -> Vec<Arc<crate::ioas::Ioas>> {
        self.objects()
            .map
            .values()
            .filter_map(|o| match o {
                Obj::Ioas(ioas) => Some(ioas.clone()),
                _ => None,
            })
            .collect()
    }

    /// Unlinks the empty tables that unmaps left linked in every domain ([`PageTable::prune`])
    /// and retires them. One IOAS lock at a time.
    ///
    /// [`PageTable::prune`]: crate::pagetable::PageTable::prune
    fn prune_tables(&self) {
        let mut retired = crate::pagetable::RetiredTables::default();
        for ioas in self.ioases() {
            let state = crate::sync::lock(&ioas.state);
            for domain in state.domains() {
                if let Some(pt) = domain.page_table() {
                    pt.prune(&mut retired);
                }
            }
        }
        if !retired.is_empty() {
            self.shared.grace.retire(Garbage::Tables(retired));
        }
    }

    /// Frees the emptied page-table nodes every live domain keeps for its next maps, so that
    /// after `synchronize` memory is back to its baseline (G9). One IOAS lock at a time, held
    /// only to copy its list of domains.
    fn release_table_pools(&self) {
        for ioas in self.ioases() {
            let domains: Vec<_> = crate::sync::lock(&ioas.state).domains().cloned().collect();
            for domain in domains {
                if let Some(pt) = domain.page_table() {
                    pt.release_pool();
                }
            }
        }
    }

    /// Frees retired memory whose grace period is over, without waiting for any guard; a VMM
    /// can call it from a housekeeping thread to keep large frees off its control path.
    /// Returns how many retired objects were freed.
    pub fn reclaim(&self) -> usize {
        let grace = &self.shared.grace;
        grace.poll();
        grace.collect()
    }

    /// The fence mode in effect (`Asymmetric` asked for where membarrier is unavailable reads
    /// `Symmetric`).
    pub fn fence_mode(&self) -> FenceMode {
        if self.shared.grace.asymmetric() {
            FenceMode::Asymmetric
        } else {
            FenceMode::Symmetric
        }
    }

    /// Live objects and memory, for accounting and leak checks.
    pub fn stats(&self) -> Stats {
        let objects = self.objects();
        let mut s = Stats {
            groups: objects.groups.len(),
            ..Stats::default()
        };
        for o in objects.map.values() {
            match o {
                Obj::Ioas(_) => s.ioas += 1,
                Obj::Hwpt(_) => s.hwpts += 1,
                Obj::Device(_) => s.devices += 1,
            }
        }
        drop(objects);
        let grace = &self.shared.grace;
        let c = &grace.counters;
        s.live_domains = c.domains.load(Ordering::Relaxed);
        s.live_tables = c.tables.load(Ordering::Relaxed);
        s.retired = grace.retired_len();
        s
    }
}

impl fmt::Debug for Iommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iommu")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(all(test, not(viommu_loom)))]
mod tests {
    use super::*;
    use crate::types::{DeviceInfo, GroupId};

    #[test]
    fn ids_run_out_with_enospc_and_are_never_reused() {
        use crate::types::{HwptFlags, Prot};
        let iommu = Iommu::new();
        iommu.objects_mut().last_id = u32::MAX - 4;
        let (dev, _handle) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .unwrap();
        let a = iommu.ioas_alloc().unwrap();
        iommu.ioas_map(a, Some(0), 0, 0x1000, Prot::RW).unwrap();
        let parent = iommu.hwpt_alloc(dev, a, HwptFlags::NEST_PARENT).unwrap();
        let b = iommu.ioas_alloc().unwrap();
        assert_eq!(
            (dev.get(), a.get(), parent.get(), b.get()),
            (u32::MAX - 3, u32::MAX - 2, u32::MAX - 1, u32::MAX)
        );
        struct NoMemory;
        impl crate::nested::TableMemory for NoMemory {
            fn read_u64(&self, _: u64) -> Option<u64> {
                None
            }
        }
        let before = iommu.stats();
        let errors = [
            iommu.ioas_alloc().unwrap_err(),
            iommu
                .device_bind(GroupId(2), DeviceInfo::default())
                .unwrap_err(),
            iommu.hwpt_alloc(dev, a, HwptFlags::empty()).unwrap_err(),
            // Attaching to an IOAS makes an auto HWPT, which needs an ID.
            iommu.device_attach(dev, a).unwrap_err(),
            iommu
                .hwpt_alloc_nested(
                    dev,
                    parent,
                    crate::nested::Stage1::SmmuV3 { ste: [0, 0] },
                    std::sync::Arc::new(NoMemory),
                )
                .unwrap_err(),
        ];
        for e in errors {
            assert!(matches!(e, Error::IdsExhausted), "{e:?}");
            assert_eq!(e.errno(), crate::errno::ENOSPC);
        }
        iommu.synchronize().unwrap();
        let after = iommu.stats();
        assert_eq!(after, before, "a failed allocation changes nothing");
        // Destroying frees the object but not its number.
        iommu.destroy(b).unwrap();
        assert!(matches!(iommu.ioas_alloc(), Err(Error::IdsExhausted)));
    }
}
