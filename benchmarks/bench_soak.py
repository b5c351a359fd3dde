"""Soak: `fusionrec serve` under a steady mixed load for a long time, with a retrain and hot swap in the middle.

Traffic (from a separate asyncio + aiohttp process, open loop at a fixed rate): 80% GET /recommendations/{user},
15% POST /events, 5% GET /items/{id}/similar. The rate is 60% of the throughput the same mix reaches at
concurrency 8 on this machine (measured first, closed loop, for 15 s), i.e. near the benchmark throughput
but below saturation, so latency reflects the server rather than a growing queue. (At 75% the server of
the 2-core machine, sharing it with the load generator, tips into a queue after a minute or two: the short
closed-loop measurement overstates what it sustains for ten minutes.) Half way
through, POST /admin/retrain?wait=true trains a new version (in a child process of the server, on a
snapshot of its store) and swaps it in.

Reported: failed requests (anything but 200, transport errors included), the server's resident memory
(VmRSS, sampled every second) after warm-up against the end, and p99 latency per minute.

`python benchmarks/bench_soak.py [--seconds 600] [--rate R]`; in run.py the `soak` section runs 10 minutes
(`--quick`: 1 minute). The shop is the serving benchmark's quick one (10,000 users, 2,000 items, 300,000 events).
`soak()` is also what tests/test_soak.py runs for 20 seconds over a tiny shop.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

KEY = "soak-key"
#: the offered rate as a share of the closed-loop throughput measured first
SOAK_LOAD = 0.6

LOADGEN = r"""
import asyncio, json, random, sys, time
import aiohttp

cfg = json.loads(sys.argv[1])
base, rate, seconds = cfg["base"], cfg["rate"], cfg["seconds"]
users, items = cfg["users"], cfg["items"]
auth = {"Authorization": "Bearer " + cfg["key"]}
rnd = random.Random(cfg.get("seed", 0))
samples = []  # (wall, seconds, status, kind, model_version or None, error or None)
BEHAVIORS = ("view", "view", "view", "cart", "buy")
# events are stamped in the shop's time: its log ends when the benchmark starts (wall clock `wall0`)
stamp = lambda: int(cfg["shop_now"] + (time.time() - cfg["wall0"])) if cfg.get("shop_now") else None

def pick():
    r = rnd.random()
    return "recs" if r < 0.80 else ("event" if r < 0.95 else "similar")

async def one(client, kind, sem):
    wall, t0 = time.time(), time.perf_counter()
    status, version, err = -1, None, None
    try:
        if kind == "recs":
            async with client.get("/recommendations/" + rnd.choice(users), params={"k": 10}) as r:
                status, body = r.status, await r.text()
            if status == 200:
                version = json.loads(body).get("model_version")
        elif kind == "similar":
            async with client.get("/items/" + rnd.choice(items) + "/similar", params={"k": 10}) as r:
                status, body = r.status, await r.text()
        else:
            n = 1 if rnd.random() < 0.8 else rnd.randint(2, 20)
            evs = [{"user_id": rnd.choice(users), "item_id": rnd.choice(items), "behavior": rnd.choice(BEHAVIORS)}
                   for _ in range(n)]
            t = stamp()
            if t is not None:
                for e in evs:
                    e["timestamp"] = t
            async with client.post("/events", json=evs[0] if n == 1 else evs, headers=auth) as r:
                status, body = r.status, await r.text()
            if status == 200 and json.loads(body).get("accepted") != n:
                err = "events rejected: " + body[:200]
        if status != 200 and err is None:
            err = body[:200]
    except Exception as exc:
        err = type(exc).__name__ + ": " + str(exc)[:200]
    finally:
        sem.release()
    samples.append((wall, time.perf_counter() - t0, status, kind, version, err))

async def closed_loop(client, deadline):
    sem = asyncio.Semaphore(1)
    while time.perf_counter() < deadline:
        await sem.acquire()
        await one(client, pick(), sem)

