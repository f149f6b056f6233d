//! Design power by simulation: what a sweep design would measure if the corpus followed a
//! known law exactly and its runs scattered as a finished sweep's replicates did.
//!
//! Owns the simulation and its truth: the reference sweep's law ([`truth`]: E pinned to its
//! floor when the floor is known, else free). In each draw every planned run's loss is the truth's prediction
//! times (1 + ε), ε drawn with replacement from the reference runs' relative deviations at the
//! budget nearest in log C ([`super::replicates::deviations_by_budget`]; a design budget past
//! the reference's borrows the nearest pool, and the report says so). Stuck runs enter with
//! their deviation from their point's mean, which they pull up themselves: tails are kept but
//! shrunk. Each draw is fitted as a results folder is ([`super::fit_all`]:
//! bootstrap, the largest budget held out, E pinned to the floor beside the free fit when a
//! floor is known; no backtests) and its figures kept. Pure: points in, report out.

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::replicates::BudgetDeviations;
use super::{fit_all, fit_law, grid, isoflop, Dataset, FitOptions, FitReport, Point};
use crate::hashing::Rng;

/// One draw's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Draw {
    /// Width (hi/lo) of the free law's 95% bootstrap intervals of α and β.
    pub alpha_ci_ratio: f64,
    pub beta_ci_ratio: f64,
    /// The held-out largest budget: mean |error| of its runs, and of its seed means.
    pub held_out_pct: Option<f64>,
    pub held_out_means_pct: Option<f64>,
    /// (free E − true E) / true E.
    pub e_rel_err: f64,
    /// Compute-optimal exponent a by Approach 3 and Approach 2, and Approach 2's usable budgets.
    pub a3: f64,
    pub a2: Option<f64>,
    pub a2_used_budgets: usize,
    /// The law with E pinned to the floor (when a floor is known): α, β widths and held-out.
    pub pinned_alpha_ci_ratio: Option<f64>,
    pub pinned_beta_ci_ratio: Option<f64>,
    pub pinned_held_out_pct: Option<f64>,
}

/// The figures a simulation summarises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    AlphaCiFree,
    BetaCiFree,
    HeldOut,
    HeldOutMeans,
    FreeEVsTrue,
    A3,
    A2,
    A2UsableBudgets,
    AlphaCiPinned,
    BetaCiPinned,
    HeldOutPinned,
}

impl Figure {
    pub const ALL: [Figure; 11] = [
        Figure::AlphaCiFree,
        Figure::BetaCiFree,
        Figure::HeldOut,
        Figure::HeldOutMeans,
        Figure::FreeEVsTrue,
        Figure::A3,
        Figure::A2,
        Figure::A2UsableBudgets,
        Figure::AlphaCiPinned,
        Figure::BetaCiPinned,
        Figure::HeldOutPinned,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Figure::AlphaCiFree => "α 95% CI width (hi/lo), E free",
            Figure::BetaCiFree => "β 95% CI width (hi/lo), E free",
            Figure::HeldOut => "held-out runs, mean |error| %",
            Figure::HeldOutMeans => "held-out seed means, mean |error| %",
            Figure::FreeEVsTrue => "free E vs true E, %",
            Figure::A3 => "a, Approach 3",
            Figure::A2 => "a, Approach 2",
            Figure::A2UsableBudgets => "Approach 2 usable budgets",
            Figure::AlphaCiPinned => "α 95% CI width, E pinned",
            Figure::BetaCiPinned => "β 95% CI width, E pinned",
            Figure::HeldOutPinned => "held-out runs %, E pinned",
        }
    }

    /// This figure of one draw, when the draw has it.
    pub fn of(self, d: &Draw) -> Option<f64> {
        match self {
            Figure::AlphaCiFree => Some(d.alpha_ci_ratio),
            Figure::BetaCiFree => Some(d.beta_ci_ratio),
            Figure::HeldOut => d.held_out_pct,
            Figure::HeldOutMeans => d.held_out_means_pct,
            Figure::FreeEVsTrue => Some(100.0 * d.e_rel_err),
            Figure::A3 => Some(d.a3),
            Figure::A2 => d.a2,
            Figure::A2UsableBudgets => Some(d.a2_used_budgets as f64),
            Figure::AlphaCiPinned => d.pinned_alpha_ci_ratio,
            Figure::BetaCiPinned => d.pinned_beta_ci_ratio,
            Figure::HeldOutPinned => d.pinned_held_out_pct,
        }
    }
}

/// A figure's median and 10th–90th percentile over the draws that have it.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub figure: Figure,
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub draws: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PowerReport {
    pub truth: ChinchillaParams,
    pub truth_e_pinned: bool,
    pub runs: usize,
    /// The design's budgets (its IsoFLOP budgets, else each point's C), each with the
    /// reference budget whose noise it draws.
    pub budgets: Vec<[f64; 2]>,
    pub noise: Vec<BudgetDeviations>,
    pub summary: Vec<Spread>,
    pub draws: Vec<Draw>,
}

