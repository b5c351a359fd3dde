"""RP3beta: a three-step random walk user -> item -> user -> item, penalised by popularity.

Paudel et al., "Updatable, accurate, diverse, and scalable recommendations for interactive
applications" (2016); implemented as in Dacrema et al. (2019), whose tuned RP3beta is among the
strongest top-N baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from fusionrec.candidates._similarity import ItemItemScoring, product_topk, similar_from_row, training_matrix
from fusionrec.candidates.base import CandidateGenerator, ScoredItems
from fusionrec.candidates.popularity import popularity_fallback
from fusionrec.data.interactions import Interactions

__all__ = ["RP3beta", "rp3beta_topk"]


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float64, copy=True)
    sums = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    m.data *= np.repeat(inv, np.diff(m.indptr))
    return m


def rp3beta_topk(x: sp.csr_matrix, alpha: float, beta: float, k: int, items: np.ndarray | None = None,
                 pop: np.ndarray | None = None, row_sums: np.ndarray | None = None,
                 budget: float = 2.0e7) -> sp.csr_matrix:
    """W of the user x item matrix `x`: the k best j per item i of
    (sum_u P(i -> u)^alpha P(u -> j)^alpha) / pop_j^beta, the walk back to i excluded. float32.

    `items` computes only those rows of W (in that order); `pop` (users per item) and `row_sums` (per
    row of x) replace the ones x gives when x holds part of the data (a Spark block of users' capped
    histories); `budget` caps one slice of the product (`product_topk`).
    """
    x = sp.csr_matrix(x, dtype=np.float64)
    sums = np.asarray(x.sum(axis=1)).ravel() if row_sums is None else np.asarray(row_sums, np.float64)
    p_ui = x.copy()
    p_ui.data *= np.repeat(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0), np.diff(x.indptr))
    seen = sp.csr_matrix(x.T, dtype=np.float64)
    seen.data[:] = 1.0
    pop = np.asarray(seen.sum(axis=1)).ravel() if pop is None else np.asarray(pop, np.float64)
    rows = np.arange(x.shape[1]) if items is None else np.asarray(items, np.int64)
    start = np.divide(1.0, pop[rows], out=np.zeros(len(rows)), where=pop[rows] > 0)
    p_iu = sp.csr_matrix(sp.diags(start) @ seen[rows])
    if alpha != 1.0:
        p_ui.data **= alpha
        p_iu.data **= alpha
    penalty = np.divide(1.0, np.power(pop, beta), out=np.zeros_like(pop), where=pop > 0)

    def values(walk: np.ndarray, r: np.ndarray, cols: np.ndarray) -> np.ndarray:
        v = walk * penalty[cols]
        v[rows[r] == cols] = 0.0  # the walk back to where it started says nothing
        return v

    return product_topk(p_iu, p_ui, k, values, budget)


class RP3beta(ItemItemScoring, CandidateGenerator):
    """W[i, j] = (sum_u P(i -> u)^alpha P(u -> j)^alpha) / pop_j^beta, the top-k j kept per item i.

    P(u -> j) is the user's row of the weighted matrix normalised to sum 1, P(i -> u) the item's
    binary column normalised the same way; like Dacrema et al.'s reference code, alpha is applied to
    the transition probabilities (alpha = 1 makes it the plain walk), and pop_j is the number of
    users of j. score = history row @ W.
    """

    name: ClassVar[str] = "rp3beta"

    @dataclass(frozen=True)
    class Config:
        #: exponent on the transition probabilities
        alpha: float = 1.0
        #: popularity penalty: the walk's arrival probability at j is divided by pop_j ** beta
        beta: float = 0.6
        #: items kept per row of W
        k: int = 100
        #: rescale each row of W to sum 1 after the top-k cut
        normalize_rows: bool = False
        #: time decay of events (None: the data's weighting as it is)
        half_life_days: float | None = None

        def __post_init__(self) -> None:
            if self.k < 1:
                raise ValueError(f"k must be at least 1, got {self.k}")
            if self.alpha <= 0:
                raise ValueError(f"alpha must be positive, got {self.alpha}")

    sim_: sp.csr_matrix  # float32 [n_items, n_items], W
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "RP3beta.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        w = rp3beta_topk(training_matrix(data, c.half_life_days), c.alpha, c.beta, c.k)
        if c.normalize_rows:
            w = sp.csr_matrix(_row_normalised(w), dtype=np.float32)
        self.sim_ = w
        self.fallback_ = popularity_fallback(data)

    def _item_matrix(self) -> sp.csr_matrix:
        return self.sim_

    def similar_items(self, item_idx: int, n: int) -> ScoredItems:
        """Where the popularity-penalised walk from this item leads: the n best, best first."""
        return similar_from_row(self.sim_, int(item_idx), n)

    def _state(self) -> dict[str, Any]:
        return {"sim": self.sim_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.sim_ = sp.csr_matrix(arrays["sim"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
