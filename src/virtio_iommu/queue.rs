//! The request queue driver (feature `virtio-iommu-queue`): rust-vmm virtio-queue split-queue
//! descriptor chains in, used-ring entries out, over [`VirtioIommu::process_batch`].
//!
//! virtio-iommu's own queue is not translated: its rings and buffers are guest-physical
//! addresses, so the memory passed here is the guest's physical memory (a
//! `vm_memory::GuestMemoryMmap`, say), never an `IommuMemory`.

use super::device::VirtioIommu;
use super::wire::TAIL_SIZE;
use super::RequestBuffers;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestMemory};

/// Bytes of a chain's device-readable part that are read. The longest request layout (PROBE,
/// 72 bytes) fits; the core ignores bytes after a request's fields, so reading fewer of them
/// changes no reply, and a guest cannot make the device allocate what it posts.
pub const MAX_READABLE: usize = 256;

/// Why [`VirtioIommu::process_queue`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The pass's fences could not be waited for (`EDEADLK`: the calling thread holds a
    /// `DmaGuard` of the same `Iommu`). The pass's requests took effect, but their chains
    /// were not added to the used ring, because they cannot be reported complete; the queue
    /// thread must not hold guards.
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
    reply: Vec<u8>,
    /// False if a buffer could not be read: the chain goes back unwritten, unprocessed.
    ok: bool,
}

impl VirtioIommu {
    /// Serves one pass of the request queue: pops every available descriptor chain from
    /// `queue` over `mem` (guest-physical memory), reads each request's device-readable
    /// buffers, processes the pass with [`VirtioIommu::process_batch`] (one grace period for
    /// its UNMAPs), writes each reply into the chain's device-writable buffers, and adds each
    /// chain to the used ring with the length written. Returns how many chains it served.
    ///
    /// A malformed chain (no device-writable part, a device-readable part too short) gets
    /// what the core gives it (a status, or the buffers back unwritten with used length 0).
    /// A chain whose buffers are not in `mem` goes back unprocessed with used length 0. Chains
    /// virtio-queue cannot walk (a descriptor index out of range, a loop) are not returned by
    /// its iterator and so are not served. The caller notifies the driver
    /// (`QueueT::needs_notification`) afterwards.
    pub fn process_queue<Q, M>(&mut self, queue: &mut Q, mem: &M) -> Result<usize, QueueError>
    where
        Q: QueueT,
        M: GuestMemory,
    {
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
                reply: Vec::new(),
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
            c.reply = vec![0u8; writable_len.min(max_writable)];
            chains.push(c);
        }

        let mut pass: Vec<RequestBuffers<'_>> = Vec::with_capacity(chains.len());
        let mut used = Vec::with_capacity(chains.len());
        for c in chains.iter_mut().filter(|c| c.ok) {
            pass.push(RequestBuffers {
                readable: &c.readable,
                writable: &mut c.reply,
                used: 0,
            });
        }
        self.process_batch(&mut pass)?;
        used.extend(pass.iter().map(|r| r.used));
        drop(pass);

        let mut used = used.into_iter();
        for c in &chains {
            let len = if c.ok {
                let n = used.next().unwrap_or(0);
                if write_reply(mem, &c.writable, &c.reply[..n]) {
                    n
                } else {
                    0
                }
            } else {
                0
            };
            // len <= max_writable, which came from the sum of u32 descriptor lengths.
            let len = u32::try_from(len).unwrap_or(0);
            queue
                .add_used(mem, c.head, len)
                .map_err(QueueError::Queue)?;
        }
        Ok(chains.len())
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
