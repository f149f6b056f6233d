#!/usr/bin/env bash
# The test command (the README names it; .ci/run calls it). From a fresh clone it installs
# what the tests need, runs the whole suite in the release profile (the same build the
# README's main job uses), builds the CUDA backend, and executes the results notebook.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

# Python readers for the Parquet interop test (pyarrow, DuckDB).
pip_install -r requirements-ci.txt

# A real single-node Slurm cluster on localhost (Debian's slurm-wlm + munge), for the
# job-array test. Idempotent: a no-op when it already runs.
bash scripts/slurm-local.sh

# One profile: release (dependencies and the crate are optimised; tests are fast).
cargo test --release --locked

# CUDA: the `cuda` feature must build. Without a GPU driver, asking for CUDA must fail cleanly
# (exit 2, a message, no panic); with one, a one-second CUDA benchmark must run.
cargo build --release --locked --features cuda
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  target/release/scalelab bench --device cuda --shapes a --seconds 1
  echo "cuda smoke: 1 passed, 0 failed"
else
  set +e
  msg=$(target/release/scalelab bench --device cuda --shapes a --seconds 1 2>&1)
  rc=$?
  set -e
  if [ "$rc" != 2 ] || ! grep -q "no NVIDIA driver" <<<"$msg" || grep -q panicked <<<"$msg"; then
    echo "$msg"
    echo "cuda smoke: 0 passed, 1 failed"
    exit 1
  fi
  echo "cuda smoke (no driver here: clean error): 1 passed, 0 failed"
fi

# The notebook re-fits the committed example results with scipy and checks fits.json.
pip_install -r requirements-notebook.txt
python3 -m jupyter nbconvert --to notebook --execute notebooks/explore.ipynb --output "$(mktemp -d)/explore.ipynb"
echo "notebook: 1 passed, 0 failed"
