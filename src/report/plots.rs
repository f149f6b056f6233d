//! Scaling plots with plotters, each drawn once per format (PNG and SVG) from the same code.
//! Text uses DejaVu Sans embedded in the binary, so no system fonts are needed.
//!
//! Owns the figures: which can be drawn from a [`ReportData`] (and why not), and how each is
//! drawn. Numbers shown are the fit's: bootstrap bands and shaded intervals use
//! [`crate::fit::ci`], the percentile `fits.json` reports.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::ReportData;
use crate::fit::{Bootstrap, FitReport, Point};
use crate::model::FamilyKind;
use crate::record::BaselineRow;
use plotters::coord::types::RangedCoordf64;

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 620;
const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn ext(&self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }

    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Format>> {
        s.split(',')
            .map(|f| match f.trim().to_ascii_lowercase().as_str() {
                "png" => Ok(Format::Png),
                "svg" => Ok(Format::Svg),
                other => Err(crate::error::user(format!(
                    "--format: unknown format {other:?}; use png, svg or png,svg"
                ))),
            })
            .collect()
    }
}

/// The figures, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fig {
    LossVsCompute,
    Isoflop,
    OptimalAllocation,
    LossVsN,
    LossVsD,
    Residuals,
    Bootstrap,
    Curves,
    Backtest,
    Families,
    Positions,
}

impl Fig {
    pub const ALL: [Fig; 11] = [
        Fig::LossVsCompute,
        Fig::Isoflop,
        Fig::OptimalAllocation,
        Fig::LossVsN,
        Fig::LossVsD,
        Fig::Residuals,
        Fig::Bootstrap,
        Fig::Curves,
        Fig::Backtest,
        Fig::Families,
        Fig::Positions,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fig::LossVsCompute => "loss_vs_compute",
            Fig::Isoflop => "isoflop",
            Fig::OptimalAllocation => "optimal_allocation",
            Fig::LossVsN => "loss_vs_n",
            Fig::LossVsD => "loss_vs_d",
            Fig::Residuals => "residuals",
            Fig::Bootstrap => "bootstrap",
            Fig::Curves => "training_curves",
            Fig::Backtest => "backtest",
            Fig::Families => "families",
            Fig::Positions => "loss_by_position",
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Fig::LossVsCompute => "Loss vs compute",
            Fig::Isoflop => "IsoFLOP profiles",
            Fig::OptimalAllocation => "Compute-optimal model size and data",
            Fig::LossVsN => "Loss vs parameters, per data size",
            Fig::LossVsD => "Loss vs tokens, per model size",
            Fig::Residuals => "Predicted vs observed loss",
            Fig::Bootstrap => "Bootstrap distributions",
            Fig::Curves => "Training curves",
            Fig::Backtest => "Backtests: prediction error vs extrapolation distance",
            Fig::Families => "Model families: loss vs parameters and vs compute",
            Fig::Positions => "Loss by position in the context (best run of each family)",
        }
    }

    /// Why this figure cannot be drawn from the data, if it cannot.
    pub fn skip_reason(&self, d: &ReportData) -> Option<String> {
        let no_fit = || {
            d.fit.is_none().then(|| {
                format!(
                    "no scaling-law fit ({})",
                    d.fit_error.as_deref().unwrap_or("no fit")
                )
            })
        };
        match self {
            Fig::LossVsCompute | Fig::LossVsN | Fig::LossVsD => {
                if d.points.is_empty() {
                    Some("no finished runs with a finite loss".into())
                } else {
                    None
                }
            }
            Fig::Isoflop => {
                let Some(f) = d.fit.as_ref() else {
                    return no_fit();
                };
                if f.approach2.budgets.iter().any(|b| b.parabola.is_some()) {
                    None
                } else {
                    Some("no IsoFLOP budget with at least 3 model sizes".into())
                }
            }
            Fig::OptimalAllocation | Fig::Residuals => no_fit(),
            Fig::Bootstrap => no_fit().or_else(|| {
                d.fit
                    .as_ref()
                    .unwrap()
                    .bootstrap
                    .is_none()
                    .then(|| "bootstrap disabled (--bootstrap 0)".into())
            }),
            Fig::Backtest => {
                no_fit().or_else(|| {
                    d.fit.as_ref().unwrap().backtest.is_none().then(|| {
                        "no backtests (fewer than 3 compute budgets, or --no-backtest)".into()
                    })
                })
            }
            Fig::Curves => d
                .curves
                .is_empty()
                .then(|| "no training curves (table input, or no finished runs)".into()),
            Fig::Families => d
                .families
                .is_none()
                .then(|| "one model family (the comparison needs two or more)".into()),
            Fig::Positions => best_by_position(d).is_empty().then(|| {
                "no per-position eval losses (table input, or runs from before that column)".into()
            }),
        }
    }
}

/// Render one figure in every format; returns the written files.
pub fn render(
    fig: Fig,
    d: &ReportData,
    dir: &Path,
    formats: &[Format],
) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    crate::fsio::create_dir_all(dir)?;
    let mut out = Vec::new();
    for f in formats {
        let path = dir.join(format!("{}.{}", fig.name(), f.ext()));
        match f {
            Format::Png => {
                let root = BitMapBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
                draw(fig, d, &root)?;
                root.present().map_err(pe)?;
            }
            Format::Svg => {
                let root = SVGBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
                draw(fig, d, &root)?;
                root.present().map_err(pe)?;
            }
        }
        out.push(path);
    }
    Ok(out)
}

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot error: {e:?}")
}

fn log_range(vals: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = min_max(vals.filter(|v| v.is_finite() && *v > 0.0));
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    let (lo, hi) = if hi / lo < 1.5 {
        (lo / 1.5, hi * 1.5)
    } else {
        (lo, hi)
    };
    lo / 1.25..hi * 1.25
}

fn lin_range(vals: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = min_max(vals.filter(|v| v.is_finite()));
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3 * hi.abs().max(1e-9));
    lo - pad..hi + pad
}

