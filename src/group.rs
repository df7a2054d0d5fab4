//! Groups: devices that must share one domain.
//!
//! A group's active domain sits behind one [`DomainCell`] (an `arc_swap::ArcSwap` in
//! production). Every device of the group reads it, so one `swap` switches them all at the
//! same instant (G3), and a replace is that one store: the new domain is complete before it
//! is published (G7), and a reader's snapshot keeps the old one alive and unchanged for as long
//! as its guard lives (G1, G2).

use crate::domain::Domain;
use crate::sync::{Arc, DomainCell};
use crate::types::GroupId;

/// The part of a group that DMA threads read; shared by the group's `Device` handles.
pub(crate) struct GroupShared {
    pub(crate) id: GroupId,
    pub(crate) active: DomainCell<Domain>,
}

impl GroupShared {
    pub(crate) fn new(id: GroupId, blocked: Arc<Domain>) -> GroupShared {
        GroupShared {
            id,
            active: DomainCell::new(blocked),
        }
    }
}
