//! `scalelab bench`: training throughput (tokens/s) and MFU for fixed shapes (the
//! Transformer's a, b, c for the CPU, d (25M) and e (85M, GPT-2 small's body) for GPUs, and
//! one LSTM and one feed-forward LM at shape a's width, context and batch), plus the
//! machine's measured matmul peak that MFU is relative to, and, on a known GPU, MFU against
//! the card's datasheet peak (`peaks`); and `plan --measure`'s timing of a sweep's own
//! training configurations ([`time_configs`]).
//!
//! MFU = tokens/s × training FLOPs per token / peak, with FLOPs per token
//! = 6·(N_non-embedding + vocab·d) + 12·n_layer·context·d (PaLM's convention: every matmul,
//! the unembedding and attention included). The measured peak is the best rate of square
//! matmuls (1024×1024) on the same backend in the run's precision.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::corpus::{self, CorpusSource};
use crate::device::DeviceChoice;
use crate::eta::{Role, StepTiming, TimingKey};
use crate::peaks::DatasheetPeak;
use crate::plan::{RunPlan, Shape};
use crate::record::Status;
use crate::spec::{Precision, Schedule};

/// Best f32 matmul rate (FLOP/s) over about `seconds`.
pub fn matmul_peak<B: Backend>(device: &B::Device, seconds: f64) -> f64 {
    matmul_peak_at::<B>(device, seconds, Precision::F32)
}

/// Best matmul rate (FLOP/s) over about `seconds`, with both operands in `precision`.
pub fn matmul_peak_at<B: Backend>(device: &B::Device, seconds: f64, precision: Precision) -> f64 {
    let n = 1024;
    let random = || {
        let t = Tensor::<B, 2>::random([n, n], burn::tensor::Distribution::Default, device);
        match precision {
            Precision::F32 => t,
            Precision::Bf16 => t.cast(burn::tensor::FloatDType::BF16),
            Precision::F16 => t.cast(burn::tensor::FloatDType::F16),
        }
    };
    // Drawn under the RNG's lock, as every draw in the process is (`rng`).
    let (a, b) = crate::rng::seeded::<B, _>(device, 0, || (random(), random()));
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

/// The fixed shapes: Transformers a, b, c (sizes this project trains on the CPU), d (25M
/// non-embedding parameters) and e (85M: GPT-2 small's body at its context of 1024), sizes
/// for a GPU; `lstm` (d64, 2 layers) and `mlp` (Bengio's LM: d64 embeddings of the previous
/// 8 tokens, one tanh layer of 256) at shape a's context and batch.
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
            name: "d",
            shape: Shape::new(512, 8, 8, None),
            context: 512,
            batch: 16,
        },
        BenchShape {
            name: "e",
            shape: Shape::new(768, 12, 12, None),
            context: 1024,
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
    /// Against the measured matmul peak.
    pub mfu: f64,
    /// Where the card's peak comes from (a datasheet, or `--peak-tflops`), when known.
    pub datasheet: Option<String>,
    pub datasheet_peak_flops: Option<f64>,
    /// Against the card's peak.
    pub mfu_datasheet: Option<f64>,
    pub precision: Precision,
    pub backend: String,
    /// `fused` (burn's attention op) or `explicit` (matmul, mask, softmax, matmul); `-` for
    /// the families without attention.
    pub attention: String,
}

/// What every shape of one `bench` call shares: the device's measured matmul peak and the
/// card's peak (when known), the backend's name, the precision and the seconds per shape.
pub struct BenchSetup {
    pub seconds: f64,
    pub peak: f64,
    pub datasheet: Option<DatasheetPeak>,
    pub backend: String,
    pub precision: Precision,
}

