//! `replace-populate`: an unrelated group's replace (and a map on a third IOAS) while
//! another IOAS populates 1 GiB.

use super::table::{dist_cell, table_rows, tail_cells, Table};
use super::{find_label, Target};
use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use crate::stats::fmt_ns;
use std::fmt::Write as _;

/// The replace p99 beside a populate, the same alone and the map's beside.
pub(super) fn target(rs: &[CaseResult], out: &mut Vec<Target>) {
    match find_label(rs, Scenario::ReplacePopulate, Kind::Viommu.name())
        .and_then(|r| r.latency.get("replace").map(|d| (r, d)))
    {
        Some((r, d)) => {
            let alone = find_label(rs, Scenario::ReplacePopulate, "viommu-alone");
            let mut measured = format!(
                "p99 {} (p50 {}, max {})",
                fmt_ns(d.p99),
                fmt_ns(d.p50),
                fmt_ns(d.max)
            );
            if let Some(a) = alone.and_then(|a| a.latency.get("replace")) {
                let _ = write!(
                    measured,
                    "; alone: p50 {}, p99 {}",
                    fmt_ns(a.p50),
                    fmt_ns(a.p99)
                );
            }
            if let Some(m) = r.latency.get("map") {
                let _ = write!(measured, "; ioas_map on a third IOAS p99 {}", fmt_ns(m.p99));
                if let Some(am) = alone.and_then(|a| a.latency.get("map")) {
                    let _ = write!(measured, " (alone {})", fmt_ns(am.p99));
                }
            }
            if let Some(p) = r.latency.get("populate") {
                let _ = write!(
                    measured,
                    "; {} populates of 1 GiB, p50 {}",
                    p.count,
                    fmt_ns(p.p50)
                );
            }
            out.push(Target {
                goal: "an unrelated group's replace while another IOAS populates 1 GiB: p99 < 50us",
                measured,
                pass: Some(d.p99 < 50_000),
            });
        }
        None => out.push(Target {
            goal: "an unrelated group's replace while another IOAS populates 1 GiB: p99 < 50us",
            measured: "not measured (needs replace-populate)".into(),
            pass: None,
        }),
    }
}

fn populate_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::ReplacePopulate)?;
    let mut t = Table::new(&[
        "baseline",
        "replaces",
        "p50",
        "p99",
        "p99.9",
        "max",
        "map p50",
        "map p99",
        "map max",
        "unmap p99",
        "populates",
        "populate p50",
    ]);
    for r in rows {
        let m = r.latency.get("map");
        let p = r.latency.get("populate");
        t.row(
            [r.baseline.to_string(), r.writer_ops.to_string()]
                .into_iter()
                .chain(tail_cells(r.latency.get("replace"), 4))
                .chain([
                    dist_cell(m, |d| d.p50),
                    dist_cell(m, |d| d.p99),
                    dist_cell(m, |d| d.max),
                    dist_cell(r.latency.get("unmap"), |d| d.p99),
                    p.map_or("0".into(), |d| d.count.to_string()),
                    dist_cell(p, |d| d.p50),
                ]),
        );
    }
    Some(t.render(1))
}

/// The populate table and its legend.
pub(super) fn section(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = populate_table(rs) {
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}p50..max: device_replace of group 0 (two small user HWPTs), one per 10us;\n\
             map/unmap: one 4 KiB page on a third IOAS; populates: hwpt_alloc calls on the 1 GiB IOAS beside.",
            Scenario::ReplacePopulate.name(),
            Scenario::ReplacePopulate.describe()
        );
    }
}
