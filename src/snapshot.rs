//! A guard's snapshot of a domain: one word that a DMA thread caches per group
//! ([`crate::grace::DomainCache`]) and a [`crate::DmaGuard`] translates through.
//!
//! The word is the address of the domain's translating part with the domain's kind in its
//! two low bits (every part is at least 8-byte aligned): tag 0 is a page table (the paging
//! fast path tests the tag and the address, nothing else), or the blocked domain when the
//! whole word is 0; tag 1 a nested domain; tag 2 an identity map. Encoding
//! ([`Snapshot::of`]) and decoding ([`Snapshot::kind`]) are the only places that know the
//! tags: a new kind of domain is one arm in each, and an implementation of [`Translate`]. Two
//! kinds also have an inline accessor that the guard tests first, without the dispatch:
//! paging (the common case) and identity (the cheapest).

use crate::domain::{Domain, DomainKind};
use crate::identity::IdentityMap;
use crate::nested::NestedDomain;
use crate::pagetable::PageTable;
use crate::translation::{Chunk, Fault, Translation};
use crate::types::Access;

const TAG: usize = 0b11;
const PAGING: usize = 0;
const NESTED: usize = 1;
const IDENTITY: usize = 2;

// The tags need two free low bits in every part's address.
const _: () = assert!(std::mem::align_of::<PageTable>() > TAG);
const _: () = assert!(std::mem::align_of::<NestedDomain>() > TAG);
const _: () = assert!(std::mem::align_of::<IdentityMap>() > TAG);

/// A domain as a guard sees it (see the module docs). Valid while the grace-period pin it
/// was taken under is held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Snapshot(usize);

impl Snapshot {
    /// The blocked domain's snapshot: every access faults `Blocked`.
    pub(crate) const BLOCKED: Snapshot = Snapshot(0);

    /// The snapshot of `domain`. The encoding.
    #[inline(always)]
    pub(crate) fn of(domain: &Domain) -> Snapshot {
        match &domain.kind {
            DomainKind::Blocked => Snapshot::BLOCKED,
            DomainKind::Paging(pt) => Snapshot(pt as *const PageTable as usize | PAGING),
            DomainKind::Nested(n) => Snapshot(n as *const NestedDomain as usize | NESTED),
            DomainKind::Identity(m) => Snapshot(m as *const IdentityMap as usize | IDENTITY),
        }
    }

    /// True for the blocked domain.
    #[inline(always)]
    pub(crate) fn is_blocked(self) -> bool {
        self.0 == 0
    }

    /// True for every kind but paging and blocked: the fast path's first test.
    #[inline(always)]
    pub(crate) fn is_tagged(self) -> bool {
        self.0 & TAG != PAGING
    }

    /// The page table of an untagged snapshot, `None` for the blocked domain. The fast path,
    /// after [`Snapshot::is_tagged`] said no.
    ///
    /// # Safety
    ///
    /// The snapshot is untagged, and the caller holds the pin it was taken under for as long
    /// as it uses `'a`.
    #[inline(always)]
    pub(crate) unsafe fn page_table<'a>(self) -> Option<&'a PageTable> {
        debug_assert!(!self.is_tagged());
        // SAFETY: an untagged non-zero snapshot is the address of a page table inside the
        // domain that the caller's pin keeps alive (a domain's page table is never replaced).
        unsafe { (self.0 as *const PageTable).as_ref() }
    }

    /// The map of an identity snapshot; `None` for every other kind. The cheapest domain has
    /// a fast path of its own, tested after the paging one.
    ///
    /// # Safety
    ///
    /// The caller holds the pin the snapshot was taken under for as long as it uses `'a`.
    #[inline(always)]
    pub(crate) unsafe fn identity<'a>(self) -> Option<&'a IdentityMap> {
        if self.0 & TAG != IDENTITY {
            return None;
        }
        // SAFETY: a snapshot tagged IDENTITY is the address of the identity map inside the
        // domain that the caller's pin keeps alive.
        unsafe { Some(&*((self.0 & !TAG) as *const IdentityMap)) }
    }

    /// The domain's translating part, whatever its kind; `None` for the blocked domain. The
    /// one dispatch on the kind.
    ///
    /// # Safety
    ///
    /// The caller holds the pin the snapshot was taken under for as long as it uses `'a`.
    #[inline]
    pub(crate) unsafe fn kind<'a>(self) -> Option<&'a dyn Translate> {
        if self.is_blocked() {
            return None;
        }
        let addr = self.0 & !TAG;
        // SAFETY: a non-zero snapshot is its tag's part at `addr`, inside the domain that the
        // caller's pin keeps alive (`Snapshot::of` made it; the domain is freed only after
        // every guard pinned before it was swapped out is gone).
        unsafe {
            Some(match self.0 & TAG {
                PAGING => &*(addr as *const PageTable),
                NESTED => &*(addr as *const NestedDomain),
                _ => &*(addr as *const IdentityMap),
            })
        }
    }
}

/// What a guard asks of a domain's translating part, whatever its kind. `iova ..= last` is
/// inside the device's aperture; the part checks its own.
pub(crate) trait Translate {
    /// The whole request, or the fault at its first IOVA that cannot be translated.
    fn translate(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        ssid: u32,
    ) -> Result<Translation<'static>, Fault>;

    /// The request's first piece (see [`crate::DmaGuard::translate_chunk`]).
    fn translate_chunk(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        ssid: u32,
    ) -> Result<Chunk, Fault>;

    /// A nested domain's stage 1.
    fn as_nested(&self) -> Option<&NestedDomain> {
        None
    }
}

impl Translate for PageTable {
    fn translate(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        _ssid: u32,
    ) -> Result<Translation<'static>, Fault> {
        PageTable::translate(self, iova, last, access)
    }

    fn translate_chunk(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        _ssid: u32,
    ) -> Result<Chunk, Fault> {
        // The chunk walk leaves the domain's aperture to its caller.
        if last > self.aperture_last() {
            return Err(self.aperture_fault(iova));
        }
        PageTable::translate_chunk(self, iova, last, access)
    }
}

impl Translate for NestedDomain {
    fn translate(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        ssid: u32,
    ) -> Result<Translation<'static>, Fault> {
        NestedDomain::translate(self, iova, last, access, ssid)
    }

    fn translate_chunk(
        &self,
        iova: u64,
        last: u64,
        access: Access,
        ssid: u32,
    ) -> Result<Chunk, Fault> {
        let mut t = NestedDomain::translate(self, iova, last, access, ssid)?;
        Ok(t.next().unwrap_or(Chunk {
            iova,
            target: 0,
            len: 0,
        }))
    }

    fn as_nested(&self) -> Option<&NestedDomain> {
        Some(self)
    }
}

impl Translate for IdentityMap {
    fn translate(
        &self,
        iova: u64,
        last: u64,
        _access: Access,
        _ssid: u32,
    ) -> Result<Translation<'static>, Fault> {
        IdentityMap::translate(self, iova, last)
    }

    #[inline]
    fn translate_chunk(
        &self,
        iova: u64,
        last: u64,
        _access: Access,
        _ssid: u32,
    ) -> Result<Chunk, Fault> {
        IdentityMap::translate_chunk(self, iova, last)
    }
}
