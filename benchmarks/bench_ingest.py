"""Ingest throughput of the native CSV format, against DuckDB's bare CSV read of the same file."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from fusionrec.store.event_store import EventStore
path, store = sys.argv[1], sys.argv[2]
t = time.perf_counter()
with EventStore(store) as s:
    r = s.ingest([path], "fusionrec").total
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rows_in": r.rows_in, "accepted": r.accepted, "rejected": r.rejected,
                  "duplicates": r.duplicates, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BARE = r"""
import json, resource, sys, time, duckdb
path, store = sys.argv[1], sys.argv[2]
con = duckdb.connect(store)
t = time.perf_counter()
con.execute(f"CREATE TABLE e AS SELECT * FROM read_csv('{path}', header=true)")
n = con.execute("SELECT count(*) FROM e").fetchone()[0]
con.close()
print(json.dumps({"seconds": time.perf_counter() - t, "rows_in": n,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> str:
    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop

    n = 1_000_000 if quick else 10_000_000
    with tempfile.TemporaryDirectory() as tmp:
        shop = generate_shop(ShopConfig(n_users=max(1000, n // 20), n_items=max(500, n // 100), n_events=n, seed=1))
        write_shop(shop, Path(tmp) / "shop")
        del shop
        csv = Path(tmp) / "shop" / "events.csv"
        size_mb = csv.stat().st_size / 1e6
        bare = _child(BARE, str(csv), str(Path(tmp) / "bare.duckdb"))
        ours = _child(CHILD, str(csv), str(Path(tmp) / "store.duckdb"))
        again = _child(CHILD, str(csv), str(Path(tmp) / "store.duckdb"))
    rate = ours["rows_in"] / ours["seconds"]
    bare_rate = bare["rows_in"] / bare["seconds"]
    lines = [
        "## Ingest (native CSV, synthetic shop)",
        "",
        f"{ours['rows_in']:,} events, {size_mb:.0f} MB CSV, into a new DuckDB store file. Target: at least 1,000,000 events/s and peak memory under 2 GB.",
        "",
        "| run | seconds | events/s | peak RSS (MB) | accepted | duplicates |",
        "|---|---:|---:|---:|---:|---:|",
        f"| DuckDB bare `CREATE TABLE AS read_csv` (floor, no validation) | {bare['seconds']:.1f} | {bare_rate:,.0f} | {bare['peak_mb']:.0f} | - | - |",
        f"| `fusionrec ingest` (validate, quarantine, dedup, store) | {ours['seconds']:.1f} | {rate:,.0f} | {ours['peak_mb']:.0f} | {ours['accepted']:,} | {ours['duplicates']:,} |",
        f"| same file again (idempotent: all duplicates) | {again['seconds']:.1f} | {again['rows_in'] / again['seconds']:,.0f} | {again['peak_mb']:.0f} | {again['accepted']:,} | {again['duplicates']:,} |",
        "",
        f"Ratio fusionrec / bare DuckDB throughput: {rate / bare_rate:.2f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
