//! PASIDs: the intents of the iommufd selftest `pasid_attach`
//! (`tools/testing/selftests/iommu/iommufd.c`), every PASID row of the errno table, rollback of
//! a PASID replace that fails half-way through its checks, the fences of
//! `device_detach_pasid`, hitless PASID replace under DMA through `pin_pasid`, reclamation
//! with PASID domains, and thousands of PASIDs on one device.

mod common;

use common::{bind, err, ioas_with, StopOnDrop, PAGE};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use viommu::errno::{EADDRINUSE, EBUSY, EDEADLK, EINVAL, ENOENT, EOVERFLOW};
use viommu::{
    Access, Device, DeviceInfo, DmaGuard, Error, FaultKind, HwptFlags, Iommu, ObjId, Prot,
    MAX_PASID_BITS,
};

const IOVA: u64 = 0x10_0000;
const T_RID: u64 = 0x1_0000_0000;
const T_A: u64 = 0x2_0000_0000;
const T_B: u64 = 0x3_0000_0000;
/// A device's MSI window (reserved).
const MSI: Range<u64> = 0xfee0_0000..0xfef0_0000;

/// A device with `pasid_bits`-bit PASIDs and the default aperture.
fn pasid_info(pasid_bits: u8) -> DeviceInfo {
    DeviceInfo {
        pasid_bits,
        ..DeviceInfo::default()
    }
}

/// An IOAS mapping the page at `IOVA` to `target`.
fn page_ioas(iommu: &Iommu, target: u64) -> ObjId {
    ioas_with(iommu, &[(IOVA, target, PAGE, Prot::RW)])
}

/// One page through a guard: its target, or the fault kind.
fn through(g: &DmaGuard<'_>, iova: u64) -> Result<u64, FaultKind> {
    match g.translate(iova, PAGE, Access::Read) {
        Ok(t) => {
            let c: Vec<_> = t.collect();
            assert_eq!(c.len(), 1, "{c:x?}");
            Ok(c[0].target)
        }
        Err(f) => Err(f.kind),
    }
}

/// Device `h` at PASID `pasid` (0: the RID), one page at `IOVA`.
fn at(h: &Device, pasid: u32) -> Result<u64, FaultKind> {
    through(&h.pin_pasid(pasid), IOVA)
}

/// The library's memory counters and object counts, for rollback checks.
fn counts(iommu: &Iommu) -> (usize, usize, usize, usize) {
    iommu.synchronize().unwrap();
    let s = iommu.stats();
    (s.hwpts, s.live_domains, s.live_tables, s.devices)
}

// ---------------------------------------------------------------------------------------
// The selftest's `pasid_attach` intents.

/// Attach, attach again (`EBUSY`, even to the same HWPT), replace, replace to the current HWPT
/// (a no-op), detach, and replace or detach once detached (`EINVAL`), with the RID left alone
/// throughout.
#[test]
fn pasid_attach_replace_detach() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(20));
    let rid_ioas = page_ioas(&iommu, T_RID);
    let a = page_ioas(&iommu, T_A);
    let b = page_ioas(&iommu, T_B);
    iommu.device_attach(dev, rid_ioas).unwrap();
    let ha = iommu.hwpt_alloc(dev, a, HwptFlags::empty()).unwrap();
    let hb = iommu.hwpt_alloc(dev, b, HwptFlags::empty()).unwrap();
    const P: u32 = 100;

    assert_eq!(at(&h, P), Err(FaultKind::Blocked), "nothing attached yet");
    assert_eq!(iommu.device_attach_pasid(dev, P, ha), Ok(ha));
    assert_eq!(at(&h, P), Ok(T_A));
    assert_eq!(at(&h, 0), Ok(T_RID), "the RID is its own domain");
    assert_eq!(
        at(&h, P + 1),
        Err(FaultKind::Blocked),
        "other PASIDs are blocked"
    );

    let e = err(iommu.device_attach_pasid(dev, P, ha), EBUSY);
    assert!(
        matches!(e, Error::PasidBusy { pasid: P, hwpt, .. } if hwpt == ha),
        "{e:?}"
    );
    err(iommu.device_attach_pasid(dev, P, hb), EBUSY);
    err(iommu.device_attach_pasid(dev, P, b), EBUSY);
    assert_eq!(at(&h, P), Ok(T_A), "a failed attach changes nothing");

    assert_eq!(iommu.device_replace_pasid(dev, P, hb), Ok(hb));
    assert_eq!(at(&h, P), Ok(T_B));
    assert_eq!(iommu.device_replace_pasid(dev, P, hb), Ok(hb), "no-op");
    assert_eq!(at(&h, P), Ok(T_B));
    // A user HWPT with a PASID attached is busy.
    err(iommu.destroy(hb), EBUSY);
    iommu.destroy(ha).unwrap();

    iommu.device_detach_pasid(dev, P).unwrap();
    assert_eq!(at(&h, P), Err(FaultKind::Blocked));
    assert_eq!(at(&h, 0), Ok(T_RID), "the RID is untouched");
    let e = err(iommu.device_replace_pasid(dev, P, hb), EINVAL);
    assert!(
        matches!(e, Error::PasidNotAttached { pasid: P, .. }),
        "{e:?}"
    );
    err(iommu.device_detach_pasid(dev, P), EINVAL);

    // Re-attach after detach reuses the PASID.
    assert_eq!(iommu.device_attach_pasid(dev, P, hb), Ok(hb));
    assert_eq!(at(&h, P), Ok(T_B));
    iommu.device_detach_pasid(dev, P).unwrap();
    iommu.destroy(hb).unwrap();
    iommu.device_detach(dev).unwrap();
    iommu.destroy(dev).unwrap();
    let s = counts(&iommu);
    assert_eq!((s.0, s.1, s.2), (0, 0, 0));
}

