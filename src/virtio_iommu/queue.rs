//! The request queue driver (feature `virtio-iommu-queue`): rust-vmm virtio-queue split-queue
//! descriptor chains in, used-ring entries out, over [`VirtioIommu::process_batch`].
//!
//! virtio-iommu's own queue is not translated: its rings and buffers are guest-physical
//! addresses, so the memory passed here is the guest's physical memory (a
//! `vm_memory::GuestMemoryMmap`, say), never an `IommuMemory`.

use super::batch::Batch;
use super::device::VirtioIommu;
use super::event::{FaultEvent, FAULT_SIZE};
use super::wire::TAIL_SIZE;
use std::collections::VecDeque;
use std::num::Wrapping;
use std::sync::atomic::Ordering;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestMemory};

/// Bytes of a chain's device-readable part that are read. The longest request layout (PROBE,
/// 72 bytes) fits; the core ignores bytes after a request's fields, so reading fewer of them
/// changes no reply, and a guest cannot make the device allocate what it posts.
pub const MAX_READABLE: usize = 256;

/// Descriptors of one chain that are looked at (zero-length ones and the indirect table's
/// included). A chain is walked until its device-writable part holds the longest reply, or
/// to its end, or this many descriptors, whichever comes first; descriptors past that point
/// are not read. Linux posts two (request, then reply); the bound keeps what one chain costs
/// the host small whatever the guest posts (an indirect table may name 65 535).
pub const MAX_DESCRIPTORS: usize = 16;

/// Why [`VirtioIommu::process_queue`] or [`VirtioIommu::report_faults`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The pass's fences could not be waited for (`EDEADLK`: the calling thread holds a
    /// `DmaGuard` of the same `Iommu`). The pass's requests took effect; their chains are
    /// kept, unreported, and the next `process_queue` (from a thread without guards)
    /// completes them before it serves new ones. The queue thread should not hold guards.
    #[error("the queue pass's fences could not be waited for: {0}")]
    Fence(#[from] crate::Error),
    /// virtio-queue refused a used-ring entry (the used ring is outside guest memory). From
    /// `process_queue`: the entries before the refused one were added; the refused one and
    /// the rest of the pass (whose requests took effect and whose replies are written) are
    /// kept, and the next `process_queue` adds them before it serves new chains.
    #[error("virtio-queue could not add a used-ring entry: {0}")]
    Queue(virtio_queue::Error),
}

/// One popped chain: its head, its writable descriptors, and its request buffers.
pub(crate) struct Chain {
    head: u16,
    /// The non-empty device-writable descriptors, up to the first that makes the reply fit.
    writable: Vec<Descriptor>,
    readable: Vec<u8>,
    /// Bytes the reply may take (the writable part, capped).
    writable_len: usize,
    /// False if a buffer could not be read: the chain goes back unwritten, unprocessed.
    ok: bool,
}

impl Chain {
    /// Walks `chain` (at most [`MAX_DESCRIPTORS`] descriptors): reads up to `max_readable`
    /// bytes of its device-readable part and keeps its device-writable descriptors until they
    /// hold `max_writable` bytes, then stops.
    fn read<M: GuestMemory>(
        chain: DescriptorChain<&M>,
        mem: &M,
        max_readable: usize,
        max_writable: usize,
    ) -> Chain {
        let mut c = Chain {
            head: chain.head_index(),
            writable: Vec::new(),
            readable: Vec::new(),
            writable_len: 0,
            ok: true,
        };
        for d in chain.take(MAX_DESCRIPTORS) {
            if d.is_write_only() {
                if d.len() == 0 {
                    continue;
                }
                c.writable_len = c.writable_len.saturating_add(d.len() as usize);
                c.writable.push(d);
                if c.writable_len >= max_writable {
                    // The longest reply fits: nothing after this descriptor is needed.
                    break;
                }
            } else if c.readable.len() < max_readable {
                let want = (d.len() as usize).min(max_readable - c.readable.len());
                let at = c.readable.len();
                c.readable.resize(at + want, 0);
                if mem.read_slice(&mut c.readable[at..], d.addr()).is_err() {
                    c.ok = false;
                }
            }
        }
        c.writable_len = c.writable_len.min(max_writable);
        c
    }
}

