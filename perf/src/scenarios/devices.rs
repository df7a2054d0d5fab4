//! `translate-devices`: one reader thread serving many devices, each in its own group, with
//! one-shot `Device::translate_chunk` per request, round-robin over the devices.
//!
//! Set-up: the suite's two domains ([`TwoDomains`] over the run's [`Layout`]); device 0 is
//! the one [`TwoDomains`] binds (group 0, on domain 0's HWPT); devices 1.. are bound in groups
//! 1.. and attached to the same HWPT. The reader draws 64 random request IOVAs, times the 64
//! translations (device `k % n` for the `k`-th request) as one block, and checks every
//! target. The storm row replaces device 0 between the two domains' HWPTs every 10 µs from a
//! writer thread, so the reader sees a domain change on one device in `n` while it serves
//! the others; its targets may come from either domain.
//!
//! What it shows: the cost of the per-device state a one-shot translation touches (the
//! device's snapshot of its domain, its group cell) when a thread serves more devices than
//! stay warm in its caches, as an emulator's I/O thread serving many virtio queues does.

use super::readers::BLOCK;
use super::{Case, CaseResult, Storm, Variant, STORM_PERIOD};
use crate::alloc::{thread_allocs, thread_frees};
use crate::args::Config;
use crate::baselines::two_domains::TwoDomains;
use crate::baselines::{Layout, REQ_LEN};
use crate::stats::{nanos, new_hist, record, Dist, Pacer, Rng};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use viommu::{Access, Device, DeviceInfo, GroupId};

/// Devices the reader serves, one row each (and one storm row each).
pub const COUNTS: [usize; 4] = [1, 8, 64, 1024];

/// Runs one row: `case.readers` devices, idle or (`Variant::ReplaceStorm`) under a replace
/// storm on device 0.
pub fn run(cfg: &Config, layout: &Layout, case: &Case) -> CaseResult {
    let n = case.readers.max(1);
    let storm = if case.variant == Variant::ReplaceStorm {
        Storm::Replace
    } else {
        Storm::None
    };
    let mut res = CaseResult::new(case, storm);
    res.readers = 1;
    res.devices = n;

    let world = TwoDomains::new(|d| layout.mappings(d));
    let mut devs: Vec<Device> = Vec::with_capacity(n);
    devs.push(world.dev.clone());
    for g in 1..n {
        let (id, dev) = world
            .iommu
            .device_bind(GroupId(g as u32), DeviceInfo::default())
            .expect("device_bind");
        world
            .iommu
            .device_attach(id, world.hwpt[0])
            .expect("device_attach");
        devs.push(dev);
    }

    let stop = AtomicBool::new(false);
    let warm_until = Instant::now() + cfg.warmup;
    let until = warm_until + cfg.scaled;
    let (reader, (replaces, replace_hist, errors)) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut hist = new_hist();
            let (mut ops, mut errors) = (0u64, 0u64);
            if storm == Storm::None {
                return (ops, hist, errors);
            }
            let mut pacer = Pacer::new(STORM_PERIOD);
            let mut step = 0u64;
            // Relaxed: the flag only ends the loop; the join orders what was recorded.
            while !stop.load(Ordering::Relaxed) {
                pacer.wait();
                step += 1;
                let t0 = Instant::now();
                let r = world
                    .iommu
                    .device_replace(world.dev_id, world.hwpt[(step % 2) as usize]);
                let t1 = Instant::now();
                if t0 >= warm_until && t1 <= until {
                    ops += 1;
                    record(&mut hist, nanos(t1 - t0));
                }
                errors += u64::from(r.is_err());
            }
            (ops, hist, errors)
        });
        let out = read(&devs, layout, warm_until, until);
        // Relaxed: see the writer.
        stop.store(true, Ordering::Relaxed);
        (out, writer.join().expect("writer thread panicked"))
    });

    let Reader {
        ops,
        ns,
        faults,
        wrong,
        allocs,
        frees,
        secs,
        hist,
    } = reader;
    res.reader_ops = ops;
    res.seconds = secs;
    res.mops = ops as f64 / ns.max(1) as f64 * 1e3;
    res.mops_wall = ops as f64 / secs.max(1e-9) / 1e6;
    res.faults = faults;
    res.wrong = wrong;
    res.allocs_per_op = allocs as f64 / ops.max(1) as f64;
    res.frees_per_op = frees as f64 / ops.max(1) as f64;
    res.writer_ops = replaces;
    res.writer_ops_per_s = replaces as f64 / secs.max(1e-9);
    res.writer_errors = errors;
    if errors > 0 {
        res.first_writer_error = Some("device_replace failed".into());
    }
    for (name, h) in [("translate_block64", &hist), ("replace", &replace_hist)] {
        if let Some(d) = Dist::of(h) {
            res.latency.insert(name, d);
        }
    }
    res
}

/// What the reader measured.
struct Reader {
    ops: u64,
    ns: u64,
    faults: u64,
    wrong: u64,
    allocs: u64,
    frees: u64,
    secs: f64,
    hist: hdrhistogram::Histogram<u64>,
}

fn read(devs: &[Device], layout: &Layout, warm_until: Instant, until: Instant) -> Reader {
    let mut rng = Rng::new(0x5eed);
    let mut iovas = [0u64; BLOCK];
    let mut out = [0u64; BLOCK];
    let mut hist = new_hist();
    let (mut ops, mut ns, mut faults, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let mut next = 0usize;
    let block = |iovas: &[u64; BLOCK], out: &mut [u64; BLOCK], next: &mut usize| {
        let mut faults = 0;
        for (o, &iova) in out.iter_mut().zip(iovas) {
            let dev = &devs[*next];
            *next += 1;
            if *next == devs.len() {
                *next = 0;
            }
            match dev.translate_chunk(iova, REQ_LEN, Access::Read) {
                Ok(c) => *o = c.target,
                Err(_) => {
                    *o = u64::MAX;
                    faults += 1;
                }
            }
        }
        faults
    };
    while Instant::now() < warm_until {
        for x in iovas.iter_mut() {
            *x = layout.random_iova(&mut rng);
        }
        black_box(block(&iovas, &mut out, &mut next));
    }
    let (allocs0, frees0) = (thread_allocs(), thread_frees());
    let start = Instant::now();
    let mut now = start;
    while now < until {
        for x in iovas.iter_mut() {
            *x = layout.random_iova(&mut rng);
        }
        let t0 = Instant::now();
        faults += block(&iovas, &mut out, &mut next);
        now = Instant::now();
        let dt = nanos(now - t0);
        record(&mut hist, dt / BLOCK as u64);
        ns += dt;
        ops += BLOCK as u64;
        for (&iova, &t) in iovas.iter().zip(&out) {
            if t != u64::MAX && layout.domain_of(iova, t).is_none() {
                wrong += 1;
            }
        }
    }
    Reader {
        ops,
        ns,
        faults,
        wrong,
        allocs: thread_allocs() - allocs0,
        frees: thread_frees() - frees0,
        secs: (now - start).as_secs_f64(),
        hist,
    }
}
