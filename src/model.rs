//! The model: a decoder-only GPT (nanoGPT-style), generic over burn's `Backend`.
//!
//! Token + learned position embeddings → `n_layer` pre-LayerNorm blocks (causal multi-head
//! self-attention, GELU MLP, residual connections) → final LayerNorm → output head **tied**
//! to the token embedding (logits = h · W_teᵀ). Biases everywhere, no dropout (single-epoch
//! scaling runs do not need it). Init as GPT-2: N(0, 0.02) weights, zero biases, residual
//! output projections scaled by 1/√(2·n_layer).

use burn::module::{Initializer, Param};
use burn::nn::{
    Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use serde::Serialize;

/// A model's size: width, depth, heads and MLP width. Owns the parameter and FLOP
/// accounting (conventions: the plan module's doc).
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
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Gpt<B> {
        let std = 0.02;
        let resid_std = std / (2.0 * self.n_layer as f64).sqrt();
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
                qkv: linear(self.d_model, 3 * self.d_model, std),
                proj: linear(self.d_model, self.d_model, resid_std),
                ln2: LayerNormConfig::new(self.d_model).init(device),
                fc: linear(self.d_model, self.d_ff, std),
                fc_out: linear(self.d_ff, self.d_model, resid_std),
                gelu: Gelu::new(),
                n_head: self.n_head,
                fused: self.fused_attention,
            })
            .collect();
        Gpt {
            wte: emb(self.vocab_size),
            wpe: emb(self.context),
            blocks,
            ln_f: LayerNormConfig::new(self.d_model).init(device),
        }
    }
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    ln1: LayerNorm<B>,
    qkv: Linear<B>,
    proj: Linear<B>,
    ln2: LayerNorm<B>,
    fc: Linear<B>,
    fc_out: Linear<B>,
    gelu: Gelu,
    n_head: usize,
    fused: bool,
}

impl<B: Backend> Block<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, c] = x.dims();
        let (h, hd) = (self.n_head, c / self.n_head);
        let qkv = self.qkv.forward(self.ln1.forward(x.clone()));
        let heads = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..t, i * c..(i + 1) * c])
                .reshape([b, t, h, hd])
                .swap_dims(1, 2)
        };
        let y = if self.fused {
            let opts = AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            };
            attention(heads(0), heads(1), heads(2), None, None, opts)
        } else {
            let att = heads(0)
                .matmul(heads(1).transpose())
                .div_scalar((hd as f32).sqrt());
            let mask = Tensor::<B, 2, Bool>::tril_mask([t, t], 0, &att.device())
                .unsqueeze::<4>()
                .expand([b, h, t, t]);
            softmax(att.mask_fill(mask, f32::NEG_INFINITY), 3).matmul(heads(2))
        };
        let y = y.swap_dims(1, 2).reshape([b, t, c]);
        let x = x + self.proj.forward(y);
        let m = self.fc_out.forward(
            self.gelu
                .forward(self.fc.forward(self.ln2.forward(x.clone()))),
        );
        x + m
    }
}

#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    wte: Embedding<B>,
    wpe: Embedding<B>,
    blocks: Vec<Block<B>>,
    ln_f: LayerNorm<B>,
}

impl<B: Backend> Gpt<B> {
    /// Logits `[b·t, vocab]` for token ids `[b, t]`.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = idx.dims();
        let device = idx.device();
        let pos = Tensor::<B, 1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let d = self.wte.weight.dims()[1];
        let mut x = self.wte.forward(idx) + self.wpe.forward(pos).expand([b, t, d]);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.ln_f.forward(x).reshape([b * t, d]);
        x.matmul(self.wte.weight.val().transpose())
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
        <Flex as Backend>::seed(&FlexDevice, 3);
        let fused = cfg.init::<Flex>(&FlexDevice);
        // burn initialises parameters lazily: touch them before cloning, or each clone would
        // draw its own weights.
        let a = logits(&fused, None);
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
    fn param_count_matches_plan_accounting() {
        let shape = Shape::new(32, 2, 4, None);
        let model = GptConfig::from_shape(&shape, 256, 16).init::<Flex>(&FlexDevice);
        assert_eq!(model.num_params() as u64, shape.total_params(256, 16));
        let idx = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(vec![1i32; 2 * 16], [2, 16]),
            &FlexDevice,
        );
        let tgt = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(vec![7i32; 2 * 16], [2, 16]),
            &FlexDevice,
        );
        let loss: f32 = model.loss(idx, tgt).into_scalar().elem();
        // Near-uniform predictions at init: loss ≈ ln(256) = 5.55.
        assert!((loss - 5.55).abs() < 0.3, "initial loss {loss}");
    }
}
