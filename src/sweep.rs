//! The executor: spec → corpus → plan → trainer → results store, with resume and progress.
//!
//! Owns running a sweep in this process: which runs are still pending (anything not in
//! `runs.parquet` as `ok`/`diverged`), training them one after another (largest first is
//! not needed on one device; smallest first gives early feedback), turning a panic inside a
//! run into a `failed` row instead of losing the sweep, and the progress display.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::corpus::{self, Corpus, CorpusSource};
use crate::curves::{FinalPredictor, PrunePolicy};
use crate::device::DeviceChoice;
use crate::eta::{self, Role, Speed};
use crate::plan::{self, Plan, RunPlan};
use crate::record::{CurveRow, Predicted, RunOutcome, RunRecord, Status};
use crate::spec::{SpecSource, SweepSpec};
use crate::store::ResultsStore;
use crate::train;
use crate::train::pack::PackKey;

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
            files: crate::fsio::expand_glob(t, &src.base_dir),
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
            lang: corpus::LangKnobs {
                topics: b.topics,
                lexicon: b.lexicon,
                zipf: b.zipf,
                topic_stay: b.topic_stay,
            },
        }
    }
}

/// Parse, validate, load the corpus and expand the plan. Nothing is written. `device`
/// overrides the spec's `device`.
pub fn prepare(
    src: SpecSource,
    out: Option<PathBuf>,
    device: Option<DeviceChoice>,
) -> anyhow::Result<Prepared> {
    let spec = SweepSpec::parse(&src)?;
    let device = match device {
        Some(d) => d,
        None => DeviceChoice::parse(&spec.device)?,
    };
    let ctx = spec.model.context;
    let eval_tokens = spec.corpus.eval_tokens as usize;
    let source = corpus_source(&spec, &src);
    let mut corpus = corpus::load(&source, ctx, eval_tokens, spec.corpus.eval_fraction)?;
    if let Some(u) = spec.corpus.train_tokens {
        corpus.cap_unique_tokens(u as usize, ctx)?;
    }
    let plan = plan::build(&spec, &src.label, corpus.vocab_size, corpus.fingerprint)?;
    let out_dir = out.unwrap_or_else(|| spec.out_dir());
    let spec_hash = crate::hashing::hex_id(&src.text);
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

/// A results folder's sweep, from the copy of its spec (`sweep.yaml`).
pub fn prepare_results(dir: &Path, device: Option<DeviceChoice>) -> anyhow::Result<Prepared> {
    let spec = dir.join(crate::fsio::SWEEP_FILE);
    if dir.is_file() {
        crate::bail_user!(
            "{} is a file; this command takes a sweep's results folder (the --out of `run` or `submit`, e.g. results/quick)",
            dir.display()
        );
    }
    if !dir.exists() {
        crate::bail_user!(
            "{} does not exist: run the sweep first (`scalelab run SPEC.yaml --out {}`), or name an existing results folder",
            dir.display(),
            dir.display()
        );
    }
    if !spec.is_file() {
        crate::bail_user!(
            "{} is not a sweep's results folder: it has no sweep.yaml (written by `run` and `submit`)",
            dir.display()
        );
    }
    prepare(
        SpecSource::from_file(&spec)?,
        Some(dir.to_path_buf()),
        device,
    )
}

/// Write what a results folder keeps beside the results: the copy of the spec
/// (`sweep.yaml`), the exact loss floor (`floor.json`) and a trained BPE tokenizer
/// (`tokenizer.json`). `dir` is the results folder (absolute or as given).
pub fn write_folder_files(p: &Prepared, dir: &Path) -> anyhow::Result<()> {
    crate::fsio::write_text_atomic(&dir.join(crate::fsio::SWEEP_FILE), &p.source.text)?;
    if let Some(f) = p.corpus.floor {
        crate::fsio::write_text_atomic(
            &dir.join(crate::fsio::FLOOR_FILE),
            &serde_json::to_string_pretty(&f)?,
        )?;
    }
    if let Some(j) = &p.corpus.tokenizer_json {
        crate::fsio::write_text_atomic(&dir.join("tokenizer.json"), j)?;
    }
    Ok(())
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

/// The ETA's cost of each run: timed on the device when asked (`workers` at once, as `run
/// --workers` trains them), else from the folder's finished runs, the spec or the CPU default
/// ([`eta::Speed::of`]).
pub fn speed(
    p: &Prepared,
    store_runs: &[RunRecord],
    measure: bool,
    workers: usize,
) -> anyhow::Result<Speed> {
    let mut speed = Speed::of(store_runs, p.spec.flops_per_s, p.device);
    if measure {
        let done = crate::record::finished_ids(store_runs);
        let pending: Vec<(&RunPlan, Role)> = eta::roles(&p.plan)
            .filter(|(r, _)| !done.contains(r.id.as_str()))
            .collect();
        p.device.ensure_usable()?;
        let threads = threads_per_worker(workers);
        let timed = crate::with_backend!(p.device, |B, dev| crate::bench::time_configs::<B>(
            &pending, &p.corpus, &dev, workers, threads
        ));
        speed.timed = timed.into_iter().collect();
        speed.timed_at_once = Some(workers);
    }
    Ok(speed)
}

/// The plan as a table, with each run's ETA and the pending runs' total.
pub fn plan_table(
    p: &Prepared,
    store_runs: &[RunRecord],
    packing: Packing,
    speed: &Speed,
    workers: usize,
) -> String {
    let mut s = plan_header(p);
    plan_rows(&mut s, p, store_runs, speed);
    let units = pending_unit_seconds(p, store_runs, speed);
    plan_footer(&mut s, p, store_runs, speed, &units, workers);
    s.push_str(&packing.describe(p, store_runs));
    s
}

/// `--pack`: how many runs of one shape train at once as one batched model
/// ([`train::pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Packing {
    /// Pack where it is expected to pay: on cuda, where a small model leaves the GPU idle
    /// between its kernels (not measured yet: no GPU has been lent). Not on the cpu backend,
    /// where a pack of 8 measured 0.64x the speed of its runs one by one, nor on vulkan,
    /// measured only on lavapipe (Vulkan on the CPU): 0.88x (README, "Run packing").
    #[default]
    Auto,
    Off,
    /// Up to this many runs per pack.
    Runs(usize),
}

impl Packing {
    /// Runs per pack on cuda under `auto`.
    pub const AUTO_CUDA_RUNS: usize = 8;

    /// `auto`, `off` or a count ≥ 1 (1 = off).
    pub fn parse(s: &str) -> Result<Packing, String> {
        match s {
            "auto" => Ok(Packing::Auto),
            "off" => Ok(Packing::Off),
            _ => match s.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "`{s}` is not auto, off or a number of runs ≥ 1 (e.g. --pack 8)"
                )),
                Ok(1) => Ok(Packing::Off),
                Ok(n) => Ok(Packing::Runs(n)),
            },
        }
    }

    /// Runs per pack on `device` (1: no packing).
    pub fn runs(self, device: DeviceChoice) -> usize {
        match (self, device) {
            (Packing::Off, _) => 1,
            (Packing::Auto, DeviceChoice::Cuda(_)) => Packing::AUTO_CUDA_RUNS,
            (Packing::Auto, DeviceChoice::Cpu | DeviceChoice::Vulkan) => 1,
            (Packing::Runs(n), _) => n,
        }
    }

    /// `plan`'s line on packing: how the pending runs would be packed, and why.
    fn describe(self, p: &Prepared, store_runs: &[RunRecord]) -> String {
        let size = self.runs(p.device);
        if size < 2 {
            let why = match self {
                Packing::Auto => "auto packs on cuda only: on the cpu backend and on lavapipe a pack ran slower than its runs one by one; --pack N forces it",
                _ => "--pack off",
            };
            return format!("packing: none ({why})\n");
        }
        let saved: Vec<Vec<String>> =
            train::pack_checkpoints(&p.out_dir.join(crate::fsio::CHECKPOINTS_DIR))
                .into_iter()
                .map(|c| c.run_ids)
                .collect();
        let units = pack_units(pending_units(&p.plan, store_runs), size, &saved);
        let packs: Vec<usize> = units
            .iter()
            .filter(|u| u.is_pack())
            .map(|u| u.members.len())
            .collect();
        let alone = units
            .iter()
            .filter(|u| u.parent.is_none() && !u.is_pack())
            .count();
        format!(
            "packing: up to {size} runs of one shape per pack on {}: {} pending runs train in {} pack{}, {alone} alone\n",
            p.device.backend_name(),
            packs.iter().sum::<usize>(),
            packs.len(),
            if packs.len() == 1 { "" } else { "s" },
        )
    }
}

