"""The synthetic shop: schema, determinism, funnel integrity and the structure models should find."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.data.synthetic import Shop, ShopConfig, generate_shop, write_shop

CONFIG = ShopConfig(n_users=1_500, n_items=400, n_events=60_000, seed=3)


@pytest.fixture(scope="module")
def shop() -> Shop:
    return generate_shop(CONFIG)


@pytest.fixture(scope="module")
def events(shop: Shop) -> pl.DataFrame:
    """Events with the item's category, top category and consumable flag, bots marked."""
    items = shop.items.select(
        S.ITEM_ID, S.CATEGORY, S.AVAILABLE,
        pl.col(S.CATEGORY).str.split("/").list.first().alias("top"),
        (pl.col(S.ATTRIBUTES).str.json_path_match("$.consumable") == "true").alias("consumable"),
    )
    bots = shop.users.filter(pl.col(S.ATTRIBUTES).str.contains('"bot": true'))[S.USER_ID]
    return shop.events.join(items, on=S.ITEM_ID, how="left").with_columns(
        pl.col(S.USER_ID).is_in(bots.implode()).alias("bot")
    )


@pytest.fixture(scope="module")
def humans(events: pl.DataFrame) -> pl.DataFrame:
    return events.filter(~pl.col("bot"))


def test_frames_have_the_schema_columns_and_dtypes(shop: Shop) -> None:
    assert shop.events.schema == pl.Schema({
        S.USER_ID: pl.String, S.ITEM_ID: pl.String, S.BEHAVIOR: pl.String,
        S.TIMESTAMP: pl.Datetime("us", "UTC"), S.SESSION_ID: pl.String, S.QUANTITY: pl.Int32,
        S.PRICE: pl.Float64,
    })
    assert tuple(shop.items.columns) == S.ITEM_COLUMNS
    assert shop.items.schema[S.PRICE] == pl.Float64 and shop.items.schema[S.AVAILABLE] == pl.Boolean
    assert tuple(shop.users.columns) == S.USER_COLUMNS
    assert shop.events.null_count().row(0) == (0,) * shop.events.width
    assert set(shop.events[S.BEHAVIOR].unique()) == {"view", "fav", "cart", "buy"}


def test_ids_are_formatted_and_known(shop: Shop) -> None:
    assert shop.users.height == CONFIG.n_users and shop.items.height == CONFIG.n_items
    assert shop.users[S.USER_ID].str.contains(r"^u\d{6}$").all()
    assert shop.items[S.ITEM_ID].str.contains(r"^i\d{5}$").all()
    assert shop.items[S.ITEM_ID].is_unique().all() and shop.users[S.USER_ID].is_unique().all()
    assert shop.events[S.USER_ID].is_in(shop.users[S.USER_ID].implode()).all()
    assert shop.events[S.ITEM_ID].is_in(shop.items[S.ITEM_ID].implode()).all()
    assert shop.events[S.SESSION_ID].str.contains(r"^s\d{6,}$").all()


def test_exact_count_sorted_and_inside_the_window(shop: Shop) -> None:
    ts = shop.events[S.TIMESTAMP]
    assert shop.events.height == CONFIG.n_events
    assert ts.is_sorted()
    start = datetime(2026, 1, 5, tzinfo=UTC)
    assert ts.min() >= start and ts.max() < start + timedelta(days=CONFIG.n_days)


def test_same_seed_same_shop_other_seed_other_shop() -> None:
    cfg = ShopConfig(n_users=300, n_items=120, n_events=5_000, seed=11)
    a, b = generate_shop(cfg), generate_shop(cfg)
    assert a.events.equals(b.events) and a.items.equals(b.items) and a.users.equals(b.users)
    c = generate_shop(ShopConfig(n_users=300, n_items=120, n_events=5_000, seed=12))
    assert c.events.height == a.events.height
    assert not c.events.equals(a.events) and not c.items.equals(a.items)


