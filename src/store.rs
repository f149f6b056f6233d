//! The results store: `runs.parquet` (one row per run) and `curves.parquet` (one row per
//! logged step), written with polars.
//!
//! Owns the column layout, atomic writes (temp file in the same folder, fsync, rename: a crash
//! never leaves a half-written file), provenance in the Parquet key-value metadata, and
//! reading both files back (for resume and for the fitter). `runs.parquet` is the source of
//! truth for which runs are finished; curve rows of runs not in it are dropped on load.

use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::train::CurveRow;

pub const RUNS_FILE: &str = "runs.parquet";
pub const CURVES_FILE: &str = "curves.parquet";

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
    /// Eval loss in bits per token (bits per byte for byte-level corpora).
    pub eval_bits_per_token: f64,
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
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        ParquetWriter::new(&mut f)
            .with_compression(ParquetCompression::Zstd(None))
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(meta.to_vec())))
            .finish(df)?;
        f.flush()?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Write a small text file atomically.
pub fn write_text_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
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

/// Key-value metadata of a Parquet file.
pub fn read_metadata(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut r = ParquetReader::new(std::fs::File::open(path)?);
    let md = r.get_metadata()?;
    Ok(md
        .key_value_metadata
        .clone()
        .unwrap_or_default()
        .into_iter()
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

fn floats(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

/// Read `runs.parquet` (empty when the file does not exist).
pub fn read_runs(dir: &Path) -> anyhow::Result<Vec<RunRecord>> {
    let path = dir.join(RUNS_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let df = read_frame(&path).map_err(|e| {
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

/// Read `curves.parquet` (empty when absent).
pub fn read_curves(dir: &Path) -> anyhow::Result<Vec<(String, CurveRow)>> {
    let path = dir.join(CURVES_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let df = read_frame(&path)?;
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

/// The results of one sweep folder, kept in memory and flushed after every run.
pub struct ResultsStore {
    pub dir: PathBuf,
    pub runs: Vec<RunRecord>,
    pub curves: Vec<(String, CurveRow)>,
    pub metadata: Vec<(String, String)>,
}

impl ResultsStore {
    /// Open a folder, loading what an earlier invocation finished.
    pub fn open(dir: &Path, metadata: Vec<(String, String)>) -> anyhow::Result<Self> {
        let runs = read_runs(dir)?;
        let done: std::collections::HashSet<&str> =
            runs.iter().map(|r| r.run_id.as_str()).collect();
        let curves = read_curves(dir)?
            .into_iter()
            .filter(|(id, _)| done.contains(id.as_str()))
            .collect();
        Ok(ResultsStore {
            dir: dir.to_path_buf(),
            runs,
            curves,
            metadata,
        })
    }

    /// Record a finished run (replacing an earlier `failed` row of the same id) and flush
    /// both files: curves first, then runs, so a crash in between leaves curve rows that
    /// the next load ignores rather than a run without its curve.
    pub fn add(&mut self, run: RunRecord, curve: Vec<CurveRow>) -> anyhow::Result<()> {
        self.add_many(vec![(run, curve)])
    }

    /// Record several runs with one flush (a stable parent and its branches).
    pub fn add_many(&mut self, rows: Vec<(RunRecord, Vec<CurveRow>)>) -> anyhow::Result<()> {
        for (run, curve) in rows {
            self.runs.retain(|r| r.run_id != run.run_id);
            self.curves.retain(|(id, _)| *id != run.run_id);
            self.curves
                .extend(curve.into_iter().map(|c| (run.run_id.clone(), c)));
            self.runs.push(run);
        }
        self.flush()
    }

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
