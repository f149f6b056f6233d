//! `scalelab curves`: loss-curve laws on whole training curves. Owns turning the inputs (a
//! results folder's `curves.parquet`, or a table of logged evals such as the OLMo ladder's)
//! into [`RunCurve`]s, and the curve laws' uses while a sweep trains: the final-loss
//! predictor, the scoring of its logged history, and the `--prune` policy with its
//! calibration. The laws and the checks live in [`crate::fit::curve`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::bail_user;
use crate::fit::curve::{block_len, block_means, densify, RunCurve};
use crate::record::{CurveRow, Predicted, Status};
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
                schedule: String::new(),
                lr: densify(&lr, last),
                evals,
            }
        })
        .collect())
}

/// The `ok` runs of a results folder: the LR of every step, and the training loss averaged
/// over blocks of [`TRAIN_BLOCK`] of the run's steps (a run logs its train loss every step
/// but evaluates only a few times; single-epoch training loss is a held-out estimate). Runs
/// of one shape form a group; a cooldown branch's curve is its parent's stable phase up to
/// its branch step followed by its own cooldown.
pub fn from_folder(folder: &ResultsFolder) -> Vec<RunCurve> {
    let rows = by_run(&folder.curves);
    folder
        .runs
        .iter()
        .filter(|r| r.status == Status::Ok && r.epochs <= 1.0 + 1e-9)
        .filter_map(|r| {
            let mut c = rows.get(r.run_id.as_str())?.clone();
            // A cooldown branch logs its cooldown only: its stable phase is its parent's.
            if let Some(parent) = rows.get(r.parent.as_str()).filter(|_| !r.parent.is_empty()) {
                c.extend(parent.iter().filter(|x| x.step <= r.branch_step as usize));
            }
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
                schedule: schedule_label(r),
                lr,
                evals,
            })
        })
        .collect()
}

/// A run's schedule as the transfer check names it: kind and length, and for a cooldown
/// branch the step its cooldown leaves the stable run (`wsd T=1000 from 800`).
fn schedule_label(r: &crate::record::RunRecord) -> String {
    if r.parent.is_empty() {
        format!("{} T={}", r.schedule, r.steps)
    } else {
        format!("{} T={} from {}", r.schedule, r.steps, r.branch_step)
    }
}