/// The warning when the whole sweep's ETA exceeds the spec's `budget_hours` (one worker).
pub fn budget_warning(p: &Prepared, store_runs: &[RunRecord], speed: &Speed) -> Option<String> {
    let hours = p.spec.budget_hours?;
    let need = speed.whole_sweep_s(&p.plan, store_runs) / 3600.0;
    if need.is_nan() {
        return Some(format!(
            "budget_hours: {hours} cannot be checked: no speed for {} yet; set `flops_per_s:` (C = 6ND FLOPs per second) in the spec, or time it with `scalelab plan --measure`",
            p.device.backend_name()
        ));
    }
    (need > hours).then(|| {
        format!(
            "warning: the sweep needs ~{need:.1} h ({}), {:.1}x its budget_hours: {hours}; drop its largest budget or raise budget_hours",
            speed.describe(),
            need / hours
        )
    })
}

/// The sweep line, the loss floor and the column titles.
fn plan_header(p: &Prepared) -> String {
    use std::fmt::Write;
    let mut s = String::new();
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
        "{:<16} {:<14} {:>4} {:>10} {:>10} {:>10} {:>7} {:>5} {:>9} {:>10} {:>8}  status",
        "run_id", "shape", "seed", "N", "D", "C=6ND", "steps", "batch", "peak lr", "budget", "eta"
    );
    s
}

/// One line per planned run with its ETA and status.
fn plan_rows(s: &mut String, p: &Prepared, store_runs: &[RunRecord], speed: &Speed) {
    use std::fmt::Write;
    for r in &p.plan.runs {
        let status = store_runs.iter().find(|x| x.run_id == r.id).map_or_else(
            || "pending".into(),
            // `status`'s word for a finished run, so the two commands agree.
            |d| match d.status {
                Status::Ok => "done".into(),
                other => other.to_string(),
            },
        );
        let _ = writeln!(
            s,
            "{:<16} {:<14} {:>4} {:>10} {:>10} {:>10} {:>7} {:>5} {:>9} {:>10} {:>8}  {}",
            r.id,
            r.shape.label(),
            r.data.seed,
            human(r.n_params as f64),
            human(r.tokens as f64),
            format!("{:.2e}", r.flops),
            r.data.steps,
            r.data.batch_size,
            format!("{:.3e}", r.optim.lr),
            r.budget
                .map(|b| format!("{b:.2e}"))
                .unwrap_or_else(|| "-".into()),
            hms(speed.run_seconds(r, Role::of(r, false))),
            status
        );
    }
}

/// Seconds of each pending unit the executor trains as one (a lone run, or a stable parent
/// with its pending cooldown branches); packs are not modelled (their runs count one by one).
fn pending_unit_seconds(p: &Prepared, store_runs: &[RunRecord], speed: &Speed) -> Vec<f64> {
    pending_units(&p.plan, store_runs)
        .iter()
        .map(|u| {
            let parent = u
                .parent
                .map_or(0.0, |r| speed.run_seconds(r, Role::StableParent));
            let members: f64 = u
                .members
                .iter()
                .map(|r| speed.run_seconds(r, Role::of(r, false)))
                .sum();
            parent + members
        })
        .collect()
}

/// Dropped points, the cooldown-branch saving and the total with its ETA (on one worker, and
/// on `workers` when more than one).
fn plan_footer(
    s: &mut String,
    p: &Prepared,
    store_runs: &[RunRecord],
    speed: &Speed,
    pending: &[f64],
    workers: usize,
) {
    use std::fmt::Write;
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
    let on_workers = if workers > 1 {
        format!(
            ", ~{} on {workers} workers (longest first)",
            hms(eta::wall_clock(pending, workers))
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "total {:.3e} FLOPs; pending runs ETA ~{} on one worker{on_workers} on {} ({})",
        p.plan.total_flops(),
        hms(pending.iter().sum()),
        p.device.backend_name(),
        speed.describe()
    );
    if let Some(h) = p.spec.budget_hours {
        let whole = speed.whole_sweep_s(&p.plan, store_runs);
        if whole.is_finite() && whole <= h * 3600.0 {
            let _ = writeln!(
                s,
                "whole sweep ~{} of its budget_hours: {h} (one worker)",
                hms(whole)
            );
        }
    }
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
    /// Stop IsoFLOP runs predicted to end confidently worse than their budget's best.
    pub prune: Option<PrunePolicy>,
    /// Runs of one shape trained at once as one batched model (never with `prune`).
    pub pack: Packing,
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
            prune: None,
            pack: Packing::Auto,
        }
    }
}

impl RunOptions {
    /// The devices the workers train on (`devices`, else the sweep's), each checked.
    fn device_list(&self, p: &Prepared) -> anyhow::Result<Vec<DeviceChoice>> {
        let devices = if self.devices.is_empty() {
            vec![p.device]
        } else {
            self.devices.clone()
        };
        for d in &devices {
            d.ensure_usable()?;
        }
        Ok(devices)
    }

    /// Workers: one per device with `devices`, else `workers`; at most one per unit.
    fn worker_count(&self, devices: usize, units: usize) -> usize {
        let w = if self.devices.is_empty() {
            self.workers
        } else {
            devices
        };
        w.clamp(1, units.max(1))
    }

