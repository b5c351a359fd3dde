"""Top-K metrics over a batch of users, vectorised.

Inputs everywhere: `recs` [U, K] recommended item indices, best first, -1 where a list is shorter than K;
`targets` CSR [U, n_target_items] with the held-out items of each user in the same row order. Ranking
metrics return per-user arrays (for confidence intervals and paired tests); catalogue metrics return
one number.

Definitions (binary relevance, R = the user's held-out items, hits counted in the top K):
recall = hits / |R| (LightGCN / BARS); precision = hits / K; hr = 1 if any hit;
ndcg = sum_{hit at rank r} 1/log2(r+1) / sum_{r <= min(K, |R|)} 1/log2(r+1);
map = sum_{hit at rank r} precision@r / min(K, |R|); mrr = 1 / rank of the first hit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "RANKING_METRICS", "hit_matrix", "ranking_metrics",
    "recall_at_k", "precision_at_k", "ndcg_at_k", "map_at_k", "mrr_at_k", "hr_at_k",
    "recommendation_matrix", "recommendation_counts", "catalogue_coverage",
    "intra_list_diversity", "intra_list_diversities", "novelty", "gini", "reachable_ceilings",
    "warm_target_counts",
]

RANKING_METRICS = ("recall", "precision", "ndcg", "map", "mrr", "hr")


def _pad(recs: np.ndarray, k: int) -> np.ndarray:
    recs = np.asarray(recs, dtype=np.int64)
    if recs.ndim != 2:
        raise ValueError(f"recs must be [users, K], got shape {recs.shape}")
    if recs.shape[1] >= k:
        return recs[:, :k]
    return np.hstack([recs, np.full((recs.shape[0], k - recs.shape[1]), -1, np.int64)])


def hit_matrix(recs: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """Boolean [U, K]: is recs[u, r] one of user u's targets. One searchsorted over (row, item) keys."""
    recs = np.asarray(recs, dtype=np.int64)
    t = sp.csr_matrix(targets)
    if t.shape[0] != recs.shape[0]:
        raise ValueError(f"recs has {recs.shape[0]} rows but targets has {t.shape[0]}")
    t.eliminate_zeros()
    t.sum_duplicates()  # also sorts the indices, so the keys below are sorted
    n_cols = max(int(t.shape[1]), int(recs.max(initial=-1)) + 1, 1)
    t_rows = np.repeat(np.arange(t.shape[0], dtype=np.int64), np.diff(t.indptr))
    t_keys = t_rows * n_cols + t.indices.astype(np.int64)
    r_keys = np.arange(recs.shape[0], dtype=np.int64)[:, None] * n_cols + recs
    if len(t_keys) == 0:
        return np.zeros(recs.shape, bool)
    pos = np.minimum(np.searchsorted(t_keys, r_keys), len(t_keys) - 1)
    return (t_keys[pos] == r_keys) & (recs >= 0)


