//! Hyperparameter laws on Step Law's 1,911 dense runs (17 (N, D) groups, each a grid of LR x
//! batch size): optima located, laws fitted with the largest N held out, the held-out groups
//! scored at the laws' settings, and the exponents set against Step Law's 1,000 bootstrap fits.

use scalelab::fit::hp::{analyse, Located};
use scalelab::hp::{read_runs, HpColumns};
use scalelab::table::Table;

use crate::common::*;

fn steplaw_cols(loss: &str) -> HpColumns {
    HpColumns {
        n: "N".into(),
        d: "D".into(),
        lr: "lr".into(),
        bs: "bs".into(),
        loss: loss.into(),
    }
}

/// The [2.5%, 97.5%] range of a column of Step Law's bootstrap fits.
fn their_range(col: &str) -> [f64; 2] {
    let t = Table::read(&shared_data().join("steplaw/fitted_lr_bs_bootstrap_params.csv")).unwrap();
    let v: Vec<f64> = t
        .numeric(col, "col")
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    scalelab::fit::ci(v)
}

#[test]
fn steplaw_held_out_groups_land_within_half_a_percent_of_their_best_run() {
    let path = shared_data().join("steplaw/dense_lr_bs_loss.csv");
    let runs = read_runs(&path, &steplaw_cols("smooth loss")).unwrap();
    assert_eq!(runs.len(), 1911);
    let r = analyse("steplaw", &runs, 1, 1000, 42).unwrap();
    assert_eq!(r.optima.len(), 17);
    // With the smoothed final loss (what Step Law fitted) every group's optimum is interior.
    assert!(r.optima.iter().all(|o| o.located == Located::Quadratic));
    assert_eq!(r.held_out.len(), 2);
    // Measured: +0.107% and +0.162% (mean +0.135%); the goal is 0.5% on average.
    let mean = r.mean_rel_excess.unwrap();
    assert!(mean >= 0.0 && mean <= 0.005, "mean excess {mean}");
    // The D exponent of lr* lies inside Step Law's bootstrap range; the N exponent, fitted on
    // N spanning only 2.5x once the largest N is held out, is steeper (measured -0.879 vs
    // their -0.774..-0.655): asserted as measured, so a change shows.
    let [lo, hi] = their_range("lr_coefD");
    let b = r.laws.lr_nd.exponents[1];
    assert!(b >= lo && b <= hi, "lr D exponent {b} outside [{lo}, {hi}]");
    let a = r.laws.lr_nd.exponents[0];
    assert!((a + 0.879).abs() < 0.01, "lr N exponent {a}");
    let bs = r.laws.bs_d.exponents[0];
    assert!((bs - 0.650).abs() < 0.01, "bs D exponent {bs}");
}

