"""Explanations: which generators proposed an item (at which rank) and which history items led to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["Explanation", "history_contributions"]


@dataclass
class Explanation:
    """Why one item was recommended: generator ranks and the history items that contributed most."""

    generators: dict[str, int] = field(default_factory=dict)  # generator -> 1-based rank
    because: list[tuple[int, float]] = field(default_factory=list)  # (history item index, contribution)

    def to_reasons(self, item_ids: Any, behaviours: dict[int, str] | None = None) -> list[dict[str, Any]]:
        reasons: list[dict[str, Any]] = [{"type": "generator", "generator": g, "rank": r}
                                         for g, r in sorted(self.generators.items(), key=lambda kv: kv[1])]
        for item, weight in self.because:
            verb = (behaviours or {}).get(item, "interacted with")
            reasons.append({"type": "history", "item_id": item_ids[item], "behavior": verb,
                            "text": f"because you {verb} {item_ids[item]}", "weight": round(float(weight), 4)})
        return reasons


def history_contributions(history: sp.csr_matrix, similarity: sp.csr_matrix, items: np.ndarray,
                          top: int = 2) -> list[list[tuple[int, float]]]:
    """For each candidate, the history items j with the largest history[j] * similarity[j, candidate]."""
    h = sp.csr_matrix(history)
    hist_items, hist_w = h.indices, h.data
    if len(hist_items) == 0 or len(items) == 0:
        return [[] for _ in items]
    block = similarity[hist_items][:, items].toarray() * hist_w[:, None]  # [n_hist, n_candidates]
    out = []
    for c in range(len(items)):
        col = block[:, c]
        best = np.argsort(-col)[:top]
        out.append([(int(hist_items[b]), float(col[b])) for b in best if col[b] > 0])
    return out
