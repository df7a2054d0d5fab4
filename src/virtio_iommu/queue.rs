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
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestMemory};

/// Bytes of a chain's device-readable part that are read. The longest request layout (PROBE,
/// 72 bytes) fits; the core ignores bytes after a request's fields, so reading fewer of them
/// changes no reply, and a guest cannot make the device allocate what it posts.
pub const MAX_READABLE: usize = 256;

/// Why [`VirtioIommu::process_queue`] or [`VirtioIommu::report_faults`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The pass's fences could not be waited for (`EDEADLK`: the calling thread holds a
    /// `DmaGuard` of the same `Iommu`). The pass's requests took effect; their chains are
    /// kept, unreported, and the next `process_queue` (from a thread without guards)
    /// completes them before it serves new ones. The queue thread should not hold guards.
    #[error("the queue pass's fences could not be waited for: {0}")]
    Fence(#[from] crate::Error),
    /// virtio-queue refused a used-ring entry (the used ring is outside guest memory).
    #[error("virtio-queue could not add a used-ring entry: {0}")]
    Queue(virtio_queue::Error),
}

/// One popped chain: its head, its writable descriptors, and its request buffers.
struct Chain {
    head: u16,
    writable: Vec<Descriptor>,
    readable: Vec<u8>,
    /// Bytes the reply may take (the writable part, capped).
    writable_len: usize,
    /// False if a buffer could not be read: the chain goes back unwritten, unprocessed.
    ok: bool,
}

/// A pass whose requests were submitted but whose fences were not waited for yet.
pub(crate) struct StalledPass {
    chains: Vec<Chain>,
    batch: Batch,
}

impl VirtioIommu {
    /// Serves one pass of the request queue: pops every available descriptor chain from
    /// `queue` over `mem` (guest-physical memory), reads each request's device-readable
    /// buffers, submits the pass's requests, waits once for their fences (one grace period
    /// for its UNMAPs, as [`VirtioIommu::process_batch`]), writes each reply into the chain's
    /// device-writable buffers, and adds each chain to the used ring with the length
    /// written. Returns how many chains it served (a stalled pass's included).
    ///
    /// A malformed chain (no device-writable part, a device-readable part too short) gets
    /// what the core gives it (a status, or the buffers back unwritten with used length 0).
    /// A chain whose buffers are not in `mem` goes back unprocessed with used length 0. Chains
    /// virtio-queue cannot walk (a descriptor index out of range, a loop) are not returned by
    /// its iterator and so are not served. The caller notifies the driver
    /// (`QueueT::needs_notification`) afterwards.
    ///
    /// If the fences cannot be waited for ([`QueueError::Fence`]: this thread holds a guard),
    /// nothing of the pass is reported; the next call completes it first.
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
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut c = Chain {
                head,
                writable: Vec::new(),
                readable: Vec::new(),
                writable_len: 0,
                ok: true,
            };
            let mut writable_len = 0usize;
            for d in chain {
                if d.is_write_only() {
                    writable_len = writable_len.saturating_add(d.len() as usize);
                    c.writable.push(d);
                } else if c.readable.len() < MAX_READABLE {
                    let want = (d.len() as usize).min(MAX_READABLE - c.readable.len());
                    let at = c.readable.len();
                    c.readable.resize(at + want, 0);
                    if mem.read_slice(&mut c.readable[at..], d.addr()).is_err() {
                        c.ok = false;
                    }
                }
            }
            c.writable_len = writable_len.min(max_writable);
            chains.push(c);
        }
        if chains.is_empty() {
            return Ok(served);
        }
        let mut batch = Batch::new(self);
        for c in chains.iter().filter(|c| c.ok) {
            batch.push(self.submit(&c.readable, c.writable_len));
        }
        served += self.complete_pass(StalledPass { chains, batch }, queue, mem)?;
        Ok(served)
    }

    /// Waits for a pass's fences, then writes its replies and fills the used ring. If the
    /// wait fails the pass is kept for the next call.
    fn complete_pass<Q, M>(
        &mut self,
        mut pass: StalledPass,
        queue: &mut Q,
        mem: &M,
    ) -> Result<usize, QueueError>
    where
        Q: QueueT,
        M: GuestMemory,
    {
        // The used length of each served chain, in pass order.
        let mut written = Vec::with_capacity(pass.chains.len());
        {
            let served: Vec<&Chain> = pass.chains.iter().filter(|c| c.ok).collect();
            let waited = pass.batch.wait_with(|i, reply| {
                let c = served[i];
                let ok = reply.len() <= c.writable_len && write_reply(mem, &c.writable, reply);
                written.push(if ok { reply.len() } else { 0 });
            });
            if let Err(e) = waited {
                self.stalled = Some(pass);
                return Err(QueueError::Fence(e));
            }
        }
        let mut written = written.into_iter();
        for c in &pass.chains {
            let len = if c.ok { written.next().unwrap_or(0) } else { 0 };
            // len <= writable_len, which came from the sum of u32 descriptor lengths.
            let len = u32::try_from(len).unwrap_or(0);
            queue
                .add_used(mem, c.head, len)
                .map_err(QueueError::Queue)?;
        }
        Ok(pass.chains.len())
    }

    /// True while a queue pass waits for its fences ([`QueueError::Fence`]).
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
    /// the event tried on the next buffer.
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
        while let Some(event) = events.front() {
            let Some(chain) = eventq.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let writable: Vec<Descriptor> = chain.filter(|d| d.is_write_only()).collect();
            let room: usize = writable.iter().map(|d| d.len() as usize).sum();
            let written = room >= FAULT_SIZE && write_reply(mem, &writable, &event.to_bytes());
            let len = if written { FAULT_SIZE as u32 } else { 0 };
            eventq.add_used(mem, head, len).map_err(QueueError::Queue)?;
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
