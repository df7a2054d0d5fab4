//! The nesting scenarios: `nested-translate` (nested against paging, warm and cold IOTLB)
//! and `nested-replace` (readers on nested HWPTs while the RID or a PASID is replaced).

use super::table::{dist_cell, ratio, table_rows, tail_cells, Table};
use super::{find_label, Target};
use crate::scenarios::{CaseResult, Scenario};
use crate::stats::Dist;
use std::fmt::Write as _;

/// The `nested-translate` row `label`'s median over `against`'s.
fn nested_ratio(rs: &[CaseResult], label: &str, against: &str) -> Option<(f64, f64, f64)> {
    let p50 = |l: &str| {
        find_label(rs, Scenario::NestedTranslate, l)
            .and_then(|r| r.per_op.as_ref())
            .map(|p| p.p50_ns)
    };
    let (a, b) = (p50(label)?, p50(against)?);
    (b > 0.0).then_some((a / b, a, b))
}

/// The nesting targets: warm nested translate within 2x of paging (same IOVA); no fault
/// during nested replace storms.
pub(super) fn targets(rs: &[CaseResult], out: &mut Vec<Target>) {
    for (api, what) in [
        ("oneshot", "one-shot Device::translate"),
        ("guard", "through a guard (one pin per 64)"),
    ] {
        out.push(warm_target(rs, api, what));
    }
    out.push(replace_target(rs));
    out.push(identity_target(rs));
}

/// The identity domain's target: a one-shot identity translation no slower than a one-shot
/// paging translation of one page (same IOVA over and over, and the sweep).
fn identity_target(rs: &[CaseResult]) -> Target {
    let goal =
        "identity translate, one-shot: at least as fast as a paging one-shot of a single page";
    let rows: Vec<(&str, (f64, f64, f64))> = [("same", "paging-same"), ("walk", "paging-walk")]
        .into_iter()
        .filter_map(|(r, p)| {
            Some((
                r,
                nested_ratio(
                    rs,
                    &format!("oneshot/identity-{r}"),
                    &format!("oneshot/{p}"),
                )?,
            ))
        })
        .collect();
    if rows.is_empty() {
        return Target {
            goal,
            measured: "not measured (needs nested-translate)".into(),
            pass: None,
        };
    }
    let measured = rows
        .iter()
        .map(|(r, (x, n, p))| format!("{r} {x:.2}x of paging ({n:.1} vs {p:.1}ns)"))
        .collect::<Vec<_>>()
        .join("; ");
    Target {
        goal,
        measured,
        // Medians of a few nanoseconds: equal within the clock's resolution counts as met.
        pass: Some(rows.iter().all(|(_, (_, n, p))| *n <= *p + 0.5)),
    }
}

/// The warm nested translate target of `api` (`oneshot` or `guard`), with the cold rows
/// beside.
fn warm_target(rs: &[CaseResult], api: &str, what: &str) -> Target {
    let paging = format!("{api}/paging-same");
    let per_fmt: Vec<(&str, (f64, f64, f64))> = ["smmuv3", "vtd"]
        .into_iter()
        .filter_map(|f| Some((f, nested_ratio(rs, &format!("{api}/{f}-warm"), &paging)?)))
        .collect();
    let goal = match api {
        "oneshot" => "nested translate, warm IOTLB, one-shot: within 2x of a paging translate of the same IOVA",
        _ => "nested translate, warm IOTLB, guard held: within 2x of a paging translate of the same IOVA",
    };
    if per_fmt.len() < 2 {
        return Target {
            goal,
            measured: "not measured (needs nested-translate)".into(),
            pass: None,
        };
    }
    let mut measured = String::new();
    for (f, (x, n, p)) in &per_fmt {
        let _ = write!(measured, "{f} {x:.2}x ({n:.1} vs {p:.1}ns); ");
    }
    let _ = write!(measured, "medians per translation, {what}");
    let cold = cold_rows(rs, api);
    if !cold.is_empty() {
        let _ = write!(
            measured,
            "; cold (every IOTLB lookup misses): {}",
            cold.join(", ")
        );
    }
    Target {
        goal,
        measured,
        pass: Some(per_fmt.iter().all(|(_, (x, _, _))| *x <= 2.0)),
    }
}

/// The cold rows of `api` against the paging walk and the uncached nested walk.
fn cold_rows(rs: &[CaseResult], api: &str) -> Vec<String> {
    ["smmuv3", "vtd"]
        .into_iter()
        .filter_map(|f| {
            let c = format!("{api}/{f}-cold");
            let (x, n, _) = nested_ratio(rs, &c, &format!("{api}/paging-walk"))?;
            let (u, _, _) = nested_ratio(rs, &c, &format!("{api}/{f}-uncached"))?;
            Some(format!(
                "{f} {n:.1}ns = {x:.2}x paging walk, {u:.2}x uncached"
            ))
        })
        .collect()
}

