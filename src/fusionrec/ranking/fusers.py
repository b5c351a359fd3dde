"""Fusion methods over a candidate table: LightGBM LambdaRank, a tuned linear blend, reciprocal-rank fusion.

A candidate table holds, per (batch row, item) pair, every generator's score and rank (NaN / n+1 when
the generator did not propose it). All fusers score the table row-wise; only the ranker learns from
features beyond the generators' own outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fusionrec.features.alignment import QuantileAlignment

__all__ = ["CandidateTable", "sub_table", "LambdaRankFuser", "LinearBlend", "ReciprocalRankFusion", "BestSingle",
           "ndcg_on_table", "ndcg_per_row", "top_per_row"]


@dataclass
class CandidateTable:
    """The union of all generators' candidates for a batch of users.

    rows/items: [P] pair coordinates (sorted by row then item); scores/ranks: [P, G] per generator.
    """

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray  # float32, NaN where not proposed
    ranks: np.ndarray  # float32, 1-based; n_g + 1 where not proposed
    generators: list[str]
    n_rows: int

    @property
    def proposed(self) -> np.ndarray:
        return ~np.isnan(self.scores)

    def normalised_scores(self, dtype: type = np.float64) -> np.ndarray:
        """Per row and generator, scores min-max scaled to [0, 1]; 0 where not proposed (computed in
        float64 a column at a time, returned as `dtype`: the ranker's float32 copy of a training set
        of millions of pairs costs half the memory)."""
        out = np.zeros(self.scores.shape, dtype)
        for g in range(self.scores.shape[1]):
            col = self.scores[:, g].astype(np.float64)
            ok = ~np.isnan(col)
            if not ok.any():
                continue
            lo = np.full(self.n_rows, np.inf)
            hi = np.full(self.n_rows, -np.inf)
            np.minimum.at(lo, self.rows[ok], col[ok])
            np.maximum.at(hi, self.rows[ok], col[ok])
            span = (hi - lo)[self.rows[ok]]
            out[ok, g] = np.where(span > 0, (col[ok] - lo[self.rows[ok]]) / np.where(span > 0, span, 1), 1.0)
        return out


def sub_table(table: CandidateTable, keep: np.ndarray) -> tuple[CandidateTable, np.ndarray]:
    """The pairs of `table` where `keep` (a pair mask), rows renumbered 0..n-1 in order; also the old row
    index of each new row (to pick per-row arrays such as the number of relevant items)."""
    old_rows, new_rows = np.unique(table.rows[keep], return_inverse=True)
    return CandidateTable(rows=new_rows.astype(np.int64), items=table.items[keep], scores=table.scores[keep],
                          ranks=table.ranks[keep], generators=table.generators, n_rows=len(old_rows)), old_rows


def top_per_row(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, n: int,
                tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[n_rows, n] best items and scores per row (padding: item -1, score -inf); equal scores ordered by
    `tiebreak` (higher first), then by item index."""
    out_i = np.full((n_rows, n), -1, np.int64)
    out_s = np.full((n_rows, n), -np.inf, np.float32)
    if len(rows) == 0 or n == 0:
        return out_i, out_s
    order = np.lexsort((-scores, rows)) if tiebreak is None else np.lexsort((-tiebreak, -scores, rows))
    r = rows[order]
    starts = np.searchsorted(r, np.arange(n_rows))
    pos = np.arange(len(r)) - starts[r]
    keep = pos < n
    out_i[r[keep], pos[keep]] = items[order][keep]
    out_s[r[keep], pos[keep]] = scores[order][keep]
    return out_i, out_s


def ndcg_on_table(rows: np.ndarray, scores: np.ndarray, labels: np.ndarray, n_relevant: np.ndarray,
                  k: int = 20) -> float:
    """Mean binary NDCG@k over rows, the ideal counting every relevant item (also those not in the table)."""
    per_row = ndcg_per_row(rows, scores, labels, n_relevant, k)
    return float(per_row.mean()) if len(per_row) else 0.0


