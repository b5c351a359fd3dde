"""Fit time and Recall@20 / NDCG@20 of the core candidate generators on Gowalla (LightGCN split).

Protocol (LightGCN / BARS): full ranking over all items, train items excluded, Recall@20 = hits /
|test items| averaged over users with test items. Hyper-parameters were chosen with `--tune` on a
validation split carved out of train (20% of each user's train items, seed 0); test is never looked
at while tuning.

    .venv/bin/python benchmarks/bench_generators_gowalla.py                 # test, tuned params
    .venv/bin/python benchmarks/bench_generators_gowalla.py --tune itemknn  # validation grid
    .venv/bin/python benchmarks/bench_generators_gowalla.py --only ease,als --json out.json

Prints a Markdown table; `--json` also writes the rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec.candidates.registry import make
from fusionrec.data.interactions import Interactions, InteractionWeighting

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lightgcn_gowalla"

# chosen on the validation split with the grids below (best Recall@20 of the last stage that moved it)
TUNED: dict[str, dict[str, Any]] = {
    "pop": {},
    "itemknn": {"k": 200, "similarity": "asymmetric_cosine", "alpha": 0.05, "shrink": 10.0},
    "rp3beta": {"alpha": 0.7, "beta": 0.2, "k": 200},
    # N = 30,000 of 40,981 items: 3.6 GB in float32; the full catalogue would need 6.7 GB and ~2.5x the time
    "ease": {"l2": 100.0, "max_items": 30_000},
    "als": {"factors": 512, "alpha": 30.0, "regularization": 50.0, "iterations": 15},
    "bpr": {"factors": 64, "learning_rate": 0.01, "regularization": 0.0001, "iterations": 300},
    "userknn": {"k": 100, "shrink": 0.0},
}

# the stages actually run, in order (`--tune NAME` runs them all; `--grid` replaces them with one)
GRIDS: dict[str, list[dict[str, list[Any]]]] = {
    "pop": [{}],
    "itemknn": [
        {"k": [50, 100, 200, 400], "shrink": [0.0, 10.0, 50.0], "weighting": ["none", "bm25", "tfidf"]},
        {"k": [100, 200], "shrink": [50.0, 100.0, 200.0, 500.0]},
        {"k": [200], "shrink": [50.0, 100.0], "similarity": ["asymmetric_cosine"], "alpha": [0.2, 0.35, 0.65]},
        {"k": [200], "shrink": [0.0, 10.0, 50.0], "similarity": ["jaccard"]},
        {"k": [200], "shrink": [10.0, 25.0, 50.0], "similarity": ["asymmetric_cosine"], "alpha": [0.05, 0.1, 0.2]},
    ],
    "rp3beta": [
        {"alpha": [0.5, 0.75, 1.0], "beta": [0.0, 0.2, 0.4, 0.6], "k": [100, 200]},
        {"alpha": [0.6, 0.7, 0.8, 0.9], "beta": [0.1, 0.2, 0.3], "k": [200, 400]},
    ],
    "ease": [
        {"l2": [20.0, 50.0, 100.0, 200.0, 500.0], "max_items": [10_000]},
        {"l2": [100.0, 200.0], "max_items": [20_000]},
        {"l2": [100.0], "max_items": [30_000]},
    ],
    "als": [
        {"factors": [128], "alpha": [2.0, 5.0, 10.0, 20.0, 50.0], "regularization": [0.01, 1.0]},
        {"factors": [128, 256], "alpha": [100.0, 200.0], "regularization": [1.0, 10.0]},
        {"factors": [512], "alpha": [50.0, 100.0], "regularization": [10.0]},
        {"factors": [512], "alpha": [30.0], "regularization": [10.0, 50.0]},
    ],
    "bpr": [
        {"factors": [128], "learning_rate": [0.01, 0.05, 0.1], "regularization": [0.001, 0.01]},
        {"factors": [64, 128], "learning_rate": [0.01], "regularization": [0.0001], "iterations": [300]},
        {"factors": [64], "learning_rate": [0.02], "regularization": [0.00001, 0.0001], "iterations": [500]},
    ],
    "userknn": [{"k": [50, 100, 200], "shrink": [0.0, 10.0, 50.0]}],
}


def read_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs of a `user item item ...` file, as int64 arrays."""
    users, items = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        its = np.asarray(parts[1:], dtype=np.int64)
        users.append(np.full(len(its), int(parts[0]), np.int64))
        items.append(its)
    return np.concatenate(users), np.concatenate(items)


def to_interactions(users: np.ndarray, items: np.ndarray) -> Interactions:
    frame = pl.DataFrame({"user_id": users.astype(str), "item_id": items.astype(str), "behavior": "buy"})
    return Interactions.from_frame(frame, weighting=InteractionWeighting(binary=True))


