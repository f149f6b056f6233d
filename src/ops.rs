//! The model's ops as the model calls them: linear layers, GELU (exact, erf form),
//! log-softmax and causal self-attention. burn's, with shortcuts on the CPU backend in f32 that
//! keep results bit-identical.
//!
//! - Linear layers (`Flex`, `Autodiff<Flex>`): burn-flex multiplies a `[b, t, d_in]` input by
//!   the weight one batch row at a time (b small gemms, each output allocated zeroed and then
//!   copied to re-align it); here all b·t rows go through one gemm call, forward and for the
//!   input's gradient.
//! - GELU (`Flex`, `Autodiff<Flex>`): burn-flex computes it element by element on one thread,
//!   and its backward pass computes erf(x/√2) again (libm's scalar `erff` was ~14% of a main-job
//!   run's time). Here the forward pass runs split over the thread pool and keeps erf for the
//!   backward pass, which then needs only an exp (one more `[tokens, d_ff]` tensor per layer
//!   held until the backward pass: memory traded for time).
//! - log-softmax and attention (`Autodiff<Flex>`, i.e. training): burn builds both from tensor
//!   ops (its default `log_softmax`, its `attention_fallback`), and their exp recomputes
//!   exp(x) in the backward pass; here that exp keeps its output instead. Attention's causal
//!   mask is built contiguous (burn's is a broadcast view that every masked fill, forward and
//!   backward, first copies out element by element).
//! - exp and erf themselves (attention's and log-softmax's exp, GELU's erf and the exp of its
//!   backward pass): burn-flex calls the scalar function element by element on one thread;
//!   here [`vmath`]'s AVX-512 kernels, which return the scalar functions' values bit for bit,
//!   run split over the thread pool (attention's exp was ~11% and GELU ~12% of a small
//!   model's run).
//!
//! The arithmetic is burn's, op for op and expression for expression (burn-flex's kernels,
//! `erf_f32` and glibc's `expf` as [`vmath`] transcribes them, the same f32 operations in the
//! same order), so values and gradients are
//! bit-identical to burn's `Linear`, `gelu`, `log_softmax` and `attention` (tested below);
//! every other backend or float type calls burn's functions unchanged.

use std::any::Any;
use std::cell::RefCell;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexDevice;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::ops::{FloatTensorOps, ModuleOps};
use burn::tensor::TensorMetadata;
use burn::tensor::{activation, Bool, DType, Shape, Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

use crate::vmath;

/// Elements per parallel chunk: below this a tensor runs on one thread.
const CHUNK: usize = 1 << 14;

/// GELU(x) = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), elementwise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match f32_on::<Ad, B, D>(x) {
        Ok(x) => cast(autodiff_flex(x)),
        Err(x) => match f32_on::<Flex, B, D>(x) {
            Ok(x) => cast(flex(x)),
            Err(x) => activation::gelu(x),
        },
    }
}

/// log softmax(x) along `dim`, as burn-backend's default `log_softmax` composes it (every
/// burn backend here uses that default): with the exp's output kept for the backward pass on
/// `Autodiff<Flex>` in f32.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let x = match f32_on::<Ad, B, D>(x) {
        Ok(x) => x,
        Err(x) => return activation::log_softmax(x, dim),
    };
    let max = x.clone().detach().max_dim(dim);
    let shifted = x - max;
    let exp = tensor::<D>(exp_kept(primitive(shifted.clone())));
    cast(shifted - exp.sum_dim(dim).log())
}

/// Causal self-attention softmax(q·kᵀ/√hd)·v for q, k, v `[b, h, t, hd]`: `[b, h, t, hd]`.
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let burns = |q, k, v| {
        let opts = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        module::attention(q, k, v, None, None, opts)
    };
    match f32_on::<Ad, B, 4>(q) {
        Ok(q) => {
            let [q, k, v] = [q, cast(k), cast(v)].map(primitive);
            cast(tensor::<4>(attention_autodiff_flex(q, k, v)))
        }
        Err(q) => burns(q, k, v),
    }
}

