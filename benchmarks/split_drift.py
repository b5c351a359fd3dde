"""Is a dataset's test split distributed like the validation carve the ranker learns from?

Fits generators once, on the validation split's training part (the training data minus a random 20% of
each user's items), and scores them on two sets of targets: that 20% (the carve, what the fused
pipeline's ranker is trained and judged on) and the dataset's own test targets (the training data's
items excluded). If the generators' ratios differ between the two, weights learned on the carve do not
carry over to the test. Also prints the training popularity of both sets of targets.

    .venv/bin/python benchmarks/split_drift.py gowalla [itemknn rp3beta ease ...]

Used for the note under Gowalla's accuracy table in BENCHMARKS.md; it never tunes anything.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import scipy.sparse as sp

from bench_quality import DATA, RUNS, config_of

from fusionrec.data.vocabulary import Vocabulary


def _popularity(targets: sp.csr_matrix, target_items: Vocabulary, items: Vocabulary, pop: np.ndarray) -> str:
    """Training popularity of the target items (`target_items`: the targets' vocabulary, `items`: pop's)."""
    idx = items.indices(target_items.ids(targets.tocoo().col))
    p = np.where(idx >= 0, pop[np.maximum(idx, 0)], 0).astype(np.float64)
    return f"{len(p):,} targets, training popularity mean {p.mean():.1f}, median {np.median(p):.0f}"


def main(key: str, names: list[str]) -> None:
    from fusionrec.candidates.registry import make
    from fusionrec.data.loading import load_dataset
    from fusionrec.evaluation import metrics as M
    from fusionrec.evaluation.splits import make_splits

    spec = next((r for r in RUNS if r["key"] == key), None)
    if spec is None or spec["protocol"] != "given":
        sys.exit(f"{key!r}: one of the datasets with their own test split: "
                 f"{', '.join(r['key'] for r in RUNS if r['protocol'] == 'given')}")
    params = config_of(spec)[1]
    split = next(iter(make_splits(load_dataset(DATA / spec["path"], spec["format"]), "given")))
    valid = split.valid
    vt = valid.train
    X = vt.matrix()
    pop = np.asarray((X > 0).sum(axis=0)).ravel()
    print(f"{key}: the carve is {valid.description}; the generators are fitted on the rest of the training data")
    print(f"  carve: {_popularity(valid.targets, valid.target_items, vt.items, pop)}")
    print(f"  test:  {_popularity(split.targets, split.target_items, vt.items, pop)}")
    # the test users in the fitted models' user space, their carve-less histories, and their test targets
    users = vt.users.indices(split.user_ids)
    known = np.flatnonzero(users >= 0)
    users = users[known]
    hist = (X[users] > 0).astype(np.float32)
    to_test = split.target_items.indices(vt.items.ids())  # fitted item index -> test target column
    seen, targets = split.seen[known], split.targets[known]
    ndcg: dict[str, tuple[float, float]] = {}
    for name in names:
        t0 = time.perf_counter()
        model = make(name, dict(params.get(name, {}))).fit(vt)
        items, scores = model.recommend(valid.users, valid.histories, 20, exclude=valid.exclude)
        carve = M.ranking_metrics(np.where(np.isfinite(scores), items, -1), valid.targets, [20], metrics=("ndcg",))
        # the test excludes all training items, the carve's too: ask for more, drop those, keep 20
        items, scores = model.recommend(users, hist, 200)
        mapped = np.where(np.isfinite(scores) & (items >= 0), to_test[np.maximum(items, 0)], -1)
        top = np.full((len(users), 20), -1, np.int64)
        for r in range(len(users)):
            had = seen.indices[seen.indptr[r]:seen.indptr[r + 1]]
            keep = mapped[r][(mapped[r] >= 0) & ~np.isin(mapped[r], had)][:20]
            top[r, :len(keep)] = keep
        test = M.ranking_metrics(top, targets, [20], metrics=("ndcg",))
        ndcg[name] = (float(carve["ndcg@20"].mean()), float(test["ndcg@20"].mean()))
        print(f"  {name}: ndcg@20 on the carve {ndcg[name][0]:.4f}, on the test {ndcg[name][1]:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    ref = names[0]
    for name in names[1:]:
        print(f"  {name} / {ref}: {ndcg[name][0] / ndcg[ref][0]:.0%} on the carve, {ndcg[name][1] / ndcg[ref][1]:.0%} on the test")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:] or ["rp3beta", "itemknn", "ease"])
