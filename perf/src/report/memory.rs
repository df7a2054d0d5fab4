//! `memory`: the live heap after many replace cycles and map/unmap cycles.

use super::table::Table;
use super::{Meta, Target};
use crate::args::Mode;
use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use crate::stats::{fmt_bytes, fmt_bytes_signed};
use std::fmt::Write as _;

/// The live heap after the cycles, within 1 MiB of the start.
pub(super) fn target(rs: &[CaseResult], out: &mut Vec<Target>) {
    match rs
        .iter()
        .find(|r| r.scenario == Scenario::Memory.name() && r.baseline == Kind::Viommu.name())
        .and_then(|r| r.memory.as_ref())
    {
        Some(m) => {
            let worst = m.replace_delta().max(m.total_delta());
            out.push(Target {
                goal:
                    "live heap after the replace (and map/unmap) cycles within 1 MiB of the start",
                measured: format!(
                    "{} after {} replaces, {} after {} map/unmap pairs too",
                    fmt_bytes_signed(m.replace_delta()),
                    m.replaces,
                    fmt_bytes_signed(m.total_delta()),
                    m.map_unmaps
                ),
                pass: Some(worst <= 1 << 20),
            });
        }
        None => out.push(Target {
            goal: "live heap after the replace cycles within 1 MiB of the start",
            measured: "not measured (needs memory)".into(),
            pass: None,
        }),
    }
}

fn memory_table(rs: &[CaseResult]) -> Option<String> {
    let rows: Vec<&CaseResult> = rs
        .iter()
        .filter(|r| r.scenario == Scenario::Memory.name() && r.memory.is_some())
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut t = Table::new(&[
        "baseline",
        "replaces",
        "per s",
        "live before",
        "after replaces",
        "map/unmaps",
        "after all",
        "peak over start",
        "reader faults",
    ]);
    for r in rows {
        let m = r.memory.as_ref().expect("filtered");
        t.row(vec![
            r.baseline.into(),
            m.replaces.to_string(),
            format!("{:.0}", m.replaces as f64 / m.replace_seconds.max(1e-9)),
            fmt_bytes(m.live_before),
            fmt_bytes_signed(m.replace_delta()),
            m.map_unmaps.to_string(),
            fmt_bytes_signed(m.total_delta()),
            fmt_bytes_signed(m.peak as i64 - m.live_before as i64),
            m.reader_faults.to_string(),
        ]);
    }
    Some(t.render(1))
}

/// The memory table, the rows' notes, and the quick mode's cycle counts.
pub(super) fn section(s: &mut String, meta: &Meta, rs: &[CaseResult]) {
    if let Some(t) = memory_table(rs) {
        let _ = writeln!(
            s,
            "\n== memory: live heap (counting allocator), one reader translating throughout\n{t}"
        );
        for r in rs.iter().filter(|r| r.scenario == Scenario::Memory.name()) {
            if let Some(n) = &r.note {
                let _ = writeln!(s, "  {}: {n}", r.baseline);
            }
        }
        if meta.mode == Mode::Quick {
            let _ = writeln!(
                s,
                "  quick mode: 100k replace cycles and 20k map/unmap pairs (--full: 1M and 200k)"
            );
        }
    }
}
