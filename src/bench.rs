//! `scalelab bench`: training throughput (tokens/s) and MFU for fixed shapes (the
//! Transformer's a, b, c and one LSTM and one feed-forward LM at shape a's width, context
//! and batch), plus the machine's measured matmul peak that MFU is relative to.
//!
//! MFU = tokens/s × training FLOPs per token / measured peak, with FLOPs per token
//! = 6·(N_non-embedding + vocab·d) + 12·n_layer·context·d (PaLM's convention: every matmul,
//! the unembedding and attention included). The peak is the best rate of square f32
//! matmuls (1024×1024) on the same backend.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::corpus::{self, CorpusSource};
use crate::device::DeviceChoice;
use crate::plan::{RunPlan, Shape};
use crate::spec::Schedule;

/// Best matmul rate (FLOP/s) over about `seconds`.
pub fn matmul_peak<B: Backend>(device: &B::Device, seconds: f64) -> f64 {
    let n = 1024;
    let a = Tensor::<B, 2>::random([n, n], burn::tensor::Distribution::Default, device);
    let b = Tensor::<B, 2>::random([n, n], burn::tensor::Distribution::Default, device);
    let reps = 4;
    let chain = || {
        let t0 = Instant::now();
        let mut c = a.clone();
        for _ in 0..reps {
            c = c.matmul(b.clone()).mul_scalar(1e-3);
        }
        let _ = c.slice([0..1, 0..1]).into_data();
        t0.elapsed().as_secs_f64()
    };
    // Warm up with the timed chain itself: thread pools, and on the GPU backends kernel
    // compilation, fusion and autotune, which would otherwise land in the first timing.
    chain();
    chain();
    let mut best = 0.0f64;
    let t_all = Instant::now();
    while t_all.elapsed().as_secs_f64() < seconds || best == 0.0 {
        best = best.max(reps as f64 * 2.0 * (n * n * n) as f64 / chain());
    }
    best
}

/// One benchmark shape.
pub struct BenchShape {
    pub name: &'static str,
    pub shape: Shape,
    pub context: usize,
    pub batch: usize,
}

/// The fixed shapes: Transformers a, b, c; `lstm` (d64, 2 layers) and `mlp` (Bengio's LM:
/// d64 embeddings of the previous 8 tokens, one tanh layer of 256) at shape a's context
/// and batch.
pub fn shapes() -> Vec<BenchShape> {
    vec![
        BenchShape {
            name: "a",
            shape: Shape::new(64, 2, 2, None),
            context: 64,
            batch: 32,
        },
        BenchShape {
            name: "b",
            shape: Shape::new(128, 4, 4, None),
            context: 128,
            batch: 16,
        },
        BenchShape {
            name: "c",
            shape: Shape::new(256, 6, 8, None),
            context: 128,
            batch: 8,
        },
        BenchShape {
            name: "lstm",
            shape: Shape::lstm(64, 2),
            context: 64,
            batch: 32,
        },
        BenchShape {
            name: "mlp",
            shape: Shape::mlp(64, 1, 256, 8, false),
            context: 64,
            batch: 32,
        },
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub shape: String,
    pub family: crate::model::FamilyKind,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub context: usize,
    pub batch: usize,
    pub n_params: u64,
    pub steps: usize,
    /// Runs trained at once as one pack (1: a single run); tokens/s counts all of them.
    pub runs: usize,
    pub tokens_per_s: f64,
    pub flops_per_token: f64,
    pub achieved_flops: f64,
    pub matmul_peak_flops: f64,
    pub mfu: f64,
    pub backend: String,
    /// `fused` (burn's attention op) or `explicit` (matmul, mask, softmax, matmul); `-` for
    /// the families without attention.
    pub attention: String,
}

/// Time `steps` training steps (after 3 warm-up steps) of one shape: one run, or `pack` runs
/// (seeds 0..pack) trained as one pack (`train::pack`; tokens/s then counts every run's).
pub fn bench_shape<B: AutodiffBackend>(
    s: &BenchShape,
    device: &B::Device,
    seconds: f64,
    peak: f64,
    backend: &str,
    fused_attention: bool,
    pack: usize,
) -> BenchResult {
    let corpus = corpus::load(
        &CorpusSource::Builtin {
            seed: 1,
            lang: Default::default(),
        },
        s.context,
        s.context,
        0.05,
    )
    .expect("built-in corpus");
    let mut run = RunPlan::new(s.shape, 256, s.context, s.batch, 3);
    run.id = format!("bench-{}", s.name);
    run.data.eval_interval = usize::MAX;
    run.optim.lr = 1e-3;
    run.schedule.kind = Schedule::Constant;
    run.schedule.warmup_steps = 1;
    // Calibrate the step count from a short run, then time a run of ~`seconds`.
    let train = |run: &RunPlan| time_training::<B>(run, &corpus, device, fused_attention, pack);
    let (warm_s, _) = train(&run);
    let per_step = warm_s / 3.0;
    run.data.steps = ((seconds / per_step.max(1e-6)) as usize).clamp(5, 2000);
    let (_, tokens_per_s) = train(&run);
    let fpt = s.shape.flops_per_token_full(256, s.context);
    BenchResult {
        shape: if pack > 1 {
            format!("{}x{pack}", s.name)
        } else {
            s.name.into()
        },
        family: s.shape.family.kind(),
        d_model: s.shape.d_model,
        n_layer: s.shape.n_layer,
        n_head: s.shape.n_head,
        context: s.context,
        batch: s.batch,
        n_params: s.shape.non_embedding_params(),
        steps: run.data.steps,
        runs: pack.max(1),
        tokens_per_s,
        flops_per_token: fpt,
        achieved_flops: tokens_per_s * fpt,
        matmul_peak_flops: peak,
        mfu: tokens_per_s * fpt / peak,
        backend: backend.into(),
        attention: match (s.shape.family.is_transformer(), fused_attention) {
            (false, _) => "-",
            (true, true) => "fused",
            (true, false) => "explicit",
        }
        .into(),
    }
}

/// Train `run` alone, or `pack` copies of it (seeds 0..pack) as one pack: (wall seconds,
/// tokens/s of all runs together).
fn time_training<B: AutodiffBackend>(
    run: &RunPlan,
    corpus: &corpus::Corpus,
    device: &B::Device,
    fused_attention: bool,
    pack: usize,
) -> (f64, f64) {
    if pack < 2 {
        let out = crate::train::train_run_with::<B>(
            run,
            corpus,
            device,
            fused_attention,
            None,
            &mut |_| {},
        );
        return (out.wall_s, out.tokens_per_s);
    }
    let runs: Vec<RunPlan> = (0..pack as u64)
        .map(|k| {
            let mut r = run.clone();
            (r.data.seed, r.id) = (k, format!("{}-{k}", run.id));
            r
        })
        .collect();
    let refs: Vec<&RunPlan> = runs.iter().collect();
    let outs = crate::train::pack::train_packed::<B>(&refs, corpus, device, &mut |_| {});
    (outs[0].wall_s, outs.iter().map(|o| o.tokens_per_s).sum())
}

/// Render results as a table.
pub fn table(results: &[BenchResult]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if let Some(r) = results.first() {
        let _ = writeln!(
            s,
            "backend: {}   measured matmul peak: {:.1} GFLOP/s",
            r.backend,
            r.matmul_peak_flops / 1e9
        );
    }
    let _ = writeln!(
        s,
        "{:<6} {:>5} {:>3} {:>3} {:>5} {:>5} {:>10} {:>7} {:>12} {:>10} {:>7}  {}",
        "shape",
        "d",
        "L",
        "h",
        "ctx",
        "batch",
        "N",
        "steps",
        "tokens/s",
        "GFLOP/s",
        "MFU",
        "attention"
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:<6} {:>5} {:>3} {:>3} {:>5} {:>5} {:>10} {:>7} {:>12.0} {:>10.2} {:>6.1}%  {}",
            r.shape,
            r.d_model,
            r.n_layer,
            r.n_head,
            r.context,
            r.batch,
            r.n_params,
            r.steps,
            r.tokens_per_s,
            r.achieved_flops / 1e9,
            100.0 * r.mfu,
            r.attention
        );
    }
    s
}