/// The settings of a simulation.
#[derive(Debug, Clone)]
pub struct PowerOptions {
    pub draws: usize,
    pub seed: u64,
    /// How each draw is fitted (bootstrap, hold-out, floor).
    pub fit: FitOptions,
}

/// The reference's law: E pinned to `floor` when one is known, else free.
pub fn truth(reference: &[Point], floor: Option<f64>) -> anyhow::Result<ChinchillaParams> {
    let opts = FitOptions {
        fixed_e: floor,
        ..FitOptions::default()
    };
    Ok(fit_law(reference, &opts, &grid(1))?.params)
}

/// Simulate `design` (its points' N, D and budget; their losses are ignored) under `truth`
/// (the [`truth`] of `opts.fit.floor`) with the noise of `noise`, `opts.draws` times.
pub fn simulate(
    design: &[Point],
    truth: &ChinchillaParams,
    noise: &[BudgetDeviations],
    opts: &PowerOptions,
) -> anyhow::Result<PowerReport> {
    anyhow::ensure!(
        !noise.is_empty(),
        "no replicate deviations to draw noise from"
    );
    // Each design point's true loss and the pool its noise comes from, once for all draws.
    let base: Vec<(f64, &[f64])> = design
        .iter()
        .map(|p| {
            let pool = nearest(noise, p.budget_or_c());
            (truth.predict(p.n, p.d), pool.deviations.as_slice())
        })
        .collect();
    let mut rng = Rng::new(opts.seed ^ 0x9077_E2);
    let mut draws = Vec::with_capacity(opts.draws);
    for k in 0..opts.draws {
        let points: Vec<Point> = design
            .iter()
            .zip(&base)
            .map(|(p, &(loss, pool))| Point {
                loss: loss * (1.0 + pool[rng.below(pool.len())]),
                ..p.clone()
            })
            .collect();
        let data = Dataset {
            source: format!("power draw {k}"),
            points,
            dropped_top: 0,
            curves: Vec::new(),
        };
        let fit = FitOptions {
            seed: opts.fit.seed.wrapping_add(k as u64),
            ..opts.fit.clone()
        };
        draws.push(figures(&fit_all(&data, &fit)?, truth));
    }
    let budgets = isoflop::group_budgets(design)
        .1
        .iter()
        .map(|(b, _)| [*b, nearest(noise, *b).budget])
        .collect();
    Ok(PowerReport {
        truth: *truth,
        truth_e_pinned: opts.fit.floor.is_some(),
        runs: design.len(),
        budgets,
        noise: noise.to_vec(),
        summary: summary(&draws),
        draws,
    })
}

/// The pool whose budget is nearest to `c` in log C.
fn nearest(noise: &[BudgetDeviations], c: f64) -> &BudgetDeviations {
    let dist = |b: &BudgetDeviations| (b.budget.ln() - c.ln()).abs();
    noise
        .iter()
        .min_by(|x, y| dist(x).total_cmp(&dist(y)))
        .expect("non-empty noise pools")
}

fn figures(r: &FitReport, truth: &ChinchillaParams) -> Draw {
    let ratio = |ci: [f64; 2]| ci[1] / ci[0];
    let boot = r.bootstrap.as_ref();
    let pinned = r.e_floor.as_ref();
    let pinned_boot = pinned.and_then(|f| f.pinned_bootstrap.as_ref());
    let held = r.holdout.as_ref();
    Draw {
        alpha_ci_ratio: boot.map_or(f64::NAN, |b| ratio(b.alpha)),
        beta_ci_ratio: boot.map_or(f64::NAN, |b| ratio(b.beta)),
        held_out_pct: held.map(|h| 100.0 * h.mean_abs_pct_error),
        held_out_means_pct: held
            .and_then(|h| h.replicates.as_ref())
            .map(|m| 100.0 * m.mean_abs_pct_error_of_means),
        e_rel_err: (r.e - truth.e) / truth.e,
        a3: r.compute_optimal.a,
        a2: r.approach2.a,
        a2_used_budgets: r.approach2.used_budgets,
        pinned_alpha_ci_ratio: pinned_boot.map(|b| ratio(b.alpha)),
        pinned_beta_ci_ratio: pinned_boot.map(|b| ratio(b.beta)),
        pinned_held_out_pct: pinned
            .and_then(|f| f.pinned_holdout.as_ref())
            .map(|h| 100.0 * h.mean_abs_pct_error),
    }
}

fn summary(draws: &[Draw]) -> Vec<Spread> {
    Figure::ALL
        .iter()
        .filter_map(|&figure| {
            let mut v: Vec<f64> = draws
                .iter()
                .filter_map(|d| figure.of(d))
                .filter(|x| x.is_finite())
                .collect();
            (!v.is_empty()).then(|| Spread {
                figure,
                median: super::percentile(&mut v, 0.5),
                p10: super::percentile(&mut v, 0.1),
                p90: super::percentile(&mut v, 0.9),
                draws: v.len(),
            })
        })
        .collect()
}

