//! The model: a decoder-only GPT (nanoGPT-style), generic over burn's `Backend`.
//!
//! Token + learned position embeddings → `n_layer` pre-LayerNorm blocks (causal multi-head
//! self-attention, GELU MLP, residual connections) → final LayerNorm → output head **tied**
//! to the token embedding (logits = h · W_teᵀ). Biases everywhere, no dropout (single-epoch
//! scaling runs do not need it). Init as GPT-2: N(0, 0.02) weights, zero biases, residual
//! output projections scaled by 1/√(2·n_layer).
//!
//! # μP
//! [`Parametrization::Mup`] is the maximal-update parametrization for Adam (Yang et al. 2022,
//! "Tensor Programs V", Table 3) relative to a base width `b`, with width multiplier
//! m = d_model / b; at m = 1 it is exactly the standard model. With one global Adam LR η it is
//! implemented by multipliers in the forward pass (the abc-equivalence of the paper), so the
//! optimizer needs no parameter groups:
//! - hidden matrices (qkv, attention output, MLP up and down) compute (x / m) · W' + bias with
//!   W' stored at std σ·√m: the effective weight W = W'/m starts at σ/√m (variance ∝ 1/fan_in)
//!   and Adam moves it by η/m per step (the μP hidden LR), while biases keep LR η;
//! - embeddings, LayerNorm gains and biases are input-like: init and LR unchanged;
//! - the tied output head is divided by m (logits = h · W_teᵀ / m, mup's shared readout);
//! - attention logits are scaled by √d_head_base / d_head (1/d, anchored at the base width)
//!   instead of 1/√d_head, by multiplying q by 1/√m.
//!
//! Decoupled weight decay stays η·λ per step on every stored parameter (not scaled by 1/m).

use crate::ops::{linear, log_softmax};
use burn::module::{Initializer, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use serde::{Deserialize, Serialize};

/// How initialisation, per-layer learning rates and the output scale depend on width (module
/// docs, "μP").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Parametrization {
    /// GPT-2's: N(0, 0.02), one LR for every parameter, attention scaled by 1/√d_head.
    #[default]
    Standard,
    /// μP relative to `base_width` (equal to `Standard` when d_model = base_width).
    Mup { base_width: usize },
}

impl Parametrization {
    pub fn is_standard(&self) -> bool {
        *self == Parametrization::Standard
    }

    /// Width multiplier m = d_model / base_width (1 for the standard parametrization).
    pub fn width_mult(&self, d_model: usize) -> f64 {
        match self {
            Parametrization::Standard => 1.0,
            Parametrization::Mup { base_width } => d_model as f64 / *base_width as f64,
        }
    }

    /// μP's base width; None for the standard parametrization (how records store it).
    pub fn base_width(&self) -> Option<usize> {
        match self {
            Parametrization::Standard => None,
            Parametrization::Mup { base_width } => Some(*base_width),
        }
    }

    /// The inverse of [`Parametrization::base_width`].
    pub fn from_base_width(base_width: Option<usize>) -> Self {
        match base_width {
            None => Parametrization::Standard,
            Some(base_width) => Parametrization::Mup { base_width },
        }
    }
}

/// The model families (the closed set a spec's `model.shapes[i].family` names and a record's
/// `family` column stores).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FamilyKind {
    #[default]
    Transformer,
    Lstm,
    Mlp,
}

impl FamilyKind {
    pub const ALL: [FamilyKind; 3] = [FamilyKind::Transformer, FamilyKind::Lstm, FamilyKind::Mlp];

    pub fn as_str(&self) -> &'static str {
        match self {
            FamilyKind::Transformer => "transformer",
            FamilyKind::Lstm => "lstm",
            FamilyKind::Mlp => "mlp",
        }
    }

    pub fn parse(s: &str) -> Option<FamilyKind> {
        FamilyKind::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl std::fmt::Display for FamilyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which network a shape builds, with what only that family has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    /// This module's GPT.
    #[default]
    Transformer,
    /// The `lstm` module's model: embedding → `n_layer` LSTM layers of width d_model → tied head.
    Lstm,
    /// The `mlp_lm` module's model: Bengio et al.'s feed-forward LM over the previous `window` tokens,
    /// `n_layer` tanh layers of width d_ff, with `direct` input → output connections or not.
    Mlp { window: usize, direct: bool },
}

