#!/usr/bin/env bash
# Train the micro sweep (sweeps/micro.yaml: 4 runs, same seeds; or SPEC, a sweep of 4 runs) on
# the CPU backend (one run at a time) and on DEVICE (with PACK=N, `--pack N`: the four seeds of
# sweeps/micro-seeds.yaml train as one pack), then compare every run's final
# eval loss: they must agree within TOL (relative; default 2%: f32 kernels that sum in another order drift apart over the runs' steps), and
# loss must have fallen on both (eval loss at least 0.5 nats below ln(vocab), the loss of a
# uniform guess). Prints one line per run and a verdict; exit 0 when all pass.
#
# usage: [SPEC=sweeps/micro-seeds.yaml PACK=4] scripts/backend-check.sh DEVICE [TOL]
#        e.g. scripts/backend-check.sh vulkan
# needs: a scalelab built with DEVICE's feature (target/release/scalelab), python3 + duckdb
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${1:?usage: scripts/backend-check.sh DEVICE [TOL]}
tol=${2:-0.02}
bin=${SCALELAB:-target/release/scalelab}
spec=${SPEC:-sweeps/micro.yaml}
pack=${PACK:-off}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for d in cpu "$dev"; do
  start=$(date +%s.%N)
  p=off; [ "$d" = cpu ] || p=$pack
  "$bin" run "$spec" --out "$tmp/$d" --device "$d" --pack "$p" --no-report --plain 2>"$tmp/$d.log" || {
    cat "$tmp/$d.log"
    echo "backend check: $spec failed on $d"
    exit 1
  }
  printf '%s: %s %.1f s\n' "$d" "$spec" "$(echo "$(date +%s.%N) - $start" | bc)"
done

python3 - "$tmp/cpu" "$tmp/$dev" "$dev" "$tol" <<'EOF'
import sys, duckdb
cpu, other, dev, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
q = """select run_id, 'd' || a.d_model || '-L' || a.n_layer, a.tokens, a.eval_loss, b.eval_loss,
              ln(a.vocab_size), b.backend
       from '{}/runs.parquet' a join '{}/runs.parquet' b using (run_id)
       where a.status = 'ok' and b.status = 'ok' order by run_id"""
rows = duckdb.sql(q.format(cpu, other)).fetchall()
bad = 0
if len(rows) != 4:
    print(f"backend check: expected 4 runs on both backends, joined {len(rows)}")
    sys.exit(1)
for run_id, shape, tokens, l_cpu, l_dev, uniform, backend in rows:
    rel = abs(l_dev - l_cpu) / l_cpu
    fell = max(l_cpu, l_dev) < uniform - 0.5
    ok = rel <= tol and fell
    bad += not ok
    print(f"{shape:<10} D={tokens:>6}  cpu {l_cpu:.4f}  {dev} {l_dev:.4f}  rel diff {rel:.2%}"
          f"  {'ok' if ok else 'FAIL'}  ({backend})")
print(f"backend check ({dev} vs cpu, tolerance {tol:.1%}): {len(rows) - bad} passed, {bad} failed")
sys.exit(1 if bad else 0)
EOF
