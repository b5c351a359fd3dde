"""How long the dashboard's store queries take on a big shop: 1M users, 20M events by default.

    .venv/bin/python benchmarks/ui_store_queries.py [--users 1000000] [--events 20000000] [--items 50000]

Builds the events and items tables in a scratch DuckDB file with SQL (skewed item popularity, the
view -> cart -> buy funnel, 56 days), then times what the /ui pages ask the store: the cached summary
(full refresh, run in the background, and the few-second top-up with live events), an item page, a
page of the catalogue and a title lookup. The per-user page reads the server's in-memory history, so
its cost does not grow with the store. Timings go to stdout as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl


def build(path: Path, users: int, items: int, events: int) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    from fusionrec.store.event_store import _DDL

    con.execute(_DDL)
    con.execute(f"""INSERT INTO items SELECT printf('i%06d', i), 'Product ' || i,
        ['home', 'fashion', 'grocery', 'electronics'][1 + i % 4] || '/' || ['a', 'b', 'c'][1 + i % 3],
        'brand' || (i % 50), 5 + (i % 200), true, '{{}}', NULL FROM range({items}) t(i)""")
    # item rank ~ Zipf-like: floor(items * u^3) puts most events on the head of the catalogue
    con.execute(f"""INSERT INTO events (user_id, item_id, behavior, timestamp, seq, source, line)
        SELECT printf('u%07d', (hash(i) % {users})::BIGINT), printf('i%06d', floor({items} * pow(random(), 3))::BIGINT),
               CASE WHEN r < 0.90 THEN 'view' WHEN r < 0.95 THEN 'cart' WHEN r < 0.97 THEN 'buy' WHEN r < 0.99 THEN 'fav'
                    ELSE 'click' END,
               TIMESTAMP '2026-01-05' + INTERVAL (i * 56 * 86400 // {events}) SECOND, i + 2, 'bench.csv', i + 2
        FROM (SELECT i, random() AS r FROM range({events}) t(i))""")
    con.close()


def timed(fn, repeat: int = 5) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=20_000_000)
    args = ap.parse_args()

    from fusionrec.serving.ab import ExperimentTracker
    from fusionrec.serving.histories import HistoryStore
    from fusionrec.serving.metrics import ServingMetrics
    from fusionrec.serving.recommender import Recommender
    from fusionrec.store.event_store import EventStore
    from fusionrec.ui.queries import DashboardData

    work = Path(tempfile.mkdtemp(prefix="fusionrec-ui-bench-"))
    try:
        t = time.perf_counter()
        build(work / "big.duckdb", args.users, args.items, args.events)
        built = time.perf_counter() - t
        store = EventStore(work / "big.duckdb")
        items = store.items()
        # the dashboard's store side alone: histories hold only the catalogue here (no model, no events)
        histories = HistoryStore.from_frames(pl.DataFrame(schema={"user_id": pl.Utf8, "item_id": pl.Utf8,
                                                                  "behavior": pl.Utf8, "t": pl.Float64}), items)
        state = SimpleNamespace(store=store, metrics=ServingMetrics(), histories=histories, current=None,
                                recommender=Recommender(histories), tracker=ExperimentTracker([]),
                                model_dir=work / "models", stored_id=lambda u: u)
        data = DashboardData(state)  # starts the background summary
        data._ready.wait()
        out: dict[str, object] = {"users": args.users, "events": args.events, "items": args.items,
                                  "build_seconds": round(built, 1)}
        out["summary_full_background"] = timed(lambda: data._read(data._full), repeat=2)
        cur = data.summary()
        store.con.execute("INSERT INTO events (user_id, item_id, behavior, timestamp, seq, source, line) "
                          "SELECT 'u0000001', 'i000001', 'view', now(), 9e15::BIGINT + i, 'api', 9e15::BIGINT + i "
                          "FROM range(100) t(i)")
        out["summary_live_topup"] = timed(lambda: data._read(lambda con: data._delta(con, cur)))
        out["overview_page_cached"] = timed(data.overview)
        head, tail = "i000003", f"i{args.items - 7:06d}"
        out["item_page_popular_item"] = timed(lambda: data.item(head), repeat=3)
        out["item_page_long_tail_item"] = timed(lambda: data.item(tail), repeat=3)
        out["catalogue_page_100"] = timed(lambda: data.item_list(99, 25))
        out["catalogue_search"] = timed(lambda: data.item_list(0, 25, q="Product 123"))
        out["titles_20"] = timed(lambda: data.titles([f"i{i:06d}" for i in range(0, 2000, 100)]))
        out["users_page_3"] = timed(lambda: data.user_list(2, 25))
        print(json.dumps(out, indent=1))
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
