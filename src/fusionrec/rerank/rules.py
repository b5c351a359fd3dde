"""Re-ranking after the ranker: filters, business rules and diversity (MMR).

Each step maps one user's ranked list `(items, scores)` to a new one; `Reranker` composes them in a
fixed order: filters -> rules -> pins -> MMR -> cut to n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["ItemCatalog", "Rule", "RerankConfig", "Reranker", "RequestFilters", "mmr"]


@dataclass
class ItemCatalog:
    """Per item index: category code (-1 unknown), brand code, price (NaN unknown), availability, consumable.

    `category_names` / `brand_names` decode the codes for rules written with names.
    """

    category: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    available: np.ndarray
    consumable: np.ndarray
    category_names: list[str] = field(default_factory=list)
    brand_names: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, n_items: int) -> "ItemCatalog":
        return cls(category=np.full(n_items, -1, np.int64), brand=np.full(n_items, -1, np.int64),
                   price=np.full(n_items, np.nan), available=np.ones(n_items, bool),
                   consumable=np.zeros(n_items, bool))

    def category_code(self, name: str) -> int:
        try:
            return self.category_names.index(name)
        except ValueError:
            return -2  # matches nothing

    def categories_under(self, prefix: str) -> np.ndarray:
        """Codes of categories equal to `prefix` or below it in the tree ("home" covers "home/kitchen")."""
        return np.asarray([i for i, c in enumerate(self.category_names) if c == prefix or c.startswith(prefix + "/")],
                          np.int64)

    def brand_code(self, name: str) -> int:
        try:
            return self.brand_names.index(name)
        except ValueError:
            return -2


@dataclass(frozen=True)
class Rule:
    """boost / bury / pin items by `category` (prefix), `brand` or `item` index.

    boost and bury multiply the distance to the top: a boost of 0.5 moves an item up by at most
    `max_shift` positions; pin places the item at `position` (0-based) when it is a candidate.
    """

    action: str  # "boost", "bury" or "pin"
    category: str | None = None
    brand: str | None = None
    item: int | None = None
    weight: float = 0.5
    max_shift: int = 5
    position: int = 0

    def matches(self, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        hit = np.zeros(len(items), bool)
        if self.category is not None:
            hit |= np.isin(catalog.category[items], catalog.categories_under(self.category))
        if self.brand is not None:
            hit |= catalog.brand[items] == catalog.brand_code(self.brand)
        if self.item is not None:
            hit |= items == self.item
        return hit


@dataclass(frozen=True)
class RerankConfig:
    """Business rules and the diversity knob; `mmr_lambda` = 1 keeps the ranker's order (no diversity)."""

    rules: tuple[Rule, ...] = ()
    mmr_lambda: float = 1.0
    repurchase_days: float = 30.0  # consumables may be recommended again this long after a purchase
    filter_unavailable: bool = True


@dataclass
class RequestFilters:
    """What one request constrains: excluded items, a category prefix, a price ceiling, bought items."""

    exclude: np.ndarray | None = None
    category: str | None = None
    price_max: float | None = None
    bought: np.ndarray | None = None  # item indices the user bought (and cannot rebuy yet)


def mmr(items: np.ndarray, scores: np.ndarray, n: int, lam: float, similarity: np.ndarray) -> np.ndarray:
    """Maximal marginal relevance: positions into `items`, chosen greedily by lam*rel - (1-lam)*max sim.

    `similarity` is the [m, m] similarity among the candidates; relevance is min-max scaled scores.
    """
    m = len(items)
    n = min(n, m)
    if m == 0 or lam >= 1.0:
        return np.arange(n)
    rel = scores.astype(np.float64)
    finite = np.isfinite(rel)
    rel = np.where(finite, rel, np.nanmin(np.where(finite, rel, np.inf)) if finite.any() else 0.0)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(m)
    chosen: list[int] = []
    max_sim = np.zeros(m)
    free = np.ones(m, bool)
    for _ in range(n):
        gain = lam * rel - (1.0 - lam) * max_sim
        gain[~free] = -np.inf
        j = int(np.argmax(gain))
        chosen.append(j)
        free[j] = False
        max_sim = np.maximum(max_sim, similarity[j])
    return np.asarray(chosen, np.int64)