/// Time `steps` training steps (after 3 warm-up steps) of one shape: one run, or `pack` runs
/// (seeds 0..pack) trained as one pack (`train::pack`; tokens/s then counts every run's).
pub fn bench_shape<B: AutodiffBackend>(
    s: &BenchShape,
    device: &B::Device,
    setup: &BenchSetup,
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
    run.precision = setup.precision;
    // Calibrate the step count from a short run, then time a run of ~`seconds`.
    let train = |run: &RunPlan| time_training::<B>(run, &corpus, device, fused_attention, pack);
    let (warm_s, _) = train(&run);
    let per_step = warm_s / 3.0;
    run.data.steps = ((setup.seconds / per_step.max(1e-6)) as usize).clamp(5, 2000);
    let (_, tokens_per_s) = train(&run);
    let fpt = s.shape.flops_per_token_full(256, s.context);
    let sheet = setup.datasheet.as_ref();
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
        matmul_peak_flops: setup.peak,
        mfu: tokens_per_s * fpt / setup.peak,
        datasheet: sheet.map(|d| d.source.clone()),
        datasheet_peak_flops: sheet.map(|d| d.flops),
        mfu_datasheet: sheet.map(|d| tokens_per_s * fpt / d.flops),
        precision: setup.precision,
        backend: setup.backend.clone(),
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
    let outs = crate::train::pack::train_packed::<B>(&refs, corpus, device, None, &mut |_| {});
    (outs[0].wall_s, outs.iter().map(|o| o.tokens_per_s).sum())
}

/// `plan --measure`: the seconds per optimizer step and per eval, the set-up and the loss
/// predictions of each distinct training configuration ([`TimingKey`]) among `runs` (timed on
/// a lone run where the configuration has one), on `device`, by [`time_config`]. With
/// `workers` > 1 every timing trains that many copies at once, each on its own pool of
/// `threads` CPU threads, as `run --workers` does (the times include their contention). A line
/// per configuration on stderr; a configuration whose short runs do not finish `ok` is left
/// out (its runs fall back to the cost model).
pub fn time_configs<B: AutodiffBackend>(
    runs: &[(&RunPlan, Role)],
    corpus: &corpus::Corpus,
    device: &B::Device,
    workers: usize,
    threads: usize,
) -> Vec<(TimingKey, StepTiming)> {
    let mut keys: Vec<(TimingKey, &RunPlan)> = Vec::new();
    for &(r, role) in runs {
        let k = TimingKey::of(r);
        match keys.iter_mut().find(|(x, _)| *x == k) {
            Some(slot) if role == Role::Lone => slot.1 = r,
            Some(_) => {}
            None => keys.push((k, r)),
        }
    }
    let n = keys.len();
    let mut out = Vec::new();
    for (i, (key, r)) in keys.into_iter().enumerate() {
        let what = format!(
            "{}/{n} {} batch {} ctx {}",
            i + 1,
            key.shape.label(),
            key.batch_size,
            key.context
        );
        let time =
            |steps, evals| time_copies::<B>(r, steps, evals, corpus, device, workers, threads);
        match time_config(time, r) {
            Some(t) => {
                eprintln!(
                    "scalelab: timed {what}: {:.1} ms/step, {:.1} ms/eval, {:.2} s set-up, {:.2} s of loss predictions",
                    1e3 * t.per_step_s,
                    1e3 * t.per_eval_s,
                    t.setup_s,
                    t.predict_s
                );
                out.push((key, t));
            }
            None => eprintln!(
                "scalelab: could not time {what}: a short run did not finish ok; its runs' ETA uses the cost model"
            ),
        }
    }
    out
}

