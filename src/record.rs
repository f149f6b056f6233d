//! The run record: one row of `runs.parquet`, one row of a loss curve, one n-gram baseline
//! row, and how a run ended ([`Status`], [`RunOutcome`]).
//!
//! Owns the schema of the results tables. The columns of a run row are listed once, in
//! [`run_record!`]'s invocation below: that list defines the struct, the Parquet writer
//! ([`RunRecord::frame`]) and the reader ([`RunRecord::from_frame`]), so a new column is added
//! in one place. A column missing from an older file is filled with its stated default and
//! named in [`FrameRead::filled`], never "unreadable".
//!
//! Sits below the trainer and the store: it imports only the plan (for the constructor from
//! a trained run), the model's shape, and polars.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::plan::RunPlan;

/// How a run ended. `Stable` marks the stable phase of a cooldown-branch group: trained,
/// stored for resume and curves, not a data point itself. `Pruned`: stopped early by
/// `run --prune` because its predicted final loss was confidently worse than its budget's
/// best (the policy is `curves::PrunePolicy`); not a data point unless a fit asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Diverged,
    Failed,
    Stable,
    Pruned,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Ok,
        Status::Diverged,
        Status::Failed,
        Status::Stable,
        Status::Pruned,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
            Status::Stable => "stable",
            Status::Pruned => "pruned",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Finished for good: not retried by a rerun (failed runs are).
    pub fn is_final(&self) -> bool {
        *self != Status::Failed
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of a loss curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurveRow {
    pub step: usize,
    pub tokens: u64,
    pub lr: f64,
    pub train_loss: f64,
    /// Present at eval steps.
    pub eval_loss: Option<f64>,
    /// Present at the steps where the executor predicted the run's final training loss
    /// (`curves::FinalPredictor`): the run's prediction history.
    #[serde(default)]
    pub predicted: Option<Predicted>,
}

/// A run's final training loss (the mean over its last 2% of steps) as predicted during
/// training, with its 95% interval when one was computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    pub loss: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

/// What a finished training run reports (the trainer's output).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: Status,
    pub steps_done: usize,
    pub final_train_loss: f64,
    pub eval_loss: f64,
    pub tokens_per_s: f64,
    pub wall_s: f64,
    pub curve: Vec<CurveRow>,
    /// The final eval's loss at each position of the window (empty when there was none).
    pub eval_loss_by_position: Vec<f64>,
    pub error: Option<String>,
}

/// One n-gram baseline: an order trained on a number of tokens, scored on the eval windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineRow {
    pub order: usize,
    pub train_tokens: u64,
    /// Mean eval loss on the sweep's eval windows, nats/token.
    pub eval_loss: f64,
    pub eval_bits_per_token: f64,
    pub eval_bits_per_byte: f64,
    /// Distinct n-grams stored (all orders).
    pub n_grams: u64,
    pub seconds: f64,
}

/// A value type that can be a column: how it is written and read back.
pub trait Cell: Sized + Clone {
    fn column(name: &str, values: Vec<Self>) -> Column;
    /// The column's values, or `None` when the frame has no such column.
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>>;
}

fn cast(df: &DataFrame, name: &str, dt: &DataType) -> anyhow::Result<Option<Column>> {
    match df.column(name) {
        Ok(c) => Ok(Some(c.cast(dt)?)),
        Err(_) => Ok(None),
    }
}

impl Cell for String {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(c) = cast(df, name, &DataType::String)? else {
            return Ok(None);
        };
        Ok(Some(
            c.str()?
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect(),
        ))
    }
}

impl Cell for i64 {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(c) = cast(df, name, &DataType::Int64)? else {
            return Ok(None);
        };
        Ok(Some(c.i64()?.iter().map(|v| v.unwrap_or(0)).collect()))
    }
}

impl Cell for Option<i64> {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(c) = cast(df, name, &DataType::Int64)? else {
            return Ok(None);
        };
        Ok(Some(c.i64()?.iter().collect()))
    }
}

