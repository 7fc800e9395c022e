//! PNG plots: time series per scenario, and metrics with their 95% intervals.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{EvalError, Result};
use crate::report::SummaryRow;
use crate::runner::RunResult;

static FONT: Once = Once::new();
const FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

fn ensure_font() {
    FONT.call_once(|| {
        // The font is compiled in; a failure here is a broken build, reported once on stderr.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_err() {
            eprintln!("graphscaler: the embedded DejaVuSans font could not be registered");
        }
    });
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::write(path, e)
}

type Getter = fn(&crate::runner::SeriesPoint) -> f64;

/// Writes `timeseries-<scenario>.png` (replay 0 of every policy) for each scenario and
/// `metrics.png`; returns the paths.
pub fn write_plots(dir: &Path, runs: &[RunResult], summary: &[SummaryRow]) -> Result<Vec<PathBuf>> {
    ensure_font();
    let mut out = vec![];
    let mut scenarios: Vec<&str> = vec![];
    for r in runs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    for s in &scenarios {
        let file = dir.join(format!("timeseries-{}.png", s.replace([':', '/'], "_")));
        let picked: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.scenario == *s && r.replay == 0)
            .collect();
        timeseries(&file, s, &picked)?;
        out.push(file);
    }
    let file = dir.join("metrics.png");
    metrics(&file, summary)?;
    out.push(file);
    Ok(out)
}

fn timeseries(file: &Path, scenario: &str, runs: &[&RunResult]) -> Result<()> {
    let names: Vec<String> = runs.iter().map(|r| r.policy.clone()).collect();
    let pale = ("pale: CPU used".to_string(), RGBColor(190, 190, 190));
    let root = canvas(file, (1180, 1000), &names, &[pale])?;
    let main = root
        .titled(&format!("{scenario}: replay 0"), ("sans-serif", 24))
        .map_err(|e| err(file, e))?;
    let panels = main.split_evenly((4, 1));
    let t_max = runs
        .iter()
        .flat_map(|r| r.series.last().map(|p| p.time_s))
        .fold(1.0, f64::max)
        / 60.0;
    let specs: [(&str, Getter, bool); 4] = [
        (
            "entry p95 latency, ms (log)",
            |p| p.entry_p95_ms.max(1.0),
            true,
        ),
        ("replicas (sum over services)", |p| p.replicas as f64, false),
        ("allocated CPU, cores", |p| p.allocated_cpu_cores, false),
        ("entry requests per second", |p| p.entry_rps, false),
    ];
    for (panel, (label, get, log)) in panels.iter().zip(specs) {
        let y_max = runs
            .iter()
            .flat_map(|r| r.series.iter().map(get))
            .fold(1.0, f64::max)
            * 1.1;
        let mut b = ChartBuilder::on(panel);
        b.margin(8).x_label_area_size(30).y_label_area_size(60);
        let lines = Lines {
            file,
            label,
            runs,
            get,
        };
        if log {
            lines.draw(
                b.build_cartesian_2d(0.0..t_max, (1.0..y_max.max(10.0)).log_scale())
                    .map_err(|e| err(file, e))?,
            )?;
        } else {
            let mut chart = b
                .build_cartesian_2d(0.0..t_max, 0.0..y_max)
                .map_err(|e| err(file, e))?;
            if label.starts_with("allocated") {
                // Each policy's used CPU, thin and pale, under its allocation.
                for (i, r) in runs.iter().enumerate() {
                    let c = COLORS[i % COLORS.len()].mix(0.4);
                    chart
                        .draw_series(LineSeries::new(
                            r.series.iter().map(|p| (p.time_s / 60.0, p.used_cpu_cores)),
                            c,
                        ))
                        .map_err(|e| err(file, e))?;
                }
            }
            lines.draw(chart)?;
        }
    }
    root.present().map_err(|e| err(file, e))?;
    Ok(())
}

/// One panel of a time-series plot: every run's `get` against minutes, in the policies' colours.
struct Lines<'a> {
    file: &'a Path,
    label: &'a str,
    runs: &'a [&'a RunResult],
    get: Getter,
}

impl Lines<'_> {
    fn draw<Y>(
        &self,
        mut chart: ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let (file, get) = (self.file, self.get);
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(self.label)
            .draw()
            .map_err(|e| err(file, e))?;
        for (i, r) in self.runs.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    r.series.iter().map(|p| (p.time_s / 60.0, get(p))),
                    &COLORS[i % COLORS.len()],
                ))
                .map_err(|e| err(file, e))?;
        }
        Ok(())
    }
}