def ndcg_per_row(rows: np.ndarray, scores: np.ndarray, labels: np.ndarray, n_relevant: np.ndarray,
                 k: int = 20) -> np.ndarray:
    """Binary NDCG@k of each row with relevant items (rows without any are left out)."""
    order = np.lexsort((-scores, rows))
    r = rows[order]
    rel = labels[order] > 0
    starts = np.searchsorted(r, np.arange(len(n_relevant)))
    pos = np.arange(len(r)) - starts[r]
    hit = rel & (pos < k)
    dcg = np.zeros(len(n_relevant))
    np.add.at(dcg, r[hit], 1.0 / np.log2(pos[hit] + 2))
    discounts = 1.0 / np.log2(np.arange(k) + 2)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_relevant, k)]
    ok = n_relevant > 0
    return dcg[ok] / ideal[ok]


class LambdaRankFuser:
    """A LightGBM ranker (LambdaRank, or `rank_xendcg` by `params["objective"]`) with one group per user,
    early-stopped on held-out users; or the mean of several such rankers (`bag`), each trained on other users."""

    kind = "lambdarank"

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        # one thread by default: on a busy 2-core machine LightGBM's thread sync costs more than it gains
        # (a small fit took 88 s with 2 threads, 0.4 s with 1); `num_threads` in [ranker] overrides it
        self.params = {"num_threads": 1, "n_estimators": 400, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
                       "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "reg_lambda": 1.0,
                       "early_stopping_rounds": 30, "eval_at": 20, **(params or {})}
        self.seed = seed
        #: the boosters whose scores are averaged: one, or a bag's members
        self.boosters_: list[Any] = []
        self.feature_names_: list[str] = []
        #: per booster, the linear blend its trees start from (boosting from its scores, LightGBM's
        #: init_score), or None: the trees alone
        self.starts_: list[LinearBlend | None] = []
        #: the serving stage's feature alignment (see features/alignment.py), applied by `predict`; None
        #: while the ranker is judged on the stage-1 table it was trained on (aligned by its caller)
        self.align_: QuantileAlignment | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
            rows_val: np.ndarray, feature_names: list[str], start: "LinearBlend | None" = None,
            init: np.ndarray | None = None, init_val: np.ndarray | None = None) -> "LambdaRankFuser":
        """Fit on (X, y) grouped by `rows`, early-stopped on the held-out groups. With `start`, the trees
        learn what the blend gets wrong: `init` / `init_val` are its scores of the training / held-out pairs."""
        import lightgbm as lgb

        params = dict(self.params)
        stop = int(params.pop("early_stopping_rounds"))
        # early stopping watches NDCG at one cut-off, `eval_at` (20 by default, the pipeline's validation
        # metric). Watching @10 and @20 together stopped at the first dip of the noisier @10: 10-40 trees,
        # an under-fitted ranker that lost to the best generator (ML-1M validation: ndcg@10 -0.004 -> +0.002)
        eval_at = [int(params.pop("eval_at"))]
        self.feature_names_ = list(feature_names)
        model = lgb.LGBMRanker(objective=params.pop("objective", "lambdarank"), random_state=self.seed, verbose=-1,
                               deterministic=True, force_row_wise=True, label_gain=[0, 1, 2, 3, 4, 5, 6, 7, 8],
                               **params)
        if (start is None) != (init is None) or (init is None) != (init_val is None):
            raise ValueError("boosting from a blend needs the blend and its scores of both pair sets")
        model.fit(X, y, group=_group_sizes(rows), eval_X=(X_val,), eval_y=(y_val,), eval_group=[_group_sizes(rows_val)],
                  eval_at=eval_at, feature_name=self.feature_names_, init_score=init,
                  eval_init_score=None if init_val is None else [init_val],
                  callbacks=[lgb.early_stopping(stop, first_metric_only=True, verbose=False)])
        self.boosters_ = [model.booster_]
        self.starts_ = [start]
        return self

    @classmethod
    def bag(cls, members: list["LambdaRankFuser"]) -> "LambdaRankFuser":
        """One ranker whose score is the mean of the members' (each fitted, none aligned yet)."""
        out = cls(members[0].params, seed=members[0].seed)
        out.feature_names_ = list(members[0].feature_names_)
        out.boosters_ = [b for m in members for b in m.boosters_]
        out.starts_ = [s for m in members for s in m.starts_]
        return out

    @property
    def trees(self) -> int:
        return int(sum(b.current_iteration() for b in self.boosters_))

    def predict(self, X: np.ndarray, table: CandidateTable | None = None) -> np.ndarray:
        """Fused scores of the pairs in X (rows of `table`, which a ranker started from a blend needs);
        with `align_` set, its columns of X are aligned in place first."""
        if self.align_ is not None:
            X = self.align_.transform(X)
        threads = int(self.params.get("num_threads", 1))
        out = np.zeros(len(X), np.float32)
        for booster, start in zip(self.boosters_, self.starts_):
            out += np.asarray(booster.predict(X, num_threads=threads), np.float32)
            if start is not None:
                if table is None:
                    raise ValueError("this ranker boosts from a linear blend: predict needs the candidate table")
                out += start.predict(table)
        if len(self.boosters_) > 1:
            out /= len(self.boosters_)
        return out

    def feature_importance(self) -> dict[str, float]:
        gain = sum(np.asarray(b.feature_importance(importance_type="gain"), np.float64) for b in self.boosters_)
        total = float(gain.sum()) or 1.0
        return {n: float(g) / total for n, g in sorted(zip(self.feature_names_, gain), key=lambda x: -x[1])}

    def save_texts(self) -> list[str]:
        return [str(b.model_to_string()) for b in self.boosters_]

    def load_texts(self, texts: list[str], feature_names: list[str], starts: list["LinearBlend | None"]) -> None:
        import lightgbm as lgb

        if len(starts) != len(texts):
            raise ValueError(f"{len(texts)} boosters but {len(starts)} start blends")
        self.boosters_ = [lgb.Booster(model_str=t) for t in texts]
        self.starts_ = starts
        self.feature_names_ = feature_names


