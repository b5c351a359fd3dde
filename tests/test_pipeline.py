"""The fused pipeline: leakage-free holdout, learning, save/load, online answers with explanations, cold start."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fusionrec.candidates.base import Query
from fusionrec.data.interactions import Interactions
from fusionrec.data.synthetic import ShopConfig, generate_shop
from fusionrec.pipeline import FusedPipeline, PipelineConfig
from fusionrec.rerank.rules import RequestFilters

GENS = {"pop": {}, "itemknn": {}, "covisit": {}, "als": {"factors": 16, "iterations": 5}}


@pytest.fixture(scope="module")
def shop_data() -> Interactions:
    shop = generate_shop(ShopConfig(n_users=400, n_items=300, n_events=40_000, seed=3))
    return Interactions.from_frame(shop.events, catalogue=shop.items)


@pytest.fixture(scope="module")
def fitted(shop_data) -> FusedPipeline:
    return FusedPipeline(PipelineConfig(generators=GENS, n_candidates=40, seed=1,
                                        ranker={"n_estimators": 60})).fit(shop_data)


def test_holdout_is_the_last_window_of_the_training_data(shop_data):
    pipe = FusedPipeline(PipelineConfig(generators=GENS, valid_days=7))
    pre, labels, how = pipe._holdout(shop_data)
    t_all = shop_data.events["t"].to_numpy()
    cut = np.nanmax(t_all) - 7 * 86400
    assert np.nanmax(pre.events["t"].to_numpy()) <= cut  # the generators of stage 1 see nothing after the cut
    assert labels.nnz > 0 and "time" in how
    assert pre.n_items == shop_data.n_items  # same vocabularies, so stage-1 candidates index the labels


def test_fit_reports_candidate_recall_and_ranker(fitted):
    rep = fitted.report_
    assert 0 < rep["candidate_recall"] <= 1
    assert rep["ranker_trees"] >= 1
    imp = fitted.fuser_.feature_importance()
    assert abs(sum(imp.values()) - 1) < 1e-6


def test_save_load_identical(fitted, shop_data, tmp_path):
    users = np.arange(20)
    h = shop_data.matrix()[users]
    a = fitted.recommend(users, h, 10, exclude=h)
    fitted.save(tmp_path / "p")
    b = FusedPipeline.load(tmp_path / "p").recommend(users, h, 10, exclude=h)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])


def test_online_answer_has_real_history_explanations(fitted, shop_data):
    u = int(np.argmax(np.diff(shop_data.matrix().indptr)))
    row = shop_data.matrix()[u]
    q = Query(user=u, history=row.indices, history_weights=row.data)
    recs = fitted.recommend_query(q, 10)
    assert len(recs) == 10
    hist = set(row.indices.tolist())
    assert any(r.explanation.generators for r in recs)
    named = [i for r in recs for i, _ in r.explanation.because]
    assert named and set(named) <= hist  # explanations name items really in the history


def test_filters_remove_bought_and_constrain_category(fitted, shop_data):
    u = 5
    row = shop_data.matrix()[u]
    q = Query(user=u, history=row.indices, history_weights=row.data)
    first = fitted.recommend_query(q, 5)
    gone = first[0].item
    again = fitted.recommend_query(q, 5, filters=RequestFilters(bought=np.array([gone])))
    assert gone not in [r.item for r in again]
    cat = fitted.catalog()
    top = cat.category_names[0].split("/")[0]
    only = fitted.recommend_query(q, 5, filters=RequestFilters(category=top))
    assert all(cat.category_names[cat.category[r.item]].startswith(top) for r in only)


def test_anonymous_session_is_adapted(fitted, shop_data):
    empty = fitted.recommend_query(Query(user=-1), 10)
    assert len(empty) == 10  # trending / popular fallback
    sim = fitted.explaining_similarity()
    seed_item = int(np.argmax(np.diff(sim.indptr)))
    session = fitted.recommend_query(Query(user=-1, history=np.array([seed_item])), 10)
    assert [r.item for r in session] != [r.item for r in empty]
