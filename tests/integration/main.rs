//! End-to-end tests: the real binary on real sweeps, real Parquet files, real published data.
//! One integration-test binary (one link step) by design: Cargo builds this folder as the
//! `integration` test target, and each theme is a module of it. `common` holds the shared
//! helpers (the binary's path, temporary folders, run helpers, spec texts, result checks);
//! `cli_errors` covers bad input (exit code 2), `sweep_run` running and planning sweeps,
//! `fit_published` and `fit_synthetic` the fitter, `report` the reports, `corpus` real
//! corpora and baselines, `executors` workers, concurrent tasks and Slurm, and `crash_safety`
//! kills, failpoints and checkpoints, `predictions` the final-loss predictions made while
//! runs train (and `--prune`), `power` design power by simulation. Test names carry their
//! module as a prefix, e.g. `cargo test --test integration crash_safety::`.

mod common;

mod cli_errors;
mod committed_example;
mod concurrent_merge;
mod corpus;
mod crash_safety;
mod curve_laws;
mod executors;
mod families;
mod fit_published;
mod fit_synthetic;
mod hp_laws;
mod migrate_ids;
mod power;
mod predictions;
mod report;
mod sweep_run;
mod trust;