impl Cell for Option<f64> {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(c) = cast(df, name, &DataType::Float64)? else {
            return Ok(None);
        };
        Ok(Some(c.f64()?.iter().collect()))
    }
}

/// A float that is never null in the file's meaning: a null reads as NaN.
impl Cell for f64 {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        Ok(<Option<f64>>::read(df, name)?
            .map(|v| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()))
    }
}

impl Cell for bool {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(c) = cast(df, name, &DataType::Boolean)? else {
            return Ok(None);
        };
        Ok(Some(c.bool()?.iter().map(|v| v.unwrap_or(false)).collect()))
    }
}

impl Cell for Status {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(
            name.into(),
            values.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        )
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(v) = String::read(df, name)? else {
            return Ok(None);
        };
        v.iter()
            .map(|s| {
                Status::parse(s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "column {name}: unknown status {s:?} (expected one of ok, diverged, failed, stable, pruned)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    }
}

impl Cell for crate::model::FamilyKind {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(
            name.into(),
            values.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        )
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(v) = String::read(df, name)? else {
            return Ok(None);
        };
        v.iter()
            .map(|s| {
                crate::model::FamilyKind::parse(s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "column {name}: unknown model family {s:?} (expected one of transformer, lstm, mlp)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    }
}

/// A list of floats per row (a Parquet list column; an empty list for a null).
impl Cell for Vec<f64> {
    fn column(name: &str, values: Vec<Self>) -> Column {
        let series: Vec<Series> = values
            .into_iter()
            .map(|v| Series::new(PlSmallStr::EMPTY, v))
            .collect();
        let mut c = Column::new(name.into(), series);
        if c.is_empty() || c.dtype() != &DataType::List(Box::new(DataType::Float64)) {
            c = c
                .cast(&DataType::List(Box::new(DataType::Float64)))
                .expect("an empty or float list column casts to list[f64]");
        }
        c
    }
    fn read(df: &DataFrame, name: &str) -> anyhow::Result<Option<Vec<Self>>> {
        let Some(c) = cast(df, name, &DataType::List(Box::new(DataType::Float64)))? else {
            return Ok(None);
        };
        let mut rows = Vec::with_capacity(c.len());
        for s in c.list()?.amortized_iter() {
            rows.push(match s {
                None => Vec::new(),
                Some(s) => s
                    .as_ref()
                    .f64()?
                    .iter()
                    .map(|x| x.unwrap_or(f64::NAN))
                    .collect(),
            });
        }
        Ok(Some(rows))
    }
}

/// Rows read from a frame, and the columns the frame lacked (filled with their defaults).
#[derive(Debug)]
pub struct FrameRead<T> {
    pub rows: Vec<T>,
    pub filled: Vec<&'static str>,
}

/// Defines the run row once: `field: type = default for files that lack the column`.
macro_rules! run_record {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// One finished (ok / diverged / failed / stable) run: a row of `runs.parquet`.
        #[derive(Debug, Clone, PartialEq)]
        pub struct RunRecord {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl RunRecord {
            /// The column names, in file order.
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The rows as a polars frame (one column per field).
            pub fn frame(rows: &[RunRecord]) -> anyhow::Result<DataFrame> {
                Ok(DataFrame::new_infer_height(vec![$(
                    <$ty as Cell>::column(
                        stringify!($field),
                        rows.iter().map(|r| r.$field.clone()).collect(),
                    ),
                )*])?)
            }

            /// Rows of a frame; a missing column gets its default and is named in `filled`.
            pub fn from_frame(df: &DataFrame) -> anyhow::Result<FrameRead<RunRecord>> {
                let n = df.height();
                let mut filled = Vec::new();
                $(
                    let $field: Vec<$ty> = match <$ty as Cell>::read(df, stringify!($field))? {
                        Some(v) => v,
                        None => {
                            filled.push(stringify!($field));
                            vec![$default; n]
                        }
                    };
                )*
                let mut rows: Vec<RunRecord> = (0..n)
                    .map(|k| RunRecord { $( $field: $field[k].clone(), )* })
                    .collect();
                for r in rows.iter_mut() {
                    r.fill_derived(&filled);
                }
                Ok(FrameRead { rows, filled })
            }
        }
    };
}

run_record! {
    run_id: String = String::new(),
    status: Status = Status::Failed,
    error: String = String::new(),
    d_model: i64 = 0,
    n_layer: i64 = 0,
    n_head: i64 = 0,
    d_ff: i64 = 0,
    context: i64 = 0,
    vocab_size: i64 = 0,
    batch_size: i64 = 0,
    steps: i64 = 0,
    steps_done: i64 = 0,
    /// Training tokens D.
    tokens: i64 = 0,
    /// Non-embedding parameters N.
    n_params: i64 = 0,
    /// All parameters (embeddings included).
    n_params_total: i64 = 0,
    /// C = 6 · n_params · tokens.
    flops: f64 = f64::NAN,
    budget: Option<f64> = None,
    seed: i64 = 0,
    lr: f64 = f64::NAN,
    warmup_steps: i64 = 0,
    schedule: String = String::new(),
    final_train_loss: f64 = f64::NAN,
    /// Mean eval loss, nats/token.
    eval_loss: f64 = f64::NAN,
    /// Eval loss in bits per token.
    eval_bits_per_token: f64 = f64::NAN,
    /// Eval loss in bits per byte of text (equals bits per token for byte-level corpora;
    /// files from before this column: bits per token).
    eval_bits_per_byte: f64 = f64::NAN,
    /// Unique training tokens the run saw (older files: D) ...
    unique_tokens: i64 = 0,
    /// ... and its epochs over them, D / unique (older files: 1).
    epochs: f64 = 1.0,
    tokens_per_s: f64 = f64::NAN,
    /// Model FLOPs utilisation against the measured matmul peak (None when unmeasured).
    mfu: Option<f64> = None,
    wall_s: f64 = f64::NAN,
    backend: String = String::new(),
    scalelab_version: String = String::new(),
    /// C with all parameters: 6 · n_params_total · tokens.
    flops_total: f64 = f64::NAN,
    /// PaLM-style count: (6·(N + vocab·d) + 12·n_layer·context·d) · tokens.
    flops_full: f64 = f64::NAN,
    /// FLOPs this row itself cost (a cooldown branch: its cooldown only).
    flops_spent: f64 = f64::NAN,
    /// Stable-phase parent of a cooldown branch ("" otherwise).
    parent: String = String::new(),
    branch_step: i64 = 0,
    lr_multiplier: f64 = 1.0,
    /// (shape, D, seed) point; the runs of an LR sweep share it.
    point_id: String = String::new(),
    /// The run the fit uses for its point (the best of an LR / batch-size grid).
    selected: bool = false,
    /// A pruned run: its final eval loss as predicted when it was stopped (the predicted
    /// final training loss plus the eval − train gap at the stop); what `fit
    /// --include-pruned` uses as its loss.
    predicted_eval_loss: Option<f64> = None,
    /// μP's base width (None: the standard parametrization; older files: standard).
    mup_base_width: Option<i64> = None,
    /// The model family (older files: transformer).
    family: crate::model::FamilyKind = crate::model::FamilyKind::Transformer,
    /// The feed-forward family's window of previous tokens (None for the other families).
    mlp_window: Option<i64> = None,
    /// The feed-forward family's direct input → output connections (false elsewhere).
    mlp_direct: bool = false,
    /// The final eval's mean loss at each position of the context window, position 0 first
    /// (older files and runs without an eval: empty).
    eval_loss_by_position: Vec<f64> = Vec::new(),
}

/// Columns every scalelab version has written: a `runs.parquet` without one of them is not
/// an older file to fill in but not scalelab's (or an edited one).
pub const ALWAYS_WRITTEN: &[&str] = &["run_id", "status", "tokens", "n_params", "eval_loss"];

/// What the corpus and device contribute to a run's row.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    /// Bytes of text per eval token (1 for byte-level corpora).
    pub eval_bytes_per_token: f64,
    /// Unique training tokens available (None: unlimited, every run is one epoch).
    pub unique_train_tokens: Option<u64>,
    pub backend: &'a str,
    /// Measured matmul peak, FLOP/s (0: unmeasured, no MFU).
    pub peak_flops: f64,
}

impl RunRecord {
    /// Columns whose default for older files depends on other columns of the row.
    fn fill_derived(&mut self, filled: &[&str]) {
        if filled.contains(&"eval_bits_per_byte") {
            self.eval_bits_per_byte = self.eval_bits_per_token;
        }
        if filled.contains(&"unique_tokens") {
            self.unique_tokens = self.tokens;
        }
    }

    /// The run's model shape.
    pub fn shape(&self) -> crate::model::Shape {
        use crate::model::{Family, FamilyKind, Parametrization, Shape};
        let u = |v: i64| v as usize;
        let family = match self.family {
            FamilyKind::Transformer => Family::Transformer,
            FamilyKind::Lstm => Family::Lstm,
            FamilyKind::Mlp => Family::Mlp {
                window: self.mlp_window.map_or(0, u),
                direct: self.mlp_direct,
            },
        };
        let shape = Shape::new(
            u(self.d_model),
            u(self.n_layer),
            u(self.n_head),
            Some(u(self.d_ff)),
        )
        .with_param(Parametrization::from_base_width(
            self.mup_base_width.map(|b| b as usize),
        ));
        Shape { family, ..shape }
    }

    /// The row of a trained run.
    pub fn from_outcome(r: &RunPlan, o: &RunOutcome, ctx: &RecordContext) -> RunRecord {
        let (unique, epochs) = match ctx.unique_train_tokens {
            Some(u) if r.tokens > u => (u, r.tokens as f64 / u as f64),
            _ => (r.tokens, 1.0),
        };
        let full_per_token = r
            .shape
            .flops_per_token_full(r.data.vocab_size, r.data.context);
        let mfu = (ctx.peak_flops > 0.0 && o.tokens_per_s.is_finite())
            .then(|| o.tokens_per_s * full_per_token / ctx.peak_flops);
        let bits = o.eval_loss / std::f64::consts::LN_2;
        RunRecord {
            run_id: r.id.clone(),
            status: o.status,
            error: o.error.clone().unwrap_or_default(),
            d_model: r.shape.d_model as i64,
            n_layer: r.shape.n_layer as i64,
            n_head: r.shape.n_head as i64,
            d_ff: r.shape.d_ff as i64,
            context: r.data.context as i64,
            vocab_size: r.data.vocab_size as i64,
            batch_size: r.data.batch_size as i64,
            steps: r.data.steps as i64,
            steps_done: o.steps_done as i64,
            tokens: r.tokens as i64,
            n_params: r.n_params as i64,
            n_params_total: r.n_params_total as i64,
            flops: r.flops,
            budget: r.budget,
            seed: r.data.seed as i64,
            lr: r.optim.lr,
            warmup_steps: r.schedule.warmup_steps as i64,
            schedule: format!("{:?}", r.schedule.kind).to_lowercase(),
            final_train_loss: o.final_train_loss,
            eval_loss: o.eval_loss,
            eval_bits_per_token: bits,
            eval_bits_per_byte: bits / ctx.eval_bytes_per_token,
            unique_tokens: unique as i64,
            epochs,
            tokens_per_s: o.tokens_per_s,
            mfu,
            wall_s: o.wall_s,
            backend: if r.precision.is_f32() {
                ctx.backend.into()
            } else {
                format!("{} {}", ctx.backend, r.precision.as_str())
            },
            scalelab_version: env!("CARGO_PKG_VERSION").into(),
            flops_total: 6.0 * r.n_params_total as f64 * r.tokens as f64,
            flops_full: full_per_token * r.tokens as f64,
            flops_spent: r.flops_spent,
            parent: r.parent.clone().unwrap_or_default(),
            branch_step: r.branch_step as i64,
            lr_multiplier: r.lr_multiplier,
            point_id: r.point_id.clone(),
            selected: false,
            predicted_eval_loss: None,
            mup_base_width: r.shape.param.base_width().map(|b| b as i64),
            family: r.shape.family.kind(),
            mlp_window: match r.shape.family {
                crate::model::Family::Mlp { window, .. } => Some(window as i64),
                _ => None,
            },
            mlp_direct: matches!(
                r.shape.family,
                crate::model::Family::Mlp { direct: true, .. }
            ),
            eval_loss_by_position: o.eval_loss_by_position.clone(),
        }
    }
}

/// The ids of the runs finished for good ([`Status::is_final`]: a rerun does not train them
/// again; failed runs it retries).
pub fn finished_ids(rows: &[RunRecord]) -> std::collections::HashSet<&str> {
    rows.iter()
        .filter(|r| r.status.is_final())
        .map(|r| r.run_id.as_str())
        .collect()
}

/// Mark, for every point, the `ok` run with the lowest eval loss as selected.
pub fn mark_selected(runs: &mut [RunRecord]) {
    let mut best: std::collections::HashMap<String, (usize, f64)> = Default::default();
    for (i, r) in runs.iter().enumerate() {
        if r.status == Status::Ok && r.eval_loss.is_finite() {
            let e = best.entry(r.point_id.clone()).or_insert((i, r.eval_loss));
            if r.eval_loss < e.1 {
                *e = (i, r.eval_loss);
            }
        }
    }
    for (i, r) in runs.iter_mut().enumerate() {
        r.selected = best.get(&r.point_id).is_some_and(|b| b.0 == i);
    }
}

macro_rules! col {
    ($name:expr, $rows:expr, |$r:ident| $e:expr) => {
        Column::new($name.into(), $rows.iter().map(|$r| $e).collect::<Vec<_>>())
    };
}

fn need<T: Cell>(df: &DataFrame, name: &str) -> anyhow::Result<Vec<T>> {
    T::read(df, name)?.ok_or_else(|| anyhow::anyhow!("no column {name}"))
}

/// Curve rows (tagged with their run id) as a frame.
pub fn curves_frame(rows: &[(String, CurveRow)]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col!("run_id", rows, |r| r.0.clone()),
        col!("step", rows, |r| r.1.step as i64),
        col!("tokens", rows, |r| r.1.tokens as i64),
        col!("lr", rows, |r| r.1.lr),
        col!("train_loss", rows, |r| r.1.train_loss),
        col!("eval_loss", rows, |r| r.1.eval_loss),
        col!("predicted_final_loss", rows, |r| r
            .1
            .predicted
            .map(|p| p.loss)),
        col!("predicted_final_lo", rows, |r| r
            .1
            .predicted
            .and_then(|p| p.lo)),
        col!("predicted_final_hi", rows, |r| r
            .1
            .predicted
            .and_then(|p| p.hi)),
    ])?)
}

/// Curve rows of a frame written by [`curves_frame`].
pub fn curves_from_frame(df: &DataFrame) -> anyhow::Result<Vec<(String, CurveRow)>> {
    let id: Vec<String> = need(df, "run_id")?;
    let step: Vec<i64> = need(df, "step")?;
    let tokens: Vec<i64> = need(df, "tokens")?;
    let lr: Vec<f64> = need(df, "lr")?;
    let tl: Vec<f64> = need(df, "train_loss")?;
    let el: Vec<Option<f64>> = need(df, "eval_loss")?;
    // Files from before the prediction history lack these columns.
    let optional =
        |name| <Option<f64>>::read(df, name).map(|v| v.unwrap_or(vec![None; df.height()]));
    let (pl, plo, phi) = (
        optional("predicted_final_loss")?,
        optional("predicted_final_lo")?,
        optional("predicted_final_hi")?,
    );
    Ok((0..df.height())
        .map(|k| {
            let row = CurveRow {
                step: step[k] as usize,
                tokens: tokens[k] as u64,
                lr: lr[k],
                train_loss: tl[k],
                eval_loss: el[k],
                predicted: pl[k].map(|loss| Predicted {
                    loss,
                    lo: plo[k],
                    hi: phi[k],
                }),
            };
            (id[k].clone(), row)
        })
        .collect())
}

/// Baseline rows as a frame.
pub fn baselines_frame(rows: &[BaselineRow]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        col!("order", rows, |r| r.order as i64),
        col!("train_tokens", rows, |r| r.train_tokens as i64),
        col!("eval_loss", rows, |r| r.eval_loss),
        col!("eval_bits_per_token", rows, |r| r.eval_bits_per_token),
        col!("eval_bits_per_byte", rows, |r| r.eval_bits_per_byte),
        col!("n_grams", rows, |r| r.n_grams as i64),
        col!("seconds", rows, |r| r.seconds),
    ])?)
}

