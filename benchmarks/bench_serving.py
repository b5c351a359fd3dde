"""Serving under load: `fusionrec serve` in its own process, driven by an asyncio + aiohttp load generator in another.

Measures throughput and p50/p95/p99 latency of GET /recommendations/{user} (the fused pipeline), GET
/items/{id}/similar and POST /events (one event, and batches of 500) at fixed concurrency for a fixed
time; a bare FastAPI endpoint returning a constant list in the same run (the floor); freshness (POST
/events returning -> the next recommendation reflecting the event); and a retrain + hot swap under load.

The full run uses the synthetic shop at 1,000,000 users, 100,000 items and 20,000,000 events (it takes a
long time and several GB of memory); `--quick` a small shop. Server and load generator share the machine.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEY = "bench-key"
#: seconds of the swap run's load before the retrain (its steady p99) and the windows its retrain is cut
#: into: a p99 over 15 s (~1,800 requests) against one over a 500-s retrain compared a quiet quarter
#: minute with everything that happens in eight minutes (a dashboard refresh, a heap trim)
SWAP_STEADY = 60.0
SWAP_WINDOW = 60.0
#: the retrain + swap runs under recommendations offered at this share of the c8 throughput measured
SWAP_LOAD = 0.6
#: known users asked for at most once per row ("a new user each request"): more than a row can reach
DISTINCT_USERS = 40_000
#: seconds of the returning-users traffic run untimed before their rows: each user's first visit (an
#: answer computed, as in the 'new user' rows) is not a return. Without it the rows started with every
#: user's first visit at once, a burst of misses that set their p99
RETURNING_WARMUP = 10.0

LOADGEN = r"""
import asyncio, itertools, json, os, random, sys, time
import aiohttp

with open(sys.argv[1]) as fh:
    cfg = json.load(fh)
base, kind, conc, duration = cfg["base"], cfg["kind"], cfg["concurrency"], cfg["seconds"]
users, items, stop = cfg["users"], cfg["items"], cfg.get("stop_file")
ev_users = cfg.get("event_users") or users
# "recs_distinct": each request a user no earlier request of this process asked for (no cached answer)
distinct = list(cfg.get("distinct_users") or [])
auth = {"Authorization": "Bearer " + cfg["key"]}
rnd = random.Random(cfg.get("seed", 0))
rnd.shuffle(distinct)
distinct = itertools.cycle(distinct)  # a long run comes back to a user after all the others (answer expired)
batches = [[{"user_id": rnd.choice(ev_users), "item_id": rnd.choice(items), "behavior": "view"} for _ in range(500)]
           for _ in range(8)]
samples = []

def send(client):
    if kind == "recs":
        return client.get("/recommendations/" + rnd.choice(users), params={"k": 10})
    if kind == "recs_distinct":
        return client.get("/recommendations/" + next(distinct), params={"k": 10})
    if kind == "similar":
        return client.get("/items/" + rnd.choice(items) + "/similar", params={"k": 10})
    if kind == "event":
        return client.post("/events", json={"user_id": rnd.choice(ev_users), "item_id": rnd.choice(items),
                                             "behavior": "view"}, headers=auth)
    if kind == "batch":
        return client.post("/events", json=rnd.choice(batches), headers=auth)
    return client.get("/const")

async def request(client):
    async with send(client) as r:
        await r.read()  # the whole answer, as a client would
        return r.status

async def worker(client, deadline, gap):
    # gap = 0: closed loop (the next request when the answer comes); gap > 0: each worker starts one
    # request every `gap` seconds (a fixed offered rate, below capacity), late ones without waiting
    due = time.perf_counter() + gap * rnd.random()
    while time.perf_counter() < deadline and not (stop and os.path.exists(stop)):
        if gap:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            due += gap
        wall, t0 = time.time(), time.perf_counter()
        try:
            status = await request(client)
        except Exception:
            status = -1
        samples.append((wall, time.perf_counter() - t0, status))

