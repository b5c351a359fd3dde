"""Repeat generator: recency decay per (user, item), live history items, unknown users."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec.candidates.repeat import Repeat
from fusionrec.data.interactions import Interactions, min_per_pair

NOW = datetime(2026, 1, 31)


def _data() -> Interactions:
    rows = [("u1", "old", 30), ("u1", "new", 1), ("u1", "ancient", 2000), ("u2", "old", 3), ("u2", "x", 1)]
    frame = pl.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                          "behavior": ["view"] * len(rows),
                          "timestamp": [NOW - timedelta(days=r[2]) for r in rows]})
    return Interactions.from_frame(frame)


def _row(data: Interactions, items: dict[str, float]) -> sp.csr_matrix:
    cols = [data.items.index(i) for i in items]
    return sp.csr_matrix((np.asarray(list(items.values()), np.float32), ([0] * len(cols), cols)),
                         shape=(1, data.n_items))


def test_recent_items_outrank_old_ones() -> None:
    data = _data()
    model = Repeat(Repeat.Config(half_life_days=2.0)).fit(data)
    u1 = data.users.index("u1")
    s = model.score(np.asarray([u1]), _row(data, {"old": 1.0, "new": 1.0, "ancient": 1.0}))[0]
    new, old, ancient, x = (s[data.items.index(i)] for i in ("new", "old", "ancient", "x"))
    assert new > old > ancient
    assert ancient > 0 and x > 0  # x: not in u1's history, the popularity fallback only


def test_a_live_history_item_keeps_full_weight_and_an_unknown_user_is_not_decayed() -> None:
    data = _data()
    model = Repeat(Repeat.Config(half_life_days=2.0)).fit(data)
    u1 = data.users.index("u1")
    # "x" was never seen by u1 in training: added live, it has no age yet and counts fully
    s = model.score(np.asarray([u1]), _row(data, {"old": 1.0, "x": 1.0}))[0]
    assert s[data.items.index("x")] > 0.99 > s[data.items.index("old")]
    visitor = model.score(np.asarray([-1]), _row(data, {"old": 2.0, "new": 1.0}))[0]
    assert visitor[data.items.index("old")] > visitor[data.items.index("new")]


def test_min_per_pair_keeps_the_smallest_value_of_duplicates() -> None:
    m = min_per_pair(np.array([0, 0, 1, 0]), np.array([1, 1, 2, 2]), np.array([5.0, 2.0, 7.0, 3.0]), 2, 3)
    assert m.toarray().tolist() == [[0, 2, 3], [0, 0, 7]]
