"""SASRec on a tiny sequence world where item i is always followed by item i + 1 (mod N_ITEMS).

The walk is circular so that every transition also occurs before some user's last two items: the
model learns only from what remains after each user's last item is carved out for validation.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec.candidates.base import Query
from fusionrec.candidates.sasrec import SASRec, _length_buckets, _padded, _torch, _truncate
from fusionrec.data.interactions import Interactions
from fusionrec.errors import FusionrecError

N_ITEMS = 20
TINY = SASRec.Config(hidden=32, n_blocks=2, max_len=10, dropout=0.1, learning_rate=5e-3, batch_size=64,
                     epochs=30, patience=0, seed=7, n_threads=1)


def chain_frame(n_users: int = 120, seed: int = 0) -> pl.DataFrame:
    """Each user walks i, i+1, i+2, ... (mod N_ITEMS) from a random start, 4 to 9 steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        length = int(rng.integers(4, 10))
        start = int(rng.integers(0, N_ITEMS))
        rows.extend((f"u{u}", f"i{(start + j) % N_ITEMS}", "view", 1_700_000_000 + 60 * j) for j in range(length))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "timestamp"], orient="row")


@pytest.fixture(scope="module")
def data() -> Interactions:
    return Interactions.from_frame(chain_frame())


@pytest.fixture(scope="module")
def model(data: Interactions) -> SASRec:
    return SASRec(TINY).fit(data)


def idx(data: Interactions, *names: str) -> np.ndarray:
    return data.items.indices(list(names))


def test_learns_the_next_item(model: SASRec, data: Interactions) -> None:
    got = model.candidates(Query(user=-1, history=idx(data, "i3", "i4", "i5")), 3)
    assert idx(data, "i6")[0] in got.items
    assert got.items[0] == idx(data, "i6")[0]
    assert model.best_epoch_ >= 1 and model.valid_ndcg_ > 0.5


def test_order_matters(model: SASRec, data: Interactions) -> None:
    fwd = model.candidates(Query(user=-1, history=idx(data, "i10", "i11", "i12")), 1)
    assert data.items.ids(fwd.items) == ["i13"]


def test_known_users_are_scored_from_their_training_sequence(model: SASRec, data: Interactions) -> None:
    items, offsets = data.sequences()
    users = np.arange(data.n_users)
    last = np.array([int(data.items.id(items[offsets[u + 1] - 1])[1:]) for u in users])
    top, _ = model.recommend(users, data.matrix()[users], 1)
    expected = [f"i{(last[u] + 1) % N_ITEMS}" for u in users]
    hits = np.mean([data.items.id(t) == e for t, e in zip(top[:, 0], expected)])
    assert hits >= 0.9
    # a known user's candidates without a query history come from the stored sequence too
    u = int(users[0])
    assert model.candidates(Query(user=u), 1).items[0] == top[0, 0]


def test_unknown_users_and_empty_histories(model: SASRec, data: Interactions) -> None:
    empty = sp.csr_matrix((3, data.n_items), dtype=np.float32)
    s = model.score(np.array([-1, data.n_users + 5, -1]), empty)
    assert s.shape == (3, data.n_items) and s.dtype == np.float32 and np.isfinite(s).all()
    np.testing.assert_array_equal(s[0], model.fallback_)
    assert len(model.candidates(Query(user=-1), 5)) == 5
    assert model.recommend(np.array([-1, 0]), None, 4)[0].shape == (2, 4)
    # an unordered history row: lightest first, so the heaviest (newest under decay) item is last
    row = sp.csr_matrix(([0.2, 0.5, 1.0], ([0, 0, 0], idx(data, "i7", "i8", "i9"))), shape=(1, data.n_items))
    top = model.recommend(np.array([-1]), row, 1)[0]
    assert data.items.ids(top[0]) == ["i10"]
    got = model.candidates(Query(user=-1, history=np.array([10_000, *idx(data, "i2", "i3")])), 3)
    assert len(got) == 3 and data.items.id(got.items[0]) == "i4"


