//! The reader's side: per-thread participants, their guard slots, and pins.
//!
//! A thread keeps, per `Iommu` it has pinned, one entry in a thread-local list: the
//! [`Participant`] it owns in that `Iommu` and a small cache of domain snapshots
//! ([`DomainCache`], used by [`crate::device`]). A pin finds the entry (one comparison in the
//! common case of one `Iommu`), takes the first free slot of its participant, records the
//! epoch there and runs the caller's lookup; dropping the [`Pin`] clears the slot. Nothing
//! else is written, and nothing is freed or locked, except when the thread first pins an
//! `Iommu` (registration) or holds more guards at once than it ever has (a new slot block).
//!
//! When a thread exits, its participants return to their `Iommu`'s registry for the next
//! thread to claim, so the registry is bounded by the most threads ever pinning at once.

use super::summary_bit;
use super::Grace;
use crate::snapshot::Snapshot;
use crate::sync::AtomicU64;
use crate::sync::Ordering;
use crate::sync::{compiler_fence, fence, lock, thread_local, Arc, AtomicBool, AtomicPtr};
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::ptr::NonNull;

/// Guard slots in one block.
#[cfg(not(viommu_loom))]
const SLOTS: usize = 8;
/// Guard slots in one block (loom-sized, so that models reach a second block).
#[cfg(viommu_loom)]
const SLOTS: usize = 2;

/// Ways of the per-thread domain cache (a power of two; groups take them in turn).
pub(crate) const CACHE_WAYS: usize = 8;

#[repr(C)] // the slots first: see `Participant`
struct SlotBlock {
    slots: [AtomicU64; SLOTS],
    /// The next block, or null; written once by the owner (Release), read by fences.
    next: AtomicPtr<SlotBlock>,
}