def test_every_cart_and_buy_follows_a_view_of_the_item_in_the_same_session(shop: Shop) -> None:
    keys = [S.USER_ID, S.SESSION_ID, S.ITEM_ID]
    first_view = (shop.events.filter(pl.col(S.BEHAVIOR) == "view")
                  .group_by(keys).agg(pl.col(S.TIMESTAMP).min().alias("viewed")))
    converted = shop.events.filter(pl.col(S.BEHAVIOR).is_in(["fav", "cart", "buy"]))
    joined = converted.join(first_view, on=keys, how="left")
    assert joined["viewed"].null_count() == 0
    assert (joined["viewed"] < joined[S.TIMESTAMP]).all()
    # buys also follow a cart of the same item in the session
    first_cart = (shop.events.filter(pl.col(S.BEHAVIOR) == "cart")
                  .group_by(keys).agg(pl.col(S.TIMESTAMP).min().alias("carted")))
    buys = shop.events.filter(pl.col(S.BEHAVIOR) == "buy").join(first_cart, on=keys, how="left")
    assert buys["carted"].null_count() == 0 and (buys["carted"] < buys[S.TIMESTAMP]).all()


def test_funnel_rates_are_realistic(humans: pl.DataFrame) -> None:
    n = humans[S.BEHAVIOR].value_counts().to_dict(as_series=False)
    count = dict(zip(n[S.BEHAVIOR], n["count"]))
    assert 0.04 <= count["cart"] / count["view"] <= 0.12
    assert 0.30 <= count["buy"] / count["cart"] <= 0.55
    assert 0.01 <= count["fav"] / count["view"] <= 0.06


def test_sessions_last_minutes_and_are_hours_apart(humans: pl.DataFrame) -> None:
    sessions = humans.group_by(S.SESSION_ID).agg(
        pl.col(S.USER_ID).first(), pl.col(S.TIMESTAMP).min().alias("begin"), pl.col(S.TIMESTAMP).max().alias("end"),
        pl.col(S.USER_ID).n_unique().alias("users"),
    )
    assert (sessions["users"] == 1).all()
    length = (sessions["end"] - sessions["begin"]).dt.total_seconds()
    assert length.median() < 15 * 60 and length.max() < 3 * 3600
    gaps = (sessions.sort(S.USER_ID, "begin")
            .with_columns((pl.col("begin") - pl.col("end").shift(1).over(S.USER_ID)).dt.total_hours().alias("gap"))
            ["gap"].drop_nulls())
    assert gaps.median() >= 12
    assert (gaps < 0).mean() < 0.01  # only a repeat purchase can land inside a browsing session


def test_popularity_has_a_long_tail(humans: pl.DataFrame) -> None:
    views = humans.filter(pl.col(S.BEHAVIOR) == "view")[S.ITEM_ID].value_counts(sort=True)["count"].to_numpy()
    top = views[: CONFIG.n_items // 10].sum() / views.sum()
    assert top >= 0.35  # small catalogue; the 2,000-item default gives about 0.55
    assert views[0] >= 10 * np.median(views)


def test_later_purchases_follow_earlier_category_preferences(humans: pl.DataFrame) -> None:
    # a user's most browsed subcategory in the first half predicts their second-half purchases
    mid = humans[S.TIMESTAMP].min() + (humans[S.TIMESTAMP].max() - humans[S.TIMESTAMP].min()) / 2
    first = humans.filter(pl.col(S.TIMESTAMP) < mid)
    favourite = (first.group_by(S.USER_ID, S.CATEGORY).len().sort("len", S.CATEGORY, descending=True)
                 .group_by(S.USER_ID).first().select(S.USER_ID, pl.col(S.CATEGORY).alias("favourite")))
    later = humans.filter((pl.col(S.TIMESTAMP) >= mid) & (pl.col(S.BEHAVIOR) == "buy"))
    share = later[S.CATEGORY].value_counts(normalize=True).rename({S.CATEGORY: "favourite"})
    joined = later.join(favourite, on=S.USER_ID).join(share, on="favourite")
    hit = (joined[S.CATEGORY] == joined["favourite"]).mean()
    chance = joined["proportion"].mean()
    assert joined.height > 300
    assert hit > 4 * chance and hit > 0.15


def test_collaborative_model_beats_popularity(humans: pl.DataFrame) -> None:
    cut = humans[S.TIMESTAMP].max() - timedelta(days=14)
    train = humans.filter(pl.col(S.TIMESTAMP) < cut)
    test = humans.filter((pl.col(S.TIMESTAMP) >= cut) & pl.col(S.BEHAVIOR).is_in(["cart", "buy"]))
    users = {u: i for i, u in enumerate(train[S.USER_ID].unique().sort())}
    items = {v: i for i, v in enumerate(humans[S.ITEM_ID].unique().sort())}
    x = sp.csr_matrix((np.ones(train.height), (train[S.USER_ID].replace_strict(users).to_numpy(),
                                                train[S.ITEM_ID].replace_strict(items).to_numpy())),
                      shape=(len(users), len(items)))
    x.sum_duplicates()
    x.data = np.log1p(x.data)
    truth = (test.filter(pl.col(S.USER_ID).is_in(list(users))).group_by(S.USER_ID)
             .agg(pl.col(S.ITEM_ID).replace_strict(items).unique()))
    rows = truth[S.USER_ID].replace_strict(users).to_numpy()
    norm = x.multiply(1.0 / np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel() + 1e-9)).tocsc()
    sim = (norm.T @ norm).toarray()
    np.fill_diagonal(sim, 0.0)
    popularity = np.asarray((x > 0).sum(axis=0)).ravel().astype(float)
    knn = np.asarray(x[rows] @ sim) + 1e-6 * popularity

    def hit_rate(scores: np.ndarray) -> float:
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        return float(np.mean([len(set(t) & set(want)) > 0 for t, want in zip(top, truth[S.ITEM_ID])]))

    pop_hr = hit_rate(np.tile(popularity, (len(rows), 1)))
    knn_hr = hit_rate(knn)
    assert len(rows) > 200
    assert knn_hr > 2.0 * pop_hr and knn_hr > 0.15


