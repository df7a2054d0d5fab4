//! Completions and queue passes: a request is reported complete (its reply written, its
//! buffers returned) only once its fence holds, and every fence of one pass is settled by
//! one grace period.
//!
//! [`VirtioIommu::submit`] does a request's work at once: a MAP is in every domain, an
//! UNMAP's range is gone from every domain (no guard made afterwards translates into it).
//! What may remain is DMA that a guard made earlier still has in flight to the old pages;
//! the UNMAP is done with [`Iommu::ioas_unmap_deferred`] and its [`crate::UnmapCompletion`]
//! travels in the request's [`Completion`]. A [`Batch`] waits for the last fence it holds,
//! which completes all the earlier ones (one grace period for the pass), and only then
//! hands out the replies.

use super::device::VirtioIommu;
use super::wire::{self, Status};
use crate::error::Result;
use crate::iommu::{Iommu, UnmapCompletion};
use smallvec::SmallVec;

/// A reply's bytes: a tail (4 bytes) inline, a PROBE reply on the heap.
pub(crate) type Reply = SmallVec<[u8; 8]>;

/// What must hold before a request may be reported complete.
pub(crate) enum Fence {
    /// An unmap's grace period.
    Unmap(UnmapCompletion),
    /// A full [`Iommu::synchronize`] (the fallback when an unmap fence was lost to
    /// `EDEADLK`, or could not be started).
    Synchronize,
}

impl Fence {
    fn is_complete(&self) -> bool {
        match self {
            Fence::Unmap(c) => c.is_complete(),
            Fence::Synchronize => false,
        }
    }

    /// Waits; `EDEADLK` if the calling thread holds a guard of the `Iommu`.
    pub(crate) fn wait(self, iommu: &Iommu) -> Result<()> {
        match self {
            Fence::Unmap(c) => c.wait().map(|_| ()),
            Fence::Synchronize => iommu.synchronize(),
        }
    }
}

/// The outcome of one request whose fence may not have held yet: the bytes to write at the
/// start of its device-writable buffer (the used length is their count) and its fence.
#[must_use = "a request is complete only once its fence holds: put it in a Batch and wait"]
pub struct Completion {
    /// Inline for a tail (and any reply up to 8 bytes); PROBE's longer reply spills.
    reply: Reply,
    status: Option<Status>,
    pub(crate) fence: Option<Fence>,
}

impl Completion {
    pub(crate) fn unwritten() -> Completion {
        Completion {
            reply: Reply::new(),
            status: None,
            fence: None,
        }
    }

    pub(crate) fn with_reply(reply: Reply, status: Status) -> Completion {
        Completion {
            reply,
            status: Some(status),
            fence: None,
        }
    }

    /// The status the tail will carry; `None` when the buffers go back unwritten (an
    /// unknown request type, a buffer too short to find the tail).
    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// The used length: bytes written into the device-writable buffer.
    pub fn used_len(&self) -> usize {
        self.reply.len()
    }

    /// True if the request waits for no fence (or its fence already holds).
    pub fn is_complete(&self) -> bool {
        self.fence.as_ref().is_none_or(Fence::is_complete)
    }

    /// True if the request carries a fence (an UNMAP that removed something, or a request
    /// that freed a domain with mappings).
    pub fn has_fence(&self) -> bool {
        self.fence.is_some()
    }
}

/// The requests of one queue pass, completed together after one wait.
#[must_use = "the replies are released by `Batch::wait`"]
pub struct Batch {
    iommu: Iommu,
    items: Vec<Completion>,
}

impl Batch {
    /// An empty batch for `device`'s requests.
    pub fn new(device: &VirtioIommu) -> Batch {
        Batch {
            iommu: device.iommu().clone(),
            items: Vec::new(),
        }
    }

    /// Adds a submitted request; its index is its position in [`Batch::wait`]'s result.
    pub fn push(&mut self, c: Completion) {
        self.items.push(c);
    }

    /// Requests in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if the batch holds no request.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if every fence of the batch holds (never waits).
    pub fn is_complete(&self) -> bool {
        self.items.iter().all(Completion::is_complete)
    }