/// Baseline rows of a frame written by [`baselines_frame`].
pub fn baselines_from_frame(df: &DataFrame) -> anyhow::Result<Vec<BaselineRow>> {
    let order: Vec<i64> = need(df, "order")?;
    let d: Vec<i64> = need(df, "train_tokens")?;
    let ng: Vec<i64> = need(df, "n_grams")?;
    let l: Vec<f64> = need(df, "eval_loss")?;
    let bt: Vec<f64> = need(df, "eval_bits_per_token")?;
    let bb: Vec<f64> = need(df, "eval_bits_per_byte")?;
    let sec: Vec<f64> = need(df, "seconds")?;
    Ok((0..df.height())
        .map(|k| BaselineRow {
            order: order[k] as usize,
            train_tokens: d[k] as u64,
            eval_loss: l[k],
            eval_bits_per_token: bt[k],
            eval_bits_per_byte: bb[k],
            n_grams: ng[k] as u64,
            seconds: sec[k],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, status: Status, loss: f64) -> RunRecord {
        let df = DataFrame::new_infer_height(vec![Column::new("run_id".into(), vec![id])]).unwrap();
        let mut r = RunRecord::from_frame(&df).unwrap().rows.pop().unwrap();
        r.status = status;
        r.eval_loss = loss;
        r.tokens = 1000;
        r.budget = Some(1e12);
        r
    }

    #[test]
    fn every_column_round_trips() {
        let rows = vec![
            sample("a", Status::Ok, 1.5),
            sample("b", Status::Stable, 2.0),
        ];
        let df = RunRecord::frame(&rows).unwrap();
        assert_eq!(df.width(), RunRecord::COLUMNS.len());
        let back = RunRecord::from_frame(&df).unwrap();
        assert!(back.filled.is_empty());
        // NaN != NaN: compare through Debug.
        assert_eq!(format!("{:?}", back.rows), format!("{rows:?}"));
    }

    #[test]
    fn old_files_get_stated_defaults() {
        let rows = vec![sample("a", Status::Ok, 1.5)];
        let mut df = RunRecord::frame(&rows).unwrap();
        for c in ["eval_bits_per_byte", "unique_tokens", "epochs"] {
            df = df.drop(c).unwrap();
        }
        let back = RunRecord::from_frame(&df).unwrap();
        assert_eq!(
            back.filled,
            vec!["eval_bits_per_byte", "unique_tokens", "epochs"]
        );
        let r = &back.rows[0];
        assert_eq!((r.unique_tokens, r.epochs), (1000, 1.0));
    }

    #[test]
    fn unknown_status_is_an_error_naming_it() {
        let df = DataFrame::new_infer_height(vec![
            Column::new("run_id".into(), vec!["a"]),
            Column::new("status".into(), vec!["weird"]),
        ])
        .unwrap();
        let e = RunRecord::from_frame(&df).unwrap_err().to_string();
        assert!(e.contains("weird") && e.contains("status"), "{e}");
    }

    #[test]
    fn selection_prefers_lowest_ok_loss() {
        let mut rows = vec![
            sample("a", Status::Ok, 2.0),
            sample("b", Status::Ok, 1.0),
            sample("c", Status::Diverged, 0.5),
        ];
        mark_selected(&mut rows);
        assert_eq!(
            rows.iter().map(|r| r.selected).collect::<Vec<_>>(),
            [false, true, false]
        );
    }
}
