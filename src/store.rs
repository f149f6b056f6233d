//! The results store: `runs.parquet` (one row per run) and `curves.parquet` (one row per
//! logged step), written with polars.
//!
//! Owns the column layout, atomic writes (temp file in the same folder, fsync, rename: a crash
//! never leaves a half-written file), provenance in the Parquet key-value metadata, and
//! reading them back (for resume and for the fitter).
//!
//! Every finished run is first written as its own pair of files, `curves/<run-id>.parquet`
//! then `runs/<run-id>.parquet` (the run file is the commit point), so processes that finish
//! at the same moment (local workers, Slurm array tasks) never write the same file. The
//! merged `runs.parquet` / `curves.parquet` are rebuilt from them by the local executor after
//! every run and by `scalelab collect`; every reader ([`load`]) overlays the per-run files on
//! the merged ones, so a run is never lost or counted twice, whichever step a crash hit.

use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::train::CurveRow;

pub const RUNS_FILE: &str = "runs.parquet";
pub const CURVES_FILE: &str = "curves.parquet";
/// Per-run result files: `runs/<run-id>.parquet` (one row) ...
pub const RUN_FILES_DIR: &str = "runs";
/// ... and `curves/<run-id>.parquet` (its loss curve).
pub const CURVE_FILES_DIR: &str = "curves";

/// Test hook for crash-safety tests: when the environment variable `SCALELAB_FAILPOINT`
/// equals `name`, the process kills itself with SIGKILL right here (no unwinding, no
/// destructors: exactly what `kill -9` or a node failure does).
pub fn failpoint(name: &str) {
    if std::env::var_os("SCALELAB_FAILPOINT").is_some_and(|v| v == name) {
        extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        // SAFETY: sending SIGKILL (9) to our own pid.
        unsafe {
            kill(std::process::id() as i32, 9);
        }
    }
}

/// Failpoints `before-rename:<file name>` and `before-rename:*.<extension>`: the new
/// content is written and synced, the old file still in place.
fn failpoint_rename(path: &Path) {
    if std::env::var_os("SCALELAB_FAILPOINT").is_none() {
        return;
    }
    failpoint(&format!(
        "before-rename:{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    if let Some(ext) = path.extension() {
        failpoint(&format!("before-rename:*.{}", ext.to_string_lossy()));
    }
}

/// Temp-file name beside `path`, unique per process and call.
fn temp_path(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Remove temp files that a killed process left behind (older than ten minutes, so a live
/// writer on another node is never disturbed).
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 600);
        if name.starts_with('.') && name.contains(".tmp-") && old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// One finished (ok / diverged / failed) run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub status: String,
    pub error: String,
    pub d_model: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub d_ff: i64,
    pub context: i64,
    pub vocab_size: i64,
    pub batch_size: i64,
    pub steps: i64,
    pub steps_done: i64,
    /// Training tokens D.
    pub tokens: i64,
    /// Non-embedding parameters N.
    pub n_params: i64,
    /// All parameters (embeddings included).
    pub n_params_total: i64,
    /// C = 6 · n_params · tokens.
    pub flops: f64,
    pub budget: Option<f64>,
    pub seed: i64,
    pub lr: f64,
    pub warmup_steps: i64,
    pub schedule: String,
    pub final_train_loss: f64,
    /// Mean eval loss, nats/token.
    pub eval_loss: f64,
    /// Eval loss in bits per token.
    pub eval_bits_per_token: f64,
    /// Eval loss in bits per byte of text (equals bits per token for byte-level corpora).
    pub eval_bits_per_byte: f64,
    /// Unique training tokens the run saw, and its epochs over them (D / unique).
    pub unique_tokens: i64,
    pub epochs: f64,
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation against the measured matmul peak (None when unmeasured).
    pub mfu: Option<f64>,
    pub wall_s: f64,
    pub backend: String,
    pub scalelab_version: String,
    /// C with all parameters: 6 · n_params_total · tokens.
    pub flops_total: f64,
    /// PaLM-style count: (6·(N + vocab·d) + 12·n_layer·context·d) · tokens.
    pub flops_full: f64,
    /// FLOPs this row itself cost (a cooldown branch: its cooldown only).
    pub flops_spent: f64,
    /// Stable-phase parent of a cooldown branch ("" otherwise).
    pub parent: String,
    pub branch_step: i64,
    pub lr_multiplier: f64,
    /// (shape, D, seed) point; the runs of an LR sweep share it.
    pub point_id: String,
    /// The run the fit uses for its point (the best LR of an LR sweep).
    pub selected: bool,
}

/// Mark, for every point, the `ok` run with the lowest eval loss as selected.
pub fn mark_selected(runs: &mut [RunRecord]) {
    let mut best: std::collections::HashMap<String, (usize, f64)> = Default::default();
    for (i, r) in runs.iter().enumerate() {
        if r.status == "ok" && r.eval_loss.is_finite() {
            let e = best.entry(r.point_id.clone()).or_insert((i, r.eval_loss));
            if r.eval_loss < e.1 {
                *e = (i, r.eval_loss);
            }
        }
    }
    for (i, r) in runs.iter_mut().enumerate() {
        r.selected = best.get(&r.point_id).is_some_and(|b| b.0 == i);
    }
}

/// Write `df` to `path` atomically with key-value metadata.
pub fn write_parquet_atomic(
    path: &Path,
    df: &mut DataFrame,
    meta: &[(String, String)],
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)?;
        ParquetWriter::new(&mut f)
            .with_compression(ParquetCompression::Zstd(None))
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(meta.to_vec())))
            .finish(df)?;
        f.flush()?;
        f.sync_all()?;
    }
    failpoint_rename(path);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Write a small text file atomically.
