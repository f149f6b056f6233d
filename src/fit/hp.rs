//! Hyperparameter laws: the optimal learning rate and batch size of each (N, D) group from
//! its grid of runs, then power laws lr*(N, D) = c·N^a·D^b and bs*(D) = c·D^b (and the
//! compute-only forms lr*(C), bs*(C), C = 6ND) fitted over the groups, with bootstrap
//! intervals. Owns locating a grid's optimum, those laws and the held-out check; pure over
//! arrays.
//!
//! # Fitting choices
//! - A group's optimum: a full quadratic in (ln lr, ln bs) fitted by least squares to the runs
//!   within two grid steps (in each coordinate) of the best run; its vertex when the quadratic
//!   opens upwards and the vertex lies inside those runs' box, else the best run itself
//!   (`Located::Grid`). Runs whose loss is not finite are left out.
//! - The laws: ordinary least squares on logs; 95% intervals from 1,000 bootstrap resamples of
//!   the groups.

use serde::Serialize;

use super::ci;
use crate::hashing::Rng;

/// One run of a grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpRun {
    pub n: f64,
    pub d: f64,
    pub lr: f64,
    pub bs: f64,
    pub loss: f64,
}

/// How a group's optimum was located.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Located {
    /// The vertex of the local quadratic.
    Quadratic,
    /// The best run (the quadratic opened downwards, was degenerate, or its vertex fell
    /// outside the runs it was fitted to: an optimum at or beyond the grid's edge).
    Grid,
}

/// The optimum of one (N, D) group.
#[derive(Debug, Clone, Serialize)]
pub struct Optimum {
    pub n: f64,
    pub d: f64,
    pub lr: f64,
    pub bs: f64,
    /// The loss there (the quadratic's value at its vertex, or the best run's loss).
    pub loss: f64,
    pub best_run_loss: f64,
    pub located: Located,
    /// Runs in the group, and runs the quadratic used.
    pub runs: usize,
    pub local_runs: usize,
    /// The quadratic's coefficients [c, x, y, x², xy, y²] in x = ln lr, y = ln bs.
    #[serde(skip)]
    pub surface: Option<[f64; 6]>,
    /// The box of the runs the quadratic used: [x_lo, x_hi, y_lo, y_hi].
    #[serde(skip)]
    pub local_box: [f64; 4],
}

/// Least squares `min |X·β − y|²` through the normal equations (columns centred by the
/// caller where it matters).
pub fn least_squares(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let p = x.first()?.len();
    let mut a = vec![vec![0.0; p]; p];
    let mut b = vec![0.0; p];
    for (row, &v) in x.iter().zip(y) {
        for i in 0..p {
            b[i] += row[i] * v;
            for j in 0..p {
                a[i][j] += row[i] * row[j];
            }
        }
    }
    super::vpnls::solve(a, b)
}

fn quad_row(x: f64, y: f64) -> Vec<f64> {
    vec![1.0, x, y, x * x, x * y, y * y]
}

/// The quadratic surface's value at (ln lr, ln bs).
pub fn surface_at(s: &[f64; 6], x: f64, y: f64) -> f64 {
    quad_row(x, y).iter().zip(s).map(|(a, b)| a * b).sum()
}

/// Index of `v` among the sorted distinct values `levels`.
fn level(levels: &[f64], v: f64) -> usize {
    levels
        .iter()
        .position(|&l| (l - v).abs() <= 1e-9 * v.abs().max(1e-300))
        .unwrap_or(0)
}

fn levels(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut l: Vec<f64> = v.collect();
    l.sort_by(f64::total_cmp);
    l.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs().max(1e-300));
    l
}

