//! The translate scenarios (`translate-idle`, `translate-256`, `translate-replace`,
//! `translate-mapunmap`): their table, their targets, and the faults readers see during
//! replace (`translate-replace` and `replace` rows).

use super::table::{dist_cell, ratio, table_rows, tail_cells, Table};
use super::{find, Meta, Target};
use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use crate::stats::fmt_ns;
use std::fmt::Write as _;

fn p999_block(r: &CaseResult) -> Option<u64> {
    r.latency.get("translate_block64").map(|d| d.p999)
}

fn p999_single(r: &CaseResult) -> Option<u64> {
    r.latency.get("translate_single").map(|d| d.p999)
}

/// The replace-storm targets at 2 readers: throughput and p99.9 against rwlock-btree.
pub(super) fn storm_targets(rs: &[CaseResult], max_readers: usize, out: &mut Vec<Target>) {
    let two = 2.min(max_readers);
    let storm = |k| find(rs, Scenario::TranslateReplace, k, two);
    match (storm(Kind::Viommu), storm(Kind::RwLockBTree)) {
        (Some(v), Some(b)) if two == 2 => {
            let thr = v.mops / b.mops;
            out.push(Target {
                goal: "translate under a replace storm, 2 readers: >= 3x rwlock-btree throughput",
                measured: format!("{thr:.2}x ({:.1} vs {:.1} Mops/s)", v.mops, b.mops),
                pass: Some(thr >= 3.0),
            });
            if let (Some(pv), Some(pb)) = (p999_block(v), p999_block(b)) {
                let gain = pb as f64 / pv as f64;
                let single = match (p999_single(v), p999_single(b)) {
                    (Some(sv), Some(sb)) => format!(
                        "; one translation timed alone: {:.1}x ({} vs {})",
                        sb as f64 / sv as f64,
                        fmt_ns(sv),
                        fmt_ns(sb)
                    ),
                    _ => String::new(),
                };
                out.push(Target {
                    goal: "translate under a replace storm, 2 readers: p99.9 >= 10x lower than rwlock-btree",
                    measured: format!(
                        "{gain:.1}x lower ({} vs {}, per translation in blocks of 64){single}",
                        fmt_ns(pv),
                        fmt_ns(pb)
                    ),
                    pass: Some(gain >= 10.0),
                });
            }
        }
        _ => out.push(Target {
            goal: "translate under a replace storm, 2 readers: >= 3x throughput, >= 10x lower p99.9 than rwlock-btree",
            measured: "not measured (needs translate-replace with --threads >= 2)".into(),
            pass: None,
        }),
    }
}

/// Single-thread one-shot translate against the unsynchronized floor.
pub(super) fn idle_target(rs: &[CaseResult], out: &mut Vec<Target>) {
    let idle = |k| find(rs, Scenario::TranslateIdle, k, 1);
    match (idle(Kind::Viommu), idle(Kind::Unsync)) {
        (Some(v), Some(u)) => {
            let slow = u.mops / v.mops;
            let guard = idle(Kind::ViommuGuard)
                .map(|g| format!("; with a guard per 64: {:.2}x", u.mops / g.mops))
                .unwrap_or_default();
            out.push(Target {
                goal: "single-thread translate (one-shot Device::translate) within 1.5x of unsync-radix",
                measured: format!("{slow:.2}x slower ({:.1} vs {:.1} Mops/s){guard}", v.mops, u.mops),
                pass: Some(slow <= 1.5),
            });
        }
        _ => out.push(Target {
            goal: "single-thread translate within 1.5x of unsync-radix",
            measured: "not measured (needs translate-idle)".into(),
            pass: None,
        }),
    }
}