pub fn write_text_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    write_bytes_atomic(path, text.as_bytes())
}

/// Write bytes atomically (temp file in the same folder, fsync, rename).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    failpoint_rename(path);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

macro_rules! col {
    ($name:expr, $rows:expr, |$r:ident| $e:expr) => {
        Column::new($name.into(), $rows.iter().map(|$r| $e).collect::<Vec<_>>())
    };
}

pub fn runs_frame(rows: &[RunRecord]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col!("run_id", rows, |r| r.run_id.clone()),
        col!("status", rows, |r| r.status.clone()),
        col!("error", rows, |r| r.error.clone()),
        col!("d_model", rows, |r| r.d_model),
        col!("n_layer", rows, |r| r.n_layer),
        col!("n_head", rows, |r| r.n_head),
        col!("d_ff", rows, |r| r.d_ff),
        col!("context", rows, |r| r.context),
        col!("vocab_size", rows, |r| r.vocab_size),
        col!("batch_size", rows, |r| r.batch_size),
        col!("steps", rows, |r| r.steps),
        col!("steps_done", rows, |r| r.steps_done),
        col!("tokens", rows, |r| r.tokens),
        col!("n_params", rows, |r| r.n_params),
        col!("n_params_total", rows, |r| r.n_params_total),
        col!("flops", rows, |r| r.flops),
        col!("budget", rows, |r| r.budget),
        col!("seed", rows, |r| r.seed),
        col!("lr", rows, |r| r.lr),
        col!("warmup_steps", rows, |r| r.warmup_steps),
        col!("schedule", rows, |r| r.schedule.clone()),
        col!("final_train_loss", rows, |r| r.final_train_loss),
        col!("eval_loss", rows, |r| r.eval_loss),
        col!("eval_bits_per_token", rows, |r| r.eval_bits_per_token),
        col!("eval_bits_per_byte", rows, |r| r.eval_bits_per_byte),
        col!("unique_tokens", rows, |r| r.unique_tokens),
        col!("epochs", rows, |r| r.epochs),
        col!("tokens_per_s", rows, |r| r.tokens_per_s),
        col!("mfu", rows, |r| r.mfu),
        col!("wall_s", rows, |r| r.wall_s),
        col!("backend", rows, |r| r.backend.clone()),
        col!("scalelab_version", rows, |r| r.scalelab_version.clone()),
        col!("flops_total", rows, |r| r.flops_total),
        col!("flops_full", rows, |r| r.flops_full),
        col!("flops_spent", rows, |r| r.flops_spent),
        col!("parent", rows, |r| r.parent.clone()),
        col!("branch_step", rows, |r| r.branch_step),
        col!("lr_multiplier", rows, |r| r.lr_multiplier),
        col!("point_id", rows, |r| r.point_id.clone()),
        col!("selected", rows, |r| r.selected),
    ])?)
}

