//! The `scalelab` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scalelab::device::DeviceChoice;
use scalelab::error::{is_user_error, user};
use scalelab::fit::{self, Columns, Dataset, FitOptions, Holdout};
use scalelab::results::ResultsFolder;
use scalelab::spec::{Precision, SpecSource};
use scalelab::{bench, report, slurm, sweep};

/// Scaling-law experiments on language models: a YAML sweep trains real LMs (Transformers,
/// and LSTM / feed-forward / n-gram baselines; burn on the CPU, CUDA or Vulkan), logs every
/// run to Parquet, and fits power laws to the results.
///
/// Typical use:
///   scalelab plan sweeps/quick.yaml      # the runs, their N, D, FLOPs and an ETA
///   scalelab run sweeps/quick.yaml       # train (resumes if interrupted), write results/quick/
///   scalelab fit results/quick/          # Chinchilla + Kaplan + IsoFLOP fits, fits.json
///   scalelab report results/quick/       # plots (PNG, SVG), report.md, report.html
///
/// On a Slurm cluster:
///   scalelab submit sweeps/x.yaml --partition gpu --gpus-per-task 1 --time 04:00:00
///   scalelab status results/x/           # per run: done / running / queued / pending / failed
///   scalelab collect results/x/          # merge the per-run files into runs.parquet
///
/// Exit codes: 0 success, 2 bad input (spec, flags, data files), 1 anything else.
#[derive(Parser)]
#[command(name = "scalelab", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train every run of a sweep that is not finished yet, writing runs.parquet and
    /// curves.parquet to the output folder (default results/<name>/). Running the same
    /// command again skips finished runs, so an interrupted sweep resumes where it stopped
    /// (a run that was cut off mid-way resumes from its last checkpoint). Also writes n-gram
    /// baselines (baselines.parquet), then fits and reports. With no SWEEP, runs the built-in
    /// quick sweep (identical to sweeps/quick.yaml).
    Run(RunArgs),
    /// Submit the sweep's pending runs to Slurm as one job array (one task per run; a
    /// cooldown-branch group is one task). Each task runs `scalelab run-one` and writes its
    /// own result file; tasks are requeueable and resume from their last checkpoint.
    /// Options come from the spec's `slurm:` section; flags override it.
    Submit(SubmitArgs),
    /// Train one unit of a sweep in this process and write its own result files
    /// (runs/<run-id>.parquet, curves/<run-id>.parquet). This is what each Slurm array task
    /// runs; a finished unit, or one another process is training, is left alone.
    RunOne(RunOneArgs),
    /// State of every run of a sweep: done, diverged, pruned, failed, running, queued or pending
    /// (with checkpoint progress), from the result files, checkpoints and locks, and from
    /// squeue/sacct for submitted job arrays when they are available.
    Status {
        /// The sweep's results folder.
        results: PathBuf,
    },
    /// n-gram baselines: interpolated Kneser-Ney models (orders from the spec's
    /// `baselines.orders`, default 1-5) trained on the first D training tokens the runs saw,
    /// for several D, scored on the sweep's eval windows; writes baselines.parquet (nats/token
    /// and bits/byte). `run` does this at the end of a sweep; this command (re)computes them.
    Baselines {
        /// The sweep's results folder.
        results: PathBuf,
    },
    /// Merge the per-run result files (runs/*.parquet, curves/*.parquet) into runs.parquet
    /// and curves.parquet: every run once, the newest result of a retried run kept.
    Collect {
        /// The sweep's results folder.
        results: PathBuf,
    },
    /// Dry run: print the table of runs (shape, N, D, C = 6ND, steps, budget, ETA,
    /// status) without training anything. A run's ETA is a time per optimizer step plus its
    /// FLOPs at a rate, fitted on the folder's finished runs, else the spec's `flops_per_s`,
    /// else a CPU default measured on the README's machine; `--measure` times each
    /// configuration on this device instead. With `budget_hours` in the spec it warns when
    /// the sweep needs longer.
    Plan {
        /// Sweep spec (YAML). Default: the embedded quick sweep.
        sweep: Option<PathBuf>,
        /// Output folder to check for finished runs.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Show how `run --pack` would pack the pending runs (see `run --help`).
        #[arg(long, value_name = "auto|off|N", default_value = "auto", value_parser = sweep::Packing::parse, allow_negative_numbers = true)]
        pack: sweep::Packing,
        /// Time a few training steps and evals of each pending configuration (shape, batch,
        /// context, precision) on the spec's device, for an ETA of this machine (with
        /// --workers K, K copies at once on split threads, as `run --workers K` trains; about
        /// 25 s for the main job on 2 cores); nothing is written
        #[arg(long)]
        measure: bool,
        /// Also give the ETA's wall clock on K workers (`run --workers K`: longest runs first)
        #[arg(long, value_name = "K", default_value_t = 1, value_parser = at_least_one, allow_negative_numbers = true)]
        workers: usize,
    },
    /// Fit scaling laws: Approach 3 (Chinchilla, L = E + A/N^alpha + B/D^beta, summed
    /// Huber on log-loss, L-BFGS from 4,500 starts), Kaplan forms, Approach 2 (IsoFLOP
    /// parabolas), Approach 1 (curve envelope, from a results folder), bootstrap intervals
    /// and the compute-optimal allocation. Input: a results folder, or a table with --input.
    Fit {
        /// A sweep's results folder (with runs.parquet). Writes fits.json into it.
        results: Option<PathBuf>,
        #[command(flatten)]
        args: FitArgs,
        /// Print one JSON object (top-level keys E, A, B, alpha, beta, objective, ...).
        #[arg(long)]
        json: bool,
    },
    /// Scaling plots (PNG and SVG) and a report (report.md and a self-contained report.html)
    /// with the fitted laws, their intervals, the agreement of Approaches 1-3, the held-out
    /// prediction error and an extrapolation table. Writes fits.json with the same numbers.
    Report {
        /// A sweep's results folder; the report is written into it.
        results: Option<PathBuf>,
        #[command(flatten)]
        args: FitArgs,
        /// Plot formats, comma separated.
        #[arg(long, default_value = "png,svg", value_delimiter = ',', value_parser = plot_format)]
        format: Vec<report::plots::Format>,
        /// Output folder (default: the results folder; required with --input).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Loss-curve laws: fit schedule-aware laws of loss over whole training curves (Tissue
    /// et al. 2024, L = L0 + A*S1^-alpha - C*S2; the Multi-Power Law, Luo et al. 2025) and
    /// check how far they predict: each run's final loss from its first --fraction of steps;
    /// per group (model size), the longest run's final loss from the shorter runs; and each
    /// run's final loss and curve from one or two other runs of its group, another schedule
    /// first (cosine <-> WSD, other cooldown lengths, other lengths). Input: one or more
    /// results folders (train loss of every step; a single folder gets curve_laws.json) or a
    /// table with --input (one row per logged eval, the LR in a column).
    Curves(CurvesArgs),
    /// Hyperparameter laws: locate each (N, D) group's optimal learning rate and batch size
    /// from its grid of runs (a quadratic in ln lr, ln bs around the best run; the best run
    /// where the optimum is at the grid's edge), fit lr* = c N^a D^b, bs* = c D^b and the
    /// compute-only forms with bootstrap intervals, and score the groups of the largest N,
    /// held out, at the laws' settings. Input: a results folder (writes hp_laws.json into
    /// it) or a table with --input.
    Hp(HpArgs),
    /// Benchmark training throughput (tokens/s) and MFU against the measured matmul peak
    /// (and, on a known GPU or with --peak-tflops, against the card's peak), for fixed
    /// Transformer shapes a (d64 L2 h2 ctx64 batch32), b (d128 L4 h4 ctx128 b16), c (d256 L6
    /// h8 ctx128 b8), and, with --shapes, d (25M) and e (85M) for GPUs and the other families
    /// at shape a's context and batch: lstm (d64, 2 layers) and mlp (Bengio's LM: d64
    /// embeddings of 8 tokens, one tanh layer of 256). Not a test: prints a table (or JSON).
    Bench(BenchArgs),
    /// μP coordinate check: trains each width a few AdamW steps at one LR (CPU, built-in
    /// corpus) under the standard parametrization and under μP, and prints the mean |x| of
    /// the residual stream after the embeddings and each block, and of the logits, with the
    /// widest/narrowest ratio. Under μP the columns stay flat across widths; under the
    /// standard parametrization the late activations grow with width.
    CoordCheck(CoordArgs),
    /// Design power by simulation: how well a sweep design (SWEEP) would pin down the law if
    /// the corpus followed a finished sweep's law exactly (--from DIR: its law with E pinned
    /// to its floor when the folder has floor.json, else free) and every run scattered as
    /// DIR's seed replicates did (their deviations from their point's seed mean, drawn per
    /// budget). Fits --draws simulated sweeps as `fit` fits a results folder (bootstrap, the
    /// largest budget held out, E pinned beside E free; no backtests) and prints each
    /// figure's median and 10-90% range over the draws: interval widths of alpha and beta,
    /// held-out error of runs and of seed means, free E against the true E, the exponent a.
    /// Trains nothing.
    Power(PowerCmd),
}

