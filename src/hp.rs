//! `scalelab hp`: hyperparameter laws from grids of runs. Owns reading the runs (a results
//! folder's `runs.parquet`, or any table with N, D, LR, batch-size and loss columns, such as
//! Step Law's 1,911 runs) into [`HpRun`]s; locating optima and fitting the laws live in
//! [`crate::fit::hp`].

use std::path::Path;

use crate::bail_user;
use crate::fit::hp::{analyse, render_text, HpRun};
use crate::table::Table;

/// Which columns of a table hold what.
#[derive(Debug, Clone)]
pub struct HpColumns {
    pub n: String,
    pub d: String,
    pub lr: String,
    pub bs: String,
    pub loss: String,
}

impl HpColumns {
    /// The columns of a results folder's `runs.parquet`.
    pub fn results_folder() -> Self {
        HpColumns {
            n: "n_params".into(),
            d: "tokens".into(),
            lr: "lr".into(),
            bs: "batch_size".into(),
            loss: "eval_loss".into(),
        }
    }
}

/// Every row, each with N, D, LR and batch size positive (a row that breaks this is a user
/// error naming it and its column); a diverged run's non-finite or empty loss is kept out of
/// the optimum search.
pub fn read_runs(path: &Path, cols: &HpColumns) -> anyhow::Result<Vec<HpRun>> {
    let t = Table::read(path)?;
    let col = |name: &str, flag: &str| t.numeric(name, flag);
    let (n, d, lr, bs, loss) = (
        col(&cols.n, "--n-col")?,
        col(&cols.d, "--d-col")?,
        col(&cols.lr, "--lr-col")?,
        col(&cols.bs, "--bs-col")?,
        col(&cols.loss, "--loss-col")?,
    );
    let mut runs = Vec::with_capacity(t.rows);
    for i in 0..t.rows {
        // An empty loss cell is a diverged run's NaN as pandas writes it.
        let l = loss[i].unwrap_or(f64::NAN);
        runs.push(HpRun {
            n: t.positive(&n, i, "N", &cols.n)?,
            d: t.positive(&d, i, "D", &cols.d)?,
            lr: t.positive(&lr, i, "the learning rate", &cols.lr)?,
            bs: t.positive(&bs, i, "the batch size", &cols.bs)?,
            loss: l,
        });
    }
    if runs.is_empty() {
        bail_user!(
            "{}: no row has positive N, D, LR and batch size",
            path.display()
        );
    }
    Ok(runs)
}

/// `scalelab hp`: locate the optima, fit the laws with the `hold_out` largest N held out, and
/// print the summary (or JSON). A results folder also gets `hp_laws.json`.
pub fn command(
    path: &Path,
    cols: &HpColumns,
    hold_out: usize,
    json: bool,
) -> anyhow::Result<String> {
    let (table, out) = if path.is_dir() {
        (
            path.join(crate::store::RUNS_FILE),
            Some(path.join("hp_laws.json")),
        )
    } else {
        (path.to_path_buf(), None)
    };
    let runs = read_runs(&table, cols)?;
    let Some(report) = analyse(&table.display().to_string(), &runs, hold_out, 1000, 42) else {
        bail_user!(
            "{}: too few (N, D) groups to fit hyperparameter laws: need at least 4 groups besides the {hold_out} held-out N (use --hold-out 0, or add runs)",
            table.display()
        );
    };
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(p) = out {
        crate::fsio::write_text_atomic(&p, &text)?;
    }
    Ok(if json {
        text + "\n"
    } else {
        render_text(&report)
    })
}
