"""User-based k-nearest neighbours: the items of the k users whose histories look most like this one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from fusionrec.candidates._similarity import (
    SIMILARITIES, WEIGHTINGS, pairwise_topk, row_norms_sq, training_matrix, weigh, weighting_stats,
)
from fusionrec.candidates.base import CandidateGenerator
from fusionrec.candidates.popularity import apply_fallback, popularity_fallback
from fusionrec.data.interactions import Interactions

__all__ = ["UserKNN"]


class UserKNN(CandidateGenerator):
    """score(u, i) = sum over u's k nearest training users v of sim(u, v) x r(v, i).

    Neighbours are found from the history row passed to `score`, not looked up from training: a known
    user with live events and a visitor with only a session are served by the same code, and for a
    training user with the training history the answer equals precomputed neighbour lists (the user
    itself is excluded). The fitted state is the (reweighted) training matrix.
    """

    name: ClassVar[str] = "userknn"

    @dataclass(frozen=True)
    class Config:
        #: neighbours per user
        k: int = 50
        #: "cosine", "asymmetric_cosine" (see `alpha`) or "jaccard"
        similarity: str = "cosine"
        alpha: float = 0.5
        #: added to the similarity's denominator: damps users who share few items
        shrink: float = 10.0
        #: reweighting of user rows before similarity, users as documents: none, bm25, tfidf
        weighting: str = "none"
        bm25_k1: float = 1.2
        bm25_b: float = 0.75
        #: time decay of events (None: the data's weighting as it is)
        half_life_days: float | None = None

        def __post_init__(self) -> None:
            if self.k < 1:
                raise ValueError(f"k must be at least 1, got {self.k}")
            if self.similarity not in SIMILARITIES:
                raise ValueError(f"unknown similarity {self.similarity!r}; use one of {', '.join(SIMILARITIES)}")
            if self.weighting not in WEIGHTINGS:
                raise ValueError(f"unknown weighting {self.weighting!r}; use one of {', '.join(WEIGHTINGS)}")
            if self.shrink < 0:
                raise ValueError(f"shrink must be >= 0, got {self.shrink}")

    x_: sp.csr_matrix  # float32 [n_users, n_items], the training matrix neighbours vote with
    idf_: np.ndarray  # float64 [n_items], for reweighting new history rows like training ones
    avg_len_: np.ndarray  # float64 scalar
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "UserKNN.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _fit(self, data: Interactions) -> None:
        self.x_ = sp.csr_matrix(training_matrix(data, self.cfg.half_life_days), dtype=np.float32)
        idf, avg = weighting_stats(self.x_)
        self.idf_, self.avg_len_ = idf, np.asarray(avg)
        self.fallback_ = popularity_fallback(data)
        self._prepare()

    def _prepare(self) -> None:
        c = self.cfg
        xw = weigh(self.x_, c.weighting, self.idf_, float(self.avg_len_), c.bm25_k1, c.bm25_b)
        self._xw_t = xw.T.tocsr()
        self._sq = row_norms_sq(xw)

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        c = self.cfg
        users = np.asarray(users, np.int64)
        h = self._histories(histories, len(users))
        hw = weigh(h, c.weighting, self.idf_, float(self.avg_len_), c.bm25_k1, c.bm25_b)
        self_index = np.where(self._known_users(users), users, -1)
        sims = pairwise_topk(hw, None, c.k, c.similarity, c.alpha, c.shrink, self_index=self_index,
                             b_t=self._xw_t, sq_b=self._sq)
        s = np.asarray((sims @ self.x_).toarray(), np.float32)
        return apply_fallback(s, np.diff(h.indptr) == 0, self.fallback_)

    def _state(self) -> dict[str, Any]:
        return {"x": self.x_, "idf": self.idf_, "avg_len": self.avg_len_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.x_ = sp.csr_matrix(arrays["x"], dtype=np.float32)
        self.idf_ = np.asarray(arrays["idf"], np.float64)
        self.avg_len_ = np.asarray(arrays["avg_len"], np.float64)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
        self._prepare()
