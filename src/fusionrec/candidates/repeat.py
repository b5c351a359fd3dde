"""Repeat: the user's own items, by behaviour weight and recency ("recently viewed", "buy it again").

In e-commerce logs most next interactions are re-views and re-purchases; where the protocol lets
seen items count, this is the strongest single signal, and the fusion ranker learns when to use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from fusionrec.candidates.base import CandidateGenerator
from fusionrec.candidates.popularity import apply_fallback, popularity_fallback
from fusionrec.data.interactions import Interactions, min_per_pair

__all__ = ["Repeat", "repeat_decay"]


def repeat_decay(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life), floored so that a very old item keeps a tiny weight instead of underflowing
    to 0, which would read as "no known age"."""
    return np.maximum(np.power(0.5, age_days / half_life_days), 1e-30).astype(np.float32)


class Repeat(CandidateGenerator):
    """Scores = the history row; for known users, each item's weight decays with the age of its last event."""

    name: ClassVar[str] = "repeat"

    @dataclass(frozen=True)
    class Config:
        #: half-life of an item's weight in days since the user's last event on it (None: no decay)
        half_life_days: float | None = 2.0

    decay_: sp.csr_matrix  # float32 [n_users, n_items]: 0.5 ** (age / half-life) of the last event per pair
    fallback_: np.ndarray

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _fit(self, data: Interactions) -> None:
        self.fallback_ = popularity_fallback(data) * 1e-3  # below any real history item
        if self.cfg.half_life_days and data.has_time:
            ev = data.events
            t = ev["t"].to_numpy()
            age = np.nan_to_num((data.now() - t) / 86400.0, nan=0.0)
            last = min_per_pair(ev["user_idx"].to_numpy(), ev["item_idx"].to_numpy(), age, data.n_users, data.n_items)
            last.data = repeat_decay(last.data, self.cfg.half_life_days)
            self.decay_ = last
        else:
            self.decay_ = sp.csr_matrix((data.n_users, data.n_items), dtype=np.float32)

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        users = np.asarray(users, np.int64)
        h = self._histories(histories, len(users)).astype(np.float32)
        known = (users >= 0) & (users < self.decay_.shape[0])
        if self.decay_.nnz and known.any():
            rows = np.flatnonzero(known)
            pick = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, users[known])),
                                 shape=(len(users), self.decay_.shape[0]))
            mask = (h != 0).astype(np.float32)
            d = sp.csr_matrix((pick @ self.decay_)[:, : h.shape[1]]).multiply(mask).tocsr()
            # history items with a known age decay; unknown users' items and items added live keep weight 1
            factor = mask - (d != 0).astype(np.float32) + d
            h = sp.csr_matrix(h.multiply(factor))
        s = h.toarray()
        empty = np.diff(h.indptr) == 0
        s = s + self.fallback_[None, : s.shape[1]]
        return apply_fallback(s.astype(np.float32), empty, self.fallback_)

    def _state(self) -> dict[str, Any]:
        return {"decay": self.decay_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.decay_ = sp.csr_matrix(arrays["decay"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
