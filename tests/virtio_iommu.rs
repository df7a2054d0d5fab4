//! The virtio-iommu device model: each request and status, hitless re-ATTACH under DMA, the
//! batched UNMAP fence, random bytes and request sequences, and the Linux driver's requests
//! byte for byte.
#![cfg(feature = "virtio-iommu")]
// Reserved ranges are lists that hold one range here.
#![allow(clippy::single_range_in_vec_init)]

use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use viommu::virtio_iommu::wire::{self, Request, MAP_F_MMIO, MAP_F_READ, MAP_F_WRITE, TAIL_SIZE};
use viommu::virtio_iommu::{
    Batch, Config, RequestBuffers, ResvRegion, Status, VirtioIommu, FAULT_R_DOMAIN, F_MAP_UNMAP,
    OFFERED_FEATURES,
};
use viommu::{Access, Device, DeviceInfo, Error, FaultKind, GroupId, Iommu};

#[path = "support/linux_virtio_iommu.rs"]
mod linux;
use linux::{linux_attach, linux_map, linux_unmap};

#[path = "support/virtio_iommu_setup.rs"]
mod virtio_setup;
use virtio_setup::{becomes_unmapped, setup, target};

const PAGE: u64 = 4096;
const RW: u32 = MAP_F_READ | MAP_F_WRITE;

/// The device with boot bypass off: endpoints start blocked (these tests predate bypass;
/// `tests/virtio_iommu_bypass.rs` has the bypass ones).
fn blocking() -> Config {
    Config {
        boot_bypass: false,
        ..Config::default()
    }
}

/// Sends one request with a 4-byte tail; the status, or `None` if the buffers came back
/// unwritten.
fn send(v: &mut VirtioIommu, r: Request) -> Option<Status> {
    send_raw(v, &r.to_bytes(), TAIL_SIZE)
}

fn send_raw(v: &mut VirtioIommu, readable: &[u8], writable_len: usize) -> Option<Status> {
    let mut w = vec![0xaau8; writable_len];
    let used = v.handle(readable, &mut w).unwrap();
    if used == 0 {
        assert!(w.iter().all(|&b| b == 0xaa), "unwritten means unwritten");
        return None;
    }
    let tail = &w[used - TAIL_SIZE..used];
    assert_eq!(&tail[1..], &[0, 0, 0], "tail reserved bytes are zero");
    Some(Status::from_u8(tail[0]).expect("a known status"))
}

fn attach(domain: u32, endpoint: u32) -> Request {
    Request::Attach {
        domain,
        endpoint,
        flags: 0,
        reserved_set: false,
    }
}

fn detach(domain: u32, endpoint: u32) -> Request {
    Request::Detach { domain, endpoint }
}

fn map(domain: u32, virt_start: u64, virt_end: u64, phys_start: u64, flags: u32) -> Request {
    Request::Map {
        domain,
        virt_start,
        virt_end,
        phys_start,
        flags,
    }
}

fn unmap(domain: u32, virt_start: u64, virt_end: u64) -> Request {
    Request::Unmap {
        domain,
        virt_start,
        virt_end,
        reserved_set: false,
    }
}

const OK: Option<Status> = Some(Status::Ok);

#[test]
fn attach_map_unmap_detach() {
    let (mut v, devs) = setup(2, blocking());
    let d = &devs[0];
    assert_eq!(target(d, 0x1000, Access::Read), Err(FaultKind::Blocked));
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    assert_eq!(v.endpoint_domain(1), Some(1));
    assert_eq!(send(&mut v, map(1, 0x1000, 0x2fff, 0xa000, MAP_F_READ)), OK);
    assert_eq!(target(d, 0x1800, Access::Read), Ok(0xa800));
    assert_eq!(target(d, 0x2fff, Access::Read), Ok(0xbfff));
    assert_eq!(target(d, 0x1800, Access::Write), Err(FaultKind::Permission));
    assert_eq!(target(d, 0x3000, Access::Read), Err(FaultKind::Unmapped));
    // A second endpoint joins the domain and sees its mappings.
    assert_eq!(send(&mut v, attach(1, 2)), OK);
    assert_eq!(target(&devs[1], 0x1000, Access::Read), Ok(0xa000));
    assert_eq!(v.domain_endpoints(1), vec![1, 2]);
    // Re-ATTACH to the same domain is a no-op.
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    assert_eq!(send(&mut v, unmap(1, 0x1000, 0x2fff)), OK);
    assert_eq!(target(d, 0x1800, Access::Read), Err(FaultKind::Unmapped));
    assert_eq!(send(&mut v, detach(1, 1)), OK);
    assert_eq!(target(d, 0x1800, Access::Read), Err(FaultKind::Blocked));
    assert_eq!(v.domains(), vec![1]);
    assert_eq!(send(&mut v, detach(1, 2)), OK);
    // The last endpoint left: the domain ceased to exist, and its IOAS with it.
    assert!(v.domains().is_empty());
    assert_eq!(v.iommu().stats().ioas, 0);
    assert_eq!(send(&mut v, map(1, 0, 0xfff, 0, RW)), Some(Status::NoEnt));
}

