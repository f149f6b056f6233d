//! The trainer: one run, start to finish, on any autodiff backend.
//!
//! Owns the training loop (sequential batches from the shared stream, AdamW with a
//! global-norm gradient clip, the LR schedule from [`RunPlan::lr_at`]), the eval loss on
//! the sweep's fixed eval windows, divergence detection (NaN/inf loss → `diverged`), and the
//! loss curve; checkpoints (model + optimizer + schedule position, every M steps, so a
//! killed or preempted run resumes where it stopped) are [`checkpoint`]'s, packs of runs
//! [`pack`]'s. Apart from its checkpoint files it knows nothing about files: the executor
//! stores what it returns.

use std::time::Instant;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

mod checkpoint;
pub mod pack;

pub use checkpoint::{
    checkpoint_meta, pack_checkpoints, packed_progress, CheckpointMeta, Checkpointing, PackProgress,
};
use checkpoint::{resume, save_point};

use crate::corpus::{Corpus, StreamReader, WindowOrder};
use crate::lm::Lm;
use crate::plan::RunPlan;
use crate::record::{CurveRow, Predicted, RunOutcome, Status};
use crate::spec::Precision;

/// Live progress, sent after every step.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    pub step: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub tokens_per_s: f64,
}

/// The executor's answer to a step.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepReply {
    /// A prediction of the run's final loss made at this step: logged on its curve row.
    pub prediction: Option<Predicted>,
    /// Stop the run here: it ends as `pruned` (after an eval at this step).
    pub prune: bool,
}

/// Who watches a run train: told about the curve a resumed run logged before, then every
/// step; any `FnMut(StepInfo)` closure is one (it never predicts nor prunes).
pub trait StepObserver {
    /// The curve logged before this process took the run up (a resume), before its first
    /// new step; not called for a fresh start.
    fn resumed(&mut self, _curve: &[CurveRow]) {}
    fn step(&mut self, info: StepInfo) -> StepReply;
}

impl<F: FnMut(StepInfo)> StepObserver for F {
    fn step(&mut self, info: StepInfo) -> StepReply {
        self(info);
        StepReply::default()
    }
}

/// Token batch `[batch, context]` inputs and shifted targets for `step`.
pub fn batch<B: Backend>(
    run: &RunPlan,
    train: &mut StreamReader<'_>,
    step: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let (b, t) = (run.data.batch_size, run.data.context);
    let windows = (run.data.steps * b) as u64;
    let order = WindowOrder::new(
        run.data.order,
        windows,
        train.shuffle_group(t),
        run.data.seed,
    );
    let mut x = Vec::with_capacity(b * t);
    let mut y = Vec::with_capacity(b * t);
    let mut window = Vec::with_capacity(t + 1);
    for i in 0..b {
        window.clear();
        let w = order.window((step * b + i) as u64) as usize;
        train.read(w * t, t + 1, &mut window);
        x.extend(window[..t].iter().map(|&v| v as i32));
        y.extend(window[1..].iter().map(|&v| v as i32));
    }
    (
        Tensor::from_data(TensorData::new(x, [b, t]), device),
        Tensor::from_data(TensorData::new(y, [b, t]), device),
    )
}

/// The eval loss over every eval window: its mean (nats/token) and its mean at each position
/// of the window (position t predicts token t+1 from tokens 0..=t).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalLoss {
    pub mean: f64,
    pub by_position: Vec<f64>,
}

/// Mean eval loss (nats/token) over every eval window.
pub fn eval_loss<B: Backend>(model: &Lm<B>, corpus: &Corpus, device: &B::Device) -> f64 {
    eval_losses(model, corpus, device).mean
}

