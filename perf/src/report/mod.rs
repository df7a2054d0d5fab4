//! The readable tables, the project's ratio targets, and the raw JSON.
//!
//! Every translate table compares each implementation with two references at the same
//! reader count: `rwlock-btree` (the lock-based design viommu replaces) and `unsync-radix`
//! (the same walk with no synchronization at all, the floor). The targets are ratios against
//! those references, so they carry over between machines better than absolute numbers.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Target`], [`Report`], the order of the targets and of the report's sections |
//! | `meta.rs` | [`Meta`]: facts about the run and the machine |
//! | `table.rs` | the plain text table and its cells |
//! | `translate.rs` | the translate scenarios (`translate-*`) and the faults seen during replace |
//! | `writers.rs` | `replace`, `unmap`, `mapunmap-4k` and `mapunmap-2m` |
//! | `batch.rs` | `mapunmap-batch` |
//! | `pause.rs` | `dma-pause` |
//! | `populate.rs` | `replace-populate` |
//! | `memory.rs` | `memory` |
//! | `nested.rs` | `nested-translate` and `nested-replace` |
//! | `iommu_memory.rs` | `iommu-memory` |
//! | `virtio.rs` | `virtio-iommu-mapunmap` |
//! | `scaling.rs` | `translate-devices` and `fence-threads` |

mod batch;
mod iommu_memory;
mod memory;
mod meta;
mod nested;
mod pause;
mod populate;
mod scaling;
mod table;
mod translate;
mod virtio;
mod writers;

pub use meta::Meta;

use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use serde::Serialize;
use std::fmt::Write as _;

/// One project target, checked against this run.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What is promised.
    pub goal: &'static str,
    /// What this run measured.
    pub measured: String,
    /// Whether the run meets it (`None`: the run lacks the cases to tell).
    pub pass: Option<bool>,
}

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Run facts.
    pub meta: &'a Meta,
    /// The project targets.
    pub targets: &'a [Target],
    /// Every case.
    pub results: &'a [CaseResult],
}

fn find(rs: &[CaseResult], scenario: Scenario, kind: Kind, readers: usize) -> Option<&CaseResult> {
    rs.iter().find(|r| {
        r.scenario == scenario.name() && r.baseline == kind.name() && r.readers == readers
    })
}

/// The row of `scenario` named `label` (an implementation's name, or a variant's label).
fn find_label<'a>(rs: &'a [CaseResult], scenario: Scenario, label: &str) -> Option<&'a CaseResult> {
    rs.iter()
        .find(|r| r.scenario == scenario.name() && r.baseline == label)
}

/// Checks the project's targets against `rs`.
pub fn targets(rs: &[CaseResult], max_readers: usize) -> Vec<Target> {
    let mut out = Vec::new();
    translate::storm_targets(rs, max_readers, &mut out);
    translate::idle_target(rs, &mut out);
    translate::replace_faults_target(rs, &mut out);
    translate::translate_256_targets(rs, &mut out);
    translate::idle_two_readers_target(rs, max_readers, &mut out);
    translate::epoch_target(rs, &mut out);
    pause::targets(rs, &mut out);
    populate::target(rs, &mut out);
    batch::target(rs, &mut out);
    nested::targets(rs, &mut out);
    iommu_memory::targets(rs, &mut out);
    virtio::target(rs, &mut out);
    scaling::devices_target(rs, &mut out);
    scaling::fence_targets(rs, &mut out);
    memory::target(rs, &mut out);
    out
}

/// The whole readable report.
pub fn render(meta: &Meta, rs: &[CaseResult], targets: &[Target]) -> String {
    let mut s = String::new();
    header(&mut s, meta);
    translate::section(&mut s, meta, rs);
    writers::sections(&mut s, rs);
    batch::section(&mut s, rs);
    pause::section(&mut s, rs);
    populate::section(&mut s, rs);
    memory::section(&mut s, meta, rs);
    nested::sections(&mut s, rs);
    iommu_memory::section(&mut s, rs);
    virtio::section(&mut s, rs);
    scaling::sections(&mut s, rs);
    writer_errors(&mut s, rs);
    target_list(&mut s, targets);
    s
}

/// The run's facts, first.
fn header(s: &mut String, meta: &Meta) {
    let _ = writeln!(
        s,
        "viommu-perf {:?} run, {} UTC, {} CPUs ({}), kernel {}, up to {} readers, {} pages a domain",
        meta.mode,
        meta.date,
        meta.nproc,
        meta.cpu.as_deref().unwrap_or("unknown CPU"),
        meta.kernel.as_deref().unwrap_or("unknown"),
        meta.max_readers,
        meta.pages,
    );
    let _ = writeln!(
        s,
        "command: {}   (load average at start: {})",
        meta.command,
        meta.loadavg.as_deref().unwrap_or("unknown")
    );
    if meta.profile != "release" {
        let _ = writeln!(s, "WARNING: {} build", meta.profile);
    }
}

/// The cases whose writer failed, with the first error of each.
fn writer_errors(s: &mut String, rs: &[CaseResult]) {
    let errors: Vec<&CaseResult> = rs.iter().filter(|r| r.writer_errors > 0).collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\n== writer errors");
        for r in errors {
            let _ = writeln!(
                s,
                "  {} {} readers={}: {} errors, first: {}",
                r.scenario,
                r.baseline,
                r.readers,
                r.writer_errors,
                r.first_writer_error.as_deref().unwrap_or("?")
            );
        }
    }
}

/// Every target with its verdict, last.
fn target_list(s: &mut String, targets: &[Target]) {
    let _ = writeln!(s, "\n== targets");
    let _ = writeln!(
        s,
        "  (per-call criterion numbers for the 256-page targets: \
         cargo bench --bench translate -- 'one_shot|guard_translate/hit_4k')"
    );
    for t in targets {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "----",
        };
        let _ = writeln!(s, "  [{verdict}] {}\n         {}", t.goal, t.measured);
    }
}
