//! A virtio-iommu device model (virtio 1.3, section 5.13), over viommu's public API
//! (feature `virtio-iommu`).
//!
//! This is the core of the device: it turns the bytes of a request into the bytes of its
//! reply, and keeps the endpoints and domains the guest sees. A queue driver (descriptor
//! chains, notifications) sits on top: it hands each request's device-readable bytes and
//! device-writable buffer to [`VirtioIommu::process_batch`], one call per queue pass, and
//! returns the buffers with the used lengths it reports.
//!
//! | file | what |
//! | --- | --- |
//! | `wire.rs` | request types, status codes, flags, and the little-endian request layouts |
//! | `config.rs` | feature bits and `struct virtio_iommu_config` |
//! | `device.rs` | [`VirtioIommu`]: endpoints, domains, and what each request does |
//! | `batch.rs` | completions, fences, and queue passes |
//! | `event.rs` | fault reports for the event queue |
//!
//! ```
//! use viommu::virtio_iommu::{wire, Config, RequestBuffers, VirtioIommu};
//! use viommu::{Access, DeviceInfo, GroupId, Iommu};
//!
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
//! let mut viommu = VirtioIommu::new(iommu, Config::default());
//! viommu.add_endpoint(8, &dev, Vec::new()).unwrap();
//!
//! // attach(endpoint 8, domain 1), then map(domain 1, 0x1000 ..= 0x1fff -> 0xa000, READ).
//! let attach = wire::Request::Attach { domain: 1, endpoint: 8, flags: 0, reserved_set: false };
//! let map = wire::Request::Map {
//!     domain: 1, virt_start: 0x1000, virt_end: 0x1fff, phys_start: 0xa000, flags: wire::MAP_F_READ,
//! };
//! for req in [attach, map] {
//!     let mut tail = [0xffu8; 4];
//!     assert_eq!(viommu.handle(&req.to_bytes(), &mut tail)?, 4);
//!     assert_eq!(tail[0], wire::Status::Ok.as_u8());
//! }
//! assert_eq!(dev.translate(0x1800, 8, Access::Read).unwrap().as_slice()[0].target, 0xa800);
//! # Ok::<(), viommu::Error>(())
//! ```
//!
//! # Domains and endpoints
//!
//! A domain is an IOAS, created by the first ATTACH of its ID; the endpoint's device is
//! attached to it with `device_attach`, which makes the auto HWPT. ATTACH of an endpoint
//! already attached elsewhere is one `device_replace`: its DMA moves from the old domain to
//! the new one without a blocked window (the spec asks the device to behave *as if* it
//! detached first; a guest cannot tell the difference, except that no DMA faults). DETACH is
//! `device_detach`, whose fence holds when it returns. When the last endpoint leaves a domain,
//! the domain ceases to exist (spec, DETACH): its mappings are unmapped and its IOAS
//! destroyed, and the request that freed it completes after that unmap's fence. This is why
//! the Linux driver replays its mappings when it attaches the first endpoint of a domain.
//!
//! Endpoints are devices the VMM bound and registered with [`VirtioIommu::add_endpoint`],
//! together with the reserved regions PROBE reports (the same ranges the VMM gave
//! [`crate::DeviceInfo::reserved`]). Devices of one viommu group move together; an ATTACH
//! that would move an endpoint away from the group-mates it shares a domain with is
//! refused with `UNSUPP`.
//!
//! # Completion
//!
//! An UNMAP removes its range from every domain before the next request is looked at, with
//! [`crate::Iommu::ioas_unmap_deferred`]; the request is reported complete (its tail written)
//! only after its fence holds, i.e. after every `DmaGuard` that might have translated into
//! the range has been dropped. All the fences of one pass are settled together: the batch
//! waits for the last, which completes the earlier ones (one grace period per pass). See
//! [`Batch`].
//!
//! # Statuses
//!
//! | request | condition | status |
//! | --- | --- | --- |
//! | any | fewer than 4 bytes, or an unknown type | buffers returned unwritten (used length 0) |
//! | any | device-writable part too short for the tail | unwritten |
//! | any | device-readable part shorter than the type's layout | `INVAL` |
//! | MAP, UNMAP, PROBE | feature not negotiated | unwritten |
//! | ATTACH | reserved bytes set, unknown flag bit | `INVAL` |
//! | ATTACH | `ATTACH_F_BYPASS` (no identity domain: `BYPASS_CONFIG` not offered) | `UNSUPP` |
//! | ATTACH, DETACH, PROBE | unknown endpoint | `NOENT` |
//! | ATTACH, MAP, UNMAP | domain outside `domain_range` | `RANGE` |
//! | ATTACH | endpoint's aperture or reserved regions clash with the domain, or its group is elsewhere | `UNSUPP` |
//! | DETACH | domain does not exist, or the endpoint is not attached to it | `INVAL` |
//! | MAP, UNMAP | domain does not exist | `NOENT` |
//! | MAP | unknown flag bit (`MMIO` without `F_MMIO`), no READ or WRITE, `virt_end < virt_start` | `INVAL` |
//! | MAP | `virt_start`, `phys_start` or `virt_end + 1` not aligned to the granule, outside `input_range`, `phys` end wraps | `RANGE` |
//! | MAP | overlaps an existing mapping or a reserved region of an attached endpoint | `INVAL` |
//! | UNMAP | reserved bytes set (spec: MAY; nothing is unmapped) | `INVAL` |
//! | UNMAP | `virt_end < virt_start` | `INVAL` |
//! | UNMAP | the range would split a mapping (nothing is removed) | `RANGE` |
//! | UNMAP | nothing mapped in the range | `OK` |
//! | PROBE | device-writable part smaller than `probe_size` + tail | `INVAL` (tail at its end) |
//! | any | viommu out of IDs or IOVA space | `NOMEM` |
//! | any | any other viommu error | `DEVERR` |
//!
//! A rejected request changes nothing. Every length and address is checked with checked
//! arithmetic (`virt_end + 1` wraps for a range ending at `2^64 - 1`), and no byte string
//! makes the device panic (a property test feeds it random bytes).

pub mod wire;

mod batch;
mod config;
mod device;
mod event;

pub use batch::{Batch, Completion, RequestBuffers};
pub use config::{
    Config, CONFIG_SIZE, F_BYPASS, F_BYPASS_CONFIG, F_DOMAIN_RANGE, F_INPUT_RANGE, F_MAP_UNMAP,
    F_MMIO, F_PROBE, OFFERED_FEATURES,
};
pub use device::{EndpointError, MappingInfo, ResvKind, ResvRegion, VirtioIommu};
pub use event::{
    FaultEvent, FAULT_F_ADDRESS, FAULT_F_READ, FAULT_F_WRITE, FAULT_R_DOMAIN, FAULT_R_MAPPING,
    FAULT_R_UNKNOWN, FAULT_SIZE,
};
pub use wire::Status;