/// [`EvalLoss`] of `model` on the corpus's eval windows.
pub fn eval_losses<B: Backend>(model: &Lm<B>, corpus: &Corpus, device: &B::Device) -> EvalLoss {
    let mut sums = vec![0.0f64; corpus.context];
    for (x, y) in eval_chunks::<B>(corpus, device) {
        let per: Vec<f32> = model
            .token_losses(x, y)
            .sum_dim(0) // [1, t]
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 eval losses");
        for (s, v) in sums.iter_mut().zip(per) {
            *s += v as f64;
        }
    }
    EvalLoss::from_sums(&sums, corpus.n_eval_windows())
}

impl EvalLoss {
    /// From the summed loss at each position over `n` windows.
    fn from_sums(sums: &[f64], n: usize) -> EvalLoss {
        let by_position: Vec<f64> = sums.iter().map(|s| s / n as f64).collect();
        EvalLoss {
            mean: by_position.iter().sum::<f64>() / sums.len() as f64,
            by_position,
        }
    }
}

/// The eval windows in chunks of at most 32: inputs and targets, each `[m, t]`.
fn eval_chunks<B: Backend>(
    corpus: &Corpus,
    device: &B::Device,
) -> Vec<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)> {
    let (t, w) = (corpus.context, corpus.context + 1);
    let n = corpus.n_eval_windows();
    let chunk = 32;
    (0..n)
        .step_by(chunk)
        .map(|i| {
            let m = chunk.min(n - i);
            let mut x = Vec::with_capacity(m * t);
            let mut y = Vec::with_capacity(m * t);
            for k in i..i + m {
                let win = &corpus.eval[k * w..(k + 1) * w];
                x.extend(win[..w - 1].iter().map(|&v| v as i32));
                y.extend(win[1..].iter().map(|&v| v as i32));
            }
            (
                Tensor::from_data(TensorData::new(x, [m, t]), device),
                Tensor::from_data(TensorData::new(y, [m, t]), device),
            )
        })
        .collect()
}

/// Sums squared gradient norms over all float parameters.
struct GradSq<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradSq<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.parts.push(g.powi_scalar(2).sum());
        }
    }
}

/// Multiplies every gradient by a constant.
struct GradScale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    scale: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.scale));
        }
    }
}

/// Clip the global gradient norm to `max_norm` (as PyTorch's `clip_grad_norm_`); returns the
/// norm before clipping.
fn clip_global_norm<B: AutodiffBackend>(
    model: &Lm<B>,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut sq = GradSq::<B> {
        grads,
        parts: Vec::new(),
    };
    model.visit(&mut sq);
    if sq.parts.is_empty() {
        return 0.0;
    }
    let total: f32 = Tensor::cat(sq.parts, 0).sum().into_scalar().elem();
    let norm = (total as f64).sqrt();
    if max_norm > 0.0 && norm > max_norm && norm.is_finite() {
        let mut sc = GradScale::<B> {
            grads,
            scale: max_norm / (norm + 1e-6),
            _b: Default::default(),
        };
        model.visit(&mut sc);
    }
    norm
}

/// The model the forward and backward passes run: `model` itself in f32 (borrowed, no copy
/// on the hot path), else a copy of it
/// cast to `precision` whose gradients flow back through the casts to `model`'s own f32
/// parameters (the master weights, which AdamW updates, its moments in f32 too).
pub(crate) fn at_precision<B: Backend, M: Module<B>>(
    model: &M,
    precision: Precision,
) -> std::borrow::Cow<'_, M> {
    let dtype = match precision {
        Precision::F32 => return std::borrow::Cow::Borrowed(model),
        Precision::Bf16 => FloatDType::BF16,
        Precision::F16 => FloatDType::F16,
    };
    std::borrow::Cow::Owned(model.clone().map(&mut CastTo(dtype)))
}

