"""Popularity: all-time, trending (time-decayed) and per-category; the fallback of every other generator."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates.base import CandidateGenerator, ScoredItems
from fusionrec.data.interactions import ITEM_IDX, Interactions, decayed_histories, last_event_decay

__all__ = ["Popularity", "Trending", "CategoryPopularity", "popularity_fallback", "apply_fallback",
           "popularity_arrays"]


def _normalised(counts: np.ndarray) -> np.ndarray:
    top = float(counts.max()) if counts.size else 0.0
    out = counts / top if top > 0 else np.zeros_like(counts)
    return np.asarray(out, np.float32)


def popularity_fallback(data: Interactions) -> np.ndarray:
    """Item popularity under the data's weighting, scaled to [0, 1] (float32 [n_items])."""
    return _normalised(np.asarray(data.matrix().sum(axis=0), np.float64).ravel())


def popularity_arrays(counts: np.ndarray, catalogue: pl.DataFrame | None, n_items: int) -> dict[str, Any]:
    """The saved state of `Popularity` from per-item counts and the catalogue (with item_idx): the
    scaled popularity and, where items have categories, each item's category and its popularity
    within it. The Spark engine builds the same arrays from counts it aggregated."""
    state: dict[str, Any] = {"popularity": _normalised(counts), "item_category": np.empty(0, np.int64),
                             "categories": np.empty(0, dtype="<U1"), "category_popularity": np.empty(0, np.float32)}
    cat = catalogue
    if cat is None or S.CATEGORY not in cat.columns or ITEM_IDX not in cat.columns:
        return state
    col = cat[S.CATEGORY].cast(pl.Utf8)
    names = sorted(set(col.drop_nulls().to_list()) - {""})
    if not names:
        return state
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


