//! The plan: a validated [`SweepSpec`] expanded into concrete runs.
//!
//! Owns model shapes and their parameter / FLOP accounting, the data grid (token counts,
//! tokens-per-parameter ratios, IsoFLOP budgets), dropping runs too short to mean anything
//! (with a reason), and each run's stable id (a hash of everything that determines its
//! result, so a rerun of the same spec finds finished runs).
//!
//! Accounting (the GPT in [`crate::model`], biases included, head tied to the embedding):
//! * `n_params` — non-embedding parameters N (Kaplan et al.): the blocks and the final
//!   LayerNorm; per layer `12·d² + 13·d` for d_ff = 4d (in general `4d² + 2·d·d_ff + 9d + d_ff`).
//! * `n_params_total` — N plus the token embedding (vocab·d, shared with the output head) and
//!   the position embedding (context·d).
//! * `flops` — C = 6 · N · D with the non-embedding N (the convention of Kaplan and of the
//!   IsoFLOP budgets here).
//! * `flops_per_token_full` — 6·(N + vocab·d) + 12·n_layer·context·d: adds the unembedding
//!   matmul and attention (PaLM's MFU convention); used for throughput / MFU.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::hashing::hex_id;
pub use crate::model::Shape;
use crate::spec::{CooldownShape, DataOrder, LrRule, Precision, Schedule, SweepSpec, TrainingSpec};

/// The data a run reads: `steps` batches of `batch_size` windows of `context` tokens, in the
/// order of `seed`, evaluated every `eval_interval` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DataSettings {
    pub context: usize,
    pub vocab_size: usize,
    pub batch_size: usize,
    pub steps: usize,
    pub seed: u64,
    pub eval_interval: usize,
    /// Omitted from the id when sequential, so ids of sequential runs are those of scheme 2
    /// before this setting existed.
    #[serde(skip_serializing_if = "DataOrder::is_sequential")]
    pub order: DataOrder,
}

impl DataSettings {
    /// Training tokens D = steps · batch_size · context.
    pub fn tokens(&self) -> u64 {
        (self.steps * self.batch_size * self.context) as u64
    }
}

/// AdamW with a global-norm gradient clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OptimSettings {
    /// Peak learning rate.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    pub grad_clip: f64,
}

impl OptimSettings {
    pub fn from_training(t: &TrainingSpec) -> Self {
        OptimSettings {
            lr: t.lr,
            beta1: t.beta1,
            beta2: t.beta2,
            weight_decay: t.weight_decay,
            grad_clip: t.grad_clip,
        }
    }
}

impl Default for OptimSettings {
    /// The spec's defaults.
    fn default() -> Self {
        OptimSettings::from_training(&TrainingSpec::default())
    }
}

/// The learning-rate schedule: linear warmup, then cosine, constant or WSD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScheduleSettings {
    pub kind: Schedule,
    pub warmup_steps: usize,
    /// Final LR as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// WSD only: the fraction of steps spent cooling down, and its shape.
    pub cooldown_fraction: f64,
    pub cooldown_shape: CooldownShape,
}

impl ScheduleSettings {
    /// From the spec; the cooldown settings are normalised away for schedules without one,
    /// so they cannot change the id of a run they do not affect.
    pub fn from_training(t: &TrainingSpec, warmup_steps: usize) -> Self {
        let d = TrainingSpec::default();
        let wsd = t.schedule == Schedule::Wsd;
        ScheduleSettings {
            kind: t.schedule,
            warmup_steps,
            min_lr_ratio: t.min_lr_ratio,
            cooldown_fraction: if wsd {
                t.cooldown_fraction
            } else {
                d.cooldown_fraction
            },
            cooldown_shape: if wsd {
                t.cooldown_shape
            } else {
                d.cooldown_shape
            },
        }
    }
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings::from_training(
            &TrainingSpec::default(),
            TrainingSpec::default().warmup_steps,
        )
    }
}

/// Everything the trainer needs for one run.
///
/// Every setting that can change a run's result lives in `shape`, in one of the nested
/// settings structs or in `precision`, and the run id is a hash of all of them serialized whole
/// ([`IdKey`]): a new setting added to a nested struct changes ids by construction. The other
/// flat fields are derived from those (tokens, N, FLOPs) or are labels (budget, LR multiplier,
/// point, parent).
#[derive(Debug, Clone, Serialize)]
pub struct RunPlan {
    pub id: String,
    pub shape: Shape,
    pub data: DataSettings,
    pub optim: OptimSettings,
    pub schedule: ScheduleSettings,
    /// Training tokens D = steps · batch_size · context.
    pub tokens: u64,
    pub n_params: u64,
    pub n_params_total: u64,
    /// C = 6 · n_params · tokens.
    pub flops: f64,
    /// The IsoFLOP budget this run belongs to, if any.
    pub budget: Option<f64>,
    /// The LR-sweep multiplier this run used (1 without an LR sweep).
    pub lr_multiplier: f64,
    /// Id of the (shape, D, seed) point, shared by the runs of an LR sweep.
    pub point_id: String,
    /// For a cooldown branch: the id of its stable-phase parent.
    pub parent: Option<String>,
    /// For a cooldown branch: the step where it leaves the stable run.
    pub branch_step: usize,
    /// FLOPs this row itself costs (a branch: its cooldown; a parent: the stable phase).
    pub flops_spent: f64,
    /// The float type of the forward and backward passes (parameters stay f32).
    pub precision: Precision,
}

