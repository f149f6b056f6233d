//! Rolling backtests: how far the law can be trusted beyond the budgets it was fitted on.
//!
//! Owns the rule: budgets sorted by compute C (the hold-out's grouping,
//! [`isoflop::group_budgets`]); for every k ≥ 2 whose first k budgets hold at least
//! [`MIN_POINTS`] points, fit on them (each method of `--method`) and predict every later
//! budget: its best loss (the lowest observed loss against the lowest predicted loss over the
//! same runs) and each run's loss, with a 95% prediction interval ([`interval`]) from a
//! bootstrap of the fold ([`RESAMPLES`] resamples). Errors are tabled against the
//! extrapolation distance, target C / largest fitted C, in half-decade bins (1×, 3×, 10×, …).

use std::time::Instant;

use serde::Serialize;

use super::interval::PredictionModel;
use super::{bootstrap, fit_law, grid, isoflop, FitOptions, Method, Point};

/// The fewest points a fold is fitted on.
pub const MIN_POINTS: usize = 8;
/// Bootstrap resamples per fold for the prediction intervals (fewer when `--bootstrap` is).
pub const RESAMPLES: usize = 100;

/// One later budget predicted by one fold.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub method: Method,
    pub fitted_budgets: usize,
    pub fitted_points: usize,
    pub max_fitted_c: f64,
    pub target_c: f64,
    /// target_c / max_fitted_c.
    pub distance: f64,
    pub best_observed: f64,
    pub best_predicted: f64,
    /// |best_predicted − best_observed| / best_observed.
    pub best_abs_rel_err: f64,
    pub runs: usize,
    /// Mean over the budget's runs of |L̂ − L| / L.
    pub run_mean_abs_rel_err: f64,
    /// Runs whose loss lies inside their 95% prediction interval (None without a bootstrap).
    pub runs_covered: Option<usize>,
}

/// Errors of one method at one extrapolation distance.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: Method,
    /// Nominal distance of the half-decade bin (1, 3, 10, 30, …).
    pub distance: f64,
    pub label: String,
    pub predictions: usize,
    pub best_mean_abs_rel_err: f64,
    pub best_max_abs_rel_err: f64,
    pub runs: usize,
    pub run_mean_abs_rel_err: f64,
    /// Share of runs inside their 95% prediction interval.
    pub coverage: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    pub grouping: String,
    pub budgets: usize,
    pub interval_resamples: usize,
    pub predictions: Vec<Prediction>,
    pub table: Vec<Row>,
    pub seconds: f64,
}

/// The methods `--method` asks for, each on its own.
fn methods(m: Method) -> Vec<Method> {
    match m {
        Method::Both => vec![Method::A3, Method::Vpnls],
        one => vec![one],
    }
}

