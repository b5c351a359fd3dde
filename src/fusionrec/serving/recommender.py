"""Answers for the HTTP API: a user's recommendations, a session's, similar items, and the fallback chain.

Fallbacks (never an error): a user the model and the store do not know gets what is trending (in
the requested category); an item the model does not know gets popular items of its category and
brand, then of its category, then trending; an empty catalogue gets an empty list.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from fusionrec.candidates.base import Query
from fusionrec.rerank.rules import RequestFilters
from fusionrec.serving.answer_cache import AnswerCache
from fusionrec.serving.histories import VERBS, HistoryStore, UserHistory
from fusionrec.serving.model import ServingModel

__all__ = ["Recommender", "Item"]

Item = dict[str, Any]  # {"item_id", "score", "reasons"}
DAY = 86_400.0
_RRF_K = 60.0


def _finite(x: float) -> float:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else 0.0


class Recommender:
    """The request logic shared by every endpoint; `model` may be None (no version loaded yet)."""

    def __init__(self, histories: HistoryStore, repurchase_days: float = 30.0,
                 on_fallback: Callable[[str], None] | None = None, cache: AnswerCache | None = None) -> None:
        self.histories = histories
        self.repurchase_days = repurchase_days
        self.on_fallback = on_fallback or (lambda kind: None)
        self.cache = cache if cache is not None else AnswerCache(0, 0)

    # -- fallbacks ----------------------------------------------------------------------------
    def trending(self, k: int, category: str | None = None, brand: int | None = None,
                 exclude: Sequence[int] | np.ndarray = (), price_max: float | None = None,
                 kind: str = "trending") -> list[Item]:
        codes, scores = self.histories.trending(k, category=category, brand=brand,
                                                exclude=np.asarray(exclude, np.int64), price_max=price_max)
        ids = self.histories.item_ids(codes)
        reason: dict[str, Any] = {"type": "fallback", "fallback": kind}
        if category:
            reason["category"] = category
        reason["text"] = {"trending": "trending now", "category": f"popular in {category}",
                          "category_brand": f"popular in {category} from the same brand"}.get(kind, "trending now")
        return [{"item_id": i, "score": _finite(s), "reasons": [dict(reason)]} for i, s in zip(ids, scores)]

    def _pad(self, items: list[Item], k: int, exclude_codes: set[int], category: str | None,
             price_max: float | None) -> list[Item]:
        """Fill a short list with trending items it does not hold yet."""
        if len(items) >= k:
            return items
        have = exclude_codes | {self.histories.item_code(it["item_id"]) for it in items}
        more = self.trending(k - len(items), category=category, exclude=np.fromiter(have, np.int64, len(have)),
                             price_max=price_max, kind="category" if category else "trending")
        if more:
            self.on_fallback("padding")
        return items + more

    # -- a user ---------------------------------------------------------------------------------
    def for_user(self, model: ServingModel | None, user_id: str, k: int, category: str | None = None,
                 exclude_ids: Sequence[str] = (), price_max: float | None = None) -> list[Item]:
        """The user's top k (the answer kept for a returning user when nothing it depends on changed)."""
        key = (model.version if model is not None else None, self.histories.revision(user_id), k, category,
               tuple(exclude_ids), price_max)
        items = self.cache.get(user_id, key)
        if items is None:
            items = self._for_user(model, user_id, k, category, exclude_ids, price_max)
            self.cache.put(user_id, key, items)
        return items

    def _for_user(self, model: ServingModel | None, user_id: str, k: int, category: str | None,
                  exclude_ids: Sequence[str], price_max: float | None) -> list[Item]:
        hist = self.histories.history(user_id, model.learned_through if model is not None else 0)
        excl_codes = {c for c in (self.histories.item_code(i) for i in exclude_ids) if c >= 0}
        muser = model.user_index(user_id) if model is not None else -1
        if model is None or ((hist is None or len(hist) == 0) and muser < 0):
            self.on_fallback("unknown_user" if model is not None else "no_model")
            return self.trending(k, category=category, exclude=list(excl_codes), price_max=price_max,
                                 kind="category" if category else "trending")
        hist = hist if hist is not None else UserHistory(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0))
        m_items = model.to_model(hist.items)
        known = m_items >= 0
        q_items = m_items[known]
        weights = self.histories.behavior_weights(hist.behaviors)[known]
        rebuyable, blocked = self._purchases(model, hist, m_items)
        seen = np.unique(q_items)
        excl_m = model.to_model(np.fromiter(excl_codes, np.int64, len(excl_codes)))
        excl_m = excl_m[excl_m >= 0]
        if model.exclude_seen:
            query_exclude = np.union1d(np.setdiff1d(seen, rebuyable), excl_m)
        else:
            query_exclude = np.union1d(blocked, excl_m)
        query = Query(user=muser, history=q_items, history_weights=weights, exclude=query_exclude)
        filters = RequestFilters(exclude=excl_m if len(excl_m) else None, category=category or None,
                                 price_max=price_max, bought=blocked if len(blocked) else None)
        live = hist.n_live > 0 and muser >= 0
        recs = model.pipeline.recommend_query(query, k, filters=filters, reranker=model.reranker, live=live)
        verbs = self._verbs(hist, m_items)
        ids = model.item_ids
        items = [{"item_id": ids[r.item], "score": _finite(r.score), "reasons": r.explanation.to_reasons(ids, verbs)}
                 for r in recs]
        blocked_codes = set(model.model_to_code[query_exclude].tolist()) | excl_codes
        return self._pad(items, k, blocked_codes, category, price_max)

    def _purchases(self, model: ServingModel, hist: UserHistory, m_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(model items that may be bought again now, model items bought that may not): consumables come
        back `repurchase_days` after their last purchase, other purchases never."""
        buy = self.histories.behavior_code("buy")
        is_buy = (hist.behaviors == buy) & (m_items >= 0)
        if buy < 0 or not is_buy.any():
            return np.empty(0, np.int64), np.empty(0, np.int64)
        items, t = m_items[is_buy], hist.times[is_buy]
        now = self.histories.newest
        if not math.isfinite(now):
            now = float(np.nanmax(hist.times)) if np.isfinite(hist.times).any() else float("nan")
        uniq = np.unique(items)
        last = np.full(len(uniq), -np.inf)
        np.maximum.at(last, np.searchsorted(uniq, items), np.nan_to_num(t, nan=-np.inf))
        consumable = model.catalog.consumable[uniq]
        window_over = (now - last) > self.repurchase_days * DAY if math.isfinite(now) else np.zeros(len(uniq), bool)
        again = consumable & window_over
        return uniq[again], uniq[~again]

    def _verbs(self, hist: UserHistory, m_items: np.ndarray) -> dict[int, str]:
        """The strongest behaviour per history item, as a verb for "because you ... X"."""
        weights = self.histories.behavior_weights(hist.behaviors)
        best: dict[int, tuple[float, str]] = {}
        for item, b, w in zip(m_items.tolist(), hist.behaviors.tolist(), weights.tolist()):
            if item >= 0 and (item not in best or w > best[item][0]):
                name = self.histories.behaviors[b]
                best[item] = (w, VERBS.get(name, "interacted with"))
        return {i: v for i, (_, v) in best.items()}

    # -- a session -----------------------------------------------------------------------------
    def for_session(self, model: ServingModel | None, item_ids: Sequence[str], k: int) -> list[Item]:
        codes = np.asarray([self.histories.item_code(i) for i in item_ids], np.int64)
        m_items = model.to_model(codes) if model is not None else np.full(len(codes), -1, np.int64)
        known = m_items >= 0
        seen_codes = set(codes[codes >= 0].tolist())
        if model is None or not known.any():
            category = self._category_of_codes(codes[::-1])
            self.on_fallback("unknown_session")
            return self.trending(k, category=category, exclude=list(seen_codes),
                                 kind="category" if category else "trending")
        q_items = m_items[known]
        view = self.histories.behavior_code("view")
        weights = np.full(len(q_items), self.histories.behavior_weights(np.asarray([max(view, 0)]))[0], np.float32)
        query = Query(user=-1, history=q_items, history_weights=weights, exclude=np.unique(q_items))
        recs = model.pipeline.recommend_query(query, k, reranker=model.reranker)
        verbs = {int(i): "viewed" for i in q_items}
        ids = model.item_ids
        items = [{"item_id": ids[r.item], "score": _finite(r.score), "reasons": r.explanation.to_reasons(ids, verbs)}
                 for r in recs]
        return self._pad(items, k, seen_codes, None, None)

    def _category_of_codes(self, codes: np.ndarray) -> str | None:
        cats = self.histories.catalogue.lookup(codes, "category", -1)
        for c in cats:
            if c >= 0:
                return self.histories.catalogue.category_names[int(c)]
        return None

    # -- similar items ---------------------------------------------------------------------------
    def similar(self, model: ServingModel | None, item_id: str, k: int) -> list[Item]:
        code = self.histories.item_code(item_id)
        m = int(model.to_model(np.asarray([code]))[0]) if model is not None and code >= 0 else -1
        items: list[Item] = []
        if m >= 0 and model is not None:
            items = self._neighbours(model, m, item_id, k)
        if len(items) < k:
            if m < 0:
                self.on_fallback("unknown_item")
            items = self._similar_fallback(items, code, k)
        return items

    def _neighbours(self, model: ServingModel, m: int, item_id: str, k: int) -> list[Item]:
        """Reciprocal-rank fusion of the generators' item-item lists ("also viewed", item-kNN)."""
        score: dict[int, float] = {}
        why: dict[int, list[dict[str, Any]]] = {}
        for name, gen in model.similar_sources:
            found = gen.similar_items(m, 2 * k + 5)
            for rank, j in enumerate(found.items.tolist(), start=1):
                score[j] = score.get(j, 0.0) + 1.0 / (_RRF_K + rank)
                why.setdefault(j, []).append({"type": "generator", "generator": name, "rank": rank})
        avail = model.catalog.available
        ranked = sorted((j for j in score if j != m and (j >= len(avail) or avail[j])), key=lambda j: (-score[j], j))
        text = {"type": "similar_to", "item_id": item_id, "text": f"customers who viewed {item_id} also viewed this"}
        return [{"item_id": model.item_ids[j], "score": _finite(score[j]), "reasons": why[j] + [dict(text)]}
                for j in ranked[:k]]

    def _similar_fallback(self, items: list[Item], code: int, k: int) -> list[Item]:
        cat = self.histories.catalogue
        have = {self.histories.item_code(it["item_id"]) for it in items} | ({code} if code >= 0 else set())
        category = brand = None
        if 0 <= code < len(cat):
            c, b = int(cat.category[code]), int(cat.brand[code])
            category = cat.category_names[c] if c >= 0 else None
            brand = b if b >= 0 else None
        steps: list[tuple[str | None, int | None, str]] = []
        if category is not None and brand is not None:
            steps.append((category, brand, "category_brand"))
        if category is not None:
            steps.append((category, None, "category"))
        steps.append((None, None, "trending"))
        for c, b, kind in steps:
            if len(items) >= k:
                break
            more = self.trending(k - len(items), category=c, brand=b,
                                 exclude=np.fromiter(have, np.int64, len(have)), kind=kind)
            have |= {self.histories.item_code(it["item_id"]) for it in more}
            items = items + more
        return items