    fn checkpointing(&self, p: &Prepared) -> train::Checkpointing {
        train::Checkpointing {
            dir: p.out_dir.join(crate::fsio::CHECKPOINTS_DIR),
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

/// Whether a results folder's `sweep.yaml` is the spec being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecChange {
    /// The same spec, or a new folder.
    Same,
    /// A different spec, accepted with `--update-spec`.
    Updated,
}

/// How a results folder's `sweep.yaml` differs from the spec being run ("holds results of a
/// different sweep spec: ... first difference ..."), or None when it is the same (or absent).
pub fn spec_difference(p: &Prepared) -> Option<String> {
    let path = p.out_dir.join(crate::fsio::SWEEP_FILE);
    let old = std::fs::read_to_string(&path).ok()?;
    let (a, b) = (normalized_spec(&old), normalized_spec(&p.source.text));
    if a == b {
        return None;
    }
    let k = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let show = |v: &[&str]| {
        v.get(k)
            .map_or("<end of spec>".to_string(), |l| format!("`{}`", l.trim()))
    };
    Some(format!(
        "{} holds results of a different sweep spec: {} differs from {} (first difference: {} vs {})",
        p.out_dir.display(),
        path.display(),
        p.source.label,
        show(&a),
        show(&b)
    ))
}

/// Refuse to write into a results folder that was started from a different spec (its
/// `sweep.yaml`), unless `update_spec`; runs of an older run-id scheme are renamed.
pub fn check_results_folder(p: &Prepared, update_spec: bool) -> anyhow::Result<SpecChange> {
    let differs = spec_difference(p);
    match differs {
        Some(d) if !update_spec => crate::bail_user!(
            "{d}. Nothing was changed. Fix: write to a new folder with --out DIR (or give the sweep a new `name:`), \
             or pass --update-spec to continue this folder with the new spec (finished runs whose settings \
             are unchanged are kept: a run id hashes every setting of its run)"
        ),
        _ => {
            migrate_legacy_ids(p)?;
            Ok(if differs.is_none() {
                SpecChange::Same
            } else {
                SpecChange::Updated
            })
        }
    }
}

/// What a sweep invocation did.
pub struct SweepSummary {
    pub total: usize,
    pub skipped: usize,
    pub trained: usize,
    pub failed: usize,
    /// Pending runs skipped because another process was training them.
    pub busy: usize,
    /// Runs stopped by `--prune`, and the FLOPs their unfinished steps would have cost.
    pub pruned: usize,
    pub flops_saved: f64,
    /// FLOPs of the whole plan.
    pub flops_total: f64,
    pub out_dir: PathBuf,
}

impl SweepSummary {
    /// The closing lines of `run`: what was trained, and, when another process still trains
    /// some runs, how to get the complete merged tables once it finishes.
    pub fn message(&self) -> String {
        let mut s = format!(
            "scalelab: {} trained, {} skipped (already finished), {} failed{}; results in {}",
            self.trained,
            self.skipped,
            self.failed,
            if self.busy > 0 {
                format!(", {} left to the other process training them", self.busy)
            } else {
                String::new()
            },
            self.out_dir.display()
        );
        if self.pruned > 0 {
            s += &format!(
                "\nscalelab: --prune stopped {} runs early, saving {:.3e} FLOPs ({:.1}% of the sweep); \
                 they are `pruned` in runs.parquet, left out of fits unless `fit --include-pruned`",
                self.pruned,
                self.flops_saved,
                100.0 * self.flops_saved / self.flops_total.max(1e-300)
            );
        }
        if self.busy > 0 {
            s += &format!(
                "\nscalelab: runs.parquet and curves.parquet hold the runs finished so far; the other \
                 process merges the rest when it finishes (or run `scalelab collect {}` once it has)",
                self.out_dir.display()
            );
        }
        s
    }
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
        ("scalelab.id_scheme".into(), plan::ID_SCHEME.to_string()),
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

/// Rename the finished runs of a folder made with run-id scheme 1 to their current ids, so a
/// rerun of the same spec finds them (see [`crate::plan::ID_SCHEME`]).
fn migrate_legacy_ids(p: &Prepared) -> anyhow::Result<()> {
    let (fp, eval) = (p.corpus.fingerprint, p.spec.corpus.eval_tokens);
    let map: std::collections::HashMap<String, String> = p
        .plan
        .runs
        .iter()
        .chain(&p.plan.parents)
        // Scheme 1 predates shuffled orders and the precision setting: only a sequential f32
        // run can be the same run.
        .filter(|r| r.data.order.is_sequential() && r.precision.is_f32())
        .map(|r| (plan::legacy_run_id_v1(r, fp, eval), r.id.clone()))
        .collect();
    let n = crate::store::migrate_ids(&p.out_dir, &map, &metadata(p, 0.0))?;
    if n > 0 {
        eprintln!(
            "{}: renamed {n} finished runs from run-id scheme 1 to {} (same settings, new ids)",
            p.out_dir.display(),
            plan::ID_SCHEME
        );
    }
    Ok(())
}

/// After `--update-spec`: set aside the runs in the folder the updated spec no longer has (a
/// changed setting gives a run a new id; a removed seed, budget or shape drops it), so the
/// fit and the report see only the spec's runs; they stay on disk in `superseded/` (a kept
/// cooldown branch keeps its stable phase: `store::set_aside`). Refused while any run of the folder is training (a row of the earlier spec could come back).
pub fn set_aside_outdated_runs(p: &Prepared) -> anyhow::Result<()> {
    use std::collections::HashSet;
    let dir = &p.out_dir;
    let Some(_turn) = merge_turn(dir) else {
        crate::bail_user!(
            "{}: another process has been merging this folder's results for 5 minutes; nothing was changed. Fix: wait for it, then run the same command again",
            dir.display()
        );
    };
    // A run training now (lock ids are unit leads: a branch group locks its stable phase
    // only) could write a row of the earlier spec after the move: refuse while any does.
    if let Some(id) = training_now(dir) {
        crate::bail_user!(
            "{}: run {id} is training now (its lock in {} is held), and the updated spec may no longer have it. Nothing was changed. Fix: let it finish or stop it (scancel for a Slurm task), then run the same command again",
            dir.display(),
            dir.join(crate::fsio::LOCKS_DIR).display()
        );
    }
    let planned: HashSet<&str> = (p.plan.runs.iter())
        .chain(&p.plan.parents)
        .map(|r| r.id.as_str())
        .collect();
    let keep = |r: &RunRecord| planned.contains(r.run_id.as_str());
    let moved = crate::store::set_aside(dir, &keep, &rewrite_metadata(p))?;
    if !moved.is_empty() {
        eprintln!(
            "scalelab: {} runs in {} are not in the updated spec; set aside in {} (kept, not fitted): {}",
            moved.len(),
            dir.display(),
            dir.join(crate::store::SUPERSEDED_DIR).display(),
            moved.join(", ")
        );
    }
    Ok(())
}

/// Metadata for rewriting a folder's tables: this spec's provenance, with the matmul peak the
/// folder's runs were measured against.
fn rewrite_metadata(p: &Prepared) -> Vec<(String, String)> {
    let key = "scalelab.matmul_peak_flops";
    let runs_file = p.out_dir.join(crate::store::RUNS_FILE);
    let old = crate::store::read_metadata(&runs_file).unwrap_or_default();
    let mut meta = metadata(p, 0.0);
    if let Some((_, v)) = old.into_iter().find(|(k, _)| k == key) {
        if let Some(slot) = meta.iter_mut().find(|(k, _)| k == key) {
            slot.1 = v;
        }
    }
    meta
}

/// A run (a unit's lead id) whose lock another process holds, if any.
fn training_now(dir: &Path) -> Option<String> {
    let entries = std::fs::read_dir(dir.join(crate::fsio::LOCKS_DIR)).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".lock").map(str::to_string)
        })
        .filter(|id| id != MERGE_LOCK)
        .find(|id| crate::fsio::UnitLock::is_held(dir, id))
}

/// Train every pending run of a prepared sweep, then rebuild the merged tables from every
/// result file in the folder, so that they are complete whenever nothing is left to train
/// (whichever process trained which run).
pub fn run(p: &Prepared, opts: &RunOptions) -> anyhow::Result<SweepSummary> {
    let devices = opts.device_list(p)?;
    check_precision(p, &devices)?;
    if check_results_folder(p, opts.update_spec)? == SpecChange::Updated {
        set_aside_outdated_runs(p)?;
    }
    create_results_folder(p)?;
    let peak = measured_peak(devices[0]);
    let mut store = ResultsStore::open(&p.out_dir, metadata(p, peak))?;
    for u in &store.unreadable {
        eprintln!("scalelab: warning: unreadable result file {u}; its run will be retrained");
    }
    if !store.filled_columns.is_empty() {
        eprintln!(
            "scalelab: note: {} was written by an older scalelab; its rows lack {} (filled with the defaults stated in the README, \"Results files\"); the merged runs.parquet gets every column at its next rewrite",
            p.out_dir.display(),
            store.filled_columns.join(", ")
        );
    }
    // Packs train their runs to the end in one go: pruning needs runs alone.
    let pack = if opts.prune.is_some() {
        1
    } else {
        opts.pack.runs(devices[0])
    };
    let in_plan: std::collections::HashSet<&str> =
        p.plan.runs.iter().map(|r| r.id.as_str()).collect();
    let saved = saved_packs(&opts.checkpointing(p), |id| {
        in_plan.contains(id) && !store.is_done(id)
    });
    let units = pack_units(units(&p.plan, |id| store.is_done(id)), pack, &saved);
    let pending_runs: usize = units.iter().map(|u| u.members.len()).sum();
    let skipped = p.plan.runs.len() - pending_runs;
    announce(p, skipped, pending_runs);
    let cx = Ctx {
        p,
        workers: opts.worker_count(devices.len(), units.len()),
        units: &units,
        devices: &devices,
        ckpt: opts.checkpointing(p),
        peak,
        meta: store.metadata.clone(),
        skipped,
        prune: opts.prune,
        bests: BudgetBests::from_store(&store),
    };
    let order = work_order(&units, cx.workers, opts.max_runs);
    let tally = train_pending(&cx, &order, opts.plain, &mut store)?;
    finish_sweep(&cx, opts, &tally)
}