def _group_sizes(rows: np.ndarray) -> np.ndarray:
    """LightGBM group sizes for pairs sorted by row."""
    _, counts = np.unique(rows, return_counts=True)
    return counts


class LinearBlend:
    """A weighted sum of per-user min-max normalised generator scores; weights tuned on validation NDCG@20."""

    kind = "blend"
    grid = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)

    def __init__(self) -> None:
        self.weights_: np.ndarray | None = None

    @classmethod
    def with_weights(cls, weights: Any) -> "LinearBlend":
        """A blend with known weights (a saved one)."""
        out = cls()
        out.weights_ = np.asarray(weights, np.float64)
        return out

    def fit(self, table: CandidateTable, labels: np.ndarray, n_relevant: np.ndarray, passes: int = 2) -> "LinearBlend":
        norm = table.normalised_scores()
        w = np.ones(norm.shape[1])
        best = ndcg_on_table(table.rows, norm @ w, labels, n_relevant)
        for _ in range(passes):
            for g in range(len(w)):
                for value in self.grid:
                    trial = w.copy()
                    trial[g] = value
                    if not trial.any():
                        continue
                    score = ndcg_on_table(table.rows, norm @ trial, labels, n_relevant)
                    if score > best + 1e-9:
                        best, w = score, trial
        self.weights_ = w
        return self

    def predict(self, table: CandidateTable) -> np.ndarray:
        assert self.weights_ is not None
        return (table.normalised_scores() @ self.weights_).astype(np.float32)


class ReciprocalRankFusion:
    """score = sum over generators of 1 / (k + rank); nothing learned."""

    kind = "rrf"

    def __init__(self, k: float = 60.0) -> None:
        self.k = k

    def predict(self, table: CandidateTable) -> np.ndarray:
        contrib = np.where(table.proposed, 1.0 / (self.k + table.ranks), 0.0)
        return contrib.sum(axis=1).astype(np.float32)


class BestSingle:
    """The one generator with the best validation NDCG@20; ties in its list broken by the others' RRF."""

    kind = "best"

    def __init__(self) -> None:
        self.index_: int = 0

    def fit(self, table: CandidateTable, labels: np.ndarray, n_relevant: np.ndarray) -> "BestSingle":
        scores = [ndcg_on_table(table.rows, np.nan_to_num(table.scores[:, g], nan=-1e30), labels, n_relevant)
                  for g in range(table.scores.shape[1])]
        self.index_ = int(np.argmax(scores))
        return self

    def predict(self, table: CandidateTable) -> np.ndarray:
        return np.where(table.proposed[:, self.index_], -table.ranks[:, self.index_], -1e9).astype(np.float32)
