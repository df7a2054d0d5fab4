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
//! | `device/` | [`VirtioIommu`]: endpoints, domains, and what each request does (a file per request kind) |
//! | `batch.rs` | completions, fences, and queue passes |
//! | `event.rs` | fault reports for the event queue |
//! | `queue.rs` | the request queue driver on virtio-queue (feature `virtio-iommu-queue`) |
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
//! The rest of this page is `docs/virtio-iommu.md`.
//!
#![doc = include_str!("../../docs/virtio-iommu.md")]

pub mod wire;

mod batch;
mod config;
mod device;
mod event;
#[cfg(feature = "virtio-iommu-queue")]
mod queue;

pub use batch::{Batch, Completion, RequestBuffers};
pub use config::{
    Config, BYPASS_OFFSET, CONFIG_SIZE, F_BYPASS, F_BYPASS_CONFIG, F_DOMAIN_RANGE, F_INPUT_RANGE,
    F_MAP_UNMAP, F_MMIO, F_PROBE, OFFERED_FEATURES,
};
pub use device::{EndpointError, MappingInfo, ResvKind, ResvRegion, VirtioIommu};
pub use event::{
    FaultEvent, FAULT_F_ADDRESS, FAULT_F_READ, FAULT_F_WRITE, FAULT_R_DOMAIN, FAULT_R_MAPPING,
    FAULT_R_UNKNOWN, FAULT_SIZE,
};
#[cfg(feature = "virtio-iommu-queue")]
pub use queue::{QueueError, MAX_DESCRIPTORS, MAX_READABLE};
pub use wire::Status;