/// `--attention`: the attention implementation `bench` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attention {
    // burn's attention op, what training uses.
    Fused,
    // matmul, mask, softmax, matmul.
    Explicit,
    // Both: a before/after table.
    Both,
}

impl Attention {
    /// The implementations to time, in table order (`true`: fused).
    fn modes(self) -> Vec<bool> {
        match self {
            Attention::Both => vec![false, true],
            Attention::Explicit => vec![false],
            Attention::Fused => vec![true],
        }
    }
}

/// `scalelab bench`: time the named shapes (`a`, `b`, `c`) on a device, then print a table
/// (or JSON).
pub fn run_cli(
    device: DeviceChoice,
    names: &[String],
    seconds: f64,
    attention: Attention,
    pack: usize,
    json: bool,
) -> anyhow::Result<()> {
    device.ensure_usable()?;
    if pack > 1 && attention != Attention::Fused {
        crate::bail_user!("--pack: packs use the fused attention op; leave --attention at fused");
    }
    if let Some(s) = names
        .iter()
        .find(|s| !shapes().iter().any(|b| b.name == *s))
    {
        crate::bail_user!("--shapes: unknown shape {s:?}; use a, b, c, lstm and/or mlp");
    }
    let results: Vec<BenchResult> = crate::with_backend!(device, |B, dev| {
        bench_all::<B>(
            &dev,
            &device.backend_name(),
            names,
            seconds,
            attention,
            pack,
            !json,
        )
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    Ok(())
}

/// Every named shape in every attention mode, after measuring the matmul peak; a line per
/// result on stderr when `verbose`.
fn bench_all<B: AutodiffBackend>(
    dev: &B::Device,
    backend: &str,
    names: &[String],
    seconds: f64,
    attention: Attention,
    pack: usize,
    verbose: bool,
) -> Vec<BenchResult> {
    let peak = matmul_peak::<B::InnerBackend>(dev, 2.0);
    let modes = attention.modes();
    shapes()
        .iter()
        .filter(|b| names.iter().any(|s| s == b.name))
        // Attention modes only differ for the Transformer.
        .flat_map(|b| {
            let ms = if b.shape.family.is_transformer() {
                &modes[..]
            } else {
                &modes[..1]
            };
            ms.iter().map(move |&m| (b, m))
        })
        // With --pack N, each Transformer shape alone, then N of it as one pack.
        .flat_map(|(b, fused)| {
            let packs = if pack > 1 && b.shape.family.is_transformer() {
                vec![1, pack]
            } else {
                vec![1]
            };
            packs.into_iter().map(move |k| (b, fused, k))
        })
        .map(|(b, fused, k)| {
            let r = bench_shape::<B>(b, dev, seconds, peak, backend, fused, k);
            if verbose {
                eprintln!(
                    "scalelab: shape {}: {:.0} tokens/s",
                    r.shape, r.tokens_per_s
                );
            }
            r
        })
        .collect()
}
