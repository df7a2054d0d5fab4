//! The scenarios, the plan of cases they expand to, and the result record of a case.
//!
//! A *case* is one scenario run against one implementation ([`Kind`]) with one reader count.
//! Cases that would measure the same thing (the `replace` scenario and `translate-replace`
//! at the largest reader count, for instance, or the unsynchronized table, which cannot have
//! a writer, under any storm) run once and are reported under each scenario that asked.

pub mod batch;
pub mod control;
pub mod devices;
pub mod fence_threads;
pub mod iommu_memory;
pub mod memory;
pub mod nested;
pub mod pause;
pub mod populate;
pub mod readers;
pub mod virtio_mapunmap;

use crate::args::Config;
use crate::baselines::{with_translator, Kind, Layout, PAGE, PAGE_2M};
use crate::stats::{fmt_ns, Dist};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Pages a domain of `translate-256` maps: as many as the criterion benches' `one_shot` group.
pub const TRANSLATE_256_PAGES: u64 = 256;

/// One pacing period of every storm: one replace, or one map + unmap pair, per 10 µs.
pub const STORM_PERIOD: Duration = Duration::from_micros(10);

/// What the suite can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Translation latency and throughput, 1..N readers, no writer.
    TranslateIdle,
    /// One reader, no writer, 256 mapped pages: the criterion benches' set-up.
    Translate256,
    /// The same under a replace storm.
    TranslateReplace,
    /// The same under a map/unmap storm.
    TranslateMapUnmap,
    /// Replace publish latency and the faults readers see during replaces.
    Replace,
    /// Unmap latency, fence included, with busy readers.
    Unmap,
    /// Map + unmap throughput and latency, 4 KiB pages, no readers.
    MapUnmap4k,
    /// The same with 2 MiB pages.
    MapUnmap2m,
    /// 4 KiB map + unmap pairs with unmap fences batched, a DMA reader beside.
    MapUnmapBatch,
    /// The longest pause of pin, translate and drop while 1 GiB domains are replaced away
    /// and unmapped.
    DmaPause,
    /// An unrelated group's replace (and a map on a third IOAS) while a 1 GiB domain is
    /// populated.
    ReplacePopulate,
    /// Live heap after many replace cycles and map/unmap cycles.
    Memory,
    /// Nested translation, one reader: IOTLB hit and miss against the paging walk and the
    /// uncached nested walk, SMMUv3 and VT-d.
    NestedTranslate,
    /// Readers on nested HWPTs while the RID or a PASID is replaced between two of them.
    NestedReplace,
    /// 512-byte reads and writes through vm-memory's `IommuMemory` over viommu's
    /// `DeviceIommu` against the `RwLock<Iotlb>` pattern (`swap` and `refill`), idle and under
    /// a replace storm.
    IommuMemory,
    /// MAP+UNMAP pairs through `VirtioIommu::process_batch` against a cloud-hypervisor-style
    /// device, with and without a DMA thread.
    VirtioIommuMapUnmap,
    /// One reader translating round-robin over 1..1024 devices, idle and under a replace
    /// storm on one of them.
    TranslateDevices,
    /// `synchronize` latency and 4 KiB map + unmap pairs/s with 1..1024 registered threads,
    /// idle and with 2 of them pinning in a loop.
    FenceThreads,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 18] = [
        Scenario::TranslateIdle,
        Scenario::Translate256,
        Scenario::TranslateReplace,
        Scenario::TranslateMapUnmap,
        Scenario::Replace,
        Scenario::Unmap,
        Scenario::MapUnmap4k,
        Scenario::MapUnmap2m,
        Scenario::MapUnmapBatch,
        Scenario::DmaPause,
        Scenario::ReplacePopulate,
        Scenario::Memory,
        Scenario::NestedTranslate,
        Scenario::NestedReplace,
        Scenario::IommuMemory,
        Scenario::VirtioIommuMapUnmap,
        Scenario::TranslateDevices,
        Scenario::FenceThreads,
    ];

    /// The name used by `--scenario` and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::TranslateIdle => "translate-idle",
            Scenario::Translate256 => "translate-256",
            Scenario::TranslateReplace => "translate-replace",
            Scenario::TranslateMapUnmap => "translate-mapunmap",
            Scenario::Replace => "replace",
            Scenario::Unmap => "unmap",
            Scenario::MapUnmap4k => "mapunmap-4k",
            Scenario::MapUnmap2m => "mapunmap-2m",
            Scenario::MapUnmapBatch => "mapunmap-batch",
            Scenario::DmaPause => "dma-pause",
            Scenario::ReplacePopulate => "replace-populate",
            Scenario::Memory => "memory",
            Scenario::NestedTranslate => "nested-translate",
            Scenario::NestedReplace => "nested-replace",
            Scenario::IommuMemory => "iommu-memory",
            Scenario::VirtioIommuMapUnmap => "virtio-iommu-mapunmap",
            Scenario::TranslateDevices => "translate-devices",
            Scenario::FenceThreads => "fence-threads",
        }
    }

    /// This scenario's results in `rs`, in run order.
    pub fn results(self, rs: &[CaseResult]) -> Vec<&CaseResult> {
        rs.iter().filter(|r| r.scenario == self.name()).collect()
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for `--help` and the report.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::TranslateIdle => "translate latency/throughput, 1..N readers, no writer",
            Scenario::Translate256 => {
                "translate, 1 reader, 256 mapped pages (the criterion set-up)"
            }
            Scenario::TranslateReplace => "translate latency/throughput under a replace every 10us",
            Scenario::TranslateMapUnmap => {
                "translate latency/throughput under a 4K map+unmap every 10us"
            }
            Scenario::Replace => "replace publish latency; faults readers see (N readers)",
            Scenario::Unmap => "unmap latency incl. the fence, N busy readers",
            Scenario::MapUnmap4k => "map+unmap throughput and latency, 4 KiB, no readers",
            Scenario::MapUnmap2m => "map+unmap throughput and latency, 2 MiB, no readers",
            Scenario::MapUnmapBatch => {
                "4K map+unmap pairs, unmap fences batched by 32 / 1 / none, 1 DMA reader"
            }
            Scenario::DmaPause => "longest pin/translate/drop pause while 1 GiB domains go away",
            Scenario::ReplacePopulate => "replace + map latency while another IOAS populates 1 GiB",
            Scenario::Memory => "live heap after N replace cycles and map/unmap cycles",
            Scenario::NestedTranslate => {
                "nested translate (IOTLB hit, miss, uncached) vs paging, SMMUv3 and VT-d, 1 reader"
            }
            Scenario::NestedReplace => {
                "readers on nested HWPTs, RID / PASID replaced between two every 10us, vs idle"
            }
            Scenario::IommuMemory => {
                "vm-memory IommuMemory 512B read/write_slice: DeviceIommu vs RwLock<Iotlb> swap/refill"
            }
            Scenario::VirtioIommuMapUnmap => {
                "virtio-iommu MAP+UNMAP pairs, passes of 32: VirtioIommu vs cloud-hypervisor style"
            }
            Scenario::TranslateDevices => {
                "1 reader, one-shot translate round-robin over 1/8/64/1024 devices, idle / replace storm"
            }
            Scenario::FenceThreads => {
                "synchronize latency, 4K map+unmap pairs/s with 1/16/256/1024 registered threads"
            }
        }
    }

    /// The implementations this scenario compares, in report order: every one but those that
    /// cannot take part (unsync-radix has no writer) or would measure exactly what another row
    /// measures (detach + attach differs from viommu only in the switch; the 64-translation
    /// guard only on the read side). The crossbeam-epoch baseline is a read-side reference:
    /// it runs in the translate rows only.
    pub fn kinds(self) -> Vec<Kind> {
        use Kind::*;
        let left_out: &[Kind] = match self {
            Scenario::Translate256 => &[DetachAttach, Iotlb, MutexRadix],
            Scenario::MapUnmapBatch => {
                &[ViommuGuard, DetachAttach, Iotlb, MutexRadix, Epoch, Unsync]
            }
            Scenario::ReplacePopulate => &[
                ViommuGuard,
                DetachAttach,
                RwLockBTree,
                Iotlb,
                MutexRadix,
                Epoch,
                Unsync,
            ],
            Scenario::DmaPause => &[ViommuGuard, DetachAttach, Iotlb, MutexRadix, Epoch],
            Scenario::TranslateIdle | Scenario::TranslateMapUnmap => &[DetachAttach],
            Scenario::TranslateReplace => &[],
            Scenario::Replace => &[Epoch, Unsync],
            Scenario::Unmap => &[DetachAttach, Epoch, Unsync],
            Scenario::MapUnmap4k | Scenario::MapUnmap2m => {
                &[ViommuGuard, DetachAttach, Epoch, Unsync]
            }
            Scenario::Memory => &[ViommuGuard, Epoch, Unsync],
            Scenario::NestedTranslate
            | Scenario::NestedReplace
            | Scenario::IommuMemory
            | Scenario::VirtioIommuMapUnmap
            | Scenario::TranslateDevices
            | Scenario::FenceThreads => &[
                ViommuGuard,
                DetachAttach,
                RwLockBTree,
                Iotlb,
                MutexRadix,
                Epoch,
                Unsync,
            ],
        };
        Kind::ALL
            .into_iter()
            .filter(|k| !left_out.contains(k))
            .collect()
    }

    /// The rows of this scenario: each implementation of [`Scenario::kinds`], and for the
    /// scenarios that compare several ways of driving viommu, one row per way.
    pub fn rows(self) -> Vec<(Kind, Variant)> {
        let mut rows = Vec::new();
        for kind in self.kinds() {
            match (self, kind) {
                (Scenario::MapUnmapBatch, Kind::Viommu) => rows.extend(
                    [
                        Variant::Batch32,
                        Variant::Batch1,
                        Variant::Unbatched,
                        Variant::Batch32Cold,
                    ]
                    .map(|v| (kind, v)),
                ),
                (Scenario::ReplacePopulate, Kind::Viommu) => {
                    rows.extend([Variant::Plain, Variant::Alone].map(|v| (kind, v)))
                }
                (Scenario::NestedReplace, Kind::Viommu) => rows.extend(
                    [
                        Variant::NestRidIdle,
                        Variant::NestRidStorm,
                        Variant::NestPasidIdle,
                        Variant::NestPasidStorm,
                    ]
                    .map(|v| (kind, v)),
                ),
                (Scenario::TranslateDevices, Kind::Viommu) => {
                    rows.extend([Variant::Plain, Variant::ReplaceStorm].map(|v| (kind, v)))
                }
                (Scenario::FenceThreads, Kind::Viommu) => {
                    rows.extend([Variant::Plain, Variant::Pinning].map(|v| (kind, v)))
                }
                _ => rows.push((kind, Variant::Plain)),
            }
        }
        rows
    }
}