/// What a run id hashes: the id scheme, the corpus and eval set, and every result-determining
/// setting of the run, serialized whole.
#[derive(Serialize)]
struct IdKey<'a> {
    scheme: u32,
    corpus: String,
    eval_tokens: f64,
    shape: &'a Shape,
    data: &'a DataSettings,
    optim: &'a OptimSettings,
    schedule: &'a ScheduleSettings,
    /// A cooldown branch: where it leaves its stable parent.
    branch_step: Option<usize>,
    /// The stable phase of a branch group (stored, not a data point).
    stable_phase: bool,
    /// Left out in f32, so ids from before the setting are unchanged.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    precision: Precision,
}

/// The run-id scheme. 1: a hand-listed format string (scalelab ≤ 0.1 before the settings
/// were nested); 2: the JSON of [`IdKey`]. Recorded in every results folder's metadata.
pub const ID_SCHEME: u32 = 2;

impl RunPlan {
    /// A run of these settings, its derived sizes (D, N, C) computed; no id, budget, point or
    /// parent yet.
    pub fn from_settings(
        shape: Shape,
        data: DataSettings,
        optim: OptimSettings,
        schedule: ScheduleSettings,
    ) -> Self {
        let tokens = data.tokens();
        let n = shape.non_embedding_params();
        let flops = 6.0 * n as f64 * tokens as f64;
        RunPlan {
            id: String::new(),
            shape,
            data,
            optim,
            schedule,
            tokens,
            n_params: n,
            n_params_total: shape.total_params(data.vocab_size, data.context),
            flops,
            budget: None,
            lr_multiplier: 1.0,
            point_id: String::new(),
            parent: None,
            branch_step: 0,
            flops_spent: flops,
            precision: Precision::F32,
        }
    }

    /// A standalone run with the spec's default optimizer and schedule, seed 0, and an id
    /// (benchmarks and tests; sweeps build theirs from the spec).
    pub fn new(
        shape: Shape,
        vocab_size: usize,
        context: usize,
        batch_size: usize,
        steps: usize,
    ) -> Self {
        let data = DataSettings {
            context,
            vocab_size,
            batch_size,
            steps,
            seed: 0,
            eval_interval: steps.div_ceil(10).max(1),
            order: DataOrder::Sequential,
        };
        let mut schedule = ScheduleSettings::default();
        schedule.warmup_steps = schedule.warmup_steps.min(steps);
        let mut r = RunPlan::from_settings(shape, data, OptimSettings::default(), schedule);
        r.id = run_id(&r, 0, 0.0, false);
        r
    }

    /// First step of the WSD cooldown.
    pub fn decay_start(&self) -> usize {
        let cool = ((self.schedule.cooldown_fraction * self.data.steps as f64).round() as usize)
            .clamp(1, self.data.steps);
        self.data.steps - cool
    }

    /// The learning rate of every step, in order (`[k]` is step k + 1 of the curve).
    pub fn lr_schedule(&self) -> Vec<f64> {
        (0..self.data.steps).map(|s| self.lr_at(s)).collect()
    }

