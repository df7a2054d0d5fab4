//! The device's state machine: endpoints, domains, and what each request does to them and
//! to the viommu objects behind them.
//!
//! | virtio-iommu | viommu |
//! | --- | --- |
//! | domain | an IOAS, created by the first ATTACH of its ID, with the auto HWPT `device_attach` makes |
//! | endpoint | a bound device the VMM registered with [`VirtioIommu::add_endpoint`] |
//! | ATTACH (detached endpoint) | `device_attach(dev, ioas)` |
//! | ATTACH (attached endpoint) | `device_replace(dev, ioas)`: one publish, hitless |
//! | DETACH | `device_detach` (fences) |
//! | MAP | `ioas_map` at a fixed IOVA |
//! | UNMAP | `ioas_unmap_deferred`; the request completes with its batch's fence |
//! | last endpoint leaves a domain | the domain ceases to exist (spec, DETACH): unmap all (deferred), destroy the IOAS |
//!
//! Each domain keeps a shadow of its mappings (one entry per MAP, as the spec defines a
//! mapping), so that every check is made, and every status chosen, before viommu is
//! asked to change anything: a rejected request changes nothing.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`VirtioIommu`]: its state, features, configuration space, reset |
//! | `endpoints.rs` | endpoint management: add, remove, look up; reserved regions |
//! | `domains.rs` | domain queries, and a domain's end when its last endpoint leaves |
//! | `submit.rs` | one request: parse, feature checks, dispatch, the reply's tail |
//! | `attach.rs` | ATTACH and DETACH |
//! | `mapping.rs` | MAP and UNMAP |
//! | `probe.rs` | PROBE |

mod attach;
mod domains;
mod endpoints;
mod mapping;
mod probe;
mod submit;

pub use domains::MappingInfo;
pub use endpoints::{EndpointError, ResvKind, ResvRegion};

use super::config::{Config, OFFERED_FEATURES};
use super::wire::Status;
use crate::error::Error;
use crate::iommu::Iommu;
use crate::types::{GroupId, ObjId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

struct Endpoint {
    dev: ObjId,
    group: GroupId,
    resv: Vec<ResvRegion>,
    domain: Option<u32>,
}

struct DomainState {
    ioas: ObjId,
    endpoints: BTreeSet<u32>,
    /// First IOVA → (last IOVA, phys, flags).
    mappings: BTreeMap<u64, (u64, u64, u32)>,
}

/// A virtio-iommu device (virtio 1.3, section 5.13) over an [`Iommu`]: it turns request
/// bytes into reply bytes, and keeps the endpoints and domains the guest sees.
///
/// Requests go through [`VirtioIommu::process_batch`] (one queue pass) or, one at a time,
/// [`VirtioIommu::submit`] and a [`super::Batch`]. See the [module docs](super) for the
/// status each mistake gets.
pub struct VirtioIommu {
    iommu: Iommu,
    config: Config,
    negotiated: u64,
    endpoints: BTreeMap<u32, Endpoint>,
    by_dev: BTreeMap<ObjId, u32>,
    domains: BTreeMap<u32, DomainState>,
    /// A queue pass whose fences could not be waited for (`EDEADLK`): completed first by the
    /// next [`VirtioIommu::process_queue`].
    #[cfg(feature = "virtio-iommu-queue")]
    pub(crate) stalled: Option<super::queue::StalledPass>,
}

impl fmt::Debug for VirtioIommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioIommu")
            .field("config", &self.config)
            .field("negotiated", &format_args!("{:#x}", self.negotiated))
            .field("endpoints", &self.endpoints.len())
            .field("domains", &self.domains.len())
            .finish()
    }
}

fn status_of(e: &Error) -> Status {
    match e {
        Error::Exists { .. }
        | Error::InReservedRange { .. }
        | Error::NoPermission { .. }
        | Error::ZeroLength { .. } => Status::Inval,
        Error::Misaligned { .. } | Error::Overflow { .. } | Error::OutsideAperture { .. } => {
            Status::Range
        }
        // The endpoint's properties do not suit the domain (spec: ATTACH, UNSUPP).
        Error::Incompatible { .. }
        | Error::ReservedInUse { .. }
        | Error::GroupOnOtherHwpt { .. } => Status::Unsupp,
        Error::NoSpace { .. } | Error::IdsExhausted => Status::NoMem,
        _ => Status::DevErr,
    }
}

impl VirtioIommu {
    /// A device with no endpoints over `iommu`, offering [`OFFERED_FEATURES`]. Until
    /// [`VirtioIommu::ack_features`] is called every offered feature counts as negotiated.
    pub fn new(iommu: Iommu, config: Config) -> VirtioIommu {
        VirtioIommu {
            iommu,
            config,
            negotiated: OFFERED_FEATURES,
            endpoints: BTreeMap::new(),
            by_dev: BTreeMap::new(),
            domains: BTreeMap::new(),
            #[cfg(feature = "virtio-iommu-queue")]
            stalled: None,
        }
    }

    /// The `Iommu` behind the device.
    pub fn iommu(&self) -> &Iommu {
        &self.iommu
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device-specific feature bits offered to the driver.
    pub fn device_features(&self) -> u64 {
        OFFERED_FEATURES
    }

    /// Records the features the driver accepted (those offered and accepted are negotiated).
    pub fn ack_features(&mut self, driver_features: u64) {
        self.negotiated = driver_features & OFFERED_FEATURES;
    }

    /// The negotiated device-specific features.
    pub fn negotiated_features(&self) -> u64 {
        self.negotiated
    }

    fn has(&self, bit: u32) -> bool {
        self.negotiated & (1 << bit) != 0
    }

    /// A read of the configuration space (see [`Config::read`]). The driver may write only
    /// `bypass`, and only with `BYPASS_CONFIG`, which is not offered: writes are ignored.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data)
    }

    /// Device reset: every endpoint is detached and every domain freed (waiting for their
    /// fences); negotiated features return to the offered set. A queue pass still waiting
    /// for its fences is forgotten (the driver resets its queues with the device).
    pub fn reset(&mut self) -> Result<(), Error> {
        #[cfg(feature = "virtio-iommu-queue")]
        {
            self.stalled = None;
        }
        let attached: Vec<(u32, u32)> = self
            .endpoints
            .iter()
            .filter_map(|(&id, ep)| ep.domain.map(|d| (id, d)))
            .collect();
        let mut fences = Vec::new();
        for (id, d) in attached {
            if let Some(ep) = self.endpoints.get(&id) {
                self.iommu.device_detach(ep.dev)?;
            }
            fences.extend(self.leave_domain(id, d));
        }
        for f in fences.into_iter().rev() {
            f.wait(&self.iommu)?;
        }
        self.negotiated = OFFERED_FEATURES;
        Ok(())
    }

    fn domain_in_range(&self, domain: u32) -> bool {
        let (lo, hi) = self.config.domain_range;
        (lo..=hi).contains(&domain)
    }
}
