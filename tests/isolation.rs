//! G14 isolation: a large map on one IOAS, and an attach to that IOAS queued behind it, delay
//! no call on another IOAS. Every kind of control call runs on IOAS `B` while `A`'s big map
//! holds `A`'s lock; each must finish in well under the big map's time (and under 1 s).
//!
//! The big map's size grows in release builds, so that it takes long enough to show a wait:
//! `VIOMMU_ISOLATION_GIB` overrides it.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, Prot};

const K4: u64 = 4096;
const G1: u64 = 1 << 30;

fn big_map_gib() -> u64 {
    std::env::var("VIOMMU_ISOLATION_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 48 } else { 160 })
}

#[test]
fn every_call_on_another_ioas_is_unaffected_by_a_large_map_and_a_queued_attach() {
    let iommu = Iommu::new();
    let pasid = DeviceInfo {
        pasid_bits: 4,
        ..DeviceInfo::default()
    };
    let (a_dev, _a) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let (a_dev2, _a2) = iommu
        .device_bind(GroupId(2), DeviceInfo::default())
        .unwrap();
    let (b_dev, _b) = iommu.device_bind(GroupId(3), pasid).unwrap();
    let a = iommu.ioas_alloc().unwrap();
    let b = iommu.ioas_alloc().unwrap();
    let b2 = iommu.ioas_alloc().unwrap();
    iommu.device_attach(a_dev, a).unwrap();
    // B has some areas, so that its populates do some work.
    for i in 0..64 {
        iommu.ioas_map(b, Some(i * K4), 0, K4, Prot::RW).unwrap();
        iommu.ioas_map(b2, Some(i * K4), 0, K4, Prot::RW).unwrap();
    }

    // The big map: 4 KiB leaves (the target is not congruent to the IOVA modulo 2 MiB).
    let len = big_map_gib() * G1;
    let (started_tx, started_rx) = mpsc::channel();
    let big = {
        let iommu = iommu.clone();
        thread::spawn(move || {
            started_tx.send(()).unwrap();
            let t = Instant::now();
            iommu.ioas_map(a, Some(G1), K4, len, Prot::RW).unwrap();
            t.elapsed()
        })
    };
    started_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(30));
    // An attach to A that joins its HWPT: it waits for A's lock (the old code waited with the
    // object table's write lock held, stalling every call on every IOAS).
    let queued = {
        let iommu = iommu.clone();
        thread::spawn(move || iommu.device_attach(a_dev2, a).unwrap())
    };
    thread::sleep(Duration::from_millis(30));

    let mut times: Vec<(&str, Duration)> = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        times.push((name, t.elapsed()));
    };
    time("ioas_map", &mut || {
        iommu.ioas_map(b, Some(G1), 0, K4, Prot::RW).unwrap();
    });
    time("ioas_unmap", &mut || {
        iommu.ioas_unmap(b, G1, K4).unwrap();
    });
    time("ioas_unmap_deferred", &mut || {
        iommu.ioas_map(b, Some(G1), 0, K4, Prot::RW).unwrap();
        iommu
            .ioas_unmap_deferred(b, G1, K4)
            .unwrap()
            .wait()
            .unwrap();
    });
    time("ioas_alloc", &mut || {
        iommu.ioas_alloc().unwrap();
    });
    let mut bound = None;
    time("device_bind", &mut || {
        bound = Some(
            iommu
                .device_bind(GroupId(9), DeviceInfo::default())
                .unwrap(),
        );
    });
    time("device_attach (new auto HWPT, populate)", &mut || {
        iommu.device_attach(b_dev, b).unwrap();
    });
    time("device_replace (to another IOAS)", &mut || {
        iommu.device_replace(b_dev, b2).unwrap();
    });
    time("device_attach_pasid", &mut || {
        iommu.device_attach_pasid(b_dev, 1, b).unwrap();
    });
    time("device_replace_pasid", &mut || {
        iommu.device_replace_pasid(b_dev, 1, b2).unwrap();
    });
    time("device_detach_pasid", &mut || {
        iommu.device_detach_pasid(b_dev, 1).unwrap();
    });
    let mut user = None;
    time("hwpt_alloc", &mut || {
        user = Some(iommu.hwpt_alloc(b_dev, b, HwptFlags::NEST_PARENT).unwrap());
    });
    time("device_replace (to a user HWPT)", &mut || {
        iommu.device_replace(b_dev, user.unwrap()).unwrap();
    });
    time("hwpt_alloc_identity", &mut || {
        iommu
            .hwpt_alloc_identity(b_dev, &[0..G1, 2 * G1..3 * G1])
            .unwrap();
    });
    time("device_detach", &mut || {
        iommu.device_detach(b_dev).unwrap();
    });
    time("destroy (HWPT)", &mut || {
        iommu.destroy(user.unwrap()).unwrap();
    });
    time("destroy (IOAS)", &mut || {
        iommu.ioas_unmap(b2, 0, u64::MAX).unwrap();
        iommu.destroy(b2).unwrap();
    });
    time("destroy (device)", &mut || {
        iommu.destroy(bound.take().unwrap().0).unwrap();
    });
    time("stats", &mut || {
        iommu.stats();
    });
    let big = big.join().unwrap();
    queued.join().unwrap();
    eprintln!("the big map ({} GiB) took {big:?}", big_map_gib());
    for (name, t) in &times {
        eprintln!("  {name}: {t:?}");
    }
    let bound = Duration::from_secs(1).min(big / 4);
    for (name, t) in &times {
        assert!(
            *t < bound,
            "{name} on another IOAS took {t:?} while a {big:?} map ran (bound {bound:?})"
        );
    }
    iommu.device_detach(a_dev).unwrap();
    iommu.device_detach(a_dev2).unwrap();
    // Destroying the big IOAS: its areas go after the table's lock (nothing to time here
    // beyond the call finishing).
    iommu.ioas_unmap(a, 0, u64::MAX).unwrap();
    iommu.destroy(a).unwrap();
}
