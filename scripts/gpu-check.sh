#!/usr/bin/env bash
# The first command to run on a new NVIDIA GPU box: checks the driver, NVRTC and the CUDA
# headers (before an 11-minute build), builds the `cuda` feature, trains the micro sweep on
# CUDA and on the CPU and compares their losses (scripts/backend-check.sh; then four seeds as
# one pack on CUDA), then benchmarks the bench shapes on CUDA: a, b, c alone and 8 as one
# pack, and a to e (up to 85M parameters) in f32 and bf16, with tokens/s, MFU against the
# measured matmul peak and MFU against the card's datasheet peak (`scalelab bench`; a card
# not in its table: set PEAK_TFLOPS to its dense bf16 figure). Exit 0: the CUDA path works; 2: something is missing (the message says what).
#
# usage: scripts/gpu-check.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
fail() {
  echo "gpu check: $*" >&2
  exit 2
}
cuda=${CUDA_PATH:-/usr/local/cuda}

echo "== GPU and driver"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  echo "nvidia-smi: not found"
fi
ldconfig -p | grep -q 'libcuda\.so\.1' ||
  fail "no NVIDIA driver (libcuda.so.1 is not known to ldconfig): install the NVIDIA driver"

echo "== NVRTC (burn-cuda compiles its kernels at run time with it)"
if ! ldconfig -p | grep -q 'libnvrtc\.so' && ! ls "$cuda"/lib64/libnvrtc.so* >/dev/null 2>&1; then
  fail "NVRTC (libnvrtc.so) not found: install the CUDA toolkit or its nvrtc package, or set CUDA_PATH"
fi
ls "$cuda"/lib64/libnvrtc.so* 2>/dev/null | head -1 || ldconfig -p | grep -m1 'libnvrtc\.so'
export LD_LIBRARY_PATH="$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== CUDA headers"
[ -f "$cuda/include/cuda.h" ] ||
  fail "CUDA headers not found ($cuda/include/cuda.h): set CUDA_PATH to the toolkit folder"
echo "$cuda/include/cuda.h"

if [ "${1:-}" != "--no-build" ]; then
  echo "== build (cargo build --release --locked --features cuda)"
  cargo build --release --locked --features cuda
fi

echo "== micro sweep: CUDA vs CPU"
scripts/backend-check.sh cuda
echo "== four seeds packed on CUDA vs one by one on the CPU"
SPEC=sweeps/micro-seeds.yaml PACK=4 scripts/backend-check.sh cuda

echo "== throughput (shapes a, b, c), alone and 8 runs as one pack (whether --pack auto's 8 pays)"
target/release/scalelab bench --device cuda --shapes a,b,c --pack 8
echo "== throughput up to 85M parameters (shapes a-e), f32 then bf16; MFU/card: against the datasheet"
target/release/scalelab bench --device cuda --shapes a,b,c,d,e
rc=0
target/release/scalelab bench --device cuda --shapes a,b,c,d,e --precision bf16 \
  ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"} || rc=$?
# Exit 2: a card without bf16 (e.g. V100, T4) says so above; anything else fails the check.
[ "$rc" = 0 ] || [ "$rc" = 2 ] || exit "$rc"
[ "$rc" = 0 ] || echo "== bf16 bench skipped (exit 2: see the message above)"
echo "gpu check: ok"
