"""Properties particular to one generator each."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec.candidates._similarity import top_k_per_row
from fusionrec.candidates.als import ALS, BPR
from fusionrec.candidates.covisitation import SessionCoVisitation
from fusionrec.candidates.ease import EASE
from fusionrec.candidates.itemknn import ItemKNN
from fusionrec.candidates.popularity import CategoryPopularity, Popularity, Trending
from fusionrec.candidates.rp3beta import RP3beta
from fusionrec.candidates.userknn import UserKNN
from fusionrec.data.interactions import Interactions, InteractionWeighting

from test_generators_conformance import parity, parity_frame

DAY = 86400.0


@pytest.fixture(scope="module")
def data() -> Interactions:
    return Interactions.from_frame(parity_frame(seed=1))


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "timestamp"], orient="row")


# -- EASE ---------------------------------------------------------------------------------------
def test_ease_matches_the_closed_form_and_has_a_zero_diagonal(data: Interactions) -> None:
    model = EASE(EASE.Config(l2=20.0)).fit(data)
    assert model.n_kept_ == data.n_items
    assert np.all(np.diag(model.b_) == 0.0)
    x = data.matrix().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 20.0 * np.eye(data.n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.b_, b, atol=1e-5)
    np.testing.assert_allclose(EASE(EASE.Config(l2=20.0, dtype="float64")).fit(data).b_, b, atol=1e-6)


def test_ease_restricts_to_the_most_popular_items(data: Interactions) -> None:
    model = EASE(EASE.Config(l2=20.0, max_items=10)).fit(data)
    users_per_item = data.matrix().getnnz(axis=0)
    assert model.n_kept_ == 10 and model.b_.shape == (10, 10)
    assert users_per_item[model.kept_].min() >= np.sort(users_per_item)[-10]
    s = model.score(np.arange(5), data.matrix()[:5])
    outside = np.setdiff1d(np.arange(data.n_items), model.kept_)
    assert np.isneginf(s[:, outside]).all() and np.isfinite(s[:, model.kept_]).all()
    # a visitor with nothing inside the cut gets the (finite) popularity fallback
    hist = sp.csr_matrix(([1.0], ([0], [outside[0]])), shape=(1, data.n_items))
    assert np.isfinite(model.score(np.array([-1]), hist)).all()


# -- item-kNN -----------------------------------------------------------------------------------
def test_itemknn_cosine_is_symmetric_and_exact(data: Interactions) -> None:
    model = ItemKNN(ItemKNN.Config(k=data.n_items, shrink=5.0)).fit(data)
    sim = model.sim_.toarray()
    np.testing.assert_allclose(sim, sim.T, rtol=1e-5, atol=1e-7)
    x = data.matrix().toarray().astype(np.float64)
    norms = np.linalg.norm(x, axis=0)
    expected = (x.T @ x) / (np.outer(norms, norms) + 5.0)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(sim, expected, rtol=1e-4, atol=1e-6)


def test_itemknn_keeps_k_neighbours_and_other_similarities(data: Interactions) -> None:
    for cfg in (ItemKNN.Config(k=3), ItemKNN.Config(k=3, similarity="jaccard", weighting="bm25"),
                ItemKNN.Config(k=3, similarity="asymmetric_cosine", alpha=0.8, weighting="tfidf")):
        model = ItemKNN(cfg).fit(data)
        assert np.diff(model.sim_.indptr).max() <= 3
        assert (model.sim_.diagonal() == 0).all()
        got = model.similar_items(0, 3)
        assert len(got) == 3 and 0 not in got.items and np.all(np.diff(got.scores) <= 0)
    binary = Interactions.from_frame(parity_frame(seed=1), weighting=InteractionWeighting(binary=True))
    jac = ItemKNN(ItemKNN.Config(k=data.n_items, similarity="jaccard", shrink=0.0)).fit(binary).sim_.toarray()
    b = binary.matrix().toarray() > 0
    inter = (b[:, 0] & b[:, 2]).sum()
    union = (b[:, 0] | b[:, 2]).sum()
    assert jac[0, 2] == pytest.approx(inter / union, rel=1e-4)


def test_itemknn_similar_items_share_the_parity(data: Interactions) -> None:
    model = ItemKNN().fit(data)
    item_parity = parity(data.items.ids())
    for item in range(6):
        got = model.similar_items(item, 5)
        assert (item_parity[got.items] == item_parity[item]).mean() >= 0.8
    assert len(model.similar_items(-1, 5)) == 0 and len(model.similar_items(10_000, 5)) == 0


def test_top_k_per_row_breaks_ties_by_column() -> None:
    m = sp.csr_matrix(np.array([[0, 2, 1, 2, 2, 0], [3, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32))
    out = top_k_per_row(m, 2)
    assert out[0].indices.tolist() == [1, 3]
    assert out[1].indices.tolist() == [0]
    assert out[2].indices.tolist() == [0, 1]


# -- RP3beta ------------------------------------------------------------------------------------
def test_rp3beta_rows_respect_top_k(data: Interactions) -> None:
    model = RP3beta(RP3beta.Config(k=5)).fit(data)
    assert np.diff(model.sim_.indptr).max() <= 5
    assert (model.sim_.diagonal() == 0).all() and (model.sim_.data > 0).all()
    full = RP3beta(RP3beta.Config(k=data.n_items, beta=0.0)).fit(data).sim_.toarray()
    # with beta = 0 a row is the two-step walk's arrival distribution (minus the way back): sums <= 1
    assert (full.sum(axis=1) <= 1.0 + 1e-5).all()
    got = model.similar_items(0, 5)
    assert 0 < len(got) <= 5 and 0 not in got.items


def test_rp3beta_beta_penalises_popular_items(data: Interactions) -> None:
    pop = data.matrix().getnnz(axis=0)
    top = lambda beta: RP3beta(RP3beta.Config(beta=beta)).fit(data).recommend(  # noqa: E731
        np.arange(data.n_users), data.matrix(), 5, exclude=data.matrix())[0]
    assert pop[top(0.9)].mean() < pop[top(0.0)].mean()


# -- ALS / BPR ----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [ALS(ALS.Config(factors=4, regularization=0.1, alpha=5.0)),
                                   BPR(BPR.Config(factors=8))], ids=["als", "bpr"])
def test_fold_in_for_a_new_history(model, data: Interactions) -> None:
    model.fit(data)
    item_parity = parity(data.items.ids())
    for want in (0, 1):
        hist_items = np.nonzero(item_parity == want)[0][:5]
        hist = sp.csr_matrix((np.ones(5), (np.zeros(5, int), hist_items)), shape=(1, data.n_items))
        s = model.score(np.array([-1]), hist)
        ex = np.zeros(data.n_items, bool)
        ex[hist_items] = True
        top = np.argsort(-np.where(ex, -np.inf, s[0]))[:5]
        assert (item_parity[top] == want).mean() >= 0.8
        # without fold-in the visitor gets the popularity fallback instead
        np.testing.assert_array_equal(model.score(np.array([-1]), hist, fold_in=False)[0], model.fallback_)
    # a known user folded in from its own training row ranks much like its trained vector
    x = data.matrix()
    users = np.arange(10)
    trained = model.recommend(users, x[users], 5, exclude=x[users])[0]
    live = model.score(users, x[users], live=True)
    live[x[users].nonzero()] = -np.inf
    folded = np.argsort(-live, axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(trained, folded)])
    assert overlap >= 0.4


def test_als_confidence_follows_behaviour_weights() -> None:
    rows = [(f"u{u}", f"i{i}", "view", 0.0) for u in range(30) for i in range(10) if (u + i) % 3 == 0]
    rows += [("u0", "i1", "buy", 0.0)]
    data = Interactions.from_frame(frame(rows))
    plain = Interactions.from_frame(frame(rows), weighting=InteractionWeighting(binary=True))
    assert data.matrix()[0].max() > plain.matrix()[0].max()
    a = ALS(ALS.Config(factors=3, iterations=5)).fit(data).score(np.array([0]), None)
    b = ALS(ALS.Config(factors=3, iterations=5)).fit(plain).score(np.array([0]), None)
    assert not np.array_equal(a, b)


# -- popularity ---------------------------------------------------------------------------------
def test_trending_prefers_recent_items_with_the_same_count() -> None:
    now = 1_700_000_000.0
    rows = [(f"u{u}", "old", "view", now - 60 * DAY + u) for u in range(5)]
    rows += [(f"v{u}", "new", "view", now - 1 * DAY + u) for u in range(5)]
    rows += [("w", "other", "view", now)]
    data = Interactions.from_frame(frame(rows))
    old, new = data.items.index("old"), data.items.index("new")
    trend = Trending().fit(data).score(np.array([-1]), None)[0]
    pop = Popularity().fit(data).score(np.array([-1]), None)[0]
    assert trend[new] > trend[old] and trend[new] == pytest.approx(1.0)
    assert pop[new] == pop[old]


def test_popularity_weights_behaviours_and_categories() -> None:
    rows = [("a", "x", "view", 0.0), ("b", "x", "view", 0.0), ("c", "y", "buy", 0.0),
            ("d", "z", "view", 0.0), ("e", "z", "view", 0.0), ("e", "w", "view", 0.0)]
    cat = pl.DataFrame({"item_id": ["x", "y", "z", "w", "v"],
                        "category": ["shoes/run", "shoes/trail", "books", "books", None]})
    data = Interactions.from_frame(frame(rows), catalogue=cat)
    model = Popularity().fit(data)
    idx = data.items.index
    assert model.popularity_[idx("y")] > model.popularity_[idx("x")]  # one buy (5) beats two views
    shoes = model.popular_in_category("shoes", 5)
    assert [data.items.id(i) for i in shoes.items] == ["y", "x"]
    assert [data.items.id(i) for i in model.popular_in_category("books", 1).items] == ["z"]
    assert len(model.popular_in_category("garden", 5)) == 0
    mixed = Popularity(Popularity.Config(category_mix=1.0)).fit(data)
    hist = sp.csr_matrix(([1.0], ([0], [idx("w")])), shape=(1, data.n_items))
    s = mixed.score(np.array([-1]), hist)[0]
    assert data.items.id(int(np.argmax(s))) == "z"  # popular in the books the user looked at
    assert np.isfinite(s).all() and s[idx("v")] == 0.0


def test_catpop_counts_users_weighs_recent_categories_and_scales_across_categories(tmp_path) -> None:
    now = 1_700_000_000.0
    rows = [("fan", "x", "view", now - 5 * DAY + k) for k in range(10)]  # one user, ten views: "x"
    rows += [(f"b{u}", "y", "view", now - 5 * DAY + u) for u in range(3)]  # three users, one view each: "y"
    rows += [("s", "z", "view", now - 5 * DAY)]  # the only shoe, one view
    # the user: four books a month ago, one shoe today
    rows += [("me", "old", "view", now - 30 * DAY + k) for k in range(4)] + [("me", "z2", "view", now)]
    cat = pl.DataFrame({"item_id": ["x", "y", "z", "old", "z2"], "category": ["books", "books", "shoes", "books", "shoes"]})
    data = Interactions.from_frame(frame(rows), catalogue=cat)
    idx, me = data.items.index, np.array([data.users.index("me")])
    hist = data.matrix()[me]

    def scores(**cfg: object) -> np.ndarray:
        return CategoryPopularity(CategoryPopularity.Config(category_mix=1.0, **cfg)).fit(data).score(me, hist)[0]

    by_events, by_users = scores(), scores(item_count="users")
    assert by_events[idx("x")] > by_events[idx("y")] and by_users[idx("y")] > by_users[idx("x")]
    # the history as is: books (4 of 5 events) lead; decayed by a one-day half-life, today's shoes lead
    assert scores(item_count="users")[idx("y")] > scores(item_count="users")[idx("z")]
    recent = scores(item_count="users", user_half_life_days=1.0)
    assert recent[idx("z")] > recent[idx("y")]
    # "top": each category's best scores its share; "global": the busier category's best item comes first
    even = CategoryPopularity(CategoryPopularity.Config(category_mix=1.0, item_count="users", user_half_life_days=1.0))
    even.fit(data)
    both = sp.csr_matrix(([1.0, 1.0], ([0, 0], [idx("x"), idx("z")])), shape=(1, data.n_items))
    top = even.score(np.array([-1]), both)[0]
    assert top[idx("y")] == pytest.approx(top[idx("z")])  # an unknown user's history keeps its weights
    glob = CategoryPopularity(CategoryPopularity.Config(category_mix=1.0, item_count="users",
                                                         category_scale="global")).fit(data).score(np.array([-1]), both)[0]
    assert glob[idx("y")] > glob[idx("z")]
    # the decay is part of the saved state
    even.save(tmp_path / "catpop")
    again = CategoryPopularity.load(tmp_path / "catpop")
    np.testing.assert_array_equal(again.score(me, hist), even.score(me, hist))
    with pytest.raises(ValueError, match="item_count"):
        CategoryPopularity.Config(item_count="sessions")


# -- session co-visitation ----------------------------------------------------------------------
def test_covisitation_similar_items_come_from_the_same_sessions() -> None:
    t = 1_700_000_000.0
    rows = [("u1", "a", "view", t), ("u1", "b", "view", t + 60), ("u1", "c", "view", t + 120),
            # an hour later: a new session of the same user
            ("u1", "d", "view", t + 3720), ("u1", "e", "view", t + 3780),
            ("u2", "a", "view", t), ("u2", "b", "view", t + 30), ("u2", "f", "view", t + 90),
            ("u3", "d", "view", t), ("u3", "e", "view", t + 10)]
    data = Interactions.from_frame(frame(rows))
    model = SessionCoVisitation().fit(data)
    name = lambda got: [data.items.id(i) for i in got.items]  # noqa: E731
    assert name(model.similar_items(data.items.index("a"), 10)) == ["b", "c", "f"]
    assert set(name(model.similar_items(data.items.index("d"), 10))) == {"e"}
    # 1 / distance: b is next to a twice, c once at distance 2
    sim = model.sim_
    a, b, c = (data.items.index(x) for x in "abc")
    assert sim[a, b] == pytest.approx(2.0) and sim[a, c] == pytest.approx(0.5)


def test_covisitation_without_timestamps_uses_one_session_per_user() -> None:
    rows = pl.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["a", "b", "a", "c"]})
    data = Interactions.from_frame(rows)
    model = SessionCoVisitation(SessionCoVisitation.Config(window=1)).fit(data)
    a = data.items.index("a")
    assert [data.items.id(i) for i in model.similar_items(a, 5).items] == ["b"]


# -- user-kNN -----------------------------------------------------------------------------------
def test_userknn_on_the_fly_neighbours_match_training_users(data: Interactions) -> None:
    model = UserKNN(UserKNN.Config(k=10)).fit(data)
    x = data.matrix()
    known = model.score(np.arange(5), x[:5])
    # the same histories as visitors find the user itself as nearest neighbour; known users never do
    visitor = model.score(np.full(5, -1), x[:5])
    assert not np.array_equal(known, visitor)
    assert np.all(visitor[x[:5].nonzero()] > 0)
    item_parity = parity(data.items.ids())
    top = np.argsort(-np.where(x[:5].toarray() > 0, -np.inf, known), axis=1)[:, :5]
    assert (item_parity[top] == (np.arange(5) % 2)[:, None]).mean() >= 0.8
