//! The `scalelab` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scalelab::error::{is_user_error, user};
use scalelab::fit::{self, Columns, Dataset, FitOptions, Holdout};
use scalelab::spec::SpecSource;
use scalelab::{bench, sweep};

/// Scaling-law experiments on language models: a YAML sweep trains real Transformer LMs
/// (burn; CPU or CUDA), logs every run to Parquet, and fits power laws to the results.
///
/// Typical use:
///   scalelab plan sweeps/quick.yaml      # the runs, their N, D, FLOPs and an ETA
///   scalelab run sweeps/quick.yaml       # train (resumes if interrupted), write results/quick/
///   scalelab fit results/quick/          # Chinchilla + Kaplan + IsoFLOP fits, fits.json
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
    /// (a run that was cut off mid-way is retrained from scratch). With no SWEEP, runs the
    /// built-in quick sweep (identical to sweeps/quick.yaml).
    Run {
        /// Sweep spec (YAML). Default: the embedded quick sweep.
        sweep: Option<PathBuf>,
        /// Output folder (overrides the spec's `out` and results/<name>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Device: cpu, cuda or cuda:K (overrides the spec's `device`).
        #[arg(long)]
        device: Option<String>,
        /// Do not fit scaling laws (fits.json) when the sweep finishes.
        #[arg(long)]
        no_fit: bool,
        /// Stop after training this many runs (the rest stay pending for the next invocation).
        #[arg(long, value_name = "K")]
        max_runs: Option<usize>,
        /// Plain line-per-run progress even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// Dry run: print the table of runs (shape, N, D, C = 6ND, steps, budget, ETA,
    /// status) without training anything.
    Plan {
        /// Sweep spec (YAML). Default: the embedded quick sweep.
        sweep: Option<PathBuf>,
        /// Output folder to check for finished runs.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fit scaling laws: Approach 3 (Chinchilla, L = E + A/N^alpha + B/D^beta, summed
    /// Huber on log-loss, L-BFGS from 4,500 starts), Kaplan forms, Approach 2 (IsoFLOP
    /// parabolas), Approach 1 (curve envelope, from a results folder), bootstrap intervals
    /// and the compute-optimal allocation. Input: a results folder, or a table with --input.
    Fit {
        /// A sweep's results folder (with runs.parquet). Writes fits.json into it.
        results: Option<PathBuf>,
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
        #[arg(long, value_name = "COL")]
        c_col: Option<String>,
        /// Column holding the loss.
        #[arg(long, value_name = "COL")]
        loss_col: Option<String>,
        /// Column holding the IsoFLOP budget (text cells: the first number, e.g. `isoflop-6e+19-...`).
        #[arg(long, value_name = "COL")]
        budget_col: Option<String>,
        /// Drop the K highest-loss points before fitting.
        #[arg(long, value_name = "K", default_value_t = 0)]
        drop_top: usize,
        /// Print one JSON object (top-level keys E, A, B, alpha, beta, objective, ...).
        #[arg(long)]
        json: bool,
        /// Bootstrap resamples for the intervals (0 disables).
        #[arg(long, value_name = "K", default_value_t = 1000)]
        bootstrap: usize,
        /// Seed for the bootstrap and random hold-outs.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Huber delta on log-loss residuals.
        #[arg(long, value_name = "DELTA", default_value_t = 1e-3)]
        huber_delta: f64,
        /// Fix the irreducible loss E instead of fitting it.
        #[arg(long, value_name = "E")]
        fix_e: Option<f64>,
        /// Held-out check: `largest-budget`, or a fraction such as 0.2.
        #[arg(long, value_name = "RULE")]
        holdout: Option<String>,
        /// Compute budgets (FLOPs) for the compute-optimal table, comma separated.
        #[arg(long, value_name = "C,C,...", value_delimiter = ',')]
        target_flops: Vec<f64>,
        /// Use every K-th start of the standard grid (1 = all 4,500).
        #[arg(long, value_name = "K", default_value_t = 1)]
        grid_stride: usize,
    },
    /// Benchmark training throughput (tokens/s) and MFU against the measured matmul peak,
    /// for three fixed shapes: a (d64 L2 h2 ctx64 batch32), b (d128 L4 h4 ctx128 b16),
    /// c (d256 L6 h8 ctx128 b8). Not a test: prints a table (or JSON).
    Bench {
        /// Print a JSON list of objects (shape, tokens_per_s, mfu, ...).
        #[arg(long)]
        json: bool,
        /// Shapes to run, e.g. a,c.
        #[arg(long, value_delimiter = ',', default_values_t = ["a".to_string(), "b".to_string(), "c".to_string()])]
        shapes: Vec<String>,
        /// Device: cpu, cuda or cuda:K.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Seconds of timed training per shape.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
    },
}

fn spec_source(path: Option<PathBuf>) -> anyhow::Result<SpecSource> {
    match path {
        Some(p) => SpecSource::from_file(&p),
        None => Ok(SpecSource::builtin_quick()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            sweep: path,
            out,
            device,
            no_fit,
            max_runs,
            plain,
        } => {
            let p = sweep::prepare(spec_source(path)?, out, device.as_deref())?;
            let plain = plain || std::env::var_os("CI").is_some();
            let s = sweep::run(&p, &sweep::RunOptions { max_runs, plain })?;
            eprintln!(
                "scalelab: {} trained, {} skipped (already finished), {} failed; results in {}",
                s.trained,
                s.skipped,
                s.failed,
                s.out_dir.display()
            );
            let finished = scalelab::store::read_runs(&s.out_dir)?.len();
            if !no_fit && finished >= s.total {
                let data = Dataset::from_results(&s.out_dir, 0)?;
                if data.points.len() >= 6 {
                    let opts = FitOptions {
                        bootstrap: 200,
                        ..FitOptions::default()
                    };
                    let report = fit::fit_all(&data, &opts)?;
                    write_fits(&s.out_dir, &report)?;
                    print!("{}", fit::render_text(&report));
                } else {
                    eprintln!(
                        "scalelab: {} usable runs; a fit needs at least 6, skipping fits.json",
                        data.points.len()
                    );
                }
            }
            Ok(())
        }
        Command::Plan { sweep: path, out } => {
            let p = sweep::prepare(spec_source(path)?, out, None)?;
            let existing = sweep::existing_runs(&p.out_dir);
            print!("{}", sweep::plan_table(&p, &existing));
            Ok(())
        }
        Command::Fit {
            results,
            input,
            n_col,
            d_col,
            c_col,
            loss_col,
            budget_col,
            drop_top,
            json,
            bootstrap,
            seed,
            huber_delta,
            fix_e,
            holdout,
            target_flops,
            grid_stride,
        } => {
            let data = match (&results, &input) {
                (Some(dir), None) => Dataset::from_results(dir, drop_top)?,
                (None, Some(file)) => {
                    let (Some(n), Some(loss)) = (n_col, loss_col) else {
                        return Err(user("--input needs --n-col COL and --loss-col COL (and --d-col or --c-col)"));
                    };
                    Dataset::from_table(file, &Columns { n, d: d_col, c: c_col, loss, budget: budget_col }, drop_top)?
                }
                (Some(_), Some(_)) => return Err(user("give a results folder or --input FILE, not both")),
                (None, None) => return Err(user("nothing to fit: give a results folder (scalelab fit results/NAME/) or --input FILE")),
            };
            let holdout = match holdout.as_deref() {
                Some(h) => Holdout::parse(h)?,
                None => Holdout::None,
            };
            if let Some(e) = fix_e {
                if !(e > 0.0) {
                    return Err(user("--fix-e must be a positive loss"));
                }
            }
            let opts = FitOptions {
                delta: huber_delta,
                fixed_e: fix_e,
                bootstrap,
                seed,
                holdout,
                targets: target_flops,
                grid_stride,
            };
            let report = fit::fit_all(&data, &opts)?;
            if let Some(dir) = &results {
                write_fits(dir, &report)?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", fit::render_text(&report));
            }
            Ok(())
        }
        Command::Bench {
            json,
            shapes,
            device,
            seconds,
        } => {
            let choice = scalelab::device::DeviceChoice::parse(&device)?;
            choice.ensure_usable()?;
            let all = bench::shapes();
            for s in &shapes {
                if !all.iter().any(|b| b.name == s) {
                    return Err(user(format!(
                        "--shapes: unknown shape {s:?}; use a, b and/or c"
                    )));
                }
            }
            let results: Vec<bench::BenchResult> = scalelab::with_backend!(choice, |B, dev| {
                let peak = bench::matmul_peak::<
                    <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
                >(&dev, 2.0);
                all.iter()
                    .filter(|b| shapes.iter().any(|s| s == b.name))
                    .map(|b| {
                        let r =
                            bench::bench_shape::<B>(b, &dev, seconds, peak, &choice.backend_name());
                        if !json {
                            eprintln!(
                                "scalelab: shape {}: {:.0} tokens/s",
                                r.shape, r.tokens_per_s
                            );
                        }
                        r
                    })
                    .collect()
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", bench::table(&results));
            }
            Ok(())
        }
    }
}

fn write_fits(dir: &std::path::Path, report: &fit::FitReport) -> anyhow::Result<()> {
    scalelab::store::write_text_atomic(
        &dir.join("fits.json"),
        &serde_json::to_string_pretty(report)?,
    )
}

fn main() -> ExitCode {
    // A panic is a bug: say so in one line, without Rust's panic text.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("scalelab: internal error: {msg}{at}");
    }));
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
