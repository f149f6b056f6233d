//! Data-constrained scaling: the law of Muennighoff et al. 2023 ("Scaling Data-Constrained
//! Language Models"), for runs that repeat their unique data for several epochs.
//!
//! Repeated tokens are worth less than new ones, with an effective data size
//!   D′ = U_D + U_D·R_D*·(1 − exp(−R_D / R_D*)),   R_D = D/U_D − 1 (repeats),
//! and, symmetrically, parameters beyond what U_D can use are worth less:
//!   N′ = U_N + U_N·R_N*·(1 − exp(−R_N / R_N*)),   U_N = min(N, N_opt(U_D)), R_N = N/U_N − 1,
//! where N_opt(U_D) is the compute-optimal N of the base law at the budget whose optimal D is
//! U_D (for α = β it is G²·U_D with G = (αA/(βB))^(1/(α+β))). The loss is the base Chinchilla
//! law at (N′, D′). As in the paper, the base law (E, A, B, α, β) is held fixed and only R_D*
//! and R_N* are fitted, minimising Σ Huber_δ(LSE(log A − α log N′, log B − β log D′, log E)
//! − log L) with L-BFGS from a grid of starts; R* are optimised as log R* so they stay
//! positive (the optimum is the same).

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::optim::{huber, local_min, lse, Convergence, LbfgsOptions, Objective};

/// One run: N, D (total tokens), U_D (unique tokens), final loss.
#[derive(Debug, Clone, Copy)]
pub struct RepeatPoint {
    pub n: f64,
    pub d: f64,
    pub u_d: f64,
    pub loss: f64,
}

/// The fitted decay constants and how well the law fits.
#[derive(Debug, Clone, Serialize)]
pub struct ConstrainedFit {
    /// Half-life-like constant of repeated data (in repeats).
    pub r_d_star: f64,
    /// The same for excess parameters.
    pub r_n_star: f64,
    pub objective: f64,
    /// R² of the predicted loss (natural scale).
    pub r2: f64,
    pub n_points: usize,
    /// Points with repeated data (D > U_D).
    pub n_repeated: usize,
    pub base: ChinchillaParams,
    pub huber_delta: f64,
    pub convergence: Convergence,
    /// Bootstrap 95% intervals [R_D* low, high], [R_N* low, high] (when computed).
    pub r_d_star_ci: Option<[f64; 2]>,
    pub r_n_star_ci: Option<[f64; 2]>,
    /// Distinct local minima reached from the start grid, best first: [R_D*, R_N*,
    /// objective]. The objective is flat and multi-modal; a published value may be a local
    /// minimum other than the best one.
    pub local_minima: Vec<[f64; 3]>,
}

/// U_N: the compute-optimal N of the base law for U_D unique tokens.
pub fn optimal_n_for_data(base: &ChinchillaParams, u_d: f64) -> f64 {
    let s = base.alpha + base.beta;
    let g = (base.alpha * base.a / (base.beta * base.b)).powf(1.0 / s);
    // D_opt = (C/6)^(α/s) / g = U_D  →  C/6 = (g·U_D)^(s/α);  N_opt = g·(C/6)^(β/s).
    g * (g * u_d).powf(base.beta / base.alpha)
}

/// Effective size X′ = U + U·R*·(1 − exp(−R/R*)) and d ln X′ / d ln R*.
fn effective(u: f64, r: f64, r_star: f64) -> (f64, f64) {
    if r <= 0.0 {
        return (u, 0.0);
    }
    let e = (-r / r_star).exp();
    let x = u * (1.0 + r_star * (1.0 - e));
    let dx_dr = u * (1.0 - e - (r / r_star) * e);
    (x, r_star * dx_dr / x)
}

struct Prepared {
    u_n: f64,
    r_n: f64,
    u_d: f64,
    r_d: f64,
    ln_l: f64,
}

fn prepare(points: &[RepeatPoint], base: &ChinchillaParams) -> Vec<Prepared> {
    points
        .iter()
        .map(|p| {
            let u_n = p.n.min(optimal_n_for_data(base, p.u_d));
            Prepared {
                u_n,
                r_n: (p.n / u_n - 1.0).max(0.0),
                u_d: p.u_d,
                r_d: (p.d / p.u_d - 1.0).max(0.0),
                ln_l: p.loss.ln(),
            }
        })
        .collect()
}