/// No fault and no wrong target seen by viommu's readers during replace.
pub(super) fn replace_faults_target(rs: &[CaseResult], out: &mut Vec<Target>) {
    let during_replace: Vec<&CaseResult> = rs
        .iter()
        .filter(|r| {
            (r.scenario == Scenario::TranslateReplace.name()
                || r.scenario == Scenario::Replace.name())
                && (r.baseline == Kind::Viommu.name() || r.baseline == Kind::ViommuGuard.name())
        })
        .collect();
    if during_replace.is_empty() {
        out.push(Target {
            goal: "zero faults and zero wrong targets seen by readers during replace",
            measured: "not measured (needs translate-replace or replace)".into(),
            pass: None,
        });
    } else {
        let faults: u64 = during_replace.iter().map(|r| r.faults).sum();
        let wrong: u64 = during_replace.iter().map(|r| r.wrong).sum();
        let ops: u64 = during_replace.iter().map(|r| r.reader_ops).sum();
        let replaces: u64 = during_replace.iter().map(|r| r.writer_ops).sum();
        let da: u64 = rs
            .iter()
            .filter(|r| r.baseline == Kind::DetachAttach.name() && r.readers > 0)
            .filter(|r| r.scenario != Scenario::Memory.name())
            .map(|r| r.faults)
            .sum();
        out.push(Target {
            goal: "zero faults and zero wrong targets seen by readers during replace",
            measured: format!(
                "{faults} faults, {wrong} wrong in {ops} translations across {replaces} replaces (detach+attach: {da} faults)"
            ),
            pass: Some(faults == 0 && wrong == 0),
        });
    }
}

/// The `translate-256` targets: one-shot against rwlock-btree and the floor, and through a
/// guard against the floor.
pub(super) fn translate_256_targets(rs: &[CaseResult], out: &mut Vec<Target>) {
    let small = |k| find(rs, Scenario::Translate256, k, 1);
    match (small(Kind::Viommu), small(Kind::RwLockBTree), small(Kind::Unsync)) {
        (Some(v), Some(b), Some(u)) => {
            let x = v.mops / b.mops;
            out.push(Target {
                goal: "one-shot Device::translate, 256 pages, 1 reader: >= 1.5x rwlock-btree throughput",
                measured: format!("{x:.2}x ({:.1} vs {:.1} Mops/s)", v.mops, b.mops),
                pass: Some(x >= 1.5),
            });
            let slow = u.mops / v.mops;
            out.push(Target {
                goal: "(stretch) one-shot Device::translate, 256 pages: within 2x of unsync-radix",
                measured: format!("{slow:.2}x slower ({:.1} vs {:.1} Mops/s)", v.mops, u.mops),
                pass: Some(slow <= 2.0),
            });
            if let Some(g) = small(Kind::ViommuGuard) {
                let slow = u.mops / g.mops;
                out.push(Target {
                    goal: "translate through a guard (one pin per 64), 256 pages: within 1.2x of unsync-radix",
                    measured: format!("{slow:.2}x slower ({:.1} vs {:.1} Mops/s)", g.mops, u.mops),
                    pass: Some(slow <= 1.2),
                });
            }
        }
        _ => out.push(Target {
            goal: "one-shot translate >= 1.5x rwlock-btree; guard within 1.2x of unsync-radix (256 pages)",
            measured: "not measured (needs translate-256)".into(),
            pass: None,
        }),
    }
}

/// Two readers, one-shot translate, against rwlock-btree.
pub(super) fn idle_two_readers_target(
    rs: &[CaseResult],
    max_readers: usize,
    out: &mut Vec<Target>,
) {
    let two = 2.min(max_readers);
    let idle = |k| find(rs, Scenario::TranslateIdle, k, two);
    match (idle(Kind::Viommu), idle(Kind::RwLockBTree)) {
        (Some(v), Some(b)) if two == 2 => {
            let x = v.mops / b.mops;
            out.push(Target {
                goal:
                    "2 readers, one-shot translate: >= 10x the two-lock rwlock-btree's throughput",
                measured: format!(
                    "{x:.2}x ({:.1} vs {:.1} Mops/s, translate-idle)",
                    v.mops, b.mops
                ),
                pass: Some(x >= 10.0),
            });
        }
        _ => out.push(Target {
            goal: "2 readers, one-shot translate: >= 10x rwlock-btree",
            measured: "not measured (needs translate-idle with --threads >= 2)".into(),
            pass: None,
        }),
    }
}

