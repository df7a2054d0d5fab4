//! Grace periods: the protocol that DMA guards and the control plane's fences share, and the
//! list of retired memory that waits for them.
//!
//! # The problem
//!
//! A DMA thread pins, translates, accesses guest memory and unpins, millions of times a
//! second; the control plane unlinks page-table nodes and swaps out domains, and must know
//! when no guard can still see what it unlinked (to free it, G9) or translate into what it
//! unmapped (to return from `ioas_unmap`, G5). The fences must wait for *guards*, not threads:
//! a thread that always holds some guard (overlapping guards; one thread serving several
//! devices) must not hold a fence forever (G12). And nothing may be freed, locked or
//! system-called on the DMA thread (G13).
//!
//! # Guard slots and one epoch counter
//!
//! Each thread that pins an `Iommu` owns a [`Participant`]: a block of guard slots (more
//! blocks are chained on when a thread holds more guards at once than it ever has). A slot is
//! `0` when free, or holds the value of the `Iommu`'s epoch counter read when its guard was
//! made. So each overlapping guard records its own epoch.
//!
//! A fence ([`Grace::synchronize`]) *bumps* the counter to a new value `T` (an `AcqRel` RMW,
//! after whatever it must fence was unlinked) and waits until no slot holds a value in
//! `1 .. T`. A guard made after the bump reads an epoch `>= T` and is never waited for; a guard
//! made before it is waited for exactly once, until its slot is cleared or re-pinned. That is
//! G12, and `EDEADLK` is exact: the call would wait for the calling thread's own guard iff the
//! thread holds any guard of this `Iommu` at the call ([`Grace::is_pinned`]).
//!
//! Why a guard with epoch `e >= T` cannot see what was unlinked before the bump to `T`: it
//! read `e` with `Acquire`, and every write of the counter is an RMW, so it synchronizes with
//! the bump and sees the unlink. Why a guard that pinned with `e < T` but whose slot the fence
//! saw empty cannot see it either: that is the store-buffer pattern. The reader stores its slot,
//! then loads shared pointers; the fence unlinks, then loads the slot. One of the two must see
//! the other's store, which needs a full barrier on both sides. Two ways to pay for it:
//!
//! * **symmetric** ([`FenceMode::Symmetric`], the default; also wherever membarrier is
//!   missing, and under loom, which models it): both sides use a `SeqCst` fence, the classic
//!   store-buffer solution (a fence after the reader's slot store; one after the fence side's
//!   bump). One full fence a pin, as crossbeam-epoch pays; a fence never interrupts a reader.
//! * **asymmetric** (Linux, [`FenceMode::Asymmetric`]): the reader's side is a compiler fence
//!   only; the fence side calls `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which runs a
//!   full barrier on every CPU that runs a thread of this process (an IPI each). A pin is then
//!   two plain stores and no locked instruction.
//!   (A variant with an RMW on each side is also correct, but a fence that polls a slot with
//!   RMWs cannot be model-checked: loom explores an RMW chain that never sees the reader's
//!   unpin, which the C++ model allows.)
//!
//! `VIOMMU_NO_MEMBARRIER=1` in the environment forces the symmetric protocol even where the
//! asymmetric one was asked for (the tests run both).
//!
//! # The scan set
//!
//! A fence reads the slots of *listed* participants only ([`Grace::scan`]): one that went idle
//! (no guard, no pin for `IDLE_EPOCHS` epochs) is delisted by a fence (its `listed` flag cleared,
//! a heavy fence, its slots re-read), and its owner's next pin, which loads the flag after its
//! own barrier, lists itself again through a bit in the relist summary ([`Grace::relist`]).
//! So a fence costs what the threads that pin cost, not every thread that ever pinned.
//! `docs/design.md` ("Fences scan the listed participants only") has the argument.
//!
//! # Retired memory and `safe`
//!
//! Memory that readers might still reach (a replaced-away domain, page-table nodes an unmap
//! emptied) is [retired](Grace::retire): the retirement bumps the epoch to some `B` and the
//! memory waits in a list tagged `B`. `safe` is the largest `S` known to have no live guard
//! with epoch below it; an entry is due once `safe >= B`. `safe` advances when a fence
//! completes (to its `T`) and when a control call [polls](Grace::poll) (one bump, one heavy
//! fence, one pass over the slots, no waiting). Due entries are dropped by the control call
//! that finds them ([`Grace::collect`]), after it has released every lock: a DMA thread never
//! frees anything, runs no destructor and takes no lock (G13). A thread first pinning an
//! `Iommu` registers (allocates, takes the registry's lock) once; so does a thread that holds
//! more guards at once than it ever has (a new slot block).
//!
//! # Batched fences
//!
//! [`Grace::ticket`] tags work done so far with a bump `T` and returns; many such
//! completions are settled by one later wait ([`Grace::wait_for`]), which is how a front end
//! completes a queue's worth of unmaps with one grace period.

