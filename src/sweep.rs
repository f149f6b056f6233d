//! The executor: spec → corpus → plan → trainer → results store, with resume and progress.
//!
//! Owns running a sweep in this process: which runs are still pending (anything not in
//! `runs.parquet` as `ok`/`diverged`), training them one after another (largest first is
//! not needed on one device; smallest first gives early feedback), turning a panic inside a
//! run into a `failed` row instead of losing the sweep, and the progress display.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::corpus::{self, Corpus, CorpusSource};
use crate::device::DeviceChoice;
use crate::plan::{self, Plan, RunPlan};
use crate::spec::{SpecSource, SweepSpec};
use crate::store::{ResultsStore, RunRecord};
use crate::train::{self, RunOutcome, Status};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A sweep ready to run: validated spec, corpus, plan, output folder, device.
pub struct Prepared {
    pub spec: SweepSpec,
    pub source: SpecSource,
    pub corpus: Corpus,
    pub plan: Plan,
    pub out_dir: PathBuf,
    pub device: DeviceChoice,
    pub spec_hash: String,
}

/// Resolve the corpus named by the spec.
fn corpus_source(spec: &SweepSpec, src: &SpecSource) -> CorpusSource {
    let c = &spec.corpus;
    if let Some(t) = &c.text {
        CorpusSource::Text {
            files: corpus::expand_glob(t, &src.base_dir),
            bpe_vocab: (c.tokenizer == crate::spec::TokenizerKind::Bpe)
                .then(|| c.vocab_size.unwrap_or(4096)),
            split_seed: c.split_seed,
        }
    } else if let Some(t) = &c.tokens {
        CorpusSource::Tokens {
            file: src.base_dir.join(t),
            vocab_size: c.vocab_size.unwrap_or(65536),
            split_seed: c.split_seed,
        }
    } else {
        let b = c.builtin.clone().unwrap_or_default();
        CorpusSource::Builtin {
            seed: b.seed,
            topics: b.topics,
        }
    }
}

/// Parse, validate, load the corpus and expand the plan. Nothing is written.
pub fn prepare(
    src: SpecSource,
    out: Option<PathBuf>,
    device: Option<&str>,
) -> anyhow::Result<Prepared> {
    let spec = SweepSpec::parse(&src)?;
    let device = DeviceChoice::parse(device.unwrap_or(&spec.device))?;
    let ctx = spec.model.context;
    let eval_tokens = spec.corpus.eval_tokens as usize;
    let source = corpus_source(&spec, &src);
    let mut corpus = corpus::load(&source, ctx, eval_tokens, spec.corpus.eval_fraction)?;
    if let Some(u) = spec.corpus.train_tokens {
        corpus.cap_unique_tokens(u as usize, ctx)?;
    }
    let plan = plan::build(&spec, &src.label, corpus.vocab_size, corpus.fingerprint)?;
    let out_dir = out.unwrap_or_else(|| spec.out_dir());
    let spec_hash = format!("{:016x}", corpus::fnv1a(src.text.as_bytes()));
    Ok(Prepared {
        spec,
        source: src,
        corpus,
        plan,
        out_dir,
        device,
        spec_hash,
    })
}

fn human(x: f64) -> String {
    let (v, s) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.3}{s}")
}