    /// Learning rate at `step` (0-based): linear warmup, then cosine, constant or WSD.
    pub fn lr_at(&self, step: usize) -> f64 {
        let (lr, s) = (self.optim.lr, &self.schedule);
        if step < s.warmup_steps {
            return lr * (step + 1) as f64 / s.warmup_steps as f64;
        }
        let floor = lr * s.min_lr_ratio;
        match s.kind {
            Schedule::Constant => lr,
            Schedule::Wsd => {
                let start = self.decay_start().max(s.warmup_steps);
                if step < start {
                    return lr;
                }
                let p =
                    ((step - start + 1) as f64 / (self.data.steps - start).max(1) as f64).min(1.0);
                let f = match s.cooldown_shape {
                    CooldownShape::Linear => 1.0 - p,
                    CooldownShape::Sqrt => 1.0 - p.sqrt(),
                };
                floor + (lr - floor) * f
            }
            Schedule::Cosine => {
                let span = (self.data.steps - s.warmup_steps).max(1) as f64;
                let progress = ((step - s.warmup_steps) as f64 / span).min(1.0);
                floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// A (shape, D) point that was left out, and why.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub what: String,
    pub reason: String,
}

pub struct Plan {
    /// Every data point's run (cooldown branches included).
    pub runs: Vec<RunPlan>,
    /// Stable-phase parents of cooldown branches (not data points themselves).
    pub parents: Vec<RunPlan>,
    pub dropped: Vec<Dropped>,
    /// The sweep's IsoFLOP budgets, if any.
    pub budgets: Vec<f64>,
}

impl Plan {
    /// Largest number of training tokens any run reads.
    pub fn max_tokens(&self) -> u64 {
        self.runs.iter().map(|r| r.tokens).max().unwrap_or(0)
    }

    /// C = 6ND summed over the data points (what separate runs would cost).
    pub fn total_flops(&self) -> f64 {
        self.runs.iter().map(|r| r.flops).sum()
    }

    /// FLOPs the sweep actually spends (branches share their parent's stable phase).
    pub fn flops_spent(&self) -> f64 {
        self.runs
            .iter()
            .chain(&self.parents)
            .map(|r| r.flops_spent)
            .sum()
    }
}

/// The shapes a spec names, de-duplicated, smallest first.
pub fn shapes(spec: &SweepSpec) -> Vec<Shape> {
    let param = spec.model.parametrization();
    let mut set = BTreeSet::new();
    for s in &spec.model.shapes {
        set.insert(s.shape().with_param(param));
    }
    if let Some(g) = &spec.model.grid {
        for &w in &g.widths {
            for &l in &g.depths {
                set.insert(Shape::new(w, l, w / g.head_dim, None).with_param(param));
            }
        }
    }
    let mut v: Vec<Shape> = set.into_iter().collect();
    v.sort_by_key(|s| (s.non_embedding_params(), *s));
    v
}

/// What `build` knows besides the spec: the corpus's vocabulary and fingerprint.
struct Ctx<'a> {
    spec: &'a SweepSpec,
    vocab_size: usize,
    corpus_fingerprint: u64,
    batch: usize,
    tokens_per_step: f64,
    /// The spec has a `training.batch_sizes` grid (points then span every batch size).
    batch_grid: bool,
}

/// A (shape, D) point to train, before seeds and LR multipliers.
struct Target {
    shape: Shape,
    tokens: f64,
    budget: Option<f64>,
}

/// Expand a validated spec. `vocab_size` and `corpus_fingerprint` come from the corpus.
/// Errors (as user errors) when every run of an IsoFLOP budget, or of the whole sweep, is
/// too short.
pub fn build(
    spec: &SweepSpec,
    source_label: &str,
    vocab_size: usize,
    corpus_fingerprint: u64,
) -> anyhow::Result<Plan> {
    // One context per batch size: a batch-size grid trains every target with each (smallest
    // first), `batch_scaling` each target with its own.
    let ctx = |batch: usize| Ctx {
        spec,
        vocab_size,
        corpus_fingerprint,
        batch,
        tokens_per_step: (batch * spec.model.context) as f64,
        batch_grid: !spec.training.batch_sizes.is_empty(),
    };
    let grid = spec.training.batch_list(spec.model.context);
    let shapes = shapes(spec);
    let mut runs = Vec::new();
    let mut dropped = Vec::new();
    for target in targets(spec, &shapes) {
        let batches = match &spec.training.batch_scaling {
            Some(bs) => vec![bs.batch_for(target.tokens)],
            None => grid.clone(),
        };
        for cx in batches.into_iter().map(ctx) {
            match steps_or_drop(&cx, &target) {
                Ok(steps) => runs.extend(expand_target(&cx, &target, steps)),
                Err(d) => dropped.push(d),
            }
        }
    }
    let cx = &ctx(grid[0]);
    let parents = if spec.data.branches {
        make_branches(&mut runs, cx.tokens_per_step)
    } else {
        Vec::new()
    };
    let parents = assign_ids(cx, &mut runs, parents);
    check_not_empty(cx, source_label, &shapes, &runs)?;
    Ok(Plan {
        runs,
        parents,
        dropped,
        budgets: spec
            .data
            .isoflop
            .as_ref()
            .map(|i| i.budgets.clone())
            .unwrap_or_default(),
    })
}

/// Every (shape, D) the spec asks for: IsoFLOP budgets, then token counts and ratios.
fn targets(spec: &SweepSpec, shapes: &[Shape]) -> Vec<Target> {
    let mut v = Vec::new();
    let n = |s: &Shape| s.non_embedding_params() as f64;
    if let Some(iso) = &spec.data.isoflop {
        for &c in &iso.budgets {
            for s in shapes {
                v.push(Target {
                    shape: *s,
                    tokens: c / (6.0 * n(s)),
                    budget: Some(c),
                });
            }
        }
    }
    for s in shapes {
        for &d in &spec.data.tokens {
            v.push(Target {
                shape: *s,
                tokens: d,
                budget: None,
            });
        }
        for &r in &spec.data.tokens_per_param {
            v.push(Target {
                shape: *s,
                tokens: r * n(s),
                budget: None,
            });
        }
    }
    v
}

/// The target's step count, or why it is dropped (fewer than `data.min_steps`).
fn steps_or_drop(cx: &Ctx, t: &Target) -> Result<usize, Dropped> {
    let steps = (t.tokens / cx.tokens_per_step).round() as usize;
    let min_steps = cx.spec.data.min_steps;
    let mut what = match t.budget {
        Some(c) => format!("{} at C={c:.3e}", t.shape.label()),
        None => format!("{} at D={:.3e}", t.shape.label(), t.tokens),
    };
    if cx.batch_grid {
        what += &format!(" with batch {}", cx.batch);
    }
    let window = cx
        .spec
        .data
        .isoflop
        .as_ref()
        .and_then(|i| i.tokens_per_param);
    let ratio = t.tokens / t.shape.non_embedding_params() as f64;
    if let (Some([lo, hi]), Some(_)) = (window, t.budget) {
        if !(lo..=hi).contains(&ratio) {
            let reason =
                format!("D/N = {ratio:.1} outside data.isoflop.tokens_per_param [{lo}, {hi}]");
            return Err(Dropped { what, reason });
        }
    }
    if steps >= min_steps {
        return Ok(steps);
    }
    let reason = format!(
        "{steps} steps of {} tokens < data.min_steps {min_steps}",
        cx.tokens_per_step as usize
    );
    Err(Dropped { what, reason })
}

/// The runs of one target: one per seed (those of its budget: `seeds_per_budget`) and LR multiplier.
fn expand_target(cx: &Ctx, t: &Target, steps: usize) -> Vec<RunPlan> {
    let tr = &cx.spec.training;
    let multipliers = if tr.lr_multipliers.is_empty() {
        vec![1.0]
    } else {
        tr.lr_multipliers.clone()
    };
    let mut out = Vec::new();
    let seeds = cx.spec.seed_list();
    let seeds = match (&cx.spec.data.isoflop, t.budget) {
        (Some(iso), Some(c)) => iso.seeds_at(c, &seeds),
        _ => seeds,
    };
    for seed in seeds {
        for &mult in &multipliers {
            let mut run = single_run(cx, t.shape, steps, seed);
            run.budget = t.budget;
            let family = tr
                .family_lr
                .get(&t.shape.family.kind())
                .copied()
                .unwrap_or(1.0);
            run.optim.lr = base_lr(tr, &t.shape, run.flops, run.tokens as f64) * mult * family;
            run.lr_multiplier = mult;
            // A batch-size grid's point spans its batch sizes (and so their step counts).
            let key = if cx.batch_grid {
                format!("{:.0}|grid", t.tokens)
            } else {
                format!("{steps}|{}", cx.batch)
            };
            run.point_id = hex_id(&format!(
                "point|{:x}|{:?}|{key}|{seed}|{:?}",
                cx.corpus_fingerprint, t.shape, t.budget
            ));
            out.push(run);
        }
    }
    out
}

/// One run of `shape` for `steps` steps with the spec's training settings.
fn single_run(cx: &Ctx, shape: Shape, steps: usize, seed: u64) -> RunPlan {
    let t = &cx.spec.training;
    let warmup = t
        .warmup_steps
        .min((t.warmup_fraction * steps as f64).ceil() as usize);
    let data = DataSettings {
        context: cx.spec.model.context,
        vocab_size: cx.vocab_size,
        batch_size: cx.batch,
        steps,
        seed,
        eval_interval: if t.eval_interval > 0 {
            t.eval_interval
        } else {
            steps.div_ceil(10)
        },
        // Cooldown branches share one stable phase, so they must read one prefix in order.
        order: if cx.spec.data.branches {
            DataOrder::Sequential
        } else {
            t.data_order
        },
    };
    let optim = OptimSettings::from_training(t);
    RunPlan {
        precision: t.precision,
        ..RunPlan::from_settings(
            shape,
            data,
            optim,
            ScheduleSettings::from_training(t, warmup),
        )
    }
}

/// The peak LR before any multiplier: the spec's, or its width / compute / N / (N, D) rule.
fn base_lr(t: &TrainingSpec, shape: &Shape, flops: f64, tokens: f64) -> f64 {
    match &t.lr_scaling {
        None => t.lr,
        Some(ls) => match ls.rule {
            LrRule::Width => t.lr * ls.base_width as f64 / shape.d_model as f64,
            LrRule::Compute => ls.k.unwrap_or(t.lr) * flops.powf(ls.p.unwrap_or(0.0)),
            LrRule::Params => {
                let n = shape.non_embedding_params() as f64;
                ls.k.unwrap_or(t.lr) * n.powf(ls.p.unwrap_or(0.0))
            }
            LrRule::ParamsTokens => {
                let n = shape.non_embedding_params() as f64;
                let d = tokens.powf(ls.q.unwrap_or(0.0));
                ls.k.unwrap_or(t.lr) * n.powf(ls.p.unwrap_or(0.0)) * d
            }
        },
    }
}

/// Give every run and parent its id (duplicates dropped); branches point at their parent's id.
fn assign_ids(cx: &Ctx, runs: &mut Vec<RunPlan>, parents: Vec<RunPlan>) -> Vec<RunPlan> {
    let eval_tokens = cx.spec.corpus.eval_tokens;
    let mut seen = BTreeSet::new();
    for r in runs.iter_mut() {
        r.id = run_id(r, cx.corpus_fingerprint, eval_tokens, false);
    }
    runs.retain(|r| seen.insert(r.id.clone()));
    let mut parent_ids = std::collections::HashMap::new();
    let parents: Vec<RunPlan> = parents
        .into_iter()
        .map(|mut p| {
            p.id = run_id(&p, cx.corpus_fingerprint, eval_tokens, true);
            parent_ids.insert(p.point_id.clone(), p.id.clone());
            p
        })
        .collect();
    for r in runs.iter_mut() {
        if let Some(key) = &r.parent {
            r.parent = Some(parent_ids[key].clone());
        }
    }
    parents
}

/// A user error when an IsoFLOP budget, or the whole sweep, has no run left.
fn check_not_empty(
    cx: &Ctx,
    label: &str,
    shapes: &[Shape],
    runs: &[RunPlan],
) -> anyhow::Result<()> {
    let min_steps = cx.spec.data.min_steps;
    let per_step = cx.tokens_per_step as usize;
    for &c in cx.spec.data.isoflop.iter().flat_map(|i| &i.budgets) {
        if !runs.iter().any(|r| r.budget == Some(c)) {
            crate::bail_user!(
                "{label}: data.isoflop.budgets: budget {c:.3e} FLOPs is too small for any model: \
                 even the smallest shape ({}) gets fewer than data.min_steps = {min_steps} steps of {per_step} tokens; \
                 raise the budget, add smaller shapes, or lower training.batch_size / data.min_steps",
                shapes.first().map(|s| s.label()).unwrap_or_default(),
            );
        }
    }
    if runs.is_empty() {
        crate::bail_user!(
            "{label}: data: every run is shorter than data.min_steps = {min_steps} steps of {per_step} tokens; \
             raise data.tokens / tokens_per_param, or lower training.batch_size / data.min_steps"
        );
    }
    Ok(())
}

/// Group runs by (shape, seed, LR) into cooldown branches of one stable-phase parent each.
/// Every branch of a group gets the warmup of the group's shortest run, so the stable phase
/// is the same for all of them (and identical to a separate WSD run of that D).
fn make_branches(runs: &mut [RunPlan], tokens_per_step: f64) -> Vec<RunPlan> {
    let key = |r: &RunPlan| (r.shape, r.data.seed, r.optim.lr.to_bits());
    let mut keys: Vec<(Shape, u64, u64)> = runs.iter().map(key).collect();
    keys.sort();
    keys.dedup();
    let mut parents = Vec::new();
    for k in keys {
        let members: Vec<usize> = (0..runs.len()).filter(|&i| key(&runs[i]) == k).collect();
        parents.push(branch_group(runs, &members, tokens_per_step));
    }
    parents
}

/// Turn `members` into branches of one stable parent, and return the parent.
fn branch_group(runs: &mut [RunPlan], members: &[usize], tokens_per_step: f64) -> RunPlan {
    let min_steps = members.iter().map(|&i| runs[i].data.steps).min().unwrap();
    let warmup = members
        .iter()
        .map(|&i| runs[i].schedule.warmup_steps)
        .min()
        .unwrap()
        .min(min_steps);
    let mut stable_steps = 0;
    for &i in members {
        let r = &mut runs[i];
        r.schedule.warmup_steps = warmup;
        r.branch_step = r.decay_start().max(warmup);
        r.flops_spent =
            6.0 * r.n_params as f64 * (r.data.steps - r.branch_step) as f64 * tokens_per_step;
        stable_steps = stable_steps.max(r.branch_step);
    }
    let first = &runs[members[0]];
    let mut parent = first.clone();
    parent.point_id = hex_id(&format!("stable|{}|{}", first.point_id, stable_steps));
    parent.schedule.kind = Schedule::Constant;
    parent.data.steps = stable_steps;
    parent.tokens = (stable_steps as f64 * tokens_per_step) as u64;
    parent.flops = 6.0 * parent.n_params as f64 * parent.tokens as f64;
    parent.flops_spent = parent.flops;
    parent.budget = None;
    parent.data.eval_interval = stable_steps.div_ceil(10).max(1);
    for &i in members {
        runs[i].parent = Some(parent.point_id.clone());
    }
    parent
}

/// Stable id: a hash of everything that determines the run's result ([`IdKey`]).
pub fn run_id(r: &RunPlan, corpus_fp: u64, eval_tokens: f64, stable_phase: bool) -> String {
    let key = IdKey {
        scheme: ID_SCHEME,
        corpus: format!("{corpus_fp:016x}"),
        eval_tokens,
        shape: &r.shape,
        data: &r.data,
        optim: &r.optim,
        schedule: &r.schedule,
        branch_step: r.parent.is_some().then_some(r.branch_step),
        stable_phase,
        precision: r.precision,
    };
    hex_id(&serde_json::to_string(&key).expect("plain data serializes"))
}

/// The id the same run had under scheme 1 (to find it in a folder made before scheme 2).
pub fn legacy_run_id_v1(r: &RunPlan, corpus_fp: u64, eval_tokens: f64) -> String {
    let (o, s) = (&r.optim, &r.schedule);
    let wsd = s.kind == Schedule::Wsd;
    let key = format!(
        "v1|{corpus_fp:x}|{eval_tokens}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}|{}|{}|{}|{}",
        r.data.context,
        r.data.vocab_size,
        r.shape.d_model,
        r.shape.n_layer,
        r.shape.n_head,
        r.shape.d_ff,
        r.data.batch_size,
        r.data.steps,
        o.lr,
        s.kind,
        s.warmup_steps,
        s.min_lr_ratio,
        o.beta1,
        o.beta2,
        o.weight_decay,
        o.grad_clip,
        r.data.seed,
        r.data.eval_interval,
    ) + &format!(
        "|{}|{:?}|{}|{}",
        if wsd { s.cooldown_fraction } else { 0.0 },
        if wsd { Some(s.cooldown_shape) } else { None },
        r.parent.is_some(),
        r.branch_step
    );
    hex_id(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::{SpecSource, SweepSpec};

    fn spec(extra_training: &str, data: &str) -> SweepSpec {
        let text = format!(
            "name: t\nmodel:\n  context: 16\n  shapes:\n    - {{d_model: 16, n_layer: 1, n_head: 2}}\n    - {{d_model: 32, n_layer: 1, n_head: 2}}\n\
             data:\n{data}\n  min_steps: 2\ntraining:\n  batch_size: 4\n  lr: 0.01\n  warmup_steps: 4\n{extra_training}"
        );
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: ".".into(),
            text,
        };
        SweepSpec::parse(&src).unwrap()
    }

    fn run_with(schedule: Schedule, shape: CooldownShape) -> RunPlan {
        let s = spec("", "  tokens: [6400]");
        let mut r = build(&s, "t", 256, 1).unwrap().runs[0].clone();
        r.schedule.kind = schedule;
        r.schedule.cooldown_shape = shape;
        r.schedule.min_lr_ratio = 0.1;
        r
    }

    #[test]
    fn schedule_shapes() {
        // 6400 tokens / (4 x 16) = 100 steps; warmup min(4, 10) = 4.
        let c = run_with(Schedule::Cosine, CooldownShape::Linear);
        assert_eq!((c.data.steps, c.schedule.warmup_steps), (100, 4));
        assert!((c.lr_at(0) - 0.0025).abs() < 1e-12);
        assert!((c.lr_at(3) - 0.01).abs() < 1e-12);
        assert!((c.lr_at(4) - 0.01).abs() < 1e-12);
        // Half-way through the decay: (peak + floor) / 2.
        assert!((c.lr_at(52) - 0.0055).abs() < 1e-12);
        assert!((c.lr_at(99) - 0.001).abs() < 1e-5);
        let w = run_with(Schedule::Wsd, CooldownShape::Linear);
        assert_eq!(w.decay_start(), 80);
        assert_eq!(w.lr_at(79), 0.01);
        // Cooldown steps 80..100: progress (step - 80 + 1) / 20.
        assert!((w.lr_at(89) - (0.001 + 0.009 * 0.5)).abs() < 1e-12);
        assert!((w.lr_at(99) - 0.001).abs() < 1e-12);
        let q = run_with(Schedule::Wsd, CooldownShape::Sqrt);
        assert!((q.lr_at(89) - (0.001 + 0.009 * (1.0 - 0.5f64.sqrt()))).abs() < 1e-12);
        let k = run_with(Schedule::Constant, CooldownShape::Linear);
        assert_eq!(k.lr_at(99), 0.01);
    }

    #[test]
    fn flop_formulas_against_hand_counts() {
        let s = Shape::new(64, 2, 2, None);
        assert_eq!(s.non_embedding_params(), 100_096);
        assert_eq!(s.total_params(256, 64), 120_576);
        // 6 (N + vocab d) + 12 L ctx d = 6 (100096 + 16384) + 12 * 2 * 64 * 64.
        assert_eq!(s.flops_per_token_full(256, 64), 797_184.0);
    }

    #[test]
    fn lr_scaling_rules() {
        let w = spec(
            "  lr_scaling: {rule: width, base_width: 16}\n",
            "  tokens: [6400]",
        );
        let p = build(&w, "t", 256, 1).unwrap();
        let lr = |d: usize| {
            p.runs
                .iter()
                .find(|r| r.shape.d_model == d)
                .unwrap()
                .optim
                .lr
        };
        assert!((lr(16) - 0.01).abs() < 1e-15 && (lr(32) - 0.005).abs() < 1e-15);
        let c = spec(
            "  lr_scaling: {rule: compute, k: 2.0, p: -0.1}\n",
            "  tokens: [6400]",
        );
        let p = build(&c, "t", 256, 1).unwrap();
        for r in &p.runs {
            assert!((r.optim.lr - 2.0 * r.flops.powf(-0.1)).abs() < 1e-12);
        }
        let n = spec(
            "  lr_scaling: {rule: params, k: 0.047, p: -0.141}\n",
            "  tokens: [6400]",
        );
        for r in &build(&n, "t", 256, 1).unwrap().runs {
            let want = 0.047 * (r.n_params as f64).powf(-0.141);
            assert!((r.optim.lr - want).abs() < 1e-15);
        }
        // A law from `scalelab hp` (lr* = c N^a D^b) sets each run's LR from its N and D.
        let nd = spec(
            "  lr_scaling: {rule: params_tokens, k: 1.78, p: -0.712, q: 0.307}\n",
            "  tokens: [6400, 12800]",
        );
        let runs = build(&nd, "t", 256, 1).unwrap().runs;
        assert_eq!(runs.len(), 4);
        for r in &runs {
            let want = 1.78 * (r.n_params as f64).powf(-0.712) * (r.tokens as f64).powf(0.307);
            assert!(
                (r.optim.lr / want - 1.0).abs() < 1e-12,
                "{} vs {want}",
                r.optim.lr
            );
        }
        assert!(runs[0].optim.lr != runs[1].optim.lr || runs[0].tokens == runs[1].tokens);
        let m = spec("  lr_multipliers: [0.5, 1, 2]\n", "  tokens: [6400]");
        let p = build(&m, "t", 256, 1).unwrap();
        assert_eq!(p.runs.len(), 6);
        let ids: BTreeSet<&str> = p.runs.iter().map(|r| r.point_id.as_str()).collect();
        assert_eq!(ids.len(), 2, "an LR sweep shares the point id");
    }

    /// `data_order` is a closed set read from the spec; each order is part of the run's id.
    #[test]
    fn data_order_is_parsed_and_keys_the_run_id() {
        let ids = |order: &str| {
            let s = spec(&format!("  data_order: {order}\n"), "  tokens: [6400]");
            let p = build(&s, "t", 256, 1).unwrap();
            let r = &p.runs[0];
            (r.data.order, run_id(r, 1, 16.0, false))
        };
        let (o1, id1) = ids("shuffled");
        let (o2, id2) = ids("shuffled_per_seed");
        let (o3, id3) = ids("sequential");
        assert_eq!(
            (o1, o2, o3),
            (
                DataOrder::Shuffled,
                DataOrder::ShuffledPerSeed,
                DataOrder::Sequential
            )
        );
        assert!(id1 != id2 && id2 != id3 && id1 != id3);
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: ".".into(),
            text: "name: t\nmodel:\n  context: 16\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\n\
                   data:\n  tokens: [6400]\ntraining:\n  data_order: per_seed\n"
                .into(),
        };
        let msg = format!("{:#}", SweepSpec::parse(&src).unwrap_err());
        assert!(
            msg.contains("`per_seed` is not one of sequential, shuffled, shuffled_per_seed"),
            "{msg}"
        );
    }

    /// `precision` is a closed set read from the spec; bf16 and f16 key the run id, f32 (the
    /// default) leaves it as it was before the setting existed.
    #[test]
    fn precision_is_parsed_and_keys_the_run_id_unless_f32() {
        let ids = |line: &str| {
            let s = spec(line, "  tokens: [6400]");
            let p = build(&s, "t", 256, 1).unwrap();
            let r = &p.runs[0];
            (r.precision, run_id(r, 1, 16.0, false))
        };
        let (p0, id0) = ids("");
        let (p1, id1) = ids("  precision: f32\n");
        let (p2, id2) = ids("  precision: bf16\n");
        let (p3, id3) = ids("  precision: f16\n");
        assert_eq!(
            (p0, p1, p2, p3),
            (
                Precision::F32,
                Precision::F32,
                Precision::Bf16,
                Precision::F16
            )
        );
        assert!(id0 == id1 && id1 != id2 && id2 != id3 && id1 != id3);
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: ".".into(),
            text: "name: t\nmodel:\n  context: 16\n  shapes:\n    - {d_model: 16, n_layer: 1, n_head: 2}\n\
                   data:\n  tokens: [6400]\ntraining:\n  precision: fp16\n"
                .into(),
        };
        let msg = format!("{:#}", SweepSpec::parse(&src).unwrap_err());
        assert!(msg.contains("`fp16` is not one of f32, bf16, f16"), "{msg}");
    }