impl Family {
    pub fn is_transformer(&self) -> bool {
        *self == Family::Transformer
    }

    pub fn kind(&self) -> FamilyKind {
        match self {
            Family::Transformer => FamilyKind::Transformer,
            Family::Lstm => FamilyKind::Lstm,
            Family::Mlp { .. } => FamilyKind::Mlp,
        }
    }
}

/// A model's size: family, width, depth, heads and MLP width. Owns the parameter and FLOP
/// accounting of every family (conventions: the plan module's doc). `n_head` is 0 outside the
/// Transformer, `d_ff` 0 for the LSTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Shape {
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_ff: usize,
    /// Not part of the size, but of the model a shape builds; left out of run ids when
    /// standard, so ids from before μP are unchanged.
    #[serde(skip_serializing_if = "Parametrization::is_standard")]
    pub param: Parametrization,
    /// Left out of run ids for the Transformer, so ids from before families are unchanged.
    #[serde(skip_serializing_if = "Family::is_transformer")]
    pub family: Family,
}

impl Shape {
    pub fn new(d_model: usize, n_layer: usize, n_head: usize, d_ff: Option<usize>) -> Self {
        Shape {
            d_model,
            n_layer,
            n_head,
            d_ff: d_ff.unwrap_or(4 * d_model),
            param: Parametrization::Standard,
            family: Family::Transformer,
        }
    }

    /// An LSTM LM: `n_layer` layers of width `d_model`.
    pub fn lstm(d_model: usize, n_layer: usize) -> Self {
        Shape {
            n_head: 0,
            d_ff: 0,
            family: Family::Lstm,
            ..Shape::new(d_model, n_layer, 0, None)
        }
    }

    /// A Bengio feed-forward LM: embeddings of width `d_model` for the previous `window`
    /// tokens, `n_layer` tanh layers of width `d_ff`.
    pub fn mlp(d_model: usize, n_layer: usize, d_ff: usize, window: usize, direct: bool) -> Self {
        Shape {
            n_head: 0,
            family: Family::Mlp { window, direct },
            ..Shape::new(d_model, n_layer, 0, Some(d_ff))
        }
    }

    pub fn with_param(self, param: Parametrization) -> Self {
        Shape { param, ..self }
    }

    /// Non-embedding parameters: every weight and bias but the token (and position)
    /// embeddings, the final LayerNorm included.
    pub fn non_embedding_params(&self) -> u64 {
        let (d, f, l) = (self.d_model as u64, self.d_ff as u64, self.n_layer as u64);
        let final_ln = 2 * d;
        match self.family {
            Family::Transformer => {
                let per_layer = 4 * d // two LayerNorms
                    + 3 * d * d + 3 * d // qkv
                    + d * d + d // attention output
                    + d * f + f // MLP up
                    + f * d + d; // MLP down
                l * per_layer + final_ln
            }
            // Per layer: the four gates' input and recurrent matrices and one bias each.
            // Plus the input LayerNorm.
            Family::Lstm => l * (4 * d * (d + d) + 4 * d) + 2 * final_ln,
            Family::Mlp { window, direct } => {
                let k = window as u64;
                let first = k * d * f + f; // concatenated embeddings → first tanh layer
                let rest = l.saturating_sub(1) * (f * f + f);
                let out = f * d + d; // last tanh layer → d_model (then the tied head)
                let skip = if direct { k * d * d } else { 0 }; // input → output, no bias
                first + rest + out + skip + final_ln
            }
        }
    }

    /// All parameters (embeddings included; the head is tied to the token embedding; only
    /// the Transformer has position embeddings).
    pub fn total_params(&self, vocab: usize, context: usize) -> u64 {
        let positions = if self.family.is_transformer() {
            context
        } else {
            0
        };
        self.non_embedding_params() + ((vocab + positions) * self.d_model) as u64
    }

