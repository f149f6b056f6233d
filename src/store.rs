//! The results store: `runs.parquet` (one row per run) and `curves.parquet` (one row per
//! logged step), written with polars.
//!
//! Owns where rows go (the merged and the per-run files), provenance in the Parquet key-value
//! metadata, and reading them back (for resume and for every reader). The schema of a row is
//! [`crate::record`]'s; atomic writes and locks are [`crate::fsio`]'s.
//!
//! Every finished run is first written as its own pair of files, `curves/<run-id>.parquet`
//! then `runs/<run-id>.parquet` (the run file is the commit point), so processes that finish
//! at the same moment (local workers, Slurm array tasks) never write the same file. The
//! merged `runs.parquet` / `curves.parquet` are rebuilt from them by the local executor after
//! every run and by `scalelab collect`; every reader ([`load`]) overlays the per-run files on
//! the merged ones, so a run is never lost or counted twice, whichever step a crash hit.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::fsio::{failpoint, remove_stale_temp_files, write_bytes_atomic};

use crate::record::{
    baselines_frame, baselines_from_frame, curves_frame, curves_from_frame, mark_selected,
    BaselineRow, CurveRow, FrameRead, RunRecord,
};

pub const RUNS_FILE: &str = "runs.parquet";
pub const CURVES_FILE: &str = "curves.parquet";
/// Per-run result files: `runs/<run-id>.parquet` (one row) ...
pub const RUN_FILES_DIR: &str = "runs";
/// ... and `curves/<run-id>.parquet` (its loss curve).
pub const CURVE_FILES_DIR: &str = "curves";
/// Runs an updated spec no longer has (`run --update-spec`), set aside with their curves as
/// `superseded/runs.parquet` and `superseded/curves.parquet`: kept, never read by the fit.
pub const SUPERSEDED_DIR: &str = "superseded";

/// Write `df` to `path` atomically with key-value metadata (serialized, then
/// [`write_bytes_atomic`]: the one temp-file + fsync + rename).
pub fn write_parquet_atomic(
    path: &Path,
    df: &mut DataFrame,
    meta: &[(String, String)],
) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(meta.to_vec())))
        .finish(df)?;
    write_bytes_atomic(path, &bytes)
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

/// A sweep's finished runs: `runs.parquet` overlaid with the per-run files (see [`load`]).
pub fn read_runs(dir: &Path) -> anyhow::Result<Vec<RunRecord>> {
    Ok(load(dir)?.runs)
}

/// The loss curves of [`read_runs`]'s runs.
pub fn read_curves(dir: &Path) -> anyhow::Result<Vec<(String, CurveRow)>> {
    Ok(load(dir)?.curves)
}

/// Rows of one runs-table file (empty when the file does not exist), and the columns an
/// older file lacked.
fn read_runs_file(path: &Path) -> anyhow::Result<FrameRead<RunRecord>> {
    if !path.exists() {
        return Ok(FrameRead {
            rows: Vec::new(),
            filled: Vec::new(),
        });
    }
    let df = read_frame(path).map_err(|e| anyhow::anyhow!("unreadable: {e}"))?;
    RunRecord::from_frame(&df).map_err(|e| anyhow::anyhow!("not a scalelab runs table: {e}"))
}

/// The refusal for a merged table (`runs.parquet`, `curves.parquet`) that cannot be read: the
/// per-run files it was merged from are the way back, and nothing is lost on the way.
fn damaged_merged_table(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::error::user(format!(
        "{} is damaged ({e}); nothing was changed. `scalelab collect {}` sets it aside (as {}.unreadable) and rebuilds the merged tables from the per-run files in {}/ and {}/",
        path.display(),
        dir.display(),
        path.file_name().unwrap_or_default().to_string_lossy(),
        RUN_FILES_DIR,
        CURVE_FILES_DIR
    ))
}

