"""Driver side: Spark's compact results (per item, per user, per pair, top-N lists, factors) turned into
the embedded path's objects and arrays, so the artefact is byte-for-byte the embedded format.

Item features and popularity come from the embedded classes' own builders (`ItemFeatures.from_counts`,
`popularity_arrays`) fed with Spark's aggregates; tests/test_spark_equivalence.py checks that both agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates.popularity import _normalised
from fusionrec.data.interactions import ITEM_IDX
from fusionrec.features.tables import USER_FEATURES, ItemFeatures, UserFeatures, recent_items

__all__ = ["normalised", "csr_from_triples", "item_features", "user_features",
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


def item_features(n: int, agg: dict[str, np.ndarray], now: float, catalogue: pl.DataFrame | None) -> ItemFeatures:
    """`ItemFeatures.build` from per-item aggregates (item_idx, n, n1, n7, n30, views, carts, buys, first_t)."""
    idx = agg[ITEM_IDX]
    timed = np.isfinite(now)
    return ItemFeatures.from_counts(
        count=dense(n, idx, agg["n"]),
        windows=[dense(n, idx, agg[f"n{days}"]) if timed else np.zeros(n) for days in (1, 7, 30)],
        views=dense(n, idx, agg["views"]), carts=dense(n, idx, agg["carts"]), buys=dense(n, idx, agg["buys"]),
        first_seen=dense(n, idx, agg["first_t"], fill=np.nan) if timed else np.full(n, np.nan), now=now,
        catalogue=catalogue)


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
        # the pairs' last event times order the recent items (the embedded engine orders by the log,
        # which breaks ties in time by file order; here pairs seen in the same second tie arbitrarily)
        recent = recent_items(pair_rows, items, np.asarray(pairs["t_last"], np.float64), n_rows, n_items)
    else:
        out[:, 1] = -1.0
        ls = sp.csr_matrix((n_rows, n_items), dtype=np.float32)
        recent = sp.csr_matrix((n_rows, n_items), dtype=np.float32)  # no times: sessions are whole histories
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
    return UserFeatures(values=out, views=views, favs=favs, carts=carts, buys=buys, last_seen=ls, now=now,
                        recent=recent)
