//! Run packing: several runs of one Transformer shape trained at once as one batched model.
//!
//! Owns the packed GPT ([`PackedGpt`]: every parameter of [`Gpt`] stacked along a leading run
//! axis R), its forward pass (for each run the computation of [`Gpt::forward`]: per-run
//! weights through batched matmuls, the run axis folded into the batch for attention), the
//! per-run AdamW and global-norm clip ([`PackedAdamW`]), and the packed training loop
//! ([`train_packed`]). Each run keeps what makes it itself: its initialisation (drawn exactly
//! as when it trains alone), its data order, its LR schedule, weight decay and clip, its
//! divergence and its evals. The runs of a pack share shape, context, batch size, step count,
//! eval interval, Adam's betas and precision ([`PackKey`]). Results equal training the runs one by one
//! within float tolerance (the tests). Packs do not prune; they checkpoint as one: a pack's
//! stacked model, optimizer and each run's progress in one file ([`PackProgress`]), from
//! which a killed pack resumes.

use std::collections::HashMap;
use std::time::Instant;

use crate::ops::{causal_attention, gelu, log_softmax, merge_heads, split_heads};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::embedding;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    record_bytes, record_from_bytes, split_parts, write_parts, Checkpointing, PackProgress,
    PACK_MAGIC,
};
use super::ADAM_EPSILON;
use super::{
    at_precision, batch, eval_chunks, fresh_model, outcome, EvalLoss, Segment, StepInfo,
    StepObserver,
};
use crate::corpus::Corpus;
use crate::lm::{in_f32, Lm};
use crate::model::{div_mult, Family, Gpt, Shape};
use crate::plan::RunPlan;
use crate::record::{CurveRow, RunOutcome, Status};

/// What the runs of one pack must share: runs with equal keys can be packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackKey {
    shape: Shape,
    context: usize,
    batch_size: usize,
    steps: usize,
    eval_interval: usize,
    betas: (u64, u64),
    precision: crate::spec::Precision,
}

impl PackKey {
    /// The key of a run, or None when it cannot be packed (not a Transformer, or a branch).
    pub fn of(run: &RunPlan) -> Option<PackKey> {
        (run.shape.family == Family::Transformer && run.parent.is_none()).then_some(PackKey {
            shape: run.shape,
            context: run.data.context,
            batch_size: run.data.batch_size,
            steps: run.data.steps,
            eval_interval: run.data.eval_interval,
            betas: (run.optim.beta1.to_bits(), run.optim.beta2.to_bits()),
            precision: run.precision,
        })
    }
}

/// LayerNorm's ε (burn's `LayerNormConfig` default, which the single-run model uses).
const LN_EPS: f64 = 1e-5;

/// A parameter stacked from one tensor per run, `[R, ...]`, as a fresh leaf.
fn stacked<B: Backend, const D: usize, const D2: usize>(
    parts: Vec<Tensor<B, D>>,
) -> Param<Tensor<B, D2>> {
    Param::from_tensor(Tensor::stack::<D2>(parts, 0).detach())
}

/// One Linear per run: weight `[R, d_in, d_out]`, bias `[R, 1, d_out]`.
#[derive(Module, Debug)]
struct PackedLinear<B: Backend> {
    w: Param<Tensor<B, 3>>,
    b: Param<Tensor<B, 3>>,
}

impl<B: Backend> PackedLinear<B> {
    fn stack(ls: &[&Linear<B>]) -> Self {
        let bias = |l: &Linear<B>| l.bias.as_ref().expect("GPT linears have biases").val();
        PackedLinear {
            w: stacked(ls.iter().map(|l| l.weight.val()).collect()),
            b: stacked(ls.iter().map(|l| bias(l).unsqueeze::<2>()).collect()),
        }
    }

    /// `[R, n, d_in]` → `[R, n, d_out]`.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let n = x.dims()[1];
        x.matmul(self.w.val()) + per_row(self.b.val(), 1, n)
    }
}

/// One LayerNorm per run: gain and bias `[R, 1, d]`.
#[derive(Module, Debug)]
struct PackedNorm<B: Backend> {
    g: Param<Tensor<B, 3>>,
    b: Param<Tensor<B, 3>>,
}

impl<B: Backend> PackedNorm<B> {
    fn stack(ls: &[&LayerNorm<B>]) -> Self {
        let beta = |l: &LayerNorm<B>| l.beta.as_ref().expect("LayerNorm has a bias").val();
        PackedNorm {
            g: stacked(ls.iter().map(|l| l.gamma.val().unsqueeze::<2>()).collect()),
            b: stacked(ls.iter().map(|l| beta(l).unsqueeze::<2>()).collect()),
        }
    }

    /// Normalise `[R, n, d]` over d, then each run's gain and bias.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let n = x.dims()[1];
        let centered = x.clone() - x.mean_dim(2);
        let var = (centered.clone() * centered.clone()).mean_dim(2); // [R, n, 1]
        centered / var.add_scalar(LN_EPS).sqrt() * per_row(self.g.val(), 1, n)
            + per_row(self.b.val(), 1, n)
    }
}

