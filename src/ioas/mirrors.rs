//! The mirror list of an IOAS: every paging domain built on it, committed (named by its HWPT)
//! or pending (populated by a call that has not committed yet).

use super::IoasState;
use crate::domain::Domain;
use crate::sync::Arc;
use crate::types::ObjId;

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
        self.domains.push((None, domain.clone()));
        self.refresh_limit();
        domain
    }

    /// Names a pending domain with its HWPT id (the HWPT's commit).
    pub(crate) fn commit_pending(&mut self, domain: &Arc<Domain>, hwpt: ObjId) {
        for (id, d) in &mut self.domains {
            if id.is_none() && Arc::ptr_eq(d, domain) {
                *id = Some(hwpt);
                return;
            }
        }
        debug_assert!(false, "committing a domain that is not pending");
    }

    /// Drops a pending domain that its call did not commit.
    pub(crate) fn discard_pending(&mut self, domain: &Arc<Domain>) {
        self.domains
            .retain(|(id, d)| id.is_some() || !Arc::ptr_eq(d, domain));
        self.refresh_limit();
    }

    /// Removes a HWPT's domain from the mirror list.
    pub(crate) fn remove_domain(&mut self, hwpt: ObjId) {
        self.domains.retain(|(id, _)| *id != Some(hwpt));
        self.refresh_limit();
    }

    /// Every domain mirroring this IOAS, committed or pending.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &Arc<Domain>> {
        self.domains.iter().map(|(_, d)| d)
    }

    /// HWPTs built on this IOAS (pending domains do not count: their call may still fail).
    pub(crate) fn hwpt_count(&self) -> usize {
        self.domains.iter().filter(|(id, _)| id.is_some()).count()
    }
}
