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

use super::batch::{Completion, Fence, Reply};
use super::config::{Config, F_MAP_UNMAP, F_MMIO, F_PROBE, OFFERED_FEATURES};
use super::event::FaultEvent;
use super::wire::{
    self, ParseError, Request, Status, ATTACH_F_BYPASS, MAP_F_MMIO, MAP_F_READ, MAP_F_WRITE,
    PROPERTY_HEAD_SIZE, RESV_MEM_SIZE, RESV_MEM_T_MSI, RESV_MEM_T_RESERVED, TAIL_SIZE, T_PROBE,
};
use crate::device::Device;
use crate::error::Error;
use crate::iommu::Iommu;
use crate::translation::Fault;
use crate::types::{Access, GroupId, ObjId, Prot};
use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
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

/// One mapping, as one MAP request made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    /// First IOVA.
    pub virt_start: u64,
    /// Last IOVA (inclusive).
    pub virt_end: u64,
    /// First physical address.
    pub phys_start: u64,
    /// The MAP flags (`VIRTIO_IOMMU_MAP_F_*`).
    pub flags: u32,
}

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

    /// Registers `device` (bound by the VMM, with the same reserved ranges in its
    /// [`crate::DeviceInfo`]) as endpoint `endpoint_id`; `resv` is what PROBE reports for it.
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
            },
        );
        Ok(())
    }

    /// Removes an endpoint (hot unplug): detaches it (a fence) and frees its domain if it was
    /// the last endpoint there, waiting for that fence too.
    pub fn remove_endpoint(&mut self, endpoint_id: u32) -> Result<(), EndpointError> {
        let ep = self
            .endpoints
            .get(&endpoint_id)
            .ok_or(EndpointError::NoSuchEndpoint(endpoint_id))?;
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

    /// The endpoint ID of a viommu device, if registered.
    pub fn endpoint_of(&self, dev: ObjId) -> Option<u32> {
        self.by_dev.get(&dev).copied()
    }

    /// The domain an endpoint is attached to.
    pub fn endpoint_domain(&self, endpoint_id: u32) -> Option<u32> {
        self.endpoints.get(&endpoint_id)?.domain
    }

    /// The IDs of the domains that exist (each has at least one endpoint).
    pub fn domains(&self) -> Vec<u32> {
        self.domains.keys().copied().collect()
    }

    /// The IOAS behind a domain.
    pub fn domain_ioas(&self, domain: u32) -> Option<ObjId> {
        Some(self.domains.get(&domain)?.ioas)
    }

    /// The endpoints attached to a domain.
    pub fn domain_endpoints(&self, domain: u32) -> Vec<u32> {
        self.domains
            .get(&domain)
            .map(|d| d.endpoints.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The mappings of a domain, in IOVA order.
    pub fn domain_mappings(&self, domain: u32) -> Vec<MappingInfo> {
        self.domains
            .get(&domain)
            .map(|d| {
                d.mappings
                    .iter()
                    .map(|(&s, &(e, p, f))| MappingInfo {
                        virt_start: s,
                        virt_end: e,
                        phys_start: p,
                        flags: f,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The event-queue report for a translation `fault` that `dev` took on an `access`;
    /// `None` if `dev` is not an endpoint.
    pub fn fault_event(&self, dev: ObjId, fault: &Fault, access: Access) -> Option<FaultEvent> {
        Some(FaultEvent::new(self.endpoint_of(dev)?, fault, access))
    }

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
    fn tail_only(&self, kind: u8, writable_len: usize, status: Status) -> Completion {
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

    fn domain_in_range(&self, domain: u32) -> bool {
        let (lo, hi) = self.config.domain_range;
        (lo..=hi).contains(&domain)
    }

    fn attach(
        &mut self,
        domain: u32,
        endpoint: u32,
        flags: u32,
        reserved_set: bool,
    ) -> (Status, Option<Fence>) {
        if reserved_set || flags & !ATTACH_F_BYPASS != 0 {
            return (Status::Inval, None);
        }
        if flags & ATTACH_F_BYPASS != 0 {
            // A virtio 1.3 flag this device knows but cannot honour: no identity domain.
            return (Status::Unsupp, None);
        }
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return (Status::NoEnt, None);
        };
        if !self.domain_in_range(domain) {
            return (Status::Range, None);
        }
        let (dev, group, old) = (ep.dev, ep.group, ep.domain);
        if old == Some(domain) {
            return (Status::Ok, None);
        }
        // Endpoints of one viommu group share a domain: moving one would move the others
        // (a replace is group-wide), so that is refused (spec: UNSUPP).
        if old.is_some() {
            let mates = self
                .endpoints
                .iter()
                .any(|(&id, e)| id != endpoint && e.group == group && e.domain.is_some());
            if mates {
                return (Status::Unsupp, None);
            }
        }
        let (ioas, created) = match self.domains.get(&domain) {
            Some(d) => (d.ioas, false),
            None => match self.iommu.ioas_alloc() {
                Ok(id) => (id, true),
                Err(e) => return (status_of(&e), None),
            },
        };
        let result = match old {
            Some(_) => self.iommu.device_replace(dev, ioas),
            None => self.iommu.device_attach(dev, ioas),
        };
        if let Err(e) = result {
            if created {
                // Rollback: the new IOAS has no HWPT and no mapping.
                let _ = self.iommu.destroy(ioas);
            }
            return (status_of(&e), None);
        }
        self.domains
            .entry(domain)
            .or_insert_with(|| DomainState {
                ioas,
                endpoints: BTreeSet::new(),
                mappings: BTreeMap::new(),
            })
            .endpoints
            .insert(endpoint);
        if let Some(e) = self.endpoints.get_mut(&endpoint) {
            e.domain = Some(domain);
        }
        // Behaves as DETACH then ATTACH (spec), without the blocked window: the old domain
        // loses the endpoint and ceases to exist if that was its last.
        let fence = old.and_then(|o| self.leave_domain(endpoint, o));
        (Status::Ok, fence)
    }

    /// Takes `endpoint` out of `domain`'s books (viommu has already moved it); frees the
    /// domain if it has no endpoint left, returning the fence of its mappings' removal.
    fn leave_domain(&mut self, endpoint: u32, domain: u32) -> Option<Fence> {
        if let Some(e) = self.endpoints.get_mut(&endpoint) {
            if e.domain == Some(domain) {
                e.domain = None;
            }
        }
        let d = self.domains.get_mut(&domain)?;
        d.endpoints.remove(&endpoint);
        if !d.endpoints.is_empty() {
            return None;
        }
        let d = self.domains.remove(&domain)?;
        // "After all endpoints have been successfully detached from a domain, it ceases to
        // exist": its mappings go, with an unmap fence so that the guest may reuse their
        // pages once the request completes (a replaced-away endpoint may still have DMA in
        // flight through them).
        let fence = if d.mappings.is_empty() {
            None
        } else {
            match self.iommu.ioas_unmap_deferred(d.ioas, 0, u64::MAX) {
                Ok(c) => Some(Fence::Unmap(c)),
                Err(_) => Some(Fence::Synchronize),
            }
        };
        // Its HWPTs went with their last device; nothing else refers to the IOAS.
        let _ = self.iommu.destroy(d.ioas);
        fence
    }

    fn detach(&mut self, domain: u32, endpoint: u32) -> (Status, Option<Fence>) {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return (Status::NoEnt, None);
        };
        if ep.domain != Some(domain) {
            // The domain does not exist, or the endpoint is not attached to it (spec: MAY
            // INVAL).
            return (Status::Inval, None);
        }
        if let Err(e) = self.iommu.device_detach(ep.dev) {
            return (status_of(&e), None);
        }
        (Status::Ok, self.leave_domain(endpoint, domain))
    }

    fn map(&mut self, domain: u32, start: u64, end: u64, phys: u64, flags: u32) -> Status {
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
        if end < start {
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

    fn unmap(
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
        if end < start {
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

    fn probe(&mut self, endpoint: u32, writable_len: usize) -> Completion {
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