struct Obj<'a> {
    pts: &'a [Prepared],
    base: ChinchillaParams,
    delta: f64,
}

impl Obj<'_> {
    fn predict_ln(
        &self,
        p: &Prepared,
        r_n_star: f64,
        r_d_star: f64,
        w: &mut [f64; 3],
    ) -> (f64, f64, f64) {
        let (n_eff, dn) = effective(p.u_n, p.r_n, r_n_star);
        let (d_eff, dd) = effective(p.u_d, p.r_d, r_d_star);
        let b = &self.base;
        let terms = [
            b.a.ln() - b.alpha * n_eff.ln(),
            b.b.ln() - b.beta * d_eff.ln(),
            b.e.ln(),
        ];
        (lse(&terms, w), dn, dd)
    }
}

impl Objective for Obj<'_> {
    fn eval(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let (r_n_star, r_d_star) = (x[0].exp(), x[1].exp());
        g[0] = 0.0;
        g[1] = 0.0;
        let mut total = 0.0;
        let mut w = [0.0; 3];
        for p in self.pts {
            let (pred, dn, dd) = self.predict_ln(p, r_n_star, r_d_star, &mut w);
            let (h, dh) = huber(pred - p.ln_l, self.delta);
            total += h;
            g[0] += dh * (-self.base.alpha * w[0]) * dn;
            g[1] += dh * (-self.base.beta * w[1]) * dd;
        }
        total
    }
}

/// Fit R_D* and R_N* with the base law fixed. Needs points with U_D > 0, D ≥ U_D.
pub fn fit_constrained(
    points: &[RepeatPoint],
    base: ChinchillaParams,
    delta: f64,
) -> anyhow::Result<ConstrainedFit> {
    let pts = prepare(points, &base);
    let obj = Obj {
        pts: &pts,
        base,
        delta,
    };
    // The paper's grid {4, 8, ..., 20} for both constants, widened to 0.5 ... 100.
    let grid = [0.5f64, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0, 40.0, 100.0];
    let starts: Vec<Vec<f64>> = grid
        .iter()
        .flat_map(|&a| grid.iter().map(move |&b| vec![a.ln(), b.ln()]))
        .collect();
    let opt = LbfgsOptions {
        max_iters: 500,
        ..Default::default()
    };
    let mins: Vec<super::optim::LocalMin> = {
        use rayon::prelude::*;
        starts
            .par_iter()
            .filter_map(|x0| local_min(&obj, x0, opt))
            .collect()
    };
    let mut sorted = mins.clone();
    sorted.sort_by(|a, b| a.objective.total_cmp(&b.objective));
    let Some(best) = sorted.first().cloned() else {
        anyhow::bail!("data-constrained fit: every start failed");
    };
    let convergence = Convergence {
        starts: starts.len(),
        failed_starts: starts.len() - mins.len(),
        converged_starts: mins.iter().filter(|m| m.converged).count(),
        best_iterations: best.iterations,
        best_grad_norm: best.grad_norm,
        best_converged: best.converged,
    };
    let mut local_minima: Vec<[f64; 3]> = Vec::new();
    for m in &sorted {
        let (rn, rd) = (m.x[0].exp(), m.x[1].exp());
        let same = local_minima
            .iter()
            .any(|k| (k[0] / rd - 1.0).abs() < 0.01 && (k[1] / rn - 1.0).abs() < 0.01);
        if !same && local_minima.len() < 5 {
            local_minima.push([rd, rn, m.objective]);
        }
    }
    let (r_n_star, r_d_star) = (best.x[0].exp(), best.x[1].exp());
    let mut w = [0.0; 3];
    let preds: Vec<f64> = pts
        .iter()
        .map(|p| obj.predict_ln(p, r_n_star, r_d_star, &mut w).0.exp())
        .collect();
    let mean = points.iter().map(|p| p.loss).sum::<f64>() / points.len() as f64;
    let ss_tot: f64 = points.iter().map(|p| (p.loss - mean).powi(2)).sum();
    let ss_res: f64 = points
        .iter()
        .zip(&preds)
        .map(|(p, q)| (p.loss - q).powi(2))
        .sum();
    Ok(ConstrainedFit {
        r_d_star,
        r_n_star,
        objective: best.objective,
        r2: 1.0 - ss_res / ss_tot,
        n_points: points.len(),
        n_repeated: points.iter().filter(|p| p.d > p.u_d * (1.0 + 1e-9)).count(),
        base,
        huber_delta: delta,
        convergence,
        r_d_star_ci: None,
        r_n_star_ci: None,
        local_minima,
    })
}

