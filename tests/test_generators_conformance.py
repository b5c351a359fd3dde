"""One conformance suite over every registered candidate generator (principle 6 of STYLE.md)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec.candidates.base import CandidateGenerator, Query
from fusionrec.candidates.registry import GENERATORS, load_generator, make
from fusionrec.data.interactions import Interactions

N_USERS, N_ITEMS, PER_USER = 60, 40, 12
T0 = 1_700_000_000.0
NON_PERSONAL = {"pop", "trending"}
# generators of the user's own items: their pattern shows when seen items may be recommended
OWN_ITEMS = {"repeat"}
# the defaults are sized for real catalogues; a 40-item toy needs fewer factors
TINY_PARAMS: dict[str, dict] = {
    "als": {"factors": 4, "regularization": 0.1, "alpha": 5.0},
    "bpr": {"factors": 8},
    "sasrec": {"hidden": 16, "n_blocks": 1, "epochs": 30, "patience": 3, "n_threads": 1},
}
# the candidate generators proper; composed pipelines registered beside them (fusion, blend, ...)
# need more data than this toy and have their own tests
ALL = sorted(n for n, cls in GENERATORS.items() if cls.__module__.startswith("fusionrec.candidates."))


def parity_frame(seed: int = 0) -> pl.DataFrame:
    """Even users like even items and odd users odd items (10% noise); item popularity is skewed;
    each user's events are one minute apart, starting at a random moment of a 30-day window."""
    rng = np.random.default_rng(seed)
    within = 1.0 / np.arange(1, N_ITEMS // 2 + 1) ** 0.8
    within /= within.sum()
    rows = []
    for u in range(N_USERS):
        start = T0 + rng.uniform(0, 30 * 86400)
        for j in range(PER_USER):
            item = 2 * int(rng.choice(N_ITEMS // 2, p=within)) + u % 2
            if rng.random() < 0.1:
                item = int(rng.integers(N_ITEMS))
            rows.append((f"u{u}", f"i{item}", "view", start + 60.0 * j))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "timestamp"], orient="row")


@pytest.fixture(scope="module")
def data() -> Interactions:
    frame = parity_frame()
    # a catalogue with categories (parity), and one item nobody has touched
    cat = pl.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS + 1)],
                        "category": ["even" if i % 2 == 0 else "odd" for i in range(N_ITEMS + 1)]})
    return Interactions.from_frame(frame, catalogue=cat)


class _Fitted(dict):
    """Each generator fitted once, on first use (so a slow one's cost shows in its own tests)."""

    def __init__(self, data: Interactions) -> None:
        super().__init__()
        self.data = data

    def __missing__(self, name: str) -> CandidateGenerator:
        self[name] = make(name, TINY_PARAMS.get(name)).fit(self.data)
        return self[name]


@pytest.fixture(scope="module")
def fitted(data: Interactions) -> dict[str, CandidateGenerator]:
    return _Fitted(data)


def parity(vocab_ids: list[str]) -> np.ndarray:
    return np.array([int(x[1:]) % 2 for x in vocab_ids])


def test_registry_names() -> None:
    assert {"pop", "trending", "itemknn", "covisit", "userknn", "rp3beta", "ease", "als", "bpr"} <= set(GENERATORS)
    for name, cls in GENERATORS.items():
        assert cls.name == name
    assert {"pop", "als"} <= set(ALL)


def test_make_rejects_unknown_names_and_params() -> None:
    with pytest.raises(ValueError, match="itemknn"):
        make("no-such-generator")
    with pytest.raises(ValueError, match="no parameter"):
        make("itemknn", {"neighbours": 3})
    with pytest.raises(ValueError, match="similarity"):
        make("itemknn", {"similarity": "euclid"})


@pytest.mark.parametrize("name", ALL)
def test_recovers_pattern(name: str, data: Interactions, fitted: dict[str, CandidateGenerator]) -> None:
    model = fitted[name]
    x = data.matrix()
    users = np.arange(data.n_users)
    top, scores = model.recommend(users, x, 5, exclude=None if name in OWN_ITEMS else x)
    assert top.shape == (data.n_users, 5) and scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 0), "best first"
    if name in NON_PERSONAL:
        frame = parity_frame()
        if model.cfg.half_life_days is None:
            weight = np.ones(frame.height)
        else:  # the decayed count, computed here independently of the implementation
            age = (frame["timestamp"].max() - frame["timestamp"].to_numpy()) / 86400.0
            weight = 0.5 ** (age / model.cfg.half_life_days)
        counts = frame.with_columns(w=pl.Series(weight)).group_by("item_id").agg(pl.col("w").sum())
        expected = counts.sort(["w", "item_id"], descending=[True, False])["item_id"].to_list()
        got = data.items.ids(model.recommend(np.array([-1]), None, 5)[0][0])
        assert got[0] == expected[0]
        assert set(got) <= set(expected[:8])
    else:
        item_parity = parity(data.items.ids())
        user_parity = parity(data.users.ids())
        agree = (item_parity[top] == user_parity[:, None]).mean()
        assert agree >= 0.8, f"{name}: only {agree:.0%} of top-5 recommendations match the user's parity"