/// How a case drives its implementation, where a scenario compares several ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The scenario's one way.
    Plain,
    /// Unmaps with `ioas_unmap_deferred`, waiting on the last completion of every 32.
    Batch32,
    /// The same, waiting on every completion (a batch of 1).
    Batch1,
    /// `Batch32` without the anchor page that keeps the scratch page tables alive.
    Batch32Cold,
    /// Unmaps with `ioas_unmap`: one fence per unmap.
    Unbatched,
    /// Nothing runs beside the measured calls: the reference of a contended row.
    Alone,
    /// `nested-replace` at the RID, no writer.
    NestRidIdle,
    /// `nested-replace` at the RID, a replace every 10 µs.
    NestRidStorm,
    /// `nested-replace` at a PASID, no writer.
    NestPasidIdle,
    /// `nested-replace` at a PASID, a PASID replace every 10 µs.
    NestPasidStorm,
    /// `translate-devices` with a replace every 10 µs on one of the devices.
    ReplaceStorm,
    /// `fence-threads` with 2 of the registered threads pinning and translating in a loop.
    Pinning,
}

impl Variant {
    /// The row's name: the implementation's, with the variant's suffix.
    pub fn label(self, kind: Kind) -> &'static str {
        match (kind, self) {
            (Kind::Viommu, Variant::Batch32) => "viommu-batch32",
            (Kind::Viommu, Variant::Batch1) => "viommu-batch1",
            (Kind::Viommu, Variant::Batch32Cold) => "viommu-batch32-cold",
            (Kind::Viommu, Variant::Unbatched) => "viommu-unbatched",
            (Kind::Viommu, Variant::Alone) => "viommu-alone",
            (Kind::Viommu, Variant::NestRidIdle) => "rid-idle",
            (Kind::Viommu, Variant::NestRidStorm) => "rid-storm",
            (Kind::Viommu, Variant::NestPasidIdle) => "pasid-idle",
            (Kind::Viommu, Variant::NestPasidStorm) => "pasid-storm",
            (Kind::Viommu, Variant::ReplaceStorm) => "viommu-replace-storm",
            (Kind::Viommu, Variant::Pinning) => "viommu-2-pinning",
            _ => kind.name(),
        }
    }

    /// Unmaps batched per fence wait (`None`: a fence per unmap, `ioas_unmap`).
    pub fn batch(self) -> Option<usize> {
        match self {
            Variant::Batch32 | Variant::Batch32Cold => Some(32),
            Variant::Batch1 => Some(1),
            _ => None,
        }
    }
}

