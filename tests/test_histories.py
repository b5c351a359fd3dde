"""The server's in-memory histories: stored plus live events, the live mark that says which live events a
retrained version has learned, the per-user cap and forgetting."""

from __future__ import annotations

import polars as pl

from fusionrec.serving.histories import LIVE_FIELDS, HistoryStore


def _store(max_events: int = 500) -> HistoryStore:
    events = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["i1", "i2", "i1"],
                           "behavior": ["view", "buy", "view"], "t": [100.0, 200.0, 150.0]})
    return HistoryStore.from_frames(events, max_events=max_events)


def test_live_events_join_the_history_in_time_order():
    h = _store()
    h.append([("a", "i3", "cart", 150.0), ("new", "i1", "view", 300.0)])
    a = h.history("a")
    assert h.item_ids(a.items) == ["i1", "i3", "i2"] and a.n_live == 1
    assert h.item_ids(h.history("new").items) == ["i1"]
    assert h.history("nobody") is None


def test_live_events_up_to_the_mark_count_as_learned():
    h = _store()
    assert h.live_mark() == 0
    h.append([("a", "i3", "view", 300.0), ("b", "i2", "view", 300.0)])
    mark = h.live_mark()
    assert mark == 2
    h.append([("a", "i1", "cart", 400.0)])
    assert h.history("a").n_live == 2  # a model trained before any live event knows neither
    assert h.history("a", learned_through=mark).n_live == 1  # only the event after the snapshot
    assert h.history("b", learned_through=mark).n_live == 0
    assert len(h.history("b", learned_through=mark)) == 2  # learned events stay in the history


def test_a_history_keeps_the_newest_events_only():
    h = _store(max_events=3)
    h.append([("a", f"x{i}", "view", 1000.0 + i) for i in range(5)])
    a = h.history("a")
    assert h.item_ids(a.items) == ["x2", "x3", "x4"] and a.n_live == 3
    # a busy user's live events are cut back in one piece (a quarter past the cap at most), read capped
    busy = _store(max_events=8)
    for k in range(0, 100, 7):
        busy.append([("a", f"y{i}", "view", 2000.0 + i) for i in range(k, min(k + 7, 100))])
        held = len(busy._live[busy.users.index("a")]) // LIVE_FIELDS
        assert held <= 8 + 2
        sent = ["i1", "i2"] + [f"y{i}" for i in range(min(k + 7, 100))]  # "a" has two stored events
        assert busy.item_ids(busy.history("a").items) == sent[-8:]


def test_a_batch_of_live_events_is_the_same_as_one_event_at_a_time():
    """append() handles ids, behaviour codes and trending for the whole batch: the result must not depend on
    how the events were batched (order within a user, the cap, a behaviour first seen live, a missing time)."""
    events = [("a", "i3", "cart", 150.0), ("new", "i9", "view", 300.0), ("a", "i9", "reorder", float("nan")),
              ("b", "i1", "buy", 250.0), ("a", "x1", "view", 400.0), ("a", "x2", "view", 401.0),
              ("new", "i9", "reorder", 500.0)]
    one, batch = _store(max_events=4), _store(max_events=4)
    for e in events:
        one.append([e])
    assert batch.append(events) == len(events) and batch.live_events == one.live_events == len(events)

    def state(h: HistoryStore) -> tuple:
        hist = {u: (h.item_ids(x.items), x.behaviors.tolist(), [None if t != t else t for t in x.times.tolist()])
                for u in ("a", "b", "new") for x in [h.history(u)]}
        items, scores = h.trending(10)
        return (hist, {u: h.revision(u) for u in ("a", "b", "new")}, h.behaviors, h.live_mark(), h.newest,
                h.item_ids(items), scores.tolist())

    assert state(batch) == state(one)
    assert len(batch.history("a")) == 4 and "reorder" in batch.behaviors  # capped; the new behaviour has a code
    assert "i9" in batch.item_ids(batch.trending(10)[0])  # an item only live events touched now trends


def test_forget_drops_stored_and_live_events():
    h = _store()
    h.append([("a", "i3", "view", 300.0)])
    assert h.forget("a") and len(h.history("a")) == 0
    assert not h.forget("nobody")


def _all_histories(h: HistoryStore, users: list[str]) -> dict[str, tuple[list[str], list[int], list[float]]]:
    out = {}
    for u in users:
        x = h.history(u)
        out[u] = (h.item_ids(x.items), x.behaviors.tolist(), x.times.tolist())
    return out


def test_rebase_moves_learned_live_events_into_the_base_and_changes_no_history():
    h = _store()
    h.append([("a", "i3", "cart", 150.0),  # late: between a's stored events
              ("new", "i1", "view", 300.0), ("b", "i2", "buy", 400.0), ("new2", "i4", "view", 500.0)])
    mark = h.live_mark()
    h.append([("a", "i4", "view", 600.0), ("new", "i2", "view", 700.0)])  # after the snapshot
    users = ["a", "b", "new", "new2"]
    before = _all_histories(h, users)
    assert h.rebase(mark) == 4
    assert _all_histories(h, users) == before  # the same events, in the same order
    assert h.stats()["stored_events"] == 3 + 4
    # what is left live is what came after the mark
    assert [h.history(u).n_live for u in users] == [1, 0, 1, 0]
    assert h.history("a", learned_through=mark).n_live == 1 and h.history("b", learned_through=mark).n_live == 0
    assert h.rebase(mark) == 0  # nothing more up to that mark
    assert h.rebase(h.live_mark()) == 2 and _all_histories(h, users) == before
    assert sum(h.history(u).n_live for u in users) == 0


def test_rebase_keeps_a_forgotten_user_forgotten():
    h = _store()
    h.append([("a", "i3", "view", 300.0)])
    assert h.forget("a")
    h.append([("a", "i4", "view", 400.0), ("b", "i3", "view", 400.0)])  # a came back after forgetting
    assert h.rebase(h.live_mark()) == 1  # b's event; a's new one stays live (a's base row is masked)
    assert h.item_ids(h.history("a").items) == ["i4"]
    assert h.item_ids(h.history("b").items) == ["i1", "i3"]
