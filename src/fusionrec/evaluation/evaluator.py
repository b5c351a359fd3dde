"""Offline evaluation: fit each model on a protocol's training data, rank all items for every test user,
score the lists, attach confidence intervals and paired comparisons, and write the contract's JSON and CSV.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats as sps

from fusionrec.candidates.base import CandidateGenerator
from fusionrec.evaluation import metrics as M
from fusionrec.evaluation.splits import DatasetLike, EvaluationError, Split, make_splits
from fusionrec.evaluation.stats import bootstrap_ci, bootstrap_counts, paired_test, paired_tests

__all__ = ["evaluate", "evaluate_splits", "EvalResult", "ModelResult", "RecommendationBlock", "ModelFactory",
           "per_user_metric_names", "aggregate_metric_names", "metric_names"]

ModelFactory = Callable[[str, dict[str, Any]], CandidateGenerator]
Progress = Callable[[str], None]

# per K, in the order the JSON lists them
_PER_USER_EXTRA = ("diversity", "novelty")
_AGGREGATE = ("coverage", "gini")


def per_user_metric_names(ks: Sequence[int]) -> list[str]:
    """Metrics with one value per user (they get bootstrap CIs and paired tests): recall@10, ..."""
    return [f"{m}@{k}" for k in ks for m in (*M.RANKING_METRICS, *_PER_USER_EXTRA)]


def aggregate_metric_names(ks: Sequence[int]) -> list[str]:
    """Metrics of the whole set of lists (coverage, Gini)."""
    return [f"{m}@{k}" for k in ks for m in _AGGREGATE]


def metric_names(ks: Sequence[int]) -> list[str]:
    """Every metric name in report order: recall@10, precision@10, ..., gini@20."""
    return [f"{m}@{k}" for k in ks for m in (*M.RANKING_METRICS, "coverage", *_PER_USER_EXTRA, "gini")]


@dataclass
class RecommendationBlock:
    """One split's top-K lists for save_recs: item indices into `item_ids` (-1 = no item), best first."""

    user_ids: list[str]
    items: np.ndarray  # [U, K] int64
    scores: np.ndarray  # [U, K] float32
    item_ids: np.ndarray  # object array: raw id per item index