/// On the CPU backend, each run's row (size 1 along `dim`) repeated `n` times along it; on
/// the others the row itself, left to broadcast. The values are the same, but burn-flex's
/// broadcast fast paths cover a row shared by every outer index, not one per run: its
/// elementwise ops then walk a strided iterator element by element (measured: ~15% of a
/// pack's step). The GPU backends broadcast in their kernels, where a copy would only add a
/// launch.
fn per_row<B: Backend, const D: usize>(row: Tensor<B, D>, dim: usize, n: usize) -> Tensor<B, D> {
    if B::name(&row.device()).contains("flex") {
        row.repeat_dim(dim, n)
    } else {
        row
    }
}

/// One Transformer block per run (the layout of `model::Block`).
#[derive(Module, Debug)]
struct PackedBlock<B: Backend> {
    ln1: PackedNorm<B>,
    qkv: PackedLinear<B>,
    proj: PackedLinear<B>,
    ln2: PackedNorm<B>,
    fc: PackedLinear<B>,
    fc_out: PackedLinear<B>,
}

impl<B: Backend> PackedBlock<B> {
    /// `x`: `[R, b·t, c]` → `[R, b·t, c]`; attention runs over the R·b sequences at once.
    fn forward(&self, x: Tensor<B, 3>, b: usize, t: usize, n_head: usize, m: f64) -> Tensor<B, 3> {
        let [r, _, c] = x.dims();
        let (rb, h) = (r * b, n_head);
        let qkv = self
            .qkv
            .forward(div_mult(self.ln1.forward(x.clone()), m))
            .reshape([rb, t, 3 * c]);
        let heads = |i: usize| split_heads(qkv.clone(), i, h); // [R·b, h, t, hd]
        let q = div_mult(heads(0), m.sqrt());
        let y = merge_heads(causal_attention(q, heads(1), heads(2))).reshape([r, b * t, c]);
        let x = x + self.proj.forward(div_mult(y, m));
        let up = self.fc.forward(div_mult(self.ln2.forward(x.clone()), m)); // [R, b·t, d_ff]
        x + self.fc_out.forward(div_mult(gelu(up), m))
    }
}

/// R GPTs of one shape as one module: token embeddings `[R, V, d]`, positions `[R, ctx, d]`,
/// blocks and final norm stacked the same way; the head is tied to the token embedding.
#[derive(Module, Debug)]
pub struct PackedGpt<B: Backend> {
    wte: Param<Tensor<B, 3>>,
    wpe: Param<Tensor<B, 3>>,
    blocks: Vec<PackedBlock<B>>,
    ln_f: PackedNorm<B>,
    n_head: usize,
    width_mult: f64,
}

impl<B: Backend> PackedGpt<B> {
    /// Stack single-run models of one shape (run k is `models[k]`).
    pub fn stack(models: &[Gpt<B>]) -> Self {
        let block = |i: usize| {
            let bs: Vec<_> = models.iter().map(|m| &m.blocks[i]).collect();
            PackedBlock {
                ln1: PackedNorm::stack(&bs.iter().map(|b| &b.ln1).collect::<Vec<_>>()),
                qkv: PackedLinear::stack(&bs.iter().map(|b| &b.qkv).collect::<Vec<_>>()),
                proj: PackedLinear::stack(&bs.iter().map(|b| &b.proj).collect::<Vec<_>>()),
                ln2: PackedNorm::stack(&bs.iter().map(|b| &b.ln2).collect::<Vec<_>>()),
                fc: PackedLinear::stack(&bs.iter().map(|b| &b.fc).collect::<Vec<_>>()),
                fc_out: PackedLinear::stack(&bs.iter().map(|b| &b.fc_out).collect::<Vec<_>>()),
            }
        };
        let (n_head, width_mult) = models[0].n_head_and_mult();
        PackedGpt {
            wte: stacked(models.iter().map(|m| m.wte.weight.val()).collect()),
            wpe: stacked(models.iter().map(|m| m.wpe.weight.val()).collect()),
            blocks: (0..models[0].blocks.len()).map(block).collect(),
            ln_f: PackedNorm::stack(&models.iter().map(|m| &m.ln_f).collect::<Vec<_>>()),
            n_head,
            width_mult,
        }
    }

    /// Logits `[R, b·t, V]` for token ids `[R, b, t]` (run k reads row k).
    fn forward(&self, idx: Tensor<B, 3, Int>) -> Tensor<B, 3> {
        let [r, b, t] = idx.dims();
        let [_, v, d] = self.wte.val().dims();
        // Run k's ids index rows k·V.. of the R tables laid end to end.
        let offsets = Tensor::<B, 1, Int>::arange(0..r as i64, &idx.device())
            .mul_scalar(v as i64)
            .reshape([r, 1, 1]);
        let rows = (idx + offsets).reshape([r * b, t]);
        let tokens = embedding(self.wte.val().reshape([r * v, d]), rows).reshape([r, b, t, d]);
        let pos = self
            .wpe
            .val()
            .slice([0..r, 0..t, 0..d])
            .reshape([r, 1, t, d]);
        let pos = per_row(pos, 1, b); // [R, b, t, d] on the CPU backend
        let mut x = (tokens + pos).reshape([r, b * t, d]);
        for block in &self.blocks {
            x = block.forward(x, b, t, self.n_head, self.width_mult);
        }
        let x = self.ln_f.forward(x);
        // μP's shared readout: logits / m.
        div_mult(x.matmul(self.wte.val().swap_dims(1, 2)), self.width_mult)
    }

