//! How long a sweep takes: `plan`'s ETA and `budget_hours`' check.
//!
//! Owns the cost model of one run's wall time, where its numbers come from, and the wall
//! clock of a set of runs on K workers. A run costs a fixed time per optimizer step (the
//! per-op overhead that dominates small models: ~3 ms a step on a 2-core CPU for models of
//! 4k–60k parameters) plus its C = 6ND FLOPs at a rate; a single FLOP rate, what the ETA used
//! before, put the main job at 10m35s on one worker when its runs took 30 min. Sources, best
//! first: each training configuration's steps and evals timed on the device (`plan
//! --measure`; the timing itself is in the bench module), a least-squares fit of the folder's
//! finished runs, the spec's `flops_per_s`, a CPU default. Pure over numbers; no training here.

use std::collections::HashMap;

use crate::device::DeviceChoice;
use crate::plan::{Plan, RunPlan, Shape};
use crate::record::{RunRecord, Status};
use crate::spec::Precision;

/// Seconds per optimizer step assumed on the CPU when nothing was measured: the weighted
/// least-squares fit (as [`CostModel::fit`]) of the 124 runs of
/// `sweeps/studies/cpu-hour-3e12.yaml` (the 10× sweep until 2026-12-06) and
/// `sweeps/families.yaml` retrained on 2026-12-06 with the vectorised exp/erf (flex backend,
/// two runs at a time with one thread each, on a 2-core AMD EPYC with AVX-512; every run
/// bit-identical to the committed examples'): 2.77 ms per step ...
pub const CPU_STEP_S: f64 = 2.8e-3;
/// ... and 5.72e10 C = 6ND FLOPs per second.
pub const CPU_FLOPS_PER_S: f64 = 5.7e10;

/// A run's wall time: `per_step_s` per optimizer step plus its C = 6ND FLOPs at
/// `flops_per_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    pub per_step_s: f64,
    pub flops_per_s: f64,
}

impl CostModel {
    pub fn seconds(&self, steps: f64, flops: f64) -> f64 {
        steps * self.per_step_s + flops / self.flops_per_s
    }

    /// Least squares of `wall = a·steps + flops/R` over finished runs `(steps, flops, wall)`,
    /// each squared residual weighted by 1/wall (a run's timing noise variance taken
    /// proportional to its length: between plain least squares, which the longest runs
    /// dominate, and relative errors, which underweight them).
    /// `a ≥ 0` and `R > 0`: when the joint solution breaks one, the other alone is fitted.
    /// `None` without a usable run.
    pub fn fit(samples: &[(f64, f64, f64)]) -> Option<CostModel> {
        let ok: Vec<&(f64, f64, f64)> = samples
            .iter()
            .filter(|(s, f, w)| *s > 0.0 && *f > 0.0 && *w > 0.0 && w.is_finite())
            .collect();
        if ok.is_empty() {
            return None;
        }
        // Normal equations of the weighted problem (weight² = 1/wall).
        let (mut ss, mut sf, mut ff, mut sw, mut fw) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &&(s, f, w) in &ok {
            ss += s * s / w;
            sf += s * f / w;
            ff += f * f / w;
            sw += s;
            fw += f;
        }
        let det = ss * ff - sf * sf;
        if ok.len() >= 2 && det > 1e-12 * ss * ff {
            let a = (sw * ff - fw * sf) / det;
            let b = (ss * fw - sf * sw) / det;
            if a >= 0.0 && b > 0.0 {
                return Some(CostModel {
                    per_step_s: a,
                    flops_per_s: 1.0 / b,
                });
            }
            if b <= 0.0 {
                // Time does not grow with FLOPs here: all of it is per step.
                return Some(CostModel {
                    per_step_s: sw / ss,
                    flops_per_s: f64::INFINITY,
                });
            }
        }
        Some(CostModel {
            per_step_s: 0.0,
            flops_per_s: ff / fw,
        })
    }
}