fn logspace(r: &Range<f64>, n: usize) -> Vec<f64> {
    let (a, b) = (r.start.ln(), r.end.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

fn viridis(v: f64, lo: f64, hi: f64) -> RGBColor {
    let t = if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    };
    // Stop before the pale yellow end so points stay visible on white.
    ViridisRGB.get_color((0.9 * t) as f32)
}

fn sci(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let e = v.abs().log10().floor() as i32;
    if (-2..=3).contains(&e) {
        // Three significant digits (6512, 651, 65.1, 0.0651), trailing zeros dropped.
        let decimals = (2 - e).max(0) as usize;
        return trim_zeros(format!("{v:.decimals$}"));
    }
    let (mut m, mut e) = (v / 10f64.powi(e), e);
    if (m.abs() * 10.0).round() >= 100.0 {
        // 9.96e4 rounds to "10.0": say 1e5.
        (m, e) = (m / 10.0, e + 1);
    }
    format!("{}e{e}", trim_zeros(format!("{m:.1}")))
}

/// "2.50" → "2.5", "2.0" → "2", "650" → "650" (only a fraction's zeros go).
fn trim_zeros(s: String) -> String {
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    }
}

fn caption<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: Fig,
) -> anyhow::Result<DrawingArea<DB, Shift>> {
    root.fill(&WHITE).map_err(pe)?;
    root.titled(fig.title(), (FONT, 22)).map_err(pe)
}

/// A colour-scale legend for log10 of a quantity, drawn at the right edge.
fn color_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    label: &str,
    lo: f64,
    hi: f64,
) -> anyhow::Result<()> {
    let (w, _) = area.dim_in_pixel();
    let x0 = w as i32 - 150;
    let steps = 6;
    for i in 0..steps {
        let v = lo + (hi - lo) * i as f64 / (steps - 1) as f64;
        let y = 60 + i * 18;
        area.draw(&Circle::new((x0, y), 5, viridis(v, lo, hi).filled()))
            .map_err(pe)?;
        area.draw(&Text::new(sci(10f64.powf(v)), (x0 + 10, y - 7), (FONT, 13)))
            .map_err(pe)?;
    }
    area.draw(&Text::new(label.to_string(), (x0 - 6, 36), (FONT, 14)))
        .map_err(pe)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    fig: Fig,
    d: &ReportData,
    root: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let area = caption(root, fig)?;
    match fig {
        Fig::LossVsCompute => loss_vs_compute(d, &area),
        Fig::Isoflop => isoflop(d, &area),
        Fig::OptimalAllocation => optimal_allocation(d, &area),
        Fig::LossVsN => loss_vs_var(d, &area, true),
        Fig::LossVsD => loss_vs_var(d, &area, false),
        Fig::Residuals => residuals(d, &area),
        Fig::Bootstrap => bootstrap(d, &area),
        Fig::Curves => curves(d, &area),
        Fig::Backtest => backtest(d, &area),
        Fig::Families => families(d, &area),
        Fig::Positions => positions(d, &area),
    }
}

/// A label on a log axis: only at mantissas 1, 2, 3 and 5, so the ticks near the top of a
/// decade (6e5, 7e5, 8e5, 9e5) do not run into each other.
fn sci_log(v: f64) -> String {
    let m = v.abs() / 10f64.powi(v.abs().log10().floor() as i32);
    if [1.0, 2.0, 3.0, 5.0, 10.0]
        .iter()
        .any(|k| (m - k).abs() < 0.02 * k)
    {
        sci(v)
    } else {
        String::new()
    }
}

macro_rules! chart {
    ($area:expr, $x:expr, $y:expr, $xdesc:expr, $ydesc:expr) => {
        chart!($area, $x, $y, $xdesc, $ydesc, sci_log)
    };
    ($area:expr, $x:expr, $y:expr, $xdesc:expr, $ydesc:expr, $xfmt:expr) => {{
        let mut c = ChartBuilder::on($area)
            .margin(12)
            .margin_right(170)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d($x, $y)
            .map_err(pe)?;
        c.configure_mesh()
            .x_desc($xdesc)
            .y_desc($ydesc)
            .x_label_formatter(&|v| $xfmt(*v))
            .y_label_formatter(&|v| sci(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(pe)?;
        c
    }};
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    c: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> anyhow::Result<()> {
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(pe)
}

/// A chart with a log x axis and a linear y axis.
type LogLin<'a, DB> = ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;
/// A chart with both axes logarithmic.
type LogLog<'a, DB> = ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// The Approach-3 compute-optimal frontier (C, loss at the optimal N and D) across `xr`.
fn frontier(f: Option<&FitReport>, xr: &Range<f64>) -> Vec<(f64, f64)> {
    let Some(f) = f else {
        return Vec::new();
    };
    let p = f.approach3.params;
    logspace(xr, 80)
        .into_iter()
        .map(|c| {
            let (n, dd) = p.optimal(c);
            (c, p.predict(n, dd))
        })
        .collect()
}

fn loss_vs_compute<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let pts = &d.points;
    let mut cs: Vec<f64> = pts.iter().map(|p| p.c()).collect();
    if let Some(f) = &d.fit {
        cs.extend(f.compute_optimal.targets.iter().map(|t| t.flops));
    }
    let xr = log_range(cs.into_iter());
    let frontier = frontier(d.fit.as_ref(), &xr);
    let mut losses: Vec<f64> = pts.iter().map(|p| p.loss).collect();
    losses.extend(frontier.iter().map(|f| f.1));
    losses.extend(d.floor.map(|f| f.nats_per_token));
    // Losses rarely span a decade: a linear axis keeps readable tick labels.
    let yr = lin_range(losses.into_iter());
    let mut c = chart!(
        area,
        xr.clone().log_scale(),
        yr.clone(),
        "compute C = 6ND (FLOPs)",
        "loss (nats/token)"
    );
    let (lo, hi) = n_log_range(d);
    c.draw_series(
        pts.iter()
            .map(|p| Circle::new((p.c(), p.loss), 5, viridis(p.n.log10(), lo, hi).filled())),
    )
    .map_err(pe)?
    .label("runs (colour = N)")
    .legend(|(x, y)| Circle::new((x + 10, y), 5, viridis(0.5, 0.0, 1.0).filled()));
    if !frontier.is_empty() {
        c.draw_series(LineSeries::new(frontier, BLACK.stroke_width(2)))
            .map_err(pe)?
            .label("Approach 3 compute-optimal frontier")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    }
    if let Some(f) = d.floor {
        draw_floor(&mut c, f.nats_per_token, &xr)?;
    }
    if let Some(a1) = d.fit.as_ref().and_then(|f| f.approach1.as_ref()) {
        draw_envelope(&mut c, a1, &yr)?;
    }
    legend(&mut c)?;
    color_note(area, "N (params)", lo, hi)
}

/// The exact loss floor of the eval set, dashed across the plot.
fn draw_floor<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLin<'a, DB>,
    y: f64,
    xr: &Range<f64>,
) -> anyhow::Result<()> {
    c.draw_series(DashedLineSeries::new(
        vec![(xr.start, y), (xr.end, y)],
        8,
        6,
        BLACK.mix(0.6).stroke_width(1),
    ))
    .map_err(pe)?
    .label(format!("exact loss floor of the eval set ({y:.3})"))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
    Ok(())
}

/// Approach 1's envelope of the training curves (C, loss), where it is on the plot.
fn draw_envelope<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLin<'a, DB>,
    a1: &crate::fit::isoflop::Approach1,
    yr: &Range<f64>,
) -> anyhow::Result<()> {
    let env: Vec<(f64, f64)> = a1
        .envelope
        .iter()
        .map(|e| (e[0], e[2]))
        .filter(|e| yr.contains(&e.1))
        .collect();
    c.draw_series(
        env.iter()
            .map(|&(x, y)| Cross::new((x, y), 4, RED.stroke_width(2))),
    )
    .map_err(pe)?
    .label("Approach 1 envelope (curves)")
    .legend(|(x, y)| Cross::new((x + 10, y), 4, RED.stroke_width(2)));
    Ok(())
}

