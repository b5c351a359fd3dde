"""Protocols: every split keeps its test rows out of training, and validation comes from training only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from fusionrec.evaluation.splits import (
    EvaluationError, Split, given_split, kfold_splits, leave_last_out_split, make_splits, temporal_split,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass
class Data:
    """The fields of fusionrec.data.loading.Dataset that the protocols read."""

    name: str
    format: str
    events: pl.DataFrame
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    has_timestamps: bool = True
    checksum: str = "0" * 64


def make_events(n_users: int = 40, n_items: int = 30, seed: int = 0, timestamps: bool = True) -> pl.DataFrame:
    """Users with 1..14 events over 60 days, repeats allowed; source order (seq) shuffled against time."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(1, 15))
        users += [f"u{u}"] * n
        items += [f"i{i}" for i in rng.integers(0, n_items, n)]
        times += sorted(rng.uniform(0, 60 * 86400, n).tolist())
    order = rng.permutation(len(users))
    ev = pl.DataFrame({
        "user_id": np.asarray(users)[order], "item_id": np.asarray(items)[order],
        "behavior": rng.choice(["view", "cart", "buy"], len(users)),
        "timestamp": [T0 + timedelta(seconds=float(t)) for t in np.asarray(times)[order]],
        "seq": np.arange(len(users), dtype=np.int64),
        "split": pl.Series([None] * len(users), dtype=pl.Utf8),
    }).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    if not timestamps:
        ev = ev.sort("timestamp").with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"),
                                               pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("timestamp"))
    return ev


def target_pairs(split: Split) -> set[tuple[str, str]]:
    t = split.targets.tocoo()
    return {(split.user_ids[r], split.target_items.id(c)) for r, c in zip(t.row, t.col)}


def assert_no_leak(ds: Data, split: Split) -> None:
    """The split indices: disjoint rows, training built from exactly the train rows, targets from test rows."""
    ev = ds.events
    train, test = set(split.train_rows.tolist()), set(split.test_rows.tolist())
    assert not train & test, "a row is both training and test"
    assert len(train) == len(split.train_rows) and len(test) == len(split.test_rows)
    assert train | test <= set(range(ev.height))
    # what models are fitted on is exactly the train rows (seq is unique in these fixtures)
    assert sorted(split.train.events["seq"].to_list()) == sorted(ev["seq"].gather(split.train_rows).to_list())
    test_rows = ev[split.test_rows]
    held = set(zip(test_rows["user_id"].to_list(), test_rows["item_id"].to_list()))
    assert target_pairs(split) <= held, "a target that is not a held-out event"
    if split.exclude_seen:
        tr = ev[split.train_rows].filter(pl.col("behavior").is_in(test_rows["behavior"].unique().to_list()))
        seen = set(zip(tr["user_id"].to_list(), tr["item_id"].to_list()))
        known = {(u, i) for u, i in target_pairs(split) if u in split.train.users}
        assert not known & seen, "an excluded (seen) item is still a target"
    # histories are training rows of known users (sessions use their own prefix)
    known_rows = split.users >= 0
    np.testing.assert_array_equal(
        (split.histories[known_rows] != 0).toarray(), (split.train.matrix()[split.users[known_rows]] != 0).toarray())


def assert_valid_inside_train(split: Split) -> None:
    v = split.valid
    assert v is not None
    inside = set(split.train_rows.tolist())
    assert set(v.train_rows.tolist()) | set(v.test_rows.tolist()) <= inside, "validation uses a non-training row"
    assert not set(v.train_rows.tolist()) & set(v.test_rows.tolist())
    assert v.n_users > 0
    assert split.valid_train is v.train and split.valid_targets is v.targets


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_temporal_split_cuts_time_once_and_never_leaks(exclude_seen: bool) -> None:
    ds = Data("shop", "fusionrec", make_events())
    split = temporal_split(ds, test_days=10, exclude_seen=exclude_seen)
    assert_no_leak(ds, split)
    ts = ds.events["timestamp"]
    cut = ts.max() - timedelta(days=10)
    assert ts.gather(split.train_rows).max() <= cut < ts.gather(split.test_rows).min()
    assert len(split.train_rows) + len(split.test_rows) == ds.events.height
    assert (split.users >= 0).all(), "temporal test users are users seen in training"
    assert split.exclude_seen is exclude_seen and (split.exclude is None) is (not exclude_seen)
    assert_valid_inside_train(split)
    v = split.valid
    tv = ts.gather(v.train_rows).max()
    assert tv <= ts.gather(split.train_rows).max() - timedelta(days=10) < ts.gather(v.test_rows).min()