/// burn-backend's `attention_fallback` (what `Autodiff<B>` runs) for a causal mask with no
/// bias, scale or softcap, op for op, but with a contiguous mask and a kept exp.
fn attention_autodiff_flex(
    q: FloatTensor<Ad>,
    k: FloatTensor<Ad>,
    v: FloatTensor<Ad>,
) -> FloatTensor<Ad> {
    let [b, h, t, hd] = q.shape().dims::<4>();
    let scale = 1.0 / (hd as f64).sqrt();
    let qk = Ad::float_matmul(q, Ad::float_transpose(k)); // [b, h, t, t]
    let scores = Ad::float_mul_scalar(qk, scale.into());
    let scores = Ad::float_mask_fill(scores, causal_mask(b, h, t), f32::NEG_INFINITY.into());
    let finfo = DType::F32.finfo().expect("a float type");
    let max = Ad::float_clamp_min(Ad::float_max_dim(scores.clone(), 3), finfo.min.into());
    let numerator = exp_kept(Ad::float_sub(scores, max));
    let sum = Ad::float_sum_dim(numerator.clone(), 3);
    let sum = Ad::float_clamp_min(sum, finfo.min_positive.into());
    Ad::float_matmul(Ad::float_div(numerator, sum), v)
}

type Ad = Autodiff<Flex>;

/// `[b, h, t, t]`, true above the diagonal (the future positions), stored whole; built once
/// per shape and thread and shared (a clone is a reference), so every layer and step of a run
/// reads one buffer.
fn causal_mask(b: usize, h: usize, t: usize) -> BoolTensor<Ad> {
    thread_local! {
        static LAST: RefCell<Option<([usize; 3], BoolTensor<Ad>)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((dims, mask)) if *dims == [b, h, t] => mask.clone(),
        _ => {
            let rows: Vec<bool> = (0..t * t).map(|i| i % t > i / t).collect();
            let whole = TensorData::new(rows.repeat(b * h), [b, h, t, t]);
            let mask = Tensor::<Ad, 4, Bool>::from_data(whole, &FlexDevice).into_primitive();
            *last = Some(([b, h, t], mask.clone()));
            mask
        }
    })
}

/// `x·W + b` for x `[b, t, d_in]`: burn's `Linear::forward`. On the CPU backend in f32 the
/// b·t rows go through one gemm call, forward and for x's gradient: burn-flex multiplies a
/// 3-d input by a 2-d weight batch row by batch row (b small gemms, each output allocated
/// zeroed and then copied to re-align it). Each output element is the same sum in the same
/// order (sizes where gemm would take another path for the folded product go to burn's
/// `Linear::forward`: [`folds_like_burn`]), so values and gradients are bit-identical to
/// burn's (tested); W's and b's gradients are burn's own functions.
pub fn linear<B: Backend>(x: Tensor<B, 3>, l: &Linear<B>) -> Tensor<B, 3> {
    let (w, bias) = (l.weight.val(), l.bias.as_ref().map(|b| b.val()));
    let Some(bias) = bias.filter(|b| b.dtype() == DType::F32 && w.dtype() == DType::F32) else {
        return l.forward(x);
    };
    let ([b, t, _], [k, n]) = (x.dims(), w.dims());
    if !folds_like_burn(b, t, k, n) {
        return l.forward(x);
    }
    match f32_on::<Ad, B, 3>(x) {
        Ok(x) => {
            let (w, bias) = (primitive::<2>(cast(w)), primitive::<1>(cast(bias)));
            cast(tensor::<3>(LinearOp::apply(primitive(x), w, bias)))
        }
        Err(x) => match f32_on::<Flex, B, 3>(x) {
            Ok(x) => {
                let [x, w] = [
                    x.into_primitive(),
                    cast::<_, Tensor<Flex, 2>>(w).into_primitive(),
                ]
                .map(|t| t.tensor());
                let bias = cast::<_, Tensor<Flex, 1>>(bias).into_primitive().tensor();
                let y = linear_flex(&contiguous(x), &contiguous(w), bias);
                cast(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(y)))
            }
            Err(x) => l.forward(x),
        },
    }
}

/// Whether one gemm over all b·t rows takes the path burn-flex's per-batch-row gemms take, so
/// that every element is the same sum in the same order, forward and for x's gradient (x
/// `[b, t, k]`, W `[k, n]` row-major). gemm (gemm-common 0.19, `gemm_basic_generic`) picks its
/// path and k-blocks by size: at most 16×16 outputs with unit strides run a horizontal kernel
/// (our Wᵀ view has those strides, burn's contiguous copy of Wᵀ does not); a row or column
/// count of 1 runs a gemv, a contraction over at most 2 a gevv; with at most 64 rows and 64
/// columns the k-blocks are min(k, 512), otherwise balanced blocks of at most 512 or more
/// (one block either way when k ≤ 512). Outside these cases both run the same kernels over
/// the same k-blocks; the model's layers are always outside them.
fn folds_like_burn(b: usize, t: usize, k: usize, n: usize) -> bool {
    let (lo, hi) = (k.min(n), k.max(n));
    t >= 2 && lo >= 3 && b * t * lo > 16 * 16 && (hi <= 512 || lo > 64)
}