/// Where `scalelab curves` reads from.
pub enum CurvesInput<'a> {
    /// One results folder or several (runs of one shape across them form one group).
    Folders(&'a [std::path::PathBuf]),
    Table(&'a Path, TableColumns),
}

/// `scalelab curves`: every check with both laws; the text summary (or JSON). A single
/// results folder also gets `curve_laws.json`.
pub fn command(input: CurvesInput, fraction: f64, json: bool) -> anyhow::Result<String> {
    if !(fraction > 0.0 && fraction < 1.0) {
        bail_user!("--fraction must lie strictly between 0 and 1 (e.g. 0.5), got {fraction}");
    }
    let (source, runs, out) = match &input {
        CurvesInput::Folders(dirs) => {
            let mut runs = Vec::new();
            for dir in dirs.iter() {
                runs.extend(from_folder(&ResultsFolder::load(dir)?));
            }
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let what = format!(
                "{} (train loss, means over {:.0}% of each run)",
                names.join(" + "),
                100.0 * TRAIN_BLOCK
            );
            let out = (dirs.len() == 1).then(|| dirs[0].join("curve_laws.json"));
            (what, runs, out)
        }
        CurvesInput::Table(path, cols) => {
            (path.display().to_string(), from_table(path, cols)?, None)
        }
    };
    if runs.is_empty() {
        bail_user!("{source}: no single-epoch `ok` run with a curve to fit");
    }
    let report = crate::fit::curve::validate(&source, &runs, fraction, true);
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

/// Fractions of a run's steps at which the executor predicts its final training loss (the
/// first is [`crate::fit::curve::MIN_FRACTION`]); each prediction is logged on that step's
/// curve row, so a results folder keeps every run's prediction history. Each costs one curve
/// fit (~0.12 s on our runs); three keep the main job's overhead near 3%.
pub const PREDICT_AT: [f64; 3] = [0.3, 0.5, 0.7];

/// Runs shorter than this many steps get no predictions (their 2% blocks are single steps).
pub const MIN_STEPS_TO_PREDICT: usize = 100;

/// Bootstrap refits behind the interval of each prediction where one is asked for (`run
/// --prune`, whose decisions need it). They add 20 warm-started refits to a prediction's one
/// fit (~0.12 s on the main job's runs), so plain runs log the predictions without one.
pub const PREDICT_RESAMPLES: usize = 20;

/// A running run's predictions of its final training loss: per-step losses are kept as they
/// arrive; at each of [`PREDICT_AT`] the Multi-Power Law is refitted on their 2% block means
/// with the run's whole planned schedule, with `resamples` bootstrap refits for the interval
/// (0: none). Deterministic: a resumed run (fed its earlier curve) makes the same predictions
/// at the same steps as an uninterrupted one.
pub struct FinalPredictor {
    lr: Vec<f64>,
    losses: Vec<(usize, f64)>,
    /// Index into [`PREDICT_AT`] of the next prediction.
    next: usize,
    latest: Option<Predicted>,
    resamples: usize,
}

impl FinalPredictor {
    pub fn new(run: &crate::plan::RunPlan, resamples: usize) -> Self {
        FinalPredictor {
            lr: run.lr_schedule(),
            losses: Vec::with_capacity(run.data.steps),
            next: first_prediction(run.data.steps),
            latest: None,
            resamples,
        }
    }

    /// The step at which prediction `k` is made: the end of the first [`TRAIN_BLOCK`] block
    /// at or past its fraction of the steps (the fit sees whole blocks only).
    fn step_of(&self, k: usize) -> usize {
        let total = self.lr.len();
        let block = block_len(total, TRAIN_BLOCK);
        let at = (PREDICT_AT[k] * total as f64).ceil() as usize;
        at.div_ceil(block) * block
    }

    /// Continue from the curve a resumed run logged before: its losses, its latest
    /// prediction, and the predictions it has already made.
    pub fn resumed(&mut self, curve: &[CurveRow]) {
        self.losses = curve.iter().map(|c| (c.step, c.train_loss)).collect();
        self.latest = curve.iter().rev().find_map(|c| c.predicted);
        let last = curve.last().map_or(0, |c| c.step);
        self.next = (first_prediction(self.lr.len())..PREDICT_AT.len())
            .find(|&k| self.step_of(k) > last)
            .unwrap_or(PREDICT_AT.len());
    }

    /// Record step `step`'s training loss; the prediction made at this step, if one is due.
    /// A restart of the step count (a new branch) starts afresh.
    pub fn observe(&mut self, step: usize, loss: f64) -> Option<Predicted> {
        if self.losses.last().is_some_and(|l| step <= l.0) {
            self.losses.clear();
            self.next = first_prediction(self.lr.len());
        }
        self.losses.push((step, loss));
        let due = self.next < PREDICT_AT.len() && step >= self.step_of(self.next);
        if !due || step >= self.lr.len() {
            return None;
        }
        while self.next < PREDICT_AT.len() && self.step_of(self.next) <= step {
            self.next += 1;
        }
        let p = predict_run_final(&self.lr, &self.losses, self.resamples).map(|p| Predicted {
            loss: p.loss,
            lo: p.ci.map(|c| c[0]),
            hi: p.ci.map(|c| c[1]),
        })?;
        self.latest = Some(p);
        Some(p)
    }

    /// The latest prediction (for the progress display).
    pub fn latest(&self) -> Option<Predicted> {
        self.latest
    }

    /// The [`PREDICT_AT`] index of the latest prediction made.
    pub fn latest_index(&self) -> usize {
        self.next.saturating_sub(1)
    }
}

/// The first prediction a run of `steps` steps makes: none (past the end of [`PREDICT_AT`])
/// below [`MIN_STEPS_TO_PREDICT`].
fn first_prediction(steps: usize) -> usize {
    if steps < MIN_STEPS_TO_PREDICT {
        PREDICT_AT.len()
    } else {
        0
    }
}

/// Every curve row of `rows` by run id, each run's rows in step order.
pub fn by_run(rows: &[(String, CurveRow)]) -> BTreeMap<&str, Vec<CurveRow>> {
    let mut out: BTreeMap<&str, Vec<CurveRow>> = BTreeMap::new();
    for (id, c) in rows {
        out.entry(id.as_str()).or_default().push(*c);
    }
    for c in out.values_mut() {
        c.sort_by_key(|x| x.step);
    }
    out
}

/// A finished run's final training loss as the predictions define it: the mean over the last
/// [`TRAIN_BLOCK`] of its steps (`None` for an empty curve).
pub fn final_train_mean(curve: &[CurveRow]) -> Option<f64> {
    let last = curve.last()?.step;
    let per_step: Vec<(usize, f64)> = curve.iter().map(|c| (c.step, c.train_loss)).collect();
    block_means(&per_step, last, TRAIN_BLOCK)
        .last()
        .map(|b| b.1)
}

/// A pruned run's final eval loss as predicted when it stopped: its last prediction of the
/// final training loss plus the gap between its eval loss at the stop and its training loss
/// over the last [`TRAIN_BLOCK`] of `steps` before it.
pub fn pruned_eval_estimate(curve: &[CurveRow], steps: usize) -> Option<f64> {
    let predicted = curve.iter().rev().find_map(|c| c.predicted)?.loss;
    let eval = curve.last()?.eval_loss?;
    let block = block_len(steps, TRAIN_BLOCK).min(curve.len());
    let tail = &curve[curve.len() - block..];
    let train = tail.iter().map(|c| c.train_loss).sum::<f64>() / block as f64;
    Some(predicted + eval - train)
}

/// How well the predictions logged during training came true, at one of [`PREDICT_AT`]:
/// over the `ok` runs that logged one there, the relative error against the run's final
/// training loss ([`final_train_mean`]) and how often the 95% interval held it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictionAccuracy {
    pub fraction: f64,
    pub runs: usize,
    pub mean_abs_rel_err: f64,
    pub max_abs_rel_err: f64,
    /// Share of the predictions with an interval whose interval held the final loss.
    pub coverage: Option<f64>,
}

/// [`PredictionAccuracy`] at each of [`PREDICT_AT`] that some `ok` run of `folder` logged.
pub fn prediction_accuracy(folder: &ResultsFolder) -> Vec<PredictionAccuracy> {
    let curves = by_run(&folder.curves);
    // (fraction index) -> (relative errors, interval hits, intervals)
    let mut acc: Vec<(Vec<f64>, usize, usize)> = vec![(Vec::new(), 0, 0); PREDICT_AT.len()];
    for r in folder.runs.iter().filter(|r| r.status == Status::Ok) {
        let Some(c) = curves.get(r.run_id.as_str()) else {
            continue;
        };
        for (k, p, err) in prediction_errors(c, r.steps.max(1) as usize) {
            acc[k].0.push(err);
            if let (Some(lo), Some(hi)) = (p.lo, p.hi) {
                let truth = p.loss / (1.0 + err);
                acc[k].2 += 1;
                acc[k].1 += usize::from(lo <= truth && truth <= hi);
            }
        }
    }
    acc.into_iter()
        .zip(PREDICT_AT)
        .filter(|((errs, _, _), _)| !errs.is_empty())
        .map(|((errs, hits, with_ci), fraction)| PredictionAccuracy {
            fraction,
            runs: errs.len(),
            mean_abs_rel_err: errs.iter().map(|e| e.abs()).sum::<f64>() / errs.len() as f64,
            max_abs_rel_err: errs.iter().fold(0.0, |m, e| m.max(e.abs())),
            coverage: (with_ci > 0).then(|| hits as f64 / with_ci as f64),
        })
        .collect()
}

/// The predictions logged on a finished run's curve (sorted by step; `steps` planned), each
/// with its index into [`PREDICT_AT`] and its relative error against the run's final training
/// loss ([`final_train_mean`]): positive when it predicted too high.
pub fn prediction_errors(curve: &[CurveRow], steps: usize) -> Vec<(usize, Predicted, f64)> {
    let Some(truth) = final_train_mean(curve) else {
        return Vec::new();
    };
    curve
        .iter()
        .filter_map(|row| {
            let p = row.predicted?;
            let at = row.step as f64 / steps as f64;
            let k = (0..PREDICT_AT.len())
                .min_by(|&a, &b| {
                    (PREDICT_AT[a] - at)
                        .abs()
                        .total_cmp(&(PREDICT_AT[b] - at).abs())
                })
                .unwrap_or(0);
            Some((k, p, p.loss / truth - 1.0))
        })
        .collect()
}

/// Finished runs whose prediction errors must be known at a fraction before `--prune` acts
/// on a prediction made there.
pub const MIN_CALIBRATION_RUNS: usize = 2;

/// How far the sweep's own predictions have over-predicted: per [`PREDICT_AT`] fraction, the
/// finished runs' relative errors seen so far ([`prediction_errors`]).
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    errors: Vec<Vec<f64>>,
}