@dataclass
class ModelResult:
    """Everything measured for one model; per-user arrays are pooled over folds in kfold."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    ci: dict[str, tuple[float, float]]
    fit_seconds: float
    recommend_seconds: float
    std: dict[str, float] | None = None  # kfold: across folds
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    fold_fit_seconds: list[float] = field(default_factory=list)
    fold_recommend_seconds: list[float] = field(default_factory=list)
    recs: list[RecommendationBlock] = field(default_factory=list, repr=False)
    rec_popularity: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    fit_reports: list[dict[str, Any]] = field(default_factory=list)  # per fold, from models that report one

    def to_dict(self, ks: Sequence[int]) -> dict[str, Any]:
        order = [m for m in metric_names(ks) if m in self.metrics]
        out: dict[str, Any] = {
            "metrics": {m: self.metrics[m] for m in order},
            "fit_seconds": self.fit_seconds,
            "recommend_seconds": self.recommend_seconds,
            "params": self.params,
            "ci": {m: list(self.ci[m]) for m in order if m in self.ci},
            "n_users_evaluated": int(len(next(iter(self.per_user.values())))) if self.per_user else 0,
        }
        if any(self.fit_reports):
            out["fit_reports"] = self.fit_reports
        if self.std is not None:
            out["std"] = {m: self.std[m] for m in order if m in self.std}
            out["folds"] = [{m: f[m] for m in order if m in f} for f in self.fold_metrics]
            out["fit_seconds_per_fold"] = self.fold_fit_seconds
            out["recommend_seconds_per_fold"] = self.fold_recommend_seconds
        return out


@dataclass
class EvalResult:
    """The outcome of `evaluate`: serialises to the contract's `--output` JSON and `--save-recs` CSV."""

    dataset: str
    format: str
    protocol: str
    ks: list[int]
    n_users_evaluated: int
    n_items: int
    exclude_seen: bool
    models: dict[str, ModelResult]
    comparisons: list[dict[str, Any]]
    primary_metric: str
    best_model: str | None
    seed: int
    checksum: str = ""
    split_description: list[str] = field(default_factory=list)
    test_days: float | None = None
    folds: int | None = None
    command: str | None = None
    n_bootstrap: int = 1000
    item_popularity: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    n_train_users: int = 0
    #: how many test targets are items no one touched in training, and the best recall / hit rate a
    #: model that only proposes items seen in training can reach (content can go past it)
    reach: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The `--output` JSON object (CONTRACT.md), with extra keys only added, never renamed."""
        out: dict[str, Any] = {
            "dataset": self.dataset, "format": self.format, "protocol": self.protocol, "k": list(self.ks),
            "n_users_evaluated": self.n_users_evaluated, "n_items": self.n_items,
            "exclude_seen": self.exclude_seen,
        }
        if self.test_days is not None:
            out["test_days"] = self.test_days
        if self.folds is not None:
            out["folds"] = self.folds
        out.update({"seed": self.seed, "n_bootstrap": self.n_bootstrap, "checksum": self.checksum,
                    "split": self.split_description,
                    "primary_metric": self.primary_metric, "best_model": self.best_model})
        if self.reach:
            out["targets_reachable"] = self.reach
        out["models"] = {name: r.to_dict(self.ks) for name, r in self.models.items()}
        out["comparisons"] = self.comparisons
        return _jsonable(out)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write_json(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def recommendations(self) -> pl.DataFrame:
        """model, user_id, rank (from 1), item_id, score: every evaluated user's list for every model."""
        frames = []
        for name, r in self.models.items():
            for blk in r.recs:
                u, k = blk.items.shape
                valid = blk.items >= 0
                rows, cols = np.nonzero(valid)
                frames.append(pl.DataFrame({
                    "model": pl.Series([name] * len(rows), dtype=pl.Utf8),
                    "user_id": pl.Series(np.asarray(blk.user_ids, dtype=object)[rows], dtype=pl.Utf8),
                    "rank": pl.Series(cols + 1, dtype=pl.Int64),
                    "item_id": pl.Series(blk.item_ids[blk.items[valid]], dtype=pl.Utf8),
                    "score": pl.Series(blk.scores[valid], dtype=pl.Float32),
                }))
        if not frames:
            return pl.DataFrame(schema={"model": pl.Utf8, "user_id": pl.Utf8, "rank": pl.Int64,
                                        "item_id": pl.Utf8, "score": pl.Float32})
        return pl.concat(frames)

    def save_recs(self, path: Path) -> Path:
        """Write the `--save-recs` CSV: `model,user_id,rank,item_id,score`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.recommendations().write_csv(path)
        return path

    def compare(self, model: str, versus: str, metric: str, n_bootstrap: int = 1000) -> dict[str, Any]:
        """Paired test of `model` minus `versus` on a per-user metric, e.g. compare("fusion", "ease", "ndcg@20")."""
        for name in (model, versus):
            if name not in self.models:
                raise EvaluationError(f"no model {name!r} in this evaluation ({', '.join(self.models)})")
        a, b = self.models[model].per_user.get(metric), self.models[versus].per_user.get(metric)
        if a is None or b is None:
            raise EvaluationError(f"no per-user metric {metric!r}; have {', '.join(self.models[model].per_user)}")
        test = paired_test(a, b, n_bootstrap=n_bootstrap, seed=self.seed)
        return {"metric": metric, "model": model, "versus": versus, **test.to_dict()}


# -- the harness --------------------------------------------------------------------------------

def evaluate(ds: DatasetLike, protocol: str, models: Sequence[str], ks: Sequence[int] = (10, 20),
             params: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
             test_days: float | None = None, exclude_seen: bool = True, folds: int = 5,
             progress: Progress | None = None, *, factory: ModelFactory | None = None,
             n_bootstrap: int = 1000, batch_size: int = 1024, command: str | None = None) -> EvalResult:
    """Evaluate named models on a dataset under a protocol ("given", "temporal", "leave-last-out", "kfold").

    Models come from `fusionrec.candidates.registry.make(name, params[name])` unless `factory` is given.
    Each model is fitted on the split's training data only; the test targets are used for scoring alone.
    """
    splits = make_splits(ds, protocol, test_days=test_days, exclude_seen=exclude_seen, folds=folds, seed=seed)
    params = _with_exclude_seen(models, params, exclude_seen)
    result = evaluate_splits(splits, models, ks, params=params, seed=seed, progress=progress, factory=factory,
                             n_bootstrap=n_bootstrap, batch_size=batch_size)
    result.dataset, result.format, result.checksum = ds.name, ds.format, getattr(ds, "checksum", "")
    result.test_days = float(test_days) if protocol == "temporal" and test_days is not None else None
    result.folds = folds if protocol == "kfold" else None
    result.command = command
    return result


def evaluate_splits(splits: Iterable[Split], models: Sequence[str], ks: Sequence[int] = (10, 20),
                    params: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                    progress: Progress | None = None, factory: ModelFactory | None = None,
                    n_bootstrap: int = 1000, batch_size: int = 1024) -> EvalResult:
    """Evaluate on ready-made splits (one, or the folds of kfold); see `evaluate`."""
    ks = _check_ks(ks)
    names = _check_models(models)
    params = {k: dict(v) for k, v in (params or {}).items()}
    make = factory or _registry_factory
    say = progress or (lambda _msg: None)

    runs: dict[str, list[_SplitRun]] = {n: [] for n in names}
    split_list: list[Split] = []
    configs: dict[str, dict[str, Any]] = {}
    pending = {n: _make_model(make, n, params.get(n, {})) for n in names}  # fail fast on unknown names
    for fold, split in enumerate(splits):
        split_list.append(split)
        label = f" (fold {fold + 1})" if split.fold is not None else ""
        if split.n_users == 0:
            raise EvaluationError(f"the {split.protocol} split{label} has no test users with targets: "
                                  f"{split.description}")
        say(f"split{label}: {split.description}")
        context = _SplitContext.of(split)
        for name in names:
            model = pending.pop(name, None) or _make_model(make, name, params.get(name, {}))
            say(f"{name}{label}: fitting on {split.train.events.height} events")
            runs[name].append(_run_split(split, context, model, ks, batch_size))
            configs.setdefault(name, _params_of(model, params.get(name, {})))
            say(f"{name}{label}: fit {runs[name][-1].fit_seconds:.2f}s, "
                f"recommend {runs[name][-1].recommend_seconds:.2f}s")
    if not split_list:
        raise EvaluationError("the protocol produced no split")

    kfold = len(split_list) > 1
    results = {name: _summarise(name, runs[name], configs[name], ks, kfold, n_bootstrap, seed) for name in names}
    primary = f"ndcg@{ks[-1]}"
    best = max(names, key=lambda n: results[n].metrics.get(primary, -math.inf)) if names else None
    comparisons = []
    if best is not None:
        for other in names:
            if other == best:
                continue
            compared = [f"{m}@{k}" for k in ks for m in M.RANKING_METRICS]
            tests = paired_tests(np.column_stack([results[best].per_user[m] for m in compared]),
                                 np.column_stack([results[other].per_user[m] for m in compared]),
                                 n_bootstrap=n_bootstrap, seed=seed)
            comparisons.extend({"metric": metric, "model": best, "versus": other, **test.to_dict()}
                               for metric, test in zip(compared, tests))
    first = split_list[0]
    return EvalResult(
        dataset="", format="", protocol=first.protocol, ks=ks,
        n_users_evaluated=int(sum(s.n_users for s in split_list)),
        n_items=int(max(s.n_items for s in split_list)), exclude_seen=first.exclude_seen, models=results,
        comparisons=comparisons, primary_metric=primary, best_model=best, seed=seed, n_bootstrap=n_bootstrap,
        split_description=[s.description for s in split_list],
        item_popularity=first.train.item_popularity(), n_train_users=first.train.n_users,
        reach=_reach(split_list, ks),
    )


# -- internals ----------------------------------------------------------------------------------

def _reach(splits: list[Split], ks: list[int]) -> dict[str, Any]:
    """Targets on items without a training interaction, and the ceilings they leave (all splits' users)."""
    cold, total, per_user = 0, 0, []
    for split in splits:
        warm = split.train.item_popularity() > 0
        total += split.targets.nnz
        cold += split.targets.nnz - int(M.warm_target_counts(split.targets, warm).sum())
        per_user.append(M.reachable_ceilings(split.targets, warm, ks))
    ceilings = {m: round(float(np.concatenate([p[m] for p in per_user]).mean()), 4) for m in per_user[0]}
    return {"targets": total, "cold_share": round(cold / max(total, 1), 4), "ceilings": ceilings}


@dataclass
class _SplitContext:
    """What the beyond-accuracy metrics need of a split, computed once for all models."""

    popularity: np.ndarray
    n_train_users: int
    categories: np.ndarray | None
    interactions: sp.csr_matrix

    @classmethod
    def of(cls, split: Split) -> "_SplitContext":
        cats = split.train.item_categories()
        if cats is not None and not (np.asarray(cats) >= 0).any():
            cats = None
        return cls(popularity=split.train.item_popularity(), n_train_users=split.train.n_users,
                   categories=cats, interactions=split.train.matrix())


@dataclass
class _SplitRun:
    per_user: dict[str, np.ndarray]
    aggregate: dict[str, float]
    items: np.ndarray  # [U, kmax] recommended item indices, -1 = none
    n_items: int
    fit_seconds: float
    recommend_seconds: float
    block: RecommendationBlock
    rec_popularity: np.ndarray
    fit_report: dict[str, Any] = field(default_factory=dict)  # what the model said about its fit (fused pipelines)


def _run_split(split: Split, ctx: _SplitContext, model: CandidateGenerator, ks: list[int],
               batch_size: int) -> _SplitRun:
    kmax = ks[-1]
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    items, scores = model.recommend(split.users, split.histories, kmax, exclude=split.exclude,
                                    batch_size=batch_size)
    rec_s = time.perf_counter() - t0
    items = np.asarray(items, np.int64)
    scores = np.asarray(scores, np.float32)
    n_items = split.n_items
    # excluded (-inf) or unscorable entries are not recommendations
    invalid = ~np.isfinite(scores) | (items < 0) | (items >= n_items)
    items = np.where(invalid, -1, items)
    if items.shape[1] < kmax:
        pad = kmax - items.shape[1]
        items = np.hstack([items, np.full((len(items), pad), -1, np.int64)])
        scores = np.hstack([scores, np.full((len(scores), pad), np.nan, np.float32)])
    per_user = M.ranking_metrics(items, split.targets, ks)
    aggregate: dict[str, float] = {}
    diversity = M.intra_list_diversities(items, ks, categories=ctx.categories, interactions=ctx.interactions)
    for k in ks:
        per_user[f"diversity@{k}"] = diversity[k]
        per_user[f"novelty@{k}"] = M.novelty(items, k, ctx.popularity, ctx.n_train_users)
        counts = M.recommendation_counts(items, k, n_items)
        aggregate[f"coverage@{k}"] = float(np.count_nonzero(counts) / max(n_items, 1))
        aggregate[f"gini@{k}"] = float(M.gini(counts))
    valid = items >= 0
    block = RecommendationBlock(user_ids=list(split.user_ids), items=items, scores=scores,
                                item_ids=split.train.items.to_array())
    return _SplitRun(per_user=per_user, aggregate=aggregate, items=items, n_items=n_items,
                     fit_seconds=fit_s, recommend_seconds=rec_s, block=block,
                     rec_popularity=ctx.popularity[items[valid]].astype(np.float32),
                     fit_report=dict(getattr(model, "report_", None) or {}))


def _catalogue_cis(items: np.ndarray, ks: list[int], n_items: int, n_bootstrap: int,
                   seed: int) -> dict[str, tuple[float, float]]:
    """Bias-corrected bootstrap CIs of coverage@K and gini@K from resampled users' item counts, built up
    K slab by K slab (items[:, :10] then items[:, 10:20], ...)."""
    slabs, prev = [], 0
    for k in ks:
        part = items[:, prev:k]
        # float32 is exact for counts below 2**24 and keeps this product memory-light
        slabs.append(M.recommendation_matrix(part, k - prev, n_items).T.tocsr().astype(np.float32))
        prev = k
    samples: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in ("coverage", "gini")}
    for w in bootstrap_counts(len(items), n_bootstrap, seed):
        wt = np.ascontiguousarray(w.T)
        counts = np.zeros((n_items, w.shape[0]), np.float32)
        for k, slab in zip(ks, slabs):
            counts += slab @ wt
            samples[f"coverage@{k}"].append((counts > 0).mean(axis=0))
            samples[f"gini@{k}"].append(np.asarray(M.gini(np.ascontiguousarray(counts.T))))
    # a resample repeats some users' lists, which biases coverage down and Gini up: shift the percentile
    # interval by the bootstrap estimate of that bias, so it is centred on what was measured
    point = {}
    for k in ks:
        counts = M.recommendation_counts(items, k, n_items)
        point[f"coverage@{k}"] = float(np.count_nonzero(counts) / max(n_items, 1))
        point[f"gini@{k}"] = float(M.gini(counts))
    out = {}
    for name, parts in samples.items():
        boot = np.concatenate(parts)
        bias = float(boot.mean()) - point[name]
        lo, hi = np.clip(np.quantile(boot, [0.025, 0.975]) - bias, 0.0, 1.0)  # both are shares
        out[name] = (float(lo), float(hi))
    return out