fn hms(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Training speed in C = 6ND FLOPs per second assumed by `plan`'s ETA when no run has
/// finished yet: the quick sweep on the 2-core dev machine, flex backend, one worker
/// (4.15e12 FLOPs in 270 s; small shapes run at 4e9, the largest at 1.9e10).
const DEFAULT_FLOPS_PER_S: f64 = 1.5e10;

/// The plan as a table, with an ETA from finished runs' speed when available.
pub fn plan_table(p: &Prepared, store_runs: &[RunRecord]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let measured: (f64, f64) = store_runs
        .iter()
        .filter(|r| r.status == "ok" && r.wall_s > 0.0)
        .fold((0.0, 0.0), |acc, r| (acc.0 + r.flops, acc.1 + r.wall_s));
    // No measured speed on a GPU: the CPU default would be meaningless there.
    let rate = if measured.1 > 0.0 {
        measured.0 / measured.1
    } else if p.device == DeviceChoice::Cpu {
        DEFAULT_FLOPS_PER_S
    } else {
        f64::NAN
    };
    let _ = writeln!(
        s,
        "sweep {}: {} runs, corpus: {}",
        p.spec.name,
        p.plan.runs.len(),
        p.corpus.description
    );
    if let Some(f) = p.corpus.floor {
        let _ = writeln!(
            s,
            "exact loss floor of the eval windows: {:.4} nats/token ({:.4} bits/byte); entropy rate {:.4} bits/byte",
            f.nats_per_token, f.bits_per_byte, f.entropy_rate_bits_per_byte
        );
    }
    let _ = writeln!(
        s,
        "{:<16} {:<14} {:>10} {:>10} {:>10} {:>7} {:>10} {:>8}  status",
        "run_id", "shape", "N", "D", "C=6ND", "steps", "budget", "eta"
    );
    let mut total_eta = 0.0;
    for r in &p.plan.runs {
        let done = store_runs.iter().find(|x| x.run_id == r.id);
        let eta = r.flops / rate;
        let status = match done {
            Some(d) => d.status.clone(),
            None => {
                total_eta += eta;
                "pending".into()
            }
        };
        let _ = writeln!(
            s,
            "{:<16} {:<14} {:>10} {:>10} {:>10} {:>7} {:>10} {:>8}  {}",
            r.id,
            r.shape.label(),
            human(r.n_params as f64),
            human(r.tokens as f64),
            format!("{:.2e}", r.flops),
            r.steps,
            r.budget
                .map(|b| format!("{b:.2e}"))
                .unwrap_or_else(|| "-".into()),
            hms(eta),
            status
        );
    }
    for d in &p.plan.dropped {
        let _ = writeln!(s, "dropped {}: {}", d.what, d.reason);
    }
    if !p.plan.parents.is_empty() {
        let _ = writeln!(
            s,
            "cooldown branches: {} stable-phase runs feed {} branches; the sweep spends {:.3e} FLOPs where separate runs would cost {:.3e} ({:.2}x)",
            p.plan.parents.len(),
            p.plan.runs.iter().filter(|r| r.parent.is_some()).count(),
            p.plan.flops_spent(),
            p.plan.total_flops(),
            p.plan.flops_spent() / p.plan.total_flops()
        );
    }
    let _ = writeln!(
        s,
        "total {:.3e} FLOPs; pending runs ETA ~{} on {} ({})",
        p.plan.total_flops(),
        hms(total_eta),
        p.device.backend_name(),
        if measured.1 > 0.0 {
            "speed measured from finished runs"
        } else if rate.is_nan() {
            "unknown until a run on this device finishes"
        } else {
            "speed assumed; rough"
        }
    );
    s
}

/// Options for [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after training this many runs (for testing interruption).
    pub max_runs: Option<usize>,
    /// Force the plain (non-terminal) progress output.
    pub plain: bool,
    /// Runs trained at once; the CPU threads are split between them.
    pub workers: usize,
    /// One worker per device (overrides `workers` and the spec's device when not empty).
    pub devices: Vec<DeviceChoice>,
    /// Checkpoint interval in steps (None: the spec's `checkpoint.every`).
    pub checkpoint_every: Option<usize>,
    /// Keep checkpoints of finished runs.
    pub keep_checkpoints: bool,
    /// Accept a results folder started from a different spec (see [`check_results_folder`]).
    pub update_spec: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_runs: None,
            plain: false,
            workers: 1,
            devices: Vec::new(),
            checkpoint_every: None,
            keep_checkpoints: false,
            update_spec: false,
        }
    }
}

impl RunOptions {
    fn checkpointing(&self, p: &Prepared) -> train::Checkpointing {
        train::Checkpointing {
            dir: p.out_dir.join("checkpoints"),
            every: self.checkpoint_every.unwrap_or(p.spec.checkpoint.every),
            keep: self.keep_checkpoints || p.spec.checkpoint.keep,
        }
    }
}

/// The spec text without comments, blank lines and trailing spaces: two specs that differ
/// only there describe the same sweep.
fn normalized_spec(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}

/// Refuse to write into a results folder that was started from a different spec (its
/// `sweep.yaml`), unless `update_spec`. Nothing is written either way.
pub fn check_results_folder(p: &Prepared, update_spec: bool) -> anyhow::Result<()> {
    let path = p.out_dir.join("sweep.yaml");
    let Ok(old) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let (a, b) = (normalized_spec(&old), normalized_spec(&p.source.text));
    if a == b || update_spec {
        return Ok(());
    }
    let k = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let show = |v: &[&str]| {
        v.get(k)
            .map_or("<end of spec>".to_string(), |l| format!("`{}`", l.trim()))
    };
    crate::bail_user!(
        "{} holds results of a different sweep spec: {} differs from {} (first difference: {} vs {}). \
         Nothing was changed. Fix: write to a new folder with --out DIR (or give the sweep a new `name:`), \
         or pass --update-spec to continue this folder with the new spec (finished runs whose settings \
         are unchanged are kept: a run id hashes every setting of its run)",
        p.out_dir.display(),
        path.display(),
        p.source.label,
        show(&a),
        show(&b)
    )
}