async def main():
    # aiohttp: httpx's client cost 1-5 ms of CPU a request here (more with more connections), taken from
    # the server on the 2 shared cores
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(base, connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as client:
        for _ in range(min(conc, 4)):  # open connections and warm the server
            await request(client)
        gap = conc / cfg["rate"] if cfg.get("rate") else 0.0
        if cfg.get("warmup"):
            # the same traffic, untimed: returning users have been here before (their answers are cached
            # as in a running shop). A failed warm-up request is kept: errors are never discarded
            await asyncio.gather(*(worker(client, time.perf_counter() + cfg["warmup"], gap) for _ in range(conc)))
            samples[:] = [s for s in samples if s[2] != 200]
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(worker(client, deadline, gap) for _ in range(conc)))

asyncio.run(main())
with open(cfg["out"], "w") as fh:
    json.dump(samples, fh)
"""

BARE = r"""
import sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()
ITEMS = [{"item_id": f"i{i:06d}", "score": 1.0 / (i + 1), "reasons": [{"type": "generator", "generator": "pop",
          "rank": i + 1}]} for i in range(10)]

@app.get("/const")
def const():
    return {"user_id": "u", "model_version": "const", "items": ITEMS}

@app.get("/health")
def health():
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = 1800.0) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {base} did not come up in {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _loadgen(tmp: Path, base: str, kind: str, concurrency: int, seconds: float, users: list[str], items: list[str],
             stop_file: Path | None = None, wait: bool = True, rate: float | None = None,
             event_users: list[str] | None = None, distinct_users: list[str] | None = None,
             seed: int = 0, warmup: float = 0.0) -> subprocess.Popen | list:
    """One load generator process (`kind` requests at `concurrency`, or open loop at `rate`); POST /events
    writes for `event_users` (default: `users`); `recs_distinct` asks for each of `distinct_users` (in an
    order drawn from `seed`) at most once; `warmup` seconds of the same traffic go untimed before the
    `seconds` measured. Returns its samples, or the process when not `wait`."""
    out = tmp / f"samples-{kind}-{concurrency}-{time.time_ns()}.json"
    cfg = {"base": base, "kind": kind, "concurrency": concurrency, "seconds": seconds, "users": users,
           "items": items, "key": KEY, "out": str(out), "stop_file": str(stop_file) if stop_file else None,
           "rate": rate, "event_users": event_users, "distinct_users": distinct_users, "seed": seed,
           "warmup": warmup}
    cfg_file = out.with_suffix(".cfg.json")  # tens of thousands of ids: too long for one argv string
    cfg_file.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-c", LOADGEN, str(cfg_file)])
    proc.out = out  # type: ignore[attr-defined]
    if not wait:
        return proc
    proc.wait()
    return json.loads(out.read_text())


def _summary(samples: list, seconds: float | None = None) -> dict:
    if not samples:
        return {"n": 0, "rps": 0.0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "errors": 0}
    arr = np.asarray(samples, np.float64)
    lat = arr[:, 1] * 1000.0
    span = seconds or max(arr[:, 0].max() - arr[:, 0].min(), 1e-9)
    return {"n": len(arr), "rps": len(arr) / span, "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)), "p99": float(np.percentile(lat, 99)),
            "errors": int((arr[:, 2] != 200).sum())}


def _setup(tmp: Path, quick: bool) -> tuple[Path, Path, dict]:
    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop
    from fusionrec.pipeline import PipelineConfig
    from fusionrec.serving.training import train_version
    from fusionrec.store.event_store import EventStore

    size = (dict(n_users=10_000, n_items=2_000, n_events=300_000) if quick
            else dict(n_users=1_000_000, n_items=100_000, n_events=20_000_000))
    cache = os.environ.get("FUSIONREC_BENCH_SERVING_CACHE")
    if cache and (Path(cache) / "info.json").exists():  # a prepared shop + model of an earlier run, reused
        info = json.loads((Path(cache) / "info.json").read_text())
        if info["size"] == size:
            shutil.copytree(Path(cache) / "model", tmp / "model", symlinks=True)
            shutil.copy(Path(cache) / "shop.duckdb", tmp / "shop.duckdb")
            return tmp / "shop.duckdb", tmp / "model", info
    t0 = time.perf_counter()
    shop = generate_shop(ShopConfig(seed=1, **size))
    write_shop(shop, tmp / "shop", parquet=True)
    del shop
    store = tmp / "shop.duckdb"
    with EventStore(store) as st:
        st.ingest([tmp / "shop"], "fusionrec")
    t_data = time.perf_counter() - t0
    factors = 32 if quick else 64
    cfg = PipelineConfig(generators={"pop": {}, "trending": {}, "itemknn": {}, "covisit": {},
                                     "als": {"factors": factors, "iterations": 10}},
                         n_candidates=50, seed=1, ranker={"n_estimators": 100, "num_threads": 1})
    t0 = time.perf_counter()
    with EventStore(store, read_only=True) as st:
        train_version(st, tmp / "model", cfg)
    info = {"size": size, "data_seconds": t_data, "train_seconds": time.perf_counter() - t0,
            "generators": list(cfg.generators), "factors": factors}
    if cache:  # FUSIONREC_BENCH_SERVING_CACHE=DIR keeps the prepared shop and model for the next run
        Path(cache).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(Path(cache) / "model", ignore_errors=True)
        shutil.copytree(tmp / "model", Path(cache) / "model", symlinks=True)
        shutil.copy(store, Path(cache) / "shop.duckdb")
        (Path(cache) / "info.json").write_text(json.dumps(info))
    return store, tmp / "model", info


def _freshness(base: str, users: list[str], trials: int, max_gets: int = 20) -> dict:
    """A known user buys the top item of their current recommendations; then GET their recommendations
    until the answer reflects it: the item gone (bought items are filtered) or a reason naming it as
    history ("because you bought X"). Counts the trials reflected by the first GET after the POST."""
    import httpx

    rnd = random.Random(3)
    waits, first, missed = [], 0, 0
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(trials):
            user = rnd.choice(users)
            before = c.get(f"/recommendations/{user}", params={"k": 10}).json()["items"]
            if not before:
                continue
            item = before[0]["item_id"]
            r = c.post("/events", json={"user_id": user, "item_id": item, "behavior": "buy"},
                       headers={"Authorization": f"Bearer {KEY}"})
            returned = time.perf_counter()
            assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
            for n in range(1, max_gets + 1):
                after = c.get(f"/recommendations/{user}", params={"k": 10}).json()["items"]
                if (all(it["item_id"] != item for it in after)
                        or any(x.get("item_id") == item for it in after for x in it["reasons"])):
                    break
            else:
                missed += 1
                continue
            waits.append((time.perf_counter() - returned) * 1000.0)
            first += n == 1
    return {"median_ms": float(np.median(waits)) if waits else float("nan"),
            "max_ms": float(np.max(waits)) if waits else float("nan"), "first": first, "missed": missed,
            "trials": len(waits) + missed, "max_gets": max_gets}


def _dashboard_pages(base: str, users: list[str], items: list[str], loads: int = 10) -> dict:
    """Load time of each dashboard page (HTML only, as the server renders it)."""
    import httpx

    rnd = random.Random(5)
    pages = {"overview": lambda: "/ui", "models": lambda: "/ui/models", "users list": lambda: "/ui/users",
             "user inspector": lambda: "/ui/users/" + rnd.choice(users[:1000]),
             "items list": lambda: "/ui/items", "item page": lambda: "/ui/items/" + rnd.choice(items),
             "experiments": lambda: "/ui/experiments", "storefront": lambda: "/ui/shop",
             "product page": lambda: "/ui/shop/p/" + rnd.choice(items)}
    out = {}
    with httpx.Client(base_url=base, timeout=120) as c:
        for name, path in pages.items():
            c.get(path())
            times, codes = [], set()
            for _ in range(loads):
                t0 = time.perf_counter()
                codes.add(c.get(path()).status_code)
                times.append((time.perf_counter() - t0) * 1000.0)
            out[name] = {"median_ms": float(np.median(times)), "max_ms": float(np.max(times)),
                         "status": ",".join(map(str, sorted(codes)))}
    return out


def _wait_dashboard_summary(base: str, timeout: float = 900.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if not httpx.get(base + "/ui/api/overview", timeout=60).json().get("pending", False):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(2.0)


def _swap_under_load(tmp: Path, base: str, users: list[str], items: list[str], steady: float, rate: float,
                     distinct: list[str]) -> dict:
    """Recommendations for distinct users (every answer computed: none from the answer cache, which a
    swap empties anyway) at concurrency 8 and a fixed offered `rate` (below what the server can do: a
    saturated server has no spare cycles for a retrain) while a retrain runs and swaps."""
    import httpx

    stop = tmp / "stop-swap"
    proc = _loadgen(tmp, base, "recs_distinct", 8, 36_000, users, items, stop_file=stop, wait=False, rate=rate,
                    distinct_users=distinct, seed=99)
    time.sleep(steady)
    t0 = time.time()
    r = httpx.post(base + "/admin/retrain", params={"wait": True}, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=36_000)
    t1 = time.time()
    time.sleep(2.0)
    stop.touch()
    proc.wait()
    samples = json.loads(proc.out.read_text())  # type: ignore[attr-defined]
    before = [s for s in samples if s[0] < t0]
    during = [s for s in samples if t0 <= s[0] <= t1]
    after = [s for s in samples if s[0] > t1]
    # the retrain's p99 minute by minute (a last part under half a window joins the one before)
    edges = np.arange(t0, t1 - SWAP_WINDOW / 2, SWAP_WINDOW)[1:] if t1 - t0 >= 1.5 * SWAP_WINDOW else np.empty(0)
    cut = np.searchsorted(edges, [s[0] for s in during], side="right")
    windows = [_summary([s for s, w in zip(during, cut) if w == k])["p99"] for k in range(len(edges) + 1)]
    return {"windows": windows, "retrain_seconds": t1 - t0, "status": r.status_code, "version": r.json().get("version"),
            "steady": _summary(before), "during": _summary(during), "after": _summary(after),
            "errors": sum(1 for s in samples if s[2] != 200), "requests": len(samples)}


def run(quick: bool = False) -> str:
    seconds = 3.0 if quick else 20.0
    levels = (1, 8, 32)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        store, model, info = _setup(tmp, quick)
        port, bare_port = _free_port(), _free_port()
        base, bare_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        env = {**os.environ, "FUSIONREC_API_KEY": KEY}
        log = tmp / "server.log"
        with open(log, "w") as fh:
            server = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--model", str(model),
                                       "--store", str(store), "--port", str(port)], env=env, stdout=fh,
                                      stderr=subprocess.STDOUT)
            bare = subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)], stdout=fh, stderr=subprocess.STDOUT)
        try:
            t0 = time.perf_counter()
            _wait_healthy(base, server, log)
            startup = time.perf_counter() - t0
            _wait_dashboard_summary(base)  # its first aggregate of the store runs in the background: not under load
            _wait_healthy(bare_base, bare, log)
            from fusionrec.serving.versions import load_version

            pipe = load_version(model).pipeline
            rnd = random.Random(1)
            known = pipe.users_.ids()
            drawn = rnd.sample(known, min(4000 + DISTINCT_USERS, len(known)))
            distinct = drawn[4000:]  # asked for at most once per row: every answer computed
            drawn = drawn[:4000]
            # events go to other users than the recommendation rows read: the rows measure their endpoint,
            # not the live history that earlier rows would pile onto the same 2,000 users
            users = drawn[: len(drawn) // 2] + [f"stranger-{i}" for i in range(100)]
            event_users = drawn[len(drawn) // 2:]
            items = rnd.sample(pipe.items_.ids(), min(2000, pipe.n_items_))
            del pipe
            cells = [("bare FastAPI constant list", "bare", bare_base),
                     ("GET /recommendations/{user}, returning users", "recs", base),
                     ("GET /recommendations/{user}, a new user each request", "recs_distinct", base),
                     ("GET /items/{id}/similar", "similar", base), ("POST /events (1 event)", "event", base),
                     ("POST /events (500 events)", "batch", base)]
            results: dict[tuple[str, int], dict] = {}
            load = [os.getloadavg()[0]]
            for c in levels:
                # the bare endpoint before and after the others at the same concurrency: drift on a shared
                # machine hits both sides of the ratio alike
                bare_samples = _loadgen(tmp, bare_base, "bare", c, seconds, users, items)
                for label, kind, url in cells[1:]:
                    results[(kind, c)] = _summary(_loadgen(tmp, url, kind, c, seconds, users, items,
                                                           event_users=event_users, distinct_users=distinct,
                                                           seed=c, warmup=RETURNING_WARMUP if kind == "recs" else 0.0),
                                                  seconds)
                bare_samples += _loadgen(tmp, bare_base, "bare", c, seconds, users, items)
                results[("bare", c)] = _summary(bare_samples, 2 * seconds)
            load.append(os.getloadavg()[0])
            rows = [(label, c, results[(kind, c)]) for label, kind, _ in cells for c in levels]
            pages = _dashboard_pages(base, users, items)
            fresh = _freshness(base, [u for u in users if not u.startswith("stranger-")],
                               trials=20 if quick else 100)
            swap_rate = SWAP_LOAD * results[("recs_distinct", 8)]["rps"]
            swap = _swap_under_load(tmp, base, users, items, steady=3.0 if quick else SWAP_STEADY, rate=swap_rate,
                                    distinct=distinct)
            swap["rate"] = swap_rate
        finally:
            _stop(server)
            _stop(bare)
    info["load"] = load
    return _markdown(quick, info, startup, seconds, rows, results, fresh, swap, pages)


def _markdown(quick: bool, info: dict, startup: float, seconds: float, rows: list, results: dict, fresh: dict,
              swap: dict, pages: dict) -> str:
    size = info["size"]
    lines = [
        "## Serving (HTTP API under load)",
        "",
        f"Synthetic shop: {size['n_users']:,} users, {size['n_items']:,} items, {size['n_events']:,} events"
        + (" (`--quick`; the full run uses 1,000,000 users, 100,000 items and 20,000,000 events)." if quick
           else " (the full run)."),
        f"Model: {', '.join(info['generators'])} (ALS {info['factors']} factors) fused by LightGBM LambdaRank; "
        f"trained in {info['train_seconds']:.0f} s. `fusionrec serve`, one uvicorn worker, took {startup:.1f} s to "
        "load the model and every user's history from the store.",
        f"Load: a separate process (asyncio + aiohttp, keep-alive), fixed concurrency for {seconds:.0f} s per row "
        "(the bare endpoint twice per concurrency, before and after the others), on the same machine as the "
        "server, so client and server share its cores; latency is measured by the client. Recommendations are "
        "asked for 2,000 known users and 100 strangers drawn at random (returning users: a repeat within 30 s "
        "is served from the answer cache when nothing about the user changed; the same traffic runs "
        f"{RETURNING_WARMUP:.0f} s untimed before these rows, so each user's first visit is not counted as a return, "
        "and a user whose answer expired during the row is computed again) and, in the 'new user' rows, for "
        f"each of {DISTINCT_USERS:,} other known users at most once (every answer computed: the pipeline's "
        "cost); events are posted for 2,000 other known users. The machine's load "
        f"average was {info['load'][0]:.1f} at the start and {info['load'][1]:.1f} at the end "
        f"({os.cpu_count()} cores).",
        "",
        "| endpoint | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, c, s in rows:
        lines.append(f"| {label} | {c} | {s['rps']:,.0f} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | "
                     f"{s['errors']} |")
    lines.append("")
    for c in (1, 8, 32):
        bare, recs, sim = results[("bare", c)], results[("recs", c)], results[("similar", c)]
        new = results[("recs_distinct", c)]
        if bare["rps"]:
            lines.append(f"- Concurrency {c}: recommendations for returning users run at {recs['rps'] / bare['rps']:.0%} "
                         f"of the bare endpoint's throughput ({recs['rps']:,.0f} vs {bare['rps']:,.0f} requests/s; "
                         f"p50 {recs['p50']:.1f} vs {bare['p50']:.1f} ms, p99 {recs['p99']:.1f} ms), for a new user "
                         f"each request at {new['rps'] / bare['rps']:.0%} ({new['rps']:,.0f} requests/s, p99 "
                         f"{new['p99']:.1f} ms); similar items at {sim['rps'] / bare['rps']:.0%}.")
    for c in (1, 8, 32):
        one, bare = results[("event", c)], results[("bare", c)]
        if bare["rps"]:
            lines.append(f"- POST /events, one event a request, at concurrency {c}: {one['rps']:,.0f} events/s "
                         f"stored, {one['rps'] / bare['rps']:.0%} of the bare endpoint's requests/s (one request "
                         "each: the bare endpoint bounds it).")
    for c in (1, 8, 32):
        b = results[("batch", c)]
        lines.append(f"- POST /events in batches of 500 at concurrency {c}: {b['rps'] * 500:,.0f} events/s stored "
                     "(each batch committed to DuckDB before the answer).")
    lines.append("- The server's store runs on one DuckDB thread once the histories are loaded (`store_threads`, "
                 "the default): concurrent requests' events are validated and committed together by one writer "
                 "thread, which waits up to 2 ms for more requests when its last commit had several.")
    lines += [
        f"- Freshness: a known user buys the top item of their recommendations; from POST /events returning to "
        f"a recommendation that reflects it (the item filtered out, or named as history in a reason): "
        f"{fresh['median_ms']:.1f} ms median, {fresh['max_ms']:.1f} ms worst; {fresh['first']} of "
        f"{fresh['trials']} trials reflected by the first GET after the POST, {fresh['missed']} not within "
        f"{fresh['max_gets']} GETs.",
        f"- Retrain and hot swap under load (recommendations for a new user each request, at concurrency 8, "
        f"offered at {swap['rate']:,.0f} requests/s, {SWAP_LOAD:.0%} of their closed-loop throughput above): "
        f"the retrain took "
        f"{swap['retrain_seconds']:.1f} s (a snapshot of the store, training in a child process at lower CPU "
        f"priority, loading and swapping in the server) and swapped in {swap['version']}; "
        f"{swap['errors']} errors in {swap['requests']:,} requests; p99 {swap['steady']['p99']:.1f} ms steady, "
        f"{swap['during']['p99']:.1f} ms during the retrain "
        f"({swap['during']['p99'] / swap['steady']['p99']:.2f}x steady; target 2x), "
        f"{swap['after']['p99']:.1f} ms after; throughput {swap['steady']['rps']:,.0f} / "
        f"{swap['during']['rps']:,.0f} / {swap['after']['rps']:,.0f} requests/s. The retrain's p99 per "
        f"{SWAP_WINDOW:.0f} s: " + ", ".join(f"{w:.1f}" for w in swap["windows"]) + " ms (median "
        f"{np.median(swap['windows']):.1f}, {np.median(swap['windows']) / swap['steady']['p99']:.2f}x steady).",
    ]
    lines += ["", "Dashboard pages (`/ui`, server-rendered; one client, 10 loads each after a warm-up load, "
              "users and items drawn from the shop; target < 300 ms):", "",
              "| page | median ms | worst ms | status |", "|---|---:|---:|---|"]
    for page, p in pages.items():
        lines.append(f"| {page} | {p['median_ms']:.1f} | {p['max_ms']:.1f} | {p['status']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
