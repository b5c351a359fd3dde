"""Sparse neighbourhood machinery shared by the item- and user-based generators.

Everything here is vectorised over scipy CSR arrays: similarities are computed a block of rows at a
time (sparse x sparse), and only each row's top-k survive, so memory stays bounded by the block.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from fusionrec.candidates.base import ScoredItems
from fusionrec.candidates.popularity import apply_fallback
from fusionrec.data.interactions import Interactions

__all__ = [
    "SIMILARITIES", "WEIGHTINGS", "top_k_per_row", "row_blocks", "product_topk", "pairwise_topk", "weighting_stats",
    "weigh", "apply_weighting", "training_matrix", "row_norms_sq", "similar_from_row", "ItemItemScoring",
]

SIMILARITIES = ("cosine", "asymmetric_cosine", "jaccard")
WEIGHTINGS = ("none", "bm25", "tfidf")
_EPS = 1e-9


class ItemItemScoring:
    """Scores = history @ W for an item x item matrix W of non-negative weights (item-kNN, RP3beta,
    co-visitation): dense per batch, with popularity for empty histories; sparse for one query, where
    only the items reachable from the history can score above zero."""

    fallback_: np.ndarray
    _histories: Callable[..., sp.csr_matrix]

    def _item_matrix(self) -> sp.csr_matrix:
        raise NotImplementedError

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        h = self._histories(histories, len(users))
        s = np.asarray((h @ self._item_matrix()).toarray(), np.float32)
        return apply_fallback(s, np.diff(h.indptr) == 0, self.fallback_)

    def sparse_scores(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(self._histories(histories, histories.shape[0]) @ self._item_matrix())


def training_matrix(data: Interactions, half_life_days: float | None = None) -> sp.csr_matrix:
    """The user x item matrix under the data's weighting, or with a time decay of its own."""
    if half_life_days is None:
        return data.matrix()
    return data.matrix(replace(data.weighting, half_life_days=float(half_life_days)))