class Reranker:
    """Filters, rules, pins and MMR over one user's ranked candidates."""

    def __init__(self, config: RerankConfig, catalog: ItemCatalog) -> None:
        self.config = config
        self.catalog = catalog

    def keep_mask(self, items: np.ndarray, filters: RequestFilters | None) -> np.ndarray:
        """Which candidates survive the filters (stock, request constraints, already bought)."""
        cat = self.catalog
        keep = np.ones(len(items), bool)
        if self.config.filter_unavailable:
            keep &= cat.available[items]
        if filters is None:
            return keep
        if filters.exclude is not None and len(filters.exclude):
            keep &= ~np.isin(items, filters.exclude)
        if filters.bought is not None and len(filters.bought):
            keep &= ~np.isin(items, filters.bought)
        if filters.category:
            keep &= np.isin(cat.category[items], cat.categories_under(filters.category))
        if filters.price_max is not None:
            price = cat.price[items]
            keep &= ~(price > filters.price_max)  # unknown prices pass
        return keep

    def apply_rules(self, items: np.ndarray) -> np.ndarray:
        """A new order of positions after boost/bury (capped shifts) and pins."""
        order = np.arange(len(items))
        if not self.config.rules or len(items) == 0:
            return order
        pos = order.astype(np.float64)
        pins: list[tuple[int, int]] = []
        for rule in self.config.rules:
            hit = rule.matches(items, self.catalog)
            if rule.action == "boost":
                pos = np.where(hit, pos - np.minimum(rule.max_shift, pos * rule.weight) - 0.5, pos)
            elif rule.action == "bury":
                pos = np.where(hit, pos + rule.max_shift * min(1.0, rule.weight * 2) + 0.5, pos)
            elif rule.action == "pin":
                pins += [(int(j), rule.position) for j in np.flatnonzero(hit)]
        order = np.argsort(pos, kind="stable")
        for j, where in pins:
            cur = list(order)
            cur.remove(j)
            cur.insert(min(where, len(cur)), j)
            order = np.asarray(cur)
        return order

    def rerank(self, items: np.ndarray, scores: np.ndarray, n: int, filters: RequestFilters | None = None,
               similarity: Sequence[Sequence[float]] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Filtered, rule-adjusted, diversified top-n (items, scores)."""
        keep = self.keep_mask(items, filters)
        items, scores = items[keep], scores[keep]
        sim = None if similarity is None else np.asarray(similarity)[np.ix_(keep, keep)]
        order = self.apply_rules(items)
        items, scores = items[order], scores[order]
        if sim is not None:
            sim = sim[np.ix_(order, order)]
        lam = self.config.mmr_lambda
        if lam < 1.0 and len(items) > 1:
            if sim is None:
                sim = self.category_similarity(items)
            pick = mmr(items, scores, n, lam, sim)
        else:
            pick = np.arange(min(n, len(items)))
        return items[pick], scores[pick]

    def category_similarity(self, items: np.ndarray) -> np.ndarray:
        """1 for two items of the same category, 0.5 for the same top category, else 0."""
        names = self.catalog.category_names
        cats = self.catalog.category[items]
        same = (cats[:, None] == cats[None, :]) & (cats[:, None] >= 0)
        if names:
            tops = np.asarray([names[c].split("/")[0] if c >= 0 else f"?{i}" for i, c in enumerate(cats)])
            top_same = tops[:, None] == tops[None, :]
        else:
            top_same = same
        return np.where(same, 1.0, np.where(top_same, 0.5, 0.0))
