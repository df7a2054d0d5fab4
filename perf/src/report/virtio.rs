//! `virtio-iommu-mapunmap`: MAP+UNMAP pairs through `VirtioIommu::process_batch` against a
//! cloud-hypervisor-style device, with and without a DMA thread.

use super::table::{dist_cell, ratio, table_rows, Table};
use super::Target;
use crate::scenarios::{CaseResult, Scenario};
use std::fmt::Write as _;

/// The `virtio-iommu-mapunmap` row `label` with `dma` DMA threads.
fn virtio_row<'a>(rs: &'a [CaseResult], label: &str, dma: usize) -> Option<&'a CaseResult> {
    rs.iter().find(|r| {
        r.scenario == Scenario::VirtioIommuMapUnmap.name()
            && r.baseline == label
            && r.readers == dma
    })
}

/// The `virtio-iommu-mapunmap` target: viommu's pairs/s at least the cloud-hypervisor-style
/// device's, in every layout, with and without a DMA thread.
pub(super) fn target(rs: &[CaseResult], out: &mut Vec<Target>) {
    let goal = "virtio-iommu MAP+UNMAP, passes of 32 pairs (VirtioIommu::process_batch): \
                >= 1.0x the cloud-hypervisor-style device's pairs/s";
    let mut parts = Vec::new();
    let mut pass = true;
    for layout in ["dense", "sparse"] {
        for dma in [0, 1] {
            let (Some(v), Some(c)) = (
                virtio_row(rs, &format!("viommu/{layout}"), dma),
                virtio_row(rs, &format!("ch-style/{layout}"), dma),
            ) else {
                continue;
            };
            let x = v.writer_ops_per_s / c.writer_ops_per_s;
            pass &= x >= 1.0;
            parts.push(format!(
                "{layout}{} {x:.2}x ({:.2} vs {:.2} M pairs/s)",
                if dma > 0 { " + DMA thread" } else { "" },
                v.writer_ops_per_s / 1e6,
                c.writer_ops_per_s / 1e6
            ));
        }
    }
    out.push(Target {
        goal,
        measured: if parts.is_empty() {
            "not measured (needs virtio-iommu-mapunmap)".into()
        } else {
            parts.join("; ")
        },
        pass: (!parts.is_empty()).then_some(pass),
    });
}

fn virtio_table(rs: &[CaseResult]) -> Option<String> {
    table_rows(rs, Scenario::VirtioIommuMapUnmap)?;
    let mut t = Table::new(&[
        "layout",
        "DMA threads",
        "viommu pairs/s",
        "ch-style pairs/s",
        "vs ch-style",
        "viommu pair p50",
        "p99",
        "max",
        "ch-style pair p50",
        "p99",
        "max",
        "DMA Mops/s viommu",
        "ch-style",
        "errors",
    ]);
    for dma in [0, 1] {
        for layout in ["dense", "sparse"] {
            if let Some(row) = table_row(rs, dma, layout) {
                t.row(row);
            }
        }
    }
    Some(t.render(1))
}

/// The row of `layout` with `dma` DMA threads: viommu and the cloud-hypervisor-style device
/// side by side; `None` if neither ran.
fn table_row(rs: &[CaseResult], dma: usize, layout: &str) -> Option<Vec<String>> {
    let v = virtio_row(rs, &format!("viommu/{layout}"), dma);
    let c = virtio_row(rs, &format!("ch-style/{layout}"), dma);
    if v.is_none() && c.is_none() {
        return None;
    }
    let pairs =
        |r: Option<&CaseResult>| r.map_or("-".into(), |r| format!("{:.0}", r.writer_ops_per_s));
    let dma_cell = |r: Option<&CaseResult>| match r {
        Some(r) if dma > 0 => format!("{:.1}", r.mops_wall),
        _ => "-".into(),
    };
    let vs = match (v, c) {
        (Some(v), Some(c)) => ratio(v.writer_ops_per_s / c.writer_ops_per_s),
        _ => "-".into(),
    };
    let errors = v.map_or(0, |r| r.writer_errors) + c.map_or(0, |r| r.writer_errors);
    let (pv, pc) = (
        v.and_then(|r| r.latency.get("pair")),
        c.and_then(|r| r.latency.get("pair")),
    );
    Some(
        [layout.to_string(), dma.to_string(), pairs(v), pairs(c), vs]
            .into_iter()
            .chain([
                dist_cell(pv, |d| d.p50),
                dist_cell(pv, |d| d.p99),
                dist_cell(pv, |d| d.max),
                dist_cell(pc, |d| d.p50),
                dist_cell(pc, |d| d.p99),
                dist_cell(pc, |d| d.max),
                dma_cell(v),
                dma_cell(c),
                errors.to_string(),
            ])
            .collect(),
    )
}

/// The table and its legend.
pub(super) fn section(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = virtio_table(rs) {
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}a pass: 32 MAP+UNMAP pairs of one 4 KiB page (the Linux driver's request bytes); pair: a pass's time / 32.\n\
             viommu: VirtioIommu::process_batch, one grace period per pass (no DMA in flight to an unmapped page on return);\n\
             ch-style: BTreeMap domains behind one RwLock, nothing waits for DMA. dense: a neighbouring page stays mapped;\n\
             sparse: each UNMAP empties its leaf table. DMA Mops/s: the DMA thread's translations (wall clock).",
            Scenario::VirtioIommuMapUnmap.name(),
            Scenario::VirtioIommuMapUnmap.describe()
        );
    }
}
