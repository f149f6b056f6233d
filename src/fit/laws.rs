//! The parametric laws and their fitting objectives (Huber loss on log-loss, summed).
//!
//! * Chinchilla (Approach 3): `L = E + A/N^α + B/D^β`, parameterised as
//!   `log L̂ = LSE(a − α log N, b − β log D, e)`, `A = e^a, B = e^b, E = e^e`; the objective
//!   is summed Huber on log-loss (default) or the sum of squared errors on L
//!   ([`FitObjective`]).
//! * Kaplan single-variable: `L = (X_c/X)^α_X` (+ E), as `log L̂ = k − α log X` or
//!   `LSE(k − α log X, e)` with `X_c = e^(k/α)`.
//! * Kaplan joint: `L = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D`, as
//!   `log L̂ = α_D · LSE(p − q log N, r − log D)` with `q = α_N/α_D`, `N_c = e^(p/q)`, `D_c = e^r`.

use serde::Serialize;

use super::optim::{huber, lse, Objective};

/// The standard Approach-3 start grid (Hoffmann et al. / Besiroglu et al.):
/// α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}: 4,500 starts,
/// each as `[a, b, e, α, β]`.
pub fn chinchilla_grid() -> Vec<Vec<f64>> {
    let mut v = Vec::with_capacity(4500);
    for ai in 0..6 {
        for bi in 0..6 {
            for ei in 0..5 {
                for al in 0..5 {
                    for be in 0..5 {
                        v.push(vec![
                            5.0 * ai as f64,
                            5.0 * bi as f64,
                            -1.0 + 0.5 * ei as f64,
                            0.5 * al as f64,
                            0.5 * be as f64,
                        ]);
                    }
                }
            }
        }
    }
    v
}

/// What Approach 3 minimises over the points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FitObjective {
    /// Σ Huber_δ(log L̂ − log L) (Hoffmann et al., Besiroglu et al.).
    #[default]
    Huber,
    /// Σ (L̂ − L)² on the loss itself (Open-Athena's variable projection).
    Sse,
}

impl FitObjective {
    /// The per-point loss and its derivative with respect to log L̂, given log L̂ and log L.
    #[inline]
    pub fn point(self, pred: f64, ln_l: f64, delta: f64) -> (f64, f64) {
        match self {
            FitObjective::Huber => huber(pred - ln_l, delta),
            FitObjective::Sse => {
                let lhat = pred.exp();
                let r = lhat - ln_l.exp();
                (r * r, 2.0 * r * lhat)
            }
        }
    }
}

/// Σ Huber_δ(log L̂(N, D) − log L) (or Σ (L̂ − L)², [`FitObjective`]) for the Chinchilla law.
pub struct ChinchillaObjective<'a> {
    pub ln_n: &'a [f64],
    pub ln_d: &'a [f64],
    pub ln_l: &'a [f64],
    pub delta: f64,
    /// When set, e = ln E is fixed and the parameter vector is `[a, b, α, β]`.
    pub fixed_e: Option<f64>,
    pub objective: FitObjective,
}

impl ChinchillaObjective<'_> {
    /// Expand a free-parameter vector into `[a, b, e, α, β]`.
    pub fn full(&self, x: &[f64]) -> [f64; 5] {
        match self.fixed_e {
            Some(e) => [x[0], x[1], e, x[2], x[3]],
            None => [x[0], x[1], x[2], x[3], x[4]],
        }
    }
}

impl Objective for ChinchillaObjective<'_> {
    fn eval(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let [a, b, e, al, be] = self.full(x);
        let mut g = [0.0; 5];
        let mut total = 0.0;
        let mut w = [0.0; 3];
        for i in 0..self.ln_l.len() {
            let (ln_n, ln_d) = (self.ln_n[i], self.ln_d[i]);
            let pred = lse(&[a - al * ln_n, b - be * ln_d, e], &mut w);
            let (h, dh) = self.objective.point(pred, self.ln_l[i], self.delta);
            total += h;
            g[0] += dh * w[0];
            g[1] += dh * w[1];
            g[2] += dh * w[2];
            g[3] -= dh * w[0] * ln_n;
            g[4] -= dh * w[1] * ln_d;
        }
        match self.fixed_e {
            Some(_) => {
                grad[0] = g[0];
                grad[1] = g[1];
                grad[2] = g[3];
                grad[3] = g[4];
            }
            None => grad.copy_from_slice(&g),
        }
        total
    }
}

/// Chinchilla parameters in natural units.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ChinchillaParams {
    #[serde(rename = "E")]
    pub e: f64,
    #[serde(rename = "A")]
    pub a: f64,
    #[serde(rename = "B")]
    pub b: f64,
    pub alpha: f64,
    pub beta: f64,
}

impl ChinchillaParams {
    pub fn from_log(p: [f64; 5]) -> Self {
        ChinchillaParams {
            a: p[0].exp(),
            b: p[1].exp(),
            e: p[2].exp(),
            alpha: p[3],
            beta: p[4],
        }
    }

    pub fn predict(&self, n: f64, d: f64) -> f64 {
        self.e + self.a / n.powf(self.alpha) + self.b / d.powf(self.beta)
    }

