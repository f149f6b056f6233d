//! The fitter: scaling laws from a table of (N, D, loss) points.
//!
//! Owns every fitting choice, each stated here and in `fits.json`:
//! * **Approach 3** (Chinchilla parametric, [`laws`]): `L = E + A/N^α + B/D^β`, minimising the
//!   **sum** of Huber_δ(log L̂ − log L) (δ = 1e-3 by default) with L-BFGS (argmin,
//!   More–Thuente line search, analytic gradients) from the standard 4,500-start grid, in
//!   parallel; the best local minimum wins. Starts that fail are counted, never fatal.
//! * **Kaplan** forms L(N), L(D), L(C) (with and without E) and the joint L(N, D).
//! * **Approach 2** (IsoFLOP parabolas) and **Approach 1** (training-curve envelope), in
//!   [`isoflop`].
//! * **Compute-optimal allocation** in closed form from Approach 3.
//! * **Bootstrap**: resample points with replacement (seeded); each resample is refitted from
//!   the full fit's optimum plus 8 grid starts drawn at random (seeded), a cheap set that
//!   still escapes a basin change; percentile 95% intervals for every parameter and derived number.
//! * **Held-out check**: refit without the largest budget (or a random fraction) and report
//!   the prediction error on the held-out points.
//!
//! Takes points only ([`Dataset`], `&[Point]`), from a table ([`Dataset::from_table`]) or a
//! results folder (`ResultsFolder::dataset` in the `results` module, which decides each
//! run's N and C); it reads no results folder or sweep spec itself. [`percentile`] and [`ci`] are the
//! one definition of a bootstrap interval, used by `fits.json`, the text and the report.

pub mod backtest;
pub mod constrained;
pub mod crossover;
pub mod curve;
pub mod families;
pub mod floor;
pub mod grouped;
pub mod hp;
pub mod interval;
pub mod isoflop;
pub mod laws;
pub mod optim;
pub mod power;
pub mod replicates;
pub mod vpnls;

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::bail_user;
use crate::hashing::Rng;
use crate::table::Table;
use isoflop::{Approach1, Approach2, CurvePoint};
pub use laws::FitObjective;
use laws::{ChinchillaObjective, ChinchillaParams, KaplanNdObjective, KaplanObjective};
use optim::{multi_start, Convergence, LbfgsOptions};

/// One observation.
#[derive(Debug, Clone)]
pub struct Point {
    pub n: f64,
    pub d: f64,
    pub loss: f64,
    pub budget: Option<f64>,
    /// Compute, when it is not 6ND.
    pub c: Option<f64>,
    /// Unique training tokens U_D (D > U_D: the run repeated its data), when known.
    pub unique: Option<f64>,
}

impl Point {
    /// Training compute: the recorded value when there is one (e.g. the fuller PaLM count
    /// chosen with `fit: {c: full}`), else C = 6ND.
    pub fn c(&self) -> f64 {
        self.c.unwrap_or(6.0 * self.n * self.d)
    }

    /// The budget the run was planned at, else its compute [`Point::c`]: how design-power
    /// noise is pooled ([`replicates::deviations_by_budget`]) and drawn ([`power::simulate`]).
    pub fn budget_or_c(&self) -> f64 {
        self.budget.unwrap_or_else(|| self.c())
    }

    /// Whether the run repeated its data (D above its unique tokens U_D, when known).
    pub fn repeats(&self) -> bool {
        self.unique.is_some_and(|u| self.d > u * (1.0 + 1e-9))
    }
}

/// Points plus where they came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub source: String,
    pub points: Vec<Point>,
    pub dropped_top: usize,
    /// Training curves (for Approach 1), when the source has them.
    pub curves: Vec<CurvePoint>,
}

/// Column names for a table input.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub n: String,
    pub d: Option<String>,
    pub c: Option<String>,
    pub loss: String,
    /// IsoFLOP budget column; text cells use the number in them (e.g. `isoflop-6e+19-…`).
    pub budget: Option<String>,
    /// Drop rows where any text cell contains this (e.g. `validation-optimal`).
    pub drop_matching: Option<String>,
    /// Unique-token column U_D, or an epochs column (U_D = D / epochs).
    pub unique: Option<String>,
    pub epochs: Option<String>,
    /// Drop rows whose cell in this column is true (`True`, `true` or 1), e.g. the
    /// collectors' `outlier` flag in `openathena_isoflops/isoflops.csv`.
    pub drop_outliers: Option<String>,
}

/// Whether a cell reads as true (`true`, `True`, `yes`, or a non-zero number).
fn truthy(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    s == "true" || s == "yes" || s.parse::<f64>().is_ok_and(|v| v != 0.0)
}

/// Numbers written in a text cell, in order, with whether each used an exponent.
fn numbers_in(s: &str) -> Vec<(f64, bool)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
            j += 1;
        }
        let mut sci = false;
        if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
            let mut k = j + 1;
            if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
                k += 1;
            }
            let digits = k;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            if k > digits {
                j = k;
                sci = true;
            }
        }
        if let Ok(v) = s[i..j].parse() {
            out.push((v, sci));
        }
        i = j.max(i + 1);
    }
    out
}

/// The budget written in a text cell such as a run name: the first number in scientific
/// notation (`exp2166-ladder-3e+19-x` → 3e19), else the first number.
fn budget_number(s: &str) -> Option<f64> {
    let nums = numbers_in(s);
    nums.iter().find(|n| n.1).or(nums.first()).map(|n| n.0)
}

/// The rows a table input keeps: not matching `--drop-matching`, not flagged by
/// `--drop-outliers`.
fn kept_rows(t: &Table, cols: &Columns) -> anyhow::Result<Vec<bool>> {
    let mut keep = match &cols.drop_matching {
        Some(m) => t.rows_matching(m).iter().map(|d| !d).collect(),
        None => vec![true; t.rows],
    };
    if let Some(o) = &cols.drop_outliers {
        for (k, cell) in t.text(o, "--drop-outliers")?.iter().enumerate() {
            keep[k] &= !cell.as_deref().is_some_and(truthy);
        }
    }
    Ok(keep)
}

/// D per row: the D column, or C / 6N from the compute column.
fn d_column(t: &Table, cols: &Columns, n: &[Option<f64>]) -> anyhow::Result<Vec<Option<f64>>> {
    Ok(match (&cols.d, &cols.c) {
        (Some(dc), _) => t.numeric(dc, "--d-col")?,
        (None, Some(cc)) => {
            let c = t.numeric(cc, "--c-col")?;
            c.iter()
                .zip(n)
                .map(|(c, n)| Some(c.as_ref()? / (6.0 * n.as_ref()?)))
                .collect()
        }
        (None, None) => bail_user!(
            "give the data size as --d-col COL, or the compute as --c-col COL (then D = C / 6N)"
        ),
    })
}

/// Unique tokens per row: the unique column, or D / epochs.
fn unique_column(t: &Table, cols: &Columns, d: &[Option<f64>]) -> anyhow::Result<Vec<Option<f64>>> {
    Ok(match (&cols.unique, &cols.epochs) {
        (Some(u), _) => t.numeric(u, "--unique-col")?,
        (None, Some(e)) => t
            .numeric(e, "--epochs-col")?
            .iter()
            .zip(d)
            .map(|(e, d)| Some(d.as_ref()? / e.filter(|e| *e > 0.0)?))
            .collect(),
        (None, None) => vec![None; t.rows],
    })
}

