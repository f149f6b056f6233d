//! Laws that predict, and how far to trust them: E pinned to a known floor, variable
//! projection (VPNLS) against Approach 3, rolling backtests over the compute budgets, and
//! prediction intervals that cover fresh points at their nominal rate.

use scalelab::fit::laws::{ChinchillaObjective, ChinchillaParams, FitObjective};
use scalelab::fit::optim::Objective;
use scalelab::fit::{self, Columns, Dataset, FitOptions, Point};

use crate::common::*;

fn point(n: f64, d: f64, loss: f64) -> Point {
    Point {
        n,
        d,
        loss,
        budget: None,
        c: None,
        unique: None,
    }
}

/// A k × k grid of (N, D) over the given ranges, L = law · (1 + noise·z).
fn surface(
    p: &ChinchillaParams,
    noise: f64,
    seed: u64,
    k: usize,
    nr: [f64; 2],
    dr: [f64; 2],
) -> Vec<Point> {
    let mut rng = scalelab::hashing::Rng::new(seed);
    let at = |r: [f64; 2], i: usize| r[0] * (r[1] / r[0]).powf(i as f64 / (k - 1) as f64);
    let mut pts = Vec::new();
    for i in 0..k {
        for j in 0..k {
            let (n, d) = (at(nr, i), at(dr, j));
            pts.push(point(n, d, p.predict(n, d) * (1.0 + noise * rng.normal())));
        }
    }
    pts
}

fn dataset(points: Vec<Point>) -> Dataset {
    Dataset {
        source: "synthetic".into(),
        points,
        dropped_top: 0,
        curves: vec![],
    }
}

const TRUTH: ChinchillaParams = ChinchillaParams {
    e: 1.7,
    a: 400.0,
    b: 1800.0,
    alpha: 0.34,
    beta: 0.28,
};

fn quick() -> FitOptions {
    FitOptions {
        bootstrap: 0,
        grid_stride: 3,
        backtest: false,
        ..FitOptions::default()
    }
}