/// PASID 0 and PASIDs at or above `1 << pasid_bits` are `EINVAL` for every PASID call, as is
/// any PASID of a device without PASID support; `pin_pasid` of them faults `Blocked`, and
/// `pin_pasid(0)` is the RID.
#[test]
fn invalid_pasids_are_einval() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(4));
    let (plain, plain_h) = bind(&iommu, 2, DeviceInfo::default());
    let ioas = page_ioas(&iommu, T_A);
    iommu.device_attach(dev, ioas).unwrap();
    let before = counts(&iommu);
    for (d, p) in [(dev, 0), (dev, 16), (dev, u32::MAX), (plain, 1), (plain, 0)] {
        let e = err(iommu.device_attach_pasid(d, p, ioas), EINVAL);
        assert!(
            matches!(e, Error::InvalidPasid { pasid, .. } if pasid == p),
            "{e:?}"
        );
        err(iommu.device_replace_pasid(d, p, ioas), EINVAL);
        err(iommu.device_detach_pasid(d, p), EINVAL);
    }
    assert_eq!(counts(&iommu), before, "nothing changed");
    assert_eq!(at(&h, 0), Ok(T_A), "pin_pasid(0) is pin()");
    assert_eq!(through(&h.pin(), IOVA), Ok(T_A));
    assert_eq!(at(&h, 16), Err(FaultKind::Blocked));
    assert_eq!(at(&h, u32::MAX), Err(FaultKind::Blocked));
    assert_eq!(at(&plain_h, 1), Err(FaultKind::Blocked));
    // The highest PASID of the device works.
    assert!(iommu.device_attach_pasid(dev, 15, ioas).is_ok());
    assert_eq!(at(&h, 15), Ok(T_A));
    // Unknown objects.
    let e = err(iommu.device_attach_pasid(ioas, 1, ioas), EINVAL);
    assert!(matches!(e, Error::WrongType { .. }), "{e:?}");
    let gone = iommu.ioas_alloc().unwrap();
    iommu.destroy(gone).unwrap();
    err(iommu.device_attach_pasid(dev, 1, gone), ENOENT);
    err(iommu.device_attach_pasid(gone, 1, ioas), ENOENT);
    err(iommu.device_attach_pasid(dev, 1, dev), EINVAL);
}

/// `pasid_bits` above 20 is `EINVAL` at bind; 20 and 0 are fine, and `DeviceInfo` still
/// builds with struct update syntax.
#[test]
fn pasid_bits_at_bind() {
    let iommu = Iommu::new();
    let e = err(
        iommu.device_bind(viommu::GroupId(1), pasid_info(MAX_PASID_BITS + 1)),
        EINVAL,
    );
    assert!(matches!(e, Error::InvalidPasidBits { bits: 21 }), "{e:?}");
    assert_eq!(iommu.stats().devices, 0);
    let info = DeviceInfo {
        iova_bits: 39,
        ..DeviceInfo::default()
    };
    assert_eq!(info.pasid_bits, 0);
    iommu.device_bind(viommu::GroupId(1), info).unwrap();
    iommu
        .device_bind(viommu::GroupId(1), pasid_info(20))
        .unwrap();
}