def test_exclude_and_live_history(model: SASRec, data: Interactions) -> None:
    nxt = idx(data, "i6")
    got = model.candidates(Query(user=-1, history=idx(data, "i3", "i4", "i5"), exclude=nxt), 5)
    assert nxt[0] not in got.items and len(got) == 5
    items, offsets = data.sequences()
    u = int(np.nonzero(np.diff(offsets) >= 4)[0][0])
    last = int(data.items.id(items[offsets[u + 1] - 1])[1:])
    nxt1, nxt2 = f"i{(last + 1) % N_ITEMS}", f"i{(last + 2) % N_ITEMS}"
    # the user then viewed the next item live: with live=True SASRec predicts the one after
    row = sp.csr_matrix(([1.0], ([0], idx(data, nxt1))), shape=(1, data.n_items))
    assert data.items.id(model.recommend(np.array([u]), row, 1)[0][0, 0]) == nxt1
    live = model.score(np.array([u]), row, live=True)
    assert data.items.id(int(np.argmax(live[0]))) == nxt2


def test_save_load_round_trip(model: SASRec, data: Interactions, tmp_path) -> None:
    model.save(tmp_path / "s")
    assert not list((tmp_path / "s").glob("*.pkl"))
    with np.load(tmp_path / "s" / "state.npz", allow_pickle=False) as z:
        assert any(k.startswith("net/") for k in z.files)
    loaded = SASRec.load(tmp_path / "s")
    assert loaded.config() == model.config() and loaded.best_epoch_ == model.best_epoch_
    users = np.array([0, 1, 2, -1])
    hist = data.matrix()[[0, 1, 2, 3]]
    np.testing.assert_array_equal(loaded.score(users, hist), model.score(users, hist))
    q = Query(user=-1, history=idx(data, "i1", "i2"))
    np.testing.assert_array_equal(loaded.candidates(q, 5).items, model.candidates(q, 5).items)


def test_same_seed_same_model(data: Interactions) -> None:
    cfg = SASRec.Config(hidden=16, n_blocks=1, max_len=8, epochs=3, patience=0, seed=3, n_threads=1)
    a, b = SASRec(cfg).fit(data), SASRec(cfg).fit(data)
    users = np.arange(5)
    np.testing.assert_array_equal(a.score(users, None), b.score(users, None))
    c = SASRec(SASRec.Config(hidden=16, n_blocks=1, max_len=8, epochs=3, patience=0, seed=4, n_threads=1)).fit(data)
    assert not np.array_equal(a.score(users, None), c.score(users, None))


def test_early_stopping_keeps_the_best_epoch(data: Interactions) -> None:
    m = SASRec(SASRec.Config(hidden=16, n_blocks=1, max_len=8, learning_rate=0.05, epochs=20, patience=2,
                             seed=1, n_threads=1)).fit(data)
    hist = m.valid_history_
    assert len(hist) == m.epochs_trained_ <= 20
    # the best epoch is the last one reaching the maximum, and its weights are the ones kept
    assert m.valid_ndcg_ == hist.max() and m.best_epoch_ == len(hist) - int(np.argmax(hist[::-1]))
    if m.epochs_trained_ < 20:  # stopped: the last `patience` epochs did not beat what came before
        assert hist[-2:].max() <= hist[:-2].max()


def test_degenerate_data_never_raises() -> None:
    one = Interactions.from_frame(pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]}))
    m = SASRec(SASRec.Config(hidden=8, n_blocks=1, epochs=2)).fit(one)
    assert m.epochs_trained_ == 0 and m.score(np.array([0, -1]), None).shape == (2, 2)


def test_helpers() -> None:
    items = np.arange(10)
    offsets = np.array([0, 3, 3, 10])
    kept, off = _truncate(items, offsets, 4)
    np.testing.assert_array_equal(off, [0, 3, 3, 7])
    np.testing.assert_array_equal(kept, [0, 1, 2, 6, 7, 8, 9])
    np.testing.assert_array_equal(_padded([np.array([0, 1, 2]), np.array([5])], 2), [[2, 3], [6, 0]])
    lengths = np.random.default_rng(0).integers(1, 20, 1000)
    batches = list(_length_buckets(lengths, 32, np.random.default_rng(1)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        SASRec.Config(hidden=10, n_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        SASRec.Config(dropout=1.0)


def test_without_torch_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(FusionrecError, match=r"pip install fusionrec\[deep\]"):
        _torch()
    with pytest.raises(FusionrecError, match=r"fusionrec\[deep\]"):
        SASRec(SASRec.Config(epochs=1)).fit(Interactions.from_frame(chain_frame(5)))
