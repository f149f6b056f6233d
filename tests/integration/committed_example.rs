//! The README's figures for the main job and the 10× sweep come from the committed examples'
//! `fits.json`: their design-study rows (E free, and E pinned to the floor) and the held-out
//! points' seed means are rebuilt from it here, so a regenerated example with other numbers
//! fails until the README says what the example shows.

use crate::common::*;

#[test]
fn readme_design_rows_match_the_committed_fits() {
    for example in ["example-quick", "example-cpu-hour"] {
        check_row(example);
    }
}

fn check_row(example: &str) {
    let path = repo().join("results").join(example).join("fits.json");
    let fits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let f = |path: &[&str]| {
        path.iter()
            .fold(&fits, |v, k| &v[*k])
            .as_f64()
            .unwrap_or_else(|| panic!("fits.json has no number at {path:?}"))
    };
    let budgets = fits["approach2"]["budgets"].as_array().unwrap();
    // Usable: a vertex that Approach 2 kept (not excluded as outside the sampled sizes).
    let usable = budgets
        .iter()
        .filter(|b| b["n_opt"].is_number() && b["excluded"].is_null())
        .count();
    assert_eq!(usable as f64, f(&["approach2", "used_budgets"]));
    let ci = |k: &str| interval(&fits["bootstrap"][k], 1);
    let row = format!(
        "| {usable} of {} | {:.3} / {:.3} / {:.3} | {}, {} | {:.2}% | {:.3} ({:+.0}%) |",
        budgets.len(),
        f(&["compute_optimal", "a"]),
        f(&["approach2", "a"]),
        f(&["approach1", "a"]),
        ci("alpha"),
        ci("beta"),
        100.0 * f(&["holdout", "mean_abs_pct_error"]),
        f(&["E"]),
        100.0 * f(&["e_floor", "free_e_rel_diff"]),
    );
    assert!(
        readme.contains(&row),
        "README lacks the row of {example}:\n{row}"
    );
    // The same runs with E pinned to the floor: its intervals and held-out check.
    let (pa, pb) = (
        f(&["e_floor", "pinned", "alpha"]),
        f(&["e_floor", "pinned", "beta"]),
    );
    let pci = |k: &str| interval(&fits["e_floor"]["pinned_bootstrap"][k], 2);
    let row = format!(
        "| {usable} of {} | {:.3} / {:.3} / {:.3} | {}, {} | {:.2}% | pinned |",
        budgets.len(),
        pb / (pa + pb),
        f(&["approach2", "a"]),
        f(&["approach1", "a"]),
        pci("alpha"),
        pci("beta"),
        100.0 * f(&["e_floor", "pinned_holdout", "mean_abs_pct_error"]),
    );
    assert!(
        readme.contains(&row),
        "README lacks the E-pinned row of {example}:\n{row}"
    );
    // The held-out points' seed means, both laws, and the runs' own scatter.
    let free = ["holdout", "replicates"];
    let pinned = ["e_floor", "pinned_holdout", "replicates"];
    let rep = |law: &[&str], k: &str| 100.0 * f(&[law, &[k]].concat());
    let (m, x) = ("mean_abs_pct_error_of_means", "max_abs_pct_error_of_means");
    let scatter = rep(&free, "run_scatter_pct");
    assert_eq!(scatter, rep(&pinned, "run_scatter_pct"));
    let line = format!(
        "seed means {:.2}% (max {:.2}%) free, {:.2}% (max {:.2}%) pinned; the runs' own scatter {scatter:.2}%",
        rep(&free, m),
        rep(&free, x),
        rep(&pinned, m),
        rep(&pinned, x),
    );
    assert!(
        readme.contains(&line),
        "README lacks the held-out seed means of {example}:\n{line}"
    );
}

/// "lo–hi (ratio×)" of a bootstrap interval, the ratio with `digits` decimals.
fn interval(v: &serde_json::Value, digits: usize) -> String {
    let (lo, hi) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
    format!("{lo:.2}–{hi:.2} ({:.digits$}×)", hi / lo)
}