mod retire;
mod thread;

pub(crate) use retire::Garbage;
pub(crate) use thread::{DomainCache, Pin, CACHE_WAYS};

use crate::sync::{backoff, fence, lock, membarrier, register_membarrier, Arc, AtomicU64, Mutex};
use crate::sync::{AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use thread::{Participant, SharedParticipant};

/// Live-object counters, for [`crate::Stats`] and the leak tests.
#[derive(Default)]
pub(crate) struct Counters {
    /// Paging domains allocated and not yet freed.
    pub(crate) domains: AtomicUsize,
    /// Page-table nodes (roots included) allocated and not yet freed.
    pub(crate) tables: AtomicUsize,
}

/// `maintain` polls on every this-many calls that find retired entries waiting.
const POLL_EVERY: usize = 16;
/// `maintain` polls whenever at least this many retired entries wait.
const RETIRED_HIGH: usize = 64;

/// Participants a fence can delist: the relist summary has a bit for each (4096 with 64
/// words: eight cache lines, read by a fence only where a word is non-zero). Participants
/// past it (a process that ever had more threads pinning one `Iommu` at once) stay listed.
#[cfg(not(viommu_loom))]
const SUMMARY_WORDS: usize = 64;
/// See above (loom: one word).
#[cfg(viommu_loom)]
const SUMMARY_WORDS: usize = 1;

/// A listed participant with no guard whose latest pin is this many epochs older than a
/// fence's target is delisted by that fence. Epochs advance with every fence, retirement and
/// poll, so a thread that pins between most of them stays listed (and never pays a relist),
/// and one that went quiet drops out of the scan after a few dozen control calls. Under loom
/// every idle participant is delisted, so the models reach the relist path.
#[cfg(not(viommu_loom))]
const IDLE_EPOCHS: u64 = 64;
/// See above.
#[cfg(viommu_loom)]
const IDLE_EPOCHS: u64 = 0;

/// The word and bit of participant `index` in the relist summary.
#[inline]
fn summary_bit(index: usize) -> (usize, u64) {
    (index / 64, 1u64 << (index % 64))
}

/// Every participant ever registered, and which of them fences scan.
struct Registry {
    /// Every participant (recycled when their thread exits); its index is its position.
    all: Vec<SharedParticipant>,
    /// The indices of the participants fences scan (each once).
    listed: Vec<usize>,
    /// `in_scan[i]`: `i` is in `listed`.
    in_scan: Vec<bool>,
}

impl Registry {
    /// Puts `p` in the scan set (under the registry lock).
    fn list(&mut self, p: &Participant) {
        // ORDERING: Relaxed: written under the registry lock, which orders it for fences; the
        // owner's own pins read it after their barrier (see `thread::enter`).
        p.listed.store(true, Ordering::Relaxed);
        if self.in_scan.len() <= p.index {
            self.in_scan.resize(p.index + 1, false);
        }
        if !self.in_scan[p.index] {
            self.in_scan[p.index] = true;
            self.listed.push(p.index);
        }
    }
}

/// What one scan of the listed participants found.
struct Scan {
    /// Participants with a guard older than the target.
    waiting: Vec<SharedParticipant>,
    /// The oldest epoch pinned below the target (the target if none).
    oldest: u64,
}

/// One `Iommu`'s grace-period domain: its epoch, its participants and its retired memory.
pub(crate) struct Grace {
    /// What every pin reads of the `Grace`, on one line: the epoch, the `Iommu`'s id and the
    /// fence mode. Alone on its cache lines (`CachePadded`: two on x86-64, against the
    /// adjacent-line prefetcher), so that the fields below, which control calls write, do not
    /// invalidate the pins' line; a pin touches this one line of the `Grace` and no other.
    pin_line: CachePadded<PinLine>,
    /// Every guard pinned with an epoch below this has been dropped.
    safe: AtomicU64,
    /// Generations for group publishes: unique per publish, so a per-thread domain cache is
    /// validated by one comparison ([`crate::device`]).
    next_generation: AtomicU64,
    /// Every participant ever registered (recycled when their thread exits), and the scan
    /// set fences read.
    participants: Mutex<Registry>,
    /// The relist summary: bit `i` set by participant `i`'s first pin after a fence delisted
    /// it; taken in (and cleared) by the next fence's scan.
    relisted: Box<[AtomicU64]>,
    /// Retired memory, tagged with the bump that followed its unlinking.
    retired: Mutex<Vec<(u64, Garbage)>>,
    /// `collect` calls that took entries out of `retired` and are still freeing them.
    freeing: AtomicUsize,
    /// Calls of `maintain` that found retired entries (spaces its polls out).
    maintain_calls: AtomicUsize,
    pub(crate) counters: Arc<Counters>,
}

/// The fields of a [`Grace`] that every pin reads.
pub(crate) struct PinLine {
    /// Read by every pin; written by bumps (fences, retirements, polls).
    pub(crate) epoch: AtomicU64,
    /// Process-unique; keys the per-thread participant list (an address could be reused).
    pub(crate) id: u64,
    /// Readers use the asymmetric protocol (membarrier registered).
    pub(crate) asymmetric: bool,
}

/// A fence that was started and not waited for: it completes once every guard alive when it
/// was made has been dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// How a fence and a pin share the cost of the store-buffer barrier (see the module docs).
///
/// Chosen per [`crate::Iommu`] with [`crate::Iommu::with_fence_mode`]; [`crate::Iommu::new`]
/// uses the default, [`FenceMode::Symmetric`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FenceMode {
    /// A full fence in every pin (one locked instruction); a fence never interrupts a DMA
    /// thread. The default: a few nanoseconds a pin buys DMA threads a tail free of
    /// interrupts (measured in a 2-vCPU VM with a 4 KiB map+unmap every 10 µs, one reader:
    /// a single translation's p99.9 was 0.28 µs this way, 11.5 µs with membarrier; see
    /// `docs/benchmarks.md`).
    #[default]
    Symmetric,
    /// Linux `membarrier(2)`: a pin pays a compiler fence only, and every fence interrupts
    /// each CPU that runs a thread of the process (an IPI: about a microsecond on bare metal,
    /// several in a VM). For emulators whose DMA threads translate far more often than the
    /// guest unmaps. Falls back to `Symmetric` where membarrier is unavailable (another OS, an
    /// old kernel, a sandbox that refuses it, or `VIOMMU_NO_MEMBARRIER` set).
    Asymmetric,
}

