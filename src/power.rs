//! `scalelab power`: feeds a sweep spec's planned runs, and a finished sweep's law and seed
//! scatter, to the design-power simulation ([`crate::fit::power`]). Owns only the reading:
//! the design's (N, D, budget) of every planned run and seed, the reference folder's points,
//! floor and fitted law. Trains nothing.

use std::path::Path;

use crate::bail_user;
use crate::fit::power::{render_text, simulate, truth, PowerOptions};
use crate::fit::replicates::deviations_by_budget;
use crate::fit::{FitOptions, Holdout, Point};
use crate::results::ResultsFolder;
use crate::spec::SpecSource;

/// What `scalelab power` simulates and how.
pub struct PowerArgs<'a> {
    pub spec: SpecSource,
    pub reference: &'a Path,
    pub draws: usize,
    pub bootstrap: usize,
    pub seed: u64,
}

/// Simulate the spec's design under the reference folder's law and noise; the report as
/// text, or as JSON with `json`.
pub fn command(a: PowerArgs, json: bool) -> anyhow::Result<String> {
    let folder = ResultsFolder::load(a.reference)?;
    let data = folder.dataset(0)?;
    let noise = deviations_by_budget(&data.points);
    if noise.is_empty() {
        bail_user!(
            "{} has no point trained with more than one seed: the simulation draws its noise from replicates; pass with --from a folder of a sweep with `seeds: [0, 1, 2, 3]` (e.g. the main job's, results/example-quick)",
            a.reference.display()
        );
    }
    let floor = folder.floor.map(|f| f.nats_per_token);
    let truth = truth(&data.points, floor)?;
    let label = a.spec.label.clone();
    let design = design_points(a.spec, &folder)?;
    if design.len() < 7 {
        bail_user!(
            "{label} plans {} run(s): a simulated fit needs at least 7 (five parameters, and a budget to hold out); add sizes, budgets or seeds",
            design.len()
        );
    }
    let opts = PowerOptions {
        draws: a.draws,
        seed: a.seed,
        fit: FitOptions {
            bootstrap: a.bootstrap,
            seed: a.seed,
            holdout: Holdout::LargestBudget,
            floor,
            backtest: false,
            ..FitOptions::default()
        },
    };
    eprintln!(
        "scalelab: power: {} draws of {} runs, each fitted with {} bootstrap resamples",
        a.draws,
        design.len(),
        a.bootstrap
    );
    let report = simulate(&design, &truth, &noise, &opts)?;
    Ok(if json {
        serde_json::to_string(&report)? + "\n"
    } else {
        render_text(&report, &label, &a.reference.display().to_string())
    })
}

/// Every planned run's (N, D, budget), one per run and seed, N as the reference fits it.
fn design_points(spec: SpecSource, reference: &ResultsFolder) -> anyhow::Result<Vec<Point>> {
    let p = crate::sweep::prepare(spec, None, None)?;
    let corpus = |s: &crate::spec::SweepSpec| serde_json::to_string(&s.corpus).ok();
    if reference.spec.as_ref().and_then(corpus) != corpus(&p.spec) {
        eprintln!(
            "scalelab: power: warning: {} trains on another corpus than {} (its `corpus:` differs): the simulation assumes that corpus follows {}'s law and scatter",
            p.source.label,
            reference.dir.display(),
            reference.dir.display()
        );
    }
    let n = reference.fit_choice().n;
    let mut seen = std::collections::HashSet::new();
    Ok(p.plan
        .runs
        .iter()
        // An LR or batch grid trains a point several times; the fit uses one run of each.
        .filter(|r| seen.insert((r.point_id.clone(), r.data.seed)))
        .map(|r| Point {
            n: n.pick(r.n_params, r.n_params_total) as f64,
            d: r.tokens as f64,
            loss: 0.0,
            budget: r.budget,
            c: None,
            unique: None,
        })
        .collect())
}