    /// `training.family_lr` scales the peak LR of its family's runs only, on top of the
    /// LR multipliers.
    #[test]
    fn family_lr_scales_only_its_family() {
        let parse = |training: &str| {
            let text = format!(
                "name: t\nmodel:\n  context: 16\n  shapes:\n    - {{d_model: 16, n_layer: 1, n_head: 2}}\n    - {{family: lstm, d_model: 16, n_layer: 1}}\n\
                 data:\n  tokens: [6400]\n  min_steps: 2\ntraining:\n  batch_size: 4\n  lr: 0.01\n{training}"
            );
            let src = SpecSource {
                label: "t.yaml".into(),
                base_dir: ".".into(),
                text,
            };
            SweepSpec::parse(&src)
        };
        let s = parse("  lr_multipliers: [1, 2]\n  family_lr: {lstm: 3}\n").unwrap();
        let p = build(&s, "t", 256, 1).unwrap();
        assert_eq!(p.runs.len(), 2 * 2);
        for r in &p.runs {
            let fam = if r.shape.family.is_transformer() {
                1.0
            } else {
                3.0
            };
            let want = 0.01 * r.lr_multiplier * fam;
            assert!(
                (r.optim.lr - want).abs() < 1e-12,
                "{}: {}",
                r.shape.label(),
                r.optim.lr
            );
        }
        let msg = format!("{:#}", parse("  family_lr: {mlp: -1}\n").unwrap_err());
        assert!(
            msg.contains("training.family_lr.mlp: -1 must be positive"),
            "{msg}"
        );
    }