/// (min, max) of some values.
fn min_max(v: impl IntoIterator<Item = f64>) -> (f64, f64) {
    v.into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

fn n_log_range(d: &ReportData) -> (f64, f64) {
    min_max(d.points.iter().map(|p| p.n.log10()))
}

fn isoflop<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let f = d.fit.as_ref().unwrap();
    let budgets: Vec<_> = f
        .approach2
        .budgets
        .iter()
        .filter(|b| b.parabola.is_some())
        .collect();
    let (_, groups) = crate::fit::isoflop::group_budgets(&d.points);
    let xr = log_range(budgets.iter().flat_map(|b| [b.n_min, b.n_max]));
    let member = |b: f64| {
        groups
            .iter()
            .find(|g| (g.0 - b).abs() <= 1e-6 * b)
            .map(|g| g.1.clone())
            .unwrap_or_default()
    };
    let ys: Vec<f64> = budgets
        .iter()
        .flat_map(|b| member(b.budget).into_iter().map(|i| d.points[i].loss))
        .collect();
    let yr = lin_range(ys.into_iter());
    let mut c = chart!(
        area,
        xr.clone().log_scale(),
        yr.clone(),
        "parameters N",
        "loss (nats/token)"
    );
    let (lo, hi) = (0.0, (budgets.len().max(2) - 1) as f64);
    for (k, b) in budgets.iter().enumerate() {
        let col = viridis(k as f64, lo, hi);
        let pts: Vec<(f64, f64)> = member(b.budget)
            .iter()
            .map(|&i| (d.points[i].n, d.points[i].loss))
            .collect();
        draw_budget(&mut c, b, &pts, col, (&xr, &yr))?;
    }
    c.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(pe)?
        .label("parabola minimum")
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, BLACK.filled()));
    if budgets.iter().any(|b| b.possibly_biased()) {
        c.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(pe)?
            .label("hollow, dashed: possibly biased")
            .legend(|(x, y)| EmptyElement::at((x + 10, y)) + hollow_triangle());
    }
    legend(&mut c)
}

/// One IsoFLOP budget: its points (N, loss), its parabola and, when used, its minimum.
fn draw_budget<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLin<'a, DB>,
    b: &crate::fit::isoflop::BudgetFit,
    pts: &[(f64, f64)],
    col: RGBColor,
    (xr, yr): (&Range<f64>, &Range<f64>),
) -> anyhow::Result<()> {
    c.draw_series(pts.iter().map(|&p| Circle::new(p, 5, col.filled())))
        .map_err(pe)?
        .label(format!(
            "C = {}{}",
            sci(b.budget),
            if b.excluded.is_some() {
                " (excluded)"
            } else {
                ""
            }
        ))
        .legend(move |(x, y)| Circle::new((x + 10, y), 5, col.filled()));
    let p = b.parabola.unwrap();
    let line: Vec<(f64, f64)> = logspace(&(b.n_min / 1.3..b.n_max * 1.3), 60)
        .into_iter()
        .map(|n| (n, p[0] * n.ln().powi(2) + p[1] * n.ln() + p[2]))
        .filter(|(_, y)| yr.contains(y))
        .collect();
    let flagged = b.possibly_biased();
    let style = if b.excluded.is_some() {
        col.mix(0.4).stroke_width(1)
    } else {
        col.stroke_width(2)
    };
    if flagged {
        c.draw_series(DashedLineSeries::new(line, 8, 5, style))
            .map_err(pe)?;
    } else {
        c.draw_series(LineSeries::new(line, style)).map_err(pe)?;
    }
    if let (Some(n), Some(l)) = (b.n_opt, b.loss_at_opt) {
        if xr.contains(&n) && yr.contains(&l) && (b.excluded.is_none() || flagged) {
            if flagged {
                c.draw_series(std::iter::once(
                    EmptyElement::at((n, l)) + hollow_triangle(),
                ))
                .map_err(pe)?;
            } else {
                c.draw_series(std::iter::once(TriangleMarker::new(
                    (n, l),
                    8,
                    BLACK.filled(),
                )))
                .map_err(pe)?;
            }
        }
    }
    Ok(())
}