async def main():
    # idle connections are dropped by the client (2 s) before uvicorn closes them (5 s): otherwise a request
    # sent on a connection the server is closing at that moment fails with a reset (ReadError)
    # (aiohttp: httpx's client costs 1-5 ms of CPU a request here, growing with the number of connections,
    # which on 2 shared cores starved the server it measured)
    conn = aiohttp.TCPConnector(limit=cfg["max_inflight"], keepalive_timeout=2.0)
    async with aiohttp.ClientSession(base, connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as client:
        if cfg.get("calibrate"):  # closed loop at concurrency 8: the mix's throughput here
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(closed_loop(client, deadline) for _ in range(8)))
            return
        sem = asyncio.Semaphore(cfg["max_inflight"])
        tasks = set()
        start, n = time.perf_counter(), 0
        while True:
            due = start + n / rate
            if due >= start + seconds:
                break
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            await sem.acquire()
            t = asyncio.create_task(one(client, pick(), sem))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*list(tasks))

asyncio.run(main())
with open(cfg["out"], "w") as fh:
    json.dump(samples, fh)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def start_server(model: Path, store: Path, workdir: Path, config: Path | None = None,
                 timeout: float = 600.0) -> tuple[subprocess.Popen, str, Path]:
    """`fusionrec serve` on a free loopback port; returns (process, base URL, log file) once /health answers."""
    import httpx

    port = _free_port()
    log = workdir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "fusionrec.cli", "serve", "--model", str(model), "--store", str(store),
           "--port", str(port)] + (["--config", str(config)] if config else [])
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env={**os.environ, "FUSIONREC_API_KEY": KEY}, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base, log
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server at {base} did not come up in {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _loadgen(workdir: Path, base: str, users: list[str], items: list[str], seconds: float, rate: float = 0.0,
             calibrate: bool = False, max_inflight: int = 64,
             shop_clock: tuple[float, float] | None = None) -> subprocess.Popen:
    """The load generator process; `shop_clock` = (shop time, wall time) when the shop's log ends: events
    are then stamped in the shop's time, else the server stamps them with its clock."""
    out = workdir / f"soak-samples-{time.time_ns()}.json"
    cfg = {"base": base, "rate": rate, "seconds": seconds, "users": users, "items": items, "key": KEY,
           "out": str(out), "calibrate": calibrate, "max_inflight": max_inflight,
           "shop_now": shop_clock[0] if shop_clock else None, "wall0": shop_clock[1] if shop_clock else None}
    proc = subprocess.Popen([sys.executable, "-c", LOADGEN, json.dumps(cfg)])
    proc.out = out  # type: ignore[attr-defined]
    return proc


def _samples(proc: subprocess.Popen) -> list:
    proc.wait()
    return json.loads(proc.out.read_text())  # type: ignore[attr-defined]


def calibrate(workdir: Path, base: str, users: list[str], items: list[str], seconds: float = 10.0,
              shop_clock: tuple[float, float] | None = None) -> float:
    """Requests/s of the soak's mix at concurrency 8, closed loop."""
    samples = _samples(_loadgen(workdir, base, users, items, seconds, calibrate=True, shop_clock=shop_clock))
    return len(samples) / seconds


def soak(base: str, pid: int, workdir: Path, users: list[str], items: list[str], *, seconds: float, rate: float,
         swap_at: float | None = 0.5, warmup: float = 0.2, window: float | None = None,
         shop_clock: tuple[float, float] | None = None) -> dict[str, Any]:
    """Drive a running server for `seconds` at `rate` requests/s; retrain + swap at `swap_at` of the way.

    Returns counts, failures (with examples), RSS after warm-up and at the end, per-window p99 and the swap.
    """
    import httpx

    rss: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            kb = _rss_kb(pid)
            if kb is not None:
                rss.append((time.time(), kb))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    t_start = time.time()
    sampler.start()
    gen = _loadgen(workdir, base, users, items, seconds, rate=rate, shop_clock=shop_clock)
    swap: dict[str, Any] = {}
    if swap_at is not None:
        time.sleep(seconds * swap_at)
        t0 = time.time()
        r = httpx.post(base + "/admin/retrain", params={"wait": True}, headers={"Authorization": f"Bearer {KEY}"},
                       timeout=max(600.0, seconds))
        swap = {"status": r.status_code, "started": t0 - t_start, "seconds": time.time() - t0,
                "version": r.json().get("version"), "last": r.json().get("last"), "error": r.json().get("error")}
    samples = _samples(gen)
    stop.set()
    sampler.join(timeout=5)
    return summarise(samples, rss, t_start, seconds, swap, warmup, window, rate)


def summarise(samples: list, rss: list, t_start: float, seconds: float, swap: dict, warmup: float,
              window: float | None, rate: float) -> dict[str, Any]:
    window = window or (60.0 if seconds >= 180 else max(2.0, seconds / 6))
    failed = [s for s in samples if s[2] != 200 or s[5]]
    causes: dict[str, int] = {}
    for s in failed:
        cause = f"{s[3]} -> {s[2]}: {(s[5] or '')[:120]}"
        causes[cause] = causes.get(cause, 0) + 1
    by_kind: dict[str, int] = {}
    for s in samples:
        by_kind[s[3]] = by_kind.get(s[3], 0) + 1
    windows = []
    n_win = int(np.ceil(seconds / window))
    for w in range(n_win):
        lo, hi = t_start + w * window, t_start + (w + 1) * window
        lat = [s[1] * 1000.0 for s in samples if lo <= s[0] < hi]
        windows.append({"from_s": w * window, "n": len(lat), "rps": len(lat) / window,
                        "p50": float(np.percentile(lat, 50)) if lat else float("nan"),
                        "p99": float(np.percentile(lat, 99)) if lat else float("nan"),
                        "swap": bool(swap) and w * window < swap.get("started", -1) + swap.get("seconds", 0)
                        and swap.get("started", 1e18) < (w + 1) * window})
    warm_t = t_start + warmup * seconds
    after_warm = [kb for t, kb in rss if t >= warm_t]
    base_kb = after_warm[0] if after_warm else None
    tail = [kb for t, kb in rss if t >= t_start + 0.9 * seconds] or after_warm[-1:]
    end_kb = int(np.median(tail)) if tail else None
    growth = (end_kb - base_kb) / base_kb if base_kb and end_kb else None
    # a leak grows within a phase; a swap can add a one-time step (the new version's buffers), so the
    # growth before and after the swap is reported apart from the total
    def phase_growth(t0: float, t1: float) -> float | None:
        kb = [k for t, k in rss if t0 <= t <= t1]
        if len(kb) < 4:
            return None
        n = max(1, len(kb) // 10)
        return (float(np.median(kb[-n:])) - float(np.median(kb[:n]))) / float(np.median(kb[:n]))

    if swap:
        swap_t0, swap_t1 = t_start + swap["started"], t_start + swap["started"] + swap["seconds"]
        before_swap = phase_growth(warm_t, swap_t0)
        after_swap = phase_growth(swap_t1 + 0.05 * seconds, t_start + seconds)
    else:
        before_swap, after_swap = phase_growth(warm_t, t_start + seconds), None
    versions = sorted({s[4] for s in samples if s[4]})
    steady = [w["p99"] for w in windows if not w["swap"] and w["n"]]
    return {"seconds": seconds, "rate": rate, "requests": len(samples), "by_kind": by_kind,
            "failed": len(failed), "failures": [s[2:] for s in failed[:5]], "failure_causes": causes, "versions": versions, "swap": swap,
            "rss_after_warmup_mb": base_kb / 1024 if base_kb else None, "rss_end_mb": end_kb / 1024 if end_kb else None,
            "rss_max_mb": max(kb for _, kb in rss) / 1024 if rss else None, "rss_growth": growth,
            "rss_growth_before_swap": before_swap, "rss_growth_after_swap": after_swap,
            "windows": windows, "window_seconds": window,
            "p99_steady_max_over_median": (max(steady) / float(np.median(steady))) if steady else None}


def run(quick: bool = False, seconds: float | None = None, rate: float | None = None) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_serving import _setup, _wait_dashboard_summary  # the serving benchmark's quick shop and model

    seconds = seconds or (60.0 if quick else 600.0)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        store, model, info = _setup(tmp, quick=True)
        proc, base, log = start_server(model, store, tmp)
        try:
            from fusionrec.serving.versions import load_version

            pipe = load_version(model).pipeline
            rnd = random.Random(1)
            known = pipe.users_.ids()
            # every known user of the shop may visit (and 100 strangers): a small sample of them would
            # take all the events, and their live histories would grow to hundreds of events in minutes
            users = list(known) + [f"stranger-{i}" for i in range(100)]
            items = rnd.sample(pipe.items_.ids(), min(2000, pipe.n_items_))
            # the shop's log ends now: live events continue it, so a retrain's validation window is
            # the shop's last days plus the soak, not the soak's events alone
            clock = (float(pipe.user_features_.now), time.time())
            del pipe
            _wait_dashboard_summary(base)  # its first aggregate of the store runs in the background
            calibrate(tmp, base, users, items, seconds=3.0, shop_clock=clock)  # warm-up, not counted
            measured = calibrate(tmp, base, users, items, seconds=5.0 if quick else 15.0, shop_clock=clock)
            rate = rate or round(SOAK_LOAD * measured, 1)
            res = soak(base, proc.pid, tmp, users, items, seconds=seconds, rate=rate, shop_clock=clock)
        finally:
            stop_server(proc)
        # what the swap loads: the retrained version learned the soak's events too
        res["version_mb"] = {v.name: sum(f.stat().st_size for f in v.rglob("*") if f.is_file()) / 1e6
                             for v in sorted(model.iterdir()) if v.is_dir() and not v.is_symlink()}
        errors = [ln for ln in log.read_text().splitlines() if " ERROR " in ln or "Traceback" in ln]
    res["calibrated_rps"] = measured
    res["server_errors"] = len(errors)
    return _markdown(res, info, quick)


def _markdown(res: dict, info: dict, quick: bool) -> str:
    size = info["size"]
    sw = res["swap"]
    growth = res["rss_growth"]
    lines = [
        "## Soak (steady mixed load with a hot swap)",
        "",
        f"Synthetic shop: {size['n_users']:,} users, {size['n_items']:,} items, {size['n_events']:,} events; "
        f"`fusionrec serve` (one uvicorn worker) and the load generator (a separate asyncio + aiohttp process) share "
        f"{os.cpu_count()} cores. {res['seconds']:.0f} s of open-loop traffic at {res['rate']:.1f} "
        f"requests/s ({res['rate'] / res['calibrated_rps']:.0%} of the {res['calibrated_rps']:.1f} requests/s the same mix reached closed-loop at "
        "concurrency 8): 80% GET /recommendations, 15% POST /events (1 to 20 events), 5% GET /items/{id}/similar; "
        "users drawn from all of the shop's users plus 100 strangers; events are stamped in the shop's time, "
        "as if its log ended when the soak started.",
        "",
        f"- Requests: {res['requests']:,} ({', '.join(f'{k} {v:,}' for k, v in sorted(res['by_kind'].items()))}); "
        f"**failed: {res['failed']}**; server log errors: {res['server_errors']}.",
        *[f"  - {n} x {cause}" for cause, n in sorted(res.get("failure_causes", {}).items(), key=lambda kv: -kv[1])[:5]],
        f"- Retrain + hot swap at {sw.get('started', 0):.0f} s: HTTP {sw.get('status')}, {sw.get('seconds', 0):.1f} s, "
        f"now serving {sw.get('version')}; versions seen by clients: {', '.join(res['versions'])}.",
        f"- Server memory (VmRSS): {res['rss_after_warmup_mb']:.0f} MB after warm-up (the first 20%), "
        f"{res['rss_end_mb']:.0f} MB at the end, {res['rss_max_mb']:.0f} MB at most: growth "
        + (f"**{growth:+.1%}**" if growth is not None else "n/a") + " (target: under 10%); within the steady "
        "phases: " + ", ".join(f"{label} {g:+.1%}" for label, g in (("before the swap", res["rss_growth_before_swap"]),
                                                                   ("after it", res["rss_growth_after_swap"]))
                               if g is not None) + ".",
        *([f"- Model versions on disk (the retrained one learned the soak's events as well): "
           + ", ".join(f"{name} {mb:.1f} MB" for name, mb in res["version_mb"].items()) + "."]
          if res.get("version_mb") else []),
        f"- p99 per {res['window_seconds']:.0f} s window, the swap window excluded: worst / median "
        f"= {res['p99_steady_max_over_median'] or float('nan'):.2f}.",
        "",
        "| from s | requests/s | p50 ms | p99 ms | |",
        "|---:|---:|---:|---:|---|",
    ]
    for w in res["windows"]:
        lines.append(f"| {w['from_s']:.0f} | {w['rps']:.1f} | {w['p50']:.1f} | {w['p99']:.1f} | "
                     f"{'retrain + swap' if w['swap'] else ''} |")
    if quick:
        lines.append("\n(`--quick`: 1 minute; the full section runs 10 minutes.)")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=None, help="requests/s (default: 60%% of the measured throughput)")
    args = ap.parse_args()
    print(run(seconds=args.seconds, rate=args.rate))
