//! The result of a translation: the maximal contiguous chunks that cover a DMA request, or
//! the fault that stopped it.

use smallvec::SmallVec;
use std::fmt;
use std::marker::PhantomData;

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
    next: usize,
    _guard: PhantomData<&'g ()>,
}

impl<'g> Translation<'g> {
    pub(crate) fn new(chunks: ChunkVec) -> Translation<'g> {
        Translation {
            chunks,
            next: 0,
            _guard: PhantomData,
        }
    }

    pub(crate) fn rebind<'h>(self) -> Translation<'h> {
        Translation {
            chunks: self.chunks,
            next: self.next,
            _guard: PhantomData,
        }
    }

    /// The chunks not yet yielded, as a slice.
    pub fn as_slice(&self) -> &[Chunk] {
        &self.chunks[self.next..]
    }

    /// True if the translation spilled to the heap (more than [`INLINE_CHUNKS`] pieces).
    pub fn spilled(&self) -> bool {
        self.chunks.spilled()
    }
}

impl Iterator for Translation<'_> {
    type Item = Chunk;

    #[inline]
    fn next(&mut self) -> Option<Chunk> {
        let c = self.chunks.get(self.next).copied();
        self.next += usize::from(c.is_some());
        c
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.chunks.len() - self.next;
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