/// Run the backtests; `None` with fewer than 3 budgets or no fold of [`MIN_POINTS`].
pub fn run(points: &[Point], opts: &FitOptions) -> Option<Backtest> {
    let t0 = Instant::now();
    let (grouping, groups) = isoflop::group_budgets(points);
    let mut preds = Vec::new();
    for k in 2..groups.len() {
        let train: Vec<Point> = groups[..k]
            .iter()
            .flat_map(|g| g.1.iter().map(|&i| points[i].clone()))
            .collect();
        if train.len() < MIN_POINTS {
            continue;
        }
        for m in methods(opts.method) {
            let o = FitOptions {
                method: m,
                ..opts.clone()
            };
            preds.extend(fold(&train, k, groups[k - 1].0, &groups[k..], points, &o));
        }
    }
    if preds.is_empty() {
        return None;
    }
    Some(Backtest {
        grouping,
        budgets: groups.len(),
        interval_resamples: opts.bootstrap.min(RESAMPLES),
        table: table(&preds),
        predictions: preds,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Fit one fold and predict the later budgets.
fn fold(
    train: &[Point],
    k: usize,
    max_c: f64,
    later: &[(f64, Vec<usize>)],
    points: &[Point],
    o: &FitOptions,
) -> Vec<Prediction> {
    let Ok(law) = fit_law(train, o, &grid(o.grid_stride)) else {
        return Vec::new();
    };
    let intervals = (o.bootstrap > 0).then(|| {
        let bo = FitOptions {
            bootstrap: o.bootstrap.min(RESAMPLES),
            ..o.clone()
        };
        let laws = bootstrap(train, &law, &bo).params();
        let n_free = if o.fixed_e.is_some() { 4 } else { 5 };
        (
            laws,
            PredictionModel::new(&law.params, train, n_free, o.seed),
        )
    });
    later
        .iter()
        .map(|(c, idx)| {
            let runs: Vec<&Point> = idx.iter().map(|&i| &points[i]).collect();
            let pred: Vec<f64> = runs.iter().map(|q| law.params.predict(q.n, q.d)).collect();
            let best_observed = runs.iter().map(|q| q.loss).fold(f64::INFINITY, f64::min);
            let best_predicted = pred.iter().copied().fold(f64::INFINITY, f64::min);
            let rel: Vec<f64> = runs
                .iter()
                .zip(&pred)
                .map(|(q, p)| (p - q.loss).abs() / q.loss)
                .collect();
            let runs_covered = intervals.as_ref().map(|(laws, pm)| {
                runs.iter()
                    .filter(|q| {
                        let [lo, hi] = pm.interval(laws, q.n, q.d, 0.95);
                        lo <= q.loss && q.loss <= hi
                    })
                    .count()
            });
            Prediction {
                method: o.method,
                fitted_budgets: k,
                fitted_points: train.len(),
                max_fitted_c: max_c,
                target_c: *c,
                distance: c / max_c,
                best_observed,
                best_predicted,
                best_abs_rel_err: (best_predicted - best_observed).abs() / best_observed,
                runs: runs.len(),
                run_mean_abs_rel_err: rel.iter().sum::<f64>() / rel.len() as f64,
                runs_covered,
            }
        })
        .collect()
}

/// The half-decade bin of a distance: 0 → 1×, 1 → 3×, 2 → 10×, …
pub fn bin(distance: f64) -> i32 {
    (2.0 * distance.log10()).round().max(0.0) as i32
}

/// The nominal distance and label of a bin.
pub fn bin_label(b: i32) -> (f64, String) {
    let base = 10f64.powi(b / 2);
    let v = if b % 2 == 0 { base } else { 3.0 * base };
    (v, format!("{v}×"))
}

/// Errors per method and distance bin.
fn table(preds: &[Prediction]) -> Vec<Row> {
    let mut keys: Vec<(Method, i32)> = preds.iter().map(|p| (p.method, bin(p.distance))).collect();
    keys.sort_by_key(|k| (k.0 as u8, k.1));
    keys.dedup();
    keys.into_iter()
        .map(|(m, b)| {
            let ps: Vec<&Prediction> = preds
                .iter()
                .filter(|p| p.method == m && bin(p.distance) == b)
                .collect();
            let runs: usize = ps.iter().map(|p| p.runs).sum();
            let covered: Option<usize> = ps.iter().map(|p| p.runs_covered).sum();
            let (distance, label) = bin_label(b);
            Row {
                method: m,
                distance,
                label,
                predictions: ps.len(),
                best_mean_abs_rel_err: ps.iter().map(|p| p.best_abs_rel_err).sum::<f64>()
                    / ps.len() as f64,
                best_max_abs_rel_err: ps.iter().map(|p| p.best_abs_rel_err).fold(0.0, f64::max),
                runs,
                run_mean_abs_rel_err: ps
                    .iter()
                    .map(|p| p.run_mean_abs_rel_err * p.runs as f64)
                    .sum::<f64>()
                    / runs as f64,
                coverage: covered.map(|c| c as f64 / runs as f64),
            }
        })
        .collect()
}

/// Share of every backtested run inside its 95% prediction interval, per method.
pub fn coverage(b: &Backtest, m: Method) -> Option<(usize, usize)> {
    let ps: Vec<&Prediction> = b.predictions.iter().filter(|p| p.method == m).collect();
    let covered: Option<usize> = ps.iter().map(|p| p.runs_covered).sum();
    Some((covered?, ps.iter().map(|p| p.runs).sum()))
}
