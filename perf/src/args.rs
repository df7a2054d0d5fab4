//! Command-line parsing, by hand (the suite has no argument-parser dependency).

use crate::scenarios::Scenario;
use std::path::PathBuf;
use std::time::Duration;

/// How long and how big each scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// About a minute and a half on two cores: short runs, 100k replace cycles for the memory check.
    Quick,
    /// Longer runs, bigger domains, a million replace cycles.
    Full,
}

/// Everything the run needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Quick or full.
    pub mode: Mode,
    /// The scenarios to run, in run order.
    pub scenarios: Vec<Scenario>,
    /// The largest number of reader threads.
    pub max_threads: usize,
    /// Where the JSON and SVG files go.
    pub out: PathBuf,
    /// 4 KiB pages mapped in each of the two domains.
    pub pages: u64,
    /// Warm-up before each measured run.
    pub warmup: Duration,
    /// Measured time of each translate run.
    pub measure: Duration,
    /// Measured time of each control-plane run (replace, unmap, map/unmap).
    pub control: Duration,
    /// Measured time of each run of the 1 GiB scenarios (`dma-pause`, `replace-populate`),
    /// whose writer cycles take milliseconds each.
    pub long: Duration,
    /// Measured time of each row of the scaling scenarios (`translate-devices`,
    /// `fence-threads`), which have eight rows each.
    pub scaled: Duration,
    /// Replace calls of the memory check.
    pub memory_replaces: u64,
    /// Map + unmap pairs of the memory check.
    pub memory_maps: u64,
    /// Time cap of each memory check (the detach + attach baseline is slow).
    pub memory_cap: Duration,
}

impl Config {
    fn for_mode(mode: Mode) -> Config {
        let max_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let out = default_out_dir();
        match mode {
            Mode::Quick => Config {
                mode,
                scenarios: Scenario::ALL.to_vec(),
                max_threads,
                out,
                pages: 4096,
                warmup: Duration::from_millis(150),
                measure: Duration::from_millis(800),
                control: Duration::from_millis(600),
                long: Duration::from_secs(2),
                scaled: Duration::from_millis(400),
                memory_replaces: 100_000,
                memory_maps: 20_000,
                memory_cap: Duration::from_secs(3),
            },
            Mode::Full => Config {
                mode,
                scenarios: Scenario::ALL.to_vec(),
                max_threads,
                out,
                pages: 65536,
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(3),
                control: Duration::from_secs(3),
                long: Duration::from_secs(6),
                scaled: Duration::from_secs(2),
                memory_replaces: 1_000_000,
                memory_maps: 200_000,
                memory_cap: Duration::from_secs(120),
            },
        }
    }
}

/// What the command line asked for.
pub enum Parsed {
    /// Run with this configuration.
    Run(Config),
    /// Print the help text and exit.
    Help,
}

/// Help text for `--help`.
pub fn usage() -> String {
    let mut s = String::from(
        "viommu-perf: latency and throughput of viommu against lock-based and unsynchronized baselines

USAGE:
    cargo run --release -p viommu-perf -- [OPTIONS]

OPTIONS:
    --quick           short runs, about 1.5 minutes on two cores (default)
    --full            longer runs, 64Ki-page domains, a million replace cycles
    --scenario NAME   run only NAME (repeatable); see the list below
    --threads N       largest number of reader threads (default: available parallelism)
    --out DIR         where results.json and the SVG plots go (default: target/perf)
    -h, --help        this text

SCENARIOS:
",
    );
    for sc in Scenario::ALL {
        s.push_str(&format!("    {:<22} {}\n", sc.name(), sc.describe()));
    }
    s
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut mode = Mode::Quick;
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut threads: Option<usize> = None;
    let mut out: Option<PathBuf> = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => mode = Mode::Quick,
            "--full" => mode = Mode::Full,
            "--scenario" => {
                let v = value("--scenario")?;
                let sc = Scenario::from_name(&v).ok_or_else(|| {
                    format!("unknown scenario {v:?}; `--help` lists the scenarios")
                })?;
                if !scenarios.contains(&sc) {
                    scenarios.push(sc);
                }
            }
            "--threads" => {
                let v = value("--threads")?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("--threads wants a positive number, not {v:?}"))?;
                if n == 0 {
                    return Err("--threads must be at least 1".into());
                }
                threads = Some(n);
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    let mut cfg = Config::for_mode(mode);
    if !scenarios.is_empty() {
        // Keep the canonical order whatever order the flags came in.
        cfg.scenarios = Scenario::ALL
            .iter()
            .copied()
            .filter(|s| scenarios.contains(s))
            .collect();
    }
    if let Some(n) = threads {
        cfg.max_threads = n;
    }
    if let Some(o) = out {
        cfg.out = o;
    }
    Ok(Parsed::Run(cfg))
}

/// `target/perf` of the build this binary belongs to: `<target>/<profile>/viommu-perf` gives
/// `<target>/perf`; anything else falls back to `./target/perf`.
fn default_out_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("perf");
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe.parent().and_then(|profile| profile.parent()) {
            if target.file_name().is_some_and(|n| n == "target") {
                return target.join("perf");
            }
        }
    }
    PathBuf::from("target").join("perf")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(c) => Ok(c),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_are_quick_and_everything() {
        let c = run(&[]).unwrap();
        assert_eq!(c.mode, Mode::Quick);
        assert_eq!(c.scenarios, Scenario::ALL.to_vec());
        assert!(c.max_threads >= 1);
    }

    #[test]
    fn flags() {
        let c = run(&[
            "--full",
            "--scenario",
            "memory",
            "--scenario=translate-idle",
            "--threads",
            "3",
            "--out=/tmp/x",
        ])
        .unwrap();
        assert_eq!(c.mode, Mode::Full);
        assert_eq!(
            c.scenarios,
            vec![Scenario::TranslateIdle, Scenario::Memory],
            "canonical order"
        );
        assert_eq!(c.max_threads, 3);
        assert_eq!(c.out, PathBuf::from("/tmp/x"));
        assert!(run(&["--threads", "0"]).is_err());
        assert!(run(&["--scenario", "nope"]).is_err());
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["--out"]).is_err());
        assert_eq!(run(&["--help"]).unwrap_err(), "help");
    }
}