impl Dataset {
    /// Points from a CSV / Parquet file.
    pub fn from_table(path: &Path, cols: &Columns, drop_top: usize) -> anyhow::Result<Dataset> {
        let t = Table::read(path)?;
        let keep = kept_rows(&t, cols)?;
        Dataset::from_rows(&t, cols, &keep, path.display().to_string(), drop_top)
    }

    /// One dataset per distinct value of the `group_by` columns (joined with `/`, empty
    /// cells left out), in order of first appearance; `drop_top` applies to each.
    pub fn groups_from_table(
        path: &Path,
        cols: &Columns,
        group_by: &[String],
        drop_top: usize,
    ) -> anyhow::Result<Vec<Dataset>> {
        let t = Table::read(path)?;
        let keep = kept_rows(&t, cols)?;
        let keys: Vec<Vec<Option<String>>> = group_by
            .iter()
            .map(|g| t.text(g, "--group-by"))
            .collect::<anyhow::Result<_>>()?;
        let label = |k: usize| {
            let parts: Vec<&str> = keys.iter().filter_map(|c| c[k].as_deref()).collect();
            parts.join("/")
        };
        let mut labels: Vec<String> = Vec::new();
        for k in (0..t.rows).filter(|&k| keep[k]) {
            if !labels.contains(&label(k)) {
                labels.push(label(k));
            }
        }
        labels
            .into_iter()
            .map(|l| {
                let rows: Vec<bool> = (0..t.rows).map(|k| keep[k] && label(k) == l).collect();
                Dataset::from_rows(&t, cols, &rows, l, drop_top)
            })
            .collect()
    }

    /// Points from the rows of `t` marked in `keep`.
    fn from_rows(
        t: &Table,
        cols: &Columns,
        keep: &[bool],
        source: String,
        drop_top: usize,
    ) -> anyhow::Result<Dataset> {
        let n = t.numeric(&cols.n, "--n-col")?;
        let loss = t.numeric(&cols.loss, "--loss-col")?;
        let d = d_column(t, cols, &n)?;
        let budget: Vec<Option<f64>> = match &cols.budget {
            Some(b) => t
                .text(b, "--budget-col")?
                .iter()
                .map(|s| s.as_deref().and_then(budget_number))
                .collect(),
            None => vec![None; t.rows],
        };
        let unique = unique_column(t, cols, &d)?;
        let mut points = Vec::new();
        let d_name = cols.d.as_deref().or(cols.c.as_deref()).unwrap_or("D");
        for k in (0..t.rows).filter(|&k| keep[k]) {
            let nv = t.positive(&n, k, "N", &cols.n)?;
            let dv = t.positive(&d, k, "D", d_name)?;
            let lv = t.positive(&loss, k, "loss", &cols.loss)?;
            points.push(Point {
                n: nv,
                d: dv,
                loss: lv,
                budget: budget[k],
                c: None,
                unique: unique[k],
            });
        }
        let mut ds = Dataset {
            source,
            points,
            dropped_top: 0,
            curves: Vec::new(),
        };
        ds.drop_top(drop_top)?;
        Ok(ds)
    }

    /// Drop the `k` highest-loss points (Epoch's rule: keep losses strictly below the k-th largest).
    pub fn drop_top(&mut self, k: usize) -> anyhow::Result<()> {
        if k == 0 {
            return Ok(());
        }
        if k >= self.points.len() {
            bail_user!("--drop-top {k} would drop all {} points", self.points.len());
        }
        let mut losses: Vec<f64> = self.points.iter().map(|p| p.loss).collect();
        losses.sort_by(|a, b| b.total_cmp(a));
        let cut = losses[k - 1];
        let before = self.points.len();
        self.points.retain(|p| p.loss < cut);
        self.dropped_top = before - self.points.len();
        Ok(())
    }

    fn check(&self, min_points: usize) -> anyhow::Result<()> {
        if self.points.len() < min_points {
            bail_user!(
                "{}: {} usable point(s), but the Chinchilla law has 5 parameters: fitting needs at least {min_points}",
                self.source,
                self.points.len()
            );
        }
        let l0 = self.points[0].loss;
        if self
            .points
            .iter()
            .all(|p| (p.loss - l0).abs() <= 1e-12 * l0)
        {
            bail_user!(
                "{}: every loss equals {l0}; a scaling law cannot be fitted to constant losses",
                self.source
            );
        }
        Ok(())
    }
}

/// How to hold points out for the prediction check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout {
    None,
    LargestBudget,
    Fraction(f64),
}

impl Holdout {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "none" => Ok(Holdout::None),
            "largest-budget" => Ok(Holdout::LargestBudget),
            _ => match s.parse::<f64>() {
                Ok(f) if f > 0.0 && f < 1.0 => Ok(Holdout::Fraction(f)),
                _ => bail_user!("--holdout {s:?}: use `largest-budget`, `none`, or a fraction in (0, 1) such as 0.2"),
            },
        }
    }
}

/// Which fitter gives the Chinchilla law (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Approach 3: L-BFGS over all 5 parameters from the 4,500-start grid.
    A3,
    /// Variable projection: (E, A, B) by NNLS, (α, β) searched ([`vpnls`]).
    Vpnls,
    /// Approach 3 as the law, VPNLS beside it (the default: VPNLS costs little).
    #[default]
    Both,
}

impl Method {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "a3" => Ok(Method::A3),
            "vpnls" => Ok(Method::Vpnls),
            "both" => Ok(Method::Both),
            _ => bail_user!("--method {s:?}: use a3, vpnls or both"),
        }
    }
}

impl FitObjective {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "huber" => Ok(FitObjective::Huber),
            "sse" => Ok(FitObjective::Sse),
            _ => bail_user!(
                "--objective {s:?}: use huber (Huber on log-loss) or sse (squared error on L)"
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub delta: f64,
    pub fixed_e: Option<f64>,
    /// The known irreducible loss (the built-in corpus's `floor.json`): the law is also
    /// fitted with E pinned there and shown beside the free fit.
    pub floor: Option<f64>,
    /// Pin E to `floor` (`fit: {e: floor}`, `--e-floor`).
    pub pin_e_to_floor: bool,
    pub method: Method,
    pub objective: FitObjective,
    /// Rolling backtests over the compute budgets ([`backtest`]).
    pub backtest: bool,
    pub bootstrap: usize,
    pub seed: u64,
    pub holdout: Holdout,
    pub targets: Vec<f64>,
    /// Use only every k-th grid start (1 = the full 4,500).
    pub grid_stride: usize,
    /// Fit the data-constrained law even when no point repeats its data.
    pub data_constrained: bool,
    /// A results folder's `pruned` runs are fitted too, at their predicted final eval loss
    /// (`ResultsFolder::dataset_with` selects them).
    pub include_pruned: bool,
    /// Base law for the data-constrained fit (default: the Approach-3 fit on single-epoch
    /// points).
    pub base: Option<ChinchillaParams>,
    /// A loss to overtake (the sweep's best n-gram baseline): the fit reports the compute
    /// where the frontier crosses it ([`crossover`]).
    pub reference: Option<crossover::Reference>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            delta: 1e-3,
            fixed_e: None,
            floor: None,
            pin_e_to_floor: false,
            method: Method::Both,
            objective: FitObjective::Huber,
            backtest: true,
            bootstrap: 1000,
            seed: 42,
            holdout: Holdout::None,
            targets: Vec::new(),
            grid_stride: 1,
            data_constrained: false,
            include_pruned: false,
            base: None,
            reference: None,
        }
    }
}

