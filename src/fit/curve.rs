//! Loss-curve laws: a run's loss as a function of its learning-rate schedule, fitted on
//! whole curves (every logged eval, not only the last), and the two checks that say how far
//! they predict: a run's final loss from its first part, and a size's longest run from its
//! shorter ones. Owns the schedule features, the two laws, their fits and those checks; pure
//! over arrays.
//!
//! # The laws
//! With η_i the learning rate of step i, S1(t) = Σ_{i≤t} η_i the area under the schedule, and
//! Δ_i = η_{i−1} − η_i the drop at step i (counted after the peak only; warmup is in S1):
//! - **Tissue et al. (2024)**, "Scaling Law with Learning Rate Annealing":
//!   L(t) = L0 + A·S1(t)^−α − C·S2(t), S2(t) = Σ_{i≤t} m_i, m_i = λ·m_{i−1} + Δ_i, λ = 0.999
//!   (the paper's value; fixed). Four parameters.
//! - **Multi-Power Law (Luo et al. 2025)**: L(t) = L0 + A·S1(t)^−α − LD(t),
//!   LD(t) = B Σ_{k≤t} Δ_k·G(η_k^−γ·S_k(t)), G(x) = 1 − (C·x + 1)^−β, S_k(t) = Σ_{k≤τ≤t} η_τ.
//!   Seven parameters. The sum runs over blocks of steps (at most [`MAX_BLOCKS`] per run,
//!   every eval step a block boundary): a block's drops are summed and its η is its last
//!   step's.
//!
//! # Fitting choices
//! Least squares on relative residuals (pred − L)/L over the evals after the schedule's peak
//! (warmup evals are left out); L-BFGS with analytic gradients from a small grid of starts
//! scaled by the data; positive parameters are fitted in logs.

use serde::Serialize;

use super::optim::{multi_start, LbfgsOptions, Objective};

/// Tissue et al.'s momentum decay λ.
pub const TISSUE_LAMBDA: f64 = 0.999;
/// Most blocks a run's schedule is cut into for the Multi-Power Law's sum.
pub const MAX_BLOCKS: usize = 256;

/// Which curve law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CurveLaw {
    Tissue,
    MultiPower,
}

impl CurveLaw {
    pub const ALL: [CurveLaw; 2] = [CurveLaw::Tissue, CurveLaw::MultiPower];

    pub fn name(self) -> &'static str {
        match self {
            CurveLaw::Tissue => "Tissue et al. (S1, S2 with momentum)",
            CurveLaw::MultiPower => "Multi-Power Law",
        }
    }

    /// Names of the parameters, in [`CurveFit::params`] order.
    pub fn param_names(self) -> &'static [&'static str] {
        match self {
            CurveLaw::Tissue => &["L0", "A", "alpha", "C"],
            CurveLaw::MultiPower => &["L0", "A", "alpha", "B", "C", "beta", "gamma"],
        }
    }

    fn n_params(self) -> usize {
        self.param_names().len()
    }
}

/// One run's curve: the learning rate of every step 1..=T and its evals (step, loss).
#[derive(Debug, Clone)]
pub struct RunCurve {
    pub id: String,
    /// Runs of one group share a law in the longest-run check (e.g. one model size).
    pub group: String,
    /// The schedule, as a label (e.g. `cosine`, `wsd`; empty when unknown): the transfer
    /// check tells predictions across schedules from those within one.
    pub schedule: String,
    /// η of steps 1..=T (`lr[0]` is step 1).
    pub lr: Vec<f64>,
    /// (step, loss), steps ascending, within 1..=T.
    pub evals: Vec<(usize, f64)>,
}

/// The per-step learning rate of steps 1..=`last` from sparse (step, lr) samples: linear
/// between samples, from 0 at step 0 up to the first sample (warmup), flat after the last.
pub fn densify(samples: &[(f64, f64)], last: usize) -> Vec<f64> {
    let mut pts = vec![(0.0, 0.0)];
    pts.extend(samples.iter().copied().filter(|(s, _)| *s > 0.0));
    let mut out = Vec::with_capacity(last);
    let mut k = 0;
    for step in 1..=last {
        let s = step as f64;
        while k + 1 < pts.len() && pts[k + 1].0 < s {
            k += 1;
        }
        let v = match pts.get(k + 1) {
            Some(&(s1, v1)) => {
                let (s0, v0) = pts[k];
                v0 + (v1 - v0) * (s - s0) / (s1 - s0)
            }
            None => pts[k].1,
        };
        out.push(v);
    }
    out
}

/// One block of the schedule: its summed drop, its last step's η (and ln η), the area before
/// it.
#[derive(Debug, Clone, Copy)]
struct Block {
    drop: f64,
    eta: f64,
    ln_eta: f64,
    s1_before: f64,
}

/// A run's schedule features at its evals.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub group: String,
    pub schedule: String,
    /// Per eval: step, loss, S1 (and ln S1), S2 (Tissue), blocks before it (Multi-Power).
    pub step: Vec<usize>,
    pub loss: Vec<f64>,
    s1: Vec<f64>,
    ln_s1: Vec<f64>,
    s2: Vec<f64>,
    n_blocks: Vec<usize>,
    blocks: Vec<Block>,
    /// The step of the schedule's peak (evals up to it are warmup and not fitted).
    pub peak_step: usize,
}