def _summarise(name: str, runs: list[_SplitRun], params: dict[str, Any], ks: list[int], kfold: bool,
               n_bootstrap: int, seed: int) -> ModelResult:
    per_user = {m: np.concatenate([r.per_user[m] for r in runs]) for m in runs[0].per_user}
    fold_metrics = [{**{m: float(v.mean()) for m, v in r.per_user.items()}, **r.aggregate} for r in runs]
    keys = list(fold_metrics[0])
    metrics = {m: float(np.mean([f[m] for f in fold_metrics])) for m in keys}
    names = list(per_user)
    ci_arr = bootstrap_ci(np.column_stack([per_user[m] for m in names]), n_bootstrap=n_bootstrap, seed=seed)
    ci: dict[str, tuple[float, float]] = {m: (float(lo), float(hi)) for m, (lo, hi) in zip(names, ci_arr)}
    std = None
    if kfold:
        std = {m: float(np.std([f[m] for f in fold_metrics], ddof=1)) for m in keys}
        # catalogue metrics are per fold: a t interval over folds
        t = float(sps.t.ppf(0.975, len(runs) - 1))
        for k in ks:
            for m in (f"coverage@{k}", f"gini@{k}"):
                half = t * std[m] / math.sqrt(len(runs))
                ci[m] = (metrics[m] - half, metrics[m] + half)
    else:
        ci.update(_catalogue_cis(runs[0].items, ks, runs[0].n_items, n_bootstrap, seed))
    return ModelResult(
        name=name, params=params, metrics=metrics, per_user=per_user, ci=ci,
        fit_seconds=float(np.mean([r.fit_seconds for r in runs])),
        recommend_seconds=float(np.mean([r.recommend_seconds for r in runs])),
        std=std, fold_metrics=fold_metrics if kfold else [],
        fold_fit_seconds=[r.fit_seconds for r in runs] if kfold else [],
        fold_recommend_seconds=[r.recommend_seconds for r in runs] if kfold else [],
        recs=[r.block for r in runs], rec_popularity=np.concatenate([r.rec_popularity for r in runs]),
        fit_reports=[r.fit_report for r in runs],
    )


