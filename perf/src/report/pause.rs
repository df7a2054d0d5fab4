//! `dma-pause`: the longest pin, translate and drop while 1 GiB domains are replaced away
//! and unmapped, and what the DMA thread freed and allocated.

use super::table::{dist_cell, table_rows, Table};
use super::{find_label, Target};
use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use crate::stats::{fmt_ns, Dist};
use std::fmt::Write as _;

/// The longest of `r`'s pin, translate and drop by `f` (0 without any).
fn worst(r: &CaseResult, f: fn(&Dist) -> u64) -> u64 {
    ["pin", "translate", "drop"]
        .iter()
        .filter_map(|n| r.latency.get(n).map(f))
        .max()
        .unwrap_or(0)
}

/// The longest pin, translate and drop of `r`, as `pin/translate/drop`.
fn calls(r: &CaseResult) -> String {
    ["pin", "translate", "drop"]
        .iter()
        .map(|n| dist_cell(r.latency.get(n), |d| d.max))
        .collect::<Vec<_>>()
        .join("/")
}

/// The pause target and the G13 target (nothing freed or allocated on the DMA thread).
pub(super) fn targets(rs: &[CaseResult], out: &mut Vec<Target>) {
    match find_label(rs, Scenario::DmaPause, Kind::Viommu.name()) {
        Some(v) => {
            pause_target(rs, v, out);
            if let Some(d) = &v.dma {
                out.push(Target {
                    goal: "nothing freed or allocated on the DMA thread (G13) during dma-pause",
                    measured: format!(
                        "{} frees, {} allocations in {} iterations across {} writer cycles",
                        d.frees, d.allocs, d.iterations, v.writer_ops
                    ),
                    pass: Some(d.frees == 0 && d.allocs == 0),
                });
            }
        }
        None => out.push(Target {
            goal: "longest DMA-thread pause while 1 GiB domains go away: < 10us",
            measured: "not measured (needs dma-pause)".into(),
            pass: None,
        }),
    }
}

/// The longest pause of viommu's row `v`, with the floor's and rwlock-btree's beside.
fn pause_target(rs: &[CaseResult], v: &CaseResult, out: &mut Vec<Target>) {
    let (max, p9999) = (worst(v, |d| d.max), worst(v, |d| d.p9999));
    let dma = v.dma.as_ref();
    let over = dma.map_or(0, |d| d.over_10us);
    let quiet = dma.map_or(max, |d| d.max_unpreempted_ns);
    let quiet_over = dma.map_or(over, |d| d.over_10us_unpreempted);
    let mut measured = format!(
        "not preempted: max {}, {quiet_over} calls >= 10us; all: max {} (pin/translate/drop {}), \
             p99.99 {}, {over} of {} iterations >= 10us",
        fmt_ns(quiet),
        fmt_ns(max),
        calls(v),
        fmt_ns(p9999),
        v.reader_ops
    );
    if let Some(f) = find_label(rs, Scenario::DmaPause, Kind::Unsync.name()) {
        let fd = f.dma.as_ref();
        let _ = write!(
            measured,
            "; floor (unsync-radix, same writer): max {}, not preempted {}, {} >= 10us",
            fmt_ns(worst(f, |d| d.max)),
            fmt_ns(fd.map_or(0, |d| d.max_unpreempted_ns)),
            fd.map_or(0, |d| d.over_10us)
        );
    }
    if let Some(b) = find_label(rs, Scenario::DmaPause, Kind::RwLockBTree.name()) {
        let _ = write!(
            measured,
            "; rwlock-btree max {}",
            fmt_ns(worst(b, |d| d.max))
        );
    }
    out.push(Target {
            goal: "longest pause of pin/translate/drop while 1 GiB domains are replaced away and unmapped, \
                   calls not preempted: < 10us",
            measured,
            pass: Some(quiet < 10_000),
        });
}

fn pause_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::DmaPause)?;
    let mut t = Table::new(&[
        "baseline",
        "iterations",
        "cycles",
        "pin p99.99",
        "pin max",
        "xlate p99.99",
        "xlate max",
        "drop p99.99",
        "drop max",
        ">=10us",
        "not preempted",
        "max not preempted",
        "frees",
        "allocs",
        "preempted",
        "faults",
    ]);
    for r in rows {
        let mut cells = vec![
            r.baseline.to_string(),
            r.reader_ops.to_string(),
            r.writer_ops.to_string(),
        ];
        for n in ["pin", "translate", "drop"] {
            let d = r.latency.get(n);
            cells.push(dist_cell(d, |d| d.p9999));
            cells.push(dist_cell(d, |d| d.max));
        }
        let dma = r.dma.as_ref();
        cells.push(dma.map_or("-".into(), |d| d.over_10us.to_string()));
        cells.push(dma.map_or("-".into(), |d| d.over_10us_unpreempted.to_string()));
        cells.push(dma.map_or("-".into(), |d| fmt_ns(d.max_unpreempted_ns)));
        cells.push(dma.map_or("-".into(), |d| d.frees.to_string()));
        cells.push(dma.map_or("-".into(), |d| d.allocs.to_string()));
        cells.push(
            dma.and_then(|d| d.preempted)
                .map_or("-".into(), |p| p.to_string()),
        );
        cells.push(r.faults.to_string());
        t.row(cells);
    }
    Some(t.render(1))
}

fn pause_writer_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::DmaPause)?;
    let mut t = Table::new(&[
        "writer of",
        "cycles",
        "replace p50",
        "replace max",
        "unmap 1G p50",
        "unmap 1G max",
        "map 1G p50",
        "map 1G max",
    ]);
    for r in rows {
        let mut cells = vec![r.baseline.to_string(), r.writer_ops.to_string()];
        for n in ["replace", "unmap", "map"] {
            let d = r.latency.get(n);
            cells.push(dist_cell(d, |d| d.p50));
            cells.push(dist_cell(d, |d| d.max));
        }
        t.row(cells);
    }
    Some(t.render(1))
}

/// The DMA thread's table, its legend, and the writers' table.
pub(super) fn section(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = pause_table(rs) {
        let clock = rs
            .iter()
            .find_map(|r| r.dma.as_ref())
            .map_or(String::new(), |d| {
                format!("{} clock, ~{}ns a reading pair", d.clock, d.clock_ns)
            });
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}each call timed alone ({clock}); >=10us: iterations with a call that long; not preempted: those\n\
             during which the thread's involuntary switch count did not rise, and the longest such call;\n\
             frees/allocs: heap calls the DMA thread made; preempted: its involuntary context switches.\n\
             unsync-radix is the floor: no pin or drop, a plain walk, the same viommu writer beside.",
            Scenario::DmaPause.name(),
            Scenario::DmaPause.describe()
        );
        if let Some(w) = pause_writer_table(rs) {
            let _ = writeln!(
                s,
                "\nthe writers beside the DMA thread (1 GiB in 4 KiB pages):\n{w}"
            );
        }
    }
}