def test_include_seen_keeps_repeat_targets_that_exclude_seen_drops() -> None:
    ds = Data("shop", "fusionrec", make_events(n_items=6, seed=1))
    inc = temporal_split(ds, 20, exclude_seen=False)
    exc = temporal_split(ds, 20, exclude_seen=True)
    assert inc.targets.nnz > exc.targets.nnz
    assert target_pairs(exc) < target_pairs(inc)


def test_temporal_needs_timestamps_and_a_window() -> None:
    ds = Data("lists", "s3rec", make_events(timestamps=False), has_timestamps=False)
    with pytest.raises(EvaluationError, match="no timestamps"):
        temporal_split(ds, 7)
    with pytest.raises(EvaluationError, match="test-days"):
        temporal_split(Data("shop", "fusionrec", make_events()), None)


@pytest.mark.parametrize("timestamps", [True, False])
def test_leave_last_out_holds_out_each_users_last_event(timestamps: bool) -> None:
    ds = Data("beauty", "s3rec", make_events(timestamps=timestamps), has_timestamps=timestamps)
    split = leave_last_out_split(ds, exclude_seen=False)
    assert_no_leak(ds, split)
    ev = ds.events.with_row_index("row")
    order = ["timestamp", "seq"] if timestamps else ["seq"]
    ordered = ev.sort(["user_id", *order])
    last = ordered.group_by("user_id", maintain_order=True).agg(pl.col("row").last(), pl.len().alias("n"))
    expected = sorted(last.filter(pl.col("n") >= 3)["row"].to_list())
    assert sorted(split.test_rows.tolist()) == expected
    assert sorted(split.user_ids) == sorted(last.filter(pl.col("n") >= 3)["user_id"].to_list())
    assert (np.diff(split.targets.indptr) == 1).all()
    # the test event is newer than every training event of its user
    rank = ordered.with_columns(pl.int_range(pl.len()).over("user_id").alias("pos"))
    pos = dict(zip(rank["row"].to_list(), rank["pos"].to_list()))
    users = ev["user_id"].to_list()
    newest_train: dict[str, int] = {}
    for r in split.train_rows.tolist():
        newest_train[users[r]] = max(newest_train.get(users[r], -1), pos[r])
    for r in split.test_rows.tolist():
        assert pos[r] > newest_train[users[r]]
    # validation: the second-to-last event, from training rows only
    assert_valid_inside_train(split)
    second = ordered.filter(pl.len().over("user_id") >= 3).group_by("user_id").agg(pl.col("row").get(-2))
    assert sorted(split.valid.test_rows.tolist()) == sorted(second["row"].to_list())


def test_given_split_uses_the_dataset_split_and_keeps_unknown_test_items() -> None:
    ev = make_events(timestamps=False)
    rng = np.random.default_rng(5)
    ev = ev.with_columns(pl.Series("split", np.where(rng.random(ev.height) < 0.25, "test", "train")))
    # an item that only appears in test: a target that can never be recommended (LightGCN convention)
    first_test = int(np.flatnonzero(ev["split"].to_numpy() == "test")[0])
    ev = ev.with_columns(pl.when(pl.int_range(pl.len()) == first_test).then(pl.lit("i_new"))
                         .otherwise(pl.col("item_id")).alias("item_id"))
    ds = Data("gowalla", "lightgcn", ev, has_timestamps=False)
    split = given_split(ds)
    assert_no_leak(ds, split)
    is_test = ev["split"].to_numpy() == "test"
    assert sorted(split.test_rows.tolist()) == np.flatnonzero(is_test).tolist()
    assert "i_new" not in split.train.items and "i_new" in split.target_items
    assert split.target_items.index("i_new") >= split.n_items
    user_new = ev["user_id"][first_test]
    row = split.user_ids.index(user_new)
    assert split.targets[row, split.target_items.index("i_new")] == 1
    assert_valid_inside_train(split)


