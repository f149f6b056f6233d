//! The report: scaling plots (PNG + SVG), `report.md` and a self-contained `report.html`.
//!
//! Owns turning a loaded results folder ([`ResultsFolder`]) or a table ([`Dataset`]), plus
//! its [`FitReport`], into documents. The fit is computed once and written to `fits.json` by
//! the same call, so every number in the report is the number in `fits.json`; each run's N
//! and C are the fit's ([`crate::results::run_point`]). Figures that the data cannot support
//! are skipped with the reason, never a panic: the report says which and why.

pub mod plots;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::corpus::Floor;
use crate::fit::{self, num, Dataset, FitOptions, FitReport, Point};
use crate::record::{BaselineRow, RunRecord, Status};
use crate::results::{run_point, ResultsFolder};
use crate::spec::FitSpec;
use plots::{Fig, Format};

/// One run's curve: (tokens, train loss) and eval points (tokens, eval loss).
pub struct RunCurve {
    pub n: f64,
    pub points: Vec<(f64, f64)>,
    pub eval: Vec<(f64, f64)>,
}

/// Everything a report shows.
pub struct ReportData {
    pub title: String,
    pub source: String,
    pub points: Vec<Point>,
    pub runs: Vec<RunRecord>,
    pub curves: Vec<RunCurve>,
    pub metadata: Vec<(String, String)>,
    pub floor: Option<Floor>,
    pub fit: Option<FitReport>,
    /// Why there is no fit, when there is none.
    pub fit_error: Option<String>,
    /// n-gram baselines (`baselines.parquet`), when the sweep has them.
    pub baselines: Vec<BaselineRow>,
    /// Which N and C a run counts with (the sweep's `fit:`), as in the fit.
    pub fit_choice: FitSpec,
    /// The loss-curve laws' checks on the runs' curves (results folders).
    pub curve_laws: Option<fit::curve::CurveReport>,
    /// How well the final-loss predictions logged during training came true.
    pub predictions: Vec<crate::curves::PredictionAccuracy>,
    /// The sweep's peak-LR rule in words (`training.lr_scaling`), with a fitted law's source.
    pub lr_rule: Option<String>,
    /// Its batch-size rule (`training.batch_scaling`), likewise.
    pub batch_rule: Option<String>,
    /// Each family's fit points (every family, the primary one included).
    pub family_points: Vec<(crate::model::FamilyKind, Vec<Point>)>,
    /// The per-family fits, when the runs span two or more families.
    pub families: Option<fit::families::FamilyReport>,
}

impl ReportData {
    /// From a loaded results folder: its runs, curves, metadata, floor and baselines; its
    /// points fitted with `opts`.
    pub fn from_folder(folder: &ResultsFolder, opts: &FitOptions) -> anyhow::Result<ReportData> {
        let data = folder.dataset_with(0, opts.include_pruned)?;
        let pin = folder.fit_choice().e == crate::spec::EChoice::Floor && opts.fixed_e.is_none();
        let opts = FitOptions {
            floor: folder.floor.map(|f| f.nats_per_token),
            pin_e_to_floor: opts.pin_e_to_floor || pin,
            reference: opts.reference.clone().or_else(|| folder.best_baseline()),
            ..opts.clone()
        };
        let (fit, fit_error) = fit_or_reason(&data, &opts);
        let dir = folder.dir.display().to_string();
        let fit_choice = folder.fit_choice();
        let family_points = folder.family_points();
        let families =
            (family_points.len() > 1).then(|| fit::families::fit_families(&family_points, &opts));
        Ok(ReportData {
            title: format!(
                "Scaling report: {}",
                folder.meta("scalelab.sweep").unwrap_or(&dir)
            ),
            source: dir.clone(),
            points: data.points,
            runs: folder.runs.clone(),
            curves: run_curves(folder, &fit_choice),
            metadata: folder.metadata.clone(),
            floor: folder.floor,
            fit,
            fit_error,
            baselines: folder.baselines.clone(),
            fit_choice,
            curve_laws: curve_laws(folder),
            predictions: crate::curves::prediction_accuracy(folder),
            lr_rule: folder
                .spec
                .as_ref()
                .and_then(|s| s.training.lr_scaling.as_ref())
                .map(|l| l.describe()),
            batch_rule: folder
                .spec
                .as_ref()
                .and_then(|s| s.training.batch_scaling.as_ref())
                .map(|b| b.describe()),
            family_points,
            families,
        })
    }

    /// From a table of points (no runs or curves).
    pub fn from_dataset(data: Dataset, opts: &FitOptions) -> ReportData {
        let (fit, fit_error) = fit_or_reason(&data, opts);
        ReportData {
            title: format!("Scaling report: {}", data.source),
            source: data.source.clone(),
            points: data.points,
            runs: Vec::new(),
            curves: Vec::new(),
            metadata: Vec::new(),
            floor: None,
            fit,
            fit_error,
            baselines: Vec::new(),
            fit_choice: FitSpec::default(),
            curve_laws: None,
            predictions: Vec::new(),
            lr_rule: None,
            batch_rule: None,
            family_points: Vec::new(),
            families: None,
        }
    }
}

/// Both loss-curve checks on the folder's single-epoch runs (`None` without any).
fn curve_laws(folder: &ResultsFolder) -> Option<fit::curve::CurveReport> {
    let runs = crate::curves::from_folder(folder);
    (!runs.is_empty()).then(|| {
        let what = format!(
            "train loss, means over {:.0}% of each run",
            100.0 * crate::curves::TRAIN_BLOCK
        );
        // The transfer check costs ~25 s on the main job and adds nothing to the longest-run
        // check unless schedules differ.
        fit::curve::validate(&what, &runs, 0.5, fit::curve::schedules_vary(&runs))
    })
}

/// The curve of each `ok` run, by run id, at the run's N as the fit counts it.
fn run_curves(folder: &ResultsFolder, choice: &FitSpec) -> Vec<RunCurve> {
    let n_of = folder.ok_run_n(choice);
    let mut by_run: std::collections::BTreeMap<&str, RunCurve> = Default::default();
    for (id, c) in &folder.curves {
        let Some(&n) = n_of.get(id.as_str()) else {
            continue;
        };
        let e = by_run.entry(id).or_insert_with(|| RunCurve {
            n,
            points: Vec::new(),
            eval: Vec::new(),
        });
        if c.tokens > 0 && c.train_loss.is_finite() {
            e.points.push((c.tokens as f64, c.train_loss));
        }
        if let Some(ev) = c.eval_loss.filter(|v| v.is_finite()) {
            e.eval.push((c.tokens as f64, ev));
        }
    }
    by_run.into_values().collect()
}

