"""The harness end to end: contract JSON, recommendations CSV, k-fold summaries, no test data in fit, reports."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec.candidates.base import CandidateGenerator
from fusionrec.data.interactions import Interactions
from fusionrec.evaluation import EvaluationError, evaluate, make_splits
from fusionrec.evaluation.metrics import ranking_metrics
from fusionrec.evaluation.report import comparison_sentences, metrics_table, print_report, write_report

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


@dataclass
class Data:
    name: str
    format: str
    events: pl.DataFrame
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    has_timestamps: bool = True
    checksum: str = "ab" * 32


def make_shop(n_users: int = 80, n_items: int = 40, seed: int = 0, categories: bool = False) -> Data:
    """Users who mostly stay within one of four item groups, so co-occurrence beats popularity."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        group = u % 4
        n = int(rng.integers(3, 16))
        own = rng.integers(0, n_items // 4, n) * 4 + group
        other = rng.integers(0, n_items, n)
        chosen = np.where(rng.random(n) < 0.85, own, other)
        users += [f"u{u}"] * n
        items += [f"i{i}" for i in chosen]
        times += rng.uniform(0, 30 * 86400, n).tolist()
    ev = pl.DataFrame({
        "user_id": users, "item_id": items, "behavior": ["buy"] * len(users),
        "timestamp": [T0 + timedelta(seconds=t) for t in times],
        "seq": np.arange(len(users), dtype=np.int64),
    }).with_columns(pl.col("timestamp").dt.cast_time_unit("us"), pl.lit(None, dtype=pl.Utf8).alias("split"))
    catalogue = None
    if categories:
        catalogue = pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                                  "category": [f"c{i % 4}" for i in range(n_items)]})
    return Data("toy_shop", "fusionrec", ev, items=catalogue)


class Popular(CandidateGenerator):
    name: ClassVar[str] = "test-pop"

    def _fit(self, data: Interactions) -> None:
        self.pop_ = np.asarray((data.matrix() > 0).sum(axis=0), np.float32).ravel()

    def score(self, users: np.ndarray, histories: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.pop_, (len(users), 1))


class CoOccurrence(CandidateGenerator):
    name: ClassVar[str] = "test-cooc"

    def __init__(self, shrink: float = 1.0) -> None:
        self.shrink = shrink

    def config(self) -> dict:
        return {"shrink": self.shrink}

    def _fit(self, data: Interactions) -> None:
        x = (data.matrix() > 0).astype(np.float32)
        sim = (x.T @ x).tocsr()
        sim.setdiag(0)
        self.sim_ = sim / (1.0 + self.shrink)

    def score(self, users: np.ndarray, histories: sp.csr_matrix) -> np.ndarray:
        s = np.asarray((histories @ self.sim_).todense(), np.float32)
        return s + 1e-6 * np.arange(s.shape[1], 0, -1, dtype=np.float32)  # deterministic tie-break


class Spy(Popular):
    fitted: ClassVar[list[Interactions]] = []

    def _fit(self, data: Interactions) -> None:
        Spy.fitted.append(data)
        super()._fit(data)


def factory(name: str, params: dict) -> CandidateGenerator:
    models = {"pop": Popular, "cooc": CoOccurrence, "spy": Spy}
    if name not in models:
        raise KeyError(f"unknown model {name!r}")
    return models[name](**params)


METRICS = ("recall", "precision", "ndcg", "map", "mrr", "hr", "coverage", "diversity", "novelty", "gini")