pub fn curves_frame(rows: &[(String, CurveRow)]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col!("run_id", rows, |r| r.0.clone()),
        col!("step", rows, |r| r.1.step as i64),
        col!("tokens", rows, |r| r.1.tokens as i64),
        col!("lr", rows, |r| r.1.lr),
        col!("train_loss", rows, |r| r.1.train_loss),
        col!("eval_loss", rows, |r| r.1.eval_loss),
    ])?)
}

fn read_frame(path: &Path) -> anyhow::Result<DataFrame> {
    let f = std::fs::File::open(path)?;
    Ok(ParquetReader::new(f).finish()?)
}

/// scalelab's key-value metadata of a Parquet file (`scalelab.*` keys; not the writer's
/// own `ARROW:schema`, which must never be copied to another file).
pub fn read_metadata(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut r = ParquetReader::new(std::fs::File::open(path)?);
    let md = r.get_metadata()?;
    Ok(md
        .key_value_metadata
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| kv.key.starts_with("scalelab."))
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect())
}

fn strs(df: &DataFrame, name: &str) -> anyhow::Result<Vec<String>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect())
}

fn ints(df: &DataFrame, name: &str) -> anyhow::Result<Vec<i64>> {
    let c = df.column(name)?.cast(&DataType::Int64)?;
    Ok(c.i64()?.iter().map(|v| v.unwrap_or(0)).collect())
}

/// A float column, or all-missing when an older file lacks it.
fn floats_or_missing(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
    if df.column(name).is_err() {
        return Ok(vec![None; df.height()]);
    }
    floats(df, name)
}

fn floats(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

/// A sweep's finished runs: `runs.parquet` overlaid with the per-run files (see [`load`]).
pub fn read_runs(dir: &Path) -> anyhow::Result<Vec<RunRecord>> {
    Ok(load(dir)?.runs)
}

/// The loss curves of [`read_runs`]'s runs.
pub fn read_curves(dir: &Path) -> anyhow::Result<Vec<(String, CurveRow)>> {
    Ok(load(dir)?.curves)
}

/// Rows of one runs-table file (empty when the file does not exist).
fn read_runs_file(path: &Path) -> anyhow::Result<Vec<RunRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let df = read_frame(path).map_err(|e| {
        anyhow::anyhow!(
            "{} is unreadable ({e}); move it away to start the sweep afresh",
            path.display()
        )
    })?;
    let s = |n| strs(&df, n);
    let i = |n| ints(&df, n);
    let f = |n| floats(&df, n);
    let (id, status, error, backend, version, sched) = (
        s("run_id")?,
        s("status")?,
        s("error")?,
        s("backend")?,
        s("scalelab_version")?,
        s("schedule")?,
    );
    let (dm, nl, nh, dff, ctx, voc, bs) = (
        i("d_model")?,
        i("n_layer")?,
        i("n_head")?,
        i("d_ff")?,
        i("context")?,
        i("vocab_size")?,
        i("batch_size")?,
    );
    let (steps, done, tok, np, npt, seed, warm) = (
        i("steps")?,
        i("steps_done")?,
        i("tokens")?,
        i("n_params")?,
        i("n_params_total")?,
        i("seed")?,
        i("warmup_steps")?,
    );
    let (flops, budget, lr, ftl, el, ebt, tps, mfu, wall) = (
        f("flops")?,
        f("budget")?,
        f("lr")?,
        f("final_train_loss")?,
        f("eval_loss")?,
        f("eval_bits_per_token")?,
        f("tokens_per_s")?,
        f("mfu")?,
        f("wall_s")?,
    );
    let (ftot, ffull, fspent, lrm) = (
        f("flops_total")?,
        f("flops_full")?,
        f("flops_spent")?,
        f("lr_multiplier")?,
    );
    let (parent, point) = (s("parent")?, s("point_id")?);
    let (bpb, uniq, epochs) = (
        floats_or_missing(&df, "eval_bits_per_byte")?,
        floats_or_missing(&df, "unique_tokens")?,
        floats_or_missing(&df, "epochs")?,
    );
    let bstep = i("branch_step")?;
    let sel: Vec<bool> = {
        let c = df.column("selected")?.cast(&DataType::Boolean)?;
        c.bool()?.iter().map(|v| v.unwrap_or(false)).collect()
    };
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Ok((0..df.height())
        .map(|k| RunRecord {
            run_id: id[k].clone(),
            status: status[k].clone(),
            error: error[k].clone(),
            d_model: dm[k],
            n_layer: nl[k],
            n_head: nh[k],
            d_ff: dff[k],
            context: ctx[k],
            vocab_size: voc[k],
            batch_size: bs[k],
            steps: steps[k],
            steps_done: done[k],
            tokens: tok[k],
            n_params: np[k],
            n_params_total: npt[k],
            flops: nan(flops[k]),
            budget: budget[k],
            seed: seed[k],
            lr: nan(lr[k]),
            warmup_steps: warm[k],
            schedule: sched[k].clone(),
            final_train_loss: nan(ftl[k]),
            eval_loss: nan(el[k]),
            eval_bits_per_token: nan(ebt[k]),
            // Files from before these columns: byte-level, one epoch.
            eval_bits_per_byte: bpb[k].or(ebt[k]).unwrap_or(f64::NAN),
            unique_tokens: uniq[k].map_or(tok[k], |u| u as i64),
            epochs: epochs[k].unwrap_or(1.0),
            tokens_per_s: nan(tps[k]),
            mfu: mfu[k],
            wall_s: nan(wall[k]),
            backend: backend[k].clone(),
            scalelab_version: version[k].clone(),
            flops_total: nan(ftot[k]),
            flops_full: nan(ffull[k]),
            flops_spent: nan(fspent[k]),
            parent: parent[k].clone(),
            branch_step: bstep[k],
            lr_multiplier: nan(lrm[k]),
            point_id: point[k].clone(),
            selected: sel[k],
        })
        .collect())
}

