//! The plain radix table published through crossbeam-epoch: what a lock-free translator built
//! from the standard Rust epoch crate looks like, next to viommu's own grace periods.
//!
//! Each domain's current table is a `crossbeam_epoch::Atomic<Radix>`, and so is the device's
//! active table (an alias of one domain's current version). A translation runs under
//! `crossbeam_epoch::pin()`: it loads the device's table (Acquire) and walks it with plain
//! loads. A replace stores the other domain's current version into the device pointer;
//! nothing is freed, as the domains stay allocated (like viommu's prebuilt HWPTs). A map or
//! unmap is copy-on-write: the writer (writers are serialized by a mutex) clones the whole
//! table, changes the copy, publishes it in the domain (and in the device pointer when the
//! domain is active), and hands the old version to `Guard::defer_destroy`; crossbeam frees
//! it once every thread pinned at the time has unpinned. Whole-table copies keep the walk the
//! same plain walk as `unsync-radix` and `mutex-radix`; they make a map cost a copy of every
//! table of the domain, which only the writer pays.
//!
//! Why `Atomic<Radix>` + `Owned` and not `arc_swap::ArcSwap<Radix>`: the epoch pin already
//! protects everything a reader loads, so an `ArcSwap` load under it would add a second
//! protection scheme (arc-swap's debt slot and its thread-local lookup) to every translation
//! and the row would measure two reclamation schemes instead of crossbeam-epoch. With
//! `Atomic` the reader does exactly one pin and one Acquire load before the walk, the
//! natural crossbeam-epoch design.

use super::mutex_radix::{build, fault, need};
use super::radix::{Radix, READ, WRITE};
use super::{DomainIdx, Layout, OpError, Translator};
use crossbeam_epoch::{self as epoch, Atomic, Owned, Shared};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Mutex;
use viommu::{Access, FaultKind};

/// Two copy-on-write radix domains and the device's active one, under crossbeam-epoch.
pub struct EpochRadix {
    /// The table the device translates through: the current version of the active domain.
    /// Never owns: every version is owned by its entry of `domains`.
    active: Atomic<Radix>,
    /// Each domain's current version (owned).
    domains: [Atomic<Radix>; 2],
    /// Serializes writers; holds the active domain's index.
    writer: Mutex<DomainIdx>,
}

impl EpochRadix {
    /// Both domains from `layout`, domain 0 active.
    pub fn new(layout: &Layout) -> EpochRadix {
        let domains = [Atomic::new(build(layout, 0)), Atomic::new(build(layout, 1))];
        // SAFETY: nothing is shared yet, so no other thread can free the loaded version.
        let first = domains[0].load(Acquire, unsafe { epoch::unprotected() });
        EpochRadix {
            active: Atomic::from(first),
            domains,
            writer: Mutex::new(0),
        }
    }

    /// Clones domain `dom`, applies `change` to the copy, and publishes it; the old version
    /// is freed once no pinned reader can still see it.
    fn copy_on_write<R>(
        &self,
        dom: DomainIdx,
        change: impl FnOnce(&mut Radix) -> Result<R, OpError>,
    ) -> Result<R, OpError> {
        let active = self.writer.lock().expect("writer lock poisoned");
        let guard = epoch::pin();
        let old = self.domains[dom].load(Acquire, &guard);
        // SAFETY: `old` is the domain's current version; only writers retire versions, and
        // they are serialized by `self.writer`, which we hold.
        let mut copy = unsafe { old.deref() }.clone();
        let r = change(&mut copy)?;
        let new = Owned::new(copy).into_shared(&guard);
        self.domains[dom].store(new, Release);
        if *active == dom {
            self.active.store(new, Release);
        }
        // SAFETY: `old` is unlinked from both pointers above (the device pointer held it only
        // if `dom` is active, and was just replaced); readers that loaded it are pinned, and
        // crossbeam frees it after they unpin. It is retired once: only its owner's writer
        // (us, under the lock) unlinks it.
        unsafe { guard.defer_destroy(old) };
        Ok(r)
    }
}

impl Drop for EpochRadix {
    fn drop(&mut self) {
        for d in &self.domains {
            // SAFETY: `&mut self`: no reader or writer is left; each domain owns its version,
            // which no pending deferred destruction includes (only unlinked versions are).
            let cur: Shared<'_, Radix> = d.load(Acquire, unsafe { epoch::unprotected() });
            // SAFETY: see above; `cur` was allocated by `Owned`/`Atomic::new` and is live.
            drop(unsafe { cur.into_owned() });
        }
    }
}

impl Translator for EpochRadix {
    #[inline]
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind> {
        let guard = epoch::pin();
        let table = self.active.load(Acquire, &guard);
        // SAFETY: the device pointer always holds a live version (never null); a version is
        // destroyed only through `defer_destroy` after being unlinked, which waits for this pin.
        unsafe { table.deref() }
            .translate(iova, len, need(access))
            .map_err(fault)
    }

    fn replace(&self, to: DomainIdx) -> Result<(), OpError> {
        let mut active = self.writer.lock().expect("writer lock poisoned");
        let guard = epoch::pin();
        self.active
            .store(self.domains[to].load(Acquire, &guard), Release);
        *active = to;
        Ok(())
    }

    fn map(&self, dom: DomainIdx, iova: u64, target: u64, len: u64) -> Result<(), OpError> {
        self.copy_on_write(dom, |r| {
            r.map(iova, target, len, READ | WRITE)
                .map_err(|e| OpError::Failed(e.to_string()))
        })
    }

    fn unmap(&self, dom: DomainIdx, iova: u64, len: u64) -> Result<(), OpError> {
        self.copy_on_write(dom, |r| match r.unmap(iova, len) {
            Ok(0) => Err(OpError::Failed(format!("nothing mapped at {iova:#x}"))),
            Ok(_) => Ok(()),
            Err(e) => Err(OpError::Failed(e.to_string())),
        })
    }

    fn quiesce(&self) {
        // Push this thread's deferred frees to the global queue and collect what is ready.
        for _ in 0..4 {
            epoch::pin().flush();
        }
    }
}
