//! Endpoint management: the VMM registers bound devices as endpoints (with the reserved
//! regions PROBE reports) and removes them; lookups by endpoint and by device.

use super::{Endpoint, VirtioIommu};
use crate::device::Device;
use crate::error::Error;
use crate::translation::Fault;
use crate::types::{Access, ObjId};
use crate::virtio_iommu::event::FaultEvent;
use crate::virtio_iommu::wire::{PROPERTY_HEAD_SIZE, RESV_MEM_SIZE};
use std::ops::Range;

/// What a reserved region of an endpoint is, as PROBE reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResvKind {
    /// `VIRTIO_IOMMU_RESV_MEM_T_RESERVED`: the driver must not map it.
    Reserved,
    /// `VIRTIO_IOMMU_RESV_MEM_T_MSI`: an MSI doorbell; the driver must not map it either.
    Msi,
}

/// A reserved IOVA range of an endpoint (half-open, as in [`crate::DeviceInfo::reserved`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResvRegion {
    /// The IOVAs.
    pub range: Range<u64>,
    /// Its subtype.
    pub kind: ResvKind,
}

impl ResvRegion {
    /// A `RESERVED` region.
    pub fn reserved(range: Range<u64>) -> ResvRegion {
        ResvRegion {
            range,
            kind: ResvKind::Reserved,
        }
    }
    /// An `MSI` doorbell region.
    pub fn msi(range: Range<u64>) -> ResvRegion {
        ResvRegion {
            range,
            kind: ResvKind::Msi,
        }
    }
}

/// Why [`VirtioIommu::add_endpoint`] refused an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The endpoint ID is already in the table.
    #[error("endpoint {0} already exists")]
    Exists(u32),
    /// The device is already registered under another endpoint ID.
    #[error("device {dev} is already endpoint {endpoint}")]
    DeviceInUse {
        /// The device.
        dev: ObjId,
        /// Its endpoint ID.
        endpoint: u32,
    },
    /// An empty reserved range.
    #[error("reserved range {0:#x?} is empty")]
    EmptyRange(Range<u64>),
    /// The RESV_MEM properties and their NONE terminator do not fit in `probe_size`.
    #[error("{regions} reserved regions need {need} bytes of PROBE properties; probe_size is {probe_size}")]
    ProbeTooSmall {
        /// How many regions.
        regions: usize,
        /// Bytes they need with the terminator.
        need: usize,
        /// The configured size.
        probe_size: u32,
    },
    /// No endpoint with this ID.
    #[error("no endpoint {0}")]
    NoSuchEndpoint(u32),
    /// viommu refused the detach or the teardown of a removed endpoint's domain.
    #[error(transparent)]
    Iommu(#[from] Error),
}

impl VirtioIommu {
    /// Registers `device` (bound by the VMM, with the same reserved ranges in its
    /// [`crate::DeviceInfo`], and detached) as endpoint `endpoint_id`; `resv` is what PROBE
    /// reports for it. With `bypass` on, the endpoint is attached to the identity HWPT at
    /// once (its DMA reaches [`crate::virtio_iommu::Config::bypass_ranges`]).
    pub fn add_endpoint(
        &mut self,
        endpoint_id: u32,
        device: &Device,
        resv: Vec<ResvRegion>,
    ) -> Result<(), EndpointError> {
        if self.endpoints.contains_key(&endpoint_id) {
            return Err(EndpointError::Exists(endpoint_id));
        }
        let dev = device.id();
        if let Some(&endpoint) = self.by_dev.get(&dev) {
            return Err(EndpointError::DeviceInUse { dev, endpoint });
        }
        if let Some(r) = resv.iter().find(|r| r.range.start >= r.range.end) {
            return Err(EndpointError::EmptyRange(r.range.clone()));
        }
        let need = resv
            .len()
            .saturating_mul(RESV_MEM_SIZE)
            .saturating_add(PROPERTY_HEAD_SIZE);
        if need > self.config.probe_size as usize {
            return Err(EndpointError::ProbeTooSmall {
                regions: resv.len(),
                need,
                probe_size: self.config.probe_size,
            });
        }
        self.by_dev.insert(dev, endpoint_id);
        self.endpoints.insert(
            endpoint_id,
            Endpoint {
                dev,
                group: device.group(),
                resv,
                domain: None,
                bypassing: false,
            },
        );
        if self.bypass {
            // Bypass from the start, as for every endpoint attached to no domain.
            if let Err(e) = self.enter_bypass(endpoint_id) {
                self.endpoints.remove(&endpoint_id);
                self.by_dev.remove(&dev);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Removes an endpoint (hot unplug): detaches it (a fence) and frees its domain if it was
    /// the last endpoint there, waiting for that fence too.
    pub fn remove_endpoint(&mut self, endpoint_id: u32) -> Result<(), EndpointError> {
        let ep = self
            .endpoints
            .get(&endpoint_id)
            .ok_or(EndpointError::NoSuchEndpoint(endpoint_id))?;
        if ep.bypassing {
            self.iommu.device_detach(ep.dev)?;
        }
        if let Some(d) = ep.domain {
            self.iommu.device_detach(ep.dev)?;
            if let Some(fence) = self.leave_domain(endpoint_id, d) {
                fence.wait(&self.iommu)?;
            }
        }
        if let Some(ep) = self.endpoints.remove(&endpoint_id) {
            self.by_dev.remove(&ep.dev);
        }
        Ok(())
    }

    /// The endpoint ID of a viommu device, if registered.
    pub fn endpoint_of(&self, dev: ObjId) -> Option<u32> {
        self.by_dev.get(&dev).copied()
    }

    /// The domain an endpoint is attached to.
    pub fn endpoint_domain(&self, endpoint_id: u32) -> Option<u32> {
        self.endpoints.get(&endpoint_id)?.domain
    }

    /// The event-queue report for a translation `fault` that `dev` took on an `access`;
    /// `None` if `dev` is not an endpoint.
    pub fn fault_event(&self, dev: ObjId, fault: &Fault, access: Access) -> Option<FaultEvent> {
        Some(FaultEvent::new(self.endpoint_of(dev)?, fault, access))
    }
}