/// The runs within two grid steps (per coordinate) of the best run, and their box
/// [x_lo, x_hi, y_lo, y_hi] in (ln lr, ln bs).
fn neighbourhood<'a>(ok: &[&'a HpRun], best: &HpRun) -> (Vec<&'a HpRun>, [f64; 4]) {
    let (lx, ly) = (
        levels(ok.iter().map(|r| r.lr.ln())),
        levels(ok.iter().map(|r| r.bs.ln())),
    );
    let (bx, by) = (level(&lx, best.lr.ln()), level(&ly, best.bs.ln()));
    let local: Vec<&HpRun> = ok
        .iter()
        .copied()
        .filter(|r| {
            level(&lx, r.lr.ln()).abs_diff(bx) <= 2 && level(&ly, r.bs.ln()).abs_diff(by) <= 2
        })
        .collect();
    let span = |v: Vec<f64>| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        (lo, v.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
    };
    let (x0, x1) = span(local.iter().map(|r| r.lr.ln()).collect());
    let (y0, y1) = span(local.iter().map(|r| r.bs.ln()).collect());
    (local, [x0, x1, y0, y1])
}

/// The least-squares quadratic in (ln lr, ln bs) over `local` (coordinates centred on the best
/// run for conditioning, returned un-centred); `None` with fewer than 7 runs or fewer than 3
/// levels of either coordinate.
fn local_quadratic(local: &[&HpRun], best: &HpRun) -> Option<[f64; 6]> {
    let nx = levels(local.iter().map(|r| r.lr.ln())).len();
    let ny = levels(local.iter().map(|r| r.bs.ln())).len();
    if local.len() < 7 || nx < 3 || ny < 3 {
        return None;
    }
    let (cx, cy) = (best.lr.ln(), best.bs.ln());
    let rows: Vec<Vec<f64>> = local
        .iter()
        .map(|r| quad_row(r.lr.ln() - cx, r.bs.ln() - cy))
        .collect();
    let y: Vec<f64> = local.iter().map(|r| r.loss).collect();
    Some(uncentre(&least_squares(&rows, &y)?, cx, cy))
}

/// The quadratic's vertex when it opens upwards (positive definite), else `None`.
fn vertex(s: &[f64; 6]) -> Option<(f64, f64)> {
    // Gradient zero: [2a b; b 2d] (x, y) = −(c1, c2).
    let (c1, c2, a, b, d) = (s[1], s[2], s[3], s[4], s[5]);
    let det = 4.0 * a * d - b * b;
    (a > 0.0 && det > 0.0).then(|| {
        (
            (-2.0 * d * c1 + b * c2) / det,
            (-2.0 * a * c2 + b * c1) / det,
        )
    })
}

/// Locate the optimum of one group's runs (see the module docs). `None` without a finite run.
pub fn locate(runs: &[HpRun]) -> Option<Optimum> {
    let ok: Vec<&HpRun> = runs
        .iter()
        .filter(|r| r.loss.is_finite() && r.lr > 0.0 && r.bs > 0.0)
        .collect();
    let best = **ok.iter().min_by(|a, b| a.loss.total_cmp(&b.loss))?;
    let (local, local_box) = neighbourhood(&ok, &best);
    let surface = local_quadratic(&local, &best);
    let grid = Optimum {
        n: best.n,
        d: best.d,
        lr: best.lr,
        bs: best.bs,
        loss: best.loss,
        best_run_loss: best.loss,
        located: Located::Grid,
        runs: ok.len(),
        local_runs: local.len(),
        surface,
        local_box,
    };
    let b = local_box;
    let inside = |(x, y): (f64, f64)| x >= b[0] && x <= b[1] && y >= b[2] && y <= b[3];
    match surface.and_then(|s| vertex(&s)).filter(|&v| inside(v)) {
        Some((vx, vy)) => Some(Optimum {
            lr: vx.exp(),
            bs: vy.exp(),
            loss: surface_at(&surface?, vx, vy),
            located: Located::Quadratic,
            ..grid
        }),
        None => Some(grid),
    }
}