/// The writer running beside the readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storm {
    /// No writer.
    None,
    /// One replace (alternating domains) per [`STORM_PERIOD`].
    Replace,
    /// One 4 KiB map + unmap pair per [`STORM_PERIOD`] in the active domain.
    MapUnmap,
}

/// One unit of work of the plan.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// The scenario it reports under.
    pub scenario: Scenario,
    /// The implementation.
    pub kind: Kind,
    /// Reader threads (0 for control-only scenarios).
    pub readers: usize,
    /// How the implementation is driven (`Plain` but for the scenarios that compare ways).
    pub variant: Variant,
}

impl Case {
    /// What the case runs, as a key: equal keys measure the same thing.
    fn key(&self) -> Option<(Storm, Kind, usize)> {
        let storm = match self.scenario {
            Scenario::TranslateIdle => Storm::None,
            Scenario::TranslateReplace | Scenario::Replace => Storm::Replace,
            Scenario::TranslateMapUnmap | Scenario::Unmap => Storm::MapUnmap,
            _ => return None,
        };
        let storm = if self.kind.has_writer() {
            storm
        } else {
            Storm::None
        };
        Some((storm, self.kind, self.readers))
    }
}

/// Memory figures of one implementation.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    /// Replace calls made.
    pub replaces: u64,
    /// Replace calls asked for (fewer were made if the time cap hit first).
    pub replaces_planned: u64,
    /// Seconds the replaces took.
    pub replace_seconds: f64,
    /// Map + unmap pairs made.
    pub map_unmaps: u64,
    /// Live heap bytes before the cycles (after setup and a warm-up).
    pub live_before: u64,
    /// Live heap bytes after the replace cycles (after quiescing).
    pub live_after_replaces: u64,
    /// Live heap bytes after the map/unmap cycles too (after quiescing).
    pub live_after_maps: u64,
    /// Highest live heap bytes during the cycles.
    pub peak: u64,
    /// Translations the concurrent reader made during the cycles.
    pub reader_ops: u64,
    /// Faults it saw.
    pub reader_faults: u64,
}

