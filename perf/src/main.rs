//! `viommu-perf`: the latency benchmark suite of viommu.
//!
//! Every scenario runs against every implementation behind one trait
//! ([`baselines::Translator`]): viommu through its public API (one-shot translation, a guard
//! per 64 translations, and detach + attach instead of replace), and the designs it is
//! measured against: cloud-hypervisor-style `RwLock<BTreeMap>` domains, rust-vmm vm-memory's
//! `Iotlb` behind an `RwLock`, a `Mutex` around a plain radix table, and the same radix walk
//! with no synchronization at all (the floor). The rust-vmm integration scenarios
//! (`iommu-memory`, `virtio-iommu-mapunmap`) compare viommu's `DeviceIommu` and `VirtioIommu`
//! with rust-vmm-style baselines of their own instead (`baselines::vm_iommu`,
//! `baselines::ch_virtio`).
//!
//! `cargo run --release -p viommu-perf` runs the quick mode (about a minute and a half on two cores),
//! prints the tables and the project's ratio targets, and writes `results.json` and SVG plots
//! under `target/perf/`. `--help` lists the options and scenarios; `docs/benchmarks.md` says
//! what each scenario measures.

/// The counting global allocator, shared with the tests (including it installs it).
#[path = "../../tests/support/counting_alloc.rs"]
mod alloc;
mod args;
mod baselines;
mod clock;
mod plot;
mod report;
mod scenarios;
mod stats;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match args::parse(argv.clone()) {
        Ok(args::Parsed::Run(cfg)) => cfg,
        Ok(args::Parsed::Help) => {
            print!("{}", args::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("viommu-perf: {e}");
            return ExitCode::from(2);
        }
    };
    let command = std::iter::once("viommu-perf".to_string())
        .chain(argv)
        .collect::<Vec<_>>()
        .join(" ");
    let meta = report::Meta::collect(&cfg, command);
    if cfg!(debug_assertions) {
        eprintln!("viommu-perf: this is a debug build; use --release for meaningful numbers");
    }
    let planned = scenarios::plan(&cfg).len();
    eprintln!(
        "viommu-perf: {:?} mode, {} cases, up to {} reader thread(s), {} pages a domain",
        cfg.mode, planned, cfg.max_threads, cfg.pages
    );

    let results = scenarios::run(&cfg);
    let targets = report::targets(&results, cfg.max_threads);
    print!("{}", report::render(&meta, &results, &targets));

    if let Err(e) = std::fs::create_dir_all(&cfg.out) {
        eprintln!("viommu-perf: cannot create {}: {e}", cfg.out.display());
        return ExitCode::FAILURE;
    }
    let json = cfg.out.join("results.json");
    let doc = report::Report {
        meta: &meta,
        targets: &targets,
        results: &results,
    };
    let written = serde_json::to_string_pretty(&doc)
        .map_err(|e| e.to_string())
        .and_then(|s| std::fs::write(&json, s).map_err(|e| e.to_string()));
    if let Err(e) = written {
        eprintln!("viommu-perf: cannot write {}: {e}", json.display());
        return ExitCode::FAILURE;
    }
    println!("\nraw results: {}", json.display());
    match plot::write_all(&cfg.out, &results) {
        Ok(files) => {
            for f in files {
                println!("plot: {}", f.display());
            }
        }
        Err(e) => {
            eprintln!("viommu-perf: plotting failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
