//! μP's coordinate check: how the size of the model's activations depends on width after a
//! few training steps, under the standard parametrization and under μP (the parametrization
//! itself lives in the model module).
//!
//! Each width trains `steps` AdamW steps at one fixed LR from the same seed on the sweep's
//! training stream (no warmup, no weight decay, no clip: the check isolates the update size),
//! then the mean absolute coordinate (mean |x|) of the residual stream after the embeddings and
//! after each block, and of the logits, is read on the first training batch. Under the
//! standard parametrization Adam moves every hidden weight by ~η, so a width-d layer's output
//! moves by ~η·d and the late activations grow with width; under μP they stay flat (Yang et al.
//! 2022, "Tensor Programs V", Fig. 5 and its `coord_check`). `scalelab coord-check` prints it.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::corpus::Corpus;
use crate::model::{Gpt, GptConfig, Shape};
use crate::plan::RunPlan;
use crate::rng::seeded;
use crate::train;

/// One width's activation sizes after the steps.
#[derive(Debug, Clone)]
pub struct CoordRow {
    pub shape: Shape,
    /// (probe, mean |x|): "embed", "block0", ..., "logits", in forward order.
    pub probes: Vec<(String, f64)>,
}

impl CoordRow {
    /// Mean |x| at one probe.
    pub fn at(&self, probe: &str) -> Option<f64> {
        self.probes.iter().find(|(p, _)| p == probe).map(|p| p.1)
    }
}

/// Train each shape `steps` steps at `lr` (batch `batch`) and measure its activations.
pub fn coord_check<B: AutodiffBackend>(
    shapes: &[Shape],
    steps: usize,
    lr: f64,
    batch: usize,
    corpus: &Corpus,
    device: &B::Device,
) -> Vec<CoordRow> {
    shapes
        .iter()
        .map(|s| one_width::<B>(*s, steps, lr, batch, corpus, device))
        .collect()
}

fn one_width<B: AutodiffBackend>(
    shape: Shape,
    steps: usize,
    lr: f64,
    batch: usize,
    corpus: &Corpus,
    device: &B::Device,
) -> CoordRow {
    let run = RunPlan::new(
        shape,
        corpus.vocab_size,
        corpus.context,
        batch,
        steps.max(1),
    );
    let mut model: Gpt<B> = seeded::<B, _>(device, 0, || {
        let m: Gpt<B> =
            GptConfig::from_shape(&shape, corpus.vocab_size, corpus.context).init(device);
        let one = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i32], [1, 1]), device);
        let _ = m.forward(one);
        m
    });
    let mut optim = AdamWConfig::new()
        .with_beta_2(0.95)
        .with_epsilon(train::ADAM_EPSILON)
        .with_weight_decay(0.0)
        .init::<B, Gpt<B>>();
    let mut reader = corpus.train.reader();
    for step in 0..steps {
        let (x, y) = train::batch::<B>(&run, &mut reader, step, device);
        let grads = GradientsParams::from_grads(model.loss(x, y).backward(), &model);
        model = optim.step(lr, model, grads);
    }
    let inner = model.valid();
    let (x, _) = train::batch::<B::InnerBackend>(&run, &mut reader, 0, device);
    let mut probes = Vec::new();
    let mut record = |name: &str, t: &Tensor<B::InnerBackend, 3>| {
        let v: f64 = t.clone().abs().mean().into_scalar().elem();
        probes.push((name.to_string(), v));
    };
    inner.forward_traced(x, Some(&mut record));
    CoordRow { shape, probes }
}

