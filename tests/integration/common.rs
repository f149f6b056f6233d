//! Shared helpers: the binary and its paths, temporary folders, run helpers, spec texts
//! used by several themes, and the common result checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_scalelab");

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn shared_data() -> PathBuf {
    let p = repo().join("../shared/data");
    assert!(
        p.join("chinchilla_svg_extracted_data.csv").is_file(),
        "../shared/data is missing (expected beside the repo): the fitter's validation data is required"
    );
    p
}

pub(crate) fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalelab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary, run from the repository root in plain-output mode.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(repo()).env("CI", "1");
    c
}

pub(crate) fn scalelab(args: &[&str]) -> Output {
    command(args).output().expect("run scalelab")
}

/// `run SPEC --out OUT --no-report` plus `extra`.
pub(crate) fn run_args<'a>(spec: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-report",
    ];
    args.extend_from_slice(extra);
    args
}

pub(crate) fn run_spec(spec: &Path, out: &Path, extra: &[&str]) -> Output {
    scalelab(&run_args(spec, out, extra))
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Exit code 2, the message names what is expected, and no panic text.
pub(crate) fn assert_user_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr:\n{err}",
        o.status.code()
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic text leaked:\n{err}"
    );
}

pub(crate) fn micro_sweep(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "sweeps/micro.yaml", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    scalelab(&args)
}

/// `scalelab CMD` on Epoch's Chinchilla table (`--input`, its N, C and loss columns), then
/// `extra`.
pub(crate) fn on_chinchilla(cmd: &str, extra: &[&str]) -> Output {
    let csv = shared_data().join("chinchilla_svg_extracted_data.csv");
    let mut args = vec![
        cmd,
        "--input",
        csv.to_str().unwrap(),
        "--n-col",
        "Model Size",
        "--c-col",
        "Training FLOP",
        "--loss-col",
        "loss",
    ];
    args.extend_from_slice(extra);
    scalelab(&args)
}

/// `scalelab plan SPEC --out DIR`'s table (it must succeed).
pub(crate) fn plan_of(spec: &Path, out: &Path) -> String {
    let o = scalelab(&[
        "plan",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn write_spec(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("bad.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

pub(crate) const BASE: &str = "name: t\nmodel:\n  context: 16\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\ndata:\n  tokens: [4096]\n  min_steps: 2\ntraining:\n  batch_size: 4\n";

pub(crate) const WSD: &str = "name: wsd\ncorpus:\n  builtin: {seed: 5, topics: 2}\n  eval_tokens: 1024\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\ndata:\n  tokens: [6400, 12800, 25600]\n  min_steps: 10\nBRANCHES\ntraining:\n  batch_size: 8\n  lr: 1.0e-2\n  warmup_steps: 5\n  schedule: wsd\n  cooldown_fraction: 0.2\n  cooldown_shape: sqrt\n";

/// Every planned run exactly once, every file readable, one curve row per step.
pub(crate) fn assert_complete(out: &Path, n: usize) -> Vec<scalelab::record::RunRecord> {
    let runs = scalelab::store::read_runs(out).unwrap();
    let mut ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((runs.len(), ids.len()), (n, n), "each run exactly once");
    assert!(runs
        .iter()
        .all(|r| r.status == scalelab::record::Status::Ok));
    let curves = scalelab::store::read_curves(out).unwrap();
    assert_eq!(
        curves.len() as i64,
        runs.iter().map(|r| r.steps).sum::<i64>(),
        "one curve row per step, no leftovers"
    );
    // The merged files alone (what pandas/DuckDB users read) hold every run once, too.
    let merged = scalelab::store::merged_run_ids(out).unwrap();
    assert_eq!(merged.len(), n, "runs.parquet");
    runs
}

pub(crate) fn check_pngs(dir: &Path, names: &[&str]) {
    for n in names {
        let img = image::open(dir.join("plots").join(format!("{n}.png")))
            .unwrap_or_else(|e| panic!("{n}.png: {e}"));
        assert_eq!((img.width(), img.height()), (900, 620), "{n}.png size");
    }
}
