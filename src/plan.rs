//! The plan: a validated [`SweepSpec`] expanded into concrete runs.
//!
//! Owns model shapes and their parameter / FLOP accounting, the data grid (token counts,
//! tokens-per-parameter ratios, IsoFLOP budgets), dropping runs too short to mean anything
//! (with a reason), and each run's stable id (a hash of everything that determines its
//! result, so a rerun of the same spec finds finished runs).
//!
//! Accounting (the GPT in [`crate::model`], biases included, head tied to the embedding):
//! * `n_params` — non-embedding parameters N (Kaplan et al.): the blocks and the final
//!   LayerNorm; per layer `12·d² + 13·d` for d_ff = 4d (in general `4d² + 2·d·d_ff + 9d + d_ff`).
//! * `n_params_total` — N plus the token embedding (vocab·d, shared with the output head) and
//!   the position embedding (context·d).
//! * `flops` — C = 6 · N · D with the non-embedding N (the convention of Kaplan and of the
//!   IsoFLOP budgets here).
//! * `flops_per_token_full` — 6·(N + vocab·d) + 12·n_layer·context·d: adds the unembedding
//!   matmul and attention (PaLM's MFU convention); used for throughput / MFU.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::corpus::fnv1a;
use crate::spec::{CooldownShape, LrRule, Schedule, SweepSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Shape {
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_ff: usize,
}

impl Shape {
    pub fn new(d_model: usize, n_layer: usize, n_head: usize, d_ff: Option<usize>) -> Self {
        Shape {
            d_model,
            n_layer,
            n_head,
            d_ff: d_ff.unwrap_or(4 * d_model),
        }
    }

    /// Non-embedding parameters (blocks + final LayerNorm).
    pub fn non_embedding_params(&self) -> u64 {
        let (d, f) = (self.d_model as u64, self.d_ff as u64);
        let per_layer = 4 * d // two LayerNorms
            + 3 * d * d + 3 * d // qkv
            + d * d + d // attention output
            + d * f + f // MLP up
            + f * d + d; // MLP down
        self.n_layer as u64 * per_layer + 2 * d
    }

    /// All parameters (embeddings included; the head is tied to the token embedding).
    pub fn total_params(&self, vocab: usize, context: usize) -> u64 {
        self.non_embedding_params() + ((vocab + context) * self.d_model) as u64
    }

    /// Training FLOPs per token, PaLM convention: matmuls incl. unembedding + attention.
    pub fn flops_per_token_full(&self, vocab: usize, context: usize) -> f64 {
        let n = self.non_embedding_params() as f64 + (vocab * self.d_model) as f64;
        6.0 * n + 12.0 * (self.n_layer * context * self.d_model) as f64
    }

    pub fn label(&self) -> String {
        format!("d{}-L{}-h{}", self.d_model, self.n_layer, self.n_head)
    }
}

/// Everything the trainer needs for one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunPlan {
    pub id: String,
    pub shape: Shape,
    pub context: usize,
    pub vocab_size: usize,
    pub batch_size: usize,
    pub steps: usize,
    /// Training tokens D = steps · batch_size · context.
    pub tokens: u64,
    pub n_params: u64,
    pub n_params_total: u64,
    /// C = 6 · n_params · tokens.
    pub flops: f64,
    /// The IsoFLOP budget this run belongs to, if any.
    pub budget: Option<f64>,
    pub seed: u64,
    pub lr: f64,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub min_lr_ratio: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_interval: usize,
    pub cooldown_fraction: f64,
    pub cooldown_shape: CooldownShape,
    /// The LR-sweep multiplier this run used (1 without an LR sweep).
    pub lr_multiplier: f64,
    /// Id of the (shape, D, seed) point, shared by the runs of an LR sweep.
    pub point_id: String,
    /// For a cooldown branch: the id of its stable-phase parent.
    pub parent: Option<String>,
    /// For a cooldown branch: the step where it leaves the stable run.
    pub branch_step: usize,
    /// FLOPs this row itself costs (a branch: its cooldown; a parent: the stable phase).
    pub flops_spent: f64,
}

impl RunPlan {
    /// First step of the WSD cooldown.
    pub fn decay_start(&self) -> usize {
        let cool =
            ((self.cooldown_fraction * self.steps as f64).round() as usize).clamp(1, self.steps);
        self.steps - cool
    }