#[test]
fn reattach_moves_and_frees_the_old_domain() {
    let (mut v, devs) = setup(1, blocking());
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    assert_eq!(
        send(&mut v, map(1, 0x10_0000, 0x10_0fff, 0x8000_0000, RW)),
        OK
    );
    assert_eq!(send(&mut v, attach(2, 1)), OK);
    // Domain 1 lost its last endpoint and ceased to exist; domain 2 is empty.
    assert_eq!(v.domains(), vec![2]);
    assert_eq!(v.iommu().stats().ioas, 1);
    assert_eq!(
        target(&devs[0], 0x10_0000, Access::Read),
        Err(FaultKind::Unmapped)
    );
    assert_eq!(send(&mut v, map(1, 0, 0xfff, 0, RW)), Some(Status::NoEnt));
}

#[test]
fn spec_unmap_examples() {
    // Virtio 1.3, 5.13.6.6, examples (1)-(7), in pages.
    let p = |n: u64| n * PAGE;
    let e = |n: u64| n * PAGE - 1;
    let (mut v, devs) = setup(1, blocking());
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    let m = |v: &mut VirtioIommu, a: u64, b: u64| {
        assert_eq!(send(v, map(1, p(a), e(b + 1), p(a) + 0x100_0000, RW)), OK)
    };
    // (1) nothing mapped: success.
    assert_eq!(send(&mut v, unmap(1, p(0), e(5))), OK);
    // (2)
    m(&mut v, 0, 9);
    assert_eq!(send(&mut v, unmap(1, p(0), e(10))), OK);
    assert!(v.domain_mappings(1).is_empty());
    // (3)
    m(&mut v, 0, 4);
    m(&mut v, 5, 9);
    assert_eq!(send(&mut v, unmap(1, p(0), e(10))), OK);
    assert!(v.domain_mappings(1).is_empty());
    // (4) splitting fails, nothing removed.
    m(&mut v, 0, 9);
    assert_eq!(send(&mut v, unmap(1, p(0), e(5))), Some(Status::Range));
    assert_eq!(v.domain_mappings(1).len(), 1);
    assert!(target(&devs[0], p(2), Access::Read).is_ok());
    assert_eq!(send(&mut v, unmap(1, p(0), e(10))), OK);
    // (5)
    m(&mut v, 0, 4);
    m(&mut v, 5, 9);
    assert_eq!(send(&mut v, unmap(1, p(0), e(5))), OK);
    assert_eq!(v.domain_mappings(1)[0].virt_start, p(5));
    assert_eq!(send(&mut v, unmap(1, p(0), e(10))), OK);
    // (6)
    m(&mut v, 0, 4);
    assert_eq!(send(&mut v, unmap(1, p(0), e(10))), OK);
    assert!(v.domain_mappings(1).is_empty());
    // (7)
    m(&mut v, 0, 4);
    m(&mut v, 10, 14);
    assert_eq!(send(&mut v, unmap(1, p(0), e(15))), OK);
    assert!(v.domain_mappings(1).is_empty());
    // A split at the end, and an unaligned range around whole mappings.
    m(&mut v, 4, 5);
    assert_eq!(send(&mut v, unmap(1, p(5), e(7))), Some(Status::Range));
    assert_eq!(
        send(&mut v, unmap(1, p(4) + 0x800, e(7))),
        Some(Status::Range)
    );
    assert_eq!(send(&mut v, unmap(1, p(3) + 1, p(6) + 5)), OK);
    assert!(v.domain_mappings(1).is_empty());
    // The whole 64-bit space (virt_end + 1 wraps).
    m(&mut v, 1, 1);
    assert_eq!(send(&mut v, unmap(1, 0, u64::MAX)), OK);
    assert!(v.domain_mappings(1).is_empty());
}