/// The outline of a triangle marker (pixel offsets), for a possibly biased vertex.
fn hollow_triangle() -> PathElement<(i32, i32)> {
    PathElement::new(
        vec![(0, -8), (7, 5), (-7, 5), (0, -8)],
        BLACK.stroke_width(2),
    )
}

/// The bootstrap band of N_opt and D_opt at one budget: (C, [N lo, hi], [D lo, hi]).
type Band = (f64, [f64; 2], [f64; 2]);

/// The bands at each budget of `grid`: the intervals `fits.json` reports for a target
/// budget ([`crate::fit::optimal_ci`]), so the band drawn is the interval reported.
fn optimal_bands(b: &Bootstrap, grid: &[f64]) -> Vec<Band> {
    let samples = b.params();
    grid.iter()
        .map(|&c| {
            let ci = crate::fit::optimal_ci(&samples, c);
            (c, ci.n, ci.d)
        })
        .collect()
}

/// The y range of the allocation plot: the optimal N and D, Approach 2's optima and the
/// bands, the bands' extreme tails clipped.
fn allocation_y_range(
    f: &FitReport,
    opt: &[(f64, f64, f64)],
    bands: Option<&[Band]>,
) -> Range<f64> {
    let mut ys: Vec<f64> = opt.iter().flat_map(|o| [o.1, o.2]).collect();
    for b in f.approach2.budgets.iter().filter(|b| b.excluded.is_none()) {
        ys.extend([b.n_opt.unwrap(), b.d_opt.unwrap()]);
    }
    if let Some(bs) = bands {
        // Keep the axis on the central band, clipping extreme bootstrap tails.
        // With no finite optimum (a degenerate fit) there is no centre to clip to.
        let (lo, hi) = min_max(ys.iter().copied().filter(|v| v.is_finite() && *v > 0.0));
        if lo <= hi {
            ys.extend(
                bs.iter()
                    .flat_map(|b| [b.1[0], b.1[1], b.2[0], b.2[1]])
                    .map(|v| v.clamp(lo / 100.0, hi * 100.0)),
            );
        }
    }
    log_range(ys.into_iter())
}

fn optimal_allocation<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let f = d.fit.as_ref().unwrap();
    let p = f.approach3.params;
    let mut cs: Vec<f64> = d.points.iter().map(|q| q.c()).collect();
    cs.extend(f.compute_optimal.targets.iter().map(|t| t.flops));
    let xr = log_range(cs.into_iter());
    let grid = logspace(&xr, 60);
    let opt: Vec<(f64, f64, f64)> = grid
        .iter()
        .map(|&c| {
            let (n, dd) = p.optimal(c);
            (c, n, dd)
        })
        .collect();
    let bands = f.bootstrap.as_ref().map(|b| optimal_bands(b, &grid));
    let yr = allocation_y_range(f, &opt, bands.as_deref());
    let mut c = chart!(
        area,
        xr.clone().log_scale(),
        yr.clone().log_scale(),
        "compute C (FLOPs)",
        "N_opt (parameters), D_opt (tokens)"
    );
    if let Some(bs) = &bands {
        draw_bands(&mut c, bs, &yr)?;
    }
    c.draw_series(LineSeries::new(
        opt.iter().map(|o| (o.0, o.1)),
        BLUE.stroke_width(2),
    ))
    .map_err(pe)?
    .label(format!("N_opt (Approach 3) ~ C^{:.3}", f.compute_optimal.a))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    c.draw_series(LineSeries::new(
        opt.iter().map(|o| (o.0, o.2)),
        RED.stroke_width(2),
    ))
    .map_err(pe)?
    .label(format!("D_opt (Approach 3) ~ C^{:.3}", f.compute_optimal.b))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    draw_allocation_markers(&mut c, f, &yr)?;
    legend(&mut c)
}

/// The N (blue) and D (red) bands, shaded, clipped to the y range.
fn draw_bands<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLog<'a, DB>,
    bands: &[Band],
    yr: &Range<f64>,
) -> anyhow::Result<()> {
    let clip = |v: f64| v.clamp(yr.start, yr.end);
    for (k, col) in [(0usize, BLUE), (1, RED)] {
        let band = |b: &Band| if k == 0 { b.1 } else { b.2 };
        let mut poly: Vec<(f64, f64)> = bands.iter().map(|b| (b.0, clip(band(b)[0]))).collect();
        poly.extend(bands.iter().rev().map(|b| (b.0, clip(band(b)[1]))));
        c.draw_series(std::iter::once(Polygon::new(poly, col.mix(0.15).filled())))
            .map_err(pe)?;
    }
    Ok(())
}

/// Approach 2's optima (triangles), Approach 1's envelope N (crosses) and the target
/// budgets (circles) on the allocation plot.
fn draw_allocation_markers<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLog<'a, DB>,
    f: &FitReport,
    yr: &Range<f64>,
) -> anyhow::Result<()> {
    let clip = |v: f64| v.clamp(yr.start, yr.end);
    let used: Vec<_> = f
        .approach2
        .budgets
        .iter()
        .filter(|b| b.excluded.is_none())
        .collect();
    if !used.is_empty() {
        c.draw_series(
            used.iter()
                .map(|b| TriangleMarker::new((b.budget, clip(b.n_opt.unwrap())), 7, BLUE.filled())),
        )
        .map_err(pe)?
        .label("Approach 2 (IsoFLOP) N_opt, D_opt")
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, BLACK.filled()));
        c.draw_series(
            used.iter()
                .map(|b| TriangleMarker::new((b.budget, clip(b.d_opt.unwrap())), 7, RED.filled())),
        )
        .map_err(pe)?;
    }
    if let Some(a1) = &f.approach1 {
        c.draw_series(
            a1.envelope
                .iter()
                .filter(|e| yr.contains(&e[1]))
                .map(|e| Cross::new((e[0], e[1]), 4, BLUE.mix(0.6))),
        )
        .map_err(pe)?
        .label("Approach 1 envelope N")
        .legend(|(x, y)| Cross::new((x + 10, y), 4, BLUE.mix(0.6)));
    }
    if !f.compute_optimal.targets.is_empty() {
        c.draw_series(f.compute_optimal.targets.iter().flat_map(|t| {
            [
                Circle::new((t.flops, clip(t.n_opt)), 6, BLACK.stroke_width(2)),
                Circle::new((t.flops, clip(t.d_opt)), 6, BLACK.stroke_width(2)),
            ]
        }))
        .map_err(pe)?
        .label("target budgets (extrapolated)")
        .legend(|(x, y)| Circle::new((x + 10, y), 6, BLACK.stroke_width(2)));
    }
    Ok(())
}