// `power` options.
#[derive(clap::Args)]
struct PowerCmd {
    /// The design: a sweep spec (YAML). Its planned runs, every seed, are simulated.
    sweep: PathBuf,
    /// A finished sweep's results folder with seed replicates: the true law and the noise.
    #[arg(long)]
    from: PathBuf,
    /// Simulated sweeps (at least 1).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    draws: usize,
    /// Bootstrap resamples per simulated fit.
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Seed of the noise draws and of each fit's bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object (the summary and every draw's figures).
    #[arg(long)]
    json: bool,
}

// `coord-check` options.
#[derive(clap::Args)]
struct CoordArgs {
    /// Widths (d_model) to compare; the first is μP's base width.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 128, 256])]
    widths: Vec<usize>,
    /// Layers of every model.
    #[arg(long, default_value_t = 2)]
    n_layer: usize,
    /// Attention heads (fixed across widths: head width grows with d_model).
    #[arg(long, default_value_t = 2)]
    n_head: usize,
    /// AdamW steps before measuring.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// The one learning rate every width trains at.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// Context length (tokens) of the training steps.
    #[arg(long, default_value_t = 64)]
    context: usize,
    /// Batch size (sequences) of the training steps.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

// `hp` options.
#[derive(clap::Args)]
struct HpArgs {
    /// A sweep's results folder (with runs.parquet; columns n_params, tokens, lr, batch_size,
    /// eval_loss).
    results: Option<PathBuf>,
    /// A CSV or Parquet table instead: one row per run.
    #[arg(long, conflicts_with = "results")]
    input: Option<PathBuf>,
    /// Parameter-count column (N).
    #[arg(long, default_value = "N")]
    n_col: String,
    /// Training-tokens column (D).
    #[arg(long, default_value = "D")]
    d_col: String,
    /// Peak learning-rate column.
    #[arg(long, default_value = "lr")]
    lr_col: String,
    /// Batch-size column (any unit; the law is in that unit).
    #[arg(long, default_value = "bs")]
    bs_col: String,
    /// Final-loss column (e.g. Step Law's `smooth loss`).
    #[arg(long, default_value = "loss")]
    loss_col: String,
    /// Hold out the groups of the K largest N and score them at the laws' settings.
    #[arg(long, default_value_t = 1, value_parser = whole_number, allow_negative_numbers = true, alias = "holdout")]
    hold_out: usize,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
}

// `curves` options.
#[derive(clap::Args)]
struct CurvesArgs {
    /// A sweep's results folder (with curves.parquet), or several: runs of one shape in
    /// different folders then form one group (e.g. a cosine and a WSD sweep of the same
    /// shapes, for the transfer check across schedules).
    results: Vec<PathBuf>,
    /// A CSV or Parquet table instead: one row per logged eval.
    #[arg(long, conflicts_with = "results")]
    input: Option<PathBuf>,
    /// Columns that together name a run (comma separated), e.g. size,chinchilla_multiple,rerun.
    #[arg(long, value_delimiter = ',', default_value = "run_id")]
    run_col: Vec<String>,
    /// Column grouping runs that share a law in the longest-run check (e.g. the model size).
    #[arg(long)]
    group_col: Option<String>,
    /// Step column.
    #[arg(long, default_value = "step")]
    step_col: String,
    /// Learning-rate column (the LR at that step; steps between rows are interpolated).
    #[arg(long, default_value = "lr")]
    lr_col: String,
    /// Loss column.
    #[arg(long, default_value = "loss")]
    loss_col: String,
    /// Share of each run's steps the early check fits.
    #[arg(long, default_value_t = 0.5)]
    fraction: f64,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
}

// `run` options (the subcommand's help is its doc comment above).
#[derive(clap::Args)]
struct RunArgs {
    /// Sweep spec (YAML). Default: the embedded quick sweep.
    sweep: Option<PathBuf>,
    /// Output folder (overrides the spec's `out` and results/<name>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device: cpu, cuda, cuda:K or vulkan (overrides the spec's `device`; cuda and vulkan need
    /// their cargo features).
    #[arg(long, value_parser = DeviceChoice::parse)]
    device: Option<DeviceChoice>,
    /// Do not fit scaling laws and write the report (fits.json, plots/, report.md,
    /// report.html) when the sweep finishes.
    #[arg(long, alias = "no-fit")]
    no_report: bool,
    /// Stop after training this many runs (the rest stay pending for the next invocation); a
    /// pack or a cooldown-branch group counts as one. 0 sets the folder up (spec copy, checks)
    /// and trains nothing.
    #[arg(long, value_name = "K", value_parser = whole_number, allow_negative_numbers = true)]
    max_runs: Option<usize>,
    /// Plain line-per-run progress even on a terminal.
    #[arg(long)]
    plain: bool,
    /// Train K runs at once, splitting the CPU threads between them (longest runs first).
    /// A small model's run does not use a second core, so 2 workers on 2 cores nearly double
    /// a sweep of small models (2.0x for shape a here). Results are identical to --workers 1.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = at_least_one, allow_negative_numbers = true)]
    workers: usize,
    /// One worker per device, e.g. `cuda:0,cuda:1,cuda:2,cuda:3` (overrides --workers and
    /// --device). Longest runs go first; the progress display shows every device.
    #[arg(long, value_name = "DEV,DEV,...", value_delimiter = ',', value_parser = DeviceChoice::parse)]
    devices: Vec<DeviceChoice>,
    #[command(flatten)]
    ckpt: CheckpointArgs,
    #[command(flatten)]
    prune: PruneArgs,
    /// Continue a results folder that was started from a different version of the spec
    /// (finished runs whose settings are unchanged are kept; runs the new spec no longer has
    /// move to DIR/superseded/, out of the fit). Without it, a changed spec is an error and
    /// nothing is written.
    #[arg(long)]
    update_spec: bool,
    /// Train up to N runs of one shape at once as one batched model (seeds, LR multipliers:
    /// runs of equal shape, context, batch size, length, eval interval, Adam betas and
    /// precision), each with its own data order, LR
    /// schedule, optimizer state and evals; results equal training them one by one within
    /// float tolerance. `auto` packs 8 on cuda and none on cpu or vulkan, where packs measured
    /// slower here (README, "Run packing"). A pack checkpoints as one file
    /// (`checkpoints/<first-run-id>.pack.ckpt`) and resumes from it; packs do not prune.
    #[arg(long, value_name = "auto|off|N", default_value = "auto", value_parser = sweep::Packing::parse, allow_negative_numbers = true)]
    pack: sweep::Packing,
}

// `submit` options.
#[derive(clap::Args)]
struct SubmitArgs {
    /// Sweep spec (YAML). Default: the embedded quick sweep.
    sweep: Option<PathBuf>,
    /// Output folder (overrides the spec's `out` and results/<name>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    account: Option<String>,
    /// Time limit per task (HH:MM:SS or D-HH:MM:SS).
    #[arg(long)]
    time: Option<String>,
    /// GPUs per task (the task then trains on cuda).
    #[arg(long, value_name = "G")]
    gpus_per_task: Option<u32>,
    /// CPU cores per task.
    #[arg(long, value_name = "K")]
    cpus_per_task: Option<u32>,
    /// Memory per task, e.g. 16G.
    #[arg(long)]
    mem: Option<String>,
    /// Array tasks running at once (`--array=0-N%K`).
    #[arg(long, value_name = "K", value_parser = at_least_one, allow_negative_numbers = true)]
    max_parallel: Option<usize>,
    /// Do not requeue preempted tasks.
    #[arg(long)]
    no_requeue: bool,
    /// Print the sbatch script and submit nothing (writes nothing).
    #[arg(long)]
    dry_run: bool,
    /// Accept a results folder started from a different spec (see `run --update-spec`).
    #[arg(long)]
    update_spec: bool,
}

// `run-one` options.
#[derive(clap::Args)]
struct RunOneArgs {
    /// The sweep's results folder (its sweep.yaml is the spec).
    results: PathBuf,
    /// The run id to train (for a branch group: its stable parent's id).
    #[arg(long, conflicts_with_all = ["tasks", "task"])]
    run: Option<String>,
    /// Task list written by `submit` (one unit id per line) ...
    #[arg(long, value_name = "FILE", requires = "task")]
    tasks: Option<PathBuf>,
    /// ... and the line to train (0-based; SLURM_ARRAY_TASK_ID).
    #[arg(long, value_name = "K", requires = "tasks")]
    task: Option<usize>,
    /// Device: cpu, cuda, cuda:K or vulkan (overrides the spec's `device`; cuda and vulkan need
    /// their cargo features).
    #[arg(long, value_parser = DeviceChoice::parse)]
    device: Option<DeviceChoice>,
    #[command(flatten)]
    ckpt: CheckpointArgs,
    #[command(flatten)]
    prune: PruneArgs,
}

// `bench` options.
#[derive(clap::Args)]
struct BenchArgs {
    /// Print a JSON list of objects (shape, tokens_per_s, mfu, ...).
    #[arg(long)]
    json: bool,
    /// Shapes to run, e.g. a,c or lstm,mlp: a, b, c (CPU sizes), d (d512 L8 h8 ctx512 batch16,
    /// 25M parameters) and e (d768 L12 h12 ctx1024 batch8, 85M: GPT-2 small's body) for GPUs.
    #[arg(long, value_delimiter = ',', default_values_t = ["a".to_string(), "b".to_string(), "c".to_string()], value_parser = ["a", "b", "c", "d", "e", "lstm", "mlp"])]
    shapes: Vec<String>,
    /// Device: cpu, cuda, cuda:K or vulkan (cuda and vulkan need their cargo features).
    #[arg(long, default_value = "cpu", value_parser = DeviceChoice::parse)]
    device: DeviceChoice,
    /// Seconds of timed training per shape.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Attention implementation: fused (burn's attention op, what training uses),
    /// explicit (matmul, mask, softmax, matmul), or both (a before/after table).
    #[arg(long, value_enum, default_value = "fused")]
    attention: bench::Attention,
    /// Also time N runs of each Transformer shape (seeds 0..N) trained as one pack (`run
    /// --pack`); its row (e.g. `ax8`) counts the tokens of all N runs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one, allow_negative_numbers = true)]
    pack: usize,
    /// Float type of the forward and backward passes (as `training.precision`): f32, bf16 or
    /// f16; the measured matmul peak is taken in it too. A backend without it: exit 2.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// The card's peak in TFLOP/s, for MFU/card (MFU against the card's peak). On CUDA it
    /// defaults to the datasheet figure (dense, at --precision) of the card nvidia-smi names,
    /// for the H100, H200, GH200, A100, L40S, L4, A10, RTX 4090 and V100.
    #[arg(long, value_name = "TFLOPS", value_parser = positive_f64)]
    peak_tflops: Option<f64>,
}

/// Checkpoint options shared by `run` and `run-one`.
#[derive(clap::Args)]
struct CheckpointArgs {
    /// Save model + optimizer + schedule state every M steps (0: never; default: the spec's
    /// `checkpoint.every`, 500). A killed or preempted run resumes from it.
    #[arg(long, value_name = "M", value_parser = whole_number, allow_negative_numbers = true)]
    checkpoint_every: Option<usize>,
    /// Keep each run's last checkpoint after it finishes (default: delete it).
    #[arg(long)]
    keep_checkpoints: bool,
}

/// Early stopping shared by `run` and `run-one`.
#[derive(clap::Args)]
struct PruneArgs {
    /// Stop an IsoFLOP run once its predicted final training loss is confidently worse than
    /// the best finished run of its budget by more than --prune-margin (confidently: the low
    /// end of its bootstrap interval, and the prediction corrected by the worst over-prediction
    /// the sweep's finished runs made at the same point, both above it). It is recorded as
    /// `pruned` with its prediction; fits leave it out unless `--include-pruned`. Predictions
    /// are made at 30/50/70% of each run.
    #[arg(long)]
    prune: bool,
    /// Relative margin for --prune: 0.02 prunes a run whose predicted loss is confidently
    /// more than 2% above its budget's best.
    #[arg(long, value_name = "F", default_value_t = 0.02, requires = "prune")]
    prune_margin: f64,
}

impl PruneArgs {
    fn policy(&self) -> anyhow::Result<Option<scalelab::curves::PrunePolicy>> {
        if !(self.prune_margin >= 0.0 && self.prune_margin.is_finite()) {
            return Err(user(format!(
                "--prune-margin must be a relative margin >= 0 (e.g. 0.02), got {}",
                self.prune_margin
            )));
        }
        Ok(self.prune.then_some(scalelab::curves::PrunePolicy {
            margin: self.prune_margin,
        }))
    }
}

/// Input and fitting options shared by `fit` and `report`.
#[derive(clap::Args)]
struct FitArgs {
    /// A CSV or Parquet table instead of a results folder.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Column holding the parameter count N.
    #[arg(long, value_name = "COL")]
    n_col: Option<String>,
    /// Column holding the training tokens D.
    #[arg(long, value_name = "COL")]
    d_col: Option<String>,
    /// Column holding the compute C (then D = C / 6N).
    #[arg(long, value_name = "COL", conflicts_with = "d_col")]
    c_col: Option<String>,
    /// Column holding the loss.
    #[arg(long, value_name = "COL")]
    loss_col: Option<String>,
    /// Column holding the IsoFLOP budget (text cells: the first number, e.g. `isoflop-6e+19-...`).
    #[arg(long, value_name = "COL")]
    budget_col: Option<String>,
    /// Drop the K highest-loss points before fitting.
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = whole_number, allow_negative_numbers = true)]
    drop_top: usize,
    /// Drop rows where any text cell contains TEXT (e.g. `validation-optimal`).
    #[arg(long, value_name = "TEXT")]
    drop_matching: Option<String>,
    /// Drop rows whose COL cell is true (default COL: `outlier`, the collectors' flag in
    /// openathena_isoflops/isoflops.csv).
    #[arg(long, value_name = "COL", num_args = 0..=1, default_missing_value = "outlier")]
    drop_outliers: Option<String>,
    /// `fit --input` only: fit each group of rows separately (columns, comma separated, e.g.
    /// `source,dataset,condition`) by Approaches 2, 3 and VPNLS, and print one table (with
    /// `fit --json`, an array); the target is the first --target-flops, else each set's largest
    /// budget x 10.
    #[arg(long, value_name = "COL,COL", value_delimiter = ',')]
    group_by: Vec<String>,
    /// Bootstrap resamples for the intervals (0 disables).
    #[arg(long, value_name = "K", default_value_t = 1000, value_parser = whole_number, allow_negative_numbers = true)]
    bootstrap: usize,
    /// Seed for the bootstrap and random hold-outs.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Huber delta on log-loss residuals.
    #[arg(long, value_name = "DELTA", default_value_t = 1e-3)]
    huber_delta: f64,
    /// Fix the irreducible loss E instead of fitting it (`--e VALUE` is the same).
    #[arg(long, value_name = "E", alias = "e")]
    fix_e: Option<f64>,
    /// Pin E to the results folder's exact loss floor (`floor.json`, built-in corpus) and
    /// report that law; without this flag the pinned law is shown beside the free one.
    #[arg(long, conflicts_with = "fix_e")]
    e_floor: bool,
    /// Fitting method: `a3` (Approach 3, 5-parameter L-BFGS from a grid), `vpnls` (variable
    /// projection: E, A, B by NNLS, alpha and beta searched), or `both` (Approach 3 is the
    /// law, VPNLS beside it).
    #[arg(long, value_name = "METHOD", default_value = "both", value_parser = fit::Method::parse)]
    method: fit::Method,
    /// Approach 3's objective: `huber` (Huber on log L, Hoffmann et al.) or `sse` (squared
    /// error on L; VPNLS always uses it).
    #[arg(long, value_name = "OBJ", default_value = "huber", value_parser = fit::laws::FitObjective::parse)]
    objective: fit::laws::FitObjective,
    /// Skip the rolling backtests (fit on the first k budgets, predict the later ones).
    #[arg(long)]
    no_backtest: bool,
    /// Held-out check: `largest-budget`, `none`, or a fraction such as 0.2 (default:
    /// largest-budget for a results folder and for `report`, none for `fit --input`, so
    /// `fit DIR` writes the fits.json that `report DIR` writes).
    #[arg(long, value_name = "RULE", value_parser = Holdout::parse, alias = "hold-out")]
    holdout: Option<Holdout>,
    /// Compute budgets (FLOPs) for the compute-optimal table, comma separated
    /// (default for a results folder: the sweep's `target_flops`).
    #[arg(long, value_name = "C,C,...", value_delimiter = ',')]
    target_flops: Vec<f64>,
    /// Use every K-th start of the standard grid (1 = all 4,500).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = at_least_one, allow_negative_numbers = true)]
    grid_stride: usize,
    /// Column holding each run's unique training tokens U_D (runs with D > U_D repeated
    /// their data; they get the data-constrained law).
    #[arg(long, value_name = "COL", conflicts_with = "epochs_col")]
    unique_col: Option<String>,
    /// Column holding each run's epochs (then U_D = D / epochs).
    #[arg(long, value_name = "COL")]
    epochs_col: Option<String>,
    /// Also fit the runs `run --prune` stopped early, each at its predicted final eval loss
    /// (default: left out; a pruned run is a prediction, not a measurement).
    #[arg(long)]
    include_pruned: bool,
    /// Fit the data-constrained law of Muennighoff et al. 2023 (R_D*, R_N*, with the base law
    /// held fixed). On by default whenever some run repeated its data.
    #[arg(long)]
    data_constrained: bool,
    /// Base law for the data-constrained fit, `E,A,B,alpha,beta` (default: the Approach-3
    /// fit on the single-epoch runs).
    #[arg(long, value_name = "E,A,B,ALPHA,BETA", value_delimiter = ',')]
    base: Vec<f64>,
}

