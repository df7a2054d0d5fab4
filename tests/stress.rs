//! Stress tests of the concurrent guarantees: hitless replace (G1, G2, G3), the unmap fence
//! (G5) and the detach fence (G6).
//!
//! Each test runs two reader threads (CI has two cores) against one writer (the test thread)
//! for a bounded wall time, then checks what the readers recorded. Ordering between the writer's
//! calls and the readers' guards is established with `SeqCst` counters that the writer bumps
//! before or after its calls; see each test.

mod common;

use common::{bind, ioas_with, simulated_dma, spin_for, StopOnDrop, PAGE};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use viommu::{Access, Chunk, Device, DeviceInfo, FaultKind, HwptFlags, Iommu, ObjId, Prot};

/// How long each test drives the writer.
const BUDGET: Duration = Duration::from_millis(1500);
/// The IOVA window the readers translate.
const WINDOW: u64 = 0x10_0000;
const WINDOW_LEN: u64 = 16 * PAGE;
const T1: u64 = 0x8000_0000;
const T2: u64 = 0xc000_0000;

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// A guard made now, on this thread, faults `kind` at `iova` (`when` names the writer's step).
#[track_caller]
fn assert_new_guard_faults(h: &Device, iova: u64, kind: FaultKind, when: &str) {
    let f = h.pin().translate(iova, PAGE, Access::Read).unwrap_err();
    assert_eq!(f.kind, kind, "{when}");
}

// ---------------------------------------------------------------------------------------------
// (a) Hitless replace
// ---------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct ReaderLog {
    guards: u64,
    faults: u64,
    first_fault: Option<String>,
    /// Translations that matched neither domain, or mixed the two under one guard.
    wrong: u64,
    first_wrong: Option<String>,
    /// Guards that saw domain 0 and domain 1.
    seen: [u64; 2],
}

impl ReaderLog {
    fn fault(&mut self, what: String) {
        self.faults += 1;
        self.first_fault.get_or_insert(what);
    }
    fn wrong(&mut self, what: String) {
        self.wrong += 1;
        self.first_wrong.get_or_insert(what);
    }
}

/// Pins, translates the whole window (it must be one chunk to `targets[0]` or `targets[1]`),
/// then translates random pieces through the same guard, which must use the same domain (G1).
fn hitless_reader(dev: &Device, targets: [u64; 2], stop: &AtomicBool, seed: u64) -> ReaderLog {
    let mut log = ReaderLog::default();
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let guard = dev.pin();
        log.guards += 1;
        let whole: Vec<Chunk> = match guard.translate(WINDOW, WINDOW_LEN, Access::Read) {
            Ok(t) => t.collect(),
            Err(f) => {
                log.fault(format!("whole window: {f:?}"));
                continue;
            }
        };
        let Some(domain) = targets.iter().position(|&t| {
            whole
                == [Chunk {
                    iova: WINDOW,
                    target: t,
                    len: WINDOW_LEN,
                }]
        }) else {
            log.wrong(format!("whole window translated to {whole:x?}"));
            continue;
        };
        log.seen[domain] += 1;
        for _ in 0..4 {
            let r = rng.next_u64();
            let off = (r % (WINDOW_LEN - 0x100)) & !0xf;
            let access = if r & (1 << 40) == 0 {
                Access::Read
            } else {
                Access::Write
            };
            match guard.translate(WINDOW + off, 0x100, access) {
                Ok(t) => {
                    let got: Vec<Chunk> = t.collect();
                    let want = Chunk {
                        iova: WINDOW + off,
                        target: targets[domain] + off,
                        len: 0x100,
                    };
                    if got != [want] {
                        log.wrong(format!(
                            "guard on domain {domain}: {:#x} translated to {got:x?}",
                            WINDOW + off
                        ));
                    }
                }
                Err(f) => log.fault(format!("piece at {:#x}: {f:?}", WINDOW + off)),
            }
        }
    }
    log
}

