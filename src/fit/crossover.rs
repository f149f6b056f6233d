//! Where the models overtake a reference: the compute at which the fitted compute-optimal
//! frontier L*(C) falls below a reference loss (the sweep's best n-gram baseline), its
//! bootstrap interval, and which runs already beat the reference. Owns that crossing; pure
//! over laws and points.

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::{ci, Point};

/// A loss to overtake, and what it is (e.g. "Kneser-Ney 4-gram on 1.2M tokens").
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub loss: f64,
    pub label: String,
}

/// The crossing of the fitted frontier with a reference loss.
#[derive(Debug, Clone, Serialize)]
pub struct Crossover {
    /// The reference loss (nats/token) and what it is.
    pub reference_loss: f64,
    pub reference: String,
    /// Compute where L*(C) equals the reference on the fitted law; `None` when the law's
    /// E is at or above the reference (the frontier never gets there).
    pub flops: Option<f64>,
    /// The compute-optimal allocation there.
    pub n_opt: Option<f64>,
    pub d_opt: Option<f64>,
    /// 95% interval of the crossing over the bootstrap laws that cross.
    pub flops_ci: Option<[f64; 2]>,
    /// Share of bootstrap laws that never cross (their E is at or above the reference).
    pub never_share: Option<f64>,
    /// The smallest compute of a run whose loss is already below the reference.
    pub first_run_below: Option<f64>,
    /// The lowest run loss, and that run's compute.
    pub best_run_loss: f64,
    pub best_run_flops: f64,
    /// The corpus's supply of unique training tokens, when a run reached it (the most unique
    /// tokens of any run that repeated its data): a crossing whose D* exceeds it needs
    /// repeated data, which the single-epoch law does not model. `None` when no run repeated
    /// (the supply is not known to end: the built-in stream never does).
    pub unique_tokens: Option<f64>,
}

/// L*(C): the law's loss at its compute-optimal allocation for budget `c`.
pub fn frontier_loss(p: &ChinchillaParams, c: f64) -> f64 {
    let (n, d) = p.optimal(c);
    p.predict(n, d)
}

