//! The result of a translation: the maximal contiguous chunks that cover a DMA request, or
//! the fault that stopped it.

use smallvec::SmallVec;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;

/// Chunks kept inline before a translation spills to the heap. A request that lands in at
/// most this many discontiguous pieces allocates nothing; the one-chunk case (the common
/// one: a buffer inside one page or in contiguous memory) never does.
pub const INLINE_CHUNKS: usize = 2;

pub(crate) type ChunkVec = SmallVec<[Chunk; INLINE_CHUNKS]>;

/// The chunks that cover a translated request, in IOVA order.
///
/// Chunks are maximal: neighbouring pages whose targets are contiguous form one chunk, also
/// across separately mapped areas. A `Translation` made through a [`crate::DmaGuard`] cannot
/// outlive it: the emulator performs its memory access while the guard pins the mapping.
#[derive(Clone, Debug)]
pub struct Translation<'g> {
    chunks: ChunkVec,
    /// One past the index of the next chunk to yield. Never zero: the niche lets
    /// `Result<Translation, Fault>` and `Option<Translation>` carry no tag of their own, so
    /// moving a translation out of them is whole-word copies (with a separate one-byte tag
    /// the compiler copied the payload at an odd offset, and the reads that followed stalled
    /// on store forwarding: 3x the time of a hit, measured).
    next: NonZeroUsize,
    _guard: PhantomData<&'g ()>,
}

impl<'g> Translation<'g> {
    #[inline(always)]
    pub(crate) fn new(chunks: ChunkVec) -> Translation<'g> {
        Translation {
            chunks,
            next: NonZeroUsize::MIN,
            _guard: PhantomData,
        }
    }

    /// A translation of one chunk, built in place (no capacity check, no length update).
    #[inline(always)]
    pub(crate) fn one(chunk: Chunk) -> Translation<'g> {
        const EMPTY: Chunk = Chunk {
            iova: 0,
            target: 0,
            len: 0,
        };
        let mut buf = [EMPTY; INLINE_CHUNKS];
        buf[0] = chunk;
        Translation::new(ChunkVec::from_buf_and_len(buf, 1))
    }

    #[inline(always)]
    pub(crate) fn rebind<'h>(self) -> Translation<'h> {
        Translation {
            chunks: self.chunks,
            next: self.next,
            _guard: PhantomData,
        }
    }

    /// The chunks not yet yielded, as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[Chunk] {
        &self.chunks[self.next.get() - 1..]
    }

    /// True if the translation spilled to the heap (more than [`INLINE_CHUNKS`] pieces).
    pub fn spilled(&self) -> bool {
        self.chunks.spilled()
    }
}

impl Iterator for Translation<'_> {
    type Item = Chunk;

    #[inline(always)]
    fn next(&mut self) -> Option<Chunk> {
        let c = self.chunks.get(self.next.get() - 1).copied();
        self.next = self.next.saturating_add(usize::from(c.is_some()));
        c
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.chunks.len() - (self.next.get() - 1);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Translation<'_> {}
impl std::iter::FusedIterator for Translation<'_> {}

/// One contiguous piece of a translation: `len` bytes at `iova` go to `target ..`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Chunk {
    /// First IOVA of the piece.
    pub iova: u64,
    /// Where that IOVA lands (a guest-physical or host address: whatever the mapping named).
    pub target: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Why a translation failed, and where.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fault {
    /// The first IOVA of the request that could not be translated.
    pub iova: u64,
    /// The reason.
    pub kind: FaultKind,
}

/// The reason of a [`Fault`].
///
/// Non-exhaustive: kinds will be added (PASID and nested stage-1 faults), so a `match` on it
/// needs a wildcard arm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum FaultKind {
    /// Nothing is mapped at the IOVA.
    Unmapped,
    /// Mapped, but not with the permission the access needs.
    Permission,
    /// The device is on the blocked domain (not attached, or detached).
    Blocked,
    /// The IOVA (or the end of the request) lies outside the device's or domain's aperture.
    Aperture,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.kind {
            FaultKind::Unmapped => "nothing is mapped there",
            FaultKind::Permission => "the mapping does not allow this access",
            FaultKind::Blocked => "the device is on the blocked domain",
            FaultKind::Aperture => "the address is outside the aperture",
        };
        write!(f, "DMA fault at IOVA {:#x}: {why}", self.iova)
    }
}

impl std::error::Error for Fault {}