impl Grace {
    pub(crate) fn new(mode: FenceMode) -> Grace {
        // Process-wide, never reused (a plain std atomic: it is not part of any protocol).
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Grace {
            pin_line: CachePadded::new(PinLine {
                epoch: AtomicU64::new(1),
                id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                asymmetric: mode == FenceMode::Asymmetric && register_membarrier(),
            }),
            safe: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            participants: Mutex::new(Registry {
                all: Vec::new(),
                listed: Vec::new(),
                in_scan: Vec::new(),
            }),
            relisted: (0..SUMMARY_WORDS).map(|_| AtomicU64::new(0)).collect(),
            retired: Mutex::new(Vec::new()),
            freeing: AtomicUsize::new(0),
            maintain_calls: AtomicUsize::new(0),
            counters: Arc::new(Counters::default()),
        }
    }

    /// True if pins and fences use the membarrier protocol.
    pub(crate) fn asymmetric(&self) -> bool {
        self.pin_line.asymmetric
    }

    /// A fresh publish generation (never 0, never repeated).
    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Advances the epoch and returns its new value `T`: guards made from now on record
    /// `>= T` and see everything this thread did before the call.
    fn bump(&self) -> u64 {
        // ORDERING: [EPOCH] AcqRel. Release pairs with the Acquire epoch load in `Pin` creation
        // (`thread::enter`): a guard that reads `>= T` sees every unlink before this bump (all
        // writes of the epoch are RMWs, so later bumps carry the release sequence). Acquire
        // pairs with earlier bumps' Release, so an unlink retired under an earlier bump is
        // ordered before our slot scan.
        self.pin_line.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The heavy side of the store-buffer pattern (see the module docs), between a bump and
    /// a scan of the slots.
    fn heavy_fence(&self) {
        if self.pin_line.asymmetric {
            membarrier();
        }
        // ORDERING: [SB] SeqCst fence pairs with the reader's SeqCst fence in `thread::enter`
        // (symmetric protocol): of two SeqCst fences one comes first, and the loads after the
        // later one see the stores before the earlier one. Free next to a membarrier.
        fence(Ordering::SeqCst);
    }

    /// Reads a slot for a fence with target `target` (after `heavy_fence`): true if it holds
    /// no guard older than the target (free, or pinned at `>= target`).
    fn slot_done(&self, slot: &AtomicU64, target: u64) -> bool {
        // ORDERING: [SLOT] Acquire pairs with the Release stores of `thread::enter` and
        // `Pin::drop`: a fence that sees a slot cleared (or re-pinned) sees every access the guard
        // made.
        let v = slot.load(Ordering::Acquire);
        v == 0 || v >= target
    }

    /// Starts a fence: everything the calling thread unlinked before this call is covered.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.bump())
    }

