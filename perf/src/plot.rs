//! SVG plots: latency percentile curves and throughput against reader count.
//!
//! plotters' SVG backend writes text as `<text>` elements and sizes it with a built-in
//! estimate, so no system font is needed to draw these.

use crate::baselines::Kind;
use crate::scenarios::{CaseResult, Scenario};
use crate::stats::{fmt_ns, Dist};
use plotters::prelude::*;
use std::error::Error;
use std::path::{Path, PathBuf};

type PlotResult = Result<(), Box<dyn Error>>;

/// The x position of a percentile on a "nines" axis: 0 = 0%, 1 = 90%, 2 = 99%, 3 = 99.9%.
fn nines(pct: f64) -> f64 {
    let rest = 1.0 - pct / 100.0;
    if rest <= 1e-6 {
        6.0
    } else {
        -rest.log10()
    }
}

fn nines_label(x: &f64) -> String {
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2).max(1) as usize)),
    }
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x17, 0xbe, 0xcf),
        RGBColor(0x9e, 0x4a, 0xd2),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0x55, 0x55, 0x55),
    ];
    C[i % C.len()]
}

fn kind_index(name: &str) -> usize {
    Kind::ALL.iter().position(|k| k.name() == name).unwrap_or(0)
}

/// Draws the legend of `chart` (upper left) and writes `root`'s file.
fn legend_and_write<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    root: &DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
) -> PlotResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws percentile curves of `series` (name, distribution) into `path`.
fn percentile_plot(path: &Path, title: &str, series: &[(&str, &Dist)]) -> PlotResult {
    let ymin = series
        .iter()
        .flat_map(|(_, d)| d.curve.iter().map(|p| p.1))
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let ymax = series
        .iter()
        .map(|(_, d)| d.max)
        .max()
        .unwrap_or(10)
        .max(10) as f64;
    let xmax = series
        .iter()
        .flat_map(|(_, d)| d.curve.iter().map(|p| nines(p.0)))
        .fold(3.0f64, f64::max)
        .ceil();
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (ymin * 0.8..ymax * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("nanoseconds")
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&|y| fmt_ns(y.round() as u64))
        .draw()?;
    let distinct = series
        .iter()
        .any(|(n, _)| !Kind::ALL.iter().any(|k| k.name() == *n));
    for (i, (name, d)) in series.iter().enumerate() {
        // One colour an implementation; series of variants or calls get one each in turn.
        let c = color(if distinct { i } else { kind_index(name) });
        let pts: Vec<(f64, f64)> = d
            .curve
            .iter()
            .map(|&(p, v)| (nines(p), v.max(1) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend_and_write(&mut chart, &root)
}

/// Draws throughput against reader count for `scenario` into `path`.
fn throughput_plot(path: &Path, rs: &[CaseResult], scenario: Scenario) -> PlotResult {
    let rows = scenario.results(rs);
    let xmax = rows.iter().map(|r| r.readers).max().unwrap_or(1).max(2) as f64;
    let ymax = rows.iter().map(|r| r.mops).fold(1.0f64, f64::max) * 1.15;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: translate throughput vs reader threads",
                scenario.name()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..xmax + 0.5, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("reader threads")
        .y_desc("million translations / s")
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for kind in Kind::ALL {
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.baseline == kind.name())
            .map(|r| (r.readers as f64, r.mops))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = color(kind_index(kind.name()));
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
    }
    legend_and_write(&mut chart, &root)
}

/// Writes every plot the results allow into `dir`; returns the files written.
pub fn write_all(dir: &Path, rs: &[CaseResult]) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut files = Vec::new();
    for scenario in [
        Scenario::TranslateIdle,
        Scenario::TranslateReplace,
        Scenario::TranslateMapUnmap,
    ] {
        let rows = scenario.results(rs);
        let Some(max) = rows.iter().map(|r| r.readers).max() else {
            continue;
        };
        for (hist, file, what) in [
            (
                "translate_block64",
                "latency",
                "per translation, timed in blocks of 64",
            ),
            (
                "translate_single",
                "latency-single",
                "one translation timed alone",
            ),
        ] {
            let series: Vec<(&str, &Dist)> = rows
                .iter()
                .filter(|r| r.readers == max)
                .filter_map(|r| r.latency.get(hist).map(|d| (r.baseline, d)))
                .collect();
            let p = dir.join(format!("{file}-{}.svg", scenario.name()));
            percentile_plot(
                &p,
                &format!("{}: {what}, {max} reader(s)", scenario.name()),
                &series,
            )?;
            files.push(p);
        }
        let p = dir.join(format!("throughput-{}.svg", scenario.name()));
        throughput_plot(&p, rs, scenario)?;
        files.push(p);
    }
    for (scenario, what) in [(Scenario::Replace, "replace"), (Scenario::Unmap, "unmap")] {
        let series: Vec<(&str, &Dist)> = rs
            .iter()
            .filter(|r| r.scenario == scenario.name())
            .filter_map(|r| r.latency.get(what).map(|d| (r.baseline, d)))
            .collect();
        if series.is_empty() {
            continue;
        }
        let p = dir.join(format!("latency-{what}.svg"));
        percentile_plot(
            &p,
            &format!("{what} call latency with busy readers"),
            &series,
        )?;
        files.push(p);
    }
    for (scenario, hists, what) in [
        (
            Scenario::DmaPause,
            &["pin", "translate", "drop"][..],
            "each DMA-thread call timed alone while 1 GiB domains go away",
        ),
        (
            Scenario::ReplacePopulate,
            &["replace"][..],
            "replace of an unrelated group while 1 GiB is populated",
        ),
        (
            Scenario::MapUnmapBatch,
            &["pair"][..],
            "time per 4K map+unmap pair, fences included, a reader beside",
        ),
    ] {
        let named: Vec<(String, &Dist)> = rs
            .iter()
            .filter(|r| r.scenario == scenario.name())
            .flat_map(|r| {
                hists.iter().filter_map(move |h| {
                    let label = if hists.len() > 1 {
                        format!("{} {h}", r.baseline)
                    } else {
                        r.baseline.to_string()
                    };
                    r.latency.get(h).map(|d| (label, d))
                })
            })
            .collect();
        if named.is_empty() {
            continue;
        }
        let series: Vec<(&str, &Dist)> = named.iter().map(|(l, d)| (l.as_str(), *d)).collect();
        let p = dir.join(format!("latency-{}.svg", scenario.name()));
        percentile_plot(&p, &format!("{}: {what}", scenario.name()), &series)?;
        files.push(p);
    }
    Ok(files)
}
