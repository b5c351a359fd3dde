from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from fusionrec.data.interactions import Interactions, InteractionWeighting
from fusionrec.data.preprocessing import assign_sessions, flag_bots, kcore
from fusionrec.data.vocabulary import Vocabulary

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def frame(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "timestamp"], orient="row")


def test_sessions_split_on_a_30_minute_gap():
    ev = frame([("u1", "a", "view", T0), ("u1", "b", "view", T0 + timedelta(minutes=29)),
                ("u1", "c", "view", T0 + timedelta(minutes=60)), ("u2", "a", "view", T0 + timedelta(minutes=1))])
    out = assign_sessions(ev)
    s = dict(zip(out["item_id"] + out["user_id"], out["session"]))
    assert s["au1"] == s["bu1"] != s["cu1"]
    assert s["au2"] not in (s["au1"], s["cu1"])
    assert out["session"].n_unique() == 3


def test_kcore_reaches_a_fixed_point():
    rows = [(f"u{u}", f"i{i}", "view", T0) for u in range(6) for i in range(6)]
    rows += [("lonely", "i0", "view", T0), ("u0", "rare", "view", T0)]
    out = kcore(frame(rows), min_user=3, min_item=3)
    assert "lonely" not in out["user_id"].to_list() and "rare" not in out["item_id"].to_list()
    assert out.height == 36


def test_bots_are_flagged_not_dropped():
    rows = [("bot", f"i{i}", "view", T0 + timedelta(seconds=i)) for i in range(120)]
    rows += [("human", f"i{i}", "view", T0 + timedelta(minutes=3 * i)) for i in range(60)]
    flags = flag_bots(frame(rows), max_events_per_minute=30)
    bots = dict(zip(flags["user_id"], flags["bot"]))
    assert bots == {"bot": True, "human": False}


def test_weighted_decayed_matrix_and_vocabulary():
    ev = frame([("u1", "a", "view", T0), ("u1", "a", "buy", T0 + timedelta(days=10)),
                ("u2", "b", "cart", T0 + timedelta(days=10))])
    data = Interactions.from_frame(ev, weighting=InteractionWeighting(half_life_days=10))
    m = data.matrix().toarray()
    a, b = data.items.index("a"), data.items.index("b")
    u1, u2 = data.users.index("u1"), data.users.index("u2")
    assert np.isclose(m[u1, a], 5.0 + 1.0 * 0.5)  # buy now + a view one half-life ago
    assert np.isclose(m[u2, b], 3.0)
    v = Vocabulary(["x", "y"])
    assert v.indices(["y", "zz"]).tolist() == [1, -1]


def test_a_saved_vocabulary_loads_to_the_same_indices(tmp_path):
    from fusionrec.data import vocabulary

    big = Vocabulary(f"u{i}" for i in range(2 * vocabulary._CHUNK + 7))  # several chunks and a partial one
    big.save(tmp_path / "big.txt")
    loaded = Vocabulary.load(tmp_path / "big.txt")
    assert loaded == big and len(loaded) == len(big)
    assert loaded.indices(["u0", f"u{vocabulary._CHUNK}", f"u{2 * vocabulary._CHUNK + 6}", "nobody"]).tolist() == [
        0, vocabulary._CHUNK, 2 * vocabulary._CHUNK + 6, -1]
    (tmp_path / "edited.txt").write_text("a\nb\na\nc\n", encoding="utf-8")  # a repeated id: the first counts
    edited = Vocabulary.load(tmp_path / "edited.txt")
    assert edited.ids() == ["a", "b", "c"] and edited.index("c") == 2
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert len(Vocabulary.load(tmp_path / "empty.txt")) == 0


def test_vocabularies_with_the_same_text_load_as_one_object(tmp_path):
    Vocabulary(["a", "b"]).save(tmp_path / "one.txt")
    Vocabulary(["a", "b"]).save(tmp_path / "two.txt")
    Vocabulary(["b", "a"]).save(tmp_path / "other.txt")
    shared: dict = {}
    one = Vocabulary.load(tmp_path / "one.txt", shared)
    assert Vocabulary.load(tmp_path / "two.txt", shared) is one  # same text: the same object
    other = Vocabulary.load(tmp_path / "other.txt", shared)
    assert other is not one and other.index("b") == 0
    assert Vocabulary.load(tmp_path / "two.txt") is not one  # without `shared`, a new one