    /// Cross-entropy of each target token, `[R, b, t]`.
    fn token_losses(&self, idx: Tensor<B, 3, Int>, targets: Tensor<B, 3, Int>) -> Tensor<B, 3> {
        let [r, b, t] = targets.dims();
        log_softmax(in_f32(self.forward(idx)), 2)
            .gather(2, targets.reshape([r, b * t, 1]))
            .reshape([r, b, t])
            .neg()
    }

    /// Each run's mean next-token loss, `[R]`.
    fn losses(&self, idx: Tensor<B, 3, Int>, targets: Tensor<B, 3, Int>) -> Tensor<B, 1> {
        let [r, b, t] = targets.dims();
        self.token_losses(idx, targets)
            .reshape([r, b * t])
            .mean_dim(1)
            .reshape([r])
    }

    fn runs(&self) -> usize {
        self.wte.val().dims()[0]
    }

    /// Each run's [`EvalLoss`] on the corpus's eval windows (every run reads the same ones).
    fn eval_losses(&self, corpus: &Corpus, device: &B::Device) -> Vec<EvalLoss> {
        let (r, t) = (self.runs(), corpus.context);
        let mut sums = vec![vec![0.0f64; t]; r];
        for (x, y) in eval_chunks::<B>(corpus, device) {
            let [m, _] = x.dims();
            let rep = |z: Tensor<B, 2, Int>| z.unsqueeze::<3>().expand([r, m, t]);
            let per: Vec<f32> = self
                .token_losses(rep(x), rep(y))
                .sum_dim(1) // [R, 1, t]
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 eval losses");
            for (k, run_sums) in sums.iter_mut().enumerate() {
                for (s, v) in run_sums.iter_mut().zip(&per[k * t..(k + 1) * t]) {
                    *s += *v as f64;
                }
            }
        }
        let n = corpus.n_eval_windows();
        sums.iter().map(|s| EvalLoss::from_sums(s, n)).collect()
    }
}

/// Adam's moments of one stacked parameter, flattened to `[R, rest]`.
struct Moments<B: Backend> {
    m: Tensor<B, 2>,
    v: Tensor<B, 2>,
    time: i32,
}

/// AdamW (burn's update rule, ε = [`ADAM_EPSILON`]) with each run's LR, weight decay and
/// global-norm clip, over a [`PackedGpt`]'s stacked parameters.
pub struct PackedAdamW<B: AutodiffBackend> {
    beta1: f32,
    beta2: f32,
    state: HashMap<ParamId, Moments<B::InnerBackend>>,
}

/// Each run's sum of squared gradients, one `[R, 1]` part per parameter.
struct RunSquares<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    parts: Vec<Tensor<B::InnerBackend, 2>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for RunSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let r = g.dims()[0];
            self.parts
                .push(g.powi_scalar(2).reshape([r as i32, -1]).sum_dim(1));
        }
    }
}

/// One AdamW step of every parameter: `scale` (the clip), `lr` and `decay` (1 − lr·λ) are
/// per-run columns `[R, 1]`.
struct Update<'a, B: AutodiffBackend> {
    opt: &'a mut PackedAdamW<B>,
    grads: &'a B::Gradients,
    scale: Tensor<B::InnerBackend, 2>,
    lr: Tensor<B::InnerBackend, 2>,
    decay: Tensor<B::InnerBackend, 2>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Update<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(g) = tensor.grad(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let dims = tensor.dims();
        let flat = [dims[0], dims.iter().skip(1).product()];
        let g = g.reshape(flat) * self.scale.clone();
        let (b1, b2) = (self.opt.beta1, self.opt.beta2);
        let state = match self.opt.state.remove(&id) {
            Some(s) => Moments {
                m: s.m.mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1)),
                v: s.v.mul_scalar(b2).add(g.square().mul_scalar(1.0 - b2)),
                time: s.time + 1,
            },
            None => Moments {
                m: g.clone().mul_scalar(1.0 - b1),
                v: g.square().mul_scalar(1.0 - b2),
                time: 1,
            },
        };
        let m_hat = state.m.clone().div_scalar(1f32 - b1.powi(state.time));
        let v_hat = state.v.clone().div_scalar(1f32 - b2.powi(state.time));
        let delta = m_hat.div(v_hat.sqrt().add_scalar(ADAM_EPSILON));
        self.opt.state.insert(id, state);
        let p = tensor.inner().reshape(flat) * self.decay.clone() - delta * self.lr.clone();
        let p = Tensor::<B, D>::from_inner(p.reshape(dims)).require_grad();
        Param::from_mapped_value(id, p, mapper)
    }
}

/// One parameter's Adam moments in a checkpoint: its id (`ParamId` serialized), shape and
/// step count; the values follow the header as raw little-endian f32, m then v.
#[derive(Serialize, Deserialize)]
struct SavedMoments {
    id: String,
    dims: [usize; 2],
    time: i32,
}