impl MemoryResult {
    /// Bytes gained over the replace cycles (negative: released).
    pub fn replace_delta(&self) -> i64 {
        self.live_after_replaces as i64 - self.live_before as i64
    }

    /// Bytes gained over all cycles.
    pub fn total_delta(&self) -> i64 {
        self.live_after_maps as i64 - self.live_before as i64
    }
}

/// What the DMA thread of `dma-pause` did besides its timed calls.
#[derive(Clone, Debug, Serialize)]
pub struct DmaThread {
    /// pin + translate + drop iterations in the measured window.
    pub iterations: u64,
    /// Iterations in which one of the three calls took 10 µs or more.
    pub over_10us: u64,
    /// Those of them during which the thread was not preempted (its involuntary context
    /// switch count had not risen since the previous check).
    pub over_10us_unpreempted: u64,
    /// The longest call in nanoseconds, leaving out the calls attributed to preemption.
    pub max_unpreempted_ns: u64,
    /// Heap frees the DMA thread made in the measured window (G13: 0 for viommu).
    pub frees: u64,
    /// Heap allocations it made.
    pub allocs: u64,
    /// Times the kernel preempted it (`nonvoluntary_ctxt_switches`; `None` off Linux).
    pub preempted: Option<u64>,
    /// Median cost of two back-to-back reads of the fast clock, in nanoseconds.
    pub clock_ns: u64,
    /// Which clock: `tsc` or `instant`.
    pub clock: &'static str,
}