/// What a sweep invocation did.
pub struct SweepSummary {
    pub total: usize,
    pub skipped: usize,
    pub trained: usize,
    pub failed: usize,
    /// Pending runs skipped because another process was training them.
    pub busy: usize,
    pub out_dir: PathBuf,
}

fn metadata(p: &Prepared, peak: f64) -> Vec<(String, String)> {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut m = vec![
        ("scalelab.sweep".to_string(), p.spec.name.clone()),
        ("scalelab.spec_hash".into(), p.spec_hash.clone()),
        ("scalelab.version".into(), VERSION.into()),
        ("scalelab.backend".into(), p.device.backend_name()),
        ("scalelab.host".into(), host),
        ("scalelab.corpus".into(), p.corpus.description.clone()),
        ("scalelab.matmul_peak_flops".into(), format!("{peak:.4e}")),
        (
            "scalelab.n_convention".into(),
            "n_params = non-embedding parameters; flops = 6 * n_params * tokens".into(),
        ),
    ];
    if let Some(f) = p.corpus.floor {
        m.push((
            "scalelab.floor".into(),
            serde_json::to_string(&f).unwrap_or_default(),
        ));
    }
    m
}

/// Train every pending run of a prepared sweep.
pub fn run(p: &Prepared, opts: &RunOptions) -> anyhow::Result<SweepSummary> {
    let devices = if opts.devices.is_empty() {
        vec![p.device]
    } else {
        opts.devices.clone()
    };
    for d in &devices {
        d.ensure_usable()?;
    }
    check_results_folder(p, opts.update_spec)?;
    let ckpt = opts.checkpointing(p);
    std::fs::create_dir_all(&p.out_dir).map_err(|e| {
        crate::error::user(format!(
            "cannot create output folder {}: {e}",
            p.out_dir.display()
        ))
    })?;
    // A copy of the spec, and the exact floor, next to the results.
    crate::store::write_text_atomic(&p.out_dir.join("sweep.yaml"), &p.source.text)?;
    if let Some(f) = p.corpus.floor {
        crate::store::write_text_atomic(
            &p.out_dir.join("floor.json"),
            &serde_json::to_string_pretty(&f)?,
        )?;
    }
    if let Some(j) = &p.corpus.tokenizer_json {
        crate::store::write_text_atomic(&p.out_dir.join("tokenizer.json"), j)?;
    }
    let peak = measured_peak(devices[0]);
    let mut store = ResultsStore::open(&p.out_dir, metadata(p, peak))?;
    for u in &store.unreadable {
        eprintln!("scalelab: warning: unreadable result file {u}; its run will be retrained");
    }
    let units = units(&p.plan, &store);
    let meta = store.metadata.clone();
    let store_branch = |r: &RunPlan, o: &RunOutcome| branch_file(p, r, o, peak, &meta);
    let pending_runs: usize = units.iter().map(|u| u.members.len()).sum();
    let skipped = p.plan.runs.len() - pending_runs;
    for d in &p.plan.dropped {
        eprintln!("scalelab: dropped {}: {}", d.what, d.reason);
    }
    eprintln!(
        "scalelab: sweep {}: {} runs, {} already finished, {} to train on {} -> {}",
        p.spec.name,
        p.plan.runs.len(),
        skipped,
        pending_runs,
        p.device.backend_name(),
        p.out_dir.display()
    );
    if !p.plan.parents.is_empty() {
        eprintln!(
            "scalelab: cooldown branches: the sweep spends {:.3e} FLOPs where separate runs would cost {:.3e} ({:.2}x)",
            p.plan.flops_spent(),
            p.plan.total_flops(),
            p.plan.flops_spent() / p.plan.total_flops()
        );
    }
    let total_flops: f64 = units.iter().map(|u| u.flops()).sum();
    let mp = MultiProgress::with_draw_target(if opts.plain {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let interactive = !mp.is_hidden();
    let sweep_bar = mp.add(ProgressBar::new((total_flops / 1e6).max(1.0) as u64));
    sweep_bar.set_style(
        ProgressStyle::with_template(
            "{prefix:<12} [{elapsed_precise}] {wide_bar:.cyan/blue} {msg}",
        )
        .unwrap(),
    );
    let workers = if opts.devices.is_empty() {
        opts.workers
    } else {
        devices.len()
    }
    .clamp(1, units.len().max(1));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads_per_worker = (cores / workers).max(1);
    let limit = opts
        .max_runs
        .map(|m| m.min(units.len()))
        .unwrap_or(units.len());
    // Work queue: with several workers the longest units go first, so the sweep ends sooner.
    let mut order: Vec<usize> = (0..limit).collect();
    if workers > 1 {
        order.sort_by(|&a, &b| units[b].flops().total_cmp(&units[a].flops()));
    }
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(order.clone()));
    let style = ProgressStyle::with_template("  {prefix:<28} {pos:>6}/{len:<6} {msg}").unwrap();
    let bars: Vec<ProgressBar> = (0..workers)
        .map(|_| {
            let b = mp.add(ProgressBar::new(1));
            b.set_style(style.clone());
            b
        })
        .collect();
    let mut eta = Eta::default();
    let mut flops_done = 0.0;
    let mut trained = 0;
    let mut failed = 0;
    let mut busy = 0;
    let mut pending: std::collections::BTreeSet<usize> = order.iter().copied().collect();
    sweep_bar.set_message(eta_text(None));
    let result: anyhow::Result<()> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, f64, Vec<(&RunPlan, RunOutcome)>)>();
        for (k, bar) in bars.iter().cloned().enumerate() {
            let tx = tx.clone();
            let queue = &queue;
            let units = &units;
            let device = devices[k % devices.len()];
            let ckpt = &ckpt;
            let store_branch = &store_branch;
            let tag = if devices.len() > 1 {
                format!("{} ", device.short_name())
            } else {
                String::new()
            };
            scope.spawn(move || {
                let pool = (workers > 1).then(|| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads_per_worker)
                        .build()
                        .ok()
                });
                loop {
                    let Some(i) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        break;
                    };
                    let u = &units[i];
                    // Another process (a second `run`, a Slurm task) may be training it.
                    let Ok(Some(_lock)) =
                        crate::store::UnitLock::try_acquire(&p.out_dir, u.lead_id())
                    else {
                        if tx.send((i, 0.0, Vec::new())).is_err() {
                            break;
                        }
                        continue;
                    };
                    let steps = u.steps();
                    bar.set_length(steps as u64);
                    bar.set_position(0);
                    let lead = u.members[0];
                    bar.set_prefix(match u.parent {
                        Some(_) => {
                            format!("{tag}{} {} branches", lead.shape.label(), u.members.len())
                        }
                        None => format!(
                            "{tag}{} D={}",
                            lead.shape.label(),
                            human(lead.tokens as f64)
                        ),
                    });
                    let t_unit = Instant::now();
                    let (mut done_steps, mut last_step) = (0usize, 0usize);
                    let mut on_step = |st: train::StepInfo| {
                        // Steps restart at each branch: count progress as steps seen.
                        done_steps += if st.step > last_step {
                            st.step - last_step
                        } else {
                            1
                        };
                        last_step = st.step;
                        bar.set_position(done_steps as u64);
                        bar.set_message(format!(
                            "loss {:.4}  {:.0} tok/s",
                            st.train_loss, st.tokens_per_s
                        ));
                    };
                    let outcomes = match pool.as_ref().and_then(|p| p.as_ref()) {
                        Some(pool) => pool
                            .install(|| train_unit(p, u, device, ckpt, &mut on_step, store_branch)),
                        None => train_unit(p, u, device, ckpt, &mut on_step, store_branch),
                    };
                    if tx
                        .send((i, t_unit.elapsed().as_secs_f64(), outcomes))
                        .is_err()
                    {
                        break;
                    }
                }
                bar.finish_and_clear();
            });
        }
        drop(tx);
        for (i, secs, outcomes) in rx {
            let u = &units[i];
            pending.remove(&i);
            if outcomes.is_empty() {
                busy += 1;
                eprintln!(
                    "scalelab: {} is being trained by another process; skipped",
                    u.lead_id()
                );
                continue;
            }
            eta.record(u, secs);
            flops_done += u.flops();
            sweep_bar.set_position((flops_done / 1e6) as u64);
            let left = eta
                .seconds(pending.iter().map(|&k| &units[k]))
                .map(|t| t / workers as f64);
            sweep_bar.set_message(eta_text(left));
            let rows = unit_records(p, u, &outcomes, peak);
            for ((r, outcome), (rec, _)) in outcomes.iter().zip(&rows) {
                let is_parent = u.parent.is_some_and(|pp| pp.id == r.id);
                if !is_parent {
                    trained += 1;
                    if outcome.status == Status::Failed {
                        failed += 1;
                    }
                    sweep_bar.set_prefix(format!(
                        "runs {}/{}",
                        skipped + trained,
                        p.plan.runs.len()
                    ));
                    let line = format!(
                        "[{}/{}] {} D={} N={}{}: {} eval {:.4} (train {:.4}), {:.0} tok/s, {:.1}s; sweep ETA {}",
                        skipped + trained,
                        p.plan.runs.len(),
                        r.shape.label(),
                        human(r.tokens as f64),
                        human(r.n_params as f64),
                        if r.lr_multiplier != 1.0 { format!(" lr={:.2e}", r.lr) } else { String::new() },
                        rec.status,
                        rec.eval_loss,
                        rec.final_train_loss,
                        rec.tokens_per_s,
                        rec.wall_s,
                        left.map(hms).unwrap_or_else(|| "?".into())
                    );
                    if interactive {
                        mp.println(&line).ok();
                    } else {
                        eprintln!("scalelab: {line}");
                    }
                }
                if let Some(e) = &outcome.error {
                    eprintln!("scalelab: run {} failed: {e}", r.id);
                }
            }
            // Only this thread writes the results files.
            store.add_many(rows)?;
        }
        Ok(())
    });
    result?;
    sweep_bar.finish_and_clear();
    if opts.max_runs.is_none() {
        write_baselines(p, &store.metadata)?;
    }
    Ok(SweepSummary {
        total: p.plan.runs.len(),
        skipped,
        trained,
        failed,
        busy,
        out_dir: p.out_dir.clone(),
    })
}