    /// Training FLOPs per token, PaLM convention: matmuls incl. unembedding, plus attention
    /// for the Transformer (the recurrent and feed-forward families have no context term).
    pub fn flops_per_token_full(&self, vocab: usize, context: usize) -> f64 {
        let n = self.non_embedding_params() as f64 + (vocab * self.d_model) as f64;
        let attention = match self.family {
            Family::Transformer => 12.0 * (self.n_layer * context * self.d_model) as f64,
            Family::Lstm | Family::Mlp { .. } => 0.0,
        };
        6.0 * n + attention
    }

    pub fn label(&self) -> String {
        let base = match self.family {
            Family::Transformer => format!("d{}-L{}-h{}", self.d_model, self.n_layer, self.n_head),
            Family::Lstm => format!("lstm-d{}-L{}", self.d_model, self.n_layer),
            Family::Mlp { window, direct } => format!(
                "mlp-d{}-L{}-f{}-k{window}{}",
                self.d_model,
                self.n_layer,
                self.d_ff,
                if direct { "-direct" } else { "" }
            ),
        };
        match self.param.base_width() {
            None => base,
            Some(b) => format!("{base}-mup({b})"),
        }
    }
}

#[derive(Config, Debug)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub context: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_ff: usize,
    /// burn's fused attention op (true) or the explicit matmul / mask / softmax / matmul.
    #[config(default = true)]
    pub fused_attention: bool,
    /// μP width multiplier m = d_model / base_width (1: the standard parametrization).
    #[config(default = 1.0)]
    pub width_mult: f64,
}

impl GptConfig {
    pub fn from_shape(shape: &Shape, vocab_size: usize, context: usize) -> Self {
        GptConfig::new(
            vocab_size,
            context,
            shape.d_model,
            shape.n_layer,
            shape.n_head,
            shape.d_ff,
        )
        .with_width_mult(shape.param.width_mult(shape.d_model))
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Gpt<B> {
        let std = 0.02;
        let m = self.width_mult;
        // Hidden matrices are stored at std·√m and used as W'/m (module docs, "μP").
        let hidden_std = std * m.sqrt();
        let resid_std = hidden_std / (2.0 * self.n_layer as f64).sqrt();
        let linear = |d_in: usize, d_out: usize, std: f64| -> Linear<B> {
            let mut l = LinearConfig::new(d_in, d_out)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device);
            l.bias = l.bias.map(|p| Param::from_tensor(p.val().zeros_like()));
            l
        };
        let emb = |n: usize| {
            EmbeddingConfig::new(n, self.d_model)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device)
        };
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln1: LayerNormConfig::new(self.d_model).init(device),
                qkv: linear(self.d_model, 3 * self.d_model, hidden_std),
                proj: linear(self.d_model, self.d_model, resid_std),
                ln2: LayerNormConfig::new(self.d_model).init(device),
                fc: linear(self.d_model, self.d_ff, hidden_std),
                fc_out: linear(self.d_ff, self.d_model, resid_std),
                n_head: self.n_head,
                fused: self.fused_attention,
                width_mult: m,
            })
            .collect();
        Gpt {
            wte: emb(self.vocab_size),
            wpe: emb(self.context),
            blocks,
            ln_f: LayerNormConfig::new(self.d_model).init(device),
            width_mult: m,
        }
    }
}

/// `x / m` (μP's multiplier before a hidden matrix); `x` itself when m = 1, so the standard
/// model runs no extra op.
pub(crate) fn div_mult<B: Backend, const D: usize>(x: Tensor<B, D>, m: f64) -> Tensor<B, D> {
    if m == 1.0 {
        x
    } else {
        x.div_scalar(m)
    }
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub(crate) ln1: LayerNorm<B>,
    pub(crate) qkv: Linear<B>,
    pub(crate) proj: Linear<B>,
    pub(crate) ln2: LayerNorm<B>,
    pub(crate) fc: Linear<B>,
    pub(crate) fc_out: Linear<B>,
    n_head: usize,
    fused: bool,
    width_mult: f64,
}