/// x `[b, t, k]` and w `[k, n]` (both contiguous) and bias `[n]`: x·w + bias as burn's default
/// `linear` composes it (matmul, then the bias added as `[1, 1, n]`), the matmul over all b·t
/// rows at once.
fn linear_flex(x: &FlexTensor, w: &FlexTensor, bias: FlexTensor) -> FlexTensor {
    let [b, t, _] = x.shape().dims::<3>();
    let n = w.shape().dims::<2>()[1];
    let xw = gemm_rows(f32s(x), b * t, w, false);
    let xw = FlexTensor::from_data(TensorData::new(xw, [b, t, n]));
    Flex::float_add(xw, Flex::float_reshape(bias, Shape::new([1, 1, n])))
}

/// a `[m, k]` (contiguous rows) · w `[k, n]` (or wᵀ, w being `[n, k]`), read through w's
/// strides: one gemm call with the arguments burn-flex's matmul passes, written into a fresh
/// buffer (gemm does not read the destination: it writes every element).
fn gemm_rows(a: &[f32], m: usize, w: &FlexTensor, transpose_w: bool) -> Vec<f32> {
    let ([r, c], s) = (w.shape().dims::<2>(), w.layout().strides());
    let (k, n, rs, cs) = if transpose_w {
        (c, r, s[1], s[0])
    } else {
        (r, c, s[0], s[1])
    };
    assert_eq!(a.len(), m * k, "gemm_rows: a is [m, k]");
    let (storage, start) = (w.storage::<f32>(), w.layout().start_offset());
    assert!(
        start < storage.len(),
        "gemm_rows: w's start lies in its storage"
    );
    let parallelism = if m * n * k >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0) // burn-flex's threshold
    } else {
        gemm::Parallelism::None
    };
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: a is m×k with row stride k; w's layout addresses its k×n elements inside its
    // storage from its start offset (as burn-flex's matmul reads it); out has capacity m·n,
    // which gemm (read_dst false) fills whole before the length is set.
    unsafe {
        let w_ptr = storage.as_ptr().add(start);
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            w_ptr,
            cs,
            rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(m * n);
    }
    out
}

/// [`linear`] on `Autodiff<Flex>`: the op (parents x, W, b) and its backward step.
#[derive(Debug)]
struct LinearOp;

impl LinearOp {
    fn apply(x: FloatTensor<Ad>, w: FloatTensor<Ad>, bias: FloatTensor<Ad>) -> FloatTensor<Ad> {
        let nodes = [x.node.clone(), w.node.clone(), bias.node.clone()];
        let (x, w) = (contiguous(x.primitive), contiguous(w.primitive));
        let y = linear_flex(&x, &w, bias.primitive);
        match LinearOp
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, w), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

impl Backward<Flex, 3> for LinearOp {
    /// (x `[b, t, k]` contiguous, W `[k, n]`).
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, w) = ops.state;
        if let Some(node) = node_x {
            // dx = grad · Wᵀ, as burn's linear_x_backward, over all b·t rows at once.
            let [b, t, _] = grad.shape().dims::<3>();
            let dx = gemm_rows(f32s(&contiguous(grad.clone())), b * t, &w, true);
            let dx = TensorData::new(dx, [b, t, w.shape().dims::<2>()[0]]);
            grads.register::<Flex>(node.id, FlexTensor::from_data(dx));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, Flex::linear_weight_backward(x, grad.clone()));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, Flex::linear_bias_backward(grad));
        }
    }
}

/// exp(x), keeping its output as the backward pass's state (burn's exp keeps x and recomputes
/// exp(x) there): the gradient is grad·exp(x) either way, with the same kernel's values.
fn exp_kept(x: FloatTensor<Ad>) -> FloatTensor<Ad> {
    match Exp
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = exp_flex(x.primitive);
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(exp_flex(x.primitive)),
    }
}

/// burn-flex's `float_exp` (scalar `f32::exp`, one thread), vectorised and split over the
/// thread pool: the same values ([`vmath::exp`]).
fn exp_flex(x: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let mut y = f32s(&x).to_vec();
    y.par_chunks_mut(CHUNK).for_each(vmath::exp);
    like(&x, y)
}

