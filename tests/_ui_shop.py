"""The serving tests' tiny shop plus what the dashboard shows: an evaluation run stored with the version
and an A/B experiment. Built once per run; each test module takes a private copy."""

from __future__ import annotations

import functools
from pathlib import Path

from _serving_shop import fresh_copy, shop_folder
from fusionrec.serving.ab import Experiment
from fusionrec.serving.settings import ServingSettings

EXPERIMENT = Experiment.from_dict({"name": "ranker", "variants": {"control": {"model": "current", "share": 0.5},
                                                                  "candidate": {"model": "current", "share": 0.5}}})


@functools.lru_cache(maxsize=1)
def evaluation() -> str:
    """The evaluation JSON of a quick temporal run on the shop (a few generators and the fused pipeline)."""
    from fusionrec.data.loading import load_dataset
    from fusionrec.evaluation.evaluator import evaluate

    ds = load_dataset(shop_folder(), "fusionrec")
    result = evaluate(ds, "temporal", ["pop", "itemknn", "covisit", "fusion"], [5, 10, 20], seed=0, test_days=7,
                      n_bootstrap=200)
    return result.to_json()


def ui_copy(dest: Path) -> tuple[Path, Path]:
    """(store, model directory) with evaluation.json in the current version's folder."""
    store, model = fresh_copy(dest)
    version = (model / "current").read_text().strip()
    (model / version / "evaluation.json").write_text(evaluation(), encoding="utf-8")
    return store, model


def settings(**overrides: object) -> ServingSettings:
    return ServingSettings(reload_poll_seconds=None, experiments=[EXPERIMENT], **overrides)  # type: ignore[arg-type]