impl Calibration {
    /// Add a finished run's prediction errors.
    pub fn record(&mut self, curve: &[CurveRow], steps: usize) {
        self.errors.resize(PREDICT_AT.len(), Vec::new());
        for (k, _, err) in prediction_errors(curve, steps) {
            self.errors[k].push(err);
        }
    }

    /// The largest over-prediction seen at fraction `k` (0 when every one was low), once
    /// [`MIN_CALIBRATION_RUNS`] runs have one there.
    pub fn worst_over(&self, k: usize) -> Option<f64> {
        let e = self.errors.get(k)?;
        (e.len() >= MIN_CALIBRATION_RUNS).then(|| e.iter().fold(0.0f64, |m, &x| m.max(x)))
    }
}

/// `run --prune`: stop a run once its predicted final training loss is confidently worse than
/// the best finished run of its IsoFLOP budget by more than `margin` (relative). Confidently:
/// the lower of (a) its 95% bootstrap interval's lower end and (b) the prediction corrected by
/// the worst over-prediction the sweep's finished runs made at the same fraction of their
/// steps ([`Calibration`]) lies above the best. No calibration yet, no pruning: on the built-in
/// corpus the law over-predicts mid-run losses by up to 25% (phase-like learning), far beyond
/// what the bootstrap of one curve's residuals sees.
#[derive(Debug, Clone, Copy)]
pub struct PrunePolicy {
    pub margin: f64,
}