/// The coefficients of q(x − cx, y − cy) in (x, y).
fn uncentre(c: &[f64], cx: f64, cy: f64) -> [f64; 6] {
    let (c0, c1, c2, a, b, d) = (c[0], c[1], c[2], c[3], c[4], c[5]);
    [
        c0 - c1 * cx - c2 * cy + a * cx * cx + b * cx * cy + d * cy * cy,
        c1 - 2.0 * a * cx - b * cy,
        c2 - 2.0 * d * cy - b * cx,
        a,
        b,
        d,
    ]
}

/// A power law ln y = c + Σ k_i ln x_i, with its 95% bootstrap intervals.
#[derive(Debug, Clone, Serialize)]
pub struct PowerLaw {
    /// What it predicts and from what, e.g. "lr* = c N^a D^b".
    pub form: String,
    /// exp(c).
    pub coef: f64,
    /// Exponents, in the order of the form's variables.
    pub exponents: Vec<f64>,
    pub coef_ci: Option<[f64; 2]>,
    pub exponents_ci: Vec<[f64; 2]>,
    /// RMS of the residuals of ln y.
    pub rms_log_residual: f64,
}

impl PowerLaw {
    pub fn predict(&self, xs: &[f64]) -> f64 {
        self.coef
            * xs.iter()
                .zip(&self.exponents)
                .map(|(x, k)| x.powf(*k))
                .product::<f64>()
    }
}

/// OLS of ln y on ln xs (rows), returning [c, k1, k2, ...].
fn ols_logs(xs: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let rows: Vec<Vec<f64>> = xs
        .iter()
        .map(|r| {
            std::iter::once(1.0)
                .chain(r.iter().map(|v| v.ln()))
                .collect()
        })
        .collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    least_squares(&rows, &ly)
}

/// Fit `y = c·Π x_i^k_i` over the rows; bootstrap `resamples` times over rows.
pub fn fit_power_law(
    form: &str,
    xs: &[Vec<f64>],
    y: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<PowerLaw> {
    let beta = ols_logs(xs, y)?;
    let resid: f64 = xs
        .iter()
        .zip(y)
        .map(|(r, &v)| {
            let pred = beta[0]
                + r.iter()
                    .zip(&beta[1..])
                    .map(|(x, k)| k * x.ln())
                    .sum::<f64>();
            (v.ln() - pred).powi(2)
        })
        .sum();
    let mut rng = Rng::new(seed);
    let mut draws: Vec<Vec<f64>> = Vec::new();
    for _ in 0..resamples {
        let idx: Vec<usize> = (0..y.len()).map(|_| rng.below(y.len())).collect();
        let bx: Vec<Vec<f64>> = idx.iter().map(|&i| xs[i].clone()).collect();
        let by: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
        if let Some(b) = ols_logs(&bx, &by) {
            draws.push(b);
        }
    }
    let col = |k: usize| ci(draws.iter().map(|b| b[k]).collect());
    let boot = !draws.is_empty();
    Some(PowerLaw {
        form: form.into(),
        coef: beta[0].exp(),
        exponents: beta[1..].to_vec(),
        coef_ci: boot.then(|| col(0).map(f64::exp)),
        exponents_ci: if boot {
            (1..beta.len()).map(col).collect()
        } else {
            Vec::new()
        },
        rms_log_residual: (resid / y.len() as f64).sqrt(),
    })
}

/// The four laws over the groups' optima.
#[derive(Debug, Clone, Serialize)]
pub struct HpLaws {
    pub lr_nd: PowerLaw,
    pub bs_d: PowerLaw,
    pub lr_c: PowerLaw,
    pub bs_c: PowerLaw,
}

/// Fit lr*(N, D), bs*(D), lr*(C), bs*(C) over `optima` (at least 4 groups).
pub fn fit_laws(optima: &[Optimum], resamples: usize, seed: u64) -> Option<HpLaws> {
    if optima.len() < 4 {
        return None;
    }
    let nd: Vec<Vec<f64>> = optima.iter().map(|o| vec![o.n, o.d]).collect();
    let d: Vec<Vec<f64>> = optima.iter().map(|o| vec![o.d]).collect();
    let c: Vec<Vec<f64>> = optima.iter().map(|o| vec![6.0 * o.n * o.d]).collect();
    let lr: Vec<f64> = optima.iter().map(|o| o.lr).collect();
    let bs: Vec<f64> = optima.iter().map(|o| o.bs).collect();
    Some(HpLaws {
        lr_nd: fit_power_law("lr* = c N^a D^b", &nd, &lr, resamples, seed)?,
        bs_d: fit_power_law("bs* = c D^b", &d, &bs, resamples, seed + 1)?,
        lr_c: fit_power_law("lr* = c C^p", &c, &lr, resamples, seed + 2)?,
        bs_c: fit_power_law("bs* = c C^q", &c, &bs, resamples, seed + 3)?,
    })
}

/// The runs grouped by (N, D), in ascending order; D values within 1% of a group's smallest
/// share it (a batch-size grid rounds D to whole steps of each batch).
pub fn groups(runs: &[HpRun]) -> Vec<Vec<HpRun>> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.n.total_cmp(&b.n).then(a.d.total_cmp(&b.d)));
    let mut out: Vec<Vec<HpRun>> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(g) if g[0].n == r.n && r.d <= g[0].d * 1.01 => g.push(r),
            _ => out.push(vec![r]),
        }
    }
    out
}

