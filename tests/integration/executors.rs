//! Executors: parallel workers, concurrent `run-one` tasks with `collect`, a changed spec in
//! the same folder, unusable devices, and a Slurm job array on the local cluster.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

#[test]
fn two_workers_give_identical_results() {
    let (a, b) = (tmp("w1"), tmp("w2"));
    let o = micro_sweep(&a, &["--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = micro_sweep(&b, &["--no-report", "--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ra, rb) = (
        scalelab::store::read_runs(&a).unwrap(),
        scalelab::store::read_runs(&b).unwrap(),
    );
    assert_eq!(ra.len(), 4);
    assert_eq!(rb.len(), 4);
    for r in &ra {
        let s = rb.iter().find(|x| x.run_id == r.run_id).expect("same runs");
        // The parameter init is seeded and drawn under a lock: bit-identical results.
        assert_eq!(r.eval_loss, s.eval_loss, "{}", r.run_id);
        assert_eq!(r.final_train_loss, s.final_train_loss);
    }
    assert_user_error(&micro_sweep(&b, &["--workers", "0"]), &["--workers"]);
}

/// Three seeds of two shapes (gradient clip on, per-seed data order): a pack per shape.
const PACKABLE: &str = "name: packs\nseeds: [0, 1, 2]\ncorpus:\n  builtin: {seed: 7, topics: 4}\n  eval_tokens: 2048\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\n    - {d_model: 32, n_layer: 2, n_head: 2}\ndata:\n  tokens: [12288]\n  min_steps: 10\ntraining:\n  batch_size: 8\n  lr: 1.0e-2\n  warmup_steps: 5\n  eval_interval: 16\n  grad_clip: 1.0\n  data_order: shuffled_per_seed\n";

#[test]
fn packed_runs_match_single_runs_and_plan_says_how_it_packs() {
    let dir = tmp("packs");
    let spec = write_spec(&dir, PACKABLE);
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", spec.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = scalelab(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(
        plan(&[]).contains("packing: none (auto packs on cuda only"),
        "{}",
        plan(&[])
    );
    let packed_plan = plan(&["--pack", "2"]);
    assert!(
        packed_plan.contains("up to 2 runs of one shape per pack on burn-flex (cpu): 4 pending runs train in 2 packs, 2 alone"),
        "{packed_plan}"
    );
    let (alone, packed) = (dir.join("alone"), dir.join("packed"));
    let o = run_spec(&spec, &alone, &["--pack", "off"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_spec(&spec, &packed, &["--pack", "3", "--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ra, rp) = (assert_complete(&alone, 6), assert_complete(&packed, 6));
    // plan's ETA fits a pack as one training (its rows share the pack's wall time), not once
    // per run.
    let trainings: std::collections::BTreeSet<(i64, u64)> = rp
        .iter()
        .map(|r| (r.steps_done, r.wall_s.to_bits()))
        .collect();
    assert!(trainings.len() < 6, "some runs were packed");
    let s = plan_of(&spec, &packed);
    assert!(
        s.contains(&format!("fitted on {} finished run", trainings.len())),
        "{s}"
    );
    for r in &ra {
        let p = rp
            .iter()
            .find(|x| x.run_id == r.run_id)
            .expect("same run ids");
        assert_eq!((p.status, p.steps), (r.status, r.steps), "{}", r.run_id);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        assert!(
            rel(p.eval_loss, r.eval_loss) < 2e-4
                && rel(p.final_train_loss, r.final_train_loss) < 2e-4,
            "{}: packed eval {} train {}, alone eval {} train {}",
            r.run_id,
            p.eval_loss,
            p.final_train_loss,
            r.eval_loss,
            r.final_train_loss
        );
    }
    // Seeds differ, so a pack's runs are not copies of one another.
    let evals: std::collections::BTreeSet<u64> = rp.iter().map(|r| r.eval_loss.to_bits()).collect();
    assert_eq!(evals.len(), 6);
    assert_user_error(
        &run_spec(&spec, &packed, &["--pack", "0"]),
        &["--pack", "auto, off or a number"],
    );
}

#[test]
fn concurrent_tasks_and_a_changed_spec_lose_nothing() {
    let out = tmp("concurrent");
    // Folder set up with nothing trained.
    let o = micro_sweep(&out, &["--max-runs", "0", "--no-report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = scalelab::spec::SpecSource::from_file(&repo().join("sweeps/micro.yaml")).unwrap();
    let p = scalelab::sweep::prepare(src, Some(out.clone()), None).unwrap();
    let (ids, pending_runs) = scalelab::sweep::pending_unit_ids(&p).unwrap();
    assert_eq!(pending_runs, 4);
    assert_eq!(ids.len(), 4);
    // Four tasks plus a duplicate of the first, all at once (as array tasks finishing at the
    // same moment, and a requeued task racing its predecessor).
    let spawn = |id: &str| {
        Command::new(BIN)
            .args(["run-one", out.to_str().unwrap(), "--run", id])
            .current_dir(repo())
            .output()
    };
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .chain(std::iter::once(&ids[0]))
            .map(|id| s.spawn(move || spawn(id).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    // Before collect, readers already see every run (the per-run files).
    assert_eq!(scalelab::store::read_runs(&out).unwrap().len(), 4);
    let o = scalelab(&["collect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("collected 4 runs"));
    assert_complete(&out, 4);
    // Collect twice: the same 4 rows.
    let o = scalelab(&["collect", out.to_str().unwrap()]);
    assert!(o.status.success());
    assert_complete(&out, 4);
    // A run that is not in the plan, and a folder without results.
    assert_user_error(
        &scalelab(&["run-one", out.to_str().unwrap(), "--run", "nosuchrun"]),
        &["nosuchrun", "not in the plan"],
    );
    let empty = tmp("empty-collect");
    assert_user_error(
        &scalelab(&["collect", empty.to_str().unwrap()]),
        &["no results"],
    );
    assert_user_error(
        &scalelab(&["status", empty.to_str().unwrap()]),
        &["sweep.yaml"],
    );

    // The same folder with a different spec: refused, nothing written.
    let before = std::fs::read(out.join("runs.parquet")).unwrap();
    let changed = out.join("changed.yaml");
    std::fs::write(
        &changed,
        std::fs::read_to_string(repo().join("sweeps/micro.yaml"))
            .unwrap()
            .replace("lr: 1.0e-2", "lr: 2.0e-2"),
    )
    .unwrap();
    for cmd in ["run", "submit"] {
        let o = scalelab(&[
            cmd,
            changed.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_user_error(&o, &["different sweep spec", "lr: 2.0e-2", "--update-spec"]);
    }
    assert_eq!(std::fs::read(out.join("runs.parquet")).unwrap(), before);
    // A comment-only change is the same sweep.
    let commented = out.join("commented.yaml");
    std::fs::write(
        &commented,
        format!(
            "# a note\n{}",
            std::fs::read_to_string(repo().join("sweeps/micro.yaml")).unwrap()
        ),
    )
    .unwrap();
    let o = run_spec(&commented, &out, &[]);
    assert!(
        stderr(&o).contains("0 trained, 4 skipped"),
        "{}",
        stderr(&o)
    );
    // --update-spec continues the folder: the changed LR means 4 new runs, and the 4 runs at
    // the old LR leave the fit's tables for superseded/ (kept there, with their curves). A
    // kill between the two table writes, then the same command, finishes the move once.
    let old_ids = |dir: &Path| {
        let mut v: Vec<String> = scalelab::store::read_runs(dir)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        v.sort();
        v
    };
    let before_ids = old_ids(&out);
    // While a run of the folder trains (its lock held), the update is refused.
    let lock = scalelab::fsio::UnitLock::try_acquire(&out, &before_ids[0]).unwrap();
    assert!(lock.is_some());
    let o = run_spec(&changed, &out, &["--update-spec"]);
    assert_user_error(&o, &["is training now", "Nothing was changed"]);
    drop(lock);
    assert_eq!(old_ids(&out), before_ids);
    let o = command(&run_args(
        &changed,
        &out,
        &["--update-spec", "--max-runs", "1"],
    ))
    .env("SCALELAB_FAILPOINT", "between-superseded-and-merged")
    .output()
    .unwrap();
    assert!(!o.status.success(), "the failpoint kills it");
    let o = run_spec(&changed, &out, &["--update-spec", "--max-runs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("4 runs in")
            && stderr(&o).contains("are not in the updated spec; set aside"),
        "{}",
        stderr(&o)
    );
    let now = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(now.len(), 1, "only the new spec's run is fitted");
    assert!(!before_ids.contains(&now[0].run_id));
    let superseded = out.join(scalelab::store::SUPERSEDED_DIR);
    assert_eq!(
        old_ids(&superseded),
        before_ids,
        "set aside once, nothing lost"
    );
    let curves = scalelab::store::read_curves(&superseded).unwrap();
    assert!(before_ids
        .iter()
        .all(|id| curves.iter().any(|(c, _)| c == id)));
    assert_eq!(std::fs::read_dir(out.join("runs")).unwrap().count(), 1);

    // Devices that cannot be used: a clear error before anything runs.
    let o = micro_sweep(&tmp("devices"), &["--devices", "cuda:0,cuda:1"]);
    assert_user_error(&o, &["cuda"]);
    let o = micro_sweep(&tmp("devices2"), &["--devices", "tpu:0"]);
    assert_user_error(&o, &["unknown device"]);
}

fn slurm_ready() {
    assert!(
        Command::new("sinfo").arg("-h").output().is_ok_and(|o| o.status.success()),
        "no Slurm cluster answers: run scripts/slurm-local.sh first (the test command scripts/test.sh does)"
    );
}

#[test]
fn slurm_job_array_submit_status_collect() {
    slurm_ready();
    let out = tmp("slurm");
    let o_str = out.to_str().unwrap();
    // Bad input first: nothing may be written.
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        o_str,
        "--partition",
        "nosuchpart",
    ]);
    assert_user_error(&o, &["unknown Slurm partition", "nosuchpart", "debug"]);
    let o = Command::new(BIN)
        .args(["submit", "sweeps/micro.yaml", "--out", o_str])
        .current_dir(repo())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_user_error(&o, &["sbatch", "not found on PATH", "--dry-run"]);
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        o_str,
        "--time",
        "soon",
    ]);
    assert_user_error(&o, &["--time", "HH:MM:SS"]);
    // sbatch itself refuses (no node has that memory): the new folder is left as it was.
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        o_str,
        "--mem",
        "9999G",
    ]);
    assert_user_error(
        &o,
        &["sbatch rejected the job array", "Nothing was submitted"],
    );
    assert!(
        !out.join("sweep.yaml").exists() && !out.join("slurm").exists(),
        "bad submit wrote files"
    );
    // In a folder that already holds files (here a tokenizer.json of the user's), only what
    // the submit wrote goes.
    let theirs = tmp("slurm-theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("tokenizer.json"), "{}").unwrap();
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        theirs.to_str().unwrap(),
        "--mem",
        "9999G",
    ]);
    assert_user_error(&o, &["sbatch rejected the job array"]);
    let left: Vec<String> = std::fs::read_dir(&theirs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, ["tokenizer.json"]);
    // Dry run: the script, nothing written.
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        o_str,
        "--dry-run",
        "--max-parallel",
        "2",
        "--time",
        "00:10:00",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "#SBATCH --array=0-3%2",
        "#SBATCH --requeue",
        "#SBATCH --time=00:10:00",
        "run-one",
        "SLURM_ARRAY_TASK_ID",
    ] {
        assert!(script.contains(needle), "script lacks {needle}:\n{script}");
    }
    assert!(!out.join("slurm").exists());
    // For real: a 4-task array on the local cluster, 2 at a time.
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        o_str,
        "--max-parallel",
        "2",
        "--cpus-per-task",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    let job = said
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(job.parse::<u64>().is_ok(), "{said}");
    let t0 = std::time::Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 240,
            "job array {job} did not finish in 240 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let st = scalelab(&["status", o_str]);
    let st_out = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        st_out.contains("4 runs: 4 done"),
        "{st_out}\nlogs: {:?}",
        std::fs::read_dir(out.join("slurm/logs")).map(|d| d.count())
    );
    // The last array task to finish merged every run: the tables are complete before
    // `collect` (which stays idempotent).
    assert!(!st_out.contains("not collected yet"), "{st_out}");
    assert_complete(&out, 4);
    let o = scalelab(&["collect", o_str]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_complete(&out, 4);
    // Each task logged its run; everything is finished, so a second submit submits nothing.
    let logs = std::fs::read_dir(out.join("slurm/logs")).unwrap().count();
    assert_eq!(logs, 4);
    let o = scalelab(&["submit", "sweeps/micro.yaml", "--out", o_str]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to submit"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The results fit and report like a local sweep's (pyarrow/DuckDB read them too).
    let py = Command::new("python3")
        .arg(repo().join("tests/read_parquet.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&py.stdout).contains("duckdb runs=4"),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
}