/// The devices must compute in the spec's `training.precision` (exit 2 before anything is
/// written otherwise).
fn check_precision(p: &Prepared, devices: &[DeviceChoice]) -> anyhow::Result<()> {
    let precision = p.spec.training.precision;
    for &d in devices {
        let ok = crate::with_backend!(d, |B, dev| train::supports_precision::<B>(&dev, precision));
        if !ok {
            crate::bail_user!(
                "{}: training.precision: {} is not supported by {} on this machine; use f32{}",
                p.source.label,
                precision.as_str(),
                d.backend_name(),
                if precision == crate::spec::Precision::Bf16 {
                    " or f16"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// The output folder, with the spec copy, the floor and the tokenizer beside the results.
fn create_results_folder(p: &Prepared) -> anyhow::Result<()> {
    // Whatever the reason, the folder is the user's choice: a user error, with the fix where
    // there is one.
    std::fs::create_dir_all(&p.out_dir).map_err(|e| {
        let e = crate::error::path_error("create output folder", &p.out_dir, e);
        if crate::error::is_user_error(&e) {
            e
        } else {
            crate::error::user(e.to_string())
        }
    })?;
    write_folder_files(p, &p.out_dir)
}

/// What the sweep is about to do, on stderr.
fn announce(p: &Prepared, skipped: usize, pending_runs: usize) {
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
}

/// The end of a sweep: the merged tables rebuilt from every result file on disk (this
/// process's runs and any other process's), the n-gram baselines, and the summary.
fn finish_sweep(cx: &Ctx<'_>, opts: &RunOptions, t: &Tally) -> anyhow::Result<SweepSummary> {
    merge_results(&cx.p.out_dir, cx.meta.clone(), MergeWhen::Always)?;
    if opts.max_runs.is_none() {
        write_baselines(cx.p, &cx.meta)?;
    }
    Ok(SweepSummary {
        total: cx.p.plan.runs.len(),
        skipped: cx.skipped + t.finished_elsewhere,
        trained: t.trained,
        failed: t.failed,
        busy: t.busy,
        pruned: t.pruned,
        flops_saved: t.flops_saved,
        flops_total: cx.p.plan.flops_spent(),
        out_dir: cx.p.out_dir.clone(),
    })
}

/// When [`merge_results`] rewrites the merged tables.
pub enum MergeWhen<'a> {
    /// Always (`collect`, the end of `run`).
    Always,
    /// Only when every run of the plan has a result (the end of `run-one`: the last task).
    Complete(&'a Plan),
}

/// What [`merge_results`] read and did.
pub struct Merged {
    /// The folder as read: `runs.parquet` overlaid with every per-run file.
    pub store: ResultsStore,
    /// Whether `runs.parquet` and `curves.parquet` were rewritten.
    pub written: bool,
}

/// Name of the lock that makes merges of one folder take turns.
const MERGE_LOCK: &str = "_merge";

/// Rebuild `runs.parquet` and `curves.parquet` from every result in a folder: the merged
/// tables overlaid with every per-run file (`runs/<id>.parquet`, `curves/<id>.parquet`), the
/// newest result of a retried run kept. The one merge of every command: `collect`, the end
/// of `run`, and `run-one` when it leaves every run with a result. Merges of one folder take
/// turns and each rereads the folder, so the last one holds every run written before it. A
/// folder with no result at all is left as it is.
pub fn merge_results(
    dir: &Path,
    meta: Vec<(String, String)>,
    when: MergeWhen<'_>,
) -> anyhow::Result<Merged> {
    let _turn = merge_turn(dir);
    let mut store = ResultsStore::open(dir, meta)?;
    let anything = !store.runs.is_empty() || dir.join(crate::store::RUNS_FILE).exists();
    let written = anything
        && match when {
            MergeWhen::Always => true,
            MergeWhen::Complete(plan) => every_run_has_a_result(plan, &store),
        };
    if written {
        store.flush()?;
    }
    Ok(Merged { store, written })
}

/// Wait (up to five minutes) for this process's turn to merge a folder.
fn merge_turn(dir: &Path) -> Option<crate::fsio::UnitLock> {
    let t0 = Instant::now();
    loop {
        match crate::fsio::UnitLock::try_acquire(dir, MERGE_LOCK) {
            Ok(Some(lock)) => return Some(lock),
            Ok(None) if t0.elapsed().as_secs() < 300 => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            // No lock to be had: merge anyway (each merge rereads the folder).
            _ => return None,
        }
    }
}

fn every_run_has_a_result(plan: &Plan, store: &ResultsStore) -> bool {
    let have: std::collections::HashSet<&str> =
        store.runs.iter().map(|r| r.run_id.as_str()).collect();
    plan.runs.iter().all(|r| have.contains(r.id.as_str()))
}

/// What one `run` shares with its workers and its collecting thread.
struct Ctx<'a> {
    p: &'a Prepared,
    units: &'a [Unit<'a>],
    /// Worker k trains on `devices[k % devices.len()]`.
    devices: &'a [DeviceChoice],
    workers: usize,
    ckpt: train::Checkpointing,
    /// Matmul peak of the first device (FLOP/s), for MFU.
    peak: f64,
    /// Parquet metadata of the result files.
    meta: Vec<(String, String)>,
    /// Planned runs already finished when the sweep started.
    skipped: usize,
    /// `--prune`: the policy and each budget's best so far.
    prune: Option<PrunePolicy>,
    bests: BudgetBests,
}

impl Ctx<'_> {
    fn threads_per_worker(&self) -> usize {
        threads_per_worker(self.workers)
    }
}

/// CPU threads per worker: the cores split evenly.
fn threads_per_worker(workers: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / workers.max(1)).max(1)
}

/// The work queue: the first `max_runs` units (smallest first); with several workers the
/// longest units go first, so the sweep ends sooner.
fn work_order(units: &[Unit<'_>], workers: usize, max_runs: Option<usize>) -> Vec<usize> {
    let limit = max_runs.map(|m| m.min(units.len())).unwrap_or(units.len());
    let mut order: Vec<usize> = (0..limit).collect();
    if workers > 1 {
        order.sort_by(|&a, &b| units[b].flops().total_cmp(&units[a].flops()));
    }
    order
}

/// A worker's word on one unit.
enum Report<'a> {
    /// Trained; the lock is held until the collecting thread has stored the results, so
    /// no other process takes the unit up in between.
    Trained {
        unit: usize,
        secs: f64,
        outcomes: Vec<(&'a RunPlan, RunOutcome)>,
        lock: Vec<crate::fsio::UnitLock>,
    },
    /// Another process holds the unit's lock (a second `run`, a Slurm task).
    Busy(usize),
    /// Another process finished the unit after this one read the folder.
    FinishedElsewhere(usize),
}

/// The worker pool: `cx.workers` threads take units off one queue; this thread stores the
/// results as they come in (only it writes the merged files).
fn train_pending(
    cx: &Ctx<'_>,
    order: &[usize],
    plain: bool,
    store: &mut ResultsStore,
) -> anyhow::Result<Tally> {
    let total_flops: f64 = cx.units.iter().map(|u| u.flops()).sum();
    let progress = Progress::new(plain, total_flops, cx.workers);
    let queue = Mutex::new(VecDeque::from(order.to_vec()));
    let prior = Speed::of(&store.runs, cx.p.spec.flops_per_s, cx.devices[0]).model();
    let mut tally = Tally::new(order, prior);
    let first = tally
        .eta
        .seconds(order.iter().map(|&k| &cx.units[k]), cx.workers);
    progress.sweep_done(0.0, first);
    let result: anyhow::Result<()> = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Report<'_>>();
        for (k, bar) in progress.worker_bars.iter().enumerate() {
            let (tx, queue) = (tx.clone(), &queue);
            scope.spawn(move || worker(cx, k, queue, bar, tx));
        }
        drop(tx);
        for report in rx {
            tally.take(cx, report, &progress, store)?;
        }
        Ok(())
    });
    result?;
    progress.finish();
    Ok(tally)
}

fn next_unit(queue: &Mutex<VecDeque<usize>>) -> Option<usize> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// One worker: units off the queue until it is empty (or the collector has stopped).
fn worker<'a>(
    cx: &Ctx<'a>,
    k: usize,
    queue: &Mutex<VecDeque<usize>>,
    bar: &ProgressBar,
    tx: mpsc::Sender<Report<'a>>,
) {
    let device = cx.devices[k % cx.devices.len()];
    let tag = if cx.devices.len() > 1 {
        format!("{} ", device.short_name())
    } else {
        String::new()
    };
    let pool = (cx.workers > 1)
        .then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(cx.threads_per_worker())
                .build()
                .ok()
        })
        .flatten();
    while let Some(i) = next_unit(queue) {
        let report = step_unit(cx, i, device, &tag, bar, pool.as_ref());
        if tx.send(report).is_err() {
            break;
        }
    }
    bar.finish_and_clear();
}

/// The per-unit step of a worker: claim the unit, train it, report the outcomes.
fn step_unit<'a>(
    cx: &Ctx<'a>,
    i: usize,
    device: DeviceChoice,
    tag: &str,
    bar: &ProgressBar,
    pool: Option<&rayon::ThreadPool>,
) -> Report<'a> {
    let u = &cx.units[i];
    let lock = match claim(cx.p, u) {
        Claim::Mine(lock) => lock,
        Claim::Busy => return Report::Busy(i),
        Claim::Finished => return Report::FinishedElsewhere(i),
    };
    Progress::start_unit(bar, tag, u);
    let t_unit = Instant::now();
    let prune = cx.prune.map(|policy| (policy, &cx.bests));
    let mut on_step = UnitWatch::new(u, prune, Progress::step_counter(bar));
    let store_branch = |r: &RunPlan, o: &RunOutcome| branch_file(cx.p, r, o, cx.peak, &cx.meta);
    let train = || train_unit(cx.p, u, device, &cx.ckpt, &mut on_step, &store_branch);
    let outcomes = train::on_pool(pool, train);
    Report::Trained {
        unit: i,
        secs: t_unit.elapsed().as_secs_f64(),
        outcomes,
        lock,
    }
}

