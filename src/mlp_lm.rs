//! The feed-forward family: Bengio et al.'s neural probabilistic LM (JMLR 2003), generic over
//! burn's `Backend`.
//!
//! The previous `window` tokens' embeddings (width d_model), concatenated oldest first →
//! `n_layer` tanh layers of width d_ff → a linear map to d_model, plus (with `direct`) the
//! paper's direct connections from the concatenated embeddings → final LayerNorm → output
//! head tied to the token embedding. Two choices differ from the paper, both so that its
//! loss compares with the other families' on the same footing: the softmax layer is the tied
//! embedding (as in the GPT and the LSTM here; the paper's untied V × h output matrix would
//! be most of the parameters), so the direct connections end at d_model, not at the
//! vocabulary; and it is trained on the same windows as the Transformer, predicting every
//! position at once, positions near a window's start seeing zero vectors for the tokens
//! before it. Position t sees tokens t−window+1 … t and nothing else.
//!
//! Parameters: window·d·d_ff + d_ff, (n_layer−1)·(d_ff² + d_ff), d_ff·d + d, window·d² with
//! `direct`, 2·d for the LayerNorm ([`crate::model::Shape::non_embedding_params`]). Init:
//! N(0, 1/fan_in) for the hidden and output layers (tanh keeps unit scale), zero biases,
//! embedding N(0, 0.02).

use burn::module::{Initializer, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::tanh;

/// The feed-forward LM.
#[derive(Module, Debug)]
pub struct MlpLm<B: Backend> {
    wte: Embedding<B>,
    hidden: Vec<Linear<B>>,
    out: Linear<B>,
    direct: Option<Linear<B>>,
    ln_f: LayerNorm<B>,
    window: usize,
}

/// What [`MlpLm::new`] builds.
#[derive(Debug, Clone, Copy)]
pub struct MlpLmConfig {
    pub vocab: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub d_ff: usize,
    pub window: usize,
    pub direct: bool,
}

fn lecun<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    let std = 1.0 / (d_in as f64).sqrt();
    let mut l = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    l.bias = l.bias.map(|p| Param::from_tensor(p.val().zeros_like()));
    l
}

impl<B: Backend> MlpLm<B> {
    pub fn new(c: &MlpLmConfig, device: &B::Device) -> Self {
        let input = c.window * c.d_model;
        let hidden = (0..c.n_layer)
            .map(|i| lecun(if i == 0 { input } else { c.d_ff }, c.d_ff, true, device))
            .collect();
        MlpLm {
            wte: EmbeddingConfig::new(c.vocab, c.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            hidden,
            out: lecun(c.d_ff, c.d_model, true, device),
            direct: c.direct.then(|| lecun(input, c.d_model, false, device)),
            ln_f: LayerNormConfig::new(c.d_model).init(device),
            window: c.window,
        }
    }

    /// Logits `[b·t, vocab]` for token ids `[b, t]`.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = idx.dims();
        let k = self.window;
        let e = self.wte.forward(idx); // [b, t, d]
        let d = e.dims()[2];
        // Zero vectors stand for the tokens before the window: [b, k-1+t, d].
        let padded = if k > 1 {
            Tensor::cat(vec![Tensor::zeros([b, k - 1, d], &e.device()), e], 1)
        } else {
            e
        };
        // Position s gets tokens s-k+1 .. s, oldest first: [b, t, k·d].
        let x = Tensor::cat(
            (0..k)
                .map(|j| padded.clone().slice([0..b, j..j + t, 0..d]))
                .collect(),
            2,
        );
        let mut h = x.clone();
        for layer in &self.hidden {
            h = tanh(layer.forward(h)); // [b, t, d_ff]
        }
        let mut y = self.out.forward(h); // [b, t, d]
        if let Some(direct) = &self.direct {
            y = y + direct.forward(x);
        }
        let y = self.ln_f.forward(y).reshape([b * t, d]);
        y.matmul(self.wte.weight.val().transpose())
    }
}