/// A pass that [`VirtioIommu::process_queue`] could not finish: its requests took effect.
pub(crate) enum StalledPass {
    /// Submitted; the fences were not waited for yet, no reply is written.
    Fences { chains: Vec<Chain>, batch: Batch },
    /// Replies written; these used-ring entries (head, used length), in order, are not in the
    /// used ring yet.
    Used(Vec<(u16, u32)>),
}

/// The chains available when a pass begins: `avail.idx` read once, less the next entry to
/// pop, at most the queue's size. A pass pops no more than this, so a driver that keeps
/// posting cannot keep one pass going; what it posts meanwhile waits for the next pass.
fn available<Q: QueueT, M: GuestMemory>(queue: &Q, mem: &M) -> usize {
    // ORDERING: [AVAIL-IDX] Acquire pairs with the driver's Release store of `avail.idx` (its
    // write barrier before the index update; the driver is the guest, outside this library):
    // the ring entries and descriptors it counts are visible. Each pop reads the index again
    // with Acquire.
    match queue.avail_idx(mem, Ordering::Acquire) {
        Ok(idx) => {
            let pending = (idx - Wrapping(queue.next_avail())).0;
            usize::from(pending.min(queue.size()))
        }
        Err(_) => 0,
    }
}

impl VirtioIommu {
    /// Serves one pass of the request queue: pops the descriptor chains that were available
    /// when the call began (at most the queue's size; chains posted meanwhile wait for the
    /// next call) from `queue` over `mem` (guest-physical memory), reads each request's
    /// device-readable buffers, submits the pass's requests, waits once for their fences (one
    /// grace period for its UNMAPs, as [`VirtioIommu::process_batch`]), writes each reply
    /// into the chain's device-writable buffers, and adds each chain to the used ring with
    /// the length written. Returns how many chains it served (a stalled pass's included).
    ///
    /// Each chain is walked for at most [`MAX_DESCRIPTORS`] descriptors and
    /// [`MAX_READABLE`] request bytes, and only until its device-writable part holds the
    /// longest reply (`probe_size` + 4 bytes): what one pass costs the host is bounded by the
    /// queue's size, whatever the guest posts.
    ///
    /// A malformed chain (no device-writable part, a device-readable part too short) gets
    /// what the core gives it (a status, or the buffers back unwritten with used length 0).
    /// A chain whose buffers are not in `mem` goes back unprocessed with used length 0. Chains
    /// virtio-queue cannot walk (a descriptor index out of range, a loop) are not returned by
    /// its iterator and so are not served. The caller notifies the driver
    /// (`QueueT::needs_notification`) afterwards.
    ///
    /// If the fences cannot be waited for ([`QueueError::Fence`]: this thread holds a guard),
    /// nothing of the pass is reported; if the used ring refuses an entry
    /// ([`QueueError::Queue`]), the entries before it are reported. Either way the rest is
    /// kept, and the next call completes it first.
    pub fn process_queue<Q, M>(&mut self, queue: &mut Q, mem: &M) -> Result<usize, QueueError>
    where
        Q: QueueT,
        M: GuestMemory,
    {
        let mut served = 0;
        if let Some(stalled) = self.stalled.take() {
            served += self.complete_pass(stalled, queue, mem)?;
        }
        // The longest reply is PROBE's: probe_size bytes of properties, then the tail. A larger
        // writable part changes no reply (the tail goes right after the properties).
        let max_writable = (self.config().probe_size as usize).saturating_add(TAIL_SIZE);
        let mut chains = Vec::new();
        for _ in 0..available(queue, mem) {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            chains.push(Chain::read(chain, mem, MAX_READABLE, max_writable));
        }
        if chains.is_empty() {
            return Ok(served);
        }
        let mut batch = Batch::new(self);
        for c in chains.iter().filter(|c| c.ok) {
            batch.push(self.submit(&c.readable, c.writable_len));
        }
        served += self.complete_pass(StalledPass::Fences { chains, batch }, queue, mem)?;
        Ok(served)
    }