/// A PASID another device of the group has attached: attaching it to the same HWPT (or the
/// IOAS of the group's auto HWPT) joins; another HWPT is `EINVAL`. A PASID replace moves every
/// device of the group with that PASID at once (G3); detaching one device's PASID leaves the
/// other translating (G6 is per device).
#[test]
fn group_shares_one_domain_per_pasid() {
    let iommu = Iommu::new();
    let (d1, h1) = bind(&iommu, 1, pasid_info(8));
    let (d2, h2) = bind(&iommu, 1, pasid_info(8));
    let a = page_ioas(&iommu, T_A);
    let b = page_ioas(&iommu, T_B);
    let auto = iommu.device_attach_pasid(d1, 7, a).unwrap();
    let hb = iommu.hwpt_alloc(d1, b, HwptFlags::empty()).unwrap();
    assert_eq!(
        at(&h2, 7),
        Err(FaultKind::Blocked),
        "d2 has not attached PASID 7"
    );

    let e = err(iommu.device_attach_pasid(d2, 7, hb), EINVAL);
    assert!(
        matches!(e, Error::PasidOnOtherHwpt { pasid: 7, current, requested, .. } if current == auto && requested == hb),
        "{e:?}"
    );
    err(iommu.device_attach_pasid(d2, 7, b), EINVAL);
    assert_eq!(
        iommu.device_attach_pasid(d2, 7, a),
        Ok(auto),
        "joins via the IOAS"
    );
    assert_eq!(at(&h2, 7), Ok(T_A));

    // One publish moves both.
    assert_eq!(iommu.device_replace_pasid(d2, 7, hb), Ok(hb));
    assert_eq!((at(&h1, 7), at(&h2, 7)), (Ok(T_B), Ok(T_B)));
    err(iommu.destroy(auto), ENOENT); // the replaced-away auto HWPT is gone (G9)

    // Another PASID of the same group is independent.
    assert_eq!(at(&h1, 8), Err(FaultKind::Blocked));
    let auto8 = iommu.device_attach_pasid(d1, 8, a).unwrap();
    assert_eq!((at(&h1, 8), at(&h1, 7)), (Ok(T_A), Ok(T_B)));

    iommu.device_detach_pasid(d1, 7).unwrap();
    assert_eq!(at(&h1, 7), Err(FaultKind::Blocked));
    assert_eq!(at(&h2, 7), Ok(T_B), "the peer keeps translating");
    // d1 re-joins d2's HWPT; joining with a new IOAS auto HWPT is refused.
    err(iommu.device_attach_pasid(d1, 7, a), EINVAL);
    assert_eq!(iommu.device_attach_pasid(d1, 7, hb), Ok(hb));
    for (d, p) in [(d1, 7), (d2, 7), (d1, 8)] {
        iommu.device_detach_pasid(d, p).unwrap();
    }
    err(iommu.destroy(auto8), ENOENT);
    iommu.destroy(hb).unwrap();
    assert_eq!(counts(&iommu).1, 0);
}