/// Whether this process may train a unit.
enum Claim {
    Mine(Vec<crate::fsio::UnitLock>),
    /// Another process is training it.
    Busy,
    /// Another process finished it after this one read the folder.
    Finished,
}

/// Lock a unit for this process, unless another process holds it or has finished it since
/// this process read the folder.
fn claim(p: &Prepared, u: &Unit<'_>) -> Claim {
    let mut locks = Vec::new();
    for id in u.lock_ids() {
        let Ok(Some(lock)) = crate::fsio::UnitLock::try_acquire(&p.out_dir, id) else {
            return Claim::Busy;
        };
        locks.push(lock);
    }
    if finished_on_disk(p, u) {
        Claim::Finished
    } else {
        Claim::Mine(locks)
    }
}

/// Whether every member of a unit has a finished result file now (read only when each has
/// a per-run file: the rare case of a unit finished by another process meanwhile).
fn finished_on_disk(p: &Prepared, u: &Unit<'_>) -> bool {
    let dir = p.out_dir.join(crate::store::RUN_FILES_DIR);
    if !u
        .members
        .iter()
        .all(|r| dir.join(format!("{}.parquet", r.id)).is_file())
    {
        return false;
    }
    ResultsStore::open(&p.out_dir, Vec::new())
        .is_ok_and(|st| u.members.iter().all(|r| st.is_done(&r.id)))
}

/// The progress display: a bar for the sweep (FLOPs done, runs, ETA) and one per worker on a
/// terminal; one line per finished run otherwise (`--plain`, CI, output not a terminal).
struct Progress {
    mp: MultiProgress,
    interactive: bool,
    sweep: ProgressBar,
    worker_bars: Vec<ProgressBar>,
}

impl Progress {
    fn new(plain: bool, total_flops: f64, workers: usize) -> Progress {
        let mp = MultiProgress::with_draw_target(if plain {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let interactive = !mp.is_hidden();
        let sweep = mp.add(ProgressBar::new((total_flops / 1e6).max(1.0) as u64));
        sweep.set_style(
            ProgressStyle::with_template(
                "{prefix:<12} [{elapsed_precise}] {wide_bar:.cyan/blue} {msg}",
            )
            .unwrap(),
        );
        let style = ProgressStyle::with_template("  {prefix:<28} {pos:>6}/{len:<6} {msg}").unwrap();
        let worker_bars = (0..workers)
            .map(|_| {
                let b = mp.add(ProgressBar::new(1));
                b.set_style(style.clone());
                b
            })
            .collect();
        sweep.set_message(eta_text(None));
        Progress {
            mp,
            interactive,
            sweep,
            worker_bars,
        }
    }

    /// A worker's bar at the start of a unit.
    fn start_unit(bar: &ProgressBar, tag: &str, u: &Unit<'_>) {
        bar.set_length(u.steps() as u64);
        bar.set_position(0);
        let lead = u.members[0];
        bar.set_prefix(match u.parent {
            Some(_) => format!("{tag}{} {} branches", lead.shape.label(), u.members.len()),
            None if u.is_pack() => format!(
                "{tag}{} D={} pack of {}",
                lead.shape.label(),
                human(lead.tokens as f64),
                u.members.len()
            ),
            None => format!(
                "{tag}{} D={}",
                lead.shape.label(),
                human(lead.tokens as f64)
            ),
        });
    }

    /// A worker's step display: its bar counts steps seen (steps restart at each branch)
    /// and, for a single run, shows its predicted final training loss once there is one.
    fn step_counter(bar: &ProgressBar) -> impl FnMut(train::StepInfo, Option<Predicted>) + '_ {
        let (mut done_steps, mut last_step) = (0usize, 0usize);
        move |st: train::StepInfo, predicted: Option<Predicted>| {
            done_steps += if st.step > last_step {
                st.step - last_step
            } else {
                1
            };
            last_step = st.step;
            bar.set_position(done_steps as u64);
            let predicted = predicted
                .map(|p| format!("  final ≈ {:.3}", p.loss))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.4}  {:.0} tok/s{predicted}",
                st.train_loss, st.tokens_per_s
            ));
        }
    }

    /// The sweep bar after a unit: FLOPs done and the ETA of the rest.
    fn sweep_done(&self, flops_done: f64, left: Option<f64>) {
        self.sweep.set_position((flops_done / 1e6) as u64);
        self.sweep.set_message(eta_text(left));
    }

    /// A finished run's line: above the bars on a terminal, else on stderr.
    fn run_line(&self, runs_done: usize, runs: usize, line: &str) {
        self.sweep.set_prefix(format!("runs {runs_done}/{runs}"));
        if self.interactive {
            self.mp.println(line).ok();
        } else {
            eprintln!("scalelab: {line}");
        }
    }

    fn finish(&self) {
        self.sweep.finish_and_clear();
    }
}

/// What the collecting thread has seen so far.
struct Tally {
    trained: usize,
    failed: usize,
    /// Runs skipped because another process was training them.
    busy: usize,
    /// Runs another process finished after this one read the folder.
    finished_elsewhere: usize,
    pruned: usize,
    flops_saved: f64,
    flops_done: f64,
    eta: Eta,
    /// Units of the queue not reported yet.
    pending: BTreeSet<usize>,
}

impl Tally {
    fn new(order: &[usize], prior: Option<eta::CostModel>) -> Tally {
        Tally {
            trained: 0,
            failed: 0,
            busy: 0,
            finished_elsewhere: 0,
            pruned: 0,
            flops_saved: 0.0,
            flops_done: 0.0,
            eta: Eta {
                prior,
                samples: Vec::new(),
            },
            pending: order.iter().copied().collect(),
        }
    }

    /// Account for one worker report; a trained unit's results are stored (the unit's lock
    /// is released only then).
    fn take(
        &mut self,
        cx: &Ctx<'_>,
        report: Report<'_>,
        progress: &Progress,
        store: &mut ResultsStore,
    ) -> anyhow::Result<()> {
        match report {
            Report::Busy(i) => {
                self.pending.remove(&i);
                self.busy += cx.units[i].members.len();
                eprintln!(
                    "scalelab: {} is being trained by another process; skipped",
                    cx.units[i].lead_id()
                );
            }
            Report::FinishedElsewhere(i) => {
                self.pending.remove(&i);
                self.finished_elsewhere += cx.units[i].members.len();
                eprintln!(
                    "scalelab: {} was finished by another process meanwhile; skipped",
                    cx.units[i].lead_id()
                );
            }
            Report::Trained {
                unit,
                secs,
                outcomes,
                lock,
            } => {
                let rows = self.unit_trained(cx, unit, secs, &outcomes, progress);
                // Only this thread writes the results files.
                store.add_many(rows)?;
                cx.units[unit].remove_checkpoints(&cx.ckpt, &outcomes);
                drop(lock);
            }
        }
        Ok(())
    }

    /// Progress, ETA and one line per trained run; returns the unit's result rows.
    fn unit_trained(
        &mut self,
        cx: &Ctx<'_>,
        i: usize,
        secs: f64,
        outcomes: &[(&RunPlan, RunOutcome)],
        progress: &Progress,
    ) -> Vec<(RunRecord, Vec<CurveRow>)> {
        let u = &cx.units[i];
        self.pending.remove(&i);
        self.eta.record(u, secs, outcomes);
        self.flops_done += u.flops();
        let left = self
            .eta
            .seconds(self.pending.iter().map(|&k| &cx.units[k]), cx.workers);
        progress.sweep_done(self.flops_done, left);
        let rows = unit_records(cx.p, u, outcomes, cx.peak);
        for ((r, outcome), (rec, curve)) in outcomes.iter().zip(&rows) {
            let is_parent = u.parent.is_some_and(|pp| pp.id == r.id);
            if !is_parent {
                self.trained += 1;
                match outcome.status {
                    Status::Failed => self.failed += 1,
                    Status::Pruned => {
                        self.pruned += 1;
                        self.flops_saved += r.flops_spent - rec.flops_spent;
                    }
                    Status::Ok => cx.bests.record(rec, curve),
                    _ => {}
                }
                let done = cx.skipped + self.trained;
                let line = run_line(done, cx.p.plan.runs.len(), r, rec, left);
                progress.run_line(done, cx.p.plan.runs.len(), &line);
            }
            if let Some(e) = &outcome.error {
                eprintln!("scalelab: run {} failed: {e}", r.id);
            }
        }
        rows
    }
}