impl<B: Backend> Block<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, c] = x.dims();
        let (h, hd, m) = (self.n_head, c / self.n_head, self.width_mult);
        let qkv = linear(div_mult(self.ln1.forward(x.clone()), m), &self.qkv); // [b, t, 3c]
        let heads = |i: usize| crate::ops::split_heads(qkv.clone(), i, h);
        // Heads [b, h, t, hd]. μP: attention logits √hd_base / hd instead of 1/√hd, i.e. q
        // scaled by 1/√m.
        let q = div_mult(heads(0), m.sqrt());
        let y = if self.fused {
            crate::ops::causal_attention(q, heads(1), heads(2))
        } else {
            let att = q
                .matmul(heads(1).transpose())
                .div_scalar((hd as f32).sqrt());
            let mask = Tensor::<B, 2, Bool>::tril_mask([t, t], 0, &att.device())
                .unsqueeze::<4>()
                .expand([b, h, t, t]);
            softmax(att.mask_fill(mask, f32::NEG_INFINITY), 3).matmul(heads(2))
        };
        let y = crate::ops::merge_heads(y); // [b, t, c]
        let x = x + linear(div_mult(y, m), &self.proj);
        let up = linear(div_mult(self.ln2.forward(x.clone()), m), &self.fc); // [b, t, d_ff]
        let mlp = linear(div_mult(crate::ops::gelu(up), m), &self.fc_out);
        x + mlp
    }
}

#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    // Read by the packed model (train::pack), which stacks these parameters run by run.
    pub(crate) wte: Embedding<B>,
    pub(crate) wpe: Embedding<B>,
    pub(crate) blocks: Vec<Block<B>>,
    pub(crate) ln_f: LayerNorm<B>,
    width_mult: f64,
}

impl<B: Backend> Gpt<B> {
    /// Heads and μP width multiplier (the packed model copies them).
    pub(crate) fn n_head_and_mult(&self) -> (usize, f64) {
        (self.blocks.first().map_or(1, |b| b.n_head), self.width_mult)
    }