/// One configuration's timing from `time(steps, eval_interval)` (seconds of a short run):
/// a warm-up run (kernels, autotune), `W` steps with one eval, `W` steps with an eval after
/// every step, `W + K` steps with one eval (K sized for ~0.5 s of steps). The step time is
/// the last run's extra time over K steps, the eval time the third's over W − 1 evals, the
/// set-up what the second spent beyond its steps and eval. `None` when a run failed.
fn time_config(time: impl Fn(usize, usize) -> Option<f64>, r: &RunPlan) -> Option<StepTiming> {
    const W: usize = 4;
    time(W, usize::MAX)?;
    let short = time(W, usize::MAX)?;
    let evals = time(W, 1)?;
    let per_eval_s = ((evals - short) / (W - 1) as f64).max(0.0);
    let k = ((0.5 / (short / W as f64).max(1e-6)) as usize).clamp(8, 400);
    let per_step_s = ((time(W + k, usize::MAX)? - short) / k as f64).max(1e-9);
    Some(StepTiming {
        per_step_s,
        per_eval_s,
        setup_s: (short - W as f64 * per_step_s - per_eval_s).max(0.0),
        predict_s: prediction_seconds(r),
    })
}

/// Seconds `steps` steps of `r` take (evaluated every `eval_interval` and at the end), the
/// mean over `workers` copies trained at once on pools of `threads` threads; `None` unless
/// every copy finished `ok`. The LR is capped at 1e-3 so no copy diverges early; nothing is
/// written (no checkpoints).
fn time_copies<B: AutodiffBackend>(
    r: &RunPlan,
    steps: usize,
    eval_interval: usize,
    corpus: &corpus::Corpus,
    device: &B::Device,
    workers: usize,
    threads: usize,
) -> Option<f64> {
    let mut run = r.clone();
    run.id = format!("measure-{}", r.id);
    (run.data.steps, run.data.eval_interval) = (steps, eval_interval);
    run.schedule.warmup_steps = run.schedule.warmup_steps.min(1);
    run.optim.lr = run.optim.lr.min(1e-3);
    let one = || {
        let o = crate::train::train_run::<B>(&run, corpus, device, &mut |_| {});
        (o.status == Status::Ok && o.wall_s.is_finite()).then_some(o.wall_s)
    };
    if workers < 2 {
        // A panic inside training is a failed timing, not the end of `plan`. On the pool, as
        // the executor trains (`train::on_pool`).
        let caught = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(one));
        return crate::train::on_pool(None, caught).ok().flatten();
    }
    let walls: Vec<Option<f64>> = std::thread::scope(|s| {
        let copies: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(
                    || match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                        Ok(pool) => pool.install(one),
                        Err(_) => one(),
                    },
                )
            })
            .collect();
        copies
            .into_iter()
            .map(|c| c.join().ok().flatten())
            .collect()
    });
    let walls: Option<Vec<f64>> = walls.into_iter().collect();
    walls.map(|w| w.iter().sum::<f64>() / workers as f64)
}

/// Seconds the executor spends on `run`'s predictions of its final loss (the curve-law fits
/// at [`crate::curves::PREDICT_AT`]), timed on a smooth synthetic curve of its length.
fn prediction_seconds(run: &RunPlan) -> f64 {
    let start = Instant::now();
    let mut p = crate::curves::FinalPredictor::new(run, 0);
    for step in 1..=run.data.steps {
        p.observe(step, 2.0 + 3.0 * (step as f64).powf(-0.3));
    }
    start.elapsed().as_secs_f64()
}