/// `[k/n] shape D= N=: status eval (train), tok/s, time; sweep ETA`.
fn run_line(done: usize, runs: usize, r: &RunPlan, rec: &RunRecord, left: Option<f64>) -> String {
    format!(
        "[{}/{}] {} D={} N={}{}: {}{} eval {:.4} (train {:.4}), {:.0} tok/s, {:.1}s; sweep ETA {}",
        done,
        runs,
        r.shape.label(),
        human(r.tokens as f64),
        human(r.n_params as f64),
        if r.lr_multiplier != 1.0 {
            format!(" lr={:.2e}", r.optim.lr)
        } else {
            String::new()
        },
        rec.status,
        match rec.predicted_eval_loss {
            Some(p) if rec.status == Status::Pruned => format!(
                " at step {}/{} (predicted final eval {p:.4})",
                rec.steps_done, rec.steps
            ),
            _ => String::new(),
        },
        rec.eval_loss,
        rec.final_train_loss,
        rec.tokens_per_s,
        rec.wall_s,
        left.map(hms).unwrap_or_else(|| "?".into())
    )
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

/// `scalelab baselines DIR`: recompute a results folder's `baselines.parquet`; returns its
/// rows, one line each.
pub fn baselines_command(dir: &Path) -> anyhow::Result<String> {
    use std::fmt::Write;
    let p = prepare_results(dir, None)?;
    let _ = std::fs::remove_file(dir.join(crate::store::BASELINES_FILE));
    let meta = crate::store::read_metadata(&dir.join(crate::store::RUNS_FILE)).unwrap_or_default();
    write_baselines(&p, &meta)?;
    let mut s = String::new();
    for r in crate::store::read_baselines(dir)? {
        let _ = writeln!(
            s,
            "{}-gram  D={:>12}  {:.4} nats/token  {:.4} bits/byte",
            r.order, r.train_tokens, r.eval_loss, r.eval_bits_per_byte
        );
    }
    Ok(s)
}

/// Matmul peak of a device (FLOP/s), for MFU.
fn measured_peak(device: DeviceChoice) -> f64 {
    crate::with_backend!(device, |B, dev| crate::bench::matmul_peak::<
        <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
    >(&dev, 0.3))
}

/// A run's record, with its MFU against the device's matmul peak.
fn record_mfu(p: &Prepared, r: &RunPlan, o: &RunOutcome, peak: f64) -> RunRecord {
    let backend = p.device.backend_name();
    let ctx = crate::record::RecordContext {
        eval_bytes_per_token: p.corpus.eval_bytes_per_token,
        unique_train_tokens: p.corpus.unique_train_tokens,
        backend: &backend,
        peak_flops: peak,
    };
    RunRecord::from_outcome(r, o, &ctx)
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
) -> Vec<(RunRecord, Vec<CurveRow>)> {
    outcomes
        .iter()
        .map(|(r, outcome)| {
            let is_parent = u.parent.is_some_and(|pp| pp.id == r.id);
            let mut rec = record_mfu(p, r, outcome, peak);
            if is_parent && rec.status == Status::Ok {
                rec.status = Status::Stable;
            }
            if rec.status == Status::Pruned {
                rec.predicted_eval_loss =
                    crate::curves::pruned_eval_estimate(&outcome.curve, r.data.steps);
                rec.flops_spent = r.flops_spent * outcome.steps_done as f64 / r.data.steps as f64;
            }
            (rec, outcome.curve.clone())
        })
        .collect()
}

/// Lead ids of the pending units, longest first (the order a job array runs them).
/// Also returns how many planned runs those units train.
pub fn pending_unit_ids(p: &Prepared) -> anyhow::Result<(Vec<String>, usize)> {
    let store = ResultsStore::open(&p.out_dir, Vec::new())?;
    let mut u = units(&p.plan, |id| store.is_done(id));
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

impl TaskRef {
    /// The unit id: the run id, or line K of the task list.
    fn unit_id(&self) -> anyhow::Result<String> {
        match self {
            TaskRef::Run(id) => Ok(id.clone()),
            TaskRef::Line { file, index } => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    crate::error::user(format!("cannot read task list {}: {e}", file.display()))
                })?;
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                match lines.get(*index) {
                    Some(l) => Ok(l.trim().to_string()),
                    None => crate::bail_user!(
                        "task {index} is out of range: {} lists {} tasks (0..{})",
                        file.display(),
                        lines.len(),
                        lines.len()
                    ),
                }
            }
        }
    }
}

/// Train one unit in this process and write only its own result files
/// (`runs/<id>.parquet`, `curves/<id>.parquet`); `collect` merges them. This is what each
/// Slurm array task runs. A unit that is already finished, or being trained by another
/// process, is left alone (exit 0), so requeued and duplicate tasks are harmless. When every
/// run of the sweep then has a result (the last task), the merged tables are rebuilt.
pub fn run_one(p: &Prepared, task: &TaskRef, opts: &RunOptions) -> anyhow::Result<String> {
    let id = task.unit_id()?;
    let planned = p
        .plan
        .runs
        .iter()
        .any(|r| r.id == id || r.parent.as_deref() == Some(id.as_str()));
    if !planned {
        crate::bail_user!(
            "run {id} is not in the plan of {} (see `scalelab status {}`)",
            p.out_dir.display(),
            p.out_dir.display()
        );
    }
    p.device.ensure_usable()?;
    check_precision(p, &[p.device])?;
    let peak = measured_peak(p.device);
    let meta = metadata(p, peak);
    let msg = train_one(p, &id, opts, peak, &meta)?;
    let merged = merge_results(&p.out_dir, meta, MergeWhen::Complete(&p.plan))?;
    Ok(if merged.written {
        format!(
            "{msg}; all {} runs have results: merged them into {} and {}",
            p.plan.runs.len(),
            crate::store::RUNS_FILE,
            crate::store::CURVES_FILE
        )
    } else {
        msg
    })
}

/// `run-one`'s training: the unit `id` unless it is finished or taken; its own result files.
fn train_one(
    p: &Prepared,
    id: &str,
    opts: &RunOptions,
    peak: f64,
    meta: &[(String, String)],
) -> anyhow::Result<String> {
    let store = ResultsStore::open(&p.out_dir, meta.to_vec())?;
    let units = units(&p.plan, |id| store.is_done(id));
    let Some(u) = units.iter().find(|u| u.lead_id() == id) else {
        return Ok(format!("{id}: already finished"));
    };
    let _lock = match claim(p, u) {
        Claim::Mine(lock) => lock,
        Claim::Finished => return Ok(format!("{id}: already finished")),
        Claim::Busy => {
            return Ok(format!(
                "{id}: being trained by another process; nothing to do (once it finishes, \
                 `scalelab collect {}` merges the complete tables)",
                p.out_dir.display()
            ))
        }
    };
    let t0 = Instant::now();
    // `--prune` in a job array: against the best runs finished when this task started.
    let bests = BudgetBests::from_store(&store);
    let prune = opts.prune.map(|policy| (policy, &bests));
    let ckpt = opts.checkpointing(p);
    let outcomes = train::on_pool(None, || {
        train_unit(
            p,
            u,
            p.device,
            &ckpt,
            &mut UnitWatch::new(u, prune, log_every_30s(id)),
            &|r, o| branch_file(p, r, o, peak, meta),
        )
    });
    let rows = unit_records(p, u, &outcomes, peak);
    for (rec, curve) in &rows {
        crate::store::write_run_file(&p.out_dir, rec, curve, meta)?;
    }
    u.remove_checkpoints(&opts.checkpointing(p), &outcomes);
    let summary: Vec<String> = rows
        .iter()
        .filter(|(r, _)| r.status != Status::Stable)
        .map(|(r, _)| format!("{} {} eval {:.4}", r.run_id, r.status, r.eval_loss))
        .collect();
    Ok(format!(
        "{} in {:.1}s",
        summary.join("; "),
        t0.elapsed().as_secs_f64()
    ))
}