/// The compute (FLOPs) at which L*(C) reaches `loss`: bisection on log10 C over
/// [1, 1e60] (L*(C) falls monotonically towards E). `None` when `loss <= E`, when the law
/// is degenerate, or when the crossing lies beyond 1e60 FLOPs.
pub fn crossing(p: &ChinchillaParams, loss: f64) -> Option<f64> {
    let above = |lc: f64| frontier_loss(p, 10f64.powf(lc)) > loss;
    let finite = [0.0, 60.0]
        .iter()
        .all(|&lc| frontier_loss(p, 10f64.powf(lc)).is_finite());
    if !(loss > p.e) || !finite || above(60.0) {
        return None;
    }
    let (mut lo, mut hi) = (0.0f64, 60.0f64);
    if !above(lo) {
        return Some(1.0);
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if above(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(10f64.powf(hi))
}

/// The crossing on `law`, its interval over `samples` (bootstrap laws), and the runs
/// (`points`, all of them, repeated data included) that already beat `reference`.
pub fn crossover(
    law: &ChinchillaParams,
    samples: Option<&[ChinchillaParams]>,
    points: &[Point],
    reference: &Reference,
) -> Crossover {
    let flops = crossing(law, reference.loss);
    let opt = flops.map(|c| law.optimal(c));
    let (flops_ci, never_share) = match samples {
        Some(s) if !s.is_empty() => {
            let crossed: Vec<f64> = s
                .iter()
                .filter_map(|q| crossing(q, reference.loss))
                .collect();
            let never = 1.0 - crossed.len() as f64 / s.len() as f64;
            ((!crossed.is_empty()).then(|| ci(crossed)), Some(never))
        }
        _ => (None, None),
    };
    let best = points
        .iter()
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .map(|q| (q.loss, q.c()))
        .unwrap_or((f64::NAN, f64::NAN));
    let first_run_below = points
        .iter()
        .filter(|q| q.loss < reference.loss)
        .map(|q| q.c())
        .min_by(f64::total_cmp);
    Crossover {
        reference_loss: reference.loss,
        reference: reference.label.clone(),
        flops,
        n_opt: opt.map(|o| o.0),
        d_opt: opt.map(|o| o.1),
        flops_ci,
        never_share,
        first_run_below,
        best_run_loss: best.0,
        best_run_flops: best.1,
        unique_tokens: points
            .iter()
            .filter(|q| q.repeats())
            .filter_map(|q| q.unique)
            .max_by(f64::total_cmp),
    }
}

/// One sentence for the text summary and the report.
pub fn sentence(x: &Crossover) -> String {
    let r = format!("{} ({:.4} nats/token)", x.reference, x.reference_loss);
    let ci = match (x.flops_ci, x.never_share) {
        (Some([lo, hi]), Some(nv)) if nv > 0.0 => format!(
            " (95% CI {lo:.2e}–{hi:.2e} over the bootstrap laws that cross; {:.0}% never cross)",
            100.0 * nv
        ),
        (Some([lo, hi]), _) => format!(" (95% CI {lo:.2e}–{hi:.2e})"),
        _ => String::new(),
    };
    let on_law = match (x.flops, x.n_opt, x.d_opt) {
        (Some(c), Some(n), Some(d)) => format!(
            "the fitted compute-optimal frontier reaches it at C = {c:.2e} FLOPs{ci}, with N* = {n:.3e} and D* = {d:.3e}"
        ),
        _ => "the fitted law's irreducible loss E lies at or above it, so on this law the models never get there".into(),
    };
    let repeats = match (x.d_opt, x.unique_tokens) {
        (Some(d), Some(u)) if d > u => format!(
            " D* is {:.0}× the {u:.3e} unique training tokens the runs had: the single-epoch law assumes fresh data, so on this corpus the crossing needs more text (or more epochs than the law models).",
            d / u
        ),
        _ => String::new(),
    };
    let main = match x.first_run_below {
        Some(c) => {
            format!("Crossover: runs already beat {r}, the first at C = {c:.2e} FLOPs; {on_law}.")
        }
        None => {
            let short = x.flops.map(|c| {
                format!(
                    "; the crossing needs {:.1}× its compute",
                    c / x.best_run_flops
                )
            });
            format!(
                "Crossover: no run beats {r} yet (best run {:.4} at C = {:.2e}{}); {on_law}.",
                x.best_run_loss,
                x.best_run_flops,
                short.unwrap_or_default()
            )
        }
    };
    main + &repeats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn law() -> ChinchillaParams {
        ChinchillaParams {
            e: 1.69,
            a: 406.4,
            b: 410.7,
            alpha: 0.34,
            beta: 0.28,
        }
    }

    #[test]
    fn crossing_lands_where_the_frontier_equals_the_reference() {
        let p = law();
        for c in [1e15, 1e20, 1e24] {
            let target = frontier_loss(&p, c);
            let got = crossing(&p, target).unwrap();
            assert!((got / c - 1.0).abs() < 1e-9, "{got:e} vs {c:e}");
        }
        // At or below E: never.
        assert!(crossing(&p, 1.69).is_none());
        assert!(crossing(&p, 1.0).is_none());
    }

    #[test]
    fn crossover_reports_interval_never_share_and_runs_below() {
        let p = law();
        let reference = Reference {
            loss: frontier_loss(&p, 1e21),
            label: "ref".into(),
        };
        let mut low_e = p;
        low_e.e = 1.5;
        let mut high_e = p;
        high_e.e = 5.0; // never crosses
        let samples = [p, low_e, high_e, p];
        let pt = |n: f64, d: f64, loss: f64| Point {
            n,
            d,
            loss,
            budget: None,
            c: None,
            unique: None,
        };
        let points = [
            pt(1e6, 1e8, reference.loss + 0.5),
            pt(1e7, 1e9, reference.loss - 0.1),
            pt(1e8, 1e10, reference.loss - 0.2),
        ];
        let x = crossover(&p, Some(&samples), &points, &reference);
        assert!((x.flops.unwrap() / 1e21 - 1.0).abs() < 1e-9);
        assert_eq!(x.never_share, Some(0.25));
        let [lo, hi] = x.flops_ci.unwrap();
        assert!(lo < 1e21 && hi >= 1e21 * (1.0 - 1e-9), "{lo:e} {hi:e}");
        assert_eq!(x.first_run_below, Some(6.0 * 1e7 * 1e9));
        assert_eq!(x.best_run_loss, reference.loss - 0.2);
        let (n, d) = p.optimal(x.flops.unwrap());
        assert!(
            (x.n_opt.unwrap() / n - 1.0).abs() < 1e-12
                && (x.d_opt.unwrap() / d - 1.0).abs() < 1e-12
        );
        let s = sentence(&x);
        assert!(
            s.contains("runs already beat ref") && s.contains("25% never cross"),
            "{s}"
        );
        // Runs that saw only fresh data say nothing of the supply; a run that repeated its
        // data shows where it ends.
        let (n_star, d_star) = (x.n_opt.unwrap(), x.d_opt.unwrap());
        let fresh = [Point {
            unique: Some(1e10),
            ..points[2].clone()
        }];
        let x = crossover(&p, None, &fresh, &reference);
        assert!(x.unique_tokens.is_none() && !sentence(&x).contains("unique"));
        let repeated = [Point {
            unique: Some(d_star / 4.0),
            ..pt(n_star, d_star, reference.loss + 0.1)
        }];
        let x = crossover(&p, None, &repeated, &reference);
        assert_eq!(x.unique_tokens, Some(d_star / 4.0));
        assert!(sentence(&x).contains("D* is 4× the"), "{}", sentence(&x));
        let none = crossover(&high_e, None, &points[..1], &reference);
        assert!(none.flops.is_none() && none.first_run_below.is_none());
        assert!(
            sentence(&none).contains("never get there"),
            "{}",
            sentence(&none)
        );
    }
}