/// Set aside the merged tables of `dir` that cannot be read (renamed `<name>.unreadable`,
/// never deleted), so that `collect` can rebuild them from the per-run files; what was done.
pub fn set_aside_damaged_tables(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for name in [RUNS_FILE, CURVES_FILE] {
        let path = dir.join(name);
        let readable = match name {
            RUNS_FILE => read_runs_file(&path).map(|_| ()),
            _ => read_curves_file(&path).map(|_| ()),
        };
        if let Err(e) = readable {
            // Never over an earlier set-aside copy: .unreadable, .unreadable.2, ...
            let aside = (1..)
                .map(|k| match k {
                    1 => dir.join(format!("{name}.unreadable")),
                    k => dir.join(format!("{name}.unreadable.{k}")),
                })
                .find(|p| !p.exists())
                .unwrap();
            std::fs::rename(&path, &aside)
                .map_err(|r| crate::error::path_error("set aside", &path, r))?;
            notes.push(format!(
                "set aside the damaged {name} as {} ({e}); rows only it held (runs without a file in {RUN_FILES_DIR}/) are not recovered",
                aside.display()
            ));
        }
    }
    Ok(notes)
}

/// Rows of one curves file (empty when absent).
fn read_curves_file(path: &Path) -> anyhow::Result<Vec<(String, CurveRow)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    curves_from_frame(&read_frame(path)?)
}

pub const BASELINES_FILE: &str = "baselines.parquet";

/// Write `baselines.parquet` (one row per n-gram order and training size).
pub fn write_baselines(
    dir: &Path,
    rows: &[BaselineRow],
    meta: &[(String, String)],
) -> anyhow::Result<()> {
    write_parquet_atomic(&dir.join(BASELINES_FILE), &mut baselines_frame(rows)?, meta)
}