    /// Learning rate at `step` (0-based): linear warmup, then cosine, constant or WSD.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let floor = self.lr * self.min_lr_ratio;
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Wsd => {
                let start = self.decay_start().max(self.warmup_steps);
                if step < start {
                    return self.lr;
                }
                let p = ((step - start + 1) as f64 / (self.steps - start).max(1) as f64).min(1.0);
                let f = match self.cooldown_shape {
                    CooldownShape::Linear => 1.0 - p,
                    CooldownShape::Sqrt => 1.0 - p.sqrt(),
                };
                floor + (self.lr - floor) * f
            }
            Schedule::Cosine => {
                let span = (self.steps - self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// A (shape, D) point that was left out, and why.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub what: String,
    pub reason: String,
}

pub struct Plan {
    /// Every data point's run (cooldown branches included).
    pub runs: Vec<RunPlan>,
    /// Stable-phase parents of cooldown branches (not data points themselves).
    pub parents: Vec<RunPlan>,
    pub dropped: Vec<Dropped>,
    /// The sweep's IsoFLOP budgets, if any.
    pub budgets: Vec<f64>,
}

impl Plan {
    /// Largest number of training tokens any run reads.
    pub fn max_tokens(&self) -> u64 {
        self.runs.iter().map(|r| r.tokens).max().unwrap_or(0)
    }

    /// C = 6ND summed over the data points (what separate runs would cost).
    pub fn total_flops(&self) -> f64 {
        self.runs.iter().map(|r| r.flops).sum()
    }

    /// FLOPs the sweep actually spends (branches share their parent's stable phase).
    pub fn flops_spent(&self) -> f64 {
        self.runs
            .iter()
            .chain(&self.parents)
            .map(|r| r.flops_spent)
            .sum()
    }
}

/// The shapes a spec names, de-duplicated, smallest first.
pub fn shapes(spec: &SweepSpec) -> Vec<Shape> {
    let mut set = BTreeSet::new();
    for s in &spec.model.shapes {
        set.insert(Shape::new(s.d_model, s.n_layer, s.n_head, s.d_ff));
    }
    if let Some(g) = &spec.model.grid {
        for &w in &g.widths {
            for &l in &g.depths {
                set.insert(Shape::new(w, l, w / g.head_dim, None));
            }
        }
    }
    let mut v: Vec<Shape> = set.into_iter().collect();
    v.sort_by_key(|s| (s.non_embedding_params(), *s));
    v
}

/// Expand a validated spec. `vocab_size` and `corpus_fingerprint` come from the corpus.
/// Errors (as user errors) when every run of an IsoFLOP budget, or of the whole sweep, is
/// too short.
pub fn build(
    spec: &SweepSpec,
    source_label: &str,
    vocab_size: usize,
    corpus_fingerprint: u64,
) -> anyhow::Result<Plan> {
    let ctx = spec.model.context;
    let t = &spec.training;
    let batch = t.sequences_per_step(ctx);
    let tokens_per_step = (batch * ctx) as f64;
    let min_steps = spec.data.min_steps;
    let mut runs = Vec::new();
    let mut dropped = Vec::new();
    let mut budgets = Vec::new();
    let mut targets: Vec<(Shape, f64, Option<f64>)> = Vec::new();
    let shapes = shapes(spec);
    if let Some(iso) = &spec.data.isoflop {
        budgets = iso.budgets.clone();
        for &c in &iso.budgets {
            for s in &shapes {
                targets.push((*s, c / (6.0 * s.non_embedding_params() as f64), Some(c)));
            }
        }
    }
    for s in &shapes {
        for &d in &spec.data.tokens {
            targets.push((*s, d, None));
        }
        for &r in &spec.data.tokens_per_param {
            targets.push((*s, r * s.non_embedding_params() as f64, None));
        }
    }
    for (shape, d, budget) in targets {
        let steps = (d / tokens_per_step).round() as usize;
        if steps < min_steps {
            dropped.push(Dropped {
                what: match budget {
                    Some(c) => format!("{} at C={c:.3e}", shape.label()),
                    None => format!("{} at D={d:.3e}", shape.label()),
                },
                reason: format!(
                    "{steps} steps of {} tokens < data.min_steps {min_steps}",
                    tokens_per_step as usize
                ),
            });
            continue;
        }
        let multipliers = if t.lr_multipliers.is_empty() {
            vec![1.0]
        } else {
            t.lr_multipliers.clone()
        };
        for seed in spec.seed_list() {
            for &mult in &multipliers {
                let tokens = (steps * batch * ctx) as u64;
                let n = shape.non_embedding_params();
                let flops = 6.0 * n as f64 * tokens as f64;
                let base_lr = match &t.lr_scaling {
                    None => t.lr,
                    Some(ls) => match ls.rule {
                        LrRule::Width => t.lr * ls.base_width as f64 / shape.d_model as f64,
                        LrRule::Compute => ls.k.unwrap_or(t.lr) * flops.powf(ls.p.unwrap_or(0.0)),
                    },
                };
                let mut run = RunPlan {
                    id: String::new(),
                    shape,
                    context: ctx,
                    vocab_size,
                    batch_size: batch,
                    steps,
                    tokens,
                    n_params: n,
                    n_params_total: shape.total_params(vocab_size, ctx),
                    flops,
                    budget,
                    seed,
                    lr: base_lr * mult,
                    warmup_steps: t
                        .warmup_steps
                        .min((t.warmup_fraction * steps as f64).ceil() as usize),
                    schedule: t.schedule,
                    min_lr_ratio: t.min_lr_ratio,
                    beta1: t.beta1,
                    beta2: t.beta2,
                    weight_decay: t.weight_decay,
                    grad_clip: t.grad_clip,
                    eval_interval: if t.eval_interval > 0 {
                        t.eval_interval
                    } else {
                        steps.div_ceil(10)
                    },
                    cooldown_fraction: t.cooldown_fraction,
                    cooldown_shape: t.cooldown_shape,
                    lr_multiplier: mult,
                    point_id: String::new(),
                    parent: None,
                    branch_step: 0,
                    flops_spent: flops,
                };
                run.point_id = format!(
                    "{:016x}",
                    fnv1a(
                        format!(
                            "point|{corpus_fingerprint:x}|{:?}|{steps}|{batch}|{seed}|{budget:?}",
                            shape
                        )
                        .as_bytes()
                    )
                );
                runs.push(run);
            }
        }
    }
    let parents = if spec.data.branches {
        make_branches(&mut runs, tokens_per_step)
    } else {
        Vec::new()
    };
    let mut seen = BTreeSet::new();
    for r in runs.iter_mut() {
        r.id = run_id(r, corpus_fingerprint, spec.corpus.eval_tokens);
    }
    runs.retain(|r| seen.insert(r.id.clone()));
    let parent_ids: std::collections::HashMap<String, String> = parents
        .iter()
        .map(|p| {
            (
                p.point_id.clone(),
                run_id(p, corpus_fingerprint, spec.corpus.eval_tokens),
            )
        })
        .collect();
    let parents: Vec<RunPlan> = parents
        .into_iter()
        .map(|mut p| {
            p.id = parent_ids[&p.point_id].clone();
            p
        })
        .collect();
    for r in runs.iter_mut() {
        if let Some(key) = &r.parent {
            r.parent = Some(parent_ids[key].clone());
        }
    }
    if let Some(iso) = &spec.data.isoflop {
        for &c in &iso.budgets {
            if !runs.iter().any(|r| r.budget == Some(c)) {
                crate::bail_user!(
                    "{source_label}: data.isoflop.budgets: budget {c:.3e} FLOPs is too small for any model: \
                     even the smallest shape ({}) gets fewer than data.min_steps = {min_steps} steps of {} tokens; \
                     raise the budget, add smaller shapes, or lower training.batch_size / data.min_steps",
                    shapes.first().map(|s| s.label()).unwrap_or_default(),
                    tokens_per_step as usize
                );
            }
        }
    }
    if runs.is_empty() {
        crate::bail_user!(
            "{source_label}: data: every run is shorter than data.min_steps = {min_steps} steps of {} tokens; \
             raise data.tokens / tokens_per_param, or lower training.batch_size / data.min_steps",
            tokens_per_step as usize
        );
    }
    Ok(Plan {
        runs,
        parents,
        dropped,
        budgets,
    })
}

/// Group runs by (shape, seed, LR) into cooldown branches of one stable-phase parent each.
/// Every branch of a group gets the warmup of the group's shortest run, so the stable phase
/// is the same for all of them (and identical to a separate WSD run of that D).
fn make_branches(runs: &mut [RunPlan], tokens_per_step: f64) -> Vec<RunPlan> {
    let mut keys: Vec<(Shape, u64, u64)> = runs
        .iter()
        .map(|r| (r.shape, r.seed, r.lr.to_bits()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut parents = Vec::new();
    for key in keys {
        let members: Vec<usize> = (0..runs.len())
            .filter(|&i| (runs[i].shape, runs[i].seed, runs[i].lr.to_bits()) == key)
            .collect();
        let min_steps = members.iter().map(|&i| runs[i].steps).min().unwrap();
        let warmup = members
            .iter()
            .map(|&i| runs[i].warmup_steps)
            .min()
            .unwrap()
            .min(min_steps);
        let mut stable_steps = 0;
        for &i in &members {
            runs[i].warmup_steps = warmup;
            runs[i].branch_step = runs[i].decay_start().max(warmup);
            runs[i].flops_spent = 6.0
                * runs[i].n_params as f64
                * (runs[i].steps - runs[i].branch_step) as f64
                * tokens_per_step;
            stable_steps = stable_steps.max(runs[i].branch_step);
        }
        let first = &runs[members[0]];
        let mut parent = first.clone();
        let group_key = format!("stable|{}|{}", first.point_id, stable_steps);
        parent.point_id = format!("{:016x}", fnv1a(group_key.as_bytes()));
        parent.schedule = Schedule::Constant;
        parent.steps = stable_steps;
        parent.tokens = (stable_steps as f64 * tokens_per_step) as u64;
        parent.flops = 6.0 * parent.n_params as f64 * parent.tokens as f64;
        parent.flops_spent = parent.flops;
        parent.budget = None;
        parent.eval_interval = stable_steps.div_ceil(10).max(1);
        for &i in &members {
            runs[i].parent = Some(parent.point_id.clone());
        }
        parents.push(parent);
    }
    parents
}

/// Stable id: a hash of everything that determines the run's result.
fn run_id(r: &RunPlan, corpus_fp: u64, eval_tokens: f64) -> String {
    let key = format!(
        "v1|{corpus_fp:x}|{eval_tokens}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}|{}|{}|{}|{}",
        r.context,
        r.vocab_size,
        r.shape.d_model,
        r.shape.n_layer,
        r.shape.n_head,
        r.shape.d_ff,
        r.batch_size,
        r.steps,
        r.lr,
        r.schedule,
        r.warmup_steps,
        r.min_lr_ratio,
        r.beta1,
        r.beta2,
        r.weight_decay,
        r.grad_clip,
        r.seed,
        r.eval_interval,
    ) + &format!(
        "|{}|{:?}|{}|{}",
        if r.schedule == Schedule::Wsd {
            r.cooldown_fraction
        } else {
            0.0
        },
        if r.schedule == Schedule::Wsd {
            Some(r.cooldown_shape)
        } else {
            None
        },
        r.parent.is_some(),
        r.branch_step
    );
    format!("{:016x}", fnv1a(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::{SpecSource, SweepSpec};

    fn spec(extra_training: &str, data: &str) -> SweepSpec {
        let text = format!(
            "name: t\nmodel:\n  context: 16\n  shapes:\n    - {{d_model: 16, n_layer: 1, n_head: 2}}\n    - {{d_model: 32, n_layer: 1, n_head: 2}}\n\
             data:\n{data}\n  min_steps: 2\ntraining:\n  batch_size: 4\n  lr: 0.01\n  warmup_steps: 4\n{extra_training}"
        );
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: ".".into(),
            text,
        };
        SweepSpec::parse(&src).unwrap()
    }

    fn run_with(schedule: Schedule, shape: CooldownShape) -> RunPlan {
        let s = spec("", "  tokens: [6400]");
        let mut r = build(&s, "t", 256, 1).unwrap().runs[0].clone();
        r.schedule = schedule;
        r.cooldown_shape = shape;
        r.min_lr_ratio = 0.1;
        r
    }

    #[test]
    fn schedule_shapes() {
        // 6400 tokens / (4 x 16) = 100 steps; warmup min(4, 10) = 4.
        let c = run_with(Schedule::Cosine, CooldownShape::Linear);
        assert_eq!((c.steps, c.warmup_steps), (100, 4));
        assert!((c.lr_at(0) - 0.0025).abs() < 1e-12);
        assert!((c.lr_at(3) - 0.01).abs() < 1e-12);
        assert!((c.lr_at(4) - 0.01).abs() < 1e-12);
        // Half-way through the decay: (peak + floor) / 2.
        assert!((c.lr_at(52) - 0.0055).abs() < 1e-12);
        assert!((c.lr_at(99) - 0.001).abs() < 1e-5);
        let w = run_with(Schedule::Wsd, CooldownShape::Linear);
        assert_eq!(w.decay_start(), 80);
        assert_eq!(w.lr_at(79), 0.01);
        // Cooldown steps 80..100: progress (step - 80 + 1) / 20.
        assert!((w.lr_at(89) - (0.001 + 0.009 * 0.5)).abs() < 1e-12);
        assert!((w.lr_at(99) - 0.001).abs() < 1e-12);
        let q = run_with(Schedule::Wsd, CooldownShape::Sqrt);
        assert!((q.lr_at(89) - (0.001 + 0.009 * (1.0 - 0.5f64.sqrt()))).abs() < 1e-12);
        let k = run_with(Schedule::Constant, CooldownShape::Linear);
        assert_eq!(k.lr_at(99), 0.01);
    }

    #[test]
    fn flop_formulas_against_hand_counts() {
        let s = Shape::new(64, 2, 2, None);
        assert_eq!(s.non_embedding_params(), 100_096);
        assert_eq!(s.total_params(256, 64), 120_576);
        // 6 (N + vocab d) + 12 L ctx d = 6 (100096 + 16384) + 12 * 2 * 64 * 64.
        assert_eq!(s.flops_per_token_full(256, 64), 797_184.0);
    }

    #[test]
    fn lr_scaling_rules() {
        let w = spec(
            "  lr_scaling: {rule: width, base_width: 16}\n",
            "  tokens: [6400]",
        );
        let p = build(&w, "t", 256, 1).unwrap();
        let lr = |d: usize| p.runs.iter().find(|r| r.shape.d_model == d).unwrap().lr;
        assert!((lr(16) - 0.01).abs() < 1e-15 && (lr(32) - 0.005).abs() < 1e-15);
        let c = spec(
            "  lr_scaling: {rule: compute, k: 2.0, p: -0.1}\n",
            "  tokens: [6400]",
        );
        let p = build(&c, "t", 256, 1).unwrap();
        for r in &p.runs {
            assert!((r.lr - 2.0 * r.flops.powf(-0.1)).abs() < 1e-12);
        }
        let m = spec("  lr_multipliers: [0.5, 1, 2]\n", "  tokens: [6400]");
        let p = build(&m, "t", 256, 1).unwrap();
        assert_eq!(p.runs.len(), 6);
        let ids: BTreeSet<&str> = p.runs.iter().map(|r| r.point_id.as_str()).collect();
        assert_eq!(ids.len(), 2, "an LR sweep shares the point id");
    }

    #[test]
    fn branch_bookkeeping() {
        let s = spec(
            "  schedule: wsd\n  cooldown_fraction: 0.2\n",
            "  tokens: [1600, 3200, 6400, 12800]\n  branches: true",
        );
        let p = build(&s, "t", 256, 1).unwrap();
        assert_eq!(p.parents.len(), 2);
        assert_eq!(p.runs.len(), 8);
        for parent in &p.parents {
            let kids: Vec<&RunPlan> = p
                .runs
                .iter()
                .filter(|r| r.parent.as_ref() == Some(&parent.id))
                .collect();
            assert_eq!(kids.len(), 4);
            // Steps 25, 50, 100, 200: branch at 80% of each; the parent runs to the last branch point.
            let mut bs: Vec<usize> = kids.iter().map(|k| k.branch_step).collect();
            bs.sort();
            assert_eq!(bs, vec![20, 40, 80, 160]);
            assert_eq!(parent.steps, 160);
            assert!(kids.iter().all(|k| k.warmup_steps == parent.warmup_steps));
            for k in &kids {
                let cool_tokens = ((k.steps - k.branch_step) * 64) as f64;
                assert!((k.flops_spent - 6.0 * k.n_params as f64 * cool_tokens).abs() < 1e-6);
            }
        }
        // (0.8 * 12800 + 0.2 * (1600 + 3200 + 6400 + 12800)) / 24000 = 0.6267 per shape.
        let ratio = p.flops_spent() / p.total_flops();
        assert!((ratio - 15040.0 / 24000.0).abs() < 1e-9, "ratio {ratio}");
    }

    #[test]
    fn param_count_matches_formula() {
        let s = Shape::new(64, 2, 2, None);
        // 12 d^2 + 13 d per layer + 2d final LN.
        assert_eq!(s.non_embedding_params(), 2 * (12 * 64 * 64 + 13 * 64) + 128);
        assert_eq!(
            s.total_params(256, 64),
            s.non_embedding_params() + (256 + 64) * 64
        );
    }
}