/// Training sizes for the n-gram baselines: the spec's list, or the sweep's distinct D values,
/// each capped at `max_tokens` and at the corpus's unique training tokens.
pub fn baseline_sizes(p: &Prepared) -> Vec<u64> {
    let b = &p.spec.baselines;
    // An n-gram model trained on repeated copies only distorts its counts: sizes stop at the
    // unique training tokens.
    let cap = (b.max_tokens as u64).min(p.corpus.unique_train_tokens.unwrap_or(u64::MAX));
    let mut v: Vec<u64> = if b.tokens.is_empty() {
        p.plan.runs.iter().map(|r| r.tokens).collect()
    } else {
        b.tokens.iter().map(|&d| d as u64).collect()
    };
    for d in v.iter_mut() {
        *d = (*d).min(cap);
    }
    v.sort();
    v.dedup();
    v
}

/// Compute and write `baselines.parquet` unless it already holds every (order, size).
pub fn write_baselines(p: &Prepared, meta: &[(String, String)]) -> anyhow::Result<()> {
    let orders = &p.spec.baselines.orders;
    let sizes = baseline_sizes(p);
    if orders.is_empty() || sizes.is_empty() {
        return Ok(());
    }
    let have = crate::store::read_baselines(&p.out_dir).unwrap_or_default();
    let complete = sizes.iter().all(|&d| {
        orders
            .iter()
            .all(|&n| have.iter().any(|r| r.order == n && r.train_tokens == d))
    });
    if complete {
        return Ok(());
    }
    eprintln!(
        "scalelab: n-gram baselines (interpolated Kneser-Ney, orders {:?}) on {} training size(s)",
        orders,
        sizes.len()
    );
    let rows = crate::ngram::baselines(&p.corpus, orders, &sizes, |r| {
        eprintln!(
            "scalelab:   {}-gram D={}: eval {:.4} nats/token, {:.4} bits/byte ({:.1}s)",
            r.order, r.train_tokens, r.eval_loss, r.eval_bits_per_byte, r.seconds
        )
    });
    crate::store::write_baselines(&p.out_dir, &rows, meta)
}