/// A PASID attached to the IOAS the RID is on shares the RID's auto HWPT; detaching the RID
/// leaves the PASID attached (and the auto HWPT alive); `destroy(dev)` is `EBUSY` while a PASID
/// is attached.
#[test]
fn rid_detach_leaves_pasids_and_destroy_is_ebusy() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(8));
    let a = page_ioas(&iommu, T_A);
    let rid_hwpt = iommu.device_attach(dev, a).unwrap();
    assert_eq!(iommu.device_attach_pasid(dev, 3, a), Ok(rid_hwpt));
    iommu.device_detach(dev).unwrap();
    assert_eq!(at(&h, 0), Err(FaultKind::Blocked));
    assert_eq!(at(&h, 3), Ok(T_A), "the PASID stays attached");
    err(iommu.destroy(rid_hwpt), EBUSY);
    let e = err(iommu.destroy(dev), EBUSY);
    assert!(matches!(e, Error::Busy { users: 1, .. }), "{e:?}");
    err(iommu.destroy(a), EBUSY);
    iommu.device_detach_pasid(dev, 3).unwrap();
    err(iommu.destroy(rid_hwpt), ENOENT);
    iommu.destroy(dev).unwrap();
    iommu.destroy(a).unwrap();
    assert_eq!(counts(&iommu), (0, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------
// Aperture and reserved ranges.

/// A PASID domain obeys the device's aperture and reserved ranges as the RID's does: attach
/// to an IOAS mapping outside the aperture is `EINVAL`, onto a reserved range `EADDRINUSE`;
/// once attached, maps into the reserved range are `EINVAL` and past the aperture `EOVERFLOW`.
/// The reservations belong to the attachment: detaching the RID keeps the PASID's.
#[test]
fn pasid_domain_obeys_aperture_and_reserved_ranges() {
    let iommu = Iommu::new();
    let info = DeviceInfo {
        iova_bits: 32,
        reserved: vec![MSI],
        pasid_bits: 8,
    };
    let (dev, h) = bind(&iommu, 1, info);
    let wide = ioas_with(&iommu, &[(1 << 32, T_A, PAGE, Prot::RW)]);
    let clash = ioas_with(&iommu, &[(MSI.start, T_A, PAGE, Prot::RW)]);
    let ok = page_ioas(&iommu, T_A);
    let before = counts(&iommu);
    let e = err(iommu.device_attach_pasid(dev, 1, wide), EINVAL);
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
    let e = err(iommu.device_attach_pasid(dev, 1, clash), EADDRINUSE);
    assert!(matches!(e, Error::ReservedInUse { .. }), "{e:?}");
    assert_eq!(
        counts(&iommu),
        before,
        "failed attaches change nothing (G8)"
    );
    assert_eq!(at(&h, 1), Err(FaultKind::Blocked));

    iommu.device_attach(dev, ok).unwrap();
    iommu.device_attach_pasid(dev, 1, ok).unwrap();
    // The RID leaves; the PASID's reservations and aperture stay in force on the IOAS.
    iommu.device_detach(dev).unwrap();
    let e = err(
        iommu.ioas_map(ok, Some(MSI.start), T_B, PAGE, Prot::RW),
        EINVAL,
    );
    assert!(matches!(e, Error::InReservedRange { .. }), "{e:?}");
    err(
        iommu.ioas_map(ok, Some(1 << 32), T_B, PAGE, Prot::RW),
        EOVERFLOW,
    );
    iommu.device_detach_pasid(dev, 1).unwrap();
    // Nothing attached any more: the reservation is gone.
    iommu
        .ioas_map(ok, Some(MSI.start), T_B, PAGE, Prot::RW)
        .unwrap();
}

/// An injected failure in the middle of a PASID replace (past planning and populate, at the
/// checks against the destination IOAS): a destination whose mappings leave the aperture of a
/// device of the group, or whose mappings cover a device's reserved range. The old domain
/// stays in place for every device, and objects, HWPTs and memory are as before (G8).
#[test]
fn failed_pasid_replace_leaves_the_old_domain() {
    let iommu = Iommu::new();
    let narrow = DeviceInfo {
        iova_bits: 32,
        pasid_bits: 8,
        ..DeviceInfo::default()
    };
    let reserving = DeviceInfo {
        reserved: vec![MSI],
        pasid_bits: 8,
        ..DeviceInfo::default()
    };
    // The wide device attaches first; the narrow and the reserving one join its PASID.
    let (wide, wide_h) = bind(&iommu, 1, pasid_info(8));
    let (nar, nar_h) = bind(&iommu, 1, narrow);
    let (res, res_h) = bind(&iommu, 1, reserving);
    let a = page_ioas(&iommu, T_A);
    let hwpt = iommu.device_attach_pasid(wide, 9, a).unwrap();
    iommu.device_attach_pasid(nar, 9, a).unwrap();
    iommu.device_attach_pasid(res, 9, a).unwrap();
    // Destinations: a new auto HWPT would be populated, then the checks fail.
    let wide_ioas = ioas_with(
        &iommu,
        &[(IOVA, T_B, PAGE, Prot::RW), (1 << 33, T_B, PAGE, Prot::RW)],
    );
    let clash_ioas = ioas_with(
        &iommu,
        &[
            (IOVA, T_B, PAGE, Prot::RW),
            (MSI.start, T_B, PAGE, Prot::RW),
        ],
    );
    let user_clash = iommu
        .hwpt_alloc(wide, clash_ioas, HwptFlags::empty())
        .unwrap();
    let before = counts(&iommu);
    let e = err(iommu.device_replace_pasid(wide, 9, wide_ioas), EINVAL);
    assert!(
        matches!(e, Error::Incompatible { dev, .. } if dev == nar),
        "{e:?}"
    );
    let e = err(iommu.device_replace_pasid(nar, 9, clash_ioas), EADDRINUSE);
    assert!(
        matches!(e, Error::ReservedInUse { dev, .. } if dev == res),
        "{e:?}"
    );
    let e = err(iommu.device_replace_pasid(res, 9, user_clash), EADDRINUSE);
    assert!(matches!(e, Error::ReservedInUse { .. }), "{e:?}");
    assert_eq!(counts(&iommu), before, "nothing allocated or freed");
    for h in [&wide_h, &nar_h, &res_h] {
        assert_eq!(at(h, 9), Ok(T_A), "the old domain is in place");
    }
    err(iommu.destroy(hwpt), EBUSY); // still the group's, still auto
                                     // The reservation is still enforced on the old IOAS, and absent from the new ones.
    err(
        iommu.ioas_map(a, Some(MSI.start), T_B, PAGE, Prot::RW),
        EINVAL,
    );
    // And a replace that fits goes through afterwards.
    let fine = page_ioas(&iommu, T_B);
    iommu.device_replace_pasid(res, 9, fine).unwrap();
    for h in [&wide_h, &nar_h, &res_h] {
        assert_eq!(at(h, 9), Ok(T_B));
    }
}

// ---------------------------------------------------------------------------------------
// Fences and snapshots.

/// `device_detach_pasid` is `EDEADLK` from a thread holding any guard of the `Iommu` (a
/// `pin_pasid` one included), and otherwise waits for the device's guards made before it (G6);
/// a guard made before a PASID replace keeps its domain (G1).
#[test]
fn detach_pasid_fences_and_snapshots() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(8));
    let a = page_ioas(&iommu, T_A);
    let b = page_ioas(&iommu, T_B);
    iommu.device_attach_pasid(dev, 2, a).unwrap();
    {
        let g = h.pin_pasid(2);
        let e = err(iommu.device_detach_pasid(dev, 2), EDEADLK);
        assert!(
            matches!(
                e,
                Error::Deadlock {
                    call: "device_detach_pasid"
                }
            ),
            "{e:?}"
        );
        // G1: a replace does not change what this guard sees.
        iommu.device_replace_pasid(dev, 2, b).unwrap();
        assert_eq!(through(&g, IOVA), Ok(T_A));
        assert_eq!(at(&h, 2), Ok(T_B), "a new guard sees the new domain");
        assert_eq!(through(&g, IOVA), Ok(T_A));
    }
    // A guard held by another thread delays the detach until it is dropped.
    let held = AtomicBool::new(true);
    let pinned = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            let g = h.pin_pasid(2);
            assert_eq!(through(&g, IOVA), Ok(T_B));
            pinned.wait();
            thread::sleep(Duration::from_millis(50));
            held.store(false, Ordering::SeqCst);
            drop(g);
        });
        pinned.wait();
        iommu.device_detach_pasid(dev, 2).unwrap();
        assert!(
            !held.load(Ordering::SeqCst),
            "detach returned while a guard lived"
        );
        assert_eq!(at(&h, 2), Err(FaultKind::Blocked));
    });
}

