//! MAP and UNMAP: every check made against the domain's shadow of its mappings before viommu
//! is asked to change anything.

use super::{status_of, VirtioIommu};
use crate::types::Prot;
use crate::virtio_iommu::batch::Fence;
use crate::virtio_iommu::config::F_MMIO;
use crate::virtio_iommu::wire::{Status, MAP_F_MMIO, MAP_F_READ, MAP_F_WRITE};
use smallvec::SmallVec;

impl VirtioIommu {
    pub(super) fn map(
        &mut self,
        domain: u32,
        start: u64,
        end: u64,
        phys: u64,
        flags: u32,
    ) -> Status {
        let known = MAP_F_READ | MAP_F_WRITE | if self.has(F_MMIO) { MAP_F_MMIO } else { 0 };
        if flags & !known != 0 {
            return Status::Inval;
        }
        if !self.domain_in_range(domain) {
            return Status::Range;
        }
        let granule = self.config.granule();
        let Some(d) = self.domains.get(&domain) else {
            return Status::NoEnt;
        };
        // A bypass domain has no mappings to change (spec: INVAL).
        if end < start || d.bypass {
            return Status::Inval;
        }
        // virt_end + 1 wraps for a range that ends at 2^64 - 1: that end is aligned.
        let end_aligned = end.checked_add(1).is_none_or(|e| e % granule == 0);
        if start % granule != 0 || phys % granule != 0 || !end_aligned {
            return Status::Range;
        }
        let (lo, hi) = self.config.input_range;
        if start < lo || end > hi {
            return Status::Range;
        }
        let Some(len) = (end - start).checked_add(1) else {
            return Status::Range;
        };
        if phys.checked_add(len - 1).is_none() {
            return Status::Range;
        }
        let mut prot = Prot(0);
        if flags & MAP_F_READ != 0 {
            prot = prot | Prot::READ;
        }
        if flags & MAP_F_WRITE != 0 {
            prot = prot | Prot::WRITE;
        }
        if prot.bits() == 0 {
            // viommu has no mapping without access; the spec leaves it open.
            return Status::Inval;
        }
        // "If a mapping already exists in the requested range": INVAL.
        if let Some((_, &(last, _, _))) = d.mappings.range(..=end).next_back() {
            if last >= start {
                return Status::Inval;
            }
        }
        // A MAP over a RESV_MEM region of an attached endpoint: INVAL (viommu refuses it too).
        let hits_resv = d.endpoints.iter().any(|id| {
            self.endpoints.get(id).is_some_and(|e| {
                e.resv
                    .iter()
                    .any(|r| r.range.start <= end && r.range.end > start)
            })
        });
        if hits_resv {
            return Status::Inval;
        }
        match self.iommu.ioas_map(d.ioas, Some(start), phys, len, prot) {
            Ok(_) => {
                if let Some(d) = self.domains.get_mut(&domain) {
                    d.mappings.insert(start, (end, phys, flags));
                }
                Status::Ok
            }
            Err(e) => status_of(&e),
        }
    }

    pub(super) fn unmap(
        &mut self,
        domain: u32,
        start: u64,
        end: u64,
        reserved_set: bool,
    ) -> (Status, Option<Fence>) {
        if reserved_set {
            // Spec: MAY INVAL, and then MAY unmap; this device changes nothing.
            return (Status::Inval, None);
        }
        if !self.domain_in_range(domain) {
            return (Status::Range, None);
        }
        let Some(d) = self.domains.get_mut(&domain) else {
            return (Status::NoEnt, None);
        };
        if end < start || d.bypass {
            return (Status::Inval, None);
        }
        // The mappings the range touches, and whether it would split one.
        let mut hit: SmallVec<[u64; 4]> = SmallVec::new();
        for (&s, &(last, _, _)) in d.mappings.range(..=end).rev() {
            if last < start {
                break;
            }
            if s < start || last > end {
                return (Status::Range, None);
            }
            hit.push(s);
        }
        let (Some(&first), Some(&top)) = (hit.last(), hit.first()) else {
            // Nothing mapped in the range: success, nothing removed (spec example 1).
            return (Status::Ok, None);
        };
        let last = d.mappings.get(&top).map_or(top, |m| m.0);
        // Exactly the hit mappings lie in first ..= last: unmap them in one call.
        let result = match (last - first).checked_add(1) {
            Some(len) => self.iommu.ioas_unmap_deferred(d.ioas, first, len),
            None => self.iommu.ioas_unmap_deferred(d.ioas, 0, u64::MAX),
        };
        match result {
            Ok(c) => {
                for s in hit {
                    d.mappings.remove(&s);
                }
                (Status::Ok, Some(Fence::Unmap(c)))
            }
            Err(e) => (status_of(&e), None),
        }
    }
}
