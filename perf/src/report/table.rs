//! The plain text table every section prints, and the cells its rows are made of.

use crate::scenarios::{CaseResult, Scenario};
use crate::stats::{fmt_ns, Dist};
use std::fmt::Write as _;

/// A plain text table: a header row, right-aligned cells except the first two columns.
pub(super) struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    pub(super) fn render(&self, left: usize) -> String {
        let n = self.head.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        let line = |s: &mut String, r: &Vec<String>| {
            let mut l = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                if i > 0 {
                    l.push_str("  ");
                }
                if i < left {
                    let _ = write!(l, "{c:<width$}", width = w[i]);
                } else {
                    let _ = write!(l, "{c:>width$}", width = w[i]);
                }
            }
            s.push_str(l.trim_end());
            s.push('\n');
        };
        line(&mut s, &self.head);
        let total: usize = w.iter().sum::<usize>() + 2 * (n - 1);
        s.push_str(&"-".repeat(total));
        s.push('\n');
        for r in &self.rows {
            line(&mut s, r);
        }
        s
    }
}

pub(super) fn ratio(x: f64) -> String {
    if x.is_finite() && x > 0.0 {
        format!("{x:.2}x")
    } else {
        "-".into()
    }
}

pub(super) fn dist_cell(d: Option<&Dist>, f: impl Fn(&Dist) -> u64) -> String {
    d.map_or_else(|| "-".into(), |d| fmt_ns(f(d)))
}

/// The first `n` of the cells p50, p99, p99.9 and max of `d`.
pub(super) fn tail_cells(d: Option<&Dist>, n: usize) -> impl Iterator<Item = String> + '_ {
    let pick: [fn(&Dist) -> u64; 4] = [|d| d.p50, |d| d.p99, |d| d.p999, |d| d.max];
    pick.into_iter().take(n).map(move |f| dist_cell(d, f))
}

/// The results of `scenario`, or `None` when the run has none (its table is left out).
pub(super) fn table_rows(rs: &[CaseResult], scenario: Scenario) -> Option<Vec<&CaseResult>> {
    let rows = scenario.results(rs);
    (!rows.is_empty()).then_some(rows)
}
