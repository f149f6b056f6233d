//! Replicate noise of a held-out check: how much of its error is run-to-run scatter.
//!
//! Owns one rule. Held-out runs that share (N, D) (seeds of one design point) are replicates.
//! A law that predicted every point's expected loss exactly would still miss each single run
//! by that run's distance from the expectation, so on average it scores the seeds' scatter on
//! runs (and the scatter / √(runs per point) on seed means): an expected value, not a bound.
//! Over the points with at least two runs this module reports the error of the law against
//! the replicates' mean, and that scatter: mean |run − mean| / run, each deviation scaled by √(n / (n − 1)) (a deviation from the sample mean of n runs is √((n − 1) / n)
//! times smaller than one from the true mean). The same deviations, pooled by budget, are
//! the noise of a design-power simulation ([`super::power`]). Pure functions over points.

use serde::Serialize;

use super::{HeldOutPoint, Point};

/// Items grouped by equal `key` (the bits of N, D and, for pools, the budget), in first-seen
/// order; groups of one dropped.
fn replicate_groups<T>(items: &[T], key: impl Fn(&T) -> [u64; 3]) -> Vec<Vec<&T>> {
    let mut groups: Vec<([u64; 3], Vec<&T>)> = Vec::new();
    for p in items {
        let k = key(p);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, g)) => g.push(p),
            None => groups.push((k, vec![p])),
        }
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| g.len() >= 2)
        .collect()
}

/// Each run's relative deviation from its point's seed mean, scaled by √(n / (n − 1)).
fn deviations(losses: &[f64]) -> impl Iterator<Item = f64> + '_ {
    let n = losses.len() as f64;
    let mean = losses.iter().sum::<f64>() / n;
    let scale = (n / (n - 1.0)).sqrt();
    losses.iter().map(move |l| scale * (l - mean) / mean)
}

/// The replicated runs of one budget: their relative deviations from their point's seed mean
/// (signed, scaled by √(n / (n − 1))).
#[derive(Debug, Clone, Serialize)]
pub struct BudgetDeviations {
    /// The budget, or a point's C = 6ND when the runs have none.
    pub budget: f64,
    pub deviations: Vec<f64>,
}

impl BudgetDeviations {
    pub fn mean_abs(&self) -> f64 {
        self.deviations.iter().map(|d| d.abs()).sum::<f64>() / self.deviations.len() as f64
    }
}