/// `run-one`'s progress: a line every 30 seconds.
fn log_every_30s(id: &str) -> impl FnMut(train::StepInfo, Option<Predicted>) + '_ {
    let mut last_print = Instant::now();
    move |st: train::StepInfo, predicted: Option<Predicted>| {
        if last_print.elapsed().as_secs_f64() > 30.0 {
            last_print = Instant::now();
            eprintln!(
                "scalelab: {id} step {}/{} loss {:.4} {:.0} tok/s{}",
                st.step,
                st.steps,
                st.train_loss,
                st.tokens_per_s,
                predicted
                    .map(|p| format!(", predicted final {:.4}", p.loss))
                    .unwrap_or_default()
            );
        }
    }
}

/// A worker's watch over one unit: its display (`show`, given the latest prediction), and
/// for a single run its final-loss predictions, logged on its curve rows, and with `--prune`
/// the check of each new prediction against its IsoFLOP budget's best.
struct UnitWatch<'a, F> {
    show: F,
    predictor: Option<FinalPredictor>,
    prune: Option<(PrunePolicy, &'a BudgetBests, f64)>,
}

impl<'a, F: FnMut(train::StepInfo, Option<Predicted>)> UnitWatch<'a, F> {
    fn new(u: &Unit<'_>, prune: Option<(PrunePolicy, &'a BudgetBests)>, show: F) -> Self {
        let single = (u.parent.is_none() && !u.is_pack()).then(|| u.members[0]);
        UnitWatch {
            show,
            predictor: single.map(|r| {
                let resamples = if prune.is_some() {
                    crate::curves::PREDICT_RESAMPLES
                } else {
                    0
                };
                FinalPredictor::new(r, resamples)
            }),
            prune: prune.and_then(|(policy, bests)| Some((policy, bests, single?.budget?))),
        }
    }
}

impl<F: FnMut(train::StepInfo, Option<Predicted>)> train::StepObserver for UnitWatch<'_, F> {
    fn resumed(&mut self, curve: &[CurveRow]) {
        if let Some(p) = &mut self.predictor {
            p.resumed(curve);
        }
    }

    fn step(&mut self, st: train::StepInfo) -> train::StepReply {
        let prediction = self
            .predictor
            .as_mut()
            .and_then(|p| p.observe(st.step, st.train_loss));
        let prune = match (prediction, self.prune, &self.predictor) {
            (Some(p), Some((policy, bests, budget)), Some(pred)) => {
                bests.prunes(&policy, &p, pred.latest_index(), budget)
            }
            _ => false,
        };
        (self.show)(st, self.predictor.as_ref().and_then(|p| p.latest()));
        train::StepReply { prediction, prune }
    }
}

/// `--prune`'s reference: each IsoFLOP budget's best final training loss
/// ([`crate::curves::final_train_mean`]) over its finished `ok` runs, and how far the finished
/// runs' own predictions erred ([`crate::curves::Calibration`]); read by the workers, updated
/// by the collecting thread as runs finish.
#[derive(Default)]
struct BudgetBests(Mutex<(Vec<(f64, f64)>, crate::curves::Calibration)>);

impl BudgetBests {
    /// The bests of the runs a results store already holds.
    fn from_store(store: &ResultsStore) -> Self {
        let bests = BudgetBests::default();
        let curves = crate::curves::by_run(&store.curves);
        for r in store.runs.iter().filter(|r| r.status == Status::Ok) {
            if let Some(c) = curves.get(r.run_id.as_str()) {
                bests.record(r, c);
            }
        }
        bests
    }

    fn record(&self, rec: &RunRecord, curve: &[CurveRow]) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1.record(curve, rec.steps.max(1) as usize);
        let (Some(budget), Some(loss)) = (rec.budget, crate::curves::final_train_mean(curve))
        else {
            return;
        };
        match g.0.iter_mut().find(|(b, _)| *b == budget) {
            Some(e) => e.1 = e.1.min(loss),
            None => g.0.push((budget, loss)),
        }
    }

    /// Whether `policy` prunes a run of `budget` on prediction `p` (made at
    /// [`crate::curves::PREDICT_AT`] index `k`).
    fn prunes(&self, policy: &PrunePolicy, p: &Predicted, k: usize, budget: f64) -> bool {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let best = g.0.iter().find(|(b, _)| *b == budget).map(|e| e.1);
        best.is_some_and(|b| policy.prunes(p, k, b, &g.1))
    }
}

fn eta_text(secs: Option<f64>) -> String {
    match secs {
        Some(s) => format!("ETA {}", hms(s)),
        None => "ETA (after the first run)".into(),
    }
}

/// Time estimates for pending work: the cost model ([`eta::CostModel`]: seconds per step
/// plus FLOPs at a rate, so a shape seen at one batch size is not assumed at another). Before
/// any unit of this invocation has finished, `plan`'s model without `--measure` (the folder's
/// finished runs, the spec's `flops_per_s`, or the CPU default); then that model scaled to
/// the units trained here; from three units on whose fit has both terms, that fit.
struct Eta {
    prior: Option<eta::CostModel>,
    /// (steps, FLOPs, seconds) of each unit trained here whose runs all ended `ok`.
    samples: Vec<(f64, f64, f64)>,
}

impl Eta {
    fn record(&mut self, u: &Unit<'_>, secs: f64, outcomes: &[(&RunPlan, RunOutcome)]) {
        if outcomes.iter().all(|(_, o)| o.status == Status::Ok) {
            self.samples.push((u.steps() as f64, u.flops(), secs));
        }
    }

    fn model(&self) -> Option<eta::CostModel> {
        let fit = eta::CostModel::fit(&self.samples);
        let both = fit.filter(|m| m.per_step_s > 0.0 && m.flops_per_s.is_finite());
        if self.samples.len() >= 3 && both.is_some() {
            return both;
        }
        let Some(p) = self.prior else { return fit };
        let predicted: f64 = self.samples.iter().map(|s| p.seconds(s.0, s.1)).sum();
        let took: f64 = self.samples.iter().map(|s| s.2).sum();
        let k = if predicted > 0.0 {
            took / predicted
        } else {
            1.0
        };
        Some(eta::CostModel {
            per_step_s: p.per_step_s * k,
            flops_per_s: p.flops_per_s / k,
        })
    }

    /// The wall clock of `units` on `workers` workers, largest first.
    fn seconds<'a, 'b: 'a>(
        &self,
        units: impl Iterator<Item = &'a Unit<'b>>,
        workers: usize,
    ) -> Option<f64> {
        let m = self.model()?;
        let each: Vec<f64> = units
            .map(|u| m.seconds(u.steps() as f64, u.flops()))
            .collect();
        Some(eta::wall_clock(&each, workers))
    }
}

/// A unit of training: one run, or a stable parent with its pending branches.
struct Unit<'a> {
    parent: Option<&'a RunPlan>,
    members: Vec<&'a RunPlan>,
}

impl Unit<'_> {
    /// The id a unit is known by: its run, its first run (a pack), or its stable parent.
    fn lead_id(&self) -> &str {
        self.parent.map_or(&self.members[0].id, |p| &p.id)
    }

    /// Several runs trained at once as one batched model.
    fn is_pack(&self) -> bool {
        self.parent.is_none() && self.members.len() > 1
    }

    /// The ids this unit locks: every run of a pack, else its lead id.
    fn lock_ids(&self) -> Vec<&str> {
        if self.is_pack() {
            self.members.iter().map(|r| r.id.as_str()).collect()
        } else {
            vec![self.lead_id()]
        }
    }

    /// Delete the unit's checkpoints once its results are stored: the own files (left by
    /// earlier attempts too) of its runs and stable parent that did not fail, and a pack's file
    /// unless it failed. A failed run is retried, from its checkpoint.
    fn remove_checkpoints(&self, ckpt: &train::Checkpointing, outcomes: &[(&RunPlan, RunOutcome)]) {
        let ended: Vec<&str> = outcomes
            .iter()
            .filter(|(_, o)| o.status != Status::Failed)
            .map(|(r, _)| r.id.as_str())
            .collect();
        let pack_ended = self.is_pack() && ended.len() == outcomes.len();
        ckpt.remove(&ended, pack_ended.then(|| self.lead_id()));
    }

    fn flops(&self) -> f64 {
        self.members.iter().map(|r| r.flops_spent).sum::<f64>()
            + self.parent.map_or(0.0, |p| p.flops_spent)
    }

    fn steps(&self) -> usize {
        match self.parent {
            Some(p) => {
                p.data.steps
                    + self
                        .members
                        .iter()
                        .map(|r| r.data.steps - r.branch_step)
                        .sum::<usize>()
            }
            None => self.members[0].data.steps,
        }
    }
}