impl SlotBlock {
    fn new() -> SlotBlock {
        SlotBlock {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// One thread's guard slots in one `Iommu`. Shared as a [`SharedParticipant`], padded so that
/// two threads' slots never share a cache line.
///
/// `repr(C)`, in this order, so that what a pin touches shares one cache line: the `listed`
/// flag it reads, the `last` epoch it writes and the first six slots (the first free one is
/// nearly always slot 0).
#[repr(C)]
pub(crate) struct Participant {
    /// In its `Grace`'s scan set: fences read its slots. Cleared by a fence that found the
    /// participant idle ([`Grace::scan`](super::Grace)), set again by the owner's next pin
    /// ([`Grace::relist`]) or by that fence itself if a pin raced it.
    pub(super) listed: AtomicBool,
    /// The epoch of the owner's latest pin (written by the owner only): how fences tell an
    /// idle participant from one that pins between their scans.
    pub(super) last: AtomicU64,
    first: SlotBlock,
    /// Claimed by a live thread.
    owned: AtomicBool,
    /// Its `Iommu`'s grace domain is still alive.
    alive: AtomicBool,
    /// Its position in its `Grace`'s registry: the bit it sets in the relist summary.
    pub(super) index: usize,
}

/// A participant as its registry and its owner hold it: alone on its cache lines
/// (`CachePadded`, two on x86-64 against the adjacent-line prefetcher), so that a pin, which
/// writes a slot, never invalidates the line another thread's pin writes.
pub(crate) type SharedParticipant = Arc<CachePadded<Participant>>;

impl Participant {
    pub(super) fn new(index: usize) -> Participant {
        Participant {
            first: SlotBlock::new(),
            owned: AtomicBool::new(true),
            alive: AtomicBool::new(true),
            listed: AtomicBool::new(true),
            last: AtomicU64::new(0),
            index,
        }
    }

    /// Every slot, block by block.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &AtomicU64> {
        let mut block: *const SlotBlock = &self.first;
        std::iter::from_fn(move || {
            // SAFETY: `block` is null, our first block, or a block linked after it; blocks are
            // freed only by `Participant::drop`, and `&self` is alive.
            let b = unsafe { block.as_ref() }?;
            // ORDERING: [BLOCK] Acquire pairs with the Release store that linked the next block, so
            // its zeroed slots are seen.
            block = b.next.load(Ordering::Acquire);
            Some(b.slots.iter())
        })
        .flatten()
    }

    /// A free slot of this (owned) participant; links a new block if every slot is taken.
    /// Owner only: only the owner writes a slot non-zero, so its own loads are exact.
    #[inline]
    fn free_slot(&self) -> &AtomicU64 {
        for s in &self.first.slots {
            // ORDERING: Relaxed: the owner reads its own writes.
            if s.load(Ordering::Relaxed) == 0 {
                return s;
            }
        }
        self.free_slot_slow()
    }

    #[cold]
    fn free_slot_slow(&self) -> &AtomicU64 {
        let mut block = &self.first;
        loop {
            if let Some(s) = block.slots.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
                return s;
            }
            // ORDERING: Relaxed: only the owner links blocks.
            let next = block.next.load(Ordering::Relaxed);
            if next.is_null() {
                let new = Box::into_raw(Box::new(SlotBlock::new()));
                // ORDERING: [BLOCK] Release pairs with the Acquire load in `slots`: a fence that
                // reaches the block sees its zeroed slots.
                block.next.store(new, Ordering::Release);
                // SAFETY: just allocated and linked; freed only by `Participant::drop`.
                return unsafe { &(*new).slots[0] };
            }
            // SAFETY: a linked block lives as long as the participant.
            block = unsafe { &*next };
        }
    }

    pub(super) fn any_pinned(&self) -> bool {
        // ORDERING: Relaxed: the owner reads its own slots (`Entry::drop`, `is_pinned`); a
        // fence that reads them with this (`Grace::scan`'s recheck) does so after its heavy
        // fence, which orders the read as the store-buffer pattern needs.
        self.slots().any(|s| s.load(Ordering::Relaxed) != 0)
    }

    pub(super) fn mark_dead(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    /// Returns the participant to its registry (its thread is gone).
    fn release(&self) {
        // ORDERING: [OWNED] Release pairs with the Acquire CAS in `claim`: the next owner sees our
        // last slot stores.
        self.owned.store(false, Ordering::Release);
    }

    /// Claims a released participant for the calling thread.
    pub(super) fn claim(&self) -> bool {
        self.owned
            // ORDERING: [OWNED] Acquire pairs with `release`.
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        // ORDERING: Relaxed: `&mut self`, no other thread can touch the blocks.
        let mut next = self.first.next.load(Ordering::Relaxed);
        while !next.is_null() {
            // SAFETY: every linked block came from `Box::into_raw` and is freed once, here,
            // with exclusive access.
            let block = unsafe { Box::from_raw(next) };
            next = block.next.load(Ordering::Relaxed);
        }
    }
}

/// A per-thread cache of domain snapshots: `(generation, snapshot)` per way.
pub(crate) struct DomainCache {
    pub(crate) ways: [(u64, Snapshot); CACHE_WAYS],
}

/// One `Iommu` in a thread's list.
struct Entry {
    grace: u64,
    participant: SharedParticipant,
    cache: DomainCache,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // A thread that exits while a guard is alive (leaked with `mem::forget`) keeps its
        // participant: a fence waits for that guard forever, as it must.
        if !self.participant.any_pinned() {
            self.participant.release();
        }
    }
}

/// The thread's entries, one per `Iommu` it has pinned. Boxed, so that [`HOT`] can point at
/// one while the list grows.
// Boxed on purpose: `HOT` points at an entry, which must not move when the list grows.
#[allow(clippy::vec_box)]
struct Entries(Vec<Box<Entry>>);

impl Drop for Entries {
    fn drop(&mut self) {
        // The entries go with the list: a pin made later on this thread (from another
        // thread-local's destructor) must not find one through `HOT`.
        set_hot(std::ptr::null_mut());
    }
}

// loom's `thread_local!` does not take a `const { }` initializer.
#[allow(clippy::missing_const_for_thread_local)]
mod local {
    use super::{thread_local, Entries, RefCell};
    thread_local! {
        pub(super) static ENTRIES: RefCell<Entries> = RefCell::new(Entries(Vec::new()));
    }
}
use local::ENTRIES;

#[cfg(not(viommu_loom))]
std::thread_local! {
    /// The entry the thread pinned last (null before its first pin and after its list is
    /// gone). A `const`-initialized cell with no destructor: reading it is one load from the
    /// thread's TLS block, with no lazy-initialization check, and it is readable in every
    /// other thread-local's destructor.
    static HOT: std::cell::Cell<*mut Entry> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}
#[cfg(viommu_loom)]
loom::thread_local! {
    static HOT: std::cell::Cell<*mut Entry> = std::cell::Cell::new(std::ptr::null_mut());
}

/// The entry the thread pinned last, or null.
#[inline(always)]
fn hot() -> *mut Entry {
    #[cfg(not(viommu_loom))]
    {
        HOT.with(std::cell::Cell::get)
    }
    #[cfg(viommu_loom)]
    {
        HOT.try_with(std::cell::Cell::get)
            .unwrap_or(std::ptr::null_mut())
    }
}

fn set_hot(entry: *mut Entry) {
    let _ = HOT.try_with(|h| h.set(entry));
}

/// A pinned guard slot; dropping it unpins.
pub(crate) struct Pin {
    slot: NonNull<AtomicU64>,
    /// Set when the pin was made without a thread entry (during thread teardown): the
    /// participant is released with the pin. A plain pointer (its `Grace`'s registry holds the
    /// participant, and the `Grace` outlives the pin, as for `slot`), so that dropping a pin
    /// runs no reference-count code.
    orphan: Option<NonNull<Participant>>,
}

impl Drop for Pin {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the slot belongs to a participant that its `Grace` keeps registered for as
        // long as the `Grace` lives, and every `Pin` is owned by a guard that borrows a
        // `Device`, which keeps the `Grace` alive.
        let slot = unsafe { self.slot.as_ref() };
        // ORDERING: [SLOT] Release pairs with the Acquire load in `Grace::slot_done`: a fence that
        // sees the slot cleared sees every access made under the guard.
        slot.store(0, Ordering::Release);
        if let Some(p) = self.orphan {
            // SAFETY: registered in the pin's `Grace`, alive as `slot` is.
            unsafe { p.as_ref() }.release();
        }
    }
}