/// Rows of one curves file (empty when absent).
fn read_curves_file(path: &Path) -> anyhow::Result<Vec<(String, CurveRow)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let df = read_frame(path)?;
    let id = strs(&df, "run_id")?;
    let step = ints(&df, "step")?;
    let tokens = ints(&df, "tokens")?;
    let lr = floats(&df, "lr")?;
    let tl = floats(&df, "train_loss")?;
    let el = floats(&df, "eval_loss")?;
    Ok((0..df.height())
        .map(|k| {
            (
                id[k].clone(),
                CurveRow {
                    step: step[k] as usize,
                    tokens: tokens[k] as u64,
                    lr: lr[k].unwrap_or(f64::NAN),
                    train_loss: tl[k].unwrap_or(f64::NAN),
                    eval_loss: el[k],
                },
            )
        })
        .collect())
}

pub const BASELINES_FILE: &str = "baselines.parquet";

/// Write `baselines.parquet` (one row per n-gram order and training size).
pub fn write_baselines(
    dir: &Path,
    rows: &[crate::ngram::BaselineRow],
    meta: &[(String, String)],
) -> anyhow::Result<()> {
    let mut df = DataFrame::new_infer_height(vec![
        col!("order", rows, |r| r.order as i64),
        col!("train_tokens", rows, |r| r.train_tokens as i64),
        col!("eval_loss", rows, |r| r.eval_loss),
        col!("eval_bits_per_token", rows, |r| r.eval_bits_per_token),
        col!("eval_bits_per_byte", rows, |r| r.eval_bits_per_byte),
        col!("n_grams", rows, |r| r.n_grams as i64),
        col!("seconds", rows, |r| r.seconds),
    ])?;
    write_parquet_atomic(&dir.join(BASELINES_FILE), &mut df, meta)
}

