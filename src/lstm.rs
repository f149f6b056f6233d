//! The recurrent family: an LSTM language model, generic over burn's `Backend`.
//!
//! Token embedding (no position embedding: order comes from the recurrence) → input
//! LayerNorm → `n_layer` LSTM layers of width d_model → final LayerNorm → output head tied to
//! the token embedding. Trained on the same windows as the Transformer: each window is one
//! truncated-BPTT segment starting from a zero state, so a position sees exactly the tokens
//! before it in its window.
//!
//! One layer (Hochreiter & Schmidhuber 1997, with a forget gate): gates
//! [i, f, g, o] = x_t·W_ih + b + h_{t-1}·W_hh, c_t = σ(f)⊙c_{t-1} + σ(i)⊙tanh(g),
//! h_t = σ(o)⊙tanh(c_t). The input projection is one matmul over the whole window; only the
//! recurrent one runs per step. Parameters per layer: 8·d² + 4·d (the plan's accounting in
//! [`crate::model::Shape::non_embedding_params`]). Init: weights U(−1/√d, 1/√d) as PyTorch's
//! `nn.LSTM`, forget-gate bias 1 (Jozefowicz et al. 2015), other biases 0; embedding N(0, 0.02).

use burn::module::{Initializer, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};

/// One LSTM layer of width `d`.
#[derive(Module, Debug)]
pub struct LstmLayer<B: Backend> {
    /// x_t → the four gates, with their bias: [d, 4d].
    input: Linear<B>,
    /// h_{t-1} → the four gates, no bias: [d, 4d].
    recurrent: Linear<B>,
}

impl<B: Backend> LstmLayer<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (d as f64).sqrt();
        let init = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        let mut input = LinearConfig::new(d, 4 * d)
            .with_initializer(init.clone())
            .init(device);
        // Bias order [i, f, g, o]: the forget gate starts open.
        let bias: Vec<f32> = (0..4 * d)
            .map(|k| if (d..2 * d).contains(&k) { 1.0 } else { 0.0 })
            .collect();
        input.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [4 * d]),
            device,
        )));
        let recurrent = LinearConfig::new(d, 4 * d)
            .with_bias(false)
            .with_initializer(init)
            .init(device);
        LstmLayer { input, recurrent }
    }

    /// Hidden states `[b, t, d]` for inputs `[b, t, d]`, from a zero state.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let gates_in = self.input.forward(x); // [b, t, 4d], every step at once
        let mut h = Tensor::<B, 2>::zeros([b, d], &gates_in.device());
        let mut c = h.clone();
        let mut out = Vec::with_capacity(t);
        for s in 0..t {
            let g = gates_in
                .clone()
                .slice([0..b, s..s + 1, 0..4 * d])
                .reshape([b, 4 * d])
                + self.recurrent.forward(h); // [b, 4d]
            let gate = |k: usize| g.clone().slice([0..b, k * d..(k + 1) * d]);
            c = sigmoid(gate(1)) * c + sigmoid(gate(0)) * tanh(gate(2));
            h = sigmoid(gate(3)) * tanh(c.clone());
            out.push(h.clone().unsqueeze_dim::<3>(1)); // [b, 1, d]
        }
        Tensor::cat(out, 1)
    }
}

/// The LSTM LM.
#[derive(Module, Debug)]
pub struct LstmLm<B: Backend> {
    wte: Embedding<B>,
    ln_in: LayerNorm<B>,
    layers: Vec<LstmLayer<B>>,
    ln_f: LayerNorm<B>,
}

impl<B: Backend> LstmLm<B> {
    pub fn new(vocab: usize, d_model: usize, n_layer: usize, device: &B::Device) -> Self {
        LstmLm {
            wte: EmbeddingConfig::new(vocab, d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            ln_in: LayerNormConfig::new(d_model).init(device),
            layers: (0..n_layer)
                .map(|_| LstmLayer::new(d_model, device))
                .collect(),
            ln_f: LayerNormConfig::new(d_model).init(device),
        }
    }

    /// Logits `[b·t, vocab]` for token ids `[b, t]`.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = idx.dims();
        let mut x = self.ln_in.forward(self.wte.forward(idx)); // [b, t, d]
        for layer in &self.layers {
            x = layer.forward(x);
        }
        let d = x.dims()[2];
        let x = self.ln_f.forward(x).reshape([b * t, d]);
        x.matmul(self.wte.weight.val().transpose())
    }
}