fn translate_table(rs: &[CaseResult], scenario: Scenario) -> Option<String> {
    let rows = table_rows(rs, scenario)?;
    let mut t = Table::new(&[
        "readers",
        "baseline",
        "Mops/s",
        "vs btree",
        "limit/x",
        "p50",
        "p99",
        "p99.9",
        "1-op p99.9",
        "tail gain",
        "faults",
        "wrong",
        "allocs/op",
        "frees/op",
        "writer/s",
    ]);
    for r in &rows {
        let btree = find(rs, scenario, Kind::RwLockBTree, r.readers);
        let limit = find(rs, scenario, Kind::Unsync, r.readers);
        let block = r.latency.get("translate_block64");
        let gain = match (btree.and_then(p999_block), p999_block(r)) {
            (Some(b), Some(x)) => ratio(b as f64 / x as f64),
            _ => "-".into(),
        };
        let head = [
            r.readers.to_string(),
            r.baseline.to_string(),
            format!("{:.1}", r.mops),
            btree.map_or("-".into(), |b| ratio(r.mops / b.mops)),
            limit.map_or("-".into(), |u| ratio(u.mops / r.mops)),
        ];
        t.row(head.into_iter().chain(tail_cells(block, 3)).chain([
            dist_cell(r.latency.get("translate_single"), |d| d.p999),
            gain,
            r.faults.to_string(),
            r.wrong.to_string(),
            format!("{:.3}", r.allocs_per_op),
            format!("{:.4}", r.frees_per_op),
            if r.writer_ops > 0 {
                format!("{:.0}", r.writer_ops_per_s)
            } else {
                "-".into()
            },
        ]));
    }
    Some(t.render(2))
}

/// The four translate tables and the legend after them.
pub(super) fn section(s: &mut String, meta: &Meta, rs: &[CaseResult]) {
    for scenario in [
        Scenario::TranslateIdle,
        Scenario::Translate256,
        Scenario::TranslateReplace,
        Scenario::TranslateMapUnmap,
    ] {
        if let Some(t) = translate_table(rs, scenario) {
            let _ = writeln!(s, "\n== {}: {}\n{t}", scenario.name(), scenario.describe());
        }
    }
    let _ = writeln!(
        s,
        "Mops/s: translations per second (millions) inside timed blocks, summed over readers.\n\
         vs btree: throughput / rwlock-btree's.  limit/x: unsync-radix throughput / this (1.00x = the floor).\n\
         p50..p99.9: per translation, timed in blocks of 64.  1-op p99.9: one translation timed alone\n\
         (includes ~{}ns of clock).  tail gain: rwlock-btree's p99.9 / this one's (blocks of 64).",
        meta.clock_pair_ns
    );
}

/// viommu's one-shot translate against the crossbeam-epoch baseline, in every translate row
/// both ran (each scenario and reader count): one line with the worst ratio.
pub(super) fn epoch_target(rs: &[CaseResult], out: &mut Vec<Target>) {
    let goal = "viommu one-shot ahead of the crossbeam-epoch baseline in every translate row";
    let mut worst: Option<(f64, String)> = None;
    let mut rows = 0;
    for scenario in [
        Scenario::TranslateIdle,
        Scenario::Translate256,
        Scenario::TranslateReplace,
        Scenario::TranslateMapUnmap,
    ] {
        for v in scenario
            .results(rs)
            .into_iter()
            .filter(|r| r.baseline == Kind::Viommu.name())
        {
            let Some(e) = find(rs, scenario, Kind::Epoch, v.readers) else {
                continue;
            };
            rows += 1;
            let x = v.mops / e.mops;
            if worst.as_ref().is_none_or(|(w, _)| x < *w) {
                let at = format!(
                    "{} readers={}: {:.1} vs {:.1} Mops/s",
                    scenario.name(),
                    v.readers,
                    v.mops,
                    e.mops
                );
                worst = Some((x, at));
            }
        }
    }
    out.push(match worst {
        Some((x, at)) => Target {
            goal,
            measured: format!("worst of {rows} rows: {x:.2}x ({at})"),
            pass: Some(x > 1.0),
        },
        None => Target {
            goal,
            measured: "not measured (needs a translate-* scenario)".into(),
            pass: None,
        },
    });
}