/// One held-out group: the law's settings, and the loss there against the best run.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOutGroup {
    pub n: f64,
    pub d: f64,
    pub predicted_lr: f64,
    pub predicted_bs: f64,
    /// The group's optimum as located from its own grid.
    pub grid_lr: f64,
    pub grid_bs: f64,
    pub best_run_loss: f64,
    /// The group's local quadratic at the predicted settings (when they fall inside the box
    /// it was fitted on), else `None`.
    pub surface_loss: Option<f64>,
    /// The loss of the run nearest the predicted settings (in ln lr, ln bs).
    pub nearest_run_loss: f64,
    /// (loss at the predicted settings − best run loss) / best run loss; the surface's value
    /// when there is one, else the nearest run's.
    pub rel_excess: f64,
}

/// Fit the laws with the groups of the `k` largest N held out, and score the held-out groups.
#[derive(Debug, Clone, Serialize)]
pub struct HpReport {
    pub source: String,
    pub runs: usize,
    pub optima: Vec<Optimum>,
    pub laws: HpLaws,
    pub held_out_n: Vec<f64>,
    pub held_out: Vec<HeldOutGroup>,
    pub mean_rel_excess: Option<f64>,
}

/// Locate every group's optimum, fit the laws on the groups whose N is not among the
/// `hold_out` largest, and score the held-out groups at the laws' settings.
pub fn analyse(
    source: &str,
    runs: &[HpRun],
    hold_out: usize,
    resamples: usize,
    seed: u64,
) -> Option<HpReport> {
    let grouped = groups(runs);
    let optima: Vec<Optimum> = grouped.iter().filter_map(|g| locate(g)).collect();
    let ns = levels(optima.iter().map(|o| o.n));
    let held_out_n: Vec<f64> = ns.iter().rev().take(hold_out).copied().collect();
    let is_held = |n: f64| held_out_n.contains(&n);
    let train: Vec<Optimum> = optima.iter().filter(|o| !is_held(o.n)).cloned().collect();
    let laws = fit_laws(&train, resamples, seed)?;
    let held_out: Vec<HeldOutGroup> = grouped
        .iter()
        .zip(&optima)
        .filter(|(_, o)| is_held(o.n))
        .map(|(g, o)| score(g, o, &laws))
        .collect();
    let mean = (!held_out.is_empty())
        .then(|| held_out.iter().map(|h| h.rel_excess).sum::<f64>() / held_out.len() as f64);
    Some(HpReport {
        source: source.into(),
        runs: runs.len(),
        optima,
        laws,
        held_out_n,
        held_out,
        mean_rel_excess: mean,
    })
}