/// Render results as a table: MFU against the measured matmul peak, and against the card's
/// peak where one is known ("–" where not).
pub fn table(results: &[BenchResult]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if let Some(r) = results.first() {
        let _ = writeln!(
            s,
            "backend: {}   precision: {}   measured matmul peak: {:.1} GFLOP/s",
            r.backend,
            r.precision.as_str(),
            r.matmul_peak_flops / 1e9
        );
        let _ = match (&r.datasheet, r.datasheet_peak_flops) {
            (Some(src), Some(f)) => writeln!(s, "card peak: {:.1} TFLOP/s ({src})", f / 1e12),
            _ => writeln!(s, "card peak: unknown (MFU/card needs --peak-tflops)"),
        };
    }
    let _ = writeln!(
        s,
        "{:<6} {:>5} {:>3} {:>3} {:>5} {:>5} {:>10} {:>7} {:>12} {:>10} {:>7} {:>9}  {}",
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
        "MFU/card",
        "attention"
    );
    for r in results {
        let card = r
            .mfu_datasheet
            .map_or("–".to_string(), |m| format!("{:.1}%", 100.0 * m));
        let _ = writeln!(
            s,
            "{:<6} {:>5} {:>3} {:>3} {:>5} {:>5} {:>10} {:>7} {:>12.0} {:>10.2} {:>6.1}% {:>9}  {}",
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
            card,
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

/// `scalelab bench`'s options (its flags).
pub struct BenchOptions {
    pub device: DeviceChoice,
    pub shapes: Vec<String>,
    pub seconds: f64,
    pub attention: Attention,
    pub pack: usize,
    pub precision: Precision,
    /// The card's peak by hand (TFLOP/s), for MFU/card where the datasheet table lacks it.
    pub peak_tflops: Option<f64>,
    pub json: bool,
}

/// `scalelab bench`: time the named shapes on a device, then print a table (or JSON).
pub fn run_cli(o: &BenchOptions) -> anyhow::Result<()> {
    o.device.ensure_usable()?;
    if o.pack > 1 && o.attention != Attention::Fused {
        crate::bail_user!("--pack: packs use the fused attention op; leave --attention at fused");
    }
    if let Some(s) = o
        .shapes
        .iter()
        .find(|s| !shapes().iter().any(|b| b.name == *s))
    {
        crate::bail_user!("--shapes: unknown shape {s:?}; use a, b, c, d, e, lstm and/or mlp");
    }
    let results: Vec<BenchResult> =
        crate::with_backend!(o.device, |B, dev| bench_all::<B>(&dev, o))?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    Ok(())
}

/// The card's peak: `--peak-tflops` if given, else, on CUDA, the datasheet figure of the card
/// `nvidia-smi` names (a note on stderr when the card is not in the table).
fn card_peak(o: &BenchOptions) -> Option<DatasheetPeak> {
    if let Some(t) = o.peak_tflops {
        return Some(DatasheetPeak {
            source: format!("--peak-tflops {t}"),
            flops: t * 1e12,
        });
    }
    let DeviceChoice::Cuda(k) = o.device else {
        return None;
    };
    let name = crate::peaks::nvidia_gpu_name(k)?;
    let peak = crate::peaks::datasheet_peak(&name, o.precision);
    if peak.is_none() {
        eprintln!(
            "scalelab: no datasheet peak for {name:?} in {}: give --peak-tflops for MFU/card",
            o.precision.as_str()
        );
    }
    peak
}

/// Every named shape in every attention mode, after measuring the matmul peak; a line per
/// result on stderr unless the output is JSON.
fn bench_all<B: AutodiffBackend>(
    dev: &B::Device,
    o: &BenchOptions,
) -> anyhow::Result<Vec<BenchResult>> {
    let backend = o.device.backend_name();
    if !crate::train::supports_precision::<B>(dev, o.precision) {
        crate::bail_user!(
            "--precision {} is not supported by {backend}; use --precision f32",
            o.precision.as_str()
        );
    }
    let setup = BenchSetup {
        seconds: o.seconds,
        peak: matmul_peak_at::<B::InnerBackend>(dev, 2.0, o.precision),
        datasheet: card_peak(o),
        backend,
        precision: o.precision,
    };
    let modes = o.attention.modes();
    let pack = o.pack;
    let results = shapes()
        .iter()
        .filter(|b| o.shapes.iter().any(|s| s == b.name))
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
            let r = bench_shape::<B>(b, dev, &setup, fused, k);
            if !o.json {
                eprintln!(
                    "scalelab: shape {}: {:.0} tokens/s",
                    r.shape, r.tokens_per_s
                );
            }
            r
        })
        .collect();
    Ok(results)
}