    /// Compute-optimal exponent a = β/(α+β) (N_opt ∝ C^a).
    pub fn exponent_a(&self) -> f64 {
        self.beta / (self.alpha + self.beta)
    }

    /// Closed-form compute-optimal (N*, D*) for C = 6 N D.
    pub fn optimal(&self, c: f64) -> (f64, f64) {
        let s = self.alpha + self.beta;
        let g = (self.alpha * self.a / (self.beta * self.b)).powf(1.0 / s);
        let n = g * (c / 6.0).powf(self.beta / s);
        let d = (c / 6.0).powf(self.alpha / s) / g;
        (n, d)
    }
}

/// Σ Huber(log L̂(X) − log L) for `L = (X_c/X)^α` (+ E). x = `[k, α]` or `[k, α, e]`.
pub struct KaplanObjective<'a> {
    pub ln_x: &'a [f64],
    pub ln_l: &'a [f64],
    pub delta: f64,
    pub with_e: bool,
}

impl Objective for KaplanObjective<'_> {
    fn eval(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut total = 0.0;
        let mut w = [0.0; 2];
        for i in 0..self.ln_l.len() {
            let t = x[0] - x[1] * self.ln_x[i];
            let pred = if self.with_e {
                lse(&[t, x[2]], &mut w)
            } else {
                t
            };
            if !self.with_e {
                w[0] = 1.0;
            }
            let (h, dh) = huber(pred - self.ln_l[i], self.delta);
            total += h;
            grad[0] += dh * w[0];
            grad[1] -= dh * w[0] * self.ln_x[i];
            if self.with_e {
                grad[2] += dh * w[1];
            }
        }
        total
    }
}

/// Σ Huber for Kaplan's joint law. x = `[p, q, r, α_D]`.
pub struct KaplanNdObjective<'a> {
    pub ln_n: &'a [f64],
    pub ln_d: &'a [f64],
    pub ln_l: &'a [f64],
    pub delta: f64,
}

impl Objective for KaplanNdObjective<'_> {
    fn eval(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let (p, q, r, ad) = (x[0], x[1], x[2], x[3]);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut total = 0.0;
        let mut w = [0.0; 2];
        for i in 0..self.ln_l.len() {
            let s = lse(&[p - q * self.ln_n[i], r - self.ln_d[i]], &mut w);
            let (h, dh) = huber(ad * s - self.ln_l[i], self.delta);
            total += h;
            grad[0] += dh * ad * w[0];
            grad[1] -= dh * ad * w[0] * self.ln_n[i];
            grad[2] += dh * ad * w[1];
            grad[3] += dh * s;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_grad<O: Objective>(obj: &O, x: &[f64]) {
        let mut g = vec![0.0; x.len()];
        obj.eval(x, &mut g);
        for i in 0..x.len() {
            let h = 1e-6 * (1.0 + x[i].abs());
            let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
            xp[i] += h;
            xm[i] -= h;
            let mut tmp = vec![0.0; x.len()];
            let num = (obj.eval(&xp, &mut tmp) - obj.eval(&xm, &mut tmp)) / (2.0 * h);
            assert!(
                (num - g[i]).abs() < 1e-4 * (1.0 + num.abs()),
                "d/dx{i}: {num} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn analytic_gradients_match_finite_differences() {
        let ln_n: Vec<f64> = (0..20).map(|i| 16.0 + 0.3 * i as f64).collect();
        let ln_d: Vec<f64> = (0..20)
            .map(|i| 19.0 + 0.25 * ((i * 7) % 20) as f64)
            .collect();
        let ln_l: Vec<f64> = (0..20)
            .map(|i| 1.0 + 0.03 * ((i * 3) % 11) as f64)
            .collect();
        // A large delta keeps every residual in the smooth quadratic zone.
        let c = ChinchillaObjective {
            ln_n: &ln_n,
            ln_d: &ln_d,
            ln_l: &ln_l,
            delta: 10.0,
            fixed_e: None,
            objective: FitObjective::Huber,
        };
        check_grad(&c, &[6.0, 7.0, 0.5, 0.3, 0.35]);
        let sse = ChinchillaObjective {
            objective: FitObjective::Sse,
            ..c
        };
        check_grad(&sse, &[6.0, 7.0, 0.5, 0.3, 0.35]);
        let cf = ChinchillaObjective {
            fixed_e: Some(0.4),
            ..sse
        };
        check_grad(&cf, &[6.0, 7.0, 0.3, 0.35]);
        let k = KaplanObjective {
            ln_x: &ln_n,
            ln_l: &ln_l,
            delta: 10.0,
            with_e: true,
        };
        check_grad(&k, &[3.0, 0.1, 0.2]);
        let k0 = KaplanObjective { with_e: false, ..k };
        check_grad(&k0, &[3.0, 0.1]);
        let nd = KaplanNdObjective {
            ln_n: &ln_n,
            ln_d: &ln_d,
            ln_l: &ln_l,
            delta: 10.0,
        };
        check_grad(&nd, &[20.0, 1.2, 22.0, 0.1]);
    }

    #[test]
    fn grid_has_4500_starts() {
        assert_eq!(chinchilla_grid().len(), 4500);
    }
}
