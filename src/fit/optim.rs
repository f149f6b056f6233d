//! Multi-start L-BFGS (argmin, More–Thuente line search) over smooth objectives with
//! analytic gradients. A start whose line search fails or overflows is counted as failed and
//! skipped; it never aborts the fit.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rayon::prelude::*;
use serde::Serialize;

/// A smooth objective: value and gradient at `x` (gradient written into `grad`).
pub trait Objective: Sync {
    fn eval(&self, x: &[f64], grad: &mut [f64]) -> f64;
}

/// argmin adapter; caches the last point so cost + gradient at one point cost one pass.
struct Problem<'a, O: Objective> {
    obj: &'a O,
    cache: RefCell<Option<(Vec<f64>, f64, Vec<f64>)>>,
}

impl<O: Objective> Problem<'_, O> {
    fn both(&self, x: &[f64]) -> (f64, Vec<f64>) {
        if let Some((cx, c, g)) = &*self.cache.borrow() {
            if cx.as_slice() == x {
                return (*c, g.clone());
            }
        }
        let mut g = vec![0.0; x.len()];
        let c = self.obj.eval(x, &mut g);
        *self.cache.borrow_mut() = Some((x.to_vec(), c, g.clone()));
        (c, g)
    }
}

impl<O: Objective> CostFunction for Problem<'_, O> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let (c, _) = self.both(p);
        if !c.is_finite() {
            anyhow::bail!("non-finite objective");
        }
        Ok(c)
    }
}

impl<O: Objective> Gradient for Problem<'_, O> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        let (_, g) = self.both(p);
        if g.iter().any(|v| !v.is_finite()) {
            anyhow::bail!("non-finite gradient");
        }
        Ok(g)
    }
}

/// Result of one local minimisation.
#[derive(Debug, Clone, Serialize)]
pub struct LocalMin {
    pub x: Vec<f64>,
    pub objective: f64,
    pub iterations: u64,
    pub grad_norm: f64,
    pub converged: bool,
}

/// Summary of a multi-start run.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    pub starts: usize,
    pub failed_starts: usize,
    pub converged_starts: usize,
    pub best_iterations: u64,
    pub best_grad_norm: f64,
    pub best_converged: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct LbfgsOptions {
    pub max_iters: u64,
    pub tol_grad: f64,
    pub tol_cost: f64,
    pub memory: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            max_iters: 1000,
            tol_grad: 1e-10,
            tol_cost: 1e-16,
            memory: 10,
        }
    }
}

/// Minimise from one start. `None` when the start fails (line-search error, overflow).
pub fn local_min<O: Objective>(obj: &O, x0: &[f64], opt: LbfgsOptions) -> Option<LocalMin> {
    let mut g0 = vec![0.0; x0.len()];
    if !obj.eval(x0, &mut g0).is_finite() || g0.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let problem = Problem {
        obj,
        cache: RefCell::new(None),
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), opt.memory)
        .with_tolerance_grad(opt.tol_grad)
        .ok()?
        .with_tolerance_cost(opt.tol_cost)
        .ok()?;
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(x0.to_vec()).max_iters(opt.max_iters))
        .run()
        .ok()?;
    let st = res.state();
    let x = st.get_best_param()?.clone();
    let mut g = vec![0.0; x.len()];
    let objective = obj.eval(&x, &mut g);
    if !objective.is_finite() {
        return None;
    }
    let grad_norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    Some(LocalMin {
        x,
        objective,
        iterations: st.get_iter(),
        grad_norm,
        converged: matches!(
            st.get_termination_reason(),
            Some(TerminationReason::SolverConverged)
        ),
    })
}

/// Minimise from every start in parallel; keep the best. `None` if every start failed.
pub fn multi_start<O: Objective>(
    obj: &O,
    starts: &[Vec<f64>],
    opt: LbfgsOptions,
) -> Option<(LocalMin, Convergence)> {
    multi_start_valid(obj, starts, opt, |_| true)
}

/// As [`multi_start`], counting a local minimum whose parameters fail `valid` (e.g. overflow
/// in natural units) as a failed start.
pub fn multi_start_valid<O: Objective>(
    obj: &O,
    starts: &[Vec<f64>],
    opt: LbfgsOptions,
    valid: impl Fn(&[f64]) -> bool + Sync,
) -> Option<(LocalMin, Convergence)> {
    let results: Vec<Option<LocalMin>> = starts
        .par_iter()
        .map(|x0| local_min(obj, x0, opt).filter(|m| valid(&m.x)))
        .collect();
    let failed = results.iter().filter(|r| r.is_none()).count();
    let converged = results.iter().flatten().filter(|r| r.converged).count();
    let best = results
        .into_iter()
        .flatten()
        .min_by(|a, b| a.objective.total_cmp(&b.objective))?;
    let conv = Convergence {
        starts: starts.len(),
        failed_starts: failed,
        converged_starts: converged,
        best_iterations: best.iterations,
        best_grad_norm: best.grad_norm,
        best_converged: best.converged,
    };
    Some((best, conv))
}

/// Huber loss and its derivative.
#[inline]
pub fn huber(r: f64, delta: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

/// log-sum-exp of a few terms, and the softmax weights.
#[inline]
pub fn lse(terms: &[f64], weights: &mut [f64]) -> f64 {
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for (w, &t) in weights.iter_mut().zip(terms) {
        *w = (t - m).exp();
        s += *w;
    }
    for w in weights.iter_mut() {
        *w /= s;
    }
    m + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rosenbrock;
    impl Objective for Rosenbrock {
        fn eval(&self, x: &[f64], g: &mut [f64]) -> f64 {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        }
    }

    #[test]
    fn lbfgs_finds_rosenbrock_minimum() {
        let starts = vec![vec![-1.2, 1.0], vec![1e200, 1e200], vec![2.0, -1.0]];
        let (best, conv) = multi_start(&Rosenbrock, &starts, LbfgsOptions::default()).unwrap();
        assert!(
            (best.x[0] - 1.0).abs() < 1e-6 && (best.x[1] - 1.0).abs() < 1e-6,
            "{:?}",
            best.x
        );
        assert_eq!(conv.failed_starts, 1);
    }
}