/// One training configuration's timing on the device: seconds per optimizer step and per
/// eval, a training's set-up (model, optimizer, data), and the executor's predictions of a
/// lone run's final loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTiming {
    pub per_step_s: f64,
    pub per_eval_s: f64,
    pub setup_s: f64,
    pub predict_s: f64,
}

/// What decides a run's step time: its shape, batch, context, vocabulary and float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimingKey {
    pub shape: Shape,
    pub batch_size: usize,
    pub context: usize,
    pub vocab_size: usize,
    pub precision: Precision,
}

impl TimingKey {
    pub fn of(r: &RunPlan) -> TimingKey {
        TimingKey {
            shape: r.shape,
            batch_size: r.data.batch_size,
            context: r.data.context,
            vocab_size: r.data.vocab_size,
            precision: r.precision,
        }
    }
}

/// The cost model of the runs no timing covers, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fallback {
    /// Fitted on this many finished runs (or cooldown-branch groups) of the folder.
    Finished { runs: usize, model: CostModel },
    /// The spec's `flops_per_s` (no per-step cost).
    Spec(CostModel),
    /// [`CPU_STEP_S`] and [`CPU_FLOPS_PER_S`].
    CpuDefault(CostModel),
    /// Nothing to go on (a GPU without `flops_per_s` and no finished run).
    Unknown,
}

impl Fallback {
    pub fn model(&self) -> Option<&CostModel> {
        match self {
            Fallback::Finished { model, .. }
            | Fallback::Spec(model)
            | Fallback::CpuDefault(model) => Some(model),
            Fallback::Unknown => None,
        }
    }
}

/// How a run is trained, for the costs that are not per step: a lone run pays its set-up and
/// the executor's loss predictions; a stable parent its set-up only (its group is one
/// training); a cooldown branch neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Lone,
    StableParent,
    Branch,
}

impl Role {
    pub fn of(r: &RunPlan, is_parent: bool) -> Role {
        match (is_parent, r.parent.is_some()) {
            (true, _) => Role::StableParent,
            (false, true) => Role::Branch,
            (false, false) => Role::Lone,
        }
    }
}

/// Every planned run and stable parent with how it is trained.
pub fn roles(plan: &Plan) -> impl Iterator<Item = (&RunPlan, Role)> {
    let parents = plan.parents.iter().map(|r| (r, Role::StableParent));
    plan.runs
        .iter()
        .map(|r| (r, Role::of(r, false)))
        .chain(parents)
}

/// The ETA's cost of each run.
#[derive(Debug, Clone)]
pub struct Speed {
    pub fallback: Fallback,
    /// Configurations timed on the device (`plan --measure`); the runs they cover use them.
    pub timed: HashMap<TimingKey, StepTiming>,
    /// The copies timed at once (`plan --measure --workers K`); `None` when not timed.
    pub timed_at_once: Option<usize>,
}

impl Speed {
    /// From the folder's finished runs, else the spec's `flops_per_s`, else the CPU default.
    pub fn of(finished: &[RunRecord], flops_per_s: Option<f64>, device: DeviceChoice) -> Speed {
        let samples = finished_samples(finished);
        let fallback = match (CostModel::fit(&samples), flops_per_s, device) {
            (Some(model), _, _) => Fallback::Finished {
                runs: samples.len(),
                model,
            },
            (None, Some(r), _) => Fallback::Spec(CostModel {
                per_step_s: 0.0,
                flops_per_s: r,
            }),
            // No default on a GPU: the CPU's would be meaningless there.
            (None, None, DeviceChoice::Cpu) => Fallback::CpuDefault(CostModel {
                per_step_s: CPU_STEP_S,
                flops_per_s: CPU_FLOPS_PER_S,
            }),
            (None, None, _) => Fallback::Unknown,
        };
        Speed {
            fallback,
            timed: HashMap::new(),
            timed_at_once: None,
        }
    }

    /// The cost model of the runs no timing covers (`None`: unknown).
    pub fn model(&self) -> Option<CostModel> {
        self.fallback.model().copied()
    }

