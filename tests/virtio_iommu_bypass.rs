//! virtio-iommu bypass (`VIRTIO_IOMMU_F_BYPASS_CONFIG`): QEMU's config expectation, the
//! status of every bypass request and config write, and the switch from bypass to a paging
//! domain and back under DMA, which must never fault or go elsewhere.
#![cfg(feature = "virtio-iommu")]
#![allow(clippy::single_range_in_vec_init)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use viommu::virtio_iommu::wire::{Request, ATTACH_F_BYPASS, MAP_F_READ, MAP_F_WRITE, TAIL_SIZE};
use viommu::virtio_iommu::{
    Config, Status, VirtioIommu, BYPASS_OFFSET, F_BYPASS_CONFIG, OFFERED_FEATURES,
};
use viommu::{Access, Device, FaultKind};

const RW: u32 = MAP_F_READ | MAP_F_WRITE;
/// Guest RAM of the tests: 1 GiB at 0 and 1 GiB at 4 GiB.
const RAM: [std::ops::Range<u64>; 2] = [0..0x4000_0000, 0x1_0000_0000..0x1_4000_0000];

fn config(boot_bypass: bool) -> Config {
    Config {
        boot_bypass,
        bypass_ranges: RAM.to_vec(),
        ..Config::default()
    }
}

fn send(v: &mut VirtioIommu, r: Request) -> Option<Status> {
    let mut w = vec![0xaau8; TAIL_SIZE];
    let used = v.handle(&r.to_bytes(), &mut w).unwrap();
    (used != 0).then(|| Status::from_u8(w[used - TAIL_SIZE]).expect("a known status"))
}

fn attach(domain: u32, endpoint: u32, flags: u32) -> Request {
    Request::Attach {
        domain,
        endpoint,
        flags,
        reserved_set: false,
    }
}

fn detach(domain: u32, endpoint: u32) -> Request {
    Request::Detach { domain, endpoint }
}

fn map(domain: u32, start: u64, end: u64, phys: u64) -> Request {
    Request::Map {
        domain,
        virt_start: start,
        virt_end: end,
        phys_start: phys,
        flags: RW,
    }
}

fn target(d: &Device, iova: u64) -> Result<u64, FaultKind> {
    d.translate_chunk(iova, 8, Access::Write)
        .map(|c| c.target)
        .map_err(|f| f.kind)
}

fn bypass_byte(v: &VirtioIommu) -> u8 {
    let mut b = [0xffu8];
    v.read_config(BYPASS_OFFSET, &mut b);
    b[0]
}

const OK: Option<Status> = Some(Status::Ok);
const INVAL: Option<Status> = Some(Status::Inval);

/// QEMU's qtest (virtio-iommu-test, `pci_config`) reads `bypass == 1` with its default
/// `boot-bypass=on`; so does this device with `Config::default()`, and a device that boots in
/// bypass translates an endpoint's DMA to the same address inside the RAM it was given.
#[test]
fn qemu_config_expectation_bypass_is_one() {
    let (v, devs) = setup(1, Config::default());
    assert_eq!(bypass_byte(&v), 1);
    assert!(v.bypass());
    assert_ne!(v.device_features() & (1 << F_BYPASS_CONFIG), 0);
    assert_eq!(target(&devs[0], 0x1234_5678), Ok(0x1234_5678));
    let (v, devs) = setup(1, config(true));
    assert_eq!(target(&devs[0], 0x1_0000_0010), Ok(0x1_0000_0010));
    assert_eq!(target(&devs[0], 0x4000_0000), Err(FaultKind::Unmapped));
    assert_eq!(bypass_byte(&v), 1);
    let (v, devs) = setup(1, config(false));
    assert_eq!(bypass_byte(&v), 0);
    assert_eq!(target(&devs[0], 0x1000), Err(FaultKind::Blocked));
}

