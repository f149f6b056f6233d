//! Prediction intervals for a new run's loss, residual noise included.
//!
//! Owns the one definition: for every bootstrap law L̂_b (parameter uncertainty), `DRAWS`
//! residuals r drawn (seeded) from the full fit's log residuals ln L − ln L̂, inflated by
//! √(n/(n−p)) for the p fitted parameters; the interval is the percentile interval of
//! L̂_b(N, D)·e^r. Pure over arrays.

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::{percentile, Point};
use crate::hashing::Rng;

/// Residual draws per bootstrap law.
pub const DRAWS: usize = 25;

/// What a prediction interval is built from.
#[derive(Debug, Clone, Serialize)]
pub struct PredictionModel {
    /// Inflated log residuals of the full fit.
    pub log_residuals: Vec<f64>,
    /// √(n/(n−p)).
    pub inflation: f64,
    /// Standard deviation of the inflated log residuals.
    pub residual_sd: f64,
    pub draws_per_law: usize,
    pub seed: u64,
}

impl PredictionModel {
    /// From the full fit `law` on `points` with `n_free` fitted parameters.
    pub fn new(law: &ChinchillaParams, points: &[Point], n_free: usize, seed: u64) -> Self {
        let n = points.len() as f64;
        let inflation = (n / (n - n_free as f64).max(1.0)).sqrt();
        let log_residuals: Vec<f64> = points
            .iter()
            .map(|q| inflation * (q.loss.ln() - law.predict(q.n, q.d).ln()))
            .collect();
        let m = log_residuals.iter().sum::<f64>() / n;
        let residual_sd = (log_residuals.iter().map(|r| (r - m).powi(2)).sum::<f64>() / n).sqrt();
        PredictionModel {
            log_residuals,
            inflation,
            residual_sd,
            draws_per_law: DRAWS,
            seed,
        }
    }

    /// The central `level` interval (e.g. 0.95) of a new run's loss at (N, D), over the
    /// bootstrap `laws`; NaN when no law predicts a finite loss there.
    pub fn interval(&self, laws: &[ChinchillaParams], n: f64, d: f64, level: f64) -> [f64; 2] {
        let mut rng = Rng::new(self.seed ^ n.to_bits().rotate_left(17) ^ d.to_bits());
        let r = &self.log_residuals;
        let mut v = Vec::with_capacity(laws.len() * self.draws_per_law);
        for law in laws {
            let base = law.predict(n, d);
            if !base.is_finite() || r.is_empty() {
                continue;
            }
            for _ in 0..self.draws_per_law {
                v.push(base * r[rng.below(r.len())].exp());
            }
        }
        if v.is_empty() {
            return [f64::NAN, f64::NAN];
        }
        let tail = (1.0 - level) / 2.0;
        [percentile(&mut v, tail), percentile(&mut v, 1.0 - tail)]
    }
}
