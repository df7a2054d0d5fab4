//! What waits in the retired list for its grace period.

use crate::domain::Domain;
use crate::pagetable::RetiredTables;
use crate::sync::Arc;

/// Memory a guard may still reach. Dropping it frees it; that happens only in
/// [`super::Grace::collect`], on a control-plane thread, once no guard can see it.
// The payloads are never read: they are held for their `Drop`.
#[allow(dead_code)]
pub(crate) enum Garbage {
    /// A domain swapped out of a group's cell, or released by its HWPT: the last references
    /// that the control plane holds (a reader never holds one).
    Domain(Arc<Domain>),
    /// Page-table nodes an unmap emptied and unlinked.
    Tables(RetiredTables),
    /// PASID cells and table leaves a detach unlinked.
    Pasid(crate::pasid::PasidGarbage),
}