impl FitArgs {
    /// The dataset: a results folder or a table.
    fn dataset(&self, folder: Option<&ResultsFolder>) -> anyhow::Result<Dataset> {
        match (folder, &self.input) {
            (Some(f), None) => f.dataset_with(self.drop_top, self.include_pruned),
            (None, Some(file)) => {
                let cols = table_columns(self)?;
                Dataset::from_table(file, &cols, self.drop_top)
            }
            (Some(_), Some(_)) => Err(user("give a results folder or --input FILE, not both")),
            (None, None) => Err(user(
                "nothing to fit: give a results folder (e.g. results/quick/) or --input FILE",
            )),
        }
    }

    fn options(
        &self,
        folder: Option<&ResultsFolder>,
        default_holdout: Holdout,
    ) -> anyhow::Result<FitOptions> {
        let holdout = self.holdout.unwrap_or(default_holdout);
        if let Some(e) = self.fix_e {
            if !(e > 0.0) {
                return Err(user("--fix-e must be a positive loss"));
            }
        }
        if self
            .target_flops
            .iter()
            .any(|c| !(*c > 0.0 && c.is_finite()))
        {
            return Err(user(
                "--target-flops: every budget must be a positive number of FLOPs, e.g. 1e21,1e23",
            ));
        }
        let mut targets = self.target_flops.clone();
        if targets.is_empty() {
            if let Some(spec) = folder.and_then(|f| f.spec.as_ref()) {
                targets = spec.target_flops.clone();
            }
        }
        let base = match self.base.as_slice() {
            [] => None,
            [e, a, b, alpha, beta] if [e, a, b, alpha, beta].iter().all(|v| **v > 0.0 && v.is_finite()) => {
                Some(fit::laws::ChinchillaParams {
                    e: *e,
                    a: *a,
                    b: *b,
                    alpha: *alpha,
                    beta: *beta,
                })
            }
            _ => {
                return Err(user(
                    "--base needs five positive numbers E,A,B,alpha,beta, e.g. --base 1.87,521,1488,0.35,0.35",
                ))
            }
        };
        let floor = self.floor(folder)?;
        Ok(FitOptions {
            data_constrained: self.data_constrained,
            include_pruned: self.include_pruned,
            base,
            delta: self.huber_delta,
            fixed_e: self.fix_e,
            floor,
            pin_e_to_floor: self.e_floor,
            method: self.method,
            objective: self.objective,
            backtest: !self.no_backtest,
            bootstrap: self.bootstrap,
            seed: self.seed,
            holdout,
            targets,
            grid_stride: self.grid_stride.max(1),
            reference: folder.and_then(|f| f.best_baseline()),
        })
    }
}

