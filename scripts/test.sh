#!/usr/bin/env bash
# The test command (the README names it; .ci/run calls it). From a fresh clone it installs
# what the tests need, runs the whole suite in the release profile (the same build the
# README's main job uses), then checks that the CUDA backend still compiles.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python readers for the Parquet interop test (pyarrow, DuckDB).
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-ci.txt

# One profile: release (dependencies and the crate are optimised; tests are fast).
cargo test --release --locked

# The `cuda` feature must keep compiling (no GPU needed for a type-check).
cargo check --release --locked --features cuda --lib --bins
