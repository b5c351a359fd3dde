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
from fusionrec.data.interactions import Interactions, decayed_histories, last_event_decay

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
        self.fallback_ = popularity_fallback(data) * 1e-3  # below any real history item
        self.decay_ = last_event_decay(data, self.cfg.half_life_days)

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        h = self._histories(histories, len(users)).astype(np.float32)
        h = decayed_histories(h, users, self.decay_)
        s = h.toarray()
        empty = np.diff(h.indptr) == 0
        s = s + self.fallback_[None, : s.shape[1]]
        return apply_fallback(s.astype(np.float32), empty, self.fallback_)

    def _state(self) -> dict[str, Any]:
        return {"decay": self.decay_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.decay_ = sp.csr_matrix(arrays["decay"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