def apply_fallback(scores: np.ndarray, rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Give the `rows` (a boolean mask) the fallback scores: users with nothing to go on."""
    if rows.any():
        scores[rows] = fallback[None, : scores.shape[1]]
    return scores


class Popularity(CandidateGenerator):
    """Most popular items, the same for everyone unless `category_mix` leans on the user's categories.

    Counts are summed event weights (behaviour weight, and a decay when `half_life_days` is set),
    scaled so the top item scores 1.
    """

    name: ClassVar[str] = "pop"
    history_based: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Config:
        #: None: all-time counts under the data's weighting; a number: every event decays by half per
        #: this many days before the newest event (`Interactions.now()`); data without time ignores it
        half_life_days: float | None = None
        #: 0: global popularity; 1: only "popular in the user's categories" (share of the history in the
        #: item's category x popularity within that category); needs a catalogue with a category column
        category_mix: float = 0.0

        def __post_init__(self) -> None:
            if self.half_life_days is not None and not self.half_life_days > 0:
                raise ValueError(f"half_life_days must be positive or None, got {self.half_life_days}")
            if not 0.0 <= self.category_mix <= 1.0:
                raise ValueError(f"category_mix must lie in [0, 1], got {self.category_mix}")

    popularity_: np.ndarray  # float32 [n_items] in [0, 1]
    item_category_: np.ndarray  # int64 [n_items], -1 unknown; empty without a catalogue category
    categories_: np.ndarray  # str [n_categories]
    category_popularity_: np.ndarray  # float32 [n_items]: popularity / the top of its category

    def __init__(self, cfg: "Popularity.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _fit(self, data: Interactions) -> None:
        if self.cfg.half_life_days is None:
            counts = np.asarray(data.matrix().sum(axis=0), np.float64).ravel()
        else:
            w = data.event_weights(replace(data.weighting, half_life_days=self.cfg.half_life_days))
            counts = np.bincount(data.events[ITEM_IDX].to_numpy(), weights=w, minlength=data.n_items)
        self._load_state(popularity_arrays(counts, data.catalogue, data.n_items))

    @property
    def has_categories(self) -> bool:
        return len(self.categories_) > 0

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        b = len(users)
        scores = np.broadcast_to(self.popularity_, (b, self.n_items_)).copy()
        mix = self.cfg.category_mix
        if mix > 0 and self.has_categories and histories is not None:
            h = self._category_history(users, self._histories(histories, b))
            cat = self.item_category_
            known = cat >= 0
            onehot = sp.csr_matrix((np.ones(known.sum(), np.float32), (np.nonzero(known)[0], cat[known])),
                                   shape=(self.n_items_, len(self.categories_)))
            share = np.asarray((h @ onehot).todense(), np.float32)
            total = share.sum(axis=1, keepdims=True)
            has = total[:, 0] > 0
            share = np.divide(share, total, out=np.zeros_like(share), where=total > 0)
            per_item = np.where(known[None, :], share[:, np.maximum(cat, 0)], 0.0) * self._within_category()
            scores[has] = ((1.0 - mix) * scores[has] + mix * per_item[has]).astype(np.float32)
        return scores

    def _category_history(self, users: np.ndarray, h: sp.csr_matrix) -> sp.csr_matrix:
        """The history rows whose weight per category makes the user's category shares."""
        return h

    def _within_category(self) -> np.ndarray:
        """[n_items] how an item ranks within its category, times its category's share."""
        return self.category_popularity_

    def recommend(self, users: np.ndarray, histories: sp.csr_matrix | None, n: int,
                  exclude: sp.csr_matrix | None = None, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """One query (the online path) with scores the same for everyone (no category mix): walk one
        ranked list instead of scoring every item; excluded items are skipped. Ties are ordered by item
        index here, arbitrarily in the batched path, which is otherwise the same."""
        if len(users) != 1 or (self.cfg.category_mix > 0 and self.has_categories and histories is not None):
            return super().recommend(users, histories, n, exclude=exclude, batch_size=batch_size)
        order = self._ranked()
        b, n = len(users), min(n, self.n_items_)
        if exclude is None or exclude.nnz == 0:
            head = order[:n]
            return np.tile(head, (b, 1)), np.tile(self.popularity_[head], (b, 1))
        ex = exclude.tocoo()
        inside = ex.col < self.n_items_
        rows, cols = ex.row[inside], ex.col[inside]
        m = min(self.n_items_, n + int(np.bincount(rows, minlength=b).max(initial=0)))
        head = order[:m]
        rank = self._rank()[cols]
        hit = np.zeros((b, m), bool)
        hit[rows[rank < m], rank[rank < m]] = True
        pick = np.argsort(hit, axis=1, kind="stable")[:, :n]  # the first n not excluded, in rank order
        items = head[pick]
        scores = self.popularity_[items].astype(np.float32)
        scores[np.take_along_axis(hit, pick, axis=1)] = -np.inf  # a row that excludes nearly everything
        return items.astype(np.int64), scores

    def _ranked(self) -> np.ndarray:
        """Item indices by popularity, best first (ties by index), cached."""
        if getattr(self, "_order", None) is None:
            self._order = np.lexsort((np.arange(self.n_items_), -self.popularity_[: self.n_items_]))
            self._rank_of = np.empty(self.n_items_, np.int64)
            self._rank_of[self._order] = np.arange(self.n_items_)
        return self._order

    def _rank(self) -> np.ndarray:
        self._ranked()
        return self._rank_of

    def popular_in_category(self, category: str, n: int) -> ScoredItems:
        """The n most popular items of a category or of any sub-category below it ("a/b" is under "a")."""
        if not self.has_categories or n <= 0:
            return ScoredItems.empty()
        names = self.categories_.astype(str)
        inside = np.nonzero((names == category) | np.char.startswith(names, category.rstrip("/") + "/"))[0]
        items = np.nonzero(np.isin(self.item_category_, inside))[0]
        if not len(items):
            return ScoredItems.empty()
        vals = self.popularity_[items]
        order = np.lexsort((items, -vals))[:n]
        return ScoredItems(items[order].astype(np.int64), vals[order].astype(np.float32))

    def _state(self) -> dict[str, Any]:
        return {"popularity": self.popularity_, "item_category": self.item_category_,
                "categories": self.categories_.astype(str), "category_popularity": self.category_popularity_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.popularity_ = np.asarray(arrays["popularity"], np.float32)
        self._order = None
        self.item_category_ = np.asarray(arrays["item_category"], np.int64)
        self.categories_ = np.asarray(arrays["categories"]).astype(str)
        self.category_popularity_ = np.asarray(arrays["category_popularity"], np.float32)


class Trending(Popularity):
    """Popularity with a one-week half-life by default: what is selling now, not last year."""

    name: ClassVar[str] = "trending"

    @dataclass(frozen=True)
    class Config(Popularity.Config):
        half_life_days: float | None = 7.0


class CategoryPopularity(Popularity):
    """"Popular in your categories": an item's popularity within its category, weighted by the share of
    the user's history in that category (`category_mix` = 1), with a little global popularity mixed in
    below 1. Users without history, or catalogues without categories, get global popularity."""

    name: ClassVar[str] = "catpop"

    @dataclass(frozen=True)
    class Config(Popularity.Config):
        category_mix: float = 0.9
        #: what an item's popularity counts: "events" (summed event weights, as `pop`) or "users" (each
        #: user once, however often they came back; with `half_life_days`, by the age of their last event):
        #: what many people look at, not what a few viewed dozens of times
        item_count: str = "events"
        #: "top": an item's popularity relative to its category's top item (every category's best scores
        #: 1); "global": as it is, so in two categories of equal share the busier one's items come first
        category_scale: str = "top"
        #: the user's category shares weigh each history item by 0.5 ** (days since the user's last event
        #: on it / this): the categories of this week's visits, not last month's; None: the history as is
        user_half_life_days: float | None = None

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.item_count not in ("events", "users"):
                raise ValueError(f"item_count must be 'events' or 'users', got {self.item_count!r}")
            if self.category_scale not in ("top", "global"):
                raise ValueError(f"category_scale must be 'top' or 'global', got {self.category_scale!r}")
            if self.user_half_life_days is not None and not self.user_half_life_days > 0:
                raise ValueError(f"user_half_life_days must be positive or None, got {self.user_half_life_days}")

    decay_: sp.csr_matrix  # float32 [n_users, n_items]: user_half_life_days decay of the last event per pair

    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        if c.item_count == "users":
            pairs = last_event_decay(data, c.half_life_days) if c.half_life_days and data.has_time else data.matrix() != 0
            counts = np.asarray(pairs.sum(axis=0), np.float64).ravel()
            self._load_state(popularity_arrays(counts, data.catalogue, data.n_items))
        else:
            super()._fit(data)
        self.decay_ = last_event_decay(data, c.user_half_life_days)

    def _category_history(self, users: np.ndarray, h: sp.csr_matrix) -> sp.csr_matrix:
        return decayed_histories(h, users, self.decay_)

    def _within_category(self) -> np.ndarray:
        return self.popularity_ if self.cfg.category_scale == "global" else self.category_popularity_

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "decay": self.decay_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        super()._load_state(arrays)
        # versions saved before user_half_life_days have no decay: their histories count as they are
        self.decay_ = sp.csr_matrix(arrays["decay"], dtype=np.float32) if "decay" in arrays \
            else sp.csr_matrix((0, 0), dtype=np.float32)