#[test]
fn trust_pinning_e_to_the_true_floor_recovers_the_rest() {
    // Noise 0.5%: pinned at the true E, A, B, α, β return.
    let pts = surface(&TRUTH, 0.005, 11, 8, [1e7, 1e10], [1e9, 1e12]);
    let opts = FitOptions {
        floor: Some(TRUTH.e),
        pin_e_to_floor: true,
        ..quick()
    };
    let r = fit::fit_all(&dataset(pts), &opts).unwrap();
    assert_eq!(r.e, TRUTH.e, "E pinned exactly");
    assert!(
        (r.alpha - 0.34).abs() < 0.02 && (r.beta - 0.28).abs() < 0.02,
        "α {} β {}",
        r.alpha,
        r.beta
    );
    assert!(
        (r.a / 400.0).ln().abs() < 0.25 && (r.b / 1800.0).ln().abs() < 0.25,
        "A {} B {}",
        r.a,
        r.b
    );
    let f = r.e_floor.as_ref().expect("floor comparison");
    assert!(f.law_is_pinned);
    assert_eq!(f.pinned.e, TRUTH.e);
    assert!((f.free_e_rel_diff - (f.free.e - 1.7) / 1.7).abs() < 1e-12);
    assert!(
        f.free_objective <= f.pinned_objective * (1.0 + 1e-9),
        "the free fit fits at least as well"
    );
    // Without a floor, asking for it is a user error.
    let e = fit::fit_all(
        &dataset(surface(&TRUTH, 0.0, 1, 4, [1e7, 1e9], [1e9, 1e11])),
        &FitOptions {
            floor: None,
            ..opts
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("floor.json"), "{e}");
}

#[test]
fn trust_a_free_e_far_from_the_floor_is_warned_about() {
    let pts = surface(&TRUTH, 0.002, 12, 6, [1e7, 1e9], [1e9, 1e11]);
    // A floor 20% below the truth: the free fit lands near 1.7, 25% above it.
    let opts = FitOptions {
        floor: Some(1.36),
        ..quick()
    };
    let r = fit::fit_all(&dataset(pts), &opts).unwrap();
    let f = r.e_floor.as_ref().unwrap();
    assert!(!f.law_is_pinned && f.pinned.e == 1.36);
    assert!(
        (f.free_e_rel_diff - 0.25).abs() < 0.05,
        "{}",
        f.free_e_rel_diff
    );
    assert!(f.warning.as_ref().unwrap().contains("loss floor"));
    assert!(
        r.warnings.iter().any(|w| w.contains("loss floor")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn trust_the_pinned_law_gets_its_own_intervals_and_held_out_check() {
    // A narrow grid where E is poorly identified: the free α interval is wide, the pinned
    // one (E at the true floor) narrow and around the truth; both laws take the same
    // held-out check.
    let pts = surface(&TRUTH, 0.004, 13, 6, [1e7, 1e8], [1e9, 1e10]);
    let opts = FitOptions {
        floor: Some(TRUTH.e),
        bootstrap: 100,
        holdout: fit::Holdout::Fraction(0.25),
        ..quick()
    };
    let r = fit::fit_all(&dataset(pts.clone()), &opts).unwrap();
    let f = r.e_floor.as_ref().unwrap();
    assert!(!f.law_is_pinned);
    let (free, pinned) = (
        r.bootstrap.as_ref().unwrap(),
        f.pinned_bootstrap.as_ref().unwrap(),
    );
    let width = |ci: [f64; 2]| ci[1] / ci[0];
    assert!(
        width(pinned.alpha) < width(free.alpha),
        "pinned α CI {:?} vs free {:?}",
        pinned.alpha,
        free.alpha
    );
    assert!(
        pinned.alpha[0] < 0.34 && 0.34 < pinned.alpha[1],
        "{:?}",
        pinned.alpha
    );
    assert_eq!(pinned.resamples, free.resamples);
    let (hf, hp) = (
        r.holdout.as_ref().unwrap(),
        f.pinned_holdout.as_ref().unwrap(),
    );
    assert_eq!(
        (hp.fitted_points, hp.held_out_points),
        (hf.fitted_points, hf.held_out_points)
    );
    assert_eq!(hp.fit.e, TRUTH.e, "the held-out law is the pinned one");
    assert!(hp.mean_abs_pct_error < 0.01, "{}", hp.mean_abs_pct_error);
    // A hold-out that leaves too few points to fit: each law says why it has no check.
    let too_many = fit::fit_all(
        &dataset(pts.clone()),
        &FitOptions {
            holdout: fit::Holdout::Fraction(0.97),
            bootstrap: 0,
            ..opts.clone()
        },
    )
    .unwrap();
    let f = too_many.e_floor.as_ref().unwrap();
    assert!(too_many.holdout.is_none() && f.pinned_holdout.is_none());
    for note in [&too_many.holdout_note, &f.pinned_holdout_note] {
        assert!(
            note.as_deref().unwrap_or("").contains("need at least 6"),
            "{note:?}"
        );
    }
    // When the reported law is the pinned one, its intervals and check are the top level's.
    let pinned_law = fit::fit_all(
        &dataset(pts),
        &FitOptions {
            pin_e_to_floor: true,
            ..opts
        },
    )
    .unwrap();
    let f = pinned_law.e_floor.as_ref().unwrap();
    assert!(f.law_is_pinned && f.pinned_bootstrap.is_none() && f.pinned_holdout.is_none());
    assert_eq!(pinned_law.holdout.as_ref().unwrap().fit.e, TRUTH.e);
}

fn chinchilla() -> Dataset {
    let cols = Columns {
        n: "Model Size".into(),
        c: Some("Training FLOP".into()),
        loss: "loss".into(),
        ..Default::default()
    };
    Dataset::from_table(
        &shared_data().join("chinchilla_svg_extracted_data.csv"),
        &cols,
        5,
    )
    .unwrap()
}

#[test]
fn trust_vpnls_reaches_approach3s_optimum_on_chinchilla() {
    let opts = FitOptions {
        bootstrap: 0,
        backtest: false,
        objective: FitObjective::Sse,
        ..FitOptions::default()
    };
    let r = fit::fit_all(&chinchilla(), &opts).unwrap();
    let v = r.vpnls.as_ref().expect("--method both");
    // Same objective (Σ (L̂ − L)²), two algorithms: the full 4,500-start L-BFGS and VPNLS.
    assert!(v.max_rel_diff < 1e-5 && !v.differ, "{v:?}");
    assert!((v.fit.sse / v.approach3_sse - 1.0).abs() < 1e-9);
    // The SSE optimum on the 240 points (differs from the Huber refit E 1.8172, α 0.3473).
    let p = v.fit.params;
    for (got, want, what) in [
        (p.e, 1.88281, "E"),
        (p.a, 567.805, "A"),
        (p.b, 7581.85, "B"),
        (p.alpha, 0.357615, "α"),
        (p.beta, 0.427621, "β"),
        (v.fit.sse, 0.0832038, "SSE"),
    ] {
        assert!((got / want - 1.0).abs() < 1e-4, "{what}: {got} vs {want}");
    }
    // With the default Huber objective the law is still the published refit, VPNLS beside it.
    let h = fit::fit_all(
        &chinchilla(),
        &FitOptions {
            objective: FitObjective::Huber,
            grid_stride: 3,
            ..opts
        },
    )
    .unwrap();
    assert!(
        (h.e - 1.81722).abs() < 2e-3 && (h.alpha - 0.34731).abs() < 1e-3,
        "{} {}",
        h.e,
        h.alpha
    );
    assert!(
        h.vpnls.unwrap().differ,
        "different objectives, different laws"
    );
}

#[test]
fn trust_vpnls_recovers_a_law_the_grid_starts_miss() {
    // Steep exponents and huge coefficients (ln A = 41.4, ln B = 46.1), far outside the
    // standard grid (a, b ≤ 25, α, β ≤ 2).
    let truth = ChinchillaParams {
        e: 2.0,
        a: 1e18,
        b: 1e20,
        alpha: 2.2,
        beta: 2.0,
    };
    let pts = surface(&truth, 0.001, 21, 7, [1e7, 1e10], [1e9, 1e12]);
    let (ln_n, ln_d, ln_l): (Vec<f64>, Vec<f64>, Vec<f64>) = (
        pts.iter().map(|p| p.n.ln()).collect(),
        pts.iter().map(|p| p.d.ln()).collect(),
        pts.iter().map(|p| p.loss.ln()).collect(),
    );
    let obj = ChinchillaObjective {
        ln_n: &ln_n,
        ln_d: &ln_d,
        ln_l: &ln_l,
        delta: 1e-3,
        fixed_e: None,
        objective: FitObjective::Sse,
    };
    let mut g = [0.0; 5];
    let best_start = fit::laws::chinchilla_grid()
        .into_iter()
        .min_by(|x, y| obj.eval(x, &mut g).total_cmp(&obj.eval(y, &mut g)))
        .unwrap();
    assert!(
        (best_start[0] - 1e18f64.ln()).abs() > 10.0,
        "best grid start {best_start:?}"
    );
    let v = fit::fit_vpnls(&pts, None);
    let p = v.params;
    assert!(
        (p.alpha - 2.2).abs() < 0.02 && (p.beta - 2.0).abs() < 0.02,
        "{p:?}"
    );
    assert!(
        (p.e / 2.0 - 1.0).abs() < 0.01 && (p.a / 1e18).ln().abs() < 0.5,
        "{p:?}"
    );
    // L-BFGS from the best grid start alone does not get there.
    let opts = FitOptions {
        objective: FitObjective::Sse,
        ..quick()
    };
    let one = fit::fit_chinchilla(&pts, &opts, &[best_start]).unwrap();
    assert!(
        one.objective > 1.5 * v.sse,
        "single start {:?} objective {} vs {}",
        one.params,
        one.objective,
        v.sse
    );
}

/// Points on IsoFLOP budgets 1e18 … 1e22 (a decade apart), 9 sizes each around N*(C).
fn isoflop_ladder(p: &ChinchillaParams, noise: f64, seed: u64) -> Vec<Point> {
    let mut rng = scalelab::hashing::Rng::new(seed);
    let mut pts = Vec::new();
    for k in 0..5 {
        let c = 1e18 * 10f64.powi(k);
        let (n_star, _) = p.optimal(c);
        for j in -4..=4 {
            let n = n_star * 2f64.powf(j as f64 * 0.5);
            let d = c / (6.0 * n);
            let mut q = point(n, d, p.predict(n, d) * (1.0 + noise * rng.normal()));
            q.budget = Some(c);
            pts.push(q);
        }
    }
    pts
}

#[test]
fn trust_backtests_of_a_known_law_have_small_errors() {
    let pts = isoflop_ladder(&TRUTH, 0.002, 31);
    let opts = FitOptions {
        backtest: true,
        bootstrap: 40,
        grid_stride: 9,
        ..quick()
    };
    let r = fit::fit_all(&dataset(pts), &opts).unwrap();
    let b = r.backtest.as_ref().expect("5 budgets: backtests");
    assert_eq!(b.budgets, 5);
    // Folds fitted on 2, 3, 4 budgets predict 3 + 2 + 1 later budgets, for each method.
    assert_eq!(b.predictions.len(), 12);
    let labels: Vec<&str> = b.table.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["10×", "100×", "1000×", "10×", "100×", "1000×"]);
    for row in &b.table {
        eprintln!("{row:?}");
        assert!(
            row.best_max_abs_rel_err < 0.015 && row.run_mean_abs_rel_err < 0.015,
            "{row:?}"
        );
        assert!(row.coverage.is_some());
    }
    let (covered, total) = fit::backtest::coverage(b, fit::Method::A3).unwrap();
    assert_eq!(total, 6 * 9);
    eprintln!("backtest coverage {covered} of {total}");
    // One decade out, the 95% intervals hold most runs.
    assert!(b.table[0].coverage.unwrap() >= 0.7, "{:?}", b.table[0]);
}

#[test]
fn trust_backtests_run_on_chinchilla() {
    let opts = FitOptions {
        bootstrap: 20,
        grid_stride: 9,
        backtest: true,
        ..FitOptions::default()
    };
    let r = fit::fit_all(&chinchilla(), &opts).unwrap();
    let b = r.backtest.as_ref().expect("backtests");
    assert!(!b.table.is_empty() && b.predictions.len() >= 4, "{b:?}");
    assert!(b
        .table
        .iter()
        .all(|row| row.best_mean_abs_rel_err.is_finite() && row.coverage.is_some()));
    // Fitted on the smaller budgets, the Huber law predicts the larger ones within 5%.
    assert!(
        b.predictions
            .iter()
            .filter(|p| p.method == fit::Method::A3)
            .all(|p| p.best_abs_rel_err < 0.05),
        "{:?}",
        b.predictions
    );
}

#[test]
fn trust_prediction_intervals_cover_fresh_points() {
    // Multiplicative noise of 1%; 225 fitted points; 2,000 fresh points drawn anywhere in
    // the fitted range with the same noise (fixed seeds: deterministic).
    for seed in [41, 42, 43] {
        covers_fresh_points(seed);
    }
}

fn covers_fresh_points(seed: u64) {
    let sigma = 0.01;
    let pts = surface(&TRUTH, sigma, seed, 15, [1e7, 1e10], [1e9, 1e12]);
    let opts = FitOptions {
        bootstrap: 200,
        grid_stride: 9,
        seed,
        ..quick()
    };
    let r = fit::fit_all(&dataset(pts), &opts).unwrap();
    let pm = r.prediction.as_ref().unwrap();
    assert!(
        (pm.residual_sd / sigma - 1.0).abs() < 0.2,
        "residual sd {}",
        pm.residual_sd
    );
    let mut rng = scalelab::hashing::Rng::new(4242 + seed);
    let fresh = 2000;
    let mut covered = 0;
    for _ in 0..fresh {
        let n = 1e7 * 1e3f64.powf(rng.next_f64());
        let d = 1e9 * 1e3f64.powf(rng.next_f64());
        let l = TRUTH.predict(n, d) * (1.0 + sigma * rng.normal());
        let [lo, hi] = r.prediction_interval(n, d).unwrap();
        covered += (lo <= l && l <= hi) as usize;
    }
    let rate = covered as f64 / fresh as f64;
    eprintln!(
        "coverage {rate} residual sd {} inflation {}",
        pm.residual_sd, pm.inflation
    );
    assert!((0.93..=0.97).contains(&rate), "nominal 95% covers {rate}");
}

#[test]
fn trust_held_out_replicates_separate_run_scatter_from_law_error() {
    // Four seeds per IsoFLOP point, 1% noise: the known law fitted on the first four budgets
    // predicts the fifth's runs no better than their own scatter (E|z|·1% ≈ 0.80%), and
    // their seed means far better; the reported scatter matches the noise put in.
    let mut pts = Vec::new();
    for seed in 0..4 {
        pts.extend(isoflop_ladder(&TRUTH, 0.01, 100 + seed));
    }
    let opts = FitOptions {
        holdout: fit::Holdout::LargestBudget,
        ..quick()
    };
    let r = fit::fit_all(&dataset(pts.clone()), &opts).unwrap();
    let h = r.holdout.as_ref().unwrap();
    let rep = h.replicates.as_ref().expect("replicated held-out points");
    assert_eq!((rep.points, rep.runs, h.held_out_points), (9, 36, 36));
    let expected = 0.01 * (2.0 / std::f64::consts::PI).sqrt();
    assert!(
        (rep.run_scatter_pct - expected).abs() < 0.3 * expected,
        "scatter {} vs {expected}",
        rep.run_scatter_pct
    );
    assert!(h.mean_abs_pct_error > 0.7 * rep.run_scatter_pct);
    assert!(
        rep.mean_abs_pct_error_of_means < 0.7 * h.mean_abs_pct_error,
        "means {} vs runs {}",
        rep.mean_abs_pct_error_of_means,
        h.mean_abs_pct_error
    );
    // One run per point: nothing to separate.
    let single = fit::fit_all(&dataset(isoflop_ladder(&TRUTH, 0.01, 100)), &opts).unwrap();
    assert!(single.holdout.unwrap().replicates.is_none());
}
