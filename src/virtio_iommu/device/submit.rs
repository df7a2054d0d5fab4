//! One request: parsed, checked against the negotiated features, handed to the handler of
//! its kind; the reply is at least its tail, where the request's layout puts it.

use super::VirtioIommu;
use crate::virtio_iommu::batch::{Completion, Reply};
use crate::virtio_iommu::config::{F_MAP_UNMAP, F_PROBE};
use crate::virtio_iommu::wire::{self, ParseError, Request, Status, TAIL_SIZE, T_PROBE};

impl VirtioIommu {
    /// Processes one request: `readable` is its device-readable part, `writable_len` the size
    /// of its device-writable part. The work is done when this returns (mappings are in
    /// place, unmapped ranges are gone from every domain); the returned completion says what
    /// to write back and, for an UNMAP or a domain teardown, which fence must hold first.
    pub fn submit(&mut self, readable: &[u8], writable_len: usize) -> Completion {
        let req = match wire::parse(readable) {
            Ok(r) => r,
            // No type, or one not recognized: the buffers go back unwritten (used length 0).
            Err(ParseError::NoHead) | Err(ParseError::UnknownType(_)) => {
                return Completion::unwritten()
            }
            Err(ParseError::Short { kind, .. }) => {
                return self.tail_only(kind, writable_len, Status::Inval)
            }
        };
        let kind = req.kind();
        if writable_len < TAIL_SIZE {
            // No tail to write the outcome to: do nothing, return the buffers unwritten.
            return Completion::unwritten();
        }
        let unavailable = match req {
            Request::Map { .. } | Request::Unmap { .. } => !self.has(F_MAP_UNMAP),
            Request::Probe { .. } => !self.has(F_PROBE),
            _ => false,
        };
        if unavailable {
            // Spec (PROBE): a request of a feature not offered is not written.
            return Completion::unwritten();
        }
        if let Request::Probe { endpoint } = req {
            return self.probe(endpoint, writable_len);
        }
        let (status, fence) = match req {
            Request::Attach {
                domain,
                endpoint,
                flags,
                reserved_set,
            } => self.attach(domain, endpoint, flags, reserved_set),
            Request::Detach { domain, endpoint } => self.detach(domain, endpoint),
            Request::Map {
                domain,
                virt_start,
                virt_end,
                phys_start,
                flags,
            } => (
                self.map(domain, virt_start, virt_end, phys_start, flags),
                None,
            ),
            Request::Unmap {
                domain,
                virt_start,
                virt_end,
                reserved_set,
            } => self.unmap(domain, virt_start, virt_end, reserved_set),
            Request::Probe { .. } => (Status::DevErr, None),
        };
        let mut c = self.tail_only(kind, writable_len, status);
        c.fence = fence;
        c
    }

    /// A reply that is only a tail, where the request's layout puts it.
    pub(super) fn tail_only(&self, kind: u8, writable_len: usize, status: Status) -> Completion {
        let at = if kind == T_PROBE {
            let full = (self.config.probe_size as usize).checked_add(TAIL_SIZE);
            match full {
                Some(f) if writable_len >= f => Some(self.config.probe_size as usize),
                // Too small for the properties: the tail at the end, where the driver reads
                // it, and no property written (spec: PROBE, INVAL).
                _ => writable_len.checked_sub(TAIL_SIZE),
            }
        } else {
            (writable_len >= TAIL_SIZE).then_some(0)
        };
        match at {
            // The device cannot find the tail: buffers returned unwritten.
            None => Completion::unwritten(),
            Some(at) => {
                let mut reply = Reply::from_elem(0, at + TAIL_SIZE);
                reply[at] = status.as_u8();
                Completion::with_reply(reply, status)
            }
        }
    }
}
