//! Design power (`scalelab power`): a sweep design simulated under a finished sweep's law and
//! seed scatter, on the committed main-job example.

use crate::common::*;

/// `scalelab power sweeps/quick.yaml --from REFERENCE` plus `extra`.
fn power(reference: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["power", "sweeps/quick.yaml", "--from", reference];
    args.extend_from_slice(extra);
    scalelab(&args)
}

#[test]
fn power_simulates_the_main_job_under_its_own_law_and_scatter() {
    let o = power(
        "results/example-quick",
        &["--draws", "2", "--bootstrap", "20", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fits: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("results/example-quick/fits.json")).unwrap(),
    )
    .unwrap();
    // The truth is the example's law with E pinned to its floor.
    let pinned = &fits["e_floor"]["pinned"];
    for k in ["E", "alpha", "beta"] {
        let (got, want) = (r["truth"][k].as_f64().unwrap(), pinned[k].as_f64().unwrap());
        assert!((got - want).abs() < 1e-3 * want, "{k}: {got} vs {want}");
    }
    assert_eq!(r["truth_e_pinned"], true);
    // The design is the main job's 72 runs; the noise its replicates', budget by budget.
    assert_eq!(r["runs"], 72);
    let budgets: Vec<f64> = r["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[0].as_f64().unwrap())
        .collect();
    assert_eq!(budgets, [3e10, 1e11, 3e11]);
    let pools: Vec<usize> = r["noise"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["deviations"].as_array().unwrap().len())
        .collect();
    assert_eq!(pools, [24, 28, 20]);
    assert_eq!(r["draws"].as_array().unwrap().len(), 2);
    let figure = |name: &str| {
        r["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["figure"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["median"]
            .as_f64()
            .unwrap()
    };
    // The simulated fits land where the main job's design puts them: a free α interval
    // wider than the pinned one, held-out errors of a percent or so, seed means below runs.
    let (free, pinned) = (figure("alpha_ci_free"), figure("alpha_ci_pinned"));
    assert!(1.3 < free && free < 8.0, "free α width {free}");
    assert!(pinned < free, "pinned α width {pinned} vs free {free}");
    let held = figure("held_out");
    assert!(0.3 < held && held < 5.0, "held-out {held}%");
    assert!(figure("held_out_means") < held);
    assert!((figure("a3") - 0.635).abs() < 0.15);
    // Every design budget draws the noise of the same budget of the reference.
    for b in r["budgets"].as_array().unwrap() {
        assert_eq!(b[0], b[1]);
    }
}

#[test]
fn power_needs_a_reference_with_seed_replicates() {
    // The Shakespeare example ran one seed per point: no scatter to draw from.
    let o = power("results/example-shakespeare", &[]);
    assert_user_error(
        &o,
        &[
            "results/example-shakespeare",
            "more than one seed",
            "--from",
        ],
    );
    let o = power("results/example-quick", &["--draws", "0"]);
    assert_user_error(&o, &["--draws", "at least 1"]);
}
