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

# Mesa's lavapipe: Vulkan compute on the CPU, so the GPU code path (CubeCL kernels, fusion,
# autotune, fused attention, autodiff on them) runs on every CI machine.
if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt_vk=(apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1)
  if ! "${apt_vk[@]}" >/tmp/vulkan-apt.log 2>&1; then
    apt-get update -q >>/tmp/vulkan-apt.log 2>&1 || true
    "${apt_vk[@]}" >>/tmp/vulkan-apt.log 2>&1 || { tail -n 30 /tmp/vulkan-apt.log; exit 1; }
  fi
fi

# The GPU backends: one build with both features (`cuda` and `vulkan` must build).
cargo build --release --locked --features cuda,vulkan

# Vulkan on lavapipe: the micro sweep's losses must match the CPU backend's (same seeds,
# within 0.5%; measured: at most 0.04%), then a short benchmark prints tokens/s.
scripts/backend-check.sh vulkan 0.005
# Run packing and f16 on the GPU path: four seeds in f16 as one pack on Vulkan vs one by one
# (f16 too) on the CPU.
SPEC=sweeps/micro-seeds.yaml PACK=4 scripts/backend-check.sh vulkan 0.005
# A precision the device lacks (lavapipe has no bf16): exit 2 and a message, nothing written.
sed 's/precision: f16/precision: bf16/' sweeps/micro-seeds.yaml >/tmp/scalelab-bf16.yaml
rm -rf /tmp/scalelab-bf16
rc=0
target/release/scalelab run /tmp/scalelab-bf16.yaml --device vulkan --out /tmp/scalelab-bf16 \
  2>/tmp/scalelab-bf16.err || rc=$?
grep -q "training.precision: bf16 is not supported by burn-wgpu (vulkan)" /tmp/scalelab-bf16.err &&
  [ "$rc" = 2 ] && [ ! -e /tmp/scalelab-bf16 ] || {
  cat /tmp/scalelab-bf16.err
  echo "vulkan bf16: expected a clean exit 2 (got $rc)"
  exit 1
}
target/release/scalelab bench --device vulkan --shapes a --seconds 2
echo "vulkan smoke: micro sweep, packed f16 seeds, bf16 error and bench passed"

# CUDA: without a GPU driver, asking for CUDA must fail cleanly (exit 2, a message, no
# panic); with one, a one-second CUDA benchmark must run.
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
