//! Observers: consumers whose DMA does not go through a [`crate::DmaGuard`] (G15).
//!
//! A vhost back end keeps its own device IOTLB, filled on a miss and emptied by invalidation
//! messages; a VFIO or vDPA device behind the emulated IOMMU needs every mapping of its domain
//! mirrored into the host IOMMU. Neither is reached by the grace-period fences, so the control
//! calls tell them directly:
//!
//! * an [`IoasMirror`] is told every map and unmap of one IOAS, in order, from inside the call
//!   ([`crate::Iommu::ioas_add_mirror`]); a mirror that refuses a map fails the `ioas_map`
//!   with nothing changed;
//! * a [`DeviceObserver`] is told, after the change and before the fencing call returns,
//!   whenever a translation it may have cached through one device can change
//!   ([`crate::Iommu::device_add_observer`]), and acknowledges at once ([`Ack::Done`]) or
//!   later ([`Ack::pending`]). One that does not acknowledge within its deadline fails the
//!   call with `ETIMEDOUT` and is marked failed.
//!
//! Observers are called on the control-plane thread that makes the call, never on a DMA
//! thread, and never while the object table's lock is held (G14): a device observer may call
//! back into the [`crate::Iommu`]. A mirror is called under its IOAS's lock (the order of one
//! IOAS's maps and unmaps is the order the mirror sees), so a mirror must not call back into
//! a control call on the same IOAS.

use crate::error::{Error, Result};
use crate::types::{ObjId, Prot};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Told every map and unmap of one IOAS, in order, from inside the control call (under the
/// IOAS's lock, so one IOAS's calls reach it in the order they changed the IOAS).
///
/// Registered with [`crate::Iommu::ioas_add_mirror`], which first replays the IOAS's current
/// areas as maps.
pub trait IoasMirror: Send + Sync + 'static {
    /// A new area: `len` bytes at `iova` map to `target` with `prot`. An error refuses it:
    /// the `ioas_map` fails with [`Error::MirrorRefused`] (whose `errno()` is
    /// `MirrorError::errno`) and changes nothing; the mirrors told before this one are told
    /// to unmap it again.
    fn map(
        &self,
        iova: u64,
        target: u64,
        len: u64,
        prot: Prot,
    ) -> std::result::Result<(), MirrorError>;
    /// A whole area left the IOAS (one call per area; an area is never split). The unmap
    /// call returns only after this returns.
    fn unmap(&self, iova: u64, len: u64);
}

/// Told whenever a translation it may have cached through one device can change.
pub trait DeviceObserver: Send + Sync + 'static {
    /// Drop every cached translation of `pasid` (`None`: the RID, and for a nested domain at
    /// the RID every PASID that reaches it) that overlaps `iovas`, then acknowledge: now
    /// ([`Ack::Done`]), or later: `let (ack, token) = Ack::pending();`, return `ack`, and call
    /// [`AckToken::complete`] from any thread once the consumer replied.
    fn invalidate(&self, pasid: Option<u32>, iovas: RangeInclusive<u64>) -> Ack;
}

/// A [`DeviceObserver`]'s answer to an invalidation.
#[derive(Debug)]
pub enum Ack {
    /// Done: nothing is cached any more that the invalidation covers.
    Done,
    /// Done once the [`AckToken`] made with it is completed (see [`Ack::pending`]).
    Pending(PendingAck),
}

impl Ack {
    /// An acknowledgment that comes later: return the `Ack`, and complete the token (from any
    /// thread) when the consumer has dropped what the invalidation covers. A token dropped
    /// uncompleted counts as never acknowledged.
    pub fn pending() -> (Ack, AckToken) {
        let state = Arc::new(AckState::default());
        (
            Ack::Pending(PendingAck {
                state: state.clone(),
            }),
            AckToken { state },
        )
    }
}

/// The waiting side of [`Ack::pending`]; only the library reads it.
pub struct PendingAck {
    state: Arc<AckState>,
}

impl fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAck")
            .field("state", &*self.state.lock())
            .finish()
    }
}

/// Completes an [`Ack::pending`]. `Send`: complete it from whichever thread hears the reply.
pub struct AckToken {
    state: Arc<AckState>,
}

