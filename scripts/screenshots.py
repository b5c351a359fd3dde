"""Screenshots of every dashboard page into docs/screenshots/, from a real server over a synthetic shop.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--demo demo] [--users 3000 ...]

With `--demo DIR` (the folder `make demo` fills: DIR/shop.duckdb, DIR/models, DIR/eval.json) it copies
that shop; otherwise it generates, ingests, trains and evaluates one of the given size. Then it serves it
with uvicorn on loopback, plays some shoppers through the API (so the live counters and the A/B
experiment have data), and has headless Chromium (Debian's, through Playwright) photograph each page.
It also prints how long each page took to answer.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parents[1]


def build_shop(work: Path, users: int, items: int, events: int, seed: int) -> tuple[Path, Path]:
    """Generate, ingest, train and evaluate a synthetic shop; returns (store, model directory)."""
    from fusionrec.data.loading import load_dataset
    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop
    from fusionrec.evaluation.evaluator import evaluate
    from fusionrec.evaluation.model_config import read_model_params
    from fusionrec.pipeline import load_pipeline_config
    from fusionrec.serving.training import train_version
    from fusionrec.store.event_store import EventStore

    t0 = time.perf_counter()
    write_shop(generate_shop(ShopConfig(n_users=users, n_items=items, n_events=events, seed=seed)), work / "shop")
    config = ROOT / "configs" / "demo.toml"
    with EventStore(work / "store.duckdb") as st:
        st.ingest([work / "shop"], "fusionrec")
        folder = train_version(st, work / "models", load_pipeline_config(config))
    print(f"shop built and trained in {time.perf_counter() - t0:.1f} s", flush=True)
    result = evaluate(load_dataset(work / "shop", "fusionrec"), "temporal",
                      ["pop", "itemknn", "rp3beta", "covisit", "als", "blend", "fusion"], [5, 10, 20],
                      params=read_model_params(config), seed=0, test_days=7, n_bootstrap=300)
    result.write_json(folder / "evaluation.json")
    print(f"evaluated in {time.perf_counter() - t0:.1f} s", flush=True)
    return work / "store.duckdb", work / "models"


def copy_demo(demo: Path, work: Path) -> tuple[Path, Path]:
    shutil.copy(demo / "shop.duckdb", work / "store.duckdb")
    shutil.copytree(demo / "models", work / "models")
    current = (work / "models" / "current").read_text().strip()
    if (demo / "eval.json").is_file() and not (work / "models" / current / "evaluation.json").exists():
        shutil.copy(demo / "eval.json", work / "models" / current / "evaluation.json")
    return work / "store.duckdb", work / "models"


def play_shoppers(base: str, users: list[str], rounds: int, dashboard_poll: Callable[[httpx.Client], object]) -> None:
    """Shoppers who get recommendations and sometimes click, cart and buy what they were shown."""
    rng = random.Random(7)
    with httpx.Client(base_url=base, timeout=30) as c:
        for r in range(rounds):
            for user in rng.sample(users, min(len(users), 40)):
                items = c.get(f"/recommendations/{user}", params={"k": 10}).json()["items"]
                events = []
                for it in items[:5]:
                    if rng.random() < 0.25:
                        events.append({"user_id": user, "item_id": it["item_id"], "behavior": "click"})
                        if rng.random() < 0.3:
                            events.append({"user_id": user, "item_id": it["item_id"], "behavior": "cart"})
                            if rng.random() < 0.5:
                                events.append({"user_id": user, "item_id": it["item_id"], "behavior": "buy"})
                if events:
                    c.post("/events", json=events).raise_for_status()
                c.get(f"/items/{items[0]['item_id']}/similar", params={"k": 6})
            dashboard_poll(c)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--demo", type=Path, default=None, help="copy the shop `make demo` built in this folder")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=800)
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from fusionrec.serving.ab import Experiment
    from fusionrec.serving.app import create_app
    from fusionrec.serving.settings import ServingSettings
    from fusionrec.ui.browser import launch_chromium, running_server

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fusionrec-screens-"))
    try:
        if args.demo is not None:
            store, models = copy_demo(args.demo, work)
        else:
            store, models = build_shop(work, args.users, args.items, args.events, args.seed)
        experiment = Experiment.from_dict({"name": "ranker-vs-blend", "variants": {
            "control": {"model": "current", "share": 0.5}, "candidate": {"model": "current", "share": 0.5}}})
        app = create_app(models, store, ServingSettings(reload_poll_seconds=None, experiments=[experiment]))
        data = app.state.dashboard
        data.experiments.every = 0.0
        with running_server(app, port=None) as base:
            users = data.sample_users(200)
            play_shoppers(base, users, rounds=8, dashboard_poll=lambda c: c.get("/ui/api/experiments"))
            data.summary()
            user = users[3]
            item = data.summary().top_items[5][0]
            category = data.categories()[0][0].split("/")[0]
            shots = [("overview", "/ui"), ("models", "/ui/models"), ("user-inspector", f"/ui/users/{user}"),
                     ("item", f"/ui/items/{item}"), ("experiments", "/ui/experiments"),
                     ("storefront", f"/ui/shop/c/{category}?visitor={user}"),
                     ("storefront-product", f"/ui/shop/p/{item}?visitor={user}")]
            timings = {}
            with httpx.Client(base_url=base, timeout=30) as c:
                for _, path in shots + [("items", "/ui/items"), ("users", "/ui/users")]:
                    c.get(path)  # warm
                    t = time.perf_counter()
                    for _ in range(5):
                        c.get(path).raise_for_status()
                    timings[path] = (time.perf_counter() - t) / 5 * 1000
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                for name, path in shots:
                    page.goto(base + path)
                    page.wait_for_load_state("networkidle")
                    if "/shop/" in path:
                        page.wait_for_selector("#recs[data-state=ready] li.tile")
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                    print(f"wrote {args.out / (name + '.png')}", flush=True)
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
                phone.goto(f"{base}/ui/shop/p/{item}?visitor={user}")
                phone.wait_for_selector("#recs[data-state=ready] li.tile")
                phone.screenshot(path=str(args.out / "storefront-phone.png"), full_page=False)
                browser.close()
            summary = data.summary()
            print(json.dumps({"page_ms": {k: round(v, 1) for k, v in timings.items()}, "events": summary.events,
                              "users": summary.users, "summary_full_seconds": round(summary.full_seconds, 2)},
                             indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