    /// A batch-size grid: every point at each batch size and LR, D exact for each (steps =
    /// D / (batch · context)), one point id across the grid, batch recorded per run.
    #[test]
    fn batch_size_grid_spans_each_point() {
        let mut s = spec("  lr_multipliers: [1, 2]\n", "  tokens: [6400]");
        s.training.batch_size = None;
        s.training.batch_sizes = vec![8, 4, 16];
        let p = build(&s, "t", 256, 1).unwrap();
        assert_eq!(p.runs.len(), 2 * 3 * 2, "2 shapes × 3 batches × 2 LRs");
        for r in &p.runs {
            assert_eq!(
                r.tokens, 6400,
                "{} steps at batch {}",
                r.data.steps, r.data.batch_size
            );
            assert_eq!(r.data.steps * r.data.batch_size * 16, 6400);
        }
        let batches: BTreeSet<usize> = p.runs.iter().map(|r| r.data.batch_size).collect();
        assert_eq!(batches, BTreeSet::from([4, 8, 16]));
        let points: BTreeSet<&str> = p.runs.iter().map(|r| r.point_id.as_str()).collect();
        assert_eq!(points.len(), 2, "one point per shape across LR × batch");
        let ids: BTreeSet<&str> = p.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 12, "every run its own id");
    }

    #[test]
    fn branch_bookkeeping() {
        let s = spec(
            "  schedule: wsd\n  cooldown_fraction: 0.2\n",
            "  tokens: [1600, 3200, 6400, 12800]\n  branches: true",
        );
        let p = build(&s, "t", 256, 1).unwrap();
        assert_eq!(p.parents.len(), 2);
        assert_eq!(p.runs.len(), 8);
        for parent in &p.parents {
            let kids: Vec<&RunPlan> = p
                .runs
                .iter()
                .filter(|r| r.parent.as_ref() == Some(&parent.id))
                .collect();
            assert_eq!(kids.len(), 4);
            // Steps 25, 50, 100, 200: branch at 80% of each; the parent runs to the last branch point.
            let mut bs: Vec<usize> = kids.iter().map(|k| k.branch_step).collect();
            bs.sort();
            assert_eq!(bs, vec![20, 40, 80, 160]);
            assert_eq!(parent.data.steps, 160);
            assert!(kids
                .iter()
                .all(|k| k.schedule.warmup_steps == parent.schedule.warmup_steps));
            for k in &kids {
                let cool_tokens = ((k.data.steps - k.branch_step) * 64) as f64;
                assert!((k.flops_spent - 6.0 * k.n_params as f64 * cool_tokens).abs() < 1e-6);
            }
        }
        // (0.8 * 12800 + 0.2 * (1600 + 3200 + 6400 + 12800)) / 24000 = 0.6267 per shape.
        let ratio = p.flops_spent() / p.total_flops();
        assert!((ratio - 15040.0 / 24000.0).abs() < 1e-9, "ratio {ratio}");
    }

    #[test]
    fn param_count_matches_formula() {
        let s = Shape::new(64, 2, 2, None);
        // 12 d^2 + 13 d per layer + 2d final LN.
        assert_eq!(s.non_embedding_params(), 2 * (12 * 64 * 64 + 13 * 64) + 128);
        assert_eq!(
            s.total_params(256, 64),
            s.non_embedding_params() + (256 + 64) * 64
        );
    }

    #[test]
    fn ids_hash_every_setting() {
        let s = spec("", "  tokens: [6400]");
        let base = build(&s, "t", 256, 1).unwrap().runs[0].clone();
        let id = |r: &RunPlan| run_id(r, 1, s.corpus.eval_tokens, false);
        assert_eq!(id(&base), base.id);
        let mut changed = Vec::new();
        let mut r = base.clone();
        r.optim.beta2 = 0.99;
        changed.push(id(&r));
        let mut r = base.clone();
        r.optim.weight_decay = 0.0;
        changed.push(id(&r));
        let mut r = base.clone();
        r.schedule.min_lr_ratio = 0.5;
        changed.push(id(&r));
        let mut r = base.clone();
        r.data.seed = 7;
        changed.push(id(&r));
        changed.push(run_id(&base, 2, s.corpus.eval_tokens, false));
        changed.push(run_id(&base, 1, s.corpus.eval_tokens, true));
        let distinct: BTreeSet<&String> = changed.iter().chain([&base.id]).collect();
        assert_eq!(
            distinct.len(),
            changed.len() + 1,
            "every setting changes the id"
        );
        // Labels do not: the same run in two IsoFLOP budgets or LR-sweep bookkeeping.
        let mut r = base.clone();
        r.budget = Some(1e12);
        r.lr_multiplier = 3.0;
        assert_eq!(id(&r), base.id);
    }

    #[test]
    fn isoflop_window_keeps_runs_near_the_ratio() {
        let s = spec(
            "",
            "  isoflop: {budgets: [1.0e9, 1.0e10], tokens_per_param: [2, 40]}",
        );
        let p = build(&s, "t", 256, 1).unwrap();
        for r in &p.runs {
            let ratio = r.tokens as f64 / r.n_params as f64;
            assert!((1.5..=45.0).contains(&ratio), "ratio {ratio}");
        }
        assert!(p
            .dropped
            .iter()
            .any(|d| d.reason.contains("outside data.isoflop.tokens_per_param")));
        assert!(!p.runs.is_empty());
    }

    #[test]
    fn seeds_per_budget_trains_the_first_k_seeds_at_each_budget() {
        let parse = |extra: &str| {
            SweepSpec::parse(&SpecSource {
                label: "t.yaml".into(),
                base_dir: ".".into(),
                text: format!(
                    "name: t\nseeds: [0, 1, 2]\nmodel:\n  context: 16\n  shapes:\n    - {{d_model: 16, n_layer: 1, n_head: 2}}\n    - {{d_model: 32, n_layer: 1, n_head: 2}}\n\
                     data:\n  isoflop: {{budgets: [1.0e9, 1.0e10]{extra}}}\n  min_steps: 2\ntraining:\n  batch_size: 4\n  lr: 0.01\n  warmup_steps: 4\n"
                ),
            })
        };
        let all = build(&parse("").unwrap(), "t", 256, 1).unwrap();
        let some = build(&parse(", seeds_per_budget: [3, 1]").unwrap(), "t", 256, 1).unwrap();
        let seeds_at = |p: &Plan, c: f64| {
            let mut v: Vec<u64> = p
                .runs
                .iter()
                .filter(|r| r.budget == Some(c))
                .map(|r| r.data.seed)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(seeds_at(&all, 1e10), vec![0, 1, 2]);
        assert_eq!(seeds_at(&some, 1e9), vec![0, 1, 2]);
        assert_eq!(seeds_at(&some, 1e10), vec![0]);
        // The runs kept are the same runs (ids) as with every seed at every budget.
        assert!(some.runs.len() < all.runs.len());
        for r in &some.runs {
            assert!(all.runs.iter().any(|a| a.id == r.id), "{}", r.id);
        }
        for (extra, needle) in [
            (", seeds_per_budget: [3]", "1 counts for 2 budgets"),
            (
                ", seeds_per_budget: [0, 3]",
                "seeds_per_budget[0]: 0 must be between 1 and the sweep's 3",
            ),
            (
                ", seeds_per_budget: [3, 4]",
                "seeds_per_budget[1]: 4 must be between 1 and the sweep's 3",
            ),
        ] {
            let e = format!("{:#}", parse(extra).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn cooldown_settings_do_not_change_cosine_ids() {
        let a = spec("  cooldown_fraction: 0.3\n", "  tokens: [6400]");
        let b = spec("", "  tokens: [6400]");
        let id = |s: &SweepSpec| build(s, "t", 256, 1).unwrap().runs[0].id.clone();
        assert_eq!(id(&a), id(&b));
        let c = spec(
            "  schedule: wsd\n  cooldown_fraction: 0.3\n",
            "  tokens: [6400]",
        );
        let d = spec("  schedule: wsd\n", "  tokens: [6400]");
        assert_ne!(id(&c), id(&d));
    }
}