/// One thread alternating between the RID and many PASIDs of two groups, each on its own
/// domain, while they are replaced: the per-thread snapshot cache (shared ways) never serves
/// a domain for a (group, PASID) it was not filled from.
#[test]
fn snapshot_cache_never_mixes_pasids() {
    let iommu = Iommu::new();
    let (d1, h1) = bind(&iommu, 1, pasid_info(8));
    let (d2, h2) = bind(&iommu, 2, pasid_info(8));
    // IOAS k maps IOVA to target k pages up.
    let ioases: Vec<ObjId> = (0..40u64)
        .map(|k| page_ioas(&iommu, T_A + k * PAGE))
        .collect();
    let target = |ioas_ix: usize| T_A + ioas_ix as u64 * PAGE;
    let mut want = std::collections::HashMap::new();
    for (d, g) in [(d1, 0usize), (d2, 1)] {
        iommu.device_attach(d, ioases[g]).unwrap();
        want.insert((g, 0u32), g);
        for p in 1..=16u32 {
            let ix = (p as usize * 2 + g) % 40;
            iommu.device_attach_pasid(d, p, ioases[ix]).unwrap();
            want.insert((g, p), ix);
        }
    }
    let handles = [&h1, &h2];
    let devs = [d1, d2];
    for round in 0..30usize {
        for g in 0..2 {
            for p in 0..=16u32 {
                assert_eq!(at(handles[g], p), Ok(target(want[&(g, p)])), "{g} {p}");
            }
        }
        // Move a few attachments.
        let g = round % 2;
        let p = (round * 7 % 17) as u32;
        let ix = (round * 13 + 5) % 40;
        if p == 0 {
            iommu.device_replace(devs[g], ioases[ix]).unwrap();
        } else {
            iommu.device_replace_pasid(devs[g], p, ioases[ix]).unwrap();
        }
        want.insert((g, p), ix);
    }
}