    /// Seconds `r` costs in its `role` (a cooldown branch: its cooldown; a stable parent: its
    /// stable phase); NaN when unknown.
    pub fn run_seconds(&self, r: &RunPlan, role: Role) -> f64 {
        let share = if r.flops > 0.0 {
            r.flops_spent / r.flops
        } else {
            1.0
        };
        let steps = r.data.steps as f64 * share;
        let Some(t) = self.timed.get(&TimingKey::of(r)) else {
            return self
                .fallback
                .model()
                .map_or(f64::NAN, |m| m.seconds(steps, r.flops_spent));
        };
        let evals = (r.data.steps.div_ceil(r.data.eval_interval.max(1))) as f64 * share;
        let once = match role {
            Role::Lone => t.setup_s + t.predict_s,
            Role::StableParent => t.setup_s,
            Role::Branch => 0.0,
        };
        steps * t.per_step_s + evals * t.per_eval_s + once
    }

    /// Seconds the whole sweep takes on one worker: the finished trainings' recorded time
    /// ([`finished_samples`]) plus the ETA of the runs `run` would still train (failed ones
    /// are retried).
    pub fn whole_sweep_s(&self, plan: &Plan, finished: &[RunRecord]) -> f64 {
        let done = crate::record::finished_ids(finished);
        let spent: f64 = finished_samples(finished).iter().map(|s| s.2).sum();
        let pending: f64 = roles(plan)
            .filter(|(r, _)| !done.contains(r.id.as_str()))
            .map(|(r, role)| self.run_seconds(r, role))
            .sum();
        spent + pending
    }

    pub fn describe(&self) -> String {
        let model = |m: &CostModel| {
            if m.flops_per_s.is_finite() {
                format!(
                    "{:.1} ms/step + C/{:.2e} FLOPs/s",
                    1e3 * m.per_step_s,
                    m.flops_per_s
                )
            } else {
                format!("{:.1} ms/step", 1e3 * m.per_step_s)
            }
        };
        let fallback = match &self.fallback {
            Fallback::Finished { runs, model: m } => format!(
                "fitted on {runs} finished run{}: {}",
                if *runs == 1 { "" } else { "s" },
                model(m)
            ),
            Fallback::Spec(m) => format!("speed assumed: flops_per_s {:.2e}", m.flops_per_s),
            Fallback::CpuDefault(m) => format!(
                "assumed: {}, fitted on the README machine's runs trained two at a time; plan --measure times this one",
                model(m)
            ),
            Fallback::Unknown => {
                "unknown until a run on this device finishes, or set `flops_per_s:`, or plan --measure"
                    .into()
            }
        };
        match self.timed_at_once {
            None => fallback,
            Some(1) => "timed on this device by plan --measure".into(),
            Some(k) => format!("timed on this device by plan --measure, {k} at once"),
        }
    }
}

/// Samples `(steps, FLOPs, wall)` of the finished trainings for [`CostModel::fit`]: each `ok`,
/// diverged or pruned run alone, the runs of a pack as one (a pack's rows all carry the pack's
/// wall time: rows of equal steps and bit-equal `wall_s` are taken for one pack), and each
/// cooldown group as one (its stable parent's row holds the whole group's time; its branches
/// add their cooldown steps and FLOPs).
fn finished_samples(finished: &[RunRecord]) -> Vec<(f64, f64, f64)> {
    let mut lone: Vec<(f64, f64, f64)> = Vec::new();
    let alone = finished
        .iter()
        .filter(|r| r.parent.is_empty() && r.status.is_final() && r.status != Status::Stable);
    for r in alone {
        let steps = r.steps_done as f64;
        // A pruned run spent only part of its planned FLOPs (older files: no flops_spent).
        let flops = if r.flops_spent.is_finite() {
            r.flops_spent
        } else {
            r.flops
        };
        match lone
            .iter_mut()
            .find(|s| s.0 == steps && s.2.to_bits() == r.wall_s.to_bits())
        {
            Some(pack) => pack.1 += flops,
            None => lone.push((steps, flops, r.wall_s)),
        }
    }
    let groups = finished
        .iter()
        .filter(|r| r.status == Status::Stable)
        .map(|p| {
            let branches = finished.iter().filter(|b| b.parent == p.run_id);
            branches.fold((p.steps_done as f64, p.flops_spent, p.wall_s), |acc, b| {
                let cooldown = b.steps_done.saturating_sub(b.branch_step) as f64;
                (acc.0 + cooldown, acc.1 + b.flops_spent, acc.2)
            })
        });
    lone.into_iter()
        .chain(groups)
        .filter(|s| s.0.is_finite() && s.1.is_finite() && s.2.is_finite())
        .collect()
}

