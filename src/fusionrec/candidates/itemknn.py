"""Item-based k-nearest neighbours: score = history row @ item-item similarity (top-k per item)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from fusionrec.candidates._similarity import (
    SIMILARITIES, WEIGHTINGS, ItemItemScoring, apply_weighting, pairwise_topk, similar_from_row, training_matrix,
)
from fusionrec.candidates.base import CandidateGenerator, ScoredItems
from fusionrec.candidates.popularity import popularity_fallback
from fusionrec.data.interactions import Interactions

__all__ = ["ItemKNN"]


class ItemKNN(ItemItemScoring, CandidateGenerator):
    """Item-item collaborative filtering (Sarwar et al. 2001; tuned as in Dacrema et al. 2019).

    `sim_[j]` holds the k items most similar to item j; the score of j for a user sums the user's
    history weights over j's neighbours, so every recommendation is explained by neighbours in the
    history. Users with an empty history get popularity.
    """

    name: ClassVar[str] = "itemknn"

    @dataclass(frozen=True)
    class Config:
        #: neighbours kept per item
        k: int = 100
        #: "cosine", "asymmetric_cosine" (see `alpha`) or "jaccard" (Tanimoto on weighted data)
        similarity: str = "cosine"
        #: asymmetric cosine: dot / (|target|^(2 alpha) |neighbour|^(2 (1 - alpha))); 0.5 is cosine
        alpha: float = 0.5
        #: added to every similarity's denominator: damps pairs seen in few users
        shrink: float = 10.0
        #: reweighting of the user x item matrix before similarity, items as documents: none, bm25, tfidf
        weighting: str = "none"
        bm25_k1: float = 1.2
        bm25_b: float = 0.75
        #: time decay of events before the similarity (None: the data's weighting as it is)
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

    sim_: sp.csr_matrix  # float32 [n_items, n_items]; row j: j's neighbours and their similarity
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "ItemKNN.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        x = training_matrix(data, c.half_life_days)
        item_user = apply_weighting(x.T.tocsr(), c.weighting, c.bm25_k1, c.bm25_b)
        self.sim_ = pairwise_topk(item_user, item_user, c.k, c.similarity, c.alpha, c.shrink, exclude_self=True)
        self.fallback_ = popularity_fallback(data)
        self._prepare()

    def _prepare(self) -> None:
        # score_j = sum_i h_i sim[j, i]: the transposed neighbour lists, in CSR for h @ W
        self._w = self.sim_.T.tocsr()

    def _item_matrix(self) -> sp.csr_matrix:
        return self._w

    def similar_items(self, item_idx: int, n: int) -> ScoredItems:
        """The n items most similar to one item ("customers who liked this also liked")."""
        return similar_from_row(self.sim_, int(item_idx), n)

    def _state(self) -> dict[str, Any]:
        return {"sim": self.sim_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.sim_ = sp.csr_matrix(arrays["sim"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
        self._prepare()