/// A text table: one line per probe, one column per row (width and parametrization), and
/// the ratio of the widest model's value to the narrowest's.
pub fn table(rows: &[CoordRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut out = format!("{:<8}", "mean|x|");
    for r in rows {
        out += &format!(" {:>18}", r.shape.label());
    }
    out += "  widest/narrowest\n";
    for (probe, _) in &first.probes {
        out += &format!("{probe:<8}");
        let vals: Vec<f64> = rows
            .iter()
            .map(|r| r.at(probe).unwrap_or(f64::NAN))
            .collect();
        for v in &vals {
            out += &format!(" {v:>18.4}");
        }
        out += &format!("  {:>8.2}x\n", vals[vals.len() - 1] / vals[0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{self, CorpusSource, LangKnobs};
    use crate::model::Parametrization;
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};

    /// Logits' mean |x| of the widest over the narrowest width after `steps` steps.
    fn growth(param: Parametrization, corpus: &Corpus) -> (f64, f64) {
        let shapes: Vec<Shape> = [16, 32, 64, 128]
            .iter()
            .map(|&w| Shape::new(w, 2, 2, None).with_param(param))
            .collect();
        let rows = coord_check::<Autodiff<Flex>>(&shapes, 8, 1e-2, 8, corpus, &FlexDevice);
        let ratio = |p: &str| rows[3].at(p).unwrap() / rows[0].at(p).unwrap();
        (ratio("logits"), ratio("block1"))
    }

    #[test]
    fn coordinate_check_separates_mup_from_standard() {
        let source = CorpusSource::Builtin {
            seed: 7,
            lang: LangKnobs::default(),
        };
        let corpus = corpus::load(&source, 32, 256, 0.0).unwrap();
        let (sp_logits, sp_block) = growth(Parametrization::Standard, &corpus);
        let (mup_logits, mup_block) = growth(Parametrization::Mup { base_width: 16 }, &corpus);
        eprintln!("8x width: sp logits {sp_logits:.2}x block1 {sp_block:.2}x; mup logits {mup_logits:.2}x block1 {mup_block:.2}x");
        assert!(
            sp_logits > 3.0,
            "standard: logits grew only {sp_logits:.2}x over 8x width"
        );
        assert!(
            (0.5..2.0).contains(&mup_logits) && (0.5..2.0).contains(&mup_block),
            "μP: logits {mup_logits:.2}x, block1 {mup_block:.2}x over 8x width (want flat)"
        );
    }

    #[test]
    fn mup_at_its_base_width_is_the_standard_model() {
        // The configs are equal (so `init` draws the same parameters from the same RNG state),
        // and the μP model given the standard model's parameters computes the same logits.
        let shape = Shape::new(32, 2, 2, None);
        let mup = shape.with_param(Parametrization::Mup { base_width: 32 });
        let (sp_cfg, mup_cfg) = (
            GptConfig::from_shape(&shape, 256, 16),
            GptConfig::from_shape(&mup, 256, 16),
        );
        let json = |c: &GptConfig| serde_json::to_string(c).unwrap();
        assert_eq!(
            json(&sp_cfg),
            json(&mup_cfg),
            "μP at m = 1 must be configured as standard"
        );
        let idx = || {
            Tensor::<Flex, 2, Int>::from_data(
                TensorData::new((0..32).map(|i| i * 7 % 256).collect::<Vec<i32>>(), [2, 16]),
                &FlexDevice,
            )
        };
        let logits = |m: &Gpt<Flex>| -> Vec<f32> {
            m.forward(idx())
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap()
        };
        let (sp, a) = seeded::<Flex, _>(&FlexDevice, 5, || {
            let m: Gpt<Flex> = sp_cfg.init(&FlexDevice);
            let a = logits(&m);
            (m, a)
        });
        // `init` draws (the biases, then zeroed) even though the record replaces them.
        let mup_model: Gpt<Flex> = seeded::<Flex, _>(&FlexDevice, 5, || {
            mup_cfg.init(&FlexDevice).load_record(sp.into_record())
        });
        assert_eq!(
            a,
            logits(&mup_model),
            "μP at m = 1 must compute exactly the standard model"
        );
    }

    #[test]
    fn mup_init_scales_hidden_weights_by_root_m_and_keeps_embeddings() {
        // Stored hidden weights have std 0.02·√m (used as W'/m), embeddings 0.02 at any width.
        let shape = Shape::new(128, 1, 2, None).with_param(Parametrization::Mup { base_width: 32 });
        let cfg = GptConfig::from_shape(&shape, 256, 16);
        assert_eq!(cfg.width_mult, 4.0);
        let (emb, qkv) = seeded::<Flex, _>(&FlexDevice, 1, || {
            let m: Gpt<Flex> = cfg.init(&FlexDevice);
            m.param_stds()
        });
        assert!((emb - 0.02).abs() < 0.002, "embedding std {emb}");
        assert!(
            (qkv - 0.04).abs() < 0.003,
            "qkv std {qkv} (want 0.02·√4 = 0.04)"
        );
    }
}