/// Matmul peak of a device (FLOP/s), for MFU.
fn measured_peak(device: DeviceChoice) -> f64 {
    crate::with_backend!(device, |B, dev| crate::bench::matmul_peak::<
        <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
    >(&dev, 0.3))
}

/// A run's record, with its MFU against the device's matmul peak.
fn record_mfu(p: &Prepared, r: &RunPlan, o: &RunOutcome, peak: f64) -> RunRecord {
    let full_flops_per_token = r.shape.flops_per_token_full(r.vocab_size, r.context);
    let mfu = (peak > 0.0 && o.tokens_per_s.is_finite())
        .then(|| o.tokens_per_s * full_flops_per_token / peak);
    record(p, r, o, mfu)
}

/// Store a finished cooldown branch's own result files at once, so a crash later in its
/// group does not lose it.
fn branch_file(p: &Prepared, r: &RunPlan, o: &RunOutcome, peak: f64, meta: &[(String, String)]) {
    let rec = record_mfu(p, r, o, peak);
    if let Err(e) = crate::store::write_run_file(&p.out_dir, &rec, &o.curve, meta) {
        eprintln!("scalelab: could not store branch {}: {e}", r.id);
    }
}

/// Result rows (record and curve) for a trained unit; a stable parent's row has status
/// `stable`.
fn unit_records(
    p: &Prepared,
    u: &Unit<'_>,
    outcomes: &[(&RunPlan, RunOutcome)],
    peak: f64,
) -> Vec<(RunRecord, Vec<train::CurveRow>)> {
    outcomes
        .iter()
        .map(|(r, outcome)| {
            let is_parent = u.parent.is_some_and(|pp| pp.id == r.id);
            let mut rec = record_mfu(p, r, outcome, peak);
            if is_parent && rec.status == "ok" {
                rec.status = "stable".into();
            }
            (rec, outcome.curve.clone())
        })
        .collect()
}