/// Single runs grouped into packs of at most `size` runs with equal [`PackKey`]s (runs of
/// one shape, context, batch size, length, eval interval, Adam betas and precision: seeds, LR
/// multipliers); branch groups and runs that cannot pack stay as they are. The packs `saved`
/// in the folder's checkpoints (their run ids, in order) are formed first, as they were, when
/// all their runs are pending and fit in `size`: a rerun resumes them whatever else changed
/// (runs added to the spec, some finished elsewhere). Smallest first, as [`units`] orders them.
fn pack_units<'a>(units: Vec<Unit<'a>>, size: usize, saved: &[Vec<String>]) -> Vec<Unit<'a>> {
    if size < 2 {
        return units;
    }
    let mut pool: Vec<Option<Unit<'a>>> = units.into_iter().map(Some).collect();
    let mut out: Vec<Unit<'a>> = Vec::new();
    for ids in saved
        .iter()
        .filter(|ids| ids.len() > 1 && ids.len() <= size)
    {
        let single = |id: &String| {
            pool.iter().position(|u| {
                u.as_ref()
                    .is_some_and(|u| u.parent.is_none() && u.members[0].id == *id)
            })
        };
        let Some(at) = ids.iter().map(single).collect::<Option<Vec<usize>>>() else {
            continue;
        };
        let members: Vec<&RunPlan> = at
            .iter()
            .map(|&i| pool[i].as_ref().unwrap().members[0])
            .collect();
        if crate::train::pack::packable(&members) {
            at.iter().for_each(|&i| pool[i] = None);
            out.push(Unit {
                parent: None,
                members,
            });
        }
    }
    let mut open: std::collections::HashMap<PackKey, usize> = Default::default();
    for u in pool.into_iter().flatten() {
        // A branch group's members are branches, which PackKey refuses.
        match PackKey::of(u.members[0]).map(|k| (k, open.get(&k).copied())) {
            Some((_, Some(i))) if out[i].members.len() < size => out[i].members.push(u.members[0]),
            Some((k, _)) => {
                open.insert(k, out.len());
                out.push(u);
            }
            None => out.push(u),
        }
    }
    out.sort_by(|a, b| a.flops().total_cmp(&b.flops()));
    out
}

/// The run ids of the packs checkpointed in the folder whose runs are all `pending` (in the
/// plan, not finished): the ones a rerun can form again and resume. The others' files are
/// deleted (unless kept): nothing can resume them (runs finished, or dropped from the spec).
fn saved_packs(ckpt: &train::Checkpointing, pending: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in train::pack_checkpoints(&ckpt.dir) {
        match p.run_ids.first() {
            Some(_) if p.run_ids.iter().all(|id| pending(id)) => out.push(p.run_ids),
            Some(lead) => ckpt.remove(&[], Some(lead)),
            None => {}
        }
    }
    out
}

/// The units `run` trains on a folder holding `rows`: every run not finished for good
/// ([`crate::record::finished_ids`]; a failed run is retried), as [`units`] forms them.
fn pending_units<'a>(plan: &'a Plan, rows: &[RunRecord]) -> Vec<Unit<'a>> {
    let done = crate::record::finished_ids(rows);
    units(plan, |id| done.contains(id))
}

/// Pending work (runs `is_done` does not know), smallest first. A branch group holds only its unfinished branches (its
/// stable phase is retrained up to them, or resumed from its checkpoint).
fn units<'a>(plan: &'a Plan, is_done: impl Fn(&str) -> bool) -> Vec<Unit<'a>> {
    let mut out = Vec::new();
    for r in plan
        .runs
        .iter()
        .filter(|r| r.parent.is_none() && !is_done(&r.id))
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
            .filter(|r| r.parent.as_deref() == Some(&parent.id) && !is_done(&r.id))
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
    on_step: &mut dyn train::StepObserver,
    on_branch: &(dyn Fn(&RunPlan, &RunOutcome) + Sync),
) -> Vec<(&'a RunPlan, RunOutcome)> {
    match u.parent {
        None if u.is_pack() => train_pack(p, u, device, ckpt, on_step),
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
                    let f = failed(run_panic_message(&e), t0.elapsed().as_secs_f64());
                    std::iter::once(parent)
                        .chain(u.members.iter().copied())
                        .map(|r| (r, f.clone()))
                        .collect()
                }
            }
        }
    }
}

/// Train a pack (resuming from its checkpoint); a panic fails every run of it.
fn train_pack<'a>(
    p: &Prepared,
    u: &Unit<'a>,
    device: DeviceChoice,
    ckpt: &train::Checkpointing,
    on_step: &mut dyn train::StepObserver,
) -> Vec<(&'a RunPlan, RunOutcome)> {
    let t0 = Instant::now();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::with_backend!(device, |B, dev| train::pack::train_packed::<B>(
            &u.members,
            &p.corpus,
            &dev,
            Some(ckpt),
            on_step
        ))
    }));
    let outcomes = res.unwrap_or_else(|e| {
        let f = failed(run_panic_message(&e), t0.elapsed().as_secs_f64());
        vec![f; u.members.len()]
    });
    u.members.iter().copied().zip(outcomes).collect()
}

/// The message of a panic payload (a `String` or `&str`), if it has one. Pass the payload
/// itself (`&*boxed`), not the box.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

/// The message of a panic inside a run.
fn run_panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    panic_message(&**e).unwrap_or_else(|| "unknown panic".into())
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
        eval_loss_by_position: Vec::new(),
        error: Some(msg),
    }
}

/// Run `f`; a panic inside burn becomes a `failed` outcome with its message.
fn guarded(f: impl FnOnce() -> RunOutcome) -> RunOutcome {
    let t0 = Instant::now();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|e| failed(run_panic_message(&e), t0.elapsed().as_secs_f64()))
}

/// Existing results in an output folder (for `plan`).
pub fn existing_runs(dir: &Path) -> Vec<RunRecord> {
    crate::store::read_runs(dir).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Shape;

    fn seed_run(seed: u64) -> RunPlan {
        let mut r = RunPlan::new(Shape::new(16, 1, 2, None), 256, 16, 4, 24);
        r.id = format!("s{seed}");
        r.data.seed = seed;
        r
    }

    fn singles<'a>(rs: &[&'a RunPlan]) -> Vec<Unit<'a>> {
        rs.iter()
            .map(|r| Unit {
                parent: None,
                members: vec![*r],
            })
            .collect()
    }

    fn ids(units: &[Unit<'_>]) -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = units
            .iter()
            .map(|u| u.members.iter().map(|r| r.id.clone()).collect())
            .collect();
        v.sort();
        v
    }

    /// What `plan` counts as pending is what `run` trains: a failed run is retried, so it
    /// is pending; an `ok` or diverged one is not.
    #[test]
    fn failed_runs_are_pending() {
        let plan = Plan {
            runs: (0..3).map(seed_run).collect(),
            parents: Vec::new(),
            dropped: Vec::new(),
            budgets: Vec::new(),
        };
        let row = |id: &str, status: Status| {
            let mut r = crate::results::testing::run(id, 1, 1, 1, 1.0);
            r.status = status;
            r
        };
        let rows = vec![
            row("s0", Status::Ok),
            row("s1", Status::Failed),
            row("s2", Status::Diverged),
        ];
        let pending = pending_units(&plan, &rows);
        assert_eq!(ids(&pending), vec![vec!["s1".to_string()]]);
    }

    /// A checkpointed pack is formed again as it was (so it resumes), whatever the greedy
    /// grouping would do now; one that no longer fits, or whose runs are not all pending, is not.
    #[test]
    fn checkpointed_packs_are_formed_again_as_they_were() {
        let runs: Vec<RunPlan> = (0..3).map(seed_run).collect();
        let all: Vec<&RunPlan> = runs.iter().collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(&pack_units(singles(&all), 3, &[])),
            vec![s(&["s0", "s1", "s2"])]
        );
        let saved = vec![s(&["s2", "s1"])];
        assert_eq!(
            ids(&pack_units(singles(&all), 3, &saved)),
            vec![s(&["s0"]), s(&["s2", "s1"])]
        );
        // Too big for --pack 1 (no packing) or with a run finished: the greedy grouping.
        assert_eq!(ids(&pack_units(singles(&all), 1, &saved)).len(), 3);
        let pending: Vec<&RunPlan> = vec![&runs[0], &runs[2]];
        assert_eq!(
            ids(&pack_units(singles(&pending), 3, &saved)),
            vec![s(&["s0", "s2"])]
        );
    }
}