@pytest.mark.parametrize("name", ALL)
def test_unknown_and_empty_users_get_a_full_list(name: str, data: Interactions,
                                                 fitted: dict[str, CandidateGenerator]) -> None:
    model = fitted[name]
    empty = sp.csr_matrix((4, data.n_items), dtype=np.float32)
    users = np.array([-1, 0, data.n_users + 5, -7])
    s = model.score(users, empty)
    assert s.shape == (4, model.n_items_) and s.dtype == np.float32
    assert not np.isnan(s).any() and not np.isposinf(s).any()
    top, vals = model.recommend(users, empty, 10)
    assert top.shape == (4, 10) and np.isfinite(vals).all()
    assert all(len(set(row)) == 10 for row in top)
    assert len(model.candidates(Query(user=-1), 10)) == 10
    assert model.recommend(users, None, 3)[0].shape == (4, 3)
    # a visitor with a history, including an item index the model never saw
    got = model.candidates(Query(user=-1, history=np.array([0, 2, 4, 10_000])), 10)
    assert len(got) == 10 and np.isfinite(got.scores).all()


@pytest.mark.parametrize("name", ALL)
def test_scores_are_finite_float32(name: str, data: Interactions, fitted: dict[str, CandidateGenerator]) -> None:
    s = fitted[name].score(np.arange(10), data.matrix()[:10])
    assert s.dtype == np.float32 and s.shape == (10, data.n_items)
    assert not np.isnan(s).any() and not np.isposinf(s).any()
    if name != "ease":  # EASE may mark items outside its item cut impossible; here it keeps all
        assert np.isfinite(s).all()


def probe(data: Interactions) -> tuple[np.ndarray, sp.csr_matrix]:
    users = np.array([0, 1, 2, 3, -1, -1, 5])
    hist = sp.vstack([data.matrix()[[0, 1, 2, 3]],
                      sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [0, 2, 4])), shape=(1, data.n_items)),
                      sp.csr_matrix((2, data.n_items))], format="csr")
    return users, hist


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name: str, data: Interactions, fitted: dict[str, CandidateGenerator], tmp_path) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    assert not list((tmp_path / name).glob("*.pkl"))
    loaded = load_generator(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    assert loaded.items_ == model.items_ and loaded.users_ == model.users_
    users, hist = probe(data)
    np.testing.assert_array_equal(loaded.score(users, hist), model.score(users, hist))
    assert type(model).load(tmp_path / name).config() == model.config()


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output(name: str, data: Interactions, fitted: dict[str, CandidateGenerator]) -> None:
    again = make(name, TINY_PARAMS.get(name)).fit(data)
    users, hist = probe(data)
    np.testing.assert_array_equal(again.score(users, hist), fitted[name].score(users, hist))


@pytest.mark.parametrize("name", ALL)
def test_exclude_is_respected(name: str, data: Interactions, fitted: dict[str, CandidateGenerator]) -> None:
    model = fitted[name]
    x = data.matrix()
    users = np.arange(20)
    first, _ = model.recommend(users, x[users], 5)
    # exclude each user's current top 3 plus its history: none may come back
    rows = np.repeat(np.arange(20), 3)
    ex = sp.csr_matrix((np.ones(60), (rows, first[:, :3].ravel())), shape=(20, data.n_items)) + x[users]
    top, _ = model.recommend(users, x[users], 5, exclude=ex)
    for r in range(20):
        assert not set(top[r]) & set(ex[r].indices)
    banned = first[0, :5]
    got = model.candidates(Query(user=0, history=x[0].indices, exclude=banned), 10)
    assert not set(got.items) & set(banned)


@pytest.mark.parametrize("name", ALL)
def test_vocabulary_grown_after_fit_is_ignored(name: str, fitted: dict[str, CandidateGenerator]) -> None:
    # a test set built on train's vocabularies extends them; the model keeps its own sizes
    data = Interactions.from_frame(parity_frame())
    model = make(name, TINY_PARAMS.get(name)).fit(data)
    n_items = data.n_items
    later = Interactions.from_frame(pl.DataFrame({"user_id": ["new-user"], "item_id": ["new-item"]}),
                                    users=data.users, items=data.items)
    assert later.n_items == n_items + 1 and model.n_items_ == n_items
    s = model.score(np.array([later.users.index("new-user")]), later.matrix()[-1:])
    assert s.shape == (1, n_items)
    top, _ = model.recommend(np.arange(3), later.matrix()[:3], 5, exclude=later.matrix()[:3])
    assert top.max() < n_items