/// Casts every float parameter to one float type (keeping its id and its autodiff graph).
struct CastTo(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastTo {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

/// Whether `device` computes in `precision` (f32 always).
pub fn supports_precision<B: Backend>(device: &B::Device, precision: Precision) -> bool {
    match precision {
        Precision::F32 => true,
        Precision::Bf16 => B::supports_dtype(device, DType::BF16),
        Precision::F16 => B::supports_dtype(device, DType::F16),
    }
}

/// AdamW's ε in every run (burn's default, 1e-5, is above the size of small gradients: μP's
/// hidden gradients are 1/m of the standard ones).
pub const ADAM_EPSILON: f32 = 1e-8;

/// Fresh model and AdamW optimizer for a run (seeded).
fn init<B: AutodiffBackend>(
    run: &RunPlan,
    corpus: &Corpus,
    device: &B::Device,
    fused_attention: bool,
) -> (Lm<B>, impl Optimizer<Lm<B>, B>) {
    let model = fresh_model::<B>(run, corpus, device, fused_attention);
    let optim = AdamWConfig::new()
        .with_beta_1(run.optim.beta1 as f32)
        .with_beta_2(run.optim.beta2 as f32)
        .with_epsilon(ADAM_EPSILON)
        .with_weight_decay(run.optim.weight_decay as f32)
        .init::<B, Lm<B>>();
    (model, optim)
}

/// A run's freshly initialised model, drawn from its seed: the same parameters whether it
/// trains alone or in a pack.
fn fresh_model<B: Backend>(
    run: &RunPlan,
    corpus: &Corpus,
    device: &B::Device,
    fused_attention: bool,
) -> Lm<B> {
    // Seeded and every parameter touched under the RNG's lock, so concurrent runs
    // (`--workers`) stay deterministic.
    crate::rng::seeded::<B, _>(device, run.data.seed, || {
        let model: Lm<B> = Lm::new(
            &run.shape,
            corpus.vocab_size,
            run.data.context,
            fused_attention,
            device,
        );
        let one = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i32], [1, 1]), device);
        let _ = model.forward(one);
        model
    })
}

/// Progress of one training segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    status: Status,
    last_loss: f64,
    steps_done: usize,
    train_time: f64,
    curve: Vec<CurveRow>,
    /// The loss by position of the latest eval (empty before one).
    eval_by_position: Vec<f64>,
}