/// Head `i` of a fused projection `qkv` `[b, t, 3·c]` (0: queries, 1: keys, 2: values), split
/// into `h` heads: `[b, h, t, c/h]`. burn's slice, reshape and swap_dims, stored contiguous
/// on `Autodiff<Flex>` (burn-flex copies these 4-d permutations element by element).
pub fn split_heads<B: Backend>(qkv: Tensor<B, 3>, i: usize, h: usize) -> Tensor<B, 4> {
    let [b, t, c3] = qkv.dims();
    let c = c3 / 3;
    let burns = |qkv: Tensor<B, 3>| {
        qkv.slice([0..b, 0..t, i * c..(i + 1) * c])
            .reshape([b, t, h, c / h])
            .swap_dims(1, 2)
    };
    match f32_on::<Ad, B, 3>(qkv) {
        Ok(qkv) => {
            let op = Heads {
                i,
                h,
                dims: [b, t, c],
            };
            cast(tensor::<4>(op.apply(primitive(qkv))))
        }
        Err(qkv) => burns(qkv),
    }
}

/// Heads `[b, h, t, hd]` back to tokens `[b, t, h·hd]` (burn's swap_dims and reshape).
pub fn merge_heads<B: Backend>(y: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, t, hd] = y.dims();
    match f32_on::<Ad, B, 4>(y) {
        Ok(y) => {
            let op = Merge {
                dims: [b, h, t, hd],
            };
            cast(tensor::<3>(op.apply(primitive(y))))
        }
        Err(y) => y.swap_dims(1, 2).reshape([b, t, h * hd]),
    }
}

/// Copies `count` rows of `len` floats: row k from `src[from(k)..]` to `dst[to(k)..]`.
fn copy_rows(
    dst: &mut [f32],
    src: &[f32],
    count: usize,
    len: usize,
    from: impl Fn(usize) -> usize,
    to: impl Fn(usize) -> usize,
) {
    for k in 0..count {
        let (f, t) = (from(k), to(k));
        dst[t..t + len].copy_from_slice(&src[f..f + len]);
    }
}

/// Where row k = (bi·h + hi)·t + ti of heads `[b, h, t, hd]` lies in a token-major tensor
/// whose rows (bi, ti) are `width` floats long: head hi's `hd` columns of row (bi, ti).
fn token_row(k: usize, [h, t, hd]: [usize; 3], width: usize) -> usize {
    let (bi, hi, ti) = (k / (h * t), (k / t) % h, k % t);
    (bi * t + ti) * width + hi * hd
}

/// [`split_heads`] on `Autodiff<Flex>`: the op and its backward step (the gradient placed in
/// head `i`'s columns of a zero `[b, t, 3c]`, as burn's slice backward does).
#[derive(Debug, Clone)]
struct Heads {
    i: usize,
    h: usize,
    /// b, t, c.
    dims: [usize; 3],
}

impl Heads {
    fn apply(self, qkv: FloatTensor<Ad>) -> FloatTensor<Ad> {
        let prep = self.clone().prepare::<NoCheckpointing>([qkv.node.clone()]);
        let out = self.forward(&contiguous(qkv.primitive));
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(self, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    /// Row (bi, hi, ti) of the heads ↔ row (bi, ti) of qkv at column i·c + hi·hd.
    fn rows(
        &self,
    ) -> (
        usize,
        usize,
        impl Fn(usize) -> usize,
        impl Fn(usize) -> usize,
    ) {
        let ([b, t, c], h, i) = (self.dims, self.h, self.i);
        let hd = c / h;
        let heads_row = move |k: usize| k * hd;
        let qkv_row = move |k: usize| token_row(k, [h, t, hd], 3 * c) + i * c;
        (b * h * t, hd, heads_row, qkv_row)
    }

    fn forward(&self, qkv: &FlexTensor) -> FlexTensor {
        let ([b, t, c], h) = (self.dims, self.h);
        let (count, len, heads_row, qkv_row) = self.rows();
        let mut out = vec![0.0f32; b * t * c];
        copy_rows(&mut out, f32s(qkv), count, len, qkv_row, heads_row);
        FlexTensor::from_data(TensorData::new(out, [b, h, t, c / h]))
    }
}

impl Backward<Flex, 1> for Heads {
    type State = Heads;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let op = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let [b, t, c] = op.dims;
            let (count, len, heads_row, qkv_row) = op.rows();
            let mut out = vec![0.0f32; b * t * 3 * c];
            copy_rows(
                &mut out,
                f32s(&contiguous(grad)),
                count,
                len,
                heads_row,
                qkv_row,
            );
            FlexTensor::from_data(TensorData::new(out, [b, t, 3 * c]))
        });
    }
}

/// [`merge_heads`] on `Autodiff<Flex>`: the op and its backward step (the inverse copy).
#[derive(Debug, Clone)]
struct Merge {
    /// b, h, t, hd.
    dims: [usize; 4],
}

