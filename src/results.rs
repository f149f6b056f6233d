//! The results folder as readers see it: loaded once, then handed to the fitter and the report.
//!
//! Owns reading a finished (or running) sweep's folder for analysis: the runs and their
//! curves (through [`crate::store::load`], per-run files overlaid), the Parquet metadata,
//! the typed `floor.json` ([`Floor`]), the n-gram baselines and the copy of the sweep spec
//! (`sweep.yaml`). Owns too the one rule that turns a run into a fit point ([`run_point`]:
//! which N and which C, as `fit: {n, c}` in the spec chooses), so the fit and the report see
//! the same N and C for every run.

use std::path::{Path, PathBuf};

use crate::bail_user;
use crate::corpus::Floor;
use crate::fit::isoflop::CurvePoint;
use crate::fit::{Dataset, Point};
use crate::model::FamilyKind;
use crate::record::{BaselineRow, CurveRow, RunRecord, Status};
use crate::spec::{CChoice, FitSpec, NChoice, SweepSpec};

/// A sweep's results folder, read once.
#[derive(Debug)]
pub struct ResultsFolder {
    pub dir: PathBuf,
    /// Every finished run (`runs.parquet` overlaid with the per-run files), by run id: the
    /// files hold them in the order they finished, which varies with `--workers`, and the fits
    /// (the bootstrap's resamples above all) must not.
    pub runs: Vec<RunRecord>,
    /// Their loss curves, by run id and step.
    pub curves: Vec<(String, CurveRow)>,
    /// `scalelab.*` key-value metadata of `runs.parquet`.
    pub metadata: Vec<(String, String)>,
    /// The exact loss floor of the eval set (`floor.json`; built-in corpus only).
    pub floor: Option<Floor>,
    /// n-gram baselines (`baselines.parquet`), when the sweep has them.
    pub baselines: Vec<BaselineRow>,
    /// The copy of the sweep spec (`sweep.yaml`), when it is there and parses.
    pub spec: Option<SweepSpec>,
}

/// The fit's view of one run: N and C as `choice` says (`n: total` → all parameters;
/// `c: full` → the fuller PaLM count, else C = 6ND with that N), D, loss, budget and unique
/// tokens. The fit's points and the report's per-run N both come from here.
pub fn run_point(choice: &FitSpec, r: &RunRecord) -> Point {
    Point {
        n: choice.n.pick(r.n_params, r.n_params_total) as f64,
        d: r.tokens as f64,
        loss: r.eval_loss,
        budget: r.budget,
        c: (choice.c == CChoice::Full).then_some(r.flops_full),
        unique: Some(r.unique_tokens as f64),
    }
}

/// A run the fit uses: `ok`, selected (the best of an LR / batch grid), finite positive loss.
pub fn is_fit_run(r: &RunRecord) -> bool {
    r.status == Status::Ok && r.selected && r.eval_loss.is_finite() && r.eval_loss > 0.0
}

