//! E pinned to a known floor: the law fitted with E fixed at the irreducible loss (the
//! built-in corpus's exact `floor.json`), beside the free fit, and how far the free E lands
//! from the floor; when the reported law is the free one, also the pinned law's bootstrap
//! intervals and held-out check, so the two can be compared on the same evidence. Owns that
//! comparison and its warning; pure over points.

use serde::Serialize;

use super::laws::ChinchillaParams;
use super::{
    bootstrap, fit_law, grid, holdout, num, Approach3, Bootstrap, FitOptions, HoldoutReport, Point,
};

/// Free E beyond this relative distance from the floor draws a warning.
pub const WARN_REL: f64 = 0.05;

/// The free and the pinned fit side by side.
#[derive(Debug, Clone, Serialize)]
pub struct FloorComparison {
    /// The known irreducible loss (nats/token).
    pub floor: f64,
    /// E fitted freely, and that law's objective.
    pub free: ChinchillaParams,
    pub free_objective: f64,
    /// E fixed at the floor (4 free parameters), and that law's objective.
    pub pinned: ChinchillaParams,
    pub pinned_objective: f64,
    /// (E_free − floor) / floor.
    pub free_e_rel_diff: f64,
    /// Whether the reported law (top level of `fits.json`) is the pinned one.
    pub law_is_pinned: bool,
    pub warning: Option<String>,
    /// The pinned law's bootstrap (same resamples as the free law's), when the reported law is
    /// the free one and intervals were asked for (when it is the pinned one, the top-level
    /// `bootstrap` is the pinned law's; with E fixed elsewhere, neither law has one here).
    pub pinned_bootstrap: Option<Bootstrap>,
    /// The pinned law's held-out check (same rule as the free law's), when the reported law is
    /// the free one and a hold-out was asked for.
    pub pinned_holdout: Option<HoldoutReport>,
    /// Why the pinned law has no held-out check although one was asked for (its fit failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_holdout_note: Option<String>,
}

/// Fit whichever of the free and pinned laws `law` is not, and compare.
pub fn compare(
    points: &[Point],
    opts: &FitOptions,
    law: &Approach3,
    floor: f64,
) -> anyhow::Result<FloorComparison> {
    let refit = |fixed_e: Option<f64>| -> anyhow::Result<Approach3> {
        if law.fixed_e == fixed_e {
            return Ok(law.clone());
        }
        let o = FitOptions {
            fixed_e,
            ..opts.clone()
        };
        fit_law(points, &o, &grid(opts.grid_stride))
    };
    let free = refit(None)?;
    let pinned = refit(Some(floor))?;
    let rel = (free.params.e - floor) / floor;
    let warning = (rel.abs() > WARN_REL).then(|| {
        format!(
            "the free fit puts E = {} at {:+.1}% of the known loss floor {} (more than {:.0}%): the points do not pin the irreducible loss; prefer the law with E pinned to the floor (`fit: {{e: floor}}` or --e-floor)",
            num(free.params.e),
            100.0 * rel,
            num(floor),
            100.0 * WARN_REL
        )
    });
    let (pinned_bootstrap, pinned_holdout, pinned_holdout_note) = if law.fixed_e.is_some() {
        (None, None, None)
    } else {
        let o = FitOptions {
            fixed_e: Some(floor),
            ..opts.clone()
        };
        let boot = (opts.bootstrap > 0).then(|| bootstrap(points, &pinned, &o));
        let (held, note) = match holdout(points, &o) {
            Ok(h) => (h, None),
            Err(e) => (None, Some(e.to_string())),
        };
        (boot, held, note)
    };
    Ok(FloorComparison {
        floor,
        pinned_bootstrap,
        pinned_holdout,
        pinned_holdout_note,
        free: free.params,
        free_objective: free.objective,
        pinned: pinned.params,
        pinned_objective: pinned.objective,
        free_e_rel_diff: rel,
        law_is_pinned: law.fixed_e == Some(floor),
        warning,
    })
}
