//! scalelab: scaling-law experiments on language models.
//!
//! Data flows one way, one module per stage:
//! [`spec`] (the YAML sweep) → [`plan`] (concrete runs) → [`sweep`] (the local executor; [`slurm`] the cluster one) →
//! [`train`] (one run, on [`model`], over a [`corpus`]) → [`store`] (Parquet) →
//! [`fit`] (power laws) → [`report`] (plots and documents). [`device`] picks the burn backend; [`bench`] measures
//! throughput; [`table`] reads CSV/Parquet inputs for the fitter; [`error`] separates bad
//! input (exit code 2) from internal failures.

pub mod bench;
pub mod corpus;
pub mod device;
pub mod error;
pub mod fit;
pub mod model;
pub mod ngram;
pub mod plan;
pub mod report;
pub mod slurm;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod table;
pub mod tokenize;
pub mod train;