/// Two readers on the two devices of group 1 translate while the writer replaces the group
/// back and forth with `step(i)`; returns the reader logs and the number of replaces.
fn run_hitless(
    devs: [&Device; 2],
    targets: [u64; 2],
    mut step: impl FnMut(usize),
) -> (Vec<ReaderLog>, usize) {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let readers: Vec<_> = devs
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                let stop = &stop;
                s.spawn(move || {
                    hitless_reader(dev, targets, stop, 0x9e37_79b9_7f4a_7c15 + i as u64)
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + BUDGET;
        let mut replaces = 0;
        while Instant::now() < deadline {
            step(replaces);
            replaces += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let logs = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (logs, replaces)
    })
}

#[track_caller]
fn assert_hitless(logs: &[ReaderLog], replaces: usize) {
    for (i, log) in logs.iter().enumerate() {
        println!(
            "reader {i}: {} guards, domains seen {:?}; {replaces} replaces",
            log.guards, log.seen
        );
    }
    assert!(replaces > 10, "the writer made only {replaces} replaces");
    for (i, log) in logs.iter().enumerate() {
        assert!(
            log.guards > 10,
            "reader {i} made only {} guards",
            log.guards
        );
        assert_eq!(
            log.faults, 0,
            "reader {i}: {} faults during replace (first: {:?}); {log:?}",
            log.faults, log.first_fault
        );
        assert_eq!(
            log.wrong, 0,
            "reader {i}: {} translations matched neither domain or mixed them (first: {:?})",
            log.wrong, log.first_wrong
        );
    }
}

/// Two IOASes mapping the window to `t1` and `t2`, and the two devices of group 1.
struct Hitless {
    iommu: Iommu,
    ioas: [ObjId; 2],
    dev: ObjId,
    handles: [Device; 2],
}

fn hitless_setup(t1: u64, t2: u64) -> Hitless {
    let iommu = Iommu::new();
    let (dev, h0) = bind(&iommu, 1, DeviceInfo::default());
    let (peer, h1) = bind(&iommu, 1, DeviceInfo::default());
    let ioas = [t1, t2].map(|t| ioas_with(&iommu, &[(WINDOW, t, WINDOW_LEN, Prot::RW)]));
    iommu.device_attach(dev, ioas[0]).unwrap();
    iommu.device_attach(peer, ioas[0]).unwrap();
    Hitless {
        iommu,
        ioas,
        dev,
        handles: [h0, h1],
    }
}

#[test]
fn replace_between_two_user_hwpts_is_hitless() {
    let hx = hitless_setup(T1, T2);
    let io = &hx.iommu;
    let hwpt = [
        io.hwpt_alloc(hx.dev, hx.ioas[0], HwptFlags::empty())
            .unwrap(),
        io.hwpt_alloc(hx.dev, hx.ioas[1], HwptFlags::empty())
            .unwrap(),
    ];
    io.device_replace(hx.dev, hwpt[0]).unwrap();
    let (logs, n) = run_hitless([&hx.handles[0], &hx.handles[1]], [T1, T2], |i| {
        let to = hwpt[(i + 1) % 2];
        assert_eq!(io.device_replace(hx.dev, to), Ok(to));
    });
    assert_hitless(&logs, n);
    // The last replace took effect for both devices.
    let last = (n % 2, [T1, T2][n % 2]);
    for h in &hx.handles {
        let got: Vec<Chunk> = h.translate(WINDOW, PAGE, Access::Read).unwrap().collect();
        assert_eq!(got[0].target, last.1, "after {n} replaces");
    }
}

#[test]
fn replace_between_auto_hwpts_of_two_ioases_is_hitless() {
    // Same targets in both IOASes: every translation must be exactly T1.
    let hx = hitless_setup(T1, T1);
    let io = &hx.iommu;
    let mut previous = io.device_replace(hx.dev, hx.ioas[0]).unwrap();
    let (logs, n) = run_hitless([&hx.handles[0], &hx.handles[1]], [T1, T1], |i| {
        let now = io.device_replace(hx.dev, hx.ioas[(i + 1) % 2]).unwrap();
        assert_ne!(now, previous);
        // The replaced-away auto HWPT is gone at once (G9).
        assert_eq!(
            io.destroy(previous).map_err(|e| e.errno()),
            Err(viommu::errno::ENOENT)
        );
        previous = now;
    });
    assert_hitless(&logs, n);
}

#[test]
fn replace_between_a_user_and_an_auto_hwpt_is_hitless() {
    let hx = hitless_setup(T1, T2);
    let io = &hx.iommu;
    let user = io
        .hwpt_alloc(hx.dev, hx.ioas[0], HwptFlags::empty())
        .unwrap();
    io.device_replace(hx.dev, user).unwrap();
    let (logs, n) = run_hitless([&hx.handles[0], &hx.handles[1]], [T1, T2], |i| {
        if i % 2 == 0 {
            io.device_replace(hx.dev, hx.ioas[1]).unwrap();
        } else {
            assert_eq!(io.device_replace(hx.dev, user), Ok(user));
        }
    });
    assert_hitless(&logs, n);
}

// ---------------------------------------------------------------------------------------------
// (b) Unmap fence
// ---------------------------------------------------------------------------------------------

/// Generation `k` maps the two fence pages to `FENCE_BASE + k * FENCE_LEN`.
const FENCE_IOVA: u64 = 0x40_0000;
const FENCE_LEN: u64 = 2 * PAGE;
const FENCE_BASE: u64 = 0x1_0000_0000;

fn generation_of(target: u64) -> Option<u64> {
    target.checked_sub(FENCE_BASE).map(|d| d / FENCE_LEN)
}

/// G5. The writer maps generation k, then unmaps it and stores `unmapped = k` after
/// `ioas_unmap` returns. A reader reads `unmapped` (u0), pins, translates; if it sees
/// generation k then:
/// - k > u0: a guard made after the unmap of k returned must not translate into it;
/// - while still holding the guard (after some "DMA"), `unmapped` must still be below k: the
///   unmap of k cannot return while a guard that saw its range is alive.
#[test]
fn no_guard_sees_a_range_after_its_unmap_returned() {
    // Both fence modes: the default (symmetric) and membarrier where the kernel has it.
    for mode in [viommu::FenceMode::Symmetric, viommu::FenceMode::Asymmetric] {
        unmap_fence_in(mode);
    }
}

fn unmap_fence_in(mode: viommu::FenceMode) {
    let iommu = Iommu::with_fence_mode(mode);
    let (auto_dev, auto_h) = bind(&iommu, 1, DeviceInfo::default());
    let (user_dev, user_h) = bind(&iommu, 2, DeviceInfo::default());
    let ioas = iommu.ioas_alloc().unwrap();
    iommu.device_attach(auto_dev, ioas).unwrap();
    let user = iommu
        .hwpt_alloc(user_dev, ioas, HwptFlags::empty())
        .unwrap();
    iommu.device_attach(user_dev, user).unwrap();

    let unmapped = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (logs, generations) = thread::scope(|s| {
        let readers: Vec<_> = [&auto_h, &user_h]
            .into_iter()
            .map(|dev| {
                let (unmapped, stop) = (&unmapped, &stop);
                s.spawn(move || {
                    let mut hits = 0u64;
                    let mut errors: Vec<String> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let u0 = unmapped.load(Ordering::SeqCst);
                        let guard = dev.pin();
                        match guard.translate(FENCE_IOVA, FENCE_LEN, Access::Write) {
                            Ok(t) => {
                                let got: Vec<Chunk> = t.collect();
                                let Some(k) = generation_of(got[0].target) else {
                                    errors.push(format!("translated to {got:x?}"));
                                    continue;
                                };
                                hits += 1;
                                if got.len() != 1 || got[0].len != FENCE_LEN {
                                    errors.push(format!("torn translation {got:x?}"));
                                }
                                if k <= u0 {
                                    errors.push(format!(
                                        "guard made after unmap {u0} returned saw generation {k}"
                                    ));
                                }
                                // The "DMA" to generation k's memory.
                                simulated_dma();
                                let u1 = unmapped.load(Ordering::SeqCst);
                                if u1 >= k {
                                    errors.push(format!(
                                        "unmap {u1} returned while a guard that saw generation {k} was alive"
                                    ));
                                }
                            }
                            Err(f) if f.kind == FaultKind::Unmapped => {}
                            Err(f) => errors.push(format!("unexpected fault {f:?}")),
                        }
                        drop(guard);
                        if errors.len() > 8 {
                            break;
                        }
                    }
                    (hits, errors)
                })
            })
            .collect();
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + BUDGET;
        let mut k = 0;
        while Instant::now() < deadline {
            k += 1;
            let target = FENCE_BASE + k * FENCE_LEN;
            iommu
                .ioas_map(ioas, Some(FENCE_IOVA), target, FENCE_LEN, Prot::RW)
                .unwrap();
            // Let the readers see it for a moment.
            spin_for(Duration::from_micros(50));
            assert_eq!(iommu.ioas_unmap(ioas, FENCE_IOVA, FENCE_LEN), Ok(FENCE_LEN));
            unmapped.store(k, Ordering::SeqCst);
            for h in [&auto_h, &user_h] {
                assert_new_guard_faults(
                    h,
                    FENCE_IOVA,
                    FaultKind::Unmapped,
                    &format!("generation {k}"),
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        let logs: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (logs, k)
    });
    println!(
        "{generations} generations, reader hits {:?}",
        logs.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    assert!(generations > 10, "only {generations} map/unmap generations");
    let mut hits = 0;
    for (i, (h, errors)) in logs.iter().enumerate() {
        assert!(errors.is_empty(), "reader {i}: {errors:#?}");
        hits += h;
    }
    assert!(
        hits > 0,
        "the readers never saw a mapped generation in {generations}"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) Detach fence
// ---------------------------------------------------------------------------------------------

/// G6. The writer stores `attach_begun = k` before the k-th attach of `dev` and
/// `detached = k` after the k-th detach returns; `peer` (same group) stays attached throughout.
/// A reader of `dev` reads `detached` (d0), pins, translates, then reads `attach_begun` (a1):
/// if d0 == a1 no attach began between the detach's return and the translation, so it must
/// fault `Blocked`. A guard that translated must also outlive no detach: if `attach_begun`
/// did not move while it was pinned, `detached` must stay below that attach's number.
/// Readers of `peer` must never fault.
#[test]
fn a_detached_device_faults_blocked_and_its_group_peers_keep_translating() {
    let iommu = Iommu::new();
    let (dev, dev_h) = bind(&iommu, 1, DeviceInfo::default());
    let (peer, peer_h) = bind(&iommu, 1, DeviceInfo::default());
    let ioas = ioas_with(&iommu, &[(WINDOW, T1, WINDOW_LEN, Prot::RW)]);
    let hwpt = iommu.device_attach(peer, ioas).unwrap();

    let attach_begun = AtomicU64::new(0);
    let detached = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let want = [Chunk {
        iova: WINDOW,
        target: T1,
        len: PAGE,
    }];
    let (dev_log, peer_log, cycles) = thread::scope(|s| {
        let dev_reader = {
            let (attach_begun, detached, stop, dev_h) = (&attach_begun, &detached, &stop, &dev_h);
            s.spawn(move || {
                let (mut ok, mut blocked) = (0u64, 0u64);
                let mut errors: Vec<String> = Vec::new();
                while !stop.load(Ordering::Relaxed) && errors.len() < 8 {
                    let d0 = detached.load(Ordering::SeqCst);
                    let a0 = attach_begun.load(Ordering::SeqCst);
                    let guard = dev_h.pin();
                    let r = guard.translate(WINDOW, PAGE, Access::Read);
                    let a1 = attach_begun.load(Ordering::SeqCst);
                    match r {
                        Ok(t) => {
                            ok += 1;
                            let got: Vec<Chunk> = t.collect();
                            if got != want {
                                errors.push(format!("translated to {got:x?}"));
                            }
                            if d0 == a1 {
                                errors.push(format!(
                                    "guard made after detach {d0} returned translated (no attach begun since)"
                                ));
                            }
                            simulated_dma();
                            let d1 = detached.load(Ordering::SeqCst);
                            if a0 == a1 && d1 >= a1 {
                                errors.push(format!(
                                    "detach {d1} returned while a guard of attach {a1} was alive"
                                ));
                            }
                        }
                        Err(f) if f.kind == FaultKind::Blocked => blocked += 1,
                        Err(f) => errors.push(format!("unexpected fault {f:?}")),
                    }
                }
                (ok, blocked, errors)
            })
        };
        let peer_reader = {
            let (stop, peer_h) = (&stop, &peer_h);
            s.spawn(move || {
                let mut log = ReaderLog::default();
                while !stop.load(Ordering::Relaxed) {
                    let guard = peer_h.pin();
                    log.guards += 1;
                    match guard.translate(WINDOW, PAGE, Access::Read) {
                        Ok(t) => {
                            let got: Vec<Chunk> = t.collect();
                            if got != want {
                                log.wrong(format!("translated to {got:x?}"));
                            }
                        }
                        Err(f) => log.fault(format!("{f:?}")),
                    }
                }
                log
            })
        };
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + BUDGET;
        let mut k = 0;
        while Instant::now() < deadline {
            k += 1;
            attach_begun.store(k, Ordering::SeqCst);
            assert_eq!(iommu.device_attach(dev, ioas), Ok(hwpt));
            spin_for(Duration::from_micros(50));
            iommu.device_detach(dev).unwrap();
            detached.store(k, Ordering::SeqCst);
            assert_new_guard_faults(&dev_h, WINDOW, FaultKind::Blocked, &format!("cycle {k}"));
        }
        stop.store(true, Ordering::Relaxed);
        (dev_reader.join().unwrap(), peer_reader.join().unwrap(), k)
    });
    assert!(cycles > 10, "only {cycles} attach/detach cycles");
    let (ok, blocked, errors) = dev_log;
    println!(
        "{cycles} cycles; detached device: {ok} translated, {blocked} blocked; peer: {} guards",
        peer_log.guards
    );
    assert!(
        errors.is_empty(),
        "reader of the detached device: {errors:#?}"
    );
    assert!(
        ok + blocked > 10,
        "the reader made only {} translations",
        ok + blocked
    );
    assert!(peer_log.guards > 10);
    assert_eq!(
        peer_log.faults, 0,
        "the peer faulted: {:?}",
        peer_log.first_fault
    );
    assert_eq!(peer_log.wrong, 0, "{:?}", peer_log.first_wrong);
    // The group's HWPT survived every cycle (the peer held it).
    assert_eq!(iommu.device_replace(peer, ioas), Ok(hwpt));
}