/// Schedule features of `run` at its evals (see the module docs).
pub fn prepare(run: &RunCurve) -> Prepared {
    let t = run.lr.len();
    // The first step at the peak LR (a WSD run's constant phase is fitted, not skipped).
    let top = run.lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let peak = run.lr.iter().position(|&x| x == top).unwrap_or(0) + 1;
    let eta = |step: usize| if step == 0 { 0.0 } else { run.lr[step - 1] };
    let drop = |step: usize| {
        if step > peak {
            eta(step - 1) - eta(step)
        } else {
            0.0
        }
    };
    // Dense S1 and S2.
    let (mut s1, mut s2) = (vec![0.0; t + 1], vec![0.0; t + 1]);
    let mut m = 0.0;
    for step in 1..=t {
        m = TISSUE_LAMBDA * m + drop(step);
        s1[step] = s1[step - 1] + eta(step);
        s2[step] = s2[step - 1] + m;
    }
    // Block ends: a uniform grid plus every eval step.
    let stride = t.div_ceil(MAX_BLOCKS / 2).max(1);
    let mut ends: Vec<usize> = (1..=t).filter(|s| s % stride == 0).collect();
    ends.extend(run.evals.iter().map(|e| e.0.min(t)));
    ends.push(t);
    ends.sort_unstable();
    ends.dedup();
    let mut blocks = Vec::with_capacity(ends.len());
    let mut start = 1;
    for &end in &ends {
        blocks.push(Block {
            drop: (start..=end).map(drop).sum(),
            eta: eta(end),
            ln_eta: eta(end).ln(),
            s1_before: s1[start - 1],
        });
        start = end + 1;
    }
    let evals = &run.evals;
    Prepared {
        id: run.id.clone(),
        group: run.group.clone(),
        schedule: run.schedule.clone(),
        step: evals.iter().map(|e| e.0).collect(),
        loss: evals.iter().map(|e| e.1).collect(),
        s1: evals.iter().map(|e| s1[e.0.min(t)]).collect(),
        ln_s1: evals.iter().map(|e| s1[e.0.min(t)].ln()).collect(),
        s2: evals.iter().map(|e| s2[e.0.min(t)]).collect(),
        n_blocks: evals
            .iter()
            .map(|e| ends.partition_point(|&b| b <= e.0))
            .collect(),
        blocks,
        peak_step: peak,
    }
}

/// A fitted curve law, in natural units.
#[derive(Debug, Clone, Serialize)]
pub struct CurveFit {
    pub law: CurveLaw,
    /// In [`CurveLaw::param_names`] order.
    pub params: Vec<f64>,
    /// Mean squared relative residual.
    pub objective: f64,
    pub n_evals: usize,
}

/// η^-γ of each of `p`'s blocks at parameters `x` (fitted coordinates), which every eval of
/// the run shares: [`eval_law`] takes them computed once (Multi-Power; none for Tissue).
fn eta_powers(law: CurveLaw, x: &[f64], p: &Prepared) -> Vec<f64> {
    match law {
        CurveLaw::Tissue => Vec::new(),
        CurveLaw::MultiPower => {
            let gamma = x[6].exp();
            p.blocks.iter().map(|b| b.eta.powf(-gamma)).collect()
        }
    }
}

/// The law's loss at eval `i` of `p`, and its gradient in the fitted coordinates
/// (L0 raw, the rest in logs), written into `grad` when given; `eta_pow` from
/// [`eta_powers`] at the same `x`.
fn eval_law(
    law: CurveLaw,
    x: &[f64],
    p: &Prepared,
    i: usize,
    eta_pow: &[f64],
    grad: Option<&mut [f64]>,
) -> f64 {
    let (a, alpha) = (x[1].exp(), x[2].exp());
    let s1 = p.s1[i];
    let pw = a * s1.powf(-alpha);
    let mut g = [0.0; 7];
    g[0] = 1.0;
    g[1] = pw;
    g[2] = -pw * p.ln_s1[i] * alpha;
    let pred = match law {
        CurveLaw::Tissue => {
            let c = x[3].exp();
            g[3] = -c * p.s2[i];
            x[0] + pw - c * p.s2[i]
        }
        CurveLaw::MultiPower => {
            let (b, c, beta, gamma) = (x[3].exp(), x[4].exp(), x[5].exp(), x[6].exp());
            let (mut ld, mut d_c, mut d_beta, mut d_gamma) = (0.0, 0.0, 0.0, 0.0);
            for (blk, eta_pow) in p.blocks[..p.n_blocks[i]].iter().zip(eta_pow) {
                if blk.drop == 0.0 || blk.eta <= 0.0 {
                    continue;
                }
                let sk = s1 - blk.s1_before;
                let xk = eta_pow * sk;
                let u = c * xk + 1.0;
                let upow = u.powf(-beta);
                ld += blk.drop * (1.0 - upow);
                let du = beta * upow / u; // dG/du
                d_c += blk.drop * du * c * xk;
                d_beta += blk.drop * upow * u.ln() * beta;
                d_gamma += blk.drop * du * c * xk * (-blk.ln_eta) * gamma;
            }
            g[3] = -b * ld;
            g[4] = -b * d_c;
            g[5] = -b * d_beta;
            g[6] = -b * d_gamma;
            x[0] + pw - b * ld
        }
    };
    if let Some(out) = grad {
        out.copy_from_slice(&g[..law.n_params()]);
    }
    pred
}