/// Train steps `from..to` of `run` (LR from `run`'s schedule), evaluating at the run's eval
/// interval and at its last step.
#[allow(clippy::too_many_arguments)]
fn run_steps<B: AutodiffBackend, O: Optimizer<Lm<B>, B>>(
    mut model: Lm<B>,
    optim: &mut O,
    run: &RunPlan,
    from: usize,
    to: usize,
    corpus: &Corpus,
    device: &B::Device,
    on_step: &mut dyn StepObserver,
    save: &mut dyn FnMut(&Lm<B>, &O, &Segment),
) -> (Lm<B>, Segment) {
    let tokens_per_step = (run.data.batch_size * run.data.context) as u64;
    let mut reader = corpus.train.reader();
    let mut seg = Segment {
        steps_done: from,
        ..Segment::fresh()
    };
    for step in from..to {
        let t0 = Instant::now();
        let (x, y) = batch::<B>(run, &mut reader, step, device);
        let loss = at_precision(&model, run.precision).loss(x, y);
        let loss_v: f32 = loss.clone().into_scalar().elem();
        let loss_v = loss_v as f64;
        let lr = run.lr_at(step);
        if !loss_v.is_finite() {
            seg.diverge_at(step, tokens_per_step, lr, loss_v);
            break;
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_global_norm(&model, &mut grads, run.optim.grad_clip);
        if !norm.is_finite() {
            seg.status = Status::Diverged;
            break;
        }
        model = optim.step(lr, model, grads);
        seg.train_time += t0.elapsed().as_secs_f64();
        seg.steps_done = step + 1;
        seg.last_loss = loss_v;
        if log_step(&model, run, &mut seg, lr, from, corpus, device, on_step) {
            seg.status = Status::Pruned;
            break;
        }
        if seg.steps_done < to {
            save(&model, optim, &seg);
        }
    }
    (model, seg)
}

/// After the optimizer step `seg.steps_done` (at `lr`): tell the observer, evaluate when due
/// (or when the observer prunes the run here), log the curve row with the observer's
/// prediction. Returns whether the run is pruned.
#[allow(clippy::too_many_arguments)]
fn log_step<B: AutodiffBackend>(
    model: &Lm<B>,
    run: &RunPlan,
    seg: &mut Segment,
    lr: f64,
    from: usize,
    corpus: &Corpus,
    device: &B::Device,
    on_step: &mut dyn StepObserver,
) -> bool {
    let tokens_per_step = (run.data.batch_size * run.data.context) as u64;
    let done = seg.steps_done;
    let reply = on_step.step(StepInfo {
        step: done,
        steps: run.data.steps,
        train_loss: seg.last_loss,
        tokens_per_s: (done - from) as f64 * tokens_per_step as f64 / seg.train_time.max(1e-9),
    });
    let prune = reply.prune && done < run.data.steps;
    let is_eval = prune || done % run.data.eval_interval == 0 || done == run.data.steps;
    seg.curve.push(CurveRow {
        step: done,
        tokens: done as u64 * tokens_per_step,
        lr,
        train_loss: seg.last_loss,
        eval_loss: is_eval.then(|| {
            let e = eval_losses(&model.valid(), corpus, device);
            seg.eval_by_position = e.by_position;
            e.mean
        }),
        predicted: reply.prediction,
    });
    prune
}

fn outcome(seg: Segment, run: &RunPlan, from: usize, wall_s: f64) -> RunOutcome {
    let eval = if matches!(seg.status, Status::Ok | Status::Pruned) {
        seg.curve
            .iter()
            .rev()
            .find_map(|c| c.eval_loss)
            .unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    let tokens = (seg.steps_done - from) as f64 * (run.data.batch_size * run.data.context) as f64;
    RunOutcome {
        status: seg.status,
        steps_done: seg.steps_done,
        final_train_loss: seg.last_loss,
        eval_loss: eval,
        tokens_per_s: tokens / seg.train_time.max(1e-9),
        wall_s,
        curve: seg.curve,
        eval_loss_by_position: seg.eval_by_position,
        error: None,
    }
}

/// Runs training on a worker thread of a rayon pool (`pool`, else the global one), as the
/// executor and `plan --measure` do. Called from a thread outside the pool, every parallel op
/// of a step is handed to the pool and waited for (two context switches per op: 14% of a small
/// model's step with one thread, measured with perf); on a pool thread the ops run in place.
pub fn on_pool<R: Send>(pool: Option<&rayon::ThreadPool>, train: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => pool.install(train),
        None => rayon::scope(|_| train()),
    }
}

/// Train one run. Never panics on a numerical problem: a non-finite loss ends the run as
/// `Diverged`.
pub fn train_run<B: AutodiffBackend>(
    run: &RunPlan,
    corpus: &Corpus,
    device: &B::Device,
    on_step: &mut dyn StepObserver,
) -> RunOutcome {
    train_run_with::<B>(run, corpus, device, true, None, on_step)
}

/// Train one run with checkpoints: resume from `<run-id>.ckpt` when one exists, save every
/// `every` steps (the executor deletes it once the result is stored). Resuming continues the
/// exact computation (same parameters, AdamW moments, step counter, LR schedule position and
/// data order), so the final loss matches an uninterrupted run's (the tests assert 1e-4).
pub fn train_run_checkpointed<B: AutodiffBackend>(
    run: &RunPlan,
    corpus: &Corpus,
    device: &B::Device,
    ckpt: &Checkpointing,
    on_step: &mut dyn StepObserver,
) -> RunOutcome {
    train_run_with::<B>(run, corpus, device, true, Some(ckpt), on_step)
}

/// [`train_run`] with a choice of attention implementation (for benchmarks).
pub fn train_run_with<B: AutodiffBackend>(
    run: &RunPlan,
    corpus: &Corpus,
    device: &B::Device,
    fused_attention: bool,
    ckpt: Option<&Checkpointing>,
    on_step: &mut dyn StepObserver,
) -> RunOutcome {
    let start = Instant::now();
    let (model, optim) = init::<B>(run, corpus, device, fused_attention);
    let (model, mut optim, mut prior) = resume(
        ckpt,
        &run.id,
        run.data.steps.saturating_sub(1),
        model,
        optim,
        device,
    );
    let from = prior.step;
    if from > 0 {
        on_step.resumed(&prior.curve);
    }
    let (_, mut seg) = run_steps(
        model,
        &mut optim,
        run,
        from,
        run.data.steps,
        corpus,
        device,
        on_step,
        &mut |m, o, seg| save_point(ckpt, &run.id, m, o, seg, &prior, start),
    );
    let mut curve = std::mem::take(&mut prior.curve);
    curve.append(&mut seg.curve);
    seg.curve = curve;
    outcome(seg, run, from, prior.wall_s + start.elapsed().as_secs_f64())
}

/// Train a stable-phase parent and its cooldown branches (WSD). The parent trains once; at
/// each branch's `branch_step` the model and optimizer state are cloned and the branch cools
/// down to its own length. Returns the parent's outcome (its stable phase) and one outcome
/// per branch, in the order given; `on_branch(i, outcome)` is called as soon as branch `i`
/// ends, so the caller can store it at once. A branch's wall time and tokens/s cover its
/// cooldown only. With checkpoints, the stable phase is checkpointed under the parent's id
/// and resumes from there when its step is not past the first branch point given (pass only
/// the branches still to train).
#[allow(clippy::too_many_arguments)]
pub fn train_branched<B: AutodiffBackend>(
    parent: &RunPlan,
    branches: &[&RunPlan],
    corpus: &Corpus,
    device: &B::Device,
    ckpt: Option<&Checkpointing>,
    on_step: &mut dyn StepObserver,
    on_branch: &mut dyn FnMut(usize, &RunOutcome),
) -> (RunOutcome, Vec<RunOutcome>) {
    let start = Instant::now();
    let (model, optim) = init::<B>(parent, corpus, device, true);
    let first = branches
        .iter()
        .map(|b| b.branch_step.min(parent.data.steps))
        .min()
        .unwrap_or(0);
    let (mut model, mut optim, prior) = resume(ckpt, &parent.id, first, model, optim, device);
    if prior.step > 0 {
        on_step.resumed(&prior.curve);
    }
    let mut order: Vec<usize> = (0..branches.len()).collect();
    order.sort_by_key(|&i| branches[i].branch_step);
    let mut outs: Vec<Option<RunOutcome>> = vec![None; branches.len()];
    let mut stable = Segment {
        status: Status::Ok,
        last_loss: prior.last_loss,
        steps_done: prior.step,
        train_time: prior.train_time,
        curve: prior.curve.clone(),
        eval_by_position: Vec::new(),
    };
    for &i in &order {
        let b = branches[i];
        let to = b.branch_step.min(parent.data.steps);
        if stable.status == Status::Ok && stable.steps_done < to {
            let before = stable.meta(&parent.id, prior.wall_s);
            let (m, seg) = run_steps(
                model,
                &mut optim,
                parent,
                stable.steps_done,
                to,
                corpus,
                device,
                on_step,
                &mut |m, o, seg| save_point(ckpt, &parent.id, m, o, seg, &before, start),
            );
            model = m;
            stable.append(seg);
        }
        let out = if stable.status == Status::Ok {
            let mut branch_optim = optim.clone();
            cool_down(
                model.clone(),
                &mut branch_optim,
                b,
                to,
                corpus,
                device,
                on_step,
            )
        } else {
            diverged_before(b, to)
        };
        on_branch(i, &out);
        outs[i] = Some(out);
    }
    let parent_out = outcome(
        stable,
        parent,
        0,
        prior.wall_s + start.elapsed().as_secs_f64(),
    );
    (parent_out, outs.into_iter().map(|o| o.unwrap()).collect())
}

impl Segment {
    /// Nothing trained yet.
    fn fresh() -> Segment {
        Segment {
            status: Status::Ok,
            last_loss: f64::NAN,
            steps_done: 0,
            train_time: 0.0,
            curve: Vec::new(),
            eval_by_position: Vec::new(),
        }
    }

    /// The loss at `step` (before its update, at `lr`) was not finite: the run ends
    /// `diverged`, that loss its curve's last row.
    fn diverge_at(&mut self, step: usize, tokens_per_step: u64, lr: f64, loss: f64) {
        self.status = Status::Diverged;
        self.curve.push(CurveRow {
            step,
            tokens: step as u64 * tokens_per_step,
            lr,
            train_loss: loss,
            eval_loss: None,
            predicted: None,
        });
    }

    /// The checkpoint state of run `id` at the end of this segment.
    fn meta(&self, id: &str, wall_s: f64) -> CheckpointMeta {
        CheckpointMeta {
            run_id: id.to_string(),
            step: self.steps_done,
            train_time: self.train_time,
            wall_s,
            last_loss: self.last_loss,
            curve: self.curve.clone(),
        }
    }

    /// Continue this segment with the next one (the stable phase, branch point by branch point).
    fn append(&mut self, next: Segment) {
        self.status = next.status;
        self.last_loss = next.last_loss;
        self.steps_done = next.steps_done;
        self.train_time += next.train_time;
        self.curve.extend(next.curve);
    }
}

/// The outcome of a branch whose stable phase diverged before its branch point `to`.
fn diverged_before(branch: &RunPlan, to: usize) -> RunOutcome {
    let seg = Segment {
        status: Status::Diverged,
        last_loss: f64::NAN,
        steps_done: to,
        train_time: 0.0,
        curve: Vec::new(),
        eval_by_position: Vec::new(),
    };
    outcome(seg, branch, to, 0.0)
}

/// A branch's cooldown: from the stable model at step `from` to the branch's last step.
fn cool_down<B: AutodiffBackend, O: Optimizer<Lm<B>, B>>(
    model: Lm<B>,
    optim: &mut O,
    branch: &RunPlan,
    from: usize,
    corpus: &Corpus,
    device: &B::Device,
    on_step: &mut dyn StepObserver,
) -> RunOutcome {
    let t0 = Instant::now();
    let (_, seg) = run_steps(
        model,
        optim,
        branch,
        from,
        branch.data.steps,
        corpus,
        device,
        on_step,
        &mut |_, _, _| {},
    );
    outcome(seg, branch, from, t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{self, CorpusSource};
    use crate::plan::Shape;
    use crate::spec::Schedule;
    use burn::backend::{flex::FlexDevice, Autodiff, Flex};

    #[test]
    fn training_runs_on_a_pool_thread_with_or_without_a_worker_pool() {
        // Off the pool, each parallel op of a step would be handed over and waited for.
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test starts off the pool"
        );
        let on_global = on_pool(None, rayon::current_thread_index);
        assert!(
            on_global.is_some(),
            "run-one, --workers 1 and plan --measure train on the global pool"
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let inside = on_pool(Some(&pool), || {
            (rayon::current_thread_index(), pool.current_thread_index())
        });
        assert_eq!(inside, (Some(0), Some(0)), "a worker's own pool");
    }

    fn plan(lr: f64, steps: usize) -> RunPlan {
        let mut r = RunPlan::new(Shape::new(16, 1, 2, None), 256, 16, 4, steps);
        r.data.seed = 1;
        r.data.eval_interval = 5;
        r.optim = crate::plan::OptimSettings {
            lr,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay: 0.0,
            grad_clip: 0.0,
        };
        r.schedule.kind = Schedule::Constant;
        r.schedule.warmup_steps = 1;
        r.schedule.min_lr_ratio = 1.0;
        r.point_id = "p".into();
        r
    }

    /// The built-in language with two topics, context 16, 64 eval tokens.
    fn two_topic_corpus() -> corpus::Corpus {
        let lang = corpus::LangKnobs {
            topics: 2,
            ..Default::default()
        };
        corpus::load(&CorpusSource::Builtin { seed: 1, lang }, 16, 64, 0.05).unwrap()
    }

    /// A run in bf16 or f16 computes in that type (its logits differ from f32's by that type's
    /// rounding), while its gradients land on the f32 master weights, which stay f32.
    #[test]
    fn half_precision_computes_in_half_and_keeps_f32_master_weights() {
        use burn::module::AutodiffModule;
        type B = Autodiff<Flex>;
        let c = two_topic_corpus();
        let run = plan(1e-2, 4);
        let model: Lm<B> = fresh_model::<B>(&run, &c, &FlexDevice, true);
        let (x, y) = batch::<B>(&run, &mut c.train.reader(), 0, &FlexDevice);
        let logits = |m: &Lm<B>| -> Vec<f32> {
            let l = m.valid().forward(x.clone().inner());
            crate::lm::in_f32(l)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap()
        };
        let full = logits(&model);
        for (precision, lo, hi) in [(Precision::Bf16, 1e-4, 0.1), (Precision::F16, 1e-6, 0.02)] {
            let half = at_precision(&model, precision);
            let d = full
                .iter()
                .zip(logits(&half))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                d > lo && d < hi,
                "{precision:?}: logits differ from f32 by {d}"
            );
            let grads =
                GradientsParams::from_grads(half.loss(x.clone(), y.clone()).backward(), &model);
            let mut sq = GradSq::<B> {
                grads: &grads,
                parts: Vec::new(),
            };
            model.visit(&mut sq);
            assert!(
                !sq.parts.is_empty(),
                "{precision:?}: no gradient reached the master weights"
            );
            for g in &sq.parts {
                assert_eq!(
                    g.dtype(),
                    DType::F32,
                    "{precision:?}: master gradients in f32"
                );
            }
        }
        let out = train_run::<B>(&plan(1e-2, 30), &c, &FlexDevice, &mut |_| {});
        let mut half_run = plan(1e-2, 30);
        half_run.precision = Precision::Bf16;
        let half = train_run::<B>(&half_run, &c, &FlexDevice, &mut |_| {});
        assert!(
            half.final_train_loss < half.curve[0].train_loss - 1.0,
            "bf16 loss fell"
        );
        assert!(
            half.final_train_loss != out.final_train_loss
                && (half.eval_loss - out.eval_loss).abs() < 0.05 * out.eval_loss,
            "bf16 eval {} vs f32 {}",
            half.eval_loss,
            out.eval_loss
        );
    }

    #[test]
    fn exploding_lr_is_reported_as_diverged() {
        let c = two_topic_corpus();
        let out = train_run::<Autodiff<Flex>>(&plan(1e30, 20), &c, &FlexDevice, &mut |_| {});
        assert_eq!(out.status, Status::Diverged);
        assert!(out.eval_loss.is_nan());
    }

    #[test]
    fn global_clip_keeps_training_stable_and_loss_falls() {
        let c = two_topic_corpus();
        let mut p = plan(1e-2, 60);
        p.optim.grad_clip = 1.0;
        let out = train_run::<Autodiff<Flex>>(&p, &c, &FlexDevice, &mut |_| {});
        assert_eq!(out.status, Status::Ok);
        assert!(out.final_train_loss < out.curve[0].train_loss - 1.0);
        assert!(out.eval_loss.is_finite());
    }
}