/// Approach-3 fit result.
#[derive(Debug, Clone, Serialize)]
pub struct Approach3 {
    #[serde(flatten)]
    pub params: ChinchillaParams,
    pub objective: f64,
    /// Log-space parameters [a, b, e, α, β].
    pub log_params: [f64; 5],
    pub fixed_e: Option<f64>,
    pub huber_delta: f64,
    /// Which fitter produced it (`a3` or `vpnls`) and what it minimised.
    pub method: Method,
    pub objective_kind: FitObjective,
    pub convergence: Convergence,
    pub seconds: f64,
}

/// Fit Approach 3 from the given starts (each `[a, b, e, α, β]`).
pub fn fit_chinchilla(
    points: &[Point],
    opts: &FitOptions,
    starts: &[Vec<f64>],
) -> anyhow::Result<Approach3> {
    let t0 = Instant::now();
    let ln_n: Vec<f64> = points.iter().map(|p| p.n.ln()).collect();
    let ln_d: Vec<f64> = points.iter().map(|p| p.d.ln()).collect();
    let ln_l: Vec<f64> = points.iter().map(|p| p.loss.ln()).collect();
    let fixed_e = opts.fixed_e.map(f64::ln);
    let obj = ChinchillaObjective {
        ln_n: &ln_n,
        ln_d: &ln_d,
        ln_l: &ln_l,
        delta: opts.delta,
        fixed_e,
        objective: opts.objective,
    };
    let starts: Vec<Vec<f64>> = match fixed_e {
        Some(_) => dedup(
            starts
                .iter()
                .map(|s| vec![s[0], s[1], s[3], s[4]])
                .collect(),
        ),
        None => starts.to_vec(),
    };
    // A, B, E = exp(a), exp(b), exp(e) must stay finite.
    let finite = |x: &[f64]| obj.full(x).iter().take(3).all(|v| v.abs() < 700.0);
    let Some((best, convergence)) =
        optim::multi_start_valid(&obj, &starts, LbfgsOptions::default(), finite)
    else {
        anyhow::bail!("every one of the {} L-BFGS starts failed", starts.len());
    };
    let full = obj.full(&best.x);
    Ok(Approach3 {
        params: ChinchillaParams::from_log(full),
        objective: best.objective,
        log_params: full,
        fixed_e: opts.fixed_e,
        huber_delta: opts.delta,
        method: Method::A3,
        objective_kind: opts.objective,
        convergence,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The Chinchilla law by the chosen method: VPNLS when `--method vpnls`, else Approach 3
/// from `starts`. Bootstrap, hold-out and backtests all refit through here.
pub fn fit_law(
    points: &[Point],
    opts: &FitOptions,
    starts: &[Vec<f64>],
) -> anyhow::Result<Approach3> {
    if opts.method != Method::Vpnls {
        return fit_chinchilla(points, opts, starts);
    }
    let v = fit_vpnls(points, opts.fixed_e);
    let p = v.params;
    let ln = |x: f64| x.max(1e-300).ln();
    Ok(Approach3 {
        params: p,
        objective: v.sse,
        log_params: [ln(p.a), ln(p.b), ln(p.e), p.alpha, p.beta],
        fixed_e: opts.fixed_e,
        huber_delta: opts.delta,
        method: Method::Vpnls,
        objective_kind: FitObjective::Sse,
        convergence: Convergence {
            starts: v.grid_points,
            failed_starts: 0,
            converged_starts: 1,
            best_iterations: v.refine_evaluations as u64,
            best_grad_norm: f64::NAN,
            best_converged: true,
        },
        seconds: v.seconds,
    })
}

/// VPNLS on the points ([`vpnls::fit`]).
pub fn fit_vpnls(points: &[Point], fixed_e: Option<f64>) -> vpnls::VpnlsFit {
    let ln_n: Vec<f64> = points.iter().map(|p| p.n.ln()).collect();
    let ln_d: Vec<f64> = points.iter().map(|p| p.d.ln()).collect();
    let loss: Vec<f64> = points.iter().map(|p| p.loss).collect();
    vpnls::fit(&ln_n, &ln_d, &loss, fixed_e)
}

/// Σ (L̂ − L)² of a law over the points.
pub fn sse(p: &ChinchillaParams, points: &[Point]) -> f64 {
    points
        .iter()
        .map(|q| (p.predict(q.n, q.d) - q.loss).powi(2))
        .sum()
}

fn dedup(mut v: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    v.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    v.dedup();
    v
}

/// A Kaplan single-variable law `L = (X_c / X)^α (+ E)`.
#[derive(Debug, Clone, Serialize)]
pub struct KaplanLaw {
    pub variable: String,
    pub x_c: f64,
    pub alpha: f64,
    #[serde(rename = "E")]
    pub e: Option<f64>,
    pub objective: f64,
}

/// Kaplan's joint law `L = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D`.
#[derive(Debug, Clone, Serialize)]
pub struct KaplanJoint {
    pub n_c: f64,
    pub d_c: f64,
    pub alpha_n: f64,
    pub alpha_d: f64,
    pub objective: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kaplan {
    pub laws: Vec<KaplanLaw>,
    pub joint: Option<KaplanJoint>,
    pub note: String,
}

/// Fit one Kaplan single-variable law.
pub fn fit_kaplan_single(
    name: &str,
    x: &[f64],
    loss: &[f64],
    with_e: bool,
    delta: f64,
) -> Option<KaplanLaw> {
    let ln_x: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ln_l: Vec<f64> = loss.iter().map(|v| v.ln()).collect();
    let obj = KaplanObjective {
        ln_x: &ln_x,
        ln_l: &ln_l,
        delta,
        with_e,
    };
    let mx = ln_x.iter().sum::<f64>() / ln_x.len() as f64;
    let mean_l = loss.iter().sum::<f64>() / loss.len() as f64;
    let min_l = loss.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut starts = Vec::new();
    for &al in &[0.02, 0.05, 0.1, 0.2, 0.4, 0.8] {
        if with_e {
            for &frac in &[0.2, 0.5, 0.8, 0.95] {
                let e = frac * min_l;
                let k = (mean_l - e).max(1e-6).ln() + al * mx;
                starts.push(vec![k, al, e.ln()]);
            }
        } else {
            starts.push(vec![mean_l.ln() + al * mx, al]);
        }
    }
    let (best, _) = multi_start(&obj, &starts, LbfgsOptions::default())?;
    let (k, al) = (best.x[0], best.x[1]);
    Some(KaplanLaw {
        variable: name.to_string(),
        x_c: (k / al).exp(),
        alpha: al,
        e: with_e.then(|| best.x[2].exp()),
        objective: best.objective,
    })
}

fn fit_kaplan(points: &[Point], delta: f64) -> Kaplan {
    let loss: Vec<f64> = points.iter().map(|p| p.loss).collect();
    let mut laws = Vec::new();
    for (name, xs) in [
        ("N", points.iter().map(|p| p.n).collect::<Vec<_>>()),
        ("D", points.iter().map(|p| p.d).collect()),
        ("C", points.iter().map(|p| p.c()).collect()),
    ] {
        for with_e in [false, true] {
            if let Some(l) = fit_kaplan_single(name, &xs, &loss, with_e, delta) {
                laws.push(l);
            }
        }
    }
    let ln_n: Vec<f64> = points.iter().map(|p| p.n.ln()).collect();
    let ln_d: Vec<f64> = points.iter().map(|p| p.d.ln()).collect();
    let ln_l: Vec<f64> = loss.iter().map(|v| v.ln()).collect();
    let obj = KaplanNdObjective {
        ln_n: &ln_n,
        ln_d: &ln_d,
        ln_l: &ln_l,
        delta,
    };
    let mut starts = Vec::new();
    for &q in &[0.5, 1.0, 2.0] {
        for &ad in &[0.05, 0.1, 0.3] {
            for &lnc in &[18.0, 25.0, 32.0] {
                for &ldc in &[18.0, 25.0, 32.0] {
                    starts.push(vec![q * lnc, q, ldc, ad]);
                }
            }
        }
    }
    let joint = multi_start(&obj, &starts, LbfgsOptions::default()).map(|(b, _)| KaplanJoint {
        n_c: (b.x[0] / b.x[1]).exp(),
        d_c: b.x[2].exp(),
        alpha_n: b.x[1] * b.x[3],
        alpha_d: b.x[3],
        objective: b.objective,
    });
    Kaplan {
        laws,
        joint,
        note: "single-variable laws are fitted to all points, whatever the other variable; they describe \
               the data only where that variable is the bottleneck (Kaplan et al. fit them on converged or \
               compute-optimal runs)"
            .into(),
    }
}

/// Compute-optimal allocation for a target budget.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub flops: f64,
    pub n_opt: f64,
    pub d_opt: f64,
    pub tokens_per_param: f64,
    pub loss: f64,
    /// 95% bootstrap intervals [lo, hi] (when bootstrapped).
    pub n_opt_ci: Option<[f64; 2]>,
    pub d_opt_ci: Option<[f64; 2]>,
    pub loss_ci: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComputeOptimal {
    /// N_opt ∝ C^a, a = β/(α+β).
    pub a: f64,
    /// D_opt ∝ C^b, b = α/(α+β).
    pub b: f64,
    /// G = (αA/(βB))^(1/(α+β)); N* = G (C/6)^a, D* = (C/6)^b / G.
    #[serde(rename = "G")]
    pub g: f64,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
    pub starts_per_resample: usize,
    pub failed_resamples: usize,
    pub seconds: f64,
    /// 95% percentile intervals.
    #[serde(rename = "E")]
    pub e: [f64; 2],
    #[serde(rename = "A")]
    pub a_coef: [f64; 2],
    #[serde(rename = "B")]
    pub b_coef: [f64; 2],
    pub alpha: [f64; 2],
    pub beta: [f64; 2],
    /// Interval of the compute-optimal exponent a.
    pub a: [f64; 2],
    /// Every resample's (E, A, B, α, β), for plots.
    pub samples: Vec<[f64; 5]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldOutPoint {
    pub n: f64,
    pub d: f64,
    pub loss: f64,
    pub predicted: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HoldoutReport {
    pub rule: String,
    pub fitted_points: usize,
    pub held_out_points: usize,
    pub fit: ChinchillaParams,
    /// Mean |predicted − observed| loss.
    pub mean_abs_error: f64,
    /// Mean |predicted − observed| / observed.
    pub mean_abs_pct_error: f64,
    pub max_abs_pct_error: f64,
    /// With seeds repeated at a held-out (N, D): the error of their means and the runs'
    /// own scatter, about what a law exact at every point would score on single runs.
    pub replicates: Option<replicates::ReplicateNoise>,
    pub points: Vec<HeldOutPoint>,
}

/// Everything `scalelab fit` reports. The top level carries the Approach-3 point estimate.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    #[serde(rename = "E")]
    pub e: f64,
    #[serde(rename = "A")]
    pub a: f64,
    #[serde(rename = "B")]
    pub b: f64,
    pub alpha: f64,
    pub beta: f64,
    pub objective: f64,
    pub source: String,
    pub n_points: usize,
    pub dropped_top: usize,
    pub approach3: Approach3,
    pub compute_optimal: ComputeOptimal,
    pub bootstrap: Option<Bootstrap>,
    pub kaplan: Kaplan,
    pub approach2: Approach2,
    pub approach1: Option<Approach1>,
    pub holdout: Option<HoldoutReport>,
    /// Why a requested hold-out check could not be done.
    pub holdout_note: Option<String>,
    /// Per-point predictions of the Approach-3 fit: (N, D, loss, predicted).
    pub residuals: Vec<[f64; 4]>,
    pub choices: Vec<String>,
    /// Signs that the data do not pin the law down.
    pub warnings: Vec<String>,
    /// The data-constrained law (Muennighoff et al. 2023), when points repeat their data.
    pub data_constrained: Option<constrained::ConstrainedFit>,
    /// Where its base law came from.
    pub data_constrained_base: Option<String>,
    /// VPNLS beside Approach 3 (`--method both`).
    pub vpnls: Option<vpnls::Comparison>,
    /// The law with E pinned to the known floor beside the free law (results folders with
    /// `floor.json`).
    pub e_floor: Option<floor::FloorComparison>,
    /// Rolling backtests over the compute budgets.
    pub backtest: Option<backtest::Backtest>,
    /// What prediction intervals of new runs are built from (with a bootstrap).
    pub prediction: Option<interval::PredictionModel>,
    /// Where the frontier overtakes the reference loss (the best n-gram baseline).
    pub crossover: Option<crossover::Crossover>,
    pub timings: Timings,
}

/// Wall-clock seconds of each part of the fit (`fit --json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub law: f64,
    pub vpnls: f64,
    pub bootstrap: f64,
    pub e_floor: f64,
    pub backtest: f64,
    pub total: f64,
}

impl FitReport {
    /// The 95% prediction interval of a new run's loss at (N, D): bootstrap laws plus
    /// resampled residuals ([`interval`]); `None` without a bootstrap.
    pub fn prediction_interval(&self, n: f64, d: f64) -> Option<[f64; 2]> {
        let laws = self.bootstrap.as_ref()?.params();
        Some(self.prediction.as_ref()?.interval(&laws, n, d, 0.95))
    }
}

impl Bootstrap {
    /// Every resample's fitted law.
    pub fn params(&self) -> Vec<ChinchillaParams> {
        self.samples
            .iter()
            .map(|s| ChinchillaParams {
                e: s[0],
                a: s[1],
                b: s[2],
                alpha: s[3],
                beta: s[4],
            })
            .collect()
    }
}

/// The `q` quantile of `v` (sorted in place), interpolated linearly between order statistics.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The 95% percentile interval [2.5%, 97.5%] of `v` ([`percentile`]); NaN when `v` is empty.
pub fn ci(mut v: Vec<f64>) -> [f64; 2] {
    if v.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    [percentile(&mut v, 0.025), percentile(&mut v, 0.975)]
}

/// The standard grid, thinned by `stride`.
pub fn grid(stride: usize) -> Vec<Vec<f64>> {
    laws::chinchilla_grid()
        .into_iter()
        .step_by(stride.max(1))
        .collect()
}

/// Bootstrap Approach 3.
pub fn bootstrap(points: &[Point], full: &Approach3, opts: &FitOptions) -> Bootstrap {
    let t0 = Instant::now();
    let g = laws::chinchilla_grid();
    let per = 9;
    let results: Vec<Option<ChinchillaParams>> = (0..opts.bootstrap)
        .into_par_iter()
        .map(|k| {
            let mut rng = Rng::new(opts.seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64));
            let sample: Vec<Point> = (0..points.len())
                .map(|_| points[rng.below(points.len())].clone())
                .collect();
            let mut starts = vec![full.log_params.to_vec()];
            for _ in 0..per - 1 {
                starts.push(g[rng.below(g.len())].clone());
            }
            fit_law(&sample, opts, &starts).ok().map(|a| a.params)
        })
        .collect();
    let ok: Vec<ChinchillaParams> = results.iter().flatten().copied().collect();
    let col = |f: &dyn Fn(&ChinchillaParams) -> f64| ci(ok.iter().map(f).collect());
    Bootstrap {
        resamples: opts.bootstrap,
        seed: opts.seed,
        starts_per_resample: per,
        failed_resamples: results.len() - ok.len(),
        seconds: t0.elapsed().as_secs_f64(),
        e: col(&|p| p.e),
        a_coef: col(&|p| p.a),
        b_coef: col(&|p| p.b),
        alpha: col(&|p| p.alpha),
        beta: col(&|p| p.beta),
        a: col(&|p| p.exponent_a()),
        samples: ok
            .iter()
            .map(|p| [p.e, p.a, p.b, p.alpha, p.beta])
            .collect(),
    }
}

fn holdout(points: &[Point], opts: &FitOptions) -> anyhow::Result<Option<HoldoutReport>> {
    let (rule, held): (String, Vec<bool>) = match opts.holdout {
        Holdout::None => return Ok(None),
        Holdout::LargestBudget => {
            let (grouping, groups) = isoflop::group_budgets(points);
            let Some((b, idx)) = groups.last() else {
                return Ok(None);
            };
            let mut h = vec![false; points.len()];
            for &i in idx {
                h[i] = true;
            }
            (format!("largest budget C = {b:.3e} ({grouping})"), h)
        }
        Holdout::Fraction(f) => {
            let mut rng = Rng::new(opts.seed ^ 0x401D);
            (
                format!("random {:.0}% of points (seed {})", f * 100.0, opts.seed),
                (0..points.len()).map(|_| rng.next_f64() < f).collect(),
            )
        }
    };
    let train: Vec<Point> = points
        .iter()
        .zip(&held)
        .filter(|(_, &h)| !h)
        .map(|(p, _)| p.clone())
        .collect();
    let test: Vec<&Point> = points
        .iter()
        .zip(&held)
        .filter(|(_, &h)| h)
        .map(|(p, _)| p)
        .collect();
    if test.is_empty() || train.len() < 6 {
        bail_user!(
            "hold-out ({rule}) leaves {} point(s) to fit and {} to check; need at least 6 and 1",
            train.len(),
            test.len()
        );
    }
    let fit = fit_law(&train, opts, &grid(opts.grid_stride))?;
    let pts: Vec<HeldOutPoint> = test
        .iter()
        .map(|p| HeldOutPoint {
            n: p.n,
            d: p.d,
            loss: p.loss,
            predicted: fit.params.predict(p.n, p.d),
        })
        .collect();
    let abs: Vec<f64> = pts.iter().map(|p| (p.predicted - p.loss).abs()).collect();
    let pct: Vec<f64> = pts
        .iter()
        .map(|p| (p.predicted - p.loss).abs() / p.loss)
        .collect();
    Ok(Some(HoldoutReport {
        rule,
        fitted_points: train.len(),
        held_out_points: pts.len(),
        fit: fit.params,
        mean_abs_error: abs.iter().sum::<f64>() / abs.len() as f64,
        mean_abs_pct_error: pct.iter().sum::<f64>() / pct.len() as f64,
        max_abs_pct_error: pct.iter().cloned().fold(0.0, f64::max),
        replicates: replicates::replicate_noise(&pts),
        points: pts,
    }))
}

/// The points split by whether they repeat their data (D > unique tokens): those follow the
/// data-constrained law, not the base law, so the base fit uses single-epoch points only and
/// the data-constrained fit every point.
struct EpochSplit {
    /// The single-epoch points (Approaches 1-3, Kaplan), with the source's curves.
    single: Dataset,
    /// The points that repeat their data.
    repeated: Vec<Point>,
}

fn split_epochs(data: &Dataset, opts: &FitOptions) -> anyhow::Result<EpochSplit> {
    if opts.data_constrained && data.points.iter().all(|q| q.unique.is_none()) {
        bail_user!(
            "--data-constrained needs the unique tokens of each run: give --unique-col COL, or --epochs-col COL (U = D / epochs)"
        );
    }
    let (repeated, single): (Vec<Point>, Vec<Point>) =
        data.points.iter().cloned().partition(Point::repeats);
    let single = Dataset {
        points: single,
        ..data.clone()
    };
    let n_repeated = repeated.len();
    single.check(6).map_err(|e| {
        if n_repeated > 0 {
            crate::error::user(format!(
                "{e} (single-epoch points only: {n_repeated} points that repeat their data are left to the data-constrained fit)"
            ))
        } else {
            e
        }
    })?;
    Ok(EpochSplit { single, repeated })
}

/// The options with E resolved: pinned to the floor when asked (a user error without one).
fn resolve_e(opts: &FitOptions, points: &[Point]) -> anyhow::Result<FitOptions> {
    let mut o = opts.clone();
    if opts.pin_e_to_floor {
        let Some(fl) = opts.floor else {
            bail_user!("E pinned to the loss floor (`fit: {{e: floor}}` or --e-floor), but there is no floor.json: only the built-in corpus has a known floor; use --fix-e VALUE instead");
        };
        o.fixed_e = Some(fl);
    }
    // An explicit --fix-e at or above every loss is a slip; the corpus's exact floor is not
    // checked (a run may land a hair below it on a finite eval set by chance).
    let lowest = points.iter().map(|p| p.loss).fold(f64::INFINITY, f64::min);
    if let Some(e) = opts
        .fixed_e
        .filter(|&e| e >= lowest && !opts.pin_e_to_floor)
    {
        bail_user!(
            "--fix-e {e} is not below the lowest loss of the data ({lowest}): the irreducible loss lies below every observed loss; fix E lower, or fit it (drop --fix-e)"
        );
    }
    Ok(o)
}

/// Time a step, adding its seconds to `t`.
fn timed<T>(t: &mut f64, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let v = f();
    *t += t0.elapsed().as_secs_f64();
    v
}

/// Approach 2 with its exponent's bootstrap interval (as many resamples as Approach 3's).
fn approach2_with_interval(pts: &[Point], opts: &FitOptions, tm: &mut Timings) -> Approach2 {
    let mut a2 = isoflop::approach2(pts);
    a2.a_ci = timed(&mut tm.bootstrap, || {
        isoflop::approach2_interval(pts, opts.bootstrap, opts.seed)
    });
    a2
}

/// Run every fit on a dataset.
pub fn fit_all(data: &Dataset, opts: &FitOptions) -> anyhow::Result<FitReport> {
    let t0 = Instant::now();
    if !(opts.delta > 0.0) {
        bail_user!("--huber-delta must be positive");
    }
    let opts = &resolve_e(opts, &data.points)?;
    let EpochSplit {
        single: data,
        repeated,
    } = split_epochs(data, opts)?;
    let pts = &data.points;
    let mut tm = Timings::default();
    let a3 = timed(&mut tm.law, || fit_law(pts, opts, &grid(opts.grid_stride)))?;
    let p = a3.params;
    let boot = timed(&mut tm.bootstrap, || {
        (opts.bootstrap > 0).then(|| bootstrap(pts, &a3, opts))
    });
    let (holdout, holdout_note) = match holdout(pts, opts) {
        Ok(h) => (h, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut warnings = law_warnings(&p, pts, boot.as_ref());
    let (data_constrained, data_constrained_base) = if !repeated.is_empty() || opts.data_constrained
    {
        let (f, from) = fit_data_constrained(pts, &repeated, p, opts, &mut warnings)?;
        (Some(f), Some(from))
    } else {
        (None, None)
    };
    if !repeated.is_empty() {
        warnings.push(format!(
            "{} of {} points repeat their data (D > unique tokens): Approaches 1-3 and Kaplan use the {} single-epoch points; the data-constrained law uses all",
            repeated.len(),
            pts.len() + repeated.len(),
            pts.len()
        ));
    }
    let extras = extras(pts, opts, &a3, &mut tm, &mut warnings)?;
    let approach2 = approach2_with_interval(pts, opts, &mut tm);
    warnings.extend(isoflop::warnings(&approach2));
    let crossover = crossover_of(&p, boot.as_ref(), pts, &repeated, opts);
    tm.total = t0.elapsed().as_secs_f64();
    Ok(FitReport {
        data_constrained,
        data_constrained_base,
        warnings,
        e: p.e,
        a: p.a,
        b: p.b,
        alpha: p.alpha,
        beta: p.beta,
        objective: a3.objective,
        source: data.source.clone(),
        n_points: pts.len(),
        dropped_top: data.dropped_top,
        compute_optimal: compute_optimal(&p, boot.as_ref(), &opts.targets),
        prediction: boot.as_ref().map(|_| {
            let n_free = if opts.fixed_e.is_some() { 4 } else { 5 };
            interval::PredictionModel::new(&p, pts, n_free, opts.seed)
        }),
        approach3: a3,
        bootstrap: boot,
        kaplan: fit_kaplan(pts, opts.delta),
        approach2,
        approach1: (!data.curves.is_empty()).then(|| isoflop::approach1(&data.curves, 30)),
        holdout,
        holdout_note,
        residuals: pts
            .iter()
            .map(|q| [q.n, q.d, q.loss, p.predict(q.n, q.d)])
            .collect(),
        choices: choices(opts),
        vpnls: extras.vpnls,
        e_floor: extras.e_floor,
        backtest: extras.backtest,
        crossover,
        timings: tm,
    })
}

/// Where the frontier crosses the reference loss, over every point (repeated data included).
fn crossover_of(
    p: &ChinchillaParams,
    boot: Option<&Bootstrap>,
    single: &[Point],
    repeated: &[Point],
    opts: &FitOptions,
) -> Option<crossover::Crossover> {
    let r = opts.reference.as_ref()?;
    let all: Vec<Point> = single.iter().chain(repeated).cloned().collect();
    let samples = boot.map(|b| b.params());
    Some(crossover::crossover(p, samples.as_deref(), &all, r))
}

/// The fits beside the law: VPNLS, the floor comparison and the backtests.
struct Extras {
    vpnls: Option<vpnls::Comparison>,
    e_floor: Option<floor::FloorComparison>,
    backtest: Option<backtest::Backtest>,
}

fn extras(
    pts: &[Point],
    opts: &FitOptions,
    a3: &Approach3,
    tm: &mut Timings,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Extras> {
    let vpnls = timed(&mut tm.vpnls, || {
        (opts.method == Method::Both).then(|| {
            let v = fit_vpnls(pts, opts.fixed_e);
            let huber = opts.objective == FitObjective::Huber;
            vpnls::compare(v, &a3.params, sse(&a3.params, pts), huber)
        })
    });
    let e_floor = timed(&mut tm.e_floor, || {
        opts.floor
            .map(|fl| floor::compare(pts, opts, a3, fl))
            .transpose()
    })?;
    warnings.extend(e_floor.as_ref().and_then(|f| f.warning.clone()));
    let backtest = timed(&mut tm.backtest, || {
        opts.backtest.then(|| backtest::run(pts, opts)).flatten()
    });
    Ok(Extras {
        vpnls,
        e_floor,
        backtest,
    })
}

/// 95% bootstrap intervals of the compute-optimal allocation at one budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimalCi {
    pub n: [f64; 2],
    pub d: [f64; 2],
    pub loss: [f64; 2],
}

/// The intervals of N_opt, D_opt and the predicted loss at budget `c` over the resampled
/// laws whose optimum is finite ([`ci`]). `fits.json`'s targets and the report's plotted
/// bands both come from here, so the band drawn is the interval reported.
pub fn optimal_ci(samples: &[ChinchillaParams], c: f64) -> OptimalCi {
    let opt: Vec<(&ChinchillaParams, (f64, f64))> = samples
        .iter()
        .map(|q| (q, q.optimal(c)))
        .filter(|(_, o)| o.0.is_finite() && o.1.is_finite())
        .collect();
    OptimalCi {
        n: ci(opt.iter().map(|(_, o)| o.0).collect()),
        d: ci(opt.iter().map(|(_, o)| o.1).collect()),
        loss: ci(opt.iter().map(|(q, o)| q.predict(o.0, o.1)).collect()),
    }
}

/// The compute-optimal N*, D* and loss of law `p` at budget `c`, with intervals over the
/// bootstrap laws `samples` when given ([`optimal_ci`]).
pub fn target(p: &ChinchillaParams, samples: Option<&[ChinchillaParams]>, c: f64) -> Target {
    let (n, d) = p.optimal(c);
    let cis = samples.map(|sm| optimal_ci(sm, c));
    Target {
        flops: c,
        n_opt: n,
        d_opt: d,
        tokens_per_param: d / n,
        loss: p.predict(n, d),
        n_opt_ci: cis.map(|c| c.n),
        d_opt_ci: cis.map(|c| c.d),
        loss_ci: cis.map(|c| c.loss),
    }
}

/// The compute-optimal allocation in closed form from Approach 3, and at each target budget
/// (with bootstrap intervals when bootstrapped).
fn compute_optimal(
    p: &ChinchillaParams,
    boot: Option<&Bootstrap>,
    targets: &[f64],
) -> ComputeOptimal {
    let samples = boot.map(|b| b.params());
    let targets = targets
        .iter()
        .map(|&c| target(p, samples.as_deref(), c))
        .collect();
    let s = p.alpha + p.beta;
    ComputeOptimal {
        a: p.exponent_a(),
        b: p.alpha / s,
        g: (p.alpha * p.a / (p.beta * p.b)).powf(1.0 / s),
        targets,
    }
}

/// The fitting choices, as `fits.json` states them.
fn choices(opts: &FitOptions) -> Vec<String> {
    vec![
        format!("Approach 3: minimise the SUM over points of Huber_delta(log Lhat - log L), delta = {}", opts.delta),
        "Approach 3: parameterised as log Lhat = LSE(a - alpha log N, b - beta log D, e); L-BFGS (argmin, More-Thuente), analytic gradients".into(),
        format!("Approach 3: starts = standard grid alpha,beta in {{0,..,2}} step 0.5, e in {{-1,..,1}} step 0.5, a,b in {{0,..,25}} step 5 ({} starts used)", grid(opts.grid_stride).len()),
        format!("bootstrap: {} resamples of the points with replacement (seed {}), each refit from the full-fit optimum + 8 random grid starts; 95% percentile intervals", opts.bootstrap, opts.seed),
        "compute-optimal: C = 6 N D, closed form from Approach 3".into(),
        format!("law: --method {:?} (both = Approach 3 as the law, VPNLS beside it), Approach 3 objective {:?}; VPNLS: E, A, B by non-negative least squares for fixed (alpha, beta), which are searched on a 50 x 50 grid (0.05..2.5) then Nelder-Mead, minimising the squared error on L", opts.method, opts.objective),
        format!("E: {}", match (opts.fixed_e, opts.floor) { (Some(e), _) => format!("fixed at {e}"), (None, Some(f)) => format!("free; also fitted pinned to the loss floor {f}"), (None, None) => "free".into() }),
        "backtests: budgets sorted by C; fit on the first k (>= 8 points), predict each later budget's best loss and each run; 95% prediction intervals from up to 100 bootstrap laws x 25 resampled log residuals (inflated by sqrt(n/(n-p)))".into(),
        "Approach 2: per-budget least-squares parabola of loss in ln N; budgets with < 3 sizes or an out-of-range vertex are excluded; ln N_opt regressed on ln C".into(),
        format!("Approach 2 diagnostics: offset = (ln N_opt - mid)/half-width of the sampled ln N range, asymmetry = h L'''/(3 L'') at the vertex from a cubic in ln N (>= 4 sizes); a budget is flagged when |offset| > {} or |asymmetry| > {}", isoflop::NEAR_EDGE, isoflop::ASYMMETRIC),
    ]
}

/// Signs that the points do not pin the Approach-3 law down.
fn law_warnings(p: &ChinchillaParams, pts: &[Point], boot: Option<&Bootstrap>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, v, var) in [("alpha", p.alpha, "N"), ("beta", p.beta, "D")] {
        if !(0.02..=3.0).contains(&v) {
            warnings.push(format!(
                "{name} = {} is outside the plausible range 0.02-3: the points do not constrain the {var} term; widen the range of {var} or add points",
                num(v)
            ));
        }
    }
    if p.e < 1e-3 * pts.iter().map(|q| q.loss).fold(f64::INFINITY, f64::min) {
        warnings.push("E is near 0: the points resolve no irreducible loss (the fit extrapolates to zero loss); larger N and D are needed to see the floor".into());
    }
    if let Some(b) = boot {
        if b.alpha[1] > 3.0 * b.alpha[0].max(1e-3) || b.beta[1] > 3.0 * b.beta[0].max(1e-3) {
            warnings.push("the bootstrap intervals of alpha or beta span more than a factor 3: treat extrapolations with caution".into());
        }
    }
    warnings
}

/// The data-constrained law on every point (single-epoch and repeated) with its bootstrap;
/// its warnings go to `warnings`. Returns the fit and where its base law came from.
fn fit_data_constrained(
    single: &[Point],
    repeated: &[Point],
    p: ChinchillaParams,
    opts: &FitOptions,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(constrained::ConstrainedFit, String)> {
    let rp: Vec<constrained::RepeatPoint> = single
        .iter()
        .chain(repeated)
        .filter_map(|q| {
            Some(constrained::RepeatPoint {
                n: q.n,
                d: q.d,
                u_d: q.unique?,
                loss: q.loss,
            })
        })
        .collect();
    let base = opts.base.unwrap_or(p);
    let mut f = constrained::fit_constrained(&rp, base, opts.delta)?;
    constrained::bootstrap_constrained(&rp, &mut f, opts.bootstrap.min(200), opts.seed);
    warnings.extend(constrained_warnings(&f));
    let from = if opts.base.is_some() {
        "given (--base)".to_string()
    } else {
        format!(
            "the Approach-3 fit above, on the {} single-epoch points",
            single.len()
        )
    };
    Ok((f, from))
}

/// R_D* or R_N* running off to infinity, or with a bootstrap interval over a factor 10.
fn constrained_warnings(f: &constrained::ConstrainedFit) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, v, ci, what) in [
        (
            "R_D*",
            f.r_d_star,
            f.r_d_star_ci,
            "repeated data is worth as much as new data",
        ),
        (
            "R_N*",
            f.r_n_star,
            f.r_n_star_ci,
            "parameters beyond N_opt(U_D) lose nothing",
        ),
    ] {
        if v > 1e3 {
            warnings.push(format!(
                "{name} = {} runs off to infinity ({what}): these points do not determine it",
                num(v)
            ));
        } else if let Some([lo, hi]) = ci.filter(|c| c[1] > 10.0 * c[0].max(1e-9)) {
            warnings.push(format!(
                "the bootstrap interval of {name} spans {} to {}: it is poorly determined",
                num(lo),
                num(hi)
            ));
        }
    }
    warnings
}

/// A number in 4 decimals, or in e-notation when very large or small.
pub fn num(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// A bootstrap interval after a number in the text summary (empty without one).
fn text_ci(x: Option<[f64; 2]>) -> String {
    x.map(|v| format!("  [{}, {}]", num(v[0]), num(v[1])))
        .unwrap_or_default()
}

/// Human-readable summary.
pub fn render_text(r: &FitReport) -> String {
    let mut s = String::new();
    text_approach3(&mut s, r);
    text_compute_optimal(&mut s, r);
    text_kaplan(&mut s, r);
    text_holdout(&mut s, r);
    text_trust(&mut s, r);
    if let Some(x) = &r.crossover {
        let _ = std::fmt::Write::write_str(&mut s, &format!("\n{}\n", crossover::sentence(x)));
    }
    if let Some(f) = &r.data_constrained {
        text_data_constrained(&mut s, r, f);
    }
    s
}

/// The source, the Approach-3 law with its intervals, the warnings and the optimiser's record.
fn text_approach3(s: &mut String, r: &FitReport) {
    use std::fmt::Write;
    let b = r.bootstrap.as_ref();
    let _ = writeln!(
        s,
        "scaling-law fit of {} ({} points, {} highest dropped)",
        r.source, r.n_points, r.dropped_top
    );
    let _ = writeln!(
        s,
        "\nApproach 3  L = E + A/N^alpha + B/D^beta   (95% bootstrap CI)"
    );
    let rows = [
        ("E", r.e, b.map(|b| b.e)),
        ("A", r.a, b.map(|b| b.a_coef)),
        ("B", r.b, b.map(|b| b.b_coef)),
        ("alpha", r.alpha, b.map(|b| b.alpha)),
        ("beta", r.beta, b.map(|b| b.beta)),
    ];
    for (name, v, interval) in rows {
        let _ = writeln!(s, "  {name:<6} {:>12}{}", num(v), text_ci(interval));
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    let c = &r.approach3.convergence;
    let _ = writeln!(
        s,
        "  objective {:.6e}  ({} starts, {} failed, {} converged; best: {} iters, |grad| {:.1e}; {:.2} s)",
        r.objective, c.starts, c.failed_starts, c.converged_starts, c.best_iterations, c.best_grad_norm, r.approach3.seconds
    );
}

/// The compute-optimal exponents of Approaches 3, 2 and 1, and the target budgets.
fn text_compute_optimal(s: &mut String, r: &FitReport) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\nCompute-optimal  N_opt ~ C^{:.4}{}  D_opt ~ C^{:.4}",
        r.compute_optimal.a,
        text_ci(r.bootstrap.as_ref().map(|b| b.a)),
        r.compute_optimal.b
    );
    if let Some(a) = r.approach2.a {
        let _ = writeln!(
            s,
            "  Approach 2 (IsoFLOP, {} budgets used): N_opt ~ C^{:.4}{}",
            r.approach2.used_budgets,
            a,
            text_ci(r.approach2.a_ci.map(|c| c.ci))
        );
    } else {
        let _ = writeln!(
            s,
            "  Approach 2: not enough usable IsoFLOP budgets ({} used)",
            r.approach2.used_budgets
        );
    }
    if let Some(a1) = &r.approach1 {
        match a1.a {
            Some(a) => {
                let _ = writeln!(
                    s,
                    "  Approach 1 (curve envelope, {} sizes): N_opt ~ C^{:.4}",
                    a1.distinct_sizes, a
                );
            }
            None => {
                let _ = writeln!(s, "  Approach 1: envelope spans fewer than 2 model sizes");
            }
        }
    }
    for t in &r.compute_optimal.targets {
        let _ = writeln!(
            s,
            "  C = {:.2e}: N* = {:.3e}  D* = {:.3e}  ({:.1} tokens/param)  loss {:.4}{}",
            t.flops,
            t.n_opt,
            t.d_opt,
            t.tokens_per_param,
            t.loss,
            text_ci(t.loss_ci)
        );
    }
}

/// The Kaplan single-variable and joint laws.
fn text_kaplan(s: &mut String, r: &FitReport) {
    use std::fmt::Write;
    let _ = writeln!(s, "\nKaplan forms");
    for l in &r.kaplan.laws {
        let e = l.e.map(|e| format!(" + E={e:.4}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  L({}) = ({:.3e}/{})^{:.4}{}",
            l.variable, l.x_c, l.variable, l.alpha, e
        );
    }
    if let Some(j) = &r.kaplan.joint {
        let _ = writeln!(
            s,
            "  L(N,D) = [({:.3e}/N)^({:.4}/{:.4}) + {:.3e}/D]^{:.4}",
            j.n_c, j.alpha_n, j.alpha_d, j.d_c, j.alpha_d
        );
    }
}

/// The held-out check, or why it was not done.
fn text_holdout(s: &mut String, r: &FitReport) {
    use std::fmt::Write;
    if let Some(note) = &r.holdout_note {
        let _ = writeln!(s, "\nHeld out: not done: {note}");
    }
    if let Some(h) = &r.holdout {
        let _ = writeln!(
            s,
            "\nHeld out: {} ({} points): mean |error| {:.4} ({:.2}%), max {:.2}%",
            h.rule,
            h.held_out_points,
            h.mean_abs_error,
            100.0 * h.mean_abs_pct_error,
            100.0 * h.max_abs_pct_error
        );
        if let Some(r) = &h.replicates {
            let _ = writeln!(s, "  {}", r.summary());
        }
    }
}

/// VPNLS, the floor comparison and the backtests, one line each.
fn text_trust(s: &mut String, r: &FitReport) {
    use std::fmt::Write;
    if let Some(v) = &r.vpnls {
        let p = v.fit.params;
        let _ = writeln!(s, "\nVPNLS (SSE on L): E={} A={} B={} alpha={} beta={}  SSE {:.6e} (Approach 3's law: {:.6e}; max rel. diff {:.2e})", num(p.e), num(p.a), num(p.b), num(p.alpha), num(p.beta), v.fit.sse, v.approach3_sse, v.max_rel_diff);
    }
    if let Some(f) = &r.e_floor {
        let _ = writeln!(s, "\nE pinned to the floor {}: A={} B={} alpha={} beta={}; the free E is {:+.1}% from the floor", num(f.floor), num(f.pinned.a), num(f.pinned.b), num(f.pinned.alpha), num(f.pinned.beta), 100.0 * f.free_e_rel_diff);
        if let Some(b) = &f.pinned_bootstrap {
            let _ = writeln!(
                s,
                "  pinned, 95% bootstrap CI: alpha [{}, {}] ({:.2}x), beta [{}, {}] ({:.2}x)",
                num(b.alpha[0]),
                num(b.alpha[1]),
                b.alpha[1] / b.alpha[0],
                num(b.beta[0]),
                num(b.beta[1]),
                b.beta[1] / b.beta[0]
            );
        }
        if let Some(h) = &f.pinned_holdout {
            let _ = writeln!(
                s,
                "  pinned, held out ({}): mean |error| {:.2}%, max {:.2}%",
                h.rule,
                100.0 * h.mean_abs_pct_error,
                100.0 * h.max_abs_pct_error
            );
            if let Some(r) = &h.replicates {
                let _ = writeln!(s, "    {}", r.summary());
            }
        }
        if let Some(note) = &f.pinned_holdout_note {
            let _ = writeln!(s, "  pinned, held out: not done: {note}");
        }
    }
    if let Some(b) = &r.backtest {
        let _ = writeln!(
            s,
            "\nBacktests ({} budgets): |error| of the best loss by extrapolation distance",
            b.budgets
        );
        for row in &b.table {
            let cov = row
                .coverage
                .map(|c| format!(", 95% PI coverage {:.0}%", 100.0 * c))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<6} {:>6}: mean {:.2}%  max {:.2}%  ({} backtests; runs: mean {:.2}%{cov})",
                match row.method {
                    Method::Vpnls => "VPNLS",
                    _ => "A3",
                },
                row.label,
                100.0 * row.best_mean_abs_rel_err,
                100.0 * row.best_max_abs_rel_err,
                row.predictions,
                100.0 * row.run_mean_abs_rel_err
            );
        }
    }
}

/// The data-constrained law, its base law and its other local minima.
fn text_data_constrained(s: &mut String, r: &FitReport, f: &constrained::ConstrainedFit) {
    use std::fmt::Write;
    let ci = |c: Option<[f64; 2]>| {
        c.map(|c| format!(" [{:.2}, {:.2}]", c[0], c[1]))
            .unwrap_or_default()
    };
    let _ = writeln!(
        s,
        "\nData-constrained law (Muennighoff et al. 2023; {} points, {} with repeated data)\n  R_D* = {:.4}{}  R_N* = {:.4}{}  objective {:.6}  R^2 {:.4}\n  base law fixed: E={:.4} A={:.4} B={:.4} alpha={:.4} beta={:.4}, from {}",
        f.n_points,
        f.n_repeated,
        f.r_d_star,
        ci(f.r_d_star_ci),
        f.r_n_star,
        ci(f.r_n_star_ci),
        f.objective,
        f.r2,
        f.base.e,
        f.base.a,
        f.base.b,
        f.base.alpha,
        f.base.beta,
        r.data_constrained_base.as_deref().unwrap_or("?")
    );
    if f.local_minima.len() > 1 {
        let others: Vec<String> = f.local_minima[1..]
            .iter()
            .map(|m| format!("R_D*={:.3} R_N*={:.3} (objective {:.6})", m[0], m[1], m[2]))
            .collect();
        let _ = writeln!(
            s,
            "  other local minima (the objective is flat and multi-modal): {}",
            others.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_numbers_in_run_names() {
        assert_eq!(budget_number("isoflop-6e+19-d2304-L23"), Some(6e19));
        assert_eq!(
            budget_number("exp2166-scaling-ladder-comma-validation-optimal-3e+19-5b04fb"),
            Some(3e19)
        );
        assert_eq!(budget_number("x1.5"), Some(1.5));
        assert_eq!(budget_number("none"), None);
    }
}
