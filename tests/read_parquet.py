"""Open a results folder's Parquet files with pyarrow and DuckDB (interop check used by the tests)."""
import sys

import duckdb
import pyarrow.parquet as pq

out = sys.argv[1]
runs = pq.read_table(f"{out}/runs.parquet")
curves = pq.read_table(f"{out}/curves.parquet")
meta = pq.read_metadata(f"{out}/runs.parquet").metadata or {}
assert b"scalelab.spec_hash" in meta, meta.keys()
assert {"run_id", "n_params", "tokens", "flops", "eval_loss", "status"} <= set(runs.column_names)
print(f"pyarrow runs={runs.num_rows} curves={curves.num_rows}")
con = duckdb.connect()
n = con.execute(f"select count(*) from read_parquet('{out}/runs.parquet')").fetchone()[0]
steps = con.execute(
    f"select sum(r.steps) from read_parquet('{out}/runs.parquet') r"
).fetchone()[0]
m = con.execute(f"select count(*) from read_parquet('{out}/curves.parquet')").fetchone()[0]
assert m == steps, (m, steps)
print(f"duckdb runs={n} curve_rows={m}")