    /// Waits for the batch's fences, the last first (its grace period covers the ones before
    /// it), and returns the replies in submission order: `(bytes to write, used length)`.
    ///
    /// `EDEADLK` if the calling thread holds a guard of the `Iommu` and a fence has not
    /// completed; the batch then keeps its replies, and `wait` may be called again from a
    /// thread without guards.
    pub fn wait(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut replies = Vec::with_capacity(self.items.len());
        self.wait_with(|_, reply| replies.push(reply.to_vec()))?;
        Ok(replies)
    }

    /// [`Batch::wait`], handing each reply to `f` (its index, its bytes) instead of collecting
    /// them: the queue drivers' path, which copies each reply straight into its buffer.
    pub(crate) fn wait_with(&mut self, mut f: impl FnMut(usize, &[u8])) -> Result<()> {
        for i in (0..self.items.len()).rev() {
            if let Some(f) = self.items[i].fence.take() {
                match f {
                    Fence::Unmap(c) if !c.is_complete() => {
                        if let Err(e) = c.wait() {
                            // The completion was consumed: fall back to a full fence.
                            self.items[i].fence = Some(Fence::Synchronize);
                            return Err(e);
                        }
                    }
                    Fence::Unmap(c) => {
                        // Already complete: free what it covered.
                        let _ = c.wait();
                    }
                    Fence::Synchronize => {
                        if let Err(e) = self.iommu.synchronize() {
                            self.items[i].fence = Some(Fence::Synchronize);
                            return Err(e);
                        }
                    }
                }
            }
        }
        for (i, c) in self.items.drain(..).enumerate() {
            f(i, &c.reply);
        }
        Ok(())
    }
}

/// One request of a queue pass, as a queue driver holds it: the device-readable bytes, the
/// device-writable buffer, and (after [`VirtioIommu::process_batch`]) the used length.
#[derive(Debug)]
pub struct RequestBuffers<'a> {
    /// The device-readable part (head and fields).
    pub readable: &'a [u8],
    /// The device-writable part (tail; properties and tail for PROBE).
    pub writable: &'a mut [u8],
    /// Bytes the device wrote into `writable` (0 until processed, and for requests returned
    /// unwritten).
    pub used: usize,
}

impl<'a> RequestBuffers<'a> {
    /// Splits a request laid out as one struct (head, fields, then the device-writable part)
    /// where the Linux driver splits it ([`wire::write_offset`]). `None` if too short.
    pub fn from_struct(request: &'a mut [u8]) -> Option<RequestBuffers<'a>> {
        let at = wire::write_offset(request)?;
        let (readable, writable) = request.split_at_mut(at);
        Some(RequestBuffers {
            readable,
            writable,
            used: 0,
        })
    }
}

impl VirtioIommu {
    /// Processes one queue pass: every request in order, then one wait for the pass's
    /// fences, then every reply written and every `used` set. No reply is written before the
    /// fences hold, so a request is never reported complete early.
    ///
    /// `EDEADLK` (nothing written; the requests' effects are in place and their fences
    /// pending) only if the calling thread holds a `DmaGuard` of the same `Iommu`: a queue
    /// thread must not.
    pub fn process_batch(&mut self, requests: &mut [RequestBuffers<'_>]) -> Result<()> {
        let mut batch = Batch::new(self);
        for r in requests.iter() {
            batch.push(self.submit(r.readable, r.writable.len()));
        }
        batch.wait_with(|i, reply| {
            let r = &mut requests[i];
            if let Some(out) = r.writable.get_mut(..reply.len()) {
                out.copy_from_slice(reply);
                r.used = reply.len();
            }
        })
    }

    /// One request, completed before returning (its fence waited for): writes the reply into
    /// `writable` and returns the used length.
    pub fn handle(&mut self, readable: &[u8], writable: &mut [u8]) -> Result<usize> {
        let mut r = [RequestBuffers {
            readable,
            writable,
            used: 0,
        }];
        self.process_batch(&mut r)?;
        Ok(r[0].used)
    }
}