impl AckToken {
    /// The consumer has dropped what the invalidation covers: the call waiting for it may go
    /// on.
    pub fn complete(self) {
        self.state.settle(AckStatus::Done);
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        // Never completed: the waiting call need not wait out the deadline.
        self.state.settle(AckStatus::Dropped);
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckToken").finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum AckStatus {
    #[default]
    Pending,
    Done,
    Dropped,
}

/// One pending acknowledgment. The library's own `std` mutex and condition variable (not
/// `crate::sync`'s): only control-plane threads and the observer's threads take it.
#[derive(Default)]
struct AckState {
    status: Mutex<AckStatus>,
    changed: Condvar,
}

impl AckState {
    fn lock(&self) -> MutexGuard<'_, AckStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first settlement wins (`complete` consumes the token, whose drop then finds it
    /// settled).
    fn settle(&self, to: AckStatus) {
        let mut s = self.lock();
        if *s == AckStatus::Pending {
            *s = to;
            self.changed.notify_all();
        }
    }

    /// Waits until settled or `deadline`; true if done.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        loop {
            match *s {
                AckStatus::Done => return true,
                AckStatus::Dropped => return false,
                AckStatus::Pending => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn status(&self) -> AckStatus {
        *self.lock()
    }
}

/// What an [`IoasMirror`]'s own map failed with (`ENOMEM`, `EFAULT`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorError {
    /// A positive Linux errno; the failed `ioas_map`'s [`Error::errno`].
    pub errno: i32,
}

/// Names a mirror or a device observer, for [`crate::Iommu::remove_observer`] and in errors.
/// Its own space, apart from [`ObjId`]s (observers do not use up object IDs); never reused
/// within one [`crate::Iommu`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObserverId(pub(crate) u64);

impl ObserverId {
    /// The raw number, for logging.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ObserverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObserverId({})", self.0)
    }
}

impl fmt::Display for ObserverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "observer #{}", self.0)
    }
}

/// How long a fencing call waits for a [`DeviceObserver`]'s acknowledgment unless it was
/// added with [`crate::Iommu::device_add_observer_with_deadline`]: one second.
pub const DEFAULT_OBSERVER_DEADLINE: Duration = Duration::from_secs(1);

/// A registered device observer.
pub(crate) struct ObserverEntry {
    pub(crate) id: ObserverId,
    observer: Arc<dyn DeviceObserver>,
    deadline: Duration,
    /// Set when it missed a deadline: no later call tells it or waits for it.
    failed: AtomicBool,
}

impl ObserverEntry {
    pub(crate) fn new(
        id: ObserverId,
        observer: Arc<dyn DeviceObserver>,
        deadline: Duration,
    ) -> ObserverEntry {
        ObserverEntry {
            id,
            observer,
            deadline,
            failed: AtomicBool::new(false),
        }
    }

    pub(crate) fn failed(&self) -> bool {
        // Relaxed: a flag read on the control plane; the mutex of the call that set it (or
        // the caller's own synchronization) orders what matters.
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_failed(&self) {
        // Relaxed: as `failed`.
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One invalidation a call owes an observer: collected under the call's locks, delivered
/// after every lock is released ([`deliver`]).
pub(crate) struct Notice {
    pub(crate) entry: Arc<ObserverEntry>,
    pub(crate) dev: ObjId,
    pub(crate) pasid: Option<u32>,
    pub(crate) iovas: RangeInclusive<u64>,
}

/// The acknowledgments a call still waits for.
#[derive(Default)]
pub(crate) struct Acks {
    pending: Vec<(Arc<ObserverEntry>, ObjId, Arc<AckState>, Instant)>,
}

/// Tells every notice's observer (none that failed before), with no lock held; returns the
/// acknowledgments still to come, each with its deadline counted from now.
#[inline]
pub(crate) fn deliver(notices: Vec<Notice>) -> Acks {
    let mut acks = Acks::default();
    if notices.is_empty() {
        // The common case (no device observer anywhere): nothing to send or wait for.
        return acks;
    }
    for n in notices {
        if n.entry.failed() {
            continue;
        }
        let start = Instant::now();
        if let Ack::Pending(p) = n.entry.observer.invalidate(n.pasid, n.iovas) {
            let deadline = start + n.entry.deadline;
            acks.pending.push((n.entry, n.dev, p.state, deadline));
        }
    }
    acks
}

impl Acks {
    /// True once every acknowledgment has come (or can never come).
    pub(crate) fn settled(&self) -> bool {
        self.pending
            .iter()
            .all(|(_, _, s, _)| s.status() != AckStatus::Pending)
    }

    /// Waits for every acknowledgment, each until its own deadline (all run at once: the
    /// call waits as long as the slowest, not the sum). An observer that missed its deadline
    /// (or dropped its token) is marked failed; the first such one is the error.
    #[inline]
    pub(crate) fn wait(self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut first = Ok(());
        for (entry, dev, state, deadline) in self.pending {
            if !state.wait_until(deadline) {
                entry.mark_failed();
                if first.is_ok() {
                    first = Err(Error::ObserverTimedOut {
                        observer: entry.id,
                        dev,
                    });
                }
            }
        }
        first
    }
}