/// Everything one case measured.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// Scenario name.
    pub scenario: &'static str,
    /// Implementation name.
    pub baseline: &'static str,
    /// Reader threads.
    pub readers: usize,
    /// The writer that actually ran beside the readers.
    pub storm: Storm,
    /// Measured seconds (wall clock).
    pub seconds: f64,
    /// Translations made by all readers in the measured window.
    pub reader_ops: u64,
    /// Translations per second, in millions, counting only time inside timed blocks (request
    /// generation and result checking excluded), summed over readers.
    pub mops: f64,
    /// The same over wall-clock time, harness work included.
    pub mops_wall: f64,
    /// Translations that faulted (every request is for a mapped IOVA).
    pub faults: u64,
    /// Translations that returned a target of neither domain.
    pub wrong: u64,
    /// Heap allocations per translation made by the reader threads.
    pub allocs_per_op: f64,
    /// Heap frees per translation made by the reader threads (retired memory freed on the
    /// data path; the translate scenarios only).
    pub frees_per_op: f64,
    /// Writer operations (replaces, or map + unmap pairs) in the measured window.
    pub writer_ops: u64,
    /// Writer operations per second.
    pub writer_ops_per_s: f64,
    /// Writer operations that failed.
    pub writer_errors: u64,
    /// The first writer error, if any.
    pub first_writer_error: Option<String>,
    /// Latency distributions by name: `translate_block64` (per translation, timed in blocks
    /// of 64), `translate_single` (one translation timed alone, clock cost included),
    /// `replace`, `map`, `unmap`.
    pub latency: BTreeMap<&'static str, Dist>,
    /// Memory figures (the `memory` scenario).
    pub memory: Option<MemoryResult>,
    /// Facts about the DMA thread (the `dma-pause` scenario).
    pub dma: Option<DmaThread>,
    /// Precise per-translation figures of a `nested-translate` row.
    pub per_op: Option<PerOp>,
    /// Devices the reader serves (`translate-devices`; 0 elsewhere).
    pub devices: usize,
    /// Threads registered with the context (`fence-threads`; 0 elsewhere).
    pub registered_threads: usize,
    /// Remarks (reused measurement, missing writer, capped cycles).
    pub note: Option<String>,
}

/// Per-translation time of a `nested-translate` row, from blocks of 64 timed with the TSC,
/// kept as fractions of a nanosecond (a warm translation takes a few).
#[derive(Clone, Debug, Serialize)]
pub struct PerOp {
    /// Blocks timed.
    pub blocks: u64,
    /// Median nanoseconds per translation.
    pub p50_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// The rows this one is compared with.
    pub compare: Vec<&'static str>,
    /// This row's median over each of theirs, measured in the same run.
    pub ratios: Vec<(&'static str, f64)>,
}

impl CaseResult {
    /// An empty record for `case`.
    pub fn new(case: &Case, storm: Storm) -> CaseResult {
        CaseResult {
            scenario: case.scenario.name(),
            baseline: case.variant.label(case.kind),
            readers: case.readers,
            storm,
            seconds: 0.0,
            reader_ops: 0,
            mops: 0.0,
            mops_wall: 0.0,
            faults: 0,
            wrong: 0,
            allocs_per_op: 0.0,
            frees_per_op: 0.0,
            writer_ops: 0,
            writer_ops_per_s: 0.0,
            writer_errors: 0,
            first_writer_error: None,
            latency: BTreeMap::new(),
            memory: None,
            dma: None,
            per_op: None,
            devices: 0,
            registered_threads: 0,
            note: None,
        }
    }