impl<B: AutodiffBackend> PackedAdamW<B> {
    /// The moments of every parameter (by parameter id): the length of a MessagePack header
    /// of [`SavedMoments`] (u64, little-endian), the header, then each parameter's m and v.
    fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut ids: Vec<&ParamId> = self.state.keys().collect();
        ids.sort_by_key(|id| id.serialize());
        let header: Vec<SavedMoments> = ids
            .iter()
            .map(|id| {
                let s = &self.state[*id];
                SavedMoments {
                    id: id.serialize(),
                    dims: s.m.dims(),
                    time: s.time,
                }
            })
            .collect();
        let head = rmp_serde::to_vec(&header)?;
        let mut out = (head.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&head);
        for id in ids {
            let s = &self.state[id];
            for t in [&s.m, &s.v] {
                let v: Vec<f32> = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        Ok(out)
    }

    /// Take the moments [`Self::to_bytes`] wrote (the model's parameters keep their ids
    /// through its record).
    fn load_bytes(&mut self, bytes: &[u8], device: &B::Device) -> anyhow::Result<()> {
        let truncated = || anyhow::anyhow!("truncated optimizer state");
        let n = u64::from_le_bytes(bytes.get(..8).ok_or_else(truncated)?.try_into()?) as usize;
        let header: Vec<SavedMoments> =
            rmp_serde::from_slice(bytes.get(8..8 + n).ok_or_else(truncated)?)?;
        let mut at = 8 + n;
        let mut take = |dims: [usize; 2]| -> anyhow::Result<Tensor<B::InnerBackend, 2>> {
            let len = dims[0] * dims[1] * 4;
            let raw = bytes.get(at..at + len).ok_or_else(truncated)?;
            at += len;
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Ok(Tensor::from_data(TensorData::new(v, dims), device))
        };
        for s in header {
            let id = ParamId::try_deserialize(&s.id)
                .ok_or_else(|| anyhow::anyhow!("bad parameter id {:?}", s.id))?;
            let moments = Moments {
                m: take(s.dims)?,
                v: take(s.dims)?,
                time: s.time,
            };
            self.state.insert(id, moments);
        }
        anyhow::ensure!(at == bytes.len(), "trailing bytes in the optimizer state");
        Ok(())
    }

    pub fn new(beta1: f64, beta2: f64) -> Self {
        PackedAdamW {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            state: HashMap::new(),
        }
    }

    /// Clip each run's gradient to its global norm `clip[k]` (0: no clip; as
    /// `clip_global_norm`), then one AdamW step at `lr[k]` with decoupled weight decay
    /// `weight_decay[k]`. Returns the model and each run's gradient norm before clipping.
    pub fn step(
        &mut self,
        model: PackedGpt<B>,
        grads: &B::Gradients,
        lr: &[f64],
        weight_decay: &[f64],
        clip: &[f64],
    ) -> (PackedGpt<B>, Vec<f64>) {
        let r = lr.len();
        let mut sq = RunSquares::<B> {
            grads,
            parts: Vec::new(),
        };
        model.visit(&mut sq);
        let totals: Vec<f32> = Tensor::cat(sq.parts, 1)
            .sum_dim(1)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 norms");
        let norms: Vec<f64> = totals.iter().map(|&s| (s as f64).sqrt()).collect();
        let scale: Vec<f32> = norms
            .iter()
            .zip(clip)
            .map(|(&n, &c)| {
                if c > 0.0 && n > c && n.is_finite() {
                    (c / (n + 1e-6)) as f32
                } else {
                    1.0
                }
            })
            .collect();
        let device = model.wte.val().device();
        let column = |v: Vec<f32>| {
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(v, [r]), &device)
                .reshape([r, 1])
        };
        let decay = lr
            .iter()
            .zip(weight_decay)
            .map(|(l, w)| (1.0 - l * w) as f32);
        let mut update = Update::<B> {
            opt: self,
            grads,
            scale: column(scale),
            lr: column(lr.iter().map(|&l| l as f32).collect()),
            decay: column(decay.collect()),
        };
        (model.map(&mut update), norms)
    }
}

/// Whether the runs can train as one pack (equal [`PackKey`]s, at least one run).
pub fn packable(runs: &[&RunPlan]) -> bool {
    let key = runs.first().and_then(|r| PackKey::of(r));
    key.is_some() && runs.iter().all(|r| PackKey::of(r) == key)
}