/// Group values into at most `k` representative levels (quantiles of the distinct values).
fn levels(vals: &[f64], k: usize) -> Vec<f64> {
    let mut v: Vec<f64> = vals.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a / *b - 1.0).abs() < 0.02);
    if v.len() <= k {
        return v;
    }
    (0..k).map(|i| v[i * (v.len() - 1) / (k - 1)]).collect()
}

/// The n-gram baselines a loss-vs-D plot shows: those within 1.5x of the worst run's loss
/// (none on a loss-vs-N plot).
fn baselines_shown(d: &ReportData, by_n: bool) -> Vec<&BaselineRow> {
    if by_n {
        return Vec::new();
    }
    let worst = d.points.iter().map(|p| p.loss).fold(0.0, f64::max);
    d.baselines
        .iter()
        .filter(|b| b.eval_loss <= 1.5 * worst)
        .collect()
}

fn loss_vs_var<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
    by_n: bool,
) -> anyhow::Result<()> {
    let pts = &d.points;
    let x = |p: &Point| if by_n { p.n } else { p.d };
    let other = |p: &Point| if by_n { p.d } else { p.n };
    let base = baselines_shown(d, by_n);
    let xr = log_range(
        pts.iter()
            .map(x)
            .chain(base.iter().map(|b| b.train_tokens as f64)),
    );
    let yr = lin_range(
        pts.iter()
            .map(|p| p.loss)
            .chain(base.iter().map(|b| b.eval_loss)),
    );
    let (xdesc, odesc) = if by_n {
        ("parameters N", "D (tokens)")
    } else {
        ("training tokens D", "N (params)")
    };
    let mut c = chart!(
        area,
        xr.clone().log_scale(),
        yr.clone(),
        xdesc,
        "loss (nats/token)"
    );
    let (lo, hi) = min_max(pts.iter().map(|p| other(p).log10()));
    c.draw_series(pts.iter().map(|p| {
        Circle::new(
            (x(p), p.loss),
            5,
            viridis(other(p).log10(), lo, hi).filled(),
        )
    }))
    .map_err(pe)?
    .label(if by_n {
        "runs (colour = D)"
    } else {
        "runs (colour = N)"
    })
    .legend(|(x, y)| Circle::new((x + 10, y), 5, viridis(0.5, 0.0, 1.0).filled()));
    if let Some(f) = &d.fit {
        let levels = levels(&pts.iter().map(other).collect::<Vec<_>>(), 6);
        draw_law_at_levels(&mut c, f, &levels, by_n, (&xr, &yr), (lo, hi))?;
    }
    draw_baselines(&mut c, &base)?;
    legend(&mut c)?;
    color_note(area, odesc, lo, hi)
}

/// The fitted law against N (or D) at each level of the other variable, coloured by the
/// level's log10 within `(lo, hi)`.
fn draw_law_at_levels<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLin<'a, DB>,
    f: &FitReport,
    levels: &[f64],
    by_n: bool,
    (xr, yr): (&Range<f64>, &Range<f64>),
    (lo, hi): (f64, f64),
) -> anyhow::Result<()> {
    let p = f.approach3.params;
    for (k, o) in levels.iter().enumerate() {
        let col = viridis(o.log10(), lo, hi);
        let line: Vec<(f64, f64)> = logspace(xr, 60)
            .into_iter()
            .map(|xv| {
                (
                    xv,
                    if by_n {
                        p.predict(xv, *o)
                    } else {
                        p.predict(*o, xv)
                    },
                )
            })
            .filter(|(_, y)| yr.contains(y))
            .collect();
        let s = c
            .draw_series(LineSeries::new(line, col.stroke_width(2)))
            .map_err(pe)?;
        if k == 0 {
            s.label("fitted law L(N, D) at each level")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2))
                });
        }
    }
    Ok(())
}

/// Each n-gram order's baselines (loss vs D), dashed, darker for higher orders.
fn draw_baselines<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLin<'a, DB>,
    base: &[&BaselineRow],
) -> anyhow::Result<()> {
    let mut orders: Vec<usize> = base.iter().map(|b| b.order).collect();
    orders.sort();
    orders.dedup();
    for (k, n) in orders.iter().enumerate() {
        let mut line: Vec<(f64, f64)> = base
            .iter()
            .filter(|b| b.order == *n)
            .map(|b| (b.train_tokens as f64, b.eval_loss))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        let shade = 0.25 + 0.6 * k as f64 / orders.len().max(1) as f64;
        let grey = (255.0 * (1.0 - shade)) as u8;
        let col = RGBColor(grey, grey, grey);
        c.draw_series(DashedLineSeries::new(
            line.clone(),
            6,
            4,
            col.stroke_width(2),
        ))
        .map_err(pe)?
        .label(format!("{n}-gram Kneser-Ney baseline"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        c.draw_series(
            line.into_iter()
                .map(|p| Cross::new(p, 4, col.stroke_width(2))),
        )
        .map_err(pe)?;
    }
    Ok(())
}

fn residuals<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let f = d.fit.as_ref().unwrap();
    let mut all: Vec<f64> = f.residuals.iter().flat_map(|r| [r[2], r[3]]).collect();
    if let Some(h) = &f.holdout {
        all.extend(h.points.iter().flat_map(|p| [p.loss, p.predicted]));
    }
    let r = lin_range(all.into_iter());
    let mut c = chart!(
        area,
        r.clone(),
        r.clone(),
        "observed loss (nats/token)",
        "predicted loss, Approach 3",
        sci
    );
    c.draw_series(LineSeries::new(
        vec![(r.start, r.start), (r.end, r.end)],
        BLACK.mix(0.5),
    ))
    .map_err(pe)?
    .label("predicted = observed")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    c.draw_series(
        f.residuals
            .iter()
            .map(|q| Circle::new((q[2], q[3]), 4, BLUE.mix(0.7).filled())),
    )
    .map_err(pe)?
    .label("fitted points (full fit)")
    .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
    if let Some(h) = &f.holdout {
        c.draw_series(
            h.points
                .iter()
                .map(|p| TriangleMarker::new((p.loss, p.predicted), 8, RED.filled())),
        )
        .map_err(pe)?
        .label(format!("held out ({}), fit without them", h.rule))
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, RED.filled()));
    }
    legend(&mut c)
}