// ---------------------------------------------------------------------------------------
// Scale.

/// Thousands of PASIDs on one 20-bit device, spread over the whole range (every leaf of its
/// table boundary, the first and the last PASID), on a handful of domains; replaced, then
/// detached; memory returns to zero.
#[test]
fn thousands_of_pasids_on_one_device() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(20));
    let ioases: Vec<ObjId> = (0..4u64)
        .map(|k| page_ioas(&iommu, T_A + k * PAGE))
        .collect();
    let mut pasids: Vec<u32> = (1..=3000u32).collect();
    pasids.extend((0..1000u32).map(|i| 3001 + i * 1043));
    pasids.extend([511, 512, 513, (1 << 20) - 1]);
    pasids.sort_unstable();
    pasids.dedup();
    assert!(pasids.len() > 4000);
    let hwpts: Vec<ObjId> = pasids
        .iter()
        .map(|&p| {
            iommu
                .device_attach_pasid(dev, p, ioases[p as usize % 4])
                .unwrap()
        })
        .collect();
    let distinct: std::collections::HashSet<_> = hwpts.iter().collect();
    assert_eq!(distinct.len(), 4, "PASIDs of one IOAS share its auto HWPT");
    for &p in &pasids {
        assert_eq!(at(&h, p), Ok(T_A + (p as u64 % 4) * PAGE), "PASID {p}");
    }
    assert_eq!(at(&h, 3002), Err(FaultKind::Blocked));
    for &p in pasids.iter().step_by(3) {
        iommu
            .device_replace_pasid(dev, p, ioases[(p as usize + 1) % 4])
            .unwrap();
    }
    for (i, &p) in pasids.iter().enumerate() {
        let k = if i % 3 == 0 { p as u64 + 1 } else { p as u64 };
        assert_eq!(at(&h, p), Ok(T_A + (k % 4) * PAGE), "PASID {p}");
    }
    let s = counts(&iommu);
    assert_eq!((s.0, s.1), (4, 4), "four auto HWPTs, four domains");
    for &p in &pasids {
        iommu.device_detach_pasid(dev, p).unwrap();
    }
    for &p in pasids.iter().take(50) {
        assert_eq!(at(&h, p), Err(FaultKind::Blocked));
    }
    iommu.destroy(dev).unwrap();
    let s = counts(&iommu);
    assert_eq!(
        (s.0, s.1, s.2),
        (0, 0, 0),
        "every auto HWPT and domain is freed"
    );
}

// ---------------------------------------------------------------------------------------
// Concurrency: hitless replace and reclamation.