fn fit_or_reason(data: &Dataset, opts: &FitOptions) -> (Option<FitReport>, Option<String>) {
    match fit::fit_all(data, opts) {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// What [`write`] produced.
pub struct Written {
    pub files: Vec<PathBuf>,
    pub drawn: Vec<Fig>,
    pub skipped: Vec<(Fig, String)>,
}

/// Write plots, `fits.json` (when fitted), `report.md` and `report.html` into `out`.
pub fn write(d: &ReportData, out: &Path, formats: &[Format]) -> anyhow::Result<Written> {
    crate::fsio::create_dir_all(out)?;
    let plot_dir = out.join("plots");
    let mut files = Vec::new();
    let mut drawn = Vec::new();
    let mut skipped = Vec::new();
    for fig in Fig::ALL {
        match fig.skip_reason(d) {
            Some(reason) => skipped.push((fig, reason)),
            None => {
                files.extend(plots::render(fig, d, &plot_dir, formats)?);
                drawn.push(fig);
            }
        }
    }
    if let Some(f) = &d.fit {
        let p = out.join("fits.json");
        crate::fsio::write_text_atomic(&p, &serde_json::to_string_pretty(f)?)?;
        files.push(p);
    }
    if let Some(fr) = &d.families {
        let p = out.join("families.json");
        crate::fsio::write_text_atomic(&p, &serde_json::to_string_pretty(fr)?)?;
        files.push(p);
    }
    let blocks = blocks(d, &drawn, &skipped);
    let md = out.join("report.md");
    crate::fsio::write_text_atomic(&md, &render_md(&blocks, formats))?;
    let html = out.join("report.html");
    crate::fsio::write_text_atomic(&html, &render_html(&d.title, &blocks, &plot_dir, formats)?)?;
    files.push(md);
    files.push(html);
    Ok(Written {
        files,
        drawn,
        skipped,
    })
}

/// The report's content, rendered to Markdown and HTML alike.
enum Block {
    H(u8, String),
    P(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure(Fig),
}

fn ci(v: Option<[f64; 2]>) -> String {
    v.map(|v| format!("{} – {}", num(v[0]), num(v[1])))
        .unwrap_or_else(|| "–".into())
}

/// A table header from its column names.
fn header(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|s| s.to_string()).collect()
}

fn estimate_header() -> Vec<String> {
    header(&["parameter", "estimate", "95% bootstrap CI"])
}

fn blocks(d: &ReportData, drawn: &[Fig], skipped: &[(Fig, String)]) -> Vec<Block> {
    // The answer first (prediction, trust, warnings), then the evidence: figures before the
    // long tables.
    let mut b = vec![Block::H(1, d.title.clone())];
    match &d.fit {
        None => b.push(Block::P(format!(
            "No scaling law was fitted: {}",
            d.fit_error.as_deref().unwrap_or("unknown reason")
        ))),
        Some(f) => b.extend(answer_blocks(f, &d.runs)),
    }
    if let Some(fr) = &d.families {
        b.extend(family_blocks(d, fr));
    }
    b.extend(figure_blocks(drawn, skipped));
    b.push(Block::H(2, "Provenance".into()));
    b.push(summary_table(d));
    if let Some(f) = &d.fit {
        fit_blocks(&mut b, d, f, drawn);
    }
    if let Some(c) = &d.curve_laws {
        b.extend(curve_law_blocks(c));
    }
    b.extend(prediction_blocks(d));
    if !d.runs.is_empty() {
        b.extend(runs_blocks(d));
    }
    if !d.baselines.is_empty() {
        b.extend(baseline_blocks(d));
    }
    if let Some(f) = &d.fit {
        b.push(Block::H(2, "Fitting choices".into()));
        b.extend(f.choices.iter().map(|c| Block::P(format!("- {c}"))));
    }
    b
}

/// "The answer": the predicted loss and compute-optimal model at the target budgets, how
/// well the law predicted budgets it did not see, and every warning.
fn answer_blocks(f: &FitReport, runs: &[RunRecord]) -> Vec<Block> {
    let mut b = vec![Block::H(2, "The answer".into())];
    for t in &f.compute_optimal.targets {
        b.push(Block::P(format!(
            "- At C = {:.3e} FLOPs ({}): N* = {:.3e}, D* = {:.3e}, predicted loss {} (95% CI {}{}){}.{}",
            t.flops,
            distance_phrase(f, t.flops),
            t.n_opt,
            t.d_opt,
            num(t.loss),
            ci(t.loss_ci),
            f.bootstrap.as_ref().map_or(String::new(), |b| format!(
                " over {} bootstrap laws: fit uncertainty, not extrapolation error",
                b.resamples
            )),
            pinned_prediction(f, t.flops),
            target_evidence(f, t)
        )));
    }
    b.push(Block::P(trust_sentence(f)));
    if let Some(x) = &f.crossover {
        b.push(Block::P(fit::crossover::sentence(x)));
    }
    let mut warnings: Vec<&String> = f.warnings.iter().collect();
    if let Some(w) = f.e_floor.as_ref().and_then(|e| e.warning.as_ref()) {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    let replicates = replicate_warning(runs);
    warnings.extend(replicates.as_ref());
    if warnings.is_empty() {
        b.push(Block::P("No warnings.".into()));
    }
    b.extend(warnings.iter().map(|w| Block::P(format!("- Warning: {w}"))));
    b
}

/// Replicates (runs alike but for the seed) whose losses spread by more than this share of
/// the lowest are named among the answer's warnings.
pub const REPLICATE_SPREAD: f64 = 0.10;

/// "Replicates disagree by more than 10% at 2 of 18 points (widest: …)", when they do. A
/// point is the runs the fit uses (`ok`, selected, finite loss) of one shape, data size and
/// budget; it is replicated when they have two or more seeds.
fn replicate_warning(runs: &[RunRecord]) -> Option<String> {
    let mut points: std::collections::BTreeMap<_, Vec<&RunRecord>> = Default::default();
    for r in runs.iter().filter(|r| crate::results::is_fit_run(r)) {
        let alike = (
            r.shape().label(),
            r.tokens,
            r.unique_tokens,
            r.budget.map(f64::to_bits),
        );
        points.entry(alike).or_default().push(r);
    }
    let seeds = |v: &[&RunRecord]| {
        v.iter()
            .map(|r| r.seed)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let spread = |v: &[&RunRecord]| {
        let lo = v.iter().map(|r| r.eval_loss).fold(f64::INFINITY, f64::min);
        let hi = v
            .iter()
            .map(|r| r.eval_loss)
            .fold(f64::NEG_INFINITY, f64::max);
        (lo, hi, hi / lo - 1.0)
    };
    let replicated: Vec<&Vec<&RunRecord>> = points.values().filter(|v| seeds(v) > 1).collect();
    let wide: Vec<&&Vec<&RunRecord>> = replicated
        .iter()
        .filter(|v| spread(v).2 > REPLICATE_SPREAD)
        .collect();
    let widest = wide
        .iter()
        .max_by(|a, b| spread(a).2.total_cmp(&spread(b).2))?;
    let (lo, hi, x) = spread(widest);
    let highest = widest
        .iter()
        .max_by(|a, b| a.eval_loss.total_cmp(&b.eval_loss))?;
    Some(format!(
        "replicates disagree by more than {:.0}% at {} of {} points run with several seeds (widest: {} at D = {:.3e}: {}–{} over {} runs, {:+.0}%; the highest is run {}): the fit uses every replicate, so such a point pulls it by its mean; check that run's curve, and expect single runs at this scale to scatter at least that much",
        100.0 * REPLICATE_SPREAD,
        wide.len(),
        replicated.len(),
        widest[0].shape().label(),
        widest[0].tokens as f64,
        num(lo),
        num(hi),
        widest.len(),
        100.0 * x,
        highest.run_id
    ))
}

/// The smallest and largest compute C = 6ND among the fitted points.
fn fitted_c_range(f: &FitReport) -> (f64, f64) {
    f.residuals
        .iter()
        .map(|r| 6.0 * r[0] * r[1])
        .fold((f64::INFINITY, 0.0), |(lo, hi), c| (lo.min(c), hi.max(c)))
}

/// Where a target budget lies against the fitted points: "10× the largest fitted C, 3.00e11",
/// "inside the fitted compute range" or "5× below the smallest fitted C".
fn distance_phrase(f: &FitReport, c: f64) -> String {
    let (lo, hi) = fitted_c_range(f);
    if c > 1.02 * hi {
        format!("{} the largest fitted C, {hi:.2e}", times(c / hi))
    } else if c < lo / 1.02 {
        format!("{} below the smallest fitted C, {lo:.2e}", times(lo / c))
    } else {
        format!("inside the fitted compute range, {lo:.2e} to {hi:.2e}")
    }
}

/// "3.3×" / "33×": an extrapolation factor.
fn times(x: f64) -> String {
    if x < 9.95 {
        format!("{x:.1}×")
    } else {
        format!("{x:.0}×")
    }
}

/// "; with E pinned to the known floor 0.6049: 0.8400 (95% CI …)" when the report's law is
/// the free one and a floor is known; empty otherwise.
fn pinned_prediction(f: &FitReport, c: f64) -> String {
    let Some(fc) = f.e_floor.as_ref().filter(|fc| !fc.law_is_pinned) else {
        return String::new();
    };
    let samples = fc.pinned_bootstrap.as_ref().map(|b| b.params());
    let t = fit::target(&fc.pinned, samples.as_deref(), c);
    let interval = t.loss_ci.map(|l| format!(" (95% CI {})", ci(Some(l))));
    format!(
        "; with E pinned to the known loss floor {}: {}{}",
        num(fc.floor),
        num(t.loss),
        interval.unwrap_or_default()
    )
}

/// What the report has measured at a target's distance (" …", with its leading space, or
/// empty): inside the fitted range, the runs at that budget; beyond it, the nearest rolling
/// backtest of the reported law (Approach 3 unless only VPNLS ran) that reached at least that
/// far, or that none did.
fn target_evidence(f: &FitReport, t: &fit::Target) -> String {
    let x = t.flops / fitted_c_range(f).1;
    if x <= 1.02 {
        return runs_at_target(f, t);
    }
    let Some(bt) = &f.backtest else {
        return " No rolling backtest measures how far the law holds (skipped with --no-backtest, or too few budgets or points per fold).".into();
    };
    let method = reported_method(bt);
    // The farthest a backtest of this bin actually reached (the bins are half-decades).
    let reach = |r: &fit::backtest::Row| {
        bt.predictions
            .iter()
            .filter(|p| p.method == method)
            .filter(|p| fit::backtest::bin(p.distance) == fit::backtest::bin(r.distance))
            .map(|p| p.distance)
            .fold(0.0, f64::max)
    };
    let mut rows: Vec<(&fit::backtest::Row, f64)> = bt
        .table
        .iter()
        .filter(|r| r.method == method)
        .map(|r| (r, reach(r)))
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    match (rows.iter().find(|(_, d)| *d * 1.02 >= x), rows.last()) {
        (Some((r, d)), _) => format!(
            " Rolling backtests of {} at {} (up to {}) erred by {:.2}% on the best loss.",
            method_name(method),
            r.label,
            times(*d),
            100.0 * r.best_mean_abs_rel_err
        ),
        (None, Some((r, d))) => format!(
            " Beyond the farthest rolling backtest ({}, up to {}: best-loss error {:.2}%): nothing here measures how the law holds at {}.",
            r.label,
            times(*d),
            100.0 * r.best_mean_abs_rel_err,
            times(x)
        ),
        (None, None) => String::new(),
    }
}

/// The method whose backtests speak for the reported law: Approach 3, unless only VPNLS ran.
fn reported_method(bt: &fit::backtest::Backtest) -> fit::Method {
    match bt.table.iter().any(|r| r.method == fit::Method::A3) {
        true => fit::Method::A3,
        false => bt.table.first().map_or(fit::Method::A3, |r| r.method),
    }
}

/// " The lowest of the K runs at this budget reached …" for a target inside the fitted range
/// (the lowest of several is biased low against the law's prediction, and says so by its
/// name); empty when no run was trained at that budget.
fn runs_at_target(f: &FitReport, t: &fit::Target) -> String {
    let at: Vec<f64> = f
        .residuals
        .iter()
        .filter(|r| (6.0 * r[0] * r[1] / t.flops - 1.0).abs() < 0.02)
        .map(|r| r[2])
        .collect();
    let lowest = at.iter().copied().fold(f64::INFINITY, f64::min);
    match at.len() {
        0 => String::new(),
        k => format!(
            " The lowest of the {k} runs at this budget reached {} ({:+.1}% from the prediction).",
            num(lowest),
            100.0 * (lowest / t.loss - 1.0)
        ),
    }
}

/// "Model families": who leads the frontier at which compute, where the n-gram is still
/// better, and each family's own laws.
fn family_blocks(d: &ReportData, fr: &fit::families::FamilyReport) -> Vec<Block> {
    let mut b = vec![Block::H(2, "Model families".into())];
    let primary = fr
        .fits
        .iter()
        .map(|f| f.family)
        .find(|f| *f == crate::model::FamilyKind::Transformer)
        .unwrap_or(fr.fits[0].family);
    b.push(Block::P(format!(
        "The main scaling law of this report (sections above and below) is fitted on the {primary} runs only; each family is fitted on its own here (Approach 3, and Kaplan's L(N) on the family's runs at its largest D)."
    )));
    let leads: Vec<String> = fr
        .leads
        .iter()
        .map(|l| format!("{} from C = {:.2e} to {:.2e}", l.family, l.from_c, l.to_c))
        .collect();
    b.push(Block::P(format!(
        "Lowest loss reached with at most C FLOPs, by compute: {}.",
        leads.join("; then ")
    )));
    b.extend(family_vs_ngram(d, fr));
    b.push(Block::Table(
        header(&[
            "family",
            "runs",
            "best loss",
            "Kaplan L(N)",
            "Chinchilla law (Approach 3)",
        ]),
        fr.fits.iter().map(family_row).collect(),
    ));
    b
}

/// Whether each family's best run beats the best n-gram baseline (none without baselines).
fn family_vs_ngram(d: &ReportData, fr: &fit::families::FamilyReport) -> Option<Block> {
    let ng = d
        .baselines
        .iter()
        .filter(|r| r.eval_loss.is_finite())
        .min_by(|x, y| x.eval_loss.total_cmp(&y.eval_loss))?;
    let beaten: Vec<String> = fr
        .fits
        .iter()
        .map(|f| {
            let verdict = if f.best_loss < ng.eval_loss {
                "beats it"
            } else {
                "does not beat it"
            };
            format!("{} (best {}) {verdict}", f.family, num(f.best_loss))
        })
        .collect();
    Some(Block::P(format!(
        "Against the best n-gram baseline (Kneser-Ney {}-gram on {:.3e} tokens, {} nats/token): {}.",
        ng.order,
        ng.train_tokens as f64,
        num(ng.eval_loss),
        beaten.join(", ")
    )))
}

/// One family's row: runs, best loss, Kaplan L(N) and the Chinchilla law.
fn family_row(f: &fit::families::FamilyFit) -> Vec<String> {
    let kap = f
        .l_of_n
        .as_ref()
        .map(|l| {
            format!(
                "({:.3e}/N)^{:.3} at D ≈ {:.2e}",
                l.x_c, l.alpha, f.l_of_n_tokens
            )
        })
        .unwrap_or_else(|| "–".into());
    let a3 = f
        .approach3
        .map(|p| {
            format!(
                "E {} A {} α {:.3} B {} β {:.3}",
                num(p.e),
                num(p.a),
                p.alpha,
                num(p.b),
                p.beta
            )
        })
        .or_else(|| f.note.clone())
        .unwrap_or_else(|| "–".into());
    vec![
        f.family.to_string(),
        f.points.to_string(),
        format!(
            "{} (N {:.3e}, C {:.2e})",
            num(f.best_loss),
            f.best_n,
            f.best_c
        ),
        kap,
        a3,
    ]
}

/// "mean% (max max%)" of a held-out check's relative errors.
fn held_pct(h: &fit::HoldoutReport) -> String {
    format!(
        "{:.2}% (max {:.2}%)",
        100.0 * h.mean_abs_pct_error,
        100.0 * h.max_abs_pct_error
    )
}

/// "mean% (max max%)" of a held-out check's seed means.
fn means_pct(r: &fit::replicates::ReplicateNoise) -> String {
    format!(
        "{:.2}% (max {:.2}%)",
        100.0 * r.mean_abs_pct_error_of_means,
        100.0 * r.max_abs_pct_error_of_means
    )
}

/// The held-out seed means' error and the runs' scatter, as a clause after the runs' error.
fn means_clause(h: &fit::HoldoutReport) -> String {
    h.replicates
        .as_ref()
        .map(|r| {
            format!(
                "; the means of its {} seed-replicated points within {}, while single runs scatter {:.2}% about their point's mean (about what a law exact at every point would score on them)",
                r.points,
                means_pct(r),
                100.0 * r.run_scatter_pct
            )
        })
        .unwrap_or_default()
}

/// One sentence: the held-out error and the farthest backtest's error.
fn trust_sentence(f: &FitReport) -> String {
    let held = match &f.holdout {
        Some(h) => format!(
            "Held out ({}): predicted with mean |error| {}{}.",
            h.rule,
            held_pct(h),
            means_clause(h)
        ),
        None => "No held-out check.".into(),
    };
    // With a known floor, the same check of the law with E pinned to it, and where the free
    // law fitted without the held-out points put E.
    let held = match (&f.e_floor, &f.holdout) {
        (Some(fc), Some(h)) => {
            let rel = (h.fit.e - fc.floor) / fc.floor;
            let free = f.approach3.fixed_e.is_none();
            let off = (free && rel.abs() > fit::floor::WARN_REL).then(|| {
                format!(
                    " Fitted without the held-out points, the free law puts E at {} ({:+.0}% from the floor {}).",
                    num(h.fit.e),
                    100.0 * rel,
                    num(fc.floor)
                )
            });
            let pinned = fc.pinned_holdout.as_ref().map(|p| {
                format!(
                    " With E pinned to the known loss floor: mean |error| {}{}.",
                    held_pct(p),
                    p.replicates
                        .as_ref()
                        .map(|r| format!(", seed means {}", means_pct(r)))
                        .unwrap_or_default()
                )
            });
            format!(
                "{held}{}{}",
                off.unwrap_or_default(),
                pinned.unwrap_or_default()
            )
        }
        _ => held,
    };
    // The farthest backtest of the reported law (Approach 3 unless only VPNLS ran).
    let far = f.backtest.as_ref().and_then(|bt| {
        let m = reported_method(bt);
        bt.table.iter().rev().find(|r| r.method == m)
    });
    match far {
        Some(r) => format!(
            "{held} Farthest rolling backtest ({} extrapolation, {}): best-loss error {:.2}%. Details in \"How far can this be trusted?\".",
            r.label,
            method_name(r.method),
            100.0 * r.best_mean_abs_rel_err
        ),
        None => held,
    }
}

/// The sections on the fit, in report order.
fn fit_blocks(b: &mut Vec<Block>, d: &ReportData, f: &FitReport, drawn: &[Fig]) {
    b.extend(approach3_blocks(f));
    b.extend(trust_blocks(f, drawn));
    if let Some(v) = &f.vpnls {
        b.extend(vpnls_blocks(f, v));
    }
    if let Some(dc) = &f.data_constrained {
        b.extend(data_constrained_blocks(f, dc));
    }
    if let Some(fl) = d.floor {
        b.push(floor_block(f, fl));
    }
    if let Some(fc) = &f.e_floor {
        b.extend(pinned_blocks(f, fc));
    }
    b.extend(agreement_blocks(f));
    if !f.approach2.budgets.is_empty() {
        b.extend(isoflop_budget_blocks(f));
    }
    b.extend(target_blocks(f));
    b.extend(holdout_blocks(f));
    b.extend(kaplan_blocks(f));
}

/// The summary table: source, provenance metadata, runs (or points), compute and time.
fn summary_table(d: &ReportData) -> Block {
    let meta = |k: &str| {
        d.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let mut rows = vec![vec!["source".into(), d.source.clone()]];
    for (label, key) in [
        ("sweep spec hash", "scalelab.spec_hash"),
        ("corpus", "scalelab.corpus"),
        ("backend", "scalelab.backend"),
        ("scalelab version", "scalelab.version"),
        ("host", "scalelab.host"),
    ] {
        if let Some(v) = meta(key) {
            rows.push(vec![label.into(), v]);
        }
    }
    for (label, rule) in [
        ("peak learning rate", &d.lr_rule),
        ("batch size", &d.batch_rule),
    ] {
        if let Some(rule) = rule {
            rows.push(vec![label.into(), rule.clone()]);
        }
    }
    if d.runs.is_empty() {
        rows.push(vec!["points".into(), d.points.len().to_string()]);
        return Block::Table(vec!["".into(), "".into()], rows);
    }
    let count = |s: Status| d.runs.iter().filter(|r| r.status == s).count();
    rows.push(vec![
        "runs".into(),
        format!(
            "{} ({} ok, {} diverged, {} failed{})",
            d.runs.len(),
            count(Status::Ok),
            count(Status::Diverged),
            count(Status::Failed),
            match count(Status::Pruned) {
                0 => String::new(),
                k => format!(", {k} pruned"),
            }
        ),
    ]);
    rows.push(vec![
        "total training compute".into(),
        format!(
            "{:.3e} FLOPs (C = 6ND)",
            d.runs.iter().map(|r| r.flops).sum::<f64>()
        ),
    ]);
    rows.push(vec![
        "summed run time (each run's wall_s; runs trained side by side overlap)".into(),
        format!("{:.1} s", d.runs.iter().map(|r| r.wall_s).sum::<f64>()),
    ]);
    Block::Table(vec!["".into(), "".into()], rows)
}

/// The Approach-3 law with its intervals, its warnings and how it was fitted.
fn approach3_blocks(f: &FitReport) -> Vec<Block> {
    let bs = f.bootstrap.as_ref();
    let mut b = vec![Block::H(
        2,
        "Approach 3: L(N, D) = E + A/N^α + B/D^β".into(),
    )];
    b.push(Block::Table(
        estimate_header(),
        vec![
            vec!["E".into(), num(f.e), ci(bs.map(|b| b.e))],
            vec!["A".into(), num(f.a), ci(bs.map(|b| b.a_coef))],
            vec!["B".into(), num(f.b), ci(bs.map(|b| b.b_coef))],
            vec!["α".into(), num(f.alpha), ci(bs.map(|b| b.alpha))],
            vec!["β".into(), num(f.beta), ci(bs.map(|b| b.beta))],
        ],
    ));
    for w in &f.warnings {
        b.push(Block::P(format!("Warning: {w}.")));
    }
    let c = &f.approach3.convergence;
    b.push(Block::P(format!(
        "{} points; summed Huber (δ = {}) on log-loss, objective {:.6e}; {} L-BFGS starts ({} failed), best after {} iterations (|∇| = {:.1e}){}.",
        f.n_points,
        f.approach3.huber_delta,
        f.objective,
        c.starts,
        c.failed_starts,
        c.best_iterations,
        c.best_grad_norm,
        bs.map(|b| format!("; {} bootstrap resamples (seed {})", b.resamples, b.seed)).unwrap_or_default()
    )));
    b
}

/// The data-constrained law: R_D*, R_N* and the base law it holds fixed.
fn data_constrained_blocks(f: &FitReport, dc: &fit::constrained::ConstrainedFit) -> Vec<Block> {
    vec![
        Block::H(2, "Data-constrained law (Muennighoff et al. 2023)".into()),
        Block::Table(
            estimate_header(),
            vec![
                vec![
                    "R_D* (repeated data)".into(),
                    num(dc.r_d_star),
                    ci(dc.r_d_star_ci),
                ],
                vec![
                    "R_N* (excess parameters)".into(),
                    num(dc.r_n_star),
                    ci(dc.r_n_star_ci),
                ],
            ],
        ),
        Block::P(format!(
            "{} points, {} with repeated data; objective {:.6}, R² {:.4}; base law held fixed (E = {}, A = {}, B = {}, α = {}, β = {}) from {}.",
            dc.n_points,
            dc.n_repeated,
            dc.objective,
            dc.r2,
            num(dc.base.e),
            num(dc.base.a),
            num(dc.base.b),
            num(dc.base.alpha),
            num(dc.base.beta),
            f.data_constrained_base.as_deref().unwrap_or("?")
        )),
    ]
}

/// The built-in corpus's exact loss floor next to the fitted E.
fn floor_block(f: &FitReport, fl: Floor) -> Block {
    Block::P(format!(
        "Built-in corpus: the exact loss floor of the eval set is {:.4} nats/token ({:.4} bits/byte); the fitted irreducible loss is E = {} (95% CI {}).",
        fl.nats_per_token,
        fl.bits_per_byte,
        num(f.e),
        ci(f.bootstrap.as_ref().map(|b| b.e))
    ))
}

/// "How far can this be trusted?": the rolling backtests' errors by extrapolation distance,
/// the prediction intervals' coverage, and the figure.
fn trust_blocks(f: &FitReport, drawn: &[Fig]) -> Vec<Block> {
    let mut b = vec![Block::H(2, "How far can this be trusted?".into())];
    let flagged = f
        .approach2
        .budgets
        .iter()
        .filter(|g| g.possibly_biased())
        .count();
    if flagged > 0 {
        b.push(Block::P(format!(
            "Approach 2: {flagged} of {} IsoFLOP budgets may give a biased vertex (off-centre grid or asymmetric profile); see the IsoFLOP budgets table and the dashed parabolas in the IsoFLOP plot.",
            f.approach2.budgets.len()
        )));
    }
    let Some(bt) = &f.backtest else {
        b.push(Block::P("No rolling backtests: they need at least 3 compute budgets (or were turned off with --no-backtest).".into()));
        return b;
    };
    b.push(Block::P(format!(
        "Rolling backtests over the {} compute budgets ({}): fitted on the first k budgets, each later budget predicted. Distance = target C / largest fitted C. Errors are relative: the budget's best loss (lowest observed against lowest predicted over its runs) and each run's loss; coverage = share of runs inside their 95% prediction interval ({} bootstrap resamples per fold, residuals resampled).",
        bt.budgets, bt.grouping, bt.interval_resamples
    )));
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let rows = bt
        .table
        .iter()
        .map(|r| {
            vec![
                method_name(r.method).into(),
                r.label.clone(),
                r.predictions.to_string(),
                pct(r.best_mean_abs_rel_err),
                pct(r.best_max_abs_rel_err),
                r.runs.to_string(),
                pct(r.run_mean_abs_rel_err),
                r.coverage
                    .map(|c| format!("{:.0}%", 100.0 * c))
                    .unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    let head = [
        "method",
        "distance",
        "backtests",
        "best loss mean |err|",
        "best loss max |err|",
        "runs",
        "run mean |err|",
        "95% PI coverage",
    ];
    b.push(Block::Table(header(&head), rows));
    if drawn.contains(&Fig::Backtest) {
        b.push(Block::Figure(Fig::Backtest));
    }
    b
}

fn method_name(m: fit::Method) -> &'static str {
    match m {
        fit::Method::A3 => "Approach 3",
        fit::Method::Vpnls => "VPNLS",
        fit::Method::Both => "both",
    }
}

/// VPNLS beside Approach 3: the two laws when they differ, else one line.
fn vpnls_blocks(f: &FitReport, v: &fit::vpnls::Comparison) -> Vec<Block> {
    let mut b = vec![Block::H(
        3,
        "Variable projection (VPNLS) beside Approach 3".into(),
    )];
    let p = v.fit.params;
    if !v.differ {
        b.push(Block::P(format!(
            "VPNLS (E, A, B by non-negative least squares, (α, β) searched) gives the same law (largest parameter difference {:.2e}); SSE on L {:.6e} against Approach 3's {:.6e}. {}.",
            v.max_rel_diff, v.fit.sse, v.approach3_sse, v.note
        )));
        return b;
    }
    let a3 = fit::laws::ChinchillaParams {
        e: f.e,
        a: f.a,
        b: f.b,
        alpha: f.alpha,
        beta: f.beta,
    };
    let mut rows = law_rows(&a3, &p);
    rows.push(vec![
        "SSE on L".into(),
        num(v.approach3_sse),
        num(v.fit.sse),
    ]);
    b.push(Block::Table(
        header(&["parameter", "Approach 3", "VPNLS"]),
        rows,
    ));
    b.push(Block::P(format!(
        "The laws differ (largest relative parameter difference {:.1}%): {}.",
        100.0 * v.max_rel_diff,
        v.note
    )));
    b
}

/// Two laws side by side: E, A, B, α, β and the compute-optimal exponent a.
fn law_rows(x: &fit::laws::ChinchillaParams, y: &fit::laws::ChinchillaParams) -> Vec<Vec<String>> {
    let row = |name: &str, u: f64, v: f64| vec![name.to_string(), num(u), num(v)];
    vec![
        row("E", x.e, y.e),
        row("A", x.a, y.a),
        row("B", x.b, y.b),
        row("α", x.alpha, y.alpha),
        row("β", x.beta, y.beta),
        row("a = β/(α+β)", x.exponent_a(), y.exponent_a()),
    ]
}

/// The α and β interval widths and the held-out errors of the free and the pinned law, the
/// rows of the laws that have them.
fn check_rows(
    (free_boot, free_held): (Option<&fit::Bootstrap>, Option<&fit::HoldoutReport>),
    (pinned_boot, pinned_held): (Option<&fit::Bootstrap>, Option<&fit::HoldoutReport>),
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let width = |b: Option<&fit::Bootstrap>, k: fn(&fit::Bootstrap) -> [f64; 2]| {
        b.map(|b| format!("{} ({:.2}×)", ci(Some(k(b))), k(b)[1] / k(b)[0]))
            .unwrap_or_else(|| "–".into())
    };
    if free_boot.is_some() || pinned_boot.is_some() {
        rows.push(vec![
            "α 95% CI".into(),
            width(free_boot, |b| b.alpha),
            width(pinned_boot, |b| b.alpha),
        ]);
        rows.push(vec![
            "β 95% CI".into(),
            width(free_boot, |b| b.beta),
            width(pinned_boot, |b| b.beta),
        ]);
    }
    let held = |h: Option<&fit::HoldoutReport>| h.map(held_pct).unwrap_or_else(|| "–".into());
    if free_held.is_some() || pinned_held.is_some() {
        rows.push(vec![
            "held-out mean |error|".into(),
            held(free_held),
            held(pinned_held),
        ]);
        let means = |h: Option<&fit::HoldoutReport>| {
            h.and_then(|h| h.replicates.as_ref())
                .map(means_pct)
                .unwrap_or_else(|| "–".into())
        };
        if free_held
            .or(pinned_held)
            .is_some_and(|h| h.replicates.is_some())
        {
            rows.push(vec![
                "held-out seed means, mean |error|".into(),
                means(free_held),
                means(pinned_held),
            ]);
        }
    }
    rows
}

/// The law with E pinned to the floor beside the free law.
fn pinned_blocks(f: &FitReport, fc: &fit::floor::FloorComparison) -> Vec<Block> {
    let mut rows = law_rows(&fc.free, &fc.pinned);
    rows.push(vec![
        "objective".into(),
        num(fc.free_objective),
        num(fc.pinned_objective),
    ]);
    // Intervals and the held-out check of each law: the reported law's are the top level's,
    // the pinned law's beside a free one are in `fc`; E fixed elsewhere (`--fix-e`) has none here.
    let law_is_free = f.approach3.fixed_e.is_none();
    let top = (f.bootstrap.as_ref(), f.holdout.as_ref());
    let beside = (fc.pinned_bootstrap.as_ref(), fc.pinned_holdout.as_ref());
    let (free, pinned) = match (law_is_free, fc.law_is_pinned) {
        (true, _) => (top, beside),
        (false, true) => ((None, None), top),
        (false, false) => ((None, None), (None, None)),
    };
    rows.extend(check_rows(free, pinned));
    let mut b = vec![
        Block::H(3, "E free and E pinned to the loss floor".into()),
        Block::Table(
            header(&["parameter", "E free", "E pinned to the floor"]),
            rows,
        ),
        Block::P(format!(
            "The free E lands {:+.1}% from the floor {}; the law reported above is the {} one. Intervals and the held-out check are computed for the reported law and, when that is the free one, also for the pinned law.",
            100.0 * fc.free_e_rel_diff,
            num(fc.floor),
            match (fc.law_is_pinned, law_is_free) {
                (true, _) => "pinned",
                (false, true) => "free",
                (false, false) => "fixed-E",
            }
        )),
    ];
    if let Some(note) = &fc.pinned_holdout_note {
        b.push(Block::P(format!(
            "The pinned law's held-out check was not done: {note}."
        )));
    }
    if let Some(w) = &fc.warning {
        b.push(Block::P(format!("Warning: {w}.")));
    }
    b
}

/// The compute-optimal exponent a by Approaches 3, 2 and 1, side by side, and how far apart
/// they are.
fn agreement_blocks(f: &FitReport) -> Vec<Block> {
    let dash = || "–".to_string();
    let a1 = f.approach1.as_ref();
    let rows = vec![
        vec![
            "Approach 3 (parametric fit)".into(),
            num(f.compute_optimal.a),
            ci(f.bootstrap.as_ref().map(|b| b.a)),
            format!("{} points", f.n_points),
        ],
        vec![
            "Approach 2 (IsoFLOP parabolas)".into(),
            f.approach2.a.map(num).unwrap_or_else(dash),
            ci(f.approach2.a_ci.map(|c| c.ci)),
            format!(
                "{} of {} budgets usable",
                f.approach2.used_budgets,
                f.approach2.budgets.len()
            ),
        ],
        vec![
            "Approach 1 (curve envelope)".into(),
            a1.and_then(|a| a.a).map(num).unwrap_or_else(dash),
            dash(),
            a1.map(|a| {
                format!(
                    "{} envelope points, {} in the last tenth of their run",
                    a.envelope.len(),
                    a.late_points
                )
            })
            .unwrap_or_else(|| "no curves".into()),
        ],
    ];
    let mut b = vec![
        Block::H(
            2,
            "Do the approaches agree? Compute-optimal exponent a (N_opt ∝ C^a)".into(),
        ),
        Block::Table(header(&["approach", "a", "95% CI", "basis"]), rows),
    ];
    b.extend(agreement_verdict(f).map(Block::P));
    b
}

/// How far Approaches 2 and 1 land from Approach 3 (against the 0.05 a scaling-law study
/// would call agreement), with what their basis says about trusting them.
fn agreement_verdict(f: &FitReport) -> Option<String> {
    let a3 = f.compute_optimal.a;
    let mut parts = Vec::new();
    if let Some(a2) = f.approach2.a {
        let within = |c: [f64; 2]| c[0] <= a3 && a3 <= c[1];
        let interval = match f.approach2.a_ci {
            Some(c) => format!(
                "; Approach 2's 95% interval ({} of {} bootstrap resamples of each budget's runs) {} Approach 3's estimate",
                c.usable,
                c.resamples,
                if within(c.ci) { "contains" } else { "excludes" }
            ),
            None => String::new(),
        };
        parts.push(format!(
            "Approaches 3 and 2 differ by {:.3} ({} 0.05{interval})",
            (a2 - a3).abs(),
            if (a2 - a3).abs() <= 0.05 {
                "within"
            } else {
                "more than"
            }
        ));
    }
    if let Some((a1, app)) = f.approach1.as_ref().and_then(|x| x.a.map(|a| (a, x))) {
        let mut s = format!(
            "Approach 1 lies {:.3} {} Approach 3",
            (a1 - a3).abs(),
            if a1 < a3 { "below" } else { "above" }
        );
        if 2 * app.late_points < app.envelope.len() {
            s.push_str(&format!(
                " and is weak here: {} of its {} envelope points are mid-run points (before the last tenth of their run), taken before the learning rate had decayed, so the envelope lies above what runs annealed at those lengths would reach (Chinchilla's Approach 1 trained each size at four schedule lengths for that reason)",
                app.envelope.len() - app.late_points,
                app.envelope.len()
            ));
        }
        parts.push(s);
    }
    (!parts.is_empty()).then(|| format!("{}.", parts.join(". ")))
}

/// Approach 2's budgets: each parabola's optimum, or why the budget is excluded, and the
/// diagnostics of its vertex (off-centre grid, asymmetric profile).
fn isoflop_budget_blocks(f: &FitReport) -> Vec<Block> {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3e}")).unwrap_or_else(|| "–".into());
    let rows = f
        .approach2
        .budgets
        .iter()
        .map(|bg| {
            let mut row = vec![
                format!("{:.3e}", bg.budget),
                bg.points.to_string(),
                opt(bg.n_opt),
                opt(bg.d_opt),
                bg.loss_at_opt.map(num).unwrap_or_else(|| "–".into()),
                bg.excluded
                    .clone()
                    .map(|e| format!("no: {e}"))
                    .unwrap_or_else(|| "yes".into()),
            ];
            row.extend(diagnostic_cells(bg.diagnostics.as_ref()));
            row
        })
        .collect();
    let head = [
        "budget C",
        "points",
        "N_opt",
        "D_opt",
        "loss at N_opt",
        "used",
        "vertex offset",
        "asymmetry",
        "cubic shift of N_opt",
        "possibly biased",
    ];
    vec![
        Block::H(3, format!("IsoFLOP budgets ({})", f.approach2.grouping)),
        Block::Table(header(&head), rows),
        Block::P(format!(
            "Vertex offset = (ln N_opt − mid) / half-width of the budget's sampled ln N range: 0 = centred, ±1 = at the smallest / largest size, beyond = outside. Asymmetry = h·L‴/(3·L″) at the vertex from a cubic in ln N (0 = symmetric; the loss rises (1 + s)/(1 − s) times as much on the large-N side); the cubic shift is how far the cubic's minimum lies from the parabola's, as a factor on N_opt. A budget is flagged when |offset| > {} or |asymmetry| > {}: its parabola is dashed and its vertex hollow in the IsoFLOP plot.",
            fit::isoflop::NEAR_EDGE,
            fit::isoflop::ASYMMETRIC
        )),
    ]
}

/// The diagnostics columns of one budget (dashes without a vertex).
fn diagnostic_cells(d: Option<&fit::isoflop::BudgetDiagnostics>) -> Vec<String> {
    let dash = || "–".to_string();
    let Some(d) = d else {
        return vec![dash(), dash(), dash(), dash()];
    };
    let flags: Vec<&str> = d.flags.iter().map(|f| f.describe()).collect();
    vec![
        format!("{:+.2}", d.offset),
        d.asymmetry.map(|s| format!("{s:+.2}")).unwrap_or_else(dash),
        d.cubic_shift
            .map(|v| format!("×{:.2}", v.exp()))
            .unwrap_or_else(dash),
        if flags.is_empty() {
            "no".into()
        } else {
            format!("yes: {}", flags.join(", "))
        },
    ]
}

/// The compute-optimal model at each target budget, with its intervals.
fn target_blocks(f: &FitReport) -> Vec<Block> {
    let mut b = vec![Block::H(
        2,
        "Extrapolation: the compute-optimal model for target budgets".into(),
    )];
    if f.compute_optimal.targets.is_empty() {
        b.push(Block::P(
            "No target budgets given (`--target-flops` or `target_flops:` in the sweep).".into(),
        ));
        return b;
    }
    let rows = f
        .compute_optimal
        .targets
        .iter()
        .map(|t| {
            vec![
                format!("{:.3e}", t.flops),
                format!("{:.3e}", t.n_opt),
                t.n_opt_ci
                    .map(|v| format!("{:.3e} – {:.3e}", v[0], v[1]))
                    .unwrap_or_else(|| "–".into()),
                format!("{:.3e}", t.d_opt),
                format!("{:.1}", t.tokens_per_param),
                num(t.loss),
                ci(t.loss_ci),
            ]
        })
        .collect();
    let head = [
        "C (FLOPs)",
        "N*",
        "N* 95% CI",
        "D*",
        "tokens/param",
        "predicted loss",
        "loss 95% CI",
    ];
    b.push(Block::Table(header(&head), rows));
    b
}

/// The held-out check: the prediction error on the held-out points, or why there is none.
fn holdout_blocks(f: &FitReport) -> Vec<Block> {
    let mut b = vec![Block::H(2, "Held-out prediction".into())];
    let Some(h) = &f.holdout else {
        b.push(Block::P(match &f.holdout_note {
            Some(n) => format!("The hold-out check could not be done: {n}."),
            None => {
                "No hold-out check was requested (`--holdout largest-budget` or a fraction).".into()
            }
        }));
        return b;
    };
    b.push(Block::P(format!(
        "Fitted on {} points without {} ({} points); prediction error on them: mean |Δloss| = {:.4}, mean {:.2}%, max {:.2}%.",
        h.fitted_points,
        h.rule,
        h.held_out_points,
        h.mean_abs_error,
        100.0 * h.mean_abs_pct_error,
        100.0 * h.max_abs_pct_error
    )));
    if let Some(r) = &h.replicates {
        b.push(Block::P(format!(
            "Part of that is the runs' own scatter: {}. Scatter and law error add roughly in quadrature, not linearly; a seed-mean error near {:.2}% is as small as these replicates can tell apart from zero.",
            r.summary(),
            100.0 * r.means_scatter_pct
        )));
    }
    b.push(Block::Table(
        header(&["N", "D", "observed", "predicted"]),
        h.points
            .iter()
            .map(|p| {
                vec![
                    format!("{:.3e}", p.n),
                    format!("{:.3e}", p.d),
                    num(p.loss),
                    num(p.predicted),
                ]
            })
            .collect(),
    ));
    b
}

/// The Kaplan single-variable and joint laws, and what they describe.
fn kaplan_blocks(f: &FitReport) -> Vec<Block> {
    let lowest = f
        .residuals
        .iter()
        .map(|r| r[2])
        .fold(f64::INFINITY, f64::min);
    let e_cell = |e: f64| kaplan_e_cell(e, lowest);
    let mut rows: Vec<Vec<String>> = f
        .kaplan
        .laws
        .iter()
        .map(|l| {
            vec![
                format!(
                    "L({0}) = ({0}_c/{0})^α{1}",
                    l.variable,
                    if l.e.is_some() { " + E" } else { "" }
                ),
                format!("{}_c = {:.3e}", l.variable, l.x_c),
                num(l.alpha),
                l.e.map(e_cell).unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    if let Some(j) = &f.kaplan.joint {
        rows.push(vec![
            "L(N,D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D".into(),
            format!("N_c = {:.3e}, D_c = {:.3e}", j.n_c, j.d_c),
            format!("α_N {}, α_D {}", num(j.alpha_n), num(j.alpha_d)),
            "–".into(),
        ]);
    }
    vec![
        Block::H(2, "Kaplan forms".into()),
        Block::Table(header(&["law", "scale", "exponent", "E"]), rows),
        Block::P(f.kaplan.note.clone()),
    ]
}

/// A Kaplan law's E; one above a loss the runs reached is no floor (the form does not
/// describe these points), and the cell says so.
fn kaplan_e_cell(e: f64, lowest_loss: f64) -> String {
    match e > lowest_loss {
        true => format!(
            "{} (above the lowest loss, {}: not a floor; the form does not fit)",
            num(e),
            num(lowest_loss)
        ),
        false => num(e),
    }
}

/// Every run, by N then D; N and C as the fit counts them.
fn runs_blocks(d: &ReportData) -> Vec<Block> {
    let mut runs: Vec<(&RunRecord, Point)> = d
        .runs
        .iter()
        .map(|r| (r, run_point(&d.fit_choice, r)))
        .collect();
    runs.sort_by(|a, b| a.1.n.total_cmp(&b.1.n).then(a.0.tokens.cmp(&b.0.tokens)));
    let head = [
        "run",
        "shape",
        "N",
        "D",
        "C",
        "eval loss",
        "bits/token",
        "bits/byte",
        "epochs",
        "tokens/s",
        "status",
    ];
    let rows = runs
        .iter()
        .map(|(r, p)| {
            vec![
                r.run_id.clone(),
                r.shape().label(),
                format!("{:.3e}", p.n),
                format!("{:.3e}", r.tokens as f64),
                format!("{:.3e}", p.c()),
                num(r.eval_loss),
                num(r.eval_bits_per_token),
                num(r.eval_bits_per_byte),
                format!("{:.2}", r.epochs),
                format!("{:.0}", r.tokens_per_s),
                r.status.to_string(),
            ]
        })
        .collect();
    vec![
        Block::H(2, "Runs".into()),
        Block::Table(header(&head), rows),
    ]
}

/// The n-gram baselines, and the best of them against the best run.
fn baseline_blocks(d: &ReportData) -> Vec<Block> {
    let mut b = vec![
        Block::H(2, "n-gram baselines (interpolated Kneser-Ney)".into()),
        Block::P("Trained on the first D training tokens the runs saw and scored on the same eval windows (each window predicts its tokens from the tokens before them in the window). Bits per byte compare across tokenizers.".into()),
    ];
    let head = [
        "n",
        "D (tokens)",
        "eval loss (nats/token)",
        "bits/byte",
        "n-grams",
    ];
    let rows = d
        .baselines
        .iter()
        .map(|r| {
            vec![
                r.order.to_string(),
                format!("{:.3e}", r.train_tokens as f64),
                num(r.eval_loss),
                num(r.eval_bits_per_byte),
                r.n_grams.to_string(),
            ]
        })
        .collect();
    b.push(Block::Table(header(&head), rows));
    let best = d
        .baselines
        .iter()
        .min_by(|a, b| a.eval_loss.total_cmp(&b.eval_loss));
    let best_run = d
        .runs
        .iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| r.eval_loss)
        .fold(f64::INFINITY, f64::min);
    if let Some(best) = best.filter(|_| best_run.is_finite()) {
        b.push(Block::P(format!(
            "Best n-gram: {}-gram on {:.3e} tokens, {} nats/token; best neural run: {} nats/token ({}).",
            best.order,
            best.train_tokens as f64,
            num(best.eval_loss),
            num(best_run),
            if best_run < best.eval_loss { "the Transformer wins" } else { "the n-gram wins" }
        )));
    }
    b
}

/// The loss-curve laws' two checks on this sweep's curves (`scalelab curves`).
fn curve_law_blocks(c: &fit::curve::CurveReport) -> Vec<Block> {
    use fit::curve::CheckKind;
    let mut b = vec![
        Block::H(2, "Loss-curve laws: predicting a run's end".into()),
        Block::P(format!(
            "Schedule-aware laws fitted on whole training curves ({}): each run's final loss predicted from its first half{}. `scalelab curves DIR` prints these and writes curve_laws.json.",
            c.source,
            if c.checks.iter().any(|k| k.kind == CheckKind::Transfer) {
                ", each shape's longest run from its shorter runs, and each run from one or two other runs of its shape (another schedule first: cosine ↔ WSD, other cooldowns, other lengths)"
            } else {
                " and each shape's longest run from its shorter runs"
            }
        )),
    ];
    let rows = c
        .checks
        .iter()
        .map(|k| {
            vec![
                k.law.name().to_string(),
                match k.kind {
                    CheckKind::Early => format!(
                        "first {:.0}% → final loss",
                        100.0 * k.fraction.unwrap_or(0.0)
                    ),
                    CheckKind::Longest => "shorter runs → longest run".into(),
                    CheckKind::Transfer => {
                        let cross = k.cases.iter().filter(|c| c.cross_schedule).count();
                        if cross > 0 {
                            format!("1–2 other runs → each run ({cross} across schedules)")
                        } else {
                            "1–2 other runs → each run".into()
                        }
                    }
                },
                k.cases.len().to_string(),
                format!("{:.2}%", 100.0 * k.mean_abs_rel_err),
                format!("{:.2}%", 100.0 * k.max_abs_rel_err),
            ]
        })
        .collect();
    b.push(Block::Table(
        header(&["law", "check", "predictions", "mean |error|", "max |error|"]),
        rows,
    ));
    b
}

/// The final-loss predictions made while the runs trained, scored against how the runs
/// ended, and what `--prune` stopped (nothing when neither happened).
fn prediction_blocks(d: &ReportData) -> Vec<Block> {
    let pruned: Vec<&RunRecord> = d
        .runs
        .iter()
        .filter(|r| r.status == Status::Pruned)
        .collect();
    if d.predictions.is_empty() && pruned.is_empty() {
        return Vec::new();
    }
    let mut b = vec![
        Block::H(2, "Predictions made during training".into()),
        Block::P(format!(
            "While each run trained, its final training loss (the mean over its last {:.0}% of steps) was predicted from its curve so far with the Multi-Power Law (with `--prune`, also a {}-refit bootstrap interval); every prediction is kept on its step's row of curves.parquet (`predicted_final_loss`, `_lo`, `_hi`). Scored here against how the runs ended:",
            100.0 * crate::curves::TRAIN_BLOCK,
            crate::curves::PREDICT_RESAMPLES
        )),
    ];
    let rows = d
        .predictions
        .iter()
        .map(|a| {
            vec![
                format!("{:.0}%", 100.0 * a.fraction),
                a.runs.to_string(),
                format!("{:.2}%", 100.0 * a.mean_abs_rel_err),
                format!("{:.2}%", 100.0 * a.max_abs_rel_err),
                a.coverage
                    .map(|c| format!("{:.0}%", 100.0 * c))
                    .unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    b.push(Block::Table(
        header(&[
            "predicted at",
            "runs",
            "mean |error|",
            "max |error|",
            "95% interval held the final loss",
        ]),
        rows,
    ));
    if !pruned.is_empty() {
        let planned: f64 = pruned.iter().map(|r| r.flops).sum();
        let spent: f64 = pruned.iter().map(|r| r.flops_spent).sum();
        let sweep: f64 = d
            .runs
            .iter()
            .filter(|r| r.flops_spent.is_finite())
            .map(|r| r.flops_spent)
            .sum();
        b.push(Block::P(format!(
            "`--prune` stopped {} runs early, saving {:.3e} FLOPs ({:.1}% of what the sweep would have spent); they are left out of the fit (`fit --include-pruned` fits them at their predicted final eval loss).",
            pruned.len(),
            planned - spent,
            100.0 * (planned - spent) / (sweep + planned - spent).max(1e-300)
        )));
    }
    b
}

/// The figures drawn, and the ones skipped with the reason.
fn figure_blocks(drawn: &[Fig], skipped: &[(Fig, String)]) -> Vec<Block> {
    let mut b = vec![Block::H(2, "Figures".into())];
    // The backtest figure is shown in "How far can this be trusted?".
    b.extend(
        drawn
            .iter()
            .filter(|f| **f != Fig::Backtest)
            .map(|f| Block::Figure(*f)),
    );
    if !skipped.is_empty() {
        b.push(Block::P(format!(
            "Skipped: {}.",
            skipped
                .iter()
                .map(|(f, r)| format!("{} ({r})", f.title()))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    b
}

fn render_md(blocks: &[Block], formats: &[Format]) -> String {
    let mut s = String::new();
    let ext = if formats.contains(&Format::Png) {
        "png"
    } else {
        "svg"
    };
    for b in blocks {
        match b {
            Block::H(level, t) => {
                let _ = writeln!(s, "{} {t}\n", "#".repeat(*level as usize));
            }
            Block::P(t) => {
                let _ = writeln!(s, "{t}\n");
            }
            Block::Table(head, rows) => {
                // A `|` inside a cell (e.g. "mean |error|") would split it.
                let cells = |v: &[String]| {
                    v.iter()
                        .map(|c| c.replace('|', "\\|"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let _ = writeln!(s, "| {} |", cells(head));
                let _ = writeln!(
                    s,
                    "|{}|",
                    head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
                );
                for r in rows {
                    let _ = writeln!(s, "| {} |", cells(r));
                }
                s.push('\n');
            }
            Block::Figure(f) => {
                let _ = writeln!(
                    s,
                    "### {}\n\n![{}](plots/{}.{ext})\n",
                    f.title(),
                    f.title(),
                    f.name()
                );
            }
        }
    }
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Standard base64 (for embedding PNGs in the HTML).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn render_html(
    title: &str,
    blocks: &[Block],
    plot_dir: &Path,
    formats: &[Format],
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222;line-height:1.45}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         th{{background:#f3f3f3}}img,svg{{max-width:100%;height:auto}}figure{{margin:1.5em 0}}</style></head><body>\n",
        esc(title)
    );
    for b in blocks {
        match b {
            Block::H(level, t) => {
                let _ = writeln!(s, "<h{level}>{}</h{level}>", esc(t));
            }
            Block::P(t) => {
                let _ = writeln!(s, "<p>{}</p>", esc(t));
            }
            Block::Table(head, rows) => {
                s.push_str("<table>");
                if head.iter().any(|h| !h.is_empty()) {
                    s.push_str("<tr>");
                    for h in head {
                        let _ = write!(s, "<th>{}</th>", esc(h));
                    }
                    s.push_str("</tr>");
                }
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        let _ = write!(s, "<td>{}</td>", esc(c));
                    }
                    s.push_str("</tr>");
                }
                s.push_str("</table>\n");
            }
            Block::Figure(f) => {
                let _ = write!(
                    s,
                    "<figure id=\"{}\"><figcaption><b>{}</b></figcaption>",
                    f.name(),
                    esc(f.title())
                );
                if formats.contains(&Format::Png) {
                    let png = std::fs::read(plot_dir.join(format!("{}.png", f.name())))?;
                    let _ = write!(
                        s,
                        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                        esc(f.title()),
                        base64(&png)
                    );
                } else {
                    let svg = std::fs::read_to_string(plot_dir.join(format!("{}.svg", f.name())))?;
                    let body = svg.find("<svg").map(|i| &svg[i..]).unwrap_or(&svg);
                    s.push_str(body);
                }
                s.push_str("</figure>\n");
            }
        }
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    /// Seeds of one point 26% apart are named; seeds within 10% are not.
    #[test]
    fn replicates_that_disagree_are_named() {
        use crate::results::testing::run;
        let mut rows = Vec::new();
        for (k, loss) in [1.471, 1.849, 1.50, 1.52].into_iter().enumerate() {
            let mut r = run(&format!("a{k}"), 1000, 1000, 5000, loss);
            r.d_model = 24;
            r.seed = k as i64;
            rows.push(r);
        }
        for (k, loss) in [1.30, 1.33].into_iter().enumerate() {
            let mut r = run(&format!("b{k}"), 2000, 2000, 5000, loss);
            r.d_model = 32;
            r.seed = k as i64;
            rows.push(r);
        }
        let w = replicate_warning(&rows).unwrap();
        assert!(w.contains("at 1 of 2 points"), "{w}");
        assert!(
            w.contains("1.4710–1.8490 over 4 runs, +26%; the highest is run a1"),
            "{w}"
        );
        // Runs the fit does not use (an LR grid's unselected runs) are no replicates.
        let mut grid = rows[2..].to_vec();
        let mut off = run("lr-off", 1000, 1000, 5000, 2.4);
        off.d_model = 24;
        off.selected = false;
        grid.push(off);
        assert!(replicate_warning(&grid).is_none());
        assert!(replicate_warning(&rows[2..]).is_none());
    }

    #[test]
    fn a_kaplan_e_above_the_data_is_flagged() {
        assert_eq!(kaplan_e_cell(0.4653, 1.2958), "0.4653");
        assert!(kaplan_e_cell(1.5421, 1.2958).contains("above the lowest loss, 1.2958"));
    }

    /// N of the report's points, curves and runs table, each sorted.
    fn report_ns(fit_yaml: &str, name: &str) -> (Vec<f64>, Vec<f64>, Vec<String>) {
        let dir = crate::results::testing::two_run_folder(name, fit_yaml);
        let folder = ResultsFolder::load(&dir).unwrap();
        let opts = FitOptions {
            bootstrap: 0,
            ..FitOptions::default()
        };
        let d = ReportData::from_folder(&folder, &opts).unwrap();
        assert!(d.fit.is_none(), "two points: no fit");
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let points = sorted(d.points.iter().map(|p| p.n).collect());
        let curves = sorted(d.curves.iter().map(|c| c.n).collect());
        let blocks = runs_blocks(&d);
        let Block::Table(head, rows) = &blocks[1] else {
            panic!("the runs table")
        };
        let col = head.iter().position(|h| h == "N").unwrap();
        let table = rows.iter().map(|r| r[col].clone()).collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(points, curves, "curves at the fit's N");
        (points, curves, table)
    }

    #[test]
    fn the_report_counts_n_as_the_fit_does() {
        let (points, _, table) = report_ns("fit: {n: total}", "report-n-total");
        assert_eq!(points, vec![1500.0, 5000.0]);
        assert_eq!(table, vec!["1.500e3", "5.000e3"]);
        let (points, _, table) = report_ns("", "report-n-default");
        assert_eq!(points, vec![1000.0, 4000.0]);
        assert_eq!(table, vec!["1.000e3", "4.000e3"]);
    }

    /// A folder of 16 runs on 4 IsoFLOP budgets from a known law, with `floor.json`.
    fn floor_folder(name: &str) -> PathBuf {
        use crate::results::testing::{run, tmp};
        let dir = tmp(name);
        let mut store = crate::store::ResultsStore::open(&dir, Vec::new()).unwrap();
        let law = fit::laws::ChinchillaParams {
            e: 1.7,
            a: 400.0,
            b: 1800.0,
            alpha: 0.34,
            beta: 0.28,
        };
        for k in 0..4 {
            let c = 1e15 * 10f64.powi(k);
            let n_star = law.optimal(c).0;
            for j in 0..4 {
                let n = (n_star * 3f64.powf(j as f64 - 1.5)).round();
                let d = (c / (6.0 * n)).round();
                let mut r = run(
                    &format!("r{k}{j}"),
                    n as i64,
                    n as i64,
                    d as i64,
                    law.predict(n, d),
                );
                r.budget = Some(c);
                store.add(r, Vec::new()).unwrap();
            }
        }
        let floor = Floor {
            nats_per_token: 1.6,
            bits_per_byte: 2.3,
            entropy_rate_bits_per_byte: 2.3,
        };
        std::fs::write(
            dir.join(crate::fsio::FLOOR_FILE),
            serde_json::to_string(&floor).unwrap(),
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_folder_with_a_floor_reports_the_pinned_fit_beside_the_free_one() {
        let dir = floor_folder("report-floor");
        let folder = ResultsFolder::load(&dir).unwrap();
        let opts = FitOptions {
            bootstrap: 20,
            grid_stride: 9,
            holdout: fit::Holdout::LargestBudget,
            targets: vec![1e14, 1e16, 1e18, 3e18, 1e19, 1e21],
            ..FitOptions::default()
        };
        let d = ReportData::from_folder(&folder, &opts).unwrap();
        let w = write(&d, &dir, &[Format::Svg]).unwrap();
        // The answer says how far each target lies beyond the runs and what was measured
        // there: the best run inside the range, the backtests at that distance, or none.
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        let answer = &md[..md.find("## Figures").unwrap()];
        let pinned = format!("with E pinned to the known loss floor {}: ", fit::num(1.6));
        for needle in [
            "At C = 1.000e18 FLOPs (inside the fitted compute range",
            "The lowest of the 4 runs at this budget reached",
            "At C = 1.000e19 FLOPs (10× the largest fitted C",
            "Rolling backtests of Approach 3 at 10× (up to 10×) erred by",
            "At C = 1.000e16 FLOPs (inside the fitted compute range",
            "At C = 3.000e18 FLOPs (3.0× the largest fitted C",
            "At C = 1.000e14 FLOPs (10× below the smallest fitted C",
            "At C = 1.000e21 FLOPs (1000× the largest fitted C",
            "Beyond the farthest rolling backtest (100×, up to 100×",
            "over 20 bootstrap laws: fit uncertainty, not extrapolation error",
            &pinned,
        ] {
            assert!(
                answer.contains(needle),
                "the answer lacks {needle:?}:\n{answer}"
            );
        }
        // 3× is answered by the nearest backtest that reached at least that far (10×), not
        // by a nearer one that fell short.
        let at_3x = answer
            .lines()
            .find(|l| l.contains("At C = 3.000e18"))
            .unwrap();
        assert!(at_3x.contains("Approach 3 at 10× (up to 10×)"), "{at_3x}");
        assert!(w.drawn.contains(&Fig::Backtest), "{:?}", w.skipped);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("fits.json")).unwrap()).unwrap();
        let fc = &json["e_floor"];
        assert_eq!(fc["pinned"]["E"].as_f64(), Some(1.6));
        let free_e = fc["free"]["E"].as_f64().unwrap();
        assert!(
            (free_e - 1.7).abs() < 0.01,
            "noise-free: the free fit finds the true E, {free_e}"
        );
        let rel = fc["free_e_rel_diff"].as_f64().unwrap();
        assert!((rel - 0.1 / 1.6).abs() < 0.01, "{rel}");
        assert_eq!(fc["law_is_pinned"].as_bool(), Some(false));
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        for needle in [
            "E free and E pinned to the loss floor",
            "E pinned to the floor",
            "How far can this be trusted?",
            "plots/backtest.svg",
            "more than 5%",
            "| α 95% CI |",
            "| held-out mean \\|error\\| |",
            "Fitted without the held-out points, the free law puts E at",
            "With E pinned to the known loss floor: mean |error|",
        ] {
            assert!(md.contains(needle), "report.md lacks {needle:?}");
        }
        // The pinned law's intervals and held-out check, beside the free law's.
        assert!(fc["pinned_bootstrap"]["alpha"][0].is_number());
        assert_eq!(
            fc["pinned_holdout"]["held_out_points"],
            json["holdout"]["held_out_points"]
        );
        assert_eq!(fc["pinned_holdout"]["fit"]["E"].as_f64(), Some(1.6));
        // The trust section comes right after the law.
        let (law, trust) = (
            md.find("## Approach 3").unwrap(),
            md.find("## How far").unwrap(),
        );
        assert!(law < trust && !md[law + 3..trust].contains("\n## "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
