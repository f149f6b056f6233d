//! Model families side by side: each family's runs fitted on their own (the Chinchilla law by
//! Approach 3, Kaplan's L(N) on the runs at the family's largest D), and which family leads
//! the loss-vs-compute frontier at each compute.
//!
//! Owns only the per-family summary; the fits are [`super::fit_law`] and
//! [`super::fit_kaplan_single`]. Pure functions over points (no I/O).

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::{fit_kaplan_single, fit_law, grid, FitOptions, KaplanLaw, Method, Point};
use crate::model::FamilyKind;

/// Relative spread of D within which runs count as "the largest D" for L(N) (the batch law
/// rounds D to whole steps, so equal nominal D differ by a few per mille).
const SAME_D: f64 = 0.05;

/// One family's fits.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyFit {
    pub family: FamilyKind,
    pub points: usize,
    /// Its lowest loss, and the compute and N of that run.
    pub best_loss: f64,
    pub best_c: f64,
    pub best_n: f64,
    /// The Chinchilla law L = E + A/N^α + B/D^β of its runs (None with fewer than 6 points
    /// or when the fit fails; `note` says why).
    pub approach3: Option<ChinchillaParams>,
    /// Kaplan's L(N) = (N_c/N)^α_N on its runs at its largest D (`l_of_n_tokens`).
    pub l_of_n: Option<KaplanLaw>,
    pub l_of_n_tokens: f64,
    pub note: Option<String>,
}

/// A stretch of compute over which one family has the lowest loss reached so far.
#[derive(Debug, Clone, Serialize)]
pub struct Lead {
    pub family: FamilyKind,
    /// The compute of the first run at which it leads, and of the last before the next lead.
    pub from_c: f64,
    pub to_c: f64,
}

/// Every family's fits and the frontier's leaders, lowest compute first.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyReport {
    pub fits: Vec<FamilyFit>,
    pub leads: Vec<Lead>,
}

/// Fit each family's points (`opts`' objective and grid for Approach 3).
pub fn fit_families(sets: &[(FamilyKind, Vec<Point>)], opts: &FitOptions) -> FamilyReport {
    let fits = sets
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(f, p)| fit_family(*f, p, opts))
        .collect();
    FamilyReport {
        fits,
        leads: leads(sets),
    }
}

fn fit_family(family: FamilyKind, pts: &[Point], opts: &FitOptions) -> FamilyFit {
    let best = pts
        .iter()
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .expect("non-empty");
    let a3_opts = FitOptions {
        method: Method::A3,
        ..opts.clone()
    };
    let (approach3, note) = if pts.len() < 6 {
        (
            None,
            Some(format!("{} points: Approach 3 needs at least 6", pts.len())),
        )
    } else {
        match fit_law(pts, &a3_opts, &grid(opts.grid_stride)) {
            Ok(f) => (Some(f.params), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let d_max = pts.iter().map(|p| p.d).fold(0.0, f64::max);
    let top: Vec<&Point> = pts
        .iter()
        .filter(|p| p.d >= (1.0 - SAME_D) * d_max)
        .collect();
    let l_of_n = (top.len() >= 2).then(|| {
        let n: Vec<f64> = top.iter().map(|p| p.n).collect();
        let l: Vec<f64> = top.iter().map(|p| p.loss).collect();
        fit_kaplan_single("N", &n, &l, false, opts.delta)
    });
    FamilyFit {
        family,
        points: pts.len(),
        best_loss: best.loss,
        best_c: best.c(),
        best_n: best.n,
        approach3,
        l_of_n: l_of_n.flatten(),
        l_of_n_tokens: d_max,
        note,
    }
}

/// Which family holds the lowest loss reached with at most C, as C grows over the runs.
pub fn leads(sets: &[(FamilyKind, Vec<Point>)]) -> Vec<Lead> {
    let mut all: Vec<(f64, FamilyKind, f64)> = sets
        .iter()
        .flat_map(|(f, pts)| pts.iter().map(move |p| (p.c(), *f, p.loss)))
        .collect();
    // At equal C the lower loss first, so a tie is not a change of hands.
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.total_cmp(&b.2)));
    let mut best = f64::INFINITY;
    let mut out: Vec<Lead> = Vec::new();
    for (c, f, loss) in all {
        if loss < best {
            best = loss;
            match out.last_mut() {
                Some(l) if l.family == f => l.to_c = c,
                _ => out.push(Lead {
                    family: f,
                    from_c: c,
                    to_c: c,
                }),
            }
        } else if let Some(l) = out.last_mut() {
            l.to_c = c;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn law_points(p: ChinchillaParams, ns: &[f64], ds: &[f64]) -> Vec<Point> {
        let mut v = Vec::new();
        for &n in ns {
            for &d in ds {
                v.push(Point {
                    n,
                    d,
                    loss: p.predict(n, d),
                    budget: None,
                    c: None,
                    unique: None,
                });
            }
        }
        v
    }

    #[test]
    fn each_family_recovers_its_own_law_and_the_frontier_changes_hands() {
        let a = ChinchillaParams {
            e: 1.0,
            a: 50.0,
            b: 100.0,
            alpha: 0.34,
            beta: 0.28,
        };
        let b = ChinchillaParams {
            e: 2.0,
            a: 20.0,
            b: 40.0,
            alpha: 0.30,
            beta: 0.30,
        };
        let ns = [1e4, 3e4, 1e5, 3e5];
        let ds = [1e6, 3e6, 1e7, 3e7];
        let sets = vec![
            (FamilyKind::Transformer, law_points(a, &ns, &ds)),
            (FamilyKind::Lstm, law_points(b, &ns, &ds)),
        ];
        let r = fit_families(&sets, &FitOptions::default());
        for (fit, truth) in r.fits.iter().zip([a, b]) {
            let p = fit.approach3.expect("fitted");
            assert!(
                (p.alpha - truth.alpha).abs() < 0.01,
                "{:?}: {p:?}",
                fit.family
            );
            assert!(
                (p.beta - truth.beta).abs() < 0.01,
                "{:?}: {p:?}",
                fit.family
            );
            assert!((p.e - truth.e).abs() < 0.01, "{:?}: {p:?}", fit.family);
            assert_eq!(fit.points, 16);
            assert_eq!(fit.l_of_n_tokens, 3e7);
            assert!(fit.l_of_n.as_ref().unwrap().alpha > 0.0);
        }
        // The LSTM's law is lower at small compute, the Transformer's (lower E) at large.
        let fams: Vec<FamilyKind> = r.leads.iter().map(|l| l.family).collect();
        assert_eq!(
            fams,
            vec![FamilyKind::Lstm, FamilyKind::Transformer],
            "{:?}",
            r.leads
        );
        assert!(r.leads[0].to_c < r.leads[1].from_c);
    }

    #[test]
    fn leads_follow_the_running_minimum() {
        let pt = |c: f64, loss: f64| Point {
            n: c / 6.0,
            d: 1.0,
            loss,
            budget: None,
            c: None,
            unique: None,
        };
        let sets = vec![
            (FamilyKind::Mlp, vec![pt(1.0, 3.0), pt(4.0, 2.5)]),
            (FamilyKind::Transformer, vec![pt(2.0, 3.5), pt(8.0, 2.0)]),
        ];
        let l = leads(&sets);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].family, l[0].from_c, l[0].to_c),
            (FamilyKind::Mlp, 1.0, 4.0)
        );
        assert_eq!((l[1].family, l[1].from_c), (FamilyKind::Transformer, 8.0));
    }
}