/// The deviations of every replicated (budget, N, D) point, pooled by budget, budgets in
/// increasing order; empty when no point ran more than once.
pub fn deviations_by_budget(points: &[Point]) -> Vec<BudgetDeviations> {
    let groups = replicate_groups(points, |p| {
        [p.budget_or_c().to_bits(), p.n.to_bits(), p.d.to_bits()]
    });
    let mut pools: Vec<BudgetDeviations> = Vec::new();
    for g in groups {
        let losses: Vec<f64> = g.iter().map(|p| p.loss).collect();
        let b = g[0].budget_or_c();
        let i = match pools.iter().position(|p| p.budget == b) {
            Some(i) => i,
            None => {
                pools.push(BudgetDeviations {
                    budget: b,
                    deviations: Vec::new(),
                });
                pools.len() - 1
            }
        };
        pools[i].deviations.extend(deviations(&losses));
    }
    pools.sort_by(|x, y| x.budget.total_cmp(&y.budget));
    pools
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReplicateNoise {
    /// Held-out (N, D) points with at least two runs, and the runs they hold.
    pub points: usize,
    pub runs: usize,
    /// Mean and max |predicted − replicate mean| / replicate mean over those points.
    pub mean_abs_pct_error_of_means: f64,
    pub max_abs_pct_error_of_means: f64,
    /// Mean |run − replicate mean| / run, scaled by √(n / (n − 1)): the mean relative error
    /// that a law exact at every point would have on single runs, on average (an expected
    /// value, not a bound).
    pub run_scatter_pct: f64,
    /// The same for the seed means: the runs' scatter / √(runs per point). A law whose error
    /// on the means is near this is as good as the replicates can tell.
    pub means_scatter_pct: f64,
}

impl ReplicateNoise {
    /// The seed means' held-out error beside the runs' own scatter, one line.
    pub fn summary(&self) -> String {
        format!(
            "seed means of {} points ({} runs): mean |error| {:.2}%, max {:.2}%; the runs' seed-to-seed scatter {:.2}% (a law exact at every point would score about that on single runs, and about {:.2}% on the means)",
            self.points,
            self.runs,
            100.0 * self.mean_abs_pct_error_of_means,
            100.0 * self.max_abs_pct_error_of_means,
            100.0 * self.run_scatter_pct,
            100.0 * self.means_scatter_pct
        )
    }
}

/// `None` when no held-out (N, D) point has two runs.
pub fn replicate_noise(points: &[HeldOutPoint]) -> Option<ReplicateNoise> {
    let groups = replicate_groups(points, |p| [0, p.n.to_bits(), p.d.to_bits()]);
    if groups.is_empty() {
        return None;
    }
    let (mut of_means, mut scatter) = (Vec::new(), Vec::new());
    for g in &groups {
        let losses: Vec<f64> = g.iter().map(|p| p.loss).collect();
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        // Every run of a point has the same prediction.
        of_means.push((g[0].predicted - mean).abs() / mean);
        // |run − mean| / run: the deviation relative to the run, not to the mean.
        scatter.extend(
            deviations(&losses)
                .zip(&losses)
                .map(|(dev, l)| (dev * mean / l).abs()),
        );
    }
    let run_scatter = scatter.iter().sum::<f64>() / scatter.len() as f64;
    let per_point = scatter.len() as f64 / groups.len() as f64;
    Some(ReplicateNoise {
        points: groups.len(),
        runs: scatter.len(),
        mean_abs_pct_error_of_means: of_means.iter().sum::<f64>() / of_means.len() as f64,
        max_abs_pct_error_of_means: of_means.iter().cloned().fold(0.0, f64::max),
        run_scatter_pct: run_scatter,
        means_scatter_pct: run_scatter / per_point.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::Rng;

    fn point(n: f64, d: f64, loss: f64, predicted: f64) -> HeldOutPoint {
        HeldOutPoint {
            n,
            d,
            loss,
            predicted,
        }
    }

    #[test]
    fn means_and_scatter_of_a_small_case() {
        // Point 1: runs 1.0 and 1.2 (mean 1.1), predicted 1.1; point 2: one run (ignored).
        let pts = [
            point(1e4, 1e6, 1.0, 1.1),
            point(1e4, 1e6, 1.2, 1.1),
            point(2e4, 1e6, 3.0, 2.0),
        ];
        let r = replicate_noise(&pts).unwrap();
        assert_eq!((r.points, r.runs), (1, 2));
        assert!(r.mean_abs_pct_error_of_means.abs() < 1e-12);
        // √2 · (0.1/1.0 + 0.1/1.2) / 2
        let want = 2f64.sqrt() * (0.1 + 0.1 / 1.2) / 2.0;
        assert!((r.run_scatter_pct - want).abs() < 1e-12);
        assert!(replicate_noise(&pts[2..]).is_none());
    }

    #[test]
    fn an_exact_law_scores_the_scatter_on_runs_and_little_on_means() {
        // Eight points, 4 seeds each, loss = truth · (1 + ε), ε ~ N(0, 1%): the law that
        // predicts the truth scores E|ε| = 0.80% on single runs; the floor estimate must find
        // that from the runs alone, and the means' error is about E|ε|/2.
        let mut rng = Rng::new(7);
        let mut pts = Vec::new();
        let (mut run_err, mut runs) = (0.0, 0);
        for rep in 0..200 {
            for k in 0..8 {
                let (n, d) = (1e4 * (k + 1) as f64, 1e6 + rep as f64);
                let truth = 1.0 + 0.1 * k as f64;
                for _ in 0..4 {
                    let loss = truth * (1.0 + 0.01 * rng.normal());
                    run_err += (truth - loss).abs() / loss;
                    runs += 1;
                    pts.push(point(n, d, loss, truth));
                }
            }
        }
        let r = replicate_noise(&pts).unwrap();
        assert_eq!((r.points, r.runs), (1600, 6400));
        let run_err = run_err / runs as f64;
        let expected = 0.01 * (2.0 / std::f64::consts::PI).sqrt();
        assert!((run_err - expected).abs() < 0.0004, "{run_err}");
        assert!(
            (r.run_scatter_pct - run_err).abs() < 0.0004,
            "{} vs {run_err}",
            r.run_scatter_pct
        );
        let means = r.mean_abs_pct_error_of_means;
        assert!((means - expected / 2.0).abs() < 0.0004, "{means}");
        assert!((r.means_scatter_pct - r.run_scatter_pct / 2.0).abs() < 1e-15);
    }

    #[test]
    fn deviations_are_pooled_by_budget() {
        let p = |n: f64, loss: f64, budget: f64| Point {
            n,
            d: budget / (6.0 * n),
            loss,
            budget: Some(budget),
            c: None,
            unique: None,
        };
        let pts = [
            p(1e4, 1.0, 1e11),
            p(1e4, 3.0, 1e11),
            p(2e4, 2.0, 1e10),
            p(2e4, 2.2, 1e10),
            p(2e4, 1.8, 1e10),
            p(3e4, 5.0, 1e10),
        ];
        let pools = deviations_by_budget(&pts);
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].budget, 1e10);
        // Mean 2.0: deviations 0, +0.1, −0.1, scaled by √(3/2); the single run is left out.
        let s = 1.5f64.sqrt();
        let want = [0.0, 0.1 * s, -0.1 * s];
        for (got, want) in pools[0].deviations.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        // Mean 2.0: ±0.5, scaled by √2.
        assert!((pools[1].mean_abs() - 0.5 * 2f64.sqrt()).abs() < 1e-12);
        assert!(deviations_by_budget(&pts[5..]).is_empty());
    }
}
