//! scalelab: scaling-law experiments on language models.
//!
//! Data flows one way, one module per stage:
//! [`spec`] (the YAML sweep) → [`plan`] (concrete runs, their nested settings and ids) →
//! [`sweep`] (the local executor; [`slurm`] the cluster one) → [`train`] (one run, on
//! [`model`] (its ops in [`ops`], their vectorised exp and erf in [`vmath`]), over a [`corpus`]) → [`store`] (Parquet files of
//! [`record`] rows) → [`results`] (a results folder, loaded once for readers) → [`fit`]
//! (power laws, pure functions over points) → [`report`] (plots and documents).
//!
//! Beside the pipeline: [`device`] picks the burn backend; [`bench`] measures throughput;
//! [`ngram`] trains the Kneser-Ney baselines; [`tokenize`] is the BPE tokenizer; [`table`]
//! reads CSV/Parquet inputs for the fitter; [`curves`] feeds whole training curves to the
//! loss-curve laws (`scalelab curves`); [`hp`] feeds grids of runs to the hyperparameter laws
//! (`scalelab hp`); [`power`] feeds a planned design and a finished sweep's replicates to the
//! design-power simulation (`scalelab power`); [`mup`] is μP's coordinate check (`scalelab coord-check`); [`error`] separates bad input (exit code 2) from
//! internal failures. At the bottom, imported by anyone and importing nothing of the crate:
//! [`fsio`] (atomic writes, failpoints, locks, globs, folder file names), [`hashing`]
//! (FNV-1a, the seeded RNG) and [`rng`] (burn's global RNG, seeded and drawn under one lock).

pub mod bench;
pub mod corpus;
pub mod curves;
pub mod device;
pub mod error;
pub mod eta;
pub mod fit;
pub mod fsio;
pub mod hashing;
pub mod hp;
pub mod lm;
pub mod lstm;
pub mod mlp_lm;
pub mod model;
pub mod mup;
pub mod ngram;
pub mod ops;
pub mod peaks;
pub mod plan;
pub mod power;
pub mod record;
pub mod report;
pub mod results;
pub mod rng;
pub mod slurm;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod table;
pub mod tokenize;
pub mod train;
pub mod vmath;
