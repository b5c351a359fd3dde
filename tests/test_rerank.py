from __future__ import annotations

import numpy as np

from fusionrec.rerank.rules import ItemCatalog, RequestFilters, Reranker, RerankConfig, Rule


def catalog() -> ItemCatalog:
    # items 0-9: categories alternate home/kitchen (0) and toys (1); brand a for even, b for odd
    n = 10
    return ItemCatalog(category=np.array([i % 2 for i in range(n)]), brand=np.array([i % 2 for i in range(n)]),
                       price=np.arange(n, dtype=float) * 10, available=np.array([i != 3 for i in range(n)]),
                       consumable=np.zeros(n, bool), category_names=["home/kitchen", "toys"], brand_names=["a", "b"])


def test_filters_stock_exclude_category_price_bought():
    r = Reranker(RerankConfig(), catalog())
    items = np.arange(10)
    scores = -np.arange(10, dtype=float)
    out, _ = r.rerank(items, scores, 10, RequestFilters(exclude=np.array([0]), bought=np.array([2])))
    assert 3 not in out and 0 not in out and 2 not in out
    out, _ = r.rerank(items, scores, 10, RequestFilters(category="home"))
    assert set(out) == {0, 2, 4, 6, 8}
    out, _ = r.rerank(items, scores, 10, RequestFilters(price_max=45))
    assert out.max() <= 4


def test_boost_moves_up_at_most_max_shift_and_bury_moves_down():
    items = np.arange(10)
    scores = -np.arange(10, dtype=float)
    cfg = RerankConfig(rules=(Rule("boost", item=9, weight=1.0, max_shift=2),), filter_unavailable=False)
    out, _ = Reranker(cfg, catalog()).rerank(items, scores, 10)
    assert list(out).index(9) == 7  # from position 9 up by 2, no more
    cfg = RerankConfig(rules=(Rule("bury", brand="a", weight=1.0, max_shift=3),), filter_unavailable=False)
    out, _ = Reranker(cfg, catalog()).rerank(items, scores, 10)
    assert list(out).index(0) > 0 and out[0] == 1


def test_pin_places_item():
    cfg = RerankConfig(rules=(Rule("pin", item=7, position=0),), filter_unavailable=False)
    out, _ = Reranker(cfg, catalog()).rerank(np.arange(10), -np.arange(10, dtype=float), 5)
    assert out[0] == 7 and len(out) == 5


def test_mmr_spreads_categories():
    # ranker put all home items first; MMR with a low lambda interleaves categories
    items = np.array([0, 2, 4, 6, 8, 1, 5, 7, 9])
    scores = np.linspace(1, 0.1, len(items))
    plain, _ = Reranker(RerankConfig(filter_unavailable=False), catalog()).rerank(items, scores, 4)
    diverse, _ = Reranker(RerankConfig(mmr_lambda=0.3, filter_unavailable=False), catalog()).rerank(items, scores, 4)
    assert len({i % 2 for i in plain}) == 1
    assert len({i % 2 for i in diverse}) == 2
    assert diverse[0] == plain[0]  # the best item stays first
