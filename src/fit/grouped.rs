//! One table of many sets: each group of a table's rows (e.g. each published IsoFLOP set in
//! `openathena_isoflops/isoflops.csv`, `--group-by`) fitted separately by Approach 2,
//! Approach 3 and VPNLS, with the compute-optimal exponents and N*, D* at a stated target.
//!
//! Owns only the per-set summary; the fits are [`super::isoflop::approach2`],
//! [`super::fit_law`] and [`super::fit_vpnls`]. Pure functions over datasets (no I/O).

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::{fit_law, fit_vpnls, grid, isoflop, Dataset, FitOptions, Method};

/// One method's compute-optimal allocation: N* ∝ C^a, D* = d_coef·C^b, and N*, D* at the target.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Allocation {
    pub a: f64,
    pub b: f64,
    pub d_coef: f64,
    pub n_star: f64,
    pub d_star: f64,
}

impl Allocation {
    /// From a law, in closed form.
    fn of_law(p: &ChinchillaParams, target: f64) -> Allocation {
        let (n_star, d_star) = p.optimal(target);
        let b = p.alpha / (p.alpha + p.beta);
        Allocation {
            a: p.exponent_a(),
            b,
            d_coef: d_star / target.powf(b),
            n_star,
            d_star,
        }
    }

    /// From Approach 2's frontier lines (None with fewer than 2 usable budgets).
    fn of_approach2(a2: &isoflop::Approach2, target: f64) -> Option<Allocation> {
        Some(Allocation {
            a: a2.a?,
            b: a2.b?,
            d_coef: a2.k_d?.exp(),
            n_star: a2.n_opt(target)?,
            d_star: a2.d_opt(target)?,
        })
    }
}

/// One set's row.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub set: String,
    pub points: usize,
    pub budgets: usize,
    pub approach2_used_budgets: usize,
    /// Budgets whose parabola vertex Approach 2's diagnostics flag as possibly biased.
    pub approach2_flagged_budgets: usize,
    pub target_flops: f64,
    /// Where the target came from (given, or the set's largest budget × 10).
    pub target_rule: String,
    pub approach2: Option<Allocation>,
    pub approach3: Option<Allocation>,
    pub vpnls: Option<Allocation>,
    /// Why Approach 3 could not be fitted, when it could not.
    pub note: Option<String>,
}

/// Fit one set: `target` FLOPs when given, else its largest budget × 10. Approach 3 uses
/// `opts` (objective, δ, grid stride, fixed E); VPNLS minimises the squared error on L.
pub fn fit_group(data: &Dataset, opts: &FitOptions, target: Option<f64>) -> GroupRow {
    let pts = &data.points;
    let a2 = isoflop::approach2(pts);
    let largest = a2.budgets.iter().map(|b| b.budget).fold(0.0, f64::max);
    let (target_flops, target_rule) = match target {
        Some(c) => (c, "given".to_string()),
        None => (10.0 * largest, "largest budget x 10".to_string()),
    };
    let flagged = a2.budgets.iter().filter(|b| b.possibly_biased()).count();
    let a3_opts = FitOptions {
        method: Method::A3,
        ..opts.clone()
    };
    let (approach3, vpnls, note) = if pts.len() < 6 {
        (
            None,
            None,
            Some(format!(
                "{} points: Approaches 3 and VPNLS need at least 6",
                pts.len()
            )),
        )
    } else {
        let a3 = fit_law(pts, &a3_opts, &grid(opts.grid_stride));
        let v = fit_vpnls(pts, opts.fixed_e);
        (
            a3.as_ref()
                .ok()
                .map(|f| Allocation::of_law(&f.params, target_flops)),
            Some(Allocation::of_law(&v.params, target_flops)),
            a3.err().map(|e| e.to_string()),
        )
    };
    GroupRow {
        set: data.source.clone(),
        points: pts.len(),
        budgets: a2.budgets.len(),
        approach2_used_budgets: a2.used_budgets,
        approach2_flagged_budgets: flagged,
        target_flops,
        target_rule,
        approach2: Allocation::of_approach2(&a2, target_flops),
        approach3,
        vpnls,
        note,
    }
}

/// The rows as a text table: a (N* ∝ C^a) and N*, D* at the target by each method.
pub fn render_table(rows: &[GroupRow]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<46} {:>6} {:>7} {:>6} {:>6} {:>6}  {:>9}  {:>29}  {:>29}",
        "set",
        "points",
        "budgets",
        "a A2",
        "a A3",
        "a VP",
        "target C",
        "N* A2 / A3 / VPNLS",
        "D* A2 / A3 / VPNLS"
    );
    let f = |v: Option<f64>, prec: usize| match v {
        Some(v) if prec == 0 => format!("{v:.2e}"),
        Some(v) => format!("{v:.prec$}"),
        None => "-".into(),
    };
    for r in rows {
        let ms = [r.approach2, r.approach3, r.vpnls];
        let three = |g: fn(&Allocation) -> f64| {
            ms.iter()
                .map(|m| f(m.as_ref().map(g), 0))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            s,
            "{:<46} {:>6} {:>7} {:>6} {:>6} {:>6}  {:>9.2e}  {:>29}  {:>29}",
            r.set,
            r.points,
            format!("{}/{}", r.approach2_used_budgets, r.budgets),
            f(r.approach2.map(|m| m.a), 3),
            f(r.approach3.map(|m| m.a), 3),
            f(r.vpnls.map(|m| m.a), 3),
            r.target_flops,
            three(|m| m.n_star),
            three(|m| m.d_star)
        );
    }
    let _ = writeln!(
        s,
        "\nbudgets: used by Approach 2 / in the set. a: N* ~ C^a (A2: IsoFLOP parabolas, A3: Approach 3, VP: VPNLS on SSE). Target: given by --target-flops, else the set's largest budget x 10."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::Point;

    #[test]
    fn a_known_law_gives_its_exponents_by_every_method() {
        // 5 budgets × 7 sizes centred on the optimum of a symmetric law (α = β: a = b = 0.5).
        let p = ChinchillaParams {
            e: 1.7,
            a: 400.0,
            b: 1800.0,
            alpha: 0.3,
            beta: 0.3,
        };
        let mut points = Vec::new();
        for c in [1e18, 1e19, 1e20, 1e21, 1e22] {
            let x0 = p.optimal(c).0.ln();
            for i in 0..7 {
                let n = (x0 + 0.5 * (i as f64 - 3.0)).exp();
                let d = c / (6.0 * n);
                points.push(Point {
                    n,
                    d,
                    loss: p.predict(n, d),
                    budget: Some(c),
                    c: None,
                    unique: None,
                });
            }
        }
        let data = Dataset {
            source: "law".into(),
            points,
            dropped_top: 0,
            curves: vec![],
        };
        let opts = FitOptions {
            grid_stride: 5,
            ..FitOptions::default()
        };
        let r = fit_group(&data, &opts, None);
        assert_eq!((r.points, r.budgets, r.approach2_used_budgets), (35, 5, 5));
        assert_eq!(r.target_flops, 1e23);
        let (n_true, d_true) = p.optimal(1e23);
        for m in [r.approach2, r.approach3, r.vpnls] {
            let m = m.unwrap();
            assert!(
                (m.a - 0.5).abs() < 1e-3 && (m.b - 0.5).abs() < 1e-3,
                "{m:?}"
            );
            assert!((m.n_star / n_true - 1.0).abs() < 0.01, "{m:?} vs {n_true}");
            assert!((m.d_star / d_true - 1.0).abs() < 0.01, "{m:?} vs {d_true}");
        }
    }
}