/// Read `baselines.parquet` (empty when absent).
pub fn read_baselines(dir: &Path) -> anyhow::Result<Vec<BaselineRow>> {
    let path = dir.join(BASELINES_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    baselines_from_frame(&read_frame(&path)?)
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
    /// Columns an older file lacked, filled with their stated defaults (see [`crate::record`]).
    pub filled_columns: Vec<&'static str>,
    /// Those of them the merged `runs.parquet` lacked (not a per-run file).
    pub merged_filled: Vec<&'static str>,
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
    let runs_path = dir.join(RUNS_FILE);
    let merged = read_runs_file(&runs_path).map_err(|e| damaged_merged_table(&runs_path, e))?;
    let mut out = Loaded {
        merged_filled: merged.filled.clone(),
        filled_columns: merged.filled,
        ..Loaded::default()
    };
    let mut runs = merged.rows;
    let mut curves: std::collections::HashMap<String, Vec<CurveRow>> = Default::default();
    if !runs.is_empty() {
        let path = dir.join(CURVES_FILE);
        let rows = read_curves_file(&path).map_err(|e| damaged_merged_table(&path, e))?;
        for (id, c) in rows {
            curves.entry(id).or_default().push(c);
        }
    }
    for path in parquet_files(&dir.join(RUN_FILES_DIR)) {
        let rec = match read_runs_file(&path) {
            Ok(mut v) if v.rows.len() == 1 => {
                for c in v.filled {
                    if !out.filled_columns.contains(&c) {
                        out.filled_columns.push(c);
                    }
                }
                v.rows.pop().unwrap()
            }
            Ok(v) => {
                out.unreadable.push(format!(
                    "{}: {} rows, expected 1",
                    path.display(),
                    v.rows.len()
                ));
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
    let path = dir.join(RUNS_FILE);
    Ok(read_runs_file(&path)
        .map_err(|e| damaged_merged_table(&path, e))?
        .rows
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
        &mut RunRecord::frame(std::slice::from_ref(run))?,
        meta,
    )
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
    /// Columns an older file lacked (filled with their defaults; see [`crate::record`]).
    pub filled_columns: Vec<&'static str>,
}

impl ResultsStore {
    /// An empty store for `dir` (nothing read): for rewriting a folder's merged tables.
    fn at(dir: &Path, metadata: &[(String, String)]) -> Self {
        ResultsStore {
            dir: dir.to_path_buf(),
            runs: Vec::new(),
            curves: Vec::new(),
            metadata: metadata.to_vec(),
            run_files: 0,
            unreadable: Vec::new(),
            filled_columns: Vec::new(),
        }
    }

    /// Open a folder, loading what earlier invocations (and other processes) finished.
    pub fn open(dir: &Path, metadata: Vec<(String, String)>) -> anyhow::Result<Self> {
        for sub in [
            "",
            RUN_FILES_DIR,
            CURVE_FILES_DIR,
            crate::fsio::CHECKPOINTS_DIR,
        ] {
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
            filled_columns: l.filled_columns,
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
            &mut RunRecord::frame(&self.runs)?,
            &self.metadata,
        )?;
        Ok(())
    }

    /// Whether a run is finished for good (ok or diverged; failed runs are retried).
    pub fn is_done(&self, id: &str) -> bool {
        self.runs
            .iter()
            .any(|r| r.run_id == id && r.status.is_final())
    }
}

/// Rename runs of an older id scheme to their current ids (`old → new`): every row's
/// `run_id` and `parent`, the per-run files and the merged tables. Idempotent and safe to
/// interrupt: the new per-run files are written before the old ones are removed, and a rerun
/// maps whatever is left. Returns how many runs were renamed.
pub fn migrate_ids(
    dir: &Path,
    map: &std::collections::HashMap<String, String>,
    meta: &[(String, String)],
) -> anyhow::Result<usize> {
    // Cheap check first (file names and the merged ids, no curves): the whole folder is
    // read only when some run carries an old id.
    let per_run = parquet_files(&dir.join(RUN_FILES_DIR));
    let stem = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().to_string());
    let mut ids: Vec<String> = per_run.iter().filter_map(stem).collect();
    ids.extend(merged_run_ids(dir)?);
    if !ids.iter().any(|id| map.contains_key(id)) {
        return Ok(0);
    }
    let l = load(dir)?;
    let rename = |id: &str| map.get(id).cloned().unwrap_or_else(|| id.to_string());
    let mut curves: std::collections::HashMap<String, Vec<CurveRow>> = Default::default();
    for (id, c) in l.curves {
        curves.entry(rename(&id)).or_default().push(c);
    }
    let mut renamed = Vec::new();
    let mut runs = Vec::new();
    for mut r in l.runs {
        if !r.parent.is_empty() {
            r.parent = rename(&r.parent);
        }
        if let Some(new) = map.get(&r.run_id) {
            renamed.push(std::mem::replace(&mut r.run_id, new.clone()));
            write_run_file(dir, &r, curves.get(new).map_or(&[][..], |v| v), meta)?;
        }
        runs.push(r);
    }
    let mut store = ResultsStore::at(dir, meta);
    store.curves = runs
        .iter()
        .flat_map(|r| {
            let c = curves.get(&r.run_id).cloned().unwrap_or_default();
            c.into_iter().map(|c| (r.run_id.clone(), c))
        })
        .collect();
    store.runs = runs;
    store.flush()?;
    for old in &renamed {
        for sub in [RUN_FILES_DIR, CURVE_FILES_DIR] {
            let _ = std::fs::remove_file(dir.join(sub).join(format!("{old}.parquet")));
        }
    }
    Ok(renamed.len())
}

/// Move every run `keep` does not pick (runs an updated spec no longer has) out of the
/// folder's tables into [`SUPERSEDED_DIR`] with their curves, appended to what an earlier
/// update set aside there: kept on disk, no longer read by the fit or the report. A kept run
/// keeps the run it names as `parent` (a cooldown branch its stable phase, whose curve is
/// the first part of its own), and so on up. Safe to interrupt:
/// the superseded tables are written first, the merged ones next, the per-run files removed
/// last, and a rerun finishes the move (a row set aside twice replaces its first copy; a curve
/// already set aside stays when the rerun finds none left to move). The caller holds the
/// folder's merge turn. Returns the ids set aside.
pub fn set_aside(
    dir: &Path,
    keep: &dyn Fn(&RunRecord) -> bool,
    meta: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    use std::collections::HashSet;
    let l = load(dir)?;
    let mut kept: HashSet<String> = (l.runs.iter().filter(|r| keep(r)))
        .map(|r| r.run_id.clone())
        .collect();
    loop {
        let parents: Vec<String> = (l.runs.iter())
            .filter(|r| kept.contains(&r.run_id) && !r.parent.is_empty())
            .filter(|r| !kept.contains(&r.parent))
            .map(|r| r.parent.clone())
            .collect();
        if parents.is_empty() {
            break;
        }
        kept.extend(parents);
    }
    let (keep, old): (Vec<RunRecord>, Vec<RunRecord>) =
        l.runs.into_iter().partition(|r| kept.contains(&r.run_id));
    if old.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = old.iter().map(|r| r.run_id.clone()).collect();
    let id_set: HashSet<&str> = ids.iter().map(|s| s.as_str()).collect();
    let (old_curves, keep_curves): (Vec<_>, Vec<_>) = l
        .curves
        .into_iter()
        .partition(|(id, _)| id_set.contains(id.as_str()));
    let sup_dir = dir.join(SUPERSEDED_DIR);
    crate::fsio::create_dir_all(&sup_dir)?;
    let sup = load(&sup_dir)?;
    let mut superseded = ResultsStore::at(&sup_dir, meta);
    superseded.runs = sup.runs;
    superseded
        .runs
        .retain(|r| !id_set.contains(r.run_id.as_str()));
    superseded.runs.extend(old);
    // A curve is replaced only by a new copy of it (a crash between the merged curves and
    // runs files can leave a row here whose curve already moved).
    let moving: HashSet<&str> = old_curves.iter().map(|(id, _)| id.as_str()).collect();
    superseded.curves = sup.curves;
    superseded
        .curves
        .retain(|(id, _)| !moving.contains(id.as_str()));
    superseded.curves.extend(old_curves.iter().cloned());
    superseded.flush()?;
    failpoint("between-superseded-and-merged");
    let mut store = ResultsStore::at(dir, meta);
    (store.runs, store.curves) = (keep, keep_curves);
    store.flush()?;
    for id in &ids {
        for sub in [RUN_FILES_DIR, CURVE_FILES_DIR] {
            let _ = std::fs::remove_file(dir.join(sub).join(format!("{id}.parquet")));
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testing::run;

    fn curve(loss: f64) -> Vec<CurveRow> {
        (1..=3)
            .map(|step| CurveRow {
                step,
                tokens: 64 * step as u64,
                lr: 1e-3,
                train_loss: loss + 1.0 / step as f64,
                eval_loss: Some(loss),
                predicted: None,
            })
            .collect()
    }

    fn store(dir: &Path, runs: &[(&str, f64)]) -> ResultsStore {
        let mut s = ResultsStore::at(dir, &[]);
        for (id, loss) in runs {
            s.runs.push(run(id, 100, 200, 1000, *loss));
            s.curves
                .extend(curve(*loss).into_iter().map(|c| (id.to_string(), c)));
        }
        s
    }

    /// `set_aside` moves the runs `keep` leaves with their curves and keeps the rest; after a crash
    /// that left the merged `runs.parquet` with a moved run whose curve was already gone (no
    /// per-run files to recover it from), a rerun keeps the curve `superseded/` holds.
    #[test]
    fn set_aside_moves_runs_with_curves_and_survives_a_half_written_merge() {
        let dir = crate::results::testing::tmp("set-aside");
        store(&dir, &[("keep", 2.0), ("old", 3.0)]).flush().unwrap();
        let keep = |r: &RunRecord| r.run_id != "old";
        assert_eq!(
            set_aside(&dir, &keep, &[]).unwrap(),
            vec!["old".to_string()]
        );
        let ids = |d: &Path| {
            load(d)
                .unwrap()
                .runs
                .into_iter()
                .map(|r| r.run_id)
                .collect::<Vec<_>>()
        };
        let sup = dir.join(SUPERSEDED_DIR);
        assert_eq!(
            (ids(&dir), ids(&sup)),
            (vec!["keep".into()], vec!["old".into()])
        );
        assert_eq!(load(&sup).unwrap().curves.len(), 3);
        assert_eq!(load(&dir).unwrap().curves.len(), 3);
        // The merged curves were rewritten without "old" but its row is still in runs.parquet.
        let mut half = store(&dir, &[("keep", 2.0), ("old", 3.0)]);
        half.curves.retain(|(id, _)| id == "keep");
        half.flush().unwrap();
        assert_eq!(
            set_aside(&dir, &keep, &[]).unwrap(),
            vec!["old".to_string()]
        );
        assert_eq!(ids(&sup), vec!["old".to_string()], "not doubled");
        let kept = load(&sup).unwrap().curves;
        assert_eq!(kept.len(), 3, "the curve set aside first is kept");
        assert!(kept
            .iter()
            .all(|(id, c)| id == "old" && c.eval_loss == Some(3.0)));
        assert_eq!(ids(&dir), vec!["keep".to_string()]);
    }
}
