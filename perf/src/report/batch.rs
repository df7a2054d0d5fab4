//! `mapunmap-batch`: 4 KiB map+unmap pairs with the unmap fences batched, a DMA reader
//! beside.

use super::table::{dist_cell, ratio, table_rows, Table};
use super::{find_label, Target};
use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use std::fmt::Write as _;

/// Batched pairs against rwlock-btree's pairs/s, the other ways of fencing beside.
pub(super) fn target(rs: &[CaseResult], out: &mut Vec<Target>) {
    let batch = |l| find_label(rs, Scenario::MapUnmapBatch, l);
    match (batch("viommu-batch32"), batch(Kind::RwLockBTree.name())) {
        (Some(v), Some(b)) if b.writer_ops_per_s > 0.0 => {
            let x = v.writer_ops_per_s / b.writer_ops_per_s;
            let mut measured = format!(
                "{x:.2}x ({:.0} vs {:.0} pairs/s)",
                v.writer_ops_per_s, b.writer_ops_per_s
            );
            for l in ["viommu-batch1", "viommu-unbatched", "viommu-batch32-cold"] {
                if let Some(r) = batch(l) {
                    let _ = write!(
                        measured,
                        "; {l} {:.2}x",
                        r.writer_ops_per_s / b.writer_ops_per_s
                    );
                }
            }
            out.push(Target {
                goal: "4K map+unmap pairs, fences batched by 32, a DMA reader beside: >= 0.5x rwlock-btree pairs/s",
                measured,
                pass: Some(x >= 0.5),
            });
        }
        _ => out.push(Target {
            goal: "4K map+unmap pairs batched by 32: >= 0.5x rwlock-btree pairs/s",
            measured: "not measured (needs mapunmap-batch)".into(),
            pass: None,
        }),
    }
}

fn batch_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::MapUnmapBatch)?;
    let mut t = Table::new(&[
        "baseline",
        "pairs/s",
        "vs btree",
        "pair p50",
        "pair p99",
        "pair max",
        "unmap p99",
        "reader Mops/s",
        "reader faults",
        "errors",
    ]);
    let btree = find_label(rs, Scenario::MapUnmapBatch, Kind::RwLockBTree.name());
    for r in rows {
        let p = r.latency.get("pair");
        t.row(
            [
                r.baseline.to_string(),
                format!("{:.0}", r.writer_ops_per_s),
                btree.map_or("-".into(), |b| {
                    ratio(r.writer_ops_per_s / b.writer_ops_per_s)
                }),
            ]
            .into_iter()
            .chain([
                dist_cell(p, |d| d.p50),
                dist_cell(p, |d| d.p99),
                dist_cell(p, |d| d.max),
                dist_cell(r.latency.get("unmap"), |d| d.p99),
                format!("{:.1}", r.mops_wall),
                r.faults.to_string(),
                r.writer_errors.to_string(),
            ]),
        );
    }
    Some(t.render(1))
}

/// The batch table and its legend.
pub(super) fn section(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = batch_table(rs) {
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}pair: time per map+unmap pair, fence waits included (a batch's time / its pairs).\n\
             reader Mops/s: the DMA reader's one-shot translations beside the writer (wall clock).",
            Scenario::MapUnmapBatch.name(),
            Scenario::MapUnmapBatch.describe()
        );
    }
}