/// Records the epoch in `slot` (the reader's half of the store-buffer pattern), then makes
/// sure fences scan the participant (it is still listed, or it lists itself again).
#[inline(always)]
fn enter(grace: &Grace, participant: &Participant, slot: &AtomicU64) {
    // ORDERING: [EPOCH] Acquire pairs with the AcqRel bump in `Grace::bump`: a guard that records
    // an epoch `>= T` sees every unlink made before the bump to `T`.
    let epoch = grace.pin_line.epoch.load(Ordering::Acquire);
    // ORDERING: Relaxed: a hint for fences' idle test (`Grace::scan`), never trusted for
    // safety (a fence delists only after re-reading the slots behind its heavy fence).
    participant.last.store(epoch, Ordering::Relaxed);
    store_slot(grace, slot, epoch);
    // ORDERING: [DELIST] Relaxed, after the barrier that follows the slot store: the store-buffer
    // pair of a delisting fence's `listed` store, heavy fence and slot re-read (`Grace::scan`):
    // either that fence sees this slot pinned (and keeps us listed), or we see `false` here and
    // list ourselves before any load of the guard.
    if !participant.listed.load(Ordering::Relaxed) {
        grace.relist(participant);
    }
}

/// The slot store and the barrier after it.
#[inline(always)]
fn store_slot(grace: &Grace, slot: &AtomicU64, epoch: u64) {
    if grace.pin_line.asymmetric {
        // ORDERING: [SLOT] [SB] Release pairs with the Acquire load in `Grace::slot_done` (a fence
        // that reads this value also sees the guard's earlier history); the compiler fence keeps
        // the caller's loads after the store; the CPU-level barrier is the fence side's membarrier.
        slot.store(epoch, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
    } else {
        store_and_full_fence(slot, epoch);
    }
}

/// Stores `epoch` in `slot`, then a full barrier: no load after it is performed before the
/// store is visible to every thread (the symmetric protocol's reader side).
#[inline(always)]
fn store_and_full_fence(slot: &AtomicU64, epoch: u64) {
    #[cfg(all(target_arch = "x86_64", not(viommu_loom)))]
    {
        // ORDERING: [SLOT] [SB] on x86-64 a locked read-modify-write is a full barrier (loads and
        // stores are not reordered with locked instructions, which have one total order: Intel SDM
        // vol. 3A, 9.2.2), so one `xchg` is the store and the `mfence` at once, and costs about
        // half as much (callgrind counts the same; measured 18.2 -> 11 ns a pin on the Xeon of
        // `docs/benchmarks.md`). SeqCst makes it pair with the SeqCst fence in `Grace::heavy_fence`
        // in the language model too as far as the store goes; the compiler fence keeps the compiler
        // from hoisting the caller's later loads above it (crossbeam-epoch pins the same way on
        // x86). Loom and other targets model and run the portable form below.
        slot.swap(epoch, Ordering::SeqCst);
        compiler_fence(Ordering::SeqCst);
    }
    #[cfg(not(all(target_arch = "x86_64", not(viommu_loom))))]
    {
        // ORDERING: [SLOT] [SB] Release pairs with the Acquire load in `Grace::slot_done`; the
        // SeqCst fence pairs with the SeqCst fence in `Grace::heavy_fence` (the store-buffer
        // pattern: either the fence side's slot loads see this store, or this thread's loads after
        // the fence see the fence side's unlinks).
        slot.store(epoch, Ordering::Release);
        fence(Ordering::SeqCst);
    }
}

impl Grace {
    /// Pins the calling thread (a new guard slot) and runs `lookup` with the thread's domain
    /// cache for this `Iommu`, under the pin.
    ///
    /// The common case, the `Iommu` the thread pinned last, finds its entry through [`HOT`]
    /// with one TLS load and one comparison; any other goes through the list once and
    /// becomes the hot one.
    #[inline(always)]
    pub(crate) fn pin<R>(&self, lookup: impl FnOnce(&mut DomainCache) -> R) -> (Pin, R) {
        // SAFETY: `HOT` is null or names an entry boxed in this thread's list: it is set only
        // to such an entry, the list frees entries only in `register` (which sets `HOT` to the
        // entry it returns before anything reads it) and in `Entries::drop` (which nulls it
        // first). No other reference to the entry is alive: the list is borrowed only inside
        // `pin_slow` and `is_pinned`, neither of which runs during this call (`lookup` is the
        // crate's own closure and does not pin).
        match unsafe { hot().as_mut() } {
            Some(entry) if entry.grace == self.pin_line.id => self.pin_entry(entry, lookup),
            _ => self.pin_slow(lookup),
        }
    }

    /// A pin through the thread's entry for this `Iommu`.
    #[inline(always)]
    fn pin_entry<R>(
        &self,
        entry: &mut Entry,
        lookup: impl FnOnce(&mut DomainCache) -> R,
    ) -> (Pin, R) {
        let slot = entry.participant.free_slot();
        enter(self, &entry.participant, slot);
        let r = lookup(&mut entry.cache);
        (
            Pin {
                slot: NonNull::from(slot),
                orphan: None,
            },
            r,
        )
    }

    /// A pin of an `Iommu` that is not the thread's hot one: finds (or registers) its entry
    /// in the list and makes it hot.
    #[cold]
    #[inline(never)]
    fn pin_slow<R>(&self, lookup: impl FnOnce(&mut DomainCache) -> R) -> (Pin, R) {
        let entry = ENTRIES.try_with(|entries| {
            let mut entries = entries.try_borrow_mut().ok()?;
            let entry: *mut Entry = match entries
                .0
                .iter_mut()
                .position(|e| e.grace == self.pin_line.id)
            {
                Some(i) => &mut *entries.0[i],
                None => self.register(&mut entries.0),
            };
            set_hot(entry);
            Some(entry)
        });
        match entry {
            // SAFETY: boxed in the thread's list, which is no longer borrowed; as in `pin`.
            Ok(Some(entry)) => self.pin_entry(unsafe { &mut *entry }, lookup),
            _ => self.pin_orphan(lookup),
        }
    }

    /// Adds this `Iommu` to the thread's list: claims a released participant or registers a
    /// new one. Also drops entries of `Iommu`s that are gone (the caller then sets `HOT`).
    #[cold]
    #[inline(never)]
    #[allow(clippy::vec_box)] // see `Entries`
    fn register<'e>(&self, entries: &'e mut Vec<Box<Entry>>) -> &'e mut Entry {
        // ORDERING: Relaxed: `alive` only decides when to forget a dead `Iommu`'s entry.
        entries.retain(|e| e.participant.alive.load(Ordering::Relaxed));
        let participant = self.claim_participant();
        entries.push(Box::new(Entry {
            grace: self.pin_line.id,
            participant,
            cache: DomainCache {
                ways: [(0, Snapshot::BLOCKED); CACHE_WAYS],
            },
        }));
        entries.last_mut().expect("just pushed")
    }

    fn claim_participant(&self) -> SharedParticipant {
        let mut registry = lock(&self.participants);
        if let Some(p) = registry.all.iter().find(|p| p.claim()).cloned() {
            // Listed under the registry lock, before its first pin: every fence that takes
            // the lock after us scans it, and one that took it before is ordered before our
            // pin by the lock (as for a new participant).
            registry.list(&p);
            return p;
        }
        let p = Arc::new(CachePadded::new(Participant::new(registry.all.len())));
        registry.all.push(p.clone());
        registry.list(&p);
        p
    }

    /// Puts a participant that a fence delisted back in the scan set: its bit in the relist
    /// summary, which the next fence takes in. The first pin after an idle spell pays it.
    #[cold]
    #[inline(never)]
    fn relist(&self, participant: &Participant) {
        // ORDERING: Relaxed: only the owner and fences under the registry lock write it; the
        // summary bit below carries it.
        participant.listed.store(true, Ordering::Relaxed);
        let (word, bit) = summary_bit(participant.index);
        // ORDERING: [RELIST] [SB] SeqCst RMW, then a SeqCst fence before any load of the guard: the
        // store-buffer pair of a fence's bump, heavy fence and summary read (`Grace::scan`).
        // Either that fence sees the bit (Release: and so this slot's epoch, through its
        // Acquire swap) and scans us, or our loads after the fence see everything it
        // unlinked before its bump.
        if let Some(word) = self.relisted.get(word) {
            word.fetch_or(bit, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
    }

    /// A pin made without the thread-local list (the thread is exiting): a participant of its
    /// own, released when the pin drops; no domain cache.
    #[cold]
    fn pin_orphan<R>(&self, lookup: impl FnOnce(&mut DomainCache) -> R) -> (Pin, R) {
        let participant = self.claim_participant();
        let slot = participant.free_slot();
        enter(self, &participant, slot);
        let mut cache = DomainCache {
            ways: [(0, Snapshot::BLOCKED); CACHE_WAYS],
        };
        let r = lookup(&mut cache);
        let slot = NonNull::from(slot);
        (
            Pin {
                slot,
                orphan: Some(NonNull::from(&**participant)),
            },
            r,
        )
    }
}

/// True if the calling thread holds a pin of `grace` with an epoch below `before`.
pub(super) fn is_pinned(grace: &Grace, before: u64) -> bool {
    ENTRIES
        .try_with(|entries| {
            entries.try_borrow().ok().is_some_and(|entries| {
                entries.0.iter().any(|e| {
                    e.grace == grace.pin_line.id
                        && e.participant.slots().any(|s| {
                            // ORDERING: Relaxed: the owner reads its own slots.
                            let v = s.load(Ordering::Relaxed);
                            v != 0 && v < before
                        })
                })
            })
        })
        .unwrap_or(false)
}