impl PrunePolicy {
    /// Whether a run with prediction `p`, made at [`PREDICT_AT`] index `k`, is pruned against
    /// its budget's best final training loss `best` ([`final_train_mean`]).
    pub fn prunes(&self, p: &Predicted, k: usize, best: f64, cal: &Calibration) -> bool {
        let (Some(lo), Some(over)) = (p.lo, cal.worst_over(k)) else {
            return false;
        };
        lo.min(p.loss / (1.0 + over)) > best * (1.0 + self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::curve::{predict, prepare, CurveFit, CurveLaw};
    use crate::model::Shape;
    use crate::plan::RunPlan;

    /// Per-step losses of a run of `steps` steps drawn from the Multi-Power Law (level `l0`)
    /// on its own schedule, times `1 + noise·u` with u uniform on [-1, 1].
    fn synthetic_run(steps: usize, l0: f64, noise: f64, seed: u64) -> (RunPlan, Vec<f64>) {
        let run = RunPlan::new(Shape::new(16, 2, 2, None), 256, 16, 4, steps);
        let truth = CurveFit {
            law: CurveLaw::MultiPower,
            params: vec![l0, 0.05, 0.5, 300.0, 0.02, 0.6, 0.5],
            objective: 0.0,
            n_evals: 0,
        };
        let p = prepare(&RunCurve {
            id: "r".into(),
            group: "g".into(),
            schedule: String::new(),
            lr: run.lr_schedule(),
            evals: (1..=steps).map(|s| (s, 0.0)).collect(),
        });
        let mut rng = crate::hashing::Rng::new(seed);
        let loss = (0..steps)
            .map(|i| predict(&truth, &p, i) * (1.0 + noise * (2.0 * rng.next_f64() - 1.0)))
            .collect();
        (run, loss)
    }

    fn row(step: usize, loss: f64, predicted: Option<Predicted>) -> CurveRow {
        CurveRow {
            step,
            tokens: 0,
            lr: 0.0,
            train_loss: loss,
            eval_loss: None,
            predicted,
        }
    }

    /// The predictor stays silent before 30% of the steps, then predicts the final loss at
    /// 30/50/70% (within 1% on a noise-free law); a run resumed from its logged curve makes
    /// the same later predictions as the uninterrupted run; a restart of the step count
    /// starts afresh.
    #[test]
    fn predictor_predicts_the_end_of_a_run_and_continues_after_resume() {
        let (run, loss) = synthetic_run(2000, 2.0, 0.0, 1);
        let mut pred = FinalPredictor::new(&run, PREDICT_RESAMPLES);
        let mut curve = Vec::new();
        for s in 1..=2000 {
            let p = pred.observe(s, loss[s - 1]);
            curve.push(row(s, loss[s - 1], p));
        }
        let made: Vec<usize> = curve
            .iter()
            .filter(|c| c.predicted.is_some())
            .map(|c| c.step)
            .collect();
        assert_eq!(made, vec![600, 1000, 1400]);
        for c in curve.iter().filter(|c| c.predicted.is_some()) {
            let p = c.predicted.unwrap();
            // From 30% of the steps the law's level is less certain than from half of them.
            let tol = if c.step == 600 { 0.03 } else { 0.01 };
            assert!(
                (p.loss / loss[1999] - 1.0).abs() < tol,
                "{p:?} vs {}",
                loss[1999]
            );
            let (lo, hi) = (p.lo.unwrap(), p.hi.unwrap());
            assert!(lo <= p.loss + 1e-9 && p.loss <= hi + 1e-9, "{p:?}");
        }
        // Killed after step 1100: the resumed predictor continues the history.
        let mut again = FinalPredictor::new(&run, PREDICT_RESAMPLES);
        again.resumed(&curve[..1100]);
        assert_eq!(again.latest(), curve[999].predicted);
        for s in 1101..=2000 {
            assert_eq!(
                again.observe(s, loss[s - 1]),
                curve[s - 1].predicted,
                "step {s}"
            );
        }
        pred.observe(1, loss[0]);
        assert_eq!(pred.losses.len(), 1);
    }

    /// A synthetic IsoFLOP sweep: three budgets of five runs each, whose final losses spread
    /// from the best by 0–12%, with 1% per-step noise, trained in an order that puts the best
    /// run of each budget in the middle. Pruning (margin 1%, calibrated by the finished runs'
    /// own prediction errors) never stops the run that ends best in its budget, and it does
    /// stop clearly worse ones, saving steps; without calibration it prunes nothing.
    #[test]
    fn pruning_never_prunes_the_best_run_of_a_budget() {
        let policy = PrunePolicy { margin: 0.01 };
        let mut cal = Calibration::default();
        let mut saved = 0;
        for budget in 0..3u64 {
            let offsets = [0.12, 0.06, 0.0, 0.01, 0.09];
            let runs: Vec<(RunPlan, Vec<f64>)> = offsets
                .iter()
                .enumerate()
                .map(|(k, o)| {
                    synthetic_run(600, 1.5 + budget as f64 + o, 0.01, 10 * budget + k as u64)
                })
                .collect();
            let curve = |l: &[f64]| -> Vec<CurveRow> {
                l.iter()
                    .enumerate()
                    .map(|(i, &x)| row(i + 1, x, None))
                    .collect()
            };
            let finals: Vec<f64> = runs
                .iter()
                .map(|(_, l)| final_train_mean(&curve(l)).unwrap())
                .collect();
            let truly_best = (0..finals.len())
                .min_by(|&a, &b| finals[a].total_cmp(&finals[b]))
                .unwrap();
            let mut best = f64::INFINITY;
            for (k, (run, loss)) in runs.iter().enumerate() {
                let mut pred = FinalPredictor::new(run, PREDICT_RESAMPLES);
                let mut logged = curve(loss);
                let mut stopped = None;
                for s in 1..=loss.len() {
                    let p = pred.observe(s, loss[s - 1]);
                    logged[s - 1].predicted = p;
                    if p.is_some_and(|p| policy.prunes(&p, pred.latest_index(), best, &cal)) {
                        stopped = Some(s);
                        break;
                    }
                }
                match stopped {
                    Some(s) => {
                        assert_ne!(
                            k, truly_best,
                            "budget {budget}: the best run was pruned at step {s}"
                        );
                        saved += loss.len() - s;
                    }
                    None => {
                        best = best.min(finals[k]);
                        cal.record(&logged, run.data.steps);
                    }
                }
            }
        }
        assert!(saved > 0, "nothing pruned: the check would pass vacuously");
        let p = Predicted {
            loss: 10.0,
            lo: Some(9.0),
            hi: Some(11.0),
        };
        assert!(!policy.prunes(&p, 0, 1.0, &Calibration::default()));
    }

    /// A cooldown branch's curve is its parent's stable phase up to its branch step, then
    /// its own cooldown: its LR schedule starts at step 1 at the stable LR, not at 0.
    #[test]
    fn a_branch_curve_starts_with_its_parents_stable_phase() {
        use crate::results::testing::{run, tmp};
        let dir = tmp("branch-curve");
        let mut store = crate::store::ResultsStore::open(&dir, Vec::new()).unwrap();
        let rows = |steps: std::ops::RangeInclusive<usize>, lr: f64| -> Vec<CurveRow> {
            steps
                .map(|s| CurveRow {
                    lr,
                    ..row(s, 3.0 - 0.001 * s as f64, None)
                })
                .collect()
        };
        let mut parent = run("p", 1000, 1500, 20_000, f64::NAN);
        parent.status = Status::Stable;
        store.add(parent, rows(1..=150, 1e-2)).unwrap();
        let mut branch = run("b", 1000, 1500, 20_000, 2.8);
        (branch.parent, branch.branch_step, branch.steps) = ("p".into(), 100, 120);
        store.add(branch, rows(101..=120, 1e-3)).unwrap();
        std::fs::write(
            dir.join(crate::fsio::SWEEP_FILE),
            include_str!("../sweeps/micro.yaml"),
        )
        .unwrap();
        let curves = from_folder(&ResultsFolder::load(&dir).unwrap());
        assert_eq!(curves.len(), 1, "the stable parent is not a data point");
        let c = &curves[0];
        assert_eq!(c.lr.len(), 120);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(c.lr[0], 1e-2) && close(c.lr[99], 1e-2) && close(c.lr[100], 1e-3));
        assert_eq!(c.evals.last().unwrap().0, 120);
    }

    /// The predicted eval loss of a pruned run adds its eval − train gap at the stop.
    #[test]
    fn pruned_eval_estimate_adds_the_gap_at_the_stop() {
        let mut curve: Vec<CurveRow> = (1..=100).map(|s| row(s, 2.0, None)).collect();
        curve[59].predicted = Some(Predicted {
            loss: 1.5,
            lo: None,
            hi: None,
        });
        curve[99].eval_loss = Some(2.1);
        let got = pruned_eval_estimate(&curve, 500).unwrap();
        assert!((got - 1.6).abs() < 1e-12, "{got}");
    }
}
