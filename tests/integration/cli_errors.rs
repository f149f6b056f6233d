//! Bad input to the CLI: malformed sweep specs and bad `fit` inputs exit with code 2 and a
//! message naming what is expected (plus the `fit --json` happy path on the same table).

use crate::common::*;

#[test]
fn bad_specs_fail_cleanly_with_exit_2() {
    let dir = tmp("bad");
    let check = |text: &str, needles: &[&str]| {
        let p = write_spec(&dir, text);
        let o = scalelab(&[
            "run",
            p.to_str().unwrap(),
            "--out",
            dir.join("out").to_str().unwrap(),
        ]);
        assert_user_error(&o, needles);
        assert!(
            !dir.join("out").join("runs.parquet").exists(),
            "trained despite a bad spec"
        );
    };
    // Unknown key: dotted path, line, nearest valid key.
    check(
        &BASE.replace("batch_size: 4", "batch_size: 4\n  lrr: 0.1"),
        &["bad.yaml", "training.lrr", "line 11", "did you mean `lr`"],
    );
    check(
        &BASE.replace("context: 16", "contxt: 16"),
        &["model.contxt", "did you mean `context`"],
    );
    // d_model not divisible by n_head.
    check(
        &BASE.replace("n_head: 2", "n_head: 3"),
        &["model.shapes[0]", "not divisible by n_head"],
    );
    // Zero / negative sizes.
    check(
        &BASE.replace("n_layer: 1", "n_layer: 0"),
        &["model.shapes[0].n_layer"],
    );
    check(
        &BASE.replace("[4096]", "[-5]"),
        &["data.tokens[0]", "positive"],
    );
    // Missing corpus file.
    check(
        &BASE.replace("name: t\n", "name: t\ncorpus:\n  text: no/such/file.txt\n"),
        &["corpus.text", "no file matches"],
    );
    // Budget too small for any model.
    check(
        &BASE.replace("  tokens: [4096]", "  isoflop: {budgets: [1.0e3]}"),
        &["data.isoflop.budgets", "too small for any model"],
    );
    // Wrong type.
    check(
        &BASE.replace("context: 16", "context: lots"),
        &["bad.yaml", "line 3"],
    );
    // A value of the wrong shape: the key and the shape it needs, not the parser's words.
    check(
        &BASE.replace("[4096]", "4096"),
        &["data.tokens", "needs a list"],
    );
    check("", &["the spec is empty"]);
    // A repeated value would plan its runs once and say nothing.
    check(
        &BASE.replace("[4096]", "[4096, 4096]"),
        &["data.tokens[1]", "repeats data.tokens[0]"],
    );
    check(
        &BASE.replace("name: t\n", "name: t\nseeds: [1, 1]\n"),
        &["seeds[1]", "repeats seeds[0]"],
    );
    check("- a\n- b\n", &["a sweep spec is `key: value` lines"]);
    // Not UTF-8: where.
    let p = dir.join("latin1.yaml");
    std::fs::write(&p, b"name: mi\xffcro\n").unwrap();
    let o = scalelab(&["plan", p.to_str().unwrap()]);
    assert_user_error(&o, &["latin1.yaml", "line 1, column 9", "not UTF-8"]);
    // Missing file altogether.
    let o = scalelab(&["run", "/no/such/sweep.yaml"]);
    assert_user_error(&o, &["/no/such/sweep.yaml"]);
    // CUDA without the feature (or without a driver): a clear error, no panic.
    let p = write_spec(&dir, BASE);
    let o = scalelab(&[
        "run",
        p.to_str().unwrap(),
        "--device",
        "cuda",
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["cuda"]);
}

#[test]
fn fit_cli_json_and_bad_inputs() {
    let csv = shared_data().join("chinchilla_svg_extracted_data.csv");
    let c = csv.to_str().unwrap();
    let o = on_chinchilla(
        "fit",
        &[
            "--drop-top",
            "5",
            "--json",
            "--bootstrap",
            "20",
            "--grid-stride",
            "10",
            "--target-flops",
            "5.88e23",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["E", "A", "B", "alpha", "beta", "objective"] {
        assert!(v[k].is_number(), "missing {k}");
    }
    let t = &v["compute_optimal"]["targets"][0];
    let n = t["n_opt"].as_f64().unwrap();
    assert!(
        (n / 7.3e10 - 1.0).abs() < 0.1,
        "N* at Chinchilla compute {n}"
    );

    let dir = tmp("fitbad");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let run = |file: &str, cols: &[&str]| {
        let mut args = vec!["fit", "--input", file];
        args.extend_from_slice(cols);
        scalelab(&args)
    };
    let std_cols = ["--n-col", "N", "--d-col", "D", "--loss-col", "L"];
    // Misspelled column: names the columns that exist.
    let o = run(
        c,
        &[
            "--n-col",
            "Model Sise",
            "--c-col",
            "Training FLOP",
            "--loss-col",
            "loss",
        ],
    );
    assert_user_error(
        &o,
        &["Model Sise", "Did you mean `Model Size`", "`Training FLOP`"],
    );
    // Too few points.
    let f = write("few.csv", "N,D,L\n1e6,1e8,3.0\n2e6,2e8,2.9\n");
    assert_user_error(&run(&f, &std_cols), &["at least 6"]);
    // Constant losses.
    let rows: String = (1..=8).map(|i| format!("{}e6,{}e8,2.5\n", i, i)).collect();
    let f = write("const.csv", &format!("N,D,L\n{rows}"));
    assert_user_error(&run(&f, &std_cols), &["constant"]);
    // NaN, inf, zero, negative.
    for bad in ["nan", "inf", "0", "-1"] {
        let f = write("bad.csv", &format!("N,D,L\n1e6,1e8,3.0\n2e6,2e8,{bad}\n"));
        assert_user_error(&run(&f, &std_cols), &["row 2", "positive finite"]);
    }
    // Empty file.
    let f = write("empty.csv", "");
    assert_user_error(&run(&f, &std_cols), &["empty"]);
    // Results folder without runs.
    assert_user_error(
        &scalelab(&["fit", dir.to_str().unwrap()]),
        &["runs.parquet"],
    );
}

/// An output path the user chose badly (a file where a folder must be) is a user error that
/// names the path and the fix, before and after the fit.
#[test]
fn unwritable_output_paths_name_the_path_and_the_fix() {
    let dir = tmp("bad-out");
    let afile = dir.join("afile");
    std::fs::write(&afile, "not a folder").unwrap();
    let o = on_chinchilla(
        "report",
        &[
            "--bootstrap",
            "0",
            "--no-backtest",
            "--grid-stride",
            "10",
            "--out",
            afile.to_str().unwrap(),
        ],
    );
    assert_user_error(&o, &["afile", "a file stands where a folder must be"]);
    assert_eq!(std::fs::read_to_string(&afile).unwrap(), "not a folder");
    let o = micro_sweep(&afile.join("sub"), &["--no-report"]);
    assert_user_error(&o, &["cannot create output folder", "afile"]);
}

/// Values a flag or a table cell cannot take are refused with exit 2 and what is valid, not
/// dropped or accepted silently (each was, before a bad-input audit).
#[test]
fn impossible_values_are_refused_not_dropped() {
    let dir = tmp("impossible");
    let hp = dir.join("hp.csv");
    std::fs::write(
        &hp,
        "N,D,lr,bs,loss\n1e5,1e6,0.01,8,2.1\n1e5,1e6,fast,8,2.0\n1e5,1e6,-0.01,8,2.2\n",
    )
    .unwrap();
    let h = hp.to_str().unwrap();
    let hp_args = |file: &str| {
        scalelab(&[
            "hp",
            "--input",
            file,
            "--n-col",
            "N",
            "--d-col",
            "D",
            "--lr-col",
            "lr",
            "--bs-col",
            "bs",
            "--loss-col",
            "loss",
        ])
    };
    assert_user_error(
        &hp_args(h),
        &["hp.csv: row 2", "column `lr`", "not a number"],
    );
    let fit = |extra: &[&str]| {
        let mut a = vec!["--bootstrap", "0", "--no-backtest"];
        a.extend_from_slice(extra);
        on_chinchilla("fit", &a)
    };
    assert_user_error(&fit(&["--fix-e", "100"]), &["not below the lowest loss"]);
    let o = fit(&["--d-col", "Model Size"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let o = scalelab(&["fit", "results/example-quick", "--bootstrap", "-3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not a whole number"),
        "{}",
        stderr(&o)
    );
    // A missing folder, a file given as a folder, a folder given as --input: said so.
    let nope = dir.join("nope");
    let o = scalelab(&["fit", nope.to_str().unwrap()]);
    assert_user_error(&o, &["nope does not exist"]);
    let o = scalelab(&["status", nope.to_str().unwrap()]);
    assert_user_error(&o, &["nope does not exist: run the sweep first"]);
    let o = scalelab(&["status", "sweeps/micro.yaml"]);
    assert_user_error(&o, &["sweeps/micro.yaml is a file", "results folder"]);
    // --max-runs 0 sets a folder up and trains nothing: no report, no error.
    let o = micro_sweep(&nope, &["--max-runs", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no run has finished yet"),
        "{}",
        stderr(&o)
    );
    let o = scalelab(&["fit", h]);
    assert_user_error(&o, &["is a file, not a results folder", "--input"]);
    let o = scalelab(&[
        "fit",
        "--input",
        dir.to_str().unwrap(),
        "--n-col",
        "N",
        "--d-col",
        "D",
        "--loss-col",
        "loss",
    ]);
    assert_user_error(&o, &["is a folder; --input takes a CSV or Parquet file"]);
    for (flag, value) in [("--max-runs", "-1"), ("--workers", "-2"), ("--pack", "-1")] {
        let out = dir.join("never");
        let o = micro_sweep(&out, &[flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(
            stderr(&o).contains(&format!("`{value}` is not")),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists(), "{flag} {value}: nothing is written");
    }
}

/// `plan` on a folder another spec started warns that `run` would refuse it (it used to list
/// every run as pending and say nothing).
#[test]
fn plan_warns_about_a_folder_of_another_spec() {
    let dir = tmp("plan-other-spec");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("sweep.yaml"), "name: other\n").unwrap();
    let spec = write_spec(&dir, BASE);
    let o = scalelab(&[
        "plan",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds results of a different sweep spec")
            && stderr(&o).contains("`run` would refuse this folder"),
        "{}",
        stderr(&o)
    );
    let o = run_spec(&spec, &out, &[]);
    assert_user_error(
        &o,
        &[
            "holds results of a different sweep spec",
            "Nothing was changed",
        ],
    );
}

/// `submit --dry-run` checks what a real submit checks (it printed a script with
/// `--mem=lots` before; only sbatch refused it, at the real submit).
#[test]
fn submit_dry_run_refuses_what_sbatch_would() {
    let dir = tmp("dry-run");
    let out = dir.join("out");
    for (flag, value, says) in [
        ("--mem", "lots", "is not a Slurm memory size"),
        ("--cpus-per-task", "0", "must be at least 1"),
        ("--partition", "gpu; rm -rf /", "is not a Slurm name"),
    ] {
        let o = scalelab(&[
            "submit",
            "sweeps/micro.yaml",
            "--out",
            out.to_str().unwrap(),
            "--dry-run",
            flag,
            value,
        ]);
        assert_user_error(&o, &[flag, says]);
        assert!(!out.exists(), "{flag}: nothing written");
    }
    let o = scalelab(&[
        "submit",
        "sweeps/micro.yaml",
        "--out",
        out.to_str().unwrap(),
        "--dry-run",
        "--mem",
        "16G",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--mem=16G"));
}
