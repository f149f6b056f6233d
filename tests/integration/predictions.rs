//! Final-loss predictions made while runs train: the prediction history on the curve rows,
//! across a kill and a resume, and `run --prune` stopping a confidently worse run.

use crate::common::*;
use scalelab::record::Status;

/// Steps of the predictions logged on a folder's curves, with their values.
fn predictions(out: &std::path::Path) -> Vec<(usize, f64)> {
    scalelab::store::read_curves(out)
        .unwrap()
        .iter()
        .filter_map(|(_, c)| Some((c.step, c.predicted?.loss)))
        .collect()
}

const HISTORY_SPEC: &str = "name: hist\ncorpus:\n  builtin: {seed: 2, topics: 2}\n  eval_tokens: 512\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 32, n_layer: 2, n_head: 2}\ndata:\n  tokens: [28160]\ntraining:\n  batch_size: 8\ncheckpoint:\n  every: 60\n";

/// A run killed at step 60 of 110 keeps the predictions it made before (due at 30% and 50%:
/// steps 34 and 56), and the resumed run adds the one after (70%): the same history,
/// value for value, as the uninterrupted run's.
#[test]
fn predictions_history_survives_kill_and_resume() {
    let dir = tmp("pred-history");
    let spec = dir.join("hist.yaml");
    std::fs::write(&spec, HISTORY_SPEC).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let o = run_spec(&spec, &a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Predictions are due at steps 34, 56 and 78 (30/50/70% rounded up to a whole 2% block;
    // a fit that fails logs none).
    let whole = predictions(&a);
    assert!(
        whole.iter().all(|p| [34, 56, 78].contains(&p.0))
            && whole.iter().any(|p| p.0 < 60)
            && whole.iter().any(|p| p.0 > 60),
        "{whole:?}"
    );
    let o = command(&run_args(&spec, &b, &[]))
        .env("SCALELAB_FAILPOINT", "checkpoint-saved")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None, "killed by a signal");
    let o = run_spec(&spec, &b, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resumes from its checkpoint at step 60"));
    let resumed = predictions(&b);
    assert_eq!(resumed.len(), whole.len(), "{resumed:?} vs {whole:?}");
    for (x, y) in whole.iter().zip(&resumed) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() < 1e-9, "step {}: {} vs {}", x.0, x.1, y.1);
    }
}

const PRUNE_SPEC: &str = "name: prune\ncorpus:\n  builtin: {seed: 3, topics: 2}\n  eval_tokens: 1024\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 24, n_layer: 2, n_head: 2}\n    - {d_model: 8, n_layer: 1, n_head: 1}\n    - {d_model: 64, n_layer: 2, n_head: 2}\n    - {d_model: 12, n_layer: 1, n_head: 2}\ndata:\n  isoflop: {budgets: [3.0e9]}\ntraining:\n  batch_size: 8\n  lr: 0.01\n";

/// One IsoFLOP budget of four shapes, smallest FLOPs first: the d24 run, whose prediction at
/// 50% lies confidently above the best finished run, is stopped there as `pruned` with its
/// predicted final eval loss; the best run of the budget is not; the FLOPs saved are
/// reported; `status` shows it; fits leave it out unless `--include-pruned`.
#[test]
fn predictions_prune_a_confidently_worse_run_and_fits_leave_it_out() {
    let dir = tmp("prune");
    let spec = dir.join("prune.yaml");
    std::fs::write(&spec, PRUNE_SPEC).unwrap();
    let out = dir.join("out");
    let o = run_spec(&spec, &out, &["--prune", "--prune-margin", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--prune stopped 1 runs early, saving"),
        "{}",
        stderr(&o)
    );
    let runs = scalelab::store::read_runs(&out).unwrap();
    let pruned: Vec<_> = runs.iter().filter(|r| r.status == Status::Pruned).collect();
    assert_eq!(pruned.len(), 1, "{runs:?}");
    let p = pruned[0];
    assert!(p.steps_done < p.steps && p.flops_spent < p.flops, "{p:?}");
    let predicted = p
        .predicted_eval_loss
        .expect("a pruned run keeps its prediction");
    let best = runs
        .iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| r.eval_loss)
        .fold(f64::INFINITY, f64::min);
    assert!(predicted > best, "{predicted} vs best {best}");
    let st =
        String::from_utf8_lossy(&scalelab(&["status", out.to_str().unwrap()]).stdout).to_string();
    assert!(st.contains("pruned     at step"), "{st}");
    let fit = |extra: &[&str]| {
        let mut args = vec!["fit", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        stderr(&scalelab(&args))
    };
    assert!(fit(&[]).contains("3 usable point(s)"), "{}", fit(&[]));
    let with = fit(&["--include-pruned"]);
    assert!(with.contains("4 usable point(s)"), "{with}");
}