#[test]
fn error_statuses_change_nothing() {
    let config = Config {
        domain_range: (1, 10),
        input_range: (0, (1 << 40) - 1),
        ..blocking()
    };
    let iommu = Iommu::new();
    let mut v = VirtioIommu::new(iommu.clone(), config);
    let (_, dev) = iommu
        .device_bind(
            GroupId(1),
            DeviceInfo {
                reserved: vec![0x800_0000..0x810_0000],
                ..DeviceInfo::default()
            },
        )
        .unwrap();
    v.add_endpoint(1, &dev, vec![ResvRegion::msi(0x800_0000..0x810_0000)])
        .unwrap();
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    assert_eq!(send(&mut v, map(1, 0x1000, 0x1fff, 0x5000, RW)), OK);
    let mut before = (v.domain_mappings(1), iommu.stats());

    let cases: Vec<(Request, Status)> = vec![
        // ATTACH
        (
            Request::Attach {
                domain: 2,
                endpoint: 1,
                flags: 0,
                reserved_set: true,
            },
            Status::Inval,
        ),
        (
            Request::Attach {
                domain: 2,
                endpoint: 1,
                flags: 2,
                reserved_set: false,
            },
            Status::Inval,
        ),
        (
            // The bypass flag on a domain that is not a bypass domain.
            Request::Attach {
                domain: 1,
                endpoint: 1,
                flags: wire::ATTACH_F_BYPASS,
                reserved_set: false,
            },
            Status::Inval,
        ),
        (attach(2, 99), Status::NoEnt),
        (attach(11, 1), Status::Range),
        (attach(0, 1), Status::Range),
        // DETACH
        (detach(1, 99), Status::NoEnt),
        (detach(2, 1), Status::Inval),
        // MAP
        (map(2, 0x4000, 0x4fff, 0, RW), Status::NoEnt),
        (map(11, 0x4000, 0x4fff, 0, RW), Status::Range),
        (map(1, 0x4000, 0x4fff, 0, 1 << 7), Status::Inval),
        (map(1, 0x4000, 0x4fff, 0, 0), Status::Inval),
        (map(1, 0x4800, 0x4fff, 0, RW), Status::Range),
        (map(1, 0x4000, 0x47ff, 0, RW), Status::Range),
        (map(1, 0x4000, 0x4fff, 0x123, RW), Status::Range),
        (map(1, 0x4fff, 0x4000, 0, RW), Status::Inval),
        (map(1, 1 << 40, (1 << 40) + 0xfff, 0, RW), Status::Range),
        (map(1, 0, u64::MAX, 0, RW), Status::Range),
        (map(1, 0x4000, 0x4fff, u64::MAX - 0xfff, RW), Status::Ok),
        (map(1, 0x6000, 0x7fff, u64::MAX - 0xfff, RW), Status::Range),
        (map(1, 0x1000, 0x1fff, 0x5000, RW), Status::Inval),
        (map(1, 0x0000, 0x2fff, 0x5000, RW), Status::Inval),
        (map(1, 0x800_0000, 0x800_0fff, 0, RW), Status::Inval),
        // UNMAP
        (
            Request::Unmap {
                domain: 1,
                virt_start: 0x1000,
                virt_end: 0x1fff,
                reserved_set: true,
            },
            Status::Inval,
        ),
        (unmap(2, 0x1000, 0x1fff), Status::NoEnt),
        (unmap(0, 0x1000, 0x1fff), Status::Range),
        (unmap(1, 0x1fff, 0x1000), Status::Inval),
        (unmap(1, 0x1000, 0x17ff), Status::Range),
        (unmap(1, 0x4000, 0x4fff), Status::Ok),
        // PROBE
        (Request::Probe { endpoint: 99 }, Status::NoEnt),
    ];
    for (r, want) in cases {
        let got = if let Request::Probe { .. } = r {
            send_raw(&mut v, &r.to_bytes(), 512 + TAIL_SIZE)
        } else {
            send(&mut v, r)
        };
        assert_eq!(got, Some(want), "{r:?}");
        if want != Status::Ok {
            assert_eq!((v.domain_mappings(1), iommu.stats()), before, "{r:?}");
        }
        before = (v.domain_mappings(1), iommu.stats());
    }
    // MMIO without F_MMIO negotiated is an unknown flag.
    v.ack_features(OFFERED_FEATURES & !(1 << viommu::virtio_iommu::F_MMIO));
    assert_eq!(
        send(&mut v, map(1, 0x9000, 0x9fff, 0, RW | MAP_F_MMIO)),
        Some(Status::Inval)
    );
    v.ack_features(OFFERED_FEATURES);
    assert_eq!(send(&mut v, map(1, 0x9000, 0x9fff, 0, RW | MAP_F_MMIO)), OK);
    assert_eq!(send(&mut v, detach(1, 1)), OK);
    assert_eq!(iommu.stats().ioas, 0);
}

