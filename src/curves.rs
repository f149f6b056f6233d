//! `scalelab curves`: loss-curve laws on whole training curves. Owns turning the inputs (a
//! results folder's `curves.parquet`, or a table of logged evals such as the OLMo ladder's)
//! into [`RunCurve`]s; the laws and the checks live in [`crate::fit::curve`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::bail_user;
use crate::fit::curve::{block_means, densify, RunCurve};
use crate::record::Status;
use crate::results::ResultsFolder;
use crate::table::Table;

/// Share of a run's steps averaged into one point of a results folder's train-loss curve.
pub const TRAIN_BLOCK: f64 = 0.02;

/// Which columns of a table hold what.
#[derive(Debug, Clone)]
pub struct TableColumns {
    /// Columns whose values together name a run (e.g. `size,chinchilla_multiple,rerun`).
    pub run: Vec<String>,
    /// Runs of one group share a law in the longest-run check (e.g. `size`).
    pub group: Option<String>,
    pub step: String,
    pub lr: String,
    pub loss: String,
}

/// One run per distinct value of the run columns: its (step, lr) samples densified to every
/// step, its (step, loss) evals; rows with an empty step are skipped.
pub fn from_table(path: &Path, cols: &TableColumns) -> anyhow::Result<Vec<RunCurve>> {
    let t = Table::read(path)?;
    let keys: Vec<Vec<Option<String>>> = cols
        .run
        .iter()
        .map(|c| t.text(c, "--run-col"))
        .collect::<anyhow::Result<_>>()?;
    let group = cols
        .group
        .as_ref()
        .map(|g| t.text(g, "--group-col"))
        .transpose()?;
    let step = t.numeric(&cols.step, "--step-col")?;
    let lr = t.numeric(&cols.lr, "--lr-col")?;
    let loss = t.numeric(&cols.loss, "--loss-col")?;
    // run key -> (group, lr samples, evals)
    type Acc = (String, Vec<(f64, f64)>, Vec<(usize, f64)>);
    let mut runs: BTreeMap<String, Acc> = BTreeMap::new();
    for i in 0..t.rows {
        let Some(s) = step[i].filter(|s| *s >= 1.0) else {
            continue;
        };
        let key: Vec<String> = keys
            .iter()
            .map(|k| k[i].clone().unwrap_or_default())
            .collect();
        let g = group
            .as_ref()
            .and_then(|g| g[i].clone())
            .unwrap_or_else(|| "all".into());
        let e = runs
            .entry(key.join("/"))
            .or_insert_with(|| (g, Vec::new(), Vec::new()));
        if let Some(v) = lr[i] {
            e.1.push((s, v));
        }
        if let Some(v) = loss[i].filter(|v| v.is_finite()) {
            e.2.push((s as usize, v));
        }
    }
    if runs.is_empty() {
        bail_user!(
            "{}: no rows with a step >= 1 in --step-col {}; check the column names",
            path.display(),
            cols.step
        );
    }
    Ok(runs
        .into_iter()
        .filter(|(_, (_, l, e))| !l.is_empty() && !e.is_empty())
        .map(|(id, (group, mut lr, mut evals))| {
            lr.sort_by(|a, b| a.0.total_cmp(&b.0));
            evals.sort_by_key(|e| e.0);
            let last = evals.last().map(|e| e.0).unwrap_or(1);
            RunCurve {
                id,
                group,
                lr: densify(&lr, last),
                evals,
            }
        })
        .collect())
}

/// The `ok` runs of a results folder: the LR of every step, and the training loss averaged
/// over blocks of [`TRAIN_BLOCK`] of the run's steps (a run logs its train loss every step
/// but evaluates only a few times; single-epoch training loss is a held-out estimate). Runs
/// of one shape form a group.
pub fn from_folder(folder: &ResultsFolder) -> Vec<RunCurve> {
    let mut rows: BTreeMap<&str, Vec<&crate::record::CurveRow>> = BTreeMap::new();
    for (id, c) in &folder.curves {
        rows.entry(id.as_str()).or_default().push(c);
    }
    folder
        .runs
        .iter()
        .filter(|r| r.status == Status::Ok && r.epochs <= 1.0 + 1e-9)
        .filter_map(|r| {
            let mut c = rows.get(r.run_id.as_str())?.clone();
            c.sort_by_key(|x| x.step);
            let last = c.last()?.step;
            let lr = densify(
                &c.iter().map(|x| (x.step as f64, x.lr)).collect::<Vec<_>>(),
                last,
            );
            let per_step: Vec<(usize, f64)> = c.iter().map(|x| (x.step, x.train_loss)).collect();
            let evals = block_means(&per_step, last, TRAIN_BLOCK);
            Some(RunCurve {
                id: r.run_id.clone(),
                group: format!("d{}-L{}", r.d_model, r.n_layer),
                lr,
                evals,
            })
        })
        .collect()
}

