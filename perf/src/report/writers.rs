//! The writer-side scenarios: `replace`, `unmap`, `mapunmap-4k` and `mapunmap-2m`.

use super::find;
use super::table::{ratio, table_rows, tail_cells, Table};
use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use std::fmt::Write as _;

/// The first cells of a row of the replace and unmap tables: baseline, readers, writer calls.
fn writer_head(r: &CaseResult) -> impl Iterator<Item = String> {
    [
        r.baseline.to_string(),
        r.readers.to_string(),
        r.writer_ops.to_string(),
    ]
    .into_iter()
}

fn replace_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::Replace)?;
    let mut t = Table::new(&[
        "baseline",
        "readers",
        "replaces",
        "p50",
        "p99",
        "p99.9",
        "max",
        "faults",
        "wrong",
        "reader Mops/s",
    ]);
    for r in rows {
        let d = r.latency.get("replace");
        t.row(
            writer_head(r)
                .chain(tail_cells(d, 4))
                .chain([r.faults.to_string(), r.wrong.to_string()])
                .chain([format!("{:.1}", r.mops)]),
        );
    }
    Some(t.render(1))
}

fn unmap_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::Unmap)?;
    let mut t = Table::new(&[
        "baseline",
        "readers",
        "pairs",
        "unmap p50",
        "p99",
        "p99.9",
        "max",
        "map p50",
        "map p99",
        "reader Mops/s",
    ]);
    for r in rows {
        let u = r.latency.get("unmap");
        let m = r.latency.get("map");
        t.row(
            writer_head(r)
                .chain(tail_cells(u, 4))
                .chain(tail_cells(m, 2))
                .chain([format!("{:.1}", r.mops)]),
        );
    }
    Some(t.render(1))
}

fn mapunmap_table(rs: &[CaseResult], scenario: Scenario) -> Option<String> {
    let rows = table_rows(rs, scenario)?;
    let mut t = Table::new(&[
        "baseline",
        "pairs/s",
        "vs btree",
        "map p50",
        "map p99",
        "unmap p50",
        "unmap p99",
        "errors",
    ]);
    let btree = find(rs, scenario, Kind::RwLockBTree, 0);
    for r in rows {
        let m = r.latency.get("map");
        let u = r.latency.get("unmap");
        let head = [
            r.baseline.into(),
            format!("{:.0}", r.writer_ops_per_s),
            btree.map_or("-".into(), |b| {
                ratio(r.writer_ops_per_s / b.writer_ops_per_s)
            }),
        ];
        t.row(
            head.into_iter()
                .chain(tail_cells(m, 2))
                .chain(tail_cells(u, 2))
                .chain([r.writer_errors.to_string()]),
        );
    }
    Some(t.render(1))
}

/// The replace, unmap and map+unmap tables.
pub(super) fn sections(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = replace_table(rs) {
        let _ = writeln!(
            s,
            "\n== replace: {} (latency of the replace call)\n{t}",
            Scenario::Replace.describe()
        );
    }
    if let Some(t) = unmap_table(rs) {
        let _ = writeln!(s, "\n== unmap: {}\n{t}", Scenario::Unmap.describe());
    }
    for scenario in [Scenario::MapUnmap4k, Scenario::MapUnmap2m] {
        if let Some(t) = mapunmap_table(rs, scenario) {
            let _ = writeln!(s, "\n== {}: {}\n{t}", scenario.name(), scenario.describe());
        }
    }
}
