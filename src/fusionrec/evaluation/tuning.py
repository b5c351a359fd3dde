"""Hyper-parameter search on the validation split only (Optuna TPE), never on test targets.

Each protocol's `Split.valid` is carved from its training rows; a trial fits on `valid.train` and is
scored on `valid.targets`. The best parameters are merged into a TOML config (configs/<dataset>.toml).
"""

from __future__ import annotations

import itertools
import math
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fusionrec.errors import ConfigError
from fusionrec.evaluation import metrics as M
from fusionrec.evaluation.splits import DatasetLike, EvaluationError, Split, make_splits

__all__ = ["SPACES", "TuneResult", "tune", "write_params"]

# name -> {param: (kind, low, high[, log]) | ("cat", [choices])}
SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "pop": {"half_life_days": ("cat", [None, 1.0, 3.0, 7.0, 14.0, 30.0])},
    "trending": {"half_life_days": ("float", 0.5, 60.0, True)},
    "catpop": {"category_mix": ("float", 0.0, 1.0), "half_life_days": ("cat", [None, 1.0, 3.0, 7.0, 30.0]),
               "item_count": ("cat", ["events", "users"]), "category_scale": ("cat", ["top", "global"]),
               "user_half_life_days": ("cat", [None, 0.5, 1.0, 2.0, 7.0])},
    "itemknn": {"k": ("int", 20, 1000, True), "shrink": ("float", 0.0, 500.0), "alpha": ("float", 0.0, 1.0),
                "similarity": ("cat", ["cosine", "asymmetric_cosine", "jaccard"]),
                "weighting": ("cat", ["none", "bm25", "tfidf"])},
    "userknn": {"k": ("int", 20, 1000, True), "shrink": ("float", 0.0, 500.0),
                "similarity": ("cat", ["cosine", "asymmetric_cosine", "jaccard"]),
                "weighting": ("cat", ["none", "bm25", "tfidf"])},
    "rp3beta": {"alpha": ("float", 0.3, 1.5), "beta": ("float", 0.0, 1.0), "k": ("int", 20, 1000, True)},
    "ease": {"l2": ("float", 10.0, 5000.0, True)},
    "als": {"factors": ("cat", [32, 64, 128, 256]), "regularization": ("float", 1e-3, 10.0, True),
            "alpha": ("float", 0.5, 50.0, True), "iterations": ("cat", [10, 15, 25])},
    "bpr": {"factors": ("cat", [32, 64, 128]), "learning_rate": ("float", 1e-3, 0.1, True),
            "regularization": ("float", 1e-4, 0.1, True), "iterations": ("cat", [50, 100, 200])},
    "covisit": {"window": ("int", 2, 30), "k": ("int", 20, 500, True)},
}


@dataclass
class TuneResult:
    model: str
    metric: str
    best_params: dict[str, Any]
    best_value: float
    baseline_value: float  # the defaults, on the same validation split
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    split: str = ""


def _suggest(trial: Any, space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "cat":
            choices = list(spec[1])
            idx = trial.suggest_categorical(name, list(range(len(choices))))  # None-safe via index
            params[name] = choices[idx]
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=len(spec) > 3 and spec[3])
        else:
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=len(spec) > 3 and spec[3])
    return params


def _score(split: Split, model_name: str, params: dict[str, Any], metric: str, base: dict[str, Any]) -> float:
    from fusionrec.candidates.registry import make

    k = int(metric.split("@")[1])
    model = make(model_name, {**base, **params}).fit(split.train)
    items, scores = model.recommend(split.users, split.histories, k, exclude=split.exclude)
    items = np.where(np.isfinite(scores), items, -1)
    per_user = M.ranking_metrics(items, split.targets, [k], metrics=(metric.split("@")[0],))
    return float(np.mean(per_user[metric]))


def tune(ds: DatasetLike, protocol: str, model: str, trials: int = 20, metric: str = "ndcg@20", seed: int = 0,
         test_days: float | None = None, exclude_seen: bool = True, base_params: dict[str, Any] | None = None,
         progress: Callable[[str], None] | None = None) -> TuneResult:
    """Search `model`'s declared space on the protocol's validation split (carved from training data)."""
    import optuna

    if model not in SPACES:
        raise ConfigError(f"no search space for {model!r}; tunable: {', '.join(sorted(SPACES))}")
    split = next(iter(make_splits(ds, protocol, test_days=test_days, exclude_seen=exclude_seen, seed=seed)))
    valid = split.valid
    if valid is None or valid.n_users == 0:
        raise EvaluationError(f"the {protocol} split has no validation users to tune on")
    say = progress or (lambda _m: None)
    base = dict(base_params or {})
    t0 = time.perf_counter()
    baseline = _score(valid, model, {}, metric, base)
    say(f"{model}: defaults {metric} = {baseline:.4f} on {valid.n_users} validation users")
    history: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = _suggest(trial, SPACES[model])
        value = _score(valid, model, params, metric, base)
        history.append({"params": params, "value": value})
        say(f"{model}: trial {len(history)}/{trials} {metric} = {value:.4f} {params}")
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = max(history, key=lambda h: h["value"])
    best_params, best_value = best["params"], best["value"]
    if baseline >= best_value:  # the defaults win: keep them
        best_params, best_value = {}, baseline
    return TuneResult(model=model, metric=metric, best_params={**base, **best_params}, best_value=best_value,
                      baseline_value=baseline, trials=history, seconds=time.perf_counter() - t0,
                      split=valid.description)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if math.isfinite(v) else "nan"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} to TOML")


def write_params(path: Path, result: TuneResult, note: str) -> None:
    """Merge `[models.<model>]` into the TOML at `path`; None values are omitted. Other tables (nested ones
    such as [pipeline.ranker] included) and the file's leading comment block are kept; other comments are not."""
    path = Path(path)
    data: dict[str, Any] = {}
    header = ["# Tuned on validation splits carved from training data only (fusionrec tune); never on test."]
    if path.exists():
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
        header = list(itertools.takewhile(lambda x: x.startswith("#"), text.splitlines())) or header
    data.setdefault("models", {})[result.model] = {k: v for k, v in result.best_params.items() if v is not None}
    notes = data.setdefault("notes", {})
    notes[result.model] = note
    lines = header + [""]
    for name in [t for t in data if t not in ("models", "notes")]:
        lines += _tables(name, data[name])
    for name in sorted(data["models"]):
        lines += _tables(f"models.{name}", data["models"][name])
    lines += _table("notes", data["notes"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _tables(name: str, values: dict[str, Any]) -> list[str]:
    """A table and, after it, each of its sub-tables."""
    out = _table(name, values)
    for key, value in values.items():
        if isinstance(value, dict):
            out += _tables(f"{name}.{key}", value)
    return out


def _table(name: str, values: dict[str, Any]) -> list[str]:
    out = [f"[{name}]"]
    out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None and not isinstance(v, dict)]
    return out + [""]
