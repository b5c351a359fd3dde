"""The Spark engine against the embedded one: wall time and peak memory of `fusionrec train` at 1M, 10M
and 50M synthetic events (same machine, same run), and Spark ALS against implicit ALS.

Each size is measured in child processes (the embedded path: `ingest` then `train --store`; the
Spark path: `train --engine spark --spark-master local[2]`), peak memory being the largest summed RSS
of the child and all its descendants (the Spark JVM included), sampled every 0.2 s. Results per size
go to benchmarks/out/spark_<events>.json, so a size can be re-measured alone:
FUSIONREC_BENCH_SPARK_SIZES=10000000 python benchmarks/run.py --only spark
(FUSIONREC_BENCH_SPARK_SIZES=none rebuilds the section from the stored results; FUSIONREC_BENCH_SPARK_ALS=0
skips the ALS comparison; FUSIONREC_BENCH_SPARK_ENGINES=embedded measures one engine, keeping the other's
stored result for that size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SIZES = (1_000_000, 10_000_000, 50_000_000)
QUICK_SIZES = (200_000,)
BIN = Path(sys.executable).parent / "fusionrec"


def _tree_rss_mb(pid: int) -> float:
    """Summed RSS (MB) of a process and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d.name))
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total / 2**20


def measured(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a command; its wall seconds, peak tree RSS (MB) and last stdout line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = [0.0]

    def poll() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_mb": round(peak[0]), "stdout": out}


def measure_size(n: int, tmp: Path) -> dict:
    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop

    shop_dir = tmp / f"shop{n}"
    shop = generate_shop(ShopConfig(n_users=max(1000, n // 40), n_items=max(500, n // 200), n_events=n, seed=1))
    write_shop(shop, shop_dir, parquet=True)
    users, items = shop.users.height, shop.items.height
    del shop
    engines = os.environ.get("FUSIONREC_BENCH_SPARK_ENGINES", "embedded,spark").split(",")
    stored = OUT / f"spark_{n}.json"
    res = json.loads(stored.read_text()) if stored.exists() else {}
    res.update({"events": n, "users": users, "items": items})
    if "embedded" in engines:
        res["embedded"] = _embedded(n, tmp, shop_dir)
    if "spark" in engines:
        res["spark"] = _spark(n, tmp, shop_dir)
    res.update({"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "load_average": round(os.getloadavg()[0], 1)})
    OUT.mkdir(exist_ok=True)
    stored.write_text(json.dumps(res, indent=1))
    return res


def _embedded(n: int, tmp: Path, shop_dir: Path) -> dict:
    try:
        ingest = measured([str(BIN), "ingest", "--store", str(tmp / f"s{n}.duckdb"), "--format", "fusionrec",
                           str(shop_dir), "--json"])
        emb = measured([str(BIN), "train", "--store", str(tmp / f"s{n}.duckdb"), "--out", str(tmp / f"emb{n}"), "--json"])
    except RuntimeError as exc:  # out of memory at 50M is a result too
        return {"failed": str(exc)[-300:]}
    emb_sum = json.loads(emb["stdout"])
    return {"ingest_seconds": ingest["seconds"], "train_seconds": emb["seconds"],
            "seconds": round(ingest["seconds"] + emb["seconds"], 1), "peak_mb": max(ingest["peak_mb"], emb["peak_mb"]),
            "holdout_ndcg@20": emb_sum["metrics"].get("valid_ndcg@20_heldout_users")}


def _spark(n: int, tmp: Path, shop_dir: Path) -> dict:
    # local mode runs the executors inside the driver JVM, and the driver collects the artefact's per-user
    # and per-pair arrays: past 10M events 2g (and the 1g result cap) is too little on one box
    conf = {"spark.driver.memory": "2g"} if n <= 10_000_000 else {"spark.driver.memory": "8g",
                                                                  "spark.driver.maxResultSize": "4g"}
    try:
        spk = measured([str(BIN), "train", "--engine", "spark", "--events", str(shop_dir / "events.parquet"),
                        "--items", str(shop_dir / "items.parquet"), "--out", str(tmp / f"spark{n}"),
                        "--spark-master", "local[2]", "--json"]
                       + [arg for k, v in conf.items() for arg in ("--spark-conf", f"{k}={v}")])
    except RuntimeError as exc:
        return {"failed": str(exc)[-300:], "conf": conf}
    spk_sum = json.loads(spk["stdout"])
    manifest = json.loads((Path(spk_sum["path"]) / "manifest.json").read_text())
    return {"seconds": spk["seconds"], "peak_mb": spk["peak_mb"], "conf": conf,
            "holdout_ndcg@20": spk_sum["metrics"].get("valid_ndcg@20_heldout_users"),
            "stages": manifest["data"].get("ingest"), "stage_seconds": manifest["metrics"].get("spark_stage_seconds")}


ALS_CHILD = r"""
import json, sys, time
import numpy as np, polars as pl, scipy.sparse as sp
from fusionrec import schema as S
from fusionrec.candidates.als import ALS
from fusionrec.data.interactions import Interactions
from fusionrec.data.synthetic import ShopConfig, generate_shop

n, engine, factors, iters = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shop = generate_shop(ShopConfig(n_users=max(1000, n // 40), n_items=max(500, n // 200), n_events=n, seed=1))
ev = shop.events
cut = ev.select(pl.col(S.TIMESTAMP).max() - pl.duration(days=7)).item()
train, test = ev.filter(pl.col(S.TIMESTAMP) <= cut), ev.filter(pl.col(S.TIMESTAMP) > cut)
data = Interactions.from_frame(train)
x = data.matrix()
model = ALS(ALS.Config(factors=factors, iterations=iters))
if engine == "implicit":
    t = time.perf_counter(); model.fit(data); fit = time.perf_counter() - t
else:
    import pyarrow as pa
    from fusionrec.spark.session import SparkSettings, spark_session
    from fusionrec.spark.stages import als_factors
    spark = spark_session(SparkSettings(master="local[2]", shuffle_partitions=4))
    import pyarrow.parquet as pq, tempfile
    coo = x.tocoo()
    path = tempfile.mkdtemp() + "/pairs.parquet"
    pq.write_table(pa.table({"user_idx": coo.row.astype("int32"), "item_idx": coo.col.astype("int32"),
                             "x": coo.data.astype("float64")}), path)
    df = spark.read.parquet(path).persist()
    df.count()
    t = time.perf_counter()
    uf, itf = als_factors(df, factors, 0.01, 40.0, iters, 0, blocks=2)
    u = uf.toArrow(); i = itf.toArrow()
    fit = time.perf_counter() - t
    U = np.zeros((data.n_users, factors), np.float32); I = np.zeros((data.n_items, factors), np.float32)
    U[u.column("id").to_numpy()] = np.stack(u.column("features").to_pylist())
    I[i.column("id").to_numpy()] = np.stack(i.column("features").to_pylist())
    model.n_users_, model.n_items_, model.items_, model.users_ = data.n_users, data.n_items, data.items, data.users
    model._load_state({"user_factors": U, "item_factors": I, "fallback": np.zeros(data.n_items, np.float32)})
u = data.users.indices(test[S.USER_ID].cast(pl.Utf8).to_list()); i = data.items.indices(test[S.ITEM_ID].cast(pl.Utf8).to_list())
ok = (u >= 0) & (i >= 0)
tg = sp.csr_matrix((np.ones(ok.sum(), np.float32), (u[ok], i[ok])), shape=x.shape)
tg = tg - tg.multiply(x > 0); tg.eliminate_zeros()
rows = np.flatnonzero(np.diff(tg.indptr) > 0)
recs, _ = model.recommend(rows, x[rows], 20, exclude=x[rows])
hits = np.asarray([len(set(r.tolist()) & set(tg[k].indices.tolist())) for k, r in zip(rows, recs)])
print(json.dumps({"engine": engine, "fit_seconds": round(fit, 2), "seconds_per_iteration": round(fit / iters, 3),
                  "recall@20": round(float(np.mean(hits / np.diff(tg.indptr)[rows])), 4), "pairs": int(x.nnz),
                  "users_evaluated": int(len(rows))}))
"""


def measure_als(n: int, factors: int = 64, iters: int = 15) -> dict:
    out = {}
    for engine in ("implicit", "spark"):
        r = measured([sys.executable, "-c", ALS_CHILD, str(n), engine, str(factors), str(iters)])
        out[engine] = {**json.loads(r["stdout"].strip().splitlines()[-1]), "peak_mb": r["peak_mb"]}
    res = {"events": n, "factors": factors, "iterations": iters, **out}
    OUT.mkdir(exist_ok=True)
    (OUT / f"spark_als_{n}.json").write_text(json.dumps(res, indent=1))
    return res


def _sizes(quick: bool) -> tuple[int, ...]:
    env = os.environ.get("FUSIONREC_BENCH_SPARK_SIZES")
    if env == "none":  # only rebuild the section from the stored results
        return ()
    if env:
        return tuple(int(v) for v in env.split(",") if v)
    return QUICK_SIZES if quick else SIZES


def table(results: list[dict]) -> list[str]:
    lines = ["| events | users | items | embedded s (ingest + train) | embedded peak MB | Spark local[2] s | "
             "Spark peak MB | Spark / embedded time |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: r["events"]):
        e, s = r.get("embedded") or {}, r.get("spark") or {}
        emb = (f"{e['seconds']:,} ({e['ingest_seconds']} + {e['train_seconds']}) | {e['peak_mb']:,}" if "seconds" in e
               else ("failed | -" if e else "not run | -"))
        spk = f"{s['seconds']:,} | {s['peak_mb']:,}" if "seconds" in s else ("failed | -" if s else "not run | -")
        ratio = f"{s['seconds'] / e['seconds']:.1f}x" if "seconds" in e and "seconds" in s else "-"
        lines.append(f"| {r['events']:,} | {r['users']:,} | {r['items']:,} | {emb} | {spk} | {ratio} |")
    return lines


STAGE_COLUMNS = ("itemknn", "rp3beta", "covisit", "als")


def stage_table(results: list[dict]) -> list[str]:
    """Where the Spark run's time went (seconds, from the version's manifest), for the sizes that have it."""
    rows = [r for r in sorted(results, key=lambda r: r["events"]) if (r.get("spark") or {}).get("stage_seconds")]
    if not rows:
        return []
    head = ("| events | read + validate + index | " + " | ".join(f"stage 1 {c}" for c in STAGE_COLUMNS)
            + " | stage 1 total | ranker | " + " | ".join(f"stage 2 {c}" for c in STAGE_COLUMNS) + " | stage 2 total |")
    lines = ["", "Where the Spark time goes (seconds; stage 1: the generators on the events before the ranker's holdout, "
             "stage 2: refitted on every event; the other generators, pair tables and feature aggregates make up the "
             "rest of each total):", "", head, "|" + "---:|" * (head.count("|") - 1)]
    for r in rows:
        st = r["spark"]["stage_seconds"]

        def cells(stage: str) -> str:
            return " | ".join(f"{st[stage].get(c, 0):,.0f}" for c in STAGE_COLUMNS)

        prep = sum(st["prepare"].values())
        lines.append(f"| {r['events']:,} | {prep:,.0f} | {cells('stage1')} | {st['stage1_total'] or 0:,.0f} | "
                     f"{st['ranker'] or 0:,.0f} | {cells('stage2')} | {st['stage2_total'] or 0:,.0f} |")
    return lines


def run(quick: bool = False) -> str:
    sizes = _sizes(quick)
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            print(f"  spark vs embedded at {n:,} events", flush=True)
            measure_size(n, Path(tmp))
    if sizes and os.environ.get("FUSIONREC_BENCH_SPARK_ALS", "1") == "1":
        measure_als(sizes[0])
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("spark_[0-9]*.json"))]
    if quick:
        results = [r for r in results if r["events"] in sizes]
    done = {r["events"] for r in results if "seconds" in (r.get("embedded") or {}) and "seconds" in (r.get("spark") or {})}
    lines = ["## Spark engine against the embedded engine", "",
             "`fusionrec train` on the synthetic shop (Parquet; users = events / 40, items = events / 200), the built-in "
             "pipeline on both engines. Embedded: `ingest` into DuckDB, then `train --store`. Spark: "
             "`train --engine spark --spark-master local[2]` (reads, validates, de-duplicates and trains; driver memory 2g, "
             "8g with a 4g result cap past 10M events). "
             "Peak memory is the summed RSS of the process tree (the Spark JVM included).", ""]
    lines += table(results)
    lines += stage_table(results)
    pending = [n for n in SIZES if n not in done]
    if pending and not quick:
        lines += ["", f"Pending (not measured on both engines yet on this machine): {', '.join(f'{n:,}' for n in pending)} events."]
    for r in results:
        for engine in ("embedded", "spark"):
            if "failed" in (r.get(engine) or {}):
                lines += ["", f"{engine} at {r['events']:,} events failed: `{r[engine]['failed'][-200:]}`"]
    for p in sorted(OUT.glob("spark_als_*.json")):
        a = json.loads(p.read_text())
        if quick and a["events"] not in sizes:
            continue
        lines += ["", f"### ALS: Spark ML against implicit ({a['events']:,}-event shop, temporal split: last 7 days are test, "
                      f"{a['factors']} factors, {a['iterations']} iterations, alpha 40)", "",
                  "| engine | fit s | s / iteration | recall@20 | peak MB |", "|---|---:|---:|---:|---:|"]
        for eng, label in (("implicit", "implicit 0.7 (CG, 2 threads)"), ("spark", "pyspark.ml ALS local[2]")):
            r = a[eng]
            lines.append(f"| {label} | {r['fit_seconds']} | {r['seconds_per_iteration']} | {r['recall@20']} | {r['peak_mb']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