/// The evals a fit uses: after the peak and at or before `cutoff` (a step).
fn fitted(p: &Prepared, cutoff: usize) -> impl Iterator<Item = usize> + '_ {
    (0..p.step.len()).filter(move |&i| p.step[i] > p.peak_step && p.step[i] <= cutoff)
}

struct CurveObjective<'a> {
    law: CurveLaw,
    runs: &'a [(&'a Prepared, usize)],
    n: usize,
}

impl Objective for CurveObjective<'_> {
    fn eval(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        grad.iter_mut().for_each(|v| *v = 0.0);
        let mut gi = vec![0.0; grad.len()];
        let mut f = 0.0;
        for &(p, cutoff) in self.runs {
            let eta_pow = eta_powers(self.law, x, p);
            for i in fitted(p, cutoff) {
                let pred = eval_law(self.law, x, p, i, &eta_pow, Some(&mut gi));
                let r = (pred - p.loss[i]) / p.loss[i];
                f += r * r;
                for (g, d) in grad.iter_mut().zip(&gi) {
                    *g += 2.0 * r / p.loss[i] * d;
                }
            }
        }
        let n = self.n as f64;
        grad.iter_mut().for_each(|v| *v /= n);
        f / n
    }
}

/// Starts scaled by the data: L0 below the lowest loss, A so that the power term spans the
/// loss range at the first fitted eval, the annealing coefficients over three decades.
fn starts(law: CurveLaw, runs: &[(&Prepared, usize)]) -> Vec<Vec<f64>> {
    let pts: Vec<(f64, f64, f64)> = runs
        .iter()
        .flat_map(|&(p, c)| fitted(p, c).map(move |i| (p.loss[i], p.s1[i], p.s2[i])))
        .collect();
    let lmin = pts.iter().map(|q| q.0).fold(f64::INFINITY, f64::min);
    let lmax = pts.iter().map(|q| q.0).fold(f64::NEG_INFINITY, f64::max);
    let s1min = pts
        .iter()
        .map(|q| q.1)
        .fold(f64::INFINITY, f64::min)
        .max(1e-12);
    let s2max = pts.iter().map(|q| q.2).fold(0.0, f64::max).max(1e-12);
    let range = (lmax - lmin).max(1e-3 * lmax);
    let mut out = Vec::new();
    for l0 in [0.5 * lmin, 0.85 * lmin] {
        for alpha in [0.3f64, 0.7] {
            let a = (lmax - l0).max(range) * s1min.powf(alpha);
            let base = [l0, a.ln(), alpha.ln()];
            match law {
                CurveLaw::Tissue => {
                    for k in [0.01, 0.3, 3.0] {
                        let mut x = base.to_vec();
                        x.push((k * range / s2max).ln());
                        out.push(x);
                    }
                }
                CurveLaw::MultiPower => {
                    for (b, c) in [(0.3, 1e-3), (1.0, 1e-1), (3.0, 10.0)] {
                        let drops: f64 = runs
                            .iter()
                            .map(|(p, _)| p.blocks.iter().map(|b| b.drop).sum::<f64>())
                            .fold(0.0, f64::max)
                            .max(1e-12);
                        let mut x = base.to_vec();
                        x.extend([
                            (b * range / drops).ln(),
                            (c / s1min).ln(),
                            0.5f64.ln(),
                            0.5f64.ln(),
                        ]);
                        out.push(x);
                    }
                }
            }
        }
    }
    out
}

/// Fit `law` on each run's evals up to its cutoff step (one shared law over all `runs`).
/// `None` when there are fewer evals than parameters + 2 or every start fails.
pub fn fit(law: CurveLaw, runs: &[(&Prepared, usize)]) -> Option<CurveFit> {
    fit_from(law, runs, &starts(law, runs))
}

/// [`fit`] from given starts (in the fitted coordinates: L0 raw, the rest in logs).
fn fit_from(law: CurveLaw, runs: &[(&Prepared, usize)], starts: &[Vec<f64>]) -> Option<CurveFit> {
    let n: usize = runs.iter().map(|&(p, c)| fitted(p, c).count()).sum();
    if n < law.n_params() + 2 {
        return None;
    }
    let obj = CurveObjective { law, runs, n };
    let opt = LbfgsOptions {
        max_iters: 500,
        tol_grad: 1e-12,
        tol_cost: 1e-15,
        memory: 10,
    };
    let (best, _) = multi_start(&obj, starts, opt)?;
    let mut params = best.x.clone();
    for v in &mut params[1..] {
        *v = v.exp();
    }
    Some(CurveFit {
        law,
        params,
        objective: best.objective,
        n_evals: n,
    })
}

/// A fit's parameters in the fitted coordinates.
fn coordinates(f: &CurveFit) -> Vec<f64> {
    let mut x = f.params.clone();
    for v in &mut x[1..] {
        *v = v.ln();
    }
    x
}

