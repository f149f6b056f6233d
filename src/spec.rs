//! The sweep spec: the YAML a researcher writes.
//!
//! Owns parsing (with [`serde_saphyr`]) and validation. YAML errors are rewritten in the
//! spec's own terms, never the library's: unknown keys with their dotted path, line and the
//! nearest valid key; duplicate keys and values of the wrong type (e.g. a negative count)
//! with the key's dotted path and the fix. Invalid values are all collected and reported
//! together before anything trains (one validation step per spec section), each naming the
//! file, the key and the fix. Sizes no machine can train are refused here too, before the
//! plan is built: data sizes above 1e13 tokens, `d_model` above 65,536, `n_layer` above 1,024,
//! and models needing more than 1 TiB to train. The result is a [`SweepSpec`] whose fields
//! are plain values; the plan module turns it into runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{nearest, user};
use crate::model::FamilyKind;

/// The embedded default sweep (`scalelab run` with no file), identical to `sweeps/quick.yaml`.
pub const QUICK_YAML: &str = include_str!("../sweeps/quick.yaml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Sweep name; outputs go to `results/<name>/` unless `out` is set.
    pub name: String,
    /// Output folder (relative paths are relative to the current directory).
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// One seed, or a list: every (shape, D) point is trained once per seed.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    #[serde(default)]
    pub corpus: CorpusSpec,
    pub model: ModelSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub training: TrainingSpec,
    /// `cpu` (default), `cuda`, `cuda:K` or `vulkan`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Wall-clock hours the whole sweep is meant to fit in (e.g. a night: 12); `plan` and
    /// `run` warn when its ETA is longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_hours: Option<f64>,
    /// Assumed training speed in C = 6ND FLOPs per second for the ETA until runs on this
    /// device have measured it (6ND leaves out attention and the head's extra FLOPs, so it
    /// sits below the hardware rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops_per_s: Option<f64>,
    /// Compute budgets (FLOPs) the report extrapolates to.
    #[serde(default)]
    pub target_flops: Vec<f64>,
    /// Which N the fit uses.
    #[serde(default)]
    pub fit: FitSpec,
    /// Training checkpoints (resume after a crash, kill or Slurm preemption).
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// Defaults for `scalelab submit` (flags override them).
    #[serde(default)]
    pub slurm: SlurmSpec,
    /// n-gram baselines written to baselines.parquet.
    #[serde(default)]
    pub baselines: BaselineSpec,
}

/// `checkpoint:` — model + optimizer + schedule state saved every `every` steps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Steps between checkpoints (0 turns checkpoints off).
    #[serde(default = "default_checkpoint_every")]
    pub every: usize,
    /// Keep a run's last checkpoint after it finishes (default: delete it).
    #[serde(default)]
    pub keep: bool,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            every: default_checkpoint_every(),
            keep: false,
        }
    }
}

fn default_checkpoint_every() -> usize {
    500
}

/// `slurm:` — sbatch options for `scalelab submit`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Wall-clock limit per task, `HH:MM:SS` or `D-HH:MM:SS`.
    pub time: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// Memory per task, e.g. `8G`.
    pub mem: Option<String>,
    /// Array tasks running at once (`--array=0-N%K`).
    pub max_parallel: Option<usize>,
    /// Requeue preempted or failed-node tasks (default true).
    pub requeue: Option<bool>,
    /// Extra `#SBATCH` lines, verbatim (e.g. `--qos=high`).
    #[serde(default)]
    pub extra: Vec<String>,
}

/// Whether `s` is a Slurm time limit we accept: `MM`, `HH:MM:SS` or `D-HH:MM:SS`.
pub fn valid_slurm_time(s: &str) -> bool {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, s),
    };
    if days.is_some_and(|d| d.is_empty() || !d.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    !parts.is_empty()
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// The built-in synthetic language (the default when no corpus is named).
    #[serde(default)]
    pub builtin: Option<BuiltinSpec>,
    /// UTF-8 text: a file, a folder (every file under it) or a glob such as `data/*.txt`.
    #[serde(default)]
    pub text: Option<String>,
    /// Tokenizer for a `text` corpus: `byte` (default; vocab 256) or `bpe` (byte-level BPE
    /// trained on the training split with Hugging Face `tokenizers`; size from `vocab_size`).
    #[serde(default)]
    pub tokenizer: TokenizerKind,
    /// Raw little-endian u16 token file (nanoGPT `.bin`).
    #[serde(default)]
    pub tokens: Option<String>,
    /// Vocabulary size: required for a `tokens` corpus (every id must be below it); the
    /// target size for `tokenizer: bpe` (default 4096).
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// Seed that places the held-out block in a file corpus.
    #[serde(default)]
    pub split_seed: u64,
    /// Cap on unique training tokens: runs with more tokens than this repeat epochs
    /// (data-constrained sweeps). Default: the whole training split.
    #[serde(default)]
    pub train_tokens: Option<f64>,
    /// Scored eval tokens, shared by every run (rounded up to whole windows).
    #[serde(default = "default_eval_tokens")]
    pub eval_tokens: f64,
    /// For BPE corpora: fraction of the text (bytes) held out; the eval windows come from it.
    /// Byte-level and token-file corpora hold out exactly the eval windows.
    #[serde(default = "default_eval_fraction")]
    pub eval_fraction: f64,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            builtin: None,
            text: None,
            tokenizer: TokenizerKind::Byte,
            tokens: None,
            vocab_size: None,
            split_seed: 0,
            train_tokens: None,
            eval_tokens: default_eval_tokens(),
            eval_fraction: default_eval_fraction(),
        }
    }
}

/// `corpus.tokenizer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    #[default]
    Byte,
    Bpe,
}

/// `baselines:` — interpolated Kneser-Ney n-gram models scored on the sweep's eval windows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// n-gram orders (default 1..5; empty turns baselines off).
    #[serde(default = "default_orders")]
    pub orders: Vec<usize>,
    /// Training sizes D in tokens (default: the sweep's distinct D values up to `max_tokens`).
    #[serde(default)]
    pub tokens: Vec<f64>,
    /// Largest D an n-gram model is trained on (memory grows with the distinct n-grams).
    #[serde(default = "default_baseline_max")]
    pub max_tokens: f64,
}

impl Default for BaselineSpec {
    fn default() -> Self {
        BaselineSpec {
            orders: default_orders(),
            tokens: Vec::new(),
            max_tokens: default_baseline_max(),
        }
    }
}

fn default_orders() -> Vec<usize> {
    vec![1, 2, 3, 4, 5]
}
fn default_baseline_max() -> f64 {
    1e7
}

fn default_eval_tokens() -> f64 {
    16384.0
}
fn default_eval_fraction() -> f64 {
    0.05
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinSpec {
    #[serde(default = "default_corpus_seed")]
    pub seed: u64,
    #[serde(default = "default_topics")]
    pub topics: usize,
    /// Scale of the open-class vocabularies (1.0: 2,643 words in all; 0.25: 668).
    #[serde(default = "default_lexicon")]
    pub lexicon: f64,
    /// Zipf exponent of word frequencies within a class (default 1.1).
    #[serde(default = "default_zipf")]
    pub zipf: f64,
    /// Probability that the topic stays from one word to the next (default 0.98).
    #[serde(default = "default_topic_stay")]
    pub topic_stay: f64,
}

impl Default for BuiltinSpec {
    fn default() -> Self {
        BuiltinSpec {
            seed: default_corpus_seed(),
            topics: default_topics(),
            lexicon: default_lexicon(),
            zipf: default_zipf(),
            topic_stay: default_topic_stay(),
        }
    }
}

fn default_lexicon() -> f64 {
    1.0
}
fn default_zipf() -> f64 {
    1.1
}
fn default_topic_stay() -> f64 {
    0.98
}

fn default_corpus_seed() -> u64 {
    1234
}
fn default_topics() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Context length in tokens (one per sweep, so every run shares the eval windows).
    pub context: usize,
    /// Explicit shapes.
    #[serde(default)]
    pub shapes: Vec<ShapeSpec>,
    /// Cross product of widths × depths.
    #[serde(default)]
    pub grid: Option<GridSpec>,
    /// `standard` (GPT-2 init, one LR) or `mup` (μP relative to `base_width`; the model
    /// module's docs say what it changes).
    #[serde(default, skip_serializing_if = "ParamKind::is_standard")]
    pub parametrization: ParamKind,
    /// μP's base width: the d_model at which μP equals the standard model (`mup` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_width: Option<usize>,
}

/// `model.parametrization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    #[default]
    Standard,
    Mup,
}

impl ParamKind {
    pub fn is_standard(&self) -> bool {
        *self == ParamKind::Standard
    }
}

impl ModelSpec {
    /// The parametrization every shape of the sweep gets (validated: `mup` has a base width).
    pub fn parametrization(&self) -> crate::model::Parametrization {
        let base = (self.parametrization == ParamKind::Mup).then_some(self.base_width);
        crate::model::Parametrization::from_base_width(base.flatten())
    }
}

/// One entry of `model.shapes`: a Transformer (`n_head`, optional `d_ff`), an LSTM
/// (`family: lstm`: width and depth only) or a Bengio feed-forward LM (`family: mlp`: `window`
/// previous tokens, `n_layer` tanh layers of width `d_ff`, optional `direct` connections).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeSpec {
    #[serde(default, skip_serializing_if = "is_transformer")]
    pub family: FamilyKind,
    pub d_model: usize,
    pub n_layer: usize,
    /// Attention heads (Transformer only, required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_head: Option<usize>,
    /// Transformer: MLP hidden size; mlp: tanh layer width (default 4 · d_model for both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_ff: Option<usize>,
    /// mlp only (required): how many previous tokens the model sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// mlp only: Bengio's direct connections from the input embeddings (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<bool>,
}

fn is_transformer(f: &FamilyKind) -> bool {
    *f == FamilyKind::Transformer
}