def truth_matrix(data: Interactions, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    """Held-out pairs as a [n_users, n_items + 1] CSR; items the model never saw go to the last column."""
    u = data.users.indices(users.astype(str))
    i = data.items.indices(items.astype(str))
    keep = u >= 0
    i = np.where(i >= 0, i, data.n_items)
    m = sp.csr_matrix((np.ones(keep.sum(), np.float32), (u[keep], i[keep])), shape=(data.n_users, data.n_items + 1))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def evaluate(model: Any, train: sp.csr_matrix, truth: sp.csr_matrix, k: int = 20,
             max_users: int | None = None) -> dict[str, float]:
    """Recall@k and NDCG@k over users with held-out items (LightGCN definitions)."""
    users = np.nonzero(np.diff(truth.indptr) > 0)[0]
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
    t0 = time.perf_counter()
    top, _ = model.recommend(users, train[users], k, exclude=train[users])
    score_s = time.perf_counter() - t0
    t = truth[users]
    n_true = np.diff(t.indptr)
    hits = np.zeros_like(top, dtype=bool)
    for r in range(len(users)):
        hits[r] = np.isin(top[r], t.indices[t.indptr[r]:t.indptr[r + 1]])
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(1)
    idcg = np.cumsum(discount)[np.minimum(n_true, k) - 1]
    return {"recall": float((hits.sum(1) / n_true).mean()), "ndcg": float((dcg / idcg).mean()),
            "users": int(len(users)), "score_s": score_s}


def validation_split(users: np.ndarray, items: np.ndarray, frac: float = 0.2, seed: int = 0):
    """Hold out `frac` of each user's train items at random (every user keeps at least one)."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(users)) < frac
    order = np.lexsort((rng.random(len(users)), users))
    first = np.ones(len(users), bool)
    first[1:] = users[order][1:] != users[order][:-1]
    held[order[first]] = False  # the user's first item in a random order always stays in train
    return (users[~held], items[~held]), (users[held], items[held])


def fit_and_eval(name: str, params: dict[str, Any], data: Interactions, truth: sp.csr_matrix,
                 max_users: int | None = None) -> dict[str, Any]:
    model = make(name, params)
    t0 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t0
    load = os.getloadavg()[0]  # the machine may be shared: a load above its cores inflates the times
    res = evaluate(model, data.matrix(), truth, max_users=max_users)
    extra = {"n_kept": model.n_kept_} if name == "ease" else {}
    return {"generator": name, "params": {**params, **extra}, "fit_s": fit_s, "load": load, **res}


def grid(space: dict[str, list[Any]]) -> Iterable[dict[str, Any]]:
    keys = list(space)
    for values in itertools.product(*(space[k] for k in keys)):
        yield dict(zip(keys, values))


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    out = [f"### {title}", "",
           "| generator | Recall@20 | NDCG@20 | fit (s) | score all users (s) | load after fit | params |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        out.append(f"| {r['generator']} | {r['recall']:.4f} | {r['ndcg']:.4f} | {r['fit_s']:.1f} | "
                   f"{r['score_s']:.1f} | {r.get('load', float('nan')):.1f} | {params} |")
    return "\n".join(out)


def run(quick: bool = False) -> str:
    """The Markdown section for benchmarks/run.py: tuned generators on the test split.

    `quick` skips the slow EASE and user-kNN and scores a 5,000-user sample.
    """
    names = [n for n in TUNED if not quick or n not in ("ease", "userknn")]
    te_args = ["--only", ",".join(names)] + (["--max-users", "5000"] if quick else [])
    rows = main(te_args, echo=False)
    title = "Gowalla (LightGCN split), test, full ranking" + (" (quick: 5,000-user sample)" if quick else "")
    return markdown(rows, title) + "\n\n" + NOTES


NOTES = (
    "Recall@20 = hits / |test items|, averaged over test users; train items excluded; binary weighting. "
    "Parameters tuned on a validation split of train (20% of each user's items held out, seed 0), "
    "never on test. Published on this split: EASE 0.1765, LightGCN 0.1824, SimpleX 0.1872 (BARS)."
)


def main(argv: list[str] | None = None, echo: bool = True) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", default=",".join(TUNED), help="comma-separated generator names")
    ap.add_argument("--tune", default="", help="comma-separated names: run their grids on the validation split")
    ap.add_argument("--grid", default=None, help='JSON {"param": [values]} replacing the grid of one --tune name')
    ap.add_argument("--max-users", type=int, default=None, help="evaluate a sample of users (tuning speed)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    tr_u, tr_i = read_lines(args.data / "train.txt")
    rows: list[dict[str, Any]] = []
    if args.tune:
        (fu, fi), (vu, vi) = validation_split(tr_u, tr_i)
        data = to_interactions(fu, fi)
        truth = truth_matrix(data, vu, vi)
        for name in args.tune.split(","):
            stages = [json.loads(args.grid)] if args.grid else GRIDS[name]
            for params in (p for space in stages for p in grid(space)):
                r = fit_and_eval(name, params, data, truth, args.max_users)
                rows.append(r)
                print(f"{name} {params} recall={r['recall']:.4f} ndcg={r['ndcg']:.4f} fit={r['fit_s']:.1f}s",
                      flush=True)
        print(markdown(rows, "Gowalla validation split (20% of train held out)"))
    else:
        te_u, te_i = read_lines(args.data / "test.txt")
        data = to_interactions(tr_u, tr_i)
        truth = truth_matrix(data, te_u, te_i)
        for name in args.only.split(","):
            r = fit_and_eval(name, TUNED[name], data, truth, args.max_users)
            rows.append(r)
            if echo:
                print(f"{name} recall={r['recall']:.4f} ndcg={r['ndcg']:.4f} fit={r['fit_s']:.1f}s", flush=True)
        if echo:
            print(markdown(rows, "Gowalla (LightGCN split), test, full ranking"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
