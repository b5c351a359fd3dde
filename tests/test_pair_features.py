"""The ranker's user x item features of the current session and of content: what they measure, by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec.candidates.base import Query
from fusionrec.data.interactions import Interactions
from fusionrec.data.synthetic import ShopConfig, generate_shop
from fusionrec.features.tables import (PAIR_FEATURES, SESSION_ITEMS, ItemFeatures, UserFeatures, pair_features,
                                       recent_items)
from fusionrec.pipeline import FusedPipeline, PipelineConfig, item_similarity_of

COOC, CONTENT = PAIR_FEATURES.index("ui_session_cooc"), PAIR_FEATURES.index("ui_content_sim")


def _data(events: list[tuple[str, str, int]], catalogue: pl.DataFrame | None = None) -> Interactions:
    frame = pl.DataFrame({"user_id": [e[0] for e in events], "item_id": [e[1] for e in events],
                          "behavior": ["view"] * len(events), "timestamp": [e[2] for e in events]})
    return Interactions.from_frame(frame, catalogue=catalogue)


def test_recent_items_keep_each_rows_newest_distinct_items_newest_first():
    # row 0 saw 3, 1, 2, 3, 4, 1 (in that order): newest distinct 1, 4, 3, 2; row 1 one item; row 2 none
    rows = np.array([0, 0, 0, 0, 0, 0, 1])
    cols = np.array([3, 1, 2, 3, 4, 1, 7])
    order = np.arange(7, dtype=np.float64)
    r = recent_items(rows, cols, order, 3, 8, k=3).toarray()
    assert r[0].tolist() == [0, 1, 0, 3, 2, 0, 0, 0]
    assert r[1, 7] == 1 and r[1].sum() == 1 and r[2].sum() == 0
    # events of unknown order (NaN) are left out
    assert recent_items(rows, cols, np.full(7, np.nan), 3, 8).nnz == 0


def test_session_cooccurrence_is_the_mean_similarity_to_the_users_most_recent_items():
    # u1's log in time order: a, b, c, d, e, f, g; the session is the newest SESSION_ITEMS of them
    names = list("abcdefgh")
    data = _data([("u1", n, 100 + i) for i, n in enumerate(names[:7])] + [("u2", "h", 50)])
    item_f = ItemFeatures.build(data)
    user_f = UserFeatures.build(data, item_f)
    idx = {n: data.items.index(n) for n in names}
    n = data.n_items
    rng = np.random.default_rng(0)
    sim = sp.csr_matrix(rng.random((n, n)).astype(np.float32) * (rng.random((n, n)) < 0.6))
    u1, u2 = data.users.index("u1"), data.users.index("u2")
    users = np.array([u1, u2, -1])
    visitor = Query(history=np.array([idx["h"], idx["a"]])).history_row(n)
    h = sp.vstack([data.matrix()[[u1, u2]], visitor]).tocsr()
    rows = np.array([0, 0, 1, 2])
    items = np.array([idx["h"], idx["a"], idx["a"], idx["c"]])
    out = pair_features(users, h, rows, items, item_f, user_f, item_sim=sim)
    dense = sim.toarray()
    session = [idx[x] for x in names[7 - SESSION_ITEMS:7]]  # the newest five, not a and b
    assert out[0, COOC] == pytest.approx(dense[session, idx["h"]].mean(), rel=1e-5)
    assert out[1, COOC] == pytest.approx(dense[session, idx["a"]].mean(), rel=1e-5)
    assert out[2, COOC] == pytest.approx(dense[idx["h"], idx["a"]], rel=1e-5)  # u2's only item
    # an anonymous visitor's whole history is the session
    assert out[3, COOC] == pytest.approx(dense[[idx["h"], idx["a"]], idx["c"]].mean(), rel=1e-5)
    # one request at a time (the serving path's own code) gives the same values
    for r, sel in ((0, [0, 1]), (2, [3])):
        one = pair_features(users[r:r + 1], h[r:r + 1], np.zeros(len(sel), np.int64), items[sel], item_f, user_f,
                            item_sim=sim)
        np.testing.assert_allclose(one[:, COOC], out[sel, COOC], rtol=1e-6)
    # a session given by the caller (the live query's newest items) replaces the stored one
    given = Query(history=np.array([idx["g"], idx["b"]])).session_row(n, SESSION_ITEMS)
    live = pair_features(users[:1], h[:1], np.array([0]), np.array([idx["h"]]), item_f, user_f,
                         item_sim=sim, sessions=given)
    assert live[0, COOC] == pytest.approx(dense[[idx["g"], idx["b"]], idx["h"]].mean(), rel=1e-5)
    # without an item similarity the feature is missing, not zero
    assert np.isnan(pair_features(users, h, rows, items, item_f, user_f)[:, COOC]).all()


def test_query_session_row_takes_the_newest_distinct_items():
    q = Query(history=np.array([5, 1, 2, 1, 3, 9]))
    row = q.session_row(10, 3).toarray().ravel()
    assert set(np.flatnonzero(row)) == {9, 3, 1}
    assert Query().session_row(10, 3) is None


def test_content_similarity_is_the_cosine_to_the_users_profile():
    catalogue = pl.DataFrame({"item_id": ["r1", "r2", "r3", "b1", "x"],
                              "title": ["red leather shoe", "red running shoe", "red canvas shoe", "blue wool hat",
                                        None]})
    data = _data([("u1", "r1", 1), ("u1", "r2", 2), ("u2", "b1", 3), ("u2", "x", 4), ("u3", "x", 5)], catalogue)
    item_f = ItemFeatures.build(data)
    user_f = UserFeatures.build(data, item_f)
    assert item_f.content.shape[0] == data.n_items and item_f.content.shape[1] > 0
    i = {n: data.items.index(n) for n in ("r1", "r2", "r3", "b1", "x")}
    u = {n: data.users.index(n) for n in ("u1", "u2", "u3")}
    h = data.matrix()
    users = np.array([u["u1"], u["u2"], u["u3"]])
    hb = h[users]
    rows = np.array([0, 0, 1, 0, 2])
    items = np.array([i["r3"], i["b1"], i["r3"], i["x"], i["r3"]])
    out = pair_features(users, hb, rows, items, item_f, user_f)[:, CONTENT]
    v = item_f.content.toarray()
    profile = hb.toarray() @ v
    want = profile[0] @ v[i["r3"]] / np.linalg.norm(profile[0])
    assert out[0] == pytest.approx(want, rel=1e-5)
    assert out[0] > 0.3 and out[0] > out[1] and out[0] > out[2]  # a red shoe fan: the red shoe, not the hat
    assert np.isnan(out[3])  # an item without content
    assert np.isnan(out[4])  # a user whose history has no content
    # one request's candidates (the serving path) get the same values as a batch
    one = pair_features(users[:1], hb[:1], np.zeros(3, np.int64), items[[0, 1, 3]], item_f, user_f)[:, CONTENT]
    np.testing.assert_allclose(one, out[[0, 1, 3]], rtol=1e-6)
    # no catalogue text at all: missing everywhere
    plain = _data([("u1", "r1", 1), ("u1", "r2", 2)])
    pf = ItemFeatures.build(plain)
    assert pf.content.shape[1] == 0
    assert np.isnan(pair_features(np.array([0]), plain.matrix()[[0]], np.array([0]), np.array([1]), pf,
                                  UserFeatures.build(plain, pf))[:, CONTENT]).all()


def test_the_fused_ranker_gets_both_features_and_a_saved_version_reads_its_own_columns(tmp_path):
    shop = generate_shop(ShopConfig(n_users=300, n_items=200, n_events=20_000, seed=5))
    data = Interactions.from_frame(shop.events, catalogue=shop.items)
    pipe = FusedPipeline(PipelineConfig(generators={"pop": {}, "itemknn": {}, "covisit": {}}, n_candidates=30,
                                        seed=1, ranker_guard=False, ranker={"n_estimators": 30})).fit(data)
    h = data.matrix()
    users = np.arange(40)
    table, _ = pipe.fused_table(users, h[users], h[users])
    names = pipe.feature_names(table.generators)
    X = pipe._features(table, users, h[users], pipe.item_features_, pipe.user_features_,
                       item_similarity_of(pipe.generators_))
    for f in ("ui_session_cooc", "ui_content_sim"):
        col = X[:, names.index(f)]
        assert np.isfinite(col).mean() > 0.5 and np.nanstd(col) > 0, f
    # a version trained before a feature existed names fewer columns: it is given exactly its own
    pipe.fuser_.feature_names_ = [n for n in names if n != "ui_content_sim"][::-1]
    picked = pipe._ranker_columns(X, table.generators)
    assert picked.shape[1] == len(names) - 1
    assert np.array_equal(picked[:, 0], X[:, names.index(pipe.fuser_.feature_names_[0])], equal_nan=True)
    pipe.fuser_.feature_names_ = names + ["a_feature_from_the_future"]
    with pytest.raises(ValueError, match="retrain"):
        pipe._ranker_columns(X, table.generators)
