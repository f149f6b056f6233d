//! How long a sweep takes: `plan`'s ETA and `budget_hours`' check.
//!
//! Owns the cost model of one run's wall time, where its numbers come from, and the wall
//! clock of a set of runs on K workers. A run costs a fixed time per optimizer step (the
//! per-op overhead that dominates small models: ~5 ms a step on the 2-core CPU for models of
//! 4k–60k parameters) plus its C = 6ND FLOPs at a rate; a single FLOP rate, what the ETA used
//! before, put the main job at 10m35s on one worker when its runs took 38 min. Sources, best
//! first: each training configuration's steps and evals timed on the device (`plan
//! --measure`; the timing itself is in the bench module), a least-squares fit of the folder's finished
//! runs, the spec's `flops_per_s`, a CPU default. Pure over numbers; no training here.

use std::collections::HashMap;

use crate::device::DeviceChoice;
use crate::plan::{Plan, RunPlan, Shape};
use crate::record::{RunRecord, Status};
use crate::spec::Precision;

/// Seconds per optimizer step assumed on the CPU when nothing was measured: the weighted
/// least-squares fit (as [`CostModel::fit`]) of the 192 runs of three committed examples
/// (`example-quick`, `hp-quick`, `example-families`, flex backend, one thread per run, on the
/// 2-core Xeon of the README): 5.17 ms per step ...
pub const CPU_STEP_S: f64 = 5.2e-3;
/// ... and 7.99e9 C = 6ND FLOPs per second.
pub const CPU_FLOPS_PER_S: f64 = 8.0e9;

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
    /// each residual weighted by 1/√wall (a run's timing noise taken proportional to its
    /// length, so long runs, which decide a sweep's total, are not outvoted by short ones).
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

/// One training configuration's timing on the device: seconds per optimizer step, per eval,
/// and per run (the executor's predictions of the run's final loss).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTiming {
    pub per_step_s: f64,
    pub per_eval_s: f64,
    pub per_run_s: f64,
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

/// Where the ETA's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Every pending configuration timed on the device (`plan --measure`), this many
    /// copies at once (`--workers`).
    Timed(usize),
    /// A fit of this many finished runs of the folder.
    Finished(usize),
    /// The spec's `flops_per_s` (no per-step cost).
    Spec,
    /// [`CPU_STEP_S`] and [`CPU_FLOPS_PER_S`].
    CpuDefault,
    /// Nothing to go on (a GPU without `flops_per_s`, no finished run, not timed).
    Unknown,
}

/// The ETA's cost of each run.
#[derive(Debug, Clone)]
pub struct Speed {
    pub model: Option<CostModel>,
    pub source: Source,
    /// Configurations timed on the device; the runs they cover use them, not the model.
    pub timed: HashMap<TimingKey, StepTiming>,
}

impl Speed {
    /// From the folder's finished runs (cooldown branches left out: their time is part of
    /// their parent's), else the spec's `flops_per_s`, else the CPU default.
    pub fn of(finished: &[RunRecord], flops_per_s: Option<f64>, device: DeviceChoice) -> Speed {
        let samples: Vec<(f64, f64, f64)> = finished
            .iter()
            .filter(|r| r.status == Status::Ok && r.parent.is_empty())
            .map(|r| (r.steps_done as f64, r.flops, r.wall_s))
            .collect();
        let (model, source) = match CostModel::fit(&samples) {
            Some(m) => (Some(m), Source::Finished(samples.len())),
            None => match (flops_per_s, device) {
                (Some(r), _) => (
                    Some(CostModel {
                        per_step_s: 0.0,
                        flops_per_s: r,
                    }),
                    Source::Spec,
                ),
                // No default on a GPU: the CPU's would be meaningless there.
                (None, DeviceChoice::Cpu) => (
                    Some(CostModel {
                        per_step_s: CPU_STEP_S,
                        flops_per_s: CPU_FLOPS_PER_S,
                    }),
                    Source::CpuDefault,
                ),
                (None, _) => (None, Source::Unknown),
            },
        };
        Speed {
            model,
            source,
            timed: HashMap::new(),
        }
    }

    /// Seconds `r` costs (a cooldown branch: its cooldown; a stable parent: its stable
    /// phase); NaN when unknown.
    pub fn run_seconds(&self, r: &RunPlan) -> f64 {
        let share = if r.flops > 0.0 {
            r.flops_spent / r.flops
        } else {
            1.0
        };
        let steps = r.data.steps as f64 * share;
        if let Some(t) = self.timed.get(&TimingKey::of(r)) {
            let evals = (r.data.steps.div_ceil(r.data.eval_interval.max(1))) as f64 * share;
            return steps * t.per_step_s + evals * t.per_eval_s + share * t.per_run_s;
        }
        self.model
            .map_or(f64::NAN, |m| m.seconds(steps, r.flops_spent))
    }

    /// Seconds the whole sweep (stable parents included) takes on one worker.
    pub fn whole_sweep_s(&self, plan: &Plan) -> f64 {
        plan.runs
            .iter()
            .chain(&plan.parents)
            .map(|r| self.run_seconds(r))
            .sum()
    }

    pub fn describe(&self) -> String {
        let model = |m: &CostModel| {
            format!(
                "{:.1} ms/step + C/{:.2e} FLOPs/s",
                1e3 * m.per_step_s,
                m.flops_per_s
            )
        };
        match (self.source, &self.model) {
            (Source::Timed(1), _) => "timed on this device by plan --measure".into(),
            (Source::Timed(k), _) => format!("timed on this device by plan --measure, {k} at once"),
            (Source::Finished(n), Some(m)) => {
                format!("fitted on {n} finished runs: {}", model(m))
            }
            (Source::Spec, Some(m)) => format!("speed assumed: flops_per_s {:.2e}", m.flops_per_s),
            (Source::CpuDefault, Some(m)) => format!(
                "assumed: {}, the README machine's; plan --measure times this one",
                model(m)
            ),
            _ => "unknown until a run on this device finishes, or set `flops_per_s:`, or plan --measure"
                .into(),
        }
    }
}

/// Wall clock of runs of these durations on `workers` workers, longest first, each to the
/// worker that frees first (as `run --workers` schedules them).
pub fn wall_clock(durations: &[f64], workers: usize) -> f64 {
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
    }
}