#[test]
fn bypass_request_statuses() {
    let (mut v, devs) = setup(2, config(true));
    let d = &devs[0];
    // ATTACH_F_BYPASS makes a bypass domain: identity, as in bypass.
    assert_eq!(send(&mut v, attach(5, 1, ATTACH_F_BYPASS)), OK);
    assert!(v.domain_is_bypass(5));
    assert_eq!(v.domain_ioas(5), None);
    assert_eq!(v.endpoint_domain(1), Some(5));
    assert_eq!(target(d, 0x2000), Ok(0x2000));
    // MAP and UNMAP on a bypass domain: INVAL.
    assert_eq!(send(&mut v, map(5, 0, 0xfff, 0x1000)), INVAL);
    let unmap = Request::Unmap {
        domain: 5,
        virt_start: 0,
        virt_end: 0xfff,
        reserved_set: false,
    };
    assert_eq!(send(&mut v, unmap), INVAL);
    // The flag must match the domain's kind, both ways.
    assert_eq!(send(&mut v, attach(5, 2, 0)), INVAL);
    assert_eq!(send(&mut v, attach(6, 2, 0)), OK);
    assert_eq!(send(&mut v, attach(6, 1, ATTACH_F_BYPASS)), INVAL);
    assert_eq!(
        v.endpoint_domain(1),
        Some(5),
        "a rejected ATTACH changes nothing"
    );
    // Unknown flag bits and reserved bytes with the flag: INVAL.
    assert_eq!(send(&mut v, attach(7, 1, ATTACH_F_BYPASS | 2)), INVAL);
    let reserved = Request::Attach {
        domain: 7,
        endpoint: 1,
        flags: ATTACH_F_BYPASS,
        reserved_set: true,
    };
    assert_eq!(send(&mut v, reserved), INVAL);
    // Re-ATTACH to the same bypass domain: OK, nothing moves.
    assert_eq!(send(&mut v, attach(5, 1, ATTACH_F_BYPASS)), OK);
    // Bypass domain -> paging domain (6 maps nothing: faults Unmapped) and back.
    assert_eq!(send(&mut v, attach(6, 1, 0)), OK);
    assert_eq!(target(d, 0x2000), Err(FaultKind::Unmapped));
    assert!(v.domains().contains(&6) && !v.domains().contains(&5));
    assert_eq!(send(&mut v, attach(5, 1, ATTACH_F_BYPASS)), OK);
    assert_eq!(target(d, 0x2000), Ok(0x2000));
    // DETACH with bypass on: the endpoint is in bypass again.
    assert_eq!(send(&mut v, detach(5, 1)), OK);
    assert_eq!(v.endpoint_domain(1), None);
    assert!(!v.domains().contains(&5));
    assert_eq!(target(d, 0x3000), Ok(0x3000));
    assert_eq!(send(&mut v, detach(5, 1)), INVAL, "no such domain");
    // Without BYPASS_CONFIG negotiated, the flag is unknown.
    v.ack_features(OFFERED_FEATURES & !(1 << F_BYPASS_CONFIG));
    assert_eq!(send(&mut v, attach(8, 1, ATTACH_F_BYPASS)), INVAL);
    assert_eq!(send(&mut v, attach(8, 1, 0)), OK);
}