fn score(group: &[HpRun], o: &Optimum, laws: &HpLaws) -> HeldOutGroup {
    let lr = laws.lr_nd.predict(&[o.n, o.d]);
    let bs = laws.bs_d.predict(&[o.d]);
    let (x, y) = (lr.ln(), bs.ln());
    let b = o.local_box;
    let surface_loss = o
        .surface
        .filter(|_| x >= b[0] && x <= b[1] && y >= b[2] && y <= b[3])
        .map(|s| surface_at(&s, x, y));
    let nearest = group
        .iter()
        .filter(|r| r.loss.is_finite())
        .min_by(|p, q| {
            let dist = |r: &&HpRun| (r.lr.ln() - x).powi(2) + (r.bs.ln() - y).powi(2);
            dist(p).total_cmp(&dist(q))
        })
        .map(|r| r.loss)
        .unwrap_or(f64::NAN);
    let at = surface_loss.unwrap_or(nearest);
    HeldOutGroup {
        n: o.n,
        d: o.d,
        predicted_lr: lr,
        predicted_bs: bs,
        grid_lr: o.lr,
        grid_bs: o.bs,
        best_run_loss: o.best_run_loss,
        surface_loss,
        nearest_run_loss: nearest,
        rel_excess: (at - o.best_run_loss) / o.best_run_loss,
    }
}