/// Lead ids of the pending units, longest first (the order a job array runs them).
/// Also returns how many planned runs those units train.
pub fn pending_unit_ids(p: &Prepared) -> anyhow::Result<(Vec<String>, usize)> {
    let store = ResultsStore::open(&p.out_dir, Vec::new())?;
    let mut u = units(&p.plan, &store);
    u.sort_by(|a, b| b.flops().total_cmp(&a.flops()));
    let runs = u.iter().map(|u| u.members.len()).sum();
    Ok((u.iter().map(|u| u.lead_id().to_string()).collect(), runs))
}

/// Which unit of work `scalelab run-one` trains.
pub enum TaskRef {
    /// A run id (for a branch group: its stable parent's id).
    Run(String),
    /// Line K of a task list written by `submit` (K = SLURM_ARRAY_TASK_ID).
    Line { file: PathBuf, index: usize },
}

/// Train one unit in this process and write only its own result files
/// (`runs/<id>.parquet`, `curves/<id>.parquet`); `collect` merges them. This is what each
/// Slurm array task runs. A unit that is already finished, or being trained by another
/// process, is left alone (exit 0), so requeued and duplicate tasks are harmless.
pub fn run_one(p: &Prepared, task: &TaskRef, opts: &RunOptions) -> anyhow::Result<String> {
    let id = match task {
        TaskRef::Run(id) => id.clone(),
        TaskRef::Line { file, index } => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                crate::error::user(format!("cannot read task list {}: {e}", file.display()))
            })?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            match lines.get(*index) {
                Some(l) => l.trim().to_string(),
                None => crate::bail_user!(
                    "task {index} is out of range: {} lists {} tasks (0..{})",
                    file.display(),
                    lines.len(),
                    lines.len()
                ),
            }
        }
    };
    let all = p
        .plan
        .runs
        .iter()
        .any(|r| r.id == id || r.parent.as_deref() == Some(id.as_str()));
    if !all {
        crate::bail_user!(
            "run {id} is not in the plan of {} (see `scalelab status {}`)",
            p.out_dir.display(),
            p.out_dir.display()
        );
    }
    p.device.ensure_usable()?;
    let peak = measured_peak(p.device);
    let store = ResultsStore::open(&p.out_dir, metadata(p, peak))?;
    let units = units(&p.plan, &store);
    let Some(u) = units.iter().find(|u| u.lead_id() == id) else {
        return Ok(format!("{id}: already finished"));
    };
    let Some(_lock) = crate::store::UnitLock::try_acquire(&p.out_dir, &id)? else {
        return Ok(format!(
            "{id}: being trained by another process; nothing to do"
        ));
    };
    let ckpt = opts.checkpointing(p);
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let mut on_step = |st: train::StepInfo| {
        if last_print.elapsed().as_secs_f64() > 30.0 {
            last_print = Instant::now();
            eprintln!(
                "scalelab: {id} step {}/{} loss {:.4} {:.0} tok/s",
                st.step, st.steps, st.train_loss, st.tokens_per_s
            );
        }
    };
    let outcomes = train_unit(p, u, p.device, &ckpt, &mut on_step, &|r, o| {
        branch_file(p, r, o, peak, &store.metadata)
    });
    let rows = unit_records(p, u, &outcomes, peak);
    for (rec, curve) in &rows {
        crate::store::write_run_file(&p.out_dir, rec, curve, &store.metadata)?;
    }
    let summary: Vec<String> = rows
        .iter()
        .filter(|(r, _)| r.status != "stable")
        .map(|(r, _)| format!("{} {} eval {:.4}", r.run_id, r.status, r.eval_loss))
        .collect();
    Ok(format!(
        "{} in {:.1}s",
        summary.join("; "),
        t0.elapsed().as_secs_f64()
    ))
}