def test_consumables_are_bought_again_and_durables_rarely(humans: pl.DataFrame) -> None:
    buys = humans.filter(pl.col(S.BEHAVIOR) == "buy")
    pairs = buys.group_by(S.USER_ID, S.ITEM_ID, "consumable").agg(
        pl.col(S.SESSION_ID).n_unique().alias("sessions"), pl.col(S.TIMESTAMP).sort().diff().min().alias("gap"))
    consumable = pairs.filter(pl.col("consumable"))
    durable = pairs.filter(~pl.col("consumable"))
    repeat = (consumable["sessions"] > 1).mean()
    assert consumable.height > 100 and repeat > 0.2
    assert (durable["sessions"] > 1).mean() < repeat / 3
    # repeat purchases come weeks apart, not minutes
    assert consumable.filter(pl.col("sessions") > 1)["gap"].dt.total_days().median() >= 5


def test_new_arrivals_start_selling_after_launch(shop: Shop, humans: pl.DataFrame) -> None:
    launched = shop.items.select(
        S.ITEM_ID, pl.col(S.ATTRIBUTES).str.json_path_match("$.launch_date").str.to_date().alias("launch"))
    launched = launched.filter(pl.col("launch").is_not_null())
    assert launched.height > 5
    joined = shop.events.join(launched, on=S.ITEM_ID)
    assert joined.height > 0
    assert (joined[S.TIMESTAMP].dt.date() >= joined["launch"]).all()


def test_out_of_stock_items_stop_selling(shop: Shop, events: pl.DataFrame) -> None:
    share = 1.0 - shop.items[S.AVAILABLE].mean()
    assert 0.005 <= share <= 0.08
    end = events[S.TIMESTAMP].max()
    late = events.filter((pl.col(S.TIMESTAMP) > end - timedelta(days=2)) & ~pl.col(S.AVAILABLE))
    assert late.filter(pl.col(S.BEHAVIOR).is_in(["cart", "buy"])).height == 0