impl Merge {
    fn apply(self, y: FloatTensor<Ad>) -> FloatTensor<Ad> {
        let prep = self.clone().prepare::<NoCheckpointing>([y.node.clone()]);
        let [b, h, t, hd] = self.dims;
        let out = self.copy(&contiguous(y.primitive), true);
        let out = FlexTensor::from_data(TensorData::new(out, [b, t, h * hd]));
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(self, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    /// `[b, h, t, hd]` → `[b, t, h·hd]` (`to_tokens`) or back.
    fn copy(&self, src: &FlexTensor, to_tokens: bool) -> Vec<f32> {
        let [b, h, t, hd] = self.dims;
        let heads_row = move |k: usize| k * hd;
        let token_row = move |k: usize| token_row(k, [h, t, hd], h * hd);
        let mut out = vec![0.0f32; b * h * t * hd];
        let (count, src) = (b * h * t, f32s(src));
        if to_tokens {
            copy_rows(&mut out, src, count, hd, heads_row, token_row);
        } else {
            copy_rows(&mut out, src, count, hd, token_row, heads_row);
        }
        out
    }
}

impl Backward<Flex, 1> for Merge {
    type State = Merge;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let op = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let out = op.copy(&contiguous(grad), false);
            FlexTensor::from_data(TensorData::new(out, op.dims))
        });
    }
}

/// exp's backward step from its kept output.
#[derive(Debug)]
struct Exp;

impl Backward<Flex, 1> for Exp {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            Flex::float_mul(grad, output)
        });
    }
}

/// `x` as a tensor of backend `C` when `B` is `C` and `x` holds f32; `x` itself otherwise.
fn f32_on<C: Backend, B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<C, D>, Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let x: Box<dyn Any> = Box::new(x);
    x.downcast::<Tensor<C, D>>()
        .map(|x| *x)
        .map_err(|x| *x.downcast::<Tensor<B, D>>().expect("the caller's type"))
}

fn primitive<const D: usize>(t: Tensor<Ad, D>) -> FloatTensor<Ad> {
    t.into_primitive().tensor()
}

fn tensor<const D: usize>(t: FloatTensor<Ad>) -> Tensor<Ad, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A tensor of a concrete backend back as the caller's `Tensor<B, D>` (the same type).
fn cast<T: 'static, U: 'static>(t: T) -> U {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<U>()
        .expect("dispatched on this type")
}

/// Forward only (evaluation, or a backend without autodiff).
fn flex<const D: usize>(x: Tensor<Flex, D>) -> Tensor<Flex, D> {
    let x = contiguous(x.into_primitive().tensor());
    let y = zip_map(f32s(&x), &erf_scaled(f32s(&x)), |x, e| 0.5 * x * (1.0 + e));
    Tensor::from_primitive(TensorPrimitive::Float(like(&x, y)))
}

/// With autodiff: the forward pass keeps (x, erf(x/√2)) as the backward pass's state.
fn autodiff_flex<const D: usize>(x: Tensor<Autodiff<Flex>, D>) -> Tensor<Autodiff<Flex>, D> {
    let x = primitive(x);
    let out = match Gelu
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = contiguous(x.primitive);
            let e = erf_scaled(f32s(&input));
            let y = zip_map(f32s(&input), &e, |x, e| 0.5 * x * (1.0 + e));
            let y = like(&input, y);
            let e = like(&input, e);
            prep.finish((input, e), y)
        }
        OpsKind::UnTracked(prep) => {
            let y = flex(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(
                x.primitive,
            )));
            prep.finish(y.into_primitive().tensor())
        }
    };
    tensor(out)
}

/// The backward step: dGELU/dx = Φ(x) + x·φ(x), with Φ from the kept erf.
#[derive(Debug)]
struct Gelu;

impl Backward<Flex, 1> for Gelu {
    /// (x, erf(x/√2)), both contiguous f32.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, e) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = contiguous(grad);
            // burn-flex's constant, computed the same way.
            let inv_sqrt_2pi: f32 = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
            let (xs, es, gs) = (f32s(&x), f32s(&e), f32s(&grad));
            let mut ex = map(xs, |&x| -0.5 * x * x);
            ex.par_chunks_mut(CHUNK).for_each(vmath::exp);
            let out: Vec<f32> = (xs.par_iter(), es.par_iter(), gs.par_iter(), ex.par_iter())
                .into_par_iter()
                .with_min_len(CHUNK)
                .map(|(&x, &e, &g, &ex)| {
                    let cdf = 0.5 * (1.0 + e);
                    let pdf = inv_sqrt_2pi * ex;
                    g * (cdf + x * pdf)
                })
                .collect();
            like(&grad, out)
        });
    }
}

