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
use burn::tensor::activation::log_softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::plan::Shape;

#[derive(Config, Debug)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub context: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_ff: usize,
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
        let opts = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        let y = attention(heads(0), heads(1), heads(2), None, None, opts);
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