    /// One progress line.
    fn progress(&self) -> String {
        let mut s = format!("{:<19} {:<16}", self.scenario, self.baseline);
        if self.readers > 0 {
            s += &format!(" readers={}", self.readers);
        }
        if self.devices > 0 {
            s += &format!(" devices={}", self.devices);
        }
        if self.registered_threads > 0 {
            s += &format!(" registered={}", self.registered_threads);
        }
        if let Some(d) = self.latency.get("synchronize") {
            s += &format!("  synchronize p50 {} p99 {}", fmt_ns(d.p50), fmt_ns(d.p99));
        }
        if self.reader_ops > 0 {
            s += &format!(" {:8.1} Mops/s", self.mops);
        }
        if self.scenario == Scenario::IommuMemory.name() && self.storm != Storm::None {
            s += &format!("  {:.0} switches/s", self.writer_ops_per_s);
        }
        if let Some(p) = &self.per_op {
            s += &format!("  p50 {:.1}ns", p.p50_ns);
            for (against, x) in &p.ratios {
                s += &format!("  {x:.2}x {against}");
            }
        }
        if let Some(d) = self.latency.get("translate_single") {
            s += &format!("  p99.9 {}", fmt_ns(d.p999));
        }
        for name in ["replace", "unmap"] {
            if let Some(d) = self.latency.get(name) {
                s += &format!("  {name} p99 {}", fmt_ns(d.p99));
            }
        }
        if self.faults > 0 || self.wrong > 0 {
            s += &format!("  faults={} wrong={}", self.faults, self.wrong);
        }
        if self.writer_errors > 0 {
            s += &format!("  writer errors={}", self.writer_errors);
        }
        if let Some(d) = &self.dma {
            let max = ["pin", "translate", "drop"]
                .iter()
                .filter_map(|n| self.latency.get(n).map(|x| x.max))
                .max()
                .unwrap_or(0);
            s += &format!(
                "  longest call {}  >=10us {}  frees {}",
                fmt_ns(max),
                d.over_10us,
                d.frees
            );
        }
        if self.writer_ops_per_s > 0.0 && self.latency.contains_key("pair") {
            s += &format!("  {:.0} pairs/s", self.writer_ops_per_s);
        }
        if let Some(m) = &self.memory {
            s += &format!(
                "  {} replaces, delta {}",
                m.replaces,
                crate::stats::fmt_bytes_signed(m.total_delta())
            );
        }
        s
    }
}

/// The reader counts: 1, 2, 4, ... up to `max`, and `max` itself.
pub fn reader_counts(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < max)
        .collect();
    v.push(max.max(1));
    v
}

/// Expands the configured scenarios into cases.
pub fn plan(cfg: &Config) -> Vec<Case> {
    let mut cases = Vec::new();
    for &scenario in &cfg.scenarios {
        let readers: Vec<usize> = match scenario {
            Scenario::TranslateIdle | Scenario::TranslateReplace | Scenario::TranslateMapUnmap => {
                reader_counts(cfg.max_threads)
            }
            Scenario::Replace | Scenario::Unmap => vec![cfg.max_threads],
            Scenario::Translate256
            | Scenario::MapUnmapBatch
            | Scenario::DmaPause
            | Scenario::NestedTranslate => vec![1],
            Scenario::NestedReplace => {
                let mut v = vec![1];
                if cfg.max_threads > 1 {
                    v.push(cfg.max_threads);
                }
                v
            }
            // The reader counts (its targets are at 1 and 2), not more.
            Scenario::IommuMemory => [1, 2]
                .into_iter()
                .filter(|&n| n <= cfg.max_threads.max(1))
                .collect(),
            // No DMA thread, then one.
            Scenario::VirtioIommuMapUnmap => vec![0, 1],
            // Devices (one reader), and registered threads: the case's `readers` carries the
            // count, the result keeps it in `devices` / `registered_threads`.
            Scenario::TranslateDevices => devices::COUNTS.to_vec(),
            Scenario::FenceThreads => fence_threads::COUNTS.to_vec(),
            Scenario::MapUnmap4k
            | Scenario::MapUnmap2m
            | Scenario::ReplacePopulate
            | Scenario::Memory => vec![0],
        };
        for &n in &readers {
            for (kind, variant) in scenario.rows() {
                cases.push(Case {
                    scenario,
                    kind,
                    readers: n,
                    variant,
                });
            }
        }
    }
    cases
}