def test_json_follows_the_contract_and_the_csv_recomputes_the_metrics(tmp_path: Path) -> None:
    ds = make_shop(categories=True)
    result = evaluate(ds, "temporal", ["pop", "cooc"], ks=[5, 10], params={"cooc": {"shrink": 2.0}},
                      test_days=7, factory=factory, n_bootstrap=200)
    out = json.loads(result.to_json())
    assert list(out)[:8] == ["dataset", "format", "protocol", "k", "n_users_evaluated", "n_items", "exclude_seen",
                             "test_days"]
    assert (out["dataset"], out["format"], out["protocol"], out["k"]) == ("toy_shop", "fusionrec", "temporal", [5, 10])
    assert out["exclude_seen"] is True and out["test_days"] == 7 and out["checksum"] == "ab" * 32
    split = next(make_splits(ds, "temporal", test_days=7))
    assert out["n_users_evaluated"] == split.n_users > 0 and out["n_items"] == split.n_items
    assert set(out["models"]) == {"pop", "cooc"}
    for name, m in out["models"].items():
        assert set(m["metrics"]) == {f"{x}@{k}" for k in (5, 10) for x in METRICS}
        assert isinstance(m["fit_seconds"], float) and isinstance(m["recommend_seconds"], float)
        assert set(m["ci"]) == set(m["metrics"])
        for metric, (lo, hi) in m["ci"].items():
            assert lo <= m["metrics"][metric] + 1e-9 and m["metrics"][metric] <= hi + 1e-9, (name, metric)
    assert out["models"]["cooc"]["params"] == {"shrink": 2.0}
    assert out["models"]["cooc"]["metrics"]["ndcg@10"] > out["models"]["pop"]["metrics"]["ndcg@10"]
    assert out["best_model"] == "cooc" and out["primary_metric"] == "ndcg@10"
    cmp = [c for c in out["comparisons"] if c["metric"] == "ndcg@10"]
    assert len(cmp) == 1 and cmp[0]["model"] == "cooc" and cmp[0]["versus"] == "pop" and cmp[0]["diff"] > 0
    assert {"diff", "ci", "p_bootstrap", "p_ttest", "n_users"} <= set(cmp[0])

    path = result.save_recs(tmp_path / "recs.csv")
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["model", "user_id", "rank", "item_id", "score"]
    recs = pl.read_csv(path, schema_overrides={"user_id": pl.Utf8, "item_id": pl.Utf8})
    assert set(recs["model"]) == {"pop", "cooc"} and recs["rank"].min() == 1 and recs["rank"].max() == 10
    assert recs["item_id"].str.starts_with("i").all() and set(recs["user_id"]) == set(split.user_ids)
    # anyone can recompute the metrics from the CSV and the split
    for name in ("pop", "cooc"):
        mine = recs.filter(pl.col("model") == name).sort(["user_id", "rank"])
        grid = np.full((split.n_users, 10), -1, np.int64)
        row_of = {u: r for r, u in enumerate(split.user_ids)}
        for u, rank, item in zip(mine["user_id"], mine["rank"], mine["item_id"]):
            grid[row_of[u], rank - 1] = split.target_items.index(item)
        again = ranking_metrics(grid, split.targets, [10])
        assert again["recall@10"].mean() == pytest.approx(out["models"][name]["metrics"]["recall@10"])
        assert again["ndcg@10"].mean() == pytest.approx(out["models"][name]["metrics"]["ndcg@10"])


@pytest.mark.parametrize("protocol", ["temporal", "leave-last-out", "kfold", "given"])
def test_no_model_is_fitted_on_a_test_row(protocol: str) -> None:
    ds = make_shop(seed=3)
    if protocol == "given":
        flag = np.random.default_rng(0).random(ds.events.height) < 0.2
        ds.events = ds.events.with_columns(pl.Series("split", np.where(flag, "test", "train")))
    Spy.fitted.clear()
    result = evaluate(ds, protocol, ["spy"], ks=[5], test_days=5, folds=3, factory=factory, n_bootstrap=50)
    splits = list(make_splits(ds, protocol, test_days=5, folds=3))
    assert len(Spy.fitted) == len(splits)
    seq = ds.events["seq"]
    for data, split in zip(Spy.fitted, splits):
        fitted = set(data.events["seq"].to_list())
        assert not fitted & set(seq.gather(split.test_rows).to_list()), "a model saw a test row"
        assert fitted == set(seq.gather(split.train_rows).to_list())
    assert result.n_users_evaluated == sum(s.n_users for s in splits)


def test_reach_counts_targets_on_items_new_in_the_test_window() -> None:
    ds = make_shop(seed=4)
    last = ds.events["timestamp"].max()
    fresh = pl.DataFrame({"user_id": [f"u{u}" for u in range(0, 40, 2)], "item_id": [f"new{u % 3}" for u in range(20)],
                          "behavior": ["buy"] * 20, "timestamp": [last - timedelta(hours=u) for u in range(20)],
                          "seq": np.arange(20, dtype=np.int64) + ds.events.height, "split": [None] * 20},
                         schema=ds.events.schema)
    ds.events = pl.concat([ds.events, fresh])
    result = evaluate(ds, "temporal", ["pop", "cooc"], ks=[5, 10], test_days=7, factory=factory, n_bootstrap=50)
    reach = result.to_dict()["targets_reachable"]
    split = next(make_splits(ds, "temporal", test_days=7))
    trained = set(ds.events["item_id"].gather(split.train_rows).to_list())
    target_ids = [split.target_items.ids()[c] for c in split.targets.indices]
    cold = sum(i not in trained for i in target_ids)
    assert cold >= 20 and reach["targets"] == len(target_ids)
    assert reach["cold_share"] == pytest.approx(cold / len(target_ids), abs=1e-4)
    for name in ("pop", "cooc"):  # no model that learns from interactions goes past the ceiling
        m = result.models[name].metrics
        for metric in ("recall@5", "recall@10", "hr@10"):
            assert m[metric] <= reach["ceilings"][metric] + 1e-9, (name, metric)
    assert reach["ceilings"]["recall@10"] < 1.0


