#!/usr/bin/env bash
# The test command (the README names it; .ci/run calls it). From a fresh clone it installs
# what the tests need, runs the whole suite in the release profile (the same build the
# README's main job uses), type-checks the CUDA backend, and executes the results notebook.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

# Python readers for the Parquet interop test (pyarrow, DuckDB).
pip_install -r requirements-ci.txt

# One profile: release (dependencies and the crate are optimised; tests are fast).
cargo test --release --locked

# The `cuda` feature must keep compiling (no GPU needed for a type-check).
cargo check --release --locked --features cuda --lib --bins

# The notebook re-fits the committed example results with scipy and checks fits.json.
pip_install -r requirements-notebook.txt
python3 -m jupyter nbconvert --to notebook --execute notebooks/explore.ipynb --output "$(mktemp -d)/explore.ipynb"
echo "notebook: 1 passed, 0 failed"