impl FitArgs {
    /// The folder's loss floor (nats/token), required by `--e-floor`.
    fn floor(&self, folder: Option<&ResultsFolder>) -> anyhow::Result<Option<f64>> {
        let floor = folder.and_then(|f| f.floor).map(|f| f.nats_per_token);
        if self.e_floor && floor.is_none() {
            return Err(user(
                "--e-floor needs a results folder with floor.json (the built-in corpus writes it); \
                 use --fix-e VALUE to pin E to a known value instead",
            ));
        }
        Ok(floor)
    }
}

fn spec_source(path: Option<PathBuf>) -> anyhow::Result<SpecSource> {
    match path {
        Some(p) => SpecSource::from_file(&p),
        None => Ok(SpecSource::builtin_quick()),
    }
}

/// `--workers`: a count of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(k) if k >= 1 => Ok(k),
        _ => Err(format!(
            "`{s}` is not a whole number of at least 1 (e.g. 2)"
        )),
    }
}

/// A count that may be 0 (`--bootstrap 0` turns the bootstrap off).
fn whole_number(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("`{s}` is not a whole number (0, 1, 2, ...)"))
}

/// `--precision`: f32, bf16 or f16.
fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| "use f32, bf16 or f16".into())
}

/// A positive finite number.
fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err("must be a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `--format`: one plot format (png or svg, any case).
fn plot_format(s: &str) -> anyhow::Result<report::plots::Format> {
    report::plots::Format::parse_list(s)?
        .pop()
        .ok_or_else(|| user("--format: give png, svg or png,svg"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Submit(a) => cmd_submit(a),
        Command::RunOne(a) => cmd_run_one(a),
        Command::Status { results } => {
            print!(
                "{}",
                slurm::status(&sweep::prepare_results(&results, None)?)?
            );
            Ok(())
        }
        Command::Power(a) => {
            let args = scalelab::power::PowerArgs {
                spec: SpecSource::from_file(&a.sweep)?,
                reference: &a.from,
                draws: a.draws,
                bootstrap: a.bootstrap,
                seed: a.seed,
            };
            print!("{}", scalelab::power::command(args, a.json)?);
            Ok(())
        }
        Command::Baselines { results } => {
            print!("{}", sweep::baselines_command(&results)?);
            Ok(())
        }
        Command::Collect { results } => {
            print!("{}", slurm::collect(&results)?);
            Ok(())
        }
        Command::Plan {
            sweep: path,
            out,
            pack,
            measure,
            workers,
        } => cmd_plan(path, out, pack, measure, workers),
        Command::Fit {
            results,
            args,
            json,
        } => cmd_fit(results, args, json),
        Command::Report {
            results,
            args,
            format,
            out,
        } => cmd_report(results, args, format, out),
        Command::Curves(a) => cmd_curves(a),
        Command::Hp(a) => cmd_hp(a),
        Command::Bench(a) => bench::run_cli(&bench::BenchOptions {
            device: a.device,
            shapes: a.shapes,
            seconds: a.seconds,
            attention: a.attention,
            pack: a.pack,
            precision: a.precision,
            peak_tflops: a.peak_tflops,
            json: a.json,
        }),
        Command::CoordCheck(a) => cmd_coord_check(a),
    }
}

fn cmd_coord_check(a: CoordArgs) -> anyhow::Result<()> {
    use burn::backend::{flex::FlexDevice, Autodiff, Flex};
    use scalelab::model::{Parametrization, Shape};
    let (Some(&base), true) = (
        a.widths.first(),
        a.widths.iter().all(|&w| w > 0 && w % a.n_head == 0),
    ) else {
        return Err(user(
            "--widths: give positive multiples of --n-head, e.g. 32,64,128",
        ));
    };
    if a.n_layer == 0 || a.context < 2 || a.batch == 0 {
        return Err(user(
            "--n-layer, --batch: at least 1; --context: at least 2",
        ));
    }
    let source = scalelab::corpus::CorpusSource::Builtin {
        seed: 1234,
        lang: Default::default(),
    };
    let corpus = scalelab::corpus::load(&source, a.context, a.context, 0.0)?;
    for (name, param) in [
        ("standard parametrization", Parametrization::Standard),
        ("μP", Parametrization::Mup { base_width: base }),
    ] {
        let shapes: Vec<Shape> = a
            .widths
            .iter()
            .map(|&w| Shape::new(w, a.n_layer, a.n_head, None).with_param(param))
            .collect();
        let rows = scalelab::mup::coord_check::<Autodiff<Flex>>(
            &shapes,
            a.steps,
            a.lr,
            a.batch,
            &corpus,
            &FlexDevice,
        );
        println!(
            "{name}: after {} steps at lr {}\n{}",
            a.steps,
            a.lr,
            scalelab::mup::table(&rows)
        );
    }
    Ok(())
}

fn cmd_hp(a: HpArgs) -> anyhow::Result<()> {
    use scalelab::hp::HpColumns;
    let (path, cols) = match (&a.results, &a.input) {
        (Some(dir), _) => (dir, HpColumns::results_folder()),
        (None, Some(p)) => (
            p,
            HpColumns {
                n: a.n_col.clone(),
                d: a.d_col.clone(),
                lr: a.lr_col.clone(),
                bs: a.bs_col.clone(),
                loss: a.loss_col.clone(),
            },
        ),
        (None, None) => return Err(user("scalelab hp: give a results folder or --input FILE")),
    };
    print!(
        "{}",
        scalelab::hp::command(path, &cols, a.hold_out, a.json)?
    );
    Ok(())
}

fn cmd_curves(a: CurvesArgs) -> anyhow::Result<()> {
    use scalelab::curves::{CurvesInput, TableColumns};
    let input = match (&a.results[..], &a.input) {
        ([_, ..], _) => CurvesInput::Folders(&a.results),
        ([], Some(path)) => CurvesInput::Table(
            path,
            TableColumns {
                run: a.run_col.clone(),
                group: a.group_col.clone(),
                step: a.step_col.clone(),
                lr: a.lr_col.clone(),
                loss: a.loss_col.clone(),
            },
        ),
        ([], None) => {
            return Err(user(
                "scalelab curves: give a results folder or --input FILE",
            ))
        }
    };
    print!("{}", scalelab::curves::command(input, a.fraction, a.json)?);
    Ok(())
}

fn cmd_run(a: RunArgs) -> anyhow::Result<()> {
    let p = sweep::prepare(spec_source(a.sweep)?, a.out, a.device)?;
    let opts = sweep::RunOptions {
        max_runs: a.max_runs,
        plain: a.plain || std::env::var_os("CI").is_some(),
        workers: a.workers,
        devices: a.devices,
        checkpoint_every: a.ckpt.checkpoint_every,
        keep_checkpoints: a.ckpt.keep_checkpoints,
        update_spec: a.update_spec,
        prune: a.prune.policy()?,
        pack: a.pack,
    };
    let existing = sweep::existing_runs(&p.out_dir);
    let speed = sweep::speed(&p, &existing, false, 1)?;
    if let Some(w) = sweep::budget_warning(&p, &existing, &speed) {
        eprintln!("scalelab: {w}");
    }
    let s = sweep::run(&p, &opts)?;
    eprintln!("{}", s.message());
    if a.no_report {
        return Ok(());
    }
    if s.skipped + s.trained == 0 {
        eprintln!("scalelab: no run has finished yet, so there is no report (`scalelab report DIR` makes one once runs have finished)");
        return Ok(());
    }
    report_after_sweep(&p, &s.out_dir)
}

/// Fit and report a finished sweep (`run` without `--no-report`).
fn report_after_sweep(p: &sweep::Prepared, dir: &std::path::Path) -> anyhow::Result<()> {
    let opts = FitOptions {
        bootstrap: 200,
        holdout: Holdout::LargestBudget,
        targets: p.spec.target_flops.clone(),
        ..FitOptions::default()
    };
    let data = report::ReportData::from_folder(&ResultsFolder::load(dir)?, &opts)?;
    if let Some(f) = &data.fit {
        print!("{}", fit::render_text(f));
    }
    write_report(
        &data,
        dir,
        &[report::plots::Format::Png, report::plots::Format::Svg],
    )
}

fn cmd_submit(a: SubmitArgs) -> anyhow::Result<()> {
    let p = sweep::prepare(spec_source(a.sweep)?, a.out, None)?;
    let o = slurm::SubmitOptions {
        slurm: scalelab::spec::SlurmSpec {
            partition: a.partition,
            account: a.account,
            time: a.time,
            gpus_per_task: a.gpus_per_task,
            cpus_per_task: a.cpus_per_task,
            mem: a.mem,
            max_parallel: a.max_parallel,
            requeue: a.no_requeue.then_some(false),
            extra: Vec::new(),
        },
        dry_run: a.dry_run,
        update_spec: a.update_spec,
    };
    print!("{}", slurm::submit(&p, &o)?);
    Ok(())
}

fn cmd_run_one(a: RunOneArgs) -> anyhow::Result<()> {
    let task = match (a.run, a.tasks, a.task) {
        (Some(id), _, _) => sweep::TaskRef::Run(id),
        (None, Some(file), Some(index)) => sweep::TaskRef::Line { file, index },
        _ => return Err(user("run-one needs --run ID, or --tasks FILE --task K")),
    };
    let p = sweep::prepare_results(&a.results, a.device)?;
    let opts = sweep::RunOptions {
        checkpoint_every: a.ckpt.checkpoint_every,
        keep_checkpoints: a.ckpt.keep_checkpoints,
        prune: a.prune.policy()?,
        ..Default::default()
    };
    let msg = sweep::run_one(&p, &task, &opts)?;
    eprintln!("scalelab: run-one: {msg}");
    Ok(())
}

fn cmd_plan(
    path: Option<PathBuf>,
    out: Option<PathBuf>,
    pack: sweep::Packing,
    measure: bool,
    workers: usize,
) -> anyhow::Result<()> {
    let p = sweep::prepare(spec_source(path)?, out, None)?;
    if let Some(d) = sweep::spec_difference(&p) {
        eprintln!(
            "scalelab: warning: {d}; `run` would refuse this folder: use another --out, or `run --update-spec` (which keeps the finished runs whose settings are unchanged)"
        );
    }
    let existing = sweep::existing_runs(&p.out_dir);
    let speed = sweep::speed(&p, &existing, measure, workers)?;
    print!(
        "{}",
        sweep::plan_table(&p, &existing, pack, &speed, workers)
    );
    if let Some(w) = sweep::budget_warning(&p, &existing, &speed) {
        eprintln!("scalelab: {w}");
    }
    Ok(())
}

fn cmd_fit(results: Option<PathBuf>, args: FitArgs, json: bool) -> anyhow::Result<()> {
    if !args.group_by.is_empty() {
        return cmd_fit_groups(results, args, json);
    }
    let folder = results.as_deref().map(ResultsFolder::load).transpose()?;
    let data = args.dataset(folder.as_ref())?;
    let holdout = match folder {
        Some(_) => Holdout::LargestBudget,
        None => Holdout::None,
    };
    let opts = args.options(folder.as_ref(), holdout)?;
    let report = fit::fit_all(&data, &opts)?;
    if let Some(dir) = &results {
        write_fits(dir, &report)?;
        eprintln!(
            "scalelab: fit: wrote {} ({} bootstrap resamples; report.md keeps the numbers of the report that wrote it: `scalelab report {}` rewrites both)",
            dir.join("fits.json").display(),
            opts.bootstrap,
            dir.display()
        );
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", fit::render_text(&report));
    }
    Ok(())
}

/// `fit --input FILE --group-by COL,...`: one row per group ([`fit::grouped`]).
fn cmd_fit_groups(results: Option<PathBuf>, args: FitArgs, json: bool) -> anyhow::Result<()> {
    let (Some(file), None) = (&args.input, &results) else {
        return Err(user("--group-by needs --input FILE (not a results folder)"));
    };
    let cols = table_columns(&args)?;
    let sets = Dataset::groups_from_table(file, &cols, &args.group_by, args.drop_top)?;
    let opts = args.options(None, Holdout::None)?;
    let target = opts.targets.first().copied();
    let rows: Vec<fit::grouped::GroupRow> = sets
        .iter()
        .map(|d| fit::grouped::fit_group(d, &opts, target))
        .collect();
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        print!("{}", fit::grouped::render_table(&rows));
    }
    Ok(())
}

/// The columns and row filters of a table input (`--input FILE`).
fn table_columns(args: &FitArgs) -> anyhow::Result<Columns> {
    let (Some(n), Some(loss)) = (&args.n_col, &args.loss_col) else {
        return Err(user(
            "--input needs --n-col COL and --loss-col COL (and --d-col or --c-col)",
        ));
    };
    Ok(Columns {
        n: n.clone(),
        d: args.d_col.clone(),
        c: args.c_col.clone(),
        loss: loss.clone(),
        budget: args.budget_col.clone(),
        drop_matching: args.drop_matching.clone(),
        unique: args.unique_col.clone(),
        epochs: args.epochs_col.clone(),
        drop_outliers: args.drop_outliers.clone(),
    })
}

fn cmd_report(
    results: Option<PathBuf>,
    args: FitArgs,
    formats: Vec<report::plots::Format>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !args.group_by.is_empty() {
        return Err(user(
            "--group-by is for `scalelab fit` (one table of many sets); report one set at a time",
        ));
    }
    let folder = results.as_deref().map(ResultsFolder::load).transpose()?;
    let opts = args.options(folder.as_ref(), Holdout::LargestBudget)?;
    let (data, out) = match (&folder, out) {
        (Some(f), out) => (
            report::ReportData::from_folder(f, &opts)?,
            out.unwrap_or(f.dir.clone()),
        ),
        (None, Some(out)) => (
            report::ReportData::from_dataset(args.dataset(None)?, &opts),
            out,
        ),
        (None, None) => {
            args.dataset(None)?;
            return Err(user(
                "report --input needs --out DIR for the plots and documents",
            ));
        }
    };
    write_report(&data, &out, &formats)
}

fn write_report(
    data: &report::ReportData,
    out: &std::path::Path,
    formats: &[report::plots::Format],
) -> anyhow::Result<()> {
    let w = report::write(data, out, formats)?;
    for (fig, why) in &w.skipped {
        eprintln!("scalelab: report: skipped the {} plot: {why}", fig.name());
    }
    eprintln!(
        "scalelab: report: {} plots, {} in {}",
        w.drawn.len(),
        if data.fit.is_some() {
            "fits.json, report.md, report.html"
        } else {
            "report.md, report.html (no fit)"
        },
        out.display()
    );
    Ok(())
}

fn write_fits(dir: &std::path::Path, report: &fit::FitReport) -> anyhow::Result<()> {
    scalelab::fsio::write_text_atomic(
        &dir.join("fits.json"),
        &serde_json::to_string_pretty(report)?,
    )
}

fn main() -> ExitCode {
    // A panic is a bug: say so in one line, without Rust's panic text.
    std::panic::set_hook(Box::new(|info| {
        let msg = sweep::panic_message(info.payload()).unwrap_or_else(|| "unknown error".into());
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("scalelab: internal error: {msg}{at}");
    }));
    scalelab::device::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_user_error(&e) {
                eprintln!("scalelab: error: {e}");
                ExitCode::from(2)
            } else {
                eprintln!("scalelab: error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}
