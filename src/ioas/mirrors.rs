//! The mirror list of an IOAS: every paging domain built on it, committed (named by its HWPT)
//! or pending (populated by a call that has not committed yet).
//!
//! A pending domain narrows nothing: the IOAS's limit ([`IoasState::limit`]) counts committed
//! domains only, so a map that a failed attach would have refused is never refused because of
//! it. A map past a pending domain's aperture *spoils* it instead: the map skips it, and its
//! call finds it spoiled at commit and plans again (populating anew, whose check then fails
//! with the map in place, as if the map had come first).

use super::IoasState;
use crate::domain::Domain;
use crate::sync::Arc;
use crate::types::ObjId;

/// One domain of the mirror list.
pub(super) struct Mirror {
    /// The HWPT; `None` while pending.
    pub(super) hwpt: Option<ObjId>,
    pub(super) domain: Arc<Domain>,
    /// A pending domain that a map could not reach (past its aperture): it no longer holds
    /// the IOAS's areas and is never committed.
    pub(super) spoiled: bool,
}

impl IoasState {
    /// Fills `domain` with every area of this IOAS and adds it to the mirror list as
    /// pending, so that maps and unmaps from now on reach it too (G7). Work that grows with
    /// the IOAS, done under this IOAS's lock only (G14).
    pub(crate) fn add_pending(&mut self, domain: Domain) -> Arc<Domain> {
        if let Some(pt) = domain.page_table() {
            for (&start, a) in &self.areas {
                pt.map(start, a.target, a.last - start + 1, a.prot);
            }
        }
        let domain = Arc::new(domain);
        self.domains.push(Mirror {
            hwpt: None,
            domain: domain.clone(),
            spoiled: false,
        });
        domain
    }

    /// True if `domain` is pending here and still holds every area (not spoiled).
    pub(crate) fn pending_intact(&self, domain: &Arc<Domain>) -> bool {
        self.domains
            .iter()
            .any(|m| m.hwpt.is_none() && !m.spoiled && Arc::ptr_eq(&m.domain, domain))
    }

    /// Names a pending domain with its HWPT id (the HWPT's commit; the caller checked
    /// [`IoasState::pending_intact`] under the same lock).
    pub(crate) fn commit_pending(&mut self, domain: &Arc<Domain>, hwpt: ObjId) {
        for m in &mut self.domains {
            if m.hwpt.is_none() && Arc::ptr_eq(&m.domain, domain) {
                debug_assert!(!m.spoiled, "committing a spoiled domain");
                m.hwpt = Some(hwpt);
                self.refresh_limit();
                return;
            }
        }
        debug_assert!(false, "committing a domain that is not pending");
    }

    /// Drops a pending domain that its call did not commit.
    pub(crate) fn discard_pending(&mut self, domain: &Arc<Domain>) {
        self.domains
            .retain(|m| m.hwpt.is_some() || !Arc::ptr_eq(&m.domain, domain));
    }

    /// Removes a HWPT's domain from the mirror list.
    pub(crate) fn remove_domain(&mut self, hwpt: ObjId) {
        self.domains.retain(|m| m.hwpt != Some(hwpt));
        self.refresh_limit();
    }

    /// Every domain of the list, committed or pending, spoiled or not.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &Arc<Domain>> {
        self.domains.iter().map(|m| &m.domain)
    }

    /// The domains that hold every area: committed ones and intact pending ones.
    pub(super) fn mirrors(&self) -> impl Iterator<Item = &Arc<Domain>> {
        self.domains
            .iter()
            .filter(|m| !m.spoiled)
            .map(|m| &m.domain)
    }

    /// HWPTs built on this IOAS (pending domains do not count: their call may still fail).
    pub(crate) fn hwpt_count(&self) -> usize {
        self.domains.iter().filter(|m| m.hwpt.is_some()).count()
    }
}

#[cfg(all(test, not(viommu_loom)))]
mod tests {
    use super::*;
    use crate::grace::Counters;
    use crate::types::Prot;

    /// A pending domain narrows nothing: a map past its aperture succeeds and spoils it, so
    /// that its call re-plans; an attach that then fails leaves the IOAS's limit as it was.
    #[test]
    fn a_pending_domain_narrows_nothing_and_a_map_past_it_spoils_it() {
        let counters = Arc::new(Counters::default());
        let mut state = IoasState::default();
        state.map(Some(0), 0, 0x1000, Prot::RW).unwrap();
        let narrow = state.add_pending(Domain::paging(32, &counters));
        assert_eq!(state.limit(), u64::MAX);
        assert!(state.pending_intact(&narrow));
        // Past the pending domain's 4 GiB aperture: allowed, and the domain is spoiled.
        state.map(Some(1 << 40), 0, 0x1000, Prot::RW).unwrap();
        assert!(!state.pending_intact(&narrow));
        // Inside it: the spoiled domain is left alone.
        state.map(Some(0x1000), 0, 0x1000, Prot::RW).unwrap();
        let pt = narrow.page_table().unwrap();
        assert!(pt.lookup(0x1000).is_none());
        assert!(pt.lookup(0).is_some());
        state.discard_pending(&narrow);
        assert_eq!(state.limit(), u64::MAX);
        // A committed domain narrows the limit.
        let wide = state.add_pending(Domain::paging(48, &counters));
        assert!(state.pending_intact(&wide));
        state.commit_pending(&wide, ObjId(9));
        assert_eq!(state.limit(), (1 << 48) - 1);
    }
}