#[test]
fn hp_command_reads_a_table_and_names_missing_columns() {
    let path = shared_data().join("steplaw/dense_lr_bs_loss.csv");
    let o = scalelab(&[
        "hp",
        "--input",
        path.to_str().unwrap(),
        "--loss-col",
        "smooth loss",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["optima"].as_array().unwrap().len(), 17);
    assert!(j["laws"]["lr_nd"]["exponents_ci"].as_array().unwrap().len() == 2);
    assert_user_error(
        &scalelab(&["hp", "--input", path.to_str().unwrap(), "--bs-col", "batch"]),
        &["batch", "--bs-col"],
    );
    // Too few groups to fit: a clear error, exit 2.
    assert_user_error(
        &scalelab(&["hp", "--input", path.to_str().unwrap(), "--hold-out", "15"]),
        &["too few", "--hold-out 0"],
    );
}

const GRID_SPEC: &str = "name: grid\ncorpus:\n  builtin: {seed: 4, topics: 2}\n  eval_tokens: 512\nmodel:\n  context: 16\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\n    - {d_model: 24, n_layer: 1, n_head: 2}\ndata:\n  tokens: [6400, 12800]\n  min_steps: 2\ntraining:\n  batch_sizes: [4, 8]\n  lr: 0.01\n  lr_multipliers: [0.33, 1, 3]\n  warmup_steps: 10\n";

/// Our own grid end to end: a sweep over LR × batch size (D exact for every batch, one point
/// per (shape, D) with its best run selected), `scalelab hp` on it (one optimum per (N, D)
/// group), and a spec whose LR and batch come from the fitted laws (`lr_scaling: {law:
/// DIR}`, `batch_scaling: {law: DIR}`) plans exactly lr = c · N^a · D^b and bs = c · D^b.
#[test]
fn hp_laws_batch_grid_sweep_then_a_spec_set_by_its_law() {
    let dir = tmp("hp-grid");
    let spec = dir.join("grid.yaml");
    std::fs::write(&spec, GRID_SPEC).unwrap();
    let out = dir.join("out");
    let o = run_spec(&spec, &out, &["--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 2 * 2 * 2 * 3, "shapes × D × batch × LR");
    for r in &runs {
        assert_eq!(r.steps * r.batch_size * 16, r.tokens, "{r:?}");
        assert!([6400, 12800].contains(&r.tokens));
    }
    let selected = runs.iter().filter(|r| r.selected).count();
    assert_eq!(
        selected, 4,
        "one selected run per (shape, D) over LR × batch"
    );
    let o = scalelab(&["hp", out.to_str().unwrap(), "--hold-out", "0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("hp_laws.json")).unwrap()).unwrap();
    assert_eq!(
        j["optima"].as_array().unwrap().len(),
        4,
        "one optimum per (N, D)"
    );
    let law = &j["laws"]["lr_nd"];
    let (c, a, b) = (
        law["coef"].as_f64().unwrap(),
        law["exponents"][0].as_f64().unwrap(),
        law["exponents"][1].as_f64().unwrap(),
    );
    let bs_law = &j["laws"]["bs_d"];
    let (bc, bb) = (
        bs_law["coef"].as_f64().unwrap(),
        bs_law["exponents"][0].as_f64().unwrap(),
    );
    let text = GRID_SPEC
        .replace(
            "  batch_sizes: [4, 8]\n",
            &format!("  batch_scaling: {{law: {}}}\n", out.display()),
        )
        .replace("  lr_multipliers: [0.33, 1, 3]\n", "")
        .replace(
            "  lr: 0.01\n",
            &format!(
                "  lr_scaling: {{rule: params_tokens, law: {}}}\n",
                out.display()
            ),
        );
    let src = scalelab::spec::SpecSource {
        label: "law.yaml".into(),
        base_dir: dir.clone(),
        text,
    };
    let s = scalelab::spec::SweepSpec::parse(&src).unwrap();
    let plan = scalelab::plan::build(&s, "law.yaml", 256, 1).unwrap();
    assert_eq!(plan.runs.len(), 4);
    for r in &plan.runs {
        let d = r.tokens as f64;
        let want = c * (r.n_params as f64).powf(a) * d.powf(b);
        assert!(
            (r.optim.lr / want - 1.0).abs() < 1e-12,
            "{} vs {want}",
            r.optim.lr
        );
        // The batch from the bs* law at the target D (6400 or 12800 tokens).
        let target: f64 = if d < 9600.0 { 6400.0 } else { 12800.0 };
        let want_bs = ((bc * target.powf(bb)).round() as usize).max(1);
        assert_eq!(r.data.batch_size, want_bs);
    }
}

/// μP end to end: a sweep with `parametrization: mup` trains every shape under μP (loss
/// falls from the uniform ln 256), records its base width in runs.parquet, and labels it;
/// `scalelab coord-check` prints the standard and μP tables, μP's logits flat across 4x width.
#[test]
fn hp_laws_mup_sweep_records_its_parametrization_and_coord_check_runs() {
    let dir = tmp("mup-sweep");
    let spec = dir.join("mup.yaml");
    let text = GRID_SPEC
        .replace("name: grid", "name: mup")
        .replace(
            "  context: 16\n",
            "  context: 16\n  parametrization: mup\n  base_width: 16\n",
        )
        .replace("  batch_sizes: [4, 8]\n", "  batch_size: 4\n")
        .replace("  lr_multipliers: [0.33, 1, 3]\n", "");
    std::fs::write(&spec, text).unwrap();
    let out = dir.join("out");
    let o = run_spec(&spec, &out, &["--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 4);
    for r in &runs {
        assert_eq!(r.mup_base_width, Some(16), "{r:?}");
        assert!(
            r.shape().label().ends_with("-mup(16)"),
            "{}",
            r.shape().label()
        );
        assert!(
            r.eval_loss < 5.55 - 1.0,
            "loss did not fall: {}",
            r.eval_loss
        );
    }
    let o = scalelab(&[
        "coord-check",
        "--widths",
        "16,32,64",
        "--steps",
        "5",
        "--context",
        "16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("standard parametrization") && text.contains("μP"),
        "{text}"
    );
    let mup_table = text.split("μP").nth(1).unwrap();
    let logits = mup_table.lines().find(|l| l.starts_with("logits")).unwrap();
    let ratio: f64 = logits
        .split_whitespace()
        .last()
        .unwrap()
        .trim_end_matches('x')
        .parse()
        .unwrap();
    assert!(
        (0.5..2.0).contains(&ratio),
        "μP logits moved {ratio}x over 4x width: {text}"
    );
}

/// One source of truth for the main job's recipe: the LR and batch laws in sweeps/quick.yaml
/// are the ones `scalelab hp results/hp-quick --hold-out 0` fitted (to 5 significant digits).
#[test]
fn hp_laws_main_job_uses_the_committed_hp_quick_laws() {
    use scalelab::spec::{SpecSource, SweepSpec};
    let text = std::fs::read_to_string(repo().join("results/hp-quick/hp_laws.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let num = |v: &serde_json::Value| v.as_f64().unwrap();
    let (lr, bs) = (&j["laws"]["lr_nd"], &j["laws"]["bs_d"]);
    let src = SpecSource::from_file(&repo().join("sweeps/quick.yaml")).unwrap();
    let spec = SweepSpec::parse(&src).unwrap();
    let t = &spec.training;
    let (l, b) = (
        t.lr_scaling.as_ref().unwrap(),
        t.batch_scaling.as_ref().unwrap(),
    );
    let same = |ours: Option<f64>, fitted: f64, what: &str| {
        let ours = ours.unwrap();
        assert!(
            ((ours - fitted) / fitted).abs() < 1e-4,
            "sweeps/quick.yaml {what} = {ours}, results/hp-quick fitted {fitted}"
        );
    };
    same(l.k, num(&lr["coef"]), "lr_scaling.k");
    same(l.p, num(&lr["exponents"][0]), "lr_scaling.p");
    same(l.q, num(&lr["exponents"][1]), "lr_scaling.q");
    same(b.k, num(&bs["coef"]), "batch_scaling.k");
    same(b.q, num(&bs["exponents"][0]), "batch_scaling.q");
    assert_eq!(j["optima"].as_array().unwrap().len(), 7, "7 (N, D) groups");
}
