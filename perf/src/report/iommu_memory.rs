//! `iommu-memory`: 512-byte reads and writes through vm-memory's `IommuMemory` over
//! viommu's `DeviceIommu`, against the `RwLock<Iotlb>` pattern (`swap` and `refill`), idle and
//! under a replace storm.

use super::table::{dist_cell, ratio, table_rows, tail_cells, Table};
use super::Target;
use crate::scenarios::{CaseResult, Scenario, Storm};
use std::fmt::Write as _;

/// The `iommu-memory` row of `design` for `op` on `shape` (labels `design/op/shape`).
fn iommu_memory_row<'a>(
    rs: &'a [CaseResult],
    design: &str,
    op: &str,
    shape: &str,
    readers: usize,
    storm: Storm,
) -> Option<&'a CaseResult> {
    let label = format!("{design}/{op}/{shape}");
    rs.iter().find(|r| {
        r.scenario == Scenario::IommuMemory.name()
            && r.baseline == label
            && r.readers == readers
            && r.storm == storm
    })
}

/// One target: the design (`viommu` is `DeviceIommu` under `IommuMemory`, `dma-memory` and
/// `dma-memory-pinned` are `DmaMemory`), the access (`read` or `write`), the threads, the
/// storm, the ratio to `refill` it needs, and the goal.
type Goal = (&'static str, &'static str, usize, Storm, f64, &'static str);

/// The targets, in report order.
const GOALS: [Goal; 14] = [
    (
        "viommu",
        "read",
        1,
        Storm::None,
        0.5,
        "IommuMemory read_slice 512B, 1 reader, idle: >= 0.5x refill RwLock<Iotlb> reads/s",
    ),
    (
        "viommu",
        "read",
        1,
        Storm::Replace,
        2.0,
        "IommuMemory read_slice 512B, 1 reader, replace storm: >= 2x refill reads/s",
    ),
    (
        "viommu",
        "read",
        2,
        Storm::Replace,
        3.0,
        "IommuMemory read_slice 512B, 2 readers, replace storm: >= 3x refill reads/s",
    ),
    (
        "viommu",
        "write",
        1,
        Storm::None,
        0.5,
        "IommuMemory write_slice 512B, 1 writer, idle: >= 0.5x refill RwLock<Iotlb> writes/s",
    ),
    (
        "viommu",
        "write",
        1,
        Storm::Replace,
        2.0,
        "IommuMemory write_slice 512B, 1 writer, replace storm: >= 2x refill writes/s",
    ),
    (
        "viommu",
        "write",
        2,
        Storm::Replace,
        3.0,
        "IommuMemory write_slice 512B, 2 writers, replace storm: >= 3x refill writes/s",
    ),
    (
        "dma-memory",
        "read",
        1,
        Storm::None,
        1.0,
        "DmaMemory read_slice 512B, 1 reader, idle: >= 1.0x refill reads/s",
    ),
    (
        "dma-memory",
        "read",
        1,
        Storm::Replace,
        2.0,
        "DmaMemory read_slice 512B, 1 reader, replace storm: >= 2x refill reads/s",
    ),
    (
        "dma-memory",
        "read",
        2,
        Storm::Replace,
        3.0,
        "DmaMemory read_slice 512B, 2 readers, replace storm: >= 3x refill reads/s",
    ),
    (
        "dma-memory",
        "write",
        1,
        Storm::None,
        1.0,
        "DmaMemory write_slice 512B, 1 writer, idle: >= 1.0x refill writes/s",
    ),
    (
        "dma-memory",
        "write",
        1,
        Storm::Replace,
        2.0,
        "DmaMemory write_slice 512B, 1 writer, replace storm: >= 2x refill writes/s",
    ),
    (
        "dma-memory",
        "write",
        2,
        Storm::Replace,
        3.0,
        "DmaMemory write_slice 512B, 2 writers, replace storm: >= 3x refill writes/s",
    ),
    (
        "dma-memory-pinned",
        "read",
        1,
        Storm::None,
        2.0,
        "PinnedDmaMemory (one pin per chain of 16) read_slice 512B, idle: >= 2x refill reads/s",
    ),
    (
        "dma-memory-pinned",
        "write",
        1,
        Storm::None,
        2.0,
        "PinnedDmaMemory (one pin per chain of 16) write_slice 512B, idle: >= 2x refill writes/s",
    ),
];

/// The `iommu-memory` targets, judged against `refill` (vm-memory's documented use of the
/// `RwLock<Iotlb>`), with `swap` (its cheapest switch) printed beside; every shape must meet
/// a target for it to pass.
pub(super) fn targets(rs: &[CaseResult], out: &mut Vec<Target>) {
    for goal in GOALS {
        out.push(target(rs, goal));
    }
}

/// One goal's target: every shape must meet it.
fn target(rs: &[CaseResult], (design, op, readers, storm, want, goal): Goal) -> Target {
    let mut parts = Vec::new();
    let mut pass = true;
    for shape in ["contiguous", "256_pages"] {
        let Some((x, part)) = shape_part(rs, design, op, shape, readers, storm) else {
            continue;
        };
        pass &= x >= want;
        parts.push(part);
    }
    if parts.is_empty() {
        Target {
            goal,
            measured: format!(
                "not measured (needs iommu-memory{})",
                if readers > 1 {
                    " with --threads >= 2"
                } else {
                    ""
                }
            ),
            pass: None,
        }
    } else {
        Target {
            goal,
            measured: parts.join("; "),
            pass: Some(pass && parts.len() == 2),
        }
    }
}

/// `design` over `refill` (the ratio the target judges) for `op` on `shape`, and the text of
/// it with `swap` beside; `None` if a row is missing.
fn shape_part(
    rs: &[CaseResult],
    design: &str,
    op: &str,
    shape: &str,
    readers: usize,
    storm: Storm,
) -> Option<(f64, String)> {
    let row = |d| iommu_memory_row(rs, d, op, shape, readers, storm);
    let (Some(v), Some(refill), Some(swap)) = (row(design), row("refill"), row("swap")) else {
        return None;
    };
    let x = v.mops / refill.mops;
    let mut part = format!(
        "{shape} {x:.2}x ({:.2} vs {:.2} M/s), swap {:.2}x",
        v.mops,
        refill.mops,
        v.mops / swap.mops
    );
    if storm != Storm::None {
        let _ = write!(
            part,
            " (switches/s {design} {:.0}k, refill {:.0}k, swap {:.0}k)",
            v.writer_ops_per_s / 1e3,
            refill.writer_ops_per_s / 1e3,
            swap.writer_ops_per_s / 1e3
        );
    }
    Some((x, part))
}

fn iommu_memory_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::IommuMemory)?;
    let mut t = Table::new(&[
        "design",
        "shape",
        "access",
        "threads",
        "storm",
        "M/s",
        "swap M/s",
        "refill M/s",
        "vs swap",
        "vs refill",
        "p50",
        "p99",
        "p99.9",
        "swap p99.9",
        "refill p99.9",
        "switch/s",
        "swap",
        "refill",
        "faults",
    ]);
    for design in ["viommu", "dma-memory", "dma-memory-pinned"] {
        for v in rows
            .iter()
            .filter(|r| r.baseline.split('/').next() == Some(design))
        {
            let mut it = v.baseline.split('/').skip(1);
            let (Some(op), Some(shape)) = (it.next(), it.next()) else {
                continue;
            };
            t.row(table_row(rs, v, design, op, shape));
        }
    }
    Some(t.render(2))
}