#[test]
fn bypass_config_writes() {
    let (mut v, devs) = setup(2, config(true));
    let d = &devs[0];
    // Before the driver acknowledges features, writes are ignored.
    v.write_config(BYPASS_OFFSET, &[0]).unwrap();
    assert_eq!(bypass_byte(&v), 1);
    assert_eq!(target(d, 0x1000), Ok(0x1000));
    // Acknowledged without BYPASS_CONFIG: still ignored.
    v.ack_features(OFFERED_FEATURES & !(1 << F_BYPASS_CONFIG));
    v.write_config(BYPASS_OFFSET, &[0]).unwrap();
    assert_eq!(bypass_byte(&v), 1);
    v.reset().unwrap();
    v.ack_features(OFFERED_FEATURES);
    // Other offsets, and values other than 0 and 1: ignored.
    v.write_config(0, &[0; 36]).unwrap();
    v.write_config(BYPASS_OFFSET, &[2]).unwrap();
    v.write_config(BYPASS_OFFSET + 1, &[0, 0, 0]).unwrap();
    assert_eq!(bypass_byte(&v), 1);
    assert_eq!(send(&mut v, attach(1, 2, 0)), OK);
    // 0 (as a write covering the field): unattached endpoints are blocked at once; an
    // attached one keeps its domain.
    v.write_config(32, &[0xff, 0xff, 0xff, 0xff, 0]).unwrap();
    assert_eq!(bypass_byte(&v), 0);
    assert!(!v.bypass());
    assert_eq!(target(d, 0x1000), Err(FaultKind::Blocked));
    assert_eq!(target(&devs[1], 0x1000), Err(FaultKind::Unmapped));
    // DETACH with bypass off: blocked.
    assert_eq!(send(&mut v, detach(1, 2)), OK);
    assert_eq!(target(&devs[1], 0x1000), Err(FaultKind::Blocked));
    // 1: both bypass.
    v.write_config(BYPASS_OFFSET, &[1]).unwrap();
    assert_eq!(target(d, 0x1000), Ok(0x1000));
    assert_eq!(target(&devs[1], 0x1000), Ok(0x1000));
    // A device reset keeps bypass (spec); a system reset restores the boot default.
    v.write_config(BYPASS_OFFSET, &[0]).unwrap();
    v.reset().unwrap();
    assert_eq!(bypass_byte(&v), 0);
    assert_eq!(target(d, 0x1000), Err(FaultKind::Blocked));
    v.system_reset().unwrap();
    assert_eq!(bypass_byte(&v), 1);
    assert_eq!(target(d, 0x1000), Ok(0x1000));
    // Removing a bypassing endpoint detaches it.
    v.remove_endpoint(1).unwrap();
    assert_eq!(target(d, 0x1000), Err(FaultKind::Blocked));
}

/// The boot switch under DMA: endpoint 2 does DMA to guest buffers, first in bypass; the
/// driver ATTACHes it to domain 1 (which endpoint 1 keeps alive, mapping the same buffers at
/// their own addresses, as a passthrough-mode kernel does) and DETACHes it back to bypass,
/// over and over. No translation may fault or land anywhere but the buffer's address.
#[test]
fn bypass_to_paging_switches_under_dma_never_fault() {
    let switches: u64 = if cfg!(debug_assertions) {
        5_000
    } else {
        100_000
    };
    let (mut v, devs) = setup(2, config(true));
    const BUF: u64 = 0x10_0000;
    const PAGES: u64 = 64;
    assert_eq!(send(&mut v, attach(1, 1, 0)), OK);
    assert_eq!(send(&mut v, map(1, BUF, BUF + PAGES * 4096 - 1, BUF)), OK);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let dma = {
        let (dev, stop, bad, done) = (devs[1].clone(), stop.clone(), bad.clone(), done.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            // At least one pass however late the thread runs.
            while i < PAGES || !stop.load(Ordering::Relaxed) {
                let iova = BUF + (i % PAGES) * 4096 + (i * 8) % 4088;
                match dev.translate_chunk(iova, 8, Access::Write) {
                    Ok(c) if c.target == iova && c.len == 8 => {}
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            done.store(i, Ordering::Relaxed);
        })
    };
    for _ in 0..switches {
        assert_eq!(send(&mut v, attach(1, 2, 0)), OK);
        assert_eq!(send(&mut v, detach(1, 2)), OK);
    }
    stop.store(true, Ordering::Relaxed);
    dma.join().unwrap();
    assert!(done.load(Ordering::Relaxed) >= PAGES);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "a translation faulted or went elsewhere"
    );
}

#[path = "support/virtio_iommu_setup.rs"]
mod virtio_setup;
use virtio_setup::setup;
