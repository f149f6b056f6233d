//! Reports: an IsoFLOP sweep with `run` ending in fit + report, and reports from a CSV table
//! and from degenerate inputs (plots checked as PNG, SVG and HTML).

use std::path::Path;
use std::process::Command;

use crate::common::*;

const ISO_MICRO: &str = "name: isomicro\ncorpus:\n  builtin: {seed: 3, topics: 2}\n  eval_tokens: 1024\nmodel:\n  context: 32\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\n    - {d_model: 24, n_layer: 1, n_head: 2}\n    - {d_model: 32, n_layer: 1, n_head: 2}\ndata:\n  isoflop: {budgets: [3.0e8, 6.0e8, 1.2e9]}\n  min_steps: 10\ntraining:\n  batch_size: 8\n  lr: 1.0e-2\n  warmup_steps: 5\ntarget_flops: [1.0e10, 1.0e11]\n";

fn check_svgs_and_html(dir: &Path, names: &[&str]) {
    let py = Command::new("python3")
        .arg(repo().join("tests/check_report.py"))
        .arg(dir)
        .arg(names.join(","))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
}

#[test]
fn isoflop_sweep_report_end_to_end() {
    let dir = tmp("isoreport");
    let spec = dir.join("iso.yaml");
    std::fs::write(&spec, ISO_MICRO).unwrap();
    let out = dir.join("out");
    let o = scalelab(&[
        "run",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 9);
    assert!(runs.iter().all(|r| r.budget.is_some()));
    // `run` ended with a fit and a report; every plot drawn (this sweep has budgets and curves).
    let all = [
        "loss_vs_compute",
        "isoflop",
        "optimal_allocation",
        "loss_vs_n",
        "loss_vs_d",
        "residuals",
        "bootstrap",
        "training_curves",
    ];
    check_pngs(&out, &all);
    check_svgs_and_html(&out, &all);
    // Numbers in the report are those of fits.json.
    let fits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fits.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for k in ["E", "A", "B", "alpha", "beta"] {
        let v = scalelab::fit::num(fits[k].as_f64().unwrap());
        assert!(
            md.contains(&format!("| {v} |")),
            "report.md lacks {k} = {v}"
        );
    }
    let a = scalelab::fit::num(fits["compute_optimal"]["a"].as_f64().unwrap());
    assert!(md.contains(&a), "exponent a {a} missing");
    assert_eq!(
        fits["compute_optimal"]["targets"].as_array().unwrap().len(),
        2,
        "targets from the sweep YAML"
    );
    for t in fits["compute_optimal"]["targets"].as_array().unwrap() {
        assert!(md.contains(&format!("{:.3e}", t["n_opt"].as_f64().unwrap())));
    }
    assert!(md.contains("exact loss floor"), "floor next to E");
    assert!(
        fits["holdout"]["held_out_points"].as_u64().unwrap() >= 1,
        "largest budget held out"
    );
    // `report` again with only SVG: same fit numbers (deterministic seed), PNGs untouched.
    let o = scalelab(&[
        "report",
        out.to_str().unwrap(),
        "--format",
        "svg",
        "--bootstrap",
        "200",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fits2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fits.json")).unwrap()).unwrap();
    assert_eq!(fits["E"], fits2["E"]);
}

#[test]
fn report_from_csv_and_degenerate_inputs() {
    let dir = tmp("csvreport");
    let out = dir.join("chin");
    let o = on_chinchilla(
        "report",
        &[
            "--drop-top",
            "5",
            "--bootstrap",
            "100",
            "--grid-stride",
            "10",
            "--target-flops",
            "5.88e23,1e25",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped the training_curves plot"),
        "{}",
        stderr(&o)
    );
    let drawn = [
        "loss_vs_compute",
        "optimal_allocation",
        "loss_vs_n",
        "loss_vs_d",
        "residuals",
        "bootstrap",
    ];
    check_pngs(&out, &drawn);
    check_svgs_and_html(&out, &drawn);
    // No runs folder: a clear error.
    let o = scalelab(&["report", dir.join("nothing").to_str().unwrap()]);
    assert_user_error(&o, &["nothing does not exist"]);
    // --input without --out.
    let o = on_chinchilla("report", &[]);
    assert_user_error(&o, &["--out"]);
    // A sweep with one run: the report is still written, with the fit skipped and why.
    let one = write_spec(&dir, BASE);
    let out1 = dir.join("one");
    let o = scalelab(&[
        "run",
        one.to_str().unwrap(),
        "--out",
        out1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out1.join("report.md")).unwrap();
    assert!(
        md.contains("No scaling law was fitted") && md.contains("at least 6"),
        "{md}"
    );
    assert!(
        stderr(&o).contains("skipped the isoflop plot")
            && stderr(&o).contains("skipped the bootstrap plot")
    );
    check_pngs(&out1, &["loss_vs_compute", "training_curves"]);
}