    /// True once every guard alive when `ticket` was made has been dropped (polls once, never
    /// waits).
    pub(crate) fn is_done(&self, ticket: Ticket) -> bool {
        // ORDERING: [SAFE] Acquire pairs with the AcqRel `fetch_max` that advanced `safe`.
        if self.safe.load(Ordering::Acquire) >= ticket.0 {
            return true;
        }
        self.poll();
        self.safe.load(Ordering::Acquire) >= ticket.0
    }

    /// Waits until every guard alive when `ticket` was made has been dropped, and no other:
    /// a guard made after the ticket (it recorded an epoch `>= ticket` and sees what the
    /// ticket covers) never delays the wait, however long it lives (G12). One wait settles
    /// every ticket up to this one (`safe` advances to it). The caller has checked that it
    /// holds no guard older than the ticket itself ([`Grace::is_pinned_before`]).
    pub(crate) fn wait_for(&self, ticket: Ticket) {
        // ORDERING: [SAFE] Acquire pairs with the AcqRel `fetch_max` below (another waiter's).
        if self.safe.load(Ordering::Acquire) >= ticket.0 {
            return;
        }
        // The ticket's own bump is the target: its heavy fence comes now, after the bump
        // (on this thread, or on the one that made the ticket, which happens before us).
        let target = ticket.0;
        self.heavy_fence();
        for p in self.scan(target).waiting {
            for slot in p.slots() {
                let mut step = 0;
                while !self.slot_done(slot, target) {
                    backoff(&mut step);
                }
            }
        }
        // ORDERING: [SAFE] AcqRel: Release publishes that the guards are gone to
        // `is_done`/`collect` readers of `safe` (Acquire); Acquire orders us after earlier
        // advances.
        self.safe.fetch_max(target, Ordering::AcqRel);
    }

    /// A fence: waits until every guard alive at the call has been dropped.
    pub(crate) fn synchronize(&self) {
        let t = self.ticket();
        self.wait_for(t);
    }

