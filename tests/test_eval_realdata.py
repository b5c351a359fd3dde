"""The harness on real datasets from ../shared/data, with the registry's generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionrec.data.loading import load_dataset
from fusionrec.evaluation import EvaluationError, evaluate, make_splits

pytestmark = pytest.mark.realdata


def test_yoochoose_sessions_are_queried_with_their_prefix(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "yoochoose_rsc15_100k", "yoochoose")
    result = evaluate(ds, "given", ["pop", "itemknn"], ks=[20], exclude_seen=False, n_bootstrap=200)
    assert result.n_users_evaluated == 3_416  # every test session (all have >= 2 clicks)
    pop, knn = result.models["pop"].metrics, result.models["itemknn"].metrics
    assert knn["hr@20"] > pop["hr@20"] > 0
    assert result.best_model == "itemknn"
    split = next(make_splits(ds, "given", exclude_seen=False))
    assert (split.users == -1).all()
    assert not set(split.train_rows.tolist()) & set(split.test_rows.tolist())


def test_ehcf_excludes_only_past_purchases(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "ehcf_taobao_multibehavior", "ehcf")
    split = next(make_splits(ds, "given"))
    assert split.n_users == 48_749 and (np.diff(split.targets.indptr) == 1).all()
    assert "target behaviour(s) buy" in split.description
    assert split.exclude.nnz < split.histories.nnz  # carts are history, not excluded
    assert split.valid is not None and set(split.valid.train_rows.tolist()) <= set(split.train_rows.tolist())


def test_movielens_kfold_and_temporal_with_the_registry(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "movielens_100k", "movielens")
    kf = evaluate(ds, "kfold", ["pop"], ks=[10], folds=3, n_bootstrap=100).to_dict()
    assert kf["n_users_evaluated"] == 943 and len(kf["models"]["pop"]["folds"]) == 3
    assert 0 < kf["models"]["pop"]["metrics"]["ndcg@10"] < 1 and kf["models"]["pop"]["std"]["ndcg@10"] >= 0
    tmp = evaluate(ds, "temporal", ["pop"], ks=[10], test_days=30, n_bootstrap=100).to_dict()
    assert tmp["test_days"] == 30 and tmp["models"]["pop"]["params"] is not None
    with pytest.raises(EvaluationError, match="unknown generator"):
        evaluate(ds, "temporal", ["no-such-model"], test_days=30)