/// `floor.json`, typed: `None` when absent, an error naming the file when malformed.
pub fn read_floor(dir: &Path) -> anyhow::Result<Option<Floor>> {
    let path = dir.join(crate::fsio::FLOOR_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    match serde_json::from_str::<Floor>(&text) {
        Ok(f) => Ok(Some(f)),
        Err(e) => bail_user!(
            "{} is malformed ({e}); delete it (the report then omits the loss floor) or rerun the sweep",
            path.display()
        ),
    }
}

impl ResultsFolder {
    /// Read a results folder once: runs and curves, metadata, floor, baselines and spec.
    pub fn load(dir: &Path) -> anyhow::Result<ResultsFolder> {
        let runs_file = crate::store::RUNS_FILE;
        if !dir.exists() {
            bail_user!(
                "{} does not exist: give a sweep's results folder (the --out of `scalelab run`), or a table with --input",
                dir.display()
            );
        }
        if dir.is_file() {
            bail_user!(
                "{} is a file, not a results folder: to fit a CSV or Parquet table, pass it with --input FILE and name its columns (--n-col, --d-col, --loss-col)",
                dir.display()
            );
        }
        if !dir.join(runs_file).exists() {
            bail_user!(
                "{} holds no {runs_file}: run the sweep first (`scalelab run SWEEP.yaml`), or fit a file with --input",
                dir.display()
            );
        }
        let mut loaded = crate::store::load(dir)?;
        loaded.runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        loaded
            .curves
            .sort_by(|a, b| (&a.0, a.1.step).cmp(&(&b.0, b.1.step)));
        let always = crate::record::ALWAYS_WRITTEN;
        if let Some(c) = loaded.merged_filled.iter().find(|c| always.contains(c)) {
            let fix = match loaded.run_files {
                0 => "restore it".to_string(),
                n => format!(
                    "`scalelab collect {}` rebuilds it from the {n} per-run files in runs/",
                    dir.display()
                ),
            };
            bail_user!(
                "{} has no `{c}` column, which every scalelab writes ({}): it was not written by scalelab, or was edited; {fix}, or fit a table of your own with `scalelab fit --input FILE` and its --n-col/--d-col/--loss-col",
                dir.join(runs_file).display(),
                always.join(", ")
            );
        }
        Ok(ResultsFolder {
            dir: dir.to_path_buf(),
            runs: loaded.runs,
            curves: loaded.curves,
            metadata: crate::store::read_metadata(&dir.join(runs_file)).unwrap_or_default(),
            floor: read_floor(dir)?,
            baselines: crate::store::read_baselines(dir).unwrap_or_default(),
            spec: SweepSpec::from_results_dir(dir),
        })
    }

    /// The spec's `fit:` choices (the defaults when the folder has no spec).
    pub fn fit_choice(&self) -> FitSpec {
        self.spec
            .as_ref()
            .map(|s| s.fit.clone())
            .unwrap_or_default()
    }

    /// The best n-gram baseline (lowest eval loss over orders and training sizes), as the
    /// reference the fit's crossover is measured against; `None` without baselines.
    pub fn best_baseline(&self) -> Option<crate::fit::crossover::Reference> {
        let b = self
            .baselines
            .iter()
            .filter(|b| b.eval_loss.is_finite())
            .min_by(|a, b| a.eval_loss.total_cmp(&b.eval_loss))?;
        Some(crate::fit::crossover::Reference {
            loss: b.eval_loss,
            label: format!(
                "the best n-gram baseline (Kneser-Ney {}-gram on {:.3e} tokens)",
                b.order, b.train_tokens as f64
            ),
        })
    }

    /// One metadata value (`scalelab.sweep`, `scalelab.corpus`, ...).
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The model families of the folder's `ok` runs, in [`FamilyKind`] order.
    pub fn families(&self) -> Vec<FamilyKind> {
        let set: std::collections::BTreeSet<FamilyKind> = self
            .runs
            .iter()
            .filter(|r| r.status == Status::Ok)
            .map(|r| r.family)
            .collect();
        set.into_iter().collect()
    }

    /// The family the main fit (and Approach 1, the curves plot) uses when a sweep mixes
    /// families: the Transformer when there is one, else the first; the others are fitted
    /// separately ([`crate::fit::families`]). Mixing families in one law would be meaningless.
    pub fn primary_family(&self) -> FamilyKind {
        let fams = self.families();
        if fams.contains(&FamilyKind::Transformer) {
            FamilyKind::Transformer
        } else {
            fams.first().copied().unwrap_or_default()
        }
    }

    /// The fit points of each family (as [`Self::dataset`] selects them, every family).
    pub fn family_points(&self) -> Vec<(FamilyKind, Vec<Point>)> {
        let choice = self.fit_choice();
        self.families()
            .into_iter()
            .map(|f| {
                let pts = self
                    .runs
                    .iter()
                    .filter(|r| r.family == f && is_fit_run(r))
                    .map(|r| run_point(&choice, r))
                    .collect();
                (f, pts)
            })
            .collect()
    }

    /// The fit's view of one run (see [`run_point`]).
    pub fn point(&self, r: &RunRecord) -> Point {
        run_point(&self.fit_choice(), r)
    }

    /// The fit points: `ok`, selected runs (the best of an LR / batch grid) with a finite
    /// positive loss, N and C as the spec chooses, of the [`Self::primary_family`]; the eval
    /// points of the curves of its `ok` runs for Approach 1; the `drop_top` highest losses
    /// dropped.
    pub fn dataset(&self, drop_top: usize) -> anyhow::Result<Dataset> {
        self.dataset_with(drop_top, false)
    }

    /// [`Self::dataset`], and with `include_pruned` the `pruned` runs of points that have no
    /// `ok` run, each at its predicted final eval loss (`fit --include-pruned`).
    pub fn dataset_with(&self, drop_top: usize, include_pruned: bool) -> anyhow::Result<Dataset> {
        let choice = self.fit_choice();
        let usable = |l: f64| l.is_finite() && l > 0.0;
        let primary = self.primary_family();
        let mut points: Vec<Point> = self
            .runs
            .iter()
            .filter(|r| r.family == primary && is_fit_run(r))
            .map(|r| run_point(&choice, r))
            .collect();
        if include_pruned {
            let has_ok: std::collections::HashSet<&str> = self
                .runs
                .iter()
                .filter(|r| r.status == Status::Ok)
                .map(|r| r.point_id.as_str())
                .collect();
            for r in self
                .runs
                .iter()
                .filter(|r| r.status == Status::Pruned && r.family == primary)
            {
                match r.predicted_eval_loss.filter(|&l| usable(l)) {
                    Some(l) if !has_ok.contains(r.point_id.as_str()) => {
                        let mut r = r.clone();
                        r.eval_loss = l;
                        points.push(run_point(&choice, &r));
                    }
                    _ => {}
                }
            }
        }
        let mut ds = Dataset {
            source: self.source(&choice),
            points,
            dropped_top: 0,
            curves: self.curve_points(&choice),
        };
        ds.drop_top(drop_top)?;
        Ok(ds)
    }

    /// Each `ok` run's N, as `choice` counts it, by run id: the runs (of the primary family)
    /// whose curves the fit and the report use.
    pub fn ok_run_n(&self, choice: &FitSpec) -> std::collections::HashMap<&str, f64> {
        let primary = self.primary_family();
        self.runs
            .iter()
            .filter(|r| r.status == Status::Ok && r.family == primary)
            .map(|r| (r.run_id.as_str(), run_point(choice, r).n))
            .collect()
    }

    /// Eval points of the curves of `ok` runs, at each run's N (and with its D).
    fn curve_points(&self, choice: &FitSpec) -> Vec<CurvePoint> {
        let n_of = self.ok_run_n(choice);
        let d_of: std::collections::HashMap<&str, f64> = self
            .runs
            .iter()
            .map(|r| (r.run_id.as_str(), r.tokens as f64))
            .collect();
        self.curves
            .iter()
            .filter_map(|(id, c)| {
                Some(CurvePoint {
                    n: *n_of.get(id.as_str())?,
                    tokens: c.tokens as f64,
                    loss: c.eval_loss?,
                    run_tokens: *d_of.get(id.as_str())?,
                })
            })
            .collect()
    }

    /// Where the points come from, with the N and C they use (and the family, when the
    /// folder has several).
    fn source(&self, choice: &FitSpec) -> String {
        let family = match self.families().len() {
            0 | 1 => String::new(),
            k => format!("{} runs only, of {k} families; ", self.primary_family()),
        };
        format!(
            "{} ({family}N = {} parameters; C = {})",
            self.dir.display(),
            match choice.n {
                NChoice::Total => "all",
                NChoice::NonEmbedding => "non-embedding",
            },
            match choice.c {
                CChoice::Full => "full count incl. attention and unembedding",
                CChoice::SixNd => "6ND",
            }
        )
    }
}

/// Results folders for tests: runs, their curves and a sweep spec.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::record::Status;

    /// An `ok` run, a point of its own (C = 6ND, full count 7·N_total·D).
    pub fn run(id: &str, n: i64, n_total: i64, d: i64, loss: f64) -> RunRecord {
        use polars::prelude::*;
        let df = DataFrame::new_infer_height(vec![Column::new("run_id".into(), vec![id])]).unwrap();
        let mut r = RunRecord::from_frame(&df).unwrap().rows.pop().unwrap();
        r.status = Status::Ok;
        r.point_id = id.to_string();
        r.selected = true;
        r.n_params = n;
        r.n_params_total = n_total;
        r.tokens = d;
        r.unique_tokens = d;
        r.eval_loss = loss;
        r.flops = 6.0 * n as f64 * d as f64;
        r.flops_full = 7.0 * n_total as f64 * d as f64;
        r
    }

    /// An empty folder of its own under the system temp folder.
    pub fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("scalelab-results-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A folder with two runs (N 1000 and 4000, N_total 1500 and 5000; three eval points)
    /// and the micro sweep's spec plus `fit_yaml` (e.g. `fit: {n: total}`).
    pub fn two_run_folder(name: &str, fit_yaml: &str) -> PathBuf {
        let dir = tmp(name);
        let mut store = crate::store::ResultsStore::open(&dir, Vec::new()).unwrap();
        let curve = |tokens: u64, loss: f64| CurveRow {
            step: 1,
            tokens,
            lr: 1e-3,
            train_loss: loss,
            eval_loss: Some(loss),
            predicted: None,
        };
        let a = run("a", 1000, 1500, 20_000, 3.0);
        store
            .add(a, vec![curve(10_000, 3.5), curve(20_000, 3.0)])
            .unwrap();
        let b = run("b", 4000, 5000, 20_000, 2.5);
        store.add(b, vec![curve(20_000, 2.5)]).unwrap();
        let spec = format!("{}{fit_yaml}\n", include_str!("../sweeps/micro.yaml"));
        std::fs::write(dir.join(crate::fsio::SWEEP_FILE), spec).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{run, tmp, two_run_folder};
    use super::*;

    #[test]
    fn run_point_honours_the_fit_choice() {
        let r = run("a", 1000, 1500, 20_000, 3.0);
        let p = run_point(&FitSpec::default(), &r);
        assert_eq!((p.n, p.c()), (1000.0, 6.0 * 1000.0 * 20_000.0));
        let total = FitSpec {
            n: NChoice::Total,
            c: CChoice::SixNd,
            ..FitSpec::default()
        };
        let p = run_point(&total, &r);
        assert_eq!((p.n, p.c()), (1500.0, 6.0 * 1500.0 * 20_000.0));
        let full = FitSpec {
            n: NChoice::Total,
            c: CChoice::Full,
            ..FitSpec::default()
        };
        assert_eq!(run_point(&full, &r).c(), r.flops_full);
    }

    #[test]
    fn floor_json_is_parsed_typed() {
        let dir = tmp("floor");
        assert!(read_floor(&dir).unwrap().is_none());
        let f = Floor {
            nats_per_token: 1.25,
            bits_per_byte: 1.25 / std::f64::consts::LN_2,
            entropy_rate_bits_per_byte: 1.5,
        };
        let path = dir.join(crate::fsio::FLOOR_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&f).unwrap()).unwrap();
        let back = read_floor(&dir).unwrap().unwrap();
        assert_eq!(
            (
                back.nats_per_token,
                back.bits_per_byte,
                back.entropy_rate_bits_per_byte
            ),
            (
                f.nats_per_token,
                f.bits_per_byte,
                f.entropy_rate_bits_per_byte
            )
        );
        std::fs::write(&path, r#"{"nats_per_token": "x"}"#).unwrap();
        let e = read_floor(&dir).unwrap_err().to_string();
        assert!(e.contains("floor.json") && e.contains("malformed"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The N of the folder's fit points, in their order.
    fn point_ns(folder: &ResultsFolder) -> Vec<f64> {
        folder
            .dataset(0)
            .unwrap()
            .points
            .iter()
            .map(|p| p.n)
            .collect()
    }

    /// Runs finish in any order (two workers, Slurm); the folder reads them by id, curve rows
    /// by id and step, so the fit points (and the bootstrap's resamples of them) do not
    /// depend on which run finished first.
    #[test]
    fn load_orders_runs_by_id_whatever_order_they_finished() {
        let dir = tmp("order");
        let mut store = crate::store::ResultsStore::open(&dir, Vec::new()).unwrap();
        let row = |step: usize, loss: f64| CurveRow {
            step,
            tokens: 1000 * step as u64,
            lr: 1e-3,
            train_loss: loss,
            eval_loss: Some(loss),
            predicted: None,
        };
        for (id, n) in [("z", 3000), ("a", 1000), ("m", 2000)] {
            let rows = vec![row(2, 2.0), row(1, 3.0)];
            store.add(run(id, n, n, 20_000, 3.0), rows).unwrap();
        }
        let folder = ResultsFolder::load(&dir).unwrap();
        let ids: Vec<&str> = folder.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["a", "m", "z"]);
        assert_eq!(point_ns(&folder), [1000.0, 2000.0, 3000.0]);
        let rows: Vec<(&str, usize)> = folder
            .curves
            .iter()
            .map(|(id, c)| (id.as_str(), c.step))
            .collect();
        assert_eq!(
            rows,
            [("a", 1), ("a", 2), ("m", 1), ("m", 2), ("z", 1), ("z", 2)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_reads_the_folder_once_and_honours_fit_total() {
        let dir = two_run_folder("load", "fit: {n: total}");
        let folder = ResultsFolder::load(&dir).unwrap();
        assert_eq!(folder.runs.len(), 2);
        assert_eq!(folder.curves.len(), 3);
        assert_eq!(
            folder.spec.as_ref().expect("sweep.yaml parses").fit.n,
            NChoice::Total
        );
        let ds = folder.dataset(0).unwrap();
        let mut ns: Vec<f64> = ds.points.iter().map(|p| p.n).collect();
        ns.sort_by(f64::total_cmp);
        assert_eq!(ns, vec![1500.0, 5000.0]);
        assert_eq!(ds.curves.len(), 3);
        assert!(ds.curves.iter().all(|c| c.n == 1500.0 || c.n == 5000.0));
        assert!(ds.source.contains("all parameters"));
        // Without a spec: non-embedding N.
        std::fs::remove_file(dir.join(crate::fsio::SWEEP_FILE)).unwrap();
        let folder = ResultsFolder::load(&dir).unwrap();
        assert!(folder.spec.is_none());
        let mut ns = point_ns(&folder);
        ns.sort_by(f64::total_cmp);
        assert_eq!(ns, vec![1000.0, 4000.0]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_folder_without_runs_is_a_user_error() {
        let dir = tmp("empty");
        let e = ResultsFolder::load(&dir).unwrap_err();
        assert!(e.to_string().contains("holds no runs.parquet"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