    /// Waits for a pass's fences, writes its replies and fills the used ring; returns how
    /// many chains it added. What cannot be done now is kept for the next call.
    fn complete_pass<Q, M>(
        &mut self,
        pass: StalledPass,
        queue: &mut Q,
        mem: &M,
    ) -> Result<usize, QueueError>
    where
        Q: QueueT,
        M: GuestMemory,
    {
        let entries = match pass {
            StalledPass::Used(entries) => entries,
            StalledPass::Fences { chains, mut batch } => {
                // The used length of each served chain, in pass order.
                let mut written = Vec::with_capacity(batch.len());
                {
                    let served: Vec<&Chain> = chains.iter().filter(|c| c.ok).collect();
                    let waited = batch.wait_with(|i, reply| {
                        let c = served[i];
                        let ok =
                            reply.len() <= c.writable_len && write_reply(mem, &c.writable, reply);
                        written.push(if ok { reply.len() } else { 0 });
                    });
                    if let Err(e) = waited {
                        self.stalled = Some(StalledPass::Fences { chains, batch });
                        return Err(QueueError::Fence(e));
                    }
                }
                let mut written = written.into_iter();
                chains
                    .iter()
                    .map(|c| {
                        let len = if c.ok { written.next().unwrap_or(0) } else { 0 };
                        // len <= writable_len, which came from a sum of u32 descriptor lengths.
                        (c.head, u32::try_from(len).unwrap_or(0))
                    })
                    .collect::<Vec<_>>()
            }
        };
        for (i, &(head, len)) in entries.iter().enumerate() {
            let before = queue.next_used();
            if let Err(e) = queue.add_used(mem, head, len) {
                // virtio-queue advances `next_used` once the entry is in the ring (only the
                // index store after it failed): that entry is placed, the next add publishes it.
                let placed = queue.next_used() != before;
                let rest = i + usize::from(placed);
                if rest < entries.len() {
                    self.stalled = Some(StalledPass::Used(entries[rest..].to_vec()));
                }
                return Err(QueueError::Queue(e));
            }
        }
        Ok(entries.len())
    }

    /// True while part of a queue pass is kept for the next [`VirtioIommu::process_queue`]:
    /// its fences could not be waited for ([`QueueError::Fence`]), or the used ring refused
    /// its entries ([`QueueError::Queue`]).
    pub fn has_stalled_pass(&self) -> bool {
        self.stalled.is_some()
    }

    /// Delivers fault reports on the event queue: for each of `events`, in order, pops one
    /// buffer the driver offered on `eventq` (over guest-physical `mem`), writes the 24-byte
    /// `struct virtio_iommu_fault` into its device-writable part and adds it to the used
    /// ring. Delivered events are removed from the front of `events`; those that found no
    /// buffer stay for a later call (the driver had none to offer: the specification lets the
    /// device drop or hold them, and holding lets the caller choose). Returns how many were
    /// delivered; the caller notifies the driver afterwards.
    ///
    /// A buffer too small for a report (or not in `mem`) is returned with used length 0 and
    /// the event tried on the next buffer. One call pops at most the buffers that were
    /// available when it began (at most the queue's size), each walked for at most
    /// [`MAX_DESCRIPTORS`] descriptors.
    pub fn report_faults<Q, M>(
        &self,
        eventq: &mut Q,
        mem: &M,
        events: &mut VecDeque<FaultEvent>,
    ) -> Result<usize, QueueError>
    where
        Q: QueueT,
        M: GuestMemory,
    {
        let mut delivered = 0;
        for _ in 0..available(eventq, mem) {
            let Some(event) = events.front() else {
                break;
            };
            let Some(chain) = eventq.pop_descriptor_chain(mem) else {
                break;
            };
            let c = Chain::read(chain, mem, 0, FAULT_SIZE);
            let written =
                c.writable_len >= FAULT_SIZE && write_reply(mem, &c.writable, &event.to_bytes());
            let len = if written { FAULT_SIZE as u32 } else { 0 };
            eventq
                .add_used(mem, c.head, len)
                .map_err(QueueError::Queue)?;
            if written {
                events.pop_front();
                delivered += 1;
            }
        }
        Ok(delivered)
    }
}

/// Scatters `reply` over the writable descriptors, in order. False if a buffer is not in
/// `mem` (nothing is reported written then).
fn write_reply<M: GuestMemory>(mem: &M, writable: &[Descriptor], mut reply: &[u8]) -> bool {
    for d in writable {
        if reply.is_empty() {
            break;
        }
        let n = (d.len() as usize).min(reply.len());
        if mem.write_slice(&reply[..n], d.addr()).is_err() {
            return false;
        }
        reply = &reply[n..];
    }
    reply.is_empty()
}