/// The bootstrap figure's panels: (name, every resample's value, the full fit's value).
fn bootstrap_panels(f: &FitReport, b: &Bootstrap) -> [(&'static str, Vec<f64>, f64); 4] {
    let p = f.approach3.params;
    let col = |k: usize| b.samples.iter().map(|s| s[k]).collect();
    [
        ("alpha", col(3), p.alpha),
        ("beta", col(4), p.beta),
        ("E", col(0), p.e),
        (
            "a = beta/(alpha+beta)",
            b.samples.iter().map(|s| s[4] / (s[3] + s[4])).collect(),
            p.exponent_a(),
        ),
    ]
}

fn bootstrap<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let f = d.fit.as_ref().unwrap();
    let panels = area.split_evenly((2, 2));
    for (panel, (name, mut vals, point)) in panels
        .iter()
        .zip(bootstrap_panels(f, f.bootstrap.as_ref().unwrap()))
    {
        vals.retain(|v| v.is_finite());
        if !vals.is_empty() {
            vals.sort_by(f64::total_cmp);
            histogram_panel(panel, name, &vals, point)?;
        }
    }
    Ok(())
}

/// A histogram of `vals` (sorted, finite) over their central 99%, its 95% interval shaded
/// (the interval `fits.json` reports: the same percentile function) and `point` marked.
fn histogram_panel<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    name: &str,
    vals: &[f64],
    point: f64,
) -> anyhow::Result<()> {
    // Histogram over the central 99% so a few wild resamples do not flatten it.
    let lo = vals[(vals.len() as f64 * 0.005) as usize];
    let hi = vals[((vals.len() - 1) as f64 * 0.995) as usize];
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let nb = 30;
    let w = (hi - lo) / nb as f64;
    let mut counts = vec![0usize; nb];
    for v in vals {
        if *v >= lo && *v <= hi {
            counts[(((v - lo) / w) as usize).min(nb - 1)] += 1;
        }
    }
    let ymax = *counts.iter().max().unwrap() as f64 * 1.15;
    let mut c = ChartBuilder::on(panel)
        .margin(10)
        .caption(
            format!("{name}  (point {}, 95% CI shaded)", crate::fit::num(point)),
            (FONT, 14),
        )
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(lo - w..hi + w, 0.0..ymax)
        .map_err(pe)?;
    c.configure_mesh()
        .label_style((FONT, 11))
        .x_label_formatter(&|v| sci(*v))
        .y_desc("resamples")
        .axis_desc_style((FONT, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(pe)?;
    let ci = crate::fit::ci(vals.to_vec());
    c.draw_series(std::iter::once(Rectangle::new(
        [(ci[0], 0.0), (ci[1], ymax)],
        BLUE.mix(0.08).filled(),
    )))
    .map_err(pe)?;
    c.draw_series(counts.iter().enumerate().map(|(i, &k)| {
        let x0 = lo + i as f64 * w;
        Rectangle::new([(x0, 0.0), (x0 + w, k as f64)], BLUE.mix(0.6).filled())
    }))
    .map_err(pe)?;
    c.draw_series(std::iter::once(PathElement::new(
        vec![(point, 0.0), (point, ymax)],
        RED.stroke_width(2),
    )))
    .map_err(pe)?;
    Ok(())
}

fn curves<DB: DrawingBackend>(d: &ReportData, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
    let xr = log_range(d.curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)));
    let yr = lin_range(d.curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)));
    let mut c = chart!(
        area,
        xr.log_scale(),
        yr.clone(),
        "tokens seen",
        "train loss (nats/token)"
    );
    let (lo, hi) = min_max(d.curves.iter().map(|c| c.n.log10()));
    for cv in &d.curves {
        let col = viridis(cv.n.log10(), lo, hi);
        c.draw_series(LineSeries::new(
            cv.points.iter().map(|p| (p.0, p.1)),
            col.mix(0.8).stroke_width(1),
        ))
        .map_err(pe)?;
        c.draw_series(
            cv.eval
                .iter()
                .map(|p| Circle::new((p.0, p.1), 3, col.filled())),
        )
        .map_err(pe)?;
    }
    c.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(pe)?
        .label("train loss (lines), eval loss (dots); colour = N")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], viridis(0.5, 0.0, 1.0)));
    legend(&mut c)?;
    color_note(area, "N (params)", lo, hi)
}

