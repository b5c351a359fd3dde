"""The one-query shortcuts of the online path give what the batched path gives.

Popularity walks one ranked list, item-to-item models take the top-n of their sparse scores, and the
pair features look up one user's rows by binary search: each is checked against the general code.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.candidates.base import CandidateGenerator, top_n
from fusionrec.candidates.itemknn import ItemKNN
from fusionrec.candidates.popularity import Popularity
from fusionrec.features.tables import _affinity, _gather

N_ITEMS = 400


def _dense_top(gen: CandidateGenerator, h: sp.csr_matrix, n: int, ex: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    s = gen.score(np.array([0]), h)
    s[0, ex.indices] = -np.inf
    return top_n(s, n)


@pytest.fixture()
def popularity() -> Popularity:
    rng = np.random.default_rng(0)
    p = Popularity()
    p.n_items_, p.n_users_ = N_ITEMS, 5
    counts = rng.integers(0, 30, N_ITEMS).astype(np.float64)  # many ties, as in a real tail
    p.popularity_ = (counts / counts.max()).astype(np.float32)
    p._order = None
    p.item_category_, p.categories_ = np.empty(0, np.int64), np.empty(0, str)
    p.category_popularity_ = np.empty(0, np.float32)
    return p


@pytest.mark.parametrize("n", [1, 10, 150, N_ITEMS])
def test_popularity_one_query_matches_the_dense_top_n(popularity: Popularity, n: int) -> None:
    for seed in range(10):
        ex = sp.random(1, N_ITEMS, density=0.2, format="csr", random_state=seed)
        items, scores = popularity.recommend(np.array([0]), None, n, exclude=ex)
        _, want = _dense_top(popularity, sp.csr_matrix((1, N_ITEMS), dtype=np.float32), n, ex)
        np.testing.assert_allclose(scores, want)  # the same scores in the same order (ties may swap items)
        finite = np.isfinite(scores[0])
        assert not set(items[0][finite]) & set(ex.indices)
        assert np.all(np.diff(scores[0][finite]) <= 0)
        assert (popularity.popularity_[items[0][finite]] == scores[0][finite]).all()


def test_item_knn_one_query_matches_the_dense_top_n() -> None:
    rng = np.random.default_rng(1)
    gen = ItemKNN()
    gen.n_items_, gen.n_users_ = N_ITEMS, 5
    gen.sim_ = sp.random(N_ITEMS, N_ITEMS, density=0.03, format="csr", random_state=0, dtype=np.float32)
    gen.fallback_ = rng.random(N_ITEMS).astype(np.float32)
    gen._prepare()
    shortcut = fallback = 0
    for seed in range(40):
        h = sp.random(1, N_ITEMS, density=rng.uniform(0.0, 0.1), format="csr", random_state=seed, dtype=np.float32)
        ex = sp.random(1, N_ITEMS, density=0.05, format="csr", random_state=100 + seed)
        for n in (5, 20, 100):
            items, scores = gen.recommend(np.array([0]), h, n, exclude=ex)
            want_items, want = _dense_top(gen, h, n, ex)
            np.testing.assert_allclose(scores, want)
            positive = scores[0] > 0
            assert set(items[0][positive]) == set(want_items[0][want[0] > 0]) or np.unique(scores[0]).size < n
            if h.nnz:
                took = gen._top_n_sparse(gen.sparse_scores(h), n, ex) is not None
                shortcut += took
                fallback += not took
    # both ways were taken (and agreed): the sparse top-n, and the dense row built from the sparse one
    assert shortcut > 0 and fallback > 0


def test_pair_lookups_match_scipy_indexing() -> None:
    rng = np.random.default_rng(2)
    for seed in range(20):
        m = sp.random(50, N_ITEMS, density=0.1, format="csr", random_state=seed)
        row = np.full(80, int(rng.integers(0, 50)))
        cols = rng.integers(0, N_ITEMS, 80)
        np.testing.assert_allclose(_gather(m, row, cols), np.asarray(m[row, cols]).ravel())
        b = int(rng.integers(1, 6))
        h = sp.random(b, N_ITEMS, density=0.05, format="csr", random_state=seed, dtype=np.float32)
        codes = rng.integers(-1, 12, N_ITEMS)
        rows, items = rng.integers(0, b, 200), rng.integers(0, N_ITEMS, 200)
        known = codes >= 0
        onehot = sp.csr_matrix((np.ones(known.sum()), (np.flatnonzero(known), codes[known])),
                               shape=(N_ITEMS, codes.max() + 1))
        per_code = (h @ onehot).toarray()
        c = codes[items]
        want = np.where(c >= 0, per_code[rows, np.maximum(c, 0)], 0.0)
        np.testing.assert_allclose(_affinity(h, codes, rows, items), want, rtol=1e-5, atol=1e-6)


def _als_on_blocks(tmp_threshold: int = 100):
    """ALS on 1,000 users x 400 items in 8 taste blocks, with the HNSW path from `tmp_threshold` items."""
    from fusionrec.candidates.als import ALS
    from fusionrec.data.interactions import Interactions
    import polars as pl

    rng = np.random.default_rng(3)
    rows = []
    for u in range(1000):
        block = u % 8
        for i in rng.choice(50, 12, replace=False):
            rows.append((f"u{u}", f"i{block * 50 + i}"))
    data = Interactions.from_frame(pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row"))
    return ALS(ALS.Config(factors=16, iterations=8, hnsw_threshold=tmp_threshold)).fit(data), data


def test_factor_model_one_query_searches_an_hnsw_graph_close_to_the_exact_scan(tmp_path) -> None:
    als, data = _als_on_blocks()
    assert als.n_items_ >= als.cfg.hnsw_threshold
    h = data.matrix()
    overlap = []
    for u in range(0, 1000, 37):
        ex = h[u : u + 1]
        items, scores = als.recommend(np.array([u]), h[u : u + 1], 20, exclude=ex)
        s = als.score(np.array([u]), h[u : u + 1])
        s[0, ex.indices] = -np.inf
        exact_items, _ = top_n(s, 20)
        assert not set(items[0].tolist()) & set(ex.indices.tolist())  # seen items stay out
        assert np.all(np.diff(scores[0]) <= 1e-6)
        # the scores are the model's own: the exact scores of the items returned
        np.testing.assert_allclose(scores[0], als.score(np.array([u]), h[u : u + 1])[0, items[0]], rtol=1e-4,
                                   atol=1e-5)
        overlap.append(len(set(items[0].tolist()) & set(exact_items[0].tolist())) / 20)
    assert np.mean(overlap) >= 0.9
    assert als._index is not None and als._index.uses_hnsw
    # the graph is kept with the state: a loaded model answers the same
    als.save(tmp_path / "als")
    loaded = type(als).load(tmp_path / "als")
    again, _ = loaded.recommend(np.array([5]), h[5:6], 20, exclude=h[5:6])
    first, _ = als.recommend(np.array([5]), h[5:6], 20, exclude=h[5:6])
    np.testing.assert_array_equal(again, first)


def test_factor_model_live_query_folds_in_through_the_graph() -> None:
    als, data = _als_on_blocks()
    h = data.matrix()
    u = data.users.index("u3")  # block 3; its live history now holds block 6's items only
    block = lambda idx: np.asarray([int(i[1:]) // 50 for i in data.items.ids(idx.tolist())])  # noqa: E731
    cols = data.items.indices([f"i{300 + i}" for i in range(10)])
    live_hist = sp.csr_matrix((np.ones(10, np.float32), (np.zeros(10, int), cols)), shape=(1, als.n_items_))
    items, _ = als.recommend(np.array([u]), live_hist, 10, exclude=live_hist, live=True)
    assert (block(items[0]) == 6).mean() >= 0.8  # re-solved from the new history, not the trained vector
    trained, _ = als.recommend(np.array([u]), h[u : u + 1], 10, exclude=h[u : u + 1])
    assert (block(trained[0]) == 3).mean() >= 0.8


def test_factor_model_caches_one_query_fold_ins_by_history() -> None:
    als, data = _als_on_blocks(tmp_threshold=10_000)  # the exact scan: only the cache is under test
    h = data.matrix()
    calls = []
    real = als._fold_in
    als._fold_in = lambda rows: calls.append(rows.shape[0]) or real(rows)  # type: ignore[method-assign]
    row = h[7:8]
    first = als.recommend(np.array([7]), row, 10, exclude=row, live=True)
    again = als.recommend(np.array([7]), row, 10, exclude=row, live=True)
    assert calls == [1]  # solved once for the same history
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_allclose(als._fold_in_one(row), real(row)[0])
    longer = h[7:9].sum(axis=0)  # a new event changes the history: solved again
    als.recommend(np.array([7]), sp.csr_matrix(longer), 10, live=True)
    assert calls == [1, 1]
    als.clear_fold_cache()  # forgetting a user empties it
    als.recommend(np.array([7]), row, 10, exclude=row, live=True)
    assert calls == [1, 1, 1]
    als.recommend(np.arange(3), h[:3], 10, live=True)  # batches never use it
    assert calls[-1] == 3
