//! PROBE: an endpoint's reserved regions as RESV_MEM properties.

use super::{ResvKind, VirtioIommu};
use crate::virtio_iommu::batch::{Completion, Reply};
use crate::virtio_iommu::wire::{
    self, Status, RESV_MEM_SIZE, RESV_MEM_T_MSI, RESV_MEM_T_RESERVED, TAIL_SIZE, T_PROBE,
};

impl VirtioIommu {
    pub(super) fn probe(&mut self, endpoint: u32, writable_len: usize) -> Completion {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return self.tail_only(T_PROBE, writable_len, Status::NoEnt);
        };
        let size = self.config.probe_size as usize;
        let Some(full) = size.checked_add(TAIL_SIZE) else {
            return Completion::unwritten();
        };
        if writable_len < full {
            return self.tail_only(T_PROBE, writable_len, Status::Inval);
        }
        let mut reply = Reply::from_elem(0, full);
        let mut at = 0;
        for r in &ep.resv {
            let subtype = match r.kind {
                ResvKind::Reserved => RESV_MEM_T_RESERVED,
                ResvKind::Msi => RESV_MEM_T_MSI,
            };
            // add_endpoint checked that every property and a NONE terminator fit.
            let end = r.range.end.saturating_sub(1);
            if let Some(out) = reply.get_mut(at..size) {
                if wire::put_resv_mem(out, subtype, r.range.start, end) {
                    at += RESV_MEM_SIZE;
                }
            }
        }
        // The rest of the properties stay zero: a NONE property ends the list.
        Completion::with_reply(reply, Status::Ok)
    }
}
