//! Fits on synthetic data drawn from known laws: Chinchilla, Kaplan (single and joint forms),
//! IsoFLOP Approach 2, and holdout rules.

use scalelab::fit::{self, Dataset, FitOptions, Holdout, Point};

fn synthetic(truth: [f64; 5], noise: f64, seed: u64) -> Vec<Point> {
    let [e, a, b, al, be] = truth;
    let mut rng = scalelab::hashing::Rng::new(seed);
    let mut pts = Vec::new();
    for i in 0..8 {
        let n = 1e7 * 10f64.powf(i as f64 * 0.4);
        for j in 0..8 {
            let d = 1e9 * 10f64.powf(j as f64 * 0.35);
            let l = (e + a / n.powf(al) + b / d.powf(be)) * (1.0 + noise * rng.normal());
            pts.push(Point {
                n,
                d,
                loss: l,
                budget: None,
                c: None,
                unique: None,
            });
        }
    }
    pts
}

#[test]
fn recovers_known_chinchilla_law() {
    let truth = [1.7, 400.0, 1800.0, 0.34, 0.28];
    let data = Dataset {
        source: "synthetic".into(),
        points: synthetic(truth, 0.003, 1),
        dropped_top: 0,
        curves: vec![],
    };
    let r = fit::fit_all(
        &data,
        &FitOptions {
            bootstrap: 100,
            grid_stride: 3,
            ..FitOptions::default()
        },
    )
    .unwrap();
    assert!((r.e - 1.7).abs() < 0.05, "E {}", r.e);
    assert!((r.alpha - 0.34).abs() < 0.03, "alpha {}", r.alpha);
    assert!((r.beta - 0.28).abs() < 0.03, "beta {}", r.beta);
    let b = r.bootstrap.unwrap();
    assert!(
        b.alpha[0] < 0.34 + 0.01 && 0.34 - 0.01 < b.alpha[1],
        "alpha CI {:?}",
        b.alpha
    );
    // Fixed E: recovers the exponents with E pinned at the truth.
    let r2 = fit::fit_all(
        &data,
        &FitOptions {
            bootstrap: 0,
            grid_stride: 3,
            fixed_e: Some(1.7),
            ..FitOptions::default()
        },
    )
    .unwrap();
    assert!((r2.e - 1.7).abs() < 1e-12);
    assert!((r2.alpha - 0.34).abs() < 0.02 && (r2.beta - 0.28).abs() < 0.02);
}

#[test]
fn recovers_kaplan_forms() {
    let mut rng = scalelab::hashing::Rng::new(3);
    let xs: Vec<f64> = (0..30).map(|i| 1e6 * 10f64.powf(i as f64 * 0.15)).collect();
    let pure: Vec<f64> = xs
        .iter()
        .map(|x| (8.8e13 / x).powf(0.076) * (1.0 + 0.002 * rng.normal()))
        .collect();
    let l = fit::fit_kaplan_single("N", &xs, &pure, false, 1e-3).unwrap();
    assert!(
        (l.alpha - 0.076).abs() < 0.003 && (l.x_c / 8.8e13).ln().abs() < 0.3,
        "{l:?}"
    );
    let with_e: Vec<f64> = xs
        .iter()
        .map(|x| 1.5 + (1e5 / x).powf(0.3) * (1.0 + 0.001 * rng.normal()))
        .collect();
    let l = fit::fit_kaplan_single("N", &xs, &with_e, true, 1e-3).unwrap();
    assert!(
        (l.alpha - 0.3).abs() < 0.03 && (l.e.unwrap() - 1.5).abs() < 0.03,
        "{l:?}"
    );
}

/// Approach 2's bootstrap interval (each budget's runs resampled within the budget) holds the
/// true exponent on noisy IsoFLOP data from a known law, and widens with the noise.
#[test]
fn approach2_interval_holds_the_true_exponent_and_widens_with_noise() {
    let p = scalelab::fit::laws::ChinchillaParams {
        e: 1.7,
        a: 400.0,
        b: 1800.0,
        alpha: 0.34,
        beta: 0.28,
    };
    let points = |sigma: f64| {
        let mut rng = scalelab::hashing::Rng::new(7);
        let mut pts = Vec::new();
        for k in 0..4 {
            let c = 1e19 * 10f64.powi(k);
            let (n_star, _) = p.optimal(c);
            for j in -3..=3 {
                let n = n_star * 2f64.powf(j as f64 * 0.6);
                for _seed in 0..3 {
                    let d = c / (6.0 * n);
                    pts.push(Point {
                        n,
                        d,
                        loss: p.predict(n, d) * (1.0 + sigma * rng.normal()),
                        budget: Some(c),
                        c: None,
                        unique: None,
                    });
                }
            }
        }
        pts
    };
    let truth = p.exponent_a();
    let quiet = scalelab::fit::isoflop::approach2_interval(&points(0.002), 400, 1).unwrap();
    let noisy = scalelab::fit::isoflop::approach2_interval(&points(0.01), 400, 1).unwrap();
    assert_eq!((quiet.resamples, quiet.usable), (400, 400));
    assert!(
        quiet.ci[0] < truth && truth < quiet.ci[1],
        "{:?} vs a = {truth}",
        quiet.ci
    );
    assert!(quiet.ci[1] - quiet.ci[0] < 0.05, "{:?}", quiet.ci);
    assert!(
        noisy.ci[1] - noisy.ci[0] > 2.0 * (quiet.ci[1] - quiet.ci[0]),
        "{:?} vs {:?}",
        noisy.ci,
        quiet.ci
    );
    assert!(scalelab::fit::isoflop::approach2_interval(&points(0.002), 0, 1).is_none());
}

