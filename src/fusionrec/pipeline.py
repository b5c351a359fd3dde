"""The fused pipeline: history -> candidates from every generator -> union -> features -> fuser -> re-rank.

One `FusedPipeline` object is declared in TOML, measured by `fusionrec evaluate` (it is a
CandidateGenerator named "fusion", "blend", "rrf" or "best") and loaded by `fusionrec serve`.

Training never sees the caller's test data: `fit(data)` carves a validation window out of `data`
itself (the last days when there are timestamps, else each user's last items or a random share),
fits the generators on what precedes it, learns the fuser on the generators' candidates labelled by
the window, then refits the generators on all of `data` and keeps the fuser.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import json
import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates.base import CandidateGenerator, Query, ScoredItems, iter_batches, load_arrays, save_arrays
from fusionrec.data.interactions import ITEM_IDX, TIME, USER_IDX, Interactions
from fusionrec.data.vocabulary import Vocabulary
from fusionrec.errors import ConfigError
from fusionrec.evaluation.stats import paired_test
from fusionrec.features.alignment import QuantileAlignment
from fusionrec.features.tables import (ITEM_FEATURES, PAIR_FEATURES, SESSION_ITEMS, USER_FEATURES, ItemFeatures,
                                       UserFeatures, content_vectors, pair_features)
from fusionrec.rerank.explain import Explanation
from fusionrec.rerank.rules import ItemCatalog, RequestFilters, Reranker, RerankConfig
from fusionrec.ranking.fusers import (BestSingle, CandidateTable, LambdaRankFuser, LinearBlend, ReciprocalRankFusion,
                                      ndcg_on_table, ndcg_per_row, sub_table, top_per_row)

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

__all__ = ["FusedPipeline", "PipelineConfig", "Recommendation", "load_pipeline_config", "GRADES"]

#: label grade of a behaviour in the validation window (the ranker learns buy > cart > fav > view)
GRADES = {"buy": 4, "cart": 3, "fav": 2, "view": 1, "click": 1}
DEFAULT_GENERATORS: dict[str, dict[str, Any]] = {
    "pop": {}, "trending": {}, "repeat": {}, "itemknn": {}, "covisit": {}, "rp3beta": {}, "als": {},
}


@dataclass
class Recommendation:
    """One recommended item index with its fused score and explanation."""

    item: int
    score: float
    explanation: Explanation


@dataclass(frozen=True)
class PipelineConfig:
    """What a pipeline TOML declares; see configs/*.toml."""

    generators: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_GENERATORS))
    n_candidates: int = 100  # per generator
    per_generator: dict[str, int] = field(default_factory=dict)  # overrides of n_candidates
    fuser: str = "lambdarank"  # lambdarank | blend | rrf | best
    ranker: dict[str, Any] = field(default_factory=dict)  # LightGBM parameters
    holdout: str = "auto"  # auto (time if timestamps, else random) | time | last | random
    valid_days: float | None = None  # time holdout: the last D days of the training data (default: 15% of span)
    valid_share: float = 0.2  # random holdout: share of each user's items
    max_train_users: int = 20_000
    exclude_seen: bool = True
    #: the ranker learns from its training users queried as anonymous visitors (no user id: no user
    #: features, generators answer from the history alone), as a session-based shop queries it; off, a
    #: ranker trained on known users meets features it never saw (-1s) on every anonymous session
    anonymous_queries: bool = False
    #: the behaviours recommendations aim at (None: every behaviour). Only these label the ranker and
    #: count as seen (excluded from its candidates); the others stay history and features. A shop that
    #: sells what was carted says ["buy"]: a carted item is then a candidate the ranker learns to rank
    target_behaviors: list[str] | None = None
    #: lambdarank only: keep the best single generator instead when the ranker does not beat it on
    #: validation users it was not trained on (a decision made on validation data only, in the fit report)
    ranker_guard: bool = True
    #: the guard keeps the ranker only when its NDCG@20 gain over that generator on the held-out users is
    #: significant (paired t-test p below this); with a few hundred users a gain there is often noise
    #: (Taobao: +0.004 on 140 users, then -0.006 on the validation split). 1.0: any gain will do.
    ranker_guard_p: float = 0.05
    #: below this many ranker users the held-out fifth is too few to decide (ML-100K: 182 users, p = 0.27
    #: for +0.018): the guard then judges the ranker by out-of-fold predictions over every ranker user,
    #: each of `ranker_guard_folds` folds ranked by a ranker trained and early-stopped on the other folds
    ranker_guard_cv_users: int = 5000
    ranker_guard_folds: int = 5
    #: when the guard drops the ranker, serve the linear blend instead of the single generator if the
    #: blend beats that generator on the same validation users by the same test (a blend tuned on other
    #: users than those it is judged on: the ranker's training users, or the other folds)
    ranker_guard_blend: bool = True
    #: what the ranker's trees start from: "zero", or "blend": a linear blend of the generators'
    #: normalised scores, weights tuned on the ranker's training users, whose scores the trees then
    #: correct (LightGBM's init_score). On few users the blend start needs fewer trees (ML-100K
    #: validation out-of-fold NDCG@20 0.1518 vs 0.1433); the blend favours items several generators
    #: propose, so a new item that only content proposes ranks lower than with "zero"
    ranker_start: str = "zero"
    #: the ranker's label per behaviour in the validation window (a pair's best behaviour counts), from
    #: 1 to 8; e.g. every behaviour 1 when a view is worth as much as a purchase to the shop
    label_grades: dict[str, int] = field(default_factory=lambda: dict(GRADES))
    #: ranker features (fnmatch patterns over `FusedPipeline.feature_names`, e.g. "*_score" for every
    #: generator's raw score) the trees must not split on: values whose scale moves between the stage-1
    #: generators the ranker learns from and the refitted ones it serves with (raw scores, raw counts)
    ranker_ignore: list[str] = field(default_factory=list)
    #: ranker features (fnmatch patterns, as `ranker_ignore`) the ranker sees as quantile levels among
    #: the candidates of their own stage: the stage-1 training table when it learns, a sample of
    #: `ranker_align_users` users' candidates from the refitted generators when it serves (see
    #: features/alignment.py). The trees split on the same values either way (a monotone map); what
    #: changes is that a refitted generator's larger raw scores and counts no longer read as "higher
    #: than anything seen in training"
    ranker_align: list[str] = field(default_factory=list)
    ranker_align_users: int = 5000
    #: above 1, the served ranker is the mean of this many rankers: the ranker users are dealt into as
    #: many folds, and member f is trained on the other folds and early-stopped on fold f, so every
    #: user trains the ranker (one ranker learns from four fifths). The guard then judges each user by
    #: the member early-stopped on its fold, the only one that never trained on it. Costs that many fits
    #: and that many boosters' predictions per request
    ranker_bag: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fuser not in ("lambdarank", "blend", "rrf", "best"):
            raise ConfigError(f"fuser: {self.fuser!r} is not one of lambdarank, blend, rrf, best")
        if self.holdout not in ("auto", "time", "last", "random"):
            raise ConfigError(f"holdout: {self.holdout!r} is not one of auto, time, last, random")
        if not self.generators:
            raise ConfigError("generators: a pipeline needs at least one generator")
        bad = {b: g for b, g in self.label_grades.items() if not (isinstance(g, int) and 1 <= g <= 8)}
        if bad:
            raise ConfigError(f"label_grades: grades must be whole numbers from 1 to 8, got {bad}")
        if self.n_candidates < 1:
            raise ConfigError("n_candidates must be at least 1")
        if not 0.0 < self.ranker_guard_p <= 1.0:
            raise ConfigError(f"ranker_guard_p: a p-value threshold in (0, 1], got {self.ranker_guard_p!r}")
        if self.ranker_start not in ("blend", "zero"):
            raise ConfigError(f"ranker_start: {self.ranker_start!r} is not one of blend, zero")
        if self.ranker.get("objective", "lambdarank") not in ("lambdarank", "rank_xendcg"):
            raise ConfigError(f"ranker.objective: {self.ranker['objective']!r} is not one of lambdarank, rank_xendcg "
                              "(LightGBM's listwise ranking objectives)")
        names = FusedPipeline.feature_names(list(self.generators))
        for key in ("ranker_ignore", "ranker_align"):
            for pattern in getattr(self, key):
                if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                    raise ConfigError(f"{key}: {pattern!r} matches no ranker feature; they are {', '.join(names)}")
        if self.ranker_align_users < 100:
            raise ConfigError(f"ranker_align_users: at least 100 users to take quantiles over, got {self.ranker_align_users!r}")
        if not (isinstance(self.ranker_bag, int) and 1 <= self.ranker_bag <= 20):
            raise ConfigError(f"ranker_bag: 1 (one ranker) to 20 members, got {self.ranker_bag!r}")
        if self.ranker_guard_folds < 3:
            raise ConfigError(f"ranker_guard_folds: at least 3 (train, early stopping, judged), "
                              f"got {self.ranker_guard_folds!r}")


def load_pipeline_config(path: Path | str, **overrides: Any) -> PipelineConfig:
    """Read a pipeline TOML (the configs/*.toml layout): [pipeline] keys, generators taking [models.NAME]."""
    from fusionrec.evaluation.model_config import read_model_params

    body = read_model_params(path).get("fusion")
    if body is None:
        raise ConfigError(f"{path}: no [pipeline] table; see configs/demo.toml")
    body.update(overrides)
    known = set(PipelineConfig.__dataclass_fields__)
    unknown = sorted(set(body) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown [pipeline] keys {unknown}; known: {sorted(known)}")
    return PipelineConfig(**body)


# Fitted generators shared by pipelines in one process: `evaluate --models fusion,blend,rrf,best` fits
# each generator once per training set instead of four times. Generators are deterministic for their
# config and seed, so sharing changes no result. Keyed by a fingerprint of the data, bounded in size.
_FIT_CACHE: "OrderedDict[tuple[Any, ...], Any]" = OrderedDict()
_FIT_CACHE_SIZE = 24


def _fingerprint(data: Interactions) -> tuple[Any, ...]:
    ev = data.events
    digest = int(ev.select(pl.col(USER_IDX), pl.col(ITEM_IDX), pl.col(S.SEQ)).hash_rows(seed=7).sum()) if ev.height else 0
    return (data.n_users, data.n_items, ev.height, digest)


def _cached(key: tuple[Any, ...], build: Any) -> Any:
    if key in _FIT_CACHE:
        _FIT_CACHE.move_to_end(key)
        return _FIT_CACHE[key]
    value = build()
    _FIT_CACHE[key] = value
    while len(_FIT_CACHE) > _FIT_CACHE_SIZE:
        _FIT_CACHE.popitem(last=False)
    return value


def clear_fit_cache() -> None:
    _FIT_CACHE.clear()


def _blend_tuned_on(table: CandidateTable, y: np.ndarray, n_relevant: np.ndarray,
                    pairs: slice | np.ndarray) -> LinearBlend:
    """A linear blend tuned on the users of `pairs` alone (a slice or mask of the table's pairs)."""
    mask = np.zeros(len(table.rows), bool)
    mask[pairs] = True
    sub, old_rows = sub_table(table, mask)
    return LinearBlend().fit(sub, y[mask], n_relevant[old_rows])


class FusedPipeline(CandidateGenerator):
    """Candidates of many generators fused by a learned ranker (or a blend / RRF / best-single baseline)."""

    name: ClassVar[str] = "fusion"
    history_based: ClassVar[bool] = False
    Config = PipelineConfig

    generators_: dict[str, CandidateGenerator]
    item_features_: ItemFeatures
    user_features_: UserFeatures
    fuser_: Any
    report_: dict[str, Any]

    def __init__(self, cfg: PipelineConfig | None = None) -> None:
        self.cfg = cfg or PipelineConfig()

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    # -- training -----------------------------------------------------------------------------
    def _make_generators(self) -> dict[str, CandidateGenerator]:
        from fusionrec.candidates.registry import make

        gens = {}
        for name, params in self.cfg.generators.items():
            base = params.get("generator", name)  # the same generator twice under two names
            p = {k: v for k, v in params.items() if k not in ("generator", "n")}
            gens[name] = make(base, p)
        return gens

    def _fitted_generators(self, data: Interactions) -> dict[str, CandidateGenerator]:
        fp = _fingerprint(data)
        out = {}
        for name, gen in self._make_generators().items():
            key = ("gen", fp, gen.name, json.dumps(gen.config(), sort_keys=True, default=str))
            out[name] = _cached(key, lambda g=gen: g.fit(data))
        return out

    def _n_for(self, name: str) -> int:
        params = self.cfg.generators.get(name, {})
        return int(params.get("n", self.cfg.per_generator.get(name, self.cfg.n_candidates)))

    def _fit(self, data: Interactions) -> None:
        t0 = time.perf_counter()
        report: dict[str, Any] = {"fuser": self.cfg.fuser}
        key = ("holdout", _fingerprint(data), self.cfg.holdout, self.cfg.valid_days, self.cfg.valid_share, self.cfg.seed,
               tuple(sorted(self.cfg.label_grades.items())), tuple(self.cfg.target_behaviors or ()))
        pre, labels, how = _cached(key, lambda: self._holdout(data))
        report["holdout"] = how
        content = content_vectors(data.catalogue, data.n_items)  # one catalogue for both stages: built once
        if self.cfg.fuser != "rrf":
            self._learn_fuser(pre, labels, report, content)
        else:
            self.fuser_ = ReciprocalRankFusion()
        t1 = time.perf_counter()
        self.generators_ = self._fitted_generators(data)
        self.item_features_ = ItemFeatures.build(data, content)
        self.user_features_ = UserFeatures.build(data, self.item_features_)
        if self.cfg.ranker_align:
            self.align_ranker(data.matrix(), self.seen_matrix(data))
        report["refit_seconds"] = round(time.perf_counter() - t1, 2)
        report["fit_seconds"] = round(time.perf_counter() - t0, 2)
        self.report_ = report

    def _holdout(self, data: Interactions) -> tuple[Interactions, sp.csr_matrix, str]:
        """Training part and graded labels [n_users, n_items] carved from `data` only."""
        ev = data.events
        mode = self.cfg.holdout
        if mode == "auto":
            # without timestamps a line's order may mean nothing (LightGCN files): hold out at random;
            # sequential datasets (s3rec) say holdout = "last" in their config
            mode = "time" if data.has_time else "random"
        if mode == "time" and not data.has_time:
            raise ConfigError("holdout 'time' needs timestamps; use 'last' or 'random' for this dataset")
        eligible = (ev[S.BEHAVIOR].is_in(self.cfg.target_behaviors).to_numpy() if self.cfg.target_behaviors
                    else np.ones(ev.height, bool))
        if mode == "time":
            t = ev[TIME].to_numpy()
            lo, hi = np.nanmin(t), np.nanmax(t)
            days = self.cfg.valid_days if self.cfg.valid_days else max((hi - lo) / 86400.0 * 0.15, 1 / 24)
            cut = hi - days * 86400.0
            held = t > cut
            how = f"time: the last {days:.2f} days of training data label the ranker"
        else:
            # positions among each user's events of the target behaviours (all events without them)
            pos = ev.with_columns(pl.Series("_e", eligible)).select(
                pl.int_range(pl.len()).over([USER_IDX, "_e"]).alias("p"), pl.len().over([USER_IDX, "_e"]).alias("n"))
            p, n = pos["p"].to_numpy(), pos["n"].to_numpy()
            if mode == "last":
                held = (p == n - 1) & (n >= 3)
                how = "last: each user's last training interaction labels the ranker"
            else:
                rng = np.random.default_rng(self.cfg.seed)
                held = (rng.random(len(p)) < self.cfg.valid_share) & (n >= 3)
                how = f"random: {self.cfg.valid_share:.0%} of each user's training items label the ranker"
        held &= eligible
        pre = data.subset(~held)
        lab_ev = ev.filter(pl.Series(held))
        grade = lab_ev[S.BEHAVIOR].replace_strict(self.cfg.label_grades, default=1, return_dtype=pl.Float32).to_numpy()
        rows, cols = lab_ev[USER_IDX].to_numpy(), lab_ev[ITEM_IDX].to_numpy()
        # max grade per pair (a view then a buy of the same item is a buy), not the sum
        key = rows.astype(np.int64) * data.n_items + cols
        order = np.lexsort((-grade, key))
        first = np.ones(len(order), bool)
        first[1:] = key[order][1:] != key[order][:-1]
        sel = order[first]
        labels = sp.csr_matrix((grade[sel], (rows[sel], cols[sel])), shape=(data.n_users, data.n_items))
        return pre, labels, how

    def _learn_fuser(self, pre: Interactions, labels: sp.csr_matrix, report: dict[str, Any],
                     content: sp.csr_matrix) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        gens = self._fitted_generators(pre)
        report["stage1_fit_seconds"] = round(time.perf_counter() - t0, 2)
        hist = pre.matrix()
        seen = self.seen_matrix(pre)
        has_hist = np.diff(hist.indptr) > 0
        has_label = np.diff(labels.indptr) > 0
        if cfg.exclude_seen:
            # targets the user already had are excluded at serving time, so they cannot be learned from
            labels = labels - labels.multiply(seen > 0)
            labels.eliminate_zeros()
            has_label = np.diff(labels.indptr) > 0
        users = np.flatnonzero(has_hist & has_label)
        rng = np.random.default_rng(cfg.seed)
        if len(users) > cfg.max_train_users:
            users = np.sort(rng.choice(users, cfg.max_train_users, replace=False))
        if len(users) < 10:
            raise ConfigError(f"only {len(users)} users have both history and validation events; "
                              "the ranker cannot be trained (try holdout='random' or more data)")
        item_f = ItemFeatures.build(pre, content)
        user_f = UserFeatures.build(pre, item_f)
        self.learn_fuser_from(gens, users, hist[users], labels[users], item_f, user_f, report, rng,
                              seen=seen[users])

    def seen_matrix(self, data: Interactions) -> sp.csr_matrix:
        """[users, items] what counts as already had: events of the target behaviours (all by default)."""
        if not self.cfg.target_behaviors:
            return data.matrix()
        return data.subset(data.events[S.BEHAVIOR].is_in(self.cfg.target_behaviors).to_numpy()).matrix()

    def learn_fuser_from(self, gens: dict[str, CandidateGenerator], users: np.ndarray, h: sp.csr_matrix,
                         lab: sp.csr_matrix, item_f: ItemFeatures, user_f: UserFeatures, report: dict[str, Any],
                         rng: np.random.Generator, seen: sp.csr_matrix | None = None) -> None:
        """Learn the fuser from stage-1 generators: `users` (their index), `h` their histories before the
        validation cut, `lab` their graded labels after it and `seen` what they already had (default `h`),
        one row per user. The embedded fit and the Spark engine both end here."""
        cfg = self.cfg
        seen = h if seen is None else seen
        if cfg.fuser == "lambdarank":
            # early stopping on held-out users: a fifth of the groups, never a user in both sets. They go
            # last, so the training rows are X[:n], a view: the boolean-mask copy was gigabytes at 20k users
            val_users = rng.random(len(users)) < 0.2
            order = np.argsort(val_users, kind="stable")
            users, h, lab, seen, val_users = users[order], h[order], lab[order], seen[order], val_users[order]
        queried = np.full(len(users), -1, np.int64) if cfg.anonymous_queries else users
        table = self._candidate_table(gens, queried, h, exclude=seen if cfg.exclude_seen else None)
        y = np.asarray(lab[table.rows, table.items], np.float32).ravel()
        n_relevant = np.diff(lab.indptr)
        recall = float(np.mean(np.bincount(table.rows, weights=(y > 0), minlength=len(users))
                               / np.maximum(n_relevant, 1)))
        report.update({"train_users": int(len(users)), "candidates_per_user": round(len(table.rows) / len(users), 1),
                       "candidate_recall": round(recall, 4)})
        per_gen = [ndcg_on_table(table.rows, np.nan_to_num(table.scores[:, j], nan=-1e30), y, n_relevant)
                   for j in range(len(table.generators))]
        report["valid_ndcg@20_per_generator"] = dict(zip(table.generators, (round(v, 4) for v in per_gen)))
        if cfg.fuser == "blend":
            self.fuser_ = LinearBlend().fit(table, y, n_relevant)
            report["blend_weights"] = dict(zip(table.generators, map(float, self.fuser_.weights_)))
            fused = self.fuser_.predict(table)
        elif cfg.fuser == "best":
            self.fuser_ = BestSingle().fit(table, y, n_relevant)
            report["best_generator"] = table.generators[self.fuser_.index_]
            fused = self.fuser_.predict(table)
        else:
            X = self._features(table, queried, h, item_f, user_f, item_similarity_of(gens))
            fused = self._learn_ranker(X, y, table, n_relevant, per_gen, val_users, report, rng)
        report["valid_ndcg@20_fused_in_sample"] = round(ndcg_on_table(table.rows, fused, y, n_relevant), 4)

    def _learn_ranker(self, X: np.ndarray, y: np.ndarray, table: CandidateTable, n_relevant: np.ndarray,
                      per_gen: list[float], val_users: np.ndarray, report: dict[str, Any],
                      rng: np.random.Generator) -> np.ndarray:
        """Fit the LightGBM ranker on the users not in `val_users` (they come first in the table),
        early-stopped on the others, and guard it; returns the served fuser's scores of the table."""
        cfg = self.cfg
        names = self.feature_names(table.generators)
        ignored = self._matching(names, cfg.ranker_ignore)
        if ignored:
            X[:, ignored] = np.nan  # missing everywhere: no tree splits on them, so serving needs no mask
        aligned = self._aligned_columns(names)
        if aligned:  # stage 1's own quantiles; the serving stage's are taken after the refit (align_ranker)
            QuantileAlignment.fit(X, aligned, seed=cfg.seed).transform(X)
            report["ranker_aligned_features"] = [names[j] for j in aligned]
        cut = int(np.searchsorted(table.rows, int((~val_users).sum())))  # rows sorted by user
        t1 = time.perf_counter()
        bag_scores = None
        if cfg.ranker_bag > 1:
            self.fuser_, bag_scores = self._fit_bag(X, y, table, n_relevant, names, rng)
        else:
            self.fuser_ = self._fit_ranker(X, y, table, n_relevant, slice(0, cut), slice(cut, None), names)
        report["ranker_seconds"] = round(time.perf_counter() - t1, 2)
        report["ranker_trees"] = self.fuser_.trees
        if cfg.ranker_bag > 1:
            report["ranker_members"] = len(self.fuser_.boosters_)
        start = self.fuser_.starts_[0]
        if start is not None and cfg.ranker_bag == 1:
            report["ranker_start_blend_weights"] = dict(zip(table.generators, map(float, start.weights_)))
        fused = self.fuser_.predict(X, table)
        held = val_users[table.rows]
        vr = np.flatnonzero(val_users)
        remap = -np.ones(len(val_users), np.int64)
        remap[vr] = np.arange(len(vr))

        def on_held_out(scores: np.ndarray) -> np.ndarray:
            return ndcg_per_row(remap[table.rows[held]], scores[held], y[held], n_relevant[vr])

        def on_all(scores: np.ndarray) -> np.ndarray:
            return ndcg_per_row(table.rows, scores, y, n_relevant)

        def alone(j: int) -> np.ndarray:
            return np.nan_to_num(table.scores[:, j], nan=-1e30)

        ranker_rows = on_held_out(fused)
        report["valid_ndcg@20_heldout_users"] = round(float(ranker_rows.mean()) if len(ranker_rows) else 0.0, 4)
        # the same users ranked by each generator alone: what the ranker must beat
        alone_rows = [on_held_out(alone(j)) for j in range(len(table.generators))]
        report["valid_ndcg@20_heldout_per_generator"] = {
            g: round(float(a.mean()) if len(a) else 0.0, 4) for g, a in zip(table.generators, alone_rows)}
        # the alternative is the generator that ranks the whole validation window best (all its users: a
        # steadier choice than the fifth held out); the ranker must beat it there on the held-out users
        best = int(np.argmax(per_gen))
        judged_by, judge, base_rows = "held-out", on_held_out, alone_rows[best]
        out_of_fold = bag_scores is not None or (cfg.ranker_guard and len(val_users) < cfg.ranker_guard_cv_users)
        if bag_scores is not None:  # each user scored by the member early-stopped on its fold
            judged_by, judge = f"{cfg.ranker_bag}-fold out-of-fold (the bag's members)", on_all
            ranker_rows, base_rows = judge(bag_scores), judge(alone(best))
            report["valid_ndcg@20_out_of_fold"] = {"ranker": round(float(ranker_rows.mean()), 4),
                                                   table.generators[best]: round(float(base_rows.mean()), 4)}
        elif out_of_fold:
            judged_by, judge = f"{cfg.ranker_guard_folds}-fold out-of-fold", on_all
            ranker_rows = judge(self._out_of_fold(X, y, table, n_relevant, names, rng))
            base_rows = judge(alone(best))
            report["valid_ndcg@20_out_of_fold"] = {"ranker": round(float(ranker_rows.mean()), 4),
                                                   table.generators[best]: round(float(base_rows.mean()), 4)}
        versus = table.generators[best]
        gain = self._gain(ranker_rows, base_rows, versus, judged_by, report, "ranker_gain_heldout")
        if not cfg.ranker_guard or (gain is not None and gain.diff > 0 and gain.p_ttest < cfg.ranker_guard_p):
            return fused
        p_value = f", paired t-test p = {gain.p_ttest:.3g}" if gain is not None else ""
        verdict = (f"the ranker ({float(ranker_rows.mean()):.4f}) did not beat {versus} ({float(base_rows.mean()):.4f})"
                   f" on {judged_by} validation users at p < {cfg.ranker_guard_p:g}{p_value}")
        if cfg.ranker_guard_blend:
            if out_of_fold:
                blend = self._blend_out_of_fold(table, y, n_relevant, rng)
            else:  # tuned on the ranker's training users: a ranker started from a blend has that one
                blend = (start or _blend_tuned_on(table, y, n_relevant, slice(0, cut))).predict(table)
            blend_rows = judge(blend)
            b_gain = self._gain(blend_rows, base_rows, versus, judged_by, report, "blend_gain_heldout")
            if b_gain is not None:
                won = b_gain.diff > 0 and b_gain.p_ttest < cfg.ranker_guard_p
                verdict += (f"; the linear blend ({float(blend_rows.mean()):.4f}) {'did' if won else 'did not'}, "
                            f"p = {b_gain.p_ttest:.3g}")
                if won:  # served: the same procedure on every validation user (as the blend fuser is fitted)
                    self.fuser_ = LinearBlend().fit(table, y, n_relevant)
                    report["blend_weights"] = dict(zip(table.generators, map(float, self.fuser_.weights_)))
                    report["ranker_guard"] = f"{verdict}: serving the linear blend"
                    return self.fuser_.predict(table)
        self.fuser_ = BestSingle()
        self.fuser_.index_ = best
        report["ranker_guard"] = f"{verdict}: serving {versus} alone"
        return self.fuser_.predict(table)

    @staticmethod
    def _matching(names: list[str], patterns: list[str]) -> list[int]:
        return [j for j, n in enumerate(names) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]

    def _aligned_columns(self, names: list[str]) -> list[int]:
        """The `ranker_align` features, less the ignored ones (no tree splits on those)."""
        ignored = set(self._matching(names, self.cfg.ranker_ignore))
        return [j for j in self._matching(names, self.cfg.ranker_align) if j not in ignored]

    def align_ranker(self, histories: sp.csr_matrix, seen: sp.csr_matrix) -> None:
        """After the refit: the serving stage's quantiles of the `ranker_align` features, over the
        candidates of up to `ranker_align_users` users with a history (`histories`, `seen`: every user's
        rows), queried as the ranker's training users were."""
        cfg = self.cfg
        if not isinstance(self.fuser_, LambdaRankFuser) or not cfg.ranker_align:
            return
        aligned = self._aligned_columns(self.feature_names(list(self.generators_)))
        users = np.flatnonzero(np.diff(histories.indptr) > 0)
        rng = np.random.default_rng(cfg.seed)
        if len(users) > cfg.ranker_align_users:
            users = np.sort(rng.choice(users, cfg.ranker_align_users, replace=False))
        queried = np.full(len(users), -1, np.int64) if cfg.anonymous_queries else users
        h = histories[users]
        table = self._candidate_table(self.generators_, queried, h, exclude=seen[users] if cfg.exclude_seen else None)
        X = self._features(table, queried, h, self.item_features_, self.user_features_,
                           item_similarity_of(self.generators_))
        self.fuser_.align_ = QuantileAlignment.fit(X, aligned, seed=cfg.seed)

    @staticmethod
    def _gain(rows: np.ndarray, base_rows: np.ndarray, versus: str, judged_by: str, report: dict[str, Any],
              key: str) -> Any:
        """The paired test of per-user NDCG@20 `rows` against `base_rows`, also reported under `key`."""
        if len(rows) < 2:
            return None
        gain = paired_test(rows, base_rows)
        report[key] = {"versus": versus, "ndcg@20": round(gain.diff, 4), "p": float(f"{gain.p_ttest:.3g}"),
                       "users": gain.n_users, "judged_by": judged_by}
        return gain

    def _fit_ranker(self, X: np.ndarray, y: np.ndarray, table: CandidateTable, n_relevant: np.ndarray,
                    train: slice | np.ndarray, stop: slice | np.ndarray, names: list[str]) -> LambdaRankFuser:
        """A ranker trained on the pairs `train` and early-stopped on the pairs `stop` (slices keep the
        training rows views of X; masks copy), started from a blend tuned on the `train` pairs alone."""
        start = init = None
        if self.cfg.ranker_start == "blend":
            start = _blend_tuned_on(table, y, n_relevant, train)
            init = start.predict(table).astype(np.float64)
        return LambdaRankFuser(self.cfg.ranker, seed=self.cfg.seed).fit(
            X[train], y[train], table.rows[train], X[stop], y[stop], table.rows[stop], names, start=start,
            init=None if init is None else init[train], init_val=None if init is None else init[stop])

    def _fit_bag(self, X: np.ndarray, y: np.ndarray, table: CandidateTable, n_relevant: np.ndarray,
                 names: list[str], rng: np.random.Generator) -> tuple[LambdaRankFuser, np.ndarray]:
        """`ranker_bag` rankers, member f trained on the users of the other folds and early-stopped on fold
        f's; returns their mean and each candidate's score from the member of its user's fold."""
        members, out = self._fold_rankers(X, y, table, n_relevant, names, rng, self.cfg.ranker_bag, stop_offset=0)
        return LambdaRankFuser.bag(members), out

    def _out_of_fold(self, X: np.ndarray, y: np.ndarray, table: CandidateTable, n_relevant: np.ndarray,
                     names: list[str], rng: np.random.Generator) -> np.ndarray:
        """The ranker's score of every candidate from a ranker that never saw its user: users are dealt into
        folds; fold f is scored by a ranker trained on the folds other than f and f + 1, early-stopped on
        f + 1. What the guard tests is the procedure (a ranker on three fifths of the users), a little
        weaker than the final ranker (four fifths), so the guard errs towards the single generator."""
        return self._fold_rankers(X, y, table, n_relevant, names, rng, self.cfg.ranker_guard_folds, stop_offset=1)[1]

    def _fold_rankers(self, X: np.ndarray, y: np.ndarray, table: CandidateTable, n_relevant: np.ndarray,
                      names: list[str], rng: np.random.Generator, k: int,
                      stop_offset: int) -> tuple[list[LambdaRankFuser], np.ndarray]:
        """Users dealt into `k` folds; for each fold f a ranker early-stopped on fold f + `stop_offset`,
        trained on the folds other than that one and f, scores fold f. Returns the rankers and every
        candidate's score from the one that scored its user's fold (a fold too few users left empty
        has no ranker)."""
        of_row = _deal_folds(table, k, rng)
        rankers, out = [], np.zeros(len(table.rows), np.float32)
        for f in range(k):
            judged, stop = of_row == f, of_row == (f + stop_offset) % k
            train = ~judged & ~stop
            if not judged.any() or not stop.any() or not train.any():
                continue
            r = self._fit_ranker(X, y, table, n_relevant, train, stop, names)
            out[judged] = r.predict(X[judged], sub_table(table, judged)[0])  # whole users: same normalisation
            rankers.append(r)
        return rankers, out

    def _blend_out_of_fold(self, table: CandidateTable, y: np.ndarray, n_relevant: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
        """Each candidate's score from a linear blend tuned on the other folds' users (no early stopping
        to hold a fold back for, unlike the ranker's out-of-fold scores)."""
        k = self.cfg.ranker_guard_folds
        of_row = _deal_folds(table, k, rng)
        out = np.zeros(len(table.rows), np.float32)
        for f in range(k):
            judged = of_row == f
            if not judged.any() or judged.all():
                continue
            blend = _blend_tuned_on(table, y, n_relevant, ~judged)
            out[judged] = blend.predict(sub_table(table, judged)[0])  # whole users: same normalisation
        return out

    # -- candidates and features --------------------------------------------------------------
    def _candidate_table(self, gens: dict[str, CandidateGenerator], users: np.ndarray, histories: sp.csr_matrix,
                         exclude: sp.csr_matrix | None, live: bool = False) -> CandidateTable:
        n_items = next(iter(gens.values())).n_items_
        names = list(gens)
        per = []
        for name in names:
            if live and _takes_live(gens[name]):  # re-solved from the current history (live events)
                idx, sc = gens[name].recommend(users, histories, self._n_for(name), exclude=exclude,
                                               live=True)
            else:
                idx, sc = gens[name].recommend(users, histories, self._n_for(name), exclude=exclude)
            ok = np.isfinite(sc) & (idx >= 0)
            rows = np.broadcast_to(np.arange(len(users))[:, None], idx.shape)
            ranks = np.broadcast_to(np.arange(1, idx.shape[1] + 1, dtype=np.float32)[None, :], idx.shape)
            per.append((rows[ok].astype(np.int64) * n_items + idx[ok], sc[ok], ranks[ok], idx.shape[1]))
        keys = np.unique(np.concatenate([p[0] for p in per])) if per else np.empty(0, np.int64)
        scores = np.full((len(keys), len(names)), np.nan, np.float32)
        ranks = np.empty((len(keys), len(names)), np.float32)
        for g, (k, s, r, n) in enumerate(per):
            ranks[:, g] = n + 1
            pos = np.searchsorted(keys, k)
            scores[pos, g] = s
            ranks[pos, g] = r
        return CandidateTable(rows=keys // n_items, items=keys % n_items, scores=scores, ranks=ranks,
                              generators=names, n_rows=len(users))

    @staticmethod
    def feature_names(generators: list[str]) -> list[str]:
        per_gen = [f"{g}_{what}" for g in generators for what in ("score", "score_norm", "rank", "proposed")]
        return per_gen + ["n_generators"] + list(ITEM_FEATURES) + list(USER_FEATURES) + list(PAIR_FEATURES)

    @staticmethod
    def _features(table: CandidateTable, users: np.ndarray, histories: sp.csr_matrix, item_f: ItemFeatures,
                  user_f: UserFeatures, item_sim: sp.csr_matrix | None,
                  sessions: sp.csr_matrix | None = None) -> np.ndarray:
        """[pairs, features] in `feature_names` order, each block written into one float32 matrix (a
        training set of millions of pairs is gigabytes: no block is stacked into a second copy).
        `item_sim` and `sessions`: see `pair_features`."""
        g = len(table.generators)
        n_item, n_user = len(ITEM_FEATURES), len(USER_FEATURES)
        X = np.empty((len(table.rows), 4 * g + 1 + n_item + n_user + len(PAIR_FEATURES)), np.float32)
        proposed = table.proposed
        X[:, 0:4 * g:4] = table.scores
        X[:, 1:4 * g:4] = table.normalised_scores(np.float32)
        X[:, 1:4 * g:4][~proposed] = np.nan
        X[:, 2:4 * g:4] = table.ranks
        X[:, 3:4 * g:4] = proposed
        X[:, 4 * g] = proposed.sum(axis=1)
        c = 4 * g + 1
        X[:, c:c + n_item] = item_f.values[table.items]
        c += n_item
        X[:, c:c + n_user] = user_f.rows(np.asarray(users)[table.rows])
        pair_features(users, histories, table.rows, table.items, item_f, user_f, out=X[:, c + n_user:],
                      item_sim=item_sim, sessions=sessions)
        return X

    # -- scoring ------------------------------------------------------------------------------
    def fused_table(self, users: np.ndarray, histories: sp.csr_matrix, exclude: sp.csr_matrix | None,
                    live: bool = False, sessions: sp.csr_matrix | None = None) -> tuple[CandidateTable, np.ndarray]:
        """The candidate table of a batch and the fused score of every pair (`live`: see recommend_query;
        `sessions`: each row's current-session items, default the users' most recent ones)."""
        table = self._candidate_table(self.generators_, users, histories, exclude, live=live)
        if isinstance(self.fuser_, LambdaRankFuser):
            X = self._features(table, users, histories, self.item_features_, self.user_features_,
                               item_similarity_of(self.generators_), sessions)
            return table, self.fuser_.predict(self._ranker_columns(X, table.generators), table)
        return table, self.fuser_.predict(table)

    @staticmethod
    def tiebreak(table: CandidateTable) -> np.ndarray:
        """What orders candidates the fuser scores alike (a ranker of few or small trees gives whole groups
        one score): their reciprocal-rank fusion over the generators, not their item index, which would
        put the newest items (the highest indices) last in every tie."""
        return ReciprocalRankFusion().predict(table)

    def recommend(self, users: np.ndarray, histories: sp.csr_matrix | None, n: int,
                  exclude: sp.csr_matrix | None = None, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(users, np.int64)
        h = self._histories(histories, len(users))
        out_i = np.full((len(users), n), -1, np.int64)
        out_s = np.full((len(users), n), -np.inf, np.float32)
        for sl in iter_batches(len(users), batch_size):
            ex = exclude[sl] if exclude is not None else None
            table, fused = self.fused_table(users[sl], h[sl], ex)
            out_i[sl], out_s[sl] = top_per_row(table.rows, table.items, fused, table.n_rows, n,
                                               tiebreak=self.tiebreak(table))
        return out_i, out_s

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        """Dense scores: fused scores on the candidates, -inf elsewhere."""
        users = np.asarray(users, np.int64)
        h = self._histories(histories, len(users))
        table, fused = self.fused_table(users, h, None)
        out = np.full((len(users), self.n_items_), -np.inf, np.float32)
        out[table.rows, table.items] = fused
        return out

    def recommend_query(self, query: Query, n: int, filters: RequestFilters | None = None,
                        reranker: Reranker | None = None, n_pool: int = 200,
                        live: bool = False) -> list[Recommendation]:
        """The online path for one user or session: fused candidates, re-ranked, with explanations.

        `query.history` holds the user's current history (training events plus live ones), so a new
        event changes the next answer at once; with `live=True` (the user has events since training)
        known users' factor models fold that history in instead of using their trained vectors.
        """
        from fusionrec.rerank.explain import history_contributions

        hist, ex = query.history_row(self.n_items_), query.exclude_row(self.n_items_)
        users = np.asarray([query.user], np.int64)
        session = query.session_row(self.n_items_, SESSION_ITEMS)  # a live request's newest items count at once
        table, fused = self.fused_table(users, hist, ex, live=live, sessions=session)
        order = np.lexsort((-self.tiebreak(table), -fused))[:n_pool]
        items, scores = table.items[order], fused[order]
        ranks = table.ranks[order]
        proposed = table.proposed[order]
        reranker = reranker or Reranker(RerankConfig(), self.catalog())
        pos = {int(i): p for p, i in enumerate(items)}
        sim = None
        if reranker.config.mmr_lambda < 1.0 and not (reranker.catalog.category[items] >= 0).any():
            sim = self.item_similarity(items)  # no categories to diversify over: content or co-occurrence
        items, scores = reranker.rerank(items, scores, n, filters, similarity=sim)
        picked = np.asarray([pos[int(i)] for i in items], np.int64)
        sim = self.explaining_similarity()
        because = history_contributions(hist, sim, items) if sim is not None else [[] for _ in items]
        out = []
        for k, (item, score) in enumerate(zip(items, scores)):
            p = picked[k]
            gens = {g: int(ranks[p, j]) for j, g in enumerate(table.generators) if proposed[p, j]}
            out.append(Recommendation(int(item), float(score), Explanation(gens, because[k])))
        return out

    def explaining_similarity(self) -> sp.csr_matrix | None:
        """An item x item similarity to attribute recommendations to history items."""
        return item_similarity_of(self.generators_)

    def _ranker_columns(self, X: np.ndarray, generators: list[str]) -> np.ndarray:
        """X's columns in the order the ranker was trained on: a version saved before a feature was added
        reads its own features by name and ignores the new ones."""
        want = self.fuser_.feature_names_
        names = self.feature_names(generators)
        if want == names:
            return X
        missing = [n for n in want if n not in names]
        if missing:
            raise ValueError(f"the saved ranker uses features this fusionrec does not compute ({', '.join(missing)}); "
                             "retrain the model version")
        return np.ascontiguousarray(X[:, [names.index(n) for n in want]])

    def item_similarity(self, items: np.ndarray) -> np.ndarray | None:
        """[len(items)]^2 similarity in [0, 1] for MMR where the catalogue has no categories: the cosine
        of content vectors when a content generator is fused, else the item-kNN neighbourhoods."""
        for gen in self.generators_.values():
            vec = getattr(gen, "vectors_", None)
            if vec is not None and vec.shape[1]:
                v = vec[items]
                s = v @ v.T
                return np.clip(np.asarray(s.toarray() if sp.issparse(s) else s, np.float64), 0.0, 1.0)
        knn = self.explaining_similarity()
        if knn is None:
            return None
        s = knn[items][:, items].toarray().astype(np.float64)
        s = np.maximum(s, s.T)
        top = s.max()
        return s / top if top > 0 else s

    def catalog(self) -> ItemCatalog:
        """Stock, price, category and brand per item, for filters and rules."""
        f = self.item_features_
        return ItemCatalog(category=f.category, brand=f.brand, price=f.price, available=f.available,
                           consumable=f.consumable, category_names=f.category_names, brand_names=f.brand_names)

    def candidates(self, query: Query, n: int) -> ScoredItems:
        hist, ex = query.history_row(self.n_items_), query.exclude_row(self.n_items_)
        items, scores = self.recommend(np.asarray([query.user], np.int64), hist, n, exclude=ex)
        keep = np.isfinite(scores[0])
        return ScoredItems(items[0][keep], scores[0][keep])

    # -- persistence --------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"name": self.name, "config": self.config(),
                                                        "report": self.report_}, indent=1, default=str))
        self.items_.save(folder / "items.txt")
        self.users_.save(folder / "users.txt")
        for name, gen in self.generators_.items():
            gen.save(folder / "generators" / name)
        save_arrays(folder / "features.npz", {**self.item_features_.to_arrays(), **self.user_features_.to_arrays()})
        (folder / "feature_names.json").write_text(self.item_features_.names_json())
        fuser: dict[str, Any] = {"kind": self.fuser_.kind}
        if isinstance(self.fuser_, LambdaRankFuser):
            for k, text in enumerate(self.fuser_.save_texts()):
                (folder / _ranker_file(k)).write_text(text)
            fuser["features"] = self.fuser_.feature_names_
            fuser["members"] = len(self.fuser_.boosters_)
            if self.fuser_.align_ is not None:
                fuser["align"] = self.fuser_.align_.to_dict()
            if any(s is not None for s in self.fuser_.starts_):
                fuser["start_weights"] = [None if s is None else [float(w) for w in s.weights_]
                                          for s in self.fuser_.starts_]
        elif isinstance(self.fuser_, LinearBlend):
            fuser["weights"] = [float(w) for w in self.fuser_.weights_]  # type: ignore[union-attr]
        elif isinstance(self.fuser_, BestSingle):
            fuser["index"] = self.fuser_.index_
        (folder / "fuser.json").write_text(json.dumps(fuser))

    @classmethod
    def load(cls, folder: Path) -> "FusedPipeline":
        from fusionrec.candidates.registry import load_generator

        folder = Path(folder)
        meta = json.loads((folder / "config.json").read_text())
        obj = cls(PipelineConfig(**meta["config"]))
        obj.report_ = meta.get("report", {})
        vocabularies: dict[str, Vocabulary] = {}  # the generators mostly saved the pipeline's own
        obj.items_ = Vocabulary.load(folder / "items.txt", vocabularies)
        obj.users_ = Vocabulary.load(folder / "users.txt", vocabularies)
        obj.n_items_ = len(obj.items_)
        bad = [n for n in obj.cfg.generators if not _PLAIN_NAME.fullmatch(n) or n in (".", "..")]
        if bad:  # a name is a folder under generators/: never a path out of the version folder
            raise ValueError(f"{folder}/config.json: generator names {bad!r} are not plain names")
        obj.generators_ = {name: load_generator(folder / "generators" / name, vocabularies)
                           for name in obj.cfg.generators}
        arrays = load_arrays(folder / "features.npz")
        obj.item_features_ = ItemFeatures.from_arrays(arrays, (folder / "feature_names.json").read_text())
        obj.user_features_ = UserFeatures.from_arrays(arrays)
        fuser = json.loads((folder / "fuser.json").read_text())
        if fuser["kind"] == "lambdarank":
            f = LambdaRankFuser(obj.cfg.ranker, seed=obj.cfg.seed)
            members = int(fuser.get("members", 1))
            weights = fuser.get("start_weights") or [None] * members
            if weights and not isinstance(weights[0], (list, type(None))):
                weights = [weights]  # saved before bags: one ranker's blend
            starts = [None if w is None else LinearBlend.with_weights(w) for w in weights]
            f.load_texts([(folder / _ranker_file(k)).read_text() for k in range(members)], fuser["features"], starts)
            if "align" in fuser:
                f.align_ = QuantileAlignment.from_dict(fuser["align"])
                if any(not 0 <= j < len(f.feature_names_) for j in f.align_.columns):
                    raise ValueError(f"{folder}/fuser.json: align names a column the ranker does not have")
            obj.fuser_ = f
        elif fuser["kind"] == "blend":
            obj.fuser_ = LinearBlend.with_weights(fuser["weights"])
        elif fuser["kind"] == "best":
            bs = BestSingle()
            bs.index_ = int(fuser["index"])
            obj.fuser_ = bs
        else:
            obj.fuser_ = ReciprocalRankFusion()
        return obj


def _deal_folds(table: CandidateTable, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each candidate's fold: the table's users dealt at random into `k` folds, a user's pairs together."""
    return (rng.permutation(table.n_rows) % k)[table.rows]


def _ranker_file(k: int) -> str:
    """Where a model version keeps its ranker's k-th booster (a bag has several)."""
    return "ranker.txt" if k == 0 else f"ranker_{k}.txt"


def item_similarity_of(generators: dict[str, CandidateGenerator]) -> sp.csr_matrix | None:
    """The item x item similarity of the first generator (in config order) that has one (item-kNN,
    RP3beta, co-visitation): what explanations attribute recommendations with and what ui_session_cooc
    measures a candidate's co-occurrence with the session by; None when no generator has one."""
    for gen in generators.values():
        sim = getattr(gen, "sim_", None)
        if sim is not None:
            return sim
    return None


def _takes_live(gen: CandidateGenerator) -> bool:
    return _score_takes_live(type(gen))


@functools.cache
def _score_takes_live(kind: type) -> bool:
    # asked on every live request: inspect.signature costs tens of microseconds, the answer is per class
    return "live" in inspect.signature(kind.score).parameters


class BlendPipeline(FusedPipeline):
    """The same pipeline with a linear blend of normalised scores (weights tuned on validation)."""

    name: ClassVar[str] = "blend"

    def __init__(self, cfg: PipelineConfig | None = None) -> None:
        super().__init__(_with_fuser(cfg, "blend"))


class RRFPipeline(FusedPipeline):
    """The same pipeline with reciprocal-rank fusion (nothing learned)."""

    name: ClassVar[str] = "rrf"

    def __init__(self, cfg: PipelineConfig | None = None) -> None:
        super().__init__(_with_fuser(cfg, "rrf"))


class BestSinglePipeline(FusedPipeline):
    """The best single generator on validation, chosen inside the pipeline."""

    name: ClassVar[str] = "best"

    def __init__(self, cfg: PipelineConfig | None = None) -> None:
        super().__init__(_with_fuser(cfg, "best"))


def _with_fuser(cfg: PipelineConfig | None, fuser: str) -> PipelineConfig:
    from dataclasses import replace

    return replace(cfg or PipelineConfig(), fuser=fuser)
