"""MMR along the lambda knob, and with a caller's similarity matrix (what benchmarks/bench_diversity.py relies on)."""

from __future__ import annotations

import numpy as np

from fusionrec.rerank.rules import ItemCatalog, RequestFilters, Reranker, RerankConfig


def flat_catalog(categories: list[int]) -> ItemCatalog:
    n = len(categories)
    return ItemCatalog(category=np.asarray(categories), brand=np.full(n, -1), price=np.full(n, np.nan),
                       available=np.ones(n, bool), consumable=np.zeros(n, bool),
                       category_names=[f"c{c}" for c in range(max(categories) + 1)])


def test_given_similarity_follows_the_items_through_filters():
    # items 10-12 are near-duplicates, 13-14 another pair; the filter removes 11, so the similarity
    # rows must be re-indexed to the surviving items or 13 would look like a duplicate of 10
    items = np.array([10, 11, 12, 13, 14])
    scores = np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    group = np.array([0, 0, 0, 1, 1])
    sim = (group[:, None] == group[None, :]).astype(float)
    r = Reranker(RerankConfig(mmr_lambda=0.5, filter_unavailable=False), ItemCatalog.empty(20))
    out, out_scores = r.rerank(items, scores, 2, RequestFilters(exclude=np.array([11])), similarity=sim)
    assert list(out) == [10, 13]
    assert list(out_scores) == [1.0, 0.7]  # scores travel with their items


def test_lambda_one_keeps_the_ranking_even_with_a_similarity():
    items = np.arange(6)
    scores = np.linspace(1.0, 0.5, 6)
    sim = np.ones((6, 6))
    out, _ = Reranker(RerankConfig(mmr_lambda=1.0, filter_unavailable=False), ItemCatalog.empty(6)).rerank(
        items, scores, 4, similarity=sim)
    assert list(out) == [0, 1, 2, 3]


def test_binary_similarity_saturates_at_half():
    # with a 0/1 similarity, lambda <= 0.5 puts every new-category item before every repeat, so all
    # those lambdas give one list (round-robin over categories in rank order); the curve bends above 0.5
    cat = flat_catalog([0, 0, 0, 1, 1, 2])
    items = np.arange(6)
    scores = np.linspace(1.0, 0.0, 6)
    lists = {lam: list(Reranker(RerankConfig(mmr_lambda=lam, filter_unavailable=False), cat)
                       .rerank(items, scores, 6)[0])
             for lam in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)}
    for lam in (0.0, 0.1, 0.25, 0.5):
        assert lists[lam] == [0, 3, 5, 1, 2, 4]
    assert lists[1.0] == [0, 1, 2, 3, 4, 5]
    assert lists[0.75] == [0, 1, 3, 2, 5, 4]  # between: a new category wins only against a weaker repeat
