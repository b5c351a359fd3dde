"""Every dataset in ../shared/data loads with its adapter and the counts match its README."""

from __future__ import annotations

import pytest

from fusionrec.data.loading import load_dataset
from fusionrec.store.event_store import EventStore

pytestmark = pytest.mark.realdata

# (folder, format, rows in, accepted, users, items, {split: rows}) from each dataset's README
CASES = [
    ("taobao_userbehavior", "taobao", 94_225, 94_186, 927, None, None),
    ("lightgcn_gowalla", "lightgcn", 1_027_370, 1_027_370, 29_858, 40_981, {"train": 810_128, "test": 217_242}),
    ("bars_ultragcn/ml-1m", "lightgcn", 895_699, 895_699, 6_022, None, {"train": 796_244, "test": 99_455}),
    ("bars_ultragcn/amazoncds", "lightgcn", 777_426, 777_426, 43_169, None, {"train": 604_475, "test": 172_951}),
    ("bars_ultragcn/electronics", "lightgcn", 35_931, 35_931, 1_435, None, {"train": 31_887, "test": 4_044}),
    ("ehcf_taobao_multibehavior", "ehcf", 453_518, 453_518, 48_749, None, {"train": 211_022 + 193_747, "test": 48_749}),
    ("amazon_s3rec/Beauty.txt.gz", "s3rec", 198_502, 198_502, 22_363, 12_101, None),
    ("amazon_s3rec", "s3rec", 198_502 + 296_337 + 167_597, None, 22_363 + 35_598 + 19_412, 12_101 + 18_357 + 11_924, None),
    ("amazon_videogames_sasrec", "s3rec", 287_107, None, 31_013, 23_715, None),
    ("movielens_100k", "movielens", 100_000, 100_000, 943, 1_682, None),
    ("yoochoose_rsc15_100k", "yoochoose", 70_278 + 13_568, None, 17_794 + 3_416, None, None),
    ("diginetica_cikm16_partial", "diginetica", 18_025, None, None, 11_244, None),
]


@pytest.mark.parametrize("folder,fmt,rows_in,accepted,users,items,splits", CASES, ids=[c[0] for c in CASES])
def test_dataset_loads_with_readme_counts(shared_data, folder, fmt, rows_in, accepted, users, items, splits):
    ds = load_dataset(shared_data / folder, fmt)
    t = ds.report.total
    assert t.rows_in == rows_in
    assert t.balanced
    if accepted is not None:
        assert t.accepted == accepted
    ev = ds.events
    if users is not None:
        assert ev["user_id"].n_unique() == users
    if items is not None:
        assert ev["item_id"].n_unique() == items
    if splits is not None:
        assert dict(ev["split"].value_counts().rows()) == splits
    assert ds.has_timestamps == (fmt in ("taobao", "movielens", "yoochoose", "diginetica"))


def test_taobao_out_of_range_rows_are_quarantined(shared_data):
    store = EventStore(":memory:")
    report = store.ingest([shared_data / "taobao_userbehavior"], "taobao")
    assert report.total.rejected == 39 and report.total.reasons == {"timestamp out of range": 39}
    q = store.quarantine()
    assert q.height == 39 and (q["line"] > 0).all()
    per = store.stats()["behaviors"]
    assert per["view"] + per["cart"] + per["fav"] + per["buy"] == 94_186
    assert store.count("items") == 61_168  # item -> category comes from the log itself


def test_order_is_kept_without_timestamps(shared_data):
    ds = load_dataset(shared_data / "amazon_s3rec" / "Beauty.txt.gz", "s3rec")
    first = ds.events.filter(ds.events["user_id"] == "1").sort("seq")["item_id"].to_list()
    assert first == ["1", "2", "3", "4", "5"]  # the README's first line: 1 1 2 3 4 5
    assert ds.items is not None and ds.items.height == 12_101


def test_loading_twice_into_a_store_adds_nothing(shared_data, tmp_path):
    store = EventStore(tmp_path / "s.duckdb")
    first = store.ingest([shared_data / "movielens_100k"], "movielens").total
    second = store.ingest([shared_data / "movielens_100k"], "movielens").total
    assert first.accepted == 100_000 and second.accepted == 0 and second.duplicates == 100_000
    assert store.count("events") == 100_000 and store.count("items") == 1_682 and store.count("users") == 943