def ranking_metrics(recs: np.ndarray, targets: sp.csr_matrix, ks: Sequence[int],
                    metrics: Sequence[str] = RANKING_METRICS) -> dict[str, np.ndarray]:
    """Per-user float64 arrays keyed "recall@10", ... for every metric and K. Users without targets score 0."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"K must be positive integers, got {ks}")
    unknown = set(metrics) - set(RANKING_METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {RANKING_METRICS}")
    kmax = ks[-1]
    recs = _pad(recs, kmax)
    hits = hit_matrix(recs, targets).astype(np.float64)
    n_rel = np.diff(sp.csr_matrix(targets).indptr).astype(np.int64)
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    disc = 1.0 / np.log2(ranks + 1.0)
    cum_hits = np.cumsum(hits, axis=1)
    cum_dcg = np.cumsum(hits * disc, axis=1)
    cum_ap = np.cumsum(hits * cum_hits / ranks, axis=1)
    idcg_table = np.concatenate([[0.0], np.cumsum(disc)])
    any_hit = cum_hits[:, -1] > 0
    first = np.where(any_hit, np.argmax(hits > 0, axis=1), kmax)  # 0-based rank of the first hit
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        denom = np.minimum(n_rel, k)
        for m in metrics:
            if m == "recall":
                v = _safe_div(h, n_rel)
            elif m == "precision":
                v = h / k
            elif m == "hr":
                v = (h > 0).astype(np.float64)
            elif m == "ndcg":
                v = _safe_div(cum_dcg[:, k - 1], idcg_table[denom])
            elif m == "map":
                v = _safe_div(cum_ap[:, k - 1], denom)
            else:  # mrr
                v = np.where(first < k, 1.0 / (first + 1.0), 0.0)
            out[f"{m}@{k}"] = v
    return out


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def recall_at_k(recs: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    return ranking_metrics(recs, targets, [k], ["recall"])[f"recall@{k}"]


def precision_at_k(recs: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    return ranking_metrics(recs, targets, [k], ["precision"])[f"precision@{k}"]


def ndcg_at_k(recs: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    return ranking_metrics(recs, targets, [k], ["ndcg"])[f"ndcg@{k}"]


def map_at_k(recs: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    return ranking_metrics(recs, targets, [k], ["map"])[f"map@{k}"]


def mrr_at_k(recs: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    return ranking_metrics(recs, targets, [k], ["mrr"])[f"mrr@{k}"]


def hr_at_k(recs: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    return ranking_metrics(recs, targets, [k], ["hr"])[f"hr@{k}"]


# -- beyond accuracy ----------------------------------------------------------------------------

def recommendation_matrix(recs: np.ndarray, k: int, n_items: int) -> sp.csr_matrix:
    """CSR [U, n_items] with a 1 for each item in a user's top k (-1 and out-of-range entries skipped)."""
    r = _pad(recs, k)
    valid = (r >= 0) & (r < n_items)
    rows = np.broadcast_to(np.arange(r.shape[0])[:, None], r.shape)[valid]
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, r[valid])), shape=(r.shape[0], n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def recommendation_counts(recs: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """How many users get each item in their top k: int64 [n_items]."""
    r = _pad(recs, k)
    r = r[(r >= 0) & (r < n_items)]
    return np.bincount(r, minlength=n_items).astype(np.int64)


def catalogue_coverage(recs: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    if n_items <= 0:
        return 0.0
    return float(np.count_nonzero(recommendation_counts(recs, k, n_items)) / n_items)


def gini(counts: np.ndarray) -> np.ndarray | float:
    """Gini index of non-negative counts over the last axis: 0 = every item recommended equally, ->1 = a few items.

    Accepts [n_items] (returns a float) or [B, n_items] (returns [B]).
    """
    x = np.sort(np.asarray(counts), axis=-1).astype(np.float64)  # sort in the given dtype: float32 is faster
    n = x.shape[-1]
    if n == 0:
        return 0.0
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    total = x.sum(axis=-1)
    g = np.divide(x @ weights, n * total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)
    return float(g) if np.ndim(g) == 0 else g


def warm_target_counts(targets: sp.csr_matrix, warm: np.ndarray) -> np.ndarray:
    """Per user, how many targets are `warm` items (bool per column; columns past its length are cold)."""
    t = sp.csr_matrix(targets)
    warm = np.asarray(warm, bool)
    ok = np.zeros(len(t.indices), bool)
    inside = t.indices < len(warm)
    ok[inside] = warm[t.indices[inside]]
    return np.bincount(np.repeat(np.arange(t.shape[0]), np.diff(t.indptr)), weights=ok, minlength=t.shape[0])


def reachable_ceilings(targets: sp.csr_matrix, warm: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per user, the best recall@k and hr@k of any model that can only propose `warm` items (e.g. items
    with a training interaction), keyed "recall@20", "hr@10", ... as `ranking_metrics`."""
    n_warm = warm_target_counts(targets, warm)
    n_rel = np.diff(sp.csr_matrix(targets).indptr)
    out: dict[str, np.ndarray] = {}
    for k in sorted({int(k) for k in ks}):
        out[f"recall@{k}"] = _safe_div(np.minimum(n_warm, k), n_rel)
        out[f"hr@{k}"] = (n_warm > 0).astype(np.float64)
    return out


def novelty(recs: np.ndarray, k: int, item_popularity: np.ndarray, n_users: int) -> np.ndarray:
    """Per-user mean self-information -log2(pop_i / n_users) of the recommended items (pop floored at 1 user)."""
    pop = np.maximum(np.asarray(item_popularity, np.float64), 1.0)
    info = -np.log2(pop / max(n_users, 1))
    r = _pad(recs, k)
    valid = (r >= 0) & (r < len(pop))
    vals = np.where(valid, info[np.where(valid, r, 0)], 0.0)
    return _safe_div(vals.sum(axis=1), valid.sum(axis=1))


def intra_list_diversity(recs: np.ndarray, k: int, *, categories: np.ndarray | None = None,
                         interactions: sp.csr_matrix | None = None) -> np.ndarray:
    """Per-user 1 - mean pairwise similarity of the top-k list (0 for lists with fewer than 2 items).

    With `categories` (code per item, -1 unknown) two items are similar (1) when they share a known
    category. Otherwise `interactions` [n_users, n_items] gives the cosine of the items' user sets.
    """
    return intra_list_diversities(recs, [k], categories=categories, interactions=interactions)[k]


def intra_list_diversities(recs: np.ndarray, ks: Sequence[int], *, categories: np.ndarray | None = None,
                           interactions: sp.csr_matrix | None = None, method: str = "auto",
                           max_gram_items: int = 6000) -> dict[int, np.ndarray]:
    """`intra_list_diversity` at several K, sharing the item-similarity work.

    `method` picks how cosines are summed: "users", "gram" or "auto" (the cheaper; same result).
    """
    if method not in ("auto", "users", "gram"):
        raise ValueError(f"method must be 'auto', 'users' or 'gram', not {method!r}")
    ks = sorted({int(k) for k in ks})
    if categories is not None:
        return {k: _category_ild(_pad(recs, k), np.asarray(categories, np.int64)) for k in ks}
    if interactions is None:
        raise ValueError("intra_list_diversity needs item categories or an interaction matrix")
    x = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    x.eliminate_zeros()
    x.data[:] = 1.0
    pop = np.diff(x.tocsc().indptr).astype(np.float64)
    scale = np.divide(1.0, np.sqrt(pop), out=np.zeros_like(pop), where=pop > 0).astype(np.float32)
    xt = sp.csr_matrix(x.T.tocsr().multiply(scale[:, None]), dtype=np.float32)  # items x users, unit rows
    n_items = xt.shape[0]
    r = _pad(recs, ks[-1])
    r = np.where((r >= 0) & (r < n_items), r, -1)
    listed = np.unique(r[r >= 0])
    # two exact ways to sum cos(i, j) over a list L: through the users, ||sum_{i in L} x_i||^2, costing the
    # popularity of every listed item; or through the Gram matrix of the distinct listed items, costing
    # sum_u (their count in u's history)^2 plus |listed|^2 memory. Popular lists favour the second.
    cost_users = float(pop[r[r >= 0]].sum()) * len(ks)
    deg = np.diff(x[:, listed].tocsr().indptr).astype(np.float64) if len(listed) else np.zeros(1)
    cost_gram = float((deg ** 2).sum()) + float(len(listed)) ** 2
    use_gram = method == "gram" or (method == "auto" and len(listed) <= max_gram_items and cost_gram < cost_users)
    out: dict[int, np.ndarray] = {}
    if use_gram:
        sub = xt[listed]
        gram = np.asarray((sub @ sub.T).todense(), dtype=np.float32)
        np.fill_diagonal(gram, 0.0)
        local = np.where(r >= 0, np.searchsorted(listed, np.maximum(r, 0)), -1)
    for k in ks:
        rk = r[:, :k]
        m = (rk >= 0).sum(axis=1).astype(np.float64)
        total = np.empty(len(rk), np.float64)
        if use_gram:
            step = max(1, 4_000_000 // max(k * k, 1))
        else:  # keep each block's user-space sums near 5M non-zeros
            row_cost = float(pop[rk[rk >= 0]].sum()) / max(len(rk), 1)
            step = max(1, int(5_000_000 // max(row_cost, 1.0)))
        for start in range(0, len(rk), step):
            blk = rk[start:start + step]
            if use_gram:
                lk = local[start:start + step, :k]
                valid = lk >= 0
                li = np.where(valid, lk, 0)
                sims = gram[li[:, :, None], li[:, None, :]] * (valid[:, :, None] & valid[:, None, :])
                total[start:start + step] = sims.sum(axis=(1, 2))
            else:
                rm = recommendation_matrix(blk, k, n_items)
                s = rm @ xt
                self_sim = np.asarray(rm @ (pop > 0).astype(np.float32)).ravel()
                total[start:start + step] = np.asarray(s.multiply(s).sum(axis=1)).ravel() - self_sim
        pairs = m * (m - 1)
        out[k] = np.where(pairs > 0, 1.0 - _safe_div(total, pairs), 0.0)
    return out


def _category_ild(r: np.ndarray, cats: np.ndarray) -> np.ndarray:
    valid = (r >= 0) & (r < len(cats))
    m = valid.sum(axis=1).astype(np.float64)
    codes = np.where(valid, cats[np.where(valid, r, 0)], -1)
    known = codes >= 0
    n_cat = max(int(cats.max(initial=-1)) + 1, 1)
    rows = np.broadcast_to(np.arange(r.shape[0])[:, None], r.shape)[known]
    keys, counts = np.unique(rows * n_cat + codes[known], return_counts=True)
    same_pairs = np.bincount(keys // n_cat, weights=counts * (counts - 1) / 2.0, minlength=r.shape[0])
    pairs = m * (m - 1) / 2.0
    return np.where(pairs > 0, 1.0 - _safe_div(same_pairs, pairs), 0.0)
