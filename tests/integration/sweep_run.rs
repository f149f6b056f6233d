//! Running sweeps: the micro sweep end to end (resume, Parquet provenance, pyarrow/DuckDB
//! interop), `plan`, `bench`, WSD cooldown branches and learning-rate sweeps.

use std::process::Command;

use scalelab::results::ResultsFolder;

use crate::common::*;

#[test]
fn micro_sweep_end_to_end_and_resume() {
    let out = tmp("micro");
    // Interrupted: only 2 of 4 runs.
    let o = micro_sweep(&out, &["--max-runs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(scalelab::store::read_runs(&out).unwrap().len(), 2);
    // The plan's ETA now comes from the two finished runs.
    let s = plan_of(std::path::Path::new("sweeps/micro.yaml"), &out);
    assert!(s.contains("fitted on 2 finished runs"), "{s}");
    assert_eq!(s.lines().filter(|l| l.ends_with("pending")).count(), 2);
    // Same command again: trains only the other 2.
    let o = micro_sweep(&out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 trained, 2 skipped"),
        "{}",
        stderr(&o)
    );
    // And again: trains nothing.
    let o = micro_sweep(&out, &[]);
    assert!(
        stderr(&o).contains("0 trained, 4 skipped"),
        "{}",
        stderr(&o)
    );

    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 4);
    let mut ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "duplicate run ids");
    let floor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("floor.json")).unwrap()).unwrap();
    let floor_nats = floor["nats_per_token"].as_f64().unwrap();
    let curves = scalelab::store::read_curves(&out).unwrap();
    for r in &runs {
        assert_eq!(r.status, scalelab::record::Status::Ok);
        assert!(
            r.eval_loss.is_finite() && r.eval_loss > floor_nats,
            "eval {} floor {floor_nats}",
            r.eval_loss
        );
        assert_eq!(r.tokens, r.steps * r.batch_size * r.context);
        assert!((r.flops - 6.0 * r.n_params as f64 * r.tokens as f64).abs() < 1.0);
        assert!(r.tokens_per_s > 0.0 && r.wall_s > 0.0);
        let c: Vec<_> = curves
            .iter()
            .filter(|(id, _)| *id == r.run_id)
            .map(|(_, c)| c)
            .collect();
        assert_eq!(c.len() as i64, r.steps, "one curve row per step");
        let first = c.first().unwrap().train_loss;
        assert!(
            r.final_train_loss < first - 1.0,
            "loss did not fall: {first} -> {}",
            r.final_train_loss
        );
        assert!(c.iter().filter(|c| c.eval_loss.is_some()).count() >= 2);
        // Initial loss of a byte-level model is about ln 256.
        assert!((first - 256f64.ln()).abs() < 0.5, "first loss {first}");
    }
    // Larger model, same data: lower loss at the largest D.
    let at = |d: i64| {
        let mut v: Vec<_> = runs
            .iter()
            .filter(|r| r.d_model == d && r.tokens == 16384)
            .collect();
        v.pop().unwrap().eval_loss
    };
    assert!(at(32) < at(16) + 0.05, "d32 {} vs d16 {}", at(32), at(16));
    // Provenance in the Parquet metadata; spec copy beside the results.
    let meta = scalelab::store::read_metadata(&out.join("runs.parquet")).unwrap();
    for k in [
        "scalelab.spec_hash",
        "scalelab.version",
        "scalelab.backend",
        "scalelab.host",
    ] {
        assert!(meta.iter().any(|(key, _)| key == k), "metadata lacks {k}");
    }
    assert!(out.join("sweep.yaml").is_file() && out.join("curves.parquet").is_file());
    // No temp files left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.contains(".tmp-"), "leftover temp file {name}");
    }
    // The files open in pyarrow and DuckDB (installed by .ci/run from requirements-ci.txt).
    let py = Command::new("python3")
        .arg(repo().join("tests/read_parquet.py"))
        .arg(&out)
        .output()
        .expect("python3 must be installed (see .ci/run)");
    assert!(
        py.status.success(),
        "python readers failed:\n{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let said = String::from_utf8_lossy(&py.stdout);
    assert!(
        said.contains("pyarrow runs=4") && said.contains("duckdb runs=4"),
        "{said}"
    );
}