    /// Advances `safe` without waiting: one bump, one heavy fence and one pass over the slots.
    pub(crate) fn poll(&self) {
        let target = self.bump();
        self.heavy_fence();
        let oldest = self.scan(target).oldest;
        // ORDERING: [SAFE] AcqRel, as in `wait_for`.
        self.safe.fetch_max(oldest, Ordering::AcqRel);
    }

    /// One pass over the participants fences scan, for a fence with target `target` (after
    /// its bump and heavy fence): takes in the participants that listed themselves again,
    /// reads each listed one's slots once, and delists those found idle. Its cost follows the
    /// listed participants (threads that pinned in the last `IDLE_EPOCHS` epochs, or hold a
    /// guard), not every thread that ever pinned.
    ///
    /// Why a delisted participant's guard is never missed: see `thread::enter` and
    /// `Grace::relist`, and the design notes (`docs/design.md`, "Fences").
    fn scan(&self, target: u64) -> Scan {
        let mut registry = lock(&self.participants);
        let registry = &mut *registry;
        let words = registry.all.len().div_ceil(64).min(self.relisted.len());
        for (w, word) in self.relisted[..words].iter().enumerate() {
            // ORDERING: [RELIST] Relaxed test first (most words are zero, and a swap would write
            // the line); the Acquire swap pairs with the SeqCst `fetch_or` in `Grace::relist`, so
            // the relisting pin's slot store is seen below. Both come after our heavy fence, the
            // store-buffer pair of the relist's fence.
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let p = registry.all[i].clone();
                registry.list(&p);
            }
        }
        let mut scan = Scan {
            waiting: Vec::new(),
            oldest: target,
        };
        let mut idle = Vec::new();
        let delistable = self.relisted.len() * 64;
        for &i in &registry.listed {
            let p = &registry.all[i];
            if self.read_slots(p, target, &mut scan) {
                continue;
            }
            // ORDERING: Relaxed: a hint (see `Participant::last`).
            let last = p.last.load(Ordering::Relaxed);
            if i < delistable && last.saturating_add(IDLE_EPOCHS) < target {
                idle.push(i);
            }
        }
        if !idle.is_empty() {
            self.delist(registry, &idle, target, &mut scan);
        }
        scan
    }

    /// Reads `p`'s slots for a fence with target `target`: adds `p` to `scan.waiting` if a
    /// slot holds a guard older than the target. True if any slot is pinned.
    fn read_slots(&self, p: &SharedParticipant, target: u64, scan: &mut Scan) -> bool {
        let (mut pinned, mut waits) = (false, false);
        for slot in p.slots() {
            // ORDERING: [SLOT] Acquire, as in `slot_done`.
            let v = slot.load(Ordering::Acquire);
            if v != 0 {
                pinned = true;
                if v < target {
                    waits = true;
                    scan.oldest = scan.oldest.min(v);
                }
            }
        }
        if waits {
            scan.waiting.push(p.clone());
        }
        pinned
    }

    /// Takes the idle participants `idle` out of the scan set: clears their `listed` flags,
    /// runs a heavy fence and re-reads their slots; one that a pin took meanwhile stays
    /// listed (the store-buffer pair of `thread::enter`'s slot store, barrier and `listed`
    /// load: either we see its slot or it sees `false` and lists itself again).
    fn delist(&self, registry: &mut Registry, idle: &[usize], target: u64, scan: &mut Scan) {
        for &i in idle {
            // ORDERING: [DELIST] Relaxed; ordered before the re-read below by the heavy fence.
            registry.all[i].listed.store(false, Ordering::Relaxed);
        }
        self.heavy_fence();
        let mut gone = false;
        for &i in idle {
            let p = registry.all[i].clone();
            if self.read_slots(&p, target, scan) {
                // ORDERING: Relaxed, under the registry lock, as in `Registry::list`.
                p.listed.store(true, Ordering::Relaxed);
            } else {
                registry.in_scan[i] = false;
                gone = true;
            }
        }
        if gone {
            let in_scan = &registry.in_scan;
            registry.listed.retain(|&i| in_scan[i]);
        }
    }

    /// Hands memory that readers may still reach to the retired list (after it was unlinked
    /// or swapped out). Freed by a later [`Grace::collect`] once no guard can see it.
    pub(crate) fn retire(&self, garbage: Garbage) {
        let tag = self.bump();
        lock(&self.retired).push((tag, garbage));
    }

    /// Retires under an existing ticket (the unmap's own fence covers it).
    pub(crate) fn retire_under(&self, ticket: Ticket, garbage: Garbage) {
        lock(&self.retired).push((ticket.0, garbage));
    }

    /// Frees every retired entry that no guard can see any more; returns how many. Runs
    /// destructors (a whole page table, possibly), so callers hold no lock.
    pub(crate) fn collect(&self) -> usize {
        // ORDERING: [SAFE] Acquire pairs with the AcqRel `fetch_max` of `safe`.
        let safe = self.safe.load(Ordering::Acquire);
        let due: Vec<(u64, Garbage)> = {
            let mut list = lock(&self.retired);
            if list.iter().all(|(tag, _)| *tag > safe) {
                return 0;
            }
            let (due, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(tag, _)| *tag <= safe);
            *list = keep;
            // ORDERING: Relaxed: read under the same mutex by `wait_for_frees`' first step,
            // and its decrement below is Release.
            self.freeing.fetch_add(1, Ordering::Relaxed);
            due
        };
        let n = due.len();
        drop(due);
        // ORDERING: [FREEING] Release pairs with the Acquire load in `wait_for_frees`: the frees
        // above are done before a waiter sees the count drop.
        self.freeing.fetch_sub(1, Ordering::Release);
        n
    }

    /// Waits until no other thread is still freeing entries it took from the retired list
    /// (so that after `synchronize`, what was retired before it is freed, not only taken).
    pub(crate) fn wait_for_frees(&self) {
        let mut step = 0;
        loop {
            let busy = {
                let _list = lock(&self.retired);
                // ORDERING: [FREEING] Acquire pairs with the Release decrement in `collect`.
                self.freeing.load(Ordering::Acquire)
            };
            if busy == 0 {
                return;
            }
            backoff(&mut step);
        }
    }

    /// Entries waiting in the retired list.
    pub(crate) fn retired_len(&self) -> usize {
        lock(&self.retired).len()
    }

    /// What a control call does on its way out: frees what is due, and advances `safe` (a
    /// poll: one bump, one heavy fence, one pass over the slots) on every
    /// `POLL_EVERY`-th call that finds something waiting, or when the list grows past
    /// `RETIRED_HIGH`. A poll per call would put a membarrier (an interrupt to every CPU running
    /// a thread of the process) in every replace; amortized it costs a few percent of one.
    pub(crate) fn maintain(&self) {
        let waiting = self.retired_len();
        if waiting == 0 {
            return;
        }
        // ORDERING: Relaxed: a counter that only spaces the polls out.
        let calls = self.maintain_calls.fetch_add(1, Ordering::Relaxed);
        if calls % POLL_EVERY == 0 || waiting >= RETIRED_HIGH {
            self.poll();
        }
        self.collect();
    }

    /// True if the calling thread holds a guard of this `Iommu`: a fence would wait for it.
    pub(crate) fn is_pinned(&self) -> bool {
        thread::is_pinned(self, u64::MAX)
    }

    /// True if the calling thread holds a guard of this `Iommu` made before `ticket`: waiting
    /// for the ticket would wait for it.
    pub(crate) fn is_pinned_before(&self, ticket: Ticket) -> bool {
        thread::is_pinned(self, ticket.0)
    }
}

impl Drop for Grace {
    fn drop(&mut self) {
        // No guard is alive (each borrows a `Device`, which holds us), so everything retired
        // can go; participants still listed in a thread's cache are marked dead so that the
        // thread drops them on its next miss.
        for p in lock(&self.participants).all.iter() {
            p.mark_dead();
        }
    }
}
