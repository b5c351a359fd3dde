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
from fusionrec.data.interactions import Interactions, InteractionWeighting

__all__ = ["Repeat"]


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
        from fusionrec.features.tables import _min_duplicates

        self.fallback_ = popularity_fallback(data) * 1e-3  # below any real history item
        if self.cfg.half_life_days and data.has_time:
            ev = data.events
            t = ev["t"].to_numpy()
            age = np.nan_to_num((data.now() - t) / 86400.0, nan=0.0)
            last = _min_duplicates(ev["user_idx"].to_numpy(), ev["item_idx"].to_numpy(), age, data.n_users, data.n_items)
            last.data = np.power(0.5, last.data / self.cfg.half_life_days).astype(np.float32)
            self.decay_ = last
        else:
            self.decay_ = sp.csr_matrix((data.n_users, data.n_items), dtype=np.float32)

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        users = np.asarray(users, np.int64)
        h = self._histories(histories, len(users)).astype(np.float32)
        known = (users >= 0) & (users < self.decay_.shape[0])
        if self.decay_.nnz and known.any():
            rows = np.flatnonzero(known)
            d = self.decay_[users[known]]
            # items with a known age decay; items added live (absent from decay_) keep full weight
            live = (h[rows] != 0).astype(np.float32) - (d != 0).astype(np.float32).multiply(h[rows] != 0)
            factor = d + live
            h = h.tolil()
            h[rows] = sp.csr_matrix(h[rows]).multiply(factor)
            h = h.tocsr()
        s = h.toarray()
        empty = np.diff(h.indptr) == 0
        s = s + self.fallback_[None, : s.shape[1]]
        return apply_fallback(s.astype(np.float32), empty, self.fallback_)

    def _state(self) -> dict[str, Any]:
        return {"decay": self.decay_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.decay_ = sp.csr_matrix(arrays["decay"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
