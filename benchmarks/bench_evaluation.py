"""Time the evaluation harness on Gowalla (LightGCN split, 29,858 users x 40,981 items, top-20).

The model is a dense product of random factors, so the timing is the harness plus one matrix product
per batch: fitting is free and the metrics are meaningless (near zero). Prints a Markdown section.

    .venv/bin/python benchmarks/bench_evaluation.py [--data ../shared/data/lightgcn_gowalla] [--factors 64]
"""

from __future__ import annotations

import argparse
import sys
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec.candidates.base import CandidateGenerator
from fusionrec.data.interactions import Interactions
from fusionrec.evaluation import evaluate

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lightgcn_gowalla"


class RandomFactors(CandidateGenerator):
    """score = U[user] @ V.T with random factors: the cost profile of ALS/BPR scoring without their fit."""

    name = "random-factors"

    def __init__(self, factors: int = 64, seed: int = 0) -> None:
        self.factors, self.seed = factors, seed

    def config(self) -> dict:
        return {"factors": self.factors, "seed": self.seed}

    def _fit(self, data: Interactions) -> None:
        rng = np.random.default_rng(self.seed)
        self.user_factors_ = rng.standard_normal((data.n_users, self.factors)).astype(np.float32)
        self.item_factors_ = rng.standard_normal((data.n_items, self.factors)).astype(np.float32)

    def score(self, users: np.ndarray, histories: sp.csr_matrix) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T


@dataclass
class _Dataset:
    name: str
    format: str
    events: pl.DataFrame
    items: pl.DataFrame | None
    users: pl.DataFrame | None
    has_timestamps: bool
    checksum: str


def read_lightgcn(folder: Path) -> _Dataset:
    """The two files straight into the loader's event table (used when the loader is not importable)."""
    frames = []
    for split in ("train", "test"):
        users, items = [], []
        for line in (folder / f"{split}.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) > 1:
                users.extend([parts[0]] * (len(parts) - 1))
                items.extend(parts[1:])
        frames.append(pl.DataFrame({"user_id": users, "item_id": items, "split": [split] * len(users)}))
    ev = pl.concat(frames).with_columns(
        pl.lit("view").alias("behavior"), pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("timestamp"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))
    return _Dataset(folder.name, "lightgcn", ev, None, None, False, "")


def load(folder: Path) -> tuple[_Dataset, str]:
    try:
        from fusionrec.data.loading import load_dataset
        return load_dataset(folder, "lightgcn"), "fusionrec.data.loading.load_dataset"  # type: ignore[return-value]
    except Exception as exc:  # the loader is optional here: the benchmark times the harness
        return read_lightgcn(folder), f"direct read of train.txt/test.txt (loader unavailable: {type(exc).__name__})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--k", default="10,20")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--models", default="random,als",
                    help="comma-separated: 'random' (random factors) and/or registry names such as als, ease")
    args = ap.parse_args()
    ks = [int(k) for k in args.k.split(",")]

    t0 = time.perf_counter()
    ds, how = load(args.data)
    load_s = time.perf_counter() - t0
    stages: list[tuple[str, float]] = []
    last = [time.perf_counter()]

    def progress(msg: str) -> None:
        now = time.perf_counter()
        stages.append((msg, now - last[0]))
        last[0] = now

    def factory(name: str, params: dict) -> CandidateGenerator:
        if name == "random":
            return RandomFactors(args.factors)
        from fusionrec.candidates.registry import make
        return make(name, params)

    kmax = ks[-1]
    print(f"## Evaluation harness: Gowalla (LightGCN split), top-{kmax}\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"- data: {args.data.name} via {how}, loaded in {load_s:.1f} s")
    print(f"- K = {ks}; bootstrap resamples: {args.bootstrap}; full ranking over all items, train items excluded")
    print("- `random`: random factors (d = %d), a dense product + argpartition with no fitting cost\n" % args.factors)
    print("| model | split + indexing s | fit s | recommend s | metrics + CIs s | evaluate() total s "
          f"| recall@{kmax} | ndcg@{kmax} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in [m for m in args.models.split(",") if m]:
        stages.clear()
        last[0] = time.perf_counter()
        t0 = time.perf_counter()
        try:
            result = evaluate(ds, "given", [name], ks=ks, factory=factory, progress=progress,
                              n_bootstrap=args.bootstrap)
        except Exception as exc:  # a generator still being written must not hide the harness timing
            print(f"| {name} | failed: {type(exc).__name__}: {exc} |||||||")
            continue
        total_s = time.perf_counter() - t0
        m = result.models[name]
        split_s = stages[0][1]
        metric_s = total_s - split_s - m.fit_seconds - m.recommend_seconds
        print(f"| {name} | {split_s:.2f} | {m.fit_seconds:.2f} | {m.recommend_seconds:.2f} | {metric_s:.2f} "
              f"| {total_s:.2f} | {m.metrics[f'recall@{kmax}']:.4f} | {m.metrics[f'ndcg@{kmax}']:.4f} |")
    print(f"\nusers evaluated: {result.n_users_evaluated:,}; items ranked: {result.n_items:,}. "
          "Published on this split: EASE 0.1765 / 0.1467, LightGCN 0.1824 / 0.1554 (recall@20 / ndcg@20).")


def run(quick: bool = False) -> str:
    """The section for benchmarks/run.py: main()'s Markdown, captured."""
    import contextlib
    import io

    buf = io.StringIO()
    argv = sys.argv
    sys.argv = [argv[0], "--models", "random" if quick else "random,als"]
    try:
        with contextlib.redirect_stdout(buf):
            main()
    finally:
        sys.argv = argv
    return buf.getvalue()


if __name__ == "__main__":
    main()