const SQRT_2: f32 = std::f32::consts::SQRT_2;

/// erf(x/√2) for every element ([`vmath::erf`], split over the thread pool).
fn erf_scaled(xs: &[f32]) -> Vec<f32> {
    let mut e = map(xs, |&x| x / SQRT_2);
    e.par_chunks_mut(CHUNK).for_each(vmath::erf);
    e
}

fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The elements of a contiguous f32 tensor, in row-major order.
fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A new tensor of `t`'s shape holding `values` (row-major).
fn like(t: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, t.layout().shape().clone()))
}

fn map(xs: &[f32], f: impl Fn(&f32) -> f32 + Sync + Send) -> Vec<f32> {
    xs.par_iter().with_min_len(CHUNK).map(f).collect()
}

fn zip_map(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    (xs.par_iter(), ys.par_iter())
        .into_par_iter()
        .with_min_len(CHUNK)
        .map(|(&x, &y)| f(x, y))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// A random tensor drawn from `seed` under the RNG's lock (`rng::seeded`): tests on other
    /// threads share burn's one RNG.
    fn random<B: Backend, const D: usize>(
        shape: [usize; D],
        dist: Distribution,
        seed: u64,
        dev: &B::Device,
    ) -> Tensor<B, D> {
        crate::rng::seeded::<B, _>(dev, seed, || Tensor::random(shape, dist, dev))
    }

    fn bits<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<u32> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// Equal bit for bit; a failure says how many elements differ and the first one.
    fn assert_same(ours: &[u32], burns: &[u32], what: &str) {
        assert_eq!(ours.len(), burns.len(), "{what}: lengths");
        let diff: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != burns[i]).collect();
        assert!(
            diff.is_empty(),
            "{what}: {} of {} elements differ, first at {}: {} vs burn's {}",
            diff.len(),
            ours.len(),
            diff[0],
            f32::from_bits(ours[diff[0]]),
            f32::from_bits(burns[diff[0]])
        );
    }

    /// Value and gradient equal burn's gelu bit for bit, on a tensor large enough to split
    /// over threads, including a non-contiguous input (a transposed view).
    #[test]
    fn bit_identical_to_burn_gelu() {
        type A = Autodiff<Flex>;
        let dev = FlexDevice;
        let base = random::<Flex, 3>([4, 96, 130], Distribution::Normal(0.0, 3.0), 1, &dev);
        let w = random::<Flex, 3>([4, 96, 130], Distribution::Normal(0.0, 1.0), 2, &dev);
        for transposed in [false, true] {
            let view = |t: Tensor<Flex, 3>| if transposed { t.swap_dims(1, 2) } else { t };
            let run = |ours: bool| {
                let x = Tensor::<A, 3>::from_inner(view(base.clone())).require_grad();
                let y = if ours {
                    gelu(x.clone())
                } else {
                    activation::gelu(x.clone())
                };
                let loss = (y.clone() * Tensor::<A, 3>::from_inner(view(w.clone()))).sum();
                let g = x.grad(&loss.backward()).unwrap();
                (bits(y.inner()), bits(g))
            };
            let (ours, burns) = (run(true), run(false));
            assert_same(
                &ours.0,
                &burns.0,
                &format!("values (transposed: {transposed})"),
            );
            assert_same(
                &ours.1,
                &burns.1,
                &format!("gradients (transposed: {transposed})"),
            );
            let plain = gelu(view(base.clone()));
            assert_same(
                &bits(plain),
                &bits(activation::gelu(view(base.clone()))),
                "eval",
            );
        }
        // Other element types fall through to burn's gelu.
        let x = Tensor::<Flex, 1>::from_floats([-1.0, 0.5], &dev).cast(DType::F64);
        let y = gelu(x).into_data().to_vec::<f64>().unwrap();
        assert!((y[0] + 0.158_655_253_931_457).abs() < 1e-12 && (y[1] - 0.345_731).abs() < 1e-6);
    }

    /// Value and gradient of a cross-entropy through log_softmax equal burn's bit for bit.
    #[test]
    fn log_softmax_bit_identical_to_burn() {
        type A = Autodiff<Flex>;
        let dev = FlexDevice;
        let logits = random::<Flex, 2>([300, 257], Distribution::Normal(0.0, 4.0), 3, &dev);
        let targets = Tensor::<Flex, 2, burn::tensor::Int>::from_data(
            TensorData::new((0..300i64).map(|i| (i * 37) % 257).collect(), [300, 1]),
            &dev,
        );
        let run = |ours: bool| {
            let x = Tensor::<A, 2>::from_inner(logits.clone()).require_grad();
            let lp = if ours {
                log_softmax(x.clone(), 1)
            } else {
                activation::log_softmax(x.clone(), 1)
            };
            let t = Tensor::<A, 2, burn::tensor::Int>::from_inner(targets.clone());
            let loss = lp.clone().gather(1, t).mean().neg();
            let g = x.grad(&loss.backward()).unwrap();
            (bits(lp.inner()), bits(g))
        };
        let (ours, burns) = (run(true), run(false));
        assert_same(&ours.0, &burns.0, "values");
        assert_same(&ours.1, &burns.1, "gradients");
        let plain = log_softmax(logits.clone(), 1);
        assert_same(
            &bits(plain),
            &bits(activation::log_softmax(logits.clone(), 1)),
            "eval",
        );
        // The packed model's case: the last dim of a 3-d tensor, on the autodiff backend
        // without gradients.
        let x = Tensor::<A, 3>::from_inner(logits.reshape([3, 100, 257]));
        let ours = bits(log_softmax(x.clone(), 2).inner());
        assert_same(
            &ours,
            &bits(activation::log_softmax(x, 2).inner()),
            "3-d, dim 2",
        );
    }

    /// Output and the gradients of q, k and v equal burn's attention bit for bit.
    #[test]
    fn attention_bit_identical_to_burn() {
        type A = Autodiff<Flex>;
        let dev = FlexDevice;
        // As the model passes them: [b, t, h, hd] views swapped to [b, h, t, hd].
        let inputs = [(0.0, 4), (1.0, 11), (-0.5, 12)].map(|(s, seed)| {
            random::<Flex, 4>([3, 24, 2, 8], Distribution::Normal(s, 2.0), seed, &dev)
                .swap_dims(1, 2)
        });
        let w = random::<Flex, 4>([3, 2, 24, 8], Distribution::Normal(0.0, 1.0), 5, &dev);
        let run = |ours: bool| {
            let [q, k, v] = inputs
                .clone()
                .map(|t| Tensor::<A, 4>::from_inner(t).require_grad());
            let y = if ours {
                causal_attention(q.clone(), k.clone(), v.clone())
            } else {
                let opts = AttentionModuleOptions {
                    is_causal: true,
                    ..Default::default()
                };
                module::attention(q.clone(), k.clone(), v.clone(), None, None, opts)
            };
            let grads = (y.clone() * Tensor::<A, 4>::from_inner(w.clone()))
                .sum()
                .backward();
            let g = [q, k, v].map(|t| bits(t.grad(&grads).unwrap()));
            (bits(y.inner()), g)
        };
        let (ours, burns) = (run(true), run(false));
        assert_same(&ours.0, &burns.0, "values");
        for (i, name) in ["q", "k", "v"].iter().enumerate() {
            assert_same(&ours.1[i], &burns.1[i], &format!("gradient of {name}"));
        }
    }

    /// Output and the gradients of x, W and b equal burn's `Linear::forward` bit for bit, at
    /// the model's shapes: d_in up to 1,024 (two of gemm's k-blocks), outputs large enough
    /// for gemm's threads, and a strided (transposed) input.
    #[test]
    fn linear_bit_identical_to_burn() {
        type A = Autodiff<Flex>;
        let dev = FlexDevice;
        for (b, t, k, n, strided) in [
            (3, 64, 24, 72, false),
            (4, 64, 64, 256, false),
            (2, 64, 1024, 256, false),
            (8, 128, 256, 768, false),
            (3, 17, 40, 40, true),
            // Sizes where gemm takes another path for the folded product (burn's path runs):
            // the horizontal kernel for x's gradient, and other k-blocks for d_in > 512.
            (1, 16, 8, 8, false),
            (4, 32, 600, 40, false),
        ] {
            let x = random::<Flex, 3>([b, t, k], Distribution::Normal(0.0, 1.5), 6, &dev);
            let x = if strided {
                x.reshape([b, k, t]).swap_dims(1, 2)
            } else {
                x
            };
            // Its weight drawn (touched) under the RNG's lock.
            let layer = crate::rng::seeded::<A, _>(&dev, 20, || {
                let l = burn::nn::LinearConfig::new(k, n).init::<A>(&dev);
                let _ = l.weight.val();
                l
            });
            let bias = random::<A, 1>([n], Distribution::Normal(0.0, 1.0), 7, &dev);
            let layer = Linear {
                bias: Some(burn::module::Param::from_tensor(bias)),
                ..layer
            };
            let w = random::<Flex, 3>([b, t, n], Distribution::Normal(0.0, 1.0), 8, &dev);
            let run = |ours: bool| {
                let x = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
                let y = if ours {
                    linear(x.clone(), &layer)
                } else {
                    layer.forward(x.clone())
                };
                let grads = (y.clone() * Tensor::<A, 3>::from_inner(w.clone()))
                    .sum()
                    .backward();
                let gw = layer.weight.grad(&grads).unwrap();
                let gb = layer.bias.as_ref().unwrap().grad(&grads).unwrap();
                let g = [bits(x.grad(&grads).unwrap()), bits(gw), bits(gb)];
                (bits(y.inner()), g)
            };
            let (ours, burns) = (run(true), run(false));
            let case = format!("[{b}, {t}, {k}] x [{k}, {n}]");
            assert_same(&ours.0, &burns.0, &format!("{case}: values"));
            for (i, name) in ["x", "W", "b"].iter().enumerate() {
                assert_same(
                    &ours.1[i],
                    &burns.1[i],
                    &format!("{case}: gradient of {name}"),
                );
            }
            // Without autodiff, and on the autodiff backend without gradients.
            let plain = burn::module::AutodiffModule::valid(&layer);
            assert_same(
                &bits(linear(x.clone(), &plain)),
                &bits(plain.forward(x.clone())),
                &format!("{case}: eval"),
            );
            let xa = Tensor::<A, 3>::from_inner(x.clone());
            assert_same(
                &bits(linear(xa.clone(), &layer).inner()),
                &bits(layer.forward(xa).inner()),
                &format!("{case}: untracked"),
            );
        }
    }

    /// The model's attention path, qkv `[b, t, 3c]` → heads → attention → tokens `[b, t, c]`:
    /// output and qkv's gradient equal burn's slice / reshape / swap_dims path bit for bit.
    #[test]
    fn head_split_and_merge_bit_identical_to_burn() {
        type A = Autodiff<Flex>;
        let dev = FlexDevice;
        let (b, t, h, c) = (3, 20, 4, 24);
        let base = random::<Flex, 3>([b, t, 3 * c], Distribution::Normal(0.0, 1.5), 9, &dev);
        let w = random::<Flex, 3>([b, t, c], Distribution::Normal(0.0, 1.0), 10, &dev);
        let path = |qkv: Tensor<A, 3>, ours: bool| {
            if ours {
                let [q, k, v] = [0, 1, 2].map(|i| split_heads(qkv.clone(), i, h));
                return merge_heads(causal_attention(q, k, v));
            }
            let heads = |i: usize| {
                qkv.clone()
                    .slice([0..b, 0..t, i * c..(i + 1) * c])
                    .reshape([b, t, h, c / h])
                    .swap_dims(1, 2)
            };
            let opts = AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            };
            module::attention(heads(0), heads(1), heads(2), None, None, opts)
                .swap_dims(1, 2)
                .reshape([b, t, c])
        };
        let run = |ours: bool| {
            let qkv = Tensor::<A, 3>::from_inner(base.clone()).require_grad();
            let y = path(qkv.clone(), ours);
            let grads = (y.clone() * Tensor::<A, 3>::from_inner(w.clone()))
                .sum()
                .backward();
            (bits(y.inner()), bits(qkv.grad(&grads).unwrap()))
        };
        let (ours, burns) = (run(true), run(false));
        assert_same(&ours.0, &burns.0, "values");
        assert_same(&ours.1, &burns.1, "gradient of qkv");
        // On the autodiff backend without gradients (evaluation of a training model): the
        // untracked branch of every op (heads, exp, merge, GELU).
        let qkv = Tensor::<A, 3>::from_inner(base.clone());
        let ours = bits(gelu(path(qkv.clone(), true)).inner());
        let burns = bits(activation::gelu(path(qkv, false)).inner());
        assert_same(&ours, &burns, "untracked");
        // Without autodiff: burn's path itself.
        let y = split_heads(base.clone(), 1, h);
        let z = base
            .slice([0..b, 0..t, c..2 * c])
            .reshape([b, t, h, c / h])
            .swap_dims(1, 2);
        assert_same(&bits(y.clone()), &bits(z), "eval split");
        assert_same(
            &bits(merge_heads(y.clone())),
            &bits(y.swap_dims(1, 2).reshape([b, t, c])),
            "eval merge",
        );
    }
}