def test_kfold_reports_mean_and_std_over_folds() -> None:
    ds = make_shop(n_users=60, seed=5)
    result = evaluate(ds, "kfold", ["pop", "cooc"], ks=[5], folds=3, seed=2, factory=factory, n_bootstrap=100)
    out = result.to_dict()
    assert out["folds"] == 3 and out["protocol"] == "kfold"
    m = out["models"]["cooc"]
    assert len(m["folds"]) == 3 and set(m["std"]) == set(m["metrics"])
    for metric in m["metrics"]:
        assert m["metrics"][metric] == pytest.approx(np.mean([f[metric] for f in m["folds"]]))
        assert m["std"][metric] == pytest.approx(np.std([f[metric] for f in m["folds"]], ddof=1))
    assert len(m["fit_seconds_per_fold"]) == 3
    # every user with at least 2 events is tested exactly once
    counts = ds.events.group_by("user_id").len()
    assert out["n_users_evaluated"] <= counts.filter(pl.col("len") >= 2).height
    assert len(result.models["cooc"].per_user["ndcg@5"]) == out["n_users_evaluated"]
    recs = result.recommendations()
    assert recs.filter(pl.col("model") == "pop")["user_id"].n_unique() == out["n_users_evaluated"]


def test_include_seen_is_reported_and_lets_seen_items_back() -> None:
    ds = make_shop(n_items=12, seed=6)
    inc = evaluate(ds, "temporal", ["pop"], ks=[5], test_days=7, exclude_seen=False, factory=factory, n_bootstrap=50)
    exc = evaluate(ds, "temporal", ["pop"], ks=[5], test_days=7, exclude_seen=True, factory=factory, n_bootstrap=50)
    assert inc.to_dict()["exclude_seen"] is False and exc.to_dict()["exclude_seen"] is True
    pop_lists = inc.recommendations().group_by("user_id").agg(pl.col("item_id").sort_by("rank"))
    assert pop_lists["item_id"].n_unique() == 1, "without exclusion popularity gives everyone the same list"


def test_user_mistakes_raise_evaluation_errors() -> None:
    ds = make_shop()
    with pytest.raises(EvaluationError, match="nosuch"):
        evaluate(ds, "temporal", ["pop", "nosuch"], test_days=7, factory=factory)
    with pytest.raises(EvaluationError, match="--k"):
        evaluate(ds, "temporal", ["pop"], ks=[0], test_days=7, factory=factory)
    with pytest.raises(EvaluationError, match="named twice"):
        evaluate(ds, "temporal", ["pop", "pop"], test_days=7, factory=factory)
    with pytest.raises(EvaluationError, match="protocol"):
        evaluate(ds, "sliding", ["pop"], factory=factory)


def test_reports_table_markdown_and_html(tmp_path: Path) -> None:
    from rich.console import Console

    ds = make_shop()
    result = evaluate(ds, "leave-last-out", ["pop", "cooc"], ks=[5, 10], factory=factory, n_bootstrap=100,
                      command="fusionrec evaluate --data toy --format fusionrec --protocol leave-last-out")
    console = Console(record=True, width=200)
    print_report(result, console)
    text = console.export_text()
    assert "cooc" in text and "ndcg@10" in text and ("beats" in text or "trails" in text)
    assert metrics_table(result).row_count >= 20
    assert comparison_sentences(result)[0].startswith("cooc ")
    paths = write_report(result, tmp_path / "report")
    md = paths["report.md"].read_text()
    page = paths["report.html"].read_text()
    for doc in (md, page):
        assert "fusionrec evaluate --data toy" in doc and "ab" * 32 in doc and "ndcg@10" in doc
    assert page.count("data:image/png;base64,") == 3 and "<img" in page
    assert "(metric_vs_k.png)" in md and paths["popularity.png"].stat().st_size > 1000
    assert paths["per_user.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