def test_given_split_with_sessions_queries_with_the_session_prefix() -> None:
    train = make_events(n_users=20, seed=2)
    test = make_events(n_users=10, seed=3).with_columns(
        ("s" + pl.col("user_id")).alias("user_id"), (pl.col("seq") + 10_000).alias("seq"))
    ev = pl.concat([train.with_columns(pl.lit("train").alias("split")),
                    test.with_columns(pl.lit("test").alias("split"))])
    ds = Data("yoochoose", "yoochoose", ev)
    split = given_split(ds, exclude_seen=False)
    assert_no_leak(ds, split)
    assert (split.users == -1).all(), "test sessions are unknown to training"
    # validation: the newest training sessions, queried the same way
    assert_valid_inside_train(split)
    assert (split.valid.users == -1).all() and "sessions starting after" in split.valid.description
    t = test.sort(["user_id", "timestamp", "seq"])
    sessions = t.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    for sid, items in zip(sessions["user_id"].to_list(), sessions["item_id"].to_list()):
        if len(items) < 2:
            assert sid not in split.user_ids
            continue
        r = split.user_ids.index(sid)
        assert {split.target_items.id(c) for c in split.targets[r].indices} == {items[-1]}
        hist = {split.train.items.id(c) for c in split.histories[r].indices}
        assert hist == {i for i in items[:-1] if i in split.train.items}


def test_given_split_with_validation_rows_trains_on_them_and_validates_on_them() -> None:
    ev = make_events()
    rng = np.random.default_rng(7)
    ev = ev.with_columns(pl.Series("split", rng.choice(["train", "valid", "test"], ev.height, p=[.6, .2, .2])))
    ds = Data("rsc", "yoochoose", ev)
    split = given_split(ds)
    assert_no_leak(ds, split)
    labels = ev["split"].to_numpy()
    assert set(labels[split.train_rows]) == {"train", "valid"}
    v = split.valid
    assert set(labels[v.train_rows]) == {"train"} and set(labels[v.test_rows]) == {"valid"}


def test_given_without_a_test_split_is_a_users_mistake() -> None:
    with pytest.raises(EvaluationError, match="no test split"):
        given_split(Data("shop", "fusionrec", make_events()))
    with pytest.raises(EvaluationError, match="unknown protocol"):
        list(make_splits(Data("shop", "fusionrec", make_events()), "random"))


def test_kfold_tests_each_user_once_on_the_newest_fifth() -> None:
    ds = Data("shop", "fusionrec", make_events(n_users=50))
    folds = list(kfold_splits(ds, folds=4, seed=1, exclude_seen=False))
    assert [f.fold for f in folds] == [0, 1, 2, 3]
    ev = ds.events.with_row_index("row")
    ordered = ev.sort(["user_id", "timestamp", "seq"]).with_columns(
        pl.int_range(pl.len()).over("user_id").alias("pos"), pl.len().over("user_id").alias("n"))
    held = ordered.filter((pl.col("n") >= 2) & (pl.col("pos") >= pl.col("n") - pl.max_horizontal(
        (pl.col("n") * 0.2).floor().cast(pl.Int64), pl.lit(1))))
    all_test: list[int] = []
    for split in folds:
        assert_no_leak(ds, split)
        assert_valid_inside_train(split)
        all_test += split.test_rows.tolist()
        test_users = set(ev["user_id"].gather(split.test_rows).to_list())
        # a test user's older events stay in training
        assert test_users <= set(split.train.users.ids())
    assert len(all_test) == len(set(all_test)), "a row is tested in two folds"
    assert sorted(all_test) == sorted(held["row"].to_list())
    with pytest.raises(EvaluationError, match="folds"):
        next(kfold_splits(ds, folds=1))


def test_seen_means_the_target_behaviour_so_carted_items_stay_recommendable() -> None:
    # EHCF-style: purchases are the targets, carts are extra training signal
    ev = pl.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "b", "b"],
        "item_id": ["x", "y", "z", "z", "x", "y", "y"],
        "behavior": ["buy", "cart", "cart", "buy", "buy", "buy", "buy"],
        "seq": np.arange(7, dtype=np.int64),
        "split": ["train", "train", "train", "test", "train", "train", "test"],
    }).with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("timestamp"))
    ds = Data("taobao", "ehcf", ev, has_timestamps=False)
    split = given_split(ds, exclude_seen=True)
    assert_no_leak(ds, split)
    # a's purchase of the carted z is a target, and z is not excluded; b re-bought y: a seen target, dropped
    assert split.user_ids == ["a"]
    items = split.train.items
    assert {split.target_items.id(c) for c in split.targets[0].indices} == {"z"}
    assert {items.id(c) for c in split.exclude[0].indices} == {"x"}
    assert {items.id(c) for c in split.histories[0].indices} == {"x", "y", "z"}
    assert "target behaviour(s) buy" in split.description
    # validation holds out purchases only; carts always stay in training
    assert_valid_inside_train(split)
    assert set(ev["behavior"].gather(split.valid.test_rows).to_list()) == {"buy"}