def _check_ks(ks: Sequence[int]) -> list[int]:
    try:
        out = sorted({int(k) for k in ks})
    except (TypeError, ValueError):
        raise EvaluationError(f"--k must be positive integers such as 10,20, got {list(ks)!r}") from None
    if not out or out[0] < 1:
        raise EvaluationError(f"--k must be positive integers such as 10,20, got {list(ks)!r}")
    return out


def _check_models(models: Sequence[str]) -> list[str]:
    names = [m.strip() for m in models if m and m.strip()]
    if not names:
        raise EvaluationError("no models to evaluate: pass --models a,b,...")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EvaluationError(f"model(s) named twice in --models: {', '.join(dupes)}")
    return names


def _with_exclude_seen(models: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None,
                       exclude_seen: bool) -> dict[str, dict[str, Any]]:
    """Models that learn from a holdout (the fused pipelines) must train as they are measured: tell them
    whether seen items are excluded, unless the caller set it."""
    from fusionrec.candidates.registry import GENERATORS

    out = {k: dict(v) for k, v in (params or {}).items()}
    for name in models:
        cfg = getattr(GENERATORS.get(name), "Config", None)
        if cfg is not None and "exclude_seen" in getattr(cfg, "__dataclass_fields__", {}):
            out.setdefault(name, {}).setdefault("exclude_seen", exclude_seen)
    return out


def _registry_factory(name: str, params: dict[str, Any]) -> CandidateGenerator:
    try:
        from fusionrec.candidates import registry
    except ImportError as exc:  # pragma: no cover - the registry ships with the package
        raise EvaluationError(f"cannot build model {name!r}: the model registry is unavailable ({exc})") from exc
    return registry.make(name, params)


def _make_model(make: ModelFactory, name: str, params: dict[str, Any]) -> CandidateGenerator:
    try:
        return make(name, dict(params))
    except EvaluationError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise EvaluationError(f"cannot build model {name!r} with params {params}: {msg}") from exc


def _params_of(model: CandidateGenerator, given: dict[str, Any]) -> dict[str, Any]:
    try:
        cfg = model.config()
    except Exception:  # a model without a dataclass config still gets evaluated
        cfg = {}
    return dict(cfg) if cfg else dict(given)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, tuples to lists, NaN/inf to null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
