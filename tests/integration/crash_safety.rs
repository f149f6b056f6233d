//! Crash safety: SIGKILL mid-sweep, checkpoint resume, failpoints at every write, and a killed
//! group of WSD cooldown branches.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

#[test]
fn kill_9_mid_sweep_then_rerun_resumes() {
    let dir = tmp("kill");
    let spec = dir.join("k.yaml");
    // Four runs of a few seconds each.
    std::fs::write(
        &spec,
        "name: k\ncorpus:\n  builtin: {seed: 2, topics: 2}\n  eval_tokens: 512\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 32, n_layer: 2, n_head: 2}\ndata:\n  tokens: [40000, 60000, 80000, 100000]\ntraining:\n  batch_size: 8\n",
    )
    .unwrap();
    let out = dir.join("out");
    let mut child = Command::new(BIN)
        .args([
            "run",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-report",
        ])
        .env("CI", "1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run is stored, then SIGKILL in the middle of the next one.
    let t0 = std::time::Instant::now();
    while scalelab::store::read_runs(&out)
        .map(|r| r.len())
        .unwrap_or(0)
        < 1
    {
        assert!(t0.elapsed().as_secs() < 120, "first run never finished");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let before = scalelab::store::read_runs(&out).unwrap();
    assert!(
        !before.is_empty() && before.len() < 4,
        "{} runs before the kill",
        before.len()
    );
    // The same command again trains only what is missing; every run ends up there once.
    let o = run_spec(&spec, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{} already finished", before.len())),
        "{}",
        stderr(&o)
    );
    let after = scalelab::store::read_runs(&out).unwrap();
    let mut ids: Vec<&str> = after.iter().map(|r| r.run_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((after.len(), ids.len()), (4, 4));
    for r in &before {
        let same = after.iter().find(|a| a.run_id == r.run_id).unwrap();
        assert_eq!(same.eval_loss, r.eval_loss, "a finished run was retrained");
    }
    let curves = scalelab::store::read_curves(&out).unwrap();
    assert_eq!(
        curves.len() as i64,
        after.iter().map(|r| r.steps).sum::<i64>(),
        "one curve row per step, no leftovers"
    );
}

/// A one-shape sweep whose runs take a second or two, checkpointing every 20 steps.
const CKPT_SPEC: &str = "name: ck\ncorpus:\n  builtin: {seed: 2, topics: 2}\n  eval_tokens: 512\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 32, n_layer: 2, n_head: 2}\ndata:\n  tokens: [20000, 40000]\ntraining:\n  batch_size: 8\ncheckpoint:\n  every: 20\n";

fn run_with_failpoint(spec: &Path, out: &Path, failpoint: &str, extra: &[&str]) -> Output {
    command(&run_args(spec, out, extra))
        .env("SCALELAB_FAILPOINT", failpoint)
        .output()
        .unwrap()
}

#[test]
fn checkpoint_resume_matches_an_uninterrupted_run() {
    let dir = tmp("ckpt");
    let spec = dir.join("ck.yaml");
    std::fs::write(&spec, CKPT_SPEC).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let o = run_spec(&spec, &a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // SIGKILL right after the first checkpoint of the first run (step 20 of 78).
    let o = run_with_failpoint(&spec, &b, "checkpoint-saved", &[]);
    assert_eq!(o.status.code(), None, "killed by a signal");
    let ckpts: Vec<_> = std::fs::read_dir(b.join("checkpoints")).unwrap().collect();
    assert_eq!(ckpts.len(), 1, "one checkpoint on disk");
    let st = scalelab(&["status", b.to_str().unwrap()]);
    let st_out = String::from_utf8_lossy(&st.stdout);
    assert!(st_out.contains("resumes from step 20/"), "{st_out}");
    // Same command again: resumes at step 20, and the result is the uninterrupted one.
    let o = run_spec(&spec, &b, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumes from its checkpoint at step 20"),
        "{}",
        stderr(&o)
    );
    let (ra, rb) = (assert_complete(&a, 2), assert_complete(&b, 2));
    for r in &ra {
        let s = rb.iter().find(|x| x.run_id == r.run_id).unwrap();
        // Stated tolerance 1e-4 nats; on the CPU backend the resumed run is bit-identical.
        assert!(
            (r.eval_loss - s.eval_loss).abs() < 1e-4,
            "{} vs {}",
            r.eval_loss,
            s.eval_loss
        );
    }
    let (ca, cb) = (
        scalelab::store::read_curves(&a).unwrap(),
        scalelab::store::read_curves(&b).unwrap(),
    );
    for ((ia, x), (ib, y)) in ca.iter().zip(&cb) {
        assert_eq!((ia, x.step), (ib, y.step));
        assert!(
            (x.train_loss - y.train_loss).abs() < 1e-4,
            "curve differs at step {}",
            x.step
        );
    }
    // Checkpoints of finished runs are deleted ...
    assert_eq!(std::fs::read_dir(b.join("checkpoints")).unwrap().count(), 0);
    // ... unless asked to keep them.
    let c = dir.join("c");
    let o = run_spec(&spec, &c, &["--keep-checkpoints", "--max-runs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(c.join("checkpoints")).unwrap().count(), 1);
}

/// Two seeds of one run: one pack with `--pack 2`, checkpointing every 20 steps.
const PACK_SPEC: &str = "name: pk\nseeds: [0, 1]\ncorpus:\n  builtin: {seed: 2, topics: 2}\n  eval_tokens: 512\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 32, n_layer: 2, n_head: 2}\ndata:\n  tokens: [30000]\ntraining:\n  batch_size: 8\ncheckpoint:\n  every: 20\n";

#[test]
fn killed_pack_resumes_from_its_checkpoint() {
    let dir = tmp("pack-ckpt");
    let spec = dir.join("pk.yaml");
    std::fs::write(&spec, PACK_SPEC).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let pack = ["--pack", "2"];
    let o = run_spec(&spec, &a, &pack);
    assert!(o.status.success(), "{}", stderr(&o));
    // SIGKILL right after the pack's first checkpoint (step 20 of 117).
    let o = run_with_failpoint(&spec, &b, "checkpoint-saved", &pack);
    assert_eq!(o.status.code(), None, "killed by a signal");
    let ckpts: Vec<String> = std::fs::read_dir(b.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        ckpts.len() == 1 && ckpts[0].ends_with(".pack.ckpt"),
        "one pack checkpoint: {ckpts:?}"
    );
    let st = scalelab(&["status", b.to_str().unwrap()]);
    let st_out = String::from_utf8_lossy(&st.stdout);
    assert_eq!(
        st_out.matches("resumes from step 20/").count(),
        2,
        "both runs of the pack: {st_out}"
    );
    // Same command again: the pack resumes at step 20 and ends as the uninterrupted pack.
    let o = run_spec(&spec, &b, &pack);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pack of 2 runs") && stderr(&o).contains("at step 20"),
        "{}",
        stderr(&o)
    );
    let (ra, rb) = (assert_complete(&a, 2), assert_complete(&b, 2));
    for r in &ra {
        let s = rb.iter().find(|x| x.run_id == r.run_id).unwrap();
        // On the CPU backend the resumed pack is bit-identical.
        assert_eq!(r.eval_loss.to_bits(), s.eval_loss.to_bits(), "{}", r.run_id);
        assert_eq!(r.final_train_loss.to_bits(), s.final_train_loss.to_bits());
    }
    let (ca, cb) = (
        scalelab::store::read_curves(&a).unwrap(),
        scalelab::store::read_curves(&b).unwrap(),
    );
    assert_eq!(ca.len(), cb.len(), "one curve row per step, none twice");
    for ((ia, x), (ib, y)) in ca.iter().zip(&cb) {
        assert_eq!((ia, x.step), (ib, y.step));
        assert_eq!(
            x.train_loss.to_bits(),
            y.train_loss.to_bits(),
            "step {}",
            x.step
        );
    }
    assert_eq!(std::fs::read_dir(b.join("checkpoints")).unwrap().count(), 0);
}

#[test]
fn sigkill_at_every_write_point_loses_nothing() {
    let dir = tmp("failpoints");
    let spec = dir.join("ck.yaml");
    std::fs::write(&spec, CKPT_SPEC).unwrap();
    for (k, fp) in [
        "checkpoint-saved",
        "before-rename:*.ckpt",
        "between-curve-and-run-file",
        "before-merge",
        "before-rename:curves.parquet",
        "before-rename:runs.parquet",
    ]
    .iter()
    .enumerate()
    {
        let out = dir.join(format!("o{k}"));
        // First run: killed at this point (while writing the first run's results, or its
        // first checkpoint) ...
        let o = run_with_failpoint(&spec, &out, fp, &[]);
        assert_eq!(o.status.code(), None, "{fp}: not killed\n{}", stderr(&o));
        // ... every file on disk is still readable ...
        scalelab::store::read_runs(&out).unwrap_or_else(|e| panic!("{fp}: {e}"));
        // ... and the same command again finishes the sweep: each run once.
        let o = run_spec(&spec, &out, &[]);
        assert!(o.status.success(), "{fp}: {}", stderr(&o));
        assert_complete(&out, 2);
        for sub in ["", "runs", "curves"] {
            for e in std::fs::read_dir(out.join(sub)).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "parquet") {
                    assert!(
                        scalelab::store::read_metadata(&p).is_ok(),
                        "{fp}: corrupt {}",
                        p.display()
                    );
                }
            }
        }
    }
}

#[test]
fn killed_branch_group_keeps_finished_branches_and_resumes_its_stable_phase() {
    let dir = tmp("wsd-kill");
    let spec = dir.join("b.yaml");
    // Branch points at steps 20, 40 and 80 of the stable run; a checkpoint every 30 steps.
    std::fs::write(
        &spec,
        WSD.replace("BRANCHES", "  branches: true") + "checkpoint:\n  every: 30\n",
    )
    .unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let o = run_spec(&spec, &a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Killed at the stable phase's first checkpoint (step 30): the first branch is stored.
    let o = run_with_failpoint(&spec, &b, "checkpoint-saved", &[]);
    assert_eq!(o.status.code(), None, "killed by a signal");
    let before = scalelab::store::read_runs(&b).unwrap();
    assert_eq!(
        before.len(),
        1,
        "the branch that finished before the kill is kept"
    );
    let o = run_spec(&spec, &b, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 already finished"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumes from its checkpoint at step 30"),
        "{}",
        stderr(&o)
    );
    let (ra, rb) = (
        scalelab::store::read_runs(&a).unwrap(),
        scalelab::store::read_runs(&b).unwrap(),
    );
    assert_eq!((ra.len(), rb.len()), (4, 4), "3 branches + the stable row");
    for r in &ra {
        let s = rb.iter().find(|x| x.run_id == r.run_id).unwrap();
        assert_eq!(r.status, s.status);
        if r.status == scalelab::record::Status::Ok {
            assert!(
                (r.eval_loss - s.eval_loss).abs() < 1e-4,
                "{}: {} vs {}",
                r.run_id,
                r.eval_loss,
                s.eval_loss
            );
        }
    }
    assert_eq!(std::fs::read_dir(b.join("checkpoints")).unwrap().count(), 0);
}

/// A damaged merged table is refused (exit 2, the fix named, nothing changed) by every
/// reader; `collect` sets it aside and rebuilds it from the per-run files; nothing is lost.
#[test]
fn damaged_merged_table_is_refused_then_rebuilt_by_collect() {
    let out = tmp("damaged-table");
    let o = micro_sweep(&out, &["--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = scalelab::store::read_runs(&out).unwrap();
    let table = out.join("runs.parquet");
    let bytes = std::fs::read(&table).unwrap();
    std::fs::write(&table, &bytes[..bytes.len() / 2]).unwrap();
    let dir = out.to_str().unwrap();
    for args in [vec!["fit", dir], vec!["status", dir], vec!["report", dir]] {
        let o = scalelab(&args);
        assert_user_error(&o, &["runs.parquet is damaged", "scalelab collect"]);
        assert_eq!(
            std::fs::read(&table).unwrap().len(),
            bytes.len() / 2,
            "{args:?} changed it"
        );
    }
    let o = micro_sweep(&out, &["--no-report"]);
    assert_user_error(&o, &["runs.parquet is damaged", "nothing was changed"]);
    let o = scalelab(&["collect", dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("set aside the damaged runs.parquet"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        out.join("runs.parquet.unreadable").exists(),
        "kept, not deleted"
    );
    let after = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(after.len(), before.len());
    for r in &before {
        let a = after.iter().find(|x| x.run_id == r.run_id).unwrap();
        assert_eq!(a.eval_loss.to_bits(), r.eval_loss.to_bits());
    }
    // The spec's metadata came back too: the same command finds every run finished.
    let o = micro_sweep(&out, &["--no-report"]);
    assert!(
        o.status.success() && stderr(&o).contains("0 to train"),
        "{}",
        stderr(&o)
    );
    // A table without a column every scalelab writes is not filled in with NaN losses ("0
    // usable points"): it is named, with collect as the fix while per-run files exist.
    use polars::prelude::{ParquetReader, ParquetWriter, SerReader};
    let mut df = ParquetReader::new(std::fs::File::open(&table).unwrap())
        .finish()
        .unwrap()
        .drop("eval_loss")
        .unwrap();
    ParquetWriter::new(std::fs::File::create(&table).unwrap())
        .finish(&mut df)
        .unwrap();
    let o = scalelab(&["fit", dir]);
    assert_user_error(&o, &["has no `eval_loss` column", "scalelab collect"]);
    let o = scalelab(&["collect", dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Rebuilt: every loss is back (the micro sweep's 4 runs are too few for a law, and fit
    // now says that instead).
    let after = scalelab::store::read_runs(&out).unwrap();
    assert!(before.iter().all(|r| after
        .iter()
        .any(|a| a.run_id == r.run_id && a.eval_loss.to_bits() == r.eval_loss.to_bits())));
    assert_user_error(&scalelab(&["fit", dir]), &["4 usable point(s)"]);
    std::fs::remove_dir_all(out.join("runs")).unwrap();
    let mut df = df.clone();
    ParquetWriter::new(std::fs::File::create(&table).unwrap())
        .finish(&mut df)
        .unwrap();
    assert_user_error(
        &scalelab(&["fit", dir]),
        &["has no `eval_loss` column", "restore it"],
    );
}