/// The text summary of `scalelab hp`.
pub fn render_text(r: &HpReport) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "Hyperparameter laws on {} ({} runs, {} (N, D) groups; {} located by the quadratic)\n",
        r.source,
        r.runs,
        r.optima.len(),
        r.optima
            .iter()
            .filter(|o| o.located == Located::Quadratic)
            .count()
    );
    for l in [&r.laws.lr_nd, &r.laws.bs_d, &r.laws.lr_c, &r.laws.bs_c] {
        let ex: Vec<String> = l
            .exponents
            .iter()
            .enumerate()
            .map(|(i, k)| match l.exponents_ci.get(i) {
                Some([lo, hi]) => format!("{k:.4} [{lo:.4}, {hi:.4}]"),
                None => format!("{k:.4}"),
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:<18} c = {:.4e}; exponents {}; rms ln residual {:.3}",
            l.form,
            l.coef,
            ex.join(", "),
            l.rms_log_residual
        );
    }
    if !r.held_out.is_empty() {
        let _ = writeln!(s, "  held out (N in {:?}):", r.held_out_n);
        for h in &r.held_out {
            let _ = writeln!(
                s,
                "    N={:.3e} D={:.3e}: law lr {:.3e} bs {:.0} (grid optimum lr {:.3e} bs {:.0}); loss there {:+.3}% vs the best run",
                h.n, h.d, h.predicted_lr, h.predicted_bs, h.grid_lr, h.grid_bs, 100.0 * h.rel_excess
            );
        }
        if let Some(m) = r.mean_rel_excess {
            let _ = writeln!(
                s,
                "  mean excess loss at the law's settings: {:+.3}%",
                100.0 * m
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quadratic-in-logs landscape with its minimum at (lr0, bs0).
    fn landscape(n: f64, d: f64, lr0: f64, bs0: f64, lrs: &[f64], bss: &[f64]) -> Vec<HpRun> {
        let mut v = Vec::new();
        for &lr in lrs {
            for &bs in bss {
                let (x, y) = ((lr / lr0).ln(), (bs / bs0).ln());
                let loss = 2.0 + 0.02 * x * x + 0.01 * x * y + 0.03 * y * y;
                v.push(HpRun { n, d, lr, bs, loss });
            }
        }
        v
    }

    fn grid(lo: f64, ratio: f64, k: usize) -> Vec<f64> {
        (0..k).map(|i| lo * ratio.powi(i as i32)).collect()
    }

    #[test]
    fn quadratic_vertex_is_found_between_grid_points() {
        let lrs = grid(1e-4, 2f64.sqrt(), 12);
        let bss = grid(32.0, 2.0, 8);
        let runs = landscape(1e8, 1e10, 7.3e-4, 190.0, &lrs, &bss);
        let o = locate(&runs).unwrap();
        assert_eq!(o.located, Located::Quadratic);
        assert!((o.lr / 7.3e-4 - 1.0).abs() < 1e-6, "{}", o.lr);
        assert!((o.bs / 190.0 - 1.0).abs() < 1e-6, "{}", o.bs);
        assert!((o.loss - 2.0).abs() < 1e-9);
        // An optimum beyond the grid's edge falls back to the best run.
        let edge = landscape(1e8, 1e10, 1e-5, 190.0, &lrs, &bss);
        let o = locate(&edge).unwrap();
        assert_eq!(o.located, Located::Grid);
        assert_eq!(o.lr, 1e-4);
    }

    #[test]
    fn power_laws_are_recovered_with_intervals() {
        // lr* = 2 N^-0.7 D^0.3, bs* = 0.5 D^0.55 on a 4 x 3 design with a little noise.
        let mut rng = Rng::new(3);
        let mut optima = Vec::new();
        for n in [1e7, 3e7, 1e8, 3e8] {
            for dn in [20.0, 60.0, 200.0] {
                let d = n * dn;
                let noise = |rng: &mut Rng| 1.0 + 0.02 * (rng.next_f64() - 0.5);
                let lr = 2.0 * f64::powf(n, -0.7) * f64::powf(d, 0.3) * noise(&mut rng);
                let bs = 0.5 * f64::powf(d, 0.55) * noise(&mut rng);
                let mut runs = landscape(n, d, lr, bs, &[lr], &[bs]);
                runs[0].loss = 2.0;
                optima.push(locate(&runs).unwrap());
            }
        }
        let laws = fit_laws(&optima, 300, 1).unwrap();
        let (a, b) = (laws.lr_nd.exponents[0], laws.lr_nd.exponents[1]);
        assert!((a + 0.7).abs() < 0.02 && (b - 0.3).abs() < 0.02, "{a} {b}");
        assert!((laws.bs_d.exponents[0] - 0.55).abs() < 0.02);
        let [lo, hi] = laws.lr_nd.exponents_ci[0];
        assert!(lo <= -0.7 && hi >= -0.7 && hi - lo < 0.1, "{lo} {hi}");
        let p = laws.lr_nd.predict(&[1e8, 1e10]);
        assert!((p / (2.0 * f64::powf(1e8, -0.7) * f64::powf(1e10, 0.3)) - 1.0).abs() < 0.03);
    }

    #[test]
    fn held_out_groups_are_scored_at_the_laws_settings() {
        // Optima follow lr* = 1e-2 (N/1e6)^-0.5, bs* = 64 (D/1e8)^0.5 exactly.
        let lrs = grid(1e-5, 2.0, 14);
        let bss = grid(8.0, 2.0, 10);
        let mut runs = Vec::new();
        for n in [1e6, 4e6, 1.6e7, 6.4e7, 2.56e8] {
            for d in [1e8, 1e9] {
                let lr0 = 1e-2 * f64::powf(n / 1e6, -0.5);
                let bs0 = 64.0 * f64::powf(d / 1e8, 0.5);
                runs.extend(landscape(n, d, lr0, bs0, &lrs, &bss));
            }
        }
        let r = analyse("synthetic", &runs, 1, 200, 7).unwrap();
        assert_eq!(r.optima.len(), 10);
        assert_eq!(r.held_out_n, vec![2.56e8]);
        assert_eq!(r.held_out.len(), 2);
        assert!(
            (r.laws.lr_nd.exponents[0] + 0.5).abs() < 0.01,
            "{:?}",
            r.laws.lr_nd
        );
        // Settings from a law that holds exactly land on the held-out optimum (loss 2.0), a
        // little below the best grid run.
        for h in &r.held_out {
            assert!((h.surface_loss.unwrap() - 2.0).abs() < 1e-6, "{h:?}");
            assert!(h.rel_excess <= 0.0 && h.rel_excess > -0.01, "{h:?}");
        }
        assert!(render_text(&r).contains("held out"));
    }
}