/// Percentile bootstrap intervals for R_D* and R_N* (resampling points).
pub fn bootstrap_constrained(
    points: &[RepeatPoint],
    fit: &mut ConstrainedFit,
    resamples: usize,
    seed: u64,
) {
    use rayon::prelude::*;
    if resamples == 0 {
        return;
    }
    let draws: Vec<(f64, f64)> = (0..resamples)
        .into_par_iter()
        .filter_map(|k| {
            let mut rng = crate::hashing::Rng::new(seed ^ (k as u64).wrapping_mul(0x9E37_79B9));
            let sample: Vec<RepeatPoint> = (0..points.len())
                .map(|_| points[rng.below(points.len())])
                .collect();
            let f = fit_constrained(&sample, fit.base, fit.huber_delta).ok()?;
            Some((f.r_d_star, f.r_n_star))
        })
        .collect();
    if draws.len() < 10 {
        return;
    }
    let ci = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        [q(0.025), q(0.975)]
    };
    fit.r_d_star_ci = Some(ci(draws.iter().map(|d| d.0).collect()));
    fit.r_n_star_ci = Some(ci(draws.iter().map(|d| d.1).collect()));
}

/// Loss predicted by the fitted data-constrained law.
pub fn predict(fit: &ConstrainedFit, p: &RepeatPoint) -> f64 {
    let pp = &prepare(std::slice::from_ref(p), &fit.base)[0];
    let (n_eff, _) = effective(pp.u_n, pp.r_n, fit.r_n_star);
    let (d_eff, _) = effective(pp.u_d, pp.r_d, fit.r_d_star);
    fit.base.predict(n_eff, d_eff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_known_decay_constants() {
        let base = ChinchillaParams {
            e: 1.87,
            a: 521.0,
            b: 1488.0,
            alpha: 0.35,
            beta: 0.35,
        };
        let truth = ConstrainedFit {
            r_d_star: 15.0,
            r_n_star: 5.0,
            objective: 0.0,
            r2: 1.0,
            n_points: 0,
            n_repeated: 0,
            base,
            huber_delta: 1e-3,
            convergence: Convergence {
                starts: 0,
                failed_starts: 0,
                converged_starts: 0,
                best_iterations: 0,
                best_grad_norm: 0.0,
                best_converged: true,
            },
            r_d_star_ci: None,
            r_n_star_ci: None,
            local_minima: Vec::new(),
        };
        // A grid like the paper's: unique budgets, epochs 1..200, models around and above
        // the compute-optimal size for U_D.
        let mut pts = Vec::new();
        let mut rng = crate::hashing::Rng::new(3);
        for &u_d in &[1e8, 4e8, 1.5e9, 1.2e10] {
            for &ep in &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 200.0] {
                for &mult in &[0.3, 1.0, 3.0, 10.0, 30.0] {
                    let n = optimal_n_for_data(&base, u_d) * mult;
                    let mut p = RepeatPoint {
                        n,
                        d: u_d * ep,
                        u_d,
                        loss: 0.0,
                    };
                    p.loss = predict(&truth, &p) * (1.0 + 0.002 * rng.normal());
                    pts.push(p);
                }
            }
        }
        let f = fit_constrained(&pts, base, 1e-3).unwrap();
        assert!((f.r_d_star - 15.0).abs() < 1.0, "R_D* {}", f.r_d_star);
        assert!((f.r_n_star - 5.0).abs() < 0.5, "R_N* {}", f.r_n_star);
        assert!(f.r2 > 0.99);
        assert_eq!(f.n_repeated, 4 * 7 * 5);
        // α = β: U_N = G²·U_D.
        let g2 = (0.35f64 * 521.0 / (0.35 * 1488.0)).powf(2.0 / 0.7);
        assert!((optimal_n_for_data(&base, 1e9) / (g2 * 1e9) - 1.0).abs() < 1e-12);
    }
}