#[test]
fn malformed_buffers() {
    let (mut v, _devs) = setup(1, blocking());
    // No head, unknown types: returned unwritten.
    assert_eq!(send_raw(&mut v, &[], 4), None);
    assert_eq!(send_raw(&mut v, &[wire::T_MAP, 0], 4), None);
    assert_eq!(send_raw(&mut v, &[0, 0, 0, 0], 4), None);
    assert_eq!(send_raw(&mut v, &[6; 64], 4), None);
    assert_eq!(send_raw(&mut v, &[0xff; 64], 4), None);
    // A short request whose tail can be found: INVAL.
    let att = attach(1, 1).to_bytes();
    assert_eq!(send_raw(&mut v, &att[..19], 4), Some(Status::Inval));
    // No room for the tail: unwritten, and nothing happened.
    assert_eq!(send_raw(&mut v, &att, 3), None);
    assert_eq!(send_raw(&mut v, &att, 0), None);
    assert_eq!(v.endpoint_domain(1), None);
    // Head reserved bytes are ignored; extra bytes after the fields too.
    let mut att2 = att.clone();
    att2[1..4].copy_from_slice(&[1, 2, 3]);
    att2.extend_from_slice(&[9; 8]);
    assert_eq!(send_raw(&mut v, &att2, 4), OK);
    // PROBE with a writable part smaller than probe_size + tail: INVAL at its end.
    let probe = Request::Probe { endpoint: 1 }.to_bytes();
    assert_eq!(send_raw(&mut v, &probe, 100), Some(Status::Inval));
    // Features not negotiated: returned unwritten.
    v.ack_features(1 << F_MAP_UNMAP);
    assert_eq!(send_raw(&mut v, &probe, 512 + 4), None);
    v.ack_features(0);
    assert_eq!(send(&mut v, map(1, 0, 0xfff, 0, RW)), None);
    assert_eq!(v.negotiated_features(), 0);
}

