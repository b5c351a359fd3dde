"""Time the evaluation harness on Gowalla (LightGCN split, 29,858 users x 40,981 items, top-20).

The model is a dense product of random factors, so the timing is the harness plus one matrix product
per batch: fitting is free and the metrics are meaningless (near zero). Prints a Markdown section.

    .venv/bin/python benchmarks/bench_evaluation.py [--data ../shared/data/lightgcn_gowalla] [--factors 64]
"""

from __future__ import annotations

import argparse
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

    t0 = time.perf_counter()
    result = evaluate(ds, "given", ["random"], ks=ks, factory=lambda n, p: RandomFactors(args.factors),
                      progress=progress, n_bootstrap=args.bootstrap)
    total_s = time.perf_counter() - t0
    m = result.models["random"]
    kmax = ks[-1]
    print(f"## Evaluation harness: Gowalla (LightGCN split), top-{kmax}\n")
    print(f"- machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"- data: {args.data.name} via {how}, loaded in {load_s:.1f} s")
    print(f"- users evaluated: {result.n_users_evaluated:,}; items ranked: {result.n_items:,}; K = {ks}; "
          f"bootstrap resamples: {args.bootstrap}")
    print(f"- model: random factors (d = {args.factors}), dense product + argpartition over all items\n")
    print("| stage | seconds |")
    print("|---|---:|")
    print(f"| split (given) + indexing | {stages[0][1]:.2f} |")
    print(f"| fit | {m.fit_seconds:.2f} |")
    print(f"| recommend (score + exclude seen + top-{kmax}) | {m.recommend_seconds:.2f} |")
    metric_s = total_s - stages[0][1] - m.fit_seconds - m.recommend_seconds
    print(f"| metrics, diversity, CIs | {metric_s:.2f} |")
    print(f"| **total evaluate()** | **{total_s:.2f}** |")
    print(f"\nrecall@{kmax} = {m.metrics[f'recall@{kmax}']:.4f}, ndcg@{kmax} = {m.metrics[f'ndcg@{kmax}']:.4f} "
          "(random scores: near zero by design)")


if __name__ == "__main__":
    main()
