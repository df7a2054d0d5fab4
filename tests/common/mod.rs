//! Fixtures shared by the integration tests: `mod common;` in a `tests/NAME.rs` target,
//! `#[path = "../common/mod.rs"] mod common;` in a `tests/NAME/main.rs` one.
//!
//! Devices are described with [`DeviceInfo::default`] or struct update syntax
//! (`DeviceInfo { iova_bits, ..DeviceInfo::default() }`) only, so that a field added to
//! `DeviceInfo` does not break the tests.

// Every test target uses a different part of this module.
#![allow(dead_code)]

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use viommu::{Access, Chunk, Device, DeviceInfo, Error, FaultKind, GroupId, Iommu, ObjId, Prot};

/// One 4 KiB page.
pub const PAGE: u64 = 4096;

/// Binds a device with `info` into group `group`.
#[track_caller]
pub fn bind(iommu: &Iommu, group: u32, info: DeviceInfo) -> (ObjId, Device) {
    iommu
        .device_bind(GroupId(group), info)
        .expect("device_bind")
}

/// A device with the default aperture that reserves `range`.
pub fn reserving(range: Range<u64>) -> DeviceInfo {
    DeviceInfo {
        reserved: vec![range],
        ..DeviceInfo::default()
    }
}

/// A device with an `iova_bits` aperture and nothing reserved.
pub fn narrow(iova_bits: u8) -> DeviceInfo {
    DeviceInfo {
        iova_bits,
        ..DeviceInfo::default()
    }
}

/// A new IOAS holding `maps`, each `(iova, target, len, prot)` at its fixed IOVA.
#[track_caller]
pub fn ioas_with(iommu: &Iommu, maps: &[(u64, u64, u64, Prot)]) -> ObjId {
    let ioas = iommu.ioas_alloc().expect("ioas_alloc");
    for &(iova, target, len, prot) in maps {
        assert_eq!(
            iommu.ioas_map(ioas, Some(iova), target, len, prot),
            Ok(iova)
        );
    }
    ioas
}

/// The set-up most tests start from: a context, one device bound into group 1 and one IOAS,
/// built up step by step and then taken apart:
/// `let (iommu, dev, h, ioas) = Fixture::new(info).map(..).attached().parts();`.
pub struct Fixture {
    pub iommu: Iommu,
    /// The device's ID.
    pub dev: ObjId,
    /// The device's data-plane handle.
    pub h: Device,
    pub ioas: ObjId,
}

impl Fixture {
    /// A context with one device of group 1 (described by `info`) and an empty IOAS.
    #[track_caller]
    pub fn new(info: DeviceInfo) -> Fixture {
        let iommu = Iommu::new();
        let (dev, h) = bind(&iommu, 1, info);
        let ioas = iommu.ioas_alloc().expect("ioas_alloc");
        Fixture {
            iommu,
            dev,
            h,
            ioas,
        }
    }

    /// Maps `len` bytes at the fixed IOVA `iova` to `target`.
    #[track_caller]
    pub fn map(self, iova: u64, target: u64, len: u64, prot: Prot) -> Fixture {
        assert_eq!(
            self.iommu
                .ioas_map(self.ioas, Some(iova), target, len, prot),
            Ok(iova)
        );
        self
    }

    /// `(iommu, dev, h, ioas)`.
    pub fn parts(self) -> (Iommu, ObjId, Device, ObjId) {
        (self.iommu, self.dev, self.h, self.ioas)
    }

    /// Attaches the device to the IOAS (through an auto HWPT).
    #[track_caller]
    pub fn attached(self) -> Fixture {
        self.iommu
            .device_attach(self.dev, self.ioas)
            .expect("device_attach");
        self
    }
}

/// The chunks of a translation that must succeed.
#[track_caller]
pub fn chunks(dev: &Device, iova: u64, len: u64, access: Access) -> Vec<Chunk> {
    match dev.translate(iova, len, access) {
        Ok(t) => t.collect(),
        Err(f) => panic!("translate({iova:#x}, {len:#x}, {access:?}) faulted: {f:?}"),
    }
}

/// Asserts that `len` bytes at `iova` translate for `access` to one chunk at `target`.
#[track_caller]
pub fn assert_maps_to(dev: &Device, iova: u64, len: u64, access: Access, target: u64) {
    assert_eq!(chunks(dev, iova, len, access), one(iova, target, len));
}

/// The fault kind of a translation that must fail.
#[track_caller]
pub fn fault(dev: &Device, iova: u64, len: u64, access: Access) -> FaultKind {
    match dev.translate(iova, len, access) {
        Ok(t) => panic!(
            "translate({iova:#x}, {len:#x}, {access:?}) should fault, got {:x?}",
            t.collect::<Vec<_>>()
        ),
        Err(f) => f.kind,
    }
}

/// The single chunk `iova -> target` of `len` bytes.
pub fn one(iova: u64, target: u64, len: u64) -> Vec<Chunk> {
    vec![Chunk { iova, target, len }]
}

/// The error of a call that must fail with `errno`.
#[track_caller]
pub fn err<T: std::fmt::Debug>(r: viommu::Result<T>, errno: i32) -> Error {
    match r {
        Ok(v) => panic!("expected errno {errno}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.errno(), errno, "wrong errno for {e:?}");
            e
        }
    }
}

/// Runs `f` on another thread and fails the test if it does not finish within `limit`.
#[track_caller]
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not return within {limit:?}"),
    }
}

/// Sets the readers' stop flag when the writer finishes or panics, so that a failing writer
/// assertion cannot leave a thread scope waiting for readers forever.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Busy-waits for `d` (a writer letting readers see its change for a moment).
pub fn spin_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Busy-waits a few hundred cycles (a reader's "DMA" while it holds a guard).
pub fn simulated_dma() {
    for _ in 0..200 {
        std::hint::spin_loop();
    }
}
