"""The training data every model consumes: an event table with indices and the user x item matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.data.vocabulary import Vocabulary

__all__ = ["Interactions", "InteractionWeighting", "min_per_pair", "repeat_decay", "last_event_decay",
           "decayed_histories"]

USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
WEIGHT = "weight"
TIME = "t"  # float seconds since epoch; NaN where the source has order only


@dataclass(frozen=True)
class InteractionWeighting:
    """How events become matrix values: behaviour weight x time decay, summed per (user, item).

    `half_life_days=None` disables decay; `binary=True` turns every non-zero into 1.
    """

    behavior_weights: Mapping[str, float] = field(default_factory=lambda: dict(S.DEFAULT_BEHAVIOR_WEIGHTS))
    half_life_days: float | None = None
    binary: bool = False


@dataclass
class Interactions:
    """Events of one training set, indexed by its user and item vocabularies.

    `events` has columns user_idx, item_idx, behavior, t (epoch seconds or NaN), seq, and is sorted
    by (user_idx, t, seq): each user's history in order. `items` is the optional catalogue, one row
    per item index (column item_idx), with any of the schema's item columns.
    """

    events: pl.DataFrame
    users: Vocabulary
    items: Vocabulary
    catalogue: pl.DataFrame | None = None
    weighting: InteractionWeighting = field(default_factory=InteractionWeighting)
    _matrix: sp.csr_matrix | None = field(default=None, repr=False)

    #: the columns `from_frame` reads (a store need not load any other)
    FRAME_COLUMNS: ClassVar[tuple[str, ...]] = (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SEQ)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
        catalogue: pl.DataFrame | None = None,
        weighting: InteractionWeighting | None = None,
    ) -> "Interactions":
        """Build from a frame with user_id, item_id, behavior and optional timestamp/seq columns.

        Given vocabularies are extended with unseen ids, so a test set can share train's indices.
        """
        users = users if users is not None else Vocabulary()
        items = items if items is not None else Vocabulary()
        f = frame
        if S.SEQ not in f.columns:
            f = f.with_row_index(S.SEQ)
        if TIME not in f.columns:
            if S.TIMESTAMP in f.columns and f.schema[S.TIMESTAMP] != pl.Null:
                ts = pl.col(S.TIMESTAMP)
                if f.schema[S.TIMESTAMP].is_temporal():
                    ts = ts.dt.epoch("ms").cast(pl.Float64) / 1000.0
                f = f.with_columns(ts.cast(pl.Float64).fill_null(float("nan")).alias(TIME))
            else:
                f = f.with_columns(pl.lit(float("nan")).alias(TIME))
        if S.BEHAVIOR not in f.columns:
            f = f.with_columns(pl.lit("buy").alias(S.BEHAVIOR))
        uids = f[S.USER_ID].cast(pl.Utf8)
        iids = f[S.ITEM_ID].cast(pl.Utf8)
        users.extend(uids.unique(maintain_order=True).to_list())
        items.extend(iids.unique(maintain_order=True).to_list())
        if catalogue is not None and S.ITEM_ID in catalogue.columns:
            # catalogue items without events still get an index: content models can recommend them
            items.extend(catalogue[S.ITEM_ID].cast(pl.Utf8).to_list())
        events = pl.DataFrame(
            {
                USER_IDX: _map_ids(uids, users),
                ITEM_IDX: _map_ids(iids, items),
                S.BEHAVIOR: f[S.BEHAVIOR].cast(pl.Utf8),
                TIME: f[TIME].cast(pl.Float64),
                S.SEQ: f[S.SEQ].cast(pl.Int64),
            }
        ).sort([USER_IDX, TIME, S.SEQ], nulls_last=True)
        cat = None
        if catalogue is not None and S.ITEM_ID in catalogue.columns:
            cat = _align_catalogue(catalogue, items)
        return cls(events=events, users=users, items=items, catalogue=cat,
                   weighting=weighting or InteractionWeighting())

    # -- views --------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_time(self) -> bool:
        return bool(self.events.height) and not bool(self.events[TIME].is_nan().all())

    def now(self) -> float:
        """The reference time for decay: the newest event (epoch seconds), or NaN."""
        if not self.has_time:
            return float("nan")
        return float(self.events[TIME].fill_nan(None).max())  # type: ignore[arg-type]

    def event_weights(self, weighting: InteractionWeighting | None = None, now: float | None = None) -> np.ndarray:
        """Per-event weight: behaviour weight x 0.5 ** (age / half-life)."""
        w = weighting or self.weighting
        bw = w.behavior_weights
        beh = self.events[S.BEHAVIOR]
        weights = beh.replace_strict(dict(bw), default=1.0, return_dtype=pl.Float64).to_numpy().copy()
        if w.half_life_days and self.has_time:
            ref = self.now() if now is None else now
            age_days = (ref - self.events[TIME].to_numpy()) / 86400.0
            decay = np.power(0.5, np.clip(np.nan_to_num(age_days, nan=0.0), 0, None) / w.half_life_days)
            weights *= decay
        return weights

    def matrix(self, weighting: InteractionWeighting | None = None) -> sp.csr_matrix:
        """The user x item CSR matrix (float32), weighted and summed per pair."""
        if weighting is None and self._matrix is not None:
            return self._matrix
        w = weighting or self.weighting
        vals = self.event_weights(w)
        m = sp.csr_matrix(
            (vals.astype(np.float32), (self.events[USER_IDX].to_numpy(), self.events[ITEM_IDX].to_numpy())),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        m.sort_indices()
        if w.binary:
            m.data[:] = 1.0
        if weighting is None:
            self._matrix = m
        return m

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Item indices in history order and the CSR-style offsets per user (length n_users + 1)."""
        items = self.events[ITEM_IDX].to_numpy()
        counts = np.bincount(self.events[USER_IDX].to_numpy(), minlength=self.n_users)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return items, offsets

    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item."""
        m = self.matrix()
        return np.diff(m.tocsc().indptr).astype(np.float64)

    def item_categories(self) -> np.ndarray | None:
        """Category code per item index (-1 unknown), or None without a catalogue category."""
        if self.catalogue is None or S.CATEGORY not in self.catalogue.columns:
            return None
        cats = self.catalogue[S.CATEGORY].cast(pl.Utf8)
        codes = cats.cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(-1).to_numpy()
        return codes

    def subset(self, mask: np.ndarray) -> "Interactions":
        """The same vocabularies, only the events where `mask` is true."""
        return Interactions(events=self.events.filter(pl.Series(mask)), users=self.users, items=self.items,
                            catalogue=self.catalogue, weighting=self.weighting)


def min_per_pair(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_r: int, n_c: int) -> sp.csr_matrix:
    """CSR [n_r, n_c] holding, per (row, col), the minimum value among duplicates (e.g. the newest event's age)."""
    key = rows.astype(np.int64) * n_c + cols
    order = np.lexsort((vals, key))
    k = key[order]
    first = np.ones(len(k), bool)
    first[1:] = k[1:] != k[:-1]
    sel = order[first]
    return sp.csr_matrix((vals[sel].astype(np.float32), (rows[sel], cols[sel])), shape=(n_r, n_c))


def repeat_decay(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life), floored so that a very old item keeps a tiny weight instead of underflowing
    to 0, which would read as "no known age"."""
    return np.maximum(np.power(0.5, age_days / half_life_days), 1e-30).astype(np.float32)


def last_event_decay(data: Interactions, half_life_days: float | None) -> sp.csr_matrix:
    """[n_users, n_items] `repeat_decay` of the age of each user's last event on each item (empty without
    a half-life or timestamps)."""
    if not half_life_days or not data.has_time:
        return sp.csr_matrix((data.n_users, data.n_items), dtype=np.float32)
    ev = data.events
    age = np.nan_to_num((data.now() - ev[TIME].to_numpy()) / 86400.0, nan=0.0)
    last = min_per_pair(ev[USER_IDX].to_numpy(), ev[ITEM_IDX].to_numpy(), age, data.n_users, data.n_items)
    last.data = repeat_decay(last.data, half_life_days)
    return last


def decayed_histories(h: sp.csr_matrix, users: np.ndarray, decay: sp.csr_matrix) -> sp.csr_matrix:
    """History rows with each item's weight times its `decay` for the row's user (known users); items of
    unknown users and items added live (no decay entry) keep their weight."""
    users = np.asarray(users, np.int64)
    known = (users >= 0) & (users < decay.shape[0])
    if not decay.nnz or not known.any():
        return h
    rows = np.flatnonzero(known)
    pick = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, users[known])), shape=(len(users), decay.shape[0]))
    mask = (h != 0).astype(np.float32)
    d = sp.csr_matrix((pick @ decay)[:, : h.shape[1]]).multiply(mask).tocsr()
    factor = mask - (d != 0).astype(np.float32) + d
    return sp.csr_matrix(h.multiply(factor))


def _map_ids(ids: pl.Series, vocab: Vocabulary) -> np.ndarray:
    # vectorised: map unique ids through the dict once, then broadcast with a join-free replace
    uniq = ids.unique()
    mapping = dict(zip(uniq.to_list(), vocab.indices(uniq.to_list()).tolist()))
    return ids.replace_strict(mapping, return_dtype=pl.Int64).to_numpy()


def _align_catalogue(catalogue: pl.DataFrame, items: Vocabulary) -> pl.DataFrame:
    cat = catalogue.with_columns(pl.col(S.ITEM_ID).cast(pl.Utf8)).unique(S.ITEM_ID, keep="last")
    known = cat.filter(pl.col(S.ITEM_ID).is_in(items.ids()))
    index = pl.DataFrame({S.ITEM_ID: items.ids(), ITEM_IDX: np.arange(len(items), dtype=np.int64)})
    return index.join(known, on=S.ITEM_ID, how="left").sort(ITEM_IDX)
