"""A loaded model version ready to answer requests: the pipeline plus its maps to the server's item codes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.candidates.base import Query
from fusionrec.ranking.fusers import LambdaRankFuser
from fusionrec.rerank.rules import RerankConfig, Reranker
from fusionrec.serving.histories import HistoryStore
from fusionrec.serving.versions import LoadedVersion

__all__ = ["ServingModel"]

log = logging.getLogger("fusionrec.serving")


def one_thread_per_request(pipeline: Any) -> None:
    """Make a loaded pipeline answer each request on one thread (the ranker and factor-model fold-ins):
    requests already run in parallel, and OpenMP threads that spin-wait for each other make a 0.1 ms
    prediction take milliseconds on a busy machine."""
    fuser = pipeline.fuser_
    if isinstance(fuser, LambdaRankFuser):
        fuser.params = {**fuser.params, "num_threads": 1}
    for gen in pipeline.generators_.values():
        cfg = getattr(gen, "cfg", None)
        if dataclasses.is_dataclass(cfg) and "num_threads" in {f.name for f in dataclasses.fields(cfg)}:
            gen.cfg = dataclasses.replace(cfg, num_threads=1)  # before the first fold-in builds its solver


class ServingModel:
    """One version's pipeline, reranker, item ids and code maps; immutable once built, so swapping is one assignment."""

    def __init__(self, loaded: LoadedVersion, histories: HistoryStore, rerank: RerankConfig | None = None,
                 learned_through: int = 0) -> None:
        self.version: str = loaded.name
        #: the live mark (`HistoryStore.live_mark`) of the snapshot this version was trained on: live
        #: events up to it are learned, so its users need no fold-in for them (0: none are)
        self.learned_through = learned_through
        self.path: Path = loaded.path
        self.manifest: dict[str, Any] = loaded.manifest
        self.pipeline = loaded.pipeline
        pipe = self.pipeline
        one_thread_per_request(pipe)
        self.item_ids: list[str] = pipe.items_.ids()
        histories.ensure_items(self.item_ids)
        self.model_to_code = histories.items.indices(self.item_ids)
        self.code_to_model = np.full(len(histories.items), -1, np.int64)
        self.code_to_model[self.model_to_code] = np.arange(len(self.item_ids))
        self.catalog = pipe.catalog()
        self.reranker = Reranker(rerank or RerankConfig(), self.catalog)
        self.exclude_seen = bool(pipe.cfg.exclude_seen)
        self.similar_sources = [(name, gen) for name, gen in pipe.generators_.items() if hasattr(gen, "similar_items")]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to_model(self, codes: np.ndarray) -> np.ndarray:
        """Model item indices of server item codes (-1 where the model does not know the item)."""
        codes = np.asarray(codes, np.int64)
        out = np.full(len(codes), -1, np.int64)
        inside = (codes >= 0) & (codes < len(self.code_to_model))
        out[inside] = self.code_to_model[codes[inside]]
        return out

    def user_index(self, user_id: str) -> int:
        return int(self.pipeline.users_.index(user_id))

    def forget_cached(self) -> None:
        """Drop what the generators cached from users' histories (factor-model fold-ins), so nothing
        derived from a forgotten user's events outlives the request that deleted them."""
        for gen in self.pipeline.generators_.values():
            clear = getattr(gen, "clear_fold_cache", None)
            if clear is not None:
                clear()

    def warm_up(self) -> None:
        """Answer a few queries before taking traffic, so lazily built state (fold-in solvers) is ready."""
        try:
            n = min(3, self.n_items)
            hist = np.arange(n, dtype=np.int64)
            self.pipeline.recommend_query(Query(-1, hist), 5, reranker=self.reranker)
            if len(self.pipeline.users_):
                self.pipeline.recommend_query(Query(0, hist), 5, reranker=self.reranker, live=True)
        except Exception:  # a warm-up failure is logged; the first real request will show the problem
            log.exception("warm-up of %s failed", self.version)