/// A chart on `area` captioned `caption` (text, font size) over [0, x_max] × [0, y_max]
/// (`axes`), its mesh drawn with the axes' descriptions `desc` (x, y).
fn linear_chart<'a, 'b>(
    file: &Path,
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: (&str, u32),
    axes: (f64, f64),
    desc: (&str, &str),
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption.0, ("sans-serif", caption.1))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..axes.0, 0.0..axes.1)
        .map_err(|e| err(file, e))?;
    chart
        .configure_mesh()
        .x_desc(desc.0)
        .y_desc(desc.1)
        .draw()
        .map_err(|e| err(file, e))?;
    Ok(chart)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// A white picture for `file`: a `data` (width, height) area for the plot, returned, and beside it
/// the legend of `names` and `extra` ([`side_legend`]), as wide as its longest name.
fn canvas<'a>(
    file: &'a Path,
    data: (u32, u32),
    names: &[String],
    extra: &[(String, RGBColor)],
) -> Result<Area<'a>> {
    let longest = names
        .iter()
        .chain(extra.iter().map(|e| &e.0))
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let root = BitMapBackend::new(file, (data.0 + 50 + 8 * longest, data.1)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(file, e))?;
    let (main, legend) = root.split_horizontally(data.0);
    side_legend(file, &legend, names, extra)?;
    Ok(main)
}

/// The legend of a plot in its own area beside the data, never on it: a coloured dot and the
/// name of each of `names` (in [`COLORS`] order), then the `extra` rows in their own colours.
fn side_legend(
    file: &Path,
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    names: &[String],
    extra: &[(String, RGBColor)],
) -> Result<()> {
    let rows = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), COLORS[i % COLORS.len()]))
        .chain(extra.iter().cloned());
    for (i, (name, c)) in rows.enumerate() {
        let y = 60 + 24 * i as i32;
        area.draw(&Circle::new((15, y), 6, c.filled()))
            .map_err(|e| err(file, e))?;
        area.draw(&Text::new(name, (28, y - 7), ("sans-serif", 14)))
            .map_err(|e| err(file, e))?;
    }
    Ok(())
}

fn metrics(file: &Path, summary: &[SummaryRow]) -> Result<()> {
    let mut scenarios: Vec<String> = vec![];
    let mut policies: Vec<String> = vec![];
    for r in summary {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
        if !policies.contains(&r.policy) {
            policies.push(r.policy.clone());
        }
    }
    let root = canvas(file, (1180, 900), &policies, &[])?;
    let main = root
        .titled("metrics: mean and 95% CI over replays", ("sans-serif", 24))
        .map_err(|e| err(file, e))?;
    let panels = main.split_evenly((3, 1));
    let names = [
        ("slo_violation_pct", "SLO violation %"),
        ("slack_pct", "CPU slack %"),
        ("caf", "CAF"),
    ];
    let np = policies.len().max(1) as f64;
    for (panel, (metric, label)) in panels.iter().zip(names) {
        let rows: Vec<&SummaryRow> = summary.iter().filter(|r| r.metric == metric).collect();
        let y_max = rows
            .iter()
            .map(|r| r.ci.hi())
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.15;
        let scen = scenarios.clone();
        let mut chart = ChartBuilder::on(panel)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(scenarios.len() as f64 - 0.5), 0.0..y_max)
            .map_err(|e| err(file, e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(scenarios.len().max(2) * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    scen.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(label)
            .draw()
            .map_err(|e| err(file, e))?;
        for (pi, p) in policies.iter().enumerate() {
            let c = COLORS[pi % COLORS.len()];
            let pts: Vec<(f64, f64, f64, f64)> = rows
                .iter()
                .filter(|r| &r.policy == p && r.ci.mean.is_finite())
                .filter_map(|r| {
                    let si = scenarios.iter().position(|s| *s == r.scenario)? as f64;
                    let x = si - 0.35 + 0.7 * (pi as f64 + 0.5) / np;
                    Some((x, r.ci.mean, r.ci.lo().max(0.0), r.ci.hi()))
                })
                .collect();
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, m, lo, hi)| ErrorBar::new_vertical(x, lo, m, hi, c.filled(), 8)),
                )
                .map_err(|e| err(file, e))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, m, _, _)| Circle::new((x, m), 4, c.filled())),
                )
                .map_err(|e| err(file, e))?;
        }
    }
    root.present().map_err(|e| err(file, e))?;
    Ok(())
}