/// Runs every case of the plan, printing a progress line per case on stderr.
pub fn run(cfg: &Config) -> Vec<CaseResult> {
    let cases = plan(cfg);
    let layout = Layout { pages: cfg.pages };
    let mut done: HashMap<(Storm, Kind, usize), CaseResult> = HashMap::new();
    let mut results = Vec::with_capacity(cases.len());
    let width = cases.len().to_string().len();
    let started = Instant::now();
    for (i, case) in cases.iter().enumerate() {
        let several = match case.scenario {
            Scenario::NestedTranslate => Some(nested::run_translate(cfg, case)),
            Scenario::IommuMemory => Some(iommu_memory::run(cfg, case)),
            Scenario::VirtioIommuMapUnmap => Some(virtio_mapunmap::run(cfg, case)),
            _ => None,
        };
        if let Some(rs) = several {
            for r in rs {
                eprintln!(
                    "[{:>width$}/{}] {:>5.1}s {}",
                    i + 1,
                    cases.len(),
                    started.elapsed().as_secs_f64(),
                    r.progress()
                );
                results.push(r);
            }
            continue;
        }
        let key = case.key();
        let reused = key.and_then(|k| done.get(&k)).cloned();
        let result = match reused {
            Some(mut r) => {
                let from = r.scenario;
                r.scenario = case.scenario.name();
                if from != r.scenario {
                    r.note = Some(match r.note {
                        Some(n) => format!("{n}; same run as {from}"),
                        None => format!("same run as {from}"),
                    });
                }
                r
            }
            None => {
                let r = run_case(cfg, &layout, case);
                if let Some(k) = key {
                    done.insert(k, r.clone());
                }
                r
            }
        };
        eprintln!(
            "[{:>width$}/{}] {:>5.1}s {}",
            i + 1,
            cases.len(),
            started.elapsed().as_secs_f64(),
            result.progress()
        );
        results.push(result);
    }
    results
}

fn run_case(cfg: &Config, layout: &Layout, case: &Case) -> CaseResult {
    match case.scenario {
        Scenario::TranslateIdle
        | Scenario::TranslateReplace
        | Scenario::TranslateMapUnmap
        | Scenario::Replace
        | Scenario::Unmap => {
            let (storm, _, _) = case.key().expect("reader scenarios have a key");
            with_translator!(case.kind, layout, |t| readers::run(
                &t, cfg, layout, case, storm
            ))
        }
        Scenario::MapUnmap4k => {
            with_translator!(case.kind, layout, |t| control::run(&t, cfg, case, PAGE))
        }
        Scenario::MapUnmap2m => {
            with_translator!(case.kind, layout, |t| control::run(&t, cfg, case, PAGE_2M))
        }
        Scenario::Memory => {
            with_translator!(case.kind, layout, |t| memory::run(&t, cfg, case))
        }
        Scenario::Translate256 => {
            let small = Layout {
                pages: TRANSLATE_256_PAGES,
            };
            with_translator!(case.kind, &small, |t| readers::run(
                &t,
                cfg,
                &small,
                case,
                Storm::None
            ))
        }
        Scenario::MapUnmapBatch => {
            with_translator!(case.kind, layout, |t| batch::run(&t, cfg, layout, case))
        }
        Scenario::DmaPause => pause::run(cfg, case),
        Scenario::ReplacePopulate => populate::run(cfg, case),
        Scenario::NestedReplace => nested::run_replace(cfg, case),
        Scenario::TranslateDevices => devices::run(cfg, layout, case),
        Scenario::FenceThreads => fence_threads::run(cfg, case),
        Scenario::NestedTranslate | Scenario::IommuMemory | Scenario::VirtioIommuMapUnmap => {
            unreachable!("these scenarios give several results a case")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_count_ladder() {
        assert_eq!(reader_counts(1), vec![1]);
        assert_eq!(reader_counts(2), vec![1, 2]);
        assert_eq!(reader_counts(6), vec![1, 2, 4, 6]);
        assert_eq!(reader_counts(8), vec![1, 2, 4, 8]);
    }

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn variant_rows_have_distinct_labels() {
        for s in Scenario::ALL {
            let labels: Vec<&str> = s.rows().iter().map(|&(k, v)| v.label(k)).collect();
            let mut unique = labels.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), labels.len(), "{}: {labels:?}", s.name());
        }
        let batch: Vec<&str> = Scenario::MapUnmapBatch
            .rows()
            .iter()
            .map(|&(k, v)| v.label(k))
            .collect();
        assert!(batch.contains(&"viommu-batch32") && batch.contains(&"rwlock-btree"));
    }

    #[test]
    fn storms_dedupe() {
        let a = Case {
            scenario: Scenario::TranslateReplace,
            kind: Kind::Viommu,
            readers: 2,
            variant: Variant::Plain,
        };
        let b = Case {
            scenario: Scenario::Replace,
            ..a
        };
        assert_eq!(a.key(), b.key());
        let u = Case {
            kind: Kind::Unsync,
            ..a
        };
        let idle = Case {
            scenario: Scenario::TranslateIdle,
            ..u
        };
        assert_eq!(
            u.key(),
            idle.key(),
            "no writer for the unsynchronized table"
        );
    }
}