/// Train `runs` (a packable set, [`packable`]) as one pack; one outcome per run, in order.
/// The observer sees the pack's steps (its mean training loss over the live runs and the
/// pack's tokens/s); it is never asked to predict or prune. With `ckpt`, the pack resumes from
/// its checkpoint (the same runs in the same order) and saves one every `every` steps (the
/// executor deletes it once the results are stored): as a single run, the resumed pack
/// continues the exact computation.
pub fn train_packed<B: AutodiffBackend>(
    runs: &[&RunPlan],
    corpus: &Corpus,
    device: &B::Device,
    ckpt: Option<&Checkpointing>,
    on_step: &mut dyn StepObserver,
) -> Vec<RunOutcome> {
    assert!(
        packable(runs),
        "train_packed: runs that cannot share a pack"
    );
    let start = Instant::now();
    let (mut model, mut optim, mut prog) = resume_pack::<B>(ckpt, runs, corpus, device);
    let mut readers: Vec<_> = runs.iter().map(|_| corpus.train.reader()).collect();
    let steps = runs[0].data.steps;
    for step in prog.step..steps {
        let t0 = Instant::now();
        let (losses, vals) = pack_losses(&model, runs, &mut readers, step, device);
        let lrs: Vec<f64> = runs.iter().map(|r| r.lr_at(step)).collect();
        let live = prog.live_after_losses(runs, step, &lrs, &vals);
        if live.is_empty() {
            break;
        }
        let norms;
        (model, norms) = update(model, &mut optim, runs, losses, &live, &lrs, device);
        prog.train_time += t0.elapsed().as_secs_f64();
        for &k in &live {
            prog.segs[k].stepped(step, norms[k], vals[k] as f64, prog.train_time);
        }
        let live_losses: Vec<f64> = live.iter().map(|&k| vals[k] as f64).collect();
        let tokens_per_step = (runs[0].data.batch_size * runs[0].data.context) as f64;
        on_step.step(StepInfo {
            step: step + 1,
            steps,
            train_loss: live_losses.iter().sum::<f64>() / live_losses.len() as f64,
            tokens_per_s: ((step + 1) * live.len()) as f64 * tokens_per_step
                / prog.train_time.max(1e-9),
        });
        log_pack_step(&model, runs, &mut prog.segs, step + 1, &lrs, corpus, device);
        prog.step = step + 1;
        save_pack_point(ckpt, runs, &model, &optim, &prog, start);
    }
    let wall_s = prog.wall_s + start.elapsed().as_secs_f64();
    prog.segs
        .into_iter()
        .zip(runs)
        .map(|(seg, r)| outcome(seg, r, 0, wall_s))
        .collect()
}

/// The pack's backward pass over its live runs' losses and one AdamW step. A run that has
/// stopped trains at LR 0 and out of the loss: no update reaches its parameters (NaN ones stay
/// NaN, confined to its own slices of the pack). Returns each run's gradient norm.
fn update<B: AutodiffBackend>(
    model: PackedGpt<B>,
    optim: &mut PackedAdamW<B>,
    runs: &[&RunPlan],
    losses: Tensor<B, 1>,
    live: &[usize],
    lrs: &[f64],
    device: &B::Device,
) -> (PackedGpt<B>, Vec<f64>) {
    let live_ids = TensorData::new(live.iter().map(|&k| k as i32).collect(), [live.len()]);
    let grads = losses
        .select(0, Tensor::from_data(live_ids, device))
        .sum()
        .backward();
    let lr: Vec<f64> = (0..runs.len())
        .map(|k| if live.contains(&k) { lrs[k] } else { 0.0 })
        .collect();
    let wd: Vec<f64> = runs.iter().map(|r| r.optim.weight_decay).collect();
    let clip: Vec<f64> = runs.iter().map(|r| r.optim.grad_clip).collect();
    optim.step(model, &grads, &lr, &wd, &clip)
}

impl PackProgress {
    /// Mark the runs whose loss at `step` is not finite as diverged (that loss their last
    /// row); the runs still training.
    fn live_after_losses(
        &mut self,
        runs: &[&RunPlan],
        step: usize,
        lrs: &[f64],
        vals: &[f32],
    ) -> Vec<usize> {
        let tokens_per_step = (runs[0].data.batch_size * runs[0].data.context) as u64;
        for (k, seg) in self.segs.iter_mut().enumerate() {
            if seg.status == Status::Ok && !vals[k].is_finite() {
                seg.diverge_at(step, tokens_per_step, lrs[k], vals[k] as f64);
            }
        }
        (0..runs.len())
            .filter(|&k| self.segs[k].status == Status::Ok)
            .collect()
    }
}

/// Save the pack's checkpoint when it has just reached a multiple of the interval (and is
/// not done).
fn save_pack_point<B: AutodiffBackend>(
    ckpt: Option<&Checkpointing>,
    runs: &[&RunPlan],
    model: &PackedGpt<B>,
    optim: &PackedAdamW<B>,
    prog: &PackProgress,
    start: Instant,
) {
    let Some(c) =
        ckpt.filter(|c| c.every > 0 && prog.step % c.every == 0 && prog.step < runs[0].data.steps)
    else {
        return;
    };
    let p = c.pack_path(&runs[0].id);
    let saved = PackProgress {
        wall_s: prog.wall_s + start.elapsed().as_secs_f64(),
        ..prog.clone()
    };
    let written = (|| -> anyhow::Result<()> {
        let meta = rmp_serde::to_vec_named(&saved)?;
        let m = record_bytes::<B, _>(model.clone().into_record())?;
        write_parts(&p, PACK_MAGIC, [&meta, &m, &optim.to_bytes()?])
    })();
    if let Err(e) = written {
        eprintln!("scalelab: could not write checkpoint {}: {e}", p.display());
    }
    crate::fsio::failpoint("checkpoint-saved");
}