/// A titled line chart of named series (x in minutes), e.g. the load shapes.
pub fn lines(
    file: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    ensure_font();
    let names: Vec<String> = series.iter().map(|s| s.0.clone()).collect();
    let area = canvas(file, (1180, 500), &names, &[])?;
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = linear_chart(
        file,
        &area,
        (title, 22),
        (x_max, y_max),
        ("minutes", y_desc),
    )?;
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| err(file, e))?;
    }
    area.present().map_err(|e| err(file, e))?;
    Ok(())
}

/// A policy's point against the HPA frontier: SLO violation % and CAF, each a mean with its 95%
/// interval.
#[derive(Debug, Clone)]
pub struct PolicyPoint {
    /// The policy.
    pub name: String,
    /// SLO violation %.
    pub slo: crate::stats::MeanCi,
    /// CAF.
    pub caf: crate::stats::MeanCi,
}

/// The HPA frontier of one scenario (every target, the Pareto ones joined) and each policy's
/// point with its intervals, SLO violation % against CAF.
pub fn frontier(
    file: &Path,
    scenario: &str,
    points: &[crate::sweep::FrontierPoint],
    policies: &[PolicyPoint],
) -> Result<()> {
    ensure_font();
    let mine: Vec<&crate::sweep::FrontierPoint> = points
        .iter()
        .filter(|p| p.scenario == scenario && p.slo_violation_pct.is_finite() && p.caf.is_finite())
        .collect();
    let xs = mine
        .iter()
        .map(|p| p.caf + p.caf_hw)
        .chain(policies.iter().map(|p| p.caf.hi()));
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let x_max = xs.fold(1.0f64, |a, b| a.max(finite(b))) * 1.1;
    // The y axis shows the frontier and the policies near it; a policy far above (an
    // under-provisioning baseline) is drawn at the top edge with its value written beside it.
    let hpa_top = mine
        .iter()
        .map(|p| p.slo_violation_pct + p.slo_violation_hw)
        .fold(1.0f64, |a, b| a.max(finite(b)));
    let cap = 4.0 * hpa_top;
    let y_max = policies
        .iter()
        .map(|p| finite(p.slo.hi()))
        .filter(|y| *y <= cap)
        .fold(hpa_top, f64::max)
        * 1.15;
    let grey = RGBColor(110, 110, 110);
    let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
    let hpa = ("HPA targets (Pareto joined)".to_string(), grey);
    let area = canvas(file, (700, 600), &names, &[hpa])?;
    let mut chart = linear_chart(
        file,
        &area,
        (
            &format!("{scenario}: SLO violation % against CAF (HPA targets, policies)"),
            18,
        ),
        (x_max, y_max),
        (
            "CAF (cost over the tuned HPA's, same scenario and seed)",
            "SLO violation % of ticks",
        ),
    )?;
    let mut pareto: Vec<(f64, f64)> = mine
        .iter()
        .filter(|p| p.pareto)
        .map(|p| (p.caf, p.slo_violation_pct))
        .collect();
    pareto.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(pareto, grey.stroke_width(2)))
        .map_err(|e| err(file, e))?;
    for p in &mine {
        chart
            .draw_series(std::iter::once(Circle::new(
                (p.caf, p.slo_violation_pct),
                4,
                grey.filled(),
            )))
            .map_err(|e| err(file, e))?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((p.caf, p.slo_violation_pct))
                    + Text::new(
                        format!("{}%", p.target),
                        (7, -14),
                        ("sans-serif", 12).into_font().color(&grey),
                    ),
            ))
            .map_err(|e| err(file, e))?;
    }
    for (i, p) in policies.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let (x, y) = (finite(p.caf.mean), finite(p.slo.mean));
        if y > y_max {
            let top = y_max * 0.97;
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (x, top),
                    7,
                    c.filled(),
                )))
                .map_err(|e| err(file, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}: {:.1}% (off the chart)", p.name, y),
                    (x, top),
                    ("sans-serif", 12).into_font().color(&c),
                )))
                .map_err(|e| err(file, e))?;
            continue;
        }
        let style = c.stroke_width(2);
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                x,
                finite(p.slo.lo()).max(0.0),
                y,
                finite(p.slo.hi()),
                style,
                8,
            )))
            .map_err(|e| err(file, e))?;
        chart
            .draw_series(std::iter::once(ErrorBar::new_horizontal(
                y,
                finite(p.caf.lo()),
                x,
                finite(p.caf.hi()),
                style,
                8,
            )))
            .map_err(|e| err(file, e))?;
        chart
            .draw_series(std::iter::once(Circle::new((x, y), 6, c.filled())))
            .map_err(|e| err(file, e))?;
    }
    area.present().map_err(|e| err(file, e))?;
    Ok(())
}
