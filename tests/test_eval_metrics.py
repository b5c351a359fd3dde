"""Metrics on hand-computed cases, and every ranking metric cross-checked against ranx."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.evaluation import metrics as M


def csr(rows: list[list[int]], n_cols: int) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [j for row in rows for j in row]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_cols))


# user 0: targets {1, 3}, hits at ranks 1 and 3
# user 1: target {2}, hit at rank 4
# user 2: targets {0, 7}; 7 is unknown to training (never recommendable); the list has one item
RECS = np.array([[3, 0, 1, 4], [0, 1, 4, 2], [0, -1, -1, -1]])
TARGETS = csr([[1, 3], [2], [0, 7]], 8)
L2, L3, L4, L5 = 1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)  # 1 / log2(rank + 1)

EXPECTED = {
    "recall@2": [1 / 2, 0, 1 / 2], "recall@4": [1, 1, 1 / 2],
    "precision@2": [1 / 2, 0, 1 / 2], "precision@4": [2 / 4, 1 / 4, 1 / 4],
    "ndcg@2": [L2 / (L2 + L3), 0, L2 / (L2 + L3)], "ndcg@4": [(L2 + L4) / (L2 + L3), L5, L2 / (L2 + L3)],
    "map@2": [1 / 2, 0, 1 / 2], "map@4": [(1 + 2 / 3) / 2, 1 / 4, 1 / 2],
    "mrr@2": [1, 0, 1], "mrr@4": [1, 1 / 4, 1],
    "hr@2": [1, 0, 1], "hr@4": [1, 1, 1],
}


def test_ranking_metrics_match_hand_computed_values() -> None:
    got = M.ranking_metrics(RECS, TARGETS, [2, 4])
    assert set(got) == set(EXPECTED)
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(got[name], want, atol=1e-12, err_msg=name)


def test_reachable_ceilings_count_only_items_a_model_could_propose() -> None:
    # columns 0-4; items 1 and 4 (past `warm`) have no training interaction; user 1 and 4 have no targets
    targets = sp.csr_matrix(np.array([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0],
                                      [1, 0, 0, 1, 0], [0, 0, 0, 0, 0]]))
    warm = np.array([True, False, True, True])
    np.testing.assert_array_equal(M.warm_target_counts(targets, warm), [1, 0, 1, 2, 0])
    got = M.reachable_ceilings(targets, warm, [1, 20])
    np.testing.assert_allclose(got["recall@1"], [1 / 3, 0, 1, 1 / 2, 0])
    np.testing.assert_allclose(got["recall@20"], [1 / 3, 0, 1, 1, 0])
    np.testing.assert_array_equal(got["hr@1"], [1, 0, 1, 1, 0])


def test_single_metric_functions_agree_with_the_batch() -> None:
    np.testing.assert_allclose(M.recall_at_k(RECS, TARGETS, 4), EXPECTED["recall@4"])
    np.testing.assert_allclose(M.precision_at_k(RECS, TARGETS, 2), EXPECTED["precision@2"])
    np.testing.assert_allclose(M.ndcg_at_k(RECS, TARGETS, 4), EXPECTED["ndcg@4"])
    np.testing.assert_allclose(M.map_at_k(RECS, TARGETS, 4), EXPECTED["map@4"])
    np.testing.assert_allclose(M.mrr_at_k(RECS, TARGETS, 4), EXPECTED["mrr@4"])
    np.testing.assert_allclose(M.hr_at_k(RECS, TARGETS, 2), EXPECTED["hr@2"])


def test_k_beyond_the_list_counts_missing_slots_as_misses() -> None:
    got = M.ranking_metrics(RECS[:, :2], TARGETS, [4])
    np.testing.assert_allclose(got["recall@4"], [1 / 2, 0, 1 / 2])
    np.testing.assert_allclose(got["precision@4"], [1 / 4, 0, 1 / 4])


def test_perfect_list_scores_one() -> None:
    recs = np.array([[5, 2, 9, 0]])
    got = M.ranking_metrics(recs, csr([[2, 5]], 10), [2, 4])
    for name in ("recall@2", "ndcg@2", "map@2", "mrr@2", "hr@2", "precision@2", "ndcg@4", "map@4"):
        assert got[name][0] == pytest.approx(1.0), name


def test_catalogue_metrics_by_hand() -> None:
    recs = np.array([[0, 1], [1, 2], [1, -1]])
    assert M.catalogue_coverage(recs, 2, 5) == pytest.approx(3 / 5)
    assert M.catalogue_coverage(recs, 1, 5) == pytest.approx(2 / 5)
    np.testing.assert_array_equal(M.recommendation_counts(recs, 2, 5), [1, 3, 1, 0, 0])
    assert M.gini(np.array([3, 3, 3])) == pytest.approx(0.0)
    assert M.gini(np.array([0, 2])) == pytest.approx(0.5)
    assert M.gini(np.array([0, 0, 0, 9])) == pytest.approx(0.75)
    np.testing.assert_allclose(M.gini(np.array([[0, 2], [1, 1]])), [0.5, 0.0])


def test_novelty_is_mean_self_information() -> None:
    pop = np.array([1, 2, 4, 0])
    recs = np.array([[0, 2], [1, -1], [3, 3]])
    # -log2(1/4) = 2, -log2(4/4) = 0; -log2(2/4) = 1; an unseen item counts as 1 user
    np.testing.assert_allclose(M.novelty(recs, 2, pop, n_users=4), [1.0, 1.0, 2.0])


def test_diversity_by_category() -> None:
    cats = np.array([0, 0, 1, -1, 1])
    recs = np.array([[0, 1, 2, 3], [0, 2, -1, -1], [1, -1, -1, -1], [2, 4, 0, 1]])
    got = M.intra_list_diversity(recs, 4, categories=cats)
    # 6 pairs, only (0, 1) share a category; (0, 2) differ; one item: no pairs -> 0; (2,4) and (0,1) of 6
    np.testing.assert_allclose(got, [1 - 1 / 6, 1.0, 0.0, 1 - 2 / 6])


@pytest.mark.parametrize("method", ["users", "gram", "auto"])
def test_diversity_by_cooccurrence_cosine_matches_brute_force(method: str) -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((40, 12)) < 0.3).astype(np.float32)
    x[:, 11] = 0  # an item nobody interacted with
    recs = np.array([rng.permutation(12)[:5] for _ in range(30)])
    recs[0, 3:] = -1
    norms = np.linalg.norm(x, axis=0)
    denom = np.outer(norms, norms)
    cos = (x.T @ x) / np.where(denom > 0, denom, 1.0)
    want = []
    for row in recs:
        items = row[row >= 0]
        s = cos[np.ix_(items, items)]
        m = len(items)
        want.append(1 - (s.sum() - np.trace(s)) / (m * (m - 1)))
    got = M.intra_list_diversities(recs, [5, 3], interactions=sp.csr_matrix(x), method=method)
    np.testing.assert_allclose(got[5], want, atol=1e-5)
    assert got[3].shape == (30,)


_RANX = """
import json, sys
import ranx
data = json.load(sys.stdin)
scores = ranx.evaluate(ranx.Qrels(data["qrels"]), ranx.Run(data["run"]), data["metrics"], return_mean=False)
json.dump({m: [float(x) for x in v] for m, v in scores.items()}, sys.stdout)
"""


def ranx_scores(qrels: dict, run: dict, metrics: list[str]) -> dict[str, np.ndarray]:
    """Per-query ranx scores in sorted query-id order.

    ranx compiles every metric with numba, which takes a minute on a cold cache; in a child process
    with the JIT off the same Python code runs in a few seconds for a test-sized input.
    """
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run([sys.executable, "-c", _RANX], input=json.dumps({"qrels": qrels, "run": run,
                         "metrics": metrics}), capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {m: np.asarray(v) for m, v in json.loads(out.stdout).items()}


def test_ranking_metrics_agree_with_ranx_on_random_rankings() -> None:
    pytest.importorskip("ranx")
    rng = np.random.default_rng(0)
    n_users, n_items, n_unknown, k_max = 60, 80, 10, 20
    recs = np.array([rng.permutation(n_items)[:k_max] for _ in range(n_users)])
    rows = []
    for u in range(n_users):
        size = int(rng.integers(1, 12))
        # some targets are items the model cannot rank (columns beyond the catalogue): they still count in |R|
        rows.append(sorted(rng.choice(n_items + n_unknown, size=size, replace=False).tolist()))
    rows[0] = sorted({int(recs[0, 0]), *rows[0]})  # at least one hit at rank 1
    targets = csr(rows, n_items + n_unknown)
    qrels = {f"u{u:03d}": {f"i{i}": 1 for i in rows[u]} for u in range(n_users)}
    run = {f"u{u:03d}": {f"i{i}": float(k_max - r) for r, i in enumerate(recs[u])} for u in range(n_users)}
    ks = [1, 5, 10, 20]
    ref = ranx_scores(qrels, run, [f"{m}@{k}" for k in ks
                                   for m in ("recall", "precision", "ndcg", "map", "mrr", "hit_rate")])
    ours = M.ranking_metrics(recs, targets, ks)
    n_rel = np.array([len(r) for r in rows], float)
    assert ours["hr@20"].sum() > 5  # the check is not vacuous
    for k in ks:
        for m in ("recall", "precision", "ndcg", "map", "mrr"):
            got = ours[f"{m}@{k}"]
            if m == "map":  # ranx divides AP by |R|; we divide by min(K, |R|) so a perfect list scores 1
                got = got * np.minimum(n_rel, k) / n_rel
            np.testing.assert_allclose(got, ref[f"{m}@{k}"], atol=1e-6, err_msg=f"{m}@{k}")
        np.testing.assert_allclose(ours[f"hr@{k}"], ref[f"hit_rate@{k}"], atol=1e-6, err_msg=f"hr@{k}")