/// Read `baselines.parquet` (empty when absent).
pub fn read_baselines(dir: &Path) -> anyhow::Result<Vec<crate::ngram::BaselineRow>> {
    let path = dir.join(BASELINES_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let df = read_frame(&path)?;
    let (order, d, ng) = (
        ints(&df, "order")?,
        ints(&df, "train_tokens")?,
        ints(&df, "n_grams")?,
    );
    let (l, bt, bb, sec) = (
        floats(&df, "eval_loss")?,
        floats(&df, "eval_bits_per_token")?,
        floats(&df, "eval_bits_per_byte")?,
        floats(&df, "seconds")?,
    );
    Ok((0..df.height())
        .map(|k| crate::ngram::BaselineRow {
            order: order[k] as usize,
            train_tokens: d[k] as u64,
            eval_loss: l[k].unwrap_or(f64::NAN),
            eval_bits_per_token: bt[k].unwrap_or(f64::NAN),
            eval_bits_per_byte: bb[k].unwrap_or(f64::NAN),
            n_grams: ng[k] as u64,
            seconds: sec[k].unwrap_or(f64::NAN),
        })
        .collect())
}

/// A results folder as readers see it.
#[derive(Debug, Default)]
pub struct Loaded {
    pub runs: Vec<RunRecord>,
    pub curves: Vec<(String, CurveRow)>,
    /// Per-run files read (whether or not `runs.parquet` already held them).
    pub run_files: usize,
    /// Per-run files that could not be read (named, with the reason); their runs count as
    /// not finished.
    pub unreadable: Vec<String>,
}

/// `*.parquet` files of a folder (no temp files), sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    !name.starts_with('.') && name.ends_with(".parquet")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Read a results folder: `runs.parquet` and `curves.parquet`, overlaid with every per-run
/// file (a per-run file is at least as new as the merged row of the same run, so it wins);
/// curve rows of runs that are not there are dropped; `selected` is recomputed.
pub fn load(dir: &Path) -> anyhow::Result<Loaded> {
    let mut runs = read_runs_file(&dir.join(RUNS_FILE))?;
    let mut curves: std::collections::HashMap<String, Vec<CurveRow>> = Default::default();
    if !runs.is_empty() {
        let path = dir.join(CURVES_FILE);
        let rows = read_curves_file(&path).map_err(|e| {
            anyhow::anyhow!(
                "{} is unreadable ({e}); move it away to start the sweep afresh",
                path.display()
            )
        })?;
        for (id, c) in rows {
            curves.entry(id).or_default().push(c);
        }
    }
    let mut out = Loaded::default();
    for path in parquet_files(&dir.join(RUN_FILES_DIR)) {
        let rec = match read_runs_file(&path) {
            Ok(mut v) if v.len() == 1 => v.pop().unwrap(),
            Ok(v) => {
                out.unreadable
                    .push(format!("{}: {} rows, expected 1", path.display(), v.len()));
                continue;
            }
            Err(e) => {
                out.unreadable.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        out.run_files += 1;
        let cpath = dir
            .join(CURVE_FILES_DIR)
            .join(format!("{}.parquet", rec.run_id));
        if let Ok(rows) = read_curves_file(&cpath) {
            if !rows.is_empty() || !curves.contains_key(&rec.run_id) {
                curves.insert(rec.run_id.clone(), rows.into_iter().map(|r| r.1).collect());
            }
        }
        match runs.iter_mut().find(|r| r.run_id == rec.run_id) {
            Some(slot) => *slot = rec,
            None => runs.push(rec),
        }
    }
    mark_selected(&mut runs);
    out.curves = runs
        .iter()
        .flat_map(|r| {
            curves
                .remove(&r.run_id)
                .unwrap_or_default()
                .into_iter()
                .map(|c| (r.run_id.clone(), c))
        })
        .collect();
    out.runs = runs;
    Ok(out)
}

/// Run ids in the merged `runs.parquet` alone (what `collect` has merged so far).
pub fn merged_run_ids(dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(read_runs_file(&dir.join(RUNS_FILE))?
        .into_iter()
        .map(|r| r.run_id)
        .collect())
}

/// Write one finished run's own files: its curve first, then its row (the commit point).
pub fn write_run_file(
    dir: &Path,
    run: &RunRecord,
    curve: &[CurveRow],
    meta: &[(String, String)],
) -> anyhow::Result<()> {
    let rows: Vec<(String, CurveRow)> = curve.iter().map(|c| (run.run_id.clone(), *c)).collect();
    write_parquet_atomic(
        &dir.join(CURVE_FILES_DIR)
            .join(format!("{}.parquet", run.run_id)),
        &mut curves_frame(&rows)?,
        meta,
    )?;
    failpoint("between-curve-and-run-file");
    write_parquet_atomic(
        &dir.join(RUN_FILES_DIR)
            .join(format!("{}.parquet", run.run_id)),
        &mut runs_frame(std::slice::from_ref(run))?,
        meta,
    )
}

/// An exclusive lock on one unit of work (`locks/<run-id>.lock`, `flock`), held while a
/// process trains it, so two processes (two `run`s, a `run` and an array task, a requeued
/// task and its stale predecessor) never train the same run at once. Released on drop or
/// when the process dies.
pub struct UnitLock {
    _file: std::fs::File,
}

impl UnitLock {
    /// Whether some process holds the lock of `id` now (creates nothing).
    pub fn is_held(dir: &Path, id: &str) -> bool {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn flock(fd: i32, op: i32) -> i32;
        }
        let Ok(f) = std::fs::File::open(dir.join("locks").join(format!("{id}.lock"))) else {
            return false;
        };
        // LOCK_SH | LOCK_NB; released when `f` closes.
        // SAFETY: flock on a file descriptor we own.
        unsafe { flock(f.as_raw_fd(), 1 | 4) != 0 }
    }

    /// `Ok(None)` when another process holds the lock.
    pub fn try_acquire(dir: &Path, id: &str) -> anyhow::Result<Option<UnitLock>> {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn flock(fd: i32, op: i32) -> i32;
        }
        let locks = dir.join("locks");
        std::fs::create_dir_all(&locks)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(format!("{id}.lock")))?;
        // LOCK_EX | LOCK_NB
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { flock(f.as_raw_fd(), 2 | 4) };
        if rc == 0 {
            Ok(Some(UnitLock { _file: f }))
        } else {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                // A file system without flock (some NFS mounts): Slurm's array bookkeeping
                // already gives each task its own run.
                Ok(Some(UnitLock { _file: f }))
            }
        }
    }
}