#[test]
fn probe_reports_reserved_regions() {
    let iommu = Iommu::new();
    let config = Config {
        probe_size: 64,
        ..blocking()
    };
    let mut v = VirtioIommu::new(iommu.clone(), config);
    let (_, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let too_many = vec![ResvRegion::reserved(0..PAGE); 3];
    assert!(v.add_endpoint(5, &dev, too_many).is_err());
    assert!(v
        .add_endpoint(5, &dev, vec![ResvRegion::reserved(5..5)])
        .is_err());
    v.add_endpoint(
        5,
        &dev,
        vec![
            ResvRegion::msi(0x800_0000..0x810_0000),
            ResvRegion::reserved(0xfee0_0000..0xfef0_0000),
        ],
    )
    .unwrap();
    assert!(v.add_endpoint(5, &dev, Vec::new()).is_err());
    assert!(v.add_endpoint(6, &dev, Vec::new()).is_err());
    let mut w = vec![0xaau8; 64 + 4];
    let used = v
        .handle(&Request::Probe { endpoint: 5 }.to_bytes(), &mut w)
        .unwrap();
    assert_eq!(used, 68);
    let mut want = Vec::new();
    for (sub, s, e) in [
        (1u8, 0x800_0000u64, 0x80f_ffffu64),
        (0, 0xfee0_0000, 0xfeef_ffff),
    ] {
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(&20u16.to_le_bytes());
        want.extend_from_slice(&[sub, 0, 0, 0]);
        want.extend_from_slice(&s.to_le_bytes());
        want.extend_from_slice(&e.to_le_bytes());
    }
    want.resize(64, 0); // a NONE property ends the list
    want.extend_from_slice(&[0, 0, 0, 0]); // tail: OK
    assert_eq!(w, want);
}

#[test]
fn config_space_and_fault_events() {
    let (v, devs) = setup(1, blocking());
    let mut c = [0u8; 40];
    v.read_config(0, &mut c);
    assert_eq!(&c[0..8], &(!0xfffu64).to_le_bytes());
    assert_eq!(&c[16..24], &((1u64 << 48) - 1).to_le_bytes());
    assert_eq!(&c[28..32], &u32::MAX.to_le_bytes());
    assert_eq!(&c[32..36], &512u32.to_le_bytes());
    assert_eq!(c[36], 0, "bypass");
    assert_eq!(v.device_features(), 0b111_0111);
    let f = devs[0].translate(0x1000, 8, Access::Write).unwrap_err();
    let e = v.fault_event(devs[0].id(), &f, Access::Write).unwrap();
    assert_eq!(e.reason, FAULT_R_DOMAIN);
    assert_eq!(e.endpoint, 1);
    assert_eq!(e.to_bytes()[16..24], 0x1000u64.to_le_bytes());
}

#[test]
fn groups_move_together_or_not_at_all() {
    let iommu = Iommu::new();
    let mut v = VirtioIommu::new(iommu.clone(), blocking());
    let (_, a) = iommu
        .device_bind(GroupId(7), DeviceInfo::default())
        .unwrap();
    let (_, b) = iommu
        .device_bind(GroupId(7), DeviceInfo::default())
        .unwrap();
    v.add_endpoint(1, &a, Vec::new()).unwrap();
    v.add_endpoint(2, &b, Vec::new()).unwrap();
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    assert_eq!(send(&mut v, attach(2, 2)), Some(Status::Unsupp));
    assert_eq!(send(&mut v, attach(1, 2)), OK);
    assert_eq!(send(&mut v, attach(2, 1)), Some(Status::Unsupp));
    assert_eq!(v.domain_endpoints(1), vec![1, 2]);
    assert!(v.domain_endpoints(2).is_empty());
    v.remove_endpoint(2).unwrap();
    assert_eq!(send(&mut v, attach(2, 1)), OK);
    assert_eq!(v.domains(), vec![2]);
    v.reset().unwrap();
    assert!(v.domains().is_empty());
    assert_eq!(iommu.stats().ioas, 0);
}

/// Endpoint 1 moves between domains 1 and 2, which endpoints 2 and 3 keep alive and which
/// map the same IOVAs to the same pages, while a DMA thread translates: zero faults.
#[test]
fn hitless_reattach_under_dma() {
    let (mut v, devs) = setup(3, blocking());
    assert_eq!(send(&mut v, attach(1, 2)), OK);
    assert_eq!(send(&mut v, attach(2, 3)), OK);
    for d in [1, 2] {
        assert_eq!(
            send(&mut v, map(d, 0x10_0000, 0x2f_ffff, 0x4000_0000, RW)),
            OK
        );
    }
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    let stop = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let dma = {
        let (dev, stop, faults, done) =
            (devs[0].clone(), stop.clone(), faults.clone(), done.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let iova = 0x10_0000 + (i % 512) * PAGE;
                let g = dev.pin();
                match g.translate(iova, 64, Access::Write) {
                    Ok(t) if t.as_slice()[0].target == iova - 0x10_0000 + 0x4000_0000 => {}
                    _ => {
                        faults.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(g);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    // The DMA thread is running before the first move, and has translated many times by
    // the last one.
    while done.load(Ordering::Relaxed) == 0 {
        thread::yield_now();
    }
    let mut moves = 0u64;
    while moves < 2000 || done.load(Ordering::Relaxed) < 10_000 {
        assert_eq!(send(&mut v, attach(2 - (moves % 2) as u32, 1)), OK);
        moves += 1;
    }
    stop.store(true, Ordering::Relaxed);
    dma.join().unwrap();
    assert_eq!(faults.load(Ordering::Relaxed), 0);
    assert_eq!(v.domains(), vec![1, 2]);
}

/// A guard alive before the pass delays the pass's completion; the UNMAPs are in effect at
/// once (new guards fault), and every reply is written after the guard is dropped.
#[test]
fn batched_unmap_waits_for_guards() {
    let (mut v, devs) = setup(1, blocking());
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    for i in 0..8u64 {
        let s = 0x10_0000 + i * 0x10_000;
        assert_eq!(
            send(
                &mut v,
                map(1, s, s + 0xffff, 0x4000_0000 + i * 0x10_000, RW)
            ),
            OK
        );
    }
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let dev = devs[0].clone();
    let holder = thread::spawn(move || {
        let g = dev.pin();
        assert!(g.translate(0x10_0000, 8, Access::Read).is_ok());
        pinned_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        drop(g);
    });
    pinned_rx.recv().unwrap();
    let dev = devs[0].clone();
    let (done_tx, done_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let reqs: Vec<Vec<u8>> = (0..8u64)
            .map(|i| {
                let s = 0x10_0000 + i * 0x10_000;
                unmap(1, s, s + 0xffff).to_bytes()
            })
            .collect();
        let mut tails = vec![[0xaau8; 4]; 8];
        {
            let mut bufs: Vec<RequestBuffers<'_>> = reqs
                .iter()
                .zip(tails.iter_mut())
                .map(|(r, t)| RequestBuffers {
                    readable: r,
                    writable: t,
                    used: 0,
                })
                .collect();
            v.process_batch(&mut bufs).unwrap();
            assert!(bufs.iter().all(|b| b.used == 4));
        }
        done_tx.send(()).unwrap();
        (v, tails)
    });
    // The unmaps are in effect before the pass completes: new guards fault.
    assert!(becomes_unmapped(&dev, 0x17_0000));
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the pass completed while a guard that might use the old pages was alive"
    );
    release_tx.send(()).unwrap();
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    holder.join().unwrap();
    let (v, tails) = server.join().unwrap();
    assert!(tails.iter().all(|t| t == &[0, 0, 0, 0]));
    assert!(v.domain_mappings(1).is_empty());
}

#[test]
fn batch_wait_from_a_pinned_thread_is_edeadlk_and_retryable() {
    let (mut v, devs) = setup(1, blocking());
    assert_eq!(send(&mut v, attach(1, 1)), OK);
    assert_eq!(send(&mut v, map(1, 0, 0xfff, 0, RW)), OK);
    let g = devs[0].pin();
    let mut batch = Batch::new(&v);
    let c = v.submit(&unmap(1, 0, 0xfff).to_bytes(), 4);
    assert!(c.has_fence());
    assert!(!c.is_complete(), "our own guard is alive");
    assert_eq!(c.status(), OK);
    batch.push(c);
    assert!(matches!(batch.wait(), Err(Error::Deadlock { .. })));
    drop(g);
    let replies = batch.wait().unwrap();
    assert_eq!(replies, vec![vec![0, 0, 0, 0]]);
}

// ---- Linux's drivers/iommu/virtio-iommu.c, byte for byte ----

/// `struct virtio_iommu_req_probe` with `probe_size` bytes of properties and a tail, as
/// `viommu_probe_endpoint` allocates it.
fn linux_probe(endpoint: u32, probe_size: usize) -> Vec<u8> {
    let mut b = vec![0u8; 4 + 4 + 64 + probe_size + 4];
    b[0] = 5;
    b[4..8].copy_from_slice(&endpoint.to_le_bytes());
    b
}

fn linux_detach(domain: u32, endpoint: u32) -> Vec<u8> {
    let mut b = linux_attach(domain, endpoint);
    b[0] = 2;
    b
}

/// The driver's queue: requests queued with `viommu_add_req`, then `viommu_sync_req`
/// (one pass). Returns each request with its device-writable part as the device left it.
fn linux_sync(v: &mut VirtioIommu, mut reqs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    {
        let mut bufs: Vec<RequestBuffers<'_>> = reqs
            .iter_mut()
            .map(|r| RequestBuffers::from_struct(r).expect("well formed"))
            .collect();
        v.process_batch(&mut bufs).unwrap();
        for b in &bufs {
            assert_eq!(
                b.used,
                b.writable.len(),
                "the driver checks the used length"
            );
        }
    }
    reqs
}

/// `viommu_get_req_errno`: the status is in the last 4 bytes of the buffer.
fn linux_status(req: &[u8]) -> u8 {
    req[req.len() - 4]
}

#[test]
fn linux_boot_sequence() {
    let iommu = Iommu::new();
    let mut v = VirtioIommu::new(iommu.clone(), blocking());
    // Two PCI endpoints (RID 0x8 and 0x10): the first behind an ITS doorbell region the
    // VMM reports as MSI, the second with nothing reserved.
    let msi = 0x800_0000..0x810_0000;
    let (_, nic) = iommu
        .device_bind(
            GroupId(8),
            DeviceInfo {
                reserved: vec![msi.clone()],
                ..DeviceInfo::default()
            },
        )
        .unwrap();
    let (_, blk) = iommu
        .device_bind(GroupId(16), DeviceInfo::default())
        .unwrap();
    v.add_endpoint(0x8, &nic, vec![ResvRegion::msi(msi)])
        .unwrap();
    v.add_endpoint(0x10, &blk, Vec::new()).unwrap();

    // viommu_probe: feature negotiation and config reads.
    v.ack_features(OFFERED_FEATURES | (1 << 32));
    let mut cfg = [0u8; 40];
    v.read_config(0, &mut cfg);
    let probe_size = u32::from_le_bytes(cfg[32..36].try_into().unwrap()) as usize;
    let first_domain = u32::from_le_bytes(cfg[24..28].try_into().unwrap());

    // viommu_probe_device -> viommu_probe_endpoint, for each endpoint.
    let replies = linux_sync(&mut v, vec![linux_probe(0x8, probe_size)]);
    let props = &replies[0][72..72 + probe_size];
    assert_eq!(linux_status(&replies[0]), 0);
    assert_eq!(&props[0..8], &[1, 0, 20, 0, 1, 0, 0, 0]); // RESV_MEM, 20 bytes, MSI
    assert_eq!(&props[8..16], &0x800_0000u64.to_le_bytes());
    assert_eq!(&props[16..24], &0x80f_ffffu64.to_le_bytes());
    assert_eq!(&props[24..28], &[0, 0, 0, 0]); // NONE
    let replies = linux_sync(&mut v, vec![linux_probe(0x10, probe_size)]);
    assert_eq!(linux_status(&replies[0]), 0);
    assert!(replies[0][72..72 + probe_size].iter().all(|&b| b == 0));

    // Default DMA domains: ida_alloc_range from domain_range.start; attach sends ATTACH.
    let (d_nic, d_blk) = (first_domain, first_domain + 1);
    let r = linux_sync(&mut v, vec![linux_attach(d_nic, 0x8)]);
    assert_eq!(r[0][20..24], [0, 0, 0, 0]);
    let r = linux_sync(&mut v, vec![linux_attach(d_blk, 0x10)]);
    assert_eq!(r[0][20..24], [0, 0, 0, 0]);
    // The blk endpoint has no MSI region: dma-iommu maps the doorbell page into the
    // software MSI window (MSI_IOVA_BASE 0x8000000) with IOMMU_MMIO.
    let r = linux_sync(
        &mut v,
        vec![linux_map(
            d_blk,
            0x800_0000,
            0x809_0000,
            PAGE,
            RW | MAP_F_MMIO,
        )],
    );
    assert_eq!(linux_status(&r[0]), 0);

    // Per-I/O, strict mode: MAP, then UNMAP and an immediate sync.
    let iova = 0xffff_e000;
    let r = linux_sync(
        &mut v,
        vec![linux_map(d_nic, iova, 0x4_2000_0000, 0x2000, RW)],
    );
    assert_eq!(linux_status(&r[0]), 0);
    assert_eq!(
        target(&nic, iova + 0x1234, Access::Write),
        Ok(0x4_2000_1234)
    );
    let r = linux_sync(&mut v, vec![linux_unmap(d_nic, iova, 0x2000)]);
    assert_eq!(linux_status(&r[0]), 0);
    assert_eq!(target(&nic, iova, Access::Read), Err(FaultKind::Unmapped));

    // Lazy mode: the flush queue unmaps many IOVAs, then one iotlb_sync.
    let mut maps = Vec::new();
    for i in 0..16u64 {
        maps.push(linux_map(
            d_blk,
            0xfff0_0000 + i * PAGE,
            0x5_0000_0000 + i * PAGE,
            PAGE,
            MAP_F_READ,
        ));
    }
    for r in linux_sync(&mut v, maps) {
        assert_eq!(linux_status(&r), 0);
    }
    assert_eq!(target(&blk, 0xfff0_3000, Access::Read), Ok(0x5_0000_3000));
    let unmaps = (0..16u64)
        .map(|i| linux_unmap(d_blk, 0xfff0_0000 + i * PAGE, PAGE))
        .collect();
    for r in linux_sync(&mut v, unmaps) {
        assert_eq!(linux_status(&r), 0);
    }
    assert_eq!(
        v.domain_mappings(d_blk).len(),
        1,
        "the MSI doorbell mapping stays"
    );

    // A MAP over the MSI region PROBE reported is refused.
    let r = linux_sync(&mut v, vec![linux_map(d_nic, 0x800_0000, 0, PAGE, RW)]);
    assert_eq!(linux_status(&r[0]), Status::Inval.as_u8());

    // Device removal: viommu_detach_dev.
    for (d, ep) in [(d_nic, 0x8), (d_blk, 0x10)] {
        let r = linux_sync(&mut v, vec![linux_detach(d, ep)]);
        assert_eq!(linux_status(&r[0]), 0);
    }
    assert!(v.domains().is_empty());
    iommu.synchronize().unwrap();
    assert_eq!(iommu.stats().ioas, 0);
    assert_eq!(iommu.stats().live_domains, 0);
}

// ---- random input ----

fn any_request() -> impl Strategy<Value = Request> {
    let dom = 0u32..4;
    let ep = 0u32..5;
    let page = 0u64..24;
    let pages = 1u64..6;
    prop_oneof![
        (dom.clone(), ep.clone(), prop::bool::weighted(0.05)).prop_map(|(d, e, r)| {
            Request::Attach {
                domain: d,
                endpoint: e,
                flags: 0,
                reserved_set: r,
            }
        }),
        (dom.clone(), ep.clone()).prop_map(|(d, e)| detach(d, e)),
        (dom.clone(), page.clone(), pages.clone(), 0u64..64, 0u32..8)
            .prop_map(|(d, p, n, t, f)| map(d, p * PAGE, (p + n) * PAGE - 1, t * PAGE, f)),
        (dom, page, pages, prop::bool::weighted(0.2)).prop_map(|(d, p, n, odd)| {
            let start = p * PAGE + if odd { 0x800 } else { 0 };
            unmap(d, start, (p + n) * PAGE - 1)
        }),
        ep.prop_map(|e| Request::Probe { endpoint: e }),
    ]
}

/// Everything the guest can observe of the device's state.
type Books = Vec<(u32, Vec<u32>, Vec<viommu::virtio_iommu::MappingInfo>)>;

fn books(v: &VirtioIommu) -> Books {
    v.domains()
        .into_iter()
        .map(|d| (d, v.domain_endpoints(d), v.domain_mappings(d)))
        .collect()
}

/// The model's books agree with themselves and with what the endpoints translate.
fn check(v: &VirtioIommu, devs: &[Device]) {
    let mut ioas = 0;
    for d in v.domains() {
        let eps = v.domain_endpoints(d);
        assert!(
            !eps.is_empty(),
            "a domain without endpoints ceased to exist"
        );
        ioas += 1;
        for &e in &eps {
            assert_eq!(v.endpoint_domain(e), Some(d));
            let dev = &devs[(e - 1) as usize];
            let ms = v.domain_mappings(d);
            for w in ms.windows(2) {
                assert!(w[0].virt_end < w[1].virt_start);
            }
            for m in ms {
                let access = if m.flags & MAP_F_READ != 0 {
                    Access::Read
                } else {
                    Access::Write
                };
                for iova in [m.virt_start, m.virt_end] {
                    assert_eq!(
                        target(dev, iova, access),
                        Ok(m.phys_start + (iova - m.virt_start))
                    );
                }
            }
        }
    }
    for (i, dev) in devs.iter().enumerate() {
        if v.endpoint_domain(i as u32 + 1).is_none() {
            assert_eq!(target(dev, 0, Access::Read), Err(FaultKind::Blocked));
        }
    }
    assert_eq!(v.iommu().stats().ioas, ioas);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        reqs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..80), 0usize..600, 0u8..6),
            1..24,
        )
    ) {
        let (mut v, devs) = setup(3, Config { probe_size: 64, ..blocking() });
        for (mut bytes, wlen, kind) in reqs {
            // Half the time a known type, so the fields get exercised too.
            if let Some(b) = bytes.first_mut() {
                if kind > 0 { *b = kind; }
            }
            let mut w = vec![0u8; wlen];
            let before = books(&v);
            let used = v.handle(&bytes, &mut w).unwrap();
            prop_assert!(used <= wlen);
            if used == 0 || w[used - 4] != 0 {
                // Returned unwritten, or rejected: nothing changed.
                prop_assert_eq!(books(&v), before);
            }
            check(&v, &devs);
        }
    }

    #[test]
    fn random_sequences_keep_state_consistent(
        reqs in prop::collection::vec(any_request(), 1..40),
        batch in 1usize..5,
    ) {
        let (mut v, devs) = setup(4, Config { probe_size: 64, ..blocking() });
        for chunk in reqs.chunks(batch) {
            let bytes: Vec<Vec<u8>> = chunk.iter().map(Request::to_bytes).collect();
            let mut outs: Vec<Vec<u8>> = chunk
                .iter()
                .map(|r| vec![0xaa; if r.kind() == wire::T_PROBE { 68 } else { 4 }])
                .collect();
            let mut bufs: Vec<RequestBuffers<'_>> = bytes
                .iter()
                .zip(outs.iter_mut())
                .map(|(r, w)| RequestBuffers { readable: r, writable: w, used: 0 })
                .collect();
            v.process_batch(&mut bufs).unwrap();
            for (b, r) in bufs.iter().zip(chunk) {
                prop_assert_eq!(b.used, b.writable.len(), "{:?}", r);
                let status = b.writable[b.used - 4];
                prop_assert!(status <= 8);
            }
            check(&v, &devs);
        }
        v.reset().unwrap();
        check(&v, &devs);
        prop_assert_eq!(v.iommu().stats().ioas, 0);
    }
}