    /// Logits `[b·t, vocab]` for token ids `[b, t]`.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.forward_traced(idx, None)
    }

    /// [`Gpt::forward`], handing `trace` the residual stream after the embeddings and after
    /// each block (`"embed"`, `"block{i}"`, each `[b, t, d]`) and the logits (`"logits"`,
    /// `[b·t, vocab]` flattened to 3 dims as `[1, b·t, vocab]`): the coordinate check's probe.
    pub fn forward_traced(
        &self,
        idx: Tensor<B, 2, Int>,
        mut trace: Option<&mut dyn FnMut(&str, &Tensor<B, 3>)>,
    ) -> Tensor<B, 2> {
        let [b, t] = idx.dims();
        let device = idx.device();
        let pos = Tensor::<B, 1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let d = self.wte.weight.dims()[1];
        let mut x = self.wte.forward(idx) + self.wpe.forward(pos).expand([b, t, d]); // [b, t, d]
        if let Some(f) = trace.as_mut() {
            f("embed", &x);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            if let Some(f) = trace.as_mut() {
                f(&format!("block{i}"), &x);
            }
        }
        let x = self.ln_f.forward(x).reshape([b * t, d]);
        // μP's shared readout: logits / m.
        let logits = div_mult(x.matmul(self.wte.weight.val().transpose()), self.width_mult);
        if let Some(f) = trace.as_mut() {
            let v = logits.dims()[1];
            f("logits", &logits.clone().reshape([1, b * t, v]));
        }
        logits
    }

    /// Std of the token embedding and of the first block's stored qkv weight (init tests).
    #[cfg(test)]
    pub fn param_stds(&self) -> (f64, f64) {
        let std = |t: Tensor<B, 2>| -> f64 {
            let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap();
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        (
            std(self.wte.weight.val()),
            std(self.blocks[0].qkv.weight.val()),
        )
    }

    /// Mean cross-entropy (nats/token) of next-token prediction: `targets` `[b, t]`.
    pub fn loss(&self, idx: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [b, t] = targets.dims();
        let logits = self.forward(idx);
        log_softmax(logits, 1)
            .gather(1, targets.reshape([b * t, 1]))
            .mean()
            .neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::FlexDevice;
    use burn::backend::Flex;

    fn ids(last: Option<i32>) -> Vec<i32> {
        let mut v: Vec<i32> = (0..32).map(|i| (i * 37 % 256) as i32).collect();
        if let Some(t) = last {
            v[15] = t;
            v[31] = t;
        }
        v
    }

    fn logits<B: Backend>(m: &Gpt<B>, last: Option<i32>) -> Vec<f32> {
        let idx = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids(last), [2, 16]),
            &Default::default(),
        );
        m.forward(idx)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn fused_and_explicit_attention_agree() {
        use burn::backend::Autodiff;
        let shape = Shape::new(32, 2, 4, None);
        let cfg = GptConfig::from_shape(&shape, 256, 16);
        // burn initialises parameters lazily: touch them (under the RNG's lock) before
        // cloning, or each clone would draw its own weights.
        let (fused, a) = crate::rng::seeded::<Flex, _>(&FlexDevice, 3, || {
            let m = cfg.init::<Flex>(&FlexDevice);
            let a = logits(&m, None);
            (m, a)
        });
        let mut explicit = fused.clone();
        for b in explicit.blocks.iter_mut() {
            b.fused = false;
        }
        // Training runs on the autodiff backend (burn's decomposed attention), eval on the
        // inner backend (flex's native kernel): all must compute the same function.
        let ad: Gpt<Autodiff<Flex>> = fused.clone().train();
        let (b, c) = (logits(&explicit, None), logits(&ad, None));
        // Causality: changing the last token must not move earlier positions' logits.
        for (name, base) in [("fused", &a), ("explicit", &b)] {
            let m = if name == "fused" { &fused } else { &explicit };
            let moved = logits(m, Some(3));
            let d = max_diff(&base[..15 * 256], &moved[..15 * 256]);
            assert!(
                d < 1e-5,
                "{name} attention is not causal: earlier logits moved by {d}"
            );
        }
        let (d_ab, d_cb) = (max_diff(&a, &b), max_diff(&c, &b));
        assert!(
            d_ab < 1e-4 && d_cb < 1e-4,
            "fused (flex kernel) vs explicit {d_ab}; fused (autodiff) vs explicit {d_cb}"
        );
    }

    #[test]
    fn recurrent_and_feed_forward_counts_match_hand_counts() {
        // LSTM d8 L2: 2 · (4·8·(8+8) + 4·8) + two LayerNorms 2 · 16 = 1,120.
        assert_eq!(Shape::lstm(8, 2).non_embedding_params(), 1_120);
        // mlp d8 L2 f16 k3: 3·8·16+16 = 400, 16·16+16 = 272, 16·8+8 = 136, LayerNorm 16 (824);
        // direct adds 3·8·8 = 192.
        assert_eq!(Shape::mlp(8, 2, 16, 3, false).non_embedding_params(), 824);
        assert_eq!(Shape::mlp(8, 2, 16, 3, true).non_embedding_params(), 1_016);
        // No position embeddings and no attention term outside the Transformer.
        assert_eq!(Shape::lstm(8, 2).total_params(256, 64), 1_120 + 256 * 8);
        let f = Shape::lstm(8, 2).flops_per_token_full(256, 64);
        assert_eq!(f, 6.0 * (1_120.0 + 256.0 * 8.0));
        assert_eq!(Shape::lstm(8, 2).label(), "lstm-d8-L2");
        assert_eq!(
            Shape::mlp(8, 2, 16, 3, true).label(),
            "mlp-d8-L2-f16-k3-direct"
        );
    }

    #[test]
    fn param_count_matches_plan_accounting() {
        let shape = Shape::new(32, 2, 4, None);
        let idx = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(vec![1i32; 2 * 16], [2, 16]),
            &FlexDevice,
        );
        let tgt = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(vec![7i32; 2 * 16], [2, 16]),
            &FlexDevice,
        );
        let (model, loss) = crate::rng::seeded::<Flex, _>(&FlexDevice, 4, || {
            let m = GptConfig::from_shape(&shape, 256, 16).init::<Flex>(&FlexDevice);
            let loss: f32 = m.loss(idx, tgt).into_scalar().elem();
            (m, loss)
        });
        assert_eq!(model.num_params() as u64, shape.total_params(256, 16));
        // Near-uniform predictions at init: loss ≈ ln(256) = 5.55.
        assert!((loss - 5.55).abs() < 0.3, "initial loss {loss}");
    }
}