/// Where `scalelab curves` reads from.
pub enum CurvesInput<'a> {
    Folder(&'a Path),
    Table(&'a Path, TableColumns),
}

/// `scalelab curves`: both checks with both laws; the text summary (or JSON). A results
/// folder also gets `curve_laws.json`.
pub fn command(input: CurvesInput, fraction: f64, json: bool) -> anyhow::Result<String> {
    if !(fraction > 0.0 && fraction < 1.0) {
        bail_user!("--fraction must lie strictly between 0 and 1 (e.g. 0.5), got {fraction}");
    }
    let (source, runs, out) = match &input {
        CurvesInput::Folder(dir) => {
            let folder = ResultsFolder::load(dir)?;
            let what = format!(
                "{} (train loss, means over {:.0}% of each run)",
                dir.display(),
                100.0 * TRAIN_BLOCK
            );
            (
                what,
                from_folder(&folder),
                Some(dir.join("curve_laws.json")),
            )
        }
        CurvesInput::Table(path, cols) => {
            (path.display().to_string(), from_table(path, cols)?, None)
        }
    };
    if runs.is_empty() {
        bail_user!("{source}: no single-epoch `ok` run with a curve to fit");
    }
    let report = crate::fit::curve::validate(&source, &runs, fraction);
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = out {
        crate::fsio::write_text_atomic(&path, &text)?;
    }
    Ok(if json {
        text + "\n"
    } else {
        crate::fit::curve::render_text(&report)
    })
}

/// A run's predicted final training loss from its per-step training losses so far
/// (`(step, loss)`): the Multi-Power Law fitted on their [`TRAIN_BLOCK`] block means with the
/// run's whole planned schedule `lr` ([`crate::plan::RunPlan::lr_schedule`]), with
/// `resamples` bootstrap refits for an interval. `status` and the progress display both use it.
pub fn predict_run_final(
    lr: &[f64],
    per_step: &[(usize, f64)],
    resamples: usize,
) -> Option<crate::fit::curve::Prediction> {
    use crate::fit::curve::{predict_final, CurveLaw};
    let evals = block_means(per_step, lr.len(), TRAIN_BLOCK);
    predict_final(CurveLaw::MultiPower, lr, &evals, resamples)
}

/// The progress display's running prediction of a run's final training loss: per-step losses
/// are kept as they arrive; from [`crate::fit::curve::MIN_FRACTION`] of the steps on, every
/// 10% of them, the Multi-Power Law is refitted on their 2% block means with the run's whole
/// planned schedule (no bootstrap: it runs on the training thread).
pub struct FinalPredictor {
    lr: Vec<f64>,
    losses: Vec<(usize, f64)>,
    next_at: usize,
    latest: Option<f64>,
}

impl FinalPredictor {
    pub fn new(run: &crate::plan::RunPlan) -> Self {
        let total = run.data.steps;
        FinalPredictor {
            lr: run.lr_schedule(),
            losses: Vec::with_capacity(total),
            next_at: (crate::fit::curve::MIN_FRACTION * total as f64).ceil() as usize,
            latest: None,
        }
    }

    /// Record step `step`'s training loss; the latest prediction (if any yet).
    pub fn observe(&mut self, step: usize, loss: f64) -> Option<f64> {
        let total = self.lr.len();
        if self.losses.last().is_some_and(|l| step <= l.0) {
            self.losses.clear();
        }
        self.losses.push((step, loss));
        if step >= self.next_at && step < total {
            self.next_at = step + (total / 10).max(1);
            self.latest = predict_run_final(&self.lr, &self.losses, 0)
                .map(|p| p.loss)
                .or(self.latest);
        }
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::curve::{predict, prepare, CurveFit, CurveLaw};
    use crate::model::Shape;
    use crate::plan::RunPlan;

    /// Fed a run's per-step losses drawn from the Multi-Power Law on its own schedule, the
    /// progress display's predictor stays silent before 30% of the steps, then predicts the
    /// final loss; a restart of the step count (a resumed or new branch) starts afresh.
    #[test]
    fn predictor_predicts_the_end_of_a_run_as_it_trains() {
        let run = RunPlan::new(Shape::new(16, 2, 2, None), 256, 16, 4, 2000);
        let lr = run.lr_schedule();
        let truth = CurveFit {
            law: CurveLaw::MultiPower,
            params: vec![2.0, 0.05, 0.5, 300.0, 0.02, 0.6, 0.5],
            objective: 0.0,
            n_evals: 0,
        };
        let p = prepare(&RunCurve {
            id: "r".into(),
            group: "g".into(),
            lr,
            evals: (1..=2000).map(|s| (s, 0.0)).collect(),
        });
        let loss: Vec<f64> = (0..2000).map(|i| predict(&truth, &p, i)).collect();
        let mut pred = FinalPredictor::new(&run);
        for s in 1..=599 {
            assert_eq!(pred.observe(s, loss[s - 1]), None, "step {s}");
        }
        let mut last = None;
        for s in 600..=1500 {
            last = pred.observe(s, loss[s - 1]);
        }
        let got = last.expect("a prediction after 30% of the steps");
        assert!(
            (got / loss[1999] - 1.0).abs() < 0.01,
            "{got} vs {}",
            loss[1999]
        );
        pred.observe(1, loss[0]);
        assert_eq!(pred.losses.len(), 1);
    }
}
