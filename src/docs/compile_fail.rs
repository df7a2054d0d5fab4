//! Claims the compiler enforces, each pinned by a `compile_fail` doctest and paired with a
//! twin that compiles, so that a `compile_fail` test cannot pass for an unrelated reason (a
//! typo, a renamed item). The error codes are checked by nightly rustdoc only; stable checks
//! that the code does not compile.
//!
//! # A `DmaGuard` is not `Send`
//!
//! A guard is a slot of one thread's grace-period participant; it cannot be moved to another
//! thread.
//!
//! ```compile_fail,E0277
//! use viommu::{DeviceInfo, GroupId, Iommu};
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let guard = dev.pin();
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(guard));
//! });
//! ```
//!
//! The twin: the `Device` handle is `Send`, and each thread pins for itself.
//!
//! ```
//! use viommu::{DeviceInfo, GroupId, Iommu};
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(dev.pin()));
//! });
//! ```
//!
//! # A `DmaGuard` is not `Sync`
//!
//! Sharing a guard by reference would let another thread translate under this thread's pin.
//!
//! ```compile_fail,E0277
//! use viommu::{Access, DeviceInfo, GroupId, Iommu};
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let guard = dev.pin();
//! std::thread::scope(|s| {
//!     s.spawn(|| guard.translate(0, 0x1000, Access::Read).is_err());
//! });
//! ```
//!
//! The twin: the same closure on the guard's own thread.
//!
//! ```
//! use viommu::{Access, DeviceInfo, GroupId, Iommu};
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let guard = dev.pin();
//! let f = || guard.translate(0, 0x1000, Access::Read).is_err();
//! assert!(f()); // not attached: Blocked
//! ```
//!
//! # A `Translation` made through a guard cannot outlive the guard
//!
//! The memory behind a translation is fenced only while the guard that made it lives (G5):
//! the chunks must be used before the guard is dropped.
//!
//! ```compile_fail,E0597
//! use viommu::{Access, DeviceInfo, GroupId, Iommu, Prot};
//! let iommu = Iommu::new();
//! let (dev_id, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let ioas = iommu.ioas_alloc().unwrap();
//! iommu.ioas_map(ioas, Some(0x1000), 0x8000_0000, 0x1000, Prot::RW).unwrap();
//! iommu.device_attach(dev_id, ioas).unwrap();
//! let t = {
//!     let guard = dev.pin();
//!     guard.translate(0x1000, 0x1000, Access::Read).unwrap()
//! };
//! assert_eq!(t.len(), 1);
//! ```
//!
//! The twin: the translation is used while its guard lives.
//!
//! ```
//! use viommu::{Access, DeviceInfo, GroupId, Iommu, Prot};
//! let iommu = Iommu::new();
//! let (dev_id, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let ioas = iommu.ioas_alloc().unwrap();
//! iommu.ioas_map(ioas, Some(0x1000), 0x8000_0000, 0x1000, Prot::RW).unwrap();
//! iommu.device_attach(dev_id, ioas).unwrap();
//! let n = {
//!     let guard = dev.pin();
//!     let t = guard.translate(0x1000, 0x1000, Access::Read).unwrap();
//!     t.len()
//! };
//! assert_eq!(n, 1);
//! ```
//!
//! # A `DmaGuard` cannot outlive its `Device` handle
//!
//! ```compile_fail,E0597
//! use viommu::{DeviceInfo, GroupId, Iommu};
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let guard = {
//!     let handle = dev.clone();
//!     handle.pin()
//! };
//! drop(guard);
//! ```
//!
//! The twin: the handle outlives the guard.
//!
//! ```
//! use viommu::{DeviceInfo, GroupId, Iommu};
//! let iommu = Iommu::new();
//! let (_, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default()).unwrap();
//! let handle = dev.clone();
//! let guard = handle.pin();
//! drop(guard);
//! ```