impl ShapeSpec {
    /// The shape it names (validated by [`SweepSpec::validate`] first).
    pub fn shape(&self) -> crate::model::Shape {
        use crate::model::Shape;
        let d_ff = self.d_ff.unwrap_or(4 * self.d_model);
        match self.family {
            FamilyKind::Transformer => Shape::new(
                self.d_model,
                self.n_layer,
                self.n_head.unwrap_or(0),
                self.d_ff,
            ),
            FamilyKind::Lstm => Shape::lstm(self.d_model, self.n_layer),
            FamilyKind::Mlp => Shape::mlp(
                self.d_model,
                self.n_layer,
                d_ff,
                self.window.unwrap_or(0),
                self.direct.unwrap_or(false),
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    pub widths: Vec<usize>,
    pub depths: Vec<usize>,
    /// Width of each attention head; n_head = width / head_dim.
    #[serde(default = "default_head_dim")]
    pub head_dim: usize,
}

fn default_head_dim() -> usize {
    32
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Training tokens per run (each shape is crossed with each entry).
    #[serde(default)]
    pub tokens: Vec<f64>,
    /// Training tokens as a multiple of the shape's non-embedding parameters.
    #[serde(default)]
    pub tokens_per_param: Vec<f64>,
    /// IsoFLOP mode: D = C / (6 N) for every shape and budget.
    #[serde(default)]
    pub isoflop: Option<IsoFlopSpec>,
    /// Runs with fewer optimizer steps are dropped (with a printed reason).
    #[serde(default = "default_min_steps")]
    pub min_steps: usize,
    /// WSD cooldown branches: one stable-phase run per shape and seed; each data size is a
    /// branch that cools down from the stable run's state (needs `training.schedule: wsd`).
    #[serde(default)]
    pub branches: bool,
}

fn default_min_steps() -> usize {
    20
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IsoFlopSpec {
    /// Compute budgets C in FLOPs (C = 6 · N_non-embedding · D).
    pub budgets: Vec<f64>,
    /// Keep only the runs whose tokens per parameter D/N lie in `[lo, hi]`: centres each
    /// budget's grid on its likely optimum and skips runs far from it (the smallest models at
    /// the largest budgets, the costliest runs of a grid). Dropped runs are listed by `plan`.
    #[serde(default)]
    pub tokens_per_param: Option<[f64; 2]>,
    /// How many of the sweep's `seeds` train at each budget (one count per budget, in the
    /// order of `budgets`: the first K seeds): e.g. `[4, 4, 4, 2]` replicates the cheap
    /// budgets four times and the costly one twice. Default: every seed at every budget.
    #[serde(default)]
    pub seeds_per_budget: Option<Vec<usize>>,
}

impl IsoFlopSpec {
    /// The seeds that train at budget `c` (one of `budgets`), out of the sweep's `seeds`.
    pub fn seeds_at(&self, c: f64, seeds: &[u64]) -> Vec<u64> {
        let k = self
            .budgets
            .iter()
            .position(|&b| b == c)
            .and_then(|i| self.seeds_per_budget.as_ref()?.get(i).copied());
        seeds[..k.unwrap_or(seeds.len()).min(seeds.len())].to_vec()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Linear warmup, then cosine decay to `min_lr_ratio · lr` at the run's last step.
    Cosine,
    /// Linear warmup, then constant.
    Constant,
    /// Warmup-stable-decay: warmup, constant at the peak, then a cooldown over the last
    /// `cooldown_fraction` of the run to `min_lr_ratio · lr`.
    Wsd,
}

/// The order in which a run reads its training windows. Either way a run reads exactly the
/// first D tokens of the stream (nested data stays nested).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataOrder {
    /// Front to back: batch k holds windows k·B .. (k+1)·B.
    Sequential,
    /// A seeded shuffle of the run's windows, the same for every run of equal D (in-memory
    /// corpora: all windows; the built-in stream: its chunks, and the windows within each).
    Shuffled,
    /// As `shuffled`, with the shuffle's seed taken from the run's seed: the seeds of one
    /// point read the same windows in different orders, so they are replicates of the data
    /// order as well as of the initialisation (README, "Design study").
    #[serde(rename = "shuffled_per_seed")]
    ShuffledPerSeed,
}

impl DataOrder {
    pub fn is_sequential(&self) -> bool {
        *self == DataOrder::Sequential
    }
}

/// The float type of a run's forward and backward passes (`training.precision`). The
/// parameters (master weights) and AdamW's moments stay f32 whatever it is, and the loss is
/// taken in f32 (README, "Precision").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The precision `as_str` names `s` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        [Precision::F32, Precision::Bf16, Precision::F16]
            .into_iter()
            .find(|p| p.as_str() == s)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

/// Measured: shuffled gave lower eval loss on Shakespeare bytes and on 3 of 4 built-in runs
/// (README, "Data order").
fn default_data_order() -> DataOrder {
    DataOrder::Shuffled
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CooldownShape {
    /// lr falls linearly.
    Linear,
    /// lr falls as 1 − sqrt(progress) (Hägele et al. 2024).
    Sqrt,
}

/// How the peak LR follows the model size.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LrScaling {
    /// `width`: lr · base_width / d_model. `compute`: k · C^p with C = 6ND of the run.
    /// `params`: k · N^p with N the run's non-embedding parameters. `params_tokens`:
    /// k · N^p · D^q (the form `scalelab hp` fits: its lr_nd law's c, a, b).
    pub rule: LrRule,
    #[serde(default = "default_base_width")]
    pub base_width: usize,
    #[serde(default)]
    pub k: Option<f64>,
    #[serde(default)]
    pub p: Option<f64>,
    /// The exponent of D (`params_tokens` only).
    #[serde(default)]
    pub q: Option<f64>,
    /// `params_tokens` from a fitted law: a results folder holding `hp_laws.json` (what
    /// `scalelab hp DIR` writes) or that file; k, p, q are its lr_nd law's c, a, b (read when
    /// the spec is loaded; a path relative to the working directory).
    #[serde(default)]
    pub law: Option<PathBuf>,
}

impl LrScaling {
    /// The rule in words, with its coefficients and (for a fitted law) its source.
    pub fn describe(&self) -> String {
        let num = coefficient;
        let base = match self.rule {
            LrRule::Width => format!("lr · {} / d_model", self.base_width),
            LrRule::Compute => format!("{} · C^{}", num(self.k), num(self.p)),
            LrRule::Params => format!("{} · N^{}", num(self.k), num(self.p)),
            LrRule::ParamsTokens => {
                format!("{} · N^{} · D^{}", num(self.k), num(self.p), num(self.q))
            }
        };
        with_law_source(base, &self.law)
    }

    /// With `law`: k, p, q from its `hp_laws.json`; the problem (key, file, fix) otherwise.
    fn resolve_law(&mut self) -> Result<(), String> {
        let Some(path) = self.law.clone() else {
            return Ok(());
        };
        let key = "training.lr_scaling.law";
        if self.rule != LrRule::ParamsTokens {
            return Err(format!(
                "{key}: a fitted law sets lr = c · N^a · D^b; use `rule: params_tokens`"
            ));
        }
        if self.k.is_some() || self.p.is_some() || self.q.is_some() {
            return Err(format!("{key}: give `law` or `k`, `p`, `q`, not both"));
        }
        let (c, e) = read_law(key, &path, "lr_nd")?;
        if e.len() != 2 {
            return Err(format!("{key}: the lr_nd law needs two exponents (N, D)"));
        }
        (self.k, self.p, self.q) = (Some(c), Some(e[0]), Some(e[1]));
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LrRule {
    Width,
    Compute,
    Params,
    #[serde(rename = "params_tokens")]
    ParamsTokens,
}

fn default_base_width() -> usize {
    64
}

/// Which parameter count and which compute the fit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NChoice {
    /// Non-embedding parameters (Kaplan).
    #[default]
    NonEmbedding,
    /// All parameters, embeddings and the (tied) head included.
    Total,
}

impl NChoice {
    /// The count this choice names, of a run's two.
    pub fn pick<T>(self, non_embedding: T, total: T) -> T {
        match self {
            NChoice::NonEmbedding => non_embedding,
            NChoice::Total => total,
        }
    }
}

/// Which compute the fit's C-based views use (IsoFLOP grouping without budgets, loss vs C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CChoice {
    /// C = 6 · N · D with the chosen N.
    #[default]
    SixNd,
    /// (6·(N + vocab·d) + 12·n_layer·context·d) · D: unembedding and attention included.
    Full,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FitSpec {
    /// `non_embedding` (default) or `total`.
    #[serde(default)]
    pub n: NChoice,
    /// `six_nd` (default) or `full`.
    #[serde(default)]
    pub c: CChoice,
    /// `free` (default) or `floor`: pin E to the built-in corpus's exact loss floor.
    #[serde(default)]
    pub e: EChoice,
}

/// The irreducible loss E of the fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EChoice {
    /// Fitted with the other parameters.
    #[default]
    Free,
    /// Fixed at `floor.json`'s nats per token (built-in corpus only).
    Floor,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Sequences per optimizer step.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Tokens per optimizer step (alternative to batch_size; rounded to whole sequences).
    #[serde(default)]
    pub batch_tokens: Option<f64>,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Warmup steps: min(warmup_steps, warmup_fraction · steps).
    #[serde(default = "default_warmup_steps")]
    pub warmup_steps: usize,
    #[serde(default = "default_warmup_fraction")]
    pub warmup_fraction: f64,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// The order in which a run reads its first D tokens' windows.
    #[serde(default = "default_data_order")]
    pub data_order: DataOrder,
    /// `f32` (default), `bf16` or `f16`: the forward and backward passes' float type.
    #[serde(default)]
    pub precision: Precision,
    /// Final LR of the cosine schedule as a fraction of the peak.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Evaluate every this many steps (and always at the end). 0: about 10 evals per run.
    #[serde(default)]
    pub eval_interval: usize,
    /// WSD: fraction of the run spent cooling down.
    #[serde(default = "default_cooldown_fraction")]
    pub cooldown_fraction: f64,
    /// WSD: `linear` or `sqrt` (1 − sqrt).
    #[serde(default = "default_cooldown_shape")]
    pub cooldown_shape: CooldownShape,
    /// Peak LR as a function of width or compute (applied to every run).
    #[serde(default)]
    pub lr_scaling: Option<LrScaling>,
    /// LR sweep: train every point with each of these peak LRs (multipliers of the scaled
    /// LR); all are logged, the best per point is `selected` and used by the fit.
    #[serde(default)]
    pub lr_multipliers: Vec<f64>,
    /// Peak-LR factor per model family on top of `lr_scaling` (and `lr_multipliers`), e.g.
    /// `{lstm: 3, mlp: 3}`: the LR laws are fitted on Transformers, and the other families
    /// train best at a multiple of them (README "Model families"). Absent families: 1.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub family_lr: std::collections::BTreeMap<FamilyKind, f64>,
    /// Batch-size grid (sequences per step, instead of `batch_size`): every point is trained
    /// with each, at the same D (steps = D / (batch · context)); with `lr_multipliers` the
    /// grid is LR × batch, and the best run per point over both is `selected`.
    #[serde(default)]
    pub batch_sizes: Vec<usize>,
    /// Batch size by data size: bs = k · D^q sequences per step (rounded, at least 1), or from
    /// a fitted law (`law: DIR`: the bs_d law of DIR/hp_laws.json).
    #[serde(default)]
    pub batch_scaling: Option<BatchScaling>,
}

/// `training.batch_scaling`: the batch size as a power law of the run's tokens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchScaling {
    #[serde(default)]
    pub k: Option<f64>,
    #[serde(default)]
    pub q: Option<f64>,
    /// A results folder holding `hp_laws.json` (or that file): k, q are its bs_d law's c, b.
    #[serde(default)]
    pub law: Option<PathBuf>,
}

impl BatchScaling {
    /// The rule in words, with its coefficients and (for a fitted law) its source.
    pub fn describe(&self) -> String {
        let base = format!(
            "{} · D^{} sequences",
            coefficient(self.k),
            coefficient(self.q)
        );
        with_law_source(base, &self.law)
    }

    /// Sequences per step for a run of `tokens` training tokens.
    pub fn batch_for(&self, tokens: f64) -> usize {
        let bs = self.k.unwrap_or(1.0) * tokens.powf(self.q.unwrap_or(0.0));
        (bs.round() as usize).max(1)
    }

    /// With `law`: k, q from its `hp_laws.json`; the problem otherwise.
    fn resolve_law(&mut self) -> Result<(), String> {
        let Some(path) = self.law.clone() else {
            return Ok(());
        };
        let key = "training.batch_scaling.law";
        if self.k.is_some() || self.q.is_some() {
            return Err(format!("{key}: give `law` or `k`, `q`, not both"));
        }
        let (c, e) = read_law(key, &path, "bs_d")?;
        (self.k, self.q) = (Some(c), Some(e[0]));
        Ok(())
    }
}

/// A rule's coefficient for [`LrScaling::describe`] / [`BatchScaling::describe`].
fn coefficient(v: Option<f64>) -> String {
    v.map_or("?".into(), |x| format!("{x:.4}"))
}

/// A rule's description, with the fitted law it came from (if any).
fn with_law_source(base: String, law: &Option<PathBuf>) -> String {
    match law {
        Some(l) => format!("{base}, the law `scalelab hp` fitted in {}", l.display()),
        None => base,
    }
}

/// A fitted power law of `hp_laws.json` (in `path`, a results folder, or the file itself):
/// its coefficient and exponents; the problem (key, file, fix) otherwise.
fn read_law(key: &str, path: &Path, name: &str) -> Result<(f64, Vec<f64>), String> {
    let file = if path.is_dir() {
        path.join("hp_laws.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{key}: cannot read {} ({e}); fit it first with `scalelab hp {}`",
            file.display(),
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let law = &v["laws"][name];
    let exps: Option<Vec<f64>> = law["exponents"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect());
    match (law["coef"].as_f64(), exps) {
        (Some(c), Some(e)) if c > 0.0 && !e.is_empty() => Ok((c, e)),
        _ => Err(format!(
            "{key}: {} has no {name} law (laws.{name}.coef and .exponents); is it `scalelab hp` output?",
            file.display()
        )),
    }
}

fn default_cooldown_fraction() -> f64 {
    0.2
}
fn default_cooldown_shape() -> CooldownShape {
    CooldownShape::Linear
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            batch_size: None,
            batch_tokens: None,
            lr: default_lr(),
            warmup_steps: default_warmup_steps(),
            warmup_fraction: default_warmup_fraction(),
            schedule: default_schedule(),
            data_order: default_data_order(),
            precision: Precision::F32,
            min_lr_ratio: default_min_lr_ratio(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            weight_decay: default_weight_decay(),
            grad_clip: default_grad_clip(),
            eval_interval: 0,
            cooldown_fraction: default_cooldown_fraction(),
            cooldown_shape: default_cooldown_shape(),
            lr_scaling: None,
            lr_multipliers: Vec::new(),
            family_lr: Default::default(),
            batch_sizes: Vec::new(),
            batch_scaling: None,
        }
    }
}

fn default_lr() -> f64 {
    3e-3
}
fn default_warmup_steps() -> usize {
    100
}
fn default_warmup_fraction() -> f64 {
    0.1
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_grad_clip() -> f64 {
    1.0
}

impl TrainingSpec {
    /// The batch sizes (sequences per step) the runs use, ascending: the grid, or the one.
    pub fn batch_list(&self, context: usize) -> Vec<usize> {
        let mut v = if self.batch_sizes.is_empty() {
            vec![self.sequences_per_step(context)]
        } else {
            self.batch_sizes.clone()
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Sequences per step for a given context length.
    pub fn sequences_per_step(&self, context: usize) -> usize {
        match (self.batch_size, self.batch_tokens) {
            (Some(b), _) => b,
            (None, Some(t)) => ((t / context as f64).round() as usize).max(1),
            (None, None) => 16,
        }
    }
}

/// Where a spec came from (for error messages and relative paths).
#[derive(Debug, Clone)]
pub struct SpecSource {
    /// Shown in messages: the file path, or `<built-in quick sweep>`.
    pub label: String,
    /// Directory that relative corpus paths are resolved against.
    pub base_dir: PathBuf,
    pub text: String,
}

impl SpecSource {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| user(format!("cannot read sweep spec {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = ok.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = ok.len() - ok.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
            user(format!(
                "{}: line {line}, column {column}: not UTF-8 text (byte offset {}); save the spec as UTF-8",
                path.display(),
                ok.len()
            ))
        })?;
        Ok(SpecSource {
            label: path.display().to_string(),
            base_dir: PathBuf::from("."),
            text,
        })
    }

    pub fn builtin_quick() -> Self {
        SpecSource {
            label: "<built-in sweeps/quick.yaml>".into(),
            base_dir: PathBuf::from("."),
            text: QUICK_YAML.into(),
        }
    }
}

impl SweepSpec {
    /// Parse and validate. Errors are [`crate::error::UserError`]s that name the file and key.
    pub fn parse(src: &SpecSource) -> anyhow::Result<SweepSpec> {
        let mut spec: SweepSpec = serde_saphyr::from_str(&src.text)
            .map_err(|e| user(explain_yaml_error(&src.label, &src.text, &e)))?;
        let mut problems = Vec::new();
        if let Some(ls) = &mut spec.training.lr_scaling {
            problems.extend(ls.resolve_law().err());
        }
        if let Some(bs) = &mut spec.training.batch_scaling {
            problems.extend(bs.resolve_law().err());
        }
        problems.extend(spec.problems(src));
        if !problems.is_empty() {
            let mut msg = format!("{}: invalid sweep spec:", src.label);
            for p in &problems {
                msg.push_str("\n  - ");
                msg.push_str(p);
            }
            return Err(user(msg));
        }
        Ok(spec)
    }

    /// The spec copied into a results folder (`sweep.yaml`), parsed without validation.
    pub fn from_results_dir(dir: &Path) -> Option<SweepSpec> {
        let text = std::fs::read_to_string(dir.join(crate::fsio::SWEEP_FILE)).ok()?;
        let mut spec: SweepSpec = serde_saphyr::from_str(&text).ok()?;
        if let Some(ls) = &mut spec.training.lr_scaling {
            let _ = ls.resolve_law();
        }
        if let Some(bs) = &mut spec.training.batch_scaling {
            let _ = bs.resolve_law();
        }
        Some(spec)
    }

    /// Every seed a point is trained with.
    pub fn seed_list(&self) -> Vec<u64> {
        match (&self.seeds, self.seed) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(s)) => vec![s],
            _ => vec![0],
        }
    }

    /// Output folder.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("results").join(&self.name))
    }

    /// Validation: every problem as "key: what is wrong; fix", one step per spec section.
    fn problems(&self, src: &SpecSource) -> Vec<String> {
        let mut p = Vec::new();
        self.name_and_seed_problems(&mut p);
        corpus_source_problems(&self.corpus, src, &mut p);
        corpus_vocab_problems(&self.corpus, &mut p);
        corpus_size_problems(&self.corpus, &mut p);
        baseline_problems(&self.baselines, &mut p);
        model_problems(&self.model, &mut p);
        model_size_problems(&self.model, vocab_estimate(&self.corpus), &mut p);
        data_problems(&self.data, self.seed_list().len(), &mut p);
        repeat_problem("seeds", self.seeds.as_deref().unwrap_or_default(), &mut p);
        repeat_problem("data.tokens", &self.data.tokens, &mut p);
        repeat_problem("data.tokens_per_param", &self.data.tokens_per_param, &mut p);
        if let Some(iso) = &self.data.isoflop {
            repeat_problem("data.isoflop.budgets", &iso.budgets, &mut p);
        }
        data_size_problems(&self.data, &self.model, &mut p);
        batch_problems(&self.training, self.model.context, &mut p);
        training_problems(&self.training, &mut p);
        schedule_problems(&self.training, &mut p);
        target_flops_problems(&self.target_flops, &mut p);
        branch_problems(&self.data, &self.training, &mut p);
        device_problems(&self.device, &mut p);
        slurm_problems(&self.slurm, &mut p);
        self.time_problems(&mut p);
        p
    }

    /// `budget_hours` and `flops_per_s`: positive numbers.
    fn time_problems(&self, p: &mut Vec<String>) {
        for (key, v, eg) in [
            ("budget_hours", self.budget_hours, "12"),
            ("flops_per_s", self.flops_per_s, "1.0e14"),
        ] {
            if let Some(v) = v.filter(|v| !(*v > 0.0 && v.is_finite())) {
                p.push(format!(
                    "{key}: {v} must be a positive number (e.g. `{key}: {eg}`)"
                ));
            }
        }
    }

    /// `name`, `seed` and `seeds`.
    fn name_and_seed_problems(&self, p: &mut Vec<String>) {
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            p.push(format!(
                "name: {:?} is not a usable folder name; use letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.seeds.is_some() && self.seed.is_some() {
            p.push("seed / seeds: give one of them, not both".into());
        }
        if self.seeds.as_ref().is_some_and(|s| s.is_empty()) {
            p.push(
                "seeds: the list is empty, so the runs would silently use the default seed; \
                 give at least one seed (e.g. `seeds: [0, 1, 2]`) or remove the key"
                    .into(),
            );
        }
    }
}

/// Data sizes (tokens) above this are refused: step counts and token streams are 64-bit
/// integers, and no CPU or GPU machine gets through more tokens than this in a sweep.
const MAX_TOKENS: f64 = 1e13;
/// Widest `d_model` accepted.
const MAX_D_MODEL: usize = 65_536;
/// Deepest `n_layer` accepted.
const MAX_N_LAYER: usize = 1_024;
/// Training memory accepted: 1 TiB.
const MAX_TRAIN_BYTES: f64 = 1_099_511_627_776.0;
/// f32 weights, gradients and two AdamW moments.
const BYTES_PER_PARAM: f64 = 16.0;

/// `corpus`: which corpus, and whether its files exist.
fn corpus_source_problems(c: &CorpusSpec, src: &SpecSource, p: &mut Vec<String>) {
    let named = [c.builtin.is_some(), c.text.is_some(), c.tokens.is_some()]
        .iter()
        .filter(|&&x| x)
        .count();
    if named > 1 {
        p.push("corpus: name one of `builtin`, `text` or `tokens`, not several".into());
    }
    if let Some(b) = &c.builtin {
        if b.topics == 0 || b.topics > 64 {
            p.push(format!(
                "corpus.builtin.topics: {} is out of range; use 1..=64",
                b.topics
            ));
        }
        if !(b.lexicon >= 0.01 && b.lexicon <= 8.0) {
            p.push(format!(
                "corpus.builtin.lexicon: {} is out of range; use 0.01..=8 (1.0 is the default 2,643-word lexicon)",
                b.lexicon
            ));
        }
        if !(b.zipf >= 0.0 && b.zipf <= 4.0) {
            p.push(format!(
                "corpus.builtin.zipf: {} is out of range; use 0..=4 (default 1.1)",
                b.zipf
            ));
        }
        if !(b.topic_stay >= 0.0 && b.topic_stay < 1.0) {
            p.push(format!(
                "corpus.builtin.topic_stay: {} is out of range; use 0 <= topic_stay < 1 (default 0.98)",
                b.topic_stay
            ));
        }
    }
    if let Some(t) = &c.text {
        let files = crate::fsio::expand_glob(t, &src.base_dir);
        if files.is_empty() || files.iter().any(|f| !f.is_file()) {
            p.push(format!(
                "corpus.text: no file matches {t:?} (relative to {}); check the path, folder or glob{}",
                src.base_dir.display(),
                if t.starts_with("data/") {
                    " (the example corpora are fetched with scripts/get-corpus.sh)"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(t) = &c.tokens {
        let f = src.base_dir.join(t);
        if !f.is_file() {
            p.push(format!(
                "corpus.tokens: file {} does not exist; check the path",
                f.display()
            ));
        }
    }
}

/// `corpus.tokenizer` and `corpus.vocab_size`.
fn corpus_vocab_problems(c: &CorpusSpec, p: &mut Vec<String>) {
    if c.tokenizer == TokenizerKind::Bpe && c.text.is_none() {
        p.push(
            "corpus.tokenizer: `bpe` tokenizes a `text` corpus; add `text:` or remove `tokenizer`"
                .into(),
        );
    }
    if c.tokens.is_some() && c.vocab_size.is_none() {
        p.push(
            "corpus.vocab_size: required with `tokens`; set it to the tokenizer's vocabulary size"
                .into(),
        );
    }
    if c.vocab_size.is_some() && c.tokens.is_none() && c.tokenizer != TokenizerKind::Bpe {
        p.push("corpus.vocab_size: only used with `tokens` or `tokenizer: bpe` (byte-level corpora have vocab 256); remove it".into());
    }
    if c.tokenizer == TokenizerKind::Bpe && c.vocab_size.is_some_and(|v| v < 257) {
        p.push("corpus.vocab_size: a byte-level BPE vocabulary starts from 256 bytes; use at least 257 (e.g. 4096)".into());
    }
    if let Some(v) = c.vocab_size {
        if !(2..=65536).contains(&v) {
            p.push(format!(
                "corpus.vocab_size: {v} is out of range; u16 tokens allow 2..=65536"
            ));
        }
    }
}

/// A list that names one value twice (`seeds: [1, 1]`): it would plan those runs once, not
/// twice, and say nothing.
fn repeat_problem<T: PartialEq + std::fmt::Display>(key: &str, v: &[T], p: &mut Vec<String>) {
    for (j, x) in v.iter().enumerate() {
        if let Some(i) = v[..j].iter().position(|y| y == x) {
            p.push(format!(
                "{key}[{j}]: {x} repeats {key}[{i}]; a value plans its runs once, so remove the repeat"
            ));
            return;
        }
    }
}

/// `corpus.train_tokens`, `corpus.eval_tokens` and `corpus.eval_fraction`.
fn corpus_size_problems(c: &CorpusSpec, p: &mut Vec<String>) {
    if let Some(u) = c.train_tokens {
        if !(u >= 1.0 && u.is_finite()) {
            p.push(format!(
                "corpus.train_tokens: {u} must be a positive number of unique training tokens"
            ));
        }
    }
    if !(c.eval_tokens >= 1.0 && c.eval_tokens.is_finite()) {
        p.push(format!(
            "corpus.eval_tokens: {} must be a positive number of tokens",
            c.eval_tokens
        ));
    } else if c.eval_tokens > MAX_TOKENS {
        p.push(too_many_tokens(
            "corpus.eval_tokens",
            "",
            c.eval_tokens,
            "use far fewer eval tokens (the default is 16384)",
        ));
    }
    if !(c.eval_fraction > 0.0 && c.eval_fraction < 0.5) {
        p.push(format!(
            "corpus.eval_fraction: {} must be in (0, 0.5)",
            c.eval_fraction
        ));
    }
}

/// `baselines`.
fn baseline_problems(b: &BaselineSpec, p: &mut Vec<String>) {
    if b.orders.iter().any(|&o| o == 0 || o > 8) {
        p.push("baselines.orders: n-gram orders must be in 1..=8".into());
    }
    if b.tokens.iter().any(|&d| !(d >= 1.0 && d.is_finite())) || !(b.max_tokens >= 1.0) {
        p.push("baselines.tokens / max_tokens: must be positive numbers of tokens".into());
    }
    for (i, &d) in b.tokens.iter().enumerate() {
        if d.is_finite() && d > MAX_TOKENS {
            p.push(too_many_tokens(
                &format!("baselines.tokens[{i}]"),
                "",
                d,
                "use a smaller training size",
            ));
        }
    }
}

/// `model`: the context, and that every shape is well formed.
fn model_problems(m: &ModelSpec, p: &mut Vec<String>) {
    if m.context < 2 || m.context > 8192 {
        p.push(format!(
            "model.context: {} is out of range; use 2..=8192",
            m.context
        ));
    }
    if m.shapes.is_empty() && m.grid.is_none() {
        p.push("model: no models; add `shapes:` (a list of {d_model, n_layer, n_head}) or `grid:` (widths × depths)".into());
    }
    for (i, s) in m.shapes.iter().enumerate() {
        let key = format!("model.shapes[{i}]");
        family_key_problems(s, &key, m.context, p);
        check_shape(p, &key, s.d_model, s.n_layer, s.n_head.unwrap_or(1), s.d_ff);
    }
    let non_transformer = m.shapes.iter().any(|s| s.family != FamilyKind::Transformer);
    if m.parametrization == ParamKind::Mup && non_transformer {
        p.push(
            "model.parametrization: `mup` is implemented for the transformer family only; remove it or the lstm / mlp shapes".into(),
        );
    }
    if let Some(g) = &m.grid {
        grid_problems(g, p);
    }
    match (m.parametrization, m.base_width) {
        (ParamKind::Mup, None) => p.push(
            "model.base_width: `parametrization: mup` needs the width at which μP equals the standard model; add e.g. `base_width: 32`".into(),
        ),
        (ParamKind::Mup, Some(0)) => {
            p.push("model.base_width: must be positive; use e.g. `base_width: 32`".into())
        }
        (ParamKind::Standard, Some(_)) => p.push(
            "model.base_width: only used with `parametrization: mup`; add that or remove `base_width`".into(),
        ),
        _ => {}
    }
}

/// `model.shapes[i]`: the keys its family needs and the ones it does not take.
fn family_key_problems(s: &ShapeSpec, key: &str, context: usize, p: &mut Vec<String>) {
    let fam = s.family.as_str();
    let unused = |p: &mut Vec<String>, name: &str, set: bool| {
        if set {
            p.push(format!(
                "{key}.{name}: not used by `family: {fam}`; remove it (or use a family that has it)"
            ));
        }
    };
    match s.family {
        FamilyKind::Transformer => {
            if s.n_head.is_none() {
                p.push(format!(
                    "{key}.n_head: a transformer needs its number of attention heads; add e.g. `n_head: 2`"
                ));
            }
            unused(p, "window", s.window.is_some());
            unused(p, "direct", s.direct.is_some());
        }
        FamilyKind::Lstm => {
            unused(p, "n_head", s.n_head.is_some());
            unused(p, "d_ff", s.d_ff.is_some());
            unused(p, "window", s.window.is_some());
            unused(p, "direct", s.direct.is_some());
        }
        FamilyKind::Mlp => {
            unused(p, "n_head", s.n_head.is_some());
            match s.window {
                None => p.push(format!(
                    "{key}.window: `family: mlp` needs how many previous tokens it sees; add e.g. `window: 8`"
                )),
                Some(w) if w == 0 || w > context => p.push(format!(
                    "{key}.window: {w} is out of range; use 1..={context} (model.context)"
                )),
                Some(_) => {}
            }
        }
    }
}

/// `model.grid`.
fn grid_problems(g: &GridSpec, p: &mut Vec<String>) {
    if g.widths.is_empty() || g.depths.is_empty() {
        p.push("model.grid: widths and depths must both be non-empty lists".into());
    }
    if g.head_dim == 0 {
        p.push("model.grid.head_dim: must be positive".into());
    } else {
        for (i, &w) in g.widths.iter().enumerate() {
            if w == 0 || w % g.head_dim != 0 {
                p.push(format!(
                    "model.grid.widths[{i}]: {w} is not a positive multiple of head_dim {}; \
                     use a multiple of {} or change head_dim",
                    g.head_dim, g.head_dim
                ));
            }
        }
    }
    for (i, &d) in g.depths.iter().enumerate() {
        if d == 0 {
            p.push(format!("model.grid.depths[{i}]: must be at least 1"));
        }
    }
}

/// `model`: shapes too large to train (width, depth, and training memory).
fn model_size_problems(m: &ModelSpec, vocab: usize, p: &mut Vec<String>) {
    for (i, s) in m.shapes.iter().enumerate() {
        let key = format!("model.shapes[{i}]");
        let before = p.len();
        if s.d_model > MAX_D_MODEL {
            p.push(format!(
                "{key}.d_model: {} is above the cap of {MAX_D_MODEL}; use a smaller width",
                s.d_model
            ));
        }
        if s.n_layer > MAX_N_LAYER {
            p.push(format!(
                "{key}.n_layer: {} is above the cap of {MAX_N_LAYER}; use fewer layers",
                s.n_layer
            ));
        }
        if p.len() == before {
            let fix = "use a smaller d_model, d_ff or n_layer";
            p.extend(memory_problem(
                &key, s.d_model, s.n_layer, s.d_ff, vocab, m.context, fix,
            ));
        }
    }
    let Some(g) = &m.grid else { return };
    let before = p.len();
    for (i, &w) in g.widths.iter().enumerate() {
        if w > MAX_D_MODEL {
            p.push(format!(
                "model.grid.widths[{i}]: {w} is above the d_model cap of {MAX_D_MODEL}; use a smaller width"
            ));
        }
    }
    for (i, &l) in g.depths.iter().enumerate() {
        if l > MAX_N_LAYER {
            p.push(format!(
                "model.grid.depths[{i}]: {l} is above the n_layer cap of {MAX_N_LAYER}; use fewer layers"
            ));
        }
    }
    let widest = g.widths.iter().copied().max().unwrap_or(0);
    let deepest = g.depths.iter().copied().max().unwrap_or(0);
    if p.len() == before {
        let fix = "drop the largest widths or depths";
        let key = "model.grid.widths / depths (largest width × largest depth)";
        p.extend(memory_problem(
            key, widest, deepest, None, vocab, m.context, fix,
        ));
    }
}

/// A problem when training the shape needs more than [`MAX_TRAIN_BYTES`] of memory.
fn memory_problem(
    key: &str,
    d: usize,
    l: usize,
    d_ff: Option<usize>,
    vocab: usize,
    context: usize,
    fix: &str,
) -> Option<String> {
    let n = non_embedding_params(d, l, d_ff) + ((vocab + context) as f64) * d as f64;
    let bytes = n * BYTES_PER_PARAM;
    (bytes > MAX_TRAIN_BYTES).then(|| {
        format!(
            "{key}: d_model {d} × n_layer {l} has about {n:.3e} parameters, so training needs about \
             {:.1} TiB of memory (16 bytes per parameter: f32 weights, gradients and two AdamW \
             moments), above the cap of 1 TiB; {fix}",
            bytes / MAX_TRAIN_BYTES
        )
    })
}

/// Non-embedding parameters of a shape (blocks + final LayerNorm), counted as
/// `plan::Shape::non_embedding_params` does, in f64 so absurd shapes cannot overflow.
fn non_embedding_params(d: usize, l: usize, d_ff: Option<usize>) -> f64 {
    let d = d as f64;
    let f = d_ff.map_or(4.0 * d, |f| f as f64);
    l as f64 * (4.0 * d * d + 2.0 * d * f + 9.0 * d + f) + 2.0 * d
}

/// The vocabulary the corpus will have, as far as the spec says (for the memory estimate).
fn vocab_estimate(c: &CorpusSpec) -> usize {
    match (c.vocab_size, c.tokenizer) {
        (Some(v), _) => v,
        (None, TokenizerKind::Bpe) => 4096,
        (None, TokenizerKind::Byte) => 256,
    }
}

/// `data.isoflop.seeds_per_budget`: one count per budget, each 1 ..= the number of seeds.
fn seeds_per_budget_problems(iso: &IsoFlopSpec, n_seeds: usize, p: &mut Vec<String>) {
    let Some(k) = &iso.seeds_per_budget else {
        return;
    };
    if k.len() != iso.budgets.len() {
        p.push(format!(
            "data.isoflop.seeds_per_budget: {} counts for {} budgets; give one count per budget, in the order of `budgets`",
            k.len(),
            iso.budgets.len()
        ));
    }
    for (i, &k) in k.iter().enumerate() {
        if !(1..=n_seeds).contains(&k) {
            p.push(format!(
                "data.isoflop.seeds_per_budget[{i}]: {k} must be between 1 and the sweep's {n_seeds} seed(s) (`seeds`, or `seed`: one; the first K seeds train at that budget)"
            ));
        }
    }
}

/// "key: what 1.000e30 tokens is above the cap …; fix".
fn too_many_tokens(key: &str, what: &str, tokens: f64, fix: &str) -> String {
    format!(
        "{key}: {what}{tokens:.3e} tokens is above the cap of {MAX_TOKENS:.0e} tokens (step counts \
         and token streams are 64-bit integers, and a run this long is far beyond any CPU or GPU \
         machine); {fix}"
    )
}

/// `data`: which mode, and that every size is a positive number.
fn data_problems(d: &DataSpec, n_seeds: usize, p: &mut Vec<String>) {
    let modes = usize::from(!d.tokens.is_empty() || !d.tokens_per_param.is_empty())
        + usize::from(d.isoflop.is_some());
    if modes == 0 {
        p.push("data: no data sizes; add `tokens: [...]`, `tokens_per_param: [...]` or `isoflop: {budgets: [...]}`".into());
    }
    if modes > 1 {
        p.push("data: `isoflop` cannot be combined with `tokens` / `tokens_per_param`; use separate sweeps".into());
    }
    for (i, &t) in d.tokens.iter().enumerate() {
        if !(t >= 1.0 && t.is_finite()) {
            p.push(format!(
                "data.tokens[{i}]: {t} must be a positive number of tokens (e.g. 2e5)"
            ));
        }
    }
    for (i, &t) in d.tokens_per_param.iter().enumerate() {
        if !(t > 0.0 && t.is_finite()) {
            p.push(format!(
                "data.tokens_per_param[{i}]: {t} must be positive (e.g. 20)"
            ));
        }
    }
    if let Some(iso) = &d.isoflop {
        if iso.budgets.is_empty() {
            p.push("data.isoflop.budgets: give at least one compute budget in FLOPs (e.g. [1e13, 3e13])".into());
        }
        for (i, &b) in iso.budgets.iter().enumerate() {
            if !(b > 0.0 && b.is_finite()) {
                p.push(format!(
                    "data.isoflop.budgets[{i}]: {b} must be a positive number of FLOPs"
                ));
            }
            if iso.budgets[..i].contains(&b) {
                p.push(format!(
                    "data.isoflop.budgets[{i}]: {b:e} is listed twice; give each budget once"
                ));
            }
        }
        if let Some([lo, hi]) = iso.tokens_per_param {
            if !(lo > 0.0 && hi > lo && hi.is_finite()) {
                p.push(format!(
                    "data.isoflop.tokens_per_param: [{lo}, {hi}] must be [lo, hi] with 0 < lo < hi (e.g. [10, 400])"
                ));
            }
        }
        seeds_per_budget_problems(iso, n_seeds, p);
    }
    if d.min_steps == 0 {
        p.push("data.min_steps: must be at least 1".into());
    }
}

/// `data`: sizes no machine can train, so the plan is never built for them.
fn data_size_problems(d: &DataSpec, m: &ModelSpec, p: &mut Vec<String>) {
    for (i, &t) in d.tokens.iter().enumerate() {
        if t.is_finite() && t > MAX_TOKENS {
            let fix = "use at most 1e13 tokens per run";
            p.push(too_many_tokens(&format!("data.tokens[{i}]"), "", t, fix));
        }
    }
    let sizes = shape_sizes(m);
    let by_n = |a: &&(String, f64), b: &&(String, f64)| a.1.total_cmp(&b.1);
    if let Some((label, n)) = sizes.iter().max_by(by_n) {
        for (i, &r) in d.tokens_per_param.iter().enumerate() {
            if r.is_finite() && r * n > MAX_TOKENS {
                let what = format!(
                    "{r} × {n:.3e} non-embedding parameters of the largest shape ({label}) = "
                );
                let fix = "lower it, or use smaller shapes";
                let key = format!("data.tokens_per_param[{i}]");
                p.push(too_many_tokens(&key, &what, r * n, fix));
            }
        }
    }
    let (Some(iso), Some((label, n))) = (&d.isoflop, sizes.iter().min_by(by_n)) else {
        return;
    };
    for (i, &c) in iso.budgets.iter().enumerate() {
        let tokens = c / (6.0 * n);
        if c.is_finite() && tokens > MAX_TOKENS {
            let what = format!(
                "{c:.3e} FLOPs / (6 × {n:.3e} non-embedding parameters of the smallest shape ({label})) = "
            );
            let fix = "lower the budget, or drop the smallest shapes";
            let key = format!("data.isoflop.budgets[{i}]");
            p.push(too_many_tokens(&key, &what, tokens, fix));
        }
    }
}

/// (label, non-embedding parameters) of every well-formed shape the spec names.
fn shape_sizes(m: &ModelSpec) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = m
        .shapes
        .iter()
        .filter(|s| s.d_model > 0 && s.n_layer > 0)
        .map(|s| {
            let n = non_embedding_params(s.d_model, s.n_layer, s.d_ff);
            (format!("d{}-L{}", s.d_model, s.n_layer), n)
        })
        .collect();
    if let Some(g) = &m.grid {
        for &w in g.widths.iter().filter(|&&w| w > 0) {
            for &l in g.depths.iter().filter(|&&l| l > 0) {
                v.push((format!("d{w}-L{l}"), non_embedding_params(w, l, None)));
            }
        }
    }
    v
}

/// `training.batch_size` / `training.batch_tokens`.
fn batch_problems(t: &TrainingSpec, context: usize, p: &mut Vec<String>) {
    if t.batch_size == Some(0) {
        p.push("training.batch_size: must be at least 1 sequence".into());
    }
    if t.batch_size.is_some() && t.batch_tokens.is_some() {
        p.push("training: give batch_size (sequences) or batch_tokens, not both".into());
    }
    if let Some(bt) = t.batch_tokens {
        if !(bt >= 1.0 && bt.is_finite()) {
            p.push(format!("training.batch_tokens: {bt} must be positive"));
        } else if bt > MAX_TOKENS {
            let fix = "use a smaller batch";
            p.push(too_many_tokens("training.batch_tokens", "", bt, fix));
        }
    }
    if let Some(b) = t.batch_size {
        let tokens = b as f64 * context as f64;
        if tokens > MAX_TOKENS {
            let what = format!("{b} sequences × context {context} = ");
            let fix = "use a smaller batch";
            p.push(too_many_tokens("training.batch_size", &what, tokens, fix));
        }
    }
    if let Some(bs) = &t.batch_scaling {
        if !t.batch_sizes.is_empty() || t.batch_size.is_some() || t.batch_tokens.is_some() {
            p.push("training: batch_scaling sets every run's batch; drop batch_size / batch_tokens / batch_sizes".into());
        }
        if bs.law.is_none() && (bs.k.is_none() || bs.q.is_none()) {
            p.push(
                "training.batch_scaling: needs `k` and `q` (bs = k · D^q sequences), or `law: DIR`"
                    .into(),
            );
        }
    }
    if !t.batch_sizes.is_empty() && (t.batch_size.is_some() || t.batch_tokens.is_some()) {
        p.push(
            "training: give batch_sizes (a grid) or batch_size / batch_tokens (one), not both"
                .into(),
        );
    }
    for (i, &b) in t.batch_sizes.iter().enumerate() {
        let tokens = b as f64 * context as f64;
        if b == 0 {
            p.push(format!(
                "training.batch_sizes[{i}]: must be at least 1 sequence (e.g. [8, 16, 32])"
            ));
        } else if tokens > MAX_TOKENS {
            let key = format!("training.batch_sizes[{i}]");
            let what = format!("{b} sequences × context {context} = ");
            p.push(too_many_tokens(&key, &what, tokens, "use a smaller batch"));
        }
    }
}

/// `training`: the optimizer settings.
fn training_problems(t: &TrainingSpec, p: &mut Vec<String>) {
    if !(t.lr > 0.0 && t.lr < 10.0) {
        p.push(format!(
            "training.lr: {} must be in (0, 10); typical values are 1e-4 to 1e-2",
            t.lr
        ));
    }
    if !(0.0..1.0).contains(&t.warmup_fraction) {
        p.push(format!(
            "training.warmup_fraction: {} must be in [0, 1)",
            t.warmup_fraction
        ));
    }
    if !(0.0..=1.0).contains(&t.min_lr_ratio) {
        p.push(format!(
            "training.min_lr_ratio: {} must be in [0, 1]",
            t.min_lr_ratio
        ));
    }
    for (k, v) in [("beta1", t.beta1), ("beta2", t.beta2)] {
        if !(0.0..1.0).contains(&v) {
            p.push(format!("training.{k}: {v} must be in [0, 1)"));
        }
    }
    if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
        p.push(format!(
            "training.weight_decay: {} must be >= 0",
            t.weight_decay
        ));
    }
    if !(t.grad_clip >= 0.0 && t.grad_clip.is_finite()) {
        p.push(format!(
            "training.grad_clip: {} must be >= 0 (0 disables clipping)",
            t.grad_clip
        ));
    }
}

/// `training`: cooldown, LR sweep and LR scaling.
fn schedule_problems(t: &TrainingSpec, p: &mut Vec<String>) {
    if !(t.cooldown_fraction > 0.0 && t.cooldown_fraction < 1.0) {
        p.push(format!(
            "training.cooldown_fraction: {} must be in (0, 1)",
            t.cooldown_fraction
        ));
    }
    for (i, &m) in t.lr_multipliers.iter().enumerate() {
        if !(m > 0.0 && m.is_finite()) {
            p.push(format!(
                "training.lr_multipliers[{i}]: {m} must be positive (e.g. [0.5, 1, 2])"
            ));
        }
    }
    for (fam, &m) in &t.family_lr {
        if !(m > 0.0 && m.is_finite()) {
            p.push(format!(
                "training.family_lr.{fam}: {m} must be positive (e.g. {{lstm: 3, mlp: 3}})"
            ));
        }
    }
    if let Some(ls) = &t.lr_scaling {
        match ls.rule {
            LrRule::Width if ls.base_width == 0 => {
                p.push("training.lr_scaling.base_width: must be positive".into())
            }
            LrRule::Compute if ls.k.is_none() || ls.p.is_none() => p.push(
                "training.lr_scaling: rule `compute` needs `k` and `p` (lr = k · C^p, e.g. k: 0.3, p: -0.125)".into(),
            ),
            LrRule::Params if ls.k.is_none() || ls.p.is_none() => p.push(
                "training.lr_scaling: rule `params` needs `k` and `p` (lr = k · N^p, e.g. k: 0.047, p: -0.141)".into(),
            ),
            LrRule::ParamsTokens
                if ls.law.is_none() && (ls.k.is_none() || ls.p.is_none() || ls.q.is_none()) =>
            {
                p.push(
                "training.lr_scaling: rule `params_tokens` needs `k`, `p` and `q` (lr = k · N^p · D^q, e.g. from `scalelab hp`: k = c, p = a, q = b), or `law: DIR`".into(),
            )
            }
            _ => {}
        }
    }
}

/// `target_flops`.
fn target_flops_problems(target_flops: &[f64], p: &mut Vec<String>) {
    for (i, &c) in target_flops.iter().enumerate() {
        if !(c > 0.0 && c.is_finite()) {
            p.push(format!(
                "target_flops[{i}]: {c} must be a positive number of FLOPs (e.g. 1e21)"
            ));
        }
    }
}

/// `data.branches`, which needs a WSD schedule and fixed data sizes.
fn branch_problems(d: &DataSpec, t: &TrainingSpec, p: &mut Vec<String>) {
    if d.branches && t.schedule != Schedule::Wsd {
        p.push("data.branches: cooldown branches need `training.schedule: wsd`".into());
    }
    if d.branches && (!t.batch_sizes.is_empty() || t.batch_scaling.is_some()) {
        p.push("data.branches: not available with a training.batch_sizes grid (the branches of a group share one stable run, so one batch size)".into());
    }
    if d.branches && d.isoflop.is_some() {
        p.push(
            "data.branches: not available in IsoFLOP mode; use `tokens` or `tokens_per_param`"
                .into(),
        );
    }
}

/// `device`.
fn device_problems(device: &str, p: &mut Vec<String>) {
    if crate::device::DeviceChoice::parse(device).is_err() {
        p.push(format!(
            "device: {device:?} is not a device; use `cpu`, `cuda`, `cuda:K` or `vulkan`"
        ));
    }
}

/// `slurm` defaults.
fn slurm_problems(sl: &SlurmSpec, p: &mut Vec<String>) {
    if let Some(t) = &sl.time {
        if !valid_slurm_time(t) {
            p.push(format!(
                "slurm.time: {t:?} is not a Slurm time limit; write HH:MM:SS or D-HH:MM:SS, e.g. \"04:00:00\""
            ));
        }
    }
    if sl.max_parallel == Some(0) {
        p.push("slurm.max_parallel: must be at least 1 (tasks running at once)".into());
    }
    if sl.cpus_per_task == Some(0) {
        p.push("slurm.cpus_per_task: must be at least 1".into());
    }
}

fn check_shape(p: &mut Vec<String>, key: &str, d: usize, l: usize, h: usize, dff: Option<usize>) {
    if d == 0 {
        p.push(format!("{key}.d_model: must be positive"));
    }
    if l == 0 {
        p.push(format!("{key}.n_layer: must be at least 1"));
    }
    if h == 0 {
        p.push(format!("{key}.n_head: must be at least 1"));
    } else if !d.is_multiple_of(h) {
        p.push(format!(
            "{key}: d_model {d} is not divisible by n_head {h}; pick n_head dividing d_model (e.g. {})",
            (1..=h).rev().find(|&x| d.is_multiple_of(x)).unwrap_or(1)
        ));
    }
    if dff == Some(0) {
        p.push(format!(
            "{key}.d_ff: must be positive (default 4 · d_model)"
        ));
    }
}

/// Where a YAML error is, for its message: the spec's label, "line L, column C: " (or
/// nothing), the spec's text and the 1-based (line, column).
struct Site<'a> {
    label: &'a str,
    loc: String,
    text: &'a str,
    at: Option<(usize, usize)>,
}

/// Turn a YAML / serde error into "file: line L, column C: unknown key `a.b.c`; did you mean `x`?".
/// The library's own wording is kept only where it says nothing about its API or Rust types.
fn explain_yaml_error(label: &str, text: &str, err: &serde_saphyr::Error) -> String {
    let location = err.location().filter(|l| l.line() > 0);
    let line = location.map(|l| l.line() as usize);
    let loc = match location {
        Some(l) => format!("line {}, column {}: ", l.line(), l.column()),
        None => String::new(),
    };
    let at = location.map(|l| (l.line() as usize, l.column() as usize));
    let site = Site {
        label,
        loc: loc.clone(),
        text,
        at,
    };
    match inner_yaml_error(err) {
        serde_saphyr::Error::SerdeUnknownField { field, expected, .. } => {
            let path = match (line, at) {
                (Some(l), Some((_, column))) => key_path_at(text, l, field)
                    .or_else(|| flow_mapping_path(text, l, column).map(|p| format!("{p}.{field}")))
                    .unwrap_or_else(|| field.clone()),
                _ => field.clone(),
            };
            let hint = match nearest(field, expected.iter().copied()) {
                Some(n) => format!("; did you mean `{n}`?"),
                None => ".".into(),
            };
            format!(
                "{label}: {loc}unknown key `{path}`{hint} Valid keys here: {}.",
                expected.join(", ")
            )
        }
        serde_saphyr::Error::SerdeMissingField { field, .. } => format!(
            "{label}: {loc}missing required key `{field}`; add it (see sweeps/quick.yaml for a complete example)"
        ),
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => {
            duplicate_key_message(&site, key.as_deref())
        }
        serde_saphyr::Error::Message { msg, .. } if msg.starts_with("duplicate field `") => {
            let key = msg.split('`').nth(1);
            duplicate_key_message(&site, key)
        }
        serde_saphyr::Error::InvalidScalar { ty, .. } => {
            bad_scalar_message(&site, ty)
        }
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => unknown_choice_message(&site, variant, expected),
        serde_saphyr::Error::MultipleDocuments { .. } => format!(
            "{label}: {loc}the file holds more than one YAML document (a `---` line); \
             a sweep spec is one document, so remove the `---` and what follows or split the file"
        ),
        other => {
            let msg = other.to_string();
            let said = without_library_advice(first_line(&msg));
            structure_message(&site, said)
                .or_else(|| indentation_message(&site, said))
                .unwrap_or_else(|| format!("{label}: {loc}{said}"))
        }
    }
}

/// A value of the wrong shape (a number where a list goes, a list where a mapping goes, an
/// empty file): the key it belongs to and the shape it needs, instead of the parser's
/// "expected sequence start".
fn structure_message(site: &Site, said: &str) -> Option<String> {
    let (label, loc, text, at) = (site.label, &site.loc, site.text, site.at);
    if text.trim().is_empty() {
        return Some(format!(
            "{label}: the spec is empty; start from sweeps/quick.yaml (a complete example)"
        ));
    }
    let wanted = if said.contains("expected sequence") {
        "a list, e.g. `[1, 2]` or one `- item` per line"
    } else if said.contains("expected mapping") {
        "`key: value` lines (a mapping)"
    } else if said.contains("expected string") {
        "a text value"
    } else {
        return None;
    };
    let path = at.and_then(|(line, column)| key_path_before(text, line, column));
    Some(match path {
        Some(p) => format!("{label}: {loc}`{p}` needs {wanted}; see sweeps/quick.yaml for the layout"),
        None => format!(
            "{label}: {loc}a sweep spec is `key: value` lines (name:, corpus:, model:, data:, training:); this is not: start from sweeps/quick.yaml"
        ),
    })
}

/// The parser's "did not find expected key" / "mapping values are not allowed in this
/// context": a line indented unlike its neighbours. Says which line and where the lines above
/// it start, instead of the parser's state.
fn indentation_message(site: &Site, said: &str) -> Option<String> {
    let (label, loc, text, at) = (site.label, &site.loc, site.text, site.at);
    let parser_state = [
        "did not find expected key",
        "mapping values are not allowed",
    ];
    if !parser_state.iter().any(|m| said.contains(m)) {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let line = at?.0;
    let here = lines.get(line.checked_sub(1)?)?;
    if let Some((key, value)) = here.split_once(": ") {
        let quoted_or_flow = |c: char| "{\"'".contains(c);
        if value.contains(": ") && !value.trim_start().starts_with(quoted_or_flow) {
            let path = key_path_before(text, line, key.len() + 2)
                .unwrap_or_else(|| key.trim().to_string());
            return Some(format!(
                "{label}: {loc}the value of `{path}` holds `: `, which YAML reads as another key; quote the value (e.g. `{}: \"{}\"`)",
                key.trim().trim_start_matches("- "),
                value.trim()
            ));
        }
    }
    let column = |l: &str| l.len() - l.trim_start().len() + 1;
    let this = column(here);
    let above = lines[..line - 1]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(k, l)| format!(", line {}'s in column {}", k + 1, column(l)))
        .unwrap_or_default();
    Some(format!(
        "{label}: {loc}line {line} is indented unlike the lines around it (its text starts in column {this}{above}): keys of one mapping start in the same column and a nested key starts deeper than its parent (YAML nests by indentation)"
    ))
}

/// The error itself, without the snippet and alias wrappers.
fn inner_yaml_error(err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    match err {
        serde_saphyr::Error::WithSnippet { error, .. }
        | serde_saphyr::Error::AliasError { error, .. } => inner_yaml_error(error),
        other => other,
    }
}

/// "key `a.b` appears twice in the same mapping; keep one".
fn duplicate_key_message(site: &Site, key: Option<&str>) -> String {
    let (label, loc, text, at) = (site.label, &site.loc, site.text, site.at);
    let path = at.and_then(|(line, column)| {
        // The location is the key's; the path is read through the colon that ends it.
        let rest: Vec<char> = text.lines().nth(line.checked_sub(1)?)?.chars().collect();
        let colon = (column.saturating_sub(1)..rest.len()).find(|&i| rest[i] == ':')?;
        key_path_before(text, line, colon + 2)
    });
    match path.as_deref().or(key) {
        Some(path) => {
            format!("{label}: {loc}key `{path}` appears twice in the same mapping; keep one")
        }
        None => format!("{label}: {loc}a key appears twice in the same mapping; keep one"),
    }
}

/// A value outside a closed set, e.g. `schedule: cosin`: "`training.schedule`: `cosin` is not
/// one of cosine, constant, wsd; use one of them".
fn unknown_choice_message(site: &Site, value: &str, expected: &[&str]) -> String {
    let (label, loc, text, at) = (site.label, &site.loc, site.text, site.at);
    let choices = expected.join(", ");
    let path = at.and_then(|(line, column)| key_path_before(text, line, column));
    let key = path.map(|p| format!("`{p}`: ")).unwrap_or_default();
    format!("{label}: {loc}{key}`{value}` is not one of {choices}; use one of them")
}

/// A value that does not parse as its field's type, e.g. `checkpoint: {every: -5}`.
fn bad_scalar_message(site: &Site, ty: &str) -> String {
    let (label, loc, text, at) = (site.label, &site.loc, site.text, site.at);
    let path = at.and_then(|(line, column)| key_path_before(text, line, column));
    if let Some(next) = at.and_then(|(line, _)| continued_on(text, line)) {
        let key = path
            .map(|p| format!("`{p}`"))
            .unwrap_or_else(|| "this key".into());
        return format!(
            "{label}: {loc}line {next} is indented deeper than {key} above it, so YAML reads it as the rest of {key}'s value; indent line {next} like the key it belongs beside (YAML nests by indentation)"
        );
    }
    let key = path.map(|p| format!("`{p}`: ")).unwrap_or_default();
    let value = at
        .and_then(|(line, column)| scalar_at(text, line, column))
        .map(|v| format!("{v} "))
        .unwrap_or_else(|| "this value ".into());
    let fix = match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => {
            "use a whole number ≥ 0 (or ≥ 1 where it is a count)"
        }
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "use a whole number",
        "floating point" => "use a finite number, e.g. 0.001 or 2e5",
        "bool" => "use true or false",
        _ => "check the value against sweeps/quick.yaml",
    };
    format!("{label}: {loc}{key}{value}is not allowed here; {fix}")
}

/// How many flow collections (`{…}`, `[…]`) are open just before 1-based `line`, `column`,
/// counted from the start of the document (quoted text and comments skipped), so a flow list
/// that spans lines is seen as one.
fn flow_depth(text: &str, line: usize, column: usize) -> i32 {
    let mut depth = 0;
    for (k, l) in text.lines().take(line).enumerate() {
        let mut quote = None;
        let mut prev = ' ';
        let take = if k + 1 == line {
            column.saturating_sub(1)
        } else {
            usize::MAX
        };
        for c in l.chars().take(take) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if prev.is_whitespace() => break,
                (None, '{' | '[') => depth += 1,
                (None, '}' | ']') => depth -= 1,
                _ => {}
            }
            prev = c;
        }
    }
    depth
}

/// The 1-based number of the line after `line` when YAML reads it as the continuation of
/// `line`'s plain value (`key: value` followed by a deeper-indented line that is not a list
/// item or comment), e.g. `context: 64` then `   shapes:` one space too deep.
fn continued_on(text: &str, line: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let this = lines.get(line.checked_sub(1)?)?;
    let (_, value) = this.split_once(": ")?;
    let value = value.trim();
    if value.is_empty() || value.starts_with(|c: char| "#{[|>\"'".contains(c)) {
        return None;
    }
    // The key's own column: after the indentation and any `- ` list markers.
    let mut key = this.trim_start();
    while let Some(rest) = key.strip_prefix("- ") {
        key = rest.trim_start();
    }
    let key_column = this.len() - key.len();
    let (k, next) = lines
        .iter()
        .enumerate()
        .skip(line)
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
    (indent(next) > key_column && !next.trim_start().starts_with("- ")).then_some(k + 1)
}

/// The scalar text that starts at 1-based `line`, `column` (up to a comment, and inside a
/// flow collection `{…}`/`[…]` up to its delimiters; a block value keeps its commas).
fn scalar_at(text: &str, line: usize, column: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let depth = flow_depth(text, line, column);
    let rest: String = l.chars().skip(column.saturating_sub(1)).collect();
    let delimiters: &[char] = if depth > 0 { &[',', '}', ']'] } else { &[] };
    let end = rest.find(delimiters).unwrap_or(rest.len());
    let end = rest[..end].find(" #").unwrap_or(end);
    let v = rest[..end].trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Drop advice addressed to a programmer using the YAML library (its options and APIs).
fn without_library_advice(msg: &str) -> &str {
    let cut = [", set ", ". If you", " in Options", "; use from_"]
        .iter()
        .filter_map(|m| msg.find(m))
        .min()
        .unwrap_or(msg.len());
    &msg[..cut]
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The dotted path of `key` found on (or near) 1-based `line`, from the indentation of the
/// lines above it; `None` when no line starts with the key (it sits inside a flow mapping).
fn key_path_at(text: &str, line: usize, key: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    // The key may be reported on a nearby line; search around the reported line.
    let pos = (line.saturating_sub(3)..(line + 2).min(lines.len()))
        .find(|&i| {
            let t = lines[i].trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
        })
        .or_else(|| {
            lines.iter().position(|l| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{key}:"))
            })
        });
    let mut path = block_parents(&lines, pos?);
    path.push(key.to_string());
    Some(path.join("."))
}

/// The dotted path of the flow mapping `{…}` that 1-based `column` of 1-based `line` lies in
/// (the keys in force before its opening brace), e.g. `model.shapes` for a key inside
/// `- {d_model: 12, foo: 1}` under `shapes:`.
fn flow_mapping_path(text: &str, line: usize, column: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let prefix: Vec<char> = l.chars().take(column.saturating_sub(1)).collect();
    let mut depth = 0;
    // Outward from the column: closers nest, the first unmatched `{` opens our mapping.
    let brace = (0..prefix.len()).rev().find(|&i| {
        let c = prefix[i];
        if "}]".contains(c) {
            depth += 1;
        } else if "{[".contains(c) {
            if depth == 0 {
                return c == '\u{7b}';
            }
            depth -= 1;
        }
        false
    })?;
    key_path_before(text, line, brace + 1)
}

/// The dotted key path in force just before 1-based `column` of 1-based `line`: the block keys
/// above it (from indentation), then the keys on the line itself, flow mappings included
/// (`checkpoint: {every: -5}` gives `checkpoint.every` at the `-5`).
fn key_path_before(text: &str, line: usize, column: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let pos = line.checked_sub(1)?;
    let prefix: String = lines
        .get(pos)?
        .chars()
        .take(column.saturating_sub(1))
        .collect();
    let mut path = block_parents(&lines, pos);
    path.extend(flow_keys(&prefix));
    (!path.is_empty()).then(|| path.join("."))
}

/// The keys of the block mappings that line `pos` (0-based) is nested in, outermost first.
fn block_parents(lines: &[&str], pos: usize) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut cur = indent(lines[pos]);
    let mut path = Vec::new();
    for l in lines[..pos].iter().rev() {
        let t = l.trim_start();
        if cur == 0 {
            break;
        }
        if t.is_empty() || t.starts_with('#') || indent(l) >= cur {
            continue;
        }
        // In `- key: …` the key sits right of the dash: a sibling of deeper lines, not a parent.
        let (body, body_indent) = match t.strip_prefix("- ") {
            Some(r) => (r.trim_start(), l.len() - r.trim_start().len()),
            None => (t, indent(l)),
        };
        if body_indent < cur {
            let name = body.split(':').next().unwrap_or("").trim();
            if !name.is_empty() && body.contains(':') {
                path.push(name.to_string());
            }
        }
        cur = indent(l);
    }
    path.reverse();
    path
}

/// The keys open at the end of one line's `prefix`, through flow mappings: `a: {b: 1, c: [`
/// gives `a`, `c`.
fn flow_keys(prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut frames: Vec<usize> = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut chars = prefix.chars().peekable();
    while let Some(ch) = chars.next() {
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '"' | '\'' => quote = Some(ch),
            '#' if word.is_empty() => break,
            '{' | '[' => frames.push(keys.len()),
            '}' | ']' => keys.truncate(frames.pop().unwrap_or(0)),
            ':' if !word.is_empty() && chars.peek().is_none_or(|c| c.is_whitespace()) => {
                keys.truncate(frames.last().copied().unwrap_or(0));
                keys.push(std::mem::take(&mut word));
                continue;
            }
            c if c.is_alphanumeric() || "_-.".contains(c) => {
                word.push(c);
                continue;
            }
            _ => {}
        }
        word.clear();
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_from_indentation() {
        let y = "name: x\ntraining:\n  lr: 1\n  lrr: 2\nmodel:\n  context: 4\n";
        assert_eq!(key_path_at(y, 4, "lrr").as_deref(), Some("training.lrr"));
        assert_eq!(
            key_path_at(y, 6, "context").as_deref(),
            Some("model.context")
        );
    }

    const BASE: &str = "name: t\nmodel:\n  context: 16\n  shapes:\n    - {d_model: 32, n_layer: 1, n_head: 2}\ndata:\n  tokens: [10000]\n";

    /// Parse `text`; the error message, which must be a user error.
    fn user_error(text: &str) -> String {
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: PathBuf::from("."),
            text: text.into(),
        };
        let err = SweepSpec::parse(&src).expect_err("spec should be refused");
        assert!(
            crate::error::is_user_error(&err),
            "not a user error: {err:#}"
        );
        let msg = format!("{err:#}");
        for leak in ["DuplicateKeyPolicy", "Options", "invalid u64"] {
            assert!(!msg.contains(leak), "library internals leak: {msg}");
        }
        msg
    }

    /// `BASE` with its `data:` section replaced.
    fn with_data(data: &str) -> String {
        BASE.replace("data:\n  tokens: [10000]\n", data)
    }

    #[test]
    fn base_spec_is_valid() {
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: PathBuf::from("."),
            text: BASE.into(),
        };
        SweepSpec::parse(&src).unwrap();
    }

    /// Each family takes its own keys (the Transformer needs `n_head`, the feed-forward LM a
    /// `window` within the context, the LSTM neither; keys of another family are refused by
    /// name), μP is refused outside the Transformer, and a mixed list plans one shape per
    /// family with its counts.
    #[test]
    fn families_take_their_own_keys_and_plan_their_shapes() {
        let shape = |s: &str| BASE.replace("{d_model: 32, n_layer: 1, n_head: 2}", s);
        let cases = [
            ("{d_model: 32, n_layer: 1}", "model.shapes[0].n_head"),
            (
                "{family: lstm, d_model: 32, n_layer: 1, n_head: 2}",
                "model.shapes[0].n_head: not used by `family: lstm`",
            ),
            (
                "{family: lstm, d_model: 32, n_layer: 1, window: 4}",
                "model.shapes[0].window: not used",
            ),
            (
                "{family: mlp, d_model: 32, n_layer: 1}",
                "model.shapes[0].window: `family: mlp` needs",
            ),
            (
                "{family: mlp, d_model: 32, n_layer: 1, window: 17}",
                "use 1..=16",
            ),
            (
                "{d_model: 32, n_layer: 1, n_head: 2, direct: true}",
                "model.shapes[0].direct: not used",
            ),
            (
                "{family: rnn, d_model: 32, n_layer: 1}",
                "`rnn` is not one of transformer, lstm, mlp",
            ),
        ];
        for (s, want) in cases {
            let msg = user_error(&shape(s));
            assert!(msg.contains(want), "{s}: {msg}");
        }
        let mup = shape("{family: lstm, d_model: 32, n_layer: 1}").replace(
            "  context: 16\n",
            "  context: 16\n  parametrization: mup\n  base_width: 16\n",
        );
        assert!(user_error(&mup).contains("transformer family only"));
        let text = BASE.replace(
            "    - {d_model: 32, n_layer: 1, n_head: 2}\n",
            "    - {d_model: 32, n_layer: 1, n_head: 2}\n    - {family: lstm, d_model: 32, n_layer: 1}\n    - {family: mlp, d_model: 16, n_layer: 2, d_ff: 48, window: 4, direct: true}\n",
        );
        let spec = SweepSpec::parse(&SpecSource {
            label: "t.yaml".into(),
            base_dir: PathBuf::from("."),
            text,
        })
        .unwrap();
        let labels: Vec<String> = crate::plan::shapes(&spec)
            .iter()
            .map(|s| s.label())
            .collect();
        assert_eq!(
            labels,
            ["mlp-d16-L2-f48-k4-direct", "lstm-d32-L1", "d32-L1-h2"],
            "sorted by N (hand counts 7,312 / 8,448 / 12,768)"
        );
    }

    /// `model.parametrization: mup` needs a positive `base_width`, and only μP takes one; a
    /// valid μP spec gives every planned shape the μP parametrization (and the standard one
    /// keeps run ids from before μP: the field is left out of the id when standard).
    #[test]
    fn mup_needs_a_base_width_and_reaches_every_shape() {
        let with =
            |extra: &str| BASE.replace("  context: 16\n", &format!("  context: 16\n{extra}"));
        let msg = user_error(&with("  parametrization: mup\n"));
        assert!(
            msg.contains("model.base_width") && msg.contains("base_width: 32"),
            "{msg}"
        );
        let msg = user_error(&with("  base_width: 32\n"));
        assert!(
            msg.contains("only used with `parametrization: mup`"),
            "{msg}"
        );
        let msg = user_error(&with("  parametrization: mup\n  base_width: 0\n"));
        assert!(msg.contains("must be positive"), "{msg}");
        let msg = user_error(&with("  parametrization: mu\n  base_width: 8\n"));
        assert!(msg.contains("model.parametrization"), "{msg}");
        let src = |text: String| SpecSource {
            label: "t.yaml".into(),
            base_dir: PathBuf::from("."),
            text,
        };
        let mup =
            SweepSpec::parse(&src(with("  parametrization: mup\n  base_width: 16\n"))).unwrap();
        let shapes = crate::plan::shapes(&mup);
        assert!(shapes
            .iter()
            .all(|s| s.param == crate::model::Parametrization::Mup { base_width: 16 }));
        let std = SweepSpec::parse(&src(BASE.into())).unwrap();
        let sp = crate::plan::shapes(&std)[0];
        assert!(sp.param.is_standard());
        assert!(!serde_json::to_string(&sp).unwrap().contains("param"));
        assert!(serde_json::to_string(&shapes[0]).unwrap().contains("Mup"));
    }

    /// `lr_scaling: {rule: params_tokens, law: DIR}` takes k, p, q from DIR/hp_laws.json; a
    /// missing file or a wrong rule is a user error naming the key and the fix.
    #[test]
    fn lr_law_is_read_from_hp_laws_json() {
        let dir = std::env::temp_dir().join(format!("scalelab-spec-law-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hp_laws.json"),
            r#"{"laws": {"lr_nd": {"coef": 1.78, "exponents": [-0.712, 0.307]}}}"#,
        )
        .unwrap();
        let text = |rule: &str, law: &std::path::Path| {
            format!(
                "{BASE}training:\n  lr_scaling: {{rule: {rule}, law: {}}}\n",
                law.display()
            )
        };
        let src = SpecSource {
            label: "t.yaml".into(),
            base_dir: PathBuf::from("."),
            text: text("params_tokens", &dir),
        };
        let ls = SweepSpec::parse(&src).unwrap().training.lr_scaling.unwrap();
        assert_eq!((ls.k, ls.p, ls.q), (Some(1.78), Some(-0.712), Some(0.307)));
        let msg = user_error(&text("params_tokens", &dir.join("nope")));
        assert!(
            msg.contains("training.lr_scaling.law") && msg.contains("scalelab hp"),
            "{msg}"
        );
        let msg = user_error(&text("params", &dir));
        assert!(msg.contains("rule: params_tokens"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn batch_size_grid_problems_name_the_key() {
        let msg = user_error(&format!("{BASE}training:\n  batch_sizes: [4, 0]\n"));
        assert!(msg.contains("training.batch_sizes[1]"), "{msg}");
        let msg = user_error(&format!(
            "{BASE}training:\n  batch_sizes: [4, 8]\n  batch_size: 4\n"
        ));
        assert!(msg.contains("batch_sizes (a grid) or batch_size"), "{msg}");
    }

    #[test]
    fn empty_seed_list_is_refused() {
        let msg = user_error(&format!("{BASE}seeds: []\n"));
        assert!(
            msg.contains(
                "seeds: the list is empty, so the runs would silently use the default seed; \
                 give at least one seed (e.g. `seeds: [0, 1, 2]`) or remove the key"
            ),
            "{msg}"
        );
    }

    #[test]
    fn impossible_data_sizes_are_refused() {
        let msg = user_error(&with_data("data:\n  tokens: [1.0e30]\n"));
        assert!(
            msg.contains("data.tokens[0]: 1.000e30 tokens is above the cap of 1e13 tokens"),
            "{msg}"
        );
        assert!(msg.contains("64-bit integers"), "{msg}");
        // Largest shape 4096 x 64 has ~1.3e10 non-embedding parameters.
        let big = BASE.replace(
            "{d_model: 32, n_layer: 1, n_head: 2}",
            "{d_model: 4096, n_layer: 64, n_head: 32}",
        );
        let msg = user_error(&big.replace("tokens: [10000]", "tokens_per_param: [20, 10000]"));
        assert!(msg.contains("data.tokens_per_param[1]: 10000 × 1.289e10 non-embedding parameters of the largest shape (d4096-L64)"), "{msg}");
        assert!(!msg.contains("data.tokens_per_param[0]"), "{msg}");
        let msg = user_error(&with_data("data:\n  isoflop: {budgets: [1e15, 1e30]}\n"));
        assert!(msg.contains("data.isoflop.budgets[1]: 1.000e30 FLOPs / (6 × 1.277e4 non-embedding parameters of the smallest shape (d32-L1))"), "{msg}");
        assert!(!msg.contains("budgets[0]"), "{msg}");
        let msg = user_error(&with_data(
            "data:\n  isoflop: {budgets: [1e10, 3e10, 1e10]}\n",
        ));
        assert!(
            msg.contains("data.isoflop.budgets[2]: 1e10 is listed twice"),
            "{msg}"
        );
        let msg = user_error(&format!("{BASE}corpus:\n  eval_tokens: 1e20\n"));
        assert!(
            msg.contains("corpus.eval_tokens: 1.000e20 tokens is above the cap"),
            "{msg}"
        );
        let msg = user_error(&format!(
            "{BASE}training:\n  batch_size: 1000000000000000\n"
        ));
        assert!(
            msg.contains(
                "training.batch_size: 1000000000000000 sequences × context 16 = 1.600e16 tokens"
            ),
            "{msg}"
        );
    }

    #[test]
    fn impossible_models_are_refused() {
        let shape = |s: &str| BASE.replace("{d_model: 32, n_layer: 1, n_head: 2}", s);
        let msg = user_error(&shape("{d_model: 1000000, n_layer: 100, n_head: 1000}"));
        assert!(
            msg.contains(
                "model.shapes[0].d_model: 1000000 is above the cap of 65536; use a smaller width"
            ),
            "{msg}"
        );
        let msg = user_error(&shape("{d_model: 64, n_layer: 5000, n_head: 2}"));
        assert!(
            msg.contains(
                "model.shapes[0].n_layer: 5000 is above the cap of 1024; use fewer layers"
            ),
            "{msg}"
        );
        // 16384 x 256: ~8.2e11 parameters, ~12 TiB to train.
        let msg = user_error(&shape("{d_model: 16384, n_layer: 256, n_head: 128}"));
        assert!(msg.contains("model.shapes[0]: d_model 16384 × n_layer 256 has about 8.247e11 parameters, so training needs about 12.0 TiB"), "{msg}");
        assert!(
            msg.contains("above the cap of 1 TiB; use a smaller d_model, d_ff or n_layer"),
            "{msg}"
        );
        let grid = "model:\n  context: 16\n  grid: {widths: [64, 131072], depths: [2, 2048], head_dim: 32}\n";
        let msg = user_error(&BASE.replace(
            "model:\n  context: 16\n  shapes:\n    - {d_model: 32, n_layer: 1, n_head: 2}\n",
            grid,
        ));
        assert!(
            msg.contains("model.grid.widths[1]: 131072 is above the d_model cap of 65536"),
            "{msg}"
        );
        assert!(
            msg.contains("model.grid.depths[1]: 2048 is above the n_layer cap of 1024"),
            "{msg}"
        );
        let grid = "model:\n  context: 16\n  grid: {widths: [64, 16384], depths: [2, 256], head_dim: 32}\n";
        let msg = user_error(&BASE.replace(
            "model:\n  context: 16\n  shapes:\n    - {d_model: 32, n_layer: 1, n_head: 2}\n",
            grid,
        ));
        assert!(msg.contains("model.grid.widths / depths (largest width × largest depth): d_model 16384 × n_layer 256"), "{msg}");
    }

    #[test]
    fn duplicate_keys_name_the_key() {
        let msg = user_error(&format!("{BASE}training:\n  lr: 0.01\n  lr: 0.02\n"));
        assert!(msg.contains("t.yaml: line 10, column 3: key `training.lr` appears twice in the same mapping; keep one"), "{msg}");
        let msg = user_error(&format!("{BASE}checkpoint: {{every: 5, every: 6}}\n"));
        assert!(
            msg.contains("key `checkpoint.every` appears twice in the same mapping; keep one"),
            "{msg}"
        );
    }

    #[test]
    fn negative_counts_name_the_key() {
        let msg = user_error(&format!("{BASE}checkpoint: {{every: -5}}\n"));
        assert!(msg.contains("t.yaml: line 8, column 21: `checkpoint.every`: -5 is not allowed here; use a whole number ≥ 0 (or ≥ 1 where it is a count)"), "{msg}");
        let msg = user_error(&format!("{BASE}checkpoint:\n  every: 2.5\n"));
        assert!(
            msg.contains("`checkpoint.every`: 2.5 is not allowed here; use a whole number ≥ 0"),
            "{msg}"
        );
        let msg = user_error(&format!("{BASE}seeds:\n  - 1\n  - -2\n"));
        assert!(msg.contains("`seeds`: -2 is not allowed here"), "{msg}");
        let msg = user_error(&BASE.replace("n_layer: 1,", "n_layer: -1,"));
        assert!(
            msg.contains("`model.shapes.n_layer`: -1 is not allowed here"),
            "{msg}"
        );
    }

    /// A key indented one space too deep continues the value above it: the message says
    /// which line and why, not "64 is not allowed here; use a whole number".
    #[test]
    fn over_indented_keys_and_block_values_with_commas() {
        let msg = user_error(&BASE.replace("  shapes:", "   shapes:"));
        assert!(
            msg.contains("line 4 is indented deeper than `model.context` above it, so YAML reads it as the rest of `model.context`'s value"),
            "{msg}"
        );
        let msg = user_error(&BASE.replace("data:", " data:"));
        assert!(
            msg.contains("line 6 is indented unlike the lines around it (its text starts in column 2, line 5's in column 5)"),
            "{msg}"
        );
        let msg = user_error(&BASE.replace("model:", " model:"));
        assert!(msg.contains("line 2 is indented unlike"), "{msg}");
        // A well-indented block list item with a bad value is about the value.
        let msg = user_error(&BASE.replace(
            "    - {d_model: 32, n_layer: 1, n_head: 2}",
            "    - d_model: abc\n      n_layer: 1\n      n_head: 2",
        ));
        assert!(!msg.contains("indented"), "{msg}");
        // `: ` inside a plain value: quote it.
        let msg = user_error(&BASE.replace("name: t", "name: t: x"));
        assert!(msg.contains("the value of `name` holds `: `"), "{msg}");
        // A flow list over two lines: the bad value alone.
        let msg = user_error(&BASE.replace("tokens: [10000]", "tokens: [10000,\n    2x4, 3]"));
        assert!(msg.contains("`data.tokens`: 2x4 is not allowed"), "{msg}");
        // An unknown key inside a flow mapping of a list item gets its whole path too.
        let msg = user_error(&BASE.replace("n_head: 2}", "n_head: 2, foo: 1}"));
        assert!(msg.contains("unknown key `model.shapes.foo`"), "{msg}");
        let msg = user_error(&format!("{BASE}training: {{lr: 0.1, foo: 2}}\n"));
        assert!(msg.contains("unknown key `training.foo`"), "{msg}");
        let msg = user_error(&format!("{BASE}training:\n  lr: 1,0e-2\n"));
        assert!(
            msg.contains("`training.lr`: 1,0e-2 is not allowed here"),
            "{msg}"
        );
    }

    #[test]
    fn key_paths_through_flow_and_lists() {
        let y = "a:\n  b: {c: 1, d: {e: -5}}\n  list:\n    - x: 1\n      y: -1\n";
        assert_eq!(key_path_before(y, 2, 22).as_deref(), Some("a.b.d.e"));
        assert_eq!(key_path_before(y, 5, 10).as_deref(), Some("a.list.y"));
        assert_eq!(flow_keys("a: {b: 1, c: [1, "), ["a", "c"]);
    }
}