/// The pack's fresh model, optimizer and progress, or those of its checkpoint when it has one
/// for exactly these runs, not past their end (otherwise it starts afresh, saying why).
fn resume_pack<B: AutodiffBackend>(
    ckpt: Option<&Checkpointing>,
    runs: &[&RunPlan],
    corpus: &Corpus,
    device: &B::Device,
) -> (PackedGpt<B>, PackedAdamW<B>, PackProgress) {
    let model = fresh_pack::<B>(runs, corpus, device);
    let optim = PackedAdamW::<B>::new(runs[0].optim.beta1, runs[0].optim.beta2);
    let fresh = PackProgress::fresh(runs.iter().map(|r| r.id.clone()).collect());
    let Some(p) = ckpt
        .map(|c| c.pack_path(&runs[0].id))
        .filter(|p| p.exists())
    else {
        return (model, optim, fresh);
    };
    // A damaged file must not fail the pack for good: a panic while loading is an unusable
    // checkpoint, as for a single run.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load_pack(&p, runs, model.clone(), device)
    }))
    .unwrap_or_else(|_| Err(anyhow::anyhow!("it could not be loaded")));
    match loaded {
        Ok((m, o, prog)) => {
            eprintln!(
                "scalelab: pack of {} runs ({} ...) resumes from its checkpoint at step {}",
                runs.len(),
                runs[0].id,
                prog.step
            );
            (m, o, prog)
        }
        Err(e) => {
            eprintln!(
                "scalelab: ignoring checkpoint {}: {e}; the pack starts afresh and replaces it at its first checkpoint",
                p.display()
            );
            (model, optim, fresh)
        }
    }
}

/// A pack checkpoint's model, optimizer and progress, when it holds exactly `runs`, in order,
/// and is not past their end.
fn load_pack<B: AutodiffBackend>(
    path: &std::path::Path,
    runs: &[&RunPlan],
    model: PackedGpt<B>,
    device: &B::Device,
) -> anyhow::Result<(PackedGpt<B>, PackedAdamW<B>, PackProgress)> {
    let bytes = std::fs::read(path)?;
    let [meta, m, o] = split_parts(&bytes, PACK_MAGIC)?;
    let prog: PackProgress = rmp_serde::from_slice(meta)?;
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    anyhow::ensure!(
        prog.run_ids == ids,
        "it holds runs [{}], this pack [{}]",
        prog.run_ids.join(", "),
        ids.join(", ")
    );
    anyhow::ensure!(
        prog.step < runs[0].data.steps,
        "it is at step {}, past the runs' {} steps",
        prog.step,
        runs[0].data.steps
    );
    let m = model.load_record(record_from_bytes::<B, _>(m, device)?);
    let mut optim = PackedAdamW::<B>::new(runs[0].optim.beta1, runs[0].optim.beta2);
    optim.load_bytes(o, device)?;
    Ok((m, optim, prog))
}

/// Each run's fresh model (drawn as when it trains alone), stacked into one pack.
fn fresh_pack<B: AutodiffBackend>(
    runs: &[&RunPlan],
    corpus: &Corpus,
    device: &B::Device,
) -> PackedGpt<B> {
    let singles: Vec<Gpt<B>> = runs
        .iter()
        .map(|r| match fresh_model::<B>(r, corpus, device, true) {
            Lm::Transformer(g) => g,
            _ => unreachable!("PackKey admits Transformers only"),
        })
        .collect();
    PackedGpt::stack(&singles)
}