/// No fault, no wrong target and no writer error on nested HWPTs during the replace storms.
fn replace_target(rs: &[CaseResult]) -> Target {
    let rows = Scenario::NestedReplace.results(rs);
    if rows.is_empty() {
        return Target {
            goal: "zero faults and zero wrong targets on nested HWPTs during RID and PASID replace storms",
            measured: "not measured (needs nested-replace)".into(),
            pass: None,
        };
    }
    let storm: Vec<&&CaseResult> = rows.iter().filter(|r| r.writer_ops > 0).collect();
    let faults: u64 = rows.iter().map(|r| r.faults).sum();
    let wrong: u64 = rows.iter().map(|r| r.wrong).sum();
    let ops: u64 = storm.iter().map(|r| r.reader_ops).sum();
    let replaces: u64 = storm.iter().map(|r| r.writer_ops).sum();
    let errors: u64 = rows.iter().map(|r| r.writer_errors).sum();
    Target {
        goal:
            "zero faults and zero wrong targets on nested HWPTs during RID and PASID replace storms",
        measured: format!(
            "{faults} faults, {wrong} wrong; {ops} translations under {replaces} replaces \
             (SMMUv3 <-> VT-d nested, RID and PASID {}), {errors} writer errors",
            crate::baselines::nested_world::PASID
        ),
        pass: Some(faults == 0 && wrong == 0 && errors == 0 && replaces > 0),
    }
}

fn nested_translate_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::NestedTranslate)?;
    let mut t = Table::new(&[
        "row",
        "p50",
        "p90",
        "p99",
        "Mops/s",
        "vs paging",
        "vs uncached",
        "blocks",
        "faults",
        "wrong",
    ]);
    let ns = |x: f64| format!("{x:.1}ns");
    for r in rows {
        let Some(p) = &r.per_op else { continue };
        let vs = |word: &str| {
            p.ratios
                .iter()
                .find(|(l, _)| l.contains(word))
                .map_or("-".into(), |&(_, x)| ratio(x))
        };
        t.row([
            r.baseline.to_string(),
            ns(p.p50_ns),
            ns(p.p90_ns),
            ns(p.p99_ns),
            format!("{:.1}", r.mops),
            vs("paging"),
            vs("uncached"),
            p.blocks.to_string(),
            r.faults.to_string(),
            r.wrong.to_string(),
        ]);
    }
    Some(t.render(1))
}

fn nested_replace_table(rs: &[CaseResult]) -> Option<String> {
    let rows = table_rows(rs, Scenario::NestedReplace)?;
    let mut t = Table::new(&[
        "row",
        "readers",
        "replaces",
        "replace p50",
        "replace p99",
        "p50",
        "p99",
        "p99.9",
        "1-op p50",
        "1-op p99",
        "1-op p99.9",
        "p99 vs idle",
        "1-op p99.9 vs idle",
        "Mops/s",
        "faults",
        "wrong",
    ]);
    for r in &rows {
        t.row(replace_row(r, &rows));
    }
    Some(t.render(1))
}

/// One row of the `nested-replace` table: a storm row's percentiles are compared with the
/// idle row of the same variant and reader count.
fn replace_row(r: &CaseResult, rows: &[&CaseResult]) -> Vec<String> {
    let idle_label = r.baseline.replace("-storm", "-idle");
    let idle = rows
        .iter()
        .find(|i| i.baseline == idle_label && i.readers == r.readers);
    let cmp = |name: &str, f: fn(&Dist) -> u64| match (
        r.latency.get(name),
        idle.and_then(|i| i.latency.get(name)),
    ) {
        (Some(a), Some(b)) if r.writer_ops > 0 && f(b) > 0 => ratio(f(a) as f64 / f(b) as f64),
        _ => "-".into(),
    };
    let block = r.latency.get("translate_block64");
    let single = r.latency.get("translate_single");
    let rep = r.latency.get("replace");
    [
        r.baseline.to_string(),
        r.readers.to_string(),
        r.writer_ops.to_string(),
        dist_cell(rep, |d| d.p50),
        dist_cell(rep, |d| d.p99),
    ]
    .into_iter()
    .chain(tail_cells(block, 3))
    .chain(tail_cells(single, 3))
    .chain([
        cmp("translate_block64", |d| d.p99),
        cmp("translate_single", |d| d.p999),
        format!("{:.1}", r.mops),
        r.faults.to_string(),
        r.wrong.to_string(),
    ])
    .collect()
}

/// The two nesting tables and their legends.
pub(super) fn sections(s: &mut String, rs: &[CaseResult]) {
    if let Some(t) = nested_translate_table(rs) {
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}per translation of 512 bytes, from blocks of 64 timed with the TSC, in fractions of a ns.\n\
             oneshot: Device::translate (uncached: pin + translate_uncached + drop); guard: one pin per block.\n\
             *-same / *-warm: IOVA X over and over (warm: an IOTLB hit); *-walk / *-cold / *-uncached: a sweep\n\
             over 256 pages (cold: the 64-entry IOTLB misses every time). vs paging: median / paging-same's\n\
             (warm) or paging-walk's (cold, uncached); vs uncached: cold median / uncached's. Same run, rows\n\
             interleaved block by block.",
            Scenario::NestedTranslate.name(),
            Scenario::NestedTranslate.describe()
        );
    }
    if let Some(t) = nested_replace_table(rs) {
        let _ = writeln!(
            s,
            "\n== {}: {}\n{t}readers: one-shot translations of random IOVAs of 64 pages (PASID rows: pin_pasid + translate).\n\
             storm: device_replace / device_replace_pasid between an SMMUv3 and a VT-d nested HWPT every 10us.\n\
             p50..p99.9: per translation in blocks of 64; 1-op: one translation timed alone (Instant).\n\
             vs idle: the storm row's percentile / the idle row's (same variant, same readers, same run).",
            Scenario::NestedReplace.name(),
            Scenario::NestedReplace.describe()
        );
    }
}
