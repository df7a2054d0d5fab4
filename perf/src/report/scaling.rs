//! The scaling scenarios: `translate-devices` (one reader over many devices) and
//! `fence-threads` (fences against many registered threads): their tables and targets.

use super::table::{dist_cell, ratio, table_rows, tail_cells, Table};
use super::Target;
use crate::scenarios::{CaseResult, Scenario, Storm};
use crate::stats::fmt_ns;
use std::fmt::Write as _;

/// The `translate-devices` row with `devices` devices, idle or under the storm.
fn device_row(rs: &[CaseResult], devices: usize, storm: Storm) -> Option<&CaseResult> {
    Scenario::TranslateDevices
        .results(rs)
        .into_iter()
        .find(|r| r.devices == devices && r.storm == storm)
}

/// The `fence-threads` row with `threads` registered threads, idle or with pinning threads.
fn fence_row(rs: &[CaseResult], threads: usize, pinning: bool) -> Option<&CaseResult> {
    Scenario::FenceThreads
        .results(rs)
        .into_iter()
        .find(|r| r.registered_threads == threads && (r.readers > 0) == pinning)
}

/// One reader over 1024 devices against one device, idle.
pub(super) fn devices_target(rs: &[CaseResult], out: &mut Vec<Target>) {
    let goal = "one reader over 1024 devices: one-shot throughput within 1.5x of one device";
    match (
        device_row(rs, 1, Storm::None),
        device_row(rs, 1024, Storm::None),
    ) {
        (Some(one), Some(many)) => {
            let slow = one.mops / many.mops;
            let storm = match (
                device_row(rs, 1, Storm::Replace),
                device_row(rs, 1024, Storm::Replace),
            ) {
                (Some(a), Some(b)) => format!("; under the replace storm: {:.2}x", a.mops / b.mops),
                _ => String::new(),
            };
            out.push(Target {
                goal,
                measured: format!(
                    "1 device / 1024 devices = {slow:.2}x ({:.1} vs {:.1} Mops/s){storm}",
                    one.mops, many.mops
                ),
                pass: Some(slow <= 1.5),
            });
        }
        _ => out.push(Target {
            goal,
            measured: "not measured (needs translate-devices)".into(),
            pass: None,
        }),
    }
}

/// Fences with 1024 registered idle threads: `synchronize` p50 and map + unmap rate.
pub(super) fn fence_targets(rs: &[CaseResult], out: &mut Vec<Target>) {
    let one = fence_row(rs, 1, false);
    let many = fence_row(rs, 1024, false);
    let sync_goal = "synchronize with 1024 registered idle threads: p50 under 2 us";
    match many.and_then(|m| m.latency.get("synchronize")) {
        Some(d) => out.push(Target {
            goal: sync_goal,
            measured: format!(
                "p50 {}, p99 {} (one thread: p50 {})",
                fmt_ns(d.p50),
                fmt_ns(d.p99),
                one.and_then(|o| o.latency.get("synchronize"))
                    .map_or("-".into(), |d| fmt_ns(d.p50))
            ),
            pass: Some(d.p50 < 2000),
        }),
        None => out.push(Target {
            goal: sync_goal,
            measured: "not measured (needs fence-threads)".into(),
            pass: None,
        }),
    }
    let pairs_goal =
        "4 KiB map+unmap pairs with 1024 registered idle threads: at least 0.5x the rate with one thread";
    match (one, many) {
        (Some(o), Some(m)) => {
            let x = m.writer_ops_per_s / o.writer_ops_per_s;
            out.push(Target {
                goal: pairs_goal,
                measured: format!(
                    "{x:.2}x ({:.0} vs {:.0} pairs/s)",
                    m.writer_ops_per_s, o.writer_ops_per_s
                ),
                pass: Some(x >= 0.5),
            });
        }
        _ => out.push(Target {
            goal: pairs_goal,
            measured: "not measured (needs fence-threads)".into(),
            pass: None,
        }),
    }
}

fn devices_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::TranslateDevices)?;
    let mut t = Table::new(&[
        "devices",
        "row",
        "Mops/s",
        "vs 1 device",
        "p50",
        "p99",
        "p99.9",
        "faults",
        "wrong",
        "allocs/op",
        "replaces/s",
        "replace p99",
    ]);
    for r in rows {
        let base = device_row(rs, 1, r.storm);
        t.row(
            [
                r.devices.to_string(),
                match r.storm {
                    Storm::None => "idle".to_string(),
                    _ => "replace-storm".to_string(),
                },
                format!("{:.1}", r.mops),
                base.map_or("-".into(), |b| ratio(r.mops / b.mops)),
            ]
            .into_iter()
            .chain(tail_cells(r.latency.get("translate_block64"), 3))
            .chain([
                r.faults.to_string(),
                r.wrong.to_string(),
                format!("{:.3}", r.allocs_per_op),
                if r.writer_ops > 0 {
                    format!("{:.0}", r.writer_ops_per_s)
                } else {
                    "-".into()
                },
                dist_cell(r.latency.get("replace"), |d| d.p99),
            ]),
        );
    }
    Some(t.render(2))
}

fn fence_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::FenceThreads)?;
    let mut t = Table::new(&[
        "threads",
        "row",
        "sync p50",
        "sync p99",
        "sync p99.9",
        "syncs",
        "pairs/s",
        "vs 1 thread",
        "pair p50",
        "pair p99",
        "pinner Mops/s",
    ]);
    for r in rows {
        let pinning = r.readers > 0;
        let base = fence_row(rs, 1, pinning);
        let sync = r.latency.get("synchronize");
        t.row(
            [
                r.registered_threads.to_string(),
                if pinning {
                    format!("{}-pinning", r.readers)
                } else {
                    "idle".to_string()
                },
            ]
            .into_iter()
            .chain(tail_cells(sync, 3))
            .chain([
                sync.map_or("-".into(), |d| d.count.to_string()),
                format!("{:.0}", r.writer_ops_per_s),
                base.map_or("-".into(), |b| {
                    ratio(r.writer_ops_per_s / b.writer_ops_per_s)
                }),
                dist_cell(r.latency.get("pair"), |d| d.p50),
                dist_cell(r.latency.get("pair"), |d| d.p99),
                if pinning {
                    format!("{:.1}", r.mops)
                } else {
                    "-".into()
                },
            ]),
        );
    }
    Some(t.render(2))
}

/// Both tables and their legends.
pub(super) fn sections(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = devices_table(rs) {
        let sc = Scenario::TranslateDevices;
        let _ = writeln!(s, "\n== {}: {}\n{t}", sc.name(), sc.describe());
        let _ = writeln!(
            s,
            "One reader thread, one-shot Device::translate_chunk per request, devices served round-robin\n\
             (each in its own group, all on one HWPT). p50..p99.9: per translation, timed in blocks of 64.\n\
             vs 1 device: throughput / the 1-device row's (same storm). The storm replaces device 0 every 10us."
        );
    }
    if let Some(t) = fence_table(rs) {
        let sc = Scenario::FenceThreads;
        let _ = writeln!(s, "\n== {}: {}\n{t}", sc.name(), sc.describe());
        let _ = writeln!(
            s,
            "threads: registered with the context (each pinned once, then sleeps); N-pinning: N of them pin\n\
             and translate in a loop. sync: Iommu::synchronize timed one call at a time after 1000 warm-up\n\
             fences. pairs/s: 4 KiB ioas_map + ioas_unmap on the device's IOAS (each unmap fences);\n\
             vs 1 thread: / the 1-thread row's (same pinning). pinner Mops/s: pin + translate loops, summed."
        );
    }
}