/// Each backtest's |error| on the later budget's best loss against target C / largest
/// fitted C, one colour per method, with the mean per distance bin as a line.
fn backtest<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let b = d.fit.as_ref().unwrap().backtest.as_ref().unwrap();
    let pct = |v: f64| 100.0 * v;
    let xr = log_range(b.predictions.iter().map(|p| p.distance));
    let ymax = b
        .predictions
        .iter()
        .map(|p| pct(p.best_abs_rel_err))
        .fold(0.1, f64::max);
    let mut c = chart!(
        area,
        xr.log_scale(),
        0.0..ymax * 1.15,
        "extrapolation distance: target C / largest fitted C",
        "|error| of the budget's best loss (%)"
    );
    for (k, m) in [crate::fit::Method::A3, crate::fit::Method::Vpnls]
        .into_iter()
        .enumerate()
    {
        let col = if k == 0 { BLUE } else { RED };
        let pts: Vec<(f64, f64)> = b
            .predictions
            .iter()
            .filter(|p| p.method == m)
            .map(|p| (p.distance, pct(p.best_abs_rel_err)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let name = if k == 0 { "Approach 3" } else { "VPNLS" };
        c.draw_series(
            pts.iter()
                .map(|&q| Circle::new(q, 5, col.mix(0.6).filled())),
        )
        .map_err(pe)?
        .label(name)
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
        let line: Vec<(f64, f64)> = b
            .table
            .iter()
            .filter(|r| r.method == m)
            .map(|r| (r.distance, pct(r.best_mean_abs_rel_err)))
            .collect();
        c.draw_series(LineSeries::new(line, col.stroke_width(2)))
            .map_err(pe)?;
    }
    legend(&mut c)
}

/// One colour per model family.
fn family_color(f: FamilyKind) -> RGBColor {
    match f {
        FamilyKind::Transformer => RGBColor(31, 119, 180),
        FamilyKind::Lstm => RGBColor(214, 39, 40),
        FamilyKind::Mlp => RGBColor(44, 160, 44),
    }
}

/// The best `ok` run of each family that has per-position eval losses.
fn best_by_position(d: &ReportData) -> Vec<&crate::record::RunRecord> {
    let mut best: Vec<&crate::record::RunRecord> = Vec::new();
    for r in d.runs.iter().filter(|r| {
        r.status == crate::record::Status::Ok
            && r.eval_loss.is_finite()
            && !r.eval_loss_by_position.is_empty()
    }) {
        match best.iter_mut().find(|b| b.family == r.family) {
            Some(b) if r.eval_loss < b.eval_loss => *b = r,
            Some(_) => {}
            None => best.push(r),
        }
    }
    best.sort_by_key(|r| r.family);
    best
}

/// Per family: its best run's eval loss at each position of the window (log position),
/// Kaplan et al.'s Fig. 20: where a family stops using more context the line goes flat.
fn positions<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let best = best_by_position(d);
    let lines: Vec<(&crate::record::RunRecord, Vec<(f64, f64)>)> = best
        .iter()
        .map(|r| {
            let pts = r
                .eval_loss_by_position
                .iter()
                .enumerate()
                .map(|(t, &l)| ((t + 1) as f64, l))
                .collect();
            (*r, pts)
        })
        .collect();
    let all = || lines.iter().flat_map(|(_, v)| v.iter());
    let xr = log_range(all().map(|p| p.0));
    let yr = lin_range(all().map(|p| p.1));
    let mut c = chart!(
        area,
        xr.log_scale(),
        yr,
        "position in the context (tokens seen, 1 = first prediction)",
        "eval loss at that position (nats/token)"
    );
    for (r, pts) in lines {
        let col = family_color(r.family);
        let binned = log2_bins(&pts);
        c.draw_series(LineSeries::new(pts, col.mix(0.35).stroke_width(1)))
            .map_err(pe)?;
        let label = r.shape().label();
        let name = if label.starts_with(r.family.as_str()) {
            label
        } else {
            format!("{} {label}", r.family)
        };
        c.draw_series(LineSeries::new(binned.clone(), col.stroke_width(3)))
            .map_err(pe)?
            .label(format!("{name} (mean {:.3})", r.eval_loss))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
        c.draw_series(binned.into_iter().map(|p| Circle::new(p, 4, col.filled())))
            .map_err(pe)?;
    }
    c.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(pe)?
        .label("thin: each position; thick: mean over positions 1, 2-3, 4-7, 8-15, ...")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.35)));
    legend(&mut c)
}

/// Means over positions 1, 2–3, 4–7, 8–15, …, each at its bin's geometric centre.
fn log2_bins(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut lo = 1usize;
    while lo <= pts.len() {
        let hi = (2 * lo - 1).min(pts.len());
        let bin = &pts[lo - 1..hi];
        let mean = bin.iter().map(|p| p.1).sum::<f64>() / bin.len() as f64;
        out.push((((lo * hi) as f64).sqrt(), mean));
        lo *= 2;
    }
    out
}

/// Two panels: every family's runs against N (with its L(N) at its largest D) and against
/// C (with its running-minimum frontier); the best n-gram of each order as grey lines.
fn families<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
) -> anyhow::Result<()> {
    let (left, right) = area.split_horizontally(area.dim_in_pixel().0 / 2);
    family_panel(d, &left, true)?;
    family_panel(d, &right, false)
}

fn family_panel<DB: DrawingBackend>(
    d: &ReportData,
    area: &DrawingArea<DB, Shift>,
    by_n: bool,
) -> anyhow::Result<()> {
    let Some(rep) = &d.families else {
        return Ok(());
    };
    let x = |p: &Point| if by_n { p.n } else { p.c() };
    let all = || d.family_points.iter().flat_map(|(_, v)| v.iter());
    // The n-gram orders within reach of the runs (a unigram line would squash the plot).
    let worst = all().map(|p| p.loss).fold(0.0, f64::max);
    let ngrams: Vec<&BaselineRow> = best_ngram_per_order(d)
        .into_iter()
        .filter(|b| b.eval_loss <= 1.2 * worst)
        .collect();
    let xr = log_range(all().map(x));
    let yr = lin_range(
        all()
            .map(|p| p.loss)
            .chain(ngrams.iter().map(|b| b.eval_loss)),
    );
    let mut c = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(xr.clone().log_scale(), yr.clone())
        .map_err(pe)?;
    c.configure_mesh()
        .x_desc(if by_n {
            "parameters N"
        } else {
            "compute C (FLOPs)"
        })
        .y_desc("loss (nats/token)")
        .x_label_formatter(&|v| sci_log(*v))
        .y_label_formatter(&|v| sci(*v))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(pe)?;
    for (fam, pts) in &d.family_points {
        let col = family_color(*fam);
        c.draw_series(
            pts.iter()
                .map(|p| Circle::new((x(p), p.loss), 4, col.filled())),
        )
        .map_err(pe)?
        .label(fam.as_str())
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
        let line = if by_n {
            let fit = rep.fits.iter().find(|f| f.family == *fam);
            l_of_n_line(fit.and_then(|f| f.l_of_n.as_ref()), &xr, &yr)
        } else {
            running_min(pts)
        };
        c.draw_series(LineSeries::new(line, col.stroke_width(2)))
            .map_err(pe)?;
    }
    draw_ngram_lines(&mut c, &ngrams, &xr)?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(pe)
}