#[test]
fn plan_prints_table_without_training() {
    let out = tmp("plan");
    let o = scalelab(&["plan", "sweeps/quick.yaml", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    // The main job: 3 IsoFLOP budgets, 5 to 7 sizes each, four seeds (72 runs).
    assert!(
        s.contains("72 runs") && s.contains("C=6ND") && s.contains("ETA"),
        "{s}"
    );
    assert_eq!(s.lines().filter(|l| l.ends_with("pending")).count(), 72);
    // Each run's seed, batch and peak LR (set by the hp-quick laws) are in its row: the
    // smallest run of the 3e10 budget, d12 (3.8k parameters, 1.3M tokens), seed 0.
    let d12 = s
        .lines()
        .find(|l| l.contains("d12-L2-h2") && l.contains("3.00e10"))
        .unwrap();
    let cells: Vec<&str> = d12.split_whitespace().collect();
    assert_eq!(&cells[2..4], ["0", "3.792k"], "{d12}");
    assert_eq!(&cells[7..9], ["10", "3.072e-2"], "{d12}");
    for budget in ["3.00e10", "1.00e11", "3.00e11"] {
        let runs = s
            .lines()
            .filter(|l| l.ends_with("pending") && l.contains(budget))
            .count();
        assert!((20..=28).contains(&runs), "{budget}: {runs} runs\n{s}");
    }
    assert!(!out.join("runs.parquet").exists());
}

/// `plan --measure` times each distinct training configuration once (the micro sweep's two
/// shapes share batch and context: two timings for four runs), writes nothing, and gives the
/// wall clock on the workers asked for.
#[test]
fn plan_measure_times_each_configuration_once() {
    let out = tmp("plan-measure");
    let args = ["plan", "sweeps/micro.yaml", "--out", out.to_str().unwrap()];
    let o = scalelab(&[&args[..], &["--measure", "--workers", "2"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("timed 1/2 d16-L1-h2") && err.contains("timed 2/2 d32-L1-h2"),
        "{err}"
    );
    assert_eq!(err.matches("scalelab: timed ").count(), 2, "{err}");
    let s = String::from_utf8_lossy(&o.stdout);
    let total = s.lines().find(|l| l.starts_with("total ")).unwrap();
    assert!(
        total.contains("on 2 workers")
            && total.contains("timed on this device by plan --measure, 2 at once"),
        "{total}"
    );
    assert!(!s.contains(" ?  pending"), "every run has an ETA:\n{s}");
    assert!(!out.join("runs.parquet").exists());
    let o = scalelab(&[&args[..], &["--workers", "0"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_json_lists_shapes() {
    let o = scalelab(&["bench", "--json", "--shapes", "a", "--seconds", "0.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = &v.as_array().unwrap()[0];
    assert_eq!(a["shape"], "a");
    assert!(a["tokens_per_s"].as_f64().unwrap() > 100.0);
    assert!(a["mfu"].as_f64().unwrap() > 0.0 && a["mfu"].as_f64().unwrap() < 1.0);
}

/// MFU against a card's peak given by hand: the JSON says where the peak came from and
/// MFU/card is the achieved rate over it; the table shows both MFUs; a zero peak and an
/// unknown precision are rejected with exit 2.
#[test]
fn bench_gives_mfu_against_the_card_peak() {
    let args = [
        "bench",
        "--shapes",
        "a",
        "--seconds",
        "0.3",
        "--peak-tflops",
        "0.5",
    ];
    let o = scalelab(&[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = &v.as_array().unwrap()[0];
    assert_eq!(a["datasheet"], "--peak-tflops 0.5", "{a}");
    assert_eq!(a["datasheet_peak_flops"].as_f64(), Some(0.5e12), "{a}");
    assert_eq!(a["precision"], "f32", "{a}");
    let achieved = a["achieved_flops"].as_f64().unwrap();
    let card = a["mfu_datasheet"].as_f64().unwrap();
    assert!((card - achieved / 0.5e12).abs() < 1e-12, "{a}");
    assert!(card > 0.0 && card < 1.0, "{a}");
    let o = scalelab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("card peak: 0.5 TFLOP/s (--peak-tflops 0.5)"),
        "{t}"
    );
    assert!(
        t.contains("MFU/card") && t.contains("precision: f32"),
        "{t}"
    );
    // Without a card peak on the CPU, the column shows a dash and no datasheet field.
    let o = scalelab(&["bench", "--json", "--shapes", "a", "--seconds", "0.3"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v[0]["mfu_datasheet"].is_null(), "{v}");
    for bad in [["--peak-tflops", "0"], ["--precision", "fp8"]] {
        let o = scalelab(&[&["bench", "--shapes", "a"][..], &bad[..]].concat());
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(bad[0]), "{}", stderr(&o));
    }
}

#[test]
fn bench_times_each_family() {
    let o = scalelab(&[
        "bench",
        "--json",
        "--shapes",
        "lstm,mlp",
        "--seconds",
        "0.3",
        "--attention",
        "both",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v.as_array().unwrap();
    // One row per family: attention modes only apply to the Transformer.
    assert_eq!(rows.len(), 2, "{v}");
    for (row, fam) in rows.iter().zip(["lstm", "mlp"]) {
        assert_eq!(row["family"], fam);
        assert_eq!(row["attention"], "-");
        assert!(row["tokens_per_s"].as_f64().unwrap() > 100.0, "{row}");
        let mfu = row["mfu"].as_f64().unwrap();
        assert!(mfu > 0.0 && mfu < 1.0, "{row}");
    }
}

#[test]
fn wsd_cooldown_branches_match_separate_runs() {
    let dir = tmp("wsd");
    let branched = dir.join("branched.yaml");
    std::fs::write(&branched, WSD.replace("BRANCHES", "  branches: true")).unwrap();
    let separate = dir.join("separate.yaml");
    // Branch groups read their prefix in order; the separate runs must too to compare.
    let sequential = format!(
        "{}  data_order: sequential\n",
        WSD.replace("BRANCHES\n", "")
    );
    std::fs::write(&separate, sequential).unwrap();
    let (ob, os) = (dir.join("b"), dir.join("s"));
    let o = scalelab(&["plan", branched.to_str().unwrap()]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        plan.contains("cooldown branches: 1 stable-phase runs feed 3 branches"),
        "{plan}"
    );
    let o = run_spec(&branched, &ob, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("separate runs would cost"),
        "{}",
        stderr(&o)
    );
    // The finished group is one sample of the ETA's fit (its stable parent's row holds the
    // group's time), not left out.
    let s = plan_of(&branched, &ob);
    assert!(s.contains("fitted on 1 finished run:"), "{s}");
    let o = run_spec(&separate, &os, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rb = scalelab::store::read_runs(&ob).unwrap();
    let rs = scalelab::store::read_runs(&os).unwrap();
    let stable: Vec<_> = rb
        .iter()
        .filter(|r| r.status == scalelab::record::Status::Stable)
        .collect();
    assert_eq!(stable.len(), 1);
    let branches: Vec<_> = rb
        .iter()
        .filter(|r| r.status == scalelab::record::Status::Ok)
        .collect();
    assert_eq!(branches.len(), 3);
    for b in &branches {
        assert_eq!(b.parent, stable[0].run_id);
        assert_eq!(
            b.branch_step,
            b.steps - (b.steps as f64 * 0.2).round() as i64
        );
        assert!(b.flops_spent < b.flops);
        // The same D trained as a separate WSD run: the stable phase is identical by
        // construction (same seed, data order and warmup), so the losses agree to within
        // floating-point noise. Tolerance: 0.01 nats.
        let s = rs.iter().find(|r| r.tokens == b.tokens).unwrap();
        assert!(
            (b.eval_loss - s.eval_loss).abs() < 0.01,
            "branch {} vs separate {}",
            b.eval_loss,
            s.eval_loss
        );
    }
    let spent: f64 = rb.iter().map(|r| r.flops_spent).sum();
    let separate_cost: f64 = rs.iter().map(|r| r.flops).sum();
    // (0.8 * 25600 + 0.2 * (6400 + 12800 + 25600)) / 44800 = 0.657.
    assert!(
        (spent / separate_cost - 0.657).abs() < 0.01,
        "ratio {}",
        spent / separate_cost
    );
    // Resume: nothing left to train.
    let o = run_spec(&branched, &ob, &[]);
    assert!(
        stderr(&o).contains("0 trained, 3 skipped"),
        "{}",
        stderr(&o)
    );
    // The spec without its longest D (--update-spec): that branch is set aside; the stable
    // phase its two shorter siblings were branched from stays, although the updated plan
    // would give a new stable phase a new id (it would be shorter).
    let shorter = dir.join("shorter.yaml");
    let text = std::fs::read_to_string(&branched).unwrap();
    std::fs::write(
        &shorter,
        text.replace("[6400, 12800, 25600]", "[6400, 12800]"),
    )
    .unwrap();
    let o = run_spec(&shorter, &ob, &["--update-spec"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let now = scalelab::store::read_runs(&ob).unwrap();
    assert_eq!(now.len(), 3, "two branches and their stable phase");
    assert!(now.iter().any(|r| r.run_id == stable[0].run_id));
    let moved = scalelab::store::read_runs(&ob.join(scalelab::store::SUPERSEDED_DIR)).unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].tokens, 25600);
}

#[test]
fn lr_sweep_selects_best_and_fit_uses_chosen_n() {
    let dir = tmp("lrsweep");
    let spec = dir.join("lr.yaml");
    std::fs::write(
        &spec,
        BASE.replace("batch_size: 4", "batch_size: 4\n  lr_multipliers: [0.3, 3]")
            + "fit: {n: total, c: full}\n",
    )
    .unwrap();
    let out = dir.join("out");
    let o = run_spec(&spec, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs.iter().filter(|r| r.selected).count(), 1);
    let best = runs
        .iter()
        .filter(|r| r.status == scalelab::record::Status::Ok)
        .min_by(|a, b| a.eval_loss.total_cmp(&b.eval_loss))
        .unwrap();
    assert!(best.selected);
    assert!(runs
        .iter()
        .all(|r| r.flops_total > r.flops && r.flops_full > r.flops_total));
    let data = ResultsFolder::load(&out).unwrap().dataset(0).unwrap();
    assert_eq!(data.points.len(), 1, "only the selected run is a fit point");
    assert_eq!(data.points[0].n, best.n_params_total as f64);
    assert!(data.source.contains("all parameters") && data.source.contains("C = full"));
    assert_eq!(data.points[0].c(), best.flops_full);
}

#[test]
fn plan_of_a_gpu_sized_sweep_needs_no_data_in_memory() {
    // 6M-340M parameters, up to 2.6e11 training tokens: the stream is generated on demand.
    let t0 = std::time::Instant::now();
    let o = scalelab(&["plan", "sweeps/gpu-cluster.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.lines().filter(|l| l.ends_with("pending")).count() >= 40,
        "{s}"
    );
    assert!(
        s.contains("unknown until a run on this device finishes"),
        "{s}"
    );
    assert!(t0.elapsed().as_secs() < 30);
}

/// The overnight GPU sweep fits the night it claims at its stated speed; the same sweep
/// with a shorter `budget_hours` (or a slower assumed speed) gets a warning that says by
/// how much it overruns.
#[test]
fn plan_checks_a_sweep_against_its_budget_hours() {
    let o = scalelab(&["plan", "sweeps/gpu-overnight.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("speed assumed: flops_per_s 1.00e14"), "{s}");
    let line = s.lines().find(|l| l.starts_with("whole sweep ~")).unwrap();
    assert!(
        line.ends_with("of its budget_hours: 12 (one worker)"),
        "{line}"
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let dir = tmp("budget-hours");
    let spec = dir.join("short.yaml");
    let text = std::fs::read_to_string("sweeps/gpu-overnight.yaml").unwrap();
    std::fs::write(&spec, text.replace("budget_hours: 12", "budget_hours: 2")).unwrap();
    let o = scalelab(&["plan", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: the sweep needs ~10.3 h (speed assumed: flops_per_s 1.00e14)"),
        "{err}"
    );
    assert!(err.contains("5.1x its budget_hours: 2"), "{err}");
    std::fs::write(&spec, text.replace("budget_hours: 12", "budget_hours: -1")).unwrap();
    let o = scalelab(&["plan", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("budget_hours: -1 must be a positive number"),
        "{}",
        stderr(&o)
    );
}