/// The results of one sweep folder, kept in memory and flushed after every run.
pub struct ResultsStore {
    pub dir: PathBuf,
    pub runs: Vec<RunRecord>,
    pub curves: Vec<(String, CurveRow)>,
    pub metadata: Vec<(String, String)>,
    /// What [`load`] found when the store was opened.
    pub run_files: usize,
    pub unreadable: Vec<String>,
}

impl ResultsStore {
    /// Open a folder, loading what earlier invocations (and other processes) finished.
    pub fn open(dir: &Path, metadata: Vec<(String, String)>) -> anyhow::Result<Self> {
        for sub in ["", RUN_FILES_DIR, CURVE_FILES_DIR, "checkpoints"] {
            remove_stale_temp_files(&dir.join(sub));
        }
        let l = load(dir)?;
        Ok(ResultsStore {
            dir: dir.to_path_buf(),
            runs: l.runs,
            curves: l.curves,
            metadata,
            run_files: l.run_files,
            unreadable: l.unreadable,
        })
    }

    /// Record a finished run (replacing an earlier `failed` row of the same id): its own
    /// files, then the merged files.
    pub fn add(&mut self, run: RunRecord, curve: Vec<CurveRow>) -> anyhow::Result<()> {
        self.add_many(vec![(run, curve)])
    }

    /// Record several runs with one flush (a stable parent and its branches).
    pub fn add_many(&mut self, rows: Vec<(RunRecord, Vec<CurveRow>)>) -> anyhow::Result<()> {
        for (run, curve) in &rows {
            write_run_file(&self.dir, run, curve, &self.metadata)?;
        }
        failpoint("before-merge");
        for (run, curve) in rows {
            self.runs.retain(|r| r.run_id != run.run_id);
            self.curves.retain(|(id, _)| *id != run.run_id);
            self.curves
                .extend(curve.into_iter().map(|c| (run.run_id.clone(), c)));
            self.runs.push(run);
        }
        self.flush()
    }

    /// Rewrite `curves.parquet` then `runs.parquet` from memory. A crash in between leaves
    /// curve rows that readers ignore, never a run without its curve.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        mark_selected(&mut self.runs);
        write_parquet_atomic(
            &self.dir.join(CURVES_FILE),
            &mut curves_frame(&self.curves)?,
            &self.metadata,
        )?;
        write_parquet_atomic(
            &self.dir.join(RUNS_FILE),
            &mut runs_frame(&self.runs)?,
            &self.metadata,
        )?;
        Ok(())
    }

    /// Whether a run is finished for good (ok or diverged; failed runs are retried).
    pub fn is_done(&self, id: &str) -> bool {
        self.runs
            .iter()
            .any(|r| r.run_id == id && r.status != "failed")
    }
}