/// A family's Kaplan L(N) = (N_c/N)^α across `xr`, inside `yr` (empty without a fit).
fn l_of_n_line(
    l: Option<&crate::fit::KaplanLaw>,
    xr: &Range<f64>,
    yr: &Range<f64>,
) -> Vec<(f64, f64)> {
    let Some(l) = l else {
        return Vec::new();
    };
    logspace(xr, 40)
        .into_iter()
        .map(|n| (n, (l.x_c / n).powf(l.alpha)))
        .filter(|(_, y)| yr.contains(y))
        .collect()
}

/// The best n-gram baseline of each order as a dashed grey line, labelled at the left.
fn draw_ngram_lines<'a, DB: DrawingBackend + 'a>(
    c: &mut LogLin<'a, DB>,
    ngrams: &[&BaselineRow],
    xr: &Range<f64>,
) -> anyhow::Result<()> {
    let grey = RGBColor(120, 120, 120);
    for b in ngrams {
        c.draw_series(DashedLineSeries::new(
            vec![(xr.start, b.eval_loss), (xr.end, b.eval_loss)],
            6,
            4,
            grey.stroke_width(1),
        ))
        .map_err(pe)?;
        c.draw_series(std::iter::once(Text::new(
            format!("{}-gram", b.order),
            (xr.start * 1.05, b.eval_loss),
            (FONT, 11),
        )))
        .map_err(pe)?;
    }
    Ok(())
}

/// The lowest loss reached with at most each run's C (a step line over the runs).
fn running_min(pts: &[Point]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = pts.iter().map(|p| (p.c(), p.loss)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for (c, l) in v {
        if l < best {
            if best.is_finite() {
                out.push((c, best));
            }
            best = l;
            out.push((c, l));
        }
    }
    out
}

/// Each n-gram order's baseline on the most training tokens.
fn best_ngram_per_order(d: &ReportData) -> Vec<&BaselineRow> {
    let mut out: Vec<&BaselineRow> = Vec::new();
    for b in d.baselines.iter().filter(|b| b.eval_loss.is_finite()) {
        match out.iter_mut().find(|o| o.order == b.order) {
            Some(o) if b.train_tokens > o.train_tokens => *o = b,
            Some(_) => {}
            None => out.push(b),
        }
    }
    out.sort_by_key(|b| b.order);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::{fit_all, Dataset, FitOptions};

    /// Labels keep three significant digits and one style of mantissa.
    #[test]
    fn number_labels() {
        let cases = [
            (6512.074, "6512"),
            (3792.0, "3792"),
            (650.0, "650"),
            (65.14, "65.1"),
            (1.25, "1.25"),
            (1.2, "1.2"),
            (0.605, "0.605"),
            (0.0651, "0.0651"),
            (1e4, "1e4"),
            (2e4, "2e4"),
            (2.5e4, "2.5e4"),
            (1.1e4, "1.1e4"),
            (3e-5, "3e-5"),
            (9.96e4, "1e5"),
            (0.0099996, "1e-2"),
            (0.0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(sci(v), want, "{v}");
        }
    }

    /// A small bootstrapped fit of points on a known law, with one target budget.
    fn bootstrapped_fit(target: f64) -> FitReport {
        let mut points = Vec::new();
        for (i, n) in [1e6, 3e6, 1e7, 3e7, 1e8].into_iter().enumerate() {
            for (j, d) in [1e8, 3e8, 1e9, 3e9, 1e10].into_iter().enumerate() {
                let wiggle = 1.0 + 0.01 * (((3 * i + 7 * j) % 5) as f64 - 2.0);
                points.push(Point {
                    n,
                    d,
                    loss: (1.7 + 400.0 / f64::powf(n, 0.34) + 410.0 / f64::powf(d, 0.28)) * wiggle,
                    budget: None,
                    c: None,
                    unique: None,
                });
            }
        }
        let data = Dataset {
            source: "synthetic".into(),
            points,
            dropped_top: 0,
            curves: Vec::new(),
        };
        let opts = FitOptions {
            bootstrap: 40,
            grid_stride: 25,
            targets: vec![target],
            ..FitOptions::default()
        };
        fit_all(&data, &opts).unwrap()
    }

    #[test]
    fn the_band_drawn_is_the_interval_reported() {
        let c = 1e21;
        let f = bootstrapped_fit(c);
        let b = f.bootstrap.as_ref().unwrap();
        assert!(
            b.samples.len() >= 20,
            "{} resamples fitted",
            b.samples.len()
        );
        let t = &f.compute_optimal.targets[0];
        let band = optimal_bands(b, &[c]);
        assert_eq!(band.len(), 1);
        assert_eq!(band[0].0, c);
        assert_eq!(Some(band[0].1), t.n_opt_ci, "N_opt band vs fits.json");
        assert_eq!(Some(band[0].2), t.d_opt_ci, "D_opt band vs fits.json");
        let [lo, hi] = band[0].1;
        assert!(lo < hi && lo.is_finite() && hi.is_finite());
        // The shaded intervals of the bootstrap histograms are the reported ones too.
        let panels = bootstrap_panels(&f, b);
        let reported = [b.alpha, b.beta, b.e, b.a];
        for ((name, vals, _), want) in panels.into_iter().zip(reported) {
            assert_eq!(crate::fit::ci(vals), want, "{name}");
        }
    }
}
