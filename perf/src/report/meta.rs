//! Facts about the run and the machine, recorded with the results.

use crate::args::{Config, Mode};
use crate::scenarios::STORM_PERIOD;
use serde::Serialize;

/// Facts about the run and the machine, recorded with the results.
#[derive(Debug, Serialize)]
pub struct Meta {
    /// UTC date of the run.
    pub date: String,
    /// Quick or full.
    pub mode: Mode,
    /// The command line.
    pub command: String,
    /// `available_parallelism()` (what `nproc` prints).
    pub nproc: usize,
    /// The largest reader count.
    pub max_readers: usize,
    /// 4 KiB pages mapped in each domain.
    pub pages: u64,
    /// Storm pacing period in microseconds.
    pub storm_period_us: u64,
    /// Median cost of one `Instant::now()` pair on this machine (in every `translate_single`).
    pub clock_pair_ns: u64,
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: Option<String>,
    /// Kernel release, from `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// Load averages (1, 5, 15 min) when the run started, from `/proc/loadavg`: other work on
    /// the machine competes with the readers and shows up in the tails.
    pub loadavg: Option<String>,
    /// The build profile's optimization (`release` unless built otherwise).
    pub profile: &'static str,
}

impl Meta {
    /// Collects the facts for `cfg`.
    pub fn collect(cfg: &Config, command: String) -> Meta {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        Meta {
            date: crate::stats::today_utc(),
            mode: cfg.mode,
            command,
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_readers: cfg.max_threads,
            pages: cfg.pages,
            storm_period_us: STORM_PERIOD.as_micros() as u64,
            clock_pair_ns: clock_pair_ns(),
            cpu,
            kernel,
            loadavg,
            profile: if cfg!(debug_assertions) {
                "debug (numbers are not meaningful)"
            } else {
                "release"
            },
        }
    }
}

/// Median nanoseconds between two back-to-back `Instant::now()` calls.
fn clock_pair_ns() -> u64 {
    let mut v: Vec<u64> = (0..1001)
        .map(|_| {
            let a = std::time::Instant::now();
            crate::stats::nanos(a.elapsed())
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}