fn eta_text(secs: Option<f64>) -> String {
    match secs {
        Some(s) => format!("ETA {}", hms(s)),
        None => "ETA (after the first run)".into(),
    }
}

/// Time estimates for pending work from the runs finished in this invocation: a shape that
/// has trained runs at its measured seconds per step; an unseen shape at the full-FLOPs rate
/// measured on the largest shape seen so far (larger shapes use the CPU better, so this errs
/// long).
#[derive(Default)]
struct Eta {
    per_step: std::collections::HashMap<crate::plan::Shape, f64>,
    /// (full FLOPs per second, non-embedding N) of the largest shape measured.
    rate: Option<(f64, u64)>,
}

impl Eta {
    fn record(&mut self, u: &Unit<'_>, secs: f64) {
        let r = u.members[0];
        let steps = u.steps().max(1);
        let per = secs / steps as f64;
        self.per_step.insert(r.shape, per);
        let flops = r.shape.flops_per_token_full(r.vocab_size, r.context)
            * (r.batch_size * r.context) as f64;
        if self.rate.is_none_or(|(_, n)| r.n_params >= n) {
            self.rate = Some((flops / per, r.n_params));
        }
    }

    fn step_seconds(&self, r: &RunPlan) -> Option<f64> {
        self.per_step.get(&r.shape).copied().or_else(|| {
            let (rate, _) = self.rate?;
            Some(
                r.shape.flops_per_token_full(r.vocab_size, r.context)
                    * (r.batch_size * r.context) as f64
                    / rate,
            )
        })
    }

    fn unit_seconds(&self, u: &Unit<'_>) -> Option<f64> {
        Some(self.step_seconds(u.members[0])? * u.steps() as f64)
    }

    fn seconds<'a, 'b: 'a>(&self, units: impl Iterator<Item = &'a Unit<'b>>) -> Option<f64> {
        units.map(|u| self.unit_seconds(u)).sum()
    }
}

/// A unit of training: one run, or a stable parent with its pending branches.
struct Unit<'a> {
    parent: Option<&'a RunPlan>,
    members: Vec<&'a RunPlan>,
}

impl Unit<'_> {
    /// The id a unit is known by: its run, or its stable parent.
    fn lead_id(&self) -> &str {
        self.parent.map_or(&self.members[0].id, |p| &p.id)
    }

    fn flops(&self) -> f64 {
        self.members.iter().map(|r| r.flops_spent).sum::<f64>()
            + self.parent.map_or(0.0, |p| p.flops_spent)
    }

    fn steps(&self) -> usize {
        match self.parent {
            Some(p) => {
                p.steps
                    + self
                        .members
                        .iter()
                        .map(|r| r.steps - r.branch_step)
                        .sum::<usize>()
            }
            None => self.members[0].steps,
        }
    }
}

/// Pending work, smallest first. A branch group holds only its unfinished branches (its
/// stable phase is retrained up to them, or resumed from its checkpoint).
fn units<'a>(plan: &'a Plan, store: &ResultsStore) -> Vec<Unit<'a>> {
    let mut out = Vec::new();
    for r in plan
        .runs
        .iter()
        .filter(|r| r.parent.is_none() && !store.is_done(&r.id))
    {
        out.push(Unit {
            parent: None,
            members: vec![r],
        });
    }
    for parent in &plan.parents {
        let branches: Vec<&RunPlan> = plan
            .runs
            .iter()
            .filter(|r| r.parent.as_deref() == Some(&parent.id) && !store.is_done(&r.id))
            .collect();
        if !branches.is_empty() {
            out.push(Unit {
                parent: Some(parent),
                members: branches,
            });
        }
    }
    out.sort_by(|a, b| a.flops().total_cmp(&b.flops()));
    out
}

