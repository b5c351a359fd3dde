"""Driver side: Spark's compact results (per item, per user, per pair, top-N lists, factors) turned into
the embedded path's objects and arrays, so the artefact is byte-for-byte the embedded format.

The catalogue parts repeat `features.tables` and `candidates.popularity` line for line (they work on
the catalogue, O(items), never on events); tests/test_spark_equivalence.py checks that both agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates.popularity import _normalised
from fusionrec.data.interactions import ITEM_IDX
from fusionrec.features.tables import ITEM_FEATURES, USER_FEATURES, ItemFeatures, UserFeatures, _codes

__all__ = ["normalised", "csr_from_triples", "popularity_state", "item_features", "user_features",
           "conform_catalogue"]

_DAY = 86400.0


def normalised(counts: np.ndarray) -> np.ndarray:
    """Scaled so the top value is 1 (float32): the popularity generator's own scaling."""
    return _normalised(counts)


def dense(n: int, index: np.ndarray, values: np.ndarray, fill: float = 0.0, dtype: Any = np.float64) -> np.ndarray:
    out = np.full(n, fill, dtype)
    if len(index):
        out[np.asarray(index, np.int64)] = values
    return out


def csr_from_triples(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR float32 with sorted indices from (row, col, value) triples (no duplicates expected)."""
    m = sp.csr_matrix((np.asarray(vals, np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                      shape=shape, dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return m


def conform_catalogue(items: pl.DataFrame) -> pl.DataFrame:
    """The catalogue as the DuckDB store returns it: one row per item_id, price a double, available a bool."""
    df = items.unique(S.ITEM_ID, keep="first", maintain_order=True).filter(pl.col(S.ITEM_ID).is_not_null())
    if S.PRICE in df.columns:
        df = df.with_columns(pl.col(S.PRICE).cast(pl.Float64, strict=False))
    if S.AVAILABLE in df.columns:
        low = pl.col(S.AVAILABLE).cast(pl.Utf8).str.strip_chars().str.to_lowercase()
        df = df.with_columns(pl.when(low.is_in(["true", "t", "1", "yes", "y", "on"])).then(True)
                             .when(low.is_in(["false", "f", "0", "no", "n", "off"])).then(False)
                             .otherwise(None).alias(S.AVAILABLE))
    return df.sort(S.ITEM_ID)


def popularity_state(counts: np.ndarray, catalogue: pl.DataFrame | None, n_items: int) -> dict[str, Any]:
    """The saved arrays of `Popularity` from its per-item counts and the aligned catalogue."""
    state: dict[str, Any] = {"popularity": normalised(counts), "item_category": np.empty(0, np.int64),
                             "categories": np.empty(0, dtype="<U1"), "category_popularity": np.empty(0, np.float32)}
    cat = catalogue
    if cat is not None and S.CATEGORY in cat.columns and ITEM_IDX in cat.columns:
        col = cat[S.CATEGORY].cast(pl.Utf8)
        names = sorted(set(col.drop_nulls().to_list()) - {""})
        if names:
            lookup = {name: code for code, name in enumerate(names)}
            codes = np.full(n_items, -1, np.int64)
            idx = cat[ITEM_IDX].to_numpy()
            inside = (idx >= 0) & (idx < n_items)
            codes[idx[inside]] = np.fromiter((lookup.get(c, -1) if c else -1 for c in col.to_list()),
                                             np.int64, count=len(col))[inside]
            top = np.zeros(len(names) + 1)
            key = np.where(codes >= 0, codes, len(names))
            np.maximum.at(top, key, counts)
            denom = top[key]
            state.update({"item_category": codes, "categories": np.asarray(names, dtype=str),
                          "category_popularity": np.where(denom > 0, counts / np.maximum(denom, 1e-12), 0.0)
                          .astype(np.float32)})
    return state


def item_features(n: int, agg: dict[str, np.ndarray], now: float, catalogue: pl.DataFrame | None) -> ItemFeatures:
    """`ItemFeatures.build` from per-item aggregates (item_idx, n, n1, n7, n30, views, carts, buys, first_t)."""
    idx = agg[ITEM_IDX]
    count = dense(n, idx, agg["n"])
    out = np.zeros((n, len(ITEM_FEATURES)), np.float32)
    out[:, 0] = np.log1p(count)
    windows = []
    for j, days in enumerate((1, 7, 30), start=1):
        w = dense(n, idx, agg[f"n{days}"]) if np.isfinite(now) else np.zeros(n)
        windows.append(w)
        out[:, j] = np.log1p(w)
    out[:, 4] = (windows[1] / 7.0 + 0.1) / (windows[2] / 30.0 + 0.1)
    views, carts, buys = dense(n, idx, agg["views"]), dense(n, idx, agg["carts"]), dense(n, idx, agg["buys"])
    out[:, 5] = (carts + 0.1) / (views + 1.0)
    out[:, 6] = (buys + 0.05) / (views + 1.0)
    price = np.full(n, np.nan)
    category = np.full(n, -1, np.int64)
    brand = np.full(n, -1, np.int64)
    available = np.ones(n, bool)
    consumable = np.zeros(n, bool)
    cat_names: list[str] = []
    brand_names: list[str] = []
    cat = catalogue
    if cat is not None:
        ci = cat[ITEM_IDX].to_numpy()
        if S.PRICE in cat.columns:
            price[ci] = cat[S.PRICE].cast(pl.Float64, strict=False).fill_null(float("nan")).to_numpy()
        if S.CATEGORY in cat.columns:
            codes, cat_names = _codes(cat[S.CATEGORY].cast(pl.Utf8))
            category[ci] = codes
        if S.BRAND in cat.columns:
            codes, brand_names = _codes(cat[S.BRAND].cast(pl.Utf8))
            brand[ci] = codes
        if S.AVAILABLE in cat.columns:
            av = cat[S.AVAILABLE].cast(pl.Utf8).str.to_lowercase()
            available[ci] = ~av.is_in(["false", "0", "no"]).fill_null(False).to_numpy()
        if S.ATTRIBUTES in cat.columns:
            attrs = cat[S.ATTRIBUTES].cast(pl.Utf8)
            consumable[ci] = attrs.str.contains('"consumable": ?true').fill_null(False).to_numpy()
    out[:, 7] = np.nan_to_num(price, nan=-1.0)
    rel = np.full(n, np.nan)
    known = ~np.isnan(price)
    if known.any():
        key = np.where(category >= 0, category, -1)
        frame = pl.DataFrame({"c": key[known], "p": price[known]})
        med = dict(frame.group_by("c").agg(pl.col("p").median()).iter_rows())
        medians = np.asarray([med.get(int(c), np.nan) for c in range(-1, max(len(cat_names), 0))])
        rel[known] = price[known] / np.maximum(medians[key[known] + 1], 1e-6)
    out[:, 8] = np.nan_to_num(rel, nan=-1.0)
    out[:, 9] = category
    out[:, 10] = brand
    if np.isfinite(now):
        first = dense(n, idx, agg["first_t"], fill=np.nan)
        out[:, 11] = np.nan_to_num((now - first) / _DAY, nan=-1.0)
    else:
        out[:, 11] = -1.0
    return ItemFeatures(values=out, category=category, brand=brand, price=price, available=available,
                        consumable=consumable, category_names=cat_names, brand_names=brand_names)


def user_features(n_rows: int, n_items: int, agg: dict[str, np.ndarray], rows: np.ndarray,
                  pairs: dict[str, np.ndarray], pair_rows: np.ndarray, now: float) -> UserFeatures:
    """`UserFeatures.build` from per-user aggregates and the pair table; `rows`/`pair_rows` are the
    (possibly remapped) row indices of `agg` and `pairs`."""
    total = dense(n_rows, rows, agg["n"])
    out = np.zeros((n_rows, len(USER_FEATURES)), np.float32)
    out[:, 0] = np.log1p(total)
    items = np.asarray(pairs[ITEM_IDX], np.int64)

    def counts(col: str) -> sp.csr_matrix:
        v = np.asarray(pairs[col], np.float32)
        keep = v > 0
        return csr_from_triples(pair_rows[keep], items[keep], v[keep], (n_rows, n_items))

    views, favs, carts, buys = counts("n_view"), counts("n_fav"), counts("n_cart"), counts("n_buy")
    if np.isfinite(now):
        last = dense(n_rows, rows, agg["last_t"], fill=np.nan)
        out[:, 1] = np.nan_to_num((now - last) / _DAY, nan=-1.0)
        age = np.nan_to_num((now - np.asarray(pairs["t_last"], np.float64)) / _DAY, nan=0.0) + 1.0
        ls = csr_from_triples(pair_rows, items, age, (n_rows, n_items))
    else:
        out[:, 1] = -1.0
        ls = sp.csr_matrix((n_rows, n_items), dtype=np.float32)
    safe = np.maximum(total, 1.0)
    out[:, 2] = dense(n_rows, rows, agg["views"]) / safe
    out[:, 3] = dense(n_rows, rows, agg["favs"]) / safe
    out[:, 4] = dense(n_rows, rows, agg["carts"]) / safe
    out[:, 5] = dense(n_rows, rows, agg["buys"]) / safe
    out[:, 6] = dense(n_rows, rows, agg["n_cat"])
    med = np.asarray(agg["price_median"], np.float64)
    band = np.full(n_rows, -1.0, np.float32)
    ok = ~np.isnan(med)
    band[np.asarray(rows, np.int64)[ok]] = med[ok]
    out[:, 7] = band
    return UserFeatures(values=out, views=views, favs=favs, carts=carts, buys=buys, last_seen=ls, now=now)