def _kth_largest(m: sp.csr_matrix, rows: np.ndarray, k: int, budget: float = 4.0e6) -> np.ndarray:
    """The k-th largest stored value of each of `rows` (all longer than k), float32.

    Rows of similar length (same power of two) are padded into dense blocks for np.partition: a
    vectorised selection that is linear in the non-zeros, unlike a sort.
    """
    lens = np.diff(m.indptr)[rows]
    out = np.empty(len(rows), np.float32)
    bucket = np.floor(np.log2(lens)).astype(np.int64)
    for b in np.unique(bucket):
        sel = np.nonzero(bucket == b)[0]
        width = int(lens[sel].max())
        per = max(1, int(budget // width))
        cols = np.arange(width)
        for c0 in range(0, len(sel), per):
            chunk = sel[c0:c0 + per]
            valid = cols[None, :] < lens[chunk][:, None]
            block = np.full((len(chunk), width), -np.inf, np.float32)
            block[valid] = m.data[(m.indptr[rows[chunk]][:, None] + cols[None, :])[valid]]
            out[chunk] = np.partition(block, width - k, axis=1)[:, width - k]
    return out


def top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest stored values of each row; ties at the cut go to the earlier stored entry
    (the lower column when indices are sorted). Explicit zeros are dropped. float32 out."""
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    lens = np.diff(m.indptr)
    if m.nnz == 0 or lens.max() <= k:
        m.sort_indices()
        return m
    thr = np.full(m.shape[0], -np.inf, np.float32)
    long_rows = np.nonzero(lens > k)[0]
    thr[long_rows] = _kth_largest(m, long_rows, k)
    rows = np.repeat(np.arange(m.shape[0]), lens)
    t = thr[rows]
    above = m.data > t
    tied = m.data == t
    n_above = np.bincount(rows[above], minlength=m.shape[0])
    # rank of each tied entry among its row's tied entries, in storage order
    tied_rank = np.cumsum(tied) - 1
    first_tied = np.concatenate([[0], np.cumsum(tied)])[m.indptr[:-1]]
    keep = above | (tied & ((tied_rank - first_tied[rows]) < (k - n_above)[rows]))
    counts = np.bincount(rows[keep], minlength=m.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(m.indptr.dtype)
    out = sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)
    out.sort_indices()
    return out


def row_blocks(work: np.ndarray, budget: float) -> Iterator[slice]:
    """Consecutive row slices whose summed `work` stays under `budget` (at least one row each)."""
    n = len(work)
    start = 0
    cum = np.cumsum(work, dtype=np.float64)
    while start < n:
        base = cum[start - 1] if start else 0.0
        stop = int(np.searchsorted(cum, base + budget, side="right"))
        stop = min(max(stop, start + 1), n)
        yield slice(start, stop)
        start = stop


def row_norms_sq(m: sp.csr_matrix) -> np.ndarray:
    """Squared L2 norm of every row, float64."""
    sq = m.copy()
    sq.data = sq.data.astype(np.float64) ** 2
    return np.asarray(sq.sum(axis=1)).ravel()


def _similarity_values(dots: np.ndarray, sq_r: np.ndarray, sq_c: np.ndarray, similarity: str,
                       alpha: float, shrink: float) -> np.ndarray:
    if similarity == "cosine":
        denom = np.sqrt(sq_r) * np.sqrt(sq_c)
    elif similarity == "asymmetric_cosine":
        # the row (target) norm gets exponent 2*alpha, the neighbour's 2*(1-alpha): alpha=0.5 is cosine
        denom = np.power(sq_r, alpha) * np.power(sq_c, 1.0 - alpha)
    elif similarity == "jaccard":
        # Tanimoto: Jaccard on binary rows, its weighted generalisation otherwise
        denom = sq_r + sq_c - dots
    else:  # pragma: no cover - configs validate the name
        raise ValueError(f"unknown similarity {similarity!r}; use one of {SIMILARITIES}")
    return dots / (denom + shrink + _EPS)


def product_topk(a: sp.csr_matrix, b_t: sp.csr_matrix, k: int,
                 values: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
                 budget: float = 2.0e7) -> sp.csr_matrix:
    """Row-wise top-k of a @ b_t (CSR [n, d] @ CSR [d, m]), computed a block of rows at a time.

    `values(dots, rows, cols)` turns the block's products into the values ranked and kept (rows are
    absolute row indices of a); values <= 0 are dropped. `budget` caps the non-zeros of one block.
    """
    a = sp.csr_matrix(a, dtype=np.float32)
    b_t = sp.csr_matrix(b_t, dtype=np.float32)
    # an upper bound on the non-zeros of row i of the product: its columns' degrees in b_t, summed
    col_deg = np.diff(b_t.indptr).astype(np.float64)
    work = (a.astype(bool).astype(np.float64) @ col_deg) if a.nnz else np.zeros(a.shape[0])
    parts = []
    for sl in row_blocks(np.asarray(work).ravel() + 1.0, budget):
        c = (a[sl] @ b_t).tocsr()  # canonical: no duplicates (column order within rows may vary)
        if values is not None and c.nnz:
            rows = np.repeat(np.arange(sl.start, sl.stop), np.diff(c.indptr))
            c.data = np.asarray(values(c.data.astype(np.float64), rows, c.indices), np.float32)
        c.data[~(c.data > 0)] = 0.0  # also drops NaN: nothing similar
        parts.append(top_k_per_row(c, k))
    if not parts:
        return sp.csr_matrix((a.shape[0], b_t.shape[1]), dtype=np.float32)
    return sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)


def pairwise_topk(a: sp.csr_matrix, b: sp.csr_matrix | None, k: int, similarity: str = "cosine",
                  alpha: float = 0.5, shrink: float = 0.0, exclude_self: bool = False,
                  self_index: np.ndarray | None = None, budget: float = 2.0e7, b_t: sp.csr_matrix | None = None,
                  sq_b: np.ndarray | None = None, sq_a: np.ndarray | None = None) -> sp.csr_matrix:
    """Top-k similar rows of `b` for every row of `a` (both [n, d] CSR): CSR [len(a), len(b)], float32.

    `exclude_self` drops the pair (i, i) (a and b are the same rows); `self_index[i]` instead names the
    row of b that row i of a is (or -1). `b_t` (b transposed, CSR) and `sq_b` (its squared row norms)
    may be passed instead of b when b is reused; `sq_a` and `sq_b` also replace the norms when a and b
    hold only part of the data (a Spark block of users).
    """
    a = sp.csr_matrix(a, dtype=np.float32)
    if b_t is None:
        if b is None:
            raise ValueError("pairwise_topk needs b or b_t")
        b_t = sp.csr_matrix(b, dtype=np.float32).T.tocsr()
    if sq_b is None:
        sq_b = row_norms_sq(b_t.T.tocsr())
    if sq_a is None:
        sq_a = row_norms_sq(a)

    def values(dots: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        vals = _similarity_values(dots, sq_a[rows], sq_b[cols], similarity, alpha, shrink)
        if exclude_self:
            vals[cols == rows] = 0.0
        elif self_index is not None:
            vals[cols == self_index[rows]] = 0.0
        return vals

    return product_topk(a, b_t, k, values, budget)


def weighting_stats(m: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """With rows as documents and columns as terms: idf per column and the mean document length."""
    m = sp.csr_matrix(m)
    df = np.bincount(m.indices, minlength=m.shape[1])
    idf = np.clip(np.log(max(m.shape[0], 1) / (1.0 + df)), 0.0, None)
    lengths = np.asarray(m.sum(axis=1), np.float64).ravel()
    return idf, float(lengths.mean()) if len(lengths) else 1.0


def weigh(m: sp.csr_matrix, weighting: str, idf: np.ndarray, avg_len: float, k1: float = 1.2,
          b: float = 0.75) -> sp.csr_matrix:
    """Rows of `m` reweighted with statistics from `weighting_stats` (so new rows match training ones).

    bm25: Okapi BM25, v (k1 + 1) / (k1 ((1 - b) + b len / avg_len) + v) x idf; tfidf: sqrt(v) x idf.
    """
    if weighting == "none":
        return sp.csr_matrix(m, dtype=np.float32)
    m = sp.csr_matrix(m, dtype=np.float64, copy=True)
    if weighting == "bm25":
        lengths = np.asarray(m.sum(axis=1)).ravel()
        norm = (1.0 - b) + b * lengths / max(avg_len, _EPS)
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        m.data = m.data * (k1 + 1.0) / (k1 * norm[rows] + m.data) * idf[m.indices]
    elif weighting == "tfidf":
        m.data = np.sqrt(np.abs(m.data)) * idf[m.indices]
    else:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {WEIGHTINGS}")
    m.eliminate_zeros()
    return m.astype(np.float32)


def apply_weighting(m: sp.csr_matrix, weighting: str, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """`m` reweighted with rows as documents and columns as terms; "none" returns it unchanged."""
    if weighting == "none":
        return sp.csr_matrix(m, dtype=np.float32)
    idf, avg_len = weighting_stats(m)
    return weigh(m, weighting, idf, avg_len, k1, b)


def similar_from_row(sim: sp.csr_matrix, item: int, n: int) -> ScoredItems:
    """The best n stored neighbours of row `item` of a similarity matrix, best first, itself excluded."""
    if item < 0 or item >= sim.shape[0] or n <= 0:
        return ScoredItems.empty()
    lo, hi = sim.indptr[item], sim.indptr[item + 1]
    cols = sim.indices[lo:hi].astype(np.int64)
    vals = sim.data[lo:hi].astype(np.float32)
    keep = (cols != item) & (vals > 0)
    cols, vals = cols[keep], vals[keep]
    order = np.lexsort((cols, -vals))[:n]
    return ScoredItems(cols[order], vals[order])