/// The fitted law's loss at eval `i` of `p`.
pub fn predict(f: &CurveFit, p: &Prepared, i: usize) -> f64 {
    let x = coordinates(f);
    eval_law(f.law, &x, p, i, &eta_powers(f.law, &x, p), None)
}

/// Least share of a run's steps done before [`predict_final`] predicts its end.
pub const MIN_FRACTION: f64 = 0.3;

/// Steps in one block of `share` of `total` steps (at least one).
pub fn block_len(total: usize, share: f64) -> usize {
    ((share * total as f64) as usize).max(1)
}

/// Average per-step training losses `(step, loss)` over blocks of `share` of `total` steps:
/// the curve points the laws fit on our runs (each batch is unseen when its loss is taken).
pub fn block_means(per_step: &[(usize, f64)], total: usize, share: f64) -> Vec<(usize, f64)> {
    let block = block_len(total, share);
    per_step
        .chunks(block)
        .filter(|ch| ch.len() == block)
        .map(|ch| {
            let mean = ch.iter().map(|x| x.1).sum::<f64>() / ch.len() as f64;
            (ch[ch.len() - 1].0, mean)
        })
        .collect()
}

/// A predicted loss, unless the law extrapolated to a non-positive or non-finite one (an
/// annealing term that runs away): such a prediction counts as a failed fit.
fn positive(y: f64) -> Option<f64> {
    (y.is_finite() && y > 0.0).then_some(y)
}

/// A running run's predicted final loss and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    pub loss: f64,
    /// From a residual bootstrap: the fitted curve plus resampled relative residuals, refitted
    /// from the fit's own parameters and predicted again; `None` with no resamples (or when
    /// every refit fails).
    pub ci: Option<[f64; 2]>,
}

/// A running run's predicted final loss: `law` fitted on its curve so far (`evals`, steps
/// done) with its whole planned schedule `lr` (steps 1..=T), evaluated at step T, with a
/// residual-bootstrap interval over `resamples` refits. `None` before [`MIN_FRACTION`] of the
/// steps or when the fit fails.
pub fn predict_final(
    law: CurveLaw,
    lr: &[f64],
    evals: &[(usize, f64)],
    resamples: usize,
) -> Option<Prediction> {
    let total = lr.len();
    let done = evals.last()?.0;
    if (done as f64) < MIN_FRACTION * total as f64 || done >= total {
        return None;
    }
    let mut all = evals.to_vec();
    all.push((total, f64::NAN));
    let mut p = prepare(&RunCurve {
        id: String::new(),
        group: String::new(),
        schedule: String::new(),
        lr: lr.to_vec(),
        evals: all,
    });
    let f = fit(law, &[(&p, done)])?;
    let last = p.step.len() - 1;
    let loss = positive(predict(&f, &p, last))?;
    let used: Vec<usize> = fitted(&p, done).collect();
    let smooth: Vec<f64> = used.iter().map(|&i| predict(&f, &p, i)).collect();
    let resid: Vec<f64> = used
        .iter()
        .zip(&smooth)
        .map(|(&i, m)| p.loss[i] / m - 1.0)
        .collect();
    let mut rng = crate::hashing::Rng::new(0x5EED ^ total as u64);
    let mut draws = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for (k, &i) in used.iter().enumerate() {
            p.loss[i] = smooth[k] * (1.0 + resid[rng.below(resid.len())]);
        }
        if let Some(fb) = fit_from(law, &[(&p, done)], &[coordinates(&f)]) {
            draws.extend(positive(predict(&fb, &p, last)));
        }
    }
    let ci = (!draws.is_empty()).then(|| super::ci(draws));
    Some(Prediction { loss, ci })
}

/// One prediction of a check: a run's final loss, observed and predicted.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub run: String,
    pub group: String,
    pub observed: f64,
    pub predicted: f64,
    pub rel_err: f64,
    /// Transfer check: the runs the law was fitted on ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// ... and whether one of them has another schedule kind than this run (cosine ↔ WSD) ...
    pub cross_schedule: bool,
    /// ... and the mean |relative error| over this run's whole curve after its LR peak (the
    /// predicted curve, not only its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve_mean_abs_rel_err: Option<f64>,
}

/// Which check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// Fit each run on its first fraction of steps; predict its final loss.
    Early,
    /// Per group, fit one law on every run but the longest; predict the longest's final loss.
    Longest,
    /// Per group, for each run: fit one law on one or two other runs of the group (another
    /// schedule first, then the nearest lengths); predict this run's final loss.
    Transfer,
}

/// A check's predictions with one law, and their errors.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub kind: CheckKind,
    pub law: CurveLaw,
    /// Early check: the fraction of each run's steps fitted.
    pub fraction: Option<f64>,
    pub cases: Vec<Case>,
    /// Predictions not made: too few evals to fit, a failed fit, or a law extrapolating to a
    /// non-positive loss.
    pub skipped: usize,
    pub mean_abs_rel_err: f64,
    pub max_abs_rel_err: f64,
}

