//! The language model a run trains, whatever its family: one type the trainer, the eval and
//! the checkpoints use.
//!
//! Owns the dispatch from a [`Shape`]'s [`Family`] to the network ([`Gpt`], [`LstmLm`],
//! [`MlpLm`]) and the next-token losses every family shares (mean, and per token for the loss
//! by position in the window). The networks themselves live in their modules.

use crate::ops::log_softmax;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::lstm::LstmLm;
use crate::mlp_lm::{MlpLm, MlpLmConfig};
use crate::model::{Family, Gpt, GptConfig, Shape};

/// A model of any family.
#[derive(Module, Debug)]
pub enum Lm<B: Backend> {
    Transformer(Gpt<B>),
    Lstm(LstmLm<B>),
    Mlp(MlpLm<B>),
}

impl<B: Backend> Lm<B> {
    /// A freshly initialised model of `shape` (drawn from the backend's RNG).
    pub fn new(
        shape: &Shape,
        vocab: usize,
        context: usize,
        fused_attention: bool,
        device: &B::Device,
    ) -> Self {
        match shape.family {
            Family::Transformer => Lm::Transformer(
                GptConfig::from_shape(shape, vocab, context)
                    .with_fused_attention(fused_attention)
                    .init(device),
            ),
            Family::Lstm => Lm::Lstm(LstmLm::new(vocab, shape.d_model, shape.n_layer, device)),
            Family::Mlp { window, direct } => Lm::Mlp(MlpLm::new(
                &MlpLmConfig {
                    vocab,
                    d_model: shape.d_model,
                    n_layer: shape.n_layer,
                    d_ff: shape.d_ff,
                    window,
                    direct,
                },
                device,
            )),
        }
    }

    /// Logits `[b·t, vocab]` for token ids `[b, t]`.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        match self {
            Lm::Transformer(m) => m.forward(idx),
            Lm::Lstm(m) => m.forward(idx),
            Lm::Mlp(m) => m.forward(idx),
        }
    }

    /// Mean cross-entropy (nats/token) of next-token prediction: `targets` `[b, t]`.
    pub fn loss(&self, idx: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        target_log_probs(self.forward(idx), targets).mean().neg()
    }

    /// Cross-entropy of each target token, `[b, t]` (the loss by position in the window).
    pub fn token_losses(&self, idx: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = targets.dims();
        target_log_probs(self.forward(idx), targets)
            .reshape([b, t])
            .neg()
    }
}

/// log p(target) for logits `[b·t, vocab]` and targets `[b, t]`: `[b·t, 1]`.
fn target_log_probs<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, t] = targets.dims();
    log_softmax(in_f32(logits), 1).gather(1, targets.reshape([b * t, 1]))
}