#[test]
fn approach2_recovers_isoflop_frontier() {
    // Points from a known law on IsoFLOP slices: vertices follow N_opt ∝ C^(β/(α+β)).
    let p = scalelab::fit::laws::ChinchillaParams {
        e: 1.7,
        a: 400.0,
        b: 1800.0,
        alpha: 0.34,
        beta: 0.28,
    };
    let mut pts = Vec::new();
    for k in 0..5 {
        let c = 1e19 * 10f64.powi(k);
        let (n_star, _) = p.optimal(c);
        for j in -4..=4 {
            let n = n_star * 2f64.powf(j as f64 * 0.5);
            pts.push(Point {
                n,
                d: c / (6.0 * n),
                loss: p.predict(n, c / (6.0 * n)),
                budget: Some(c),
                c: None,
                unique: None,
            });
        }
    }
    let a2 = scalelab::fit::isoflop::approach2(&pts);
    assert_eq!(a2.used_budgets, 5);
    let a = a2.a.unwrap();
    assert!(
        (a - p.exponent_a()).abs() < 0.01,
        "a2 {a} vs {}",
        p.exponent_a()
    );
    assert!((a2.b.unwrap() - (1.0 - p.exponent_a())).abs() < 0.01);
    // Holdout of the largest budget predicts it well (noise-free data).
    let data = Dataset {
        source: "iso".into(),
        points: pts,
        dropped_top: 0,
        curves: vec![],
    };
    let r = fit::fit_all(
        &data,
        &FitOptions {
            bootstrap: 0,
            grid_stride: 5,
            holdout: Holdout::LargestBudget,
            targets: vec![1e24],
            ..FitOptions::default()
        },
    )
    .unwrap();
    let h = r.holdout.unwrap();
    assert_eq!(h.held_out_points, 9);
    assert!(
        h.mean_abs_pct_error < 0.005,
        "holdout error {}",
        h.mean_abs_pct_error
    );
    let t = &r.compute_optimal.targets[0];
    assert!((t.n_opt / p.optimal(1e24).0 - 1.0).abs() < 0.05);
}

#[test]
fn kaplan_joint_law_and_random_holdout() {
    // L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D with Kaplan et al.'s constants.
    let (nc, dc, an, ad) = (8.8e13f64, 5.4e13f64, 0.076f64, 0.095f64);
    let mut rng = scalelab::hashing::Rng::new(5);
    let mut pts = Vec::new();
    for i in 0..8 {
        for j in 0..8 {
            let n = 1e6 * 10f64.powf(i as f64 * 0.5);
            let d = 1e8 * 10f64.powf(j as f64 * 0.4);
            let l = ((nc / n).powf(an / ad) + dc / d).powf(ad) * (1.0 + 0.001 * rng.normal());
            pts.push(Point {
                n,
                d,
                loss: l,
                budget: None,
                c: None,
                unique: None,
            });
        }
    }
    let data = Dataset {
        source: "kaplan".into(),
        points: pts,
        dropped_top: 0,
        curves: vec![],
    };
    let r = fit::fit_all(
        &data,
        &FitOptions {
            bootstrap: 0,
            grid_stride: 9,
            holdout: Holdout::Fraction(0.25),
            ..FitOptions::default()
        },
    )
    .unwrap();
    let j = r.kaplan.joint.unwrap();
    assert!(
        (j.alpha_n - an).abs() < 0.005 && (j.alpha_d - ad).abs() < 0.005,
        "{j:?}"
    );
    assert!(
        (j.n_c / nc).ln().abs() < 0.5 && (j.d_c / dc).ln().abs() < 0.5,
        "{j:?}"
    );
    let h = r.holdout.unwrap();
    assert!(h.held_out_points > 5 && h.fitted_points + h.held_out_points == 64);
    assert!(h.rule.contains("random 25%"));
}
