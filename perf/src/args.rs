//! Command-line parsing, with clap's builder (its derive macros are not a dependency of the
//! workspace); `--help` is clap's, with the scenario list and what each measures after it.

use crate::scenarios::Scenario;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, Command};
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

/// The command line: its options, their help, and the scenario list after them.
fn command() -> Command {
    let mut scenarios = String::from("SCENARIOS:\n");
    for sc in Scenario::ALL {
        scenarios.push_str(&format!("    {:<22} {}\n", sc.name(), sc.describe()));
    }
    Command::new("viommu-perf")
        .about(
            "viommu-perf: latency and throughput of viommu against lock-based and unsynchronized \
             baselines",
        )
        .override_usage("cargo run --release -p viommu-perf -- [OPTIONS]")
        .disable_version_flag(true)
        .arg(
            Arg::new("quick")
                .long("quick")
                .action(ArgAction::SetTrue)
                .overrides_with("full")
                .help("short runs, about 1.5 minutes on two cores (default)"),
        )
        .arg(
            Arg::new("full")
                .long("full")
                .action(ArgAction::SetTrue)
                .overrides_with("quick")
                .help("longer runs, 64Ki-page domains, a million replace cycles"),
        )
        .arg(
            Arg::new("scenario")
                .long("scenario")
                .value_name("NAME")
                .action(ArgAction::Append)
                .value_parser(|v: &str| {
                    Scenario::from_name(v).ok_or_else(|| {
                        format!("unknown scenario {v:?}; `--help` lists the scenarios")
                    })
                })
                .help("run only NAME (repeatable); see the list below"),
        )
        .arg(
            Arg::new("threads")
                .long("threads")
                .value_name("N")
                .value_parser(|v: &str| match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("a positive number of threads, not {v:?}")),
                })
                .help("largest number of reader threads (default: available parallelism)"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("where results.json and the SVG plots go (default: target/perf)"),
        )
        .after_help(scenarios)
}

/// Help text for `--help`.
pub fn usage() -> String {
    command().render_help().to_string()
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let argv = std::iter::once("viommu-perf".to_string()).chain(args);
    let m = match command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => return Ok(Parsed::Help),
        Err(e) => return Err(e.to_string().trim_end().to_string()),
    };
    let mode = if m.get_flag("full") {
        Mode::Full
    } else {
        Mode::Quick
    };
    let scenarios: Vec<Scenario> = m
        .get_many::<Scenario>("scenario")
        .map(|v| v.copied().collect())
        .unwrap_or_default();
    let mut cfg = Config::for_mode(mode);
    if !scenarios.is_empty() {
        // Keep the canonical order whatever order the flags came in.
        cfg.scenarios = Scenario::ALL
            .iter()
            .copied()
            .filter(|s| scenarios.contains(s))
            .collect();
    }
    if let Some(&n) = m.get_one::<usize>("threads") {
        cfg.max_threads = n;
    }
    if let Some(o) = m.get_one::<PathBuf>("out") {
        cfg.out = o.clone();
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
        assert_eq!(
            run(&["--quick", "--full"]).unwrap().mode,
            Mode::Full,
            "the last wins"
        );
        assert_eq!(
            run(&["--full", "--quick"]).unwrap().mode,
            Mode::Quick,
            "the last wins"
        );
        let help = usage();
        for sc in Scenario::ALL {
            assert!(
                help.contains(sc.name()) && help.contains(sc.describe()),
                "{}",
                sc.name()
            );
        }
    }
}