def test_demand_drifts_over_the_weeks() -> None:
    def shift(drift: float) -> float:
        shop = generate_shop(ShopConfig(n_users=1_500, n_items=400, n_events=60_000, seed=3, drift=drift))
        e = shop.events.join(shop.items.select(S.ITEM_ID, S.CATEGORY), on=S.ITEM_ID).with_columns(
            pl.col(S.CATEGORY).str.split("/").list.first().alias("top"),
            ((pl.col(S.TIMESTAMP) - pl.col(S.TIMESTAMP).min()).dt.total_days() // 14).alias("fortnight"))
        early = e.filter(pl.col("fortnight") == 0)["top"].value_counts(normalize=True)
        late = e.filter(pl.col("fortnight") == 3)["top"].value_counts(normalize=True)
        both = early.join(late, on="top", how="full", coalesce=True).fill_null(0.0)
        return 0.5 * float(np.abs(both["proportion"] - both["proportion_right"]).sum())

    drifting, stationary = shift(1.0), shift(0.0)
    assert drifting > 0.09 and drifting > stationary + 0.05


def test_bots_are_few_and_hyperactive(events: pl.DataFrame, shop: Shop) -> None:
    bots = events.filter(pl.col("bot"))
    n_bots = bots[S.USER_ID].n_unique()
    assert 1 <= n_bots <= 0.005 * CONFIG.n_users
    per_user = events.group_by(S.USER_ID, "bot").len()
    human_median = per_user.filter(~pl.col("bot"))["len"].median()
    assert per_user.filter(pl.col("bot"))["len"].min() > 10 * human_median
    gaps = bots.sort(S.USER_ID, S.TIMESTAMP).select(
        pl.col(S.TIMESTAMP).diff().over(S.SESSION_ID).dt.total_seconds().alias("gap"))["gap"].drop_nulls()
    assert gaps.median() <= 3


def test_catalogue_is_a_category_tree_with_brands_prices_and_titles(shop: Shop) -> None:
    items = shop.items.with_columns(pl.col(S.CATEGORY).str.split("/").list.first().alias("top"))
    assert items[S.CATEGORY].str.contains(r"^[a-z-]+/[a-z-]+$").all()
    assert items["top"].n_unique() == 8
    assert items.group_by("top").agg(pl.col(S.CATEGORY).n_unique())[S.CATEGORY].min() >= 4
    assert items.group_by(S.BRAND).agg(pl.col("top").n_unique())["top"].max() == 1  # brands tied to a top
    assert (items[S.PRICE] > 0).all()
    medians = items.group_by(S.CATEGORY).agg(pl.col(S.PRICE).median())[S.PRICE]
    assert medians.max() > 20 * medians.min()
    assert all(t.startswith(b) for t, b in zip(items[S.TITLE], items[S.BRAND]))
    assert (items[S.TEXT].str.len_chars() > items[S.TITLE].str.len_chars()).all()
    attributes = [json.loads(a) for a in items[S.ATTRIBUTES]]
    assert all({"consumable", "refill_days", "launch_date"} <= a.keys() for a in attributes)
    assert 0.05 < np.mean([a["consumable"] for a in attributes]) < 0.6
    users = [json.loads(a) for a in shop.users[S.ATTRIBUTES]]
    assert all({"segment", "price_sensitivity", "bot"} <= a.keys() for a in users)


def test_progress_is_reported_up_to_n_events() -> None:
    seen: list[int] = []
    generate_shop(ShopConfig(n_users=300, n_items=120, n_events=5_000, seed=1), progress=seen.append)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 5_000


def test_write_shop_csv_has_iso_timestamps_and_reads_back(shop: Shop, tmp_path: Path) -> None:
    paths = write_shop(shop, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {"events": "events.csv", "items": "items.csv",
                                                     "users": "users.csv"}
    lines = paths["events"].read_text().splitlines()
    assert lines[0].split(",") == list(shop.events.columns)
    assert len(lines) == CONFIG.n_events + 1
    stamp = lines[1].split(",")[3]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", stamp)
    back = pl.read_csv(paths["events"], schema_overrides={S.USER_ID: pl.String, S.ITEM_ID: pl.String})
    parsed = back[S.TIMESTAMP].str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC")
    assert parsed.equals(shop.events[S.TIMESTAMP])
    assert back[S.USER_ID].equals(shop.events[S.USER_ID]) and back[S.PRICE].equals(shop.events[S.PRICE])
    items = pl.read_csv(paths["items"])
    assert items.columns == shop.items.columns and items[S.ATTRIBUTES].equals(shop.items[S.ATTRIBUTES])
    assert pl.read_csv(paths["users"]).equals(shop.users)


def test_write_shop_parquet_round_trips(shop: Shop, tmp_path: Path) -> None:
    paths = write_shop(shop, tmp_path, parquet=True)
    assert paths["events"].suffix == ".parquet"
    assert pl.read_parquet(paths["events"]).equals(shop.events)
    assert pl.read_parquet(paths["items"]).equals(shop.items)
    assert pl.read_parquet(paths["users"]).equals(shop.users)


@pytest.mark.parametrize("bad, field", [
    ({"bot_share": 0.01}, "bot_share"), ({"start": "5 Jan 2026"}, "start"), ({"n_items": 10}, "n_items"),
])
def test_config_rejects_bad_settings_by_name(bad: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ShopConfig(**bad)  # type: ignore[arg-type]