fn check(
    kind: CheckKind,
    law: CurveLaw,
    fraction: Option<f64>,
    cases: Vec<Case>,
    skipped: usize,
) -> Check {
    let errs: Vec<f64> = cases.iter().map(|c| c.rel_err.abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
    Check {
        kind,
        law,
        fraction,
        skipped,
        mean_abs_rel_err: if errs.is_empty() { f64::NAN } else { mean },
        max_abs_rel_err: errs.iter().copied().fold(f64::NAN, f64::max),
        cases,
    }
}

/// The prediction of `p`'s final loss by `f`; `None` when the law extrapolates to a
/// non-positive or non-finite loss (a failed fit: counted as skipped).
fn case(f: &CurveFit, p: &Prepared) -> Option<Case> {
    let i = p.step.len() - 1;
    let predicted = positive(predict(f, p, i))?;
    Some(Case {
        run: p.id.clone(),
        group: p.group.clone(),
        observed: p.loss[i],
        predicted,
        rel_err: (predicted - p.loss[i]) / p.loss[i],
        from: Vec::new(),
        cross_schedule: false,
        curve_mean_abs_rel_err: None,
    })
}

/// The mean |relative error| of `f` over `p`'s evals after its LR peak.
fn curve_error(f: &CurveFit, p: &Prepared) -> Option<f64> {
    let errs: Vec<f64> = fitted(p, usize::MAX)
        .map(|i| (predict(f, p, i) / p.loss[i] - 1.0).abs())
        .collect();
    (!errs.is_empty()).then(|| errs.iter().sum::<f64>() / errs.len() as f64)
}

/// A schedule label's kind: its first word (`wsd` of `wsd T=1000 from 800`).
fn schedule_kind(label: &str) -> &str {
    label.split_whitespace().next().unwrap_or("")
}

/// Per group, for each run with another run in its group: fit one law on at most two other
/// runs (those of another schedule kind first, then the nearest in length), predict the
/// run's final loss. Covers cosine ↔ WSD, other cooldown lengths and other run lengths.
pub fn check_transfer(runs: &[Prepared], law: CurveLaw) -> Check {
    let last = |p: &Prepared| *p.step.last().unwrap() as f64;
    let usable: Vec<&Prepared> = runs.iter().filter(|p| !p.step.is_empty()).collect();
    let (mut cases, mut skipped) = (Vec::new(), 0);
    for target in &usable {
        let kind = schedule_kind(&target.schedule);
        let mut others: Vec<&Prepared> = usable
            .iter()
            .copied()
            .filter(|p| p.group == target.group && p.id != target.id)
            .collect();
        if others.is_empty() {
            continue;
        }
        let key = |p: &Prepared| {
            let same_kind = schedule_kind(&p.schedule) == kind;
            (same_kind, (last(p) / last(target)).ln().abs())
        };
        others.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        });
        others.truncate(2);
        let sources: Vec<(&Prepared, usize)> = others.iter().map(|&p| (p, usize::MAX)).collect();
        let f = fit(law, &sources);
        match f.as_ref().and_then(|f| case(f, target)) {
            Some(mut c) => {
                c.curve_mean_abs_rel_err = f.as_ref().and_then(|f| curve_error(f, target));
                c.from = others.iter().map(|p| p.id.clone()).collect();
                c.cross_schedule = others.iter().any(|p| schedule_kind(&p.schedule) != kind);
                cases.push(c);
            }
            None => skipped += 1,
        }
    }
    check(CheckKind::Transfer, law, None, cases, skipped)
}

/// Fit each run on its evals up to `fraction` of its last eval's step; predict its final
/// loss.
pub fn check_early(runs: &[Prepared], law: CurveLaw, fraction: f64) -> Check {
    let results: Vec<Option<Case>> = runs
        .iter()
        .filter(|p| !p.step.is_empty())
        .map(|p| {
            let cutoff = (fraction * *p.step.last().unwrap() as f64) as usize;
            fit(law, &[(p, cutoff)]).and_then(|f| case(&f, p))
        })
        .collect();
    let skipped = results.iter().filter(|c| c.is_none()).count();
    check(
        CheckKind::Early,
        law,
        Some(fraction),
        results.into_iter().flatten().collect(),
        skipped,
    )
}