/// `x` in f32 (the loss of a run in bf16 or f16 is taken in f32); itself when it is f32.
pub fn in_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};

    const VOCAB: usize = 32;
    const CTX: usize = 12;

    fn shapes() -> Vec<Shape> {
        vec![
            Shape::new(16, 2, 2, None),
            Shape::lstm(16, 2),
            Shape::mlp(16, 2, 32, 3, false),
            Shape::mlp(16, 1, 32, 4, true),
        ]
    }

    /// A model of `shape` with every parameter drawn from `seed` under the RNG's lock
    /// (`rng::seeded`: other tests draw from burn's one RNG meanwhile).
    fn lm<B: Backend<Device = FlexDevice>>(shape: &Shape, seed: u64) -> Lm<B> {
        crate::rng::seeded::<B, _>(&FlexDevice, seed, || {
            let m = Lm::<B>::new(shape, VOCAB, CTX, true, &FlexDevice);
            let one =
                Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i32], [1, 1]), &FlexDevice);
            let _ = m.forward(one);
            m
        })
    }

    fn ids(seq: &[i32], b: usize) -> Tensor<Flex, 2, Int> {
        Tensor::from_data(
            TensorData::new(seq.to_vec(), [b, seq.len() / b]),
            &FlexDevice,
        )
    }

    fn logits(m: &Lm<Flex>, seq: &[i32]) -> Vec<f32> {
        m.forward(ids(seq, 1))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap()
    }

    fn base() -> Vec<i32> {
        (0..CTX as i32)
            .map(|i| (i * 7 + 3) % VOCAB as i32)
            .collect()
    }

    /// Largest change of the logits at positions `range` when `seq` changes to `other`.
    fn moved(m: &Lm<Flex>, other: &[i32], range: std::ops::Range<usize>) -> f32 {
        let (a, b) = (logits(m, &base()), logits(m, other));
        let r = range.start * VOCAB..range.end * VOCAB;
        a[r.clone()]
            .iter()
            .zip(&b[r])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_family_has_the_documented_shapes_and_parameter_count() {
        for shape in shapes() {
            let m = lm::<Flex>(&shape, 1);
            let out = m.forward(ids(&[1; 2 * CTX], 2));
            assert_eq!(out.dims(), [2 * CTX, VOCAB], "{}", shape.label());
            assert_eq!(
                m.num_params() as u64,
                shape.total_params(VOCAB, CTX),
                "{}",
                shape.label()
            );
            let loss: f32 = m
                .loss(ids(&[1; CTX], 1), ids(&[2; CTX], 1))
                .into_scalar()
                .elem();
            assert!(
                (loss - (VOCAB as f32).ln()).abs() < 0.5,
                "{}: initial loss {loss} far from ln(vocab)",
                shape.label()
            );
        }
    }

    #[test]
    fn no_family_sees_future_tokens_and_the_mlp_sees_only_its_window() {
        for shape in shapes() {
            let m = lm::<Flex>(&shape, 2);
            let mut last = base();
            last[CTX - 1] = (last[CTX - 1] + 1) % VOCAB as i32;
            let d = moved(&m, &last, 0..CTX - 1);
            assert!(d < 1e-5, "{}: earlier logits moved by {d}", shape.label());
            assert!(moved(&m, &last, CTX - 1..CTX) > 1e-4, "{}", shape.label());
            let mut first = base();
            first[0] = (first[0] + 1) % VOCAB as i32;
            match shape.family {
                Family::Mlp { window, .. } => {
                    let beyond = moved(&m, &first, window..CTX);
                    assert!(
                        beyond < 1e-5,
                        "{}: saw past its window ({beyond})",
                        shape.label()
                    );
                    assert!(moved(&m, &first, window - 1..window) > 1e-4);
                }
                // The recurrent and attention families carry the first token to the last.
                _ => assert!(moved(&m, &first, CTX - 1..CTX) > 1e-5, "{}", shape.label()),
            }
        }
    }

    #[test]
    fn token_losses_average_to_the_loss() {
        for shape in shapes() {
            let m = lm::<Flex>(&shape, 4);
            let (x, y) = (ids(&base(), 1), ids(&[5; CTX], 1));
            let per = m.token_losses(x.clone(), y.clone());
            assert_eq!(per.dims(), [1, CTX]);
            let mean: f32 = per.mean().into_scalar().elem();
            let loss: f32 = m.loss(x, y).into_scalar().elem();
            assert!(
                (mean - loss).abs() < 1e-5,
                "{}: {mean} vs {loss}",
                shape.label()
            );
        }
    }

    #[test]
    fn a_few_adam_steps_lower_every_familys_loss() {
        type B = Autodiff<Flex>;
        // A repeating pattern each family can learn from its window.
        let seq: Vec<i32> = (0..4 * (CTX + 1)).map(|i| (i % 5) as i32 * 3).collect();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for w in seq.chunks(CTX + 1) {
            x.extend_from_slice(&w[..CTX]);
            y.extend_from_slice(&w[1..]);
        }
        let batch = |v: &[i32]| -> Tensor<B, 2, Int> {
            Tensor::from_data(TensorData::new(v.to_vec(), [4, CTX]), &FlexDevice)
        };
        for shape in shapes() {
            let mut m = lm::<B>(&shape, 3);
            let mut opt = AdamWConfig::new().init::<B, Lm<B>>();
            let first: f32 = m
                .valid()
                .loss(batch(&x).inner(), batch(&y).inner())
                .into_scalar()
                .elem();
            for _ in 0..30 {
                let loss = m.loss(batch(&x), batch(&y));
                let g = GradientsParams::from_grads(loss.backward(), &m);
                m = opt.step(1e-2, m, g);
            }
            let last: f32 = m
                .valid()
                .loss(batch(&x).inner(), batch(&y).inner())
                .into_scalar()
                .elem();
            assert!(
                last < 0.5 * first,
                "{}: loss {first} -> {last}",
                shape.label()
            );
        }
    }
}