/// The row `v` of `design` in the table, with the `swap` and `refill` rows of its shape,
/// access, threads and storm.
fn table_row(
    rs: &[CaseResult],
    v: &CaseResult,
    design: &str,
    op: &str,
    shape: &str,
) -> Vec<String> {
    let swap = iommu_memory_row(rs, "swap", op, shape, v.readers, v.storm);
    let refill = iommu_memory_row(rs, "refill", op, shape, v.readers, v.storm);
    let mops = |r: Option<&CaseResult>| r.map_or("-".into(), |r| format!("{:.2}", r.mops));
    let vs = |r: Option<&CaseResult>| r.map_or("-".into(), |r| ratio(v.mops / r.mops));
    let p999 =
        |r: Option<&CaseResult>| dist_cell(r.and_then(|r| r.latency.get("access")), |d| d.p999);
    let switches = |r: Option<&CaseResult>| match r {
        Some(r) if r.storm != Storm::None => format!("{:.0}", r.writer_ops_per_s),
        _ => "-".into(),
    };
    let faults = v.faults + swap.map_or(0, |r| r.faults) + refill.map_or(0, |r| r.faults);
    [
        design.to_string(),
        shape.to_string(),
        op.to_string(),
        v.readers.to_string(),
        if v.storm == Storm::None {
            "idle"
        } else {
            "storm"
        }
        .to_string(),
        mops(Some(v)),
        mops(swap),
        mops(refill),
        vs(swap),
        vs(refill),
    ]
    .into_iter()
    .chain(tail_cells(v.latency.get("access"), 3))
    .chain([
        p999(swap),
        p999(refill),
        switches(Some(v)),
        switches(swap),
        switches(refill),
        faults.to_string(),
    ])
    .collect()
}

/// The table and its legend.
pub(super) fn section(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = iommu_memory_table(rs) {
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}M/s: 512-byte accesses per second (millions), summed over threads. viommu: vm-memory's IommuMemory over\n\
             DeviceIommu; dma-memory: viommu's own GuestMemory (DmaMemory, a pin per access); dma-memory-pinned: one\n\
             PinnedDmaMemory per block of 16 accesses (as around a descriptor chain); swap: a prefilled RwLock<Iotlb> (a switch swaps a prebuilt IOTLB in under the write lock,\n\
             its cheapest); refill: the RwLock<Iotlb> as a cache in front of a BTreeMap domain, emptied by a switch and\n\
             refilled under the write lock (vm-memory's documented use). vs: the row's design / that baseline (the targets use refill).\n\
             p50..p99.9: per access, timed in blocks of 16. storm: a domain switch every 10us (viommu: device_replace\n\
             between two HWPTs of one IOAS); switch/s: the switches each storm achieved in the measured window.",
            Scenario::IommuMemory.name(),
            Scenario::IommuMemory.describe()
        );
    }
}
