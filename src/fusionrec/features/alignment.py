"""Per-stage quantile alignment of ranker features.

The ranker learns from stage-1 generators (fitted on the training data minus the validation holdout) and
serves with generators refitted on all of it. Raw scores and counts grow with the data: an EASE score,
an item's popularity, a user's event count are larger after the refit than anything the trees saw. An
alignment maps each chosen column to its quantile level among the pairs of its own stage (the ranker's
training table at stage 1, a sample of users' candidates after the refit), so a value means "as high as
the top 5% of candidates" at both stages rather than a number whose scale moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_LEVELS = 1001  # quantile levels per column: finer than LightGBM's 255 bins


@dataclass
class QuantileAlignment:
    """Maps column `columns[j]` through the quantile table (`values[j]` -> `levels[j]`), NaN kept."""

    columns: list[int]
    values: list[np.ndarray]
    levels: list[np.ndarray]

    @classmethod
    def fit(cls, X: np.ndarray, columns: list[int], max_rows: int = 500_000, seed: int = 0) -> "QuantileAlignment":
        """Quantile tables of `columns` of X (a random `max_rows` sample of the rows when X is larger).
        A value held by many rows (0 counts) maps to the middle of the levels it spans."""
        rows = np.arange(len(X))
        if len(X) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
        grid = np.linspace(0.0, 1.0, _LEVELS)
        values, levels = [], []
        for j in columns:
            v = X[rows, j].astype(np.float64)
            v = v[np.isfinite(v)]
            if not len(v):
                values.append(np.zeros(0))
                levels.append(np.zeros(0))
                continue
            q = np.quantile(v, grid)
            u, inverse = np.unique(q, return_inverse=True)
            mid = np.bincount(inverse, weights=grid) / np.bincount(inverse)
            values.append(u)
            levels.append(mid)
        return cls(list(columns), values, levels)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X with the aligned columns replaced by their quantile levels in [0, 1], in place."""
        for j, u, lv in zip(self.columns, self.values, self.levels):
            col = X[:, j]
            ok = np.isfinite(col)
            if not len(u):
                col[ok] = np.nan  # the column never had a value at this stage: nothing to compare it to
            else:  # outside the table: its first or last level
                col[ok] = np.interp(col[ok], u, lv)
        return X

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "values": [v.tolist() for v in self.values],
                "levels": [lv.tolist() for lv in self.levels]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantileAlignment":
        if not (len(d["columns"]) == len(d["values"]) == len(d["levels"])):
            raise ValueError("alignment: columns, values and levels differ in length")
        return cls([int(c) for c in d["columns"]], [np.asarray(v, np.float64) for v in d["values"]],
                   [np.asarray(lv, np.float64) for lv in d["levels"]])