/// G2 at a PASID: DMA threads pin `pin_pasid` and translate without pause while the PASID is
/// replaced back and forth between user and auto HWPTs on two IOASes that both map the page;
/// not one fault, and every guard's two translations agree (G1). The RID and another PASID,
/// on their own domains, are translated in the same loop and never change.
#[test]
fn hitless_pasid_replace_under_dma() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(16));
    let (peer, peer_h) = bind(&iommu, 1, pasid_info(16));
    let a = page_ioas(&iommu, T_A);
    let b = page_ioas(&iommu, T_B);
    let rid = page_ioas(&iommu, T_RID);
    iommu.device_attach(dev, rid).unwrap();
    iommu.device_attach_pasid(dev, 77, a).unwrap();
    iommu.device_attach_pasid(peer, 77, a).unwrap();
    iommu.device_attach_pasid(dev, 78, rid).unwrap();
    let ua = iommu.hwpt_alloc(dev, a, HwptFlags::empty()).unwrap();
    let ub = iommu.hwpt_alloc(dev, b, HwptFlags::empty()).unwrap();
    let targets = [a, ub, b, ua, rid];
    let stop = AtomicBool::new(false);
    let translations = AtomicU64::new(0);
    let replaces = AtomicU64::new(0);
    let duration = Duration::from_millis(if cfg!(debug_assertions) { 300 } else { 1500 });
    thread::scope(|s| {
        for hd in [&h, &peer_h] {
            let (stop, translations) = (&stop, &translations);
            let dev_h = &h;
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = hd.pin_pasid(77);
                    let t = through(&g, IOVA).expect("a PASID replace is hitless");
                    assert!(t == T_A || t == T_B || t == T_RID, "{t:#x}");
                    assert_eq!(through(&g, IOVA), Ok(t), "one guard, one domain");
                    drop(g);
                    assert_eq!(at(dev_h, 0), Ok(T_RID));
                    assert_eq!(at(dev_h, 78), Ok(T_RID));
                    n += 1;
                }
                translations.fetch_add(n, Ordering::Relaxed);
            });
        }
        let _stop = StopOnDrop(&stop);
        let start = Instant::now();
        let mut i = 0usize;
        while start.elapsed() < duration {
            let from = if i % 2 == 0 { dev } else { peer };
            iommu
                .device_replace_pasid(from, 77, targets[i % targets.len()])
                .unwrap();
            replaces.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
    });
    let (n, r) = (
        translations.load(Ordering::Relaxed),
        replaces.load(Ordering::Relaxed),
    );
    assert!(n > 1000 && r > 100, "{n} translations, {r} replaces");
    println!("hitless PASID replace: {n} guarded translations, {r} replaces, 0 faults");
}

/// G9 with PASID domains: cycles of PASID attach (auto HWPTs), replace across IOASes and
/// detach, plus maps and unmaps, while other threads keep pinning the PASIDs; after each
/// round `synchronize` brings the memory counters back to the baseline, and with everything
/// destroyed to zero.
#[test]
fn pasid_cycles_return_to_baseline() {
    let iommu = Iommu::new();
    let (dev, h) = bind(&iommu, 1, pasid_info(10));
    let (peer, _peer_h) = bind(&iommu, 1, pasid_info(10));
    let ioases: Vec<ObjId> = (0..3u64)
        .map(|k| page_ioas(&iommu, T_A + k * PAGE))
        .collect();
    iommu.synchronize().unwrap();
    let base = iommu.stats();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for t in 0..2u32 {
            let (stop, h) = (&stop, &h);
            s.spawn(move || {
                let mut p = 1 + t;
                while !stop.load(Ordering::Relaxed) {
                    let g = h.pin_pasid(p);
                    let _ = through(&g, IOVA);
                    let _ = through(&g, IOVA + 0x1000_0000);
                    drop(g);
                    p = p % 5 + 1;
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        for round in 0..60u64 {
            let r = round as usize;
            for p in 1..=5u32 {
                iommu
                    .device_attach_pasid(dev, p, ioases[(r + p as usize) % 3])
                    .unwrap();
            }
            iommu
                .device_attach_pasid(peer, 2, ioases[(r + 2) % 3])
                .unwrap();
            let extra = 0x1000_0000 + round * 0x20_0000;
            iommu
                .ioas_map(ioases[r % 3], Some(extra), T_B, 0x20_0000, Prot::RW)
                .unwrap();
            for p in 1..=5u32 {
                iommu
                    .device_replace_pasid(dev, p, ioases[(r + p as usize + 1) % 3])
                    .unwrap();
            }
            iommu.ioas_unmap(ioases[r % 3], extra, 0x20_0000).unwrap();
            iommu.device_detach_pasid(peer, 2).unwrap();
            for p in 1..=5u32 {
                iommu.device_detach_pasid(dev, p).unwrap();
            }
            iommu.synchronize().unwrap();
            let now = iommu.stats();
            assert_eq!(
                (now.hwpts, now.live_domains, now.live_tables),
                (base.hwpts, base.live_domains, base.live_tables),
                "round {round}"
            );
        }
    });
    for id in [dev, peer].into_iter().chain(ioases) {
        iommu.destroy(id).unwrap();
    }
    iommu.synchronize().unwrap();
    let end = iommu.stats();
    assert_eq!((end.live_domains, end.live_tables), (0, 0), "{end:?}");
}
