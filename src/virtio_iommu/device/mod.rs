//! The device's state machine: endpoints, domains, and what each request does to them and
//! to the viommu objects behind them.
//!
//! | virtio-iommu | viommu |
//! | --- | --- |
//! | domain | an IOAS, created by the first ATTACH of its ID, with the auto HWPT `device_attach` makes |
//! | endpoint | a bound device the VMM registered with [`VirtioIommu::add_endpoint`] |
//! | ATTACH (detached endpoint) | `device_attach(dev, ioas)` |
//! | ATTACH (attached endpoint) | `device_replace(dev, ioas)`: one publish, hitless |
//! | DETACH | `device_detach` (fences); with `bypass` on, `device_replace(dev, identity)`: hitless |
//! | bypass (unattached endpoint, `bypass` = 1) | attached to the device's identity HWPT |
//! | ATTACH with `ATTACH_F_BYPASS` | a bypass domain: the identity HWPT |
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
//! | `mod.rs` | [`VirtioIommu`]: its state and features |
//! | `endpoints.rs` | endpoint management: add, remove, look up; reserved regions |
//! | `domains.rs` | domain queries, and a domain's end when its last endpoint leaves |
//! | `submit.rs` | one request: parse, feature checks, dispatch, the reply's tail |
//! | `attach.rs` | ATTACH and DETACH |
//! | `bypass.rs` | the `bypass` config field, the identity HWPT, and device and system reset |
//! | `mapping.rs` | MAP and UNMAP |
//! | `probe.rs` | PROBE |

mod attach;
mod bypass;
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
    /// Attached to no domain, but to the identity HWPT (the `bypass` field is 1).
    bypassing: bool,
}

impl Endpoint {
    /// True while viommu has the device attached (to a domain's HWPT or in bypass).
    fn attached(&self) -> bool {
        self.domain.is_some() || self.bypassing
    }
}

struct DomainState {
    /// What the domain's endpoints are attached to: its IOAS, or the identity HWPT for a
    /// bypass domain.
    ioas: ObjId,
    /// Made by an ATTACH with `ATTACH_F_BYPASS`: no mappings, every access at its own address.
    bypass: bool,
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
    /// The driver acknowledged features (`ack_features`) since the last reset.
    acked: bool,
    /// The live `bypass` config field.
    bypass: bool,
    /// The identity HWPT over `config.bypass_ranges`, allocated on first use.
    identity: Option<ObjId>,
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
        // A budget (`Config::budget`) refused it: nothing changed.
        Error::NoSpace { .. } | Error::IdsExhausted | Error::BudgetExceeded { .. } => Status::NoMem,
        _ => Status::DevErr,
    }
}

impl VirtioIommu {
    /// A device with no endpoints over `iommu`, offering [`OFFERED_FEATURES`], with `bypass`
    /// at [`Config::boot_bypass`]. Until
    /// [`VirtioIommu::ack_features`] is called every offered feature counts as negotiated.
    pub fn new(iommu: Iommu, config: Config) -> VirtioIommu {
        VirtioIommu {
            iommu,
            bypass: config.boot_bypass,
            config,
            negotiated: OFFERED_FEATURES,
            acked: false,
            identity: None,
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
        self.acked = true;
    }

    /// The negotiated device-specific features.
    pub fn negotiated_features(&self) -> u64 {
        self.negotiated
    }

    fn has(&self, bit: u32) -> bool {
        self.negotiated & (1 << bit) != 0
    }

    fn domain_in_range(&self, domain: u32) -> bool {
        let (lo, hi) = self.config.domain_range;
        (lo..=hi).contains(&domain)
    }
}