/// Each run's training loss at `step` (its own batch, at the pack's precision): the `[R]`
/// tensor to differentiate and its values.
fn pack_losses<B: AutodiffBackend>(
    model: &PackedGpt<B>,
    runs: &[&RunPlan],
    readers: &mut [crate::corpus::StreamReader<'_>],
    step: usize,
    device: &B::Device,
) -> (Tensor<B, 1>, Vec<f32>) {
    let (xs, ys): (Vec<_>, Vec<_>) = runs
        .iter()
        .zip(readers.iter_mut())
        .map(|(r, reader)| batch::<B>(r, reader, step, device))
        .unzip();
    let losses =
        at_precision(model, runs[0].precision).losses(Tensor::stack(xs, 0), Tensor::stack(ys, 0));
    let vals = losses
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    (losses, vals)
}

impl Segment {
    /// A live run of a pack after the update of `step`: diverged when its gradient norm was
    /// not finite (as a single run, which stops before that update), else one step further.
    fn stepped(&mut self, step: usize, norm: f64, loss: f64, train_time: f64) {
        if !norm.is_finite() {
            self.status = Status::Diverged;
        } else {
            self.steps_done = step + 1;
            self.last_loss = loss;
            self.train_time = train_time;
        }
    }
}

/// After the pack's step `done`: a curve row for each run still training, with an eval of
/// every run when one is due (the runs share their eval interval and length).
fn log_pack_step<B: AutodiffBackend>(
    model: &PackedGpt<B>,
    runs: &[&RunPlan],
    segs: &mut [Segment],
    done: usize,
    lrs: &[f64],
    corpus: &Corpus,
    device: &B::Device,
) {
    let (steps, every) = (runs[0].data.steps, runs[0].data.eval_interval);
    let evals =
        (done % every == 0 || done == steps).then(|| model.valid().eval_losses(corpus, device));
    let tokens = done as u64 * (runs[0].data.batch_size * runs[0].data.context) as u64;
    for (k, seg) in segs.iter_mut().enumerate() {
        if seg.status != Status::Ok || seg.steps_done != done {
            continue;
        }
        let eval = evals.as_ref().map(|e| e[k].clone());
        seg.curve.push(CurveRow {
            step: done,
            tokens,
            lr: lrs[k],
            train_loss: seg.last_loss,
            eval_loss: eval.as_ref().map(|e| e.mean),
            predicted: None,
        });
        if let Some(e) = eval {
            seg.eval_by_position = e.by_position;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{self, CorpusSource};
    use crate::model::Parametrization;
    use crate::spec::Schedule;
    use crate::train::checkpoint::{pack_progress, packed_progress};
    use crate::train::train_run;
    use burn::backend::{flex::FlexDevice, Autodiff, Flex};

    type B = Autodiff<Flex>;

    fn corpus() -> Corpus {
        let lang = corpus::LangKnobs {
            topics: 2,
            ..Default::default()
        };
        corpus::load(&CorpusSource::Builtin { seed: 1, lang }, 16, 64, 0.05).unwrap()
    }

    /// A run of `shape` with its own seed, LR, clip and weight decay (cosine, warmup 3).
    fn run(shape: Shape, seed: u64, lr: f64, clip: f64, wd: f64) -> RunPlan {
        let mut r = RunPlan::new(shape, 256, 16, 4, 24);
        r.id = format!("r{seed}");
        r.data.seed = seed;
        r.data.eval_interval = 8;
        r.data.order = crate::spec::DataOrder::ShuffledPerSeed;
        r.optim = crate::plan::OptimSettings {
            lr,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay: wd,
            grad_clip: clip,
        };
        r.schedule.kind = Schedule::Cosine;
        r.schedule.warmup_steps = 3;
        r.schedule.min_lr_ratio = 0.1;
        r
    }

    /// Each run trained in one pack and alone: same status, eval losses (every eval of the
    /// curve, and by position) and training losses within `tol` (relative).
    fn assert_pack_equals_singles(runs: &[RunPlan], tol: f64) {
        let c = corpus();
        let refs: Vec<&RunPlan> = runs.iter().collect();
        assert!(packable(&refs));
        let mut steps_seen = 0;
        let packed = train_packed::<B>(&refs, &c, &FlexDevice, None, &mut |_: StepInfo| {
            steps_seen += 1
        });
        assert_eq!(steps_seen, runs[0].data.steps);
        for (r, p) in runs.iter().zip(&packed) {
            let single = train_run::<B>(r, &c, &FlexDevice, &mut |_| {});
            assert_eq!(p.status, single.status, "run {}", r.id);
            assert_eq!(p.steps_done, single.steps_done, "run {}", r.id);
            assert_eq!(p.curve.len(), single.curve.len(), "run {}", r.id);
            for (a, b) in p.curve.iter().zip(&single.curve) {
                assert_eq!((a.step, a.tokens), (b.step, b.tokens));
                let close = |x: f64, y: f64| (x - y).abs() <= tol * y.abs().max(1.0);
                assert!(
                    close(a.train_loss, b.train_loss)
                        || (a.train_loss.is_nan() && b.train_loss.is_nan()),
                    "run {} step {}: train loss packed {} alone {}",
                    r.id,
                    a.step,
                    a.train_loss,
                    b.train_loss
                );
                match (a.eval_loss, b.eval_loss) {
                    (Some(x), Some(y)) => {
                        assert!(close(x, y), "run {} step {}: eval {x} vs {y}", r.id, a.step)
                    }
                    (x, y) => assert_eq!(x.is_some(), y.is_some(), "evals at step {}", a.step),
                }
            }
            if single.status == Status::Ok {
                assert!(
                    single.eval_loss < single.curve[0].train_loss - 0.5,
                    "loss fell"
                );
                let d = p
                    .eval_loss_by_position
                    .iter()
                    .zip(&single.eval_loss_by_position)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(
                    d < 5.0 * tol,
                    "run {}: loss by position differs by {d}",
                    r.id
                );
            }
        }
    }

    #[test]
    fn a_pack_trains_each_run_as_it_would_train_alone() {
        let s = Shape::new(16, 2, 2, None);
        assert_pack_equals_singles(
            &[
                run(s, 1, 1e-2, 0.0, 0.0),
                run(s, 2, 3e-3, 0.5, 0.1), // the clip is active in most steps
                run(s, 3, 1e30, 1.0, 0.1), // diverges; the others go on
                run(s, 4, 2e-2, 1.0, 0.0),
            ],
            2e-4,
        );
    }

    /// A pack that leaves its checkpoint (step 21 of 24, as a pack killed after it would),
    /// then the same pack again: it resumes at step 21 and ends exactly as the pack
    /// trained without a break, the diverged run (NaN losses in its checkpointed curve)
    /// included; `status` reads each run's progress from the file.
    #[test]
    fn a_pack_resumed_from_its_checkpoint_ends_as_the_uninterrupted_pack() {
        let (c, s) = (corpus(), Shape::new(16, 2, 2, None));
        let runs = [
            run(s, 1, 1e-2, 0.0, 0.0),
            run(s, 3, 1e30, 1.0, 0.1), // diverges at once
            run(s, 4, 2e-2, 1.0, 0.0),
        ];
        let refs: Vec<&RunPlan> = runs.iter().collect();
        let whole = train_packed::<B>(&refs, &c, &FlexDevice, None, &mut |_: StepInfo| {});
        let dir = std::env::temp_dir().join(format!("scalelab-pack-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ck = Checkpointing {
            dir: dir.clone(),
            every: 7,
            keep: false,
        };
        train_packed::<B>(&refs, &c, &FlexDevice, Some(&ck), &mut |_: StepInfo| {});
        let path = ck.pack_path("r1");
        assert_eq!(
            pack_progress(&path).expect("a readable checkpoint").step,
            21
        );
        let progress = packed_progress(&dir);
        assert_eq!(progress["r1"].step, 21);
        assert_eq!(progress["r4"].curve.len(), 21);
        assert!(progress["r3"].step < 21, "the diverged run stopped early");
        let mut steps_seen = Vec::new();
        let resumed = train_packed::<B>(&refs, &c, &FlexDevice, Some(&ck), &mut |st: StepInfo| {
            steps_seen.push(st.step)
        });
        assert_eq!(steps_seen, vec![22, 23, 24], "resumed at step 21");
        for (a, b) in whole.iter().zip(&resumed) {
            assert_eq!((a.status, a.steps_done), (b.status, b.steps_done));
            assert_eq!(a.curve.len(), b.curve.len());
            for (x, y) in a.curve.iter().zip(&b.curve) {
                assert_eq!(
                    (x.step, x.eval_loss.is_some()),
                    (y.step, y.eval_loss.is_some())
                );
                assert_eq!(
                    x.train_loss.to_bits(),
                    y.train_loss.to_bits(),
                    "step {}",
                    x.step
                );
                assert_eq!(x.eval_loss.map(f64::to_bits), y.eval_loss.map(f64::to_bits));
            }
            assert_eq!(a.eval_loss_by_position, b.eval_loss_by_position);
        }
        assert_eq!(whole[0].status, Status::Ok);
        assert_eq!(whole[1].status, Status::Diverged);
        // A checkpoint of other runs is not resumed: the pack starts afresh. (The executor
        // deletes a pack's checkpoint once its results are stored; the trainer leaves it.)
        assert!(path.exists());
        let other: Vec<&RunPlan> = refs.iter().rev().copied().collect();
        std::fs::rename(&path, ck.pack_path("r4")).unwrap();
        let mut seen = 0;
        train_packed::<B>(&other, &c, &FlexDevice, Some(&ck), &mut |_: StepInfo| {
            seen += 1
        });
        assert_eq!(seen, 24, "runs in another order start afresh");
        // A damaged file is ignored, not a failed pack.
        let mut bytes = std::fs::read(ck.pack_path("r4")).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(ck.pack_path("r4"), bytes).unwrap();
        let mut seen = 0;
        train_packed::<B>(&other, &c, &FlexDevice, Some(&ck), &mut |_: StepInfo| {
            seen += 1
        });
        assert_eq!(seen, 24, "a truncated checkpoint: the pack starts afresh");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_mup_pack_trains_each_run_as_it_would_train_alone() {
        let s = Shape::new(32, 1, 2, None).with_param(Parametrization::Mup { base_width: 16 });
        assert_pack_equals_singles(
            &[run(s, 5, 1e-2, 1.0, 0.1), run(s, 6, 5e-3, 1.0, 0.1)],
            2e-4,
        );
    }

    #[test]
    fn a_bf16_pack_trains_each_run_as_it_would_train_alone() {
        let s = Shape::new(16, 1, 2, None);
        let runs: Vec<RunPlan> = [(7, 1e-2), (8, 5e-3)]
            .into_iter()
            .map(|(seed, lr)| RunPlan {
                precision: crate::spec::Precision::Bf16,
                ..run(s, seed, lr, 1.0, 0.1)
            })
            .collect();
        // bf16 rounds at 2^-8: the pack's and the single run's kernels round in other places.
        assert_pack_equals_singles(&runs, 2e-3);
    }

    #[test]
    fn runs_that_differ_in_shape_steps_or_family_do_not_pack() {
        let s = Shape::new(16, 2, 2, None);
        let (a, b) = (run(s, 1, 1e-2, 0.0, 0.0), run(s, 2, 3e-3, 1.0, 0.1));
        assert!(
            packable(&[&a, &b]),
            "seeds, LRs, clips and decays may differ"
        );
        let mut longer = b.clone();
        longer.data.steps += 1;
        let wider = run(Shape::new(32, 2, 2, None), 2, 1e-2, 0.0, 0.0);
        let lstm = run(Shape::lstm(16, 2), 2, 1e-2, 0.0, 0.0);
        let half = RunPlan {
            precision: crate::spec::Precision::F16,
            ..b.clone()
        };
        for other in [&longer, &wider, &lstm, &half] {
            assert!(!packable(&[&a, other]));
        }
        assert!(!packable(&[]));
    }
}