/// Wall clock of runs of these durations on `workers` workers, longest first, each to the
/// worker that frees first (as `run --workers` schedules them).
pub fn wall_clock(durations: &[f64], workers: usize) -> f64 {
    if durations.iter().any(|d| d.is_nan()) {
        return f64::NAN;
    }
    let mut d: Vec<f64> = durations.to_vec();
    d.sort_by(|a, b| b.total_cmp(a));
    let mut free = vec![0.0f64; workers.max(1)];
    for t in d {
        let k = (0..free.len())
            .min_by(|&i, &j| free[i].total_cmp(&free[j]))
            .unwrap_or(0);
        free[k] += t;
    }
    free.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_known_cost_model() {
        let truth = CostModel {
            per_step_s: 4e-3,
            flops_per_s: 2e10,
        };
        // Runs of several lengths and sizes, each time off by a deterministic ±3%.
        let samples: Vec<(f64, f64, f64)> = (0..24)
            .map(|i| {
                let steps = 500.0 + 150.0 * (i % 6) as f64;
                let flops = 1e10 * (1.0 + (i / 6) as f64 * 4.0) * steps / 500.0;
                let noise = 1.0 + 0.03 * if i % 2 == 0 { 1.0 } else { -1.0 };
                (steps, flops, truth.seconds(steps, flops) * noise)
            })
            .collect();
        let m = CostModel::fit(&samples).unwrap();
        assert!((m.per_step_s / 4e-3 - 1.0).abs() < 0.1, "{m:?}");
        assert!((m.flops_per_s / 2e10 - 1.0).abs() < 0.1, "{m:?}");
    }

    #[test]
    fn fit_falls_back_to_one_rate_when_steps_explain_nothing() {
        // Time exactly proportional to FLOPs, steps unrelated: a = 0, R = the rate.
        let samples = [(1000.0, 1e10, 1.0), (200.0, 3e10, 3.0), (700.0, 2e10, 2.0)];
        let m = CostModel::fit(&samples).unwrap();
        assert!(
            m.per_step_s.abs() < 1e-9 && (m.flops_per_s / 1e10 - 1.0).abs() < 1e-6,
            "{m:?}"
        );
        // One run: a single rate.
        let one = CostModel::fit(&[(100.0, 5e9, 2.0)]).unwrap();
        assert_eq!((one.per_step_s, one.flops_per_s), (0.0, 2.5e9));
        assert!(CostModel::fit(&[]).is_none());
    }

    #[test]
    fn wall_clock_schedules_longest_first() {
        assert_eq!(wall_clock(&[2.0, 3.0, 2.0, 3.0], 2), 5.0);
        // Longest first is not always optimal (3+3 | 2+2+2 = 6): the scheduler's 7 is what runs.
        assert_eq!(wall_clock(&[3.0, 3.0, 2.0, 2.0, 2.0], 2), 7.0);
        assert_eq!(wall_clock(&[5.0, 1.0, 1.0], 2), 5.0);
        assert_eq!(wall_clock(&[1.0, 2.0], 1), 3.0);
        assert_eq!(wall_clock(&[], 3), 0.0);
        assert!(wall_clock(&[1.0, f64::NAN], 2).is_nan());
    }
}
