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
use crate::spec::{Schedule, SweepSpec};

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
}

impl RunPlan {
    /// Learning rate at `step` (0-based): linear warmup, then cosine (or constant).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = (self.steps - self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let floor = self.lr * self.min_lr_ratio;
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
    pub runs: Vec<RunPlan>,
    pub dropped: Vec<Dropped>,
    /// The sweep's IsoFLOP budgets, if any.
    pub budgets: Vec<f64>,
}

impl Plan {
    /// Largest number of training tokens any run reads.
    pub fn max_tokens(&self) -> u64 {
        self.runs.iter().map(|r| r.tokens).max().unwrap_or(0)
    }

    pub fn total_flops(&self) -> f64 {
        self.runs.iter().map(|r| r.flops).sum()
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
    let mut seen = BTreeSet::new();
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
        for seed in spec.seed_list() {
            let warmup = t
                .warmup_steps
                .min((t.warmup_fraction * steps as f64).ceil() as usize);
            let eval_interval = if t.eval_interval > 0 {
                t.eval_interval
            } else {
                steps.div_ceil(10)
            };
            let tokens = (steps * batch * ctx) as u64;
            let n = shape.non_embedding_params();
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
                flops: 6.0 * n as f64 * tokens as f64,
                budget,
                seed,
                lr: t.lr,
                warmup_steps: warmup,
                schedule: t.schedule,
                min_lr_ratio: t.min_lr_ratio,
                beta1: t.beta1,
                beta2: t.beta2,
                weight_decay: t.weight_decay,
                grad_clip: t.grad_clip,
                eval_interval,
            };
            run.id = run_id(&run, corpus_fingerprint, spec.corpus.eval_tokens);
            if seen.insert(run.id.clone()) {
                runs.push(run);
            }
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
        dropped,
        budgets,
    })
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
    );
    format!("{:016x}", fnv1a(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