/// Train a unit; every member (and the parent) gets an outcome.
fn train_unit<'a>(
    p: &Prepared,
    u: &Unit<'a>,
    device: DeviceChoice,
    ckpt: &train::Checkpointing,
    on_step: &mut dyn FnMut(train::StepInfo),
    on_branch: &(dyn Fn(&RunPlan, &RunOutcome) + Sync),
) -> Vec<(&'a RunPlan, RunOutcome)> {
    match u.parent {
        None => {
            let r = u.members[0];
            vec![(
                r,
                guarded(|| {
                    crate::with_backend!(device, |B, dev| train::train_run_checkpointed::<B>(
                        r, &p.corpus, &dev, ckpt, on_step
                    ))
                }),
            )]
        }
        Some(parent) => {
            let t0 = Instant::now();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::with_backend!(device, |B, dev| train::train_branched::<B>(
                    parent,
                    &u.members,
                    &p.corpus,
                    &dev,
                    Some(ckpt),
                    on_step,
                    &mut |i, o| on_branch(u.members[i], o)
                ))
            }));
            match res {
                Ok((po, bo)) => std::iter::once((parent, po))
                    .chain(u.members.iter().copied().zip(bo))
                    .collect(),
                Err(e) => {
                    let f = failed(panic_message(&e), t0.elapsed().as_secs_f64());
                    std::iter::once(parent)
                        .chain(u.members.iter().copied())
                        .map(|r| (r, f.clone()))
                        .collect()
                }
            }
        }
    }
}

fn panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

fn failed(msg: String, wall_s: f64) -> RunOutcome {
    RunOutcome {
        status: Status::Failed,
        steps_done: 0,
        final_train_loss: f64::NAN,
        eval_loss: f64::NAN,
        tokens_per_s: f64::NAN,
        wall_s,
        curve: Vec::new(),
        error: Some(msg),
    }
}

/// Run `f`; a panic inside burn becomes a `failed` outcome with its message.
fn guarded(f: impl FnOnce() -> RunOutcome) -> RunOutcome {
    let t0 = Instant::now();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|e| failed(panic_message(&e), t0.elapsed().as_secs_f64()))
}

fn record(p: &Prepared, r: &RunPlan, o: &RunOutcome, mfu: Option<f64>) -> RunRecord {
    RunRecord {
        run_id: r.id.clone(),
        status: o.status.as_str().into(),
        error: o.error.clone().unwrap_or_default(),
        d_model: r.shape.d_model as i64,
        n_layer: r.shape.n_layer as i64,
        n_head: r.shape.n_head as i64,
        d_ff: r.shape.d_ff as i64,
        context: r.context as i64,
        vocab_size: r.vocab_size as i64,
        batch_size: r.batch_size as i64,
        steps: r.steps as i64,
        steps_done: o.steps_done as i64,
        tokens: r.tokens as i64,
        n_params: r.n_params as i64,
        n_params_total: r.n_params_total as i64,
        flops: r.flops,
        budget: r.budget,
        seed: r.seed as i64,
        lr: r.lr,
        warmup_steps: r.warmup_steps as i64,
        schedule: format!("{:?}", r.schedule).to_lowercase(),
        final_train_loss: o.final_train_loss,
        eval_loss: o.eval_loss,
        eval_bits_per_token: o.eval_loss / std::f64::consts::LN_2,
        eval_bits_per_byte: p.corpus.bits_per_byte(o.eval_loss),
        unique_tokens: p.corpus.unique_and_epochs(r.tokens).0 as i64,
        epochs: p.corpus.unique_and_epochs(r.tokens).1,
        tokens_per_s: o.tokens_per_s,
        mfu,
        wall_s: o.wall_s,
        backend: p.device.backend_name(),
        scalelab_version: VERSION.into(),
        flops_total: 6.0 * r.n_params_total as f64 * r.tokens as f64,
        flops_full: r.shape.flops_per_token_full(r.vocab_size, r.context) * r.tokens as f64,
        flops_spent: r.flops_spent,
        parent: r.parent.clone().unwrap_or_default(),
        branch_step: r.branch_step as i64,
        lr_multiplier: r.lr_multiplier,
        point_id: r.point_id.clone(),
        selected: false,
    }
}

/// Existing results in an output folder (for `plan`).
pub fn existing_runs(dir: &Path) -> Vec<RunRecord> {
    crate::store::read_runs(dir).unwrap_or_default()
}