/// The report as text: the truth, the noise, one line per figure.
pub fn render_text(r: &PowerReport, design: &str, reference: &str) -> String {
    use std::fmt::Write;
    let t = &r.truth;
    let budgets: Vec<String> = r.budgets.iter().map(|b| format!("{:.0e}", b[0])).collect();
    let mut s = format!(
        "Design power: {} draws of {design} ({} runs, budgets {})\n",
        r.draws.len(),
        r.runs,
        budgets.join(", ")
    );
    let _ = writeln!(
        s,
        "truth: {reference}'s law{}: E={} A={} B={} alpha={} beta={} (a = {:.3})",
        if r.truth_e_pinned {
            " with E pinned to its floor"
        } else {
            " (E free: no floor known)"
        },
        super::num(t.e),
        super::num(t.a),
        super::num(t.b),
        super::num(t.alpha),
        super::num(t.beta),
        t.exponent_a()
    );
    let _ = writeln!(
        s,
        "noise: its runs' deviations from their seed means, by budget:"
    );
    for b in &r.noise {
        let users: Vec<String> = r
            .budgets
            .iter()
            .filter(|d| d[1] == b.budget)
            .map(|d| format!("{:.0e}", d[0]))
            .collect();
        let _ = writeln!(
            s,
            "  {:.3e}: {} runs, mean |deviation| {:.2}%; drawn for the design's {}",
            b.budget,
            b.deviations.len(),
            100.0 * b.mean_abs(),
            if users.is_empty() {
                "none".into()
            } else {
                users.join(", ")
            }
        );
    }
    let _ = writeln!(
        s,
        "\n{:<40} {:>9}  {:>19}",
        "figure", "median", "10%–90% of draws"
    );
    for f in &r.summary {
        let name = match f.figure {
            Figure::A2UsableBudgets => format!("{} (of {})", f.figure.label(), r.budgets.len()),
            _ => f.figure.label().to_string(),
        };
        let _ = writeln!(
            s,
            "{name:<40} {:>9.3}  {:>8.3} – {:.3}",
            f.median, f.p10, f.p90
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(truth: &ChinchillaParams, seeds: usize) -> Vec<Point> {
        let mut pts = Vec::new();
        for k in 0..4 {
            let c = 1e18 * 10f64.powi(k);
            let (n_star, _) = truth.optimal(c);
            for j in -3..=3 {
                let n = n_star * 2f64.powf(j as f64 * 0.5);
                for _ in 0..seeds {
                    pts.push(Point {
                        n,
                        d: c / (6.0 * n),
                        loss: 0.0,
                        budget: Some(c),
                        c: None,
                        unique: None,
                    });
                }
            }
        }
        pts
    }

    fn opts(draws: usize) -> PowerOptions {
        PowerOptions {
            draws,
            seed: 3,
            fit: FitOptions {
                bootstrap: 40,
                grid_stride: 5,
                backtest: false,
                holdout: super::super::Holdout::LargestBudget,
                floor: Some(1.7),
                ..FitOptions::default()
            },
        }
    }

    const TRUTH: ChinchillaParams = ChinchillaParams {
        e: 1.7,
        a: 400.0,
        b: 1800.0,
        alpha: 0.34,
        beta: 0.28,
    };

    #[test]
    fn less_noise_gives_narrower_intervals_and_smaller_held_out_errors() {
        // The same design under 2% and 0.2% symmetric noise: with ten times less noise the
        // recovered law is closer to the truth on every figure.
        let pool = |s: f64| {
            vec![BudgetDeviations {
                budget: 1e20,
                deviations: vec![-s, -s / 2.0, 0.0, s / 2.0, s],
            }]
        };
        let design = ladder(&TRUTH, 2);
        let run = |s: f64| simulate(&design, &TRUTH, &pool(s), &opts(4)).unwrap();
        let (loud, quiet) = (run(0.02), run(0.002));
        assert_eq!(
            (loud.runs, loud.budgets.len(), loud.draws.len()),
            (56, 4, 4)
        );
        let med = |r: &PowerReport, f: Figure| {
            r.summary
                .iter()
                .find(|s| s.figure == f)
                .unwrap_or_else(|| panic!("{f:?}"))
                .median
        };
        for f in [Figure::AlphaCiFree, Figure::HeldOut, Figure::HeldOutMeans] {
            assert!(
                med(&quiet, f) < med(&loud, f),
                "{f:?}: {} vs {}",
                med(&quiet, f),
                med(&loud, f)
            );
        }
        // Quiet runs recover the truth: α's interval within 1.1×, held-out within 0.2%.
        assert!(med(&quiet, Figure::AlphaCiPinned) < 1.1);
        assert!(med(&quiet, Figure::HeldOutPinned) < 0.2);
        let a_true = TRUTH.exponent_a();
        assert!((med(&quiet, Figure::A3) - a_true).abs() < 0.02);
        // Every design budget draws from the one pool.
        assert!(loud.budgets.iter().all(|b| b[1] == 1e20));
    }

    #[test]
    fn noise_is_taken_from_the_nearest_budget() {
        let pools = [1e18, 1e20].map(|b| BudgetDeviations {
            budget: b,
            deviations: vec![b.log10()],
        });
        assert_eq!(nearest(&pools, 3e18).budget, 1e18);
        assert_eq!(nearest(&pools, 2e19).budget, 1e20);
    }
}
