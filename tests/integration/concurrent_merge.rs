//! Two `run`s of one sweep started together into one folder: they split the work, and the
//! merged tables (`runs.parquet`, `curves.parquet`) end up holding every run, whichever
//! process trained it; a later `run` with nothing left to train rebuilds a deleted merged
//! table from the per-run files without training.

use std::path::Path;
use std::process::Output;

use polars::prelude::*;

use crate::common::*;

/// A Parquet file read with polars directly (not with scalelab's reader).
fn parquet(path: &Path) -> DataFrame {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(f)
        .finish()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `K` of the summary line `scalelab: K trained, ...`.
fn trained(o: &Output) -> usize {
    let err = stderr(o);
    err.lines()
        .find_map(|l| l.strip_prefix("scalelab: ")?.split_once(" trained, "))
        .and_then(|(k, _)| k.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{err}"))
}

/// The merged tables alone hold `n` runs, each once, with all their curve rows: read by
/// scalelab and by polars.
fn assert_merged(out: &Path, n: usize) {
    assert_complete(out, n);
    let runs = parquet(&out.join("runs.parquet"));
    assert_eq!(runs.height(), n, "rows of runs.parquet (polars)");
    assert_eq!(runs.column("run_id").unwrap().n_unique().unwrap(), n);
    let steps: i64 = runs
        .column("steps")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .sum()
        .unwrap();
    let curves = parquet(&out.join("curves.parquet"));
    assert_eq!(
        curves.height() as i64,
        steps,
        "one curve row per step (polars)"
    );
}

#[test]
fn two_runs_at_once_leave_complete_merged_tables() {
    let out = tmp("concurrent-merge");
    let spec = repo().join("sweeps/micro.yaml");
    let args = run_args(&spec, &out, &[]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|_| s.spawn(|| scalelab(&args))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
        // A process that left runs to the other says how to get the complete tables.
        if stderr(o).contains("left to the other process") {
            assert!(stderr(o).contains("scalelab collect"), "{}", stderr(o));
        }
    }
    // The work was split: every run trained once, by one of the two.
    assert_eq!(
        outs.iter().map(trained).sum::<usize>(),
        4,
        "{}\n---\n{}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    assert_merged(&out, 4);

    // Merged tables gone: a third `run` finds all 4 finished and rebuilds them untrained.
    std::fs::remove_file(out.join("runs.parquet")).unwrap();
    let o = scalelab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 trained, 4 skipped"),
        "{}",
        stderr(&o)
    );
    assert_merged(&out, 4);
}
