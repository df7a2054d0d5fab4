//! Domains: what a group translates through. The built-in blocked domain, which faults every
//! DMA; a paging domain: a page table that mirrors one IOAS; a nested domain: a guest's
//! stage-1 table over a paging parent ([`crate::nested`]); or an identity domain: every IOVA
//! inside a list of ranges is its own target ([`crate::identity`]).
//!
//! A domain is immutable in kind and aperture once built; only its page-table entries
//! change, under its IOAS's lock. Domains are reference counted: a group's active-domain cell,
//! the HWPT object, its IOAS's mirror list and every reader's snapshot each hold one, so a
//! domain's memory is freed when the last of them lets go (never while a reader can walk it).

use crate::grace::Counters;
use crate::identity::IdentityMap;
use crate::nested::NestedDomain;
use crate::pagetable::PageTable;
use crate::sync::{Arc, Ordering};

pub(crate) enum DomainKind {
    /// Faults every access.
    Blocked,
    /// Translates through a page table.
    Paging(PageTable),
    /// Translates through a guest's stage 1, then its parent's page table.
    Nested(NestedDomain),
    /// Translates an IOVA inside its ranges to itself.
    Identity(IdentityMap),
}

/// A translation domain.
pub(crate) struct Domain {
    pub(crate) kind: DomainKind,
    counters: Option<Arc<Counters>>,
}

impl Domain {
    pub(crate) fn blocked() -> Domain {
        Domain {
            kind: DomainKind::Blocked,
            counters: None,
        }
    }

    /// An empty paging domain for IOVAs `0 .. 2^iova_bits`.
    pub(crate) fn paging(iova_bits: u8, counters: &Arc<Counters>) -> Domain {
        counters.domains.fetch_add(1, Ordering::Relaxed);
        Domain {
            kind: DomainKind::Paging(PageTable::new(iova_bits, counters.clone())),
            counters: Some(counters.clone()),
        }
    }

    /// A nested domain (`nested`'s parent is a paging domain).
    pub(crate) fn nested(nested: NestedDomain, counters: &Arc<Counters>) -> Domain {
        counters.domains.fetch_add(1, Ordering::Relaxed);
        Domain {
            kind: DomainKind::Nested(nested),
            counters: Some(counters.clone()),
        }
    }

    /// An identity domain over `map`'s ranges.
    pub(crate) fn identity(map: IdentityMap, counters: &Arc<Counters>) -> Domain {
        counters.domains.fetch_add(1, Ordering::Relaxed);
        Domain {
            kind: DomainKind::Identity(map),
            counters: Some(counters.clone()),
        }
    }

    /// The page table of a paging domain.
    pub(crate) fn page_table(&self) -> Option<&PageTable> {
        match &self.kind {
            DomainKind::Paging(pt) => Some(pt),
            _ => None,
        }
    }

    /// The stage 1 of a nested domain.
    pub(crate) fn as_nested(&self) -> Option<&NestedDomain> {
        match &self.kind {
            DomainKind::Nested(n) => Some(n),
            _ => None,
        }
    }

    /// The ranges of an identity domain.
    pub(crate) fn as_identity(&self) -> Option<&IdentityMap> {
        match &self.kind {
            DomainKind::Identity(m) => Some(m),
            _ => None,
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if let Some(c) = &self.counters {
            c.domains.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