/// Per group (of at least two runs), fit one law on every run but the longest (whole
/// curves); predict the longest run's final loss.
pub fn check_longest(runs: &[Prepared], law: CurveLaw) -> Check {
    let mut groups: Vec<&str> = runs.iter().map(|p| p.group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let (mut cases, mut skipped) = (Vec::new(), 0);
    for g in groups {
        let mut members: Vec<&Prepared> = runs
            .iter()
            .filter(|p| p.group == g && !p.step.is_empty())
            .collect();
        members.sort_by_key(|p| *p.step.last().unwrap());
        let Some((longest, rest)) = members.split_last() else {
            continue;
        };
        let last = *longest.step.last().unwrap();
        let shorter: Vec<(&Prepared, usize)> = rest
            .iter()
            .filter(|p| *p.step.last().unwrap() < last)
            .map(|&p| (p, usize::MAX))
            .collect();
        let fitted = (!shorter.is_empty()).then(|| fit(law, &shorter)).flatten();
        match fitted.and_then(|f| case(&f, longest)) {
            Some(c) => cases.push(c),
            None => skipped += 1,
        }
    }
    check(CheckKind::Longest, law, None, cases, skipped)
}

/// Both checks with both laws, and which law each check prefers (lower mean error).
#[derive(Debug, Clone, Serialize)]
pub struct CurveReport {
    pub source: String,
    pub runs: usize,
    pub checks: Vec<Check>,
    /// Per check kind, the law with the lower mean |error| (the choice is made by backtest
    /// error, not assumed).
    pub chosen: Vec<(CheckKind, CurveLaw)>,
}

/// Whether the transfer check has something the longest-run check lacks: runs of more than
/// one schedule kind, or cooldown branches (runs that leave a shared stable phase).
pub fn schedules_vary(runs: &[RunCurve]) -> bool {
    let mut kinds: Vec<&str> = runs.iter().map(|r| schedule_kind(&r.schedule)).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds.len() > 1 || runs.iter().any(|r| r.schedule.contains(" from "))
}

/// Run [`check_early`] (at `fraction`), [`check_longest`] and, with `transfer`,
/// [`check_transfer`] with every law.
pub fn validate(source: &str, runs: &[RunCurve], fraction: f64, transfer: bool) -> CurveReport {
    let prepared: Vec<Prepared> = runs.iter().map(prepare).collect();
    let mut checks = Vec::new();
    for law in CurveLaw::ALL {
        checks.push(check_early(&prepared, law, fraction));
    }
    for law in CurveLaw::ALL {
        checks.push(check_longest(&prepared, law));
    }
    for law in CurveLaw::ALL.into_iter().filter(|_| transfer) {
        checks.push(check_transfer(&prepared, law));
    }
    let chosen = [CheckKind::Early, CheckKind::Longest, CheckKind::Transfer]
        .into_iter()
        .filter_map(|k| {
            checks
                .iter()
                .filter(|c| c.kind == k && c.mean_abs_rel_err.is_finite())
                .min_by(|a, b| a.mean_abs_rel_err.total_cmp(&b.mean_abs_rel_err))
                .map(|c| (k, c.law))
        })
        .collect();
    CurveReport {
        source: source.to_string(),
        runs: runs.len(),
        checks,
        chosen,
    }
}

/// The text summary of `scalelab curves`.
pub fn render_text(r: &CurveReport) -> String {
    use std::fmt::Write;
    let mut s = format!("Loss-curve laws on {} ({} runs)\n", r.source, r.runs);
    for c in &r.checks {
        let what = match c.kind {
            CheckKind::Early => format!(
                "fit the first {:.0}% of each run's steps, predict its final loss",
                100.0 * c.fraction.unwrap_or(0.0)
            ),
            CheckKind::Longest => {
                "per group, fit the shorter runs, predict the longest run's final loss".into()
            }
            CheckKind::Transfer => {
                let cross: Vec<f64> = c
                    .cases
                    .iter()
                    .filter(|k| k.cross_schedule)
                    .map(|k| k.rel_err.abs())
                    .collect();
                let mut w = "per group, fit 1-2 other runs (another schedule first), predict each run's final loss".to_string();
                if !cross.is_empty() {
                    w += &format!(
                        " [across schedules: {} predictions, mean |error| {:.2}%]",
                        cross.len(),
                        100.0 * cross.iter().sum::<f64>() / cross.len() as f64
                    );
                }
                let curve: Vec<f64> = c
                    .cases
                    .iter()
                    .filter_map(|k| k.curve_mean_abs_rel_err)
                    .collect();
                if !curve.is_empty() {
                    w += &format!(
                        " [whole predicted curves: mean |error| {:.2}%]",
                        100.0 * curve.iter().sum::<f64>() / curve.len() as f64
                    );
                }
                w
            }
        };
        let _ = writeln!(
            s,
            "  {:<38} {what}: mean |error| {:.2}%, max {:.2}% ({} predictions, {} skipped)",
            c.law.name(),
            100.0 * c.mean_abs_rel_err,
            100.0 * c.max_abs_rel_err,
            c.cases.len(),
            c.skipped
        );
    }
    for (k, law) in &r.chosen {
        let _ = writeln!(s, "  chosen for {k:?}: {} (lower mean error)", law.name());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cosine schedule with linear warmup over `steps`.
    fn cosine(steps: usize, warmup: usize, peak: f64) -> Vec<f64> {
        (1..=steps)
            .map(|s| {
                if s <= warmup {
                    peak * s as f64 / warmup as f64
                } else {
                    let f = (s - warmup) as f64 / (steps - warmup) as f64;
                    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()))
                }
            })
            .collect()
    }

    #[test]
    fn features_match_hand_computed_values() {
        // Steps 1..=4 with lr 1, 2, 1, 0.5: peak at step 2, drops 1 (step 3) and 0.5 (step 4).
        let run = RunCurve {
            id: "r".into(),
            group: "g".into(),
            schedule: String::new(),
            lr: vec![1.0, 2.0, 1.0, 0.5],
            evals: vec![(1, 5.0), (2, 4.0), (3, 3.5), (4, 3.0)],
        };
        let p = prepare(&run);
        assert_eq!(p.peak_step, 2);
        // A constant (WSD) phase: the peak is where it starts, so the phase is fitted.
        let wsd = RunCurve {
            lr: vec![1.0, 2.0, 2.0, 2.0, 1.0],
            evals: vec![(5, 3.0)],
            ..run.clone()
        };
        assert_eq!(prepare(&wsd).peak_step, 2);
        assert_eq!(p.s1, vec![1.0, 3.0, 4.0, 4.5]);
        // m3 = 1, m4 = λ + 0.5; S2(3) = 1, S2(4) = 1 + λ + 0.5.
        let l = TISSUE_LAMBDA;
        assert!((p.s2[2] - 1.0).abs() < 1e-12 && (p.s2[3] - (1.5 + l)).abs() < 1e-12);
        assert_eq!(p.s2[1], 0.0);
        // Multi-Power: at step 4, LD = B [1·G(1^-γ (S1(4)-S1(2))) + 0.5·G(0.5^-γ (S1(4)-S1(3)))].
        let x = [0.0, 0f64.ln().max(-50.0), 0.5f64.ln(), 0.0, 0.0, 0.0, 0.0]; // B=C=β=γ=1
        let eta_pow = eta_powers(CurveLaw::MultiPower, &x, &p);
        let pred = eval_law(CurveLaw::MultiPower, &x, &p, 3, &eta_pow, None);
        let g = |v: f64| 1.0 - 1.0 / (v + 1.0);
        let want_ld = 1.0 * g(1.0 * (4.5 - 3.0)) + 0.5 * g(2.0 * (4.5 - 4.0));
        let pw = (-50f64).exp() * 4.5f64.powf(-0.5);
        assert!(
            (pred - (pw - want_ld)).abs() < 1e-12,
            "{pred} vs {}",
            pw - want_ld
        );
    }

    #[test]
    fn a_running_run_gets_its_final_loss_predicted() {
        let truth = multi_power_truth();
        let lr = cosine(4000, 200, 1e-3);
        let skel = RunCurve {
            id: "r".into(),
            group: "g".into(),
            schedule: String::new(),
            lr: lr.clone(),
            evals: (1..=50).map(|k| (k * 80, 0.0)).collect(),
        };
        let p = prepare(&skel);
        let curve: Vec<(usize, f64)> = (0..p.step.len())
            .map(|i| (p.step[i], predict(&truth, &p, i)))
            .collect();
        let final_loss = curve.last().unwrap().1;
        // Too early: nothing.
        assert!(predict_final(CurveLaw::MultiPower, &lr, &curve[..10], 0).is_none());
        let got = predict_final(CurveLaw::MultiPower, &lr, &curve[..30], 0).unwrap();
        assert!(
            (got.loss / final_loss - 1.0).abs() < 0.005,
            "{got:?} vs {final_loss}"
        );
        assert!(got.ci.is_none());
        // With 0.5% noise the residual bootstrap gives an interval around the prediction.
        let mut rng = crate::hashing::Rng::new(11);
        let noisy: Vec<(usize, f64)> = curve[..30]
            .iter()
            .map(|&(s, l)| (s, l * (1.0 + 0.01 * (rng.next_f64() - 0.5))))
            .collect();
        let got = predict_final(CurveLaw::MultiPower, &lr, &noisy, 30).unwrap();
        let [lo, hi] = got.ci.unwrap();
        assert!(
            lo < got.loss && got.loss < hi && hi - lo < 0.1 * got.loss,
            "{got:?}"
        );
        // Block means of a flat per-step curve are flat, one per full block.
        let flat: Vec<(usize, f64)> = (1..=100).map(|s| (s, 3.0)).collect();
        assert_eq!(
            block_means(&flat, 100, 0.1),
            (1..=10).map(|k| (10 * k, 3.0)).collect::<Vec<_>>()
        );
    }

    /// The Multi-Power Law the synthetic-curve tests draw from.
    fn multi_power_truth() -> CurveFit {
        CurveFit {
            law: CurveLaw::MultiPower,
            params: vec![2.0, 0.9, 0.5, 300.0, 0.02, 0.6, 0.5],
            objective: 0.0,
            n_evals: 0,
        }
    }

    /// A WSD schedule: linear warmup, constant, then a linear cooldown over the last 20%
    /// to 10% of the peak.
    fn wsd(steps: usize, warmup: usize, peak: f64) -> Vec<f64> {
        let cool = steps - steps / 5;
        (1..=steps)
            .map(|s| {
                if s <= warmup {
                    peak * s as f64 / warmup as f64
                } else if s <= cool {
                    peak
                } else {
                    peak * (1.0 - 0.9 * (s - cool) as f64 / (steps - cool) as f64)
                }
            })
            .collect()
    }

    /// Curves of one model drawn from the Multi-Power Law (0.2% noise) under cosine and WSD
    /// schedules of two lengths: the transfer check fits one or two runs of the other
    /// schedule and predicts each run's final loss within 1%.
    #[test]
    fn transfer_predicts_one_schedule_from_the_other() {
        let truth = multi_power_truth();
        let mut rng = crate::hashing::Rng::new(3);
        let mut runs = Vec::new();
        for (kind, lr) in [
            ("cosine", cosine(2000, 100, 1e-3)),
            ("cosine", cosine(4000, 100, 1e-3)),
            ("wsd", wsd(2000, 100, 1e-3)),
            ("wsd", wsd(4000, 100, 1e-3)),
        ] {
            let t = lr.len();
            let mut run = RunCurve {
                id: format!("{kind}-{t}"),
                group: "g".into(),
                schedule: format!("{kind} T={t}"),
                lr,
                evals: (1..=50).map(|k| (k * t / 50, 0.0)).collect(),
            };
            let p = prepare(&run);
            for (i, e) in run.evals.iter_mut().enumerate() {
                e.1 = predict(&truth, &p, i) * (1.0 + 0.002 * (2.0 * rng.next_f64() - 1.0));
            }
            runs.push(prepare(&run));
        }
        let c = check_transfer(&runs, CurveLaw::MultiPower);
        assert_eq!((c.cases.len(), c.skipped), (4, 0));
        for k in &c.cases {
            assert!(k.cross_schedule && k.from.len() == 2, "{k:?}");
            assert!(k.curve_mean_abs_rel_err.is_some_and(|e| e < 0.01), "{k:?}");
            assert!(k.from.iter().all(|f| f[..3] != k.run[..3]), "{k:?}");
            assert!(k.rel_err.abs() < 0.01, "{k:?}");
        }
    }

    #[test]
    fn densify_interpolates_warmup_and_holds_the_end() {
        let lr = densify(&[(2.0, 1.0), (4.0, 0.5)], 6);
        assert_eq!(lr, vec![0.5, 1.0, 0.75, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let run = RunCurve {
            id: "r".into(),
            group: "g".into(),
            schedule: String::new(),
            lr: cosine(400, 40, 1e-3),
            evals: (1..=20).map(|k| (20 * k, 3.0 + 1.0 / k as f64)).collect(),
        };
        let p = prepare(&run);
        for law in CurveLaw::ALL {
            let x: Vec<f64> = match law {
                CurveLaw::Tissue => vec![2.0, 0.5, -1.0, 1.0],
                CurveLaw::MultiPower => vec![2.0, 0.5, -1.0, 2.0, 1.0, -0.5, -0.7],
            };
            let obj = CurveObjective {
                law,
                runs: &[(&p, usize::MAX)],
                n: 19,
            };
            let mut g = vec![0.0; x.len()];
            obj.eval(&x, &mut g);
            for k in 0..x.len() {
                let h = 1e-6;
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[k] += h;
                xm[k] -= h;
                let mut scratch = vec![0.0; x.len()];
                let fd = (obj.eval(&xp, &mut scratch) - obj.eval(&xm, &mut scratch)) / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{law:?} param {k}: {fd} vs {}",
                    g[k]
                );
            }
        }
    }

    /// Curves generated by each law (with 0.2% noise) give back its parameters, and the
    /// early check predicts the final loss.
    #[test]
    fn each_law_recovers_its_parameters() {
        let truth: [(CurveLaw, Vec<f64>); 2] = [
            (CurveLaw::Tissue, vec![2.0, 0.9, 0.5, 0.4]),
            (
                CurveLaw::MultiPower,
                vec![2.0, 0.9, 0.5, 300.0, 0.02, 0.6, 0.5],
            ),
        ];
        let mut rng = crate::hashing::Rng::new(7);
        for (law, params) in truth {
            let truth_fit = CurveFit {
                law,
                params: params.clone(),
                objective: 0.0,
                n_evals: 0,
            };
            let runs: Vec<Prepared> = [2000usize, 4000, 8000]
                .iter()
                .map(|&steps| {
                    let skel = RunCurve {
                        id: format!("{steps}"),
                        group: "g".into(),
                        schedule: String::new(),
                        lr: cosine(steps, steps / 20, 1e-3),
                        evals: (1..=40).map(|k| (k * steps / 40, 0.0)).collect(),
                    };
                    let mut p = prepare(&skel);
                    for i in 0..p.step.len() {
                        let clean = predict(&truth_fit, &p, i);
                        p.loss[i] = clean * (1.0 + 0.002 * (rng.next_f64() - 0.5));
                    }
                    p
                })
                .collect();
            let all: Vec<(&Prepared, usize)> = runs.iter().map(|p| (p, usize::MAX)).collect();
            let f = fit(law, &all).unwrap();
            // The curve's shape pins L0, α and the annealing term; check the fitted curve and
            // the parameters that are well determined.
            assert!((f.params[0] - 2.0).abs() < 0.1, "{law:?} L0 {:?}", f.params);
            assert!(
                (f.params[2] - 0.5).abs() < 0.1,
                "{law:?} alpha {:?}",
                f.params
            );
            for p in &runs {
                for i in fitted(p, usize::MAX) {
                    let rel = (predict(&f, p, i) - predict(&truth_fit, p, i)).abs() / p.loss[i];
                    assert!(rel < 0.003, "{law:?} run {} eval {i}: {rel}", p.id);
                }
            }
            let early = check_early(&runs, law, 0.5);
            assert!(
                early.mean_abs_rel_err < 0.01,
                "{law:?} early {}",
                early.mean_abs_rel_err
            );
            let longest = check_longest(&runs, law);
            assert_eq!(longest.cases.len(), 1);
            assert!(
                longest.mean_abs_rel_err < 0.005,
                "{law:?} longest {}",
                longest.mean_abs_rel_err
            );
        }
    }
}
